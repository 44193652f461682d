// PeriodicTask (API.md §8, §9 "Periodic work and timers"): the schedule
// (first tick, fixed rate, no overlap, skipped slots), failures, stop(),
// join(), the destructor, and the pool's shutdown.
//
// Tests wait for ticks with counters and gates. Time appears as an ordering
// fact (a tick never starts before its slot) or as a generous failure guard.
// Where a test must see that nothing happens, it waits for ticks of a second
// periodic task with the same interval: they mark that slots have passed.
#include "quell/periodic_task.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include "pool_test_support.hpp"
#include "quell/thread_pool.hpp"

namespace quell {
namespace {

using namespace std::chrono_literals;
using test::DestructionProbe;
using test::Gate;
using test::OpenOnExit;
using test::spin_until_true;
using Clock = std::chrono::steady_clock;

// Counts events; waits until a count is reached, under a failure guard.
class Events {
 public:
  void bump() {
    std::lock_guard lock(mutex_);
    ++count_;
    changed_.notify_all();
  }
  bool wait_at_least(std::uint64_t n, Clock::duration guard = test::kGuard) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, guard, [&] { return count_ >= n; });
  }
  std::uint64_t count() {
    std::lock_guard lock(mutex_);
    return count_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::uint64_t count_ = 0;
};

// Returns once `slots` further slots of `interval` have passed, marked by the
// ticks of a periodic task of that interval on `pool`.
void wait_slots(ThreadPool& pool, Clock::duration interval, std::uint64_t slots) {
  Events ticks;
  PeriodicTask witness(pool, interval, [&ticks] { ticks.bump(); });
  ASSERT_TRUE(ticks.wait_at_least(slots)) << "the witness did not tick";
}

// ---- construction ---------------------------------------------------------------------

TEST(PeriodicTask, ANonPositiveIntervalThrowsInvalidArgument) {
  ThreadPool pool(1);
  DestructionProbe::Record record;
  EXPECT_THROW(PeriodicTask(pool, Clock::duration::zero(), [] {}), std::invalid_argument);
  EXPECT_THROW(PeriodicTask(pool, -1ms, [probe = DestructionProbe(&record)] {}),
               std::invalid_argument);
  EXPECT_EQ(record.destroyed.load(), 1);
}

TEST(PeriodicTask, TheFirstTickRunsOneIntervalAfterConstructionNotBefore) {
  ThreadPool pool(2);
  std::atomic<Clock::time_point> first{};
  Events ticks;
  const auto before = Clock::now();
  PeriodicTask task(pool, 100ms, [&] {
    if (ticks.count() == 0) first = Clock::now();
    ticks.bump();
  });
  EXPECT_TRUE(task.running());
  ASSERT_TRUE(ticks.wait_at_least(1));
  EXPECT_GE(first.load(), before + 100ms);
}

TEST(PeriodicTask, BothFormsRunAndSeeTheTicksToken) {
  ThreadPool pool(2);
  Events plain;
  Events with_token;
  std::atomic<bool> plain_can_cancel{false};
  std::atomic<bool> token_can_cancel{false};
  PeriodicTask a(pool, 10ms, [&] {
    plain_can_cancel = this_task::cancellation_token().can_cancel();
    plain.bump();
  });
  PeriodicTask b(pool, 10ms, [&](CancellationToken token) {
    token_can_cancel = token.can_cancel() && !token.cancelled();
    with_token.bump();
  });
  ASSERT_TRUE(plain.wait_at_least(2));
  ASSERT_TRUE(with_token.wait_at_least(2));
  EXPECT_TRUE(plain_can_cancel.load());
  EXPECT_TRUE(token_can_cancel.load());
}

// ---- the schedule ---------------------------------------------------------------------

TEST(PeriodicTask, TicksCountsTheBodiesStarted) {
  ThreadPool pool(2);
  Events bodies;
  PeriodicTask task(pool, 5ms, [&bodies] { bodies.bump(); });
  ASSERT_TRUE(bodies.wait_at_least(5));
  EXPECT_GE(task.ticks(), 5u);
  task.stop();
  task.join();
  EXPECT_EQ(task.ticks(), bodies.count());
  EXPECT_EQ(task.failed_ticks(), 0u);
}

TEST(PeriodicTask, TicksRunAtAFixedRateWithoutDrift) {
  // Each tick busies itself for 70% of the interval. At a fixed rate the
  // n-th tick starts at its slot, start + n * interval (later only by the
  // slots skipped when the pool or the timer ran late, which are counted);
  // a schedule that counts the interval from each tick's end would drift by
  // 0.7 interval per tick, 14 intervals over 20 ticks.
  constexpr int kTicks = 20;
  constexpr auto kInterval = 50ms;
  ThreadPool pool(2);
  std::vector<Clock::time_point> starts(kTicks + 1);
  std::vector<std::uint64_t> skipped_before(kTicks + 1);
  std::vector<Clock::time_point> ends(kTicks + 1);
  Events bodies;
  std::atomic<int> n{0};
  PeriodicTask* self = nullptr;
  std::latch constructed(1);
  const auto before = Clock::now();
  PeriodicTask task(pool, kInterval, [&] {
    constructed.wait();
    const int i = n.fetch_add(1) + 1;
    if (i > kTicks) return;
    starts[i] = Clock::now();
    skipped_before[i] = self->skipped_ticks();
    test::spin_until(starts[i] + kInterval * 7 / 10);
    ends[i] = Clock::now();
    bodies.bump();
  });
  const auto after = Clock::now();
  self = &task;
  constructed.count_down();
  ASSERT_TRUE(bodies.wait_at_least(kTicks));
  task.stop();
  task.join();
  for (int i = 1; i <= kTicks; ++i) {
    const auto slot = static_cast<Clock::rep>(static_cast<std::uint64_t>(i) + skipped_before[i]);
    // Ordering facts: never before its slot, never before the previous ended.
    EXPECT_GE(starts[i], before + kInterval * slot) << "tick " << i;
    if (i > 1) {
      EXPECT_GE(starts[i], ends[i - 1]) << "tick " << i << " overlapped";
    }
  }
  const auto last_slot =
      static_cast<Clock::rep>(static_cast<std::uint64_t>(kTicks) + skipped_before[kTicks]);
  // A generous guard: 10 intervals late.
  EXPECT_LE(starts[kTicks], after + kInterval * (last_slot + 10))
      << "the schedule drifted: " << skipped_before[kTicks] << " slots skipped";
}

TEST(PeriodicTask, ATickThatOverrunsIsNotOverlappedAndTheMissedSlotsAreSkipped) {
  constexpr auto kInterval = 20ms;
  ThreadPool pool(2);
  Gate hold;
  Events bodies;
  std::mutex mutex;
  std::vector<Clock::time_point> starts;
  std::vector<std::uint64_t> skipped_at_start;
  Clock::time_point first_end{};
  PeriodicTask* self = nullptr;
  std::latch constructed(1);
  const auto before = Clock::now();
  PeriodicTask task(pool, kInterval, [&] {
    constructed.wait();
    bool first = false;
    {
      std::lock_guard lock(mutex);
      starts.push_back(Clock::now());
      skipped_at_start.push_back(self->skipped_ticks());
      first = starts.size() == 1;
    }
    bodies.bump();
    if (first) {
      hold.wait();
      std::lock_guard lock(mutex);
      first_end = Clock::now();
    }
  });
  OpenOnExit open(hold);  // after the task: opens before its destructor joins
  const auto after = Clock::now();
  self = &task;
  constructed.count_down();
  ASSERT_TRUE(bodies.wait_at_least(1));
  // Hold the first tick until more than three further slots have passed.
  test::spin_until(after + kInterval * 9 / 2);
  hold.open();
  ASSERT_TRUE(bodies.wait_at_least(2));
  task.stop();
  task.join();
  std::lock_guard lock(mutex);
  const Clock::time_point second = starts[1];
  const std::uint64_t skipped = skipped_at_start[1];
  EXPECT_GE(second, first_end) << "the second tick started while the first ran";
  // The first tick ended after slot 4 (origin <= after), so slots 2, 3 and
  // 4 were skipped, at least; and exactly those passed when it ended: the
  // next slot is the first one after that end, which precedes the second
  // tick's start.
  EXPECT_GE(skipped, 3u);
  const auto whole = [&](Clock::duration d) {
    return static_cast<std::uint64_t>(d / kInterval);
  };
  EXPECT_GE(skipped + 1, whole(first_end - after)) << "slots missed but not counted";
  EXPECT_LE(skipped + 1, whole(second - before)) << "more slots skipped than passed";
  // No catch-up burst: the second tick runs at its own slot, not at once.
  const auto slot = static_cast<Clock::rep>(skipped + 2);
  EXPECT_GE(second, before + kInterval * slot);
  EXPECT_EQ(task.ticks(), starts.size());
}

// ---- failures -------------------------------------------------------------------------

TEST(PeriodicTask, AThrowingTickIsCountedFailedAndTheScheduleGoesOn) {
  ThreadPool pool(2);
  Events bodies;
  std::atomic<int> n{0};
  PeriodicTask task(pool, 5ms, [&] {
    const int i = n.fetch_add(1);
    bodies.bump();
    if (i < 2) throw std::runtime_error("tick failed");
  });
  ASSERT_TRUE(bodies.wait_at_least(4)) << "the schedule stopped after a failure";
  task.stop();
  task.join();
  EXPECT_EQ(task.failed_ticks(), 2u);
  EXPECT_EQ(task.ticks(), bodies.count());
}

TEST(PeriodicTask, ATickThatExitsWithOperationCancelledIsNotAFailure) {
  ThreadPool pool(2);
  Events bodies;
  PeriodicTask task(pool, 5ms, [&bodies] {
    bodies.bump();
    throw OperationCancelled();
  });
  ASSERT_TRUE(bodies.wait_at_least(3));
  task.stop();
  task.join();
  EXPECT_EQ(task.failed_ticks(), 0u);
  EXPECT_EQ(task.ticks(), bodies.count());
}

TEST(PeriodicTask, ATickRejectedByAFullQueueSkipsItsSlotAndTheScheduleGoesOn) {
  ThreadPoolConfig config;
  config.thread_count = 1;
  config.max_queue_size = 1;
  ThreadPool pool(config);
  CancellationSource filler_source;
  auto filler = pool.submit_after(1h, [] {}, TaskOptions().set_cancellation(filler_source.token()));
  ASSERT_EQ(filler.status(), TaskStatus::queued);
  Events bodies;
  PeriodicTask task(pool, 5ms, [&bodies] { bodies.bump(); });
  ASSERT_TRUE(spin_until_true([&pool] { return pool.stats().rejected >= 1; }));
  EXPECT_TRUE(task.running()) << "a full queue stopped the periodic task";
  filler_source.request_cancel();
  ASSERT_TRUE(bodies.wait_at_least(2)) << "the schedule ended with a rejected tick";
  EXPECT_GE(task.skipped_ticks(), 1u);
}

TEST(PeriodicTask, ATickWhoseTimeoutPassesWhileQueuedSkipsItsSlotAndTheScheduleGoesOn) {
  ThreadPool pool(1);
  Gate gate;
  OpenOnExit open(gate);
  auto blockers = test::block_workers(pool, gate, 1);
  Events bodies;
  PeriodicTask task(pool, 5ms, [&bodies] { bodies.bump(); }, TaskOptions().set_timeout(10ms));
  // The one worker is held: the first tick waits in the queue past its timeout.
  ASSERT_TRUE(spin_until_true([&pool] { return pool.stats().timed_out >= 1; }));
  EXPECT_TRUE(task.running());
  gate.open();
  ASSERT_TRUE(bodies.wait_at_least(1)) << "the schedule ended when a queued tick timed out";
  EXPECT_GE(task.skipped_ticks(), 1u);
}

TEST(PeriodicTask, SkippedTicksClimbWhileATickOverruns) {
  // §12: a monitor watching an overrunning tick sees the slots it misses
  // counted as they pass, not all at once when it ends.
  constexpr auto kInterval = 2ms;
  ThreadPool pool(2);
  Gate hold;
  Events bodies;
  std::atomic<int> n{0};
  PeriodicTask task(pool, kInterval, [&] {
    if (n.fetch_add(1) == 0) hold.wait();
    bodies.bump();
  });
  OpenOnExit open(hold);
  std::uint64_t seen = 0;
  ASSERT_TRUE(spin_until_true([&] {
    const std::uint64_t now = task.skipped_ticks();
    EXPECT_GE(now, seen) << "skipped_ticks() went down while the tick overran";
    seen = now;
    return now >= 3;
  })) << "the overrun's slots were not counted while it ran";
  EXPECT_EQ(bodies.count(), 0u) << "the first tick ended while held";
  hold.open();
  ASSERT_TRUE(bodies.wait_at_least(2));
  EXPECT_GE(task.skipped_ticks(), seen) << "the count went down when the tick ended";
}

// ---- stop, join, the destructor -------------------------------------------------------

TEST(PeriodicTask, StopCancelsTheRunningTicksTokenAndReturnsWithoutWaitingForIt) {
  ThreadPool pool(2);
  Gate finish;
  Events started;
  Events saw_cancel;
  std::atomic<CancelReason> reason{CancelReason::none};
  std::atomic<bool> exited{false};
  PeriodicTask task(pool, 10ms, [&](CancellationToken token) {
    started.bump();
    if (test::wait_cancelled(token)) reason = token.reason();
    saw_cancel.bump();
    finish.wait();
    exited = true;
  });
  OpenOnExit open(finish);  // after the task: opens before its destructor joins
  ASSERT_TRUE(started.wait_at_least(1));
  EXPECT_TRUE(task.running());
  {
    test::GuardedRun stop([&task] { task.stop(); });
    // The tick is held on `finish` until after this: stop() must not wait.
    ASSERT_TRUE(stop.finished_within(test::kGuard)) << "stop() waited for the tick";
  }
  EXPECT_FALSE(task.running());
  EXPECT_FALSE(exited.load());
  ASSERT_TRUE(saw_cancel.wait_at_least(1));
  EXPECT_EQ(reason.load(), CancelReason::requested);
  finish.open();
  task.join();
  EXPECT_TRUE(exited.load());
  EXPECT_EQ(task.ticks(), 1u);
  task.stop();  // idempotent
  EXPECT_FALSE(task.running());
}

TEST(PeriodicTask, JoinWaitsForTheTickInFlight) {
  ThreadPool pool(2);
  Gate finish;
  Events started;
  std::atomic<bool> exited{false};
  PeriodicTask task(pool, 10ms, [&] {
    started.bump();
    finish.wait();
    exited = true;
  });
  ASSERT_TRUE(started.wait_at_least(1));
  task.stop();
  test::GuardedRun join([&task] { task.join(); });
  OpenOnExit open(finish);  // after the joiner: opens before it is joined
  // The tick cannot end before `finish` opens, so neither can join().
  EXPECT_FALSE(join.finished_within(50ms)) << "join() returned with the tick in flight";
  finish.open();
  ASSERT_TRUE(join.finished_within(test::kGuard));
  EXPECT_TRUE(exited.load());
}

TEST(PeriodicTask, AfterStopAndJoinNoBodyRuns) {
  constexpr auto kInterval = 5ms;
  ThreadPool pool(2);
  Events bodies;
  PeriodicTask task(pool, kInterval, [&bodies] { bodies.bump(); });
  ASSERT_TRUE(bodies.wait_at_least(2));
  task.stop();
  task.join();
  const std::uint64_t seen = bodies.count();
  EXPECT_EQ(task.ticks(), seen);
  wait_slots(pool, kInterval, 5);
  EXPECT_EQ(bodies.count(), seen) << "a tick ran after stop() and join()";
  EXPECT_EQ(task.ticks(), seen);
}

TEST(PeriodicTask, TheOptionsTokenStopsItAsStopDoes) {
  constexpr auto kInterval = 10ms;
  ThreadPool pool(2);
  CancellationSource source;
  Events started;
  Events saw_cancel;
  std::atomic<CancelReason> reason{CancelReason::none};
  PeriodicTask task(
      pool, kInterval,
      [&](CancellationToken token) {
        started.bump();
        if (test::wait_cancelled(token)) reason = token.reason();
        saw_cancel.bump();
      },
      TaskOptions().set_cancellation(source.token()));
  ASSERT_TRUE(started.wait_at_least(1));
  EXPECT_TRUE(task.running());
  source.request_cancel(CancelReason::shutdown);  // a reason the tick passes on
  EXPECT_FALSE(task.running());
  ASSERT_TRUE(saw_cancel.wait_at_least(1));
  EXPECT_EQ(reason.load(), CancelReason::shutdown);
  task.join();
  wait_slots(pool, kInterval, 4);
  EXPECT_EQ(started.count(), 1u);
  EXPECT_EQ(task.ticks(), 1u);
}

TEST(PeriodicTask, AnAlreadyCancelledOptionsTokenMeansNoTickAtAll) {
  constexpr auto kInterval = 5ms;
  ThreadPool pool(2);
  CancellationSource source;
  source.request_cancel();
  std::atomic<int> bodies{0};
  PeriodicTask task(pool, kInterval, [&bodies] { bodies.fetch_add(1); },
                    TaskOptions().set_cancellation(source.token()));
  EXPECT_FALSE(task.running());
  wait_slots(pool, kInterval, 4);
  EXPECT_EQ(bodies.load(), 0);
  EXPECT_EQ(task.ticks(), 0u);
}

TEST(PeriodicTask, TheDestructorStopsAndJoins) {
  ThreadPool pool(2);
  Gate finish;
  Events started;
  Events saw_cancel;
  std::atomic<bool> exited{false};
  auto task = std::make_unique<PeriodicTask>(pool, 10ms, [&](CancellationToken token) {
    started.bump();
    test::wait_cancelled(token);
    saw_cancel.bump();
    finish.wait();
    exited = true;
  });
  ASSERT_TRUE(started.wait_at_least(1));
  test::GuardedRun destroy([&task] { task.reset(); });
  OpenOnExit open(finish);  // after the destroyer: opens before it is joined
  ASSERT_TRUE(saw_cancel.wait_at_least(1)) << "the destructor did not stop the tick";
  EXPECT_FALSE(destroy.finished_within(50ms)) << "the destructor did not wait for the tick";
  finish.open();
  ASSERT_TRUE(destroy.finished_within(test::kGuard));
  EXPECT_TRUE(exited.load());
  EXPECT_EQ(started.count(), 1u);
}

TEST(PeriodicTask, JoinFromItsOwnTickThrowsLogicError) {
  ThreadPool pool(2);
  std::latch constructed(1);
  PeriodicTask* self = nullptr;
  std::atomic<int> threw{0};
  Events bodies;
  PeriodicTask task(pool, 5ms, [&] {
    constructed.wait();
    try {
      self->join();
    } catch (const std::logic_error&) {
      threw.fetch_add(1);
    }
    bodies.bump();
  });
  self = &task;
  constructed.count_down();
  ASSERT_TRUE(bodies.wait_at_least(1));
  task.stop();
  task.join();
  EXPECT_EQ(static_cast<std::uint64_t>(threw.load()), task.ticks());
  EXPECT_EQ(task.failed_ticks(), 0u);
}

// ---- the pool -------------------------------------------------------------------------

TEST(PeriodicTask, WaitIdleDoesNotWaitForTicksNotYetDue) {
  ThreadPool pool(2);
  PeriodicTask task(pool, 1h, [] {});
  auto done = pool.submit([] { return 1; });
  test::GuardedRun wait([&pool] { pool.wait_idle(); });
  EXPECT_TRUE(wait.finished_within(test::kGuard)) << "wait_idle() waited for a tick";
  EXPECT_EQ(done.get(), 1);
  EXPECT_TRUE(task.running());
}

TEST(PeriodicTask, ThePoolsShutdownStopsIt) {
  ThreadPool pool(2);
  PeriodicTask task(pool, 1h, [] {});
  ASSERT_TRUE(task.running());
  pool.shutdown();
  EXPECT_FALSE(task.running());
  EXPECT_EQ(task.ticks(), 0u);
}

TEST(PeriodicTask, ACancelShutdownCancelsTheRunningTickAndStopsIt) {
  ThreadPoolConfig config;
  config.thread_count = 2;
  config.shutdown_policy = ShutdownPolicy::cancel;
  ThreadPool pool(config);
  Events started;
  std::atomic<CancelReason> reason{CancelReason::none};
  PeriodicTask task(pool, 5ms, [&](CancellationToken token) {
    started.bump();
    if (test::wait_cancelled(token)) reason = token.reason();
  });
  ASSERT_TRUE(started.wait_at_least(1));
  pool.shutdown();
  EXPECT_EQ(reason.load(), CancelReason::shutdown);
  EXPECT_FALSE(task.running());
  EXPECT_EQ(task.ticks(), 1u);
}

TEST(PeriodicTask, ACancelShutdownThatDropsAQueuedTickStopsIt) {
  // One worker, held by a task that ends when the shutdown cancels it; the
  // tick that falls due meanwhile waits in the queue and is dropped.
  ThreadPoolConfig config;
  config.thread_count = 1;
  config.shutdown_policy = ShutdownPolicy::cancel;
  ThreadPool pool(config);
  Events blocker_started;
  auto blocker = pool.submit([&](CancellationToken token) {
    blocker_started.bump();
    test::wait_cancelled(token);
  });
  ASSERT_TRUE(blocker_started.wait_at_least(1));
  std::atomic<int> bodies{0};
  PeriodicTask task(pool, 1ms, [&bodies] { bodies.fetch_add(1); });
  // Wait until a tick is queued behind the blocker.
  const auto limit = Clock::now() + test::kGuard;
  while (pool.stats().queued == 0 && Clock::now() < limit) std::this_thread::yield();
  ASSERT_EQ(pool.stats().queued, 1u);
  pool.shutdown();
  EXPECT_EQ(bodies.load(), 0);
  EXPECT_FALSE(task.running());
}

TEST(PeriodicTask, ADrainShutdownLetsTheRunningTickEndAndStopsIt) {
  ThreadPool pool(2);
  Gate finish;
  Events started;
  std::atomic<bool> exited{false};
  PeriodicTask task(pool, 5ms, [&] {
    started.bump();
    finish.wait();
    exited = true;
  });
  ASSERT_TRUE(started.wait_at_least(1));
  {
    test::GuardedRun shutdown([&pool] { pool.shutdown(); });
    OpenOnExit open(finish);  // after the shutdown's thread: opens before it is joined
    EXPECT_FALSE(shutdown.finished_within(20ms)) << "a drain shutdown did not wait for the tick";
    finish.open();
    ASSERT_TRUE(shutdown.finished_within(test::kGuard));
  }
  EXPECT_TRUE(exited.load());
  EXPECT_FALSE(task.running());
  EXPECT_EQ(task.ticks(), 1u);
}

}  // namespace
}  // namespace quell
