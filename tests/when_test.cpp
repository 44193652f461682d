// when_all and when_any (API.md §10.4, R21-R23): children in parallel, the
// first failure or the winner cancelling the others with its reason, every
// child joined before the co_await resumes, the outcome rules, the vector
// forms, checkpoints, nesting, and the races, repeated.
#include "quell/when.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <functional>
#include <latch>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <variant>
#include <vector>

#include "pool_test_support.hpp"
#include "quell/coro.hpp"
#include "quell/thread_pool.hpp"
#include "sanitized.hpp"

namespace quell {
namespace {

using namespace std::chrono_literals;

Task<int> value_of(int v) { co_return v; }

// Sleeps until cancelled; records the reason and that its cleanup ran.
struct Sleeper {
  std::atomic<int> started{0};
  std::atomic<int> cleaned{0};
  std::atomic<int> reason{-1};
};
Task<int> sleep_until_cancelled(Sleeper* s) {
  struct Cleanup {
    Sleeper* s;
    ~Cleanup() { s->cleaned.fetch_add(1); }
  } cleanup{s};
  s->started.fetch_add(1);
  Result<void> r = co_await as_result(sleep_for(1h));
  const CancellationToken& token = co_await this_coro::cancellation_token;
  s->reason.store(static_cast<int>(token.reason()));
  if (r.cancelled()) co_yield quell::cancelled;
  co_return 0;
}

Task<void> fail_with(std::string what) {
  co_await yield();
  throw std::runtime_error(what);
}

class When : public ::testing::TestWithParam<std::size_t> {};

TEST_P(When, WhenAllReturnsTheValuesInOrderWithVoidAndReferencesMapped) {
  ThreadPool pool(GetParam());
  int target = 5;
  auto ref = [](int* p) -> Task<int&> { co_return *p; };
  auto none = []() -> Task<void> { co_return; };
  auto [a, b, c, d] = sync_wait(
      pool, co_invoke([&]() -> Task<std::tuple<int, std::monostate, std::reference_wrapper<int>, int>> {
        co_return co_await when_all(value_of(1), none(), ref(&target),
                                    pool.submit([] { return 4; }));
      }));
  EXPECT_EQ(a, 1);
  EXPECT_EQ(&c.get(), &target);
  EXPECT_EQ(d, 4);
  static_cast<void>(b);
}

TEST_P(When, AFailureInChildTwoOfFiveCancelsTheOtherFourWithReasonFailureAndIsRethrown) {
  ThreadPool pool(GetParam());
  Sleeper s[4];
  bool threw = false;
  sync_wait(pool, co_invoke([&]() -> Task<void> {
              try {
                co_await when_all(sleep_until_cancelled(&s[0]), sleep_until_cancelled(&s[1]),
                                  fail_with("child 2"), sleep_until_cancelled(&s[2]),
                                  sleep_until_cancelled(&s[3]));
              } catch (const std::runtime_error& e) {
                threw = std::string(e.what()) == "child 2";
              }
            }));
  EXPECT_TRUE(threw);
  for (Sleeper& one : s) {
    // Each either never got to sleep (cancelled before it started: its
    // frame died unstarted) or was cancelled with reason failure and cleaned up.
    EXPECT_EQ(one.cleaned.load(), one.started.load());
    if (one.started.load() == 1) {
      EXPECT_EQ(one.reason.load(), static_cast<int>(CancelReason::failure));
    }
  }
}

TEST_P(When, WhenAnyHasRunTheLosersCleanupBeforeItResumes) {
  ThreadPool pool(GetParam());
  Sleeper loser;
  auto [index, cleaned_at_resume] = sync_wait(pool, co_invoke([&]() -> Task<std::pair<std::size_t, int>> {
    auto winner = co_await when_any(sleep_until_cancelled(&loser), []() -> Task<int> {
      co_await yield();
      co_return 7;
    }());
    co_return std::pair<std::size_t, int>(winner.index(), loser.cleaned.load());
  }));
  EXPECT_EQ(index, 1u);
  EXPECT_EQ(cleaned_at_resume, loser.started.load());
  if (loser.started.load() == 1) {
    EXPECT_EQ(loser.reason.load(), static_cast<int>(CancelReason::requested));
  }
}

TEST_P(When, AFailureWinsWhenAnyAndIsRethrownAfterTheLoserEnded) {
  ThreadPool pool(GetParam());
  Sleeper loser;
  int cleaned_at_resume = -1;
  EXPECT_THROW(sync_wait(pool, co_invoke([&]() -> Task<void> {
                 try {
                   co_await when_any(sleep_until_cancelled(&loser), fail_with("first"));
                 } catch (...) {
                   cleaned_at_resume = loser.cleaned.load();
                   throw;
                 }
               })),
               std::runtime_error);
  EXPECT_EQ(cleaned_at_resume, loser.started.load());
}

TEST_P(When, ACancelledChildNeverWinsAndAllCancelledMeansCancelled) {
  ThreadPool pool(GetParam());
  auto cancelled_child = []() -> Task<int> {
    co_yield quell::cancelled;
    co_return 0;  // never reached
  };
  auto later = []() -> Task<int> {
    co_await yield();
    co_await yield();
    co_return 9;
  };
  auto winner = sync_wait(pool, co_invoke([&]() -> Task<std::variant<int, int>> {
    co_return co_await when_any(cancelled_child(), later());
  }));
  EXPECT_EQ(winner.index(), 1u);
  EXPECT_EQ(std::get<1>(winner), 9);
  EXPECT_THROW(sync_wait(pool, co_invoke([&]() -> Task<void> {
                 co_await when_any(cancelled_child(), cancelled_child());
               })),
               OperationCancelled);
}

TEST_P(When, WhenAllWithACancelledChildAndNoFailureThrowsOperationCancelled) {
  ThreadPool pool(GetParam());
  auto cancelled_child = []() -> Task<int> {
    co_yield quell::cancelled;
    co_return 0;  // never reached
  };
  auto r = sync_wait(pool, co_invoke([&]() -> Task<Result<std::tuple<int, int>>> {
    co_return co_await as_result(when_all(value_of(1), cancelled_child()));
  }));
  EXPECT_TRUE(r.cancelled());
}

TEST_P(When, TheParentsCancellationReachesTheChildrenAndValuesStillProducedAreReturned) {
  ThreadPool pool(GetParam());
  Sleeper s;
  CancellationSource source;
  auto handle = pool.handle(co_invoke([&]() -> Task<int> {
    auto [a, b] = co_await when_all(sleep_until_cancelled(&s), value_of(2));
    co_return a + b;
  }), TaskOptions().set_cancellation(source.token()));
  while (s.started.load() == 0) std::this_thread::yield();
  source.request_cancel();
  EXPECT_THROW(handle.get(), OperationCancelled);
  EXPECT_EQ(s.reason.load(), static_cast<int>(CancelReason::requested));

  // Children that finish with values anyway: the values are returned.
  std::latch cancelled(1);
  auto resilient = [&]() -> Task<int> {
    cancelled.wait();
    co_return 3;
  };
  CancellationSource second;
  auto h2 = pool.handle(co_invoke([&]() -> Task<int> {
    auto [a, b] = co_await when_all(resilient(), value_of(4));
    co_return a + b;
  }), TaskOptions().set_cancellation(second.token()));
  std::thread canceller([&] {
    second.request_cancel();
    cancelled.count_down();
  });
  canceller.join();
  if (h2.future().wait_for(test::kGuard); h2.status() == TaskStatus::completed) {
    EXPECT_EQ(h2.get(), 7);
  } else {
    // Cancelled before the combinator started: the checkpoint.
    EXPECT_EQ(h2.status(), TaskStatus::cancelled);
  }
}

TEST_P(When, ACancelledTokenIsACheckpointNoChildStarts) {
  ThreadPool pool(GetParam());
  CancellationSource source;
  source.request_cancel();
  std::atomic<int> started{0};
  auto child = [&]() -> Task<int> {
    started.fetch_add(1);
    co_return 1;
  };
  EXPECT_THROW(sync_wait(co_invoke([&]() -> Task<void> {
                 co_await when_all(child(), child());
               }),
                         source.token()),
               OperationCancelled);
  std::vector<Task<int>> v;
  v.push_back(child());
  EXPECT_THROW(sync_wait(co_invoke([&]() -> Task<void> {
                 co_await when_any(std::move(v));
               }),
                         source.token()),
               OperationCancelled);
  EXPECT_EQ(started.load(), 0);
}

TEST_P(When, EmptyVectorsCompleteAtOnceOrThrowInvalidArgument) {
  ThreadPool pool(GetParam());
  auto values = sync_wait(pool, co_invoke([]() -> Task<std::vector<int>> {
    co_return co_await when_all(std::vector<Task<int>>());
  }));
  EXPECT_TRUE(values.empty());
  sync_wait(pool, co_invoke([]() -> Task<void> { co_await when_all(std::vector<Task<void>>()); }));
  EXPECT_THROW(sync_wait(pool, co_invoke([]() -> Task<void> {
                 co_await when_any(std::vector<Task<int>>());
               })),
               std::invalid_argument);
}

TEST_P(When, AnEmptyTaskThrowsNoState) {
  ThreadPool pool(GetParam());
  try {
    sync_wait(pool, co_invoke([]() -> Task<void> { co_await when_all(value_of(1), Task<int>()); }));
    ADD_FAILURE() << "no exception";
  } catch (const TaskError& e) {
    EXPECT_EQ(e.code(), make_error_code(Errc::no_state));
  }
}

TEST_P(When, WhenAllOverTenThousandChildren) {
  ThreadPool pool(GetParam());
  constexpr int kChildren = 10'000;
  const long sum = sync_wait(pool, co_invoke([]() -> Task<long> {
    std::vector<Task<int>> children;
    for (int i = 0; i < kChildren; ++i) children.push_back(value_of(i));
    std::vector<int> values = co_await when_all(std::move(children));
    long total = 0;
    for (int v : values) total += v;
    co_return total;
  }));
  EXPECT_EQ(sum, static_cast<long>(kChildren) * (kChildren - 1) / 2);
}

TEST_P(When, WhenAnyOverAVectorGivesTheWinnersIndexAndValue) {
  ThreadPool pool(GetParam());
  Sleeper s[3];
  auto [index, value] = sync_wait(pool, co_invoke([&]() -> Task<std::pair<std::size_t, int>> {
    std::vector<Task<int>> children;
    children.push_back(sleep_until_cancelled(&s[0]));
    children.push_back(sleep_until_cancelled(&s[1]));
    children.push_back([]() -> Task<int> {
      co_await yield();
      co_return 42;
    }());
    children.push_back(sleep_until_cancelled(&s[2]));
    co_return co_await when_any(std::move(children));
  }));
  EXPECT_EQ(index, 2u);
  EXPECT_EQ(value, 42);
  for (Sleeper& one : s) EXPECT_EQ(one.cleaned.load(), one.started.load());
}

// Three levels of combinators: the outer when_any's winner cancels the
// innermost sleepers, which all clean up before the outer co_await resumes.
TEST_P(When, NestedCombinatorsThreeDeepCancelTheInnermostChildren) {
  ThreadPool pool(GetParam());
  Sleeper s[4];
  auto inner = [&](int i) -> Task<int> {
    auto [a, b] = co_await when_all(sleep_until_cancelled(&s[i]), sleep_until_cancelled(&s[i + 1]));
    co_return a + b;
  };
  auto middle = [&]() -> Task<int> {
    auto r = co_await when_any(inner(0), inner(2));
    co_return r.index() == 0 ? std::get<0>(r) : std::get<1>(r);
  };
  int cleaned = -1;
  int started = -1;
  auto winner = sync_wait(pool, co_invoke([&]() -> Task<std::size_t> {
    auto r = co_await when_any(middle(), []() -> Task<int> {
      co_await sleep_for(1ms);
      co_return 1;
    }());
    cleaned = started = 0;
    for (Sleeper& one : s) {
      cleaned += one.cleaned.load();
      started += one.started.load();
    }
    co_return r.index();
  }));
  EXPECT_EQ(winner, 1u);
  EXPECT_EQ(cleaned, started);
}

// R21: children run in parallel. Two children that each wait for the
// other to arrive finish only if they run at once, on two workers.
TEST(WhenParallel, ChildrenRunInParallelOnThePool) {
  ThreadPool pool(2);
  std::barrier<> both(2);
  auto arrive = [&]() -> Task<int> {
    both.arrive_and_wait();
    co_return 1;
  };
  auto [a, b] = sync_wait(pool, co_invoke([&]() -> Task<std::tuple<int, int>> {
    co_return co_await when_all(arrive(), arrive());
  }));
  EXPECT_EQ(a + b, 2);
}

// On a sync_wait loop the children interleave on the one thread.
TEST(WhenParallel, ChildrenInterleaveOnASyncWaitLoop) {
  std::vector<int> order;
  auto step = [&](int id) -> Task<void> {
    order.push_back(id);
    co_await yield();
    order.push_back(id);
  };
  sync_wait(co_invoke([&]() -> Task<void> { co_await when_all(step(1), step(2)); }));
  ASSERT_EQ(order.size(), 4u);
  EXPECT_EQ(order[0], 1);
  EXPECT_EQ(order[1], 2);  // child 2 ran while child 1 was suspended
}

// Races, repeated: a winner racing the parent's cancellation, and a
// failure racing a value. Every round ends exactly once, nothing outlives
// the co_await.
TEST_P(When, RacesOfWinnersFailuresAndTheParentsCancellationEndEveryRoundOnce) {
  ThreadPool pool(GetParam());
  const int rounds = test::kSanitized ? 500 : 3000;
  for (int round = 0; round < rounds; ++round) {
    std::atomic<int> alive{0};
    auto child = [&](int kind) -> Task<int> {
      alive.fetch_add(1);
      struct Bye {
        std::atomic<int>* alive;
        ~Bye() { alive->fetch_sub(1); }
      } bye{&alive};
      if (kind == 0) co_await yield();
      if (kind == 1) throw std::runtime_error("x");
      co_return kind;
    };
    CancellationSource source;
    int alive_at_resume = -1;
    auto handle = pool.handle(co_invoke([&, round]() -> Task<int> {
      auto r = co_await as_result(when_any(child(round % 3), child(2), child(0)));
      alive_at_resume = alive.load();
      co_return r.has_value() ? static_cast<int>(r.value().index()) : -1;
    }), TaskOptions().set_cancellation(source.token()));
    if (round % 2 == 0) source.request_cancel();
    handle.wait();
    ASSERT_TRUE(handle.status() == TaskStatus::completed || handle.status() == TaskStatus::cancelled)
        << "round " << round;
    if (handle.status() == TaskStatus::completed) {
      ASSERT_EQ(alive_at_resume, 0) << "round " << round;
    }
  }
}

// ---- stop_when, with_timeout, with_deadline (R24, R25) ----------------------

TEST_P(When, WithTimeoutCancelsWithReasonDeadlineAndThrowsTimedOut) {
  ThreadPool pool(GetParam());
  Sleeper s;
  try {
    sync_wait(pool, co_invoke([&]() -> Task<int> {
      co_return co_await with_timeout(sleep_until_cancelled(&s), 1ms);
    }));
    ADD_FAILURE() << "no exception";
  } catch (const TaskError& e) {
    EXPECT_EQ(e.code(), make_error_code(Errc::timed_out));
  }
  EXPECT_EQ(s.reason.load(), static_cast<int>(CancelReason::deadline));
  EXPECT_EQ(s.cleaned.load(), 1);
  auto r = sync_wait(pool, co_invoke([&]() -> Task<Result<int>> {
    co_return co_await as_result(with_deadline(sleep_until_cancelled(&s),
                                               std::chrono::steady_clock::now() + 1ms));
  }));
  EXPECT_EQ(r.error(), make_error_code(Errc::timed_out));
  EXPECT_TRUE(r.cancelled());
}

TEST_P(When, WithTimeoutReturnsAValueThatArrivesInTimeAndEndsItsTimer) {
  ThreadPool pool(GetParam());
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(sync_wait(pool, co_invoke([]() -> Task<int> {
              co_return co_await with_timeout(value_of(3), 1h);
            })),
            3);
  EXPECT_LT(std::chrono::steady_clock::now() - start, test::kGuard);  // the hour's sleep was cancelled
}

// A value arriving as the timeout fires is kept (no discard, R25): the
// child produces its value whether or not its sleep was cancelled.
TEST_P(When, AValueArrivingAsTheTimeoutFiresIsKept) {
  ThreadPool pool(GetParam());
  const int rounds = test::kSanitized ? 200 : 1000;
  for (int round = 0; round < rounds; ++round) {
    const auto nap = std::chrono::microseconds(round % 50);
    const int value = sync_wait(pool, co_invoke([nap]() -> Task<int> {
      co_return co_await with_timeout(
          [](std::chrono::microseconds d) -> Task<int> {
            Result<void> slept = co_await as_result(sleep_for(d));
            static_cast<void>(slept);
            co_return 5;
          }(nap),
          std::chrono::microseconds(25));
    }));
    ASSERT_EQ(value, 5) << "round " << round;
  }
}

TEST_P(When, TheParentsCancellationFirstGivesOperationCancelledNotTimedOut) {
  ThreadPool pool(GetParam());
  Sleeper s;
  CancellationSource source;
  auto handle = pool.handle(co_invoke([&]() -> Task<int> {
    co_return co_await with_timeout(sleep_until_cancelled(&s), 1h);
  }), TaskOptions().set_cancellation(source.token()));
  while (s.started.load() == 0) std::this_thread::yield();
  source.request_cancel(CancelReason::shutdown);
  EXPECT_THROW(handle.get(), OperationCancelled);
  EXPECT_EQ(s.reason.load(), static_cast<int>(CancelReason::shutdown));
}

TEST_P(When, StopWhenATokenIsCancelledCancelsTheAwaitableWithItsReason) {
  ThreadPool pool(GetParam());
  Sleeper s;
  CancellationSource trigger;
  auto future = pool.submit(co_invoke([&]() -> Task<int> {
    co_return co_await stop_when(sleep_until_cancelled(&s), trigger.token());
  }));
  while (s.started.load() == 0) std::this_thread::yield();
  trigger.request_cancel(CancelReason::failure);
  EXPECT_THROW(future.get(), OperationCancelled);
  EXPECT_EQ(s.reason.load(), static_cast<int>(CancelReason::failure));
  EXPECT_EQ(s.cleaned.load(), 1);
}

TEST_P(When, StopWhenATriggerEndsCancelsTheAwaitableAndAnAwaitableThatEndsCancelsTheTrigger) {
  ThreadPool pool(GetParam());
  Sleeper s;
  EXPECT_THROW(sync_wait(pool, co_invoke([&]() -> Task<int> {
                 co_return co_await stop_when(sleep_until_cancelled(&s), sleep_for(1ms));
               })),
               OperationCancelled);
  EXPECT_EQ(s.reason.load(), static_cast<int>(CancelReason::requested));
  EXPECT_EQ(s.cleaned.load(), 1);

  Sleeper trigger;
  int cleaned_at_resume = -1;
  EXPECT_EQ(sync_wait(pool, co_invoke([&]() -> Task<int> {
              const int v = co_await stop_when(value_of(8), sleep_until_cancelled(&trigger));
              cleaned_at_resume = trigger.cleaned.load();
              co_return v;
            })),
            8);
  EXPECT_EQ(cleaned_at_resume, trigger.started.load());
}

// R40: a `cancel` shutdown reaches a root whose only suspension is inside
// a combinator's children, and the root counts as suspended meanwhile.
TEST_P(When, ACancelShutdownReachesARootWaitingOnlyInsideACombinator) {
  ThreadPoolConfig config;
  config.thread_count = GetParam();
  config.shutdown_policy = ShutdownPolicy::cancel;
  ThreadPool pool(config);
  Sleeper s[2];
  auto future = pool.submit(co_invoke([&]() -> Task<int> {
    auto [a, b] = co_await when_all(sleep_until_cancelled(&s[0]), sleep_until_cancelled(&s[1]));
    co_return a + b;
  }));
  while (s[0].started.load() + s[1].started.load() < 2) std::this_thread::yield();
  const auto guard = std::chrono::steady_clock::now() + test::kGuard;
  while (pool.stats().suspended != 1 && std::chrono::steady_clock::now() < guard) {
    std::this_thread::yield();
  }
  EXPECT_EQ(pool.stats().suspended, 1u);
  pool.shutdown();  // hangs if the cancellation never reaches the sleepers
  EXPECT_THROW(future.get(), OperationCancelled);
  EXPECT_EQ(s[0].reason.load(), static_cast<int>(CancelReason::shutdown));
}

INSTANTIATE_TEST_SUITE_P(PoolSizes, When, ::testing::Values(1, 3), test::pool_size_name);

}  // namespace
}  // namespace quell
