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

// `d` in the steady clock's units, clamped to its range: hours::max() or a
// huge floating-point duration means "never", not an overflow. The bounds
// are compared in long double, where every std duration fits.
template <class Rep, class Period>
constexpr std::chrono::steady_clock::duration saturating_duration(
    std::chrono::duration<Rep, Period> d) noexcept {
  using Target = std::chrono::steady_clock::duration;
  using Wide = std::chrono::duration<long double, Target::period>;
  const Wide wide = std::chrono::duration_cast<Wide>(d);
  if (wide != wide) return Target::zero();  // NaN: no time at all
  if (wide >= Wide(Target::max())) return Target::max();
  if (wide <= Wide(Target::min())) return Target::min();
  return std::chrono::duration_cast<Target>(d);
}

}  // namespace quell::detail
