#!/usr/bin/env python3
"""Writes the seed corpus of quell_fuzz (tests/fuzz/corpus/): one small input
per operation or interplay of operations, in the format quell_fuzz.cpp's
opening comment describes. Run from anywhere; it rewrites the directory.
"""

import pathlib
import shutil

OPS = """source_cancel source_copy source_move source_reset source_link source_chain
token_take token_change observe callback_register callback_destroy callback_self
submit handle post submit_after submit_at handle_cancel future_get future_wait
future_drop wait_idle shutdown scope_spawn scope_cancel scope_close scope_wait
scope_child group_make group_submit group_cancel group_wait""".split()
OP = {name: code for code, name in enumerate(OPS)}

# Body acts (b bits 0-2), options (c).
VALUE, FAIL, CANCEL, POLL, SLEEP, FORK, SIBLING, WATCH = range(8)
REQUESTED, DEADLINE, SHUTDOWN, FAILURE = 1, 2, 3, 4


def header(workers=1, cancel=False, streams=1, bounded=False, idle=False):
    h0 = (workers - 1) | (cancel << 1) | ((streams - 1) << 2) | (bounded << 4)
    return bytes([h0, int(idle)])


def op(name, a=0, b=0, c=0, stream=0):
    return bytes([OP[name] | (stream << 5), a, b, c])


def body(act, sleep=0, timing=0):
    """b: the act, a sleep index (0-3), a timing index (0-7: -1ms, 0, 50us,
    200us, 1ms, 2ms, 5ms, never)."""
    return act | (sleep << 3) | (timing << 5)


def opts(token=0, slot=0, priority=1, timing=0):
    """c: token 0 none, 1 source slot, 2 token slot, 3 handle slot's token;
    timing 0 none, 1 timeout, 2 deadline."""
    return token | (slot << 2) | (priority << 4) | (timing << 6)


