#!/usr/bin/env bash
# Builds Release and compares uslub with the peers on every workload (bench/workloads/run.py).
#   ./scripts/bench-workloads.sh [--rounds N] [--quick] [NAME=/path/lib.so ...]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh build-release -DCMAKE_BUILD_TYPE=Release -DUSLUB_BUILD_TESTS=OFF
exec python3 bench/workloads/run.py --build build-release "$@"
