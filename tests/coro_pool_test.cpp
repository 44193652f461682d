// Coroutines on a pool (API.md §10.3, §10.5, §10.6, §10.7, §10.8):
//   R9/R10  homes: a root resumes on its pool; schedule(p) moves it there and
//           makes p its home; on(p, aw) runs aw on p and comes back home; on()
//           onto the current home adds no hop; a child that moved with
//           schedule(other) hands control back to a parent resuming at home.
//   R11     schedule() onto a shut-down pool throws rejected before suspending.
//   R13     after a foreign awaitable resumed it elsewhere, yield() goes home.
//   yield() fairness on one worker.
//   R27     submit/handle/post of a Task: value, id, priority, deadline (queued
//           and suspended), rejection, handle.cancel() (queued and suspended),
//           status, stats().suspended, wait_idle().
//   R28     callables returning a Task (submit, Scope::spawn, TaskGroup::submit,
//           f(CancellationToken)); the callable lives until the task ends.
//   R29     a root's frame is destroyed before its future is ready.
//   R30/R31 co_await of a Future (lvalue, rvalue; every outcome) and of a
//           TaskHandle (owning).
//   R32     sleep_for / sleep_until.
//   R33/R34 Scope::spawn(Task) and join(); TaskGroup::submit(Task), join() and
//           join_and_rethrow().
//   R36     PeriodicTask with a Task<void> tick.
//   R40     shutdown: drain waits for suspended roots, cancel cancels them.
//   R46     from a foreign coroutine: Future, schedule(), on() (also with a
//           std::stop_token), and quell::Task not awaitable there.
//   §10.8   a root's token is its handle's; a future whose pool goes away still
//           ends; a deadline firing while suspended ends the root timed_out.
#include "quell/coro.hpp"

#include <gtest/gtest.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "pool_test_support.hpp"
#include "quell/cancellation.hpp"
#include "quell/error.hpp"
#include "quell/future.hpp"
#include "quell/periodic_task.hpp"
#include "quell/scope.hpp"
#include "quell/task_group.hpp"
#include "quell/task_handle.hpp"
#include "quell/thread_pool.hpp"

namespace quell {
namespace {

using namespace std::chrono_literals;
using test::DestructionProbe;
using test::Gate;
using test::OpenOnExit;
using Clock = std::chrono::steady_clock;

// ---- helpers ---------------------------------------------------------------

// The name of the pool whose worker the calling thread is, set by the start
// hook of config(); empty on any other thread. (Not the OS thread name: a
// build without thread names has none.)
thread_local std::string t_pool_name;

ThreadPoolConfig config(std::size_t workers, const char* name,
                        ShutdownPolicy policy = ShutdownPolicy::drain) {
  ThreadPoolConfig c;
  c.thread_count = workers;
  c.thread_name = name;
  c.shutdown_policy = policy;
  c.on_thread_start = [pool_name = std::string(name)](std::size_t) { t_pool_name = pool_name; };
  return c;
}

// Whether the calling thread is a worker of the pool named `pool_name`.
bool on_pool(std::string_view pool_name) { return t_pool_name == pool_name; }

// Yields until `done()` holds; false if the guard passed first.
template <class Pred>
bool eventually(Pred done) {
  return test::spin_until_true(std::move(done));
}

// Runs `action` on another thread and aborts the binary if it has not
// returned within the guard: a deadlock would otherwise hang every later test.
void finishes_or_abort(const std::function<void()>& action, const char* what) {
  test::GuardedRun run(action);
  if (!run.finished_within(test::kGuard)) {
    std::fprintf(stderr, "%s did not finish within the guard: a deadlock\n", what);
    std::abort();
  }
}

template <class F>
std::error_code error_of(F&& f) {
  try {
    f();
  } catch (const TaskError& e) {
    return e.code();
  }
  return {};
}

// A foreign awaitable (R4e) that resumes the coroutine on a new std::thread,
// stored in *slot (joined by the test). The thread starts resuming only after
// the slot is written, so the test's join is ordered after the write.
struct ResumeOnNewThread {
  std::thread* slot;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    auto go = std::make_shared<std::latch>(1);
    *slot = std::thread([h, go] {
      // A new thread inherits its creator's name (a worker's): rename it.
      pthread_setname_np(pthread_self(), "foreign");
      go->wait();
      h.resume();
    });
    go->count_down();
  }
  void await_resume() const noexcept {}
};

// The one-shot event of docs/coroutines.md: a user stoppable awaitable that
// honours cancellation through post_resume().
class Event {
 public:
  void set() noexcept {
    void* old = state_.exchange(kSet, std::memory_order_acq_rel);
    if (old != nullptr && old != kSet) static_cast<Waiter*>(old)->take(false);
  }
  auto wait() noexcept { return Waiter(*this); }

 private:
  static inline int set_tag;
  static constexpr void* kSet = &set_tag;

  class Waiter {
   public:
    explicit Waiter(Event& e) noexcept : event_(&e) {}
    bool await_ready() const noexcept {
      return event_->state_.load(std::memory_order_acquire) == kSet;
    }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h, const CancellationToken& token) {
      frame_ = h.address();
      post_ = [](void* f) noexcept { post_resume(std::coroutine_handle<P>::from_address(f)); };
      void* none = nullptr;
      if (!event_->state_.compare_exchange_strong(none, this, std::memory_order_acq_rel)) {
        return false;
      }
      callback_.emplace(token, Cancel{this});
      return (bits_.fetch_or(kSuspended, std::memory_order_acq_rel) & kTaken) == 0;
    }
    void await_resume() {
      callback_.reset();
      if (cancelled_) throw OperationCancelled();
    }
    void take(bool cancelled) noexcept {
      cancelled_ = cancelled;
      if (bits_.fetch_or(kTaken, std::memory_order_acq_rel) & kSuspended) post_(frame_);
    }

   private:
    struct Cancel {
      Waiter* w;
      void operator()() noexcept {
        void* me = w;
        if (w->event_->state_.compare_exchange_strong(me, nullptr, std::memory_order_acq_rel)) {
          w->take(true);
        }
      }
    };
    static constexpr unsigned kTaken = 1, kSuspended = 2;
    Event* event_;
    void* frame_ = nullptr;
    void (*post_)(void*) noexcept = nullptr;
    std::atomic<unsigned> bits_{0};
    bool cancelled_ = false;
    std::optional<CancellationCallback<Cancel>> callback_;
  };

  std::atomic<void*> state_{nullptr};
};

// Sets *flag (a plain bool: TSan checks the ordering) when destroyed.
struct SetOnDestroy {
  bool* flag;
  ~SetOnDestroy() { *flag = true; }
};

// Records, when destroyed, whether it was destroyed on a worker of `pool`.
struct WhereDestroyed {
  const char* pool;
  std::atomic<int>* on_worker;  // 1: a worker of pool, 2: elsewhere
  ~WhereDestroyed() { on_worker->store(on_pool(pool) ? 1 : 2); }
};

