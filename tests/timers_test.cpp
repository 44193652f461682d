// The pool's timer service as users see it: delayed tasks (submit_after,
// submit_at) and deadlines (API.md §6, §8, §9 "The pool" and "Periodic work
// and timers").
//
// Time appears in two roles only: as an ordering fact ("started no earlier
// than its due time", which no scheduling delay can break) and as a generous
// failure guard. Nothing waits for a guessed amount of time to pass.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <dirent.h>
#include <fstream>
#include <future>
#include <latch>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

#include "pool_test_support.hpp"
#include "quell/thread_pool.hpp"

namespace quell {
namespace {

using namespace std::chrono_literals;
using test::DestructionProbe;
using test::Gate;
using test::OpenOnExit;
using Clock = std::chrono::steady_clock;

// A move-only capture that records when the live object was destroyed.
class TimeProbe {
 public:
  struct Record {
    std::atomic<int> destroyed{0};
    std::atomic<Clock::time_point> at{};
  };

  explicit TimeProbe(Record* record) : record_(record) {}
  TimeProbe(TimeProbe&& other) noexcept : record_(std::exchange(other.record_, nullptr)) {}
  TimeProbe(const TimeProbe&) = delete;
  TimeProbe& operator=(const TimeProbe&) = delete;
  TimeProbe& operator=(TimeProbe&&) = delete;
  ~TimeProbe() {
    if (record_ != nullptr) {
      record_->at.store(Clock::now());
      record_->destroyed.fetch_add(1);
    }
  }

 private:
  Record* record_;
};

// Holds the pool's timer thread: a running task registers a callback on its
// own token that blocks until released; the task's deadline fires it on the
// timer thread. While held, nothing that needs the timer can happen.
class TimerHold {
 public:
  explicit TimerHold(ThreadPool& pool) {
    task_ = pool.submit(
        [this](CancellationToken token) {
          const std::thread::id body = std::this_thread::get_id();
          CancellationCallback hold(token, [this, body] {
            on_timer_ = std::this_thread::get_id() != body;
            held_.count_down();
            release_.wait();
          });
          release_.wait();  // ~CancellationCallback waits for the callback: hold until then
        },
        // Long enough for the task to register its callback first.
        TaskOptions().set_timeout(200ms));
  }
  TimerHold(const TimerHold&) = delete;
  TimerHold& operator=(const TimerHold&) = delete;
  ~TimerHold() { release(); }

  // True once the timer thread is held.
  bool wait_held() {
    // A latch has no timed wait: poll it, yielding, under the guard.
    const auto limit = Clock::now() + test::kGuard;
    while (!held_.try_wait()) {
      if (Clock::now() > limit) return false;
      std::this_thread::yield();
    }
    return on_timer_.load();
  }
  void release() {
    release_.open();
    if (task_.valid()) task_.wait();
  }

