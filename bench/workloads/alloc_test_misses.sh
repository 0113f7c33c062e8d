#!/usr/bin/env bash
# Cache misses per alloc-test operation under cachegrind: each allocator runs alloc-test (one
# thread, 262144 live blocks) at two lengths and the difference is divided by the extra
# operations, so start-up and the filling of the working set cancel out.  The simulated data
# cache is CACHE bytes (default 1 MiB, 16-way: roughly an L2), and misses are split into reads
# and writes: a read miss stalls the code that needs the value, a write miss mostly does not.
# Under valgrind uslub runs its no-rseq fallback (valgrind has no rseq), which touches the same
# data; instruction counts are not comparable and are not printed.
#   bench/workloads/alloc_test_misses.sh [--build DIR] [--cache BYTES] [NAME=/path/lib.so[:VAR=val] ...]
# Default allocators: mimalloc (Debian), uslub (DIR).  NAME=uslub:VAR=val runs uslub with VAR=val.
set -euo pipefail
cd "$(dirname "$0")/../.."
build=build-release
cache=1048576
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --cache) cache=$2; shift 2 ;;
    -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
command -v valgrind >/dev/null || { echo "needs valgrind (apt install valgrind)" >&2; exit 1; }
bin=$build/bench/workloads/wl_alloc_test
[ -x "$bin" ] || { echo "no $bin: build with ./scripts/build.sh $build first" >&2; exit 1; }
specs=("mimalloc=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2" "uslub=$build/src/libuslub.so" "$@")

# misses LIB ENV SCALE -> "reads writes" (total D1 misses of the simulated cache)
misses() {
  env ${2:+"$2"} LD_PRELOAD="$1" valgrind --tool=cachegrind --cache-sim=yes \
    --D1="$cache,16,64" --cachegrind-out-file=/dev/null "$bin" --threads 1 --scale "$3" 2>&1 |
    grep "D1  misses" | tr -d ',' | awk '{print $6, $9}'
}

printf '| allocator | read misses / op | write misses / op |\n|---|---|---|\n'
for spec in "${specs[@]}"; do
  name=${spec%%=*} rest=${spec#*=} var=""
  lib=${rest%%:*}
  [ "$rest" != "$lib" ] && var=${rest#*:}
  [ "$lib" = uslub ] && lib=$build/src/libuslub.so
  [ -f "$lib" ] || { echo "skipping $name: no $lib" >&2; continue; }
  read -r r1 w1 < <(misses "$lib" "$var" 0.025)  # 1 M operations
  read -r r2 w2 < <(misses "$lib" "$var" 0.05)   # 2 M operations
  awk -v n="$name" -v r="$((r2 - r1))" -v w="$((w2 - w1))" \
    'BEGIN { printf "| %s | %.2f | %.2f |\n", n, r / 1e6, w / 1e6 }'
done
