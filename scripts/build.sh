#!/usr/bin/env bash
# build.sh DIR [cmake args...]: configure (once) and build uslub into DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$1; shift
cmake -S . -B "$dir" -G Ninja "$@" >/dev/null
ninja -C "$dir" 2>&1 | grep -v '^\[' || true
test "${PIPESTATUS[0]}" = 0
