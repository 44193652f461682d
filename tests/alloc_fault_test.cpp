// Allocation failure (API.md §12 "Faults"): an operation that allocates
// either takes full effect or throws std::bad_alloc and has no effect. This
// binary replaces the global operator new/delete, so it stands alone.
//
// For each public operation, and each k from 1 until the operation makes
// fewer than k allocations, a fresh setup (a pool of two workers, a scope, a
// source, ...) is built, the k-th allocation from then on is made to fail
// (on any thread: the caller, the workers, the timer thread), the operation
// runs, and the allocator is disarmed. Then, with the allocator back to
// normal: the operation completed or threw std::bad_alloc and nothing else;
// if it threw, nothing was counted and its callable is gone; wait_idle(),
// the waits and the destructors return; every callable was destroyed
// exactly once; every future returned is ready; the statistics add up; and
// every block allocated during the trial was freed. The allocations an
// operation makes when nothing fails are its failure points.
//
// Each operation is explored in a child process (a death test), so one
// whose failure terminates the process or leaves a wait hanging fails as
// that operation, and the others still run. A watchdog in the child ends it
// when a step does not return within QUELL_ALLOC_FAULT_WATCHDOG seconds (60
// by default; 2 to confirm a hang the statistics already predict). The
// child's report comes back to this process, which prints one line per
// operation, prefixed "alloc_fault:", at the end.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <latch>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "quell/cancellation.hpp"
#include "quell/detail/task_block.hpp"
#include "quell/periodic_task.hpp"
#include "quell/scope.hpp"
#include "quell/task_group.hpp"
#include "quell/thread_pool.hpp"
#include "quell/wait.hpp"

// ---- the allocator ----------------------------------------------------------

namespace {

// Armed, the allocator counts every allocation on every thread and fails the
// one whose number is g_fail_at (none if 0). Seq_cst throughout: arming and
// disarming are rare, and the order of a worker's allocation against them
// is what the count reports.
std::atomic<bool> g_armed{false};
std::atomic<long> g_count{0};     // allocations while armed
std::atomic<long> g_fail_at{0};   // the allocation to fail; 0: none
std::atomic<long> g_injected{0};  // failures injected while armed
std::atomic<long> g_live{0};      // blocks allocated and not yet freed, armed or not

void* allocate(std::size_t size, std::size_t alignment, bool nothrow) {
  if (g_armed.load()) {
    if (g_count.fetch_add(1) + 1 == g_fail_at.load()) {
      g_injected.fetch_add(1);
      if (nothrow) return nullptr;
      throw std::bad_alloc();
    }
  }
  if (size == 0) size = 1;
  void* p = nullptr;
  if (alignment <= alignof(std::max_align_t)) {
    p = std::malloc(size);
  } else {
    p = std::aligned_alloc(alignment, (size + alignment - 1) / alignment * alignment);
  }
  if (p == nullptr) {
    if (nothrow) return nullptr;
    throw std::bad_alloc();
  }
  g_live.fetch_add(1, std::memory_order_relaxed);  // relaxed: read after joins and trims
  return p;
}

void release(void* p) noexcept {
  if (p == nullptr) return;
  g_live.fetch_sub(1, std::memory_order_relaxed);
  std::free(p);
}

constexpr std::size_t kPlain = alignof(std::max_align_t);

}  // namespace

