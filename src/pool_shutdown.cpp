#include "pool_core.hpp"

#include <array>

namespace quell::detail {

void PoolCore::cancel_running() noexcept {
  // Seq_cst: see run_in_frame(). From here on, a task that starts is dropped.
  cancelling_.store(true, std::memory_order_seq_cst);
  // Collect running tasks (each with a reference of our own) while
  // scanning_ keeps their frames alive, then cancel them outside the scan:
  // their callbacks are user code and may wait for a worker. In batches on
  // the stack, so a shutdown allocates nothing; a task found cancelled
  // already is skipped, so each scan cancels new ones until none is left
  // (a task that starts from now on cancels itself).
  constexpr std::size_t kBatch = 16;
  for (;;) {
    std::array<TaskBase*, kBatch> running{};
    std::size_t found = 0;
    scanning_.store(true, std::memory_order_seq_cst);
    for (const auto& worker : workers_) {
      for (Frame* frame = worker->current.load(std::memory_order_seq_cst);
           frame != nullptr && found < kBatch; frame = frame->outer) {
        if (!frame->task->cancelled() && frame->task->try_add_ref()) running[found++] = frame->task;
      }
    }
    // Release: pairs with run_in_frame()'s acquire wait.
    scanning_.store(false, std::memory_order_release);
    scanning_.notify_all();
    for (std::size_t i = 0; i < found; ++i) {
      cancel_and_release(running[i], CancelReason::shutdown);
    }
    if (found < kBatch) return;
  }
}

void PoolCore::drop_queued() noexcept {
  // Taken as a worker takes a task, with the queue's reference (T4): a
  // queued one is dropped by its hook here and now (T1), a tombstone only
  // loses the reference. Tasks a busy worker pushed onto its own deque are
  // stolen from it. A task enqueued after this pass (accepted before the
  // shutdown began) is dropped by the worker that takes it (cancelling_).
  unsigned since_lower = 0;
  while (TaskBase* task = injection_.pop(since_lower)) {
    cancel_and_release(task, CancelReason::shutdown);
  }
  for (auto& worker : workers_) {
    for (;;) {
      auto [result, task] = worker->deque.steal();
      if (result == WorkDeque<TaskBase*>::Steal::taken) {
        cancel_and_release(task, CancelReason::shutdown);
      }
      if (result == WorkDeque<TaskBase*>::Steal::empty) break;
    }
  }
}

void PoolCore::wait_unfinished() noexcept {
  // Seq_cst: see retire(). The count loads also acquire the retirements'
  // releases, so the tasks' outcomes and the statistics are visible once we
  // see zero.
  idle_waiters_.fetch_add(1, std::memory_order_seq_cst);
  for (;;) {
    // Acquire, before the counts: a retirement that ends the wait after we
    // read them bumps the epoch past this key, so the futex does not sleep.
    const std::uint32_t key = idle_epoch_.load(std::memory_order_acquire);
    if (unfinished() == 0) break;
    futex_wait(idle_epoch_, key);
  }
  idle_waiters_.fetch_sub(1, std::memory_order_relaxed);  // relaxed: publishes nothing
}

void PoolCore::discard_leftovers() noexcept {
  // Once the workers are joined, only tombstones can be left (every task is
  // terminal): a task dropped after its submitter checked it, enqueued after
  // the last worker looked. Run when the last pin goes, so no submitter is
  // still enqueueing.
  unsigned since_lower = 0;
  while (TaskBase* task = injection_.pop(since_lower)) task->release_token_ref();
  for (auto& worker : workers_) {
    while (TaskBase* task = worker->deque.steal().item) task->release_token_ref();
  }
}

void PoolCore::shutdown() {
  if (is_own_worker()) {
    throw std::logic_error("quell::ThreadPool::shutdown() called from one of its own workers");
  }
  std::lock_guard lock(shutdown_mutex_);
  if (joined_) return;
  // Seq_cst: see accept().
  stopping_.store(true, std::memory_order_seq_cst);
  // Delayed tasks not yet due are resolved now, whatever the policy: a
  // shutdown never waits for a timer. Deadlines keep firing until the end.
  timers_.close();
  if (config_.shutdown_policy == ShutdownPolicy::cancel) {
    cancel_running();
    drop_queued();  // here, not when a worker frees up (§12)
  }
  wait_unfinished();
  join_workers();
  timers_.stop();
  joined_ = true;
}

void PoolCore::wait_idle() {
  if (is_own_worker()) {
    throw std::logic_error("quell::ThreadPool::wait_idle() called from one of its own workers");
  }
  wait_unfinished();
}

}  // namespace quell::detail
