// Parallel loops (API.md §11): every element once, from outside the pool and
// from a worker, nested; the lowest match; and each way a loop stops (its
// token, its deadline, a failure, a body's OperationCancelled, a match) with
// what it throws and the guarantee that no element runs after the call.
#include "quell/parallel.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <latch>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "pool_test_support.hpp"
#include "quell/coro.hpp"
#include "quell/error.hpp"
#include "sanitized.hpp"

namespace quell {
namespace {

using namespace std::chrono_literals;

class Parallel : public ::testing::TestWithParam<std::size_t> {
 protected:
  std::size_t workers() const { return GetParam(); }
};

// Runs `fn` on the calling thread (outside the pool) or inside a task of
// `pool` (on a worker), and returns what it returned.
template <class Fn>
auto from(ThreadPool& pool, bool on_worker, Fn fn) {
  return on_worker ? pool.submit(fn).get() : fn();
}

// Spins until `token` is cancelled; false if the guard passed first.
bool await_stop(const CancellationToken& token) { return test::wait_cancelled(token); }

TEST_P(Parallel, ForVisitsEveryIndexExactlyOnceFromOutsideAndFromAWorker) {
  ThreadPool pool(workers());
  for (const bool on_worker : {false, true}) {
    for (const std::size_t grain : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{5000}}) {
      constexpr int kCount = 10007;
      std::vector<std::atomic<int>> seen(kCount);
      from(pool, on_worker, [&] {
        parallel_for(pool, 0, kCount, [&](int i) { seen[static_cast<std::size_t>(i)].fetch_add(1); }, {},
                     grain);
        return 0;
      });
      for (int i = 0; i < kCount; ++i) {
        ASSERT_EQ(seen[static_cast<std::size_t>(i)].load(), 1) << i << " grain " << grain;
      }
    }
  }
}

TEST_P(Parallel, SignedAndUnsignedIndicesAndRangesThatDoNotStartAtZero) {
  ThreadPool pool(workers());
  std::atomic<long> sum{0};
  parallel_for(pool, -500, 500, [&](int i) { sum.fetch_add(i); });
  EXPECT_EQ(sum.load(), -500);
  std::atomic<std::uint64_t> usum{0};
  parallel_for(pool, std::uint64_t{10}, std::uint64_t{20}, [&](std::uint64_t i) { usum.fetch_add(i); });
  EXPECT_EQ(usum.load(), 145u);
  std::atomic<int> calls{0};
  std::int8_t lo = -128, hi = 127;
  parallel_for(pool, lo, hi, [&](std::int8_t) { calls.fetch_add(1); });
  EXPECT_EQ(calls.load(), 255);
}

TEST_P(Parallel, EmptyAndReversedRangesReturnAtOnceWithoutCallingTheBody) {
  ThreadPool pool(workers());
  std::vector<int> v{1, 2, 3};
  auto never = [](auto&&...) -> bool {
    ADD_FAILURE() << "body called";
    return true;
  };
  parallel_for(pool, 5, 5, never);
  parallel_for(pool, 9, 2, never);
  parallel_for_each(pool, v.begin(), v.begin(), never);
  parallel_for_each(pool, v.end(), v.begin(), never);
  EXPECT_EQ(parallel_reduce(pool, 4, 1, 42, [](int) { return 1; }, std::plus<>()), 42);
  EXPECT_EQ(parallel_find_if(pool, v.begin(), v.begin(), never), v.begin());
  EXPECT_EQ(parallel_find_if(pool, v.end(), v.begin(), never), v.begin());
  EXPECT_FALSE(parallel_any_of(pool, v.begin(), v.begin(), never));
  // Even with a cancelled token or a passed deadline: there is nothing to stop.
  CancellationSource source;
  source.request_cancel();
  parallel_for(pool, 0, 0, never, TaskOptions().set_cancellation(source.token()));
  parallel_for(pool, 0, 0, never, TaskOptions().set_timeout(-1s));
}

TEST_P(Parallel, ForEachGivesEveryElementByReferenceAndTheTokenForm) {
  ThreadPool pool(workers());
  std::vector<int> v(20000);
  std::iota(v.begin(), v.end(), 0);
  parallel_for_each(pool, v.begin(), v.end(), [](int& x) { x *= 2; });
  for (std::size_t i = 0; i < v.size(); ++i) ASSERT_EQ(v[i], static_cast<int>(2 * i));
  std::atomic<int> live_tokens{0};
  parallel_for_each(pool, v.begin(), v.end(), [&](int& x, const CancellationToken& token) {
    if (token.can_cancel() && !token.cancelled()) live_tokens.fetch_add(1);
    x += 1;
  });
  EXPECT_EQ(live_tokens.load(), 20000);
  EXPECT_EQ(v[10], 21);
}

TEST_P(Parallel, ReduceEqualsTheSequentialSumAndStartsEveryRunnerFromIdentity) {
  ThreadPool pool(workers());
  for (const bool on_worker : {false, true}) {
    const std::int64_t sum = from(pool, on_worker, [&] {
      return parallel_reduce(pool, std::int64_t{1}, std::int64_t{1000001}, std::int64_t{0},
                             [](std::int64_t i) { return i; }, std::plus<>(), {}, 1000);
    });
    EXPECT_EQ(sum, std::int64_t{500000500000});
  }
  // A non-zero identity joins every runner's partial result and the final
  // fold: the test's identity for max is the lowest value.
  const int most = parallel_reduce(
      pool, 0, 5000, -1, [](int i, const CancellationToken&) { return (i * 7919) % 5003; },
      [](int a, int b) { return std::max(a, b); });
  EXPECT_EQ(most, 5002);
}

// Copyable but with a copy that fails, for the reduce identity.
struct Fragile {
  int value = 0;
  static inline std::atomic<int> copies_left{1 << 30};
  Fragile() = default;
  explicit Fragile(int v) : value(v) {}
  Fragile(const Fragile& other) : value(other.value) {
    if (copies_left.fetch_sub(1) <= 0) throw std::runtime_error("copy failed");
  }
  Fragile(Fragile&&) noexcept = default;
  Fragile& operator=(const Fragile&) = default;
  Fragile& operator=(Fragile&&) noexcept = default;
};

TEST_P(Parallel, ReduceRethrowsAFailureToCopyTheIdentity) {
  ThreadPool pool(workers());
  Fragile::copies_left = 0;
  EXPECT_THROW(parallel_reduce(pool, 0, 1000, Fragile(0), [](int i) { return Fragile(i); },
                               [](Fragile a, const Fragile& b) { return Fragile(a.value + b.value); }),
               std::runtime_error);
  Fragile::copies_left = 1 << 30;
}

TEST_P(Parallel, FindReturnsTheLowestMatchInRangeOrder) {
  ThreadPool pool(workers());
  std::mt19937 rng(12345);
  const int rounds = test::kSanitized ? 100 : 500;
  for (int round = 0; round < rounds; ++round) {
    const std::size_t n = 1 + rng() % 5000;
    std::vector<int> v(n, 0);
    const int matches = static_cast<int>(rng() % 4);
    std::size_t lowest = n;
    for (int m = 0; m < matches; ++m) {
      const std::size_t at = rng() % n;
      v[at] = 1;
      lowest = std::min(lowest, at);
    }
    const std::size_t grain = rng() % 3 == 0 ? 0 : 1 + rng() % 200;
    const auto it = parallel_find_if(pool, v.begin(), v.end(), [](int x) { return x == 1; }, {}, grain);
    ASSERT_EQ(static_cast<std::size_t>(it - v.begin()), lowest) << "round " << round;
  }
}

TEST_P(Parallel, FindRunsEveryElementBeforeTheMatchAndNoneAfterItReturns) {
  ThreadPool pool(workers());
  constexpr std::size_t kCount = 100000;
  constexpr std::size_t kMatch = 61234;
  std::vector<std::atomic<int>> seen(kCount);
  std::atomic<bool> returned{false};
  std::atomic<int> late{0};
  std::vector<int> v(kCount, 0);
  v[kMatch] = 1;
  v[kMatch + 10] = 1;
  const auto it = parallel_find_if(
      pool, v.begin(), v.end(),
      [&](const int& x) {
        if (returned.load()) late.fetch_add(1);
        seen[static_cast<std::size_t>(&x - v.data())].fetch_add(1);
        return x == 1;
      },
      {}, 100);
  returned = true;
  EXPECT_EQ(static_cast<std::size_t>(it - v.begin()), kMatch);
  for (std::size_t i = 0; i <= kMatch; ++i) ASSERT_EQ(seen[i].load(), 1) << i;
  pool.wait_idle();
  EXPECT_EQ(late.load(), 0);
}

TEST_P(Parallel, AnyOfAnswersAndAMatchStopsTheRunningElements) {
  ThreadPool pool(workers());
  std::vector<int> v(100000, 0);
  EXPECT_FALSE(parallel_any_of(pool, v.begin(), v.end(), [](int x) { return x != 0; }));
  // Element 0 matches; every other element waits for its token: only the
  // match can stop them, so the call returns only if it does, and then each
  // runner has begun at most the one element it was in.
  std::atomic<int> began{0};
  std::atomic<int> saw_requested{0};
  const bool any = parallel_any_of(
      pool, v.begin(), v.end(),
      [&](const int& x, const CancellationToken& token) {
        if (&x == v.data()) return true;
        began.fetch_add(1);
        EXPECT_TRUE(await_stop(token));
        if (token.reason() == CancelReason::requested) saw_requested.fetch_add(1);
        return false;
      },
      {}, 10);
  EXPECT_TRUE(any);
  EXPECT_LE(began.load(), static_cast<int>(workers()));
  EXPECT_EQ(saw_requested.load(), began.load());
}

TEST_P(Parallel, AFailureStopsTheOtherChunksWithReasonFailureAndIsRethrownAfterThemAll) {
  ThreadPool pool(workers());
  for (const bool on_worker : {false, true}) {
    std::atomic<int> running{0};
    std::atomic<int> saw_failure{0};
    std::atomic<int> began{0};
    try {
      from(pool, on_worker, [&] {
        parallel_for(
            pool, 0, 100000,
            [&](int i, const CancellationToken& token) {
              if (i == 0) throw std::runtime_error("element 0");
              running.fetch_add(1);
              began.fetch_add(1);
              EXPECT_TRUE(await_stop(token));
              if (token.reason() == CancelReason::failure) saw_failure.fetch_add(1);
              running.fetch_sub(1);
            },
            {}, 10);
        return 0;
      });
      ADD_FAILURE() << "no exception";
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "element 0");
    }
    EXPECT_EQ(running.load(), 0) << "the call returned before a started chunk ended";
    EXPECT_EQ(saw_failure.load(), began.load());
    EXPECT_LE(began.load(), static_cast<int>(workers()));
  }
}

