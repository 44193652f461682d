#!/usr/bin/env bash
# Runs every benchmark of a pool-level benchmark binary (pool_bench,
# scope_bench, timer_bench) in its own fresh process (the allocator state
# one benchmark leaves behind changes the next by up to 4x), in a new
# shuffled order each round, ROUNDS rounds (default 7); one sample per
# process. Then, per workload, per metric: median and min-max of each peer,
# and its ratio and difference to the workload's baseline peer (peer/quell
# > 1: quell is faster, or smaller). Builds nothing. Extra arguments go to
# every benchmark process.
#
# BASELINE: the peer ratios are taken to, or a comma-separated list of them,
# the first present in a workload winning (default quell); e.g.
# BASELINE=tbb_task_group,quell. FORMAT=markdown prints one markdown table
# per workload instead of the text report.
#
# JSON_DIR=dir keeps every sample's Google Benchmark JSON there, for
# bench/plot.py.
#
# A process that fails or outlives TIMEOUT seconds (default 120: a hang)
# gives no sample and is listed at the end; the exit status is then 1.
#
# Usage: ROUNDS=7 TIMEOUT=120 bench/run_pool_bench.sh <build>/bench/pool_bench [args...]
#        BASELINE=tbb_task_group,quell FORMAT=markdown bench/run_pool_bench.sh <build>/bench/scope_bench
set -euo pipefail

bin=${1:?usage: ROUNDS=7 BASELINE=quell FORMAT=text|markdown $0 path/to/pool_bench [benchmark args...]}
shift
rounds=${ROUNDS:-7}
limit=${TIMEOUT:-120}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$bin" --benchmark_list_tests "$@" >"$work/names"
[[ -s $work/names ]] || { echo "$bin lists no benchmarks" >&2; exit 1; }
count=$(wc -l <"$work/names")
failed=0

for ((round = 1; round <= rounds; round++)); do
  index=0
  while IFS= read -r name; do
    index=$((index + 1))
    printf '\rround %d/%d, %d/%d: %-60s' "$round" "$rounds" "$index" "$count" "$name" >&2
    regex=$(printf '%s' "$name" | sed 's/[][\.*^$(){}+?|]/\\&/g')
    out="$work/sample.$round.$index.json"
    # Our filter comes last, so it wins over one in "$@".
    status=0
    timeout --kill-after=5 "$limit" "$bin" "$@" --benchmark_format=json \
      --benchmark_filter="^${regex}\$" </dev/null >"$out" 2>"$work/stderr" || status=$?
    if ((status != 0)); then
      why="exit status $status"
      ((status == 124 || status == 137)) && why="no result after ${limit}s (hung?)"
      printf '\nFAILED: %s (round %d): %s\n' "$name" "$round" "$why" >&2
      cat "$work/stderr" >&2
      printf '%s\t%s\n' "$name" "$why" >>"$work/failures"
      rm -f "$out"
      failed=1
    fi
  done < <(shuf "$work/names")
done
printf '\n' >&2
if [[ -n ${JSON_DIR:-} ]]; then
  mkdir -p "$JSON_DIR"
  for sample in "$work"/sample.*.json; do
    [[ -e $sample ]] && cp "$sample" "$JSON_DIR/$(basename "$bin").$(basename "$sample")"
  done
fi

BASELINE=${BASELINE:-quell} FORMAT=${FORMAT:-text} python3 - "$work" "$rounds" <<'EOF'
import collections, glob, json, os, statistics, sys

work = sys.argv[1]
# Keys Google Benchmark writes itself; everything else numeric is a counter.
STANDARD = {"family_index", "per_family_instance_index", "repetitions", "repetition_index",
            "threads", "iterations", "real_time", "cpu_time"}

def base_name(full):
    # "W1_post/quell/iterations:5/manual_time" -> ("W1_post", "quell")
    parts = [p for p in full.split("/") if ":" not in p and not p.endswith("_time")]
    return "/".join(parts[:-1]), parts[-1]

order = [base_name(line.strip()) for line in open(os.path.join(work, "names")) if line.strip()]
samples = collections.defaultdict(lambda: collections.defaultdict(list))
errors = collections.Counter()
for path in glob.glob(os.path.join(work, "sample.*.json")):
    try:
        runs = json.load(open(path)).get("benchmarks", [])
    except ValueError:
        continue
    for run in runs:
        if run.get("run_type", "iteration") != "iteration":
            continue
        key = base_name(run["name"])
        if run.get("error_occurred"):
            errors[(key, run.get("error_message", "?"))] += 1
            continue
        for metric, value in run.items():
            if metric not in STANDARD and isinstance(value, (int, float)) and not isinstance(value, bool):
                samples[key][metric].append(float(value))

def fmt(x):
    return "-" if x is None else (f"{x:.1f}" if abs(x) >= 10 else f"{x:.3g}")

baselines = [b for b in os.environ["BASELINE"].split(",") if b]
markdown = os.environ["FORMAT"] == "markdown"
rounds = sys.argv[2]

for workload in dict.fromkeys(w for w, _ in order):
    peers = [p for w, p in order if w == workload]
    base_peer = next((b for b in baselines if b in peers), None)
    peers.sort(key=lambda p: p != base_peer)  # the baseline first, then as listed
    metrics = list(dict.fromkeys(m for p in peers for m in samples[(workload, p)]))
    ratio_head = f"peer/{base_peer}" if base_peer else "ratio"
    if markdown:
        print(f"\n**{workload}**: median [min–max] over fresh processes ({rounds} rounds);"
              f" ratio: peer / {base_peer or 'none'}\n")
        print(f"| metric | peer | n | median | min–max | {ratio_head} |")
        print("|---|---|--:|--:|--:|--:|")
    else:
        print(f"\n== {workload} ==  median [min-max] over fresh processes;"
              f" {ratio_head} > 1: {base_peer} faster (or smaller)")
    for metric in metrics:
        if not markdown:
            print(f"  {metric}")
            print(f"    {'peer':<26} {'n':>3} {'median':>10} {'min-max':>21} {ratio_head:>10} {'peer-' + str(base_peer):>10}")
        base = samples[(workload, base_peer)].get(metric) if base_peer else None
        base_median = statistics.median(base) if base else None
        for peer in peers:
            values = samples[(workload, peer)].get(metric)
            if not values:
                continue
            median = statistics.median(values)
            ratio = median / base_median if base_median else None
            diff = median - base_median if base_median is not None else None
            if markdown:
                print(f"| {metric} | {peer} | {len(values)} | {fmt(median)} |"
                      f" {fmt(min(values))}–{fmt(max(values))} | {fmt(ratio)} |")
            else:
                span = f"{fmt(min(values))}-{fmt(max(values))}"
                print(f"    {peer:<26} {len(values):>3} {fmt(median):>10} {span:>21} {fmt(ratio):>10} {fmt(diff):>10}")

for ((workload, peer), message), n in errors.items():
    print(f"\nERROR {workload}/{peer}: {message} ({n} processes)")
failures = os.path.join(work, "failures")
if os.path.exists(failures):
    for (name, why), n in collections.Counter(
            tuple(line.rstrip("\n").split("\t", 1)) for line in open(failures)).items():
        print(f"\nFAILED {name}: {why} ({n} processes, no sample)")
EOF
exit "$failed"
