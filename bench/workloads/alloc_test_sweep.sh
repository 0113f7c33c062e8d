#!/usr/bin/env bash
# alloc-test on one thread over a sweep of working sets (4 Ki, 32 Ki, 256 Ki live blocks:
# L2-, L3- and DRAM-sized), every allocator interleaved in each round; prints the median
# ns per operation (free + malloc + touch) of ROUNDS runs.  Shows how much of alloc-test's gap
# is the path itself (small sets) and how much the memory it touches (large sets).
#   bench/workloads/alloc_test_sweep.sh [--build DIR] [--rounds N] [NAME=/path/lib.so ...]
# Default allocators: mimalloc (Debian), snmalloc (scripts/build-peers.sh), uslub (DIR).
set -euo pipefail
cd "$(dirname "$0")/../.."
build=build-release
rounds=5
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    -h | --help) sed -n '2,7p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
bin=$build/bench/workloads/wl_alloc_test
[ -x "$bin" ] || { echo "no $bin: build with ./scripts/build.sh $build first" >&2; exit 1; }
peers=${USLUB_PEERS:-/work/peers}
names=() libs=()
add() { if [ -f "$2" ]; then names+=("$1"); libs+=("$2"); fi; }
add mimalloc /usr/lib/x86_64-linux-gnu/libmimalloc.so.2
add snmalloc "$peers/build/snmalloc-0.7.5/libsnmallocshim.so"
add uslub "$build/src/libuslub.so"
for extra in "$@"; do add "${extra%%=*}" "${extra#*=}"; done

median() { tr ' ' '\n' | grep . | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

printf '| working set |'; printf ' %s |' "${names[@]}"; printf '\n|---|'
printf -- '---|%.0s' "${names[@]}"; printf '\n'
for ws in 4096 32768 262144; do
  declare -A got=()
  for ((r = 0; r < rounds; r++)); do
    for i in "${!names[@]}"; do
      v=$(LD_PRELOAD=${libs[$i]} "$bin" --threads 1 --scale 0.2 --working-set "$ws" |
        grep -o 'ns_per_op=[0-9.]*' | cut -d= -f2)
      got[$i]="${got[$i]:-} $v"
    done
  done
  printf '| %s blocks |' "$ws"
  for i in "${!names[@]}"; do printf ' %s ns |' "$(echo "${got[$i]}" | median)"; done
  printf '\n'
  unset got
done
