// quell's tokens and the standard's (API.md R44, R45): to_cancellation_token,
// StopTokenBridge, and a std::stop_token in TaskOptions. Allocations are
// counted, so this binary replaces the global operator new/delete.
#include "quell/stop_token.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <cstdlib>
#include <functional>
#include <latch>
#include <memory>
#include <new>
#include <optional>
#include <stop_token>
#include <thread>
#include <utility>

#include "pool_test_support.hpp"
#include "quell/task_options.hpp"
#include "quell/thread_pool.hpp"
#include "sanitized.hpp"

namespace {

// Every thread's allocations count: the measured windows run with no other
// thread of this binary alive.
std::atomic<long> g_allocations{0};
std::atomic<long> g_live{0};

void* counted_alloc(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  g_live.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}

void counted_free(void* p) noexcept {
  if (p == nullptr) return;
  g_live.fetch_sub(1, std::memory_order_relaxed);
  std::free(p);
}

struct Counts {
  long allocations;
  long live;
};

// Allocations (and blocks still live) made while `fn` runs.
template <class Fn>
Counts count(Fn&& fn) {
  const long allocations = g_allocations.load();
  const long live = g_live.load();
  fn();
  return {g_allocations.load() - allocations, g_live.load() - live};
}

}  // namespace

void* operator new(std::size_t size) { return counted_alloc(size); }
void* operator new[](std::size_t size) { return counted_alloc(size); }
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_free(p); }