TEST_P(Parallel, ExceptionsFromMapAndPredAreRethrown) {
  ThreadPool pool(workers());
  EXPECT_THROW(parallel_reduce(pool, 0, 10000, 0,
                               [](int i) {
                                 if (i == 7777) throw std::logic_error("map");
                                 return i;
                               },
                               std::plus<>()),
               std::logic_error);
  std::vector<int> v(10000);
  EXPECT_THROW(parallel_find_if(pool, v.begin(), v.end(),
                                [&](const int& x) {
                                  if (&x == &v[4321]) throw std::logic_error("pred");
                                  return false;
                                }),
               std::logic_error);
  EXPECT_THROW(parallel_any_of(pool, v.begin(), v.end(),
                               [&](const int& x) {
                                 if (&x == &v[4321]) throw std::logic_error("pred");
                                 return false;
                               }),
               std::logic_error);
}

TEST_P(Parallel, CancellingTheTokenFromAnotherThreadStopsTheLoopAfterEveryStartedChunkEnded) {
  ThreadPool pool(workers());
  for (const bool on_worker : {false, true}) {
    CancellationSource source;
    std::latch midway(1);
    std::thread canceller([&] {
      midway.wait();
      source.request_cancel();
    });
    std::atomic<int> running{0};
    std::atomic<int> saw_requested{0};
    std::atomic<bool> returned{false};
    std::atomic<int> late{0};
    EXPECT_THROW(from(pool, on_worker,
                      [&] {
                        parallel_for(
                            pool, 0, 1000000,
                            [&](int i, const CancellationToken& token) {
                              if (returned.load()) late.fetch_add(1);
                              running.fetch_add(1);
                              if (i == 1000) midway.count_down();
                              // No element from 1000 on ends before the stop, so the
                              // other runners cannot finish the loop first, however
                              // late the canceller runs (it would then rightly return).
                              if (i >= 1000) {
                                EXPECT_TRUE(await_stop(token));
                              }
                              if (token.cancelled() && token.reason() == CancelReason::requested) {
                                saw_requested.fetch_add(1);
                              }
                              running.fetch_sub(1);
                            },
                            TaskOptions().set_cancellation(source.token()), 100);
                        return 0;
                      }),
                 OperationCancelled);
    returned = true;
    canceller.join();
    EXPECT_EQ(running.load(), 0);
    EXPECT_GE(saw_requested.load(), 1);
    pool.wait_idle();
    EXPECT_EQ(late.load(), 0);
  }
}

