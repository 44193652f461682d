#include <condition_variable>
#include <mutex>
#include <stdexcept>

#include "pool_core.hpp"
#include "quell/coro.hpp"
#include "quell/when.hpp"

namespace quell::detail {

QUELL_FAST_TLS constinit thread_local std::coroutine_handle<>* trampoline_slot = nullptr;
QUELL_FAST_TLS constinit thread_local const CancellationToken* current_coro_token = nullptr;

namespace {
// The sync_wait running on this thread, if any (R35: no nesting).
QUELL_FAST_TLS constinit thread_local bool in_sync_wait = false;
}  // namespace

void drive(std::coroutine_handle<> handle, const CancellationToken* token) noexcept {
  std::coroutine_handle<>* const outer_slot = trampoline_slot;
  const CancellationToken* const outer_token = std::exchange(current_coro_token, token);
  for (;;) {
    std::coroutine_handle<> next;
    trampoline_slot = &next;  // consumed by the first transfer of this resume()
    handle.resume();
    if (!next) break;
    handle = next;
  }
  trampoline_slot = outer_slot;
  current_coro_token = outer_token;
}

void strand_park(Strand* strand) noexcept {
  TaskBase* const task = strand->task_;
  if (task == nullptr) return;  // a sync_wait loop's
  PoolCore* const pool = task->pool_;
  if (!std::exchange(strand->parked_, true)) pool->count_parked(true);
  // Once per root: a root suspended is in no worker's frame, so a `cancel`
  // shutdown reaches it through this link (R40). Found cancelled, the link
  // cancels the task here, before the wait registers.
  if (strand->shutdown_link_.parent() == nullptr && !task->cancelled()) {
    strand->shutdown_link_.attach(pool->shutdown_state(), task);
  }
}

void strand_unpark(Strand* strand) noexcept {
  TaskBase* const task = strand->task_;
  if (task != nullptr && std::exchange(strand->parked_, false)) task->pool_->count_parked(false);
}

void coro_root_finish(TaskBase* task, std::uint32_t outcome) noexcept {
  task->pool_->finish_root(task, outcome);
}

Executor* pool_executor(PoolCore* pool) noexcept { return pool; }

[[noreturn]] void resumed_in_cancel_callback() noexcept {
  std::fputs("quell: a coroutine was resumed inline from a cancellation callback; "
             "resume it with quell::post_resume() (API.md R15, R20)\n",
             stderr);
  std::abort();
}

[[noreturn]] void throw_error(std::error_code code) {
  if (code == make_error_code(Errc::cancelled)) throw OperationCancelled();
  throw TaskError(code);
}

// ---- the pool as a home -------------------------------------------------

void PoolCore::post(Strand* strand, Post how) noexcept {
  // To this worker's deque when we are one of ours (the worker runs it
  // next, or a thief does); else the injection queue, at the root's priority.
  // Read before the push: once queued, a thief may run the coroutine to its
  // end and free the strand.
  const TaskId family = strand->family_;
  Worker* const worker = helper_in(this);
  if (worker != nullptr && how != Post::yield) {
    const bool pushed = worker->deque.try_push(strand);
    if (!pushed) injection_.push(strand);
    // A hop's worker returns to its loop and pops the strand before it
    // could sleep: nobody else needs waking.
    if (how == Post::resume || !pushed) announce(family);
    return;
  }
  // Another thread (a canceller, the timer): once pushed, the coroutine may
  // end and the pool finish its shutdown; the pin keeps the core for the
  // announce (as drop() does).
  pin();
  injection_.push(strand);
  announce(family);
  unpin();
}

void PoolCore::add_timer(TimerEntry* entry) noexcept { timers_.add(entry); }
bool PoolCore::remove_timer(TimerEntry* entry) noexcept { return timers_.remove(entry); }

bool PoolCore::enter() noexcept {
  // As accept(): seq_cst bump, then seq_cst load of stopping_; either the
  // shutdown sees the visitor counted and waits for it, or we see it.
  Counters& counters = counters_here();
  counters.bump_seq_cst(&Counters::accepted);
  counters.bump(&Counters::visits);
  if (stopping_.load(std::memory_order_seq_cst)) {
    retire(counters);
    return false;
  }
  return true;
}

void PoolCore::leave() noexcept { retire(counters_here()); }

// ---- schedule and yield -----------------------------------------------------

void hop(TaskPromiseBase& promise, Executor* target, TaskPriority priority, bool to_home,
         std::coroutine_handle<> h, const CancellationToken& token) {
  Strand* const strand = promise.strand_;
  Executor* const from = promise.home_;
  bool leave_from = false;
  if (!to_home && target != from) {
    // A pool other than the root's counts the coroutine as a visitor until it
    // leaves, so that its shutdown waits for it; one that is shut down
    // refuses it, before anything changed (R11).
    TaskBase* const root = strand->task_;
    const bool native = root != nullptr && pool_executor(root->pool_) == target;
    if (native ? root->pool_->closed() : !target->enter()) {
      throw TaskError(make_error_code(Errc::rejected));
    }
    leave_from = promise.entered_;
    promise.entered_ = !native;
    // The awaiter, if any, resumes on its own home when this one ends (R10).
    if (promise.continuation_ && promise.return_home_ == nullptr) promise.return_home_ = from;
    promise.home_ = target;
    strand->priority_ = priority;
  }
  strand->resume_ = h;
  strand->token_ = &token;
  strand_park(strand);
  // The coroutine may run from here on: touch nothing of it.
  target->post(strand, to_home ? Executor::Post::yield : Executor::Post::hop);
  if (leave_from) from->leave();
}

// ---- sleeps ---------------------------------------------------------------

namespace {

// A sleep's entry lives in its awaiter, in the coroutine frame: it fires by
// completing the wait (StoppableWait::complete() posts the coroutine, and
// touches the frame no more), and is never a tombstone: a cancelled sleep
// takes its entry back out of the set (withdraw()).
const TimerKind sleep_timer{
    [](TimerEntry* entry) noexcept { static_cast<StoppableWait*>(entry->target)->complete(); },
    // The service stopped with the entry armed: cannot happen (a shutdown
    // waits for every coroutine), but the wait must still end.
    [](TimerEntry* entry) noexcept { static_cast<StoppableWait*>(entry->target)->complete(); },
    [](const TimerEntry*) noexcept { return false; },
};

static_assert(sizeof(TimerEntry) <= kTimerEntrySize && alignof(TimerEntry) <= alignof(void*));

}  // namespace

void arm_sleep(Executor* home, void* storage, std::chrono::steady_clock::time_point due,
               StoppableWait* wait) noexcept {
  auto* entry = new (storage) TimerEntry;
  entry->due = due;
  entry->kind = &sleep_timer;
  entry->target = wait;
  home->add_timer(entry);
}

bool disarm_sleep(Executor* home, void* storage) noexcept {
  return home->remove_timer(static_cast<TimerEntry*>(storage));
}

void destroy_sleep_entry(void* storage) noexcept { static_cast<TimerEntry*>(storage)->~TimerEntry(); }

// ---- futures and handles ----------------------------------------------------

bool arm_task_waiter(TaskBase* task, CoroWaiter* waiter) noexcept {
  task->coro_waiter_ = waiter;
  // Acquire: a terminal word seen here carries the outcome the caller reads.
  std::uint32_t word = task->status_.load(std::memory_order_acquire);
  do {
    if (TaskBase::is_terminal(word)) return false;
    // Release: coro_waiter_ happens-before the terminal exchange that reads
    // the bit (T7). Acquire on failure: a terminal word carries the outcome.
  } while (!task->status_.compare_exchange_weak(word, word | TaskBase::kCoroWaiting,
                                                std::memory_order_release,
                                                std::memory_order_acquire));
  return true;
}

bool withdraw_task_waiter(TaskBase* task) noexcept {
  // Relaxed: only a first guess for the CAS below.
  std::uint32_t word = task->status_.load(std::memory_order_relaxed);
  do {
    // Terminal: the completer took the bit and fires (T7).
    if (TaskBase::is_terminal(word)) return false;
    // Relaxed: the CAS only decides who fires; nothing is published.
  } while (!task->status_.compare_exchange_weak(word, word & ~TaskBase::kCoroWaiting,
                                                std::memory_order_relaxed));
  return true;
}

// ---- groups and scopes ------------------------------------------------------

bool current_task_in_set(const void* set) noexcept {
  const TaskBase* task = this_task_ptr;
  return task != nullptr && task->set_ == set;
}

// ---- sync_wait ---------------------------------------------------------------

namespace {

// The calling thread's loop for one sync_wait: resumptions posted to it and
// its own timers, served until the root ends (R35).
class SyncLoop final : public Executor {
 public:
  // Notified under the lock: once it is released, the loop may run the
  // strand to the root's end and return, destroying this loop.
  void post(Strand* strand, Post) noexcept override {
    std::lock_guard lock(mutex_);
    strand->queue_next_ = nullptr;
    *tail_ = strand;
    tail_ = &strand->queue_next_;
    wake_.notify_one();
  }
  ThreadPool* pool() const noexcept override { return nullptr; }
  void add_timer(TimerEntry* entry) noexcept override {
    std::lock_guard lock(mutex_);
    timers_.insert(*entry);
  }
  bool remove_timer(TimerEntry* entry) noexcept override {
    std::lock_guard lock(mutex_);
    if (!entry->is_linked()) return false;
    timers_.erase(timers_.iterator_to(*entry));
    return true;
  }
  // Nothing can schedule() onto a loop: it has no name.
  bool enter() noexcept override { return false; }
  void leave() noexcept override {}

