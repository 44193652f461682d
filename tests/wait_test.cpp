#include "quell/wait.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <latch>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "blocked_support.hpp"

namespace quell {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The failure guard for anything that should happen "soon".
constexpr std::chrono::seconds kGuard{30};

// Rounds of each race: enough to land the cancellation before, during and
// after the other side's registration many times over.
constexpr int kRaceRounds = 2000;

// Cancels on scope exit, so a failed assertion does not leave a thread asleep
// for an hour under a future whose destructor joins it. Declare it after that
// future.
class CancelOnExit {
 public:
  explicit CancelOnExit(CancellationSource& source) : source_(source) {}
  CancelOnExit(const CancelOnExit&) = delete;
  CancelOnExit& operator=(const CancelOnExit&) = delete;
  ~CancelOnExit() { source_.request_cancel(); }

 private:
  CancellationSource& source_;
};

template <class T>
bool ready_within_guard(const std::future<T>& future) {
  return future.wait_for(kGuard) == std::future_status::ready;
}

// A race that loses a wake-up hangs, and a thread asleep forever cannot be
// joined: if `rounds_done` stops moving for a whole guard period, stop the
// whole binary, naming the race. Progress, not total time, so a slow
// (sanitised, loaded) machine does not fail a correct run.
template <class T>
void abort_if_a_round_hangs(const std::future<T>& future, const std::atomic<int>& rounds_done,
                            const char* what) {
  int seen = rounds_done.load(std::memory_order_relaxed);  // a count; orders nothing
  while (future.wait_for(kGuard) != std::future_status::ready) {
    const int now = rounds_done.load(std::memory_order_relaxed);  // a count; orders nothing
    if (now == seen) {
      std::fprintf(stderr, "%s: round %d did not end within %lld s, a lost wake-up\n", what, now,
                   static_cast<long long>(kGuard.count()));
      std::abort();
    }
    seen = now;
  }
}

// Busy for `iterations` volatile stores, which the compiler must keep (an
// empty loop it may drop).
volatile int spin_sink;
void spin(int iterations) {
  for (int i = 0; i < iterations; ++i) spin_sink = i;
}

// Spins for a time that varies by round, so the two sides of a race start
// their work at shifting offsets from each other.
void stagger(int round) { spin(round % 64 * 16); }

// --- sleep_for / sleep_until ------------------------------------------------

TEST(SleepFor, ReturnsTrueOnceTheDurationPassedWithoutCancellation) {
  CancellationSource source;
  const auto start = Clock::now();
  EXPECT_TRUE(sleep_for(5ms, source.token()));
  EXPECT_GE(Clock::now() - start, 5ms);
}

TEST(SleepUntil, ReturnsTrueOnceTheDeadlinePassedWithoutCancellation) {
  CancellationSource source;
  const auto deadline = Clock::now() + 5ms;
  EXPECT_TRUE(sleep_until(deadline, source.token()));
  EXPECT_GE(Clock::now(), deadline);
}

TEST(SleepFor, ADefaultTokenSleepsTheWholeDuration) {
  const auto start = Clock::now();
  EXPECT_TRUE(sleep_for(5ms, CancellationToken()));
  EXPECT_GE(Clock::now() - start, 5ms);
}

TEST(SleepFor, ATokenNoOneCanCancelAnyMoreSleepsTheWholeDuration) {
  CancellationToken orphan = CancellationSource().token();
  ASSERT_FALSE(orphan.can_cancel());
  const auto start = Clock::now();
  EXPECT_TRUE(sleep_for(5ms, orphan));
  EXPECT_GE(Clock::now() - start, 5ms);
}

TEST(SleepFor, AnAlreadyCancelledTokenReturnsFalseAtOnce) {
  CancellationSource source;
  source.request_cancel();
  auto slept = std::async(std::launch::async, [token = source.token()] {
    return sleep_for(1h, token) || sleep_until(Clock::time_point::max(), token);
  });
  ASSERT_TRUE(ready_within_guard(slept)) << "slept on a cancelled token";
  EXPECT_FALSE(slept.get());
}

TEST(SleepUntil, ATimeAlreadyPastReturnsNotCancelledAtOnce) {
  CancellationSource live;
  CancellationSource cancelled;
  cancelled.request_cancel();
  auto results = std::async(std::launch::async, [&] {
    const auto past = Clock::now() - 1s;
    return std::vector<bool>{
        sleep_until(past, live.token()),
        sleep_until(Clock::time_point::min(), live.token()),
        sleep_until(past, CancellationToken()),
        sleep_until(past, cancelled.token()),
        sleep_until(Clock::time_point::min(), cancelled.token()),
    };
  });
  ASSERT_TRUE(ready_within_guard(results)) << "slept past a time already gone";
  EXPECT_EQ(results.get(), (std::vector<bool>{true, true, true, false, false}));
}

TEST(SleepFor, AZeroOrNegativeDurationReturnsNotCancelledAtOnce) {
  CancellationSource live;
  CancellationSource cancelled;
  cancelled.request_cancel();
  auto results = std::async(std::launch::async, [&] {
    return std::vector<bool>{
        sleep_for(0s, live.token()),
        sleep_for(-1s, live.token()),
        sleep_for(Clock::duration::min(), live.token()),
        sleep_for(0s, cancelled.token()),
        sleep_for(Clock::duration::min(), cancelled.token()),
    };
  });
  ASSERT_TRUE(ready_within_guard(results)) << "slept past a time already gone";
  EXPECT_EQ(results.get(), (std::vector<bool>{true, true, true, false, false}));
}

// The sleeper is asleep in the kernel before the request: the callback's
// wake, not a check on the way in, is what ends the sleep.
TEST(SleepFor, CancellationWakesASleeperPromptly) {
  CancellationSource source;
  int written_before_cancel = 0;
  std::latch tid_known(1);
  pid_t tid = 0;
  auto slept = std::async(std::launch::async, [&, token = source.token()] {
    tid = test::current_tid();
    tid_known.count_down();
    const bool result = sleep_for(1h, token);
    // A data race here, unless request_cancel() happens-before the return.
    return std::pair(result, written_before_cancel);
  });
  CancelOnExit rescue(source);
  tid_known.wait();
  const auto gone = [&] { return slept.wait_for(0s) == std::future_status::ready; };
  ASSERT_TRUE(test::wait_until_sleeping(tid, gone, kGuard)) << "the sleeper did not fall asleep";

  written_before_cancel = 42;
  EXPECT_TRUE(source.request_cancel());
  ASSERT_TRUE(ready_within_guard(slept)) << "cancellation did not wake the sleeper";
  EXPECT_EQ(slept.get(), std::pair(false, 42));
}

TEST(SleepFor, CancellationRacingTheSleepsStartAlwaysEndsItWithFalse) {
  CancellationSource source;
  CancellationToken token;
  // Each round starts with a fresh state, made while neither side runs.
  std::barrier start(2, [&]() noexcept {
    source = CancellationSource();
    token = source.token();
  });
  std::atomic<int> rounds_done{0};
  auto sleeper = std::async(std::launch::async, [&] {
    int returned_true = 0;
    for (int round = 0; round < kRaceRounds; ++round) {
      start.arrive_and_wait();
      // An hour away: only a cancellation can end it within the test.
      if (sleep_for(1h, token)) ++returned_true;
      rounds_done.store(round + 1, std::memory_order_relaxed);  // a count; orders nothing
    }
    return returned_true;
  });
  auto canceller = std::async(std::launch::async, [&] {
    for (int round = 0; round < kRaceRounds; ++round) {
      start.arrive_and_wait();
      stagger(round);
      source.request_cancel();
    }
  });
  abort_if_a_round_hangs(sleeper, rounds_done, "sleep_for racing request_cancel");
  canceller.get();
  EXPECT_EQ(sleeper.get(), 0);
}

// Runs `sleep(token)` on another thread, waits until it is asleep in the
// kernel, cancels, and expects the sleep to end then, returning false.
template <class Sleep>
void expect_sleeps_until_cancelled(Sleep sleep) {
  CancellationSource source;
  std::latch tid_known(1);
  pid_t tid = 0;
  auto slept = std::async(std::launch::async, [&, token = source.token()] {
    tid = test::current_tid();
    tid_known.count_down();
    return sleep(token);
  });
  CancelOnExit rescue(source);
  tid_known.wait();
  const auto gone = [&] { return slept.wait_for(0s) == std::future_status::ready; };
  EXPECT_TRUE(test::wait_until_sleeping(tid, gone, kGuard)) << "returned before any cancellation";

  source.request_cancel();
  ASSERT_TRUE(ready_within_guard(slept)) << "cancellation did not wake the sleeper";
  EXPECT_FALSE(slept.get());
}

TEST(SleepFor, TheLargestDurationSaturatesAndStillEndsOnCancellation) {
  // now + max overflows: a wrapped deadline would lie in the past and
  // return true at once.
  expect_sleeps_until_cancelled(
      [](const CancellationToken& token) { return sleep_for(Clock::duration::max(), token); });
}

TEST(SleepUntil, TheLargestTimePointSleepsUntilCancelled) {
  expect_sleeps_until_cancelled(
      [](const CancellationToken& token) { return sleep_until(Clock::time_point::max(), token); });
}

// --- wait(cv, lock, token, pred) ----------------------------------------------

// What a waiter shares with the test: a flag under a mutex, and a count of
// the predicate's checks that the test can wait for. Once the test holds the
// mutex after the waiter's n-th check found the flag false, the waiter has
// let go of the mutex inside cv.wait() (or returned): it is waiting, and a
// notify or a cancellation from here on must reach it.
struct Shared {
  std::mutex mutex;
  std::condition_variable_any cv;   // the one under test
  std::condition_variable checked;  // tells the test of each check
  bool ready = false;               // guarded by mutex
  int checks = 0;                   // guarded by mutex: the predicate's calls

