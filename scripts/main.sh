#!/usr/bin/env bash
# The main job: installs dependencies, builds Release and prints the benchmark tables:
# the page allocator, sheaves vs the classic per-CPU slab, the allocator comparison on
# every workload against glibc, jemalloc, tcmalloc and mimalloc (plus mimalloc3/snmalloc when
# built with scripts/build-peers.sh, and any NAME=/path/lib.so given), the latency percentiles
# of every malloc and free under the same allocators, and, when given the
# mimalloc-bench sources, the public mimalloc-bench programs under the same allocators.
#   ./scripts/main.sh [--rounds N] [--quick] [--mimalloc-bench DIR] [NAME=/path/lib.so ...]
# --mimalloc-bench DIR: a mimalloc-bench checkout or bare git mirror (for example
# /work/.mirror/daanx+mimalloc-bench/repo); $MIMALLOC_BENCH does the same.  The programs are
# built outside the repository (bench/public/mimalloc_bench.sh says where).
set -euo pipefail
cd "$(dirname "$0")/.."
mb="${MIMALLOC_BENCH:-}"
args=()    # every argument but --mimalloc-bench, for bench/workloads/run.py
common=()  # those the latency and mimalloc-bench runners share: --rounds, --quick, NAME=lib
while [ $# -gt 0 ]; do
  case "$1" in
    --mimalloc-bench) mb="$2"; shift ;;
    --mimalloc-bench=*) mb="${1#*=}" ;;
    --rounds) args+=("$1" "$2"); common+=("$1" "$2"); shift ;;
    --quick | *=*) args+=("$1"); common+=("$1") ;;
    *) args+=("$1") ;;
  esac
  shift
done
./scripts/install-deps.sh
./scripts/build.sh build-release -DCMAKE_BUILD_TYPE=Release -DUSLUB_BUILD_TESTS=OFF
echo "== page allocator =="
./build-release/bench/bench_page_page_alloc_bench --quick
echo "== sheaves vs per-CPU slab =="
./build-release/bench/bench_sheaf_sheaf_vs_cpuslab --quick
echo "== allocator comparison (bench/workloads) =="
python3 bench/workloads/run.py --build build-release "${args[@]}"
echo "== latency of every malloc and free (bench/latency) =="
python3 bench/latency/run.py --build build-release "${common[@]}"
if [ -n "$mb" ]; then
  echo "== mimalloc-bench (bench/public) =="
  bench/public/mimalloc_bench.sh --src "$mb" --build build-release "${common[@]}"
fi