  void run(std::coroutine_handle<> root, TaskPromiseBase& promise) noexcept {
    // The root may end on a pool worker (it moved there with schedule()).
    strand_.done_ = [](Strand* strand) noexcept {
      SyncLoop* const loop = static_cast<LoopStrand*>(strand)->loop;
      std::lock_guard lock(loop->mutex_);
      loop->strand_.ended = true;
      loop->wake_.notify_one();  // under the lock: see post()
    };
    strand_.loop = this;
    promise.home_ = this;
    promise.strand_ = &strand_;
    drive(root, promise.token_);
    std::unique_lock lock(mutex_);
    // Ends when the root did; every resumption before that ran here or was
    // taken by a pool.
    while (!strand_.ended) {
      if (head_ != nullptr) {
        QueueNode* const node = head_;
        head_ = node->queue_next_;
        if (head_ == nullptr) tail_ = &head_;
        lock.unlock();
        auto* strand = static_cast<Strand*>(node);
        drive(strand->resume_, strand->token_);
        lock.lock();
        continue;
      }
      if (!timers_.empty()) {
        TimerEntry& first = *timers_.begin();
        if (first.due <= std::chrono::steady_clock::now()) {
          timers_.erase(timers_.begin());
          lock.unlock();
          first.kind->fire(&first);  // posts to this loop
          lock.lock();
          continue;
        }
        wake_.wait_until(lock, first.due);
        continue;
      }
      wake_.wait(lock);
    }
  }

