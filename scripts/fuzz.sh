#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan + fuzzer coverage) in build-fuzz and runs
# fuzz/slab_ops_fuzzer on its committed corpus.
#   ./scripts/fuzz.sh [SECONDS] [--merge] [-- libFuzzer flags...]
#   SECONDS   run time (default 60); CI runs 45
#   --merge   add the new interesting inputs, minimised, to fuzz/corpus/slab_ops
# Exits non-zero on a crash (the reproducer is left as crash-* in the current directory).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}; shift || true
merge=0
if [ "${1:-}" = --merge ]; then merge=1; shift; fi
[ "${1:-}" = -- ] && shift
./scripts/install-deps.sh
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DUSLUB_BUILD_TESTS=OFF -DUSLUB_BUILD_BENCH=OFF -DUSLUB_FUZZ=ON \
  "-DCMAKE_CXX_FLAGS=-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined" \
  >/dev/null
ninja -C build-fuzz slab_ops_fuzzer | grep -v '^\[' || true
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
build-fuzz/fuzz/slab_ops_fuzzer -max_total_time="$secs" -print_final_stats=1 \
  -artifact_prefix=./ "$@" "$work" fuzz/corpus/slab_ops
if [ $merge = 1 ]; then
  build-fuzz/fuzz/slab_ops_fuzzer -merge=1 fuzz/corpus/slab_ops "$work"
fi
