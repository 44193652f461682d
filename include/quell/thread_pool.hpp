#pragma once

// ThreadPool: a work-stealing pool whose tasks can be cancelled cheaply.
//
// Each worker owns a deque: a task submitted from a worker goes to that
// worker's deque (LIFO for the owner, FIFO for thieves); a task submitted
// from any other thread goes to a shared injection queue, one per priority.
// Idle workers steal, spin briefly, then sleep; a submission wakes one.
//
// Every task has its own cancellation state, cancelled when any of these
// is: the options' token, the handle (handle()), the group or scope that
// spawned it, its deadline, a `cancel` shutdown. Deadlines and delayed starts
// (submit_after(), submit_at()) are kept by the pool's timer thread
// (docs/timers.md): a queued task whose deadline passes is resolved
// timed_out at the deadline; a running one sees its token cancelled then.
//
// A queued task whose state is cancelled is dropped at once, on the
// cancelling thread: its future becomes ready (cancelled, or timed_out for a
// deadline) and its callable, with everything it captured, is destroyed then. A running task is never interrupted: it
// polls its token (passed to f(CancellationToken), or
// this_task::cancellation_token()).
//
// Nothing submitted is lost: every future becomes ready exactly once. A
// submission after shutdown() or past max_queue_size is rejected: its future
// is ready at once with status rejected (post() returns false).
//
// Thread safety: thread-safe. submit(), post() and handle() may be called
// from any number of threads at once, also while shutdown() runs. shutdown(),
// wait_idle() and the destructor must not be called from one of the pool's
// own workers: they throw std::logic_error (the destructor terminates).
//
// Ordering: everything sequenced before submit() happens-before the task
// runs; everything the task did happens-before its future is seen ready, and
// before wait_idle() returns.

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>

#include "quell/cancellation.hpp"
#include "quell/detail/task.hpp"
#include "quell/detail/clock.hpp"
#include "quell/detail/submission.hpp"
#include "quell/future.hpp"
#include "quell/task_handle.hpp"
#include "quell/task_options.hpp"
#include "quell/task_status.hpp"

namespace quell {

enum class ShutdownPolicy { drain, cancel };  // drain: run what is queued; cancel: drop it

struct ThreadPoolConfig {
  std::size_t thread_count = std::thread::hardware_concurrency();  // 0: std::invalid_argument
  std::size_t max_queue_size = 0;  // 0: unbounded; else submissions past it are rejected
  ShutdownPolicy shutdown_policy = ShutdownPolicy::drain;
  // Workers are named thread_name-N, the timer thread thread_name-timer
  // (where the platform has pthread_setname_np, and -Dthread_names allows).
  std::string thread_name = "quell";

  // Hooks (docs/thread-pool.md, "Hooks"). An empty one is never called. The
  // pool calls its own copy, from several workers at once: a hook must be
  // safe to call concurrently with itself.

