#pragma once

// The pool's core, shared by the files that implement it, one job each:
//   pool_submit.cpp    submission: accept, family, links, enqueue
//   pool_tasks.cpp     a task's life: start, run, drop, finish
//   pool_workers.cpp   the worker loop: find, steal, park
//   pool_waits.cpp     waits on a task or a set, from a worker or not
//   pool_shutdown.cpp  quiescence, shutdown, wait_idle
//   thread_pool.cpp    the public ThreadPool, statistics
// docs/thread-pool.md argues the design; the task word's invariants (T1-T6,
// F1) are in detail/task.hpp.

#include <atomic>
#include <bit>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "fast_tls.hpp"
#include "injection_queue.hpp"
#include "parking.hpp"
#include "quell/detail/config.hpp"
#include "quell/detail/coro_task.hpp"
#include "quell/detail/futex.hpp"
#include "quell/detail/submission.hpp"
#include "quell/detail/task.hpp"
#include "quell/detail/wait_count.hpp"
#include "quell/thread_pool.hpp"
#include "timers.hpp"
#include "work_deque.hpp"

namespace quell::detail {

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
  Counter parked{0};    // coroutine roots suspended at a co_await...
  Counter unparked{0};  // ...and resumed (stats().suspended is the difference)
  Counter visits{0};    // coroutines of other pools moved in by schedule()
  Counter by_reason[5] = {};  // ended cancelled or timed_out, by CancelReason

  // A LatencyHistogram's counters (relaxed, as the rest).
  struct Histogram {
    Counter buckets[LatencyHistogram::kBuckets] = {};
    Counter count{0};
    Counter sum_ns{0};
  };
  Histogram queue_wait;
  Histogram run_time;
  Histogram cancel_reaction;

  void bump_reason(std::uint64_t reason) noexcept {
    add(by_reason[reason < 5 ? reason : 0], 1, std::memory_order_relaxed);
  }
  void record(Histogram Counters::*histogram, std::int64_t ns) noexcept {
    Histogram& h = this->*histogram;
    const auto value = static_cast<std::uint64_t>(ns > 0 ? ns : 0);
    // Bucket b holds [2^b, 2^(b+1)): b is the index of the highest set bit.
    const unsigned b = value == 0 ? 0 : static_cast<unsigned>(std::bit_width(value)) - 1;
    add(h.buckets[b < LatencyHistogram::kBuckets ? b : LatencyHistogram::kBuckets - 1], 1,
        std::memory_order_relaxed);
    add(h.count, 1, std::memory_order_relaxed);
    add(h.sum_ns, value, std::memory_order_relaxed);
  }

 private:
  void add(Counter Counters::*field, std::memory_order order) noexcept { add(this->*field, 1, order); }
  void add(Counter& counter, std::uint64_t n, std::memory_order order) noexcept {
    if (shared) {
      counter.fetch_add(n, order);
    } else {
      counter.store(counter.load(std::memory_order_relaxed) + n, order);
    }
  }
};

// Steady-clock nanoseconds, for the latency statistics (0 is "unset").
inline std::int64_t stats_now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

