// TaskGroup: results, cancellation of running and queued tasks, waiting,
// failures, sizes, destruction, concurrent submission and fork-join on the
// pool's own workers (API.md §7 and §9 "Groups and scopes", "Outcomes").
#include "quell/task_group.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <latch>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "pool_test_support.hpp"
#include "sanitized.hpp"
#include "quell/cancellation.hpp"
#include "quell/error.hpp"
#include "quell/scope.hpp"
#include "quell/thread_pool.hpp"

namespace quell {
namespace {

using namespace std::chrono_literals;
using test::DestructionProbe;
using test::Gate;
using test::OpenOnExit;

class TaskGroupP : public ::testing::TestWithParam<std::size_t> {
 protected:
  std::size_t workers() const { return GetParam(); }
};

// Runs `action` on another thread and aborts the binary if it has not
// returned within the guard: a deadlock would otherwise hang every test
// after this one.
void finishes_or_abort(const std::function<void()>& action, const char* what) {
  test::GuardedRun run(action);
  if (!run.finished_within(test::kGuard)) {
    std::fprintf(stderr, "%s did not finish within the guard: a deadlock\n", what);
    std::abort();
  }
}

// ---- results -------------------------------------------------------------

TEST_P(TaskGroupP, SubmitReturnsFuturesThatCarryTheTasksResults) {
  ThreadPool pool(workers());
  TaskGroup group(pool);
  std::vector<Future<int>> futures;
  for (int i = 0; i < 200; ++i) futures.push_back(group.submit([i] { return i * i; }));
  Future<std::unique_ptr<int>> move_only =
      group.submit([probe = std::make_unique<int>(7)]() mutable { return std::move(probe); });
  for (int i = 0; i < 200; ++i) EXPECT_EQ(futures[static_cast<std::size_t>(i)].get(), i * i);
  EXPECT_EQ(*move_only.get(), 7);
  group.wait_and_rethrow();
}

TEST(TaskGroup, ATaskTakingATokenGetsItsOwnTokenWhichIsThisTasksToken) {
  ThreadPool pool(1);
  TaskGroup group(pool);
  Future<bool> same = group.submit([](CancellationToken token) {
    return token == this_task::cancellation_token() && token.can_cancel() && !token.cancelled();
  });
  EXPECT_TRUE(same.get());
}

TEST(TaskGroup, EverythingATaskDidHappensBeforeWaitReturns) {
  ThreadPool pool(2);
  std::vector<int> written(64, 0);  // plain memory: TSan checks the ordering
  TaskGroup group(pool);
  for (std::size_t i = 0; i < written.size(); ++i) {
    group.submit([&written, i] { written[i] = static_cast<int>(i) + 1; });
  }
  group.wait();
  for (std::size_t i = 0; i < written.size(); ++i) EXPECT_EQ(written[i], static_cast<int>(i) + 1);
}

// ---- cancellation ----------------------------------------------------------

TEST(TaskGroup, CancelCancelsRunningTasksTokensWithReasonRequested) {
  ThreadPool pool(2);
  TaskGroup group(pool);
  std::latch started(2);
  std::atomic<int> seen_requested{0};
  auto body = [&](CancellationToken token) {
    started.count_down();
    if (!test::wait_cancelled(token)) return false;
    if (token.reason() == CancelReason::requested) seen_requested.fetch_add(1);
    return true;
  };
  Future<bool> first = group.submit(body);
  Future<bool> second = group.submit(body);
  started.wait();
  EXPECT_FALSE(first.ready());
  group.cancel();
  EXPECT_TRUE(first.get());
  EXPECT_TRUE(second.get());
  EXPECT_EQ(seen_requested.load(), 2);
  // They returned normally after the request: cooperative, so completed.
  EXPECT_EQ(first.status(), TaskStatus::completed);
}

TEST(TaskGroup, ARunningTaskThatThrowsOperationCancelledEndsCancelled) {
  ThreadPool pool(1);
  TaskGroup group(pool);
  std::latch started(1);
  Future<void> future = group.submit([&](CancellationToken token) {
    started.count_down();
    ASSERT_TRUE(test::wait_cancelled(token));
    token.throw_if_cancelled();
  });
  started.wait();
  group.cancel();
  future.wait();
  EXPECT_EQ(future.status(), TaskStatus::cancelled);
  EXPECT_THROW(future.get(), OperationCancelled);
}

TEST(TaskGroup, CancelDropsQueuedTasksAtOnceAndDestroysTheirCapturesBeforeReturning) {
  ThreadPool pool(1);
  Gate gate;
  OpenOnExit open(gate);
  auto blockers = test::block_workers(pool, gate, 1);
  TaskGroup group(pool);
  constexpr int kQueued = 16;
  std::vector<DestructionProbe::Record> records(kQueued);
  std::atomic<int> ran{0};
  std::vector<Future<void>> futures;
  for (auto& record : records) {
    futures.push_back(group.submit([&ran, probe = DestructionProbe(&record)] { ran.fetch_add(1); }));
  }
  for (const auto& future : futures) ASSERT_FALSE(future.ready());
  for (const auto& record : records) ASSERT_EQ(record.destroyed.load(), 0);
  EXPECT_EQ(group.pending(), static_cast<std::size_t>(kQueued));

  group.cancel();

  // At once, on this thread: not when the worker gets to them.
  for (const auto& future : futures) {
    EXPECT_TRUE(future.ready());
    EXPECT_EQ(future.status(), TaskStatus::cancelled);
  }
  for (const auto& record : records) {
    EXPECT_EQ(record.destroyed.load(), 1);
    EXPECT_EQ(record.thread.load(), std::this_thread::get_id());
  }
  EXPECT_EQ(group.pending(), 0u);
  gate.open();
  pool.wait_idle();
  EXPECT_EQ(ran.load(), 0);
}

TEST(TaskGroup, CancelledAndCancellationTokenFollowTheGroup) {
  ThreadPool pool(1);
  TaskGroup group(pool);
  const CancellationToken token = group.cancellation_token();
  EXPECT_FALSE(group.cancelled());
  EXPECT_TRUE(token.can_cancel());
  EXPECT_FALSE(token.cancelled());
  EXPECT_EQ(token.reason(), CancelReason::none);
  group.cancel();
  EXPECT_TRUE(group.cancelled());
  EXPECT_TRUE(token.cancelled());
  EXPECT_EQ(token.reason(), CancelReason::requested);
  EXPECT_EQ(group.cancellation_token(), token);
  group.cancel();  // again: nothing changes
  EXPECT_EQ(group.cancellation_token().reason(), CancelReason::requested);
}

TEST(TaskGroup, ATaskSubmittedToACancelledGroupIsResolvedCancelledWithoutRunning) {
  ThreadPool pool(1);
  TaskGroup group(pool);
  group.cancel();
  DestructionProbe::Record record;
  std::atomic<bool> ran{false};
  Future<void> future = group.submit([&ran, probe = DestructionProbe(&record)] { ran = true; });
  EXPECT_TRUE(future.ready());
  EXPECT_EQ(future.status(), TaskStatus::cancelled);
  EXPECT_EQ(record.destroyed.load(), 1);
  group.wait_and_rethrow();
  pool.wait_idle();
  EXPECT_FALSE(ran.load());
}

// The options' token is one origin, the group another: whichever cancels
// first gives the task's token its reason.
TEST(TaskGroup, ATasksTokenTakesTheReasonOfTheFirstOriginToCancelIt) {
  for (const bool options_first : {true, false}) {
    SCOPED_TRACE(options_first ? "options' token first" : "group first");
    ThreadPool pool(1);
    TaskGroup group(pool);
    CancellationSource source;
    std::latch started(1);
    Future<CancelReason> future = group.submit(
        [&](CancellationToken token) {
          started.count_down();
          EXPECT_TRUE(test::wait_cancelled(token));
          return token.reason();
        },
        TaskOptions().set_cancellation(source.token()));
    started.wait();
    if (options_first) {
      source.request_cancel(CancelReason::shutdown);
      group.cancel();
    } else {
      group.cancel();
      source.request_cancel(CancelReason::shutdown);
    }
    EXPECT_EQ(future.get(), options_first ? CancelReason::shutdown : CancelReason::requested);
  }
}

// A token already cancelled at submission resolves the task before the
// group's link is made; cancelling the group afterwards must find no trace
// of the task (it is gone once its future is).
TEST(TaskGroup, AnAlreadyCancelledOptionsTokenResolvesTheTaskAndLeavesTheGroupClean) {
  ThreadPool pool(1);
  CancellationSource source;
  source.request_cancel();
  for (int round = 0; round < 64; ++round) {
    TaskGroup group(pool);
    DestructionProbe::Record record;
    {
      Future<int> future =
          group.submit([probe = DestructionProbe(&record)] { return 1; },
                       TaskOptions().set_cancellation(source.token()));
      EXPECT_TRUE(future.ready());
      EXPECT_EQ(future.status(), TaskStatus::cancelled);
    }
    EXPECT_EQ(record.destroyed.load(), 1);
    EXPECT_EQ(group.pending(), 0u);
    // Submitting more tasks of the same type reuses the freed block.
    std::vector<Future<int>> more;
    for (int i = 0; i < 4; ++i) {
      more.push_back(group.submit([probe = DestructionProbe(nullptr)] { return 2; }));
    }
    for (auto& future : more) EXPECT_EQ(future.get(), 2);
    group.cancel();
    group.wait_and_rethrow();
  }
}

// ---- waiting and failures ----------------------------------------------------

TEST(TaskGroup, WaitOnAnEmptyGroupReturnsAtOnce) {
  ThreadPool pool(1);
  TaskGroup group(pool);
  finishes_or_abort([&] { group.wait(); }, "wait() on an empty group");
  EXPECT_NO_THROW(group.wait_and_rethrow());
}

TEST(TaskGroup, WaitReturnsOnlyWhenEveryTaskIsTerminal) {
  ThreadPool pool(2);
  Gate gate;
  OpenOnExit open(gate);
  TaskGroup group(pool);
  std::atomic<int> finished{0};
  std::vector<Future<void>> futures;
  for (int i = 0; i < 8; ++i) {
    futures.push_back(group.submit([&] {
      gate.wait();
      finished.fetch_add(1);
    }));
  }
  int seen_after_wait = -1;
  test::GuardedRun waiter([&] {
    group.wait();
    seen_after_wait = finished.load();
  });
  EXPECT_FALSE(waiter.finished_within(50ms)) << "wait() returned while tasks were held";
  EXPECT_EQ(group.pending(), 8u);
  gate.open();
  ASSERT_TRUE(waiter.finished_within(test::kGuard));
  EXPECT_EQ(seen_after_wait, 8);
  for (const auto& future : futures) EXPECT_EQ(future.status(), TaskStatus::completed);
}

TEST(TaskGroup, WaitAndRethrowRethrowsTheFirstFailureEveryTime) {
  ThreadPool pool(1);  // one worker: the tasks end in submission order
  TaskGroup group(pool);
  group.submit([] { return 1; });
  group.submit([]() -> int { throw std::runtime_error("first"); });
  group.submit([]() -> int { throw std::logic_error("second"); });
  group.submit([] { return 2; });
  for (int call = 0; call < 2; ++call) {
    try {
      group.wait_and_rethrow();
      ADD_FAILURE() << "nothing rethrown";
    } catch (const std::runtime_error& error) {
      EXPECT_STREQ(error.what(), "first");
    } catch (...) {
      ADD_FAILURE() << "a failure other than the first was rethrown";
    }
  }
  EXPECT_NO_THROW(group.wait());  // wait() itself never throws
}

TEST(TaskGroup, OperationCancelledIsNotAFailure) {
  ThreadPool pool(1);
  TaskGroup group(pool);
  Future<void> own = group.submit([] { throw OperationCancelled(); });
  std::latch started(1);
  Future<void> through_group = group.submit([&](CancellationToken token) {
    started.count_down();
    ASSERT_TRUE(test::wait_cancelled(token));
    token.throw_if_cancelled();
  });
  started.wait();
  group.cancel();
  EXPECT_NO_THROW(group.wait_and_rethrow());
  EXPECT_EQ(own.status(), TaskStatus::cancelled);
  EXPECT_EQ(through_group.status(), TaskStatus::cancelled);
}

TEST(TaskGroup, AFailureDoesNotCancelTheGroup) {
  ThreadPool pool(1);
  TaskGroup group(pool);
  Future<void> failing = group.submit([] { throw std::runtime_error("boom"); });
  // Queued behind the failure on the one worker: still runs.
  Future<int> sibling = group.submit([](CancellationToken token) { return token.cancelled() ? -1 : 1; });
  failing.wait();
  EXPECT_EQ(failing.status(), TaskStatus::failed);
  EXPECT_EQ(sibling.get(), 1);
  EXPECT_FALSE(group.cancelled());
  EXPECT_FALSE(group.cancellation_token().cancelled());
  Future<int> later = group.submit([] { return 3; });
  EXPECT_EQ(later.get(), 3);
  EXPECT_THROW(group.wait_and_rethrow(), std::runtime_error);
}

TEST(TaskGroup, ATaskThatTimesOutIsNotAFailure) {
  ThreadPool pool(1);
  TaskGroup group(pool);
  Future<CancelReason> future = group.submit(
      [](CancellationToken token) {
        EXPECT_TRUE(test::wait_cancelled(token));
        const CancelReason reason = token.reason();
        token.throw_if_cancelled();
        return reason;
      },
      TaskOptions().set_timeout(20ms));
  future.wait();
  EXPECT_EQ(future.status(), TaskStatus::timed_out);
  EXPECT_NO_THROW(group.wait_and_rethrow());
  EXPECT_FALSE(group.cancelled());
}

// ---- sizes ---------------------------------------------------------------

TEST(TaskGroup, SizeCountsSubmittedTasksAndPendingThoseNotTerminal) {
  ThreadPool pool(1);
  Gate gate;
  OpenOnExit open(gate);
  TaskGroup group(pool);
  EXPECT_EQ(group.size(), 0u);
  EXPECT_EQ(group.pending(), 0u);
  std::latch started(1);
  group.submit([&] {
    started.count_down();
    gate.wait();
  });
  started.wait();
  group.submit([] {});
  group.submit([] {});
  EXPECT_EQ(group.size(), 3u);
  EXPECT_EQ(group.pending(), 3u);  // one running, two queued
  gate.open();
  group.wait();
  EXPECT_EQ(group.size(), 3u);
  EXPECT_EQ(group.pending(), 0u);
}

TEST(TaskGroup, ARejectedSubmissionCountsInSizeButNotInPending) {
  ThreadPool pool(1);
  TaskGroup group(pool);
  EXPECT_EQ(group.submit([] { return 1; }).get(), 1);
  pool.shutdown();
  DestructionProbe::Record record;
  Future<int> rejected = group.submit([probe = DestructionProbe(&record)] { return 2; });
  EXPECT_TRUE(rejected.ready());
  EXPECT_EQ(rejected.status(), TaskStatus::rejected);
  EXPECT_EQ(record.destroyed.load(), 1);
  EXPECT_EQ(group.size(), 2u);
  EXPECT_EQ(group.pending(), 0u);
  EXPECT_NO_THROW(group.wait_and_rethrow());  // a rejection is not a failure
}

TEST(TaskGroup, ASubmissionPastTheQueueBoundIsRejected) {
  ThreadPoolConfig config;
  config.thread_count = 1;
  config.max_queue_size = 1;
  ThreadPool pool(config);
  Gate gate;
  OpenOnExit open(gate);
  auto blockers = test::block_workers(pool, gate, 1);
  TaskGroup group(pool);
  Future<int> queued = group.submit([] { return 1; });
  Future<int> over = group.submit([] { return 2; });
  EXPECT_EQ(over.status(), TaskStatus::rejected);
  EXPECT_EQ(group.size(), 2u);
  EXPECT_EQ(group.pending(), 1u);
  gate.open();
  EXPECT_EQ(queued.get(), 1);
}

// ---- destruction -----------------------------------------------------------

TEST(TaskGroup, TheDestructorCancelsQueuedTasksAndWaitsForRunningOnes) {
  ThreadPool pool(1);
  std::latch started(1);
  std::atomic<bool> running_finished{false};
  std::atomic<CancelReason> running_saw{CancelReason::none};
  std::atomic<int> queued_ran{0};
  constexpr int kQueued = 8;
  std::vector<DestructionProbe::Record> records(kQueued);
  {
    TaskGroup group(pool);
    group.submit([&](CancellationToken token) {
      started.count_down();
      if (!test::wait_cancelled(token)) return;
      running_saw = token.reason();
      // Hold the only worker until the queued tasks are dropped: the
      // group's callbacks run in no set order, and a worker let go early
      // could take one that is not yet.
      const auto until = std::chrono::steady_clock::now() + test::kGuard;
      for (const auto& record : records) {
        while (record.destroyed.load() == 0 && std::chrono::steady_clock::now() < until) {
          std::this_thread::yield();
        }
      }
      running_finished = true;
    });
    started.wait();
    for (auto& record : records) {
      group.submit([&queued_ran, probe = DestructionProbe(&record)] { queued_ran.fetch_add(1); });
    }
  }
  EXPECT_TRUE(running_finished.load()) << "the destructor did not wait for the running task";
  EXPECT_EQ(running_saw.load(), CancelReason::requested);
  for (const auto& record : records) EXPECT_EQ(record.destroyed.load(), 1);
  pool.wait_idle();
  EXPECT_EQ(queued_ran.load(), 0);
}

TEST(TaskGroup, TheDestructorWithAFailureUnreportedDoesNotThrow) {
  ThreadPool pool(1);
  std::atomic<bool> failed{false};
  EXPECT_NO_THROW({
    TaskGroup group(pool);
    group.submit([&] {
      failed = true;
      throw std::runtime_error("unobserved");
    });
    // Without a wait the task may be dropped; it either ran or did not.
  });
  pool.wait_idle();
  EXPECT_EQ(pool.stats().failed + pool.stats().cancelled, 1u);
}

// ---- concurrency -----------------------------------------------------------

TEST(TaskGroup, SubmitIsSafeFromManyThreadsAtOnce) {
  ThreadPool pool(2);
  TaskGroup group(pool);
  constexpr int kThreads = 4;
  constexpr int kEach = 500;
  std::barrier start(kThreads);
  std::atomic<long> sum{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int i = 0; i < kEach; ++i) {
        group.submit([&sum, value = t * kEach + i] { sum.fetch_add(value); });
      }
    });
  }
  for (auto& thread : threads) thread.join();
  group.wait_and_rethrow();
  constexpr long kTotal = long{kThreads} * kEach;
  EXPECT_EQ(group.size(), static_cast<std::size_t>(kTotal));
  EXPECT_EQ(group.pending(), 0u);
  EXPECT_EQ(sum.load(), kTotal * (kTotal - 1) / 2);
}