TEST_P(Parallel, ATokenCancelledBeforeTheCallRunsNothing) {
  ThreadPool pool(workers());
  CancellationSource source;
  source.request_cancel(CancelReason::shutdown);
  std::atomic<int> calls{0};
  EXPECT_THROW(parallel_for(pool, 0, 1000, [&](int) { calls.fetch_add(1); },
                            TaskOptions().set_cancellation(source.token())),
               OperationCancelled);
  EXPECT_EQ(calls.load(), 0);
}

TEST_P(Parallel, ADeadlineStopsTheLoopWithReasonDeadlineAndThrowsTimedOut) {
  ThreadPool pool(workers());
  std::atomic<int> saw_deadline{0};
  try {
    parallel_for(
        pool, 0, 1000000,
        [&](int, const CancellationToken& token) {
          EXPECT_TRUE(await_stop(token));  // every element waits for the deadline
          if (token.reason() == CancelReason::deadline) saw_deadline.fetch_add(1);
        },
        TaskOptions().set_timeout(20ms), 100);
    ADD_FAILURE() << "no exception";
  } catch (const OperationCancelled&) {
    ADD_FAILURE() << "OperationCancelled for a deadline";
  } catch (const TaskError& e) {
    EXPECT_EQ(e.code(), make_error_code(Errc::timed_out));
  }
  EXPECT_GE(saw_deadline.load(), 1);
  // A deadline already passed: nothing runs.
  std::atomic<int> calls{0};
  try {
    parallel_for(pool, 0, 1000, [&](int) { calls.fetch_add(1); },
                 TaskOptions().set_deadline(std::chrono::steady_clock::now() - 1s));
    ADD_FAILURE() << "no exception";
  } catch (const TaskError& e) {
    EXPECT_EQ(e.code(), make_error_code(Errc::timed_out));
  }
  EXPECT_EQ(calls.load(), 0);
}

