// ThreadPool: construction, submission forms, cancellation and outcomes,
// rejection, shutdown, statistics, priorities, work stealing and helping
// (API.md §6 and §9 "Outcomes" and "The pool").
#include "quell/thread_pool.hpp"

#include <gtest/gtest.h>
#include <pthread.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <condition_variable>
#include <future>
#include <latch>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "pool_test_support.hpp"
#include "sanitized.hpp"

namespace quell {
namespace {

using namespace std::chrono_literals;
using test::DestructionProbe;
using test::Gate;
using test::OpenOnExit;
using Clock = std::chrono::steady_clock;

class ThreadPoolP : public ::testing::TestWithParam<std::size_t> {
 protected:
  std::size_t workers() const { return GetParam(); }
};

std::uint64_t ended(const ThreadPoolStats& s) {
  return s.completed + s.failed + s.cancelled + s.timed_out + s.rejected;
}

// ---- construction ----------------------------------------------------------

TEST(ThreadPool, ZeroThreadsIsRejectedWithInvalidArgument) {
  EXPECT_THROW(ThreadPool(std::size_t{0}), std::invalid_argument);
  ThreadPoolConfig config;
  config.thread_count = 0;
  EXPECT_THROW(ThreadPool{config}, std::invalid_argument);
}

TEST(ThreadPool, TheDefaultConstructorUsesHardwareConcurrencyButAtLeastOneWorker) {
  ThreadPool pool;
  const std::size_t expected = std::max<std::size_t>(1, std::thread::hardware_concurrency());
  EXPECT_EQ(pool.thread_count(), expected);
  Future<int> future = pool.submit([] { return 1; });
  EXPECT_EQ(future.get(), 1);
}

TEST(ThreadPool, TheDefaultConfigAsksForHardwareConcurrencyUnboundedDrainNamedQuell) {
  const ThreadPoolConfig config;
  EXPECT_EQ(config.thread_count, std::thread::hardware_concurrency());
  EXPECT_EQ(config.max_queue_size, 0u);
  EXPECT_EQ(config.shutdown_policy, ShutdownPolicy::drain);
  EXPECT_EQ(config.thread_name, "quell");
}

// Runs one task on each of the pool's workers at once (they meet at a
// barrier, so no worker runs two) and returns what `probe` gave on each.
template <class Probe>
auto on_every_worker(ThreadPool& pool, Probe probe) {
  using R = decltype(probe());
  const std::size_t n = pool.thread_count();
  std::barrier meet(static_cast<std::ptrdiff_t>(n));
  std::vector<R> results(n);
  std::vector<Future<void>> futures;
  for (std::size_t i = 0; i < n; ++i) {
    futures.push_back(pool.submit([&meet, &results, probe, i] {
      meet.arrive_and_wait();
      results[i] = probe();
    }));
  }
  for (auto& future : futures) future.get();
  return results;
}

std::string current_thread_name() {
  char name[32] = {};
  EXPECT_EQ(pthread_getname_np(pthread_self(), name, sizeof name), 0);
  return name;
}

TEST_P(ThreadPoolP, ThreadCountIsTheNumberOfDistinctWorkerThreads) {
  ThreadPool pool(workers());
  EXPECT_EQ(pool.thread_count(), workers());
  const auto ids = on_every_worker(pool, [] { return std::this_thread::get_id(); });
  const std::set<std::thread::id> distinct(ids.begin(), ids.end());
  EXPECT_EQ(distinct.size(), workers());
  EXPECT_EQ(distinct.count(std::this_thread::get_id()), 0u);
}

TEST_P(ThreadPoolP, WorkersAreNamedThreadNameDashIndex) {
  if (!test::kThreadNames) GTEST_SKIP() << "built without thread names";
  ThreadPoolConfig config;
  config.thread_count = workers();
  config.thread_name = "tpx";
  ThreadPool pool(config);
  const auto names = on_every_worker(pool, current_thread_name);
  const std::set<std::string> got(names.begin(), names.end());
  std::set<std::string> expected;
  for (std::size_t i = 0; i < workers(); ++i) expected.insert("tpx-" + std::to_string(i));
  EXPECT_EQ(got, expected);
}

TEST(ThreadPool, WorkersAreNamedQuellDashIndexByDefault) {
  if (!test::kThreadNames) GTEST_SKIP() << "built without thread names";
  ThreadPool pool(2);
  const auto names = on_every_worker(pool, current_thread_name);
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()),
            (std::set<std::string>{"quell-0", "quell-1"}));
}

// -Dthread_names=disabled: the workers keep the name Linux gave them, their
// creator's.
TEST(ThreadPool, WithoutThreadNamesWorkersKeepTheirCreatorsName) {
  if (test::kThreadNames) GTEST_SKIP() << "built with thread names";
  const std::string creator = current_thread_name();
  ThreadPool pool(2);
  for (const std::string& name : on_every_worker(pool, current_thread_name)) EXPECT_EQ(name, creator);
}

// ---- submission forms ------------------------------------------------------------

TEST_P(ThreadPoolP, SubmitRunsTheCallableOnAWorkerAndReturnsItsResult) {
  ThreadPool pool(workers());
  Future<bool> future =
      pool.submit([caller = std::this_thread::get_id()] { return std::this_thread::get_id() != caller; });
  EXPECT_TRUE(future.get());
  std::atomic<int> posted{0};
  EXPECT_TRUE(pool.post([&] { ++posted; }));
  TaskHandle<int> handle = pool.handle([] { return 4; });
  EXPECT_EQ(handle.get(), 4);
  pool.wait_idle();
  EXPECT_EQ(posted.load(), 1);
}

TEST_P(ThreadPoolP, ATokenTakingCallableReceivesTheTasksOwnToken) {
  ThreadPool pool(workers());
  CancellationSource source;
  Future<bool> future = pool.submit(
      [source_token = source.token()](CancellationToken token) {
        return token == this_task::cancellation_token() && token.can_cancel() &&
               !token.cancelled() && token != source_token && token != CancellationToken();
      },
      TaskOptions().set_cancellation(source.token()));
  EXPECT_TRUE(future.get());

  // Through a handle: the same state the handle cancels.
  TaskHandle<bool> handle = pool.handle([](CancellationToken token) {
    return token == this_task::cancellation_token();
  });
  EXPECT_TRUE(handle.get());
}

struct BothWays {
  std::atomic<int>* with_token;
  std::atomic<int>* without;
  int operator()() const {
    ++*without;
    return 0;
  }
  int operator()(CancellationToken token) const {
    ++*with_token;
    return token == this_task::cancellation_token() ? 1 : -1;
  }
};

TEST_P(ThreadPoolP, ACallableInvocableBothWaysIsCalledWithTheToken) {
  ThreadPool pool(workers());
  std::atomic<int> with_token{0};
  std::atomic<int> without{0};
  EXPECT_EQ(pool.submit(BothWays{&with_token, &without}).get(), 1);
  EXPECT_EQ(pool.handle(BothWays{&with_token, &without}).get(), 1);
  EXPECT_TRUE(pool.post(BothWays{&with_token, &without}));
  Future<std::size_t> generic = pool.submit([](auto&&... args) { return sizeof...(args); });
  EXPECT_EQ(generic.get(), 1u);
  pool.wait_idle();
  EXPECT_EQ(with_token.load(), 3);
  EXPECT_EQ(without.load(), 0);
}

TEST_P(ThreadPoolP, MoveOnlyCallablesAreSupported) {
  ThreadPool pool(workers());
  DestructionProbe::Record record;
  Future<int> with_probe = pool.submit([probe = DestructionProbe(&record)] { return 1; });
  EXPECT_EQ(with_probe.get(), 1);
  EXPECT_EQ(record.destroyed.load(), 1);

  struct RvalueOnly {
    std::unique_ptr<int> v;
    int operator()() && { return *v; }
  };
  EXPECT_EQ(pool.submit(RvalueOnly{std::make_unique<int>(6)}).get(), 6);
  TaskHandle<int> handle = pool.handle(RvalueOnly{std::make_unique<int>(8)});
  EXPECT_EQ(handle.get(), 8);

  std::atomic<int> seen{0};
  EXPECT_TRUE(pool.post([&seen, v = std::make_unique<int>(7)](CancellationToken) { seen = *v; }));
  pool.wait_idle();
  EXPECT_EQ(seen.load(), 7);
}

