#include "pool_core.hpp"

namespace quell::detail {

void PoolCore::cancel_running() noexcept {
  // Seq_cst: see execute(). From here on, a task that starts is dropped.
  cancelling_.store(true, std::memory_order_seq_cst);
  // Collect the running tasks (each with a reference of our own) while
  // scanning_ keeps their frames alive, then cancel them outside the scan:
  // their callbacks are user code and may wait for a worker.
  std::vector<TaskBase*> running;
  scanning_.store(true, std::memory_order_seq_cst);
  for (const auto& worker : workers_) {
    for (Frame* frame = worker->current.load(std::memory_order_seq_cst); frame != nullptr;
         frame = frame->outer) {
      if (frame->task->try_add_ref()) running.push_back(frame->task);
    }
  }
  // Release: pairs with execute()'s acquire wait.
  scanning_.store(false, std::memory_order_release);
  scanning_.notify_all();
  for (TaskBase* task : running) {
    task->request_cancel(static_cast<std::uint64_t>(CancelReason::shutdown));
    task->release_token_ref();
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
  if (config_.shutdown_policy == ShutdownPolicy::cancel) cancel_running();
  wait_unfinished();
  // Release: pairs with the workers' acquire load; they leave once idle.
  exiting_.store(true, std::memory_order_release);
  parking_.notify_all();
  for (auto& worker : workers_) worker->thread.join();
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