inline Counter Counters::*counter_for(std::uint32_t outcome) noexcept {
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
// A new task id: unique per process, from a block of ids per thread.
TaskId next_task_id() noexcept;

struct Worker {
  Worker(PoolCore& owner, std::size_t worker_index)
      : pool(owner), index(worker_index), rng(0x9E3779B97F4A7C15ull * (worker_index + 1)) {}

  PoolCore& pool;
  const std::size_t index;
  WorkDeque<QueueNode*> deque;
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
  // What on_thread_start threw; written by the worker before its count-down
  // of PoolCore::starting_, read by the constructor after the count is zero.
  std::exception_ptr start_failure;
};

// The calling thread's worker (null on other threads), the task it runs
// (null between tasks), and its stripe of the shared counters (kStripes:
// not chosen yet). Constant-initialised, so reading them costs one load.
QUELL_FAST_TLS extern constinit thread_local Worker* this_worker;
QUELL_FAST_TLS extern constinit thread_local TaskBase* this_task_ptr;
QUELL_FAST_TLS extern constinit thread_local unsigned this_stripe;
extern std::atomic<unsigned> next_stripe;  // relaxed: only spreads threads over stripes

// The calling thread, if it is a worker of `pool` (and so helps while it waits).
inline Worker* helper_in(const PoolCore* pool) noexcept {
  Worker* worker = this_worker;
  return worker != nullptr && &worker->pool == pool ? worker : nullptr;
}

// Cancels `task` with `why` and drops the reference the caller held on it
// (a queue's, a timer entry's, a scan's): a queued task is dropped and
// resolved here and now (T1); a running one sees its token.
inline void cancel_and_release(TaskBase* task, CancelReason why) noexcept {
  task->request_cancel(static_cast<std::uint64_t>(why));
  task->release_token_ref();
}

class PoolCore final : public Executor {
 public:
  // Throws std::system_error if a thread cannot be started, after joining
  // those that were (§12).
  explicit PoolCore(ThreadPoolConfig config);

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
  QueueNode* take_kin(Worker& worker, TaskId family) noexcept;
  // A task a wait took but may not run goes to this worker's deque. It was
  // out of every queue for a moment, so a worker that looked for it then
  // (idle, or waiting for its family) is told again.
  void put_back(Worker& worker, QueueNode* task) noexcept {
    const TaskId family = task->family_;  // pushed, it may be stolen and go
    // Failing to grow the deque, the injection queue takes it (see enqueue).
    if (!worker.deque.try_push(task)) injection_.push(task);
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

  // As a coroutine's home (src/coro.cpp).
  void post(Strand* strand, Post how) noexcept override;
  ThreadPool* pool() const noexcept override { return owner_; }
  void add_timer(TimerEntry* entry) noexcept override;
  bool remove_timer(TimerEntry* entry) noexcept override;
  bool enter() noexcept override;
  void leave() noexcept override;
  // A coroutine root that ended after run() returned: finishes its task.
  void finish_root(TaskBase* task, std::uint32_t outcome) noexcept {
    finish(task, outcome, true, counters_here());
  }
  // Counts a strand of this pool's as suspended, or as resumed.
  void count_parked(bool parked) noexcept {
    counters_here().bump(parked ? &Counters::parked : &Counters::unparked);
  }
  // What a `cancel` shutdown cancels suspended coroutine roots through (R40).
  CancelState* shutdown_state() const noexcept { return StateAccess::state(shutdown_source_); }
  void set_owner(ThreadPool* owner) noexcept { owner_ = owner; }

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
  // A task's timer entries: its delayed start, its deadline
  // (pool_submit.cpp). Each entry holds a reference to the task.
  static const TimerKind start_timer;
  static const TimerKind deadline_timer;
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
  QueueNode* take_family(Worker& worker, TaskId family) noexcept;

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
  // Destroys a task never accepted, with its callable (a submission that
  // could not get what it needs).
  static void discard(TaskBase* task) noexcept;
  void enqueue(TaskBase* task) noexcept;
  // Links the task to its options' token and to its second origin, if any
  // (a set's token); a link that fires meanwhile leaves it dropped.
  void link_origins(TaskBase* task, CancelState* parent, const Placement& placement);
  void finish(TaskBase* task, std::uint32_t outcome, bool started, Counters& counters) noexcept;
  // finish()'s rare parts: a sampled or cancelled task's latencies; a
  // failure's hook, a cancellation's reason.
  [[gnu::cold]] void record_latencies(TaskBase* task, std::int64_t cancelled_at, Counters& counters) noexcept;
  void ended_otherwise(TaskBase* task, std::uint32_t outcome, Counters& counters) noexcept;
  bool try_start(TaskBase* task) noexcept;
  void execute(Worker& worker, QueueNode* node) noexcept;
  void run_in_frame(Worker& worker, TaskBase* task) noexcept;
  void resume(Worker& worker, Strand* strand) noexcept;
  QueueNode* find_task(Worker& worker) noexcept;
  bool work_visible() const noexcept;
  QueueNode* steal(Worker& worker) noexcept;
  void run_worker(Worker& worker) noexcept;
  void wait_unfinished() noexcept;
  void discard_leftovers() noexcept;
  // The worker thread's body: names the thread, runs the start hook, the
  // loop, then the stop hook.
  void worker_main(Worker& worker) noexcept;
  void name_thread(const Worker& worker) noexcept;
  // The constructor: waits until every worker's on_thread_start returned,
  // then rethrows the first failure.
  void await_started();
  // A task that ended failed: reports it if nothing else can see it.
  void report_failure(TaskBase* task) noexcept;
  // Tells the started workers to leave once idle, and joins them.
  void join_workers() noexcept;
  // A `cancel` shutdown: cancels the running tasks' tokens; resolves the
  // queued tasks on the calling thread.
  void cancel_running() noexcept;
  void drop_queued() noexcept;

  const ThreadPoolConfig config_;
  ThreadPool* owner_ = nullptr;  // set once, before any task
  // Cancelled (reason shutdown) by a `cancel` shutdown; coroutine roots link
  // to it when they first suspend, as they are in no worker's frame then.
  CancellationSource shutdown_source_;
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
  // Workers started whose on_thread_start has not returned yet (counted
  // only with a start hook): each is counted before its thread starts, so
  // once every thread started, zero means every hook returned. The
  // constructor sleeps on it.
  std::atomic<std::uint32_t> starting_{0};
  std::mutex shutdown_mutex_;
  bool joined_ = false;  // guarded by shutdown_mutex_
};

// Sleeps on the task's word until it is terminal (or `deadline` passes).
bool block_until(TaskBase* task, const Clock::time_point* deadline);

}  // namespace quell::detail