TEST_P(ThreadPoolP, MoveOnlyCallablesWithMoveOnlyResultsAreSupported) {
  ThreadPool pool(workers());
  auto value = std::make_unique<int>(5);
  Future<std::unique_ptr<int>> doubled = pool.submit([v = std::move(value)]() mutable {
    *v *= 2;
    return std::move(v);
  });
  std::unique_ptr<int> result = doubled.get();
  ASSERT_NE(result, nullptr);
  EXPECT_EQ(*result, 10);

  struct RvalueOnly {
    std::unique_ptr<int> v;
    std::unique_ptr<int> operator()() && { return std::move(v); }
  };
  TaskHandle<std::unique_ptr<int>> handle = pool.handle(RvalueOnly{std::make_unique<int>(6)});
  EXPECT_EQ(*handle.get(), 6);

  Future<std::unique_ptr<int>> with_token =
      pool.submit([v = std::make_unique<int>(9)](CancellationToken) mutable { return std::move(v); });
  EXPECT_EQ(*with_token.get(), 9);
}

TEST(ThisTask, OutsideATaskTheTokenIsADefaultTokenAndNotCancelled) {
  EXPECT_EQ(this_task::cancellation_token(), CancellationToken());
  EXPECT_FALSE(this_task::cancellation_token().can_cancel());
  EXPECT_FALSE(this_task::cancelled());
  ThreadPool pool(1);
  pool.submit([] {}).get();
  EXPECT_EQ(this_task::cancellation_token(), CancellationToken());  // still, after tasks ran
}

TEST_P(ThreadPoolP, ThisTaskCancelledReportsTheRunningTasksCancellation) {
  ThreadPool pool(workers());
  std::latch started(1);
  std::atomic<bool> before{true};
  std::atomic<bool> after{false};
  TaskHandle<void> handle = pool.handle([&] {
    before = this_task::cancelled();
    started.count_down();
    test::wait_cancelled(this_task::cancellation_token());
    after = this_task::cancelled();
  });
  started.wait();
  handle.cancel();
  handle.get();
  EXPECT_FALSE(before.load());
  EXPECT_TRUE(after.load());
}

TEST(ThisTask, ATaskRunByAWaitingWorkerSeesItsOwnTokenAndTheWaitersIsRestored) {
  ThreadPool pool(1);  // one worker: the child can only run inside the parent's wait
  struct Seen {
    bool child_saw_own;
    bool child_differs_from_parent;
    bool parent_restored;
  };
  Future<Seen> parent = pool.submit([&pool](CancellationToken parent_token) {
    Seen seen{};
    CancellationToken child_token;
    Future<bool> child = pool.submit([&child_token](CancellationToken own) {
      child_token = own;
      return this_task::cancellation_token() == own;
    });
    seen.child_saw_own = child.get();
    seen.child_differs_from_parent = child_token != parent_token && child_token.can_cancel();
    seen.parent_restored = this_task::cancellation_token() == parent_token;
    return seen;
  });
  ASSERT_TRUE(parent.wait_for(test::kGuard));
  const Seen seen = parent.get();
  EXPECT_TRUE(seen.child_saw_own);
  EXPECT_TRUE(seen.child_differs_from_parent);
  EXPECT_TRUE(seen.parent_restored);
}

TEST_P(ThreadPoolP, TaskIdsAreNonZeroAndUniqueAcrossTasksThreadsWorkersAndPools) {
  ThreadPool pool(workers());
  ThreadPool other(1);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 1500;
  std::vector<std::vector<TaskId>> ids(kThreads + 1);
  {
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kPerThread; ++i) {
          ThreadPool& target = (i % 5 == 0) ? other : pool;
          if (i % 2 == 0) {
            ids[t].push_back(target.submit([] {}).id());
          } else {
            ids[t].push_back(target.handle([] {}).id());
          }
        }
      });
    }
    for (auto& thread : threads) thread.join();
  }
  // From inside tasks (worker-local submissions).
  pool.submit([&pool, &inner = ids[kThreads]] {
        for (int i = 0; i < 500; ++i) inner.push_back(pool.submit([] {}).id());
      })
      .get();
  pool.wait_idle();
  other.wait_idle();
  std::set<TaskId> all;
  std::size_t count = 0;
  for (const auto& list : ids) {
    for (TaskId id : list) {
      EXPECT_NE(id, 0u);
      all.insert(id);
      ++count;
    }
  }
  EXPECT_EQ(count, static_cast<std::size_t>(kThreads * kPerThread + 500));
  EXPECT_EQ(all.size(), count);
}

TEST_P(ThreadPoolP, SubmitPostAndHandleAreSafeFromManyThreadsAtOnce) {
  ThreadPool pool(workers());
  constexpr int kThreads = 4;
  constexpr int kPerThread = 2000;
  std::atomic<long> sum{0};
  std::barrier start(kThreads);
  std::vector<long> expected_sums(kThreads, 0);
  {
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        std::vector<Future<int>> futures;
        std::vector<TaskHandle<int>> handles;
        start.arrive_and_wait();
        long got = 0;
        for (int i = 0; i < kPerThread; ++i) {
          switch (i % 3) {
            case 0: futures.push_back(pool.submit([i] { return i; })); break;
            case 1: handles.push_back(pool.handle([i] { return i; })); break;
            default: EXPECT_TRUE(pool.post([&sum, i] { sum += i; })); break;
          }
        }
        for (auto& f : futures) got += f.get();
        for (auto& h : handles) got += h.get();
        expected_sums[t] = got;
      });
    }
    for (auto& thread : threads) thread.join();
  }
  pool.wait_idle();
  long expected_posted = 0;
  long expected_returned = 0;
  for (int i = 0; i < kPerThread; ++i) (i % 3 == 2 ? expected_posted : expected_returned) += i;
  EXPECT_EQ(sum.load(), expected_posted * kThreads);
  for (long got : expected_sums) EXPECT_EQ(got, expected_returned);
  const ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.submitted, static_cast<std::uint64_t>(kThreads * kPerThread));
  EXPECT_EQ(stats.completed, stats.submitted);
}

// ---- cancellation before start ------------------------------------------------------

TEST_P(ThreadPoolP, CancelBeforeStartResolvesAtOnceAndFreesCapturesWhileWorkersAreBlocked) {
  Gate gate;
  std::atomic<int> runs{0};
  DestructionProbe::Record by_handle_probe;
  DestructionProbe::Record by_token_probe;
  CancellationSource source;
  ThreadPool pool(workers());
  OpenOnExit open_gate(gate);
  auto blockers = test::block_workers(pool, gate, workers());

  auto shared_by_handle = std::make_shared<int>(1);
  std::weak_ptr<int> watch_by_handle = shared_by_handle;
  TaskHandle<int> handle = pool.handle(
      [&runs, shared = std::move(shared_by_handle), probe = DestructionProbe(&by_handle_probe)] {
        return ++runs + *shared;
      });
  auto shared_by_token = std::make_shared<int>(2);
  std::weak_ptr<int> watch_by_token = shared_by_token;
  Future<int> future = pool.submit(
      [&runs, shared = std::move(shared_by_token), probe = DestructionProbe(&by_token_probe)] {
        return ++runs + *shared;
      },
      TaskOptions().set_cancellation(source.token()));
  ASSERT_FALSE(watch_by_handle.expired());
  ASSERT_FALSE(watch_by_token.expired());
  EXPECT_EQ(pool.stats().queued, 2u);

  EXPECT_TRUE(handle.cancel());
  EXPECT_TRUE(source.request_cancel());

  // Every worker is still held: the drops happened on this thread, now.
  ASSERT_FALSE(gate.is_open());
  EXPECT_TRUE(handle.future().ready());
  EXPECT_EQ(handle.status(), TaskStatus::cancelled);
  EXPECT_TRUE(future.ready());
  EXPECT_EQ(future.status(), TaskStatus::cancelled);
  EXPECT_EQ(future.result(), TaskResult::cancelled);
  EXPECT_TRUE(watch_by_handle.expired());
  EXPECT_TRUE(watch_by_token.expired());
  EXPECT_EQ(by_handle_probe.destroyed.load(), 1);
  EXPECT_EQ(by_token_probe.destroyed.load(), 1);
  const ThreadPoolStats held = pool.stats();
  EXPECT_EQ(held.queued, 0u);
  EXPECT_EQ(held.running, workers());
  EXPECT_EQ(held.cancelled, 2u);

  gate.open();
  pool.wait_idle();
  EXPECT_EQ(runs.load(), 0);
  EXPECT_EQ(by_handle_probe.destroyed.load(), 1);  // exactly once
  EXPECT_EQ(by_token_probe.destroyed.load(), 1);
  EXPECT_THROW(handle.get(), OperationCancelled);
  EXPECT_THROW(future.get(), OperationCancelled);
}

