#!/usr/bin/env bash
# The main job: installs dependencies, builds Release and prints the benchmark tables:
# the page allocator, sheaves vs the classic per-CPU slab, and the allocator comparison on
# every workload against glibc, jemalloc, tcmalloc and mimalloc (plus mimalloc3/snmalloc when
# built with scripts/build-peers.sh, and any NAME=/path/lib.so given).
#   ./scripts/main.sh [--rounds N] [--quick] [NAME=/path/lib.so ...]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh build-release -DCMAKE_BUILD_TYPE=Release -DUSLUB_BUILD_TESTS=OFF
echo "== page allocator =="
./build-release/bench/bench_page_page_alloc_bench --quick
echo "== sheaves vs per-CPU slab =="
./build-release/bench/bench_sheaf_sheaf_vs_cpuslab --quick
echo "== allocator comparison (bench/workloads) =="
python3 bench/workloads/run.py --build build-release "$@"