  auto predicate() {
    return [this] {
      ++checks;
      checked.notify_all();
      return ready;
    };
  }

  // The waiter's result, whether it held the lock on return, and how often
  // it checked the predicate.
  struct Outcome {
    bool result;
    bool owned_lock;
    int checks;
  };

  std::future<Outcome> start_waiter(CancellationToken token) {
    return std::async(std::launch::async, [this, token = std::move(token)] {
      std::unique_lock lock(mutex);
      const bool result = wait(cv, lock, token, predicate());
      return Outcome{result, lock.owns_lock(), checks};
    });
  }

  // Returns once the waiter checked the predicate `count` times and let go
  // of the mutex; false if it did not within the guard.
  [[nodiscard]] bool until_checked(int count) {
    std::unique_lock lock(mutex);
    return checked.wait_for(lock, kGuard, [&] { return checks >= count; });
  }

  void make_ready() {
    {
      std::lock_guard lock(mutex);
      ready = true;
    }
    cv.notify_all();
  }
};

TEST(Wait, APredicateAlreadyTrueReturnsTrueWithoutWaiting) {
  CancellationSource source;
  Shared shared;
  shared.ready = true;
  auto waited = shared.start_waiter(source.token());
  CancelOnExit rescue(source);  // would return false: a waiter that slept
  ASSERT_TRUE(ready_within_guard(waited)) << "waited although the predicate held";
  const Shared::Outcome outcome = waited.get();
  EXPECT_TRUE(outcome.result);
  EXPECT_TRUE(outcome.owned_lock);
  EXPECT_EQ(outcome.checks, 1);
}

TEST(Wait, ANotifyThatMakesThePredicateTrueReturnsTrue) {
  CancellationSource source;
  Shared shared;
  auto waited = shared.start_waiter(source.token());
  CancelOnExit rescue(source);
  ASSERT_TRUE(shared.until_checked(1));
  shared.make_ready();
  ASSERT_TRUE(ready_within_guard(waited)) << "the notify did not wake the waiter";
  const Shared::Outcome outcome = waited.get();
  EXPECT_TRUE(outcome.result);
  EXPECT_TRUE(outcome.owned_lock);
  EXPECT_GE(outcome.checks, 2);
  EXPECT_FALSE(source.cancelled());
}

TEST(Wait, ANotifyThatLeavesThePredicateFalseWaitsOn) {
  CancellationSource source;
  Shared shared;
  auto waited = shared.start_waiter(source.token());
  CancelOnExit rescue(source);
  ASSERT_TRUE(shared.until_checked(1));
  shared.cv.notify_all();  // the flag stays false
  ASSERT_TRUE(shared.until_checked(2));
  EXPECT_NE(waited.wait_for(0s), std::future_status::ready)
      << "returned on a notify that left the predicate false";
  shared.make_ready();
  ASSERT_TRUE(ready_within_guard(waited)) << "the notify did not wake the waiter";
  const Shared::Outcome outcome = waited.get();
  EXPECT_TRUE(outcome.result);
  EXPECT_TRUE(outcome.owned_lock);
  EXPECT_GE(outcome.checks, 3);
}

TEST(Wait, CancellationWhileWaitingReturnsFalseWithTheLockHeld) {
  CancellationSource source;
  Shared shared;
  auto waited = shared.start_waiter(source.token());
  CancelOnExit rescue(source);
  ASSERT_TRUE(shared.until_checked(1));
  EXPECT_TRUE(source.request_cancel());
  ASSERT_TRUE(ready_within_guard(waited)) << "cancellation did not wake the waiter";
  const Shared::Outcome outcome = waited.get();
  EXPECT_FALSE(outcome.result);
  EXPECT_TRUE(outcome.owned_lock);
}

TEST(Wait, CancellationWhileTheCancellerHoldsTheWaitersMutexStillWakesIt) {
  CancellationSource source;
  Shared shared;
  auto waited = shared.start_waiter(source.token());
  CancelOnExit rescue(source);
  ASSERT_TRUE(shared.until_checked(1));
  {
    // The notify does not need this mutex: no deadlock with the waiter,
    // which takes it back before it returns.
    std::lock_guard lock(shared.mutex);
    EXPECT_TRUE(source.request_cancel());
  }
  ASSERT_TRUE(ready_within_guard(waited)) << "cancellation did not wake the waiter";
  const Shared::Outcome outcome = waited.get();
  EXPECT_FALSE(outcome.result);
  EXPECT_TRUE(outcome.owned_lock);
}

TEST(Wait, AnAlreadyCancelledTokenReturnsThePredicateAtOnce) {
  CancellationSource source;
  source.request_cancel();
  std::mutex mutex;
  std::condition_variable_any cv;
  std::unique_lock lock(mutex);
  int checks = 0;
  EXPECT_FALSE(wait(cv, lock, source.token(), [&] { return ++checks, false; }));
  EXPECT_TRUE(lock.owns_lock());
  EXPECT_TRUE(wait(cv, lock, source.token(), [&] { return ++checks, true; }));
  EXPECT_TRUE(lock.owns_lock());
  EXPECT_EQ(checks, 2);
}

TEST(Wait, ADefaultTokenWaitsForThePredicate) {
  Shared shared;
  auto waited = shared.start_waiter(CancellationToken());
  ASSERT_TRUE(shared.until_checked(1));
  shared.make_ready();
  ASSERT_TRUE(ready_within_guard(waited)) << "the notify did not wake the waiter";
  const Shared::Outcome outcome = waited.get();
  EXPECT_TRUE(outcome.result);
  EXPECT_TRUE(outcome.owned_lock);
}

// Three kinds of round. The cancellation races the wait's start; the same
// with the waiter's mutex held, which the wake-up must not need; and it
// lands while the predicate runs or just after it found false, the window
// where checking the token and then calling cv.wait() loses the notify. For
// the third kind both sides spin, so that each is running when the other
// acts: the window is a few instructions wide.
TEST(Wait, CancellationRacingTheWaitsEntryNeverHangs) {
  std::mutex mutex;
  std::condition_variable_any cv;
  CancellationSource source;
  CancellationToken token;
  std::barrier start(2, [&]() noexcept {
    source = CancellationSource();
    token = source.token();
  });
  // Relaxed, both: each holds a round number and publishes nothing else.
  std::atomic<int> canceller_spinning{-1};
  std::atomic<int> predicate_checked{-1};
  std::atomic<int> rounds_done{0};
  auto waiter = std::async(std::launch::async, [&] {
    int returned_true = 0;
    for (int round = 0; round < kRaceRounds; ++round) {
      start.arrive_and_wait();
      std::unique_lock lock(mutex);
      bool first_check = true;
      // Never true: only the cancellation can end the wait.
      const auto never = [&] {
        if (round % 3 == 2 && std::exchange(first_check, false)) {
          while (canceller_spinning.load(std::memory_order_relaxed) != round) {
          }
          predicate_checked.store(round, std::memory_order_relaxed);
          // Up to a few microseconds: the request lands from well inside
          // the predicate to past its end.
          spin(round / 3 % 64 * 128);
        }
        return false;
      };
      if (wait(cv, lock, token, never)) ++returned_true;
      if (!lock.owns_lock()) ++returned_true;
      rounds_done.store(round + 1, std::memory_order_relaxed);  // a count; orders nothing
    }
    return returned_true;
  });
  auto canceller = std::async(std::launch::async, [&] {
    for (int round = 0; round < kRaceRounds; ++round) {
      start.arrive_and_wait();
      switch (round % 3) {
        case 0:
          stagger(round);
          source.request_cancel();
          break;
        case 1: {
          stagger(round);
          std::lock_guard lock(mutex);
          source.request_cancel();
          break;
        }
        case 2:
          canceller_spinning.store(round, std::memory_order_relaxed);
          while (predicate_checked.load(std::memory_order_relaxed) != round) {
          }
          source.request_cancel();
          break;
      }
    }
  });
  abort_if_a_round_hangs(waiter, rounds_done, "wait racing request_cancel");
  canceller.get();
  EXPECT_EQ(waiter.get(), 0);
}

}  // namespace
}  // namespace quell