// Each task submits two children into its own group until a depth; wait()
// from outside covers every task, however late it was submitted.
void grow(TaskGroup& group, std::atomic<int>& ran, int depth) {
  ran.fetch_add(1);
  if (depth == 0) return;
  for (int i = 0; i < 2; ++i) group.submit([&group, &ran, depth] { grow(group, ran, depth - 1); });
}

TEST_P(TaskGroupP, TasksMaySubmitIntoTheirOwnGroupAndWaitCoversThem) {
  ThreadPool pool(workers());
  TaskGroup group(pool);
  std::atomic<int> ran{0};
  constexpr int kDepth = 9;
  group.submit([&] { grow(group, ran, kDepth); });
  group.wait_and_rethrow();
  EXPECT_EQ(ran.load(), (1 << (kDepth + 1)) - 1);
  EXPECT_EQ(group.size(), static_cast<std::size_t>((1 << (kDepth + 1)) - 1));
}

// ---- fork-join on the pool's own workers -------------------------------------

long fib_by_wait(ThreadPool& pool, int n) {
  if (n < 2) return n;
  TaskGroup group(pool);
  long left = 0;
  group.submit([&pool, &left, n] { left = fib_by_wait(pool, n - 1); });
  const long right = fib_by_wait(pool, n - 2);
  group.wait();  // on a worker: helps
  return left + right;
}

