#pragma once

// Blocking on a 32-bit atomic, with a deadline: what std::atomic::wait does
// not offer. Linux futexes; elsewhere (or built with -Dfutex=disabled) a
// table of std::atomic waits and condition variables with the same contract
// (src/futex.cpp). The wake side must be futex_wake(), not
// std::atomic::notify_*(), which skips the system call when it has no waiter
// of its own and reaches no sleeper of the fallback.
//
// Thread safety: thread-safe.

#include <atomic>
#include <chrono>
#include <cstdint>

namespace quell::detail {

// Sleeps while *word == expected, until woken or (for the second form) until
// `deadline` passes. May return spuriously: callers re-check. Returns false
// only when the deadline passed.
void futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected) noexcept;
bool futex_wait_until(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                      std::chrono::steady_clock::time_point deadline) noexcept;

// Wakes up to `count` threads sleeping on `word`.
inline constexpr int kWakeAll = 0x7FFFFFFF;
void futex_wake(const std::atomic<std::uint32_t>& word, int count) noexcept;
inline void futex_wake_all(const std::atomic<std::uint32_t>& word) noexcept {
  futex_wake(word, kWakeAll);
}

}  // namespace quell::detail
