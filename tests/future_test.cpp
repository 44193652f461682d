// Future<T>: readiness, waits, get() once, outcomes as values and
// exceptions (API.md §5 and §9 Outcomes).
#include "quell/future.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <concepts>
#include <functional>
#include <latch>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "pool_test_support.hpp"
#include "quell/thread_pool.hpp"

namespace quell {
namespace {

using namespace std::chrono_literals;
using test::Gate;
using test::OpenOnExit;
using Clock = std::chrono::steady_clock;

static_assert(!std::is_copy_constructible_v<Future<int>>);
static_assert(!std::is_copy_assignable_v<Future<int>>);
static_assert(std::is_nothrow_move_constructible_v<Future<int>>);
static_assert(std::is_nothrow_move_assignable_v<Future<int>>);
static_assert(std::is_nothrow_default_constructible_v<Future<int>>);
static_assert(std::is_same_v<decltype(std::declval<Future<int>&>().get()), int>);
static_assert(std::is_same_v<decltype(std::declval<Future<void>&>().get()), void>);

static_assert(std::is_same_v<decltype(std::declval<const Future<int>&>().wait(
                                 std::declval<const CancellationToken&>())),
                             bool>);

class CustomError : public std::runtime_error {
 public:
  CustomError(const std::string& message, int detail) : std::runtime_error(message), detail(detail) {}
  int detail;
};

// Expects `fn` to throw TaskError (and nothing more derived unless
// `allow_cancelled`) with `code`.
template <class Fn>
void expect_task_error(Fn&& fn, Errc code) {
  try {
    fn();
    ADD_FAILURE() << "no exception; expected TaskError " << make_error_code(code).message();
  } catch (const OperationCancelled& e) {
    EXPECT_EQ(code, Errc::cancelled) << "OperationCancelled thrown for " << e.code().message();
  } catch (const TaskError& e) {
    EXPECT_EQ(e.code(), code) << e.code().message();
  } catch (...) {
    ADD_FAILURE() << "another exception type";
  }
}

// ---- default-constructed ----------------------------------------------

TEST(Future, ADefaultConstructedFutureHasNoStateAndItsWaitsAndGetThrowNoState) {
  Future<int> future;
  EXPECT_FALSE(future.valid());
  EXPECT_EQ(future.id(), 0u);
  EXPECT_FALSE(future.ready());
  EXPECT_EQ(future.status(), TaskStatus::rejected);
  EXPECT_EQ(future.result(), TaskResult::none);
  EXPECT_EQ(future.error(), Errc::no_state);
  expect_task_error([&] { future.get(); }, Errc::no_state);
  expect_task_error([&] { future.wait(); }, Errc::no_state);
  expect_task_error([&] { (void)future.wait_for(1ms); }, Errc::no_state);
  expect_task_error([&] { (void)future.wait_until(Clock::now() + 1ms); }, Errc::no_state);
  expect_task_error([&] { (void)future.wait_until(std::chrono::system_clock::now() + 1ms); },
                    Errc::no_state);
  // A failed get() on no state is not a retrieval: it stays no_state.
  expect_task_error([&] { future.get(); }, Errc::no_state);

  Future<void> void_future;
  EXPECT_FALSE(void_future.valid());
  expect_task_error([&] { void_future.get(); }, Errc::no_state);
}

TEST(Future, ADefaultConstructedFuturesWaitWithATokenThrowsNoState) {
  Future<int> future;
  CancellationSource source;
  expect_task_error([&] { (void)future.wait(source.token()); }, Errc::no_state);
}

// ---- values, moves ------------------------------------------------------

class FutureP : public ::testing::TestWithParam<std::size_t> {};

TEST_P(FutureP, GetReturnsTheValueAndTheFutureIsValidReadyAndCompleted) {
  ThreadPool pool(GetParam());
  Future<long> future = pool.submit([] { return 42L; });
  EXPECT_TRUE(future.valid());
  EXPECT_NE(future.id(), 0u);
  EXPECT_EQ(future.get(), 42L);
  EXPECT_TRUE(future.valid());
  EXPECT_TRUE(future.ready());
  EXPECT_EQ(future.status(), TaskStatus::completed);
  EXPECT_EQ(future.result(), TaskResult::success);
  EXPECT_FALSE(future.error());
}

// The caller reads the exception get() threw after the temporary future
// and the worker may both have let go of the task; get() hands the
// exception over, so its last owner is the caller (repeated: a race).
TEST_P(FutureP, AnExceptionFromGetOfATemporaryFutureIsTheCallersAlone) {
  ThreadPool pool(GetParam());
  for (int round = 0; round < 2000; ++round) {
    try {
      pool.submit([round]() -> int { throw std::runtime_error(std::to_string(round)); }).get();
      ADD_FAILURE() << "no exception";
    } catch (const std::runtime_error& e) {
      ASSERT_EQ(std::string(e.what()), std::to_string(round));
    }
  }
}

TEST_P(FutureP, GetOfAVoidTaskReturnsAfterTheTaskRanAndSeesItsWrites) {
  ThreadPool pool(GetParam());
  int written = 0;  // plain: the ordering guarantee must make this safe
  Future<void> future = pool.submit([&] { written = 99; });
  future.get();
  EXPECT_EQ(written, 99);
  EXPECT_EQ(future.status(), TaskStatus::completed);
}

TEST_P(FutureP, WaitMakesEverythingTheTaskDidVisible) {
  ThreadPool pool(GetParam());
  std::vector<int> data;  // plain memory written by the task, read after wait()
  Future<void> future = pool.submit([&] {
    for (int i = 0; i < 1000; ++i) data.push_back(i);
  });
  future.wait();
  ASSERT_EQ(data.size(), 1000u);
  EXPECT_EQ(data.back(), 999);
  EXPECT_TRUE(future.ready());
}

TEST_P(FutureP, GetMovesAMoveOnlyResultOut) {
  ThreadPool pool(GetParam());
  Future<std::unique_ptr<int>> future = pool.submit([] { return std::make_unique<int>(17); });
  std::unique_ptr<int> value = future.get();
  ASSERT_NE(value, nullptr);
  EXPECT_EQ(*value, 17);
  EXPECT_EQ(future.status(), TaskStatus::completed);
}

TEST_P(FutureP, ResultsWithANonTrivialDefaultConstructorOrNoneAreSupported) {
  struct WithInitializer {
    int value = 1;
  };
  struct NoDefault {
    explicit NoDefault(int v) : value(v) {}
    int value;
  };
  ThreadPool pool(GetParam());
  Future<std::string> text = pool.submit([] { return std::string(100, 'x'); });
  Future<std::vector<int>> list = pool.submit([] { return std::vector<int>{1, 2, 3}; });
  Future<WithInitializer> with_initializer = pool.submit([] { return WithInitializer{7}; });
  Future<NoDefault> no_default = pool.submit([] { return NoDefault(9); });
  EXPECT_EQ(text.get(), std::string(100, 'x'));
  EXPECT_EQ(list.get(), (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(with_initializer.get().value, 7);
  EXPECT_EQ(no_default.get().value, 9);
  // A value nobody retrieved is destroyed with the task (ASan would see a leak).
  Future<std::string> unread = pool.submit([] { return std::string(1000, 'y'); });
  unread.wait();
}

TEST_P(FutureP, MovingAFutureTransfersTheTaskAndLeavesTheSourceWithoutState) {
  ThreadPool pool(GetParam());
  Future<int> first = pool.submit([] { return 1; });
  const TaskId id = first.id();
  Future<int> second(std::move(first));
  EXPECT_FALSE(first.valid());  // NOLINT(bugprone-use-after-move): specified
  EXPECT_EQ(first.id(), 0u);    // NOLINT(bugprone-use-after-move)
  EXPECT_TRUE(second.valid());
  EXPECT_EQ(second.id(), id);

  Future<int> third = pool.submit([] { return 3; });
  third = std::move(second);  // the task third referred to is let go, not cancelled
  EXPECT_FALSE(second.valid());  // NOLINT(bugprone-use-after-move)
  EXPECT_EQ(third.id(), id);
  EXPECT_EQ(third.get(), 1);
  pool.wait_idle();
  EXPECT_EQ(pool.stats().completed, 2u);
}

TEST_P(FutureP, GetThrowsAlreadyRetrievedTheSecondTimeAndStatusResultReadyKeepWorking) {
  ThreadPool pool(GetParam());
  Future<int> future = pool.submit([] { return 5; });
  EXPECT_EQ(future.get(), 5);
  expect_task_error([&] { future.get(); }, Errc::already_retrieved);
  expect_task_error([&] { future.get(); }, Errc::already_retrieved);
  EXPECT_TRUE(future.valid());
  EXPECT_TRUE(future.ready());
  EXPECT_EQ(future.status(), TaskStatus::completed);
  EXPECT_EQ(future.result(), TaskResult::success);
  EXPECT_NO_THROW(future.wait());
  EXPECT_TRUE(future.wait_for(0s));
}

TEST_P(FutureP, GetThrowsAlreadyRetrievedAfterAGetThatRethrew) {
  ThreadPool pool(GetParam());
  Future<int> failed = pool.submit([]() -> int { throw CustomError("boom", 1); });
  EXPECT_THROW(failed.get(), CustomError);
  expect_task_error([&] { failed.get(); }, Errc::already_retrieved);
  EXPECT_EQ(failed.status(), TaskStatus::failed);
  EXPECT_EQ(failed.result(), TaskResult::failure);
  EXPECT_TRUE(failed.ready());

  CancellationSource source;
  source.request_cancel();
  Future<int> cancelled = pool.submit([] { return 1; }, TaskOptions().set_cancellation(source.token()));
  EXPECT_THROW(cancelled.get(), OperationCancelled);
  expect_task_error([&] { cancelled.get(); }, Errc::already_retrieved);
  EXPECT_EQ(cancelled.status(), TaskStatus::cancelled);
  EXPECT_EQ(cancelled.result(), TaskResult::cancelled);
  EXPECT_TRUE(cancelled.ready());
}

// ---- outcomes as exceptions ----------------------------------------------

TEST_P(FutureP, GetRethrowsTheTasksExceptionWithItsTypeAndMessage) {
  ThreadPool pool(GetParam());
  Future<int> future = pool.submit([]() -> int { throw CustomError("disk on fire", 451); });
  future.wait();
  EXPECT_EQ(future.status(), TaskStatus::failed);
  EXPECT_EQ(future.result(), TaskResult::failure);
  EXPECT_FALSE(future.error());  // empty: a failure is not cancelled/timed_out/rejected
  try {
    future.get();
    ADD_FAILURE() << "no exception";
  } catch (const CustomError& e) {
    EXPECT_STREQ(e.what(), "disk on fire");
    EXPECT_EQ(e.detail, 451);
  } catch (...) {
    ADD_FAILURE() << "another exception type";
  }
}

TEST_P(FutureP, GetRethrowsNonStandardExceptionsToo) {
  ThreadPool pool(GetParam());
  Future<void> future = pool.submit([] { throw 42; });
  try {
    future.get();
    ADD_FAILURE() << "no exception";
  } catch (int value) {
    EXPECT_EQ(value, 42);
  }
  EXPECT_EQ(future.status(), TaskStatus::failed);
}

TEST_P(FutureP, GetOfACancelledTaskThrowsOperationCancelledEqualToOperationCanceled) {
  ThreadPool pool(GetParam());
  CancellationSource source;
  source.request_cancel();
  Future<int> future = pool.submit([] { return 1; }, TaskOptions().set_cancellation(source.token()));
  EXPECT_EQ(future.status(), TaskStatus::cancelled);
  EXPECT_EQ(future.error(), Errc::cancelled);
  EXPECT_EQ(future.error(), std::errc::operation_canceled);
  try {
    future.get();
    ADD_FAILURE() << "no exception";
  } catch (const OperationCancelled& e) {
    EXPECT_EQ(e.code(), Errc::cancelled);
    EXPECT_EQ(e.code(), std::errc::operation_canceled);
  }
}

TEST_P(FutureP, GetOfATimedOutTaskThrowsTaskErrorTimedOutNotOperationCancelled) {
  ThreadPool pool(GetParam());
  Future<int> future = pool.submit([] { return 1; }, TaskOptions().set_deadline(Clock::now() - 1s));
  EXPECT_EQ(future.status(), TaskStatus::timed_out);
  EXPECT_EQ(future.result(), TaskResult::timeout);
  EXPECT_EQ(future.error(), Errc::timed_out);
  EXPECT_EQ(future.error(), std::errc::timed_out);
  expect_task_error([&] { future.get(); }, Errc::timed_out);
}

TEST_P(FutureP, GetOfARejectedTaskThrowsTaskErrorRejected) {
  ThreadPool pool(GetParam());
  pool.shutdown();
  Future<int> future = pool.submit([] { return 1; });
  EXPECT_TRUE(future.valid());
  ASSERT_TRUE(future.ready());
  EXPECT_NE(future.id(), 0u);
  EXPECT_EQ(future.status(), TaskStatus::rejected);
  EXPECT_EQ(future.result(), TaskResult::rejected);
  EXPECT_EQ(future.error(), Errc::rejected);
  expect_task_error([&] { future.get(); }, Errc::rejected);
}

TEST_P(FutureP, ErrorIsEmptyWhileQueuedOrRunningAndForACompletedTask) {
  Gate gate;
  std::latch started(1);
  ThreadPool pool(GetParam());
  OpenOnExit open_gate(gate);
  auto blockers = test::block_workers(pool, gate, GetParam() - 1);
  Future<void> running = pool.submit([&] {
    started.count_down();
    gate.wait();
  });
  started.wait();
  Future<void> queued = pool.submit([] {});
  EXPECT_EQ(running.status(), TaskStatus::running);
  EXPECT_FALSE(running.error());
  EXPECT_EQ(queued.status(), TaskStatus::queued);
  EXPECT_FALSE(queued.error());
  gate.open();
  running.get();
  queued.get();
  EXPECT_FALSE(queued.error());
}

// ---- timed waits -----------------------------------------------------------

TEST_P(FutureP, WaitForAndWaitUntilReturnFalseWhileTheTaskIsPendingAndTrueOnceReady) {
  Gate gate;
  ThreadPool pool(GetParam());
  OpenOnExit open_gate(gate);
  auto blockers = test::block_workers(pool, gate, GetParam());
  Future<int> future = pool.submit([] { return 3; });

  EXPECT_FALSE(future.wait_for(0s));
  EXPECT_FALSE(future.wait_for(-1s));
  const auto before = Clock::now();
  EXPECT_FALSE(future.wait_for(20ms));
  EXPECT_GE(Clock::now() - before, 20ms);  // a timed-out wait does not return early
  EXPECT_FALSE(future.wait_until(Clock::now() + 5ms));
  EXPECT_FALSE(future.wait_until(Clock::now() - 1s));
  EXPECT_FALSE(future.wait_until(std::chrono::system_clock::now() + 5ms));
  EXPECT_FALSE(future.wait_until(std::chrono::system_clock::now() - 1s));
  EXPECT_FALSE(future.ready());

  gate.open();
  EXPECT_TRUE(future.wait_for(test::kGuard));
  EXPECT_TRUE(future.wait_until(Clock::now() + test::kGuard));
  EXPECT_TRUE(future.wait_until(std::chrono::system_clock::now() + test::kGuard));
  EXPECT_TRUE(future.wait_until(Clock::now() - 1s));  // ready: true even with a past time
  EXPECT_TRUE(future.wait_for(0s));
  EXPECT_TRUE(future.ready());
  EXPECT_EQ(future.get(), 3);
}

TEST_P(FutureP, WaitUntilOnTheSystemClockReturnsOnceTheTaskCompletesWhileWaiting) {
  Gate gate;
  ThreadPool pool(GetParam());
  OpenOnExit open_gate(gate);
  auto blockers = test::block_workers(pool, gate, GetParam());
  Future<int> future = pool.submit([] { return 8; });
  test::GuardedRun opener([&] { gate.open(); });
  EXPECT_TRUE(future.wait_until(std::chrono::system_clock::now() + test::kGuard));
  EXPECT_EQ(future.get(), 8);
}

// §12: a timeout too large for the clock means "never". Before the waits
// saturated, each of these overflowed into the past and returned false at
// once, while the task was still pending.
TEST_P(FutureP, WaitsWithTimeoutsBeyondTheClocksRangeBlockUntilTheTaskIsReady) {
  using Hours = std::chrono::time_point<Clock, std::chrono::hours>;
  const std::vector<std::function<bool(const Future<int>&)>> waits = {
      [](const Future<int>& f) { return f.wait_for(Clock::duration::max()); },
      [](const Future<int>& f) { return f.wait_for(std::chrono::hours::max()); },
      [](const Future<int>& f) { return f.wait_for(std::chrono::duration<double>(1e300)); },
      [](const Future<int>& f) { return f.wait_until(Clock::time_point::max()); },
      [](const Future<int>& f) { return f.wait_until(Hours::max()); },
      [](const Future<int>& f) { return f.wait_until(std::chrono::system_clock::time_point::max()); },
  };
  for (std::size_t i = 0; i < waits.size(); ++i) {
    SCOPED_TRACE(i);
    Gate gate;
    ThreadPool pool(GetParam());
    OpenOnExit open_gate(gate);
    auto blockers = test::block_workers(pool, gate, GetParam());
    Future<int> future = pool.submit([] { return 5; });
    std::latch waiting(1);
    test::GuardedRun opener([&] {
      waiting.wait();
      gate.open();
    });
    waiting.count_down();
    EXPECT_TRUE(waits[i](future));
    EXPECT_EQ(future.get(), 5);
  }
}

TEST_P(FutureP, ConstMembersMayBeCalledFromAnotherThreadWhileTheTaskCompletes) {
  ThreadPool pool(GetParam());
  for (int round = 0; round < 50; ++round) {
    std::latch go(1);
    Future<int> future = pool.submit([&go, round] {
      go.wait();
      return round;
    });
    test::GuardedRun poller([&] {
      while (!future.ready()) {
        (void)future.status();
        (void)future.result();
        (void)future.error();
      }
    });
    go.count_down();
    EXPECT_TRUE(future.wait_for(test::kGuard));
    EXPECT_TRUE(poller.finished_within(test::kGuard));
    EXPECT_EQ(future.get(), round);
  }
}

TEST_P(FutureP, DroppingAFutureNeitherCancelsNorBlocksAndTheTaskStillRuns) {
  Gate gate;
  ThreadPool pool(GetParam());
  OpenOnExit open_gate(gate);
  auto blockers = test::block_workers(pool, gate, GetParam());
  std::atomic<bool> ran{false};
  std::atomic<bool> saw_cancelled{true};
  auto future = std::make_unique<Future<int>>(pool.submit([&] {
    saw_cancelled = this_task::cancelled();
    ran = true;
    return 1;
  }));
  {
    test::GuardedRun drop([&] { future.reset(); });
    EXPECT_TRUE(drop.finished_within(test::kGuard)) << "dropping the future blocked";
  }
  EXPECT_FALSE(ran.load());
  EXPECT_EQ(pool.stats().queued, 1u);
  gate.open();
  pool.wait_idle();
  EXPECT_TRUE(ran.load());
  EXPECT_FALSE(saw_cancelled.load());
  EXPECT_EQ(pool.stats().completed, GetParam() + 1);
  EXPECT_EQ(pool.stats().cancelled, 0u);
}

// ---- waiting with a token ---------------------------------------------------

TEST_P(FutureP, WaitWithATokenReturnsFalseWhenTheTokenIsCancelledFirst) {
  Gate gate;
  ThreadPool pool(GetParam());
  OpenOnExit open_gate(gate);
  auto blockers = test::block_workers(pool, gate, GetParam());
  Future<int> future = pool.submit([] { return 1; });

  CancellationSource already;
  already.request_cancel();
  EXPECT_FALSE(future.wait(already.token()));

  CancellationSource later;
  test::GuardedRun canceller([&] { later.request_cancel(); });
  EXPECT_FALSE(future.wait(later.token()));
  EXPECT_FALSE(future.ready());  // the wait ended, the task did not
  gate.open();
  EXPECT_EQ(future.get(), 1);
}

TEST_P(FutureP, WaitWithATokenReturnsTrueOnceReadyEvenWhenTheTokenIsCancelledToo) {
  Gate gate;
  ThreadPool pool(GetParam());
  OpenOnExit open_gate(gate);
  Future<int> future = pool.submit([] { return 1; });
  future.wait();
  CancellationSource cancelled;
  cancelled.request_cancel();
  EXPECT_TRUE(future.wait(cancelled.token()));
  EXPECT_TRUE(future.wait(CancellationToken()));

  Future<int> pending = pool.submit([&] {
    gate.wait();
    return 2;
  });
  test::GuardedRun opener([&] { gate.open(); });
  CancellationSource never;
  EXPECT_TRUE(pending.wait(never.token()));
  EXPECT_EQ(pending.get(), 2);
}

// ---- waiting from a worker ------------------------------------------------------

TEST_P(FutureP, GetAndWaitFromAWorkerRunTheAwaitedTaskThemselvesEvenWithOneWorker) {
  Gate gate;
  ThreadPool pool(GetParam());
  OpenOnExit open_gate(gate);
  // Leave exactly one worker free: only the waits themselves can run the children.
  auto blockers = test::block_workers(pool, gate, GetParam() - 1);
  Future<int> outer = pool.submit([&pool] {
    Future<int> a = pool.submit([] { return 20; });
    Future<int> b = pool.submit([] { return 22; });
    b.wait();
    return a.get() + b.get();
  });
  ASSERT_TRUE(outer.wait_for(test::kGuard)) << "a worker waiting on a future deadlocked";
  EXPECT_EQ(outer.get(), 42);
}

TEST(FutureFromWorker, WaitForFromAWorkerRunsTheAwaitedTaskItself) {
  ThreadPool pool(1);
  Future<bool> outer = pool.submit([&pool] {
    Future<int> child = pool.submit([] { return 1; });
    return child.wait_for(2s);
  });
  EXPECT_TRUE(outer.get());
}

// A wait runs only its own work: a worker waiting for a task that runs on
// another worker does not start a task that another request (another task
// submitted from outside) queued meanwhile, although it is idle.
TEST(FutureFromWorker, AWaitOnAWorkerNeverRunsAnotherRequestsTask) {
  for (int round = 0; round < 20; ++round) {
    ThreadPool pool(2);
    std::latch x_started(1);
    std::latch o_waiting(1);
    std::atomic<bool> release_x{false};
    std::atomic<bool> x_done{false};
    std::atomic<int> u_saw_x_done{-1};  // -1: U has not run
    Future<void> x = pool.submit([&] {
      x_started.count_down();
      while (!release_x.load()) std::this_thread::yield();
      x_done.store(true);
    });
    x_started.wait();  // X holds one worker
    Future<void> o = pool.submit([&] {
      o_waiting.count_down();
      x.wait();  // X runs on the other worker: nothing of ours is queued
    });
    o_waiting.wait();
    pool.post([&] { u_saw_x_done.store(x_done.load() ? 1 : 0); });
    // Give a misbehaving wait the time to pick U up before X may end.
    const auto until = Clock::now() + 20ms;
    while (u_saw_x_done.load() == -1 && Clock::now() < until) std::this_thread::yield();
    release_x.store(true);
    o.get();
    pool.wait_idle();
    ASSERT_EQ(u_saw_x_done.load(), 1) << "round " << round
                                      << ": a waiting worker ran another request's task";
  }
}

// Within one request the wait does run what is queued: the child's sibling
// posted after it, newer and on top of the worker's deque, runs inside the
// wait, where the old queue order would have it.
TEST(FutureFromWorker, AWaitOnAWorkerRunsQueuedTasksOfItsOwnRequest) {
  ThreadPool pool(1);
  std::atomic<bool> sibling_ran{false};
  Future<bool> outer = pool.submit([&] {
    Future<void> child = pool.submit([] {});
    pool.post([&] { sibling_ran.store(true); });
    child.get();
    return sibling_ran.load();
  });
  EXPECT_TRUE(outer.get());
}

INSTANTIATE_TEST_SUITE_P(PoolSizes, FutureP, ::testing::Values(1, 2, 4), test::pool_size_name);

}  // namespace
}  // namespace quell
