#!/usr/bin/python3
"""Draws docs/performance.svg: quell against its peers, one row per workload.

Reads Google Benchmark JSON files (as kept by JSON_DIR=dir
bench/run_pool_bench.sh ..., one file per fresh process), takes the median of
each benchmark's time over the files, and plots for every workload the time
of each peer divided by quell's (log scale: right of 1, quell is faster).
A workload's baseline is its peer named "quell", else the first peer whose
name starts with "quell". Needs Debian's python3-matplotlib (hence
/usr/bin/python3, whatever python3 comes first in PATH).

Usage: bench/plot.py [--metric [WORKLOAD=]COUNTER]... [--only REGEX] [--skip REGEX] -o docs/performance.svg FILE.json...
"""
import argparse
import collections
import json
import re
import statistics
import sys

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402


def base_name(full):
    # "P1_for_1e7/quell/iterations:10/manual_time" -> ("P1_for_1e7", "quell")
    parts = [p for p in full.split("/") if ":" not in p and not p.endswith("_time")]
    return "/".join(parts[:-1]), parts[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--metric", action="append", default=[],
                        help="the value compared: real_time (default) or a counter; "
                             "WORKLOAD_REGEX=COUNTER for the workloads it matches (repeatable)")
    parser.add_argument("--only", default=".", help="workloads to draw (a regex)")
    parser.add_argument("--skip", default=None,
                        help="benchmarks to leave out, as workload/peer (a regex), e.g. references "
                             "that are not peers")
    parser.add_argument("--title", default="quell against its peers (peer time / quell time)")
    args = parser.parse_args()

    default_metric, per_workload = "real_time", []
    for m in args.metric:
        if "=" in m:
            per_workload.append(tuple(m.split("=", 1)))
        else:
            default_metric = m

    def metric_of(workload):
        return next((c for r, c in per_workload if re.search(r, workload)), default_metric)

    samples = collections.defaultdict(list)
    for path in args.files:
        with open(path) as f:
            runs = json.load(f).get("benchmarks", [])
        for run in runs:
            if run.get("run_type", "iteration") != "iteration" or run.get("error_occurred"):
                continue
            workload, peer = base_name(run["name"])
            value = run.get(metric_of(workload))
            if args.skip and re.search(args.skip, f"{workload}/{peer}"):
                continue
            if isinstance(value, (int, float)):
                samples[(workload, peer)].append(float(value))

    workloads = collections.OrderedDict()
    for (workload, peer) in sorted(samples):
        if re.search(args.only, workload):
            workloads.setdefault(workload, []).append(peer)

    rows = []  # (workload, peer, ratio)
    medians = []  # what the ratios are made of, printed at the end
    for workload, peers in workloads.items():
        base = "quell" if "quell" in peers else next((p for p in peers if p.startswith("quell")), None)
        if base is None:
            continue
        base_time = statistics.median(samples[(workload, base)])
        for peer in peers:
            if peer == base or peer.startswith("quell"):
                continue
            peer_time = statistics.median(samples[(workload, peer)])
            rows.append((workload, peer, peer_time / base_time))
            medians.append((workload, base, base_time, peer, peer_time, len(samples[(workload, peer)])))
    if not rows:
        sys.exit("no workload with a quell baseline and a peer")

    fig, ax = plt.subplots(figsize=(8, 0.42 * len(rows) + 1.2))
    labels = [f"{w}  {p}" for w, p, _ in rows]
    ratios = [r for _, _, r in rows]
    colours = ["#2a7ab9" if r >= 1 else "#d9822b" for r in ratios]
    y = range(len(rows))
    ax.barh(y, ratios, color=colours, left=0)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.invert_yaxis()
    for i, r in enumerate(ratios):
        ax.text(r, i, f" {r:.2f}x", va="center", fontsize=7)
    ax.set_xlabel("peer time / quell time (log scale; > 1: quell faster)")
    ax.set_title(args.title, fontsize=10)
    fig.tight_layout()
    fig.savefig(args.output)
    print(f"{'workload':<20} {'quell':<12} {'median':>10} {'peer':<26} {'median':>10} {'n':>3} {'ratio':>6}")
    for (w, b, bt, p, pt, n), (_, _, r) in zip(medians, rows):
        print(f"{w:<20} {b:<12} {bt:10.4g} {p:<26} {pt:10.4g} {n:3d} {r:6.2f}")


if __name__ == "__main__":
    main()