Task<int> value_task(int v) { co_return v; }

Task<void> probe_task([[maybe_unused]] DestructionProbe probe, std::atomic<bool>* ran) {
  ran->store(true);
  co_return;
}

// Counts `parked` down just before it sleeps for an hour.
Task<void> park_for_an_hour(std::latch* parked) {
  parked->count_down();
  co_await sleep_for(1h);
}

// ---- a foreign coroutine type (R46) ------------------------------------------

// Eager, fire and forget: runs at once, frees itself at its end.
struct Fire {
  struct promise_type {
    Fire get_return_object() noexcept { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::terminate(); }
  };
};

// Awaitable the plain way (no await_transform): through a member or free
// operator co_await, or as an awaiter itself.
template <class A>
concept ForeignAwaitable =
    requires(A&& a) {
      std::forward<A>(a).operator co_await().await_ready();
      std::forward<A>(a).operator co_await().await_suspend(std::coroutine_handle<>());
    } ||
    requires(A&& a) {
      operator co_await(std::forward<A>(a)).await_ready();
      operator co_await(std::forward<A>(a)).await_suspend(std::coroutine_handle<>());
    } ||
    requires(A&& a) {
      a.await_ready();
      a.await_suspend(std::coroutine_handle<>());
      a.await_resume();
    };

static_assert(!ForeignAwaitable<Task<int>>, "R46: a quell::Task is not awaitable from a foreign coroutine");
static_assert(!ForeignAwaitable<Task<void>>);
static_assert(!ForeignAwaitable<Task<int>&>);
static_assert(ForeignAwaitable<Future<int>&>);
static_assert(ForeignAwaitable<Future<int>>);
static_assert(ForeignAwaitable<ScheduleAwaitable>);
static_assert(ForeignAwaitable<OnAwaitable<Task<int>>>);
static_assert(!ForeignAwaitable<SleepAwaitable>, "sleeps need a home: Task only (R32)");

// A foreign awaiter that hands its std::stop_token to await_suspend (seed
// 004's caller role).
template <class A>
struct WithStdStop {
  decltype(detail::get_awaiter(std::declval<A>())) awaiter;
  std::stop_token token;
  bool await_ready() { return awaiter.await_ready(); }
  auto await_suspend(std::coroutine_handle<> h) { return awaiter.await_suspend(h, token); }
  decltype(auto) await_resume() { return awaiter.await_resume(); }
};
template <class A>
WithStdStop<A> with_std_stop(A&& aw, std::stop_token token) {
  return WithStdStop<A>{detail::get_awaiter(std::forward<A>(aw)), std::move(token)};
}

// ---- fixture -----------------------------------------------------------------

class CoroPool : public ::testing::TestWithParam<std::size_t> {
 protected:
  std::size_t workers() const { return GetParam(); }
};

// ---- R9 / R10: homes ---------------------------------------------------------

TEST_P(CoroPool, ARootResumesOnAWorkerOfItsPoolAfterASleep) {
  ThreadPool pool(config(workers(), "coroA"));
  auto f = pool.submit([]() -> Task<std::pair<bool, bool>> {
    const bool before = on_pool("coroA");
    co_await sleep_for(1ms);
    co_return std::pair{before, on_pool("coroA")};
  });
  const auto [before, after] = f.get();
  EXPECT_TRUE(before);
  EXPECT_TRUE(after);
}

TEST_P(CoroPool, ScheduleMovesTheCoroutineToTheOtherPoolAndMakesItItsHome) {
  ThreadPool a(config(workers(), "coroA"));
  ThreadPool b(config(workers(), "coroB"));
  struct Seen {
    bool after_schedule_on_b, home_is_b, after_sleep_on_b;
  };
  auto f = a.submit([&b]() -> Task<Seen> {
    co_await schedule(b);
    Seen seen{};
    seen.after_schedule_on_b = on_pool("coroB");
    ThreadPool* home = co_await this_coro::pool;
    seen.home_is_b = home == &b;
    co_await sleep_for(1ms);
    seen.after_sleep_on_b = on_pool("coroB");
    co_return seen;
  });
  const Seen seen = f.get();
  EXPECT_TRUE(seen.after_schedule_on_b);
  EXPECT_TRUE(seen.home_is_b);
  EXPECT_TRUE(seen.after_sleep_on_b);
}

TEST_P(CoroPool, OnRunsTheAwaitableOnTheOtherPoolAndResumesTheCallerOnItsOwnHome) {
  ThreadPool a(config(workers(), "coroA"));
  ThreadPool b(config(workers(), "coroB"));
  std::atomic<bool> child_on_b{false};
  std::atomic<bool> child_home_b{false};
  auto f = a.submit([&]() -> Task<std::pair<bool, bool>> {
    const int v = co_await on(b, [](ThreadPool* bp, std::atomic<bool>* on_b,
                                    std::atomic<bool>* home_b) -> Task<int> {
      on_b->store(on_pool("coroB"));
      ThreadPool* home = co_await this_coro::pool;
      home_b->store(home == bp);
      co_await sleep_for(1ms);
      co_return 5;
    }(&b, &child_on_b, &child_home_b));
    ThreadPool* home = co_await this_coro::pool;
    co_return std::pair{v == 5 && on_pool("coroA"), home == &a};
  });
  const auto [back_on_a, home_a] = f.get();
  EXPECT_TRUE(child_on_b.load());
  EXPECT_TRUE(child_home_b.load());
  EXPECT_TRUE(back_on_a);
  EXPECT_TRUE(home_a);
}

// Deterministic: the caller runs on a foreign thread (after a foreign
// awaitable), so a hop to its home would move the child onto a worker.
TEST_P(CoroPool, OnWithTheCurrentHomeAddsNoHop) {
  ThreadPool a(config(workers(), "coroA"));
  std::thread foreign;
  std::atomic<bool> child_on_foreign_thread{false};
  auto f = a.submit([&]() -> Task<bool> {
    co_await ResumeOnNewThread{&foreign};
    const std::thread::id here = std::this_thread::get_id();
    co_await on(a, [](std::thread::id expected, std::atomic<bool>* same) -> Task<void> {
      same->store(std::this_thread::get_id() == expected);
      co_return;
    }(here, &child_on_foreign_thread));
    const bool still_here = std::this_thread::get_id() == here;
    co_await yield();  // home again before ending
    co_return still_here;
  });
  EXPECT_TRUE(f.get());
  foreign.join();
  EXPECT_TRUE(child_on_foreign_thread.load());
}

Task<bool> move_to_and_end(ThreadPool& other) {
  co_await schedule(other);
  co_return on_pool("coroB");
}