TEST_P(Parallel, ABodysOperationCancelledIsTheStopNotAFailure) {
  ThreadPool pool(workers());
  std::atomic<int> saw_requested{0};
  EXPECT_THROW(parallel_for(
                   pool, 0, 100000,
                   [&](int i, const CancellationToken& token) {
                     if (i == 0) throw OperationCancelled();
                     EXPECT_TRUE(await_stop(token));
                     if (token.reason() == CancelReason::requested) saw_requested.fetch_add(1);
                   },
                   {}, 10),
               OperationCancelled);
  // Under a deadline's stop the same throw means timed_out.
  try {
    parallel_for(
        pool, 0, 100000,
        [&](int, const CancellationToken& token) {
          EXPECT_TRUE(await_stop(token));
          token.throw_if_cancelled();
        },
        TaskOptions().set_timeout(10ms), 10);
    ADD_FAILURE() << "no exception";
  } catch (const OperationCancelled&) {
    ADD_FAILURE() << "OperationCancelled for a deadline";
  } catch (const TaskError& e) {
    EXPECT_EQ(e.code(), make_error_code(Errc::timed_out));
  }
}

TEST_P(Parallel, ACancellationAfterEveryElementRanChangesNothing) {
  ThreadPool pool(workers());
  CancellationSource source;
  std::atomic<int> calls{0};
  // One element: it runs whole, then cancels; nothing was left to run.
  parallel_for(pool, 0, 1, [&](int) {
    calls.fetch_add(1);
    source.request_cancel();
  }, TaskOptions().set_cancellation(source.token()));
  EXPECT_EQ(calls.load(), 1);
  // find: the match and everything before it ran; the stop came after.
  CancellationSource later;
  std::vector<int> v(1000, 0);
  v[0] = 1;
  const auto it = parallel_find_if(pool, v.begin(), v.end(), [&](const int& x) {
    if (x == 1) later.request_cancel();
    return x == 1;
  }, TaskOptions().set_cancellation(later.token()), 1000);
  EXPECT_EQ(it, v.begin());
}

