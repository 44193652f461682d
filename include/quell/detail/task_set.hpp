#pragma once

// What TaskGroup and Scope share: a pool, a source whose token cancels every
// task of the set, a count of the tasks not yet terminal, and the first
// failure.
//
// A task of the set is a tracked TaskNode (detail/task.hpp): its state is
// linked to the set's token as well as to its options' token, so cancelling
// the set cancels running tasks' tokens and drops queued ones at once, on the
// cancelling thread. Every task of the set has the set's family (F1), so a
// wait on a worker runs the set's queued tasks and nothing else. Its finished hook records a failure, then leaves the
// count; that is its last access to the set (T6, W3).
//
// Thread safety: thread-safe; the owner alone destroys it, after wait().

#include <atomic>
#include <cstddef>
#include <exception>
#include <type_traits>
#include <utility>

#include "quell/cancellation.hpp"
#include "quell/detail/submission.hpp"
#include "quell/detail/task.hpp"
#include "quell/detail/wait_count.hpp"
#include "quell/task_options.hpp"

namespace quell::detail {

class TaskSet {
 public:
  // `fail_fast`: the first failure cancels the set (a Scope's rule).
  TaskSet(PoolCore* pool, CancellationSource source, bool fail_fast) noexcept
      : pool_(pool),
        source_(std::move(source)),
        state_(StateAccess::state(source_)),
        family_(pool_family_here(pool)),
        fail_fast_(fail_fast) {}

  TaskSet(const TaskSet&) = delete;
  TaskSet& operator=(const TaskSet&) = delete;

  // Submits a tracked task (TaskNode<F, R, true>) made with the queue's
  // reference; false if the pool rejected it (then it is resolved).
  template <class Node>
  bool submit(Node* task, const TaskOptions& options) {
    ExtraOrigin& origin = task->extra_origin();
    origin.owner = this;
    origin.ended = &TaskSet::task_ended;
    pending_.add();
    const Placement placement{state_, &origin.link, nullptr, family_};
    bool accepted = false;
    try {
      accepted = pool_submit(pool_, task, options, placement);
    } catch (...) {
      pending_.done(pool_);  // no memory for it: the task is gone, never counted (§12)
      throw;
    }
    // A rejected task never reaches the finished hook.
    if (!accepted) pending_.done(pool_);
    return accepted;
  }

  static void task_ended(void* set, TaskBase* task, std::uint32_t outcome) noexcept {
    static_cast<TaskSet*>(set)->ended(task, outcome);
  }

  void ended(TaskBase* task, std::uint32_t outcome) noexcept {
    PoolCore* const pool = pool_;  // read before the count may let the set go (W3)
    if (outcome == TaskBase::kFailed) record_failure(task->error_);
    pending_.done(pool);
  }

  // Until every task is terminal; a worker of the pool runs the set's queued
  // tasks (and what they submitted) meanwhile, and nothing else.
  void wait() const { wait_count_zero(pending_, pool_, family_); }

  // The first failure, once wait() returned; null if none.
  std::exception_ptr failure() const noexcept {
    // Acquire: pairs with record_failure()'s release store.
    return has_failure_.load(std::memory_order_acquire) == 2 ? failure_ : nullptr;
  }

  std::size_t pending() const noexcept { return pending_.count(); }
  PoolCore* pool() const noexcept { return pool_; }
  CancellationSource& source() noexcept { return source_; }
  const CancellationSource& source() const noexcept { return source_; }

 private:
  void record_failure(const std::exception_ptr& error) noexcept {
    std::uint32_t none = 0;
    // Relaxed claim: only the winner writes failure_, and publishes it with
    // the release store of 2 below.
    if (!has_failure_.compare_exchange_strong(none, 1, std::memory_order_relaxed)) return;
    failure_ = error;
    // Release: failure_ happens-before a failure() that reads 2.
    has_failure_.store(2, std::memory_order_release);
    if (fail_fast_) source_.request_cancel(CancelReason::failure);
  }

  PoolCore* const pool_;
  CancellationSource source_;
  CancelState* const state_;  // source_'s, kept alive by it
  const TaskId family_;       // every task of the set has it (F1)
  WaitCount pending_;
  std::atomic<std::uint32_t> has_failure_{0};  // 0 none, 1 being written, 2 written
  std::exception_ptr failure_;                 // written once, by the claim's winner
  const bool fail_fast_;
};

}  // namespace quell::detail