TEST_P(CoroPool, AChildThatMovedWithScheduleHandsBackToItsParentOnTheParentsHome) {
  ThreadPool a(config(workers(), "coroA"));
  ThreadPool b(config(workers(), "coroB"));
  struct Seen {
    bool child_on_b, parent_on_a, parent_home_a;
  };
  auto f = a.submit([&]() -> Task<Seen> {
    Seen seen{};
    seen.child_on_b = co_await move_to_and_end(b);
    seen.parent_on_a = on_pool("coroA");
    ThreadPool* home = co_await this_coro::pool;
    seen.parent_home_a = home == &a;
    co_return seen;
  });
  const Seen seen = f.get();
  EXPECT_TRUE(seen.child_on_b);
  EXPECT_TRUE(seen.parent_on_a);
  EXPECT_TRUE(seen.parent_home_a);
}

// ---- R11 ---------------------------------------------------------------------

TEST_P(CoroPool, ScheduleOntoAShutDownPoolThrowsRejectedBeforeSuspending) {
  ThreadPool a(config(workers(), "coroA"));
  ThreadPool b(config(workers(), "coroB"));
  b.shutdown();
  struct Seen {
    std::error_code thrown, as_result;
    bool same_thread, still_home_a;
  };
  auto f = a.submit([&]() -> Task<Seen> {
    Seen seen{};
    const std::thread::id before = std::this_thread::get_id();
    try {
      co_await schedule(b);
    } catch (const TaskError& e) {
      seen.thrown = e.code();
    }
    seen.same_thread = std::this_thread::get_id() == before;
    auto r = co_await as_result(schedule(b));
    seen.as_result = r.error();
    ThreadPool* home = co_await this_coro::pool;
    seen.still_home_a = home == &a;
    co_return seen;
  });
  const Seen seen = f.get();
  EXPECT_EQ(seen.thrown, make_error_code(Errc::rejected));
  EXPECT_TRUE(seen.same_thread);
  EXPECT_EQ(seen.as_result, make_error_code(Errc::rejected));
  EXPECT_TRUE(seen.still_home_a);
}

// ---- R13 ---------------------------------------------------------------------

TEST_P(CoroPool, YieldAfterAForeignResumptionGoesHome) {
  ThreadPool a(config(workers(), "coroA"));
  std::thread foreign;
  struct Seen {
    bool before_on_a, foreign_not_worker, after_yield_on_a;
    std::optional<CancellationToken> coro_token;
    bool task_token_default;
  };
  Seen seen{};
  auto h = a.handle([&]() -> Task<void> {
    seen.before_on_a = on_pool("coroA");
    co_await ResumeOnNewThread{&foreign};
    seen.foreign_not_worker = !on_pool("coroA");
    const CancellationToken& t = co_await this_coro::cancellation_token;
    seen.coro_token = t;
    seen.task_token_default = !this_task::cancellation_token().can_cancel();
    co_await yield();
    seen.after_yield_on_a = on_pool("coroA");
  });
  h.get();
  foreign.join();
  EXPECT_TRUE(seen.before_on_a);
  EXPECT_TRUE(seen.foreign_not_worker);
  EXPECT_TRUE(seen.after_yield_on_a);
  ASSERT_TRUE(seen.coro_token.has_value());
  EXPECT_TRUE(*seen.coro_token == h.token()) << "R13: this_coro::cancellation_token is still right";
  EXPECT_TRUE(seen.task_token_default) << "R13: this_task sees a default token off the pool";
}

// ---- yield() fairness ----------------------------------------------------------

TEST(CoroPoolYield, AYieldLoopOnOneWorkerLetsATaskSubmittedLaterRun) {
  ThreadPool pool(config(1, "coroA"));
  std::atomic<bool> flag{false};
  std::latch started(1);
  std::atomic<long> spins{0};
  auto f = pool.submit([&]() -> Task<void> {
    started.count_down();
    while (!flag.load()) {
      spins.fetch_add(1);
      co_await yield();
    }
  });
  started.wait();
  auto setter = pool.submit([&] { flag.store(true); });
  const bool ended = f.wait_for(test::kGuard);
  if (!ended) flag.store(true);  // unblock the pool so the test can end
  EXPECT_TRUE(ended) << "the yield loop starved a task queued behind it";
  setter.get();
  f.get();
  EXPECT_GE(spins.load(), 1);
}

// ---- R27: submit / handle / post of a Task -------------------------------------

TEST_P(CoroPool, SubmitHandleAndPostOfATaskRunItWithAnId) {
  ThreadPool pool(config(workers(), "coroA"));
  Future<int> f1 = pool.submit(value_task(41));
  TaskHandle<int> h = pool.handle(value_task(42));
  std::latch posted(1);
  EXPECT_TRUE(pool.post([](std::latch* l) -> Task<void> {
    l->count_down();
    co_return;
  }(&posted)));
  EXPECT_NE(f1.id(), 0u);
  EXPECT_NE(h.id(), 0u);
  EXPECT_NE(f1.id(), h.id());
  EXPECT_EQ(f1.get(), 41);
  EXPECT_EQ(h.get(), 42);
  EXPECT_EQ(h.status(), TaskStatus::completed);
  posted.wait();
}

TEST(CoroPoolPriority, AHighPriorityRootRunsBeforeANormalOneQueuedEarlier) {
  ThreadPool pool(config(1, "coroA"));
  Gate gate;
  OpenOnExit open(gate);
  auto blockers = test::block_workers(pool, gate, 1);
  std::mutex m;
  std::vector<int> order;
  auto rec = [](std::mutex* m, std::vector<int>* order, int v) -> Task<void> {
    std::lock_guard lock(*m);
    order->push_back(v);
    co_return;
  };
  auto normal = pool.submit(rec(&m, &order, 1));
  auto high = pool.submit(rec(&m, &order, 2), TaskOptions().set_priority(TaskPriority::high));
  gate.open();
  normal.get();
  high.get();
  ASSERT_EQ(order.size(), 2u);
  EXPECT_EQ(order[0], 2);
  EXPECT_EQ(order[1], 1);
}

TEST_P(CoroPool, ADeadlinePassingWhileQueuedTimesOutAndDestroysTheFrameUnstarted) {
  ThreadPool pool(config(workers(), "coroA"));
  Gate gate;
  OpenOnExit open(gate);
  auto blockers = test::block_workers(pool, gate, workers());
  DestructionProbe::Record record;
  std::atomic<bool> ran{false};
  auto f = pool.submit(probe_task(DestructionProbe(&record), &ran),
                       TaskOptions().set_timeout(10ms));
  ASSERT_TRUE(f.wait_for(test::kGuard)) << "resolved at the deadline, workers still blocked";
  EXPECT_EQ(f.status(), TaskStatus::timed_out);
  EXPECT_EQ(record.destroyed.load(), 1);
  gate.open();
  EXPECT_EQ(error_of([&] { f.get(); }), make_error_code(Errc::timed_out));
  pool.wait_idle();
  EXPECT_FALSE(ran.load());
}

