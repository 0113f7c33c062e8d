#!/usr/bin/env bash
# Page faults of bench_latency under uslub and the peers, and where uslub takes its own:
# prints a markdown table of faults per run (perf stat's software page-faults event, median of
# ROUNDS) and, for uslub, the share of faults by the function that touched the page (perf record
# -e page-faults -c 1, every fault, by symbol).  A fault taken inside malloc is part of that
# call's latency (bench/latency/run.py); on this VM one costs about 2 us.
#
# usage: bench/latency/faults.sh [BUILD_DIR] [THREADS] [OPS]   (ROUNDS=5 by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-release}
threads=${2:-2}
ops=${3:-2000000}
rounds=${ROUNDS:-5}
bin=$build/bench/latency/bench_latency
uslub=$PWD/$build/src/libuslub.so
command -v perf >/dev/null || { echo "faults.sh: perf is not installed (apt install linux-perf)" >&2; exit 1; }
[ -x "$bin" ] || { echo "faults.sh: $bin not built" >&2; exit 1; }
declare -A libs=([glibc]="" [jemalloc]=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
  [tcmalloc]=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4
  [mimalloc]=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2
  [mimalloc3]=/work/peers/build/mimalloc-v3.4.3/libmimalloc.so
  [snmalloc]=/work/peers/build/snmalloc-0.7.5/libsnmallocshim.so [uslub]=$uslub)
order=(glibc jemalloc tcmalloc mimalloc mimalloc3 snmalloc uslub)
declare -A runs
for ((r = 0; r < rounds; ++r)); do
  for name in "${order[@]}"; do
    lib=${libs[$name]}
    [ -z "$lib" ] || [ -e "$lib" ] || continue
    n=$(env ${lib:+LD_PRELOAD=$lib} perf stat -x, -e page-faults "$bin" --threads "$threads" \
      --ops "$ops" 2>&1 >/dev/null | awk -F, '/page-faults/ {print $1}')
    runs[$name]+="$n "
  done
done
echo "bench_latency --threads $threads --ops $ops, $rounds rounds, $(date -u +%F), $(nproc) CPUs"
echo
echo "| allocator | page faults per run (median) | all runs |"
echo "| --- | --- | --- |"
for name in "${order[@]}"; do
  [ -n "${runs[$name]:-}" ] || continue
  med=$(tr ' ' '\n' <<<"${runs[$name]}" | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo "| $name | $med | ${runs[$name]}|"
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if cc -O2 -o "$tmp/fault_cost" bench/latency/fault_cost.c 2>/dev/null; then
  echo
  echo "One page fault on this machine (bench/latency/fault_cost.c, 64 MiB, 3 times each):"
  echo
  for pages in 1 16 64; do "$tmp/fault_cost" $pages | sed 's/^/    /'; done
fi
LD_PRELOAD=$uslub perf record -q -c 1 -e page-faults -o "$tmp/pf.data" "$bin" --threads "$threads" \
  --ops "$ops" >/dev/null 2>&1
echo
echo "uslub's faults by the function that touched the page (one run):"
echo
echo "| share | function |"
echo "| --- | --- |"
perf report -i "$tmp/pf.data" --no-children --stdio --sort sym -g none 2>/dev/null |
  awk '/%/ && $1+0 >= 1 {s=$1; $1=""; $2=""; sub(/^ +/, ""); print "| " s " | " $0 " |"}' | head -12
