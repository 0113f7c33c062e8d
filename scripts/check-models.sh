#!/usr/bin/env bash
# Checks the spin models in models/: each must verify without errors, and its -DBUG variant
# must fail (a model that cannot fail proves nothing).
# Models: drain_gen.pml (pcp drain_all), seqcount.pml, class_slot.pml (the hot slot hand-off, sheaf.hpp).
set -euo pipefail
cd "$(dirname "$0")/../models"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
status=0
for m in *.pml; do
  for variant in ok bug; do
    dir="$tmp/${m%.pml}-$variant"; mkdir -p "$dir"; cp "$m" "$dir/"
    (cd "$dir" && spin -a $([ $variant = bug ] && echo -DBUG) "$m" >/dev/null &&
       gcc -O2 -DSAFETY -o pan pan.c 2>/dev/null && ./pan -m100000 > out.txt 2>&1 || true)
    errors=$(grep -oE "errors: [0-9]+" "$dir/out.txt" | awk '{print $2}')
    states=$(grep -oE "[0-9.e+]+ states, stored" "$dir/out.txt" | head -1 | awk '{print $1}')
    if [ "$variant" = ok ] && [ "${errors:-x}" = 0 ]; then
      echo "model $m: verified ($states states), 0 errors"
    elif [ "$variant" = bug ] && [ "${errors:-0}" -gt 0 ]; then
      echo "model $m -DBUG: violation found as expected"
    else
      echo "model $m ($variant): UNEXPECTED result"; cat "$dir/out.txt"; status=1
    fi
  done
done
exit $status