void* operator new(std::size_t n) { return allocate(n, kPlain, false); }
void* operator new[](std::size_t n) { return allocate(n, kPlain, false); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  return allocate(n, kPlain, true);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return allocate(n, kPlain, true);
}
void* operator new(std::size_t n, std::align_val_t a) {
  return allocate(n, static_cast<std::size_t>(a), false);
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return allocate(n, static_cast<std::size_t>(a), false);
}
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate(n, static_cast<std::size_t>(a), true);
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate(n, static_cast<std::size_t>(a), true);
}
void operator delete(void* p) noexcept { release(p); }
void operator delete[](void* p) noexcept { release(p); }
void operator delete(void* p, std::size_t) noexcept { release(p); }
void operator delete[](void* p, std::size_t) noexcept { release(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { release(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { release(p); }
void operator delete(void* p, std::align_val_t) noexcept { release(p); }
void operator delete[](void* p, std::align_val_t) noexcept { release(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { release(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { release(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { release(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { release(p); }

namespace quell {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

void arm(long fail_at) {
  g_fail_at.store(fail_at);
  g_count.store(0);
  g_injected.store(0);
  g_armed.store(true);
}

void disarm() { g_armed.store(false); }

// Blocks still allocated once this thread's task blocks are back in the heap.
long live_blocks() {
  detail::task_blocks_trim();
  return g_live.load(std::memory_order_relaxed);
}

// ---- callables that count themselves -----------------------------------------

struct Tally {
  std::atomic<long> made{0};
  std::atomic<long> copied{0};
  std::atomic<long> moved{0};
  std::atomic<long> destroyed{0};
  std::atomic<long> destroyed_twice{0};
  std::atomic<long> invoked{0};

  long live() const { return made + copied + moved - destroyed; }
  void reset() { made = copied = moved = destroyed = destroyed_twice = invoked = 0; }
};
Tally g_tally;

// Captured by every callable the operations take: counts its constructions
// and destructions, and notices a destructor run twice on one object.
class Probe {
 public:
  Probe() noexcept { g_tally.made.fetch_add(1); }
  Probe(const Probe&) noexcept { g_tally.copied.fetch_add(1); }
  Probe(Probe&&) noexcept { g_tally.moved.fetch_add(1); }
  Probe& operator=(const Probe&) = delete;
  ~Probe() {
    // Relaxed: a marker on this object only; an atomic, so the store to an
    // object at the end of its life is not optimised away.
    if (state_.exchange(kDead, std::memory_order_relaxed) != kAlive) {
      g_tally.destroyed_twice.fetch_add(1);
    }
    g_tally.destroyed.fetch_add(1);
  }
  void hit() const noexcept { g_tally.invoked.fetch_add(1); }

 private:
  static constexpr std::uint32_t kAlive = 0x600DCAFE;
  static constexpr std::uint32_t kDead = 0xDEADBEEF;
  std::atomic<std::uint32_t> state_{kAlive};
};

auto task_body() {
  return [probe = Probe{}] {
    probe.hit();
    return 7;
  };
}

// ---- the child's report, watchdog and terminate handler ----------------------

constexpr int kChecksFailed = 1;
constexpr int kHung = 3;

// The operation explored and the trial running, for the watchdog and the
// terminate handler, which may run on any thread.
const char* g_operation = "";
std::atomic<long> g_trial_k{-1};  // -1: not armed yet; 0: the counting pass

void print_k(char* out, std::size_t size, long k) {
  if (k <= 0) {
    std::snprintf(out, size, "%s", k == 0 ? "none" : "setup");
  } else {
    std::snprintf(out, size, "%ld", k);
  }
}

[[noreturn]] void on_terminate() {
  char k[24];
  print_k(k, sizeof k, g_trial_k.load());
  std::fprintf(stderr, "alloc_fault: TERMINATE %s k=%s: std::terminate (%s)\n", g_operation, k,
               g_armed.load() ? "allocator armed" : "allocator disarmed");
  std::fflush(stderr);
  // The cause, when it is an exception.
  try {
    if (std::exception_ptr e = std::current_exception()) std::rethrow_exception(e);
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr,
                 "alloc_fault: TERMINATE cause: std::bad_alloc escaped a noexcept function\n");
  } catch (...) {
    std::fprintf(stderr,
                 "alloc_fault: TERMINATE cause: an exception escaped a noexcept function\n");
  }
  std::abort();
}

// Ends the process when a step does not return in time. Its thread is
// started before any trial, and watch() allocates nothing, so it can be
// used while the allocator is armed.
class Watchdog {
 public:
  explicit Watchdog(std::chrono::seconds limit) : limit_(limit), thread_([this] { run(); }) {}
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  ~Watchdog() {
    {
      std::lock_guard lock(mutex_);
      quit_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }

  std::chrono::seconds limit() const { return limit_; }

  // `step` (a literal) must return within `limit`.
  void watch(const char* step, std::chrono::seconds limit) {
    {
      std::lock_guard lock(mutex_);
      step_ = step;
      step_limit_ = limit;
      deadline_ = Clock::now() + limit;
      ++generation_;
    }
    wake_.notify_one();
  }
  void watch(const char* step) { watch(step, limit_); }
  void clear() {
    std::lock_guard lock(mutex_);
    step_ = nullptr;
    ++generation_;
  }

 private:
  void run() {
    std::unique_lock lock(mutex_);
    while (!quit_) {
      if (step_ == nullptr) {
        wake_.wait(lock);
        continue;
      }
      const std::uint64_t generation = generation_;
      const Clock::time_point deadline = deadline_;
      if (wake_.wait_until(lock, deadline) == std::cv_status::timeout && !quit_ &&
          generation == generation_ && step_ != nullptr) {
        char k[24];
        print_k(k, sizeof k, g_trial_k.load());
        std::fprintf(stderr, "alloc_fault: HANG %s k=%s: %s did not return within %lld s\n",
                     g_operation, k, step_, static_cast<long long>(step_limit_.count()));
        std::fflush(stderr);
        std::_Exit(kHung);
      }
    }
  }

  const std::chrono::seconds limit_;
  std::mutex mutex_;
  std::condition_variable wake_;
  const char* step_ = nullptr;  // guarded by mutex_, as the fields below
  std::chrono::seconds step_limit_{0};
  Clock::time_point deadline_;
  std::uint64_t generation_ = 0;
  bool quit_ = false;
  std::thread thread_;
};

Watchdog* g_watchdog = nullptr;

void watch(const char* step) { g_watchdog->watch(step); }

// A hang the checks already predict is confirmed sooner.
constexpr std::chrono::seconds kConfirm{2};

std::chrono::seconds watchdog_limit() {
  if (const char* env = std::getenv("QUELL_ALLOC_FAULT_WATCHDOG")) {
    const long seconds = std::strtol(env, nullptr, 10);
    if (seconds > 0) return std::chrono::seconds(seconds);
  }
  return std::chrono::seconds(60);
}

// Failures of one operation's exploration, printed as they are found.
class Report {
 public:
  explicit Report(const char* operation) : operation_(operation) {}

  void set_k(long k) { k_ = k; }

  [[gnu::format(printf, 2, 3)]] void fail(const char* format, ...) {
    ++failures_;
    char k[24];
    print_k(k, sizeof k, k_);
    std::fprintf(stderr, "alloc_fault: FAIL %s k=%s: ", operation_, k);
    va_list args;
    va_start(args, format);
    std::vfprintf(stderr, format, args);
    va_end(args);
    std::fputc('\n', stderr);
  }

  int failures() const { return failures_; }
  long k() const { return k_; }

 private:
  const char* operation_;
  long k_ = -1;
  int failures_ = 0;
};

// ---- trials --------------------------------------------------------------------

struct Outcome {
  bool completed = false;  // the operation returned
  bool threw_bad_alloc = false;
  bool threw_other = false;
  char other[128] = {};  // what() of another exception
  long allocations = 0;  // made while armed, on every thread
  long injected = 0;     // failures injected
};

// One fresh setup and one run of an operation on it. The constructor and
// prepare() build the setup with the allocator disarmed; run() is the
// operation, armed; check() runs disarmed and watched, and so does the
// destructor.
class Trial {
 public:
  virtual ~Trial() = default;
  virtual void prepare() {}
  virtual void run() = 0;
  virtual void check(const Outcome& outcome, Report& report) = 0;
};

// An operation on a fresh pool, with the pool's checks: a throwing
// operation counted nothing and left no callable; wait_idle() returns; the
// statistics add up; each callable ran as often as the outcome says.
class PoolTrial : public Trial {
 public:
  explicit PoolTrial(std::size_t threads = 2) : pool_(std::in_place, threads) {}

  // What the harness records just before arming.
  void snapshot() {
    before_ = pool_->stats();
    live_before_ = g_tally.live();
    invoked_before_ = g_tally.invoked.load();
  }

  void check(const Outcome& outcome, Report& report) final {
    if (outcome.threw_bad_alloc) {
      const ThreadPoolStats now = pool_->stats();
      if (now.submitted != before_.submitted) {
        // A task the pool waits for that nobody holds: the waits below are
        // expected to hang, and a shorter watch confirms it.
        if (now.queued + now.running != 0) wait_limit_ = kConfirm;
        report.fail(
            "threw std::bad_alloc, but the pool counted %llu submission(s) (queued %zu, "
            "running %zu)",
            static_cast<unsigned long long>(now.submitted - before_.submitted), now.queued,
            now.running);
      }
      if (g_tally.live() > live_before_) {
        report.fail("threw std::bad_alloc, but %ld callable(s) it took are still alive",
                    g_tally.live() - live_before_);
      }
    }
    settle(outcome);
    watch_wait("wait_idle()");
    pool_->wait_idle();
    watch("the checks after wait_idle()");
    verify(outcome, report);
    const ThreadPoolStats after = pool_->stats();
    const std::uint64_t terminal =
        after.completed + after.failed + after.cancelled + after.timed_out + after.rejected;
    if (after.submitted != terminal || after.queued != 0 || after.running != 0) {
      report.fail(
          "after wait_idle(): submitted %llu, but completed+failed+cancelled+timed_out+rejected "
          "%llu, queued %zu, running %zu",
          static_cast<unsigned long long>(after.submitted),
          static_cast<unsigned long long>(terminal), after.queued, after.running);
    }
    if (tasks_ >= 0) {
      const std::uint64_t expected = outcome.completed ? static_cast<std::uint64_t>(tasks_) : 0;
      if (after.submitted - before_.submitted != expected) {
        report.fail("the operation %s, and the pool counted %llu submission(s), not %llu",
                    outcome.completed ? "completed" : "threw",
                    static_cast<unsigned long long>(after.submitted - before_.submitted),
                    static_cast<unsigned long long>(expected));
      }
    }
    if (runs_ >= 0) {
      const long expected = outcome.completed ? runs_ : 0;
      const long ran = g_tally.invoked.load() - invoked_before_;
      if (ran != expected) {
        report.fail("the operation %s, and its callable ran %ld time(s), not %ld",
                    outcome.completed ? "completed" : "threw", ran, expected);
      }
    }
  }

 protected:
  // After the checks of a throw, before wait_idle(): ends what would keep
  // the pool busy on purpose (a delayed task, a periodic task).
  virtual void settle(const Outcome&) {}
  // Watches a wait for the pool's tasks.
  void watch_wait(const char* step) { g_watchdog->watch(step, wait_limit_); }
  // After wait_idle(): the operation's own checks.
  virtual void verify(const Outcome&, Report&) {}

  // The future an operation returned is ready, and holds what it should.
  void verify_future(Future<int>& future, TaskStatus expected, Report& report) {
    if (!future.ready()) report.fail("after wait_idle(), the future is not ready");
    watch("Future::wait()");
    future.wait();
    watch("the checks after wait_idle()");
    if (future.status() != expected) {
      report.fail("the future ended %s, not %s", to_string(future.status()), to_string(expected));
      return;
    }
    try {
      const int value = future.get();
      if (expected != TaskStatus::completed || value != 7) {
        report.fail("get() returned %d", value);
      }
    } catch (const OperationCancelled&) {
      if (expected != TaskStatus::cancelled) report.fail("get() threw OperationCancelled");
    } catch (const std::exception& e) {
      report.fail("get() threw %s", e.what());
    }
  }

  // Submissions and runs of the callable an operation that completes makes;
  // -1: not checked.
  long tasks_ = 1;
  long runs_ = 1;
  // Declared before the pool, so they outlive its workers.
  std::latch gate_{1};
  CancellationSource source_;
  std::optional<ThreadPool> pool_;

 private:
  ThreadPoolStats before_;
  std::chrono::seconds wait_limit_ = g_watchdog->limit();
  long live_before_ = 0;
  long invoked_before_ = 0;
};

// submit / handle / post, with each of the options.
enum class Verb { submit, handle, post };
enum class Option { none, token, priority, timeout, deadline, token_timeout };

class TaskTrial : public PoolTrial {
 public:
  TaskTrial(Verb verb, Option option) : verb_(verb) {
    switch (option) {
      case Option::none:
        break;
      case Option::token:
        options_.set_cancellation(source_.token());
        break;
      case Option::priority:
        options_.set_priority(TaskPriority::high);
        break;
      case Option::timeout:
        options_.set_timeout(1h);
        break;
      case Option::deadline:
        options_.set_deadline(Clock::now() + 1h);
        break;
      case Option::token_timeout:
        options_.set_cancellation(source_.token());
        options_.set_timeout(1h);
        break;
    }
  }

  void run() override {
    switch (verb_) {
      case Verb::submit:
        future_.emplace(pool_->submit(task_body(), options_));
        break;
      case Verb::handle:
        handle_.emplace(pool_->handle(task_body(), options_));
        break;
      case Verb::post:
        posted_ = pool_->post(task_body(), options_);
        break;
    }
  }

 private:
  void verify(const Outcome& outcome, Report& report) override {
    if (!outcome.completed) return;
    if (future_) verify_future(*future_, TaskStatus::completed, report);
    if (handle_) verify_future(handle_->future(), TaskStatus::completed, report);
    if (verb_ == Verb::post && !posted_) report.fail("post() returned false");
  }

  const Verb verb_;
  TaskOptions options_;
  std::optional<Future<int>> future_;
  std::optional<TaskHandle<int>> handle_;
  bool posted_ = false;
};

// submit_after / submit_at with a start an hour away. Once disarmed, the
// task is resolved cancelled without waiting for its time: through the
// options' token (dropped at once), or by shutdown() (a drain shutdown
// resolves delayed tasks that are not yet due).
enum class When { after, at };
enum class Resolve { token, shutdown };

class DelayedTrial : public PoolTrial {
 public:
  DelayedTrial(When when, Resolve resolve) : when_(when), resolve_(resolve) {
    if (resolve == Resolve::token) options_.set_cancellation(source_.token());
    runs_ = 0;
  }

  void run() override {
    if (when_ == When::after) {
      future_.emplace(pool_->submit_after(1h, task_body(), options_));
    } else {
      future_.emplace(pool_->submit_at(Clock::now() + 1h, task_body(), options_));
    }
  }

 private:
  void settle(const Outcome&) override {
    if (resolve_ == Resolve::token) {
      source_.request_cancel();
      return;
    }
    watch_wait("shutdown()");
    pool_->shutdown();
  }
  void verify(const Outcome& outcome, Report& report) override {
    if (outcome.completed) verify_future(*future_, TaskStatus::cancelled, report);
  }

  const When when_;
  const Resolve resolve_;
  TaskOptions options_;
  std::optional<Future<int>> future_;
};

// submit_after / submit_at with a start 20 ms away, and the wait for
// the future, armed: the timer thread's start of the task is in the trial.
// With `warm_heap`, the timer's heap has room for the entry beforehand (three
// tombstones, left by delayed tasks cancelled before the trial), so the
// first allocation after the task's own block is the timer thread's.
class DueTrial : public PoolTrial {
 public:
  DueTrial(When when, bool warm_heap) : when_(when), warm_heap_(warm_heap) {}

  void prepare() override {
    if (!warm_heap_) return;
    const TaskOptions options = TaskOptions().set_cancellation(source_.token());
    for (int i = 0; i < 3; ++i)
      pool_->submit_after(
          1h, [] {}, options);
    source_.request_cancel();
  }

  void run() override {
    if (when_ == When::after) {
      future_.emplace(pool_->submit_after(20ms, task_body()));
    } else {
      future_.emplace(pool_->submit_at(Clock::now() + 20ms, task_body()));
    }
    future_->wait();
  }

 private:
  void verify(const Outcome& outcome, Report& report) override {
    if (outcome.completed) verify_future(*future_, TaskStatus::completed, report);
  }

  const When when_;
  const bool warm_heap_;
  std::optional<Future<int>> future_;
};

// Scope::spawn, with no options or a timeout; or a child scope made and
// spawned into.
enum class ScopeForm { spawn, spawn_timeout, child_spawn };

class ScopeTrial : public PoolTrial {
 public:
  explicit ScopeTrial(ScopeForm form) : form_(form) {
    if (form == ScopeForm::spawn_timeout) options_.set_timeout(1h);
  }

  void prepare() override { scope_.emplace(*pool_); }

  void run() override {
    if (form_ == ScopeForm::child_spawn) {
      child_.emplace(*scope_);
      spawned_ = child_->spawn(task_body(), options_);
    } else {
      spawned_ = scope_->spawn(task_body(), options_);
    }
  }

 private:
  void verify(const Outcome& outcome, Report& report) override {
    if (outcome.completed && !spawned_) report.fail("spawn() returned false");
    for (std::optional<Scope>* scope : {&child_, &scope_}) {
      if (!scope->has_value()) continue;
      watch("Scope::wait()");
      try {
        (*scope)->wait();
      } catch (const std::exception& e) {
        report.fail("Scope::wait() threw %s", e.what());
      }
      watch("the checks after wait_idle()");
      if ((*scope)->size() != 0) report.fail("the scope has %zu task(s) left", (*scope)->size());
    }
  }

  const ScopeForm form_;
  TaskOptions options_;
  std::optional<Scope> scope_;
  std::optional<Scope> child_;  // destroyed before its parent
  bool spawned_ = false;
};

// TaskGroup::submit, with no options or a timeout. A submission that threw
// is counted nowhere, TaskGroup::size() included.
class GroupTrial : public PoolTrial {
 public:
  explicit GroupTrial(bool timeout) {
    if (timeout) options_.set_timeout(1h);
  }

  void prepare() override { group_.emplace(*pool_); }

  void run() override { future_.emplace(group_->submit(task_body(), options_)); }

 private:
  void verify(const Outcome& outcome, Report& report) override {
    watch("TaskGroup::wait()");
    group_->wait();
    watch("the checks after wait_idle()");
    if (group_->pending() != 0) report.fail("the group has %zu task(s) pending", group_->pending());
    const std::size_t expected = outcome.completed ? 1 : 0;
    if (group_->size() != expected) {
      report.fail("the submission %s, and TaskGroup::size() is %zu, not %zu",
                  outcome.completed ? "completed" : "threw", group_->size(), expected);
    }
    if (outcome.completed) verify_future(*future_, TaskStatus::completed, report);
  }

  TaskOptions options_;
  std::optional<TaskGroup> group_;
  std::optional<Future<int>> future_;
};

// A periodic task's callable: counts its ticks, for the trial to wait on.
struct TickBody {
  void operator()() const {
    probe.hit();
    ticks->fetch_add(1);
    ticks->notify_all();
  }
  Probe probe;
  std::atomic<int>* ticks;
};

// A PeriodicTask made armed, its first tick an hour away (with or without
// a token in its options). Or one made disarmed, with a short interval, and
// armed for three ticks: its first three, or three after a first one ran
// disarmed. §12: a periodic task allocates only in its constructor, so its
// ticks cannot fail for lack of memory.
enum class PeriodicForm { construct, construct_token, first_ticks, later_ticks };
constexpr int kTicks = 3;

class PeriodicTrial : public PoolTrial {
 public:
  explicit PeriodicTrial(PeriodicForm form) : form_(form) {
    if (form == PeriodicForm::construct_token) options_.set_cancellation(source_.token());
    tasks_ = ticking() ? -1 : 0;
    runs_ = ticking() ? -1 : 0;
  }

  void prepare() override {
    if (!ticking()) return;
    periodic_.emplace(*pool_, 10ms, TickBody{Probe{}, &ticks_}, options_);
    if (form_ == PeriodicForm::later_ticks) wait_ticks(1);
  }

  void run() override {
    if (ticking()) {
      wait_ticks(ticks_.load() + kTicks);
    } else {
      periodic_.emplace(*pool_, 1h, TickBody{Probe{}, &ticks_}, options_);
    }
  }

 private:
  bool ticking() const {
    return form_ == PeriodicForm::first_ticks || form_ == PeriodicForm::later_ticks;
  }
  void wait_ticks(int count) {
    for (int seen = ticks_.load(); seen < count; seen = ticks_.load()) ticks_.wait(seen);
  }

  void settle(const Outcome&) override {
    if (!periodic_) return;
    periodic_->stop();
    watch("PeriodicTask::join()");
    periodic_->join();
  }

  void verify(const Outcome& outcome, Report& report) override {
    if (!ticking()) return;
    if (outcome.injected != 0) {
      report.fail(
          "the failure injected on the timer thread was swallowed: a tick lost to it "
          "(ticks %llu, skipped %llu)",
          static_cast<unsigned long long>(periodic_->ticks()),
          static_cast<unsigned long long>(periodic_->skipped_ticks()));
    } else if (outcome.allocations != 0 && report.k() >= 0) {
      report.fail("%ld allocation(s) during %d ticks (API.md §12: none)", outcome.allocations,
                  kTicks);
    }
  }

  const PeriodicForm form_;
  TaskOptions options_;
  std::atomic<int> ticks_{0};
  std::optional<PeriodicTask> periodic_;  // destroyed before ticks_ and the pool
};

// this_task inside a running task, armed while the task makes the calls.
class ThisTaskTrial : public PoolTrial {
 public:
  ThisTaskTrial() {
    tasks_ = 0;
    runs_ = -1;
  }

  void prepare() override {
    future_.emplace(pool_->submit([this, probe = Probe{}] {
      probe.hit();
      gate_.wait();
      const CancellationToken token = this_task::cancellation_token();
      can_cancel_ = token.can_cancel();
      cancelled_ = this_task::cancelled();
      done_.count_down();
      return 7;
    }));
  }

  void run() override {
    gate_.count_down();
    done_.wait();
  }

 private:
  void verify(const Outcome& outcome, Report& report) override {
    verify_future(*future_, TaskStatus::completed, report);
    if (outcome.completed && (!can_cancel_ || cancelled_)) {
      report.fail("this_task: can_cancel() %d, cancelled() %d", can_cancel_, cancelled_);
    }
  }

  std::latch done_{1};
  bool can_cancel_ = false;
  bool cancelled_ = true;
  std::optional<Future<int>> future_;
};

// A submission from a worker whose deque is full, so that it must grow: the
// task is accepted before it is queued, so a deque that cannot grow must not
// lose it (it goes to the pool's intrusive injection queue instead). One
// worker, so no thief empties the deque; the fillers run after the trial.
class WorkerSubmitTrial : public PoolTrial {
 public:
  static constexpr int kFill = 256;  // the deque's first capacity

  WorkerSubmitTrial() : PoolTrial(1) { runs_ = -1; }

  void prepare() override {
    parent_.emplace(pool_->submit([this] {
      for (int i = 0; i < kFill; ++i) fillers_.push_back(pool_->submit([] {}));
      filled_.count_down();
      gate_.wait();
      try {
        future_.emplace(pool_->submit(task_body()));
      } catch (const std::bad_alloc&) {
        threw_ = true;
      }
      done_.count_down();
    }));
    filled_.wait();
  }

  void run() override {
    gate_.count_down();
    done_.wait();
    if (threw_) throw std::bad_alloc();
  }

 private:
  void verify(const Outcome& outcome, Report& report) override {
    if (outcome.completed) verify_future(*future_, TaskStatus::completed, report);
  }

  std::latch filled_{1};
  std::latch done_{1};
  bool threw_ = false;
  std::vector<Future<void>> fillers_;
  std::optional<Future<void>> parent_;
  std::optional<Future<int>> future_;
};

// Future's waits and get() on a task held back until the trial, armed.
class FutureWaitTrial : public PoolTrial {
 public:
  FutureWaitTrial() : PoolTrial(1) {
    tasks_ = 0;
    runs_ = -1;
  }

  void prepare() override {
    blocker_.emplace(pool_->submit([this] { gate_.wait(); }));
    future_.emplace(pool_->submit(task_body()));
  }

  void run() override {
    gate_.count_down();
    future_->wait();
    ok_ = future_->wait_for(1h);
    ok_ = future_->wait_until(Clock::now() + 1h) && ok_;
    ok_ = future_->wait_until(std::chrono::system_clock::now() + 1h) && ok_;
    ok_ = future_->wait(source_.token()) && ok_;
    value_ = future_->get();
  }

 private:
  void verify(const Outcome& outcome, Report& report) override {
    if (outcome.completed && (!ok_ || value_ != 7)) {
      report.fail("the waits returned %d and get() %d", ok_, value_);
    }
  }

  std::optional<Future<void>> blocker_;
  std::optional<Future<int>> future_;
  bool ok_ = false;
  int value_ = 0;
};

// TaskHandle: cancel() of a queued task (dropped at once), then its waits.
class HandleCancelTrial : public PoolTrial {
 public:
  HandleCancelTrial() : PoolTrial(1) {
    tasks_ = 0;
    runs_ = -1;
  }

  void prepare() override {
    blocker_.emplace(pool_->submit([this] { gate_.wait(); }));
    handle_.emplace(pool_->handle(task_body()));
  }

  void run() override {
    cancelled_ = handle_->cancel();
    gate_.count_down();
    handle_->wait();
    ok_ = handle_->wait_for(1h);
    try {
      handle_->get();
    } catch (const OperationCancelled&) {
      got_cancelled_ = true;
    }
  }

 private:
  void verify(const Outcome& outcome, Report& report) override {
    if (g_tally.invoked.load() != 0) report.fail("the cancelled task ran");
    if (outcome.threw_bad_alloc) {
      // Making the OperationCancelled allocates. A get() that threw
      // std::bad_alloc instead had no effect: the outcome is still there.
      try {
        handle_->get();
        report.fail("get() after a throwing get() returned");
      } catch (const OperationCancelled&) {
      } catch (const TaskError& e) {
        report.fail("get() threw std::bad_alloc and consumed the outcome: the next get() throws %s",
                    e.what());
      } catch (const std::bad_alloc&) {
        report.fail("get() threw std::bad_alloc disarmed");
      }
    }
    if (outcome.completed && (!cancelled_ || !ok_ || !got_cancelled_)) {
      report.fail("cancel() %d, wait_for() %d, get() threw OperationCancelled %d", cancelled_, ok_,
                  got_cancelled_);
    }
  }

  std::optional<Future<void>> blocker_;
  std::optional<TaskHandle<int>> handle_;
  bool cancelled_ = false;
  bool ok_ = false;
  bool got_cancelled_ = false;
};

// ---- trials without a pool -----------------------------------------------------

class PlainTrial : public Trial {
 public:
  void check(const Outcome& outcome, Report& report) final {
    watch("the checks");
    verify(outcome, report);
  }

 protected:
  virtual void verify(const Outcome& outcome, Report& report) = 0;
};

// CancellationSource::linked with three parents (one of them cancelled
// already, for the second form); the parents are cancelled afterwards, so a
// link the failure left registered would fire into freed memory.
class LinkedTrial : public PlainTrial {
 public:
  explicit LinkedTrial(bool one_cancelled) : one_cancelled_(one_cancelled) {}

  void prepare() override {
    if (one_cancelled_) b_.request_cancel(CancelReason::shutdown);
  }

  void run() override {
    linked_.emplace(CancellationSource::linked({a_.token(), b_.token(), c_.token()}));
  }

 private:
  void verify(const Outcome& outcome, Report& report) override {
    if (!outcome.completed) {
      a_.request_cancel();
      c_.request_cancel();
      return;
    }
    const CancellationToken token = linked_->token();
    if (one_cancelled_) {
      if (token.reason() != CancelReason::shutdown)
        report.fail("the linked source is not cancelled");
      return;
    }
    if (token.cancelled()) report.fail("the linked source is cancelled before its parents");
    c_.request_cancel(CancelReason::deadline);
    if (token.reason() != CancelReason::deadline) {
      report.fail("cancelling a parent did not cancel the linked source with its reason");
    }
  }

  const bool one_cancelled_;
  CancellationSource a_;
  CancellationSource b_;
  CancellationSource c_;
  std::optional<CancellationSource> linked_;
};

// A fresh CancellationSource, and reset() of one.
class SourceTrial : public PlainTrial {
 public:
  void run() override {
    fresh_.emplace();
    kept_ = reset_.token();
    reset_.reset();
  }

 private:
  void verify(const Outcome& outcome, Report& report) override {
    if (!outcome.completed) {
      // reset() either gave a fresh state or left the old one.
      if (reset_.request_cancel() != true) report.fail("reset_ has no usable state");
      return;
    }
    reset_.request_cancel();
    if (kept_.cancelled()) report.fail("reset() did not leave the old state to the old tokens");
    if (!fresh_->token().can_cancel()) report.fail("the fresh source cannot cancel");
  }

  CancellationSource reset_;
  CancellationToken kept_;
  std::optional<CancellationSource> fresh_;
};

struct CallbackBody {
  void operator()() const { probe.hit(); }
  Probe probe;
};

// CancellationCallback on a live token and on a cancelled one (run inline).
class CallbackTrial : public PlainTrial {
 public:
  void prepare() override { cancelled_.request_cancel(); }

  void run() override {
    live_.emplace(source_.token(), CallbackBody{});
    inline_.emplace(cancelled_.token(), CallbackBody{});
  }

 private:
  void verify(const Outcome& outcome, Report& report) override {
    source_.request_cancel();
    if (outcome.completed && g_tally.invoked.load() != 2) {
      report.fail("the callbacks ran %ld time(s), not 2", g_tally.invoked.load());
    }
  }

  CancellationSource source_;
  CancellationSource cancelled_;
  std::optional<CancellationCallback<CallbackBody>> live_;
  std::optional<CancellationCallback<CallbackBody>> inline_;
};

// sleep_for / sleep_until: elapsed, already past, already cancelled.
class SleepTrial : public PlainTrial {
 public:
  void prepare() override { cancelled_.request_cancel(); }

  void run() override {
    elapsed_ = sleep_for(1ms, source_.token());
    past_ = sleep_until(Clock::now() - 1s, source_.token());
    cut_ = sleep_for(1h, cancelled_.token());
  }

 private:
  void verify(const Outcome& outcome, Report& report) override {
    if (outcome.completed && (!elapsed_ || !past_ || cut_)) {
      report.fail("sleep_for %d, sleep_until(past) %d, sleep_for(cancelled) %d", elapsed_, past_,
                  cut_);
    }
    source_.request_cancel();
  }

  CancellationSource source_;
  CancellationSource cancelled_;
  bool elapsed_ = false;
  bool past_ = false;
  bool cut_ = true;
};

// quell::wait(cv, lock, token, pred): its bridge to the stop_token overload
// allocates. The lock is held on return, and on a throw.
class CvWaitTrial : public PlainTrial {
 public:
  void run() override {
    std::unique_lock lock(mutex_);
    try {
      result_ = quell::wait(cv_, lock, source_.token(), [this] { return ready_; });
    } catch (...) {
      locked_on_throw_ = lock.owns_lock();
      throw;
    }
  }

 private:
  void verify(const Outcome& outcome, Report& report) override {
    if (outcome.threw_bad_alloc && !locked_on_throw_)
      report.fail("the lock was not held on the throw");
    if (outcome.completed && !result_) report.fail("wait() returned false");
    source_.request_cancel();
  }

  std::mutex mutex_;
  std::condition_variable_any cv_;
  CancellationSource source_;
  bool ready_ = true;
  bool result_ = false;
  bool locked_on_throw_ = false;
};

// ---- exploring an operation ------------------------------------------------------

struct Operation {
  const char* id;    // the test's name
  const char* name;  // the report's
  std::unique_ptr<Trial> (*make)();
};

template <class T, auto... args>
std::unique_ptr<Trial> make() {
  return std::make_unique<T>(args...);
}

// One trial, the k-th allocation failing (none for k == 0).
Outcome run_trial(const Operation& op, long k, Report& report) {
  report.set_k(k);
  g_trial_k.store(k);
  g_tally.reset();
  const long live_before = live_blocks();
  Outcome outcome;
  {
    watch("the setup");
    std::unique_ptr<Trial> trial = op.make();
    trial->prepare();
    auto* pool_trial = dynamic_cast<PoolTrial*>(trial.get());
    if (pool_trial != nullptr) pool_trial->snapshot();
    const long live_before_run = g_tally.live();
    detail::task_blocks_trim();  // this thread's next task block comes from operator new
    watch("the operation");
    arm(k);
    try {
      trial->run();
      outcome.completed = true;
    } catch (const std::bad_alloc&) {
      outcome.threw_bad_alloc = true;
    } catch (const std::exception& e) {
      outcome.threw_other = true;
      std::snprintf(outcome.other, sizeof outcome.other, "%s", e.what());
    } catch (...) {
      outcome.threw_other = true;
      std::snprintf(outcome.other, sizeof outcome.other, "an exception of unknown type");
    }
    disarm();
    outcome.allocations = g_count.load();
    outcome.injected = g_injected.load();
    watch("the checks");
    if (outcome.threw_other)
      report.fail("threw something other than std::bad_alloc: %s", outcome.other);
    if (outcome.threw_bad_alloc && outcome.injected == 0) {
      report.fail("threw std::bad_alloc with no failure injected");
    }
    if (pool_trial == nullptr && outcome.threw_bad_alloc && g_tally.live() > live_before_run) {
      report.fail("threw std::bad_alloc, but %ld callable(s) it took are still alive",
                  g_tally.live() - live_before_run);
    }
    trial->check(outcome, report);
    watch("the destructors (pool, scope, group, periodic task, futures)");
  }
  watch("the checks after the destructors");
  if (g_tally.live() != 0) {
    report.fail("%ld callable(s) never destroyed (made %ld, copied %ld, moved %ld, destroyed %ld)",
                g_tally.live(), g_tally.made.load(), g_tally.copied.load(), g_tally.moved.load(),
                g_tally.destroyed.load());
  }
  if (g_tally.destroyed_twice.load() != 0) {
    report.fail("%ld callable(s) destroyed twice", g_tally.destroyed_twice.load());
  }
  if (k >= 0) {
    const long leaked = live_blocks() - live_before;
    if (leaked != 0) report.fail("%ld block(s) allocated during the trial not freed", leaked);
  }
  g_watchdog->clear();
  return outcome;
}

constexpr long kMaxPoints = 200;

// In the child: the counting pass, then each failure point. The exit status.
int explore(const Operation& op) {
  g_operation = op.name;
  std::set_terminate(on_terminate);
  Watchdog watchdog(watchdog_limit());
  g_watchdog = &watchdog;
  Report report(op.name);
  // Warm-up: what the library and the runtime make once per thread or per
  // process (block caches, thread-locals) is in place before any count.
  run_trial(op, -1, report);
  const Outcome counted = run_trial(op, 0, report);
  std::fprintf(stderr, "alloc_fault: points %s %ld\n", op.name, counted.allocations);
  long points = counted.allocations;
  for (long k = 1;; ++k) {
    if (k > kMaxPoints) {
      report.fail("still failing at k=%ld: the allocation count does not settle", k);
      break;
    }
    const Outcome outcome = run_trial(op, k, report);
    if (outcome.injected == 0) {
      if (outcome.allocations != k - 1 || outcome.allocations != counted.allocations) {
        std::fprintf(stderr,
                     "alloc_fault: note %s: %ld allocations when nothing failed, %ld in the last "
                     "trial, which ended at k=%ld\n",
                     op.name, counted.allocations, outcome.allocations, k);
      }
      points = outcome.allocations;
      break;
    }
  }
  g_trial_k.store(-1);
  std::fprintf(stderr, "alloc_fault: done %s %ld %d\n", op.name, points, report.failures());
  g_watchdog = nullptr;
  return report.failures() == 0 ? 0 : kChecksFailed;
}

const Operation kOperations[] = {
    {"submit", "submit()", make<TaskTrial, Verb::submit, Option::none>},
    {"submit_token", "submit(token)", make<TaskTrial, Verb::submit, Option::token>},
    {"submit_priority", "submit(priority)", make<TaskTrial, Verb::submit, Option::priority>},
    {"submit_timeout", "submit(timeout)", make<TaskTrial, Verb::submit, Option::timeout>},
    {"submit_deadline", "submit(deadline)", make<TaskTrial, Verb::submit, Option::deadline>},
    {"submit_token_timeout", "submit(token+timeout)",
     make<TaskTrial, Verb::submit, Option::token_timeout>},
    {"handle", "handle()", make<TaskTrial, Verb::handle, Option::none>},
    {"handle_token", "handle(token)", make<TaskTrial, Verb::handle, Option::token>},
    {"handle_priority", "handle(priority)", make<TaskTrial, Verb::handle, Option::priority>},
    {"handle_timeout", "handle(timeout)", make<TaskTrial, Verb::handle, Option::timeout>},
    {"handle_deadline", "handle(deadline)", make<TaskTrial, Verb::handle, Option::deadline>},
    {"handle_token_timeout", "handle(token+timeout)",
     make<TaskTrial, Verb::handle, Option::token_timeout>},
    {"post", "post()", make<TaskTrial, Verb::post, Option::none>},
    {"post_token", "post(token)", make<TaskTrial, Verb::post, Option::token>},
    {"post_priority", "post(priority)", make<TaskTrial, Verb::post, Option::priority>},
    {"post_timeout", "post(timeout)", make<TaskTrial, Verb::post, Option::timeout>},
    {"post_deadline", "post(deadline)", make<TaskTrial, Verb::post, Option::deadline>},
    {"post_token_timeout", "post(token+timeout)",
     make<TaskTrial, Verb::post, Option::token_timeout>},
    {"submit_after_token", "submit_after(1 h, token)",
     make<DelayedTrial, When::after, Resolve::token>},
    {"submit_after_shutdown", "submit_after(1 h), shutdown",
     make<DelayedTrial, When::after, Resolve::shutdown>},
    {"submit_at_token", "submit_at(+1 h, token)", make<DelayedTrial, When::at, Resolve::token>},
    {"submit_at_shutdown", "submit_at(+1 h), shutdown",
     make<DelayedTrial, When::at, Resolve::shutdown>},
    {"submit_after_due", "submit_after(20 ms), due armed", make<DueTrial, When::after, false>},
    {"submit_at_due", "submit_at(+20 ms), due armed", make<DueTrial, When::at, false>},
    {"submit_after_due_warm_heap", "submit_after(20 ms), due, warm heap",
     make<DueTrial, When::after, true>},
    {"scope_spawn", "Scope::spawn()", make<ScopeTrial, ScopeForm::spawn>},
    {"scope_spawn_timeout", "Scope::spawn(timeout)", make<ScopeTrial, ScopeForm::spawn_timeout>},
    {"scope_child_spawn", "Scope child(parent) + spawn()",
     make<ScopeTrial, ScopeForm::child_spawn>},
    {"group_submit", "TaskGroup::submit()", make<GroupTrial, false>},
    {"group_submit_timeout", "TaskGroup::submit(timeout)", make<GroupTrial, true>},
    {"worker_submit_grow", "submit() on a worker, deque full",
     make<WorkerSubmitTrial>},
    {"periodic_construct", "PeriodicTask()", make<PeriodicTrial, PeriodicForm::construct>},
    {"periodic_construct_token", "PeriodicTask(token)",
     make<PeriodicTrial, PeriodicForm::construct_token>},
    {"periodic_first_ticks", "PeriodicTask: ticks 1-3",
     make<PeriodicTrial, PeriodicForm::first_ticks>},
    {"periodic_later_ticks", "PeriodicTask: ticks 2-4",
     make<PeriodicTrial, PeriodicForm::later_ticks>},
    {"linked", "CancellationSource::linked(3)", make<LinkedTrial, false>},
    {"linked_one_cancelled", "linked(3), one cancelled", make<LinkedTrial, true>},
    {"source", "CancellationSource(), reset()", make<SourceTrial>},
    {"callback", "CancellationCallback", make<CallbackTrial>},
    {"this_task", "this_task::cancellation_token()", make<ThisTaskTrial>},
    {"sleep", "sleep_for / sleep_until", make<SleepTrial>},
    {"cv_wait", "wait(cv, lock, token, pred)", make<CvWaitTrial>},
    {"future_waits", "Future waits + get()", make<FutureWaitTrial>},
    {"handle_cancel", "TaskHandle cancel + waits", make<HandleCancelTrial>},
};

// ---- the parent: one death test per operation, and the table ------------------

struct Row {
  std::string name;
  std::string points;  // "?" if the child never reported them
  std::string result;
  bool ok = false;
};

std::vector<Row>& rows() {
  static std::vector<Row> table;
  return table;
}

// Hands the child's output to the test, whatever it is.
class CaptureOutput : public ::testing::MatcherInterface<const std::string&> {
 public:
  explicit CaptureOutput(std::string* out) : out_(out) {}
  bool MatchAndExplain(const std::string& output, ::testing::MatchResultListener*) const override {
    *out_ = output;
    return true;
  }
  void DescribeTo(std::ostream* os) const override { *os << "any output"; }

 private:
  std::string* out_;
};

// The value after `key` on the first line that starts with it, up to the
// end of the line.
std::string after(const std::string& output, const std::string& key) {
  const std::size_t at = output.find(key);
  if (at == std::string::npos) return {};
  const std::size_t from = at + key.size();
  return output.substr(from, output.find('\n', from) - from);
}

// The k of the first line of `kind` the child printed ("" if none).
std::string first_k(const std::string& output, const std::string& kind) {
  const std::size_t line = output.find("alloc_fault: " + kind + " ");
  if (line == std::string::npos) return {};
  const std::size_t k = output.find(" k=", line);
  if (k == std::string::npos) return {};
  return output.substr(k + 3, output.find(':', k) - k - 3);
}

Row summarise(const Operation& op, int status, const std::string& output) {
  Row row;
  row.name = op.name;
  const std::string points = after(output, std::string("alloc_fault: points ") + op.name + " ");
  row.points = points.empty() ? "?" : points;
  const std::string done = after(output, std::string("alloc_fault: done ") + op.name + " ");
  if (!done.empty()) row.points = done.substr(0, done.find(' '));
  const bool sanitizer = output.find("Sanitizer") != std::string::npos ||
                         output.find("runtime error:") != std::string::npos;
  const std::string failed = first_k(output, "FAIL");
  const std::string checks = failed.empty() ? "" : "checks fail from k=" + failed;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && !sanitizer) {
    row.ok = true;
    row.result = "ok";
    return row;
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == kHung) {
    row.result = "HANG at k=" + first_k(output, "HANG");
  } else if (output.find("alloc_fault: TERMINATE") != std::string::npos) {
    row.result = "TERMINATE at k=" + first_k(output, "TERMINATE");
  } else if (WIFSIGNALED(status)) {
    row.result = "died of signal " + std::to_string(WTERMSIG(status));
  } else if (sanitizer) {
    row.result = "sanitizer report (exit " + std::to_string(WEXITSTATUS(status)) + ")";
  }
  if (!checks.empty()) row.result += row.result.empty() ? checks : "; " + checks;
  if (row.result.empty()) row.result = "FAIL (exit " + std::to_string(WEXITSTATUS(status)) + ")";
  return row;
}

void PrintTo(const Operation& op, std::ostream* os) { *os << op.name; }

class AllocationFailure : public ::testing::TestWithParam<Operation> {};

// The replacement functions are called directly: a new-expression whose
// result is unused may be elided or merged by the compiler.
TEST(AllocationFailureInjection, FailsTheArmedAllocationOnlyInEveryForm) {
  arm(1);
  EXPECT_THROW(::operator delete(::operator new(4)), std::bad_alloc);
  disarm();
  arm(1);
  EXPECT_EQ(::operator new[](16, std::nothrow), nullptr);
  disarm();
  arm(2);
  void* first = ::operator new (64, std::align_val_t{64});
  EXPECT_THROW(::operator delete(::operator new[](64, std::align_val_t{64})), std::bad_alloc);
  void* third = ::operator new (64, std::align_val_t{64}, std::nothrow);
  disarm();
  EXPECT_EQ(g_count.load(), 3);
  EXPECT_EQ(g_injected.load(), 1);
  ASSERT_NE(third, nullptr);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(first) % 64, 0u);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(third) % 64, 0u);
  ::operator delete (first, std::align_val_t{64});
  ::operator delete (third, std::align_val_t{64}, std::nothrow);
  const long live = g_live.load();
  arm(0);
  ::operator delete[](::operator new[](8, std::align_val_t{128}, std::nothrow),
                      std::align_val_t{128});
  disarm();
  EXPECT_EQ(g_count.load(), 1);
  EXPECT_EQ(g_injected.load(), 0);
  EXPECT_EQ(g_live.load(), live);
}

TEST_P(AllocationFailure, TakesFullEffectOrNoneAndNothingHangsOrLeaks) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const Operation& op = GetParam();
  int status = 0;
  std::string output;
  const auto record = [&status](int exit_status) {
    status = exit_status;
    return true;
  };
  EXPECT_EXIT(std::exit(explore(op)), record, ::testing::MakeMatcher(new CaptureOutput(&output)));
  const Row row = summarise(op, status, output);
  rows().push_back(row);
  if (!row.ok) ADD_FAILURE() << op.name << ": " << row.result << "\n" << output;
}

INSTANTIATE_TEST_SUITE_P(EveryOperation, AllocationFailure, ::testing::ValuesIn(kOperations),
                         [](const auto& info) { return std::string(info.param.id); });

// Prints the table once every test ran.
class Table : public ::testing::Environment {
 public:
  void TearDown() override {
    if (rows().empty()) return;
    long total = 0;
    std::size_t failing = 0;
    std::printf("alloc_fault: %-36s %14s  %s\n", "operation", "failure points", "result");
    for (const Row& row : rows()) {
      std::printf("alloc_fault: %-36s %14s  %s\n", row.name.c_str(), row.points.c_str(),
                  row.result.c_str());
      if (row.points != "?") total += std::strtol(row.points.c_str(), nullptr, 10);
      if (!row.ok) ++failing;
    }
    std::printf(
        "alloc_fault: total: %zu operations, %ld (operation, failure point) trials, %zu failing\n",
        rows().size(), total, failing);
    std::fflush(stdout);
  }
};

const auto* const kTable = ::testing::AddGlobalTestEnvironment(new Table);

}  // namespace
}  // namespace quell