long fib_by_get(ThreadPool& pool, int n) {
  if (n < 2) return n;
  TaskGroup group(pool);
  Future<long> left = group.submit([&pool, n] { return fib_by_get(pool, n - 1); });
  Future<long> right = group.submit([&pool, n] { return fib_by_get(pool, n - 2); });
  return left.get() + right.get();
}

TEST_P(TaskGroupP, ForkJoinFibThroughGroupWaitDoesNotDeadlock) {
  ThreadPool pool(workers());
  long result = 0;
  finishes_or_abort([&] { result = pool.submit([&pool] { return fib_by_wait(pool, 17); }).get(); },
                    "fork-join through TaskGroup::wait()");
  EXPECT_EQ(result, 1597);
}

TEST_P(TaskGroupP, ForkJoinFibThroughGroupFuturesDoesNotDeadlock) {
  ThreadPool pool(workers());
  long result = 0;
  finishes_or_abort([&] { result = pool.submit([&pool] { return fib_by_get(pool, 15); }).get(); },
                    "fork-join through TaskGroup futures");
  EXPECT_EQ(result, 610);
}

TEST(TaskGroup, WaitOnThePoolsOnlyWorkerRunsTheGroupsTasks) {
  ThreadPool pool(1);
  std::atomic<int> ran{0};
  finishes_or_abort(
      [&] {
        pool.submit([&] {
              TaskGroup group(pool);
              for (int i = 0; i < 4; ++i) group.submit([&] { ran.fetch_add(1); });
              group.wait();  // the only worker is this one: it must help
            })
            .get();
      },
      "TaskGroup::wait() on the pool's only worker");
  EXPECT_EQ(ran.load(), 4);
}

