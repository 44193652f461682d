// Races of the combinators (API.md §10.4, R21-R25), each run for thousands
// of rounds, under the sanitizers too. Children end on different workers
// after busy waits of their own lengths, and the main thread cancels the
// root after one of its own, so each decision (who wins, which failure is
// first, value or deadline, parent or child) is taken both ways across the
// rounds. Every outcome is checked exactly, per round:
//   R23  two children ending together: one winner, its own value or
//        failure; both losers ended before the co_await resumes.
//   R22  two failures together: one of them is rethrown, and the sleeping
//        third child is cancelled with reason failure.
//   R22  values racing the parent's cancellation: the values, or
//        OperationCancelled; every child ended before the co_await resumes.
//   R25  a value racing the deadline: the value, or TaskError(timed_out)
//        with the child cancelled for reason deadline; never anything else.
//   R24  an awaitable racing its trigger: its value, or OperationCancelled;
//        both ended before the co_await resumes.
//   R40  a cancel shutdown racing a combinator: shutdown returns, the future
//        is ready with the values or OperationCancelled.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>

#include "quell/coro.hpp"
#include "quell/thread_pool.hpp"
#include "quell/when.hpp"
#include "../sanitized.hpp"
#include "progress_watchdog.hpp"

namespace quell {
namespace {

using namespace std::chrono_literals;

constexpr int kRounds = test::kSanitized ? 5000 : 10000;
constexpr std::size_t kWorkers = 3;

class Watchdog : public test::ProgressWatchdog {
 public:
  Watchdog() : ProgressWatchdog(std::chrono::seconds(90)) {}
};

// A busy wait of `ns` nanoseconds, to shift one racer against the others
// (never to order anything: every outcome is checked).
void spin(unsigned ns) {
  if (ns == 0) return;
  const auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(ns);
  while (std::chrono::steady_clock::now() < until) {
  }
}

// Spin lengths that sweep 0-20 µs in a different order for each racer.
unsigned shift(int round, unsigned salt) {
  return static_cast<unsigned>((static_cast<unsigned>(round) * 2654435761u + salt * 40503u) %
                               20000u);
}

// Counts the children alive: up as a child starts, down as its frame's
// locals die. Zero at a combinator's resumption means every child ended.
struct Alive {
  // Default (seq_cst) order: the parent reads it after the join, which
  // orders every child's end before the co_await resumes.
  std::atomic<int> count{0};
  struct Guard {
    Alive* alive;
    explicit Guard(Alive* a) : alive(a) { alive->count.fetch_add(1); }
    ~Guard() { alive->count.fetch_sub(1); }
  };
};

// How often each side of a race won, printed at the end of a test: a race
// that always goes one way tests only that way.
struct Outcomes {
  const char* first_name;
  const char* second_name;
  int first = 0;
  int second = 0;
  Outcomes(const char* a, const char* b) : first_name(a), second_name(b) {}
  ~Outcomes() { std::printf("    %s: %d, %s: %d\n", first_name, first, second_name, second); }
};

// The root's outcome: `expected`, counted first, or an Error, counted
// second and returned for the caller's checks.
template <class Error, class T>
std::optional<Error> value_or(Future<T>& future, const T& expected, Outcomes& outcomes, int round) {
  try {
    EXPECT_EQ(future.get(), expected) << "round " << round;
    ++outcomes.first;
    return std::nullopt;
  } catch (const Error& e) {
    ++outcomes.second;
    return e;
  }
}

// Yields (so it runs as a resumed child too), spins, then gives `value`,
// or throws `value` as a message when `fail`.
Task<int> after(Alive* alive, unsigned ns, int value, bool fail = false) {
  Alive::Guard guard(alive);
  co_await yield();
  spin(ns);
  if (fail) throw std::runtime_error(std::to_string(value));
  co_return value;
}

// Sleeps until cancelled and records the reason.
Task<int> sleeper(Alive* alive, std::atomic<int>* reason) {
  Alive::Guard guard(alive);
  Result<void> slept = co_await as_result(sleep_for(1h));
  const CancellationToken& token = co_await this_coro::cancellation_token;
  reason->store(static_cast<int>(token.reason()));
  if (!slept.has_value()) co_yield quell::cancelled;
  co_return 0;
}

TEST(WhenStress, TwoChildrenEndingTogetherHaveOneWinnerAndTheLoserIsJoined) {
  ThreadPool pool(kWorkers);
  Watchdog watchdog;
  Outcomes outcomes("first won", "second won");
  for (int round = 0; round < kRounds; ++round) {
    Alive alive;
    int alive_at_resume = -1;
    const bool second_fails = round % 4 == 3;
    auto future = pool.submit(co_invoke([&]() -> Task<std::variant<int, int>> {
      auto r = co_await as_result(when_any(after(&alive, shift(round, 1), 1),
                                           after(&alive, shift(round, 2), 2, second_fails)));
      alive_at_resume = alive.count.load();
      co_return std::move(r).value();
    }));
    try {
      const std::variant<int, int> winner = future.get();
      ASSERT_EQ(winner.index() == 0 ? std::get<0>(winner) : std::get<1>(winner),
                static_cast<int>(winner.index()) + 1)
          << "round " << round;
      ++(winner.index() == 0 ? outcomes.first : outcomes.second);
    } catch (const std::runtime_error& e) {
      ++outcomes.second;
      ASSERT_TRUE(second_fails) << "round " << round;
      ASSERT_STREQ(e.what(), "2") << "round " << round;
    }
    ASSERT_EQ(alive_at_resume, 0) << "round " << round;
    watchdog.tick();
  }
}

TEST(WhenStress, TwoFailuresTogetherRethrowOneAndCancelTheRestWithReasonFailure) {
  ThreadPool pool(kWorkers);
  Watchdog watchdog;
  Outcomes outcomes("first failed first", "second failed first");
  for (int round = 0; round < kRounds; ++round) {
    Alive alive;
    std::atomic<int> reason{-1};
    int alive_at_resume = -1;
    auto future = pool.submit(co_invoke([&]() -> Task<int> {
      auto r = co_await as_result(when_all(after(&alive, shift(round, 3), 1, true),
                                           after(&alive, shift(round, 4), 2, true),
                                           sleeper(&alive, &reason)));
      alive_at_resume = alive.count.load();
      auto [a, b, c] = std::move(r).value();
      co_return a + b + c;
    }));
    try {
      future.get();
      FAIL() << "no failure, round " << round;
    } catch (const std::runtime_error& e) {
      const std::string what = e.what();
      ASSERT_TRUE(what == "1" || what == "2") << what << ", round " << round;
      ++(what == "1" ? outcomes.first : outcomes.second);
    }
    ASSERT_EQ(alive_at_resume, 0) << "round " << round;
    ASSERT_EQ(reason.load(), static_cast<int>(CancelReason::failure)) << "round " << round;
    watchdog.tick();
  }
}

TEST(WhenStress, ValuesRacingTheParentsCancellationGiveValuesOrCancelled) {
  ThreadPool pool(kWorkers);
  Watchdog watchdog;
  Outcomes outcomes("values", "cancelled");
  for (int round = 0; round < kRounds; ++round) {
    Alive alive;
    int alive_at_resume = -1;
    CancellationSource source;
    auto future = pool.submit(co_invoke([&]() -> Task<int> {
      auto r = co_await as_result(when_all(after(&alive, shift(round, 5), 1),
                                           after(&alive, shift(round, 6), 2)));
      alive_at_resume = alive.count.load();
      auto [a, b] = std::move(r).value();
      co_return a * 10 + b;
    }), TaskOptions().set_cancellation(source.token()));
    spin(shift(round, 7));
    source.request_cancel();
    value_or<OperationCancelled>(future, 12, outcomes, round);
    // A root dropped before it started has no resumption to look at.
    ASSERT_TRUE(alive_at_resume == 0 || alive_at_resume == -1) << "round " << round;
    ASSERT_EQ(alive.count.load(), 0) << "round " << round;
    watchdog.tick();
  }
  EXPECT_EQ(outcomes.first + outcomes.second, kRounds);
}

TEST(WhenStress, AValueRacingTheDeadlineIsKeptOrTheAwaitTimesOut) {
  ThreadPool pool(kWorkers);
  Watchdog watchdog;
  Outcomes outcomes("values", "timed out");
  for (int round = 0; round < kRounds; ++round) {
    std::atomic<int> reason{-1};
    const auto nap = std::chrono::microseconds(round % 40);
    auto future = pool.submit(co_invoke([&]() -> Task<int> {
      co_return co_await with_timeout(
          [](std::chrono::microseconds d, std::atomic<int>* why) -> Task<int> {
            Result<void> slept = co_await as_result(sleep_for(d));
            if (!slept.has_value()) {
              const CancellationToken& token = co_await this_coro::cancellation_token;
              why->store(static_cast<int>(token.reason()));
              co_yield quell::cancelled;
            }
            co_return 7;
          }(nap, &reason),
          20us);
    }));
    if (const auto error = value_or<TaskError>(future, 7, outcomes, round)) {
      ASSERT_EQ(error->code(), make_error_code(Errc::timed_out)) << "round " << round;
      ASSERT_EQ(reason.load(), static_cast<int>(CancelReason::deadline)) << "round " << round;
    }
    watchdog.tick();
  }
}

TEST(WhenStress, AnAwaitableRacingItsTriggerGivesItsValueOrCancelled) {
  ThreadPool pool(kWorkers);
  Watchdog watchdog;
  Outcomes outcomes("values", "cancelled");
  for (int round = 0; round < kRounds; ++round) {
    Alive alive;
    int alive_at_resume = -1;
    auto future = pool.submit(co_invoke([&]() -> Task<int> {
      auto r = co_await as_result(stop_when(
          [](Alive* a, unsigned ns) -> Task<int> {
            Alive::Guard guard(a);
            co_await yield();
            spin(ns);
            co_await yield();  // the checkpoint where the trigger's cancel lands
            co_return 4;
          }(&alive, shift(round, 8)),
          after(&alive, shift(round, 9), 0)));
      alive_at_resume = alive.count.load();
      co_return std::move(r).value();
    }));
    value_or<OperationCancelled>(future, 4, outcomes, round);
    ASSERT_EQ(alive_at_resume, 0) << "round " << round;
    watchdog.tick();
  }
}

TEST(WhenStress, ACancelShutdownRacingACombinatorLeavesTheFutureReady) {
  Watchdog watchdog;
  const int rounds = kRounds / 4;  // a pool per round
  Outcomes outcomes("values", "cancelled");
  for (int round = 0; round < rounds; ++round) {
    Alive alive;
    ThreadPoolConfig config;
    config.thread_count = 2;
    config.shutdown_policy = ShutdownPolicy::cancel;
    ThreadPool pool(config);
    auto future = pool.submit(co_invoke([&]() -> Task<int> {
      auto [a, b] = co_await when_all(after(&alive, shift(round, 10), 1),
                                      [](Alive* al, std::chrono::microseconds d) -> Task<int> {
                                        Alive::Guard guard(al);
                                        co_await sleep_for(d);
                                        co_return 2;
                                      }(&alive, std::chrono::microseconds(round % 30)));
      co_return a + b;
    }));
    spin(shift(round, 11) * 10);  // 0-200 µs: a pool starting under a sanitizer is slow
    pool.shutdown();
    ASSERT_TRUE(future.ready()) << "round " << round;
    value_or<OperationCancelled>(future, 3, outcomes, round);
    ASSERT_EQ(alive.count.load(), 0) << "round " << round;
    watchdog.tick();
  }
}

}  // namespace
}  // namespace quell