 private:
  std::latch held_{1};
  std::atomic<bool> on_timer_{false};
  Gate release_;
  Future<void> task_;
};

// ---- delayed tasks --------------------------------------------------------------------

TEST(TimersDelayed, ADelayedTaskIsQueuedBeforeItIsDue) {
  ThreadPool pool(2);
  CancellationSource source;
  const TaskOptions options = TaskOptions().set_cancellation(source.token());
  auto after = pool.submit_after(1h, [] { return 1; }, options);
  auto at = pool.submit_at(Clock::now() + 1h, [] { return 2; }, options);
  EXPECT_EQ(after.status(), TaskStatus::queued);
  EXPECT_EQ(at.status(), TaskStatus::queued);
  EXPECT_EQ(after.result(), TaskResult::none);
  EXPECT_FALSE(at.ready());
  const ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.queued, 2u);
  EXPECT_EQ(stats.running, 0u);
  source.request_cancel();
}

TEST(TimersDelayed, SubmitAfterRunsTheTaskNoEarlierThanItsDueTime) {
  ThreadPool pool(2);
  std::atomic<Clock::time_point> started{};
  const auto before = Clock::now();
  auto future = pool.submit_after(100ms, [&started] {
    started = Clock::now();
    return 7;
  });
  EXPECT_EQ(future.get(), 7);
  EXPECT_GE(started.load(), before + 100ms);
  EXPECT_EQ(future.status(), TaskStatus::completed);
}

TEST(TimersDelayed, SubmitAtRunsTheTaskNoEarlierThanItsDueTime) {
  ThreadPool pool(2);
  std::atomic<Clock::time_point> started{};
  const auto when = Clock::now() + 100ms;
  auto future = pool.submit_at(when, [&started](CancellationToken token) {
    started = Clock::now();
    return token.can_cancel();
  });
  EXPECT_TRUE(future.get());
  EXPECT_GE(started.load(), when);
}

TEST(TimersDelayed, SeveralDelayedTasksStartInTheOrderOfTheirDueTimes) {
  // One worker: the timer hands due tasks over in due order, and the one
  // worker takes them first in, first out.
  ThreadPool pool(1);
  std::mutex mutex;
  std::vector<int> order;
  std::vector<Clock::time_point> started(5);
  const auto base = Clock::now() + 50ms;
  const int slots[] = {3, 0, 4, 1, 2};  // submitted out of order
  std::vector<Future<void>> futures;
  for (int slot : slots) {
    futures.push_back(pool.submit_at(base + slot * 15ms, [&, slot] {
      std::lock_guard lock(mutex);
      order.push_back(slot);
      started[static_cast<std::size_t>(slot)] = Clock::now();
    }));
  }
  pool.wait_idle();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
  for (int slot = 0; slot < 5; ++slot) {
    EXPECT_GE(started[static_cast<std::size_t>(slot)], base + slot * 15ms) << "slot " << slot;
  }
}

TEST(TimersDelayed, CancellingBeforeItIsDueDropsItAtOnceAndDestroysItsCaptures) {
  ThreadPool pool(2);
  CancellationSource source;
  DestructionProbe::Record record;
  auto future = pool.submit_after(1h, [probe = DestructionProbe(&record)] { return 1; },
                                  TaskOptions().set_cancellation(source.token()));
  ASSERT_EQ(future.status(), TaskStatus::queued);
  EXPECT_EQ(record.destroyed.load(), 0);
  EXPECT_TRUE(source.request_cancel());
  // At once: before request_cancel() returned, on this thread.
  EXPECT_EQ(record.destroyed.load(), 1);
  EXPECT_EQ(record.thread.load(), std::this_thread::get_id());
  EXPECT_TRUE(future.ready());
  EXPECT_EQ(future.status(), TaskStatus::cancelled);
  EXPECT_EQ(future.error(), make_error_code(Errc::cancelled));
  EXPECT_THROW(future.get(), OperationCancelled);
  pool.wait_idle();
  const ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.cancelled, 1u);
  EXPECT_EQ(stats.completed, 0u);
  EXPECT_EQ(stats.queued, 0u);
}

TEST(TimersDelayed, ADelayedTaskCountsAgainstMaxQueueSizeUntilItIsResolved) {
  ThreadPoolConfig config;
  config.thread_count = 1;
  config.max_queue_size = 1;
  ThreadPool pool(config);
  CancellationSource source;
  auto delayed = pool.submit_after(1h, [] { return 1; },
                                   TaskOptions().set_cancellation(source.token()));
  ASSERT_EQ(delayed.status(), TaskStatus::queued);
  EXPECT_EQ(pool.stats().queued, 1u);
  auto over = pool.submit([] { return 2; });
  EXPECT_EQ(over.status(), TaskStatus::rejected);
  EXPECT_FALSE(pool.post([] {}));
  auto over_delayed = pool.submit_after(1ms, [] { return 3; });
  EXPECT_EQ(over_delayed.status(), TaskStatus::rejected);
  // Dropping it frees its place.
  source.request_cancel();
  EXPECT_EQ(pool.submit([] { return 4; }).get(), 4);
  // So does a deadline that passes while it waits.
  auto timed = pool.submit_after(1h, [] { return 5; }, TaskOptions().set_timeout(20ms));
  ASSERT_TRUE(timed.wait_for(test::kGuard));
  EXPECT_EQ(timed.status(), TaskStatus::timed_out);
  EXPECT_EQ(pool.submit([] { return 6; }).get(), 6);
  pool.wait_idle();
  const ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.rejected, 3u);
  EXPECT_EQ(stats.submitted, 7u);
  EXPECT_EQ(stats.queued, 0u);
}