  // Called first on worker i (0 <= i < thread_count), once, after the pool
  // named the thread and before it runs any task: affinity, scheduling
  // policy, a name of one's own, thread-locals. The constructor returns only
  // after every worker's call returned. One that throws makes the
  // constructor throw that exception (the lowest index's, if several throw),
  // after joining every worker and the timer thread it started.
  std::function<void(std::size_t worker_index)> on_thread_start;
  // Called last on worker i, once, after the last task it ran, as
  // shutdown() (or the destructor) joins it; on every worker whose
  // on_thread_start returned, also when the constructor throws. One that
  // throws calls std::terminate.
  std::function<void(std::size_t worker_index)> on_thread_stop;
  // Called with the exception and the task's id (this_task::id() inside it)
  // when a task whose outcome nothing else sees ends failed: one given to
  // post() (a callable, or a coroutine Task), or a PeriodicTask's tick. It
  // runs on the worker that ended the task, after the task is counted in
  // stats().failed and before it counts as finished: wait_idle() and
  // shutdown() wait for it. Empty, such failures are only counted. One that
  // throws calls std::terminate. Never called for submit(), handle(), a
  // group's or a scope's tasks: their future or set reports the failure.
  std::function<void(std::exception_ptr failure, TaskId id)> on_unobserved_failure;
};

// Latencies in log2 buckets of nanoseconds: bucket b counts values in
// [2^b, 2^(b+1)) ns (bucket 0 also counts 0 ns, the last also everything
// longer). A value type, summed over the pool's workers by stats().
struct LatencyHistogram {
  static constexpr std::size_t kBuckets = 40;
  std::array<std::uint64_t, kBuckets> buckets{};
  std::uint64_t count = 0;   // values recorded
  std::uint64_t sum_ns = 0;  // their sum
  // The upper bound, 2^(b+1) ns, of the bucket b that holds the p-th
  // quantile (p in [0, 1], clamped); 0 when count == 0.
  std::uint64_t percentile_ns(double p) const noexcept;
};

struct ThreadPoolStats {
  std::uint64_t submitted = 0;  // every submission, rejected ones included
  std::uint64_t completed = 0;
  std::uint64_t failed = 0;
  std::uint64_t cancelled = 0;
  std::uint64_t timed_out = 0;
  std::uint64_t rejected = 0;
  std::uint64_t stolen = 0;
  std::size_t queued = 0;   // accepted, neither started nor resolved
  std::size_t running = 0;  // started, not yet terminal
  std::size_t suspended = 0;  // of `running`: coroutine tasks parked at a co_await
  // Tasks that ended cancelled or timed_out, indexed by their CancelReason
  // (requested, deadline, shutdown, failure; none stays 0).
  std::array<std::uint64_t, 5> ended_by_reason{};
  // Sampled: one task in kLatencySample per submitting thread (its first
  // included) is timed, since a clock read on every task would cost more
  // than the rest of its bookkeeping. queue_wait: submitted (or, for a
  // delayed task, due) -> started; run_time: started -> ended (a coroutine's
  // suspensions included).
  LatencyHistogram queue_wait;
  LatencyHistogram run_time;
  // Every task whose token was cancelled while it ran (not sampled):
  // cancelled -> ended, however it then ended. How promptly task bodies
  // notice cancellation. A cancellation that races the task's end may go
  // uncounted.
  LatencyHistogram cancel_reaction;
  static constexpr std::uint64_t kLatencySample = 64;
};

// The stats in the Prometheus text exposition format, every metric named
// `prefix`_...: counters P_tasks_total{status=...},
// P_tasks_ended_by_reason_total{reason=...}, P_tasks_stolen_total; gauges
// P_tasks_queued, P_tasks_running, P_tasks_suspended; histograms (seconds)
// P_queue_wait_seconds, P_run_time_seconds, P_cancel_reaction_seconds. Each
// with its # HELP and # TYPE lines. Throws std::bad_alloc.
std::string to_prometheus(const ThreadPoolStats& stats, std::string_view prefix = "quell");

class ThreadPool {
 public:
  // Each constructor throws std::invalid_argument for a thread_count of 0
  // (ThreadPool() asks for at least 1), std::system_error if a worker or the
  // timer thread cannot start, std::bad_alloc (std::length_error for a count
  // no vector can hold), or what on_thread_start threw; always after joining
  // the threads it started.
  ThreadPool();
  explicit ThreadPool(std::size_t thread_count);
  explicit ThreadPool(ThreadPoolConfig config);
  // shutdown(), then frees the pool. Never throws; called from one of the
  // pool's own workers, it terminates.
  ~ThreadPool();

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // F is invocable as f() or f(CancellationToken) (the token form wins when
  // both are); R is its decayed result type. F may also be a Task<T>, or
  // return one: the task then runs as the pool task's root coroutine, R is
  // T, and f (with its captures) lives until the coroutine ends (R27, R28). The options are taken by
  // reference: a copy would copy the token, two atomic operations on a
  // state that every task sharing the token contends for.
  //
  // Exceptions of submit(), handle(), submit_after(), submit_at() and post():
  // std::bad_alloc (the task's block; a timer entry for a deadline, timeout
  // or delayed start), or what copying or moving f into the task throws.
  // Strong guarantee: nothing is counted, queued or registered, and no copy
  // of f is kept (an f passed as an rvalue may have been moved from). A
  // rejection is no exception: the future is ready (rejected), or post()
  // returns false.
  // Nothing can fail once a task is accepted: on one of this pool's own
  // workers, a full deque that cannot grow hands the task to the pool's
  // shared queue, which allocates nothing.
  template <class F>
  auto submit(F&& f, const TaskOptions& options = {})
      -> Future<detail::TaskResultOf<std::decay_t<F>>> {
    using R = detail::TaskResultOf<std::decay_t<F>>;
    auto* task = new detail::TaskNode<std::decay_t<F>, R>(std::forward<F>(f), 2, 1);
    detail::pool_submit(core_, task, options);
    return Future<R>(task);
  }

