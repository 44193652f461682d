#!/usr/bin/env bash
# Builds quell_fuzz with clang (libFuzzer, AddressSanitizer, UBSan; the
# library instrumented for coverage too) and fuzzes for a bounded time from a
# copy of the seed corpus and the regressions: the committed files are never
# written. Prints the executions and coverage; exits non-zero on a crash,
# a hang past the per-input timeout, a leak or an out-of-memory, leaving the
# input in the artifact directory it prints.
#
#   tests/fuzz/run.sh [seconds]      (default 60)
#
# libFuzzer's whole output is left in $QUELL_FUZZ_BUILD/quell_fuzz.log.
# Environment: QUELL_FUZZ_BUILD (build directory, default build-fuzz),
# QUELL_FUZZ_ARTIFACTS (default $QUELL_FUZZ_BUILD/artifacts),
# QUELL_FUZZ_CPP_ARGS (extra compiler flags).
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds=${1:-60}
build=${QUELL_FUZZ_BUILD:-build-fuzz}
artifacts=${QUELL_FUZZ_ARTIFACTS:-$build/artifacts}

# The fuzzer's own build: static, so the library's code is instrumented with
# the target's (-fsanitize=fuzzer-no-link) and its coverage guides the search.
cpp_args="-fsanitize=fuzzer-no-link -fno-sanitize-recover=all ${QUELL_FUZZ_CPP_ARGS:-}"
if [ -d "$build" ]; then
  meson configure "$build" "-Dcpp_args=$cpp_args" >/dev/null 2>&1
else
  CXX=clang++ meson setup "$build" -Db_sanitize=address,undefined -Db_lundef=false \
    -Ddefault_library=static "-Dcpp_args=$cpp_args" -Dtests=enabled \
    -Dbenchmarks=disabled -Dexamples=disabled >/dev/null
fi
if ! out=$(meson compile -C "$build" tests/fuzz/quell_fuzz 2>&1); then
  echo "$out" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log="$build/quell_fuzz.log"
cp tests/fuzz/corpus/* "$work"/
[ ! -d tests/fuzz/regressions ] || cp tests/fuzz/regressions/* "$work"/
mkdir -p "$artifacts"

export ASAN_OPTIONS="${ASAN_OPTIONS:-halt_on_error=1 detect_stack_use_after_return=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1 print_stacktrace=1}"
status=0
"$build/tests/fuzz/quell_fuzz" "$work" \
  -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -max_len=512 \
  -print_final_stats=1 -artifact_prefix="$artifacts/" 2>"$log" || status=$?

grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)' "$log" || true
grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" || true
if [ "$status" -ne 0 ]; then
  # The sanitizer's or the check's report, and the input it wrote.
  grep -E -A40 'check failed|ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|runtime error|ALARM' \
    "$log" | head -120 >&2 || true
  grep -E 'Test unit written to' "$log" >&2 || true
  echo "quell_fuzz failed (exit $status); inputs in $artifacts" >&2
fi
exit "$status"