TEST_P(ThreadPoolP, CancellingATaskQueuedInAWorkersOwnDequeResolvesItAtOnce) {
  Gate gate;
  ThreadPool pool(workers());
  OpenOnExit open_gate(gate);
  auto blockers = test::block_workers(pool, gate, workers() - 1);
  struct Seen {
    TaskStatus before;
    bool ready_at_once;
    TaskStatus after;
    bool capture_freed;
  };
  std::atomic<int> child_runs{0};
  Future<Seen> parent = pool.submit([&pool, &child_runs] {
    Seen seen{};
    auto shared = std::make_shared<int>(0);
    std::weak_ptr<int> watch = shared;
    TaskHandle<void> child = pool.handle([&child_runs, shared = std::move(shared)] { ++child_runs; });
    seen.before = child.status();  // in this worker's deque; the others are held
    child.cancel();
    seen.ready_at_once = child.future().ready();
    seen.after = child.status();
    seen.capture_freed = watch.expired();
    return seen;
  });
  const Seen seen = parent.get();
  EXPECT_EQ(seen.before, TaskStatus::queued);
  EXPECT_TRUE(seen.ready_at_once);
  EXPECT_EQ(seen.after, TaskStatus::cancelled);
  EXPECT_TRUE(seen.capture_freed);
  gate.open();
  pool.wait_idle();
  EXPECT_EQ(child_runs.load(), 0);
}

TEST_P(ThreadPoolP, ATaskSubmittedWithAnAlreadyCancelledTokenIsCancelledAtOnceAndNeverRuns) {
  ThreadPool pool(workers());
  CancellationSource source;
  source.request_cancel();
  std::atomic<int> runs{0};
  Future<void> future = pool.submit([&] { ++runs; }, TaskOptions().set_cancellation(source.token()));
  TaskHandle<void> handle = pool.handle([&] { ++runs; }, TaskOptions().set_cancellation(source.token()));
  EXPECT_TRUE(future.ready());
  EXPECT_EQ(future.status(), TaskStatus::cancelled);
  EXPECT_TRUE(handle.future().ready());
  EXPECT_EQ(handle.status(), TaskStatus::cancelled);
  EXPECT_EQ(handle.token().reason(), CancelReason::requested);
  pool.wait_idle();
  EXPECT_EQ(runs.load(), 0);
}

TEST_P(ThreadPoolP, PostWithAnAlreadyCancelledTokenReturnsTrueAndCountsAsCancelledNotRejected) {
  ThreadPool pool(workers());
  CancellationSource source;
  source.request_cancel();
  std::atomic<int> runs{0};
  auto shared = std::make_shared<int>(0);
  std::weak_ptr<int> watch = shared;
  EXPECT_TRUE(pool.post([&runs, shared = std::move(shared)] { ++runs; },
                        TaskOptions().set_cancellation(source.token())));
  EXPECT_TRUE(watch.expired());  // resolved, and its captures freed, at once
  pool.wait_idle();
  EXPECT_EQ(runs.load(), 0);
  const ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.submitted, 1u);
  EXPECT_EQ(stats.cancelled, 1u);
  EXPECT_EQ(stats.rejected, 0u);
  EXPECT_EQ(stats.queued, 0u);
}

TEST_P(ThreadPoolP, AQueuedTaskDroppedForReasonDeadlineEndsTimedOutAndForAnyOtherReasonCancelled) {
  Gate gate;
  ThreadPool pool(workers());
  OpenOnExit open_gate(gate);
  auto blockers = test::block_workers(pool, gate, workers());
  const std::pair<CancelReason, TaskStatus> cases[] = {
      {CancelReason::deadline, TaskStatus::timed_out},
      {CancelReason::requested, TaskStatus::cancelled},
      {CancelReason::shutdown, TaskStatus::cancelled},
      {CancelReason::failure, TaskStatus::cancelled},
      {CancelReason::none, TaskStatus::cancelled},  // counts as requested
  };
  std::atomic<int> runs{0};
  for (const auto& [reason, expected] : cases) {
    CancellationSource source;
    TaskHandle<void> handle = pool.handle([&] { ++runs; }, TaskOptions().set_cancellation(source.token()));
    ASSERT_EQ(handle.status(), TaskStatus::queued);
    source.request_cancel(reason);
    EXPECT_TRUE(handle.future().ready());
    EXPECT_EQ(handle.status(), expected) << "reason " << static_cast<int>(reason);
    EXPECT_EQ(handle.token().reason(),
              reason == CancelReason::none ? CancelReason::requested : reason);
    if (expected == TaskStatus::timed_out) {
      EXPECT_EQ(handle.future().error(), Errc::timed_out);
    } else {
      EXPECT_EQ(handle.future().error(), Errc::cancelled);
    }
  }
  const ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.timed_out, 1u);
  EXPECT_EQ(stats.cancelled, 4u);
  gate.open();
  pool.wait_idle();
  EXPECT_EQ(runs.load(), 0);
}

TEST_P(ThreadPoolP, TheFirstOriginToCancelATaskDecidesItsReasonAndOutcome) {
  Gate gate;
  ThreadPool pool(workers());
  OpenOnExit open_gate(gate);
  auto blockers = test::block_workers(pool, gate, workers());

  CancellationSource deadline_later;
  TaskHandle<void> handle_first =
      pool.handle([] {}, TaskOptions().set_cancellation(deadline_later.token()));
  EXPECT_TRUE(handle_first.cancel());
  deadline_later.request_cancel(CancelReason::deadline);
  EXPECT_EQ(handle_first.token().reason(), CancelReason::requested);
  EXPECT_EQ(handle_first.status(), TaskStatus::cancelled);

  CancellationSource deadline_first;
  TaskHandle<void> options_first =
      pool.handle([] {}, TaskOptions().set_cancellation(deadline_first.token()));
  deadline_first.request_cancel(CancelReason::deadline);
  EXPECT_FALSE(options_first.cancel());
  EXPECT_EQ(options_first.token().reason(), CancelReason::deadline);
  EXPECT_EQ(options_first.status(), TaskStatus::timed_out);
}

TEST_P(ThreadPoolP, ARunningTasksTokenTakesTheReasonOfTheOptionsTokenThatCancelsIt) {
  ThreadPool pool(workers());
  for (CancelReason reason : {CancelReason::requested, CancelReason::deadline,
                              CancelReason::shutdown, CancelReason::failure}) {
    CancellationSource source;
    std::latch started(1);
    Future<CancelReason> future = pool.submit(
        [&started](CancellationToken token) {
          started.count_down();
          return test::wait_cancelled(token) ? token.reason() : CancelReason::none;
        },
        TaskOptions().set_cancellation(source.token()));
    started.wait();
    source.request_cancel(reason);
    EXPECT_EQ(future.get(), reason);
    EXPECT_EQ(future.status(), TaskStatus::completed);  // returned normally
  }
}

// ---- how a task ends ------------------------------------------------------------------

TEST_P(ThreadPoolP, ATaskThatThrowsEndsFailedAndGetRethrowsThatException) {
  ThreadPool pool(workers());
  Future<int> future = pool.submit([]() -> int { throw std::out_of_range("index 9"); });
  try {
    future.get();
    ADD_FAILURE() << "no exception";
  } catch (const std::out_of_range& e) {
    EXPECT_STREQ(e.what(), "index 9");
  }
  EXPECT_EQ(future.status(), TaskStatus::failed);
  EXPECT_EQ(future.result(), TaskResult::failure);
  EXPECT_TRUE(pool.post([] { throw std::runtime_error("posted"); }));
  pool.wait_idle();
  EXPECT_EQ(pool.stats().failed, 2u);
  // A failure does not hurt the pool.
  EXPECT_EQ(pool.submit([] { return 1; }).get(), 1);
}

