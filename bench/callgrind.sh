#!/usr/bin/env bash
# Instructions per operation: callgrind's inclusive Ir of each per-operation
# function of the driver, divided by the iteration count the driver prints.
# Builds nothing. Usage: bench/callgrind.sh <build>/bench/cancellation_instructions
set -euo pipefail

driver=${1:?usage: $0 path/to/cancellation_instructions}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! valgrind --tool=callgrind --callgrind-out-file="$work/out" "$driver" \
    >"$work/stdout" 2>"$work/log"; then
  cat "$work/log" >&2
  exit 1
fi
iterations=$(awk '$1 == "iterations" { print $2 }' "$work/stdout")
[[ -n $iterations ]] || { echo "$driver printed no iteration count" >&2; exit 1; }
# Threshold 100: list every function, however cheap.
callgrind_annotate --inclusive=yes --threshold=100 "$work/out" >"$work/annotated"

# Instructions per iteration of function $1 (matched as ":$1()" at the end of
# the name, so template helpers and lambdas inside it do not match), or "-".
per_op() {
  awk -v fn=":$1()" -v n="$iterations" '
    { at = index($0, fn) }
    at && substr($0, at + length(fn), 1) ~ /^( |)$/ {
      gsub(",", "", $1); printf "%.1f", $1 / n; found = 1; exit
    }
    END { if (!found) printf "-" }' "$work/annotated"
}

ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'
}

row() { printf '%-30s %8s %8s %9s %8s %9s\n' "$@"; }
row operation quell std quell/std raw quell/raw
for op in poll token_copy source_create_destroy callback_register_deregister \
    create_register_destroy_{0,1,16} create_register_cancel_{0,1,16}; do
  quell=$(per_op "quell_$op")
  std=$(per_op "std_$op")
  raw=$(per_op "raw_$op")
  if [[ $quell == - || $std == - ]]; then
    echo "no callgrind cost for quell_$op or std_$op in $driver" >&2
    exit 1
  fi
  row "$op" "$quell" "$std" "$(ratio "$quell" "$std")" "$raw" "$(ratio "$quell" "$raw")"
done
echo "(instructions per operation, $iterations iterations; set-up and loop control included)"
