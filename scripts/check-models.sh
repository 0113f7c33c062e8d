#!/usr/bin/env bash
# Checks the spin models in models/ (docs/sync.md, "Spin models").  Each model must verify
# with no error, and each of its mutations - the model compiled with spin -D<MUTATION>, which
# removes one protection of the protocol - must make spin report an error (an assertion, an
# invalid end state or an acceptance cycle of the model's LTL formula): a model that cannot
# fail proves nothing.  Both outcomes are printed.  Every models/*.pml must be listed below.
set -euo pipefail
cd "$(dirname "$0")/../models"

# model            mode    mutations (macros the model tests with #ifdef)
# mode: safety = assertions and end states (pan built with -DSAFETY);
#       ltl    = also the model's LTL formula, with weak fairness (pan -a -f).
MODELS=$(cat <<'EOF'
drain_gen.pml      safety  GEN_AFTER_DRAIN CHECK_OUTSIDE_MUTEX
seqcount.pml       ltl     NO_READER_LOCK_WAIT NO_ODD_PHASE
sheaf_drain.pml    safety  NO_MEMBARRIER FENCE_BEFORE_LOCK
class_slot.pml     safety  BUG
EOF
)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0

# run <model> <mode> <mutation or "-">: runs pan in its own directory, prints nothing, leaves
# pan's output in $tmp/<model>-<mutation>/out.txt.
run() {
  local model=$1 mode=$2 mut=$3 dir="$tmp/${1%.pml}-$3"
  mkdir -p "$dir"
  cp "$model" "$dir/"
  local def=() cflags=(-O0) panflags=(-m1000000)  # -O0: compiling pan.c dominates
  [ "$mut" != - ] && def=("-D$mut")
  if [ "$mode" = safety ]; then cflags+=(-DSAFETY); else panflags+=(-a -f); fi
  (cd "$dir" && spin -a "${def[@]}" "$model" >spin.txt 2>&1 && gcc "${cflags[@]}" -o pan pan.c \
     2>gcc.txt && ./pan "${panflags[@]}" >out.txt 2>&1) || true
  [ -f "$dir/out.txt" ] || cat "$dir/spin.txt" "$dir/gcc.txt" >"$dir/out.txt" 2>/dev/null
}
errors_of() { grep -oE "errors: [0-9]+" "$1" | awk '{print $2}' | head -1; }
states_of() { grep -oE "[0-9.e+]+ states, stored" "$1" | awk '{print $1}' | head -1; }
first_error() {
  grep -m1 -E "assertion violated|acceptance cycle|invalid end state|non-progress" "$1" |
    sed -E 's/^pan:[0-9]+: //; s/ \(at depth [0-9]+\)//'
}

listed=" "
while read -r model mode mutations; do
  [ -z "$model" ] && continue
  listed+="$model "
  if [ ! -f "$model" ]; then
    echo "model $model: listed but missing"; status=1; continue
  fi
  run "$model" "$mode" -
  out="$tmp/${model%.pml}--/out.txt"
  errors=$(errors_of "$out")
  if [ "${errors:-x}" = 0 ] && ! grep -q "max search depth too small" "$out"; then
    echo "model $model ($mode): verified, $(states_of "$out") states, 0 errors"
  else
    echo "model $model ($mode): FAILED (expected 0 errors)"; cat "$out"; status=1
  fi
  for mut in $mutations; do
    if ! grep -q "$mut" "$model"; then
      echo "model $model -D$mut: the model never tests this macro"; status=1; continue
    fi
    run "$model" "$mode" "$mut"
    out="$tmp/${model%.pml}-$mut/out.txt"
    errors=$(errors_of "$out")
    if [ "${errors:-0}" -gt 0 ]; then
      echo "model $model -D$mut: error found as expected: $(first_error "$out")"
    else
      echo "model $model -D$mut: NO ERROR FOUND (the mutation must be refuted)"; cat "$out"
      status=1
    fi
  done
done <<<"$MODELS"

for m in *.pml; do
  case "$listed" in
    *" $m "*) ;;
    *) echo "model $m: not listed in scripts/check-models.sh (give it its mutations)"; status=1 ;;
  esac
done
exit $status