TEST_P(ThreadPoolP, ATaskThatThrowsOperationCancelledEndsCancelledNotFailed) {
  ThreadPool pool(workers());
  Future<int> future = pool.submit([]() -> int { throw OperationCancelled(); });
  future.wait();
  EXPECT_EQ(future.status(), TaskStatus::cancelled);
  EXPECT_EQ(future.result(), TaskResult::cancelled);
  EXPECT_THROW(future.get(), OperationCancelled);
  pool.wait_idle();
  EXPECT_EQ(pool.stats().cancelled, 1u);
  EXPECT_EQ(pool.stats().failed, 0u);
}

TEST_P(ThreadPoolP, ATaskThatThrowsOperationCancelledWhileItsReasonIsDeadlineEndsTimedOut) {
  ThreadPool pool(workers());
  CancellationSource source;
  std::latch started(1);
  Future<int> future = pool.submit(
      [&started](CancellationToken token) -> int {
        started.count_down();
        if (!test::wait_cancelled(token)) return -1;
        token.throw_if_cancelled();
        return 0;
      },
      TaskOptions().set_cancellation(source.token()));
  started.wait();
  source.request_cancel(CancelReason::deadline);
  future.wait();
  EXPECT_EQ(future.status(), TaskStatus::timed_out);
  EXPECT_EQ(future.result(), TaskResult::timeout);
  try {
    future.get();
    ADD_FAILURE() << "no exception";
  } catch (const OperationCancelled&) {
    ADD_FAILURE() << "timed out: TaskError(timed_out), not OperationCancelled";
  } catch (const TaskError& e) {
    EXPECT_EQ(e.code(), Errc::timed_out);
  }
  pool.wait_idle();
  EXPECT_EQ(pool.stats().timed_out, 1u);
}

TEST_P(ThreadPoolP, ATaskThatReturnsNormallyAfterItsTokenWasCancelledEndsCompleted) {
  ThreadPool pool(workers());
  std::latch started(1);
  TaskHandle<int> handle = pool.handle([&](CancellationToken token) {
    started.count_down();
    return test::wait_cancelled(token) ? 1 : -1;
  });
  started.wait();
  handle.cancel();
  EXPECT_EQ(handle.get(), 1);
  EXPECT_EQ(handle.status(), TaskStatus::completed);
  pool.wait_idle();
  EXPECT_EQ(pool.stats().completed, 1u);
  EXPECT_EQ(pool.stats().cancelled, 0u);
}

// ---- rejection --------------------------------------------------------------------------

TEST_P(ThreadPoolP, SubmissionsAfterShutdownAreRejectedWithAReadyFutureAndPostReturnsFalse) {
  ThreadPool pool(workers());
  pool.submit([] {}).get();
  pool.shutdown();
  DestructionProbe::Record record;
  std::atomic<int> runs{0};
  Future<int> future = pool.submit([&runs, probe = DestructionProbe(&record)] { return ++runs; });
  ASSERT_TRUE(future.ready());
  EXPECT_EQ(future.status(), TaskStatus::rejected);
  EXPECT_EQ(future.result(), TaskResult::rejected);
  EXPECT_EQ(future.error(), Errc::rejected);
  EXPECT_EQ(record.destroyed.load(), 1);  // the callable does not linger
  try {
    future.get();
    ADD_FAILURE() << "no exception";
  } catch (const TaskError& e) {
    EXPECT_EQ(e.code(), Errc::rejected);
  }
  EXPECT_FALSE(pool.post([&] { ++runs; }));
  TaskHandle<int> handle = pool.handle([&] { return ++runs; });
  EXPECT_EQ(handle.status(), TaskStatus::rejected);
  // Even an already-cancelled token does not turn a rejection into a cancellation.
  CancellationSource source;
  source.request_cancel();
  EXPECT_FALSE(pool.post([] {}, TaskOptions().set_cancellation(source.token())));
  EXPECT_EQ(runs.load(), 0);
  const ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.submitted, 5u);
  EXPECT_EQ(stats.rejected, 4u);
  EXPECT_EQ(stats.completed, 1u);
  EXPECT_EQ(stats.cancelled, 0u);
}

TEST_P(ThreadPoolP, SubmissionsPastMaxQueueSizeAreRejectedAndAFreedSlotIsUsableAgain) {
  constexpr std::size_t kBound = 3;
  Gate gate;
  ThreadPoolConfig config;
  config.thread_count = workers();
  config.max_queue_size = kBound;
  std::atomic<int> runs{0};
  ThreadPool pool(config);
  OpenOnExit open_gate(gate);
  auto blockers = test::block_workers(pool, gate, workers());  // running tasks do not count

  std::vector<TaskHandle<int>> queued;
  for (std::size_t i = 0; i < kBound; ++i) {
    queued.push_back(pool.handle([&] { return ++runs; }));
    EXPECT_EQ(queued.back().status(), TaskStatus::queued);
  }
  EXPECT_EQ(pool.stats().queued, kBound);

  Future<int> over = pool.submit([&] { return ++runs; });
  ASSERT_TRUE(over.ready());
  EXPECT_EQ(over.status(), TaskStatus::rejected);
  EXPECT_FALSE(pool.post([&] { ++runs; }));
  TaskHandle<int> over_handle = pool.handle([&] { return ++runs; });
  EXPECT_EQ(over_handle.status(), TaskStatus::rejected);
  try {
    over.get();
    ADD_FAILURE() << "no exception";
  } catch (const TaskError& e) {
    EXPECT_EQ(e.code(), Errc::rejected);
  }

  // Cancelling a queued task frees its slot at once.
  EXPECT_TRUE(queued.front().cancel());
  Future<int> fits = pool.submit([&] { return ++runs; });
  EXPECT_EQ(fits.status(), TaskStatus::queued);
  EXPECT_FALSE(pool.post([&] { ++runs; }));

  ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.queued, kBound);
  EXPECT_EQ(stats.rejected, 4u);
  EXPECT_EQ(stats.submitted, workers() + kBound + 5);

  gate.open();
  pool.wait_idle();
  EXPECT_EQ(runs.load(), static_cast<int>(kBound));  // two of the first three, and `fits`
  // Once drained, the pool takes a full queue's worth again.
  std::vector<Future<void>> again;
  for (std::size_t i = 0; i < kBound; ++i) again.push_back(pool.submit([] {}));
  for (auto& f : again) {
    f.wait();
    EXPECT_EQ(f.status(), TaskStatus::completed);
  }
  pool.wait_idle();
  stats = pool.stats();
  EXPECT_EQ(ended(stats), stats.submitted);
  EXPECT_EQ(stats.rejected, 4u);
  EXPECT_EQ(stats.cancelled, 1u);
}

TEST_P(ThreadPoolP, TasksQueuedFromAWorkerCountAgainstMaxQueueSize) {
  constexpr std::size_t kBound = 2;
  Gate gate;
  ThreadPoolConfig config;
  config.thread_count = workers();
  config.max_queue_size = kBound;
  ThreadPool pool(config);
  OpenOnExit open_gate(gate);
  auto blockers = test::block_workers(pool, gate, workers() - 1);  // one worker left
  std::atomic<int> child_runs{0};
  std::vector<TaskStatus> statuses;
  Future<void> parent = pool.submit([&] {
    std::vector<Future<void>> children;
    for (std::size_t i = 0; i < kBound + 2; ++i) {
      children.push_back(pool.submit([&] { ++child_runs; }));  // to this worker's deque
    }
    for (auto& child : children) statuses.push_back(child.status());
    statuses.push_back(pool.post([] {}) ? TaskStatus::queued : TaskStatus::rejected);
  });
  parent.get();
  const std::vector<TaskStatus> expected = {TaskStatus::queued, TaskStatus::queued,
                                            TaskStatus::rejected, TaskStatus::rejected,
                                            TaskStatus::rejected};
  EXPECT_EQ(statuses, expected);
  gate.open();
  pool.wait_idle();
  EXPECT_EQ(child_runs.load(), static_cast<int>(kBound));
  EXPECT_EQ(pool.stats().rejected, 3u);
}

