#pragma once

// A count of things in flight that threads can wait to reach zero: a group's
// or scope's pending tasks, a periodic task's tick in flight.
//
// Word: count << 3 | kCoroWaiting | kWorkerWaiting | kThreadWaiting.
//
// Invariants
//   W1  The count is changed only by add() (by someone already counted, or
//       the owner) and done(); it never goes below zero.
//   W2  A waiter sets its bit before it sleeps, and sleeps only on a word
//       whose count is non-zero; the done() that reaches zero clears both
//       bits and wakes whoever they name. A done() changes the word, so a
//       futex sleep on the old word returns: no lost wake-up.
//   W4  kCoroWaiting says a coroutine waits (co_await scope.join()):
//       coro_waiter_ is written before the bit is set (release), and read
//       by the done() that reaches zero, before its CAS, only if the word it
//       acquired has the bit; that done() fires it. Joins are owning, so a
//       coroutine never takes its waiter back.
//   W3  done() touches the object only through its one CAS (and the read of
//       coro_waiter_ before it, W4). What follows may
//       run after a waiter saw zero and freed the object: futex_wake() keys a
//       private futex on the address alone and reads no memory (a stray
//       wake-up at worst, which every futex waiter tolerates), and the
//       worker wake-up goes to the pool, which outlives the object.
//
// Ordering: done()'s CAS is a release and the waiter's load an acquire, so
// everything a finisher did before done() happens-before the waiter's return.

#include <atomic>
#include <cstdint>

#include "quell/detail/futex.hpp"
#include "quell/detail/task.hpp"

namespace quell::detail {

class PoolCore;
class WaitCount;

// Wakes the pool's workers that wait (helping) for a count.
void pool_wake_helpers(PoolCore* pool) noexcept;
// Until the count is zero. A worker of `pool` runs queued tasks of `family`
// meanwhile (the counted work, and the work it submitted), and no other.
void wait_count_zero(const WaitCount& count, PoolCore* pool, TaskId family);

class WaitCount {
 public:
  static constexpr std::uint32_t kThreadWaiting = 1;
  static constexpr std::uint32_t kWorkerWaiting = 2;
  static constexpr std::uint32_t kCoroWaiting = 4;
  static constexpr std::uint32_t kOne = 8;

  std::uint32_t count() const noexcept {
    // Acquire: pairs with done()'s release; a zero says the work is visible.
    return word_.load(std::memory_order_acquire) / kOne;
  }

  void add() noexcept {
    // Relaxed: the adder is counted already (or is the owner), so the count
    // cannot reach zero in between; the add publishes nothing.
    word_.fetch_add(kOne, std::memory_order_relaxed);
  }

  // `pool` is read by the caller before the decrement (W3).
  void done(PoolCore* pool) noexcept {
    // Acquire (and on the CAS's failure): a word with kCoroWaiting carries
    // coro_waiter_ (W4).
    std::uint32_t word = word_.load(std::memory_order_acquire);
    std::uint32_t next = 0;
    CoroWaiter* waiter = nullptr;
    do {
      next = word - kOne;
      if (next < kOne) next = 0;  // reaching zero clears the waiter bits (W2)
      waiter = next == 0 && (word & kCoroWaiting) != 0 ? coro_waiter_ : nullptr;
      // Release: publishes the finisher's work to a waiter that sees zero.
    } while (!word_.compare_exchange_weak(word, next, std::memory_order_acq_rel,
                                          std::memory_order_acquire));
    if (next != 0) return;
    if (waiter != nullptr) waiter->fire(waiter);  // W4
    if ((word & kThreadWaiting) != 0) futex_wake_all(word_);  // W3: no memory read
    if ((word & kWorkerWaiting) != 0) pool_wake_helpers(pool);
  }

  // Sets `bit` unless the count is zero; false if it is (W2).
  bool arm(std::uint32_t bit, std::uint32_t& word) const noexcept {
    word = word_.load(std::memory_order_acquire);  // acquire: as count()
    while (word >= kOne && (word & bit) == 0) {
      // Acquire on failure too: a zero we read next must carry done()'s work.
      // Release: coro_waiter_, written before, reaches done() (W4).
      if (word_.compare_exchange_weak(word, word | bit, std::memory_order_acq_rel,
                                      std::memory_order_acquire)) {
        word |= bit;
        return true;
      }
    }
    return word >= kOne;
  }

  // A coroutine's wait: false if the count is zero already (W4).
  bool arm_coroutine(CoroWaiter* waiter) noexcept {
    coro_waiter_ = waiter;
    std::uint32_t word = 0;
    return arm(kCoroWaiting, word);  // arm()'s CAS releases coro_waiter_ (W4)
  }

  // A thread that is not a worker of the pool: sleeps until zero.
  void block() const noexcept {
    std::uint32_t word = 0;
    while (arm(kThreadWaiting, word)) futex_wait(word_, word);
  }

 private:
  mutable std::atomic<std::uint32_t> word_{0};
  CoroWaiter* coro_waiter_ = nullptr;  // W4
};

}  // namespace quell::detail