TEST(TaskGroup, TheDestructorOnThePoolsOnlyWorkerDropsWhatHasNotStarted) {
  ThreadPool pool(1);
  std::atomic<int> ran{0};
  finishes_or_abort(
      [&] {
        pool.submit([&] {
              TaskGroup group(pool);
              for (int i = 0; i < 4; ++i) group.submit([&] { ran.fetch_add(1); });
            })
            .get();
      },
      "~TaskGroup on the pool's only worker");
  EXPECT_EQ(ran.load(), 0);
}

// ---- a wait on a worker runs only the group's work -------------------------

// One worker runs S, a task of a group made outside the pool; the other
// waits on the group. U, another request's task, is posted meanwhile: the
// waiter must not run it (S is not queued, so nothing of the group is), and
// U runs only once S ends and a worker is free.
TEST(TaskGroupFromWorker, AWaitNeverRunsAnotherRequestsTask) {
  for (int round = 0; round < 20; ++round) {
    ThreadPool pool(2);
    TaskGroup group(pool);
    std::latch s_started(1);
    std::latch o_waiting(1);
    std::atomic<bool> release_s{false};
    std::atomic<bool> s_done{false};
    std::atomic<int> u_saw_s_done{-1};  // -1: U has not run
    group.submit([&] {
      s_started.count_down();
      while (!release_s.load()) std::this_thread::yield();
      s_done.store(true);
    });
    s_started.wait();  // S holds one worker
    Future<void> o = pool.submit([&] {
      o_waiting.count_down();
      group.wait();  // S runs on the other worker: nothing of the group is queued
    });
    o_waiting.wait();
    pool.post([&] { u_saw_s_done.store(s_done.load() ? 1 : 0); });
    // Give a misbehaving wait the time to pick U up before S may end.
    const auto until = std::chrono::steady_clock::now() + 20ms;
    while (u_saw_s_done.load() == -1 && std::chrono::steady_clock::now() < until) {
      std::this_thread::yield();
    }
    release_s.store(true);
    o.get();
    pool.wait_idle();
    ASSERT_EQ(u_saw_s_done.load(), 1) << "round " << round
                                      << ": a worker waiting on a group ran another request's task";
  }
}