TEST(TimersDelayed, ItsDeadlineAppliesWhileItWaits) {
  ThreadPool pool(2);
  TimeProbe::Record record;
  const auto before = Clock::now();
  auto future = pool.submit_after(1h, [probe = TimeProbe(&record)] { return 1; },
                                  TaskOptions().set_timeout(100ms));
  ASSERT_TRUE(future.wait_for(test::kGuard)) << "the deadline did not fire";
  EXPECT_EQ(future.status(), TaskStatus::timed_out);
  EXPECT_EQ(future.error(), make_error_code(Errc::timed_out));
  EXPECT_EQ(record.destroyed.load(), 1);
  EXPECT_GE(record.at.load(), before + 100ms) << "dropped before its deadline";

  const auto deadline = Clock::now() + 50ms;
  auto at = pool.submit_at(Clock::now() + 1h, [] { return 2; },
                           TaskOptions().set_deadline(deadline));
  ASSERT_TRUE(at.wait_for(test::kGuard));
  EXPECT_EQ(at.status(), TaskStatus::timed_out);
  pool.wait_idle();
  EXPECT_EQ(pool.stats().timed_out, 2u);
}

TEST(TimersDelayed, WaitIdleWaitsForDelayedTasks) {
  ThreadPool pool(2);
  std::atomic<int> ran{0};
  const auto before = Clock::now();
  for (auto delay : {30ms, 60ms, 90ms}) {
    pool.post([&ran] { ran.fetch_add(1); });
    (void)pool.submit_after(delay, [&ran] { ran.fetch_add(1); });
  }
  pool.wait_idle();
  EXPECT_EQ(ran.load(), 6);
  EXPECT_GE(Clock::now(), before + 90ms);
  const ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.completed, 6u);
  EXPECT_EQ(stats.queued, 0u);
  EXPECT_EQ(stats.running, 0u);
}

TEST(TimersDelayed, SubmitAtAPastTimeRunsAtOnceWithoutTheTimer) {
  ThreadPool pool(2);
  TimerHold hold(pool);
  ASSERT_TRUE(hold.wait_held()) << "the timer thread was not held";
  // The timer thread is busy: only a task that bypasses it can run now.
  auto past = pool.submit_at(Clock::now() - 1h, [] { return 1; });
  auto zero = pool.submit_after(Clock::duration::zero(), [] { return 2; });
  auto negative = pool.submit_after(-1h, [] { return 3; });
  EXPECT_TRUE(past.wait_for(test::kGuard));
  EXPECT_TRUE(zero.wait_for(test::kGuard));
  EXPECT_TRUE(negative.wait_for(test::kGuard));
  hold.release();
  EXPECT_EQ(past.get(), 1);
  EXPECT_EQ(zero.get(), 2);
  EXPECT_EQ(negative.get(), 3);
}

// Ticks of CPU time (user + system) the pool's timer thread has used, found
// by its name (thread_name + "-timer"); -1 if not found.
long timer_thread_cpu_ticks(const std::string& name) {
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return -1;
  long ticks = -1;
  while (dirent* entry = readdir(dir)) {
    const std::string tid = entry->d_name;
    if (tid == "." || tid == "..") continue;
    std::ifstream comm("/proc/self/task/" + tid + "/comm");
    std::string comm_name;
    std::getline(comm, comm_name);
    if (comm_name != name) continue;
    std::ifstream stat("/proc/self/task/" + tid + "/stat");
    std::string line;
    std::getline(stat, line);
    // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
    std::istringstream fields(line.substr(line.rfind(')') + 2));
    std::string field;
    long utime = 0;
    long stime = 0;
    for (int i = 3; i <= 15 && fields >> field; ++i) {
      if (i == 14) utime = std::stol(field);
      if (i == 15) stime = std::stol(field);
    }
    ticks = utime + stime;
  }
  closedir(dir);
  return ticks;
}