namespace quell {
namespace {

using test::Gate;
using test::OpenOnExit;

// Rounds of each race: each round is a fresh pair of racing operations.
constexpr int kRaceRounds = test::kSanitized ? 2000 : 20000;

// Runs `mine` on this thread and `theirs` on another, released together by a
// barrier, `rounds` times. `prepare` runs before each round and `check` after
// both sides of it returned (the barrier orders both around them).
template <class Prepare, class Mine, class Theirs, class Check>
void race(int rounds, Prepare prepare, Mine mine, Theirs theirs, Check check) {
  std::barrier sync(2);
  std::thread other([&] {
    for (int i = 0; i < rounds; ++i) {
      sync.arrive_and_wait();
      theirs();
      sync.arrive_and_wait();
    }
  });
  for (int i = 0; i < rounds; ++i) {
    prepare();
    sync.arrive_and_wait();
    mine();
    sync.arrive_and_wait();
    check(i);
  }
  other.join();
}

// ---- to_cancellation_token ------------------------------------------------

TEST(ToCancellationToken, ACancellationTokenIsReturnedAsIsWithItsState) {
  CancellationSource source;
  const CancellationToken token = source.token();
  EXPECT_EQ(to_cancellation_token(token), token);
  EXPECT_EQ(to_cancellation_token(token, CancelReason::deadline), token);
  EXPECT_EQ(to_cancellation_token(CancellationToken()), CancellationToken());
}

TEST(ToCancellationToken, AStdStopTokenThatCannotStopGivesADefaultToken) {
  EXPECT_EQ(to_cancellation_token(std::stop_token()), CancellationToken());
  EXPECT_EQ(to_cancellation_token(std::stop_source(std::nostopstate).get_token()),
            CancellationToken());
  std::stop_token orphan = std::stop_source().get_token();  // its only source is gone
  ASSERT_FALSE(orphan.stop_possible());
  const CancellationToken token = to_cancellation_token(orphan);
  EXPECT_EQ(token, CancellationToken());
  EXPECT_FALSE(token.can_cancel());
}

TEST(ToCancellationToken, ANeverStopTokenGivesADefaultToken) {
  EXPECT_EQ(to_cancellation_token(NeverStopToken()), CancellationToken());
}

TEST(ToCancellationToken, AStopRequestedBeforeTheConversionCancelsTheTokenAtOnce) {
  std::stop_source source;
  source.request_stop();
  const CancellationToken token = to_cancellation_token(source.get_token());
  EXPECT_TRUE(token.cancelled());
  EXPECT_EQ(token.reason(), CancelReason::requested);
  int calls = 0;
  CancellationCallback callback(token, [&] { ++calls; });  // runs inline
  EXPECT_EQ(calls, 1);
}

TEST(ToCancellationToken, AStopRequestedLaterCancelsTheTokenAndRunsItsCallbacksBeforeItReturns) {
  std::stop_source source;
  const CancellationToken token = to_cancellation_token(source.get_token());
  EXPECT_FALSE(token.cancelled());
  EXPECT_TRUE(token.can_cancel());
  EXPECT_EQ(token.reason(), CancelReason::none);
  int calls = 0;
  CancellationCallback callback(token, [&] { ++calls; });
  EXPECT_EQ(calls, 0);
  source.request_stop();
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(token.cancelled());
  EXPECT_EQ(token.reason(), CancelReason::requested);
}

TEST(ToCancellationToken, TheTokenIsCancelledWithTheReasonGivenAndNoneCountsAsRequested) {
  const std::pair<CancelReason, CancelReason> cases[] = {
      {CancelReason::requested, CancelReason::requested},
      {CancelReason::deadline, CancelReason::deadline},
      {CancelReason::shutdown, CancelReason::shutdown},
      {CancelReason::failure, CancelReason::failure},
      {CancelReason::none, CancelReason::requested},
  };
  for (const auto& [why, expected] : cases) {
    std::stop_source later;
    const CancellationToken token = to_cancellation_token(later.get_token(), why);
    later.request_stop();
    EXPECT_EQ(token.reason(), expected) << "why " << static_cast<int>(why);

    std::stop_source before;
    before.request_stop();
    EXPECT_EQ(to_cancellation_token(before.get_token(), why).reason(), expected)
        << "why " << static_cast<int>(why);
  }
}

TEST(ToCancellationToken, CopiesShareOneStateAndTheStateOutlivesTheStopSource) {
  std::optional<std::stop_source> source(std::in_place);
  const CancellationToken token = to_cancellation_token(source->get_token());
  const CancellationToken copy = token;
  EXPECT_EQ(copy, token);
  EXPECT_NE(token, CancellationToken());
  source.reset();
  EXPECT_FALSE(token.cancelled());
  EXPECT_FALSE(copy.cancelled());
}

TEST(ToCancellationToken, ALinkedSourceKeepsTheRegistrationAfterTheLastToken) {
  std::stop_source stop;
  std::optional<CancellationToken> token(to_cancellation_token(stop.get_token()));
  CancellationSource linked = CancellationSource::linked({*token});
  token.reset();  // the link alone holds the state now
  EXPECT_FALSE(linked.cancelled());
  stop.request_stop();
  EXPECT_TRUE(linked.cancelled());
  EXPECT_EQ(linked.token().reason(), CancelReason::requested);
}

TEST(ToCancellationToken, TheStopMayDropTheLastReferenceFromInsideACallback) {
  // The callback lets go of the token and of itself, so the registration's
  // own reference is the last: the state is destroyed inside request_stop(),
  // from inside the registration's own callback.
  std::stop_source source;
  const long live = g_live.load();
  std::optional<CancellationToken> token(to_cancellation_token(source.get_token()));
  int calls = 0;
  std::optional<CancellationCallback<std::function<void()>>> callback;
  callback.emplace(*token, [&] {
    ++calls;
    token.reset();
    callback.reset();
  });
  source.request_stop();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(g_live.load(), live);  // the state's block went
}

TEST(ToCancellationToken, ConvertingMakesOneAllocationAndTheLastTokenFreesIt) {
  std::stop_source source;
  const std::stop_token stop = source.get_token();
  int calls = 0;
  const Counts counts = count([&] {
    CancellationToken token = to_cancellation_token(stop);
    CancellationToken copy = token;
    CancellationCallback callback(copy, [&] { ++calls; });
  });
  EXPECT_EQ(counts.allocations, 1);
  EXPECT_EQ(counts.live, 0);
  EXPECT_EQ(calls, 0);
  source.request_stop();  // nothing is registered on it any more
  EXPECT_EQ(calls, 0);
}

TEST(ToCancellationToken, ConvertingATokenThatCannotStopAllocatesNothing) {
  CancellationSource source;
  const CancellationToken token = source.token();
  const Counts counts = count([&] {
    (void)to_cancellation_token(std::stop_token());
    (void)to_cancellation_token(NeverStopToken());
    (void)to_cancellation_token(token);
  });
  EXPECT_EQ(counts.allocations, 0);
  EXPECT_EQ(counts.live, 0);
}

TEST(ToCancellationToken, AStopRacingTheLastTokensDestructionIsSafeAndNeverLostByACopyKept) {
  // Odd rounds keep a copy: it must end cancelled. Even rounds drop the only
  // token while the stop runs, so the state's destruction races the
  // registration's callback.
  std::optional<std::stop_source> source;
  std::optional<CancellationToken> token;
  CancellationToken kept;
  int round = 0;
  race(
      kRaceRounds,
      [&] {
        source.emplace();
        token.emplace(to_cancellation_token(source->get_token(), CancelReason::shutdown));
        kept = round % 2 == 1 ? *token : CancellationToken();
        ++round;
      },
      [&] { source->request_stop(); }, [&] { token.reset(); },
      [&](int i) {
        if (i % 2 == 1) {
          EXPECT_TRUE(kept.cancelled()) << "round " << i;
          EXPECT_EQ(kept.reason(), CancelReason::shutdown) << "round " << i;
        }
        kept.reset();
        source.reset();
      });
}

TEST(ToCancellationToken, AStopRacingTheConversionIsNeverLost) {
  std::optional<std::stop_source> source;
  CancellationToken token;
  race(
      kRaceRounds, [&] { source.emplace(); },
      [&] { token = to_cancellation_token(source->get_token()); }, [&] { source->request_stop(); },
      [&](int i) {
        EXPECT_TRUE(token.cancelled()) << "round " << i;
        token.reset();
        source.reset();
      });
}

// ---- TaskOptions and the pool ---------------------------------------------

TEST(TaskOptionsStopToken, SetCancellationTakesAStdStopTokenThroughTheConversion) {
  std::stop_source source;
  TaskOptions options;
  EXPECT_EQ(&options.set_cancellation(source.get_token()), &options);
  EXPECT_TRUE(options.cancellation().can_cancel());
  EXPECT_FALSE(options.cancellation().cancelled());
  source.request_stop();
  EXPECT_TRUE(options.cancellation().cancelled());
  EXPECT_EQ(options.cancellation().reason(), CancelReason::requested);

  EXPECT_EQ(TaskOptions().set_cancellation(std::stop_token()).cancellation(), CancellationToken());
  EXPECT_EQ(TaskOptions().set_cancellation(NeverStopToken()).cancellation(), CancellationToken());
}

TEST(TaskOptionsStopToken, ACancellationTokenStillTakesTheOverloadThatKeepsItsState) {
  CancellationSource source;
  const CancellationToken token = source.token();
  EXPECT_EQ(TaskOptions().set_cancellation(token).cancellation(), token);
  EXPECT_EQ(TaskOptions().set_cancellation(source.token()).cancellation(), token);
  const Counts counts = count([&] { TaskOptions().set_cancellation(token); });
  EXPECT_EQ(counts.allocations, 0);
}

class StopTokenInPool : public ::testing::TestWithParam<std::size_t> {};

TEST_P(StopTokenInPool, AQueuedTaskSubmittedWithAStdStopTokenIsDroppedWhenItsSourceRequestsStop) {
  Gate gate;
  ThreadPool pool(GetParam());
  OpenOnExit open_gate(gate);
  auto blockers = test::block_workers(pool, gate, GetParam());
  std::stop_source source;
  std::atomic<int> runs{0};
  test::DestructionProbe::Record record;
  TaskHandle<void> handle =
      pool.handle([&runs, probe = test::DestructionProbe(&record)] { ++runs; },
                  TaskOptions().set_cancellation(source.get_token()));
  ASSERT_EQ(handle.status(), TaskStatus::queued);
  source.request_stop();
  EXPECT_TRUE(handle.future().ready());  // at once, not when a worker reaches it
  EXPECT_EQ(handle.status(), TaskStatus::cancelled);
  EXPECT_EQ(handle.future().error(), Errc::cancelled);
  EXPECT_EQ(record.destroyed.load(), 1);
  gate.open();
  pool.wait_idle();
  EXPECT_EQ(runs.load(), 0);
  EXPECT_EQ(pool.stats().cancelled, 1u);
}

TEST_P(StopTokenInPool, ARunningTaskSeesItsTokenCancelledWhenTheStdStopSourceRequestsStop) {
  ThreadPool pool(GetParam());
  std::stop_source source;
  std::latch started(1);
  Future<CancelReason> future = pool.submit(
      [&started](CancellationToken token) {
        started.count_down();
        EXPECT_TRUE(test::wait_cancelled(token));
        return token.reason();
      },
      TaskOptions().set_cancellation(
          to_cancellation_token(source.get_token(), CancelReason::shutdown)));
  started.wait();
  source.request_stop();
  EXPECT_EQ(future.get(), CancelReason::shutdown);
}

TEST_P(StopTokenInPool, AStdStopTokenWithReasonDeadlineTimesAQueuedTaskOut) {
  Gate gate;
  ThreadPool pool(GetParam());
  OpenOnExit open_gate(gate);
  auto blockers = test::block_workers(pool, gate, GetParam());
  std::stop_source source;
  Future<void> future = pool.submit([] {}, TaskOptions().set_cancellation(to_cancellation_token(
                                               source.get_token(), CancelReason::deadline)));
  source.request_stop();
  EXPECT_EQ(future.status(), TaskStatus::timed_out);
}

INSTANTIATE_TEST_SUITE_P(PoolSizes, StopTokenInPool, ::testing::Values(1, 3), test::pool_size_name);

// ---- StopTokenBridge --------------------------------------------------------

TEST(StopTokenBridge, ADefaultTokenGivesAStdTokenThatCannotStopAndAllocatesNothing) {
  const CancellationToken token;
  const Counts counts = count([&] {
    StopTokenBridge bridge(token);
    EXPECT_FALSE(bridge.get_token().stop_possible());
    EXPECT_FALSE(bridge.get_token().stop_requested());
  });
  EXPECT_EQ(counts.allocations, 0);
  EXPECT_EQ(counts.live, 0);
}

TEST(StopTokenBridge, ACancellableTokenCostsOneAllocationFreedWithTheBridge) {
  CancellationSource source;
  const CancellationToken token = source.token();
  const Counts counts = count([&] {
    StopTokenBridge bridge(token);
    EXPECT_TRUE(bridge.get_token().stop_possible());
  });
  EXPECT_EQ(counts.allocations, 1);
  EXPECT_EQ(counts.live, 0);
}

TEST(StopTokenBridge, CancellingTheTokenRequestsStopAndRunsStdCallbacksBeforeItReturns) {
  CancellationSource source;
  StopTokenBridge bridge(source.token());
  const std::stop_token stop = bridge.get_token();
  EXPECT_TRUE(stop.stop_possible());
  EXPECT_FALSE(stop.stop_requested());
  int calls = 0;
  std::stop_callback callback(stop, [&] { ++calls; });
  source.request_cancel();
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(stop.stop_requested());
  EXPECT_TRUE(bridge.get_token().stop_requested());
}

TEST(StopTokenBridge, ATokenAlreadyCancelledGivesAStoppedStdToken) {
  CancellationSource source;
  source.request_cancel(CancelReason::deadline);
  StopTokenBridge bridge(source.token());
  EXPECT_TRUE(bridge.get_token().stop_requested());
}

TEST(StopTokenBridge, OnceTheBridgeIsGoneItsTokensCannotStopUnlessAlreadyStopped) {
  CancellationSource source;
  std::stop_token unstopped;
  {
    StopTokenBridge bridge(source.token());
    unstopped = bridge.get_token();
  }
  EXPECT_FALSE(unstopped.stop_possible());
  source.request_cancel();  // nothing is registered on the state any more
  EXPECT_FALSE(unstopped.stop_requested());

  CancellationSource other;
  std::stop_token stopped;
  {
    StopTokenBridge bridge(other.token());
    stopped = bridge.get_token();
    other.request_cancel();
  }
  EXPECT_TRUE(stopped.stop_possible());
  EXPECT_TRUE(stopped.stop_requested());
}

TEST(StopTokenBridge, AStdTokenRoundTripsThroughQuell) {
  std::stop_source source;
  StopTokenBridge bridge(to_cancellation_token(source.get_token()));
  const std::stop_token back = bridge.get_token();
  EXPECT_FALSE(back.stop_requested());
  source.request_stop();
  EXPECT_TRUE(back.stop_requested());
}

TEST(StopTokenBridge, ACancellationRacingTheBridgesDestructionIsSafe) {
  // A std::stop_token taken from the bridge ends stopped or unable to stop,
  // never able to stop and not stopped.
  std::optional<CancellationSource> source;
  std::optional<StopTokenBridge> bridge;
  std::stop_token stop;
  race(
      kRaceRounds,
      [&] {
        source.emplace();
        bridge.emplace(source->token());
        stop = bridge->get_token();
      },
      [&] { source->request_cancel(); }, [&] { bridge.reset(); },
      [&](int i) {
        EXPECT_TRUE(stop.stop_requested() || !stop.stop_possible()) << "round " << i;
        stop = std::stop_token();
        source.reset();
      });
}

TEST(StopTokenBridge, ACancellationRacingTheBridgesConstructionIsNeverLost) {
  std::optional<CancellationSource> source;
  std::optional<StopTokenBridge> bridge;
  race(
      kRaceRounds, [&] { source.emplace(); }, [&] { bridge.emplace(source->token()); },
      [&] { source->request_cancel(); },
      [&](int i) {
        EXPECT_TRUE(bridge->get_token().stop_requested()) << "round " << i;
        bridge.reset();
        source.reset();
      });
}

}  // namespace
}  // namespace quell