SEEDS = {
    # Cancellation alone.
    "cancel_reasons": header() + b"".join(
        op("source_cancel", a=3, b=r) for r in range(5)) + op("source_reset", a=3, b=1)
        + op("source_cancel", a=3, b=0),
    "source_copy_move_reset": header() + op("source_copy", a=3, b=0) + op("source_move", a=0, b=1)
        + op("source_cancel", a=0) + op("source_cancel", a=1, b=DEADLINE)
        + op("source_reset", a=1, b=0) + op("source_reset", a=3, b=1),
    "linked_two_parents": header() + op("source_link", a=3 | (0 << 2), b=1, c=1 << 4)
        + op("token_take", a=1, b=0) + op("callback_register", a=0, b=0)
        + op("source_cancel", a=0, b=SHUTDOWN) + op("observe", a=0, b=0)
        + op("callback_destroy", a=0),
    "linked_empty": header() + op("source_link", a=0, b=2, c=0x80) + op("source_cancel", a=2),
    "linked_already_cancelled": header() + op("source_cancel", a=3, b=FAILURE)
        + op("source_link", a=3, b=1) + op("token_take", a=1, b=1) + op("observe", b=1),
    "chain_deep": header() + op("source_chain", a=3, b=1, c=7) + op("token_take", a=1, b=0)
        + op("callback_register", a=0, b=1) + op("source_cancel", a=3, b=DEADLINE)
        + op("callback_destroy", a=1),
    "chain_of_links": header() + op("source_link", a=3, b=0) + op("source_link", a=0, b=1)
        + op("source_chain", a=1, b=2, c=3) + op("source_reset", a=0) + op("source_reset", a=1)
        + op("source_cancel", a=3, b=REQUESTED) + op("token_take", a=2, b=0) + op("observe", b=0),
    "tokens": header() + op("token_take", a=3, b=0) + op("token_change", a=0, b=1, c=0)
        + op("token_change", a=1, b=2, c=1) + op("token_change", a=2, b=3, c=3)
        + op("token_change", a=3, b=0, c=2) + op("source_cancel", a=3)
        + op("observe", b=1) + op("observe", b=2),
    "callbacks": header() + op("token_take", a=3, b=0)
        + op("callback_register", a=0, b=0) + op("callback_register", a=1 << 2 | 3, b=1)
        + op("callback_register", a=3 << 2, b=2) + op("callback_destroy", a=0)
        + op("source_cancel", a=3, b=FAILURE) + op("callback_register", a=0, b=3)
        + op("callback_destroy", a=1) + op("callback_destroy", a=2) + op("callback_destroy", a=3),
    "callback_self": header() + op("callback_self", a=1 << 2 | 3, b=0)
        + op("callback_self", a=1 << 2 | 3, b=1) + op("callback_destroy", a=1, b=1)
        + op("source_cancel", a=3) + op("callback_destroy", a=0, b=1),
    "callbacks_racing_cancel": header(streams=3)
        + op("callback_register", a=1 << 2 | 0, b=0, stream=0)
        + op("callback_self", a=1 << 2 | 0, b=0, stream=1)
        + op("source_cancel", a=0, b=REQUESTED, stream=2)
        + op("callback_destroy", a=0, stream=0) + op("callback_destroy", a=0, b=1, stream=1),
    # Tasks.
    "submit_each_act": header(workers=2) + b"".join(
        op("submit", a=i % 4, b=body(act, sleep=1)) + op("future_get", a=i % 4)
        for i, act in enumerate(range(8))),
    "submit_cancelled_token": header() + op("source_cancel", a=3, b=DEADLINE)
        + op("submit", a=0, c=opts(token=1, slot=3)) + op("source_cancel", a=0)
        + op("submit", a=1, c=opts(token=1, slot=0)) + op("future_get", a=0)
        + op("future_get", a=1),
    "submit_then_cancel": header(workers=1) + op("submit", a=0, b=body(SLEEP, sleep=3))
        + op("submit", a=1, c=opts(token=1, slot=3)) + op("submit", a=2, b=POLL, c=opts(token=1, slot=3))
        + op("source_cancel", a=3, b=REQUESTED) + op("future_get", a=1) + op("future_get", a=2),
    "timeouts_and_deadlines": header(workers=1) + b"".join(
        op("submit", a=t % 4, b=body(SLEEP, sleep=2, timing=t), c=opts(timing=1 + t % 2))
        for t in range(8)),
    "priorities": header(workers=1) + op("submit", a=0, b=body(SLEEP, sleep=2))
        + b"".join(op("post", b=VALUE, c=opts(priority=p)) for p in (0, 1, 2, 0, 2))
        + op("wait_idle"),
    "handle_cancel": header() + op("handle", a=0, b=body(SLEEP, sleep=3)) + op("handle", a=1, b=POLL)
        + op("handle_cancel", a=1) + op("handle_cancel", a=0) + op("handle_cancel", a=0)
        + op("future_get", a=8 | 0) + op("future_get", a=8 | 1),
    "handle_token_callbacks": header() + op("handle", a=0, b=body(SLEEP, sleep=3, timing=3), c=opts(timing=1))
        + op("token_take", a=0, b=4 | 0) + op("callback_register", a=2 << 2 | 0, b=0)
        + op("submit", a=0, c=opts(token=3, slot=0)) + op("future_wait", a=8, b=0)
        + op("callback_destroy", a=0),
    "post": header() + op("post", b=VALUE) + op("post", b=FAIL) + op("post", b=SIBLING)
        + op("source_cancel", a=3) + op("post", c=opts(token=1, slot=3)) + op("wait_idle"),
    "delayed": header(workers=2) + op("submit_after", a=0 | 1 << 3, b=VALUE)
        + op("submit_at", a=1 | 3 << 3, b=POLL) + op("submit_after", a=2 | 5 << 3)
        + op("submit_after", a=3 | 4 << 3, c=opts(token=1, slot=3))
        + op("source_cancel", a=3) + op("future_wait", a=0, b=0) + op("wait_idle"),
    "delayed_then_shutdown": header() + op("submit_after", a=0 | 4 << 3)
        + op("submit_at", a=1 | 4 << 3, b=body(VALUE, timing=6), c=opts(timing=2)) + op("shutdown")
        + op("future_get", a=0) + op("future_get", a=1),
    "future_waits": header(workers=2) + b"".join(
        op("submit", a=m % 4, b=body(SLEEP, sleep=m % 4)) + op("future_wait", a=m % 4, b=m | 1 << 3)
        for m in (0, 1, 2, 3, 4, 5, 7)) + op("future_drop", a=0) + op("future_drop", a=8),
    "wait_on_cancelled_token": header() + op("source_cancel", a=3) + op("token_take", a=3, b=1)
        + op("submit", a=0, b=body(SLEEP, sleep=3)) + op("future_wait", a=0, b=3 | 1 << 3),
    "fork_join_one_worker": header(workers=1) + b"".join(
        op("submit", a=i, b=body(FORK, sleep=i)) for i in range(4)) + op("wait_idle")
        + b"".join(op("future_get", a=i) for i in range(4)),
    # Fork bodies: bits 3-4 pick a child, a Scope, a TaskGroup or a burst of
    # posts; bits 5-7 the children's acts.
    "fork_failures": header(workers=2) + op("submit", a=0, b=body(FORK, sleep=1, timing=FAIL))
        + op("submit", a=1, b=body(FORK, sleep=2, timing=FAIL | CANCEL << 1))
        + op("submit", a=2, b=body(FORK, sleep=1, timing=POLL | FAIL << 1), c=opts(token=1, slot=3))
        + op("source_cancel", a=3) + op("wait_idle"),
    "fork_burst_then_shutdown": header(workers=2, cancel=True, streams=2)
        + op("submit", a=0, b=body(FORK, sleep=3), stream=0) + op("shutdown", stream=1),
    "watch_own_token": header() + op("handle", a=0, b=body(WATCH)) + op("handle_cancel", a=0)
        + op("submit", a=0, b=body(WATCH, timing=1), c=opts(timing=1)) + op("wait_idle"),
    "shutdown_drain": header(workers=2, streams=2)
        + b"".join(op("submit", a=i, b=body(SLEEP, sleep=1), stream=0) for i in range(4))
        + op("shutdown", stream=1) + op("post", stream=1) + op("submit", a=0, stream=1)
        + op("observe", a=1, stream=1),
    "shutdown_cancel": header(workers=1, cancel=True, streams=2)
        + op("handle", a=0, b=body(SLEEP, sleep=3), stream=0)
        + b"".join(op("submit", a=i, b=POLL, stream=0) for i in range(4))
        + op("shutdown", stream=1) + op("group_submit", a=0, stream=1),
    "bounded_queue": header(workers=1, bounded=True)
        + b"".join(op("submit", a=i % 4, b=body(SLEEP, sleep=1)) for i in range(6))
        + op("post") + op("post") + op("wait_idle") + op("observe", a=1),
    "wait_idle_from_three": header(workers=2, streams=3)
        + b"".join(op("post", b=SLEEP | 1 << 3, stream=s) + op("wait_idle", stream=s) for s in range(3)),
    # Scopes.
    "scope_spawn_wait": header(workers=2) + op("scope_spawn", a=0, b=VALUE)
        + op("scope_spawn", a=0, b=SIBLING) + op("scope_spawn", a=0, b=FAIL)
        + op("scope_spawn", a=0, b=body(SLEEP, sleep=3)) + op("scope_wait", a=0)
        + op("scope_wait", a=0) + op("scope_spawn", a=0),
    "scope_children": header(workers=2) + op("scope_child", a=0) + op("scope_child", a=1)
        + op("scope_spawn", a=1, b=SIBLING) + op("scope_spawn", a=2, b=FAIL)
        + op("scope_spawn", a=2, b=POLL) + op("scope_wait", a=2) + op("scope_wait", a=2)
        + op("scope_cancel", a=0) + op("scope_spawn", a=1) + op("scope_child", a=0, b=1),
    "scope_close": header() + op("scope_child", a=0) + op("scope_spawn", a=1, b=SIBLING)
        + op("scope_close", a=1) + op("scope_spawn", a=1) + op("scope_wait", a=1)
        + op("scope_close", a=0) + op("scope_spawn", a=0),
    "scope_cancel_racing_spawns": header(workers=2, streams=3)
        + b"".join(op("scope_spawn", a=0, b=body(SLEEP, sleep=1), stream=s) for s in (0, 1) for _ in range(3))
        + op("scope_cancel", a=0, stream=2) + op("scope_wait", a=0, stream=2),
    "scope_task_options": header() + op("scope_child", a=0)
        + op("scope_spawn", a=1, b=body(POLL, timing=2), c=opts(timing=1))
        + op("source_cancel", a=3) + op("scope_spawn", a=1, c=opts(token=1, slot=3))
        + op("scope_wait", a=1),
    # Groups.
    "group_own": header(workers=2) + op("group_make") + op("group_submit", a=8 | 0, b=VALUE)
        + op("group_submit", a=8 | 1, b=FAIL) + op("group_submit", a=8 | 2, b=body(SLEEP, sleep=3))
        + op("group_wait", a=8, b=1) + op("group_cancel", a=8) + op("group_submit", a=8 | 3)
        + op("group_wait", a=8, b=0) + op("group_make"),
    "group_cancel_queued": header(workers=1) + op("group_make")
        + op("submit", a=0, b=body(SLEEP, sleep=3))
        + op("group_submit", a=8 | 1) + op("group_submit", a=8 | 2, b=POLL)
        + op("group_cancel", a=8) + op("future_get", a=1) + op("future_get", a=2),
    "group_shared_streams": header(workers=2, streams=2)
        + op("group_submit", a=0, b=FAIL, stream=0) + op("group_submit", a=1, b=SLEEP, stream=1)
        + op("group_wait", a=0, b=1, stream=0) + op("group_cancel", a=0, stream=1)
        + op("group_wait", a=0, b=1, stream=1),
    "group_destroyed_with_tasks": header(workers=1) + op("group_make")
        + op("group_submit", a=8 | 0, b=body(SLEEP, sleep=3)) + op("group_submit", a=8 | 1)
        + op("group_make") + op("future_get", a=0) + op("future_get", a=1),
    # Several streams at once.
    "streams_shared_source": header(workers=2, streams=3)
        + op("submit", a=0, b=POLL, c=opts(token=1, slot=0), stream=0)
        + op("callback_register", a=1 << 2 | 0, b=0, stream=1)
        + op("source_link", a=0, b=3, stream=1) + op("handle", a=0, c=opts(token=1, slot=0), stream=1)
        + op("source_cancel", a=0, b=SHUTDOWN, stream=2) + op("source_cancel", a=0, b=FAILURE, stream=0)
        + op("future_get", a=0, stream=0) + op("callback_destroy", a=0, stream=1),
    "streams_everything": header(workers=2, cancel=True, streams=3, idle=True)
        + op("scope_child", a=0, stream=0) + op("scope_spawn", a=1, b=SIBLING, stream=0)
        + op("group_make", stream=1) + op("group_submit", a=8, b=FORK, stream=1)
        + op("handle", a=0, b=body(SLEEP, sleep=2), stream=2) + op("handle_cancel", a=0, stream=2)
        + op("submit_after", a=1 | 2 << 3, stream=2) + op("observe", a=1, stream=0)
        + op("shutdown", stream=1) + op("scope_spawn", a=0, stream=0) + op("post", stream=2),
    "empty": b"",
    "header_only": header(workers=2, cancel=True, streams=3, bounded=True, idle=True),
}


def main():
    out = pathlib.Path(__file__).resolve().parent / "corpus"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    for name, data in sorted(SEEDS.items()):
        (out / name).write_bytes(data)
    print(f"{len(SEEDS)} seeds in {out}")


if __name__ == "__main__":
    main()
