#include "pool_core.hpp"

#include <memory>

namespace quell::detail {

namespace {

constexpr TaskId kIdBlock = 1024;

std::atomic<TaskId> next_id_block{1};  // relaxed: only uniqueness matters
QUELL_FAST_TLS thread_local TaskId next_id = 0;
QUELL_FAST_TLS thread_local TaskId id_limit = 0;

}  // namespace

TaskId next_task_id() noexcept {
  if (next_id == id_limit) {
    next_id = next_id_block.fetch_add(kIdBlock, std::memory_order_relaxed);
    id_limit = next_id + kIdBlock;
  }
  return next_id++;
}

namespace {

// A task's timer entry: a small recycled block of its own, allocated before
// the task is accepted, so that arming the timer cannot fail (M4: freed by
// the action that takes it).
TimerEntry* new_timer_entry(const TimerKind& kind, TaskBase* task) {
  auto* entry = new (task_block_allocate(sizeof(TimerEntry))) TimerEntry;
  entry->kind = &kind;
  entry->target = task;
  return entry;
}

void free_timer_entry(TimerEntry* entry) noexcept {
  entry->~TimerEntry();
  task_block_free(entry, sizeof(TimerEntry));
}

// Frees the entry; its target, with the entry's reference, is the caller's.
TaskBase* take_target(TimerEntry* entry) noexcept {
  auto* task = static_cast<TaskBase*>(entry->target);
  free_timer_entry(entry);
  return task;
}

}  // namespace

const TimerKind PoolCore::start_timer{
    // Due: still queued, it goes to the workers with the queue's reference
    // (the entry's); dropped while it waited, a tombstone.
    [](TimerEntry* entry) noexcept {
      TaskBase* const task = take_target(entry);
      if (task->status() != TaskStatus::queued) {
        task->release_token_ref();
        return;
      }
      PoolCore* const pool = task->pool_;
      const TaskId family = task->family_;  // enqueued, it may run and go
      pool->enqueue(task);
      pool->announce(family);
    },
    [](TimerEntry* entry) noexcept { take_target(entry)->release_token_ref(); },
    // Not queued any more: dropped (it cannot have started before due).
    [](const TimerEntry* entry) noexcept {
      return static_cast<const TaskBase*>(entry->target)->status() != TaskStatus::queued;
    },
    // Shutdown: a queued one is dropped now (cancelled, reason shutdown); a
    // tombstone has nothing to cancel.
    [](TimerEntry* entry) noexcept {
      TaskBase* const task = take_target(entry);
      cancel_and_release(task, CancelReason::shutdown);
    },
};

const TimerKind PoolCore::deadline_timer{
    // Queued: dropped, timed_out. Running: its token fires. Ended: nothing.
    [](TimerEntry* entry) noexcept {
      TaskBase* const task = take_target(entry);
      cancel_and_release(task, CancelReason::deadline);
    },
    [](TimerEntry* entry) noexcept { take_target(entry)->release_token_ref(); },
    [](const TimerEntry* entry) noexcept {
      return static_cast<const TaskBase*>(entry->target)->ready();
    },
};

bool PoolCore::accept(Counters& counters) noexcept {
  // Seq_cst bump then seq_cst load, against shutdown()'s seq_cst store of
  // stopping_ then seq_cst loads of the counts: either we see stopping_ and
  // reject, or shutdown counts this task and waits for it.
  counters.bump_seq_cst(&Counters::accepted);
  if (stopping_.load(std::memory_order_seq_cst)) {
    retire(counters);
    return false;
  }
  if (config_.max_queue_size != 0) {
    // Relaxed: a bound, not a publication.
    if (bounded_queued_.fetch_add(1, std::memory_order_relaxed) >= config_.max_queue_size) {
      bounded_queued_.fetch_sub(1, std::memory_order_relaxed);
      retire(counters);
      return false;
    }
  }
  return true;
}

std::uint64_t PoolCore::unfinished() const noexcept {
  // Every retirement before the acceptances: a task's acceptance
  // happens-before its retirement, so the seq_cst load that reads a
  // retirement makes the later loads see its acceptance. The difference then
  // counts only tasks seen accepted and not seen retired: it is never
  // negative, and zero only if every task accepted so far is retired.
  std::uint64_t retired = 0;
  std::uint64_t accepted = 0;
  for (const Counters& c : shared_counters_) retired += c.retired.load(std::memory_order_seq_cst);
  for (const auto& w : workers_) retired += w->counters.retired.load(std::memory_order_seq_cst);
  for (const Counters& c : shared_counters_) accepted += c.accepted.load(std::memory_order_seq_cst);
  for (const auto& w : workers_) accepted += w->counters.accepted.load(std::memory_order_seq_cst);
  QUELL_INVARIANT(T5, accepted >= retired);
  return accepted - retired;
}

void PoolCore::reject(TaskBase* task, Counters& counters) noexcept {
  task->ops()->drop(task);
  counters.bump(&Counters::rejected);
  // Release: nobody else has seen the task yet; the future returned after
  // this call reads it on this thread or through a later synchronisation.
  task->status_.store(TaskBase::kRejected, std::memory_order_release);
  task->release_token_ref();  // the queue's reference
}

bool PoolCore::submit(TaskBase* task, const TaskOptions& options, const Placement& placement) {
  const bool timed = options.timeout() || options.deadline();
  const bool delayed = placement.start != nullptr;
  // Everything the submission needs, before anything is counted: a failure
  // here leaves no trace (§12). The entries' reference to the task is made
  // only when they are armed.
  std::unique_ptr<TimerEntry, void (*)(TimerEntry*)> deadline_entry(nullptr, &free_timer_entry);
  std::unique_ptr<TimerEntry, void (*)(TimerEntry*)> start_entry(nullptr, &free_timer_entry);
  try {
    // Each origin link will take a reference on its state (§12 limits).
    StateAccess::state(options.cancellation())->check_room();
    if (placement.extra_state != nullptr) placement.extra_state->check_room();
    if (timed) deadline_entry.reset(new_timer_entry(deadline_timer, task));
    if (delayed) start_entry.reset(new_timer_entry(start_timer, task));
  } catch (...) {
    discard(task);
    throw;
  }
  Counters& counters = counters_here();
  task->pool_ = this;
  task->id_ = next_task_id();
  // F1: a set's task has the set's family; another task submitted by a task
  // inherits that task's; any other founds one.
  const TaskBase* submitting_task = is_own_worker() ? this_task_ptr : nullptr;
  task->family_ = placement.family != 0         ? placement.family
                  : submitting_task != nullptr ? submitting_task->family_
                                               : task->id_;
  task->priority_ = options.priority();
  if (!accept(counters)) {
    reject(task, counters);
    return false;
  }
  // One clock read, for the deadline and the checks against it below.
  const Clock::time_point now = timed || delayed ? Clock::now() : Clock::time_point{};
  if (timed) task->deadline_ = *options.deadline_from(now);
  // Before the links: once linked, another thread may resolve the task and
  // read timed_ in finish().
  task->timed_ = timed || delayed;
  task->delayed_ = delayed && *placement.start > now;
  link_origins(task, StateAccess::state(options.cancellation()), placement);
  if (timed && task->deadline_ <= now) {
    task->request_cancel(static_cast<std::uint64_t>(CancelReason::deadline));
  }
  // Relaxed: only a shortcut. A task dropped after this load is enqueued as
  // a tombstone, which a worker (or, after shutdown, ~PoolCore) discards.
  if ((task->status_.load(std::memory_order_relaxed) & TaskBase::kValueMask) != TaskBase::kQueued) {
    task->release_token_ref();  // resolved already: the queue's reference goes unused
    return true;
  }
  if (timed) {
    task->add_token_ref();  // the entry's
    deadline_entry->due = task->deadline_;
    timers_.add(deadline_entry.release());  // refused only for kinds with a close action
  }
  if (task->delayed_) {
    start_entry->due = *placement.start;
    if (timers_.add(start_entry.get())) {
      start_entry.release();
    } else {
      // A shutdown began after we were accepted: resolved as the delayed
      // tasks it found were (cancelled, reason shutdown).
      cancel_and_release(task, CancelReason::shutdown);
    }
    return true;
  }
  const TaskId family = task->family_;
  enqueue(task);  // from here on the task may be run and freed: do not touch it
  announce(family);
  return true;
}

void PoolCore::discard(TaskBase* task) noexcept {
  // Nobody else has seen it: its callable and block go now, with every
  // reference the caller made for the future or handle.
  task->ops()->drop(task);
  task->ops()->destroy(task);
}

void PoolCore::enqueue(TaskBase* task) noexcept {
  // Submitted, or due: a sampled task is timed from here (ThreadPoolStats).
  // A thread's ids come in blocks of kIdBlock from 1 mod kIdBlock, so this
  // times the first task a thread submits, then one in kLatencySample.
  static_assert(kIdBlock % ThreadPoolStats::kLatencySample == 0);
  if (task->id_ % ThreadPoolStats::kLatencySample == 1) [[unlikely]] {
    task->sampled_at_ = stats_now_ns();
  }
  // A worker's deque that cannot grow for lack of memory: the injection
  // queue is intrusive and takes the accepted task without allocating.
  if (is_own_worker() && this_worker->deque.try_push(task)) return;
  injection_.push(task);
}

bool pool_submit(PoolCore* pool, TaskBase* task, const TaskOptions& options,
                 const Placement& placement) {
  return pool->submit(task, options, placement);
}

TaskId pool_family_here(const PoolCore* pool) noexcept {
  return pool->family_here();
}

}  // namespace quell::detail
