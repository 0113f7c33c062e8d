#!/usr/bin/env bash
# The public yardstick: builds the mimalloc-bench programs (github:daanx/mimalloc-bench) outside
# this repository and runs them under uslub and every peer with bench/public/run.py (interleaved
# rounds, medians of time and peak RSS, ratios to mimalloc 2.0 and to the best peer).
#
#   bench/public/mimalloc_bench.sh [--src DIR] [--bin DIR] [--build-only] [run.py args...]
#
# --src DIR   mimalloc-bench sources: a checkout, or a bare git mirror (then its HEAD is
#             extracted once into $MIMALLOC_BENCH_SRC, default /work/peers/src/mimalloc-bench).
#             Default: $MIMALLOC_BENCH_SRC when it holds bench/, else the mirror
#             /work/.mirror/daanx+mimalloc-bench/repo.
# --bin DIR   where the programs are built (default $MIMALLOC_BENCH_BIN or
#             /work/peers/build/mimalloc-bench); rebuilt when a source is newer than its program.
# Every other argument goes to run.py (--rounds N, --quick, --build DIR, --only a,b,
# --allocs x,y, --procs N, NAME=/path/lib.so ...); see run.py --help.
#
# The programs are compiled by hand with the flags of mimalloc-bench's bench/CMakeLists.txt
# (its CMake project also wants the sh6bench/sh8bench sources, which its build script downloads
# from a vendor site and which are not part of the repository).  Only programs that need nothing
# beyond the C/C++ toolchain are built: cfrac, espresso, barnes, larson, larson-sized,
# alloc-test, cache-scratch, cache-thrash, xmalloc-test, malloc-large, mstress, rptest,
# glibc-simple, glibc-thread.  sh6bench/sh8bench (vendor sources), redis, rocksdb, lean, lua,
# gs, z3 and the SPEC programs are skipped.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
mirror=/work/.mirror/daanx+mimalloc-bench/repo
src_dir="${MIMALLOC_BENCH_SRC:-/work/peers/src/mimalloc-bench}"
bin_dir="${MIMALLOC_BENCH_BIN:-/work/peers/build/mimalloc-bench}"
src_arg=""
build_only=0
run_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --src) src_arg="$2"; shift ;;
    --bin) bin_dir="$2"; shift ;;
    --build-only) build_only=1 ;;
    *) run_args+=("$1") ;;
  esac
  shift
done

# Locate or extract the sources.
if [ -n "$src_arg" ] && [ -d "$src_arg/bench/cfrac" ]; then
  src_dir="$src_arg"
elif [ -n "$src_arg" ] || [ ! -d "$src_dir/bench/cfrac" ]; then
  gitdir="${src_arg:-$mirror}"
  if ! git --git-dir="$gitdir" rev-parse --verify -q HEAD >/dev/null; then
    echo "mimalloc_bench.sh: no mimalloc-bench checkout or git mirror at '$gitdir'" >&2
    exit 2
  fi
  head=$(git --git-dir="$gitdir" rev-parse --short HEAD)
  if [ "$(cat "$src_dir/COMMIT" 2>/dev/null)" != "$head" ]; then
    rm -rf "$src_dir/bench"
    mkdir -p "$src_dir"
    git --git-dir="$gitdir" archive HEAD bench | tar -x -C "$src_dir"
    echo "$head" >"$src_dir/COMMIT"
  fi
fi
b="$src_dir/bench"
mkdir -p "$bin_dir"

cflags=(-O3 -DNDEBUG -w)
c89=(-std=gnu89)
cxx=(-std=c++17)

# build NAME LANG "extra flags" "libs" sources...: compiles NAME when missing or out of date.
build() {
  local name=$1 lang=$2 extra=$3 libs=$4
  shift 4
  local out="$bin_dir/$name" srcs=() newer=0 s
  for s in "$@"; do
    srcs+=("$b/$s")
    [ "$b/$s" -nt "$out" ] && newer=1
  done
  [ -x "$out" ] && [ $newer = 0 ] && return 0
  local cc=(gcc)
  [ "$lang" = cxx ] && cc=(g++ "${cxx[@]}")
  # shellcheck disable=SC2086  # extra/libs are word lists
  if ! "${cc[@]}" "${cflags[@]}" $extra -o "$out" "${srcs[@]}" $libs 2>"$bin_dir/$name.log"; then
    echo "mimalloc_bench.sh: $name did not build (see $bin_dir/$name.log); skipped" >&2
    rm -f "$out"
  fi
}

