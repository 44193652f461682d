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

#include <stdexcept>

#include "quell/cancellation.hpp"
#include "quell/detail/coro_task.hpp"
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
    task->set_ = this;
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
    if (outcome == TaskBase::kFailed) record_failure(task);
    pending_.done(pool);
  }

  // Until every task is terminal; a worker of the pool runs the set's queued
  // tasks (and what they submitted) meanwhile, and nothing else.
  void wait() const { wait_count_zero(pending_, pool_, family_); }

  // The first failure, once wait() returned; null if none.
  std::exception_ptr failure() const noexcept {
    // Acquire: pairs with record_failure()'s release store.
    if (has_failure_.load(std::memory_order_acquire) != 2) return nullptr;
    return static_cast<const TaskBase*>(StateAccess::state(failed_))->error_;
  }

  std::size_t pending() const noexcept { return pending_.count(); }
  // A coroutine's join: false if nothing is pending (W4).
  bool arm_coroutine(CoroWaiter* waiter) noexcept { return pending_.arm_coroutine(waiter); }
  PoolCore* pool() const noexcept { return pool_; }
  CancellationSource& source() noexcept { return source_; }
  const CancellationSource& source() const noexcept { return source_; }

 private:
  // Keeps the failed task rather than a copy of its exception_ptr: the
  // exception then dies with the task, after every reference's release
  // (visible to TSan), never on a worker racing the joiner's catch block
  // through the exception's own uninstrumented count.
  void record_failure(TaskBase* task) noexcept {
    std::uint32_t none = 0;
    // Relaxed claim: only the winner writes failed_, and publishes it with
    // the release store of 2 below.
    if (!has_failure_.compare_exchange_strong(none, 1, std::memory_order_relaxed)) return;
    failed_ = StateAccess::token(task);
    // Release: failed_ happens-before a failure() that reads 2.
    has_failure_.store(2, std::memory_order_release);
    if (fail_fast_) source_.request_cancel(CancelReason::failure);
  }

  PoolCore* const pool_;
  CancellationSource source_;
  CancelState* const state_;  // source_'s, kept alive by it
  const TaskId family_;       // every task of the set has it (F1)
  WaitCount pending_;
  std::atomic<std::uint32_t> has_failure_{0};  // 0 none, 1 being written, 2 written
  CancellationToken failed_;                   // the first failed task; written once, by the claim's winner
  const bool fail_fast_;
};

// Whether the calling thread runs a task of `set` (its join would wait for
// itself).
bool current_task_in_set(const void* set) noexcept;

// co_await scope.join(), group.join(), group.join_and_rethrow() (R33, R34).
// Owning: the joiner's cancellation cancels the set with its reason, and the
// join goes on until every task is terminal; then it rethrows the first
// failure (if asked to), else throws OperationCancelled if the joiner was
// cancelled.
class JoinAwaiter final : private StoppableWait, private CoroWaiter {
 public:
  JoinAwaiter(TaskSet& set, bool rethrow, TaskPromiseBase& promise,
              const CancellationToken& token) noexcept
      : CoroWaiter{&fired}, set_(&set), promise_(&promise), token_(&token), rethrow_(rethrow) {}

  bool await_ready() const {
    if (current_task_in_set(set_)) {
      throw std::logic_error("quell: a join awaited from a task of its own group or scope");
    }
    return set_->pending() == 0 && !token_->cancelled();
  }
  bool await_suspend(std::coroutine_handle<> h) noexcept {
    return suspend(*promise_, h, *token_, [this]() noexcept {
      armed_ = true;
      return set_->arm_coroutine(this);
    });
  }
  void await_resume() {
    if (armed_) finish();
    if (std::exception_ptr failure = rethrow_ ? set_->failure() : nullptr) {
      std::rethrow_exception(failure);
    }
    if (token_->cancelled()) throw OperationCancelled();
  }
  Result<void> result() noexcept {
    if (armed_) finish();
    if (std::exception_ptr failure = rethrow_ ? set_->failure() : nullptr) {
      return Result<void>(failure);
    }
    if (token_->cancelled()) return Result<void>(make_error_code(Errc::cancelled));
    return Result<void>(std::in_place);
  }

 private:
  bool withdraw() noexcept override {
    set_->source().request_cancel(token_->reason());
    return false;  // owning: the set's last task resumes us
  }
  static void fired(CoroWaiter* waiter) noexcept { static_cast<JoinAwaiter*>(waiter)->complete(); }

  TaskSet* set_;
  TaskPromiseBase* promise_;
  const CancellationToken* token_;
  bool rethrow_;
  bool armed_ = false;
};

// What join() returns: awaitable inside a Task.
class [[nodiscard]] JoinAwaitable {
 public:
  JoinAwaitable(TaskSet& set, bool rethrow) noexcept : set_(&set), rethrow_(rethrow) {}
  JoinAwaiter quell_awaiter(TaskPromiseBase& promise, const CancellationToken& token) const noexcept {
    return JoinAwaiter(*set_, rethrow_, promise, token);
  }

 private:
  TaskSet* set_;
  bool rethrow_;
};

}  // namespace quell::detail
