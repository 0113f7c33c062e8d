#!/usr/bin/env bash
# Installs the build into a temporary prefix and builds a consumer with find_package(uslub)
# and with pkg-config; both must run.
set -euo pipefail
build=$1; src=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
cmake -S "$src" -B "$tmp/b" -G Ninja -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/b" >/dev/null
LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/b/c" | grep -qx 112
flags=$(PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig" pkg-config --cflags --libs uslub)
c++ "$src/main.cpp" -o "$tmp/c2" $flags
LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/c2" | grep -qx 112
"$tmp/prefix/bin/uslub" run -- true
echo "package consumer: 1 passed, 0 failed"
