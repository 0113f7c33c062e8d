#!/usr/bin/env bash
# Builds the newest peers that Debian does not package (mimalloc 3, snmalloc) OUTSIDE the
# repository, for the benchmarks only (bench/workloads/run.py and bench/slab/run.py find them
# under $USLUB_PEERS, default /work/peers).  No peer code enters the repository.
#   scripts/build-peers.sh MIMALLOC_GIT_DIR SNMALLOC_GIT_DIR
# Each argument is a git directory (a clone or a bare mirror) of microsoft/mimalloc and
# microsoft/snmalloc; the tags below are checked out into $USLUB_PEERS/src.
set -euo pipefail
peers=${USLUB_PEERS:-/work/peers}
mimalloc_git=$1 snmalloc_git=$2
mimalloc_tag=${MIMALLOC_TAG:-v3.4.3}
snmalloc_tag=${SNMALLOC_TAG:-0.7.5}
mkdir -p "$peers/src" "$peers/build"

checkout() {  # git_dir tag dest
  rm -rf "$3"
  mkdir -p "$3"
  git --git-dir="$1" archive "$2" | tar -x -C "$3"
}

checkout "$mimalloc_git" "$mimalloc_tag" "$peers/src/mimalloc-$mimalloc_tag"
cmake -S "$peers/src/mimalloc-$mimalloc_tag" -B "$peers/build/mimalloc-$mimalloc_tag" \
  -DCMAKE_BUILD_TYPE=Release -DMI_BUILD_TESTS=OFF -DMI_BUILD_STATIC=OFF -DMI_BUILD_OBJECT=OFF >/dev/null
cmake --build "$peers/build/mimalloc-$mimalloc_tag" -j"$(nproc)" >/dev/null
# mimalloc's secure mode (guard pages, encoded free lists, double-free checks) for the
# hardening-cost table (scripts/bench-debug.sh); Debian does not package it.
cmake -S "$peers/src/mimalloc-$mimalloc_tag" -B "$peers/secure/mimalloc-$mimalloc_tag" \
  -DCMAKE_BUILD_TYPE=Release -DMI_SECURE=ON -DMI_BUILD_TESTS=OFF -DMI_BUILD_STATIC=OFF \
  -DMI_BUILD_OBJECT=OFF >/dev/null
cmake --build "$peers/secure/mimalloc-$mimalloc_tag" -j"$(nproc)" >/dev/null

checkout "$snmalloc_git" "$snmalloc_tag" "$peers/src/snmalloc-$snmalloc_tag"
cmake -S "$peers/src/snmalloc-$snmalloc_tag" -B "$peers/build/snmalloc-$snmalloc_tag" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release -DSNMALLOC_BUILD_TESTING=OFF >/dev/null 2>&1 ||
  cmake -S "$peers/src/snmalloc-$snmalloc_tag" -B "$peers/build/snmalloc-$snmalloc_tag" \
    -DCMAKE_BUILD_TYPE=Release -DSNMALLOC_BUILD_TESTING=OFF >/dev/null
cmake --build "$peers/build/snmalloc-$snmalloc_tag" -j"$(nproc)" --target snmallocshim >/dev/null
ls "$peers"/build/mimalloc-*/libmimalloc.so "$peers"/secure/mimalloc-*/libmimalloc-secure.so "$peers"/build/snmalloc-*/libsnmallocshim.so
