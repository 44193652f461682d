#include "quell/thread_pool.hpp"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "fast_tls.hpp"
#include "injection_queue.hpp"
#include "parking.hpp"
#include "quell/detail/config.hpp"
#include "quell/detail/futex.hpp"
#include "quell/detail/wait_count.hpp"
#include "timers.hpp"
#include "work_deque.hpp"

namespace quell::detail {
namespace {

using Clock = std::chrono::steady_clock;
using Counter = std::atomic<std::uint64_t>;

// Statistics and quiescence counts. A worker's set has one writer (the
// worker), so it counts with a plain load and store; the pool's shared sets
// (stripes, one picked per thread), for every other thread, use fetch_add.
// No counter is written by every task: a worker's own are on its own line.
//
// The statistics are relaxed: each task's are published by the seq_cst bump
// of `retired` that follows them (T5). `accepted` and `retired` are the
// quiescence counts (T5): seq_cst, see PoolCore::accept() and retire().
struct alignas(kCacheLine) Counters {
  void bump(Counter Counters::*field) noexcept { add(field, std::memory_order_relaxed); }
  void bump_seq_cst(Counter Counters::*field) noexcept { add(field, std::memory_order_seq_cst); }

  bool shared = true;  // set once, before the pool's threads start
  Counter accepted{0};  // every submission, rejected ones included (accept() counts first)
  Counter retired{0};
  Counter rejected{0};
  Counter started{0};
  Counter ended{0};    // started, then terminal
  Counter dropped{0};  // resolved before starting
  Counter completed{0};
  Counter failed{0};
  Counter cancelled{0};
  Counter timed_out{0};
  Counter stolen{0};

 private:
  void add(Counter Counters::*field, std::memory_order order) noexcept {
    Counter& counter = this->*field;
    if (shared) {
      counter.fetch_add(1, order);
    } else {
      counter.store(counter.load(std::memory_order_relaxed) + 1, order);
    }
  }
};

Counter Counters::*counter_for(std::uint32_t outcome) noexcept {
  switch (outcome) {
    case TaskBase::kCompleted: return &Counters::completed;
    case TaskBase::kFailed: return &Counters::failed;
    case TaskBase::kTimedOut: return &Counters::timed_out;
    default: return &Counters::cancelled;
  }
}

// A task executing on a worker, and the frame it runs inside: a worker that
// waits runs the awaited task, or other queued tasks, on top of the waiting one.
struct Frame {
  TaskBase* task;
  Frame* outer;
};

constexpr std::size_t kStripes = 4;  // shared counter sets, for threads that are not workers
constexpr int kSpinRounds = 64;       // find_task() attempts before sleeping
constexpr TaskId kIdBlock = 1024;

std::atomic<TaskId> next_id_block{1};  // relaxed: only uniqueness matters
QUELL_FAST_TLS thread_local TaskId next_id = 0;
QUELL_FAST_TLS thread_local TaskId id_limit = 0;

TaskId next_task_id() noexcept {
  if (next_id == id_limit) {
    next_id = next_id_block.fetch_add(kIdBlock, std::memory_order_relaxed);
    id_limit = next_id + kIdBlock;
  }
  return next_id++;
}

}  // namespace

struct Worker {
  Worker(PoolCore& owner, std::size_t worker_index)
      : pool(owner), index(worker_index), rng(0x9E3779B97F4A7C15ull * (worker_index + 1)) {}

