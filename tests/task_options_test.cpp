// Task options: the token, the deadline or timeout, the priority
// (API.md §4), and what the pool makes of the deadline (§6, §9 Outcomes).
#include "quell/task_options.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <type_traits>

#include "pool_test_support.hpp"
#include "quell/thread_pool.hpp"

namespace quell {
namespace {

using namespace std::chrono_literals;
using test::Gate;
using test::OpenOnExit;
using Clock = std::chrono::steady_clock;

static_assert(std::is_copy_constructible_v<TaskOptions>);
static_assert(std::is_copy_assignable_v<TaskOptions>);
static_assert(std::is_same_v<decltype(TaskOptions().set_priority(TaskPriority::low)), TaskOptions&>);

TEST(TaskOptions, DefaultsAreNoTokenNoDeadlineNoTimeoutAndNormalPriority) {
  const TaskOptions options;
  EXPECT_EQ(options.cancellation(), CancellationToken());
  EXPECT_FALSE(options.cancellation().can_cancel());
  EXPECT_EQ(options.deadline(), std::nullopt);
  EXPECT_EQ(options.timeout(), std::nullopt);
  EXPECT_EQ(options.priority(), TaskPriority::normal);
}

TEST(TaskOptions, SettersReturnTheSameObjectSoTheyChain) {
  CancellationSource source;
  TaskOptions options;
  const auto deadline = Clock::now() + 1h;
  EXPECT_EQ(&options.set_cancellation(source.token()), &options);
  EXPECT_EQ(&options.set_deadline(deadline), &options);
  EXPECT_EQ(&options.set_timeout(5s), &options);
  EXPECT_EQ(&options.set_priority(TaskPriority::high), &options);

  const TaskOptions chained =
      TaskOptions().set_cancellation(source.token()).set_priority(TaskPriority::low).set_deadline(
          deadline);
  EXPECT_EQ(chained.cancellation(), source.token());
  EXPECT_EQ(chained.priority(), TaskPriority::low);
  EXPECT_EQ(chained.deadline(), deadline);
}

TEST(TaskOptions, SetCancellationStoresTheTokenOfTheSameState) {
  CancellationSource source;
  TaskOptions options;
  options.set_cancellation(source.token());
  EXPECT_EQ(options.cancellation(), source.token());
  EXPECT_TRUE(options.cancellation().can_cancel());
  EXPECT_FALSE(options.cancellation().cancelled());
  source.request_cancel(CancelReason::shutdown);
  EXPECT_TRUE(options.cancellation().cancelled());
  EXPECT_EQ(options.cancellation().reason(), CancelReason::shutdown);
}

TEST(TaskOptions, SetDeadlineReportsTheDeadlineAsGivenAndNoTimeout) {
  const auto deadline = Clock::now() + 3s;
  TaskOptions options;
  options.set_deadline(deadline);
  EXPECT_EQ(options.deadline(), deadline);
  EXPECT_EQ(options.timeout(), std::nullopt);
}

TEST(TaskOptions, SetTimeoutReportsTheTimeoutAsGivenAndNoDeadline) {
  TaskOptions options;
  options.set_timeout(250ms);
  EXPECT_EQ(options.timeout(), Clock::duration(250ms));
  EXPECT_EQ(options.deadline(), std::nullopt);
}

TEST(TaskOptions, SetTimeoutAfterSetDeadlineReplacesTheDeadline) {
  TaskOptions options;
  options.set_deadline(Clock::now() + 1h).set_timeout(2s);
  EXPECT_EQ(options.deadline(), std::nullopt);
  EXPECT_EQ(options.timeout(), Clock::duration(2s));
}

TEST(TaskOptions, SetDeadlineAfterSetTimeoutReplacesTheTimeout) {
  const auto deadline = Clock::now() + 1h;
  TaskOptions options;
  options.set_timeout(2s).set_deadline(deadline);
  EXPECT_EQ(options.timeout(), std::nullopt);
  EXPECT_EQ(options.deadline(), deadline);
}

TEST(TaskOptions, SetPriorityStoresEachPriority) {
  TaskOptions options;
  for (TaskPriority priority : {TaskPriority::low, TaskPriority::high, TaskPriority::normal}) {
    options.set_priority(priority);
    EXPECT_EQ(options.priority(), priority);
  }
}

TEST(TaskOptions, CopiesAreIndependentValues) {
  CancellationSource source;
  TaskOptions original;
  original.set_cancellation(source.token()).set_timeout(1s).set_priority(TaskPriority::high);
  TaskOptions copy = original;
  copy.set_priority(TaskPriority::low).set_deadline(Clock::now() + 1h);
  copy.set_cancellation(CancellationToken());
  EXPECT_EQ(original.priority(), TaskPriority::high);
  EXPECT_EQ(original.timeout(), Clock::duration(1s));
  EXPECT_EQ(original.deadline(), std::nullopt);
  EXPECT_EQ(original.cancellation(), source.token());
  EXPECT_EQ(copy.priority(), TaskPriority::low);
  EXPECT_EQ(copy.timeout(), std::nullopt);
  EXPECT_EQ(copy.cancellation(), CancellationToken());
}

// ---- what the pool makes of deadlines and timeouts ------------------------

class TaskOptionsInPool : public ::testing::TestWithParam<std::size_t> {};

TEST_P(TaskOptionsInPool, ADeadlineAlreadyInThePastTimesTheTaskOutAtOnceAndItNeverRuns) {
  ThreadPool pool(GetParam());
  std::atomic<int> runs{0};
  for (const auto deadline : {Clock::now() - 1s, Clock::now(), Clock::time_point::min()}) {
    Future<int> future =
        pool.submit([&] { return ++runs; }, TaskOptions().set_deadline(deadline));
    EXPECT_TRUE(future.ready());  // at once, even with idle workers
    EXPECT_EQ(future.status(), TaskStatus::timed_out);
    EXPECT_EQ(future.result(), TaskResult::timeout);
  }
  pool.wait_idle();
  EXPECT_EQ(runs.load(), 0);
  const ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.timed_out, 3u);
  EXPECT_EQ(stats.completed, 0u);
}

TEST_P(TaskOptionsInPool, AZeroOrNegativeTimeoutTimesTheTaskOutAtOnceAndItNeverRuns) {
  ThreadPool pool(GetParam());
  std::atomic<int> runs{0};
  for (const Clock::duration timeout : {Clock::duration(0s), Clock::duration(-5s)}) {
    Future<void> future = pool.submit([&] { ++runs; }, TaskOptions().set_timeout(timeout));
    EXPECT_TRUE(future.ready());
    EXPECT_EQ(future.status(), TaskStatus::timed_out);
  }
  pool.post([&] { ++runs; }, TaskOptions().set_timeout(0s));
  pool.wait_idle();
  EXPECT_EQ(runs.load(), 0);
  EXPECT_EQ(pool.stats().timed_out, 3u);
}

TEST_P(TaskOptionsInPool, AFutureDeadlineOrTimeoutLetsTheTaskRun) {
  ThreadPool pool(GetParam());
  Future<int> by_deadline =
      pool.submit([] { return 1; }, TaskOptions().set_deadline(Clock::now() + 1h));
  Future<int> by_timeout = pool.submit([] { return 2; }, TaskOptions().set_timeout(1h));
  EXPECT_EQ(by_deadline.get(), 1);
  EXPECT_EQ(by_timeout.get(), 2);
  EXPECT_EQ(by_deadline.status(), TaskStatus::completed);
  EXPECT_EQ(by_timeout.status(), TaskStatus::completed);
}

TEST_P(TaskOptionsInPool, ADeadlineThatPassesWhileTheTaskIsQueuedTimesItOutAndItNeverRuns) {
  Gate gate;
  ThreadPool pool(GetParam());
  OpenOnExit open_gate(gate);
  auto blockers = test::block_workers(pool, gate, GetParam());
  std::atomic<int> runs{0};
  const auto deadline = Clock::now() + 20ms;
  Future<void> future = pool.submit([&] { ++runs; }, TaskOptions().set_deadline(deadline));
  test::spin_until(deadline);  // the deadline passes while every worker is held
  gate.open();
  ASSERT_TRUE(future.wait_for(test::kGuard));
  EXPECT_EQ(future.status(), TaskStatus::timed_out);
  EXPECT_EQ(future.error(), Errc::timed_out);
  pool.wait_idle();
  EXPECT_EQ(runs.load(), 0);
}

TEST_P(TaskOptionsInPool, ATimeoutCountsFromSubmissionNotFromWhenTheOptionsWereMade) {
  Gate gate;
  ThreadPool pool(GetParam());
  OpenOnExit open_gate(gate);
  auto blockers = test::block_workers(pool, gate, GetParam());
  TaskOptions options;
  options.set_timeout(200ms);
  test::spin_until(Clock::now() + 250ms);  // longer than the timeout, before submitting
  Future<int> future = pool.submit([] { return 7; }, options);
  // Had the timeout counted from set_timeout(), the deadline would be past at
  // submission and the task resolved timed_out at once.
  EXPECT_FALSE(future.ready());
  EXPECT_EQ(future.status(), TaskStatus::queued);
  gate.open();
  ASSERT_TRUE(future.wait_for(test::kGuard));
  // If this run was too slow to start it within 200ms it may time out; that
  // is the contract too. It must not have failed or been rejected.
  EXPECT_TRUE(future.status() == TaskStatus::completed ||
              future.status() == TaskStatus::timed_out)
      << to_string(future.status());
}

TEST_P(TaskOptionsInPool, TheLaterOfSetDeadlineAndSetTimeoutDecidesTheTasksDeadline) {
  ThreadPool pool(GetParam());
  const auto past = Clock::now() - 1s;
  const auto future_time = Clock::now() + 1h;

  // The later call wins: a far timeout after a past deadline lets it run...
  Future<int> timeout_wins = pool.submit([] { return 1; }, TaskOptions().set_deadline(past).set_timeout(1h));
  // ...and a past deadline after a far timeout times it out.
  Future<int> deadline_wins = pool.submit([] { return 2; }, TaskOptions().set_timeout(1h).set_deadline(past));
  Future<int> zero_timeout_wins =
      pool.submit([] { return 3; }, TaskOptions().set_deadline(future_time).set_timeout(0s));
  Future<int> far_deadline_wins =
      pool.submit([] { return 4; }, TaskOptions().set_timeout(-1s).set_deadline(future_time));

  EXPECT_EQ(timeout_wins.get(), 1);
  EXPECT_EQ(deadline_wins.status(), TaskStatus::timed_out);
  EXPECT_EQ(zero_timeout_wins.status(), TaskStatus::timed_out);
  EXPECT_EQ(far_deadline_wins.get(), 4);
}

TEST_P(TaskOptionsInPool, TheOptionsTokenCancelsTheTaskAndPriorityIsAccepted) {
  ThreadPool pool(GetParam());
  CancellationSource source;
  source.request_cancel();
  std::atomic<int> runs{0};
  for (TaskPriority priority : {TaskPriority::low, TaskPriority::normal, TaskPriority::high}) {
    Future<void> cancelled = pool.submit(
        [&] { ++runs; }, TaskOptions().set_cancellation(source.token()).set_priority(priority));
    EXPECT_TRUE(cancelled.ready());
    EXPECT_EQ(cancelled.status(), TaskStatus::cancelled);
    Future<int> runs_fine = pool.submit([] { return 5; }, TaskOptions().set_priority(priority));
    EXPECT_EQ(runs_fine.get(), 5);
  }
  pool.wait_idle();
  EXPECT_EQ(runs.load(), 0);
}

TEST(TaskOptionsInPoolDeadline, ARunningTasksTokenIsCancelledWithReasonDeadlineWhenItsDeadlinePasses) {
  ThreadPool pool(1);
  Future<CancelReason> future = pool.submit(
      [](CancellationToken token) {
        return test::wait_cancelled(token) ? token.reason() : CancelReason::none;
      },
      TaskOptions().set_timeout(500ms));
  EXPECT_EQ(future.get(), CancelReason::deadline);
}

INSTANTIATE_TEST_SUITE_P(PoolSizes, TaskOptionsInPool, ::testing::Values(1, 2, 4),
                         test::pool_size_name);

}  // namespace
}  // namespace quell