// ---- shutdown ----------------------------------------------------------------------------

TEST_P(ThreadPoolP, ADrainShutdownRunsEverythingQueuedBeforeItReturns) {
  constexpr int kQueued = 40;
  Gate gate;
  std::atomic<int> runs{0};
  ThreadPool pool(workers());
  OpenOnExit open_gate(gate);
  auto blockers = test::block_workers(pool, gate, workers());
  std::vector<Future<int>> futures;
  for (int i = 0; i < kQueued; ++i) futures.push_back(pool.submit([&runs, i] { ++runs; return i; }));

  std::atomic<bool> shutdown_returned{false};
  test::GuardedRun shutdown([&] {
    pool.shutdown();
    shutdown_returned = true;
  });
  // Intake closes when shutdown() begins; until then probes are accepted
  // (and must run too).
  int probes = 0;
  while (pool.post([&runs] { ++runs; })) {
    ++probes;
    std::this_thread::yield();
  }
  EXPECT_FALSE(shutdown_returned.load());  // it waits for the held workers
  EXPECT_EQ(runs.load(), 0);
  gate.open();
  ASSERT_TRUE(shutdown.finished_within(test::kGuard));
  EXPECT_EQ(runs.load(), kQueued + probes);
  for (int i = 0; i < kQueued; ++i) {
    ASSERT_TRUE(futures[i].ready()) << i;
    EXPECT_EQ(futures[i].get(), i);
  }
  const ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.completed, static_cast<std::uint64_t>(workers() + kQueued + probes));
  EXPECT_EQ(stats.rejected, 1u);  // the probe that saw intake closed
  EXPECT_EQ(stats.queued, 0u);
  EXPECT_EQ(stats.running, 0u);
  EXPECT_EQ(ended(stats), stats.submitted);
}

TEST_P(ThreadPoolP, ACancelShutdownDropsQueuedTasksAndCancelsRunningTokensWithReasonShutdown) {
  constexpr int kQueued = 25;
  ThreadPoolConfig config;
  config.thread_count = workers();
  config.shutdown_policy = ShutdownPolicy::cancel;
  std::atomic<int> queued_runs{0};
  ThreadPool pool(config);

  // Hold every worker with a task that waits for its token; odd ones then
  // throw OperationCancelled, even ones return normally.
  std::vector<Future<CancelReason>> running;
  for (std::size_t i = 0; i < workers(); ++i) {
    auto started = std::make_shared<std::latch>(1);
    running.push_back(pool.submit([started, i](CancellationToken token) {
      started->count_down();
      if (!test::wait_cancelled(token)) return CancelReason::none;
      if (i % 2 == 1) token.throw_if_cancelled();
      return token.reason();
    }));
    started->wait();
  }
  std::vector<TaskHandle<int>> queued;
  std::vector<std::weak_ptr<int>> captures;
  for (int i = 0; i < kQueued; ++i) {
    auto shared = std::make_shared<int>(i);
    captures.push_back(shared);
    queued.push_back(pool.handle([&queued_runs, shared = std::move(shared)] { return ++queued_runs; }));
  }

  pool.shutdown();

  EXPECT_EQ(queued_runs.load(), 0);
  for (auto& handle : queued) {
    ASSERT_TRUE(handle.future().ready());
    EXPECT_EQ(handle.status(), TaskStatus::cancelled);
    EXPECT_EQ(handle.token().reason(), CancelReason::shutdown);
    EXPECT_THROW(handle.get(), OperationCancelled);
  }
  for (const auto& capture : captures) EXPECT_TRUE(capture.expired());
  for (std::size_t i = 0; i < workers(); ++i) {
    ASSERT_TRUE(running[i].ready());
    if (i % 2 == 1) {
      EXPECT_EQ(running[i].status(), TaskStatus::cancelled);
    } else {
      EXPECT_EQ(running[i].status(), TaskStatus::completed);
      EXPECT_EQ(running[i].get(), CancelReason::shutdown);
    }
  }
  const ThreadPoolStats stats = pool.stats();
  const std::uint64_t threw = workers() / 2;
  EXPECT_EQ(stats.completed, workers() - threw);
  EXPECT_EQ(stats.cancelled, kQueued + threw);
  EXPECT_EQ(stats.queued, 0u);
  EXPECT_EQ(stats.running, 0u);
  EXPECT_EQ(ended(stats), stats.submitted);
  EXPECT_FALSE(pool.post([] {}));
}

TEST_P(ThreadPoolP, ACancelShutdownResolvesQueuedTasksAtOnceWhileEveryWorkerIsBusy) {
  // §12: the queued tasks are resolved on the thread that calls shutdown(),
  // before it waits for the running ones, even while no worker is free:
  // those queued behind others from outside, and those a busy task pushed
  // onto its worker's own deque.
  constexpr int kQueued = 20;
  constexpr int kChildren = 5;
  ThreadPoolConfig config;
  config.thread_count = workers();
  config.shutdown_policy = ShutdownPolicy::cancel;
  ThreadPool pool(config);
  Gate gate;
  OpenOnExit open(gate);
  std::mutex mutex;
  std::vector<Future<int>> queued;
  std::vector<std::weak_ptr<int>> captures;
  auto queue_one = [&](int i) {
    auto shared = std::make_shared<int>(i);
    std::lock_guard lock(mutex);
    captures.push_back(shared);
    queued.push_back(pool.submit([shared = std::move(shared)] { return *shared; }));
  };
  // Each worker runs a task that, once every worker is taken, queues
  // children on its own deque, then holds the worker without looking at its
  // token.
  std::latch all_busy(static_cast<std::ptrdiff_t>(workers()));
  std::latch all_queued(static_cast<std::ptrdiff_t>(workers()));
  std::vector<Future<void>> busy;
  for (std::size_t w = 0; w < workers(); ++w) {
    busy.push_back(pool.submit([&] {
      all_busy.arrive_and_wait();
      for (int c = 0; c < kChildren; ++c) queue_one(c);
      all_queued.count_down();
      gate.wait();
    }));
  }
  all_queued.wait();
  for (int i = 0; i < kQueued; ++i) queue_one(i);

  test::GuardedRun shutdown([&pool] { pool.shutdown(); });
  ASSERT_TRUE(test::spin_until_true([&] {
    std::lock_guard lock(mutex);
    return std::all_of(queued.begin(), queued.end(), [](const auto& f) { return f.ready(); });
  })) << "queued tasks waited for a worker to free up";
  {
    std::lock_guard lock(mutex);
    ASSERT_EQ(queued.size(), kQueued + workers() * kChildren);
    for (auto& future : queued) {
      EXPECT_EQ(future.status(), TaskStatus::cancelled);
      EXPECT_THROW(future.get(), OperationCancelled);
    }
    for (const auto& capture : captures) EXPECT_TRUE(capture.expired()) << "a capture outlived the drop";
  }
  for (const auto& future : busy) EXPECT_FALSE(future.ready());
  gate.open();
  ASSERT_TRUE(shutdown.finished_within(test::kGuard));
  for (auto& future : busy) EXPECT_EQ(future.status(), TaskStatus::completed);
}

TEST_P(ThreadPoolP, ADrainShutdownDoesNotCancelRunningTasks) {
  Gate gate;
  std::latch started(1);
  ThreadPool pool(workers());
  Future<bool> running = pool.submit([&](CancellationToken token) {
    started.count_down();
    gate.wait();
    return token.cancelled();
  });
  started.wait();
  test::GuardedRun shutdown([&] { pool.shutdown(); });
  while (pool.post([] {})) std::this_thread::yield();  // shutdown() has begun
  gate.open();
  ASSERT_TRUE(shutdown.finished_within(test::kGuard));
  EXPECT_FALSE(running.get());
}

TEST_P(ThreadPoolP, ShutdownIsIdempotentAndSafeFromSeveralThreadsAtOnce) {
  ThreadPool pool(workers());
  std::atomic<int> runs{0};
  for (int i = 0; i < 100; ++i) pool.post([&] { ++runs; });
  {
    std::barrier start(3);
    std::vector<std::thread> threads;
    for (int t = 0; t < 3; ++t) {
      threads.emplace_back([&] {
        start.arrive_and_wait();
        pool.shutdown();
        EXPECT_EQ(runs.load(), 100);  // whichever returns, the drain is complete
      });
    }
    for (auto& thread : threads) thread.join();
  }
  pool.shutdown();
  pool.wait_idle();
  EXPECT_EQ(runs.load(), 100);
  EXPECT_EQ(pool.stats().completed, 100u);
}

