#include "pool_core.hpp"

namespace quell::detail {

// Sleeps on the task's word until it is terminal (or `deadline` passes).
bool block_until(TaskBase* task, const Clock::time_point* deadline) {
  // Acquire: pairs with finish()'s release exchange.
  std::uint32_t word = task->status_.load(std::memory_order_acquire);
  while (!TaskBase::is_terminal(word)) {
    if ((word & TaskBase::kThreadWaiting) == 0) {
      if (!task->status_.compare_exchange_weak(word, word | TaskBase::kThreadWaiting,
                                               std::memory_order_acquire)) {
        continue;
      }
      word |= TaskBase::kThreadWaiting;
    }
    // No lost wake-up: finish() exchanges the word (so the futex sees a
    // different value) before it reads our bit and wakes.
    if (deadline != nullptr) {
      if (!futex_wait_until(task->status_, word, *deadline)) return task->ready();
    } else {
      futex_wait(task->status_, word);
    }
    word = task->status_.load(std::memory_order_acquire);
  }
  return true;
}

bool PoolCore::await_on_worker(Worker& worker, TaskBase* task,
                               const Clock::time_point* deadline) noexcept {
  int idle_rounds = 0;
  while (!task->ready()) {
    if (deadline != nullptr && Clock::now() >= *deadline) return false;
    // Usually the task, or one of its family, is the newest on our deque:
    // popped, it leaves no tombstone behind for a thief to steal.
    if (QueueNode* mine = worker.deque.pop()) {
      if (mine->family_ == task->family_) {
        idle_rounds = 0;
        execute(worker, mine);
        continue;
      }
      put_back(worker, mine);
    }
    // Elsewhere and still queued: claimed where it is (its entry becomes a
    // tombstone). Relaxed: a shortcut; the claim (try_start's CAS) decides.
    const std::uint32_t value = task->status_.load(std::memory_order_relaxed) & TaskBase::kValueMask;
    if (value == TaskBase::kQueued && !task->delayed_) {  // a delayed task starts by the timer
      run_in_frame(worker, task);
      continue;
    }
    // The task runs elsewhere: run queued tasks of its family (F1), which
    // its progress may need, and nothing else.
    if (QueueNode* kin = take_kin(worker, task->family_)) {
      idle_rounds = 0;
      execute(worker, kin);
      continue;
    }
    // Nothing of ours to run: look again for a moment, then sleep until the
    // task is terminal. No deadlock: a wait claims its own task wherever it
    // is queued, so every chain of waits ends in a running task.
    if (++idle_rounds > kSpinRounds) return block_until(task, deadline);
    for (int i = 0; i < 16; ++i) cpu_relax();
  }
  return true;
}

QueueNode* PoolCore::take_kin(Worker& worker, TaskId family) noexcept {
  // Other deques' oldest tasks. One not of the family moves to our deque,
  // where any idle worker can still steal it.
  const std::size_t count = workers_.size();
  for (std::size_t i = 1; i < count; ++i) {
    Worker& victim = *workers_[(worker.index + i) % count];
    auto [result, stolen] = victim.deque.steal();
    if (result != WorkDeque<QueueNode*>::Steal::taken) continue;
    if (stolen->family_ == family) {
      worker.counters.bump(&Counters::stolen);
      return stolen;
    }
    put_back(worker, stolen);
    return nullptr;
  }
  return nullptr;
}

QueueNode* PoolCore::take_family(Worker& worker, TaskId family) noexcept {
  if (QueueNode* mine = worker.deque.pop()) {
    if (mine->family_ == family) return mine;
    put_back(worker, mine);
  }
  if (QueueNode* queued = injection_.take_family(family)) return queued;
  return take_kin(worker, family);
}

void PoolCore::help_family(Worker& worker, const WaitCount& count, TaskId family) noexcept {
  int idle_rounds = 0;
  while (count.count() != 0) {
    if (QueueNode* kin = take_family(worker, family)) {
      idle_rounds = 0;
      execute(worker, kin);
      continue;
    }
    if (++idle_rounds <= kSpinRounds) {
      for (int i = 0; i < 16; ++i) cpu_relax();
      continue;
    }
    // Sleep until the count is zero or work of our family is announced.
    // Relaxed stores, then the fence that orders them before the key load
    // and the re-check; announce() fences after making work visible and then
    // reads them. So either our re-check sees the work, or announce() sees
    // us and bumps the epoch past our key.
    worker.awaited_family.store(family, std::memory_order_relaxed);
    helpers_asleep_.fetch_add(1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // Acquire: pairs with wake_helpers()'s release bump.
    const std::uint32_t key = helper_epoch_.load(std::memory_order_acquire);
    std::uint32_t word = 0;
    // Arm after the key: the done() that reaches zero sees our bit and bumps
    // the epoch past it (W2). A false arm: the count is zero.
    QueueNode* kin = count.arm(WaitCount::kWorkerWaiting, word) ? take_family(worker, family)
                                                                : nullptr;
    if (kin == nullptr && count.count() != 0) futex_wait(helper_epoch_, key);
    helpers_asleep_.fetch_sub(1, std::memory_order_relaxed);  // relaxed: publishes nothing
    worker.awaited_family.store(0, std::memory_order_relaxed);
    idle_rounds = 0;
    if (kin != nullptr) execute(worker, kin);
  }
}

void pool_wake_helpers(PoolCore* pool) noexcept { pool->wake_helpers(); }

void wait_count_zero(const WaitCount& count, PoolCore* pool, TaskId family) {
  if (count.count() == 0) return;
  if (Worker* worker = helper_in(pool)) {
    pool->help_family(*worker, count, family);
  } else {
    count.block();
  }
}

// A wait on a worker runs the awaited task itself if nobody started it, and
// never another task; then, on any thread, it sleeps on the task's word.
void task_wait(TaskBase* task) {
  if (task->ready()) return;
  if (Worker* worker = helper_in(task->pool_)) {
    worker->pool.await_on_worker(*worker, task, nullptr);
  } else {
    block_until(task, nullptr);
  }
}

bool task_wait_until(TaskBase* task, Clock::time_point deadline) {
  if (task->ready()) return true;
  if (Worker* worker = helper_in(task->pool_)) {
    return worker->pool.await_on_worker(*worker, task, &deadline);
  }
  return block_until(task, &deadline);
}

bool task_wait_or_stop(TaskBase* task, const CancellationToken& stop) {
  if (task->ready()) return true;
  // The callback wakes the futex: it clears kThreadWaiting (so a waiter
  // about to sleep sees a changed word) and wakes every sleeper. The waiter
  // sets the bit before it reads `stopped`, so either it sees `stopped`, or
  // the callback's clear comes after its bit and changes the word it sleeps
  // on. Acq_rel on both RMWs carries `stopped` from the one to the other.
  std::atomic<bool> stopped{false};
  CancellationCallback wake(stop, [&stopped, task]() noexcept {
    stopped.store(true, std::memory_order_relaxed);
    task->status_.fetch_and(~TaskBase::kThreadWaiting, std::memory_order_acq_rel);
    futex_wake_all(task->status_);
  });
  std::uint32_t word = task->status_.load(std::memory_order_acquire);
  while (!TaskBase::is_terminal(word)) {
    if ((word & TaskBase::kThreadWaiting) == 0) {
      if (!task->status_.compare_exchange_weak(word, word | TaskBase::kThreadWaiting,
                                               std::memory_order_acq_rel,
                                               std::memory_order_acquire)) {
        continue;
      }
      word |= TaskBase::kThreadWaiting;
    }
    if (stopped.load(std::memory_order_relaxed)) return task->ready();
    futex_wait(task->status_, word);
    word = task->status_.load(std::memory_order_acquire);
  }
  return true;
}

}  // namespace quell::detail
