#!/usr/bin/env bash
# The whole test suite: installs dependencies, builds, runs every ctest test, then a short
# AddressSanitizer and ThreadSanitizer pass and the spin models.  This is what CI runs.
#   USLUB_TEST_QUICK=1  skip the sanitizer builds (local iteration)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
./scripts/install-deps.sh
jobs=$(nproc)

echo "== build (RelWithDebInfo, lockdep) =="
./scripts/build.sh build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo -DUSLUB_LOCKDEP=ON -DUSLUB_BUILD_BENCH=ON
echo "== ctest: all tests =="
(cd build-test && ctest --output-on-failure -j"$jobs" --timeout 600)

if [ "${USLUB_TEST_QUICK:-0}" != 1 ]; then
  echo "== ASan + UBSan build: all tests =="
  ./scripts/build.sh build-asan -DCMAKE_BUILD_TYPE=Debug "-DUSLUB_SANITIZE=address,undefined" -DUSLUB_BUILD_BENCH=OFF
  (cd build-asan && ctest --output-on-failure -j"$jobs" --timeout 600)
  echo "== TSan build: all tests =="
  ./scripts/build.sh build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DUSLUB_SANITIZE=thread -DUSLUB_BUILD_BENCH=OFF
  (cd build-tsan && TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$root/tests/tsan.supp" ctest --output-on-failure -j"$jobs" --timeout 900)
fi

if [ "${USLUB_TEST_QUICK:-0}" != 1 ]; then
  echo "== fuzzer (45 s on the committed corpus) =="
  ./scripts/fuzz.sh 45
fi

if [ -x scripts/check-models.sh ]; then
  echo "== spin models =="
  ./scripts/check-models.sh
fi
echo "test.sh: all passed"
