#!/usr/bin/env bash
# The measurements behind README.md's table, each written to
# bench/results/<date>-<what>-<commit>.md with the command that made it:
#   slab-<commit>           kmem_cache next to every peer's malloc and uslub's own malloc, one
#                           interleaved run (README rows "kmem_cache alloc+free" and
#                           "producer/consumer"; bench/slab/run.py)
#   workloads-<commit>      the workloads, quick sizes, with uslub-nokey (USLUB_DOUBLE_FREE=0):
#                           geometric mean, alloc-test, the malloc pair (bench/workloads/run.py)
#   memory-return-<commit>  memory return at full size (1 GiB): RSS 1 s after the frees
#   page-alloc-<commit>     the page allocator's order-0 pair (bench_page_page_alloc_bench)
#   hardening-cost-<commit> the always-on checks against a build without them, KFENCE, mimalloc 3
#                           secure (scripts/bench-debug.sh with USLUB_BENCH_DEBUG_LETTERS=0)
#
#   ./scripts/bench-readme.sh [--rounds N] [--quick] [--only slab,workloads,memory,page,hardening]
#
# --quick runs the slab benchmark at its quick size and memory return at a quarter of it; the
# workloads always run at their quick sizes.  Each file records the load average when its run
# started: on a shared machine the times are indicative only (read the ratios of one run).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=5 quick=() only=slab,workloads,memory,page,hardening build=build-release
while [ $# -gt 0 ]; do
  case $1 in
    --rounds) rounds=$2; shift ;;
    --quick) quick=(--quick) ;;
    --only) only=$2; shift ;;
    --build) build=$2; shift ;;
    *) echo "usage: $0 [--rounds N] [--quick] [--only a,b] [--build DIR]" >&2; exit 2 ;;
  esac
  shift
done
want() { [[ ",$only," == *",$1,"* ]]; }
./scripts/build.sh "$build" -DCMAKE_BUILD_TYPE=Release -DUSLUB_BUILD_TESTS=OFF -DUSLUB_BUILD_BENCH=ON
commit=$(git rev-parse --short HEAD)
dirty=$(git status --porcelain --untracked-files=no -- src include | head -1)
[ -z "$dirty" ] || commit="$commit+dirty"
day=$(date -u +%F)
res=bench/results
machine() {
  echo "Run at $commit, $(date -u '+%F %H:%M') UTC, $(nproc) CPUs, load average at the start" \
    "$(cut -d' ' -f1-3 /proc/loadavg) (on a machine shared with other jobs the times are" \
    "indicative only; compare within one run)."
}

if want slab; then
  out=$res/$day-slab-$commit.md
  m=$(machine)
  python3 bench/slab/run.py --build "$build" --rounds "$rounds" "${quick[@]}" > "$out.tmp"
  { echo "$m"; echo; cat "$out.tmp"; } > "$out"; rm -f "$out.tmp"
  echo "wrote $out"
fi
if want workloads; then
  m=$(machine)
  python3 bench/workloads/run.py --build "$build" --quick --rounds "$rounds" \
    --out "workloads-$commit" uslub-nokey=uslub:USLUB_DOUBLE_FREE=0
  printf '\n%s\n' "$m" >> "$res/$day-workloads-$commit.md"
fi
if want memory; then
  m=$(machine)
  args=(--build "$build" --rounds "$rounds" --only memory_return --out "memory-return-$commit")
  [ ${#quick[@]} = 0 ] || args+=(--quick)
  python3 bench/workloads/run.py "${args[@]}"
  printf '\n%s\n' "$m" >> "$res/$day-memory-return-$commit.md"
fi
if want page; then
  out=$res/$day-page-alloc-$commit.md
  m=$(machine)
  cmd=("$build/bench/bench_page_page_alloc_bench" --rounds 7 --iters 1000000)
  [ ${#quick[@]} = 0 ] || cmd=("$build/bench/bench_page_page_alloc_bench" --quick)
  "${cmd[@]}" > "$out.tmp"
  { echo "Command: \`${cmd[*]}\` (from \`./scripts/bench-readme.sh --only page\`)"; echo; echo "$m"
    echo; cat "$out.tmp"; } > "$out"; rm -f "$out.tmp"
  echo "wrote $out"
fi
if want hardening; then
  # bench-debug.sh builds build-release and build-release-nohard itself.
  m=$(machine)
  USLUB_BENCH_DEBUG_LETTERS=0 ./scripts/bench-debug.sh --quick --rounds "$rounds" \
    --out "hardening-cost-$commit"
  printf '\n%s\n' "$m" >> "$res/$day-hardening-cost-$commit.md"
fi