// The waiting worker sleeps (S holds the other worker, nothing of the group
// is queued) when the main thread submits T into the group: the submission
// must wake it to run T, since no other worker is free to.
TEST(TaskGroupFromWorker, AWaitingWorkerRunsTheGroupsTasksSubmittedFromOutside) {
  for (int round = 0; round < 200; ++round) {
    ThreadPool pool(2);
    Gate gate;
    OpenOnExit open_on_exit(gate);
    TaskGroup group(pool);
    std::latch s_started(1);
    std::latch o_waiting(1);
    std::latch t_ran(1);
    group.submit([&] {
      s_started.count_down();
      gate.wait();
    });
    s_started.wait();
    Future<void> o = pool.submit([&] {
      o_waiting.count_down();
      group.wait();
    });
    o_waiting.wait();
    group.submit([&] { t_ran.count_down(); });
    // Only the waiting worker can run T while S holds the other one.
    ASSERT_TRUE(t_ran.try_wait() || [&] {
      const auto until = std::chrono::steady_clock::now() + test::kGuard;
      while (!t_ran.try_wait()) {
        if (std::chrono::steady_clock::now() > until) return false;
        std::this_thread::yield();
      }
      return true;
    }()) << "round " << round << ": the group's task waited for a free worker";
    gate.open();
    o.get();
  }
}