TEST_P(ThreadPoolP, TheDestructorDrainsWhatIsQueuedAndJoins) {
  Gate gate;
  std::atomic<int> runs{0};
  {
    ThreadPool pool(workers());
    OpenOnExit open_gate(gate);
    auto blockers = test::block_workers(pool, gate, workers());
    for (int i = 0; i < 30; ++i) pool.post([&] { ++runs; });
    EXPECT_EQ(runs.load(), 0);
    gate.open();
  }
  EXPECT_EQ(runs.load(), 30);
}

class ShutdownUnderLoad
    : public ::testing::TestWithParam<std::tuple<std::size_t, ShutdownPolicy>> {};

TEST_P(ShutdownUnderLoad, ConcurrentSubmittersLoseNothingAndEveryFutureEndsOnce) {
  const std::size_t workers = std::get<0>(GetParam());
  const ShutdownPolicy policy = std::get<1>(GetParam());
  constexpr int kSubmitters = 4;
  constexpr int kMaxPerSubmitter = 20'000;
  constexpr int kAfterRejection = 50;
  ThreadPoolConfig config;
  config.thread_count = workers;
  config.shutdown_policy = policy;
  ThreadPool pool(config);

  std::vector<std::atomic<int>> runs(static_cast<std::size_t>(kSubmitters) * kMaxPerSubmitter);
  struct Submitted {
    std::vector<std::pair<int, Future<int>>> futures;
    std::vector<std::pair<int, TaskHandle<int>>> handles;
    std::vector<std::pair<int, bool>> posts;
    int count = 0;
  };
  std::vector<Submitted> submitted(kSubmitters);
  std::latch warmed_up(kSubmitters);
  {
    std::vector<std::thread> threads;
    for (int t = 0; t < kSubmitters; ++t) {
      threads.emplace_back([&, t] {
        Submitted& mine = submitted[static_cast<std::size_t>(t)];
        int after_rejection = -1;
        for (int i = 0; i < kMaxPerSubmitter && after_rejection < kAfterRejection; ++i) {
          const int index = t * kMaxPerSubmitter + i;
          auto body = [&runs, index] {
            runs[static_cast<std::size_t>(index)].fetch_add(1);
            return index;
          };
          bool rejected = false;
          switch (i % 3) {
            case 0:
              mine.futures.emplace_back(index, pool.submit(body));
              rejected = mine.futures.back().second.status() == TaskStatus::rejected;
              break;
            case 1:
              mine.handles.emplace_back(index, pool.handle(body));
              rejected = mine.handles.back().second.status() == TaskStatus::rejected;
              break;
            default:
              mine.posts.emplace_back(index, pool.post(body));
              rejected = !mine.posts.back().second;
              break;
          }
          ++mine.count;
          if (i == 200) warmed_up.count_down();
          if (rejected && after_rejection < 0) after_rejection = 0;
          if (after_rejection >= 0) ++after_rejection;
        }
        if (mine.count <= 200) warmed_up.count_down();
      });
    }
    warmed_up.wait();
    pool.shutdown();
    for (auto& thread : threads) thread.join();
  }

  std::uint64_t total = 0;
  std::uint64_t completed = 0;
  std::uint64_t rejected = 0;
  std::uint64_t cancelled = 0;
  std::uint64_t ran = 0;             // posts that ran
  std::uint64_t posts_cancelled = 0;  // posts accepted that never ran
  const auto check = [&](int index, TaskStatus status, auto&& get) {
    const int run_count = runs[static_cast<std::size_t>(index)].load();
    switch (status) {
      case TaskStatus::completed:
        ++completed;
        EXPECT_EQ(run_count, 1) << index;
        EXPECT_EQ(get(), index);
        break;
      case TaskStatus::rejected:
        ++rejected;
        EXPECT_EQ(run_count, 0) << index;
        break;
      case TaskStatus::cancelled:
        ++cancelled;
        EXPECT_EQ(policy, ShutdownPolicy::cancel) << "a drain shutdown cancelled task " << index;
        EXPECT_EQ(run_count, 0) << index;
        break;
      default: ADD_FAILURE() << "task " << index << " ended " << to_string(status);
    }
  };
  for (auto& mine : submitted) {
    total += static_cast<std::uint64_t>(mine.count);
    for (auto& entry : mine.futures) {
      Future<int>& future = entry.second;
      ASSERT_TRUE(future.ready()) << entry.first;
      check(entry.first, future.status(), [&future] { return future.get(); });
    }
    for (auto& entry : mine.handles) {
      TaskHandle<int>& handle = entry.second;
      ASSERT_TRUE(handle.future().ready()) << entry.first;
      check(entry.first, handle.status(), [&handle] { return handle.get(); });
    }
    for (const auto& [index, accepted] : mine.posts) {
      const int run_count = runs[static_cast<std::size_t>(index)].load();
      EXPECT_LE(run_count, accepted ? 1 : 0) << index;
      if (!accepted) ++rejected;
      if (accepted && run_count == 0) ++posts_cancelled;
      if (policy == ShutdownPolicy::drain && accepted) {
        EXPECT_EQ(run_count, 1) << index;
      }
      ran += static_cast<std::uint64_t>(run_count);
    }
  }
  const ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.submitted, total);
  EXPECT_EQ(stats.rejected, rejected);
  EXPECT_EQ(stats.completed, completed + ran);  // futures and handles counted above, posts here
  EXPECT_EQ(stats.cancelled, cancelled + posts_cancelled);
  EXPECT_EQ(stats.failed, 0u);
  EXPECT_EQ(stats.timed_out, 0u);
  EXPECT_EQ(stats.queued, 0u);
  EXPECT_EQ(stats.running, 0u);
  EXPECT_EQ(ended(stats), stats.submitted);
}

INSTANTIATE_TEST_SUITE_P(
    PoolSizesAndPolicies, ShutdownUnderLoad,
    ::testing::Combine(::testing::Values<std::size_t>(1, 2, 4),
                       ::testing::Values(ShutdownPolicy::drain, ShutdownPolicy::cancel)),
    [](const auto& info) {
      return std::to_string(std::get<0>(info.param)) + "Workers" +
             (std::get<1>(info.param) == ShutdownPolicy::drain ? "Drain" : "Cancel");
    });

TEST(ThreadPool, ShutdownAndWaitIdleCalledFromAWorkerThrowLogicError) {
  ThreadPool pool(2);
  Future<int> future = pool.submit([&pool] {
    int caught = 0;
    try {
      pool.shutdown();
    } catch (const std::logic_error&) {
      caught |= 1;
    }
    try {
      pool.wait_idle();
    } catch (const std::logic_error&) {
      caught |= 2;
    }
    return caught;
  });
  EXPECT_EQ(future.get(), 3);
  EXPECT_EQ(pool.submit([] { return 1; }).get(), 1);  // the pool is unharmed
}

TEST(ThreadPool, AWorkerOfOnePoolMayShutDownAnotherPool) {
  ThreadPool outer(1);
  ThreadPool inner(2);
  std::atomic<int> runs{0};
  for (int i = 0; i < 20; ++i) inner.post([&] { ++runs; });
  Future<void> future = outer.submit([&] {
    inner.wait_idle();
    inner.shutdown();
  });
  EXPECT_NO_THROW(future.get());
  EXPECT_EQ(runs.load(), 20);
  EXPECT_FALSE(inner.post([] {}));
}

TEST(ThreadPoolDeathTest, DestroyingThePoolFromOneOfItsOwnWorkersTerminatesWithAMessage) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        auto* pool = new ThreadPool(1);
        std::latch never(1);
        pool->post([pool] { delete pool; });
        never.wait();
      },
      "destroyed from one of its own workers");
}

// ---- wait_idle and statistics -----------------------------------------------------------