TEST(TimersDelayed, TheLongestDelaysDoNotOverflow) {
  // The timer thread's CPU time is found through its name.
  if (!test::kThreadNames) GTEST_SKIP() << "built without thread names";
  ThreadPoolConfig config;
  config.thread_count = 1;
  config.thread_name = "tmax";
  ThreadPool pool(config);
  auto after = pool.submit_after(Clock::duration::max(), [] { return 1; });
  auto at = pool.submit_at(Clock::time_point::max(), [] { return 2; });
  EXPECT_EQ(after.status(), TaskStatus::queued) << "an overflowed due time ran at once";
  EXPECT_EQ(at.status(), TaskStatus::queued);
  // A timeout of duration::max() is no deadline at all, not one in the past.
  auto timed = pool.submit([] { return 3; }, TaskOptions().set_timeout(Clock::duration::max()));
  ASSERT_TRUE(timed.wait_for(test::kGuard));
  EXPECT_EQ(timed.status(), TaskStatus::completed) << to_string(timed.status());
  auto timed_delayed = pool.submit_after(1ms, [] { return 4; },
                                         TaskOptions().set_timeout(Clock::duration::max()));
  ASSERT_TRUE(timed_delayed.wait_for(test::kGuard));
  EXPECT_EQ(timed_delayed.status(), TaskStatus::completed) << to_string(timed_delayed.status());
  // A timer thread waiting for time_point::max() sleeps: an overflowed
  // wait would return at once and spin. The window is a measurement.
  const long cpu_before = timer_thread_cpu_ticks("tmax-timer");
  ASSERT_GE(cpu_before, 0) << "no thread named tmax-timer";
  std::promise<void> never;
  const std::future<void> quiet = never.get_future();
  const auto wall_before = Clock::now();
  quiet.wait_for(300ms);
  const auto wall = Clock::now() - wall_before;
  const long cpu = timer_thread_cpu_ticks("tmax-timer") - cpu_before;
  const long wall_ticks =
      static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(wall).count()) *
      sysconf(_SC_CLK_TCK) / 1000;
  EXPECT_LT(cpu, wall_ticks / 4 + 1) << "the timer thread spun";
  EXPECT_EQ(after.status(), TaskStatus::queued);
  EXPECT_EQ(at.status(), TaskStatus::queued);
  pool.shutdown();
  EXPECT_EQ(after.status(), TaskStatus::cancelled);
  EXPECT_EQ(at.status(), TaskStatus::cancelled);
}

// ---- shutdown -------------------------------------------------------------------------

void check_shutdown_resolves_delayed_tasks_without_waiting(ShutdownPolicy policy) {
  ThreadPoolConfig config;
  config.thread_count = 2;
  config.shutdown_policy = policy;
  ThreadPool pool(config);
  DestructionProbe::Record record;
  auto delayed = pool.submit_after(1h, [probe = DestructionProbe(&record)] { return 1; });
  auto at = pool.submit_at(Clock::now() + 1h, [] { return 2; });
  auto ready = pool.submit([] { return 3; });
  test::GuardedRun shutdown([&] { pool.shutdown(); });
  ASSERT_TRUE(shutdown.finished_within(test::kGuard)) << "shutdown waited for a timer";
  EXPECT_EQ(delayed.status(), TaskStatus::cancelled);
  EXPECT_EQ(at.status(), TaskStatus::cancelled);
  EXPECT_THROW(delayed.get(), OperationCancelled);
  EXPECT_EQ(record.destroyed.load(), 1);
  if (policy == ShutdownPolicy::drain) {
    EXPECT_EQ(ready.get(), 3);
  } else {
    EXPECT_TRUE(ready.ready());
  }
  const ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.queued, 0u);
  EXPECT_EQ(stats.completed + stats.cancelled, 3u);
}

TEST(TimersShutdown, ADrainShutdownResolvesDelayedTasksNotYetDueAsCancelledWithoutWaiting) {
  check_shutdown_resolves_delayed_tasks_without_waiting(ShutdownPolicy::drain);
}

TEST(TimersShutdown, ACancelShutdownResolvesDelayedTasksNotYetDueAsCancelledWithoutWaiting) {
  check_shutdown_resolves_delayed_tasks_without_waiting(ShutdownPolicy::cancel);
}