// A group made outside the pool, waited on by the pool's only worker: its
// tasks queued in the shared queue behind another request's are found there.
TEST(TaskGroupFromWorker, TheOnlyWorkerRunsTheGroupsTasksQueuedBehindOthers) {
  ThreadPool pool(1);
  Gate gate;
  OpenOnExit open_on_exit(gate);
  auto blockers = test::block_workers(pool, gate, 1);
  TaskGroup group(pool);
  std::atomic<bool> unrelated_ran{false};
  std::atomic<int> group_ran{0};
  std::atomic<bool> unrelated_ran_first{false};
  Future<void> o = pool.submit([&] { group.wait(); });  // queued first
  pool.post([&] { unrelated_ran.store(true); });
  for (int i = 0; i < 3; ++i) {
    group.submit([&] {
      if (unrelated_ran.load()) unrelated_ran_first.store(true);
      group_ran.fetch_add(1);
    });
  }
  gate.open();
  finishes_or_abort([&] { o.get(); }, "TaskGroup::wait() on the only worker, tasks behind others");
  pool.wait_idle();
  EXPECT_EQ(group_ran.load(), 3);
  EXPECT_FALSE(unrelated_ran_first.load()) << "the wait ran another request's task";
  EXPECT_TRUE(unrelated_ran.load());
}

