#pragma once

// TaskGroup: a set of tasks with one cancellation and aggregated results.
//
// Every task submitted through the group follows the group's token as well
// as its options' token: cancel() cancels running tasks' tokens and drops
// queued ones at once. A failure does not cancel the group (a Scope's does);
// wait_and_rethrow() rethrows the first one. A task cancelled through the
// group is not a failure: only exceptions other than OperationCancelled are.
//
// Waiting on a worker of the group's pool runs the group's queued tasks
// meanwhile (never another request's), so fork-join inside the pool does not
// deadlock.
//
// Thread safety: thread-safe; submit() may be called from any number of
// threads, including the group's own tasks. The pool must outlive the group.
//
// Ordering: everything a task did happens-before wait() returns.

#include <atomic>
#include <cstddef>
#include <exception>
#include <type_traits>
#include <utility>

#include "quell/cancellation.hpp"
#include "quell/detail/config.hpp"
#include "quell/detail/task_set.hpp"
#include "quell/future.hpp"
#include "quell/task_options.hpp"
#include "quell/thread_pool.hpp"

namespace quell {

class TaskGroup {
 public:
  // Throws std::bad_alloc (the group's cancellation state).
  explicit TaskGroup(ThreadPool& pool)
      : set_(detail::PoolAccess::core(pool), CancellationSource(), /*fail_fast=*/false) {}

  TaskGroup(const TaskGroup&) = delete;
  TaskGroup& operator=(const TaskGroup&) = delete;

  // Cancels what has not started (running tasks see their token cancelled)
  // and waits for the rest. Never throws.
  ~TaskGroup() {
    cancel();
    set_.wait();
  }

  // As ThreadPool::submit(); a rejected task's future is ready (rejected).
  // Strong guarantee: when it throws (std::bad_alloc, or copying or moving
  // f), nothing is queued, registered or counted (size() included).
  template <class F>
  auto submit(F&& f, const TaskOptions& options = {})
      -> Future<detail::TaskResultOf<std::decay_t<F>>> {
    using R = detail::TaskResultOf<std::decay_t<F>>;
    auto* task = new detail::TaskNode<std::decay_t<F>, R, true>(std::forward<F>(f), 2, 1);
    set_.submit(task, options);
    // Counted once accepted: a submission that threw is not one (§12).
    // Relaxed: a statistic.
    submitted_.fetch_add(1, std::memory_order_relaxed);
    return Future<R>(task);
  }

  void cancel() noexcept { set_.source().request_cancel(CancelReason::requested); }
  bool cancelled() const noexcept { return set_.source().cancelled(); }
  CancellationToken cancellation_token() const noexcept { return set_.source().token(); }

  // Until every task of the group is terminal. Never throws.
  void wait() { set_.wait(); }
  // wait(), then rethrows the first failure, if any (again at each call);
  // throws nothing else.
  void wait_and_rethrow() {
    set_.wait();
    if (std::exception_ptr failure = set_.failure()) std::rethrow_exception(failure);
  }

  // Inside a Task, without blocking the worker (R34): co_await join() waits
  // for every task and does not rethrow; co_await join_and_rethrow() then
  // rethrows the first failure. Both are owning: the joiner's cancellation
  // cancels the group with its reason, the join goes on, and then throws
  // OperationCancelled (unless there is a failure to rethrow). From a task of
  // this group: std::logic_error.
  detail::JoinAwaitable join() noexcept { return detail::JoinAwaitable(set_, false); }
  detail::JoinAwaitable join_and_rethrow() noexcept { return detail::JoinAwaitable(set_, true); }

  // Tasks submitted, rejected ones included.
  std::size_t size() const noexcept {
    return submitted_.load(std::memory_order_relaxed);  // relaxed: a statistic
  }
  // Tasks not yet terminal.
  std::size_t pending() const noexcept { return set_.pending(); }

 private:
  alignas(detail::kCacheLine) detail::TaskSet set_;  // with submitted_: one line per spawn
  std::atomic<std::size_t> submitted_{0};
};

}  // namespace quell
