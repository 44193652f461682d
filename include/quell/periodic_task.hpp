#pragma once

// PeriodicTask: f runs on the pool every `interval`, at a fixed rate.
//
// Tick n is due at start + n * interval (start: construction), so lateness
// never accumulates (no drift). Ticks never overlap: the next tick is
// scheduled when the previous one ends, at the first slot still ahead; the
// slots passed over (the tick overran, or the pool or timer ran late) are
// counted in skipped_ticks(), with no catch-up burst. So is the slot of a
// tick that never ran because the pool rejected it (a full queue) or its
// own timeout passed while it was queued: the schedule goes on. A tick that throws is
// counted in failed_ticks() and the schedule goes on; one that exits with
// OperationCancelled is not a failure.
//
// Each tick is a pool task with the options given (priority, a timeout per
// tick) and a token cancelled by stop(), by the options' token and by a
// `cancel` shutdown. stop() does not wait: it cancels the running tick's
// token, drops a queued one, and prevents the next. After stop() and join()
// no tick runs; the destructor does both.
//
// Thread safety: thread-safe; join() from the tick itself throws
// std::logic_error. The pool must outlive the periodic task.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "quell/cancellation.hpp"
#include "quell/detail/submission.hpp"
#include "quell/detail/wait_count.hpp"
#include "quell/task_options.hpp"
#include "quell/thread_pool.hpp"

namespace quell {
namespace detail {

struct TimerKind;

// The schedule, shared by the PeriodicTask, its timer entry and its tick in
// flight; freed with the last reference.
class PeriodicCore {
 public:
  using Clock = std::chrono::steady_clock;

  PeriodicCore(PoolCore* pool, Clock::duration interval, const TaskOptions& options);
  PeriodicCore(const PeriodicCore&) = delete;
  PeriodicCore& operator=(const PeriodicCore&) = delete;

  void start();  // schedules the first tick, one interval from construction
  void stop() noexcept;
  void join();
  bool stopped() const noexcept;
  void fire() noexcept;  // the timer thread: the slot is due, post a tick

  std::uint64_t ticks() const noexcept { return ticks_.load(std::memory_order_relaxed); }
  std::uint64_t skipped() const noexcept { return skipped_.load(std::memory_order_relaxed); }
  std::uint64_t failed() const noexcept { return failed_.load(std::memory_order_relaxed); }

  void add_ref() noexcept {
    // Relaxed: made from an existing reference.
    refs_.fetch_add(1, std::memory_order_relaxed);
  }
  void release() noexcept {
    // Acq_rel: every user's accesses happen-before the deletion.
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  // Destroys the callable: no tick runs after stop() and join().
  virtual void discard() noexcept = 0;

 protected:
  virtual ~PeriodicCore() = default;
  virtual void invoke(const CancellationToken& token) = 0;

 private:
  struct Tick;
  static const TimerKind timer;
  void run_tick(const CancellationToken& token) noexcept;
  void schedule(std::uint64_t slot) noexcept;
  // Schedules the first slot still ahead, counting those passed over (and
  // the current one, if `missed`: its tick never ran) as skipped.
  void schedule_next(bool missed) noexcept;

  PoolCore* const pool_;
  const Clock::duration interval_;
  const Clock::time_point origin_;
  CancellationSource source_;  // linked to the options' token
  TaskOptions options_;        // each tick's: the user's, with source_'s token
  const TaskId family_;        // every tick's (F1)
  std::uint64_t slot_ = 0;     // the tick chain's only: slot of the last scheduled tick
  std::atomic<std::uint64_t> ticks_{0};  // relaxed counters: statistics
  std::atomic<std::uint64_t> skipped_{0};
  std::atomic<std::uint64_t> failed_{0};
  WaitCount in_flight_;               // ticks posted and not yet ended (0 or 1)
  std::atomic<std::uint32_t> refs_{1};
};

template <class F>
class PeriodicFn final : public PeriodicCore {
 public:
  template <class G>
  PeriodicFn(PoolCore* pool, Clock::duration interval, G&& fn, const TaskOptions& options)
      : PeriodicCore(pool, interval, options) {
    new (&fn_) F(std::forward<G>(fn));
  }

  void discard() noexcept override {
    if (std::exchange(alive_, false)) fn_.~F();
  }

 private:
  ~PeriodicFn() override { discard(); }

  void invoke(const CancellationToken& token) override {
    if constexpr (std::is_invocable_v<F&, CancellationToken>) {
      fn_(token);
    } else {
      fn_();
    }
  }

  bool alive_ = true;  // the owner's; no tick runs once it is false
  union {
    F fn_;
  };
};

}  // namespace detail

class PeriodicTask {
 public:
  // f() or f(CancellationToken). The first tick runs one interval from now.
  // A non-positive interval throws std::invalid_argument.
  template <class F>
  PeriodicTask(ThreadPool& pool, std::chrono::steady_clock::duration interval, F&& f,
               const TaskOptions& options = {})
      : core_(new detail::PeriodicFn<std::decay_t<F>>(detail::PoolAccess::core(pool), interval,
                                                     std::forward<F>(f), options)) {
    static_assert(std::is_invocable_v<std::decay_t<F>&, CancellationToken> ||
                      std::is_invocable_v<std::decay_t<F>&>,
                  "a periodic task is invocable as f() or f(CancellationToken)");
    try {
      core_->start();
    } catch (...) {
      core_->discard();
      core_->release();
      throw;
    }
  }

  PeriodicTask(const PeriodicTask&) = delete;
  PeriodicTask& operator=(const PeriodicTask&) = delete;

  ~PeriodicTask() {
    core_->stop();
    core_->join();
    core_->discard();
    core_->release();
  }

  // No more ticks; the running tick's token is cancelled. Does not wait.
  void stop() noexcept { core_->stop(); }
  // Waits for the tick in flight, if any.
  void join() { core_->join(); }
  // False once stopped (by stop(), the options' token, or the pool's shutdown).
  bool running() const noexcept { return !core_->stopped(); }

  std::uint64_t ticks() const noexcept { return core_->ticks(); }  // bodies started
  std::uint64_t skipped_ticks() const noexcept { return core_->skipped(); }
  std::uint64_t failed_ticks() const noexcept { return core_->failed(); }

 private:
  detail::PeriodicCore* core_;
};

}  // namespace quell