// Also §10.8: the deadline fires from the timer thread, the root unwinds on
// its home and ends timed_out.
TEST_P(CoroPool, ADeadlinePassingWhileSuspendedInSleepEndsTheRootTimedOut) {
  ThreadPool pool(config(workers(), "coroA"));
  // On a loaded machine the deadline can pass before a worker starts the
  // root, which then times out queued (the test above): try again with a
  // longer timeout until the root was suspended when it fired.
  bool started_in_time = false;
  for (auto timeout = 100ms; !started_in_time && timeout < 10s; timeout *= 2) {
    std::atomic<bool> started{false};
    std::atomic<int> unwound_where{0};
    auto f = pool.submit(
        [&]() -> Task<void> {
          started.store(true);
          WhereDestroyed local{"coroA", &unwound_where};
          co_await sleep_for(1h);
        },
        TaskOptions().set_timeout(timeout));
    ASSERT_TRUE(f.wait_for(test::kGuard));
    EXPECT_EQ(f.status(), TaskStatus::timed_out);
    EXPECT_EQ(error_of([&] { f.get(); }), make_error_code(Errc::timed_out));
    started_in_time = started.load();
    if (started_in_time) {
      EXPECT_EQ(unwound_where.load(), 1) << "the root must unwind on a worker, not the timer thread";
    }
  }
  EXPECT_TRUE(started_in_time);
}

TEST_P(CoroPool, ARootSubmittedAfterShutdownIsRejectedAndItsFrameDestroyedUnstarted) {
  ThreadPool pool(config(workers(), "coroA"));
  pool.shutdown();
  DestructionProbe::Record r1, r2, r3;
  std::atomic<bool> ran{false};
  auto f = pool.submit(probe_task(DestructionProbe(&r1), &ran));
  EXPECT_EQ(f.status(), TaskStatus::rejected);
  EXPECT_EQ(r1.destroyed.load(), 1);
  EXPECT_EQ(error_of([&] { f.get(); }), make_error_code(Errc::rejected));
  auto h = pool.handle(probe_task(DestructionProbe(&r2), &ran));
  EXPECT_EQ(h.status(), TaskStatus::rejected);
  EXPECT_EQ(r2.destroyed.load(), 1);
  EXPECT_FALSE(pool.post(probe_task(DestructionProbe(&r3), &ran)));
  EXPECT_EQ(r3.destroyed.load(), 1);
  EXPECT_FALSE(ran.load());
}

TEST_P(CoroPool, HandleCancelWhileQueuedDropsTheRootAndDestroysItsFrameOnTheCaller) {
  ThreadPool pool(config(workers(), "coroA"));
  Gate gate;
  OpenOnExit open(gate);
  auto blockers = test::block_workers(pool, gate, workers());
  DestructionProbe::Record record;
  std::atomic<bool> ran{false};
  auto h = pool.handle(probe_task(DestructionProbe(&record), &ran));
  EXPECT_EQ(h.status(), TaskStatus::queued);
  EXPECT_TRUE(h.cancel());
  EXPECT_EQ(h.status(), TaskStatus::cancelled) << "dropped at once, not when a worker reaches it";
  EXPECT_EQ(record.destroyed.load(), 1);
  EXPECT_EQ(record.thread.load(), std::this_thread::get_id());
  gate.open();
  EXPECT_THROW(h.get(), OperationCancelled);
  pool.wait_idle();
  EXPECT_FALSE(ran.load());
}

TEST_P(CoroPool, HandleCancelWhileSuspendedEndsTheRootCancelledAndItRunsUntilThen) {
  ThreadPool pool(config(workers(), "coroA"));
  std::latch parked(1);
  auto h = pool.handle(park_for_an_hour(&parked));
  parked.wait();
  ASSERT_TRUE(eventually([&] { return pool.stats().suspended == 1; }));
  EXPECT_EQ(h.status(), TaskStatus::running) << "R27: running while suspended";
  EXPECT_GE(pool.stats().running, 1u);
  EXPECT_TRUE(h.cancel());
  ASSERT_TRUE(h.wait_for(test::kGuard));
  EXPECT_EQ(h.status(), TaskStatus::cancelled);
  EXPECT_THROW(h.get(), OperationCancelled);
}

TEST_P(CoroPool, StatsSuspendedCountsParkedRootsAndWaitIdleWaitsForThem) {
  ThreadPool pool(config(workers(), "coroA"));
  constexpr int kRoots = 4;
  CancellationSource source;
  std::latch parked(kRoots);
  std::vector<Future<void>> roots;
  for (int i = 0; i < kRoots; ++i) {
    roots.push_back(
        pool.submit(park_for_an_hour(&parked), TaskOptions().set_cancellation(source.token())));
  }
  parked.wait();
  ASSERT_TRUE(eventually([&] { return pool.stats().suspended == kRoots; }))
      << "suspended = " << pool.stats().suspended;
  const ThreadPoolStats s = pool.stats();
  EXPECT_EQ(s.running, static_cast<std::size_t>(kRoots));
  EXPECT_EQ(s.queued, 0u);
  source.request_cancel();
  pool.wait_idle();
  for (auto& f : roots) EXPECT_EQ(f.status(), TaskStatus::cancelled);
  EXPECT_EQ(pool.stats().suspended, 0u);
  EXPECT_EQ(pool.stats().cancelled, static_cast<std::uint64_t>(kRoots));
}

TEST_P(CoroPool, WaitIdleWaitsForARootSuspendedInASleep) {
  ThreadPool pool(config(workers(), "coroA"));
  std::latch started(1);
  std::atomic<bool> done{false};
  auto f = pool.submit([&]() -> Task<void> {
    started.count_down();
    co_await sleep_for(30ms);
    done.store(true);
  });
  started.wait();
  pool.wait_idle();
  EXPECT_TRUE(done.load());
  EXPECT_TRUE(f.ready());
}

// ---- R28 ---------------------------------------------------------------------

TEST_P(CoroPool, ACallableReturningATaskIsKeptAliveUntilTheTaskEnds) {
  ThreadPool pool(config(workers(), "coroA"));
  auto shared = std::make_shared<int>(7);
  std::weak_ptr<int> weak = shared;
  DestructionProbe::Record record;
  std::atomic<int> probe_alive_after_sleep{-1};
  auto f = pool.submit([shared, probe = DestructionProbe(&record), &record,
                        &probe_alive_after_sleep]() -> Task<long> {
    co_await sleep_for(2ms);
    probe_alive_after_sleep.store(record.destroyed.load() == 0 ? 1 : 0);
    co_return *shared + shared.use_count();  // a dangling capture would be read here
  });
  shared.reset();
  EXPECT_EQ(f.get(), 7 + 1);
  EXPECT_EQ(probe_alive_after_sleep.load(), 1);
  EXPECT_TRUE(weak.expired()) << "the callable is destroyed before the future is ready";
  EXPECT_EQ(record.destroyed.load(), 1);
}