TEST(TimersShutdown, ADelayedSubmissionAfterShutdownIsRejected) {
  ThreadPool pool(1);
  pool.shutdown();
  DestructionProbe::Record record;
  auto after = pool.submit_after(1ms, [probe = DestructionProbe(&record)] { return 1; });
  auto at = pool.submit_at(Clock::now(), [] { return 2; });
  EXPECT_EQ(after.status(), TaskStatus::rejected);
  EXPECT_EQ(at.status(), TaskStatus::rejected);
  EXPECT_EQ(record.destroyed.load(), 1);
  EXPECT_EQ(pool.stats().rejected, 2u);
}

// ---- deadlines ------------------------------------------------------------------------

class TimersDeadlineP : public ::testing::TestWithParam<std::size_t> {};

TEST_P(TimersDeadlineP, AQueuedTaskIsResolvedTimedOutAtItsDeadlineWhileEveryWorkerIsBusy) {
  ThreadPool pool(GetParam());
  Gate gate;
  OpenOnExit open(gate);
  auto blockers = test::block_workers(pool, gate, GetParam());
  TimeProbe::Record record;
  std::atomic<bool> ran{false};
  const auto before = Clock::now();
  auto future = pool.submit([&ran, probe = TimeProbe(&record)] { ran = true; },
                            TaskOptions().set_timeout(100ms));
  EXPECT_EQ(future.status(), TaskStatus::queued);
  // Every worker stays blocked until the gate opens below: the pool cannot
  // have reached the task, so only the deadline can resolve it.
  ASSERT_TRUE(future.wait_for(test::kGuard)) << "not resolved at its deadline";
  EXPECT_FALSE(gate.is_open());
  EXPECT_EQ(future.status(), TaskStatus::timed_out);
  EXPECT_EQ(record.destroyed.load(), 1) << "captures not destroyed when it timed out";
  EXPECT_GE(record.at.load(), before + 100ms);
  ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.timed_out, 1u);
  EXPECT_EQ(stats.queued, 0u);
  EXPECT_EQ(stats.running, GetParam());
  gate.open();
  pool.wait_idle();
  EXPECT_FALSE(ran.load());
  EXPECT_THROW(future.get(), TaskError);
  stats = pool.stats();
  EXPECT_EQ(stats.timed_out, 1u);
  EXPECT_EQ(stats.completed, GetParam());
}

INSTANTIATE_TEST_SUITE_P(PoolSizes, TimersDeadlineP, ::testing::Values(1, 2, 4),
                         test::pool_size_name);

TEST(TimersDeadline, AQueuedTaskWhoseDeadlinePassedNeverStartsWhenTheTimerAndAWorkerRace) {
  // The worker that takes the task after its deadline and the timer thread
  // that fires the deadline both cancel the task's token; the loser of that
  // request must not start the task while the winner's hook has yet to drop
  // it. The race is narrow: many rounds, each releasing the worker as the
  // deadline passes.
  ThreadPool pool(1);
  int ran = 0;
  for (int round = 0; round < 300; ++round) {
    Gate gate;
    auto blockers = test::block_workers(pool, gate, 1);
    std::atomic<bool> started{false};
    const auto deadline = Clock::now() + 2ms;
    auto future = pool.submit([&started] { started = true; }, TaskOptions().set_deadline(deadline));
    // Open at staggered moments around the timer's wake-up.
    test::spin_until(deadline + (round % 8) * 10us);
    gate.open();
    ASSERT_TRUE(future.wait_for(test::kGuard));
    if (started.load() || future.status() != TaskStatus::timed_out) ++ran;
    pool.wait_idle();
  }
  EXPECT_EQ(ran, 0) << "tasks started after their deadline had passed";
}

TEST(TimersDeadline, ARunningTasksTokenIsCancelledWithReasonDeadlineWhileItRuns) {
  ThreadPool pool(2);
  std::atomic<Clock::time_point> seen{};
  const auto before = Clock::now();
  auto future = pool.submit(
      [&seen](CancellationToken token) {
        const bool fired = test::wait_cancelled(token);
        seen = Clock::now();
        return fired ? token.reason() : CancelReason::none;
      },
      TaskOptions().set_timeout(100ms));
  EXPECT_EQ(future.get(), CancelReason::deadline);
  EXPECT_GE(seen.load(), before + 100ms);
  // It returned normally: completed, cancellation being cooperative.
  EXPECT_EQ(future.status(), TaskStatus::completed);
}