// The first failure stays alive until the joiner is done with it, whichever
// thread drops the failed task's last reference. The releaser below is
// ordered after the joiner only by a relaxed flag, so ThreadSanitizer sees
// no edge there: the free must be ordered by the task's own references. It
// once was not (the set kept a copy of the exception_ptr, whose count lives
// in the uninstrumented runtime), and TSan reported the joiner's what()
// racing the free.
TEST(TaskGroup, TheFirstFailureOutlivesTheJoinersUseOfIt) {
  ThreadPool pool(2);
  constexpr int kRounds = 300;
  for (int r = 0; r < kRounds; ++r) {
    std::atomic<bool> joiner_done{false};
    std::optional<Future<void>> failed;
    {
      TaskGroup group(pool);
      failed.emplace(group.submit([] { throw std::runtime_error("first failure of the group"); }));
      std::thread releaser([&] {
        // Relaxed: deliberately no happens-before edge from the joiner.
        while (!joiner_done.load(std::memory_order_relaxed)) std::this_thread::yield();
        failed.reset();
      });
      try {
        group.wait_and_rethrow();
        ADD_FAILURE() << "no failure rethrown";
      } catch (const std::runtime_error& e) {
        EXPECT_STREQ(e.what(), "first failure of the group");
      }
      {
        Scope scope(pool);
        scope.spawn([] { throw std::runtime_error("first failure of the scope"); });
        try {
          scope.wait();
          ADD_FAILURE() << "no failure rethrown";
        } catch (const std::runtime_error& e) {
          EXPECT_STREQ(e.what(), "first failure of the scope");
        }
      }
      joiner_done.store(true, std::memory_order_relaxed);
      releaser.join();
    }
  }
}

// The failed task's future and its group each rethrow the failure, on two
// threads at once: neither may take the exception from the other.
TEST(TaskGroup, TheFutureAndTheGroupRethrowOneFailureAtOnce) {
  ThreadPool pool(2);
  const int rounds = test::kSanitized ? 300 : 2000;
  for (int r = 0; r < rounds; ++r) {
    TaskGroup group(pool);
    Future<int> failed = group.submit([]() -> int { throw std::runtime_error("the failure"); });
    std::latch both_ready(2);
    std::thread joiner([&] {
      both_ready.arrive_and_wait();
      try {
        group.wait_and_rethrow();
        ADD_FAILURE() << "the group rethrew nothing";
      } catch (const std::runtime_error& e) {
        EXPECT_STREQ(e.what(), "the failure");
      }
    });
    both_ready.arrive_and_wait();
    try {
      (void)failed.get();
      ADD_FAILURE() << "the future threw nothing";
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "the failure");
    }
    joiner.join();
  }
}

INSTANTIATE_TEST_SUITE_P(PoolSizes, TaskGroupP, ::testing::Values(1, 2), test::pool_size_name);

}  // namespace
}  // namespace quell