TEST_P(CoroPool, ScopeSpawnAndTaskGroupSubmitAcceptCallablesReturningTasks) {
  ThreadPool pool(config(workers(), "coroA"));
  auto shared = std::make_shared<int>(3);
  std::weak_ptr<int> weak = shared;
  std::atomic<int> sum{0};
  {
    Scope scope(pool);
    EXPECT_TRUE(scope.spawn([shared, &sum]() -> Task<void> {
      co_await sleep_for(1ms);
      sum.fetch_add(*shared);
    }));
    TaskGroup group(pool);
    auto f = group.submit([shared]() -> Task<int> {
      co_await sleep_for(1ms);
      co_return *shared * 10;
    });
    shared.reset();
    EXPECT_EQ(f.get(), 30);
    scope.wait();
    group.wait_and_rethrow();
  }
  EXPECT_EQ(sum.load(), 3);
  EXPECT_TRUE(weak.expired());
}

TEST_P(CoroPool, ACallableTakingATokenGetsTheRootsOwnToken) {
  ThreadPool pool(config(workers(), "coroA"));
  std::latch parked(1);
  std::optional<CancellationToken> given;
  auto h = pool.handle([&](CancellationToken token) -> Task<bool> {
    given = token;
    const CancellationToken& current = co_await this_coro::cancellation_token;
    const bool same = current == token;
    parked.count_down();
    auto r = co_await as_result(sleep_for(1h));
    co_return same && r.cancelled() && token.cancelled();
  });
  parked.wait();
  EXPECT_TRUE(h.cancel());
  EXPECT_TRUE(h.get());
  ASSERT_TRUE(given.has_value());
  EXPECT_TRUE(*given == h.token());
}

// ---- R29 ---------------------------------------------------------------------

TEST_P(CoroPool, ARootsFrameIsDestroyedBeforeItsFutureIsReady) {
  ThreadPool pool(config(workers(), "coroA"));
  for (int round = 0; round < 50; ++round) {
    bool immediate = false;
    bool after_sleep = false;
    auto f1 = pool.submit([](bool* flag) -> Task<int> {
      SetOnDestroy local{flag};
      co_return 1;
    }(&immediate));
    auto f2 = pool.submit([](bool* flag) -> Task<int> {
      SetOnDestroy local{flag};
      co_await sleep_for(std::chrono::microseconds(100));
      co_return 2;
    }(&after_sleep));
    EXPECT_EQ(f1.get(), 1);
    EXPECT_TRUE(immediate);
    EXPECT_EQ(f2.get(), 2);
    EXPECT_TRUE(after_sleep);
  }
}

// ---- R30 / R31 -----------------------------------------------------------------

Task<int> await_lvalue_and_rvalue(Future<int> a, Future<int> b) {
  const int x = co_await a;
  const int y = co_await std::move(b);
  co_return x * 10 + y;
}

TEST_P(CoroPool, CoAwaitFutureGivesTheValueForAnLvalueAndAnRvalue) {
  ThreadPool pool(config(workers(), "coroA"));
  ThreadPool aux(config(1, "coroX"));
  Gate gate;
  OpenOnExit open(gate);
  auto slow = aux.submit([&gate] {
    gate.wait();
    return 4;
  });
  auto f = pool.submit(await_lvalue_and_rvalue(pool.submit([] { return 3; }), std::move(slow)));
  gate.open();
  EXPECT_EQ(f.get(), 34);
}

// What `co_await fut` throws, as an error code (or the failure's message).
Task<std::string> outcome_of_await(Future<int>& fut) {
  std::string out = "value";
  try {
    (void)co_await fut;
  } catch (const OperationCancelled&) {
    out = "OperationCancelled";
  } catch (const TaskError& e) {
    out = "TaskError:" + std::to_string(e.code().value());
  } catch (const std::runtime_error& e) {
    out = std::string("runtime_error:") + e.what();
  }
  co_return out;
}

std::string code_name(Errc e) { return "TaskError:" + std::to_string(static_cast<int>(e)); }

TEST_P(CoroPool, CoAwaitFutureGivesWhatGetWouldForEveryOutcome) {
  ThreadPool pool(config(workers(), "coroA"));
  ThreadPool closed(config(1, "coroX"));
  closed.shutdown();
  CancellationSource cancelled;
  cancelled.request_cancel();

  Future<int> failing = pool.submit([]() -> int { throw std::runtime_error("boom"); });
  Future<int> dropped = pool.submit([] { return 1; }, TaskOptions().set_cancellation(cancelled.token()));
  Future<int> late = pool.submit([] { return 1; }, TaskOptions().set_deadline(Clock::now() - 1s));
  Future<int> rejected = closed.submit([] { return 1; });
  Future<int> empty;
  Future<int> retrieved = pool.submit([] { return 1; });
  EXPECT_EQ(retrieved.get(), 1);

  EXPECT_EQ(pool.submit(outcome_of_await(failing)).get(), "runtime_error:boom");
  EXPECT_EQ(pool.submit(outcome_of_await(dropped)).get(), "OperationCancelled");
  EXPECT_EQ(pool.submit(outcome_of_await(late)).get(), code_name(Errc::timed_out));
  EXPECT_EQ(pool.submit(outcome_of_await(rejected)).get(), code_name(Errc::rejected));
  EXPECT_EQ(pool.submit(outcome_of_await(empty)).get(), code_name(Errc::no_state));
  EXPECT_EQ(pool.submit(outcome_of_await(retrieved)).get(), code_name(Errc::already_retrieved));
  // The outcome was consumed by the await (the task's outcome delivered).
  EXPECT_EQ(error_of([&] { failing.get(); }), make_error_code(Errc::already_retrieved));
}

TEST_P(CoroPool, ACancelledAwaitLeavesTheFutureUnretrieved) {
  ThreadPool pool(config(workers(), "coroA"));
  ThreadPool aux(config(1, "coroX"));
  Gate gate;
  OpenOnExit open(gate);
  Future<int> slow = aux.submit([&gate] {
    gate.wait();
    return 11;
  });
  std::latch awaiting(1);
  auto h = pool.handle([](Future<int>* fut, std::latch* l) -> Task<int> {
    l->count_down();
    co_return co_await *fut;
  }(&slow, &awaiting));
  awaiting.wait();
  h.cancel();
  ASSERT_TRUE(h.wait_for(test::kGuard)) << "a cancelled future await ends at once";
  EXPECT_THROW(h.get(), OperationCancelled);
  EXPECT_FALSE(slow.ready()) << "non-owning: the awaited task goes on";
  gate.open();
  EXPECT_EQ(slow.get(), 11);
}

