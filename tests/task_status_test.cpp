// Task state: ids, statuses, results, priorities and their names
// (API.md §3).
#include "quell/task_status.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <latch>
#include <set>
#include <string>
#include <type_traits>

#include "pool_test_support.hpp"
#include "quell/thread_pool.hpp"

namespace quell {
namespace {

using test::Gate;
using test::OpenOnExit;

static_assert(std::is_same_v<TaskId, std::uint64_t>);
static_assert(noexcept(to_string(TaskStatus::queued)));
static_assert(noexcept(to_string(TaskResult::none)));
static_assert(noexcept(is_terminal(TaskStatus::queued)));

constexpr TaskStatus kAllStatuses[] = {TaskStatus::queued,    TaskStatus::running,
                                       TaskStatus::completed, TaskStatus::failed,
                                       TaskStatus::cancelled, TaskStatus::timed_out,
                                       TaskStatus::rejected};
constexpr TaskResult kAllResults[] = {TaskResult::none,      TaskResult::success,
                                      TaskResult::failure,   TaskResult::cancelled,
                                      TaskResult::timeout,   TaskResult::rejected};

TEST(TaskStatus, ToStringNamesEveryStatusAsTheContractSpellsIt) {
  EXPECT_STREQ(to_string(TaskStatus::queued), "queued");
  EXPECT_STREQ(to_string(TaskStatus::running), "running");
  EXPECT_STREQ(to_string(TaskStatus::completed), "completed");
  EXPECT_STREQ(to_string(TaskStatus::failed), "failed");
  EXPECT_STREQ(to_string(TaskStatus::cancelled), "cancelled");
  EXPECT_STREQ(to_string(TaskStatus::timed_out), "timed_out");
  EXPECT_STREQ(to_string(TaskStatus::rejected), "rejected");
}

TEST(TaskResult, ToStringNamesEveryResultAsTheContractSpellsIt) {
  EXPECT_STREQ(to_string(TaskResult::none), "none");
  EXPECT_STREQ(to_string(TaskResult::success), "success");
  EXPECT_STREQ(to_string(TaskResult::failure), "failure");
  EXPECT_STREQ(to_string(TaskResult::cancelled), "cancelled");
  EXPECT_STREQ(to_string(TaskResult::timeout), "timeout");
  EXPECT_STREQ(to_string(TaskResult::rejected), "rejected");
}

TEST(TaskStatus, EveryStatusAndEveryResultHasItsOwnName) {
  std::set<std::string> statuses;
  for (TaskStatus status : kAllStatuses) statuses.insert(to_string(status));
  EXPECT_EQ(statuses.size(), std::size(kAllStatuses));
  std::set<std::string> results;
  for (TaskResult result : kAllResults) results.insert(to_string(result));
  EXPECT_EQ(results.size(), std::size(kAllResults));
}

TEST(TaskStatus, OnlyQueuedAndRunningAreNotTerminal) {
  EXPECT_FALSE(is_terminal(TaskStatus::queued));
  EXPECT_FALSE(is_terminal(TaskStatus::running));
  EXPECT_TRUE(is_terminal(TaskStatus::completed));
  EXPECT_TRUE(is_terminal(TaskStatus::failed));
  EXPECT_TRUE(is_terminal(TaskStatus::cancelled));
  EXPECT_TRUE(is_terminal(TaskStatus::timed_out));
  EXPECT_TRUE(is_terminal(TaskStatus::rejected));
}

TEST(TaskResult, ResultOfIsNoneExactlyForTheStatusesThatAreNotTerminal) {
  EXPECT_EQ(result_of(TaskStatus::queued), TaskResult::none);
  EXPECT_EQ(result_of(TaskStatus::running), TaskResult::none);
  EXPECT_EQ(result_of(TaskStatus::completed), TaskResult::success);
  EXPECT_EQ(result_of(TaskStatus::failed), TaskResult::failure);
  EXPECT_EQ(result_of(TaskStatus::cancelled), TaskResult::cancelled);
  EXPECT_EQ(result_of(TaskStatus::timed_out), TaskResult::timeout);
  EXPECT_EQ(result_of(TaskStatus::rejected), TaskResult::rejected);
  for (TaskStatus status : kAllStatuses) {
    EXPECT_EQ(result_of(status) == TaskResult::none, !is_terminal(status)) << to_string(status);
  }
}

TEST(TaskResult, AFuturesResultIsNoneWhileItsTaskIsQueuedOrRunningAndSetOnceTerminal) {
  Gate gate;
  std::latch started(1);
  ThreadPool pool(1);
  OpenOnExit open_gate(gate);
  Future<int> running = pool.submit([&] {
    started.count_down();
    gate.wait();
    return 1;
  });
  started.wait();
  Future<int> queued = pool.submit([] { return 2; });

  EXPECT_EQ(running.status(), TaskStatus::running);
  EXPECT_EQ(running.result(), TaskResult::none);
  EXPECT_EQ(queued.status(), TaskStatus::queued);
  EXPECT_EQ(queued.result(), TaskResult::none);

  gate.open();
  EXPECT_EQ(running.get(), 1);
  EXPECT_EQ(queued.get(), 2);
  EXPECT_EQ(running.result(), TaskResult::success);
  EXPECT_EQ(queued.result(), TaskResult::success);
}

}  // namespace
}  // namespace quell
