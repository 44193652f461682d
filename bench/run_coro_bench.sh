#!/usr/bin/env bash
# The coroutine layer's figures against API.md §10.9's targets:
#   * core_distance (/work/shared/tools, or CORE_DISTANCE=path/to/binary):
#     the cache-line round trip between the two CPUs, printed first, since
#     C4-C6 share memory between threads;
#   * coro_bench: every benchmark in its own fresh process, in a new shuffled
#     order each round, ROUNDS rounds (default 5; TIMEOUT seconds each,
#     default 300), through run_pool_bench.sh's loop (its per-peer report is
#     printed too);
#   * coro_instructions under callgrind (bench/callgrind.sh): Ir per await;
#   * coro_alloc: allocations per await and per when_any (C7), frame sizes.
# Then one table: C1-C11 and the fan-out, quell / peer / ratio / target /
# met.
# Builds nothing.
# Usage: ROUNDS=5 bench/run_coro_bench.sh <build>/bench
set -euo pipefail

dir=${1:?usage: ROUNDS=5 $0 path/to/build/bench}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

distance=${CORE_DISTANCE:-}
if [[ -z $distance ]]; then
  src=/work/shared/tools/core_distance.cpp
  if [[ -f $src ]]; then
    g++ -O2 -std=c++20 -pthread "$src" -o "$work/core_distance" && distance=$work/core_distance
  fi
fi
if [[ -n $distance ]]; then
  "$distance" | tee "$work/distance.before"
fi

status=0
ROUNDS=${ROUNDS:-5} TIMEOUT=${TIMEOUT:-300} FORMAT=text \
  "$here/run_pool_bench.sh" "$dir/coro_bench" | tee "$work/report" || status=1
# run_pool_bench.sh prints medians only as text: take the samples again from
# its report lines ("    <peer> n median min-max ratio diff" under a metric).
"$here/callgrind.sh" "$dir/coro_instructions" | tee "$work/callgrind"
"$dir/coro_alloc" | tee "$work/alloc"
if [[ -n $distance ]]; then
  "$distance" | tee "$work/distance.after"
fi

python3 - "$work" <<'PY'
import os, re, sys
work = sys.argv[1]

# == <workload> == / "  <metric>" / "    <peer> n median min-max ratio diff"
med = {}
workload = metric = None
units = {"k": 1e3, "M": 1e6, "G": 1e9}
def num(text):
    m = re.fullmatch(r"(-?[0-9.e+-]+)([kMG]?)", text)
    return float(m.group(1)) * units.get(m.group(2), 1) if m else None
for line in open(os.path.join(work, "report")):
    if line.startswith("== "):
        workload = line.split()[1]
    elif line.startswith("    ") and not line.strip().startswith("peer "):
        parts = line.split()
        if workload and metric and len(parts) >= 3:
            med[(workload, parts[0], metric)] = num(parts[2])
    elif line.startswith("  ") and not line.startswith("   "):
        metric = line.strip()

ir = {}
for line in open(os.path.join(work, "callgrind")):
    parts = line.split()
    if parts and parts[0] in ("await", "await_cancellable"):
        ir[parts[0]] = [num(p) if p != "-" else None for p in parts[1:]]
alloc, alloc7 = {}, {}
for line in open(os.path.join(work, "alloc")):
    parts = line.split()
    if parts and parts[0] == "C3":
        alloc[parts[1]] = (float(parts[3]), float(parts[5]))
    elif parts and parts[0] == "C7":  # C7 <form> heap <n> blocks <n> exceptions <n>
        alloc7[parts[1]] = (float(parts[3]), float(parts[5]), float(parts[7]))
    elif parts and parts[0] == "C10":
        alloc[parts[1]] = float(parts[2])

def g(w, p, m):
    return med.get((w, p, m))
def f(x, d=1):
    return "-" if x is None else f"{x:.{d}f}"
def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b
def ok(c):
    return "-" if c is None else ("yes" if c else "NO")
rows = []
q, fl, a = (g("C1_await", p, "ns_per_await") for p in ("quell", "floor", "asio"))
rows.append(("C1 ns/await", f(q), f"floor {f(fl)} / asio {f(a)}", f(ratio(q, fl), 2) + " x floor",
             "<= 15 ns, <= 1.3x floor", ok(q is not None and fl is not None and q <= 15 and q <= 1.3 * fl)))
d = g("C2_cancellable", "quell", "delta_ns_per_await")
i0, i1 = (ir.get("await") or [None])[0], (ir.get("await_cancellable") or [None])[0]
rows.append(("C2 cancellable - default", f"{f(d, 2)} ns, {f(None if i0 is None or i1 is None else i1 - i0)} Ir",
             f"default {f(g('C2_cancellable', 'quell', 'ns_per_await_default'))} ns, {f(i0)} Ir/await", "-",
             "+<= 1 ns, +<= 5 Ir", ok(d is not None and i0 is not None and i1 is not None and d <= 1 and i1 - i0 <= 5)))
