#pragma once

// The coroutine workloads shared by coro_bench (time), coro_instructions
// (callgrind instruction counts) and coro_alloc (allocation counts), so all
// three measure exactly the same code: a child that co_returns at once,
// awaited in a loop (API.md §10.9 C1, C2, C8), recursion (C8), a cancelled
// chain unwinding (C11), and the child that loses C7's when_any. Peers:
// quell::Task, the floor task (floor_task.hpp) and asio::awaitable
// (standalone Asio).

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>
#include <cstddef>
#include <variant>

#include "floor_task.hpp"
#include "quell/coro.hpp"
#include "quell/when.hpp"

namespace quell_bench {

// ---- C1, C2: a child that co_returns at once, awaited n times -------------

inline quell::Task<int> quell_child(int i) { co_return i; }
inline quell::Task<long> quell_await_loop(long n) {
  long sum = 0;
  for (long i = 0; i < n; ++i) sum += co_await quell_child(static_cast<int>(i));
  co_return sum;
}

inline FloorTask<int> floor_child(int i) { co_return i; }
inline FloorTask<long> floor_await_loop(long n) {
  long sum = 0;
  for (long i = 0; i < n; ++i) sum += co_await floor_child(static_cast<int>(i));
  co_return sum;
}

inline asio::awaitable<int> asio_child(int i) { co_return i; }
inline asio::awaitable<void> asio_await_loop(long n, long* out) {
  long sum = 0;
  for (long i = 0; i < n; ++i) sum += co_await asio_child(static_cast<int>(i));
  *out = sum;
}
// On an io_context run by this thread alone.
inline long run_asio_await_loop(long n) {
  asio::io_context context(1);
  long out = 0;
  asio::co_spawn(context, asio_await_loop(n, &out), asio::detached);
  context.run();
  return out;
}

// ---- C8: recursion n deep --------------------------------------------------

inline quell::Task<long> quell_recurse(long n) {
  if (n == 0) co_return 0;
  const long below = co_await quell_recurse(n - 1);
  co_return below + 1;
}

inline FloorTask<long> floor_recurse(long n) {
  if (n == 0) co_return 0;
  const long below = co_await floor_recurse(n - 1);
  co_return below + 1;
}

inline asio::awaitable<long> asio_recurse(long n) {
  if (n == 0) co_return 0;
  const long below = co_await asio_recurse(n - 1);
  co_return below + 1;
}
inline asio::awaitable<void> asio_recurse_root(long n, long* out) {
  *out = co_await asio_recurse(n);
}
inline long run_asio_recurse(long n) {
  asio::io_context context(1);
  long out = 0;
  asio::co_spawn(context, asio_recurse_root(n, &out), asio::detached);
  context.run();
  return out;
}

// ---- C7: the child that loses when_any(a ready child, this one) ------------
//
// It sleeps for an hour, so it only ends by being cancelled: its sleep
// throws OperationCancelled (R7) and it ends cancelled; the as_result form
// ends cancelled without an exception (R8). It counts its starts and its
// ends (its locals' destruction), so the caller checks that the when_any
// joined it: started == ended once the co_await's full-expression has ended
// (with co_yield cancelled, the locals die with the frame, which the
// combinator's awaiter destroys at the end of that full-expression). Plain
// counters: everything a child did happens-before the code after the
// combinator's co_await (R21-R23).

struct SleeperCounts {
  long started = 0;
  long ended = 0;
};

struct SleeperEnd {
  SleeperCounts* counts;
  ~SleeperEnd() { ++counts->ended; }
};

inline quell::Task<void> quell_sleeper(SleeperCounts* counts) {
  ++counts->started;
  const SleeperEnd end{counts};
  co_await quell::sleep_for(std::chrono::hours(1));
}

inline quell::Task<void> quell_sleeper_as_result(SleeperCounts* counts) {
  ++counts->started;
  const SleeperEnd end{counts};
  auto r = co_await quell::as_result(quell::sleep_for(std::chrono::hours(1)));
  if (r.cancelled()) co_yield quell::cancelled;
}

// C7's when_any in three forms: the ready child first (API.md's), the
// sleeper first (it starts inline and parks before the ready child runs),
// and the sleeper in its as_result form (no exception).
enum class WhenAnyForm { ready_first, sleeper_first, no_throw };

template <WhenAnyForm Form>
auto quell_when_any(SleeperCounts* sleepers, int ready) {
  if constexpr (Form == WhenAnyForm::sleeper_first) {
    return quell::when_any(quell_sleeper(sleepers), quell_child(ready));
  } else if constexpr (Form == WhenAnyForm::no_throw) {
    return quell::when_any(quell_child(ready), quell_sleeper_as_result(sleepers));
  } else {
    return quell::when_any(quell_child(ready), quell_sleeper(sleepers));
  }
}

// The ready child's value from that when_any's result; -1 if it lost.
template <WhenAnyForm Form, class Winner>
int ready_value(const Winner& winner) {
  constexpr std::size_t kReady = Form == WhenAnyForm::sleeper_first ? 1 : 0;
  return winner.index() == kReady ? std::get<kReady>(winner) : -1;
}

// ---- C11: a cancelled chain `levels` deep unwinds ---------------------------
//
// The leaf cancels the root's source and then reaches a checkpoint (yield()
// with its token cancelled completes cancelled without suspending), so every
// level above sees its child end cancelled. Two ways up:
//   as_result:  each level `auto r = co_await as_result(child()); if
//               (r.cancelled()) co_yield quell::cancelled;` (no exception)
//   throw:      each level `co_await child();` and OperationCancelled
//               propagates (captured and rethrown at every level)
// The wrappers stop the unwinding at the top, so sync_wait returns normally.

inline quell::Task<void> unwind_as_result(int levels, quell::CancellationSource* source) {
  if (levels == 0) {
    source->request_cancel();
    auto r = co_await quell::as_result(quell::yield());
    if (r.cancelled()) co_yield quell::cancelled;
    co_return;
  }
  auto r = co_await quell::as_result(unwind_as_result(levels - 1, source));
  if (r.cancelled()) co_yield quell::cancelled;
}

inline quell::Task<void> unwind_throw(int levels, quell::CancellationSource* source) {
  if (levels == 0) {
    source->request_cancel();
    co_await quell::yield();
    co_return;
  }
  co_await unwind_throw(levels - 1, source);
}

inline quell::Task<bool> unwind_as_result_top(int levels, quell::CancellationSource* source) {
  auto r = co_await quell::as_result(unwind_as_result(levels, source));
  co_return r.cancelled();
}

inline quell::Task<bool> unwind_throw_top(int levels, quell::CancellationSource* source) {
  bool cancelled = false;
  try {
    co_await unwind_throw(levels, source);
  } catch (const quell::OperationCancelled&) {
    cancelled = true;
  }
  co_return cancelled;
}

// One chain on this thread's sync_wait loop, its root's token from a fresh
// source; true if it ended cancelled, as it must.
template <bool AsResult>
inline bool unwind_once(int levels) {
  quell::CancellationSource source;
  if constexpr (AsResult) {
    return quell::sync_wait(unwind_as_result_top(levels, &source), source.token());
  } else {
    return quell::sync_wait(unwind_throw_top(levels, &source), source.token());
  }
}

}  // namespace quell_bench