cfrac_src=()
for f in cfrac pops pconst pio pabs pneg pcmp podd phalf padd psub pmul pdivmod psqrt ppowmod \
         atop ptoa itop utop ptou errorp pfloat pidiv pimod picmp primes pcfrac pgcd; do
  cfrac_src+=("cfrac/$f.c")
done
espresso_src=()
for f in cofactor cols compl contain cubestr cvrin cvrm cvrmisc cvrout dominate equiv espresso \
         essen exact expand gasp getopt gimpel globals hack indep irred main map matrix mincov \
         opo pair part primes reduce rows set setc sharp sminterf solution sparse unate utility \
         verify; do
  espresso_src+=("espresso/$f.c")
done
barnes_src=()
for f in code code_io load grav getparam util; do barnes_src+=("barnes/$f.c"); done

build cfrac c "${c89[*]} -DNOMEMOPT=1" "-lm" "${cfrac_src[@]}"
build espresso c "${c89[*]}" "-lm" "${espresso_src[@]}"
build barnes c "${c89[*]}" "-lm" "${barnes_src[@]}"
build larson cxx "-DCPP=1" "-lpthread" larson/larson.cpp
build larson-sized cxx "-DCPP=1 -DSIZED=1 -fsized-deallocation" "-lpthread" larson/larson.cpp
build alloc-test cxx "-DBENCH=4" "-lpthread" alloc-test/test_common.cpp alloc-test/allocator_tester.cpp
build cache-scratch cxx "" "-lpthread" cache-scratch/cache-scratch.cpp
build cache-thrash cxx "" "-lpthread" cache-thrash/cache-thrash.cpp
build xmalloc-test c "" "-lpthread" xmalloc-test/xmalloc-test.c
build malloc-large cxx "" "-lpthread" malloc-large/malloc-large.cpp
build mstress c "" "-lpthread" mstress/mstress.c
build rptest c "-I$b/rptest" "-lpthread -lm" rptest/rptest.c rptest/thread.c rptest/timer.c
build glibc-simple c "" "-lpthread" glibc-bench/bench-malloc-simple.c
build glibc-thread c "" "-lpthread" glibc-bench/bench-malloc-thread.c
# The short form (run.py --quick) runs copies whose hard-coded iteration counts are cut to 1/5.
quick() {  # quick NAME LANG "libs" SRC 'sed expression'
  local name=$1 lang=$2 libs=$3 srcf=$4 expr=$5 ext="${4##*.}"
  local copy="$bin_dir/$name-quick.$ext"
  if [ ! -x "$bin_dir/$name-quick" ] || [ "$b/$srcf" -nt "$bin_dir/$name-quick" ]; then
    sed -e "$expr" "$b/$srcf" >"$copy"
    if ! grep -q . <(diff "$b/$srcf" "$copy"); then
      echo "mimalloc_bench.sh: '$expr' changed nothing in $srcf; no $name-quick" >&2
      return 0
    fi
    local cc=(gcc)
    [ "$lang" = cxx ] && cc=(g++ "${cxx[@]}")
    # shellcheck disable=SC2086
    "${cc[@]}" "${cflags[@]}" -I"$b/$(dirname "$srcf")" -o "$bin_dir/$name-quick" "$copy" \
      "${@:6}" $libs 2>"$bin_dir/$name-quick.log" ||
      echo "mimalloc_bench.sh: $name-quick did not build (see $bin_dir/$name-quick.log)" >&2
  fi
}
quick alloc-test cxx "-lpthread -DBENCH=4" alloc-test/allocator_tester.cpp \
  's/iterCount = 100000000;/iterCount = 20000000;/' "$b/alloc-test/test_common.cpp"
quick glibc-simple c "-lpthread" glibc-bench/bench-malloc-simple.c \
  's/^#define NUM_ITERS 2000000$/#define NUM_ITERS 400000/'
quick malloc-large cxx "-lpthread" malloc-large/malloc-large.cpp \
  's/kNumIterations = 2000;/kNumIterations = 400;/'
# Inputs the programs read from their working directory (input-quick: a fifth of the bodies).
sed -e '1s/^163840$/32768/' "$b/barnes/input" >"$bin_dir/input-quick"
cp -f "$b/espresso/largest.espresso" "$b/barnes/input" "$bin_dir/"
[ -f "$src_dir/COMMIT" ] && cp -f "$src_dir/COMMIT" "$bin_dir/COMMIT"

[ $build_only = 1 ] && exit 0
exec python3 "$root/bench/public/run.py" --bin "$bin_dir" "${run_args[@]}"
