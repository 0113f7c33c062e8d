#!/usr/bin/env bash
# The main job: installs dependencies, builds Release and prints the benchmark tables.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh build-release -DCMAKE_BUILD_TYPE=Release -DUSLUB_BUILD_TESTS=OFF
echo "== page allocator =="
./build-release/bench/bench_page_page_alloc_bench "$@"
