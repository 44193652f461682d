#!/usr/bin/env bash
# Instructions per operation: callgrind's inclusive Ir of each per-operation
# function of the driver, divided by the iteration count the driver prints.
# The driver may name its peers and operations ("peers quell asio ...",
# "ops insert_cancel ..." lines; the function of each is <peer>_<op>); the
# defaults are cancellation_instructions'. Columns: the first peer, then
# each other peer and the first's ratio to it. Builds nothing.
# Usage: bench/callgrind.sh <build>/bench/cancellation_instructions
#        bench/callgrind.sh <build>/bench/timer_instructions
set -euo pipefail

driver=${1:?usage: $0 path/to/cancellation_instructions or timer_instructions}
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

read -ra peers <<<"$(awk '$1 == "peers" { $1 = ""; print }' "$work/stdout")"
read -ra ops <<<"$(awk '$1 == "ops" { $1 = ""; print }' "$work/stdout")"
((${#peers[@]} > 0)) || peers=(quell std raw)
((${#ops[@]} > 0)) || ops=(poll token_copy source_create_destroy callback_register_deregister
  create_register_destroy_{0,1,16} create_register_cancel_{0,1,16})
first=${peers[0]}

header=(operation "$first")
for peer in "${peers[@]:1}"; do header+=("$peer" "$first/$peer"); done
row() { printf '%-30s' "$1"; shift; printf ' %9s' "$@"; printf '\n'; }
row "${header[@]}"
for op in "${ops[@]}"; do
  base=$(per_op "${first}_$op")
  if [[ $base == - ]]; then
    echo "no callgrind cost for ${first}_$op in $driver" >&2
    exit 1
  fi
  cells=("$op" "$base")
  for peer in "${peers[@]:1}"; do
    cost=$(per_op "${peer}_$op")
    cells+=("$cost" "$(ratio "$base" "$cost")")
  done
  row "${cells[@]}"
done
echo "(instructions per operation, $iterations iterations; set-up and loop control included)"
