#pragma once

// A lock for critical sections of a few instructions (the injection queue's
// list splices): one CAS to take it and one exchange to free it when nobody
// waits, a short spin when it is held, and a futex sleep after that, so a
// holder preempted by the scheduler costs the others a sleep, not a spun-out
// time slice.
//
// The word is Drepper's three-state mutex ("Futexes Are Tricky", 2011,
// mutex 3): kFree, kLocked (no sleeper), kContended (a sleeper may exist).
//
// Invariants
//   L1  Only the holder stores kFree, and only in unlock().
//   L2  A thread sleeps only on kContended, which it stored itself or saw;
//       the unlock that replaces kContended wakes one sleeper. A woken thread
//       takes the lock as kContended, so it wakes the next in turn: no
//       sleeper is left behind (it may cost one spare wake-up).
//
// Ordering: lock() acquires and unlock() releases: everything written under
// the lock happens-before the next holder's critical section.
//
// Thread safety: thread-safe. Not recursive.

#include <atomic>
#include <cstdint>

#include "quell/detail/config.hpp"
#include "quell/detail/futex.hpp"

namespace quell::detail {

class ShortLock {
 public:
  void lock() noexcept {
    std::uint32_t expected = kFree;
    // Acquire: pairs with unlock()'s release exchange; the guarded data is ours.
    if (word_.compare_exchange_strong(expected, kLocked, std::memory_order_acquire,
                                      std::memory_order_relaxed)) {
      return;
    }
    lock_contended();
  }

  void unlock() noexcept {
    // Release: publishes the critical section to the next lock()'s acquire (L1).
    if (word_.exchange(kFree, std::memory_order_release) == kContended) futex_wake(word_, 1);
  }

 private:
  static constexpr std::uint32_t kFree = 0;
  static constexpr std::uint32_t kLocked = 1;
  static constexpr std::uint32_t kContended = 2;
  static constexpr int kSpins = 64;

  void lock_contended() noexcept {
    for (int i = 0; i < kSpins; ++i) {
      cpu_relax();
      std::uint32_t expected = kFree;
      // Relaxed test first: spin on a shared copy of the line, not with CASes.
      if (word_.load(std::memory_order_relaxed) == kFree &&
          word_.compare_exchange_weak(expected, kLocked, std::memory_order_acquire,
                                      std::memory_order_relaxed)) {
        return;
      }
    }
    // Acquire, as lock(). Marking kContended before sleeping makes the holder's
    // unlock() wake us (L2).
    while (word_.exchange(kContended, std::memory_order_acquire) != kFree) {
      futex_wait(word_, kContended);
    }
  }

  std::atomic<std::uint32_t> word_{kFree};
};

}  // namespace quell::detail