TEST(TimersDeadline, ARunningTaskThatExitsWithOperationCancelledAtItsDeadlineEndsTimedOut) {
  ThreadPool pool(2);
  auto future = pool.submit(
      [] {
        if (test::wait_cancelled(this_task::cancellation_token())) {
          this_task::cancellation_token().throw_if_cancelled();
        }
        return 1;
      },
      TaskOptions().set_deadline(Clock::now() + 50ms));
  ASSERT_TRUE(future.wait_for(test::kGuard));
  EXPECT_EQ(future.status(), TaskStatus::timed_out);
  pool.wait_idle();
  EXPECT_EQ(pool.stats().timed_out, 1u);
}

TEST(TimersDeadline, ATaskThatEndsBeforeItsDeadlineIsCompletedAndItsTokenNeverFires) {
  ThreadPool pool(2);
  std::atomic<int> fired{0};
  auto future = pool.submit(
      [&fired](CancellationToken token) {
        // The callback outlives the task body only if the deadline fires late.
        CancellationCallback count(token, [&fired] { fired.fetch_add(1); });
        return 1;
      },
      TaskOptions().set_timeout(1h));
  EXPECT_EQ(future.get(), 1);
  EXPECT_EQ(future.status(), TaskStatus::completed);
  EXPECT_EQ(fired.load(), 0);
  pool.wait_idle();
  const ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.completed, 1u);
  EXPECT_EQ(stats.timed_out, 0u);
}

TEST(TimersDeadline, AFinishedTasksTimerEntryDoesNotKeepItsResultAlive) {
  // A task with a deadline has an entry in the timer heap that holds a
  // reference to the task's block, and so to its result. When the task ends
  // first, the entry is a tombstone until swept. TimerService::push sweeps
  // when the heap holds at least 64 entries and the count of deaths since
  // the last sweep exceeds half of them; so once every task has ended, the
  // next insertion sweeps every tombstone, unless fewer than 64 are left.
  // A death that races a sweep may go uncounted, so the test inserts until
  // a sweep happens rather than exactly once.
  constexpr int kTasks = 10000;
  constexpr int kSweepFloor = 64;
  ThreadPool pool(2);
  DestructionProbe::Record results;
  {
    std::vector<Future<DestructionProbe>> futures;
    futures.reserve(kTasks);
    for (int i = 0; i < kTasks; ++i) {
      futures.push_back(pool.submit([&results] { return DestructionProbe(&results); },
                                    TaskOptions().set_timeout(1h)));
    }
    pool.wait_idle();
  }  // the futures go; the results are now held by the timer entries only
  const auto limit = Clock::now() + test::kGuard;
  int inserted = 0;
  while (results.destroyed.load() < kTasks - kSweepFloor && Clock::now() < limit) {
    pool.submit([&results] { return DestructionProbe(&results); }, TaskOptions().set_timeout(1h))
        .wait();
    ++inserted;
    std::this_thread::yield();
  }
  EXPECT_GE(results.destroyed.load(), kTasks - kSweepFloor)
      << "finished tasks' results are kept alive by their timer entries (" << inserted
      << " insertions after they ended)";
  pool.shutdown();
  EXPECT_EQ(results.destroyed.load(), kTasks + inserted);
}

TEST(TimersDeadline, StatsCountTasksResolvedByTheirDeadline) {
  ThreadPool pool(1);
  Gate gate;
  OpenOnExit open(gate);
  auto blockers = test::block_workers(pool, gate, 1);
  std::vector<Future<int>> timed;
  for (int i = 0; i < 5; ++i) {
    timed.push_back(pool.submit([] { return 1; }, TaskOptions().set_timeout(20ms)));
  }
  auto untimed = pool.submit([] { return 2; });
  for (auto& future : timed) ASSERT_TRUE(future.wait_for(test::kGuard));
  EXPECT_EQ(pool.stats().timed_out, 5u);
  EXPECT_EQ(pool.stats().queued, 1u);
  gate.open();
  EXPECT_EQ(untimed.get(), 2);
  pool.wait_idle();
  const ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.timed_out, 5u);
  EXPECT_EQ(stats.completed, 2u);
  EXPECT_EQ(stats.submitted, 7u);
}

}  // namespace
}  // namespace quell
