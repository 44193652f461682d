#pragma once

// Time arithmetic that cannot overflow: a timeout or delay of
// duration::max() means "never", not a wrap into the past.

#include <chrono>

namespace quell::detail {

// `at` + `delay`, saturated to the clock's range.
inline std::chrono::steady_clock::time_point saturating_add(
    std::chrono::steady_clock::time_point at, std::chrono::steady_clock::duration delay) noexcept {
  using Clock = std::chrono::steady_clock;
  const Clock::duration since_epoch = at.time_since_epoch();
  if (delay > Clock::duration::zero() &&
      since_epoch > Clock::time_point::max().time_since_epoch() - delay) {
    return Clock::time_point::max();
  }
  if (delay < Clock::duration::zero() &&
      since_epoch < Clock::time_point::min().time_since_epoch() - delay) {
    return Clock::time_point::min();
  }
  return at + delay;
}

}  // namespace quell::detail