  PoolCore& pool;
  const std::size_t index;
  WorkDeque<TaskBase*> deque;
  Counters counters;
  // The family this worker waits for while it sleeps in a set's wait, or 0.
  // Relaxed: read by announce() after its fence, written before ours (see
  // help_family()).
  std::atomic<TaskId> awaited_family{0};
  // The innermost executing frame. Written by this worker; read by a
  // cancel shutdown under the scanning_ protocol (see PoolCore::scan()).
  std::atomic<Frame*> current{nullptr};
  unsigned since_lower = 0;  // owner only
  std::uint64_t rng;         // owner only
  std::thread thread;
};

namespace {
QUELL_FAST_TLS thread_local Worker* this_worker = nullptr;
QUELL_FAST_TLS thread_local TaskBase* this_task_ptr = nullptr;
QUELL_FAST_TLS thread_local unsigned this_stripe = kStripes;  // kStripes: not chosen yet
std::atomic<unsigned> next_stripe{0};  // relaxed: only spreads threads over stripes

// The calling thread, if it is a worker of `pool` (and so helps while it waits).
Worker* helper_in(const PoolCore* pool) noexcept {
  Worker* worker = this_worker;
  return worker != nullptr && &worker->pool == pool ? worker : nullptr;
}
}  // namespace

class PoolCore {
 public:
  explicit PoolCore(ThreadPoolConfig config)
      : config_(checked(std::move(config))), timers_(this, &start_delayed, config_.thread_name) {
    workers_.reserve(config_.thread_count);
    for (std::size_t i = 0; i < config_.thread_count; ++i) {
      workers_.push_back(std::make_unique<Worker>(*this, i));
      workers_.back()->counters.shared = false;  // before its thread starts
    }
    for (auto& worker : workers_) {
      worker->thread = std::thread([this, w = worker.get()] { run_worker(*w); });
      name_thread(*worker);
    }
  }

  PoolCore(const PoolCore&) = delete;
  PoolCore& operator=(const PoolCore&) = delete;

  bool submit(TaskBase* task, const TaskOptions& options, const Placement& placement);
  void drop(TaskBase* task) noexcept;
  // A set's wait on one of our workers: runs queued tasks of `family` until
  // the count is zero, and sleeps when there is none.
  void help_family(Worker& worker, const WaitCount& count, TaskId family) noexcept;
  // A future's wait on one of our workers: runs only its own work (the
  // awaited task, or queued tasks of its family), then sleeps. True if the task is terminal.
  bool await_on_worker(Worker& worker, TaskBase* task, const Clock::time_point* deadline) noexcept;
  // A queued task of `family` from another worker's deque, or null.
  TaskBase* take_kin(Worker& worker, TaskId family) noexcept;
  // A task a wait took but may not run goes to this worker's deque. It was
  // out of every queue for a moment, so a worker that looked for it then
  // (idle, or waiting for its family) is told again.
  void put_back(Worker& worker, TaskBase* task) noexcept {
    const TaskId family = task->family_;  // pushed, it may be stolen and go
    worker.deque.push(task);
    announce(family);
  }
  void wake_helpers() noexcept {
    // Release: pairs with help_family()'s acquire load of the key.
    helper_epoch_.fetch_add(1, std::memory_order_release);
    futex_wake_all(helper_epoch_);
  }
  TaskId family_here() const noexcept {
    const TaskBase* task = is_own_worker() ? this_task_ptr : nullptr;
    return task != nullptr ? task->family_ : next_task_id();
  }
  TimerService& timers() noexcept { return timers_; }
  bool closed() const noexcept {
    // Relaxed: a moment's answer for periodic tasks; a tick submitted after
    // the close is still rejected by accept()'s seq_cst load.
    return stopping_.load(std::memory_order_relaxed);
  }
  void shutdown();
  void wait_idle();
  ThreadPoolStats stats() const noexcept;
  std::size_t thread_count() const noexcept { return workers_.size(); }

  bool is_own_worker() const noexcept { return helper_in(this) != nullptr; }

