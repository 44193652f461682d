#include "quell/detail/futex.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <thread>

#include "../blocked_support.hpp"

namespace quell::detail {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr std::chrono::seconds kGuard{30};

TEST(Futex, WaitUntilAPassedDeadlineReportsTheDeadline) {
  std::atomic<std::uint32_t> word{0};
  EXPECT_FALSE(futex_wait_until(word, 0, Clock::now() - 1ms));
  EXPECT_FALSE(futex_wait_until(word, 0, Clock::time_point{}));
  EXPECT_FALSE(futex_wait_until(word, 0, Clock::time_point::min()));
}

TEST(Futex, WaitUntilASoonDeadlineSleepsUntilIt) {
  std::atomic<std::uint32_t> word{0};
  const auto deadline = Clock::now() + 5ms;
  // Spurious returns are allowed; only the deadline ends the loop.
  while (futex_wait_until(word, 0, deadline)) {
  }
  EXPECT_GE(Clock::now(), deadline);
}

TEST(Futex, WaitUntilAValueThatDiffersReturnsAtOnce) {
  std::atomic<std::uint32_t> word{1};
  EXPECT_TRUE(futex_wait_until(word, 0, Clock::time_point::max()));
}

// time_point::max() stands for "no deadline": the absolute time handed to
// the kernel must not wrap into the past (which would report the deadline
// at once) nor be rejected (which would return at once, every time).
TEST(Futex, WaitUntilTheLargestTimePointSleepsUntilWoken) {
  std::atomic<std::uint32_t> word{0};
  std::atomic<pid_t> sleeper_tid{0};
  auto sleeper = std::async(std::launch::async, [&] {
    sleeper_tid.store(test::current_tid(), std::memory_order_relaxed);  // the id is the message
    int deadline_reports = 0;
    // Acquire: pairs with the release store below, which precedes the wake.
    while (word.load(std::memory_order_acquire) == 0 && deadline_reports == 0) {
      if (!futex_wait_until(word, 0, Clock::time_point::max())) ++deadline_reports;
    }
    return deadline_reports;
  });
  pid_t tid = 0;
  while ((tid = sleeper_tid.load(std::memory_order_relaxed)) == 0) std::this_thread::yield();
  const auto gone = [&] { return sleeper.wait_for(0s) == std::future_status::ready; };
  // Asleep here means inside the futex wait with the largest deadline. If the
  // thread returns instead, the check on get() below says why.
  EXPECT_TRUE(test::wait_until_sleeping(tid, gone, kGuard) || gone());

  word.store(1, std::memory_order_release);  // pairs with the sleeper's loop condition
  futex_wake_all(word);
  ASSERT_EQ(sleeper.wait_for(kGuard), std::future_status::ready) << "not woken";
  EXPECT_EQ(sleeper.get(), 0) << "the largest time point was taken for a passed deadline";
}

// A wake returns its sleeper even when the word still holds the value it
// slept on: task_wait_or_stop() wakes a waiter whose waiting bit another
// waiter may have set again. std::atomic::wait alone would sleep on, so the
// fallback of src/futex.cpp must keep this too.
bool woken_with_the_word_unchanged(bool timed) {
  std::atomic<std::uint32_t> word{0};
  std::atomic<pid_t> sleeper_tid{0};
  auto sleeper = std::async(std::launch::async, [&] {
    sleeper_tid.store(test::current_tid(), std::memory_order_relaxed);  // the id is the message
    if (timed) return futex_wait_until(word, 0, Clock::time_point::max());
    futex_wait(word, 0);
    return true;
  });
  pid_t tid = 0;
  while ((tid = sleeper_tid.load(std::memory_order_relaxed)) == 0) std::this_thread::yield();
  const auto gone = [&] { return sleeper.wait_for(0s) == std::future_status::ready; };
  // A spurious return before the wake is allowed: then there is nothing to wake.
  EXPECT_TRUE(test::wait_until_sleeping(tid, gone, kGuard) || gone());
  futex_wake_all(word);
  if (sleeper.wait_for(kGuard) != std::future_status::ready) {
    // Not woken: end the sleep by changing the word, so the test can report.
    word.store(1, std::memory_order_relaxed);
    futex_wake_all(word);
    return false;
  }
  return sleeper.get();
}

TEST(Futex, AWakeReturnsASleeperWhoseWordStillHoldsItsValue) {
  EXPECT_TRUE(woken_with_the_word_unchanged(false));
}

TEST(Futex, AWakeReturnsATimedSleeperWhoseWordStillHoldsItsValue) {
  EXPECT_TRUE(woken_with_the_word_unchanged(true));
}

}  // namespace
}  // namespace quell::detail