  template <class F>
  auto handle(F&& f, const TaskOptions& options = {})
      -> TaskHandle<detail::TaskResultOf<std::decay_t<F>>> {
    using R = detail::TaskResultOf<std::decay_t<F>>;
    // The handle's source adds a reference and a source.
    auto* task = new detail::TaskNode<std::decay_t<F>, R>(std::forward<F>(f), 3, 2);
    detail::pool_submit(core_, task, options);
    return TaskHandle<R>(detail::StateAccess::adopt_source(task), Future<R>(task));
  }

  // As submit(), the task starting no earlier than `delay` from now (or at
  // `when`). Until then it is queued: it counts in stats().queued and
  // against max_queue_size, wait_idle() waits for it, its deadline applies,
  // and cancelling it drops it at once. A shutdown resolves it cancelled
  // (reason shutdown) without waiting.
  template <class F>
  auto submit_after(std::chrono::steady_clock::duration delay, F&& f,
                    const TaskOptions& options = {})
      -> Future<detail::TaskResultOf<std::decay_t<F>>> {
    return submit_at(detail::saturating_add(std::chrono::steady_clock::now(), delay),
                     std::forward<F>(f), options);
  }

  template <class F>
  auto submit_at(std::chrono::steady_clock::time_point when, F&& f,
                 const TaskOptions& options = {})
      -> Future<detail::TaskResultOf<std::decay_t<F>>> {
    using R = detail::TaskResultOf<std::decay_t<F>>;
    auto* task = new detail::TaskNode<std::decay_t<F>, R>(std::forward<F>(f), 2, 1);
    detail::pool_submit(core_, task, options, detail::Placement{nullptr, nullptr, &when});
    return Future<R>(task);
  }

  // Fire and forget: false if rejected. A failure goes to the config's
  // on_unobserved_failure.
  template <class F>
  bool post(F&& f, const TaskOptions& options = {}) {
    using R = detail::TaskResultOf<std::decay_t<F>>;
    auto* task = new detail::TaskNode<std::decay_t<F>, R>(std::forward<F>(f), 1, 1);
    task->unobserved_ = true;  // before publication, by pool_submit
    return detail::pool_submit(core_, task, options);
  }

  // Stops intake (later submissions are rejected), then runs (drain) or
  // drops (cancel) what is queued, cancels running tasks' tokens (cancel),
  // waits for every task to end and joins the workers. Idempotent.
  // Called from one of the pool's own workers, throws std::logic_error and
  // does nothing; otherwise never throws.
  void shutdown();

  // Blocks until nothing is queued or running. Throws as shutdown() does.
  void wait_idle();

  std::size_t thread_count() const noexcept;
  ThreadPoolStats stats() const noexcept;

 private:
  friend struct detail::PoolAccess;

  detail::PoolCore* core_;
};

namespace this_task {
// The running task's own token; a default token outside a task.
CancellationToken cancellation_token() noexcept;
bool cancelled() noexcept;
// The running pool task's id (its future's id(); in a coroutine, its root
// task's); 0 outside a pool task.
TaskId id() noexcept;
}  // namespace this_task

}  // namespace quell
