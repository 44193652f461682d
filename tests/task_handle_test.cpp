// TaskHandle<T>: a future that can cancel its task (API.md §5, §6 and §9
// Outcomes).
#include "quell/task_handle.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <latch>
#include <memory>
#include <stdexcept>
#include <thread>
#include <type_traits>

#include "pool_test_support.hpp"
#include "quell/thread_pool.hpp"

namespace quell {
namespace {

using namespace std::chrono_literals;
using test::DestructionProbe;
using test::Gate;
using test::OpenOnExit;
using Clock = std::chrono::steady_clock;

static_assert(!std::is_copy_constructible_v<TaskHandle<int>>);
static_assert(!std::is_copy_assignable_v<TaskHandle<int>>);
static_assert(std::is_move_constructible_v<TaskHandle<int>>);
static_assert(std::is_move_assignable_v<TaskHandle<int>>);
static_assert(std::is_same_v<decltype(std::declval<TaskHandle<int>&>().future()), Future<int>&>);

class TaskHandleP : public ::testing::TestWithParam<std::size_t> {};

TEST_P(TaskHandleP, CancelOfAQueuedTaskResolvesItCancelledAtOnceAndDestroysItsCallable) {
  Gate gate;
  DestructionProbe::Record record;
  std::atomic<int> runs{0};
  ThreadPool pool(GetParam());
  OpenOnExit open_gate(gate);
  auto blockers = test::block_workers(pool, gate, GetParam());

  TaskHandle<int> handle = pool.handle([&runs, probe = DestructionProbe(&record)] { return ++runs; });
  EXPECT_EQ(handle.status(), TaskStatus::queued);
  EXPECT_FALSE(handle.cancelled());
  EXPECT_FALSE(handle.token().cancelled());
  EXPECT_EQ(record.destroyed.load(), 0);

  EXPECT_TRUE(handle.cancel());
  // All of this while every worker is still held:
  EXPECT_TRUE(handle.future().ready());
  EXPECT_EQ(handle.status(), TaskStatus::cancelled);
  EXPECT_EQ(handle.result(), TaskResult::cancelled);
  EXPECT_TRUE(handle.cancelled());
  EXPECT_TRUE(handle.token().cancelled());
  EXPECT_EQ(handle.token().reason(), CancelReason::requested);
  EXPECT_EQ(record.destroyed.load(), 1);
  EXPECT_EQ(record.thread.load(), std::this_thread::get_id());  // on the cancelling thread
  EXPECT_TRUE(handle.wait_for(0s));
  EXPECT_EQ(pool.stats().queued, 0u);
  EXPECT_EQ(pool.stats().cancelled, 1u);

  EXPECT_FALSE(handle.cancel());  // the request was made already
  EXPECT_THROW(handle.get(), OperationCancelled);

  gate.open();
  pool.wait_idle();
  EXPECT_EQ(runs.load(), 0);
  EXPECT_EQ(record.destroyed.load(), 1);
}

TEST_P(TaskHandleP, CancelOfARunningTaskCancelsItsTokenAndATaskThatReturnsEndsCompleted) {
  std::latch started(1);
  ThreadPool pool(GetParam());
  TaskHandle<CancelReason> handle = pool.handle([&](CancellationToken token) {
    started.count_down();
    return test::wait_cancelled(token) ? token.reason() : CancelReason::none;
  });
  started.wait();
  EXPECT_EQ(handle.status(), TaskStatus::running);
  EXPECT_TRUE(handle.cancel());
  EXPECT_TRUE(handle.cancelled());
  EXPECT_EQ(handle.get(), CancelReason::requested);
  EXPECT_EQ(handle.status(), TaskStatus::completed);  // it chose to finish
  EXPECT_EQ(handle.result(), TaskResult::success);
}

TEST_P(TaskHandleP, CancelOfARunningTaskThatThrowsOperationCancelledEndsCancelled) {
  std::latch started(1);
  ThreadPool pool(GetParam());
  TaskHandle<int> handle = pool.handle([&] {
    started.count_down();
    const CancellationToken token = this_task::cancellation_token();
    if (!test::wait_cancelled(token)) return -1;
    token.throw_if_cancelled();
    return 0;
  });
  started.wait();
  EXPECT_TRUE(handle.cancel());
  handle.wait();
  EXPECT_EQ(handle.status(), TaskStatus::cancelled);
  EXPECT_EQ(handle.result(), TaskResult::cancelled);
  EXPECT_EQ(handle.future().error(), Errc::cancelled);
  EXPECT_THROW(handle.get(), OperationCancelled);
  pool.wait_idle();
  EXPECT_EQ(pool.stats().cancelled, 1u);
  EXPECT_EQ(pool.stats().failed, 0u);
}

TEST_P(TaskHandleP, CancelAfterTheTaskEndedReturnsPerTheSourceRuleAndChangesNothing) {
  ThreadPool pool(GetParam());

  TaskHandle<int> completed = pool.handle([] { return 7; });
  completed.wait();
  EXPECT_TRUE(completed.cancel());   // the first request on a never-cancelled state
  EXPECT_FALSE(completed.cancel());  // later ones do nothing
  EXPECT_TRUE(completed.cancelled());
  EXPECT_EQ(completed.status(), TaskStatus::completed);
  EXPECT_EQ(completed.result(), TaskResult::success);
  EXPECT_EQ(completed.get(), 7);

  TaskHandle<int> failed = pool.handle([]() -> int { throw std::runtime_error("no"); });
  failed.wait();
  EXPECT_TRUE(failed.cancel());
  EXPECT_EQ(failed.status(), TaskStatus::failed);
  EXPECT_THROW(failed.get(), std::runtime_error);

  // Already cancelled by its deadline: the state's reason stays deadline.
  TaskHandle<int> timed_out = pool.handle([] { return 1; }, TaskOptions().set_timeout(-1s));
  EXPECT_EQ(timed_out.status(), TaskStatus::timed_out);
  EXPECT_FALSE(timed_out.cancel());
  EXPECT_EQ(timed_out.token().reason(), CancelReason::deadline);
  EXPECT_EQ(timed_out.status(), TaskStatus::timed_out);

  pool.wait_idle();
  const ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.completed, 1u);
  EXPECT_EQ(stats.failed, 1u);
  EXPECT_EQ(stats.timed_out, 1u);
  EXPECT_EQ(stats.cancelled, 0u);
}

TEST_P(TaskHandleP, TheHandlesTokenIsTheTokenTheTaskReceivesAndThisTaskReports) {
  ThreadPool pool(GetParam());
  std::latch checked(1);
  CancellationToken received;
  CancellationToken this_task_token;
  TaskHandle<void> handle = pool.handle([&](CancellationToken token) {
    received = token;
    this_task_token = this_task::cancellation_token();
    checked.count_down();
  });
  checked.wait();
  handle.wait();
  EXPECT_EQ(received, handle.token());
  EXPECT_EQ(this_task_token, handle.token());
  EXPECT_TRUE(handle.token().can_cancel());
  EXPECT_NE(handle.token(), CancellationToken());
}

TEST_P(TaskHandleP, IdWaitWaitForGetStatusAndResultMirrorItsFuture) {
  Gate gate;
  std::latch started(1);
  ThreadPool pool(GetParam());
  OpenOnExit open_gate(gate);
  TaskHandle<int> handle = pool.handle([&] {
    started.count_down();
    gate.wait();
    return 11;
  });
  EXPECT_NE(handle.id(), 0u);
  EXPECT_EQ(handle.id(), handle.future().id());
  started.wait();
  EXPECT_EQ(handle.status(), TaskStatus::running);
  EXPECT_EQ(handle.result(), TaskResult::none);
  EXPECT_FALSE(handle.wait_for(5ms));
  EXPECT_FALSE(handle.future().ready());
  gate.open();
  handle.wait();
  EXPECT_TRUE(handle.wait_for(0s));
  EXPECT_TRUE(handle.future().ready());
  EXPECT_EQ(handle.status(), TaskStatus::completed);
  EXPECT_EQ(handle.result(), TaskResult::success);
  EXPECT_EQ(handle.get(), 11);
}

TEST_P(TaskHandleP, GetThroughTheFutureAndThroughTheHandleShareOneRetrieval) {
  ThreadPool pool(GetParam());
  TaskHandle<int> handle = pool.handle([] { return 3; });
  EXPECT_EQ(handle.future().get(), 3);
  try {
    handle.get();
    ADD_FAILURE() << "no exception";
  } catch (const TaskError& e) {
    EXPECT_EQ(e.code(), Errc::already_retrieved);
  }
  EXPECT_EQ(handle.status(), TaskStatus::completed);
}

TEST_P(TaskHandleP, DroppingAHandleNeitherCancelsNorBlocksAndTheTaskStillRuns) {
  Gate gate;
  ThreadPool pool(GetParam());
  OpenOnExit open_gate(gate);
  auto blockers = test::block_workers(pool, gate, GetParam());
  std::atomic<bool> ran{false};
  std::atomic<bool> saw_cancelled{true};
  auto queued = std::make_unique<TaskHandle<void>>(pool.handle([&](CancellationToken token) {
    saw_cancelled = token.cancelled();
    ran = true;
  }));
  {
    test::GuardedRun drop([&] { queued.reset(); });
    EXPECT_TRUE(drop.finished_within(test::kGuard)) << "dropping the handle blocked";
  }
  EXPECT_FALSE(ran.load());
  gate.open();
  pool.wait_idle();
  EXPECT_TRUE(ran.load());
  EXPECT_FALSE(saw_cancelled.load());
  EXPECT_EQ(pool.stats().cancelled, 0u);

  // And a running task whose handle is dropped runs on, uncancelled.
  std::latch started(1);
  Gate finish;
  std::atomic<bool> running_saw_cancelled{true};
  auto running = std::make_unique<TaskHandle<void>>(pool.handle([&](CancellationToken token) {
    started.count_down();
    finish.wait();
    running_saw_cancelled = token.cancelled();
  }));
  started.wait();
  {
    test::GuardedRun drop([&] { running.reset(); });
    EXPECT_TRUE(drop.finished_within(test::kGuard)) << "dropping the handle blocked";
  }
  finish.open();
  pool.wait_idle();
  EXPECT_FALSE(running_saw_cancelled.load());
  EXPECT_EQ(pool.stats().completed, GetParam() + 2);
}

TEST_P(TaskHandleP, AHandleOfARejectedTaskIsReadyAndRejectedAndCancelChangesNothing) {
  DestructionProbe::Record record;
  ThreadPool pool(GetParam());
  pool.shutdown();
  TaskHandle<int> handle = pool.handle([probe = DestructionProbe(&record)] { return 1; });
  EXPECT_NE(handle.id(), 0u);
  ASSERT_TRUE(handle.future().ready());
  EXPECT_EQ(handle.status(), TaskStatus::rejected);
  EXPECT_EQ(handle.result(), TaskResult::rejected);
  EXPECT_EQ(record.destroyed.load(), 1);
  handle.cancel();
  EXPECT_EQ(handle.status(), TaskStatus::rejected);
  try {
    handle.get();
    ADD_FAILURE() << "no exception";
  } catch (const OperationCancelled&) {
    ADD_FAILURE() << "a rejected task must throw TaskError(rejected), not OperationCancelled";
  } catch (const TaskError& e) {
    EXPECT_EQ(e.code(), Errc::rejected);
  }
}

TEST_P(TaskHandleP, TheOptionsTokenCancelsAHandledTaskWithItsReason) {
  Gate gate;
  CancellationSource source;
  ThreadPool pool(GetParam());
  OpenOnExit open_gate(gate);
  auto blockers = test::block_workers(pool, gate, GetParam());
  TaskHandle<int> handle = pool.handle([] { return 1; }, TaskOptions().set_cancellation(source.token()));
  EXPECT_NE(handle.token(), source.token());  // the task has a state of its own
  source.request_cancel(CancelReason::failure);
  EXPECT_TRUE(handle.token().cancelled());
  EXPECT_EQ(handle.token().reason(), CancelReason::failure);
  EXPECT_EQ(handle.status(), TaskStatus::cancelled);
  EXPECT_FALSE(handle.cancel());  // the state was cancelled already
}

TEST_P(TaskHandleP, CancelRacingTheStartEitherDropsOrRunsTheTaskNeverBoth) {
  ThreadPool pool(GetParam());
  int cancelled = 0;
  int completed = 0;
  for (int round = 0; round < 400; ++round) {
    DestructionProbe::Record record;
    std::atomic<int> runs{0};
    TaskHandle<int> handle = pool.handle([&runs, probe = DestructionProbe(&record)] { return ++runs; });
    if (round % 2 == 0) std::this_thread::yield();
    EXPECT_TRUE(handle.cancel());
    handle.wait();
    if (handle.status() == TaskStatus::cancelled) {
      ++cancelled;
      EXPECT_EQ(runs.load(), 0);
      EXPECT_THROW(handle.get(), OperationCancelled);
    } else {
      ++completed;
      EXPECT_EQ(handle.status(), TaskStatus::completed);
      EXPECT_EQ(runs.load(), 1);
      EXPECT_EQ(handle.get(), 1);
    }
    pool.wait_idle();
    EXPECT_EQ(record.destroyed.load(), 1) << "round " << round;
  }
  const ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.cancelled, static_cast<std::uint64_t>(cancelled));
  EXPECT_EQ(stats.completed, static_cast<std::uint64_t>(completed));
  EXPECT_EQ(stats.submitted, 400u);
}

INSTANTIATE_TEST_SUITE_P(PoolSizes, TaskHandleP, ::testing::Values(1, 2, 4), test::pool_size_name);

}  // namespace
}  // namespace quell