TEST_P(Parallel, NestedLoopsInsideLoopBodiesComplete) {
  ThreadPool pool(workers());
  for (const bool on_worker : {false, true}) {
    const std::int64_t total = from(pool, on_worker, [&] {
      return parallel_reduce(
          pool, 0, 16, std::int64_t{0},
          [&](int outer) {
            std::atomic<std::int64_t> inner_sum{0};
            parallel_for(pool, 0, 1000, [&](int i) {
              // A third level, small.
              const int deepest = parallel_reduce(pool, 0, 4, 0, [](int k) { return k; }, std::plus<>());
              inner_sum.fetch_add(i + deepest);
            }, {}, 10);
            return inner_sum.load() * (outer + 1);
          },
          std::plus<>(), {}, 1);
    });
    // sum over outer of (499500 + 6 * 1000) * (outer + 1) = 505500 * 136
    EXPECT_EQ(total, std::int64_t{505500} * 136);
  }
}

TEST(ParallelOnOneWorker, ALoopCalledFromThePoolsOnlyWorkerRunsItAllThere) {
  ThreadPool pool(1);
  const auto worker = pool.submit([] { return std::this_thread::get_id(); }).get();
  std::atomic<int> elsewhere{0};
  const long sum = pool.submit([&] {
                         return parallel_reduce(pool, 0, 10000, 0L, [&](int i) {
                           if (std::this_thread::get_id() != worker) elsewhere.fetch_add(1);
                           return static_cast<long>(i);
                         }, std::plus<>());
                       }).get();
  EXPECT_EQ(sum, 49995000L);
  EXPECT_EQ(elsewhere.load(), 0);
}

TEST(ParallelOnOneWorker, TheCallerRunsEveryChunkWhenTheWorkerIsBusy) {
  ThreadPool pool(1);
  test::Gate gate;
  auto blocked = test::block_workers(pool, gate, 1);
  std::atomic<int> calls{0};
  parallel_for(pool, 0, 5000, [&](int) { calls.fetch_add(1); }, {}, 10);
  EXPECT_EQ(calls.load(), 5000);
  gate.open();
  for (auto& f : blocked) f.get();
}

