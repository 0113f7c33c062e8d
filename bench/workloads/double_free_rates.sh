#!/usr/bin/env bash
# Double-free detection rates at the second free: bench/workloads/double_free under glibc and
# uslub (default and USLUB_DOUBLE_FREE=strict), distances 1, 2, 10, 1000, same and other
# thread, TRIALS runs each (the cache's fill level drawn at random per run).
# usage: double_free_rates.sh BUILD_DIR [TRIALS]   (BUILD_DIR: a build with -DUSLUB_BUILD_BENCH=ON)
set -u
build=${1:?build dir}; trials=${2:-50}
prog=$build/bench/workloads/wl_double_free
lib=$build/src/libuslub.so
run() {  # env... -> 1 if detected
  out=$(env "$@" 2>&1 </dev/null); rc=$?
  if [ $rc -ne 0 ] || [[ "$out" == *"uslub: BUG"* ]] || [[ "$out" != *undetected* ]]; then echo 1; else echo 0; fi
}
echo "| frees apart | thread | glibc | uslub default | uslub strict |"
echo "| --- | --- | --- | --- | --- |"
for other in 0 1; do
  for d in 1 2 10 1000; do
    g=0; u=0; s=0
    for t in $(seq 1 "$trials"); do
      w=$(( (t * 37) % 65 ))
      a=(--distance "$d" --other "$other" --warm "$w")
      g=$((g + $(run "$prog" "${a[@]}")))
      u=$((u + $(run LD_PRELOAD="$lib" USLUB_LEAK_REPORT=0 "$prog" "${a[@]}")))
      s=$((s + $(run LD_PRELOAD="$lib" USLUB_LEAK_REPORT=0 USLUB_DOUBLE_FREE=strict "$prog" "${a[@]}")))
    done
    th=$([ "$other" = 1 ] && echo other || echo same)
    echo "| $d | $th | $g/$trials | $u/$trials | $s/$trials |"
  done
done
