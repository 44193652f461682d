#include "quell/wait.hpp"

#include <atomic>
#include <cstdint>

#include "quell/detail/clock.hpp"
#include "quell/detail/futex.hpp"

namespace quell {
namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

bool sleep_until(Clock::time_point deadline, const CancellationToken& token) {
  if (token.cancelled()) return false;
  if (Clock::now() >= deadline) return true;

  // 0 while the sleep goes on, 1 once the token's callback ran. On the stack:
  // ~CancellationCallback() below waits for a callback still running.
  std::atomic<std::uint32_t> woken{0};
  CancellationCallback wake(token, [&woken]() noexcept {
    // Release: pairs with the acquire loads below, so what preceded the
    // request_cancel() happens-before a return of false. Stored before the
    // wake, so a wait that begins after it sees 1 and returns at once.
    woken.store(1, std::memory_order_release);
    detail::futex_wake_all(woken);
  });
  // Acquire: pairs with the callback's release store.
  while (woken.load(std::memory_order_acquire) == 0) {
    // False only when the kernel reports the deadline: a wake or a spurious
    // return goes round again. A cancellation racing the deadline wins if
    // its store is visible by the check below.
    if (!detail::futex_wait_until(woken, 0, deadline)) {
      return woken.load(std::memory_order_acquire) == 0;  // as the loop's load
    }
  }
  return false;
}

bool sleep_for(Clock::duration duration, const CancellationToken& token) {
  return sleep_until(detail::saturating_add(Clock::now(), duration), token);
}

}  // namespace quell