TEST_P(Parallel, LoopsOnAPoolThatWasShutDownRunOnTheCaller) {
  ThreadPool pool(workers());
  pool.shutdown();
  std::atomic<int> calls{0};
  parallel_for(pool, 0, 3000, [&](int) { calls.fetch_add(1); }, TaskOptions().set_timeout(1h));
  EXPECT_EQ(calls.load(), 3000);
}

// A cancellation racing the loop's runners, round after round: one element
// (or none) cancels the loop's token while the other runners claim and run
// theirs. Either every element ran once and the call returned, or it threw
// OperationCancelled with some element not run; never an element twice, and
// never one after the call.
TEST_P(Parallel, CancellationRacingTheRunnersLosesNothingAndRunsNothingLate) {
  ThreadPool pool(workers());
  const int rounds = test::kSanitized ? 1000 : 5000;
  std::mt19937 rng(99);
  int completed = 0;
  int cancelled = 0;
  int shared = 0;  // rounds in which a helper ran elements too
  constexpr int kCount = 1000;
  std::vector<std::atomic<int>> seen(kCount);
  const std::thread::id caller = std::this_thread::get_id();
  for (int round = 0; round < rounds; ++round) {
    for (auto& s : seen) s.store(0, std::memory_order_relaxed);
    CancellationSource source;
    std::atomic<bool> returned{false};
    std::atomic<int> late{0};
    std::atomic<bool> helped{false};
    // Past the end: no element cancels, the loop must complete.
    const int cancel_at = static_cast<int>(rng() % (kCount + kCount / 8));
    bool threw = false;
    try {
      parallel_for(pool, 0, kCount, [&](int i) {
        if (returned.load()) late.fetch_add(1);
        seen[static_cast<std::size_t>(i)].fetch_add(1);
        if (std::this_thread::get_id() != caller) helped.store(true, std::memory_order_relaxed);
        std::atomic<int> work{0};  // long enough for helpers to join in
        for (int k = 0; k < 40; ++k) work.fetch_add(1, std::memory_order_relaxed);
        if (i == cancel_at) source.request_cancel();
      }, TaskOptions().set_cancellation(source.token()), 1 + rng() % 50);
    } catch (const OperationCancelled&) {
      threw = true;
    }
    returned = true;
    if (helped.load()) ++shared;
    int ran = 0;
    for (auto& s : seen) {
      ASSERT_LE(s.load(), 1);
      ran += s.load();
    }
    if (threw) {
      ++cancelled;
      ASSERT_LT(ran, kCount) << "threw although every element ran, round " << round;
    } else {
      ++completed;
      ASSERT_EQ(ran, kCount) << "round " << round;
    }
    if (cancel_at >= kCount) {
      ASSERT_FALSE(threw);
    }
    ASSERT_EQ(late.load(), 0);
  }
  pool.wait_idle();
  EXPECT_GT(shared, 0) << "the helpers never took part: the race was not run";
  RecordProperty("completed", completed);
  RecordProperty("cancelled", cancelled);
  RecordProperty("shared", shared);
}

// ---- coroutine forms ------------------------------------------------------------

TEST_P(Parallel, AsyncFormsGiveTheSameAnswersInsideATask) {
  ThreadPool pool(workers());
  std::vector<int> v(50000, 0);
  v[31337] = 1;
  v[40000] = 1;
  auto answers = pool.submit([](ThreadPool* p, std::vector<int>* data) -> Task<std::string> {
    std::vector<std::atomic<int>> seen(20000);
    co_await async_parallel_for(*p, 0, 20000, [&seen](int i) { seen[static_cast<std::size_t>(i)].fetch_add(1); });
    for (auto& s : seen) {
      if (s.load() != 1) co_return std::string("an element ran ") + std::to_string(s.load()) + " times";
    }
    co_await async_parallel_for_each(*p, data->begin(), data->end(), [](int& x) { x *= 2; });
    const long sum = co_await async_parallel_reduce(*p, 0, 100000, 0L, [](int i) { return long{i}; },
                                                    std::plus<>());
    const auto it = co_await async_parallel_find_if(*p, data->begin(), data->end(),
                                                    [](int x) { return x == 2; });
    const bool any = co_await async_parallel_any_of(*p, data->begin(), data->end(),
                                                    [](int x, const CancellationToken&) { return x == 3; });
    co_return std::to_string(sum) + "/" + std::to_string(it - data->begin()) + "/" + (any ? "any" : "none");
  }(&pool, &v));
  EXPECT_EQ(answers.get(), "4999950000/31337/none");
}