TEST_P(ThreadPoolP, WaitIdleWaitsForRunningTasksAndThenEveryCounterIsExact) {
  Gate gate;
  ThreadPool pool(workers());
  OpenOnExit open_gate(gate);
  auto blockers = test::block_workers(pool, gate, workers());
  std::atomic<bool> idle_returned{false};
  {
    test::GuardedRun idle([&] {
      pool.wait_idle();
      idle_returned = true;
    });
    EXPECT_FALSE(idle.finished_within(50ms)) << "wait_idle() returned while tasks were held";
    EXPECT_FALSE(idle_returned.load());
    gate.open();
    EXPECT_TRUE(idle.finished_within(test::kGuard));
  }

  // One of each outcome, from outside and from inside a task.
  CancellationSource cancelled;
  cancelled.request_cancel();
  const auto submit_all = [&pool, &cancelled] {
    pool.post([] {});                                                          // completed
    pool.post([] { throw std::runtime_error("x"); });                          // failed
    pool.post([] { throw OperationCancelled(); });                             // cancelled
    pool.post([] {}, TaskOptions().set_cancellation(cancelled.token()));       // cancelled
    pool.post([] {}, TaskOptions().set_deadline(Clock::now() - 1s));           // timed_out
  };
  for (int round = 0; round < 10; ++round) submit_all();
  pool.post([&] {
    for (int round = 0; round < 10; ++round) submit_all();
  });
  pool.wait_idle();
  const ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.submitted, workers() + 101);
  EXPECT_EQ(stats.completed, workers() + 21);
  EXPECT_EQ(stats.failed, 20u);
  EXPECT_EQ(stats.cancelled, 40u);
  EXPECT_EQ(stats.timed_out, 20u);
  EXPECT_EQ(stats.rejected, 0u);
  EXPECT_EQ(stats.queued, 0u);
  EXPECT_EQ(stats.running, 0u);
  EXPECT_EQ(ended(stats), stats.submitted);
}

TEST_P(ThreadPoolP, StatsCountTasksQueuedBehindBlockedWorkersAndTheRunningOnes) {
  constexpr std::size_t kQueued = 7;
  Gate gate;
  ThreadPool pool(workers());
  OpenOnExit open_gate(gate);
  EXPECT_EQ(pool.stats().submitted, 0u);
  auto blockers = test::block_workers(pool, gate, workers());
  for (std::size_t i = 0; i < kQueued; ++i) pool.post([] {});
  ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.submitted, workers() + kQueued);
  EXPECT_EQ(stats.queued, kQueued);
  EXPECT_EQ(stats.running, workers());
  EXPECT_EQ(stats.completed, 0u);
  gate.open();
  pool.wait_idle();
  stats = pool.stats();
  EXPECT_EQ(stats.queued, 0u);
  EXPECT_EQ(stats.running, 0u);
  EXPECT_EQ(stats.completed, workers() + kQueued);
}

TEST_P(ThreadPoolP, StatsSubmittedCountsRejectedSubmissions) {
  ThreadPool pool(workers());
  pool.submit([] {}).get();
  pool.shutdown();
  for (int i = 0; i < 5; ++i) pool.post([] {});
  const ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.submitted, 6u);
  EXPECT_EQ(stats.rejected, 5u);
  EXPECT_EQ(ended(stats), stats.submitted);
}

// ---- where tasks go: deques, stealing, priorities ---------------------------------------

TEST(ThreadPool, TasksSubmittedFromAWorkerRunLastInFirstOutOnThatWorker) {
  ThreadPool pool(1);
  std::vector<int> order;  // written only by the one worker
  pool.submit([&] {
        for (int i = 0; i < 5; ++i) pool.post([&order, i] { order.push_back(i); });
      })
      .get();
  pool.wait_idle();
  EXPECT_EQ(order, (std::vector<int>{4, 3, 2, 1, 0}));
}

TEST(ThreadPool, AnIdleWorkerStealsFromAnotherWorkersDequeOldestFirst) {
  Gate release_thief;
  Gate release_owner;
  std::latch both_running(2);
  std::latch spawned(1);
  std::vector<int> order;  // written only by the thief
  std::vector<Future<void>> children;
  ThreadPool pool(2);
  OpenOnExit open_thief(release_thief);
  OpenOnExit open_owner(release_owner);
  Future<void> owner = pool.submit([&] {
    both_running.arrive_and_wait();
    for (int i = 0; i < 4; ++i) children.push_back(pool.submit([&order, i] { order.push_back(i); }));
    spawned.count_down();
    release_owner.wait();  // a plain block: the owner does not run its children
  });
  Future<void> thief = pool.submit([&] {
    both_running.arrive_and_wait();
    release_thief.wait();
  });
  spawned.wait();
  EXPECT_EQ(pool.stats().queued, 4u);
  EXPECT_EQ(pool.stats().stolen, 0u);
  release_thief.open();
  for (auto& child : children) ASSERT_TRUE(child.wait_for(test::kGuard));
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(pool.stats().stolen, 4u);
  release_owner.open();
  owner.get();
  thief.get();
}

TEST(ThreadPool, QueuedTasksRunHighBeforeNormalBeforeLow) {
  Gate gate;
  ThreadPool pool(1);
  OpenOnExit open_gate(gate);
  auto blockers = test::block_workers(pool, gate, 1);
  std::vector<TaskPriority> order;  // written only by the one worker
  for (int round = 0; round < 4; ++round) {
    for (TaskPriority priority : {TaskPriority::low, TaskPriority::normal, TaskPriority::high}) {
      pool.post([&order, priority] { order.push_back(priority); }, TaskOptions().set_priority(priority));
    }
  }
  gate.open();
  pool.wait_idle();
  std::vector<TaskPriority> expected;
  for (TaskPriority priority : {TaskPriority::high, TaskPriority::normal, TaskPriority::low}) {
    expected.insert(expected.end(), 4, priority);
  }
  EXPECT_EQ(order, expected);
}

class Starvation : public ::testing::TestWithParam<std::pair<TaskPriority, TaskPriority>> {};

TEST_P(Starvation, ALowerTaskRunsAtLeastOncePerSixtyFourHigherOnes) {
  const auto [lower, higher] = GetParam();
  constexpr int kHigher = 300;
  constexpr int kLower = 3;
  Gate gate;
  ThreadPool pool(1);
  OpenOnExit open_gate(gate);
  auto blockers = test::block_workers(pool, gate, 1);
  std::vector<bool> is_lower;  // the order tasks ran in; written only by the one worker
  for (int i = 0; i < kLower; ++i) {
    pool.post([&is_lower] { is_lower.push_back(true); }, TaskOptions().set_priority(lower));
  }
  for (int i = 0; i < kHigher; ++i) {
    pool.post([&is_lower] { is_lower.push_back(false); }, TaskOptions().set_priority(higher));
  }
  gate.open();
  pool.wait_idle();
  ASSERT_EQ(is_lower.size(), static_cast<std::size_t>(kHigher + kLower));
  std::vector<int> positions;
  for (std::size_t i = 0; i < is_lower.size(); ++i) {
    if (is_lower[i]) positions.push_back(static_cast<int>(i));
  }
  ASSERT_EQ(positions.size(), static_cast<std::size_t>(kLower));
  EXPECT_GE(positions[0], 1) << "priority: higher tasks go first while the counter allows";
  EXPECT_LE(positions[0], 64) << "the first lower task waited behind more than 64 higher ones";
  for (std::size_t i = 1; i < positions.size(); ++i) {
    EXPECT_LE(positions[i] - positions[i - 1] - 1, 64)
        << "more than 64 higher tasks ran between two lower ones";
  }
}

INSTANTIATE_TEST_SUITE_P(
    PriorityPairs, Starvation,
    ::testing::Values(std::pair{TaskPriority::low, TaskPriority::high},
                      std::pair{TaskPriority::normal, TaskPriority::high},
                      std::pair{TaskPriority::low, TaskPriority::normal}),
    [](const auto& info) {
      return std::string(info.param.first == TaskPriority::low ? "Low" : "Normal") + "Under" +
             (info.param.second == TaskPriority::high ? "High" : "Normal");
    });