TEST_P(CoroPool, CoAwaitHandleIsOwningItCancelsTheTaskWithTheAwaitersReasonAndWaitsForIt) {
  ThreadPool pool(config(workers(), "coroA"));
  ThreadPool aux(config(1, "coroX"));
  std::latch inner_started(1);
  std::atomic<bool> inner_finished{false};
  std::atomic<int> inner_reason{-1};
  TaskHandle<int> inner = aux.handle([&](CancellationToken t) {
    inner_started.count_down();
    EXPECT_TRUE(test::wait_cancelled(t));
    inner_reason.store(static_cast<int>(t.reason()));
    inner_finished.store(true);
    return 5;  // a value despite the cancellation: the await returns it (R18)
  });
  inner_started.wait();
  CancellationSource outer;
  std::latch awaiting(1);
  auto f = pool.submit(
      [](TaskHandle<int>* ih, std::latch* l, std::atomic<bool>* finished) -> Task<std::pair<int, bool>> {
        l->count_down();
        const int v = co_await *ih;
        co_return std::pair{v, finished->load()};
      }(&inner, &awaiting, &inner_finished),
      TaskOptions().set_cancellation(outer.token()));
  awaiting.wait();
  // Parked at the co_await: a cancellation before it would be a checkpoint.
  ASSERT_TRUE(eventually([&] { return pool.stats().suspended == 1; }));
  outer.request_cancel(CancelReason::failure);
  const auto [v, finished_before] = f.get();
  EXPECT_EQ(v, 5);
  EXPECT_TRUE(finished_before) << "the owning await waited for the task to end";
  EXPECT_EQ(inner_reason.load(), static_cast<int>(CancelReason::failure));
  EXPECT_TRUE(inner.cancelled());
}

TEST_P(CoroPool, CoAwaitHandleOfACancelledCoroutineTaskThrowsOperationCancelled) {
  ThreadPool pool(config(workers(), "coroA"));
  std::latch parked(1);
  TaskHandle<void> inner = pool.handle(park_for_an_hour(&parked));
  std::latch awaiting(1);
  auto h = pool.handle([](TaskHandle<void>* ih, std::latch* l) -> Task<void> {
    l->count_down();
    co_await *ih;
  }(&inner, &awaiting));
  parked.wait();
  awaiting.wait();
  // Both parked: a cancellation before the co_await would be a checkpoint
  // (R6), which leaves the handle's task alone.
  ASSERT_TRUE(eventually([&] { return pool.stats().suspended == 2; }));
  h.cancel();
  ASSERT_TRUE(h.wait_for(test::kGuard));
  EXPECT_THROW(h.get(), OperationCancelled);
  EXPECT_TRUE(inner.future().ready()) << "owning: the handle's task ended before the awaiter";
  EXPECT_EQ(inner.status(), TaskStatus::cancelled);
  inner.cancel();  // after a failure above, lets the pool's drain end
}

// ---- R32 ---------------------------------------------------------------------

TEST_P(CoroPool, SleepForAndSleepUntilCompleteNoEarlierThanRequested) {
  ThreadPool pool(config(workers(), "coroA"));
  auto f = pool.submit([]() -> Task<std::pair<Clock::duration, bool>> {
    const auto t0 = Clock::now();
    co_await sleep_for(20ms);
    const auto slept = Clock::now() - t0;
    const auto target = Clock::now() + 15ms;
    co_await sleep_until(target);
    co_return std::pair{slept, Clock::now() >= target};
  });
  const auto [slept, until_ok] = f.get();
  EXPECT_GE(slept, 20ms);
  EXPECT_TRUE(until_ok);
}

// Deterministic: on a foreign thread, a suspension would send the coroutine
// home to a worker.
TEST_P(CoroPool, ASleepForATimeAlreadyPastCompletesWithoutSuspending) {
  ThreadPool pool(config(workers(), "coroA"));
  std::thread foreign;
  auto f = pool.submit([&]() -> Task<bool> {
    co_await ResumeOnNewThread{&foreign};
    const std::thread::id here = std::this_thread::get_id();
    co_await sleep_until(Clock::now() - 1s);
    co_await sleep_for(0s);
    co_await sleep_for(-5ms);
    const bool stayed = std::this_thread::get_id() == here;
    co_await yield();
    co_return stayed;
  });
  EXPECT_TRUE(f.get());
  foreign.join();
}

TEST_P(CoroPool, CancellationEndsASleepOfAnHourPromptly) {
  ThreadPool pool(config(workers(), "coroA"));
  std::latch parked(1);
  auto h = pool.handle([](std::latch* l) -> Task<std::error_code> {
    l->count_down();
    auto r = co_await as_result(sleep_for(1h));
    co_return r.error();
  }(&parked));
  parked.wait();
  const auto t0 = Clock::now();
  h.cancel();
  ASSERT_TRUE(h.wait_for(test::kGuard));
  EXPECT_LT(Clock::now() - t0, test::kGuard);
  EXPECT_EQ(h.get(), make_error_code(Errc::cancelled));
  EXPECT_EQ(h.status(), TaskStatus::completed) << "the root chose to return normally";
}

// ---- R33 ---------------------------------------------------------------------

Task<void> count_after_sleep(std::atomic<int>* n) {
  co_await sleep_for(2ms);
  n->fetch_add(1);
}

TEST_P(CoroPool, ScopeJoinWaitsForEverySpawnedTask) {
  ThreadPool pool(config(workers(), "coroA"));
  auto f = pool.submit([](ThreadPool* p) -> Task<int> {
    std::atomic<int> n{0};
    Scope scope(*p);
    for (int i = 0; i < 5; ++i) scope.spawn(count_after_sleep(&n));
    co_await scope.join();
    co_return n.load() * 100 + static_cast<int>(scope.size());
  }(&pool));
  EXPECT_EQ(f.get(), 500);
}

Task<void> throw_after_sleep() {
  co_await sleep_for(1ms);
  throw std::runtime_error("first failure");
}

TEST_P(CoroPool, ScopeJoinRethrowsTheFirstFailure) {
  ThreadPool pool(config(workers(), "coroA"));
  std::latch parked(1);
  auto f = pool.submit([](ThreadPool* p, std::latch* l) -> Task<std::string> {
    Scope scope(*p);
    scope.spawn(park_for_an_hour(l));  // cancelled by the failure
    scope.spawn(throw_after_sleep());
    std::string what = "nothing";
    try {
      co_await scope.join();
    } catch (const std::runtime_error& e) {
      what = e.what();
    }
    co_return what + (scope.cancellation_token().reason() == CancelReason::failure ? "/failure" : "/?");
  }(&pool, &parked));
  EXPECT_EQ(f.get(), "first failure/failure");
}

