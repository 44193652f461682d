#pragma once

// PeriodicTask: f runs on the pool every `interval`, at a fixed rate.
//
// Tick n is due at start + n * interval (start: construction), so lateness
// never accumulates (no drift). Ticks never overlap: the next tick is
// scheduled when the previous one ends, at the first slot still ahead; the
// slots passed over (the tick overran, or the pool or timer ran late) are
// counted in skipped_ticks() as they pass, with no catch-up burst. So is the
// slot of a tick that never ran because the pool rejected it (a full queue)
// or its own timeout passed while it was queued: the schedule goes on. Ticks
// allocate nothing (their task blocks are the schedule's, made with it),
// except a timer entry per tick when the options carry a deadline or a
// timeout; a tick that cannot have one skips its slot. A tick that throws is
// counted in failed_ticks() and the schedule goes on; its pool task ends
// failed (stats().failed) and the exception goes to the pool's
// on_unobserved_failure. One that exits with OperationCancelled is not a
// failure.
//
// f may return Task<void> (R36): each tick is then that coroutine, as a root
// task, and lasts until it ends, so ticks still never overlap; stop()
// cancels its token. Such ticks allocate their coroutine frames.
//
// Each tick is a pool task with the options given (priority, a timeout per
// tick) and a token cancelled by stop(), by the options' token and by a
// `cancel` shutdown. stop() does not wait: it cancels the running tick's
// token, drops a queued one, and prevents the next. After stop() and join()
// no tick runs; the destructor does both.
//
// Thread safety: thread-safe; join() from the tick itself throws
// std::logic_error. The pool must outlive the periodic task.

#include <chrono>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>

#include "quell/cancellation.hpp"
#include "quell/detail/coro_task.hpp"
#include "quell/task_options.hpp"
#include "quell/thread_pool.hpp"

namespace quell {
namespace detail {

class PeriodicCore;  // the schedule: src/periodic_core.hpp

// A periodic task's callable, behind one virtual call per tick.
class PeriodicBody {
 public:
  explicit PeriodicBody(bool coroutine) noexcept : coroutine_(coroutine) {}
  virtual ~PeriodicBody() = default;
  // A plain f's tick.
  virtual void invoke(const CancellationToken& token) = 0;
  // A coroutine f's tick: its task.
  virtual Task<void> invoke_task(const CancellationToken& token) = 0;
  bool coroutine() const noexcept { return coroutine_; }

 private:
  const bool coroutine_;
};

template <class F>
class PeriodicFn final : public PeriodicBody {
  static constexpr bool kTakesToken = std::is_invocable_v<F&, CancellationToken>;
  using Returns = std::conditional_t<kTakesToken, std::invoke_result<F&, CancellationToken>,
                                     std::invoke_result<F&>>;
  static constexpr bool kCoroutine = std::is_same_v<typename Returns::type, Task<void>>;

 public:
  template <class G>
  explicit PeriodicFn(G&& fn) : PeriodicBody(kCoroutine), fn_(std::forward<G>(fn)) {}

  void invoke(const CancellationToken& token) override {
    if constexpr (!kCoroutine) call(token);
  }
  Task<void> invoke_task(const CancellationToken& token) override {
    if constexpr (kCoroutine) {
      return call(token);
    } else {
      return Task<void>();
    }
  }

 private:
  decltype(auto) call(const CancellationToken& token) {
    if constexpr (kTakesToken) {
      return fn_(token);
    } else {
      return fn_();
    }
  }

  F fn_;
};

}  // namespace detail

class PeriodicTask {
 public:
  // f() or f(CancellationToken). The first tick runs one interval from now.
  // A non-positive interval throws std::invalid_argument; std::bad_alloc and
  // what copying or moving f throws may be thrown too. Strong guarantee:
  // nothing is scheduled then, and no copy of f is kept.
  template <class F>
  PeriodicTask(ThreadPool& pool, std::chrono::steady_clock::duration interval, F&& f,
               const TaskOptions& options = {})
      : PeriodicTask(detail::PoolAccess::core(pool), interval,
                     std::make_unique<detail::PeriodicFn<std::decay_t<F>>>(std::forward<F>(f)),
                     options) {
    static_assert(std::is_invocable_v<std::decay_t<F>&, CancellationToken> ||
                      std::is_invocable_v<std::decay_t<F>&>,
                  "a periodic task is invocable as f() or f(CancellationToken)");
  }

  PeriodicTask(const PeriodicTask&) = delete;
  PeriodicTask& operator=(const PeriodicTask&) = delete;

  // stop(), join(), and the callable destroyed. Never throws; destroyed from
  // its own tick, it terminates (join() would throw).
  ~PeriodicTask();

  // No more ticks; the running tick's token is cancelled. Does not wait.
  void stop() noexcept;
  // Waits for the tick in flight, if any. From the tick itself, throws
  // std::logic_error and does nothing; otherwise never throws.
  void join();
  // False once stopped (by stop(), the options' token, or the pool's shutdown).
  bool running() const noexcept;

  std::uint64_t ticks() const noexcept;          // bodies started
  std::uint64_t skipped_ticks() const noexcept;
  std::uint64_t failed_ticks() const noexcept;

 private:
  PeriodicTask(detail::PoolCore* pool, std::chrono::steady_clock::duration interval,
               std::unique_ptr<detail::PeriodicBody> body, const TaskOptions& options);

  detail::PeriodicCore* core_;
};

}  // namespace quell