 private:
  struct ByDue {
    bool operator()(const TimerEntry& a, const TimerEntry& b) const noexcept {
      return a.due < b.due;
    }
  };
  struct LoopStrand : Strand {
    SyncLoop* loop = nullptr;
    bool ended = false;  // guarded by mutex_
  };

  std::mutex mutex_;
  std::condition_variable wake_;
  QueueNode* head_ = nullptr;                // guarded by mutex_
  QueueNode** tail_ = &head_;                // guarded by mutex_
  boost::intrusive::multiset<TimerEntry, boost::intrusive::compare<ByDue>> timers_;  // ditto
  LoopStrand strand_;
};

}  // namespace

void run_sync_loop(std::coroutine_handle<> root, TaskPromiseBase& promise) {
  if (this_worker != nullptr) {
    throw std::logic_error("quell::sync_wait called on a pool worker: it would block without helping");
  }
  if (in_sync_wait) throw std::logic_error("quell::sync_wait called inside another sync_wait");
  in_sync_wait = true;
  SyncLoop loop;
  loop.run(root, promise);
  in_sync_wait = false;
}

bool on_pool_worker() noexcept { return this_worker != nullptr; }

}  // namespace quell::detail

namespace quell {

std::coroutine_handle<> TaskPromiseBase::end_elsewhere() noexcept {
  // Read before the hand-over: from then on the awaiter may run and destroy
  // this frame.
  detail::Executor* const home = home_;
  const bool entered = entered_;
  detail::Strand* const strand = strand_;
  if (continuation_) {
    // Moved by schedule(): the awaiter resumes on its own home (R10).
    detail::Executor* const back = return_home_ != nullptr ? return_home_ : home;
    strand->resume_ = continuation_;
    strand->token_ = token_;
    detail::strand_park(strand);
    back->post(strand);
  } else {
    strand->done_(strand);  // a root: may destroy this frame
  }
  if (entered) home->leave();
  return std::noop_coroutine();
}

bool TaskPromiseBase::failed_cancelled() const noexcept {
  if (ended_ != Ended::failure) return false;
  try {
    std::rethrow_exception(error_);
  } catch (const OperationCancelled&) {
    return true;
  } catch (...) {
    return false;
  }
}

namespace detail {

// The coroutine is a lambda: clang 14 cannot emit a named coroutine function
// under -fsanitize=function together with -fsanitize=fuzzer-no-link ("Cannot
// represent a difference across sections"); a lambda's body compiles.
Task<void> deadline_child(ChildSet* set, std::chrono::steady_clock::time_point due, bool* fired) {
  return [](ChildSet* s, std::chrono::steady_clock::time_point d, bool* f) -> Task<void> {
    Result<void> slept = co_await as_result(sleep_until(d));
    if (slept.has_value()) *f = s->cancel(CancelReason::deadline);
  }(set, due, fired);
}

}  // namespace detail

}  // namespace quell
