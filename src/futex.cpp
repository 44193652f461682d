#include "quell/detail/futex.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <limits>

namespace quell::detail {
namespace {

long futex(const std::atomic<std::uint32_t>& word, int op, std::uint32_t value,
           const timespec* timeout, std::uint32_t mask) noexcept {
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
  return syscall(SYS_futex, reinterpret_cast<const std::uint32_t*>(&word), op, value, timeout,
                 nullptr, mask);
}

}  // namespace

void futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected) noexcept {
  futex(word, FUTEX_WAIT_PRIVATE, expected, nullptr, 0);
}

bool futex_wait_until(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                      std::chrono::steady_clock::time_point deadline) noexcept {
  // steady_clock is CLOCK_MONOTONIC on Linux: FUTEX_WAIT_BITSET takes an
  // absolute time on that clock.
  // time_point::max() (a wait with no deadline) is about 9.2e9 s: it fits a
  // 64-bit time_t, and the kernel saturates a time past its own range. A
  // 32-bit time_t would wrap it to the past, so clamp to the latest second
  // it holds.
  const auto since_epoch = deadline.time_since_epoch();
  if (since_epoch.count() < 0) return false;
  const auto secs = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
  const auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(since_epoch - secs);
  constexpr auto kMaxSecs = std::numeric_limits<time_t>::max();
  const timespec at{
      secs.count() > kMaxSecs ? kMaxSecs : static_cast<time_t>(secs.count()),
      static_cast<long>(nanos.count()),
  };
  if (futex(word, FUTEX_WAIT_BITSET_PRIVATE, expected, &at, FUTEX_BITSET_MATCH_ANY) == -1 &&
      errno == ETIMEDOUT) {
    return false;
  }
  return true;
}

void futex_wake(const std::atomic<std::uint32_t>& word, int count) noexcept {
  futex(word, FUTEX_WAKE_PRIVATE, static_cast<std::uint32_t>(count), nullptr, 0);
}

}  // namespace quell::detail