TEST_P(Parallel, AsyncFormsRunUnderSyncWaitAndOnEmptyRanges) {
  ThreadPool pool(workers());
  EXPECT_EQ(sync_wait(async_parallel_reduce(pool, 0, 1000, 0, [](int i) { return i; }, std::plus<>())),
            499500);
  EXPECT_EQ(sync_wait(async_parallel_reduce(pool, 5, 5, 7, [](int i) { return i; }, std::plus<>())), 7);
  std::vector<int> none;
  EXPECT_FALSE(sync_wait(async_parallel_any_of(pool, none.begin(), none.end(), [](int) { return true; })));
}

TEST_P(Parallel, AnAsyncLoopStopsWithTheTasksTokenAndJoinsItsRunnersFirst) {
  ThreadPool pool(workers());
  std::atomic<int> running{0};
  std::atomic<int> began{0};
  auto handle = pool.handle([](ThreadPool* p, std::atomic<int>* run, std::atomic<int>* b) -> Task<std::string> {
    try {
      co_await async_parallel_for(*p, 0, 1000000, [run, b](int, const CancellationToken& token) {
        run->fetch_add(1);
        b->fetch_add(1);
        const bool stopped = test::wait_cancelled(token);
        run->fetch_sub(1);
        if (!stopped) throw std::runtime_error("never stopped");
      }, 10);
    } catch (const OperationCancelled&) {
      co_return "cancelled, " + std::to_string(run->load()) + " running";
    }
    co_return "not stopped";
  }(&pool, &running, &began));
  ASSERT_TRUE(test::spin_until_true([&] { return began.load() > 0; }));
  handle.cancel();
  // However the pool records the task's end, it ends after the loop, and
  // the loop after every element that began.
  handle.wait();
  EXPECT_EQ(running.load(), 0);
  EXPECT_GE(began.load(), 1);
}

TEST_P(Parallel, AnAsyncLoopUnderATasksDeadlineThrowsTimedOutAndAFailureIsRethrown) {
  ThreadPool pool(workers());
  auto timed = pool.submit([](ThreadPool* p) -> Task<std::string> {
    try {
      co_await async_parallel_for(*p, 0, 1000000, [](int, const CancellationToken& token) {
        if (!test::wait_cancelled(token)) throw std::runtime_error("never stopped");
      }, 10);
    } catch (const OperationCancelled&) {
      co_return "OperationCancelled";
    } catch (const TaskError& e) {
      co_return e.code() == make_error_code(Errc::timed_out) ? "timed_out" : "other TaskError";
    }
    co_return "not stopped";
  }(&pool), TaskOptions().set_timeout(20ms));
  // The task either completes with the loop's answer or is recorded
  // timed_out: either way the deadline is what stopped it.
  try {
    EXPECT_EQ(timed.get(), "timed_out");
  } catch (const TaskError& e) {
    EXPECT_EQ(e.code(), make_error_code(Errc::timed_out));
  }
  auto failed = pool.submit([](ThreadPool* p) -> Task<void> {
    co_await async_parallel_for(*p, 0, 100000, [](int i) {
      if (i == 5000) throw std::logic_error("element 5000");
    });
  }(&pool));
  EXPECT_THROW(failed.get(), std::logic_error);
}

INSTANTIATE_TEST_SUITE_P(PoolSizes, Parallel, ::testing::Values(1, 3), test::pool_size_name);

}  // namespace
}  // namespace quell
