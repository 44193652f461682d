#include "pool_core.hpp"

#include <utility>

namespace quell::detail {

void PoolCore::finish(TaskBase* task, std::uint32_t outcome, bool started,
                      Counters& counters) noexcept {
  counters.bump(counter_for(outcome));
  counters.bump(started ? &Counters::ended : &Counters::dropped);
  if (started) {
    // Latencies: two loads on the task's own line and one branch; the clock
    // only for a sampled task, or one cancelled while it ran.
    // Relaxed: see TaskBase::cancelled_at_.
    const std::int64_t cancelled_at = task->cancelled_at_.load(std::memory_order_relaxed);
    if ((task->sampled_at_ | cancelled_at) != 0) [[unlikely]] record_latencies(task, cancelled_at, counters);
  }
  // Release: the result, the error and the callable's destruction
  // happen-before every acquire load that sees the terminal value (T2).
  const std::uint32_t old = task->status_.exchange(outcome, std::memory_order_acq_rel);
  QUELL_INVARIANT(T2, !TaskBase::is_terminal(old));
  if ((old & TaskBase::kThreadWaiting) != 0) futex_wake_all(task->status_);
  // T7: the bit was ours to take; the exchange's acquire pairs with the
  // waiter's release CAS that set it after writing coro_waiter_.
  if ((old & TaskBase::kCoroWaiting) != 0) task->coro_waiter_->fire(task->coro_waiter_);
  task->origin_.detach();
  if (task->timed_) timers_.entry_died();
  if (auto* finished = task->ops()->finished) finished(task, outcome);
  // The only cost to a completed task: this branch, predicted.
  if (outcome != TaskBase::kCompleted) [[unlikely]] ended_otherwise(task, outcome, counters);
  retire(counters);
}

void PoolCore::record_latencies(TaskBase* task, std::int64_t cancelled_at, Counters& counters) noexcept {
  const std::int64_t now = stats_now_ns();
  if (task->sampled_at_ != 0) counters.record(&Counters::run_time, now - task->sampled_at_);
  if (cancelled_at != 0) counters.record(&Counters::cancel_reaction, now - cancelled_at);
}

void PoolCore::ended_otherwise(TaskBase* task, std::uint32_t outcome, Counters& counters) noexcept {
  if (outcome == TaskBase::kFailed) {
    report_failure(task);
  } else if (outcome == TaskBase::kCancelled || outcome == TaskBase::kTimedOut) {
    counters.bump_reason(task->reason());
  }
}

void PoolCore::report_failure(TaskBase* task) noexcept {
  // Before retire(): wait_idle() and shutdown() wait for the hook, and the
  // pool (with config_) lives on. The task is alive: whoever finishes it
  // holds a reference (the queue's, or a coroutine root's token).
  if (!task->unobserved_ || !config_.on_unobserved_failure) return;
  // No future or set reads error_ of an unobserved task: ours to take.
  // noexcept: a throwing hook terminates.
  config_.on_unobserved_failure(std::move(task->error_), task->id_);
}

void PoolCore::link_origins(TaskBase* task, CancelState* parent, const Placement& placement) {
  // A task with a second origin has two links, and the first may fire
  // (inline, or on the thread that cancels its origin) before the second is
  // attached; resolved then, its finished hook would detach the links while
  // we still attach, and the second would stay registered after the task is
  // freed. So while linking, task_on_cancel() only marks it, and it is
  // dropped here, once linked.
  const bool second = placement.extra_state != nullptr;
  // Relaxed: no other thread knows the task yet; the links' registrations
  // (the origin's lock, released) publish it to a firing link.
  if (second) task->status_.store(TaskBase::kLinking, std::memory_order_relaxed);
  // With one origin, its link may resolve the task at once (inline, through
  // task_on_cancel()).
  if (parent != &never_cancelled) task->origin_.attach(parent, task);
  if (!second) return;
  placement.extra_link->attach(placement.extra_state, task);
  std::uint32_t linking = TaskBase::kLinking;
  // Acq_rel, against task_on_cancel()'s CAS to link_cancelled: either it
  // saw queued (and drops the task itself) or we see its mark, and then the
  // reason it set before its hook ran.
  if (!task->status_.compare_exchange_strong(linking, TaskBase::kQueued, std::memory_order_acq_rel,
                                             std::memory_order_acquire)) {
    // Relaxed: the hook ran (once: a state is cancelled once) and no waiter
    // knows the task yet; we alone own it now (T1).
    task->status_.store(TaskBase::kDropping, std::memory_order_relaxed);
    drop(task);
  }
}

void PoolCore::drop(TaskBase* task) noexcept {
  // Any thread. The task was queued (so accepted and unfinished): the core is
  // alive now, and the pin keeps it so until we are done, even if retiring
  // this task lets a shutdown finish and the ThreadPool go.
  pin();
  task->ops()->drop(task);
  if (config_.max_queue_size != 0) bounded_queued_.fetch_sub(1, std::memory_order_relaxed);
  const bool deadline = task->reason() == static_cast<std::uint64_t>(CancelReason::deadline);
  finish(task, deadline ? TaskBase::kTimedOut : TaskBase::kCancelled, false, counters_here());
  unpin();
}

bool PoolCore::try_start(TaskBase* task) noexcept {
  std::uint32_t word = task->status_.load(std::memory_order_relaxed);
  do {
    if ((word & TaskBase::kValueMask) != TaskBase::kQueued) return false;
    // Acq_rel: the winner of queued -> running | dropping owns the callable
    // (T1); keep the waiter and published bits.
  } while (!task->status_.compare_exchange_weak(
      word, (word & ~TaskBase::kValueMask) | TaskBase::kRunning, std::memory_order_acq_rel,
      std::memory_order_relaxed));
  return true;
}

void PoolCore::execute(Worker& worker, QueueNode* node) noexcept {
  if (node->resumption_) {
    resume(worker, static_cast<Strand*>(node));
    return;
  }
  auto* task = static_cast<TaskBase*>(node);
  run_in_frame(worker, task);
  task->release_token_ref();  // the queue's reference (T4)
}

void PoolCore::resume(Worker& worker, Strand* strand) noexcept {
  // A coroutine's resumption is never dropped, cancelled or held back
  // (R11): it runs whatever the shutdown state. The strand's root task is
  // running (suspended tasks count as running) and cannot end meanwhile.
  TaskBase* const task = strand->task_;
  strand_unpark(strand);
  TaskBase* const outer = std::exchange(this_task_ptr, task);
  static_cast<void>(worker);
  const bool visitor = strand->visitor_;  // the strand may be gone after the drive
  drive(strand->resume_, strand->token_);
  this_task_ptr = outer;
  if (visitor) leave();
}

void PoolCore::run_in_frame(Worker& worker, TaskBase* task) noexcept {
  Frame frame{task, worker.current.load(std::memory_order_relaxed)};
  // Seq_cst store, then seq_cst load of cancelling_: against cancel_running()
  // (store cancelling_, then load current), a task either is seen there or
  // sees cancelling_ here.
  worker.current.store(&frame, std::memory_order_seq_cst);
  if (cancelling_.load(std::memory_order_seq_cst)) {
    task->request_cancel(static_cast<std::uint64_t>(CancelReason::shutdown));
  } else if (task->deadline_ != Clock::time_point::max() && Clock::now() >= task->deadline_) {
    task->request_cancel(static_cast<std::uint64_t>(CancelReason::deadline));
  }
  // A request of ours returns false when another thread's (the timer
  // firing the deadline, a user's cancel) set the reason first, and that
  // thread's hook may not have dropped the task yet: a cancelled task must
  // not start. Its hook drops it; the requester holds a reference meanwhile.
  // (cancelled() is an acquire load, pairing with request_cancel()'s release.)
  if (!task->cancelled() && try_start(task)) {
    worker.counters.bump(&Counters::started);
    if (task->sampled_at_ != 0) [[unlikely]] {
      const std::int64_t now = stats_now_ns();
      worker.counters.record(&Counters::queue_wait, now - task->sampled_at_);
      task->sampled_at_ = now;  // run_time starts here
    }
    if (config_.max_queue_size != 0) bounded_queued_.fetch_sub(1, std::memory_order_relaxed);
    TaskBase* outer = std::exchange(this_task_ptr, task);
    // A plain task run by a coroutine's wait sees its own token (R5).
    const CancellationToken* outer_token = std::exchange(current_coro_token, nullptr);
    const std::uint32_t outcome = task->ops()->run(task);
    current_coro_token = outer_token;
    this_task_ptr = outer;
    // A coroutine root parked at a co_await finishes its task itself.
    if (outcome != TaskBase::kStillRunning) finish(task, outcome, true, worker.counters);
  }
  // Seq_cst store then seq_cst load of scanning_ (against cancel_running()'s
  // store of scanning_ then load of current): if a scan may still read this
  // frame, wait for it before the task's memory may go.
  worker.current.store(frame.outer, std::memory_order_seq_cst);
  while (scanning_.load(std::memory_order_seq_cst)) scanning_.wait(true, std::memory_order_acquire);
}

void task_on_cancel(CancelState* state) noexcept {
  auto* task = static_cast<TaskBase*>(state);
  std::uint32_t word = task->status_.load(std::memory_order_relaxed);
  std::uint32_t next = 0;
  do {
    const std::uint32_t value = word & TaskBase::kValueMask;
    if (value == TaskBase::kQueued) {
      next = (word & ~TaskBase::kValueMask) | TaskBase::kDropping;
    } else if (value == TaskBase::kLinking) {
      next = (word & ~TaskBase::kValueMask) | TaskBase::kLinkCancelled;  // its submitter drops it
    } else {
      if (value == TaskBase::kRunning) {
        // Relaxed: a statistic, read when the task ends (cancel_reaction).
        task->cancelled_at_.store(stats_now_ns(), std::memory_order_relaxed);
      }
      return;  // running, or resolved
    }
    // Acq_rel: as try_start(); the winner owns the callable (T1). To
    // link_cancelled, a release: the submitter's CAS that reads it sees the
    // reason set before this hook ran.
  } while (!task->status_.compare_exchange_weak(word, next, std::memory_order_acq_rel,
                                                std::memory_order_relaxed));
  if ((next & TaskBase::kValueMask) == TaskBase::kDropping) task->pool_->drop(task);
}

}  // namespace quell::detail