TEST_P(CoroPool, AJoinersCancellationCancelsTheScopeAndJoinThrowsOperationCancelled) {
  ThreadPool pool(config(workers(), "coroA"));
  std::latch child_parked(1);
  std::latch joining(1);
  struct Seen {
    bool caught = false, scope_cancelled = false;
    CancelReason reason = CancelReason::none;
    std::size_t left = 99;
  };
  Seen seen;
  auto h = pool.handle([](ThreadPool* p, std::latch* cp, std::latch* j, Seen* s) -> Task<void> {
    Scope scope(*p);
    scope.spawn(park_for_an_hour(cp));
    j->count_down();
    try {
      co_await scope.join();
    } catch (const OperationCancelled&) {
      s->caught = true;
    }
    s->scope_cancelled = scope.cancelled();
    s->reason = scope.cancellation_token().reason();
    s->left = scope.size();
  }(&pool, &child_parked, &joining, &seen));
  child_parked.wait();
  joining.wait();
  h.cancel();
  ASSERT_TRUE(h.wait_for(test::kGuard));
  h.get();
  EXPECT_TRUE(seen.caught);
  EXPECT_TRUE(seen.scope_cancelled);
  EXPECT_EQ(seen.reason, CancelReason::requested) << "the joiner's reason";
  EXPECT_EQ(seen.left, 0u) << "owning: the join waited for the spawned task";
}

TEST_P(CoroPool, JoinFromATaskOfTheSameScopeThrowsLogicError) {
  ThreadPool pool(config(workers(), "coroA"));
  std::atomic<bool> logic_error{false};
  auto f = pool.submit([](ThreadPool* p, std::atomic<bool>* flag) -> Task<void> {
    Scope scope(*p);
    scope.spawn([](Scope* s, std::atomic<bool>* fl) -> Task<void> {
      try {
        co_await s->join();
      } catch (const std::logic_error&) {
        fl->store(true);
      }
    }(&scope, flag));
    co_await scope.join();
  }(&pool, &logic_error));
  f.get();
  EXPECT_TRUE(logic_error.load());
}

// ---- R34 ---------------------------------------------------------------------

TEST_P(CoroPool, TaskGroupSubmitOfATaskReturnsAFutureAndJoinDoesNotRethrow) {
  ThreadPool pool(config(workers(), "coroA"));
  auto f = pool.submit([](ThreadPool* p) -> Task<std::string> {
    TaskGroup group(*p);
    Future<int> v = group.submit(value_task(6));
    group.submit(throw_after_sleep());
    std::string out;
    try {
      co_await group.join();
      out += "join-ok";
    } catch (...) {
      out += "join-threw";
    }
    try {
      co_await group.join_and_rethrow();
      out += "/rethrow-none";
    } catch (const std::runtime_error& e) {
      out += std::string("/") + e.what();
    }
    out += "/" + std::to_string(v.get()) + "/" + std::to_string(group.pending());
    co_return out;
  }(&pool));
  EXPECT_EQ(f.get(), "join-ok/first failure/6/0");
}

// ---- R36 ---------------------------------------------------------------------

TEST_P(CoroPool, PeriodicTaskTicksReturningTasksNeverOverlap) {
  ThreadPool pool(config(workers(), "coroA"));
  std::atomic<int> active{0};
  std::atomic<int> most{0};
  std::atomic<int> done{0};
  PeriodicTask periodic(pool, 1ms, [&]() -> Task<void> {
    const int now = active.fetch_add(1) + 1;
    int seen = most.load();
    while (now > seen && !most.compare_exchange_weak(seen, now)) {
    }
    co_await sleep_for(5ms);  // several intervals
    active.fetch_sub(1);
    done.fetch_add(1);
  });
  ASSERT_TRUE(eventually([&] { return done.load() >= 4; }));
  periodic.stop();
  periodic.join();
  EXPECT_EQ(most.load(), 1);
  EXPECT_GE(periodic.ticks(), 4u);
  EXPECT_GE(periodic.skipped_ticks(), 1u);
  EXPECT_EQ(periodic.failed_ticks(), 0u);
}

TEST_P(CoroPool, PeriodicTaskStopCancelsTheRunningTicksToken) {
  ThreadPool pool(config(workers(), "coroA"));
  std::latch in_tick(1);
  std::atomic<bool> first{true};
  std::atomic<int> cancelled_ticks{0};
  PeriodicTask periodic(pool, 1ms, [&](CancellationToken token) -> Task<void> {
    if (first.exchange(false)) in_tick.count_down();
    auto r = co_await as_result(sleep_for(1h));
    if (r.cancelled() && token.cancelled()) cancelled_ticks.fetch_add(1);
  });
  in_tick.wait();
  periodic.stop();
  finishes_or_abort([&] { periodic.join(); }, "PeriodicTask::join after stop");
  EXPECT_EQ(cancelled_ticks.load(), 1);
  EXPECT_EQ(periodic.ticks(), 1u);
  EXPECT_FALSE(periodic.running());
}

// ---- R40 ---------------------------------------------------------------------

TEST_P(CoroPool, DrainShutdownWaitsForASuspendedRootToFinishNormally) {
  ThreadPool pool(config(workers(), "coroA"));
  std::latch parked(1);
  std::atomic<bool> done{false};
  auto f = pool.submit([](std::latch* l, std::atomic<bool>* d) -> Task<int> {
    l->count_down();
    co_await sleep_for(30ms);
    d->store(true);
    co_return 9;
  }(&parked, &done));
  parked.wait();
  finishes_or_abort([&] { pool.shutdown(); }, "a drain shutdown");
  EXPECT_TRUE(done.load());
  EXPECT_EQ(f.status(), TaskStatus::completed);
  EXPECT_EQ(f.get(), 9);
}

TEST_P(CoroPool, CancelShutdownCancelsARootParkedInASleepOfAnHour) {
  ThreadPool pool(config(workers(), "coroA", ShutdownPolicy::cancel));
  std::latch parked(1);
  auto h = pool.handle(park_for_an_hour(&parked));
  parked.wait();
  finishes_or_abort([&] { pool.shutdown(); }, "a cancel shutdown");
  EXPECT_EQ(h.status(), TaskStatus::cancelled);
  EXPECT_EQ(h.token().reason(), CancelReason::shutdown);
  EXPECT_THROW(h.get(), OperationCancelled);
  // Roots submitted afterwards are rejected.
  std::atomic<bool> ran{false};
  DestructionProbe::Record record;
  EXPECT_EQ(pool.submit(probe_task(DestructionProbe(&record), &ran)).status(), TaskStatus::rejected);
  EXPECT_EQ(record.destroyed.load(), 1);
}

TEST_P(CoroPool, CancelShutdownEndsARootParkedInAUserStoppableAwaitable) {
  ThreadPool pool(config(workers(), "coroA", ShutdownPolicy::cancel));
  Event never_set;
  std::latch parked(1);
  auto h = pool.handle([](Event* e, std::latch* l) -> Task<void> {
    l->count_down();
    co_await e->wait();
  }(&never_set, &parked));
  parked.wait();
  finishes_or_abort([&] { pool.shutdown(); }, "a cancel shutdown with a user stoppable await");
  EXPECT_EQ(h.status(), TaskStatus::cancelled);
  EXPECT_THROW(h.get(), OperationCancelled);
}