  // The pool core outlives the ThreadPool object while a thread that is not
  // a worker still resolves one of its tasks (see drop()).
  void pin() noexcept {
    // Relaxed: made from an existing pin (the ThreadPool's, or an unfinished
    // task's guarantee that shutdown has not finished).
    pins_.fetch_add(1, std::memory_order_relaxed);
  }
  void unpin() noexcept {
    // Acq_rel: every user's accesses happen-before the deletion.
    if (pins_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

 private:
  ~PoolCore() { discard_leftovers(); }

  static ThreadPoolConfig checked(ThreadPoolConfig config) {
    if (config.thread_count == 0) {
      throw std::invalid_argument("quell::ThreadPool: thread_count must be at least 1");
    }
    return config;
  }
  // The timer service's hand-over of a due delayed task (queue's reference).
  static void start_delayed(PoolCore* pool, TaskBase* task) {
    const TaskId family = task->family_;  // enqueued, it may run and go
    pool->enqueue(task);
    pool->announce(family);
  }
  // After work of `family` became visible: wakes an idle worker, and the
  // workers asleep in a wait for that family (their own deques' tasks do not
  // wake them otherwise). notify_one() begins with the seq_cst fence that
  // pairs with help_family()'s, so a sleeper we do not see re-checks after
  // the work is visible.
  void announce(TaskId family) noexcept {
    parking_.notify_one();
    // Relaxed: ordered by the fence above (see help_family()).
    if (helpers_asleep_.load(std::memory_order_relaxed) == 0) return;
    for (const auto& worker : workers_) {
      if (worker->awaited_family.load(std::memory_order_relaxed) == family) {
        wake_helpers();
        return;
      }
    }
  }
  // Queued work of `family` for this worker, from anywhere, or null.
  TaskBase* take_family(Worker& worker, TaskId family) noexcept;

  Counters& counters_here() noexcept {
    if (is_own_worker()) return this_worker->counters;
    if (this_stripe == kStripes) {
      this_stripe = next_stripe.fetch_add(1, std::memory_order_relaxed) % kStripes;
    }
    return shared_counters_[this_stripe];
  }

  bool accept(Counters& counters) noexcept;
  void retire(Counters& counters) noexcept {
    // Seq_cst bump, then seq_cst load of idle_waiters_, against
    // wait_unfinished()'s seq_cst increment of idle_waiters_ then seq_cst
    // loads of the counts: a waiter either sees this retirement or is
    // woken by us. The bump's release also publishes the statistics and
    // outcome written before it to the waiter that reads it.
    counters.bump_seq_cst(&Counters::retired);
    if (idle_waiters_.load(std::memory_order_seq_cst) != 0 && unfinished() == 0) {
      // Release: pairs with wait_unfinished()'s acquire load of the epoch.
      idle_epoch_.fetch_add(1, std::memory_order_release);
      futex_wake_all(idle_epoch_);
    }
  }
  std::uint64_t unfinished() const noexcept;
  void reject(TaskBase* task, Counters& counters) noexcept;
  void enqueue(TaskBase* task);
  void finish(TaskBase* task, std::uint32_t outcome, bool started, Counters& counters) noexcept;
  bool try_start(TaskBase* task) noexcept;
  void execute(Worker& worker, TaskBase* task) noexcept;
  void run_in_frame(Worker& worker, TaskBase* task) noexcept;
  TaskBase* find_task(Worker& worker) noexcept;
  bool work_visible() const noexcept;
  TaskBase* steal(Worker& worker) noexcept;
  void run_worker(Worker& worker) noexcept;
  void cancel_running() noexcept;
  void wait_unfinished() noexcept;
  void discard_leftovers() noexcept;
  void name_thread(Worker& worker) noexcept;

  const ThreadPoolConfig config_;
  TimerService timers_;
  std::vector<std::unique_ptr<Worker>> workers_;
  InjectionQueue injection_;
  Parking parking_;
  Counters shared_counters_[kStripes];
  // Threads in wait_unfinished(), and the word they sleep on. Written only
  // by waiters and by the retirement that ends their wait.
  alignas(kCacheLine) std::atomic<std::uint32_t> idle_waiters_{0};
  std::atomic<std::uint32_t> idle_epoch_{0};
  // Workers asleep in help_family(), and the word they sleep on: bumped by a
  // set's completion and by announce() of their family.
  alignas(kCacheLine) std::atomic<std::uint32_t> helpers_asleep_{0};
  std::atomic<std::uint32_t> helper_epoch_{0};
  // Accepted tasks neither started nor dropped; kept only when bounded.
  alignas(kCacheLine) std::atomic<std::size_t> bounded_queued_{0};
  // Read by every task, written once each at shutdown.
  alignas(kCacheLine) std::atomic<bool> stopping_{false};  // intake closed
  std::atomic<bool> cancelling_{false};                     // a cancel shutdown began
  std::atomic<bool> scanning_{false};                       // cancel_running() reads frames
  std::atomic<bool> exiting_{false};                        // workers may leave
  std::atomic<std::uint32_t> pins_{1};                      // the ThreadPool's, plus droppers'
  std::mutex shutdown_mutex_;
  bool joined_ = false;  // guarded by shutdown_mutex_
};

namespace {

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

}  // namespace

// ---- submission --------------------------------------------------------

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
  const bool timed = options.timeout() || options.deadline();
  const bool delayed = placement.start != nullptr;
  // One clock read, for the deadline and the checks against it below.
  const Clock::time_point now = timed || delayed ? Clock::now() : Clock::time_point{};
  if (timed) task->deadline_ = *options.deadline_from(now);
  // Before the links: once linked, another thread may resolve the task and
  // read timed_ in finish().
  task->timed_ = timed || delayed;
  task->delayed_ = delayed && *placement.start > now;
  // A tracked task has two links, and the first may fire (inline, or on the
  // thread that cancels its parent) before the second is attached; resolved
  // then, its finished hook would detach the links while we still attach,
  // and the second would stay registered after the task is freed. So while
  // linking, the hook only marks it, and it is dropped here, once linked.
  const bool tracked = placement.extra_state != nullptr;
  // Relaxed: no other thread knows the task yet; the links' registrations
  // (the parent's lock, released) publish it to a firing link.
  if (tracked) task->status_.store(TaskBase::kLinking, std::memory_order_relaxed);
  // Each may resolve an untracked task at once (inline, through task_on_cancel).
  CancelState* parent = StateAccess::state(options.cancellation());
  if (parent != &never_cancelled) task->origin_.attach(parent, task);
  if (tracked) {
    placement.extra_link->attach(placement.extra_state, task);
    std::uint32_t linking = TaskBase::kLinking;
    // Acq_rel, against task_on_cancel()'s CAS to link_cancelled: either it
    // saw queued (and drops the task itself) or we see its mark, and then
    // the reason it set before its hook ran.
    if (!task->status_.compare_exchange_strong(linking, TaskBase::kQueued,
                                               std::memory_order_acq_rel,
                                               std::memory_order_acquire)) {
      // Relaxed: the hook ran (once: a state is cancelled once) and no
      // waiter knows the task yet; we alone own it now (T1).
      task->status_.store(TaskBase::kDropping, std::memory_order_relaxed);
      drop(task);
    }
  }
  if (timed && task->deadline_ <= now) {
    task->request_cancel(static_cast<std::uint64_t>(CancelReason::deadline));
  }
  // Relaxed: only a shortcut. A task dropped after this load is enqueued as
  // a tombstone, which a worker (or, after shutdown, ~PoolCore) discards.
  if ((task->status_.load(std::memory_order_relaxed) & TaskBase::kValueMask) != TaskBase::kQueued) {
    task->release_token_ref();  // resolved already: the queue's reference goes unused
    return true;
  }
  if (timed) timers_.add_deadline(task, task->deadline_);
  if (delayed && *placement.start > now) {
    if (!timers_.add_start(task, *placement.start)) {
      // A shutdown began after we were accepted: resolved as the delayed
      // tasks it found were (cancelled, reason shutdown).
      task->request_cancel(static_cast<std::uint64_t>(CancelReason::shutdown));
      task->release_token_ref();
    }
    return true;
  }
  const TaskId family = task->family_;
  enqueue(task);  // from here on the task may be run and freed: do not touch it
  announce(family);
  return true;
}

void PoolCore::enqueue(TaskBase* task) {
  if (is_own_worker()) {
    this_worker->deque.push(task);
    return;
  }
  injection_.push(task);
}

// ---- resolution --------------------------------------------------------

void PoolCore::finish(TaskBase* task, std::uint32_t outcome, bool started,
                      Counters& counters) noexcept {
  counters.bump(counter_for(outcome));
  counters.bump(started ? &Counters::ended : &Counters::dropped);
  // Release: the result, the error and the callable's destruction
  // happen-before every acquire load that sees the terminal value (T2).
  const std::uint32_t old = task->status_.exchange(outcome, std::memory_order_acq_rel);
  QUELL_INVARIANT(T2, !TaskBase::is_terminal(old));
  if ((old & TaskBase::kThreadWaiting) != 0) futex_wake_all(task->status_);
  task->origin_.detach();
  if (task->timed_) timers_.entry_died();
  if (auto* finished = task->ops()->finished) finished(task, outcome);
  retire(counters);
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

void PoolCore::execute(Worker& worker, TaskBase* task) noexcept {
  run_in_frame(worker, task);
  task->release_token_ref();  // the queue's reference (T4)
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
    if (config_.max_queue_size != 0) bounded_queued_.fetch_sub(1, std::memory_order_relaxed);
    TaskBase* outer = std::exchange(this_task_ptr, task);
    const std::uint32_t outcome = task->ops()->run(task);
    this_task_ptr = outer;
    finish(task, outcome, true, worker.counters);
  }
  // Seq_cst store then seq_cst load of scanning_ (against cancel_running()'s
  // store of scanning_ then load of current): if a scan may still read this
  // frame, wait for it before the task's memory may go.
  worker.current.store(frame.outer, std::memory_order_seq_cst);
  while (scanning_.load(std::memory_order_seq_cst)) scanning_.wait(true, std::memory_order_acquire);
}

bool PoolCore::await_on_worker(Worker& worker, TaskBase* task,
                               const Clock::time_point* deadline) noexcept {
  int idle_rounds = 0;
  while (!task->ready()) {
    if (deadline != nullptr && Clock::now() >= *deadline) return false;
    // Usually the task, or one of its family, is the newest on our deque:
    // popped, it leaves no tombstone behind for a thief to steal.
    if (TaskBase* mine = worker.deque.pop()) {
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
    if (TaskBase* kin = take_kin(worker, task->family_)) {
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

TaskBase* PoolCore::take_kin(Worker& worker, TaskId family) noexcept {
  // Other deques' oldest tasks. One not of the family moves to our deque,
  // where any idle worker can still steal it.
  const std::size_t count = workers_.size();
  for (std::size_t i = 1; i < count; ++i) {
    Worker& victim = *workers_[(worker.index + i) % count];
    auto [result, stolen] = victim.deque.steal();
    if (result != WorkDeque<TaskBase*>::Steal::taken) continue;
    if (stolen->family_ == family) {
      worker.counters.bump(&Counters::stolen);
      return stolen;
    }
    put_back(worker, stolen);
    return nullptr;
  }
  return nullptr;
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
      return;  // running, or resolved
    }
    // Acq_rel: as try_start(); the winner owns the callable (T1). To
    // link_cancelled, a release: the submitter's CAS that reads it sees the
    // reason set before this hook ran.
  } while (!task->status_.compare_exchange_weak(word, next, std::memory_order_acq_rel,
                                                std::memory_order_relaxed));
  if ((next & TaskBase::kValueMask) == TaskBase::kDropping) task->pool_->drop(task);
}

// ---- workers -----------------------------------------------------------

TaskBase* PoolCore::steal(Worker& worker) noexcept {
  const std::size_t count = workers_.size();
  if (count < 2) return nullptr;
  worker.rng ^= worker.rng << 13;
  worker.rng ^= worker.rng >> 7;
  worker.rng ^= worker.rng << 17;
  const std::size_t first = static_cast<std::size_t>(worker.rng % count);
  for (std::size_t i = 0; i < count; ++i) {
    Worker& victim = *workers_[(first + i) % count];
    if (&victim == &worker) continue;
    for (;;) {
      auto [result, task] = victim.deque.steal();
      if (result == WorkDeque<TaskBase*>::Steal::taken) {
        worker.counters.bump(&Counters::stolen);
        return task;
      }
      if (result == WorkDeque<TaskBase*>::Steal::empty) break;
    }
  }
  return nullptr;
}

bool PoolCore::work_visible() const noexcept {
  if (!injection_.empty_hint()) return true;
  for (const auto& worker : workers_) {
    if (!worker->deque.empty_hint()) return true;
  }
  return false;
}

TaskBase* PoolCore::find_task(Worker& worker) noexcept {
  if (TaskBase* task = worker.deque.pop()) return task;
  if (TaskBase* task = injection_.pop(worker.since_lower)) return task;
  return steal(worker);
}

// Leaving a wait clears the parking lot's pending wake, and notifiers skip
// their wake while one is pending (see parking.hpp). So a worker that
// leaves a wait and then takes a task, or goes back to a task of its own,
// passes the wake on: otherwise work queued behind the one it took could wait,
// with another worker asleep, for as long as that task runs.

void PoolCore::run_worker(Worker& worker) noexcept {
  this_worker = &worker;
  bool woke = false;
  for (;;) {
    TaskBase* task = find_task(worker);
    if (task == nullptr && parking_.begin_search()) {
      for (int round = 0; task == nullptr && round < kSpinRounds; ++round) {
        for (int i = 0; i < 16; ++i) cpu_relax();
        task = find_task(worker);
      }
      parking_.end_search();
      if (task != nullptr) {
        // A notify skipped while we searched may have been for other work.
        Parking::found_work();
        if (work_visible()) parking_.notify_one();
      }
    }
    if (task != nullptr) {
      if (std::exchange(woke, false)) parking_.notify_one();
      execute(worker, task);
      continue;
    }
    const std::uint32_t key = parking_.prepare_wait();
    if ((task = find_task(worker)) != nullptr) {
      parking_.cancel_wait();
      parking_.notify_one();
      execute(worker, task);
      continue;
    }
    // Acquire: pairs with shutdown()'s release store; nothing is left to do.
    if (exiting_.load(std::memory_order_acquire)) {
      parking_.cancel_wait();
      return;
    }
    parking_.commit_wait(key);
    woke = true;
  }
}

TaskBase* PoolCore::take_family(Worker& worker, TaskId family) noexcept {
  if (TaskBase* mine = worker.deque.pop()) {
    if (mine->family_ == family) return mine;
    put_back(worker, mine);
  }
  if (TaskBase* queued = injection_.take_family(family)) return queued;
  return take_kin(worker, family);
}

void PoolCore::help_family(Worker& worker, const WaitCount& count, TaskId family) noexcept {
  int idle_rounds = 0;
  while (count.count() != 0) {
    if (TaskBase* kin = take_family(worker, family)) {
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
    TaskBase* kin = count.arm(WaitCount::kWorkerWaiting, word) ? take_family(worker, family)
                                                                : nullptr;
    if (kin == nullptr && count.count() != 0) futex_wait(helper_epoch_, key);
    helpers_asleep_.fetch_sub(1, std::memory_order_relaxed);  // relaxed: publishes nothing
    worker.awaited_family.store(0, std::memory_order_relaxed);
    idle_rounds = 0;
    if (kin != nullptr) execute(worker, kin);
  }
}

void PoolCore::name_thread(Worker& worker) noexcept {
  // Linux limits a thread name to 15 characters.
  const std::string name = (config_.thread_name + "-" + std::to_string(worker.index)).substr(0, 15);
  pthread_setname_np(worker.thread.native_handle(), name.c_str());
}

// ---- shutdown ----------------------------------------------------------

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
  timers_.close_starts();
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

ThreadPoolStats PoolCore::stats() const noexcept {
  // Relaxed sums of monotonic counters: exact once wait_idle() returned,
  // otherwise a moment's picture. Outcomes are read before what precedes
  // them (started before accepted) so differences do not go negative.
  ThreadPoolStats stats;
  std::uint64_t started = 0;
  std::uint64_t ended = 0;
  std::uint64_t dropped = 0;
  auto add = [&](const Counters& c) {
    stats.completed += c.completed.load(std::memory_order_relaxed);
    stats.failed += c.failed.load(std::memory_order_relaxed);
    stats.cancelled += c.cancelled.load(std::memory_order_relaxed);
    stats.timed_out += c.timed_out.load(std::memory_order_relaxed);
    stats.stolen += c.stolen.load(std::memory_order_relaxed);
    ended += c.ended.load(std::memory_order_relaxed);
    dropped += c.dropped.load(std::memory_order_relaxed);
  };
  auto add_intake = [&](const Counters& c) {
    started += c.started.load(std::memory_order_relaxed);
    stats.rejected += c.rejected.load(std::memory_order_relaxed);
    stats.submitted += c.accepted.load(std::memory_order_relaxed);
  };
  for (const Counters& c : shared_counters_) add(c);
  for (const auto& worker : workers_) add(worker->counters);
  for (const Counters& c : shared_counters_) add_intake(c);
  for (const auto& worker : workers_) add_intake(worker->counters);
  const std::uint64_t accepted = stats.submitted - stats.rejected;
  stats.queued = accepted > started + dropped ? accepted - started - dropped : 0;
  stats.running = started > ended ? started - ended : 0;
  return stats;
}

// ---- the functions the headers declare ----------------------------------

bool pool_submit(PoolCore* pool, TaskBase* task, const TaskOptions& options,
                 const Placement& placement) {
  return pool->submit(task, options, placement);
}

void pool_wake_helpers(PoolCore* pool) noexcept { pool->wake_helpers(); }

TimerService& pool_timers(PoolCore* pool) noexcept { return pool->timers(); }

bool pool_closed(const PoolCore* pool) noexcept { return pool->closed(); }

TaskId pool_family_here(const PoolCore* pool) noexcept {
  return pool->family_here();
}

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

namespace quell {

namespace {
ThreadPoolConfig config_with(std::size_t thread_count) {
  ThreadPoolConfig config;
  config.thread_count = thread_count;
  return config;
}
}  // namespace

ThreadPool::ThreadPool()
    : ThreadPool(config_with(std::max<std::size_t>(1, std::thread::hardware_concurrency()))) {}

ThreadPool::ThreadPool(std::size_t thread_count) : ThreadPool(config_with(thread_count)) {}

ThreadPool::ThreadPool(ThreadPoolConfig config) : core_(new detail::PoolCore(std::move(config))) {}

ThreadPool::~ThreadPool() {
  if (core_->is_own_worker()) {
    std::fputs("quell::ThreadPool destroyed from one of its own workers\n", stderr);
    std::terminate();
  }
  core_->shutdown();
  core_->unpin();
}

void ThreadPool::shutdown() { core_->shutdown(); }
detail::PoolCore* detail::PoolAccess::core(const ThreadPool& pool) noexcept { return pool.core_; }
void ThreadPool::wait_idle() { core_->wait_idle(); }
std::size_t ThreadPool::thread_count() const noexcept { return core_->thread_count(); }
ThreadPoolStats ThreadPool::stats() const noexcept { return core_->stats(); }

namespace this_task {

CancellationToken cancellation_token() noexcept {
  detail::TaskBase* task = detail::this_task_ptr;
  return task != nullptr ? detail::StateAccess::token(task) : CancellationToken();
}

bool cancelled() noexcept {
  const detail::TaskBase* task = detail::this_task_ptr;
  return task != nullptr && task->cancelled();
}

}  // namespace this_task
}  // namespace quell