c3 = " ".join(f"{k} {v[0]:g}/{v[1]:g}" for k, v in alloc.items() if isinstance(v, tuple))
c3_ok = all(h == 0 and b <= (1 if k == "task" else 0) for k, v in alloc.items() if isinstance(v, tuple) for h, b in [v])
rows.append(("C3 heap/blocks per await", c3, "-", "-", "0 beyond the child frame", ok(c3_ok)))
t, l, a = (g("C4_submit_get", p, "ns_per_task") for p in ("quell_task", "quell_lambda", "asio_co_spawn"))
r = ratio(t, l)
rows.append(("C4 ns/task", f(t), f"lambda {f(l)} / asio {f(a)}", f(r, 2) + " x lambda", "<= 1.15x lambda",
             ok(r is not None and r <= 1.15)))
q, a = g("C5_hop", "quell", "ns_per_hop"), g("C5_hop", "asio", "ns_per_hop")
rows.append(("C5 ns/hop", f(q), f"asio {f(a)}", f(ratio(q, a), 2) + " x asio", "<= 60 ns, 0 alloc",
             ok(q is not None and q <= 60 and alloc.get("schedule", (1, 1)) == (0.0, 0.0))))
q, qr, qb, s, a = (g("C6_cancel", p, "us_median")
                   for p in ("quell", "quell_as_result", "quell_blocking_wait", "quell_submit_start", "asio"))
rows.append(("C6 us cancel->ready (median)", f"{f(q)} (as_result {f(qr)}, blocking wait {f(qb)})", f"submit->start {f(s)} / asio {f(a)}",
             f"{f(None if q is None or s is None else q - s)} us over start", "<= submit->start + 2 us",
             ok(q is not None and s is not None and q <= s + 2)))
q, qs, qn, a, at = (g("C7_when_any", p, "us_median")
                    for p in ("quell", "quell_sleeper_first", "quell_no_throw", "asio", "asio_timer_first"))
rows.append(("C7 us when_any (median)", f"{f(q, 2)} (sleeper first {f(qs, 2)}, no throw {f(qn, 2)})",
             f"asio {f(a, 2)} (timer first {f(at, 2)})", f(ratio(q, a), 2) + " x asio", "<= 10 us",
             ok(q is not None and q <= 10)))
def beyond_frames(form):  # heap allocations and blocks beyond the two children's frames
    v = alloc7.get(form)
    return None if v is None else v[0] + v[1] - 2
w, e = beyond_frames("when_any"), (alloc7.get("when_any") or (None, None, None))[2]
rows.append(("C7 allocations per when_any", f"frames + {f(w, 2)} (+ {f(e, 2)} exception)",
             f"no throw: frames + {f(beyond_frames('when_any_no_throw'), 2)}", "-", "frames + 1",
             ok(w is not None and w <= 1)))
q, fl, a = (g("C8_recursion", p, "ms_total") for p in ("quell", "floor", "asio"))
ql = g("C1_await", "quell", "ms_total")
rows.append(("C8 ms: 10^6 deep / 10^7 loop", f"{f(q)} / {f(ql)}",
             f"floor {f(fl)} / {f(g('C1_await', 'floor', 'ms_total'))}, asio {f(a)} / {f(g('C1_await', 'asio', 'ms_total'))}",
             f(ratio(q, fl), 2) + " x floor", "completes", ok(q is not None and ql is not None)))
s, p, t = (g("C9_when_all", "quell", m) for m in ("speedup", "ms_parallel", "ms_in_turn"))
ags, agp = g("C9_when_all", "asio_parallel_group", "speedup"), g("C9_when_all", "asio_parallel_group", "ms_parallel")
aps, app = g("C9_when_all", "asio_group_posted", "speedup"), g("C9_when_all", "asio_group_posted", "ms_parallel")
rows.append(("C9 when_all speedup over in turn", f"{f(s, 2)}x ({f(p, 2)} vs {f(t, 2)} ms)",
             f"asio group {f(ags, 2)}x ({f(agp, 2)} ms), posted {f(aps, 2)}x ({f(app, 2)} ms)",
             f(ratio(p, app), 2) + " x asio posted", ">= 1.8x", ok(s is not None and s >= 1.8)))
pd = alloc.get("promise_int_minus_int")
rows.append(("C10 bytes", f"promise-int {f(pd, 0)}; frame {f(alloc.get('quell_frame_int'), 0)}",
             f"floor frame {f(alloc.get('floor_frame_int'), 0)}", f"+{f(alloc.get('frame_int_minus_floor'), 0)} B frame",
             "<= 64 B + result", ok(pd is not None and pd <= 64)))
q, t = g("C11_unwind", "quell_as_result", "ns_per_level"), g("C11_unwind", "quell_throw", "ns_per_level")
rows.append(("C11 ns/level", f(q), f"throw {f(t)}", f(ratio(t, q), 1) + " x faster", "<= 100 ns/level",
             ok(q is not None and q <= 100)))
q, a = g("fanout", "quell", "ns_per_child"), g("fanout", "asio_parallel_group", "ns_per_child")
rows.append(("fan-out ns/child (when_all of 1,000)", f"{f(q)} ({f(None if q is None else 1e3 / q, 1)} M/s)",
             f"asio {f(a)}", f(ratio(q, a), 2) + " x asio", "none in §10.9", "-"))

head = ("target", "quell", "peer", "ratio", "goal", "met")
widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(6)]
print("\n== coroutine targets (API.md §10.9): medians over fresh processes ==")
for r in [head] + rows:
    print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
PY
exit "$status"
