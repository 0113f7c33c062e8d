#!/usr/bin/env bash
# The cost of uslub's safety (issue #7's table): the always-on checks (hardened free pointers,
# the object-boundary check of every free, the free key: double frees in a row or not) against
# a build without them,
# and USLUB_DEBUG=F / FZP / FZPU, next to glibc, glibc's MALLOC_CHECK_=3, mimalloc and
# tcmalloc's debug library, on the workloads of bench/workloads (time and peak RSS, medians).
#   ./scripts/bench-debug.sh [--rounds N] [--quick] [NAME=/path/lib.so[:VAR=value] ...]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
./scripts/build.sh build-release -DCMAKE_BUILD_TYPE=Release -DUSLUB_BUILD_TESTS=OFF
./scripts/build.sh build-release-nohard -DCMAKE_BUILD_TYPE=Release -DUSLUB_BUILD_TESTS=OFF \
  "-DCMAKE_CXX_FLAGS=-DUSLUB_NO_FREELIST_HARDENING=1 -DUSLUB_NO_FREE_CHECKS=1"
lib=/usr/lib/$(gcc -print-multiarch)
#   USLUB_BENCH_DEBUG_LETTERS=0  only the always-on checks and KFENCE (the debug rows take long)
allocs=(glibc mimalloc uslub-nohard uslub uslub-kfence1000 uslub-kfence100)
extra=(uslub-nohard=build-release-nohard/src/libuslub.so
       uslub-kfence1000=uslub:USLUB_KFENCE_SAMPLE=1000 uslub-kfence100=uslub:USLUB_KFENCE_SAMPLE=100)
if [ "${USLUB_BENCH_DEBUG_LETTERS:-1}" != 0 ]; then
  allocs+=(uslub-F uslub-FZP uslub-FZPU)
  extra+=(uslub-F=uslub:USLUB_DEBUG=F uslub-FZP=uslub:USLUB_DEBUG=FZP
          uslub-FZPU=uslub:USLUB_DEBUG=FZPU:USLUB_LEAK_REPORT=0)
fi
if [ -e "$lib/libc_malloc_debug.so.0" ]; then
  extra+=("glibc-check=$lib/libc_malloc_debug.so.0:MALLOC_CHECK_=3"); allocs+=(glibc-check)
fi
if [ -e "$lib/libtcmalloc_minimal_debug.so.4" ]; then
  extra+=("tcmalloc-debug=$lib/libtcmalloc_minimal_debug.so.4"); allocs+=(tcmalloc-debug)
fi
secure=$(ls "${USLUB_PEERS:-/work/peers}"/secure/mimalloc-*/libmimalloc-secure.so 2>/dev/null | head -1 || true)
if [ -n "$secure" ]; then  # built by scripts/build-peers.sh
  extra+=("mimalloc3-secure=$secure"); allocs+=(mimalloc3-secure)
fi
for a in "$@"; do case $a in *=*) allocs+=("${a%%=*}") ;; esac; done
out=debug-cost; [ "${USLUB_BENCH_DEBUG_LETTERS:-1}" != 0 ] || out=hardening-cost
exec python3 bench/workloads/run.py --build build-release --out "$out" \
  --only pair,larson,xmalloc,alloc_test,mstress \
  --allocs "$(IFS=,; echo "${allocs[*]}")" "${extra[@]}" "$@"
