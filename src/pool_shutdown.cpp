#include "pool_core.hpp"

#include <array>

namespace quell::detail {

void PoolCore::cancel_running() noexcept {
  // Seq_cst: see run_in_frame(). From here on, a task that starts is dropped.
  cancelling_.store(true, std::memory_order_seq_cst);
  // Coroutine roots parked at a co_await are in no frame: they are linked
  // to this state (one that parks later finds it cancelled).
  shutdown_source_.request_cancel(CancelReason::shutdown);
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
  // Coroutine resumptions are never dropped (R11): they go back to the
  // injection queue after the pass, for the workers.
  Strand* resumptions = nullptr;
  const auto drop_one = [&resumptions](QueueNode* node) noexcept {
    if (node->resumption_) {
      node->queue_next_ = resumptions;
      resumptions = static_cast<Strand*>(node);
    } else {
      cancel_and_release(static_cast<TaskBase*>(node), CancelReason::shutdown);
    }
  };
  unsigned since_lower = 0;
  while (QueueNode* node = injection_.pop(since_lower)) drop_one(node);
  for (auto& worker : workers_) {
    for (;;) {
      auto [result, node] = worker->deque.steal();
      if (result == WorkDeque<QueueNode*>::Steal::taken) drop_one(node);
      if (result == WorkDeque<QueueNode*>::Steal::empty) break;
    }
  }
  while (Strand* strand = resumptions) {
    resumptions = static_cast<Strand*>(strand->queue_next_);
    // Read before the push: once queued, a worker may run the coroutine to
    // its end and free the strand.
    const auto family = strand->family_;
    injection_.push(strand);
    announce(family);
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
  // Nor can a coroutine's resumption be: its root ended after it ran.
  const auto release = [](QueueNode* node) noexcept {
    QUELL_INVARIANT(T4, !node->resumption_);
    static_cast<TaskBase*>(node)->release_token_ref();
  };
  unsigned since_lower = 0;
  while (QueueNode* node = injection_.pop(since_lower)) release(node);
  for (auto& worker : workers_) {
    while (QueueNode* node = worker->deque.steal().item) release(node);
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
