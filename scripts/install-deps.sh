#!/usr/bin/env bash
# Installs what building, testing and benchmarking uslub needs on Debian 12, skipping what is
# already there.  Safe to run repeatedly.
set -euo pipefail
PKGS=(cmake ninja-build g++ clang libclang-rt-14-dev clang-format
      libgtest-dev libgmock-dev libbenchmark-dev liburcu-dev libnuma-dev
      spin valgrind gdb libdw1 python3 pkg-config google-perftools time
      libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