TEST(ThreadPool, PriorityOrdersOnlyTheSharedQueuesNotAWorkersOwnDeque) {
  ThreadPool pool(1);
  std::vector<TaskPriority> order;  // written only by the one worker
  pool.submit([&] {
        pool.post([&order] { order.push_back(TaskPriority::high); },
                  TaskOptions().set_priority(TaskPriority::high));
        pool.post([&order] { order.push_back(TaskPriority::low); },
                  TaskOptions().set_priority(TaskPriority::low));
      })
      .get();
  pool.wait_idle();
  // Worker-local: last in, first out, whatever the priority.
  EXPECT_EQ(order, (std::vector<TaskPriority>{TaskPriority::low, TaskPriority::high}));
}

// ---- fork-join --------------------------------------------------------------------------

long fib(ThreadPool& pool, int n) {
  if (n < 2) return n;
  Future<long> left = pool.submit([&pool, n] { return fib(pool, n - 1); });
  Future<long> right = pool.submit([&pool, n] { return fib(pool, n - 2); });
  const long r = right.get();  // the newer one first: usually still in our deque
  return left.get() + r;
}

TEST_P(ThreadPoolP, ForkJoinFromInsideTasksDoesNotDeadlockBecauseAWaitingWorkerHelps) {
  ThreadPool pool(workers());
  Future<long> result = pool.submit([&pool] { return fib(pool, 16); });
  ASSERT_TRUE(result.wait_for(std::chrono::seconds(90))) << "fork-join deadlocked";
  EXPECT_EQ(result.get(), 987);
  pool.wait_idle();
  const ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.completed, stats.submitted);
  EXPECT_EQ(stats.submitted, 1u + 2u * (1597u - 1u));  // 1 + every call with n >= 2 spawns 2
}

// ---- wake-ups ---------------------------------------------------------------------------

// Runs `count` empty posts and waits (without wait_idle(), which would hang
// on a lost wake-up) until they ran; false if the guard passed first.
bool run_burst(ThreadPool& pool, int count, std::chrono::seconds guard) {
  auto done = std::make_shared<std::atomic<int>>(0);
  for (int i = 0; i < count; ++i) pool.post([done] { done->fetch_add(1); });
  const auto until = Clock::now() + guard;
  while (done->load() < count) {
    if (Clock::now() > until) return false;
    std::this_thread::yield();
  }
  return true;
}

TEST_P(ThreadPoolP, ASubmissionAlwaysWakesASleepingWorkerEvenAfterBurstsOfSubmissions) {
  // Leaked if a wake-up is lost: its destructor would wait for the stranded task forever.
  auto* pool = new ThreadPool(workers());
  for (int round = 0; round < 2000; ++round) {
    // A burst of submissions while workers go idle and wake...
    std::vector<Future<void>> futures;
    for (int i = 0; i < 500; ++i) futures.push_back(pool->submit([] {}));
    for (auto& f : futures) {
      if (!f.wait_for(std::chrono::seconds(5))) {
        ADD_FAILURE() << "lost wake-up in round " << round << ": a task stayed queued";
        return;
      }
    }
    if (!run_burst(*pool, 500, std::chrono::seconds(5))) {
      ADD_FAILURE() << "lost wake-up in round " << round << ": posts stranded in the queue";
      return;
    }
    // ...then every worker idles (and sleeps) before one more submission.
    pool->wait_idle();
    Future<int> probe = pool->submit([] { return 1; });
    if (!probe.wait_for(std::chrono::seconds(5))) {
      ADD_FAILURE() << "lost wake-up in round " << round
                    << ": a task stayed queued with every worker asleep";
      return;
    }
  }
  delete pool;
}

// Two parties meet: each waits (blocking its worker, no helping) until the
// other arrived; false if `guard` passed first.
class Rendezvous {
 public:
  bool arrive_and_wait(std::chrono::seconds guard) {
    std::unique_lock lock(mutex_);
    if (++arrived_ == 2) met_.notify_all();
    return met_.wait_for(lock, guard, [this] { return arrived_ >= 2; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable met_;
  int arrived_ = 0;
};

TEST(ThreadPool, TwoTasksThatWaitForEachOtherBothStartOnTwoIdleWorkers) {
  ThreadPool pool(2);
  for (int round = 0; round < 1000; ++round) {
    // Workers going idle, waking and sleeping around the pair.
    ASSERT_TRUE(run_burst(pool, 50, std::chrono::seconds(10))) << "round " << round;
    Rendezvous meet;
    Future<bool> a = pool.submit([&meet] { return meet.arrive_and_wait(std::chrono::seconds(10)); });
    Future<bool> b = pool.submit([&meet] { return meet.arrive_and_wait(std::chrono::seconds(10)); });
    const bool met_a = a.get();
    const bool met_b = b.get();
    ASSERT_TRUE(met_a && met_b) << "round " << round
                                << ": the second task did not start while the first waited for "
                                   "it, with the other worker idle";
  }
}

// ---- idle workers sleep -----------------------------------------------------------------

TEST(ThreadPool, IdleWorkersSleepInsteadOfSpinning) {
  ThreadPool pool(2);
  const auto clocks = on_every_worker(pool, [] {
    clockid_t clock{};
    EXPECT_EQ(pthread_getcpuclockid(pthread_self(), &clock), 0);
    return clock;
  });
  pool.wait_idle();
  const auto cpu_time = [&clocks] {
    std::chrono::nanoseconds total{0};
    for (clockid_t clock : clocks) {
      timespec ts{};
      EXPECT_EQ(clock_gettime(clock, &ts), 0);
      total += std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
    }
    return total;
  };
  // Let the short spin end, then measure a quiet window. The window is the
  // measurement itself, not a synchronisation.
  std::promise<void> never;
  const std::future<void> quiet = never.get_future();
  quiet.wait_for(20ms);
  const auto cpu_before = cpu_time();
  const auto wall_before = Clock::now();
  quiet.wait_for(300ms);
  const auto wall = Clock::now() - wall_before;
  const auto cpu = cpu_time() - cpu_before;
  // Two spinning workers would burn about 2 * wall.
  EXPECT_LT(cpu, wall / 4) << "idle workers used " << cpu.count() << "ns of CPU in "
                           << std::chrono::nanoseconds(wall).count() << "ns";
  EXPECT_EQ(pool.submit([] { return 1; }).get(), 1);  // and they wake for new work
}

// ---- delayed tasks (submit_after / submit_at, API.md §8) and the pool -----------------
//
// §9 "The pool" says what stats, max_queue_size, wait_idle() and a drain
// shutdown do with delayed tasks; tests/timers_test.cpp covers the rest.

TEST(ThreadPoolDelayed, DelayedTasksCountAsQueuedAndAgainstMaxQueueSize) {
  ThreadPoolConfig config;
  config.thread_count = 1;
  config.max_queue_size = 2;
  ThreadPool pool(config);
  auto first = pool.submit_after(std::chrono::hours(1), [] { return 1; });
  auto second = pool.submit_at(Clock::now() + std::chrono::hours(1), [] { return 2; });
  EXPECT_EQ(first.status(), TaskStatus::queued);
  EXPECT_EQ(second.status(), TaskStatus::queued);
  EXPECT_EQ(pool.stats().queued, 2u);
  auto over = pool.submit([] { return 3; });
  EXPECT_EQ(over.status(), TaskStatus::rejected);
  pool.shutdown();
}

TEST(ThreadPoolDelayed, WaitIdleAlsoWaitsForDelayedTasks) {
  ThreadPool pool(2);
  std::atomic<bool> ran{false};
  auto future = pool.submit_after(50ms, [&ran] {
    ran = true;
    return 1;
  });
  pool.wait_idle();
  EXPECT_TRUE(ran.load());
  EXPECT_TRUE(future.ready());
}

TEST(ThreadPoolDelayed, ADrainShutdownResolvesDelayedTasksNotYetDueAsCancelledWithoutWaiting) {
  ThreadPool pool(2);
  auto future = pool.submit_after(std::chrono::hours(1), [] { return 1; });
  test::GuardedRun shutdown([&] { pool.shutdown(); });
  ASSERT_TRUE(shutdown.finished_within(test::kGuard)) << "shutdown waited for a timer";
  EXPECT_EQ(future.status(), TaskStatus::cancelled);
}

INSTANTIATE_TEST_SUITE_P(PoolSizes, ThreadPoolP, ::testing::Values(1, 2, 4), test::pool_size_name);

}  // namespace
}  // namespace quell