// ---- R46: foreign coroutines ---------------------------------------------------

Fire foreign_await_future(Future<int>& fut, int* value, std::atomic<std::thread::id>* where,
                          std::latch* done) {
  *value = co_await fut;
  where->store(std::this_thread::get_id());
  done->count_down();
}

TEST_P(CoroPool, AForeignCoroutineAwaitsAFutureAndResumesOnTheCompletingThread) {
  ThreadPool pool(config(workers(), "coroA"));
  Gate gate;
  OpenOnExit open(gate);
  std::atomic<std::thread::id> ran_on{};
  Future<int> fut = pool.submit([&] {
    ran_on.store(std::this_thread::get_id());
    gate.wait();
    return 9;
  });
  int value = 0;
  std::atomic<std::thread::id> resumed_on{};
  std::latch done(1);
  foreign_await_future(fut, &value, &resumed_on, &done);
  gate.open();
  done.wait();
  EXPECT_EQ(value, 9);
  EXPECT_EQ(resumed_on.load(), ran_on.load());
}

Fire foreign_schedule(ThreadPool& pool, std::atomic<int>* on_worker, std::latch* done) {
  co_await schedule(pool);
  on_worker->store(on_pool("coroA") ? 1 : 2);
  done->count_down();
}

TEST_P(CoroPool, AForeignCoroutineMovesOntoAPoolWorkerWithSchedule) {
  ThreadPool pool(config(workers(), "coroA"));
  std::atomic<int> on_worker{0};
  std::latch done(1);
  foreign_schedule(pool, &on_worker, &done);
  done.wait();
  EXPECT_EQ(on_worker.load(), 1);
}

Task<int> task_on(const char* pool_name, std::atomic<int>* ran_on_pool) {
  ran_on_pool->store(on_pool(pool_name) ? 1 : 2);
  co_await sleep_for(1ms);
  co_return 21;
}

Fire foreign_on(ThreadPool& pool, std::atomic<int>* ran, int* value, std::atomic<int>* resumed,
                std::latch* done) {
  *value = co_await on(pool, task_on("coroA", ran));
  resumed->store(on_pool("coroA") ? 1 : 2);
  done->count_down();
}

TEST_P(CoroPool, AForeignCoroutineRunsATaskWithOnAndIsResumed) {
  ThreadPool pool(config(workers(), "coroA"));
  std::atomic<int> ran{0};
  std::atomic<int> resumed{0};
  int value = 0;
  std::latch done(1);
  foreign_on(pool, &ran, &value, &resumed, &done);
  done.wait();
  EXPECT_EQ(value, 21);
  EXPECT_EQ(ran.load(), 1);
  EXPECT_EQ(resumed.load(), 1) << "resumed on the worker that finished the task";
}

Fire foreign_on_with_stop(ThreadPool& pool, std::latch* started, std::stop_token stop,
                          std::atomic<int>* outcome, std::atomic<std::thread::id>* resumed_on,
                          std::atomic<int>* resumed_on_worker, std::latch* done) {
  int result = 0;
  try {
    (void)co_await with_std_stop(on(pool, [](std::latch* l) -> Task<int> {
                                   l->count_down();
                                   co_await sleep_for(1h);
                                   co_return 1;
                                 }(started)),
                                 std::move(stop));
    result = 1;
  } catch (const OperationCancelled&) {
    result = 2;
  }
  resumed_on->store(std::this_thread::get_id());
  resumed_on_worker->store(on_pool("coroA") ? 1 : 2);
  outcome->store(result);
  done->count_down();
}

TEST_P(CoroPool, AForeignStopTokenRequestCancelsTheTaskOfOnAndResumesOffTheCancellersThread) {
  ThreadPool pool(config(workers(), "coroA"));
  std::stop_source source;
  std::latch started(1);
  std::latch done(1);
  std::atomic<int> outcome{0};
  std::atomic<std::thread::id> resumed_on{};
  std::atomic<int> resumed_on_worker{0};
  foreign_on_with_stop(pool, &started, source.get_token(), &outcome, &resumed_on,
                       &resumed_on_worker, &done);
  started.wait();
  source.request_stop();
  finishes_or_abort([&] { done.wait(); }, "the foreign on() after request_stop");
  EXPECT_EQ(outcome.load(), 2) << "OperationCancelled at the foreign co_await";
  EXPECT_NE(resumed_on.load(), std::this_thread::get_id());
  EXPECT_EQ(resumed_on_worker.load(), 1);
}

// ---- §10.8 ---------------------------------------------------------------------

TEST_P(CoroPool, ARootsTokenIsTheStateItsHandleTokenObserves) {
  ThreadPool pool(config(workers(), "coroA"));
  std::latch parked(1);
  std::optional<CancellationToken> seen;
  bool task_token_same = false;
  auto h = pool.handle([](std::optional<CancellationToken>* out, bool* same,
                          std::latch* l) -> Task<void> {
    const CancellationToken& t = co_await this_coro::cancellation_token;
    *out = t;
    *same = this_task::cancellation_token() == t;
    l->count_down();
    co_await sleep_for(1h);
  }(&seen, &task_token_same, &parked));
  parked.wait();
  ASSERT_TRUE(seen.has_value());
  EXPECT_TRUE(*seen == h.token());
  EXPECT_TRUE(task_token_same);
  EXPECT_FALSE(seen->cancelled());
  h.cancel();
  EXPECT_TRUE(seen->cancelled());
  EXPECT_THROW(h.get(), OperationCancelled);
}

TEST_P(CoroPool, AwaitingAFutureWhosePoolIsDestroyedStillEnds) {
  ThreadPool pool(config(workers(), "coroA"));
  auto aux = std::make_unique<ThreadPool>(config(1, "coroX", ShutdownPolicy::cancel));
  std::latch blocker_running(1);
  auto blocker = aux->submit([&](CancellationToken t) {
    blocker_running.count_down();
    test::wait_cancelled(t);
  });
  blocker_running.wait();
  Future<int> queued = aux->submit([] { return 1; });  // never starts
  std::latch awaiting(1);
  auto f = pool.submit([](Future<int>* fut, std::latch* l) -> Task<std::string> {
    l->count_down();
    co_return co_await outcome_of_await(*fut);
  }(&queued, &awaiting));
  awaiting.wait();
  finishes_or_abort([&] { aux.reset(); }, "destroying the awaited future's pool");
  ASSERT_TRUE(f.wait_for(test::kGuard));
  EXPECT_EQ(f.get(), "OperationCancelled");
}

INSTANTIATE_TEST_SUITE_P(PoolSizes, CoroPool, ::testing::Values(1, 3), test::pool_size_name);

}  // namespace
}  // namespace quell
