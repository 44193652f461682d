#include "quell/detail/futex.hpp"

// QUELL_FUTEX comes from src/meson.build: 1 where Linux futexes are (and the
// futex option allows them), 0 for the std::atomic fallback.
#ifndef QUELL_FUTEX
#error "QUELL_FUTEX is set by src/meson.build"
#endif

#if QUELL_FUTEX

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

#else  // !QUELL_FUTEX

#include <array>
#include <condition_variable>
#include <mutex>

#include "quell/detail/config.hpp"

// The fallback: a table of buckets keyed by the word's address, each with an
// atomic for std::atomic::wait and a condition variable. std::atomic::wait
// alone cannot stand in for a futex, for two reasons:
//  - A futex wake returns its sleeper even if the word is back at the value
//    it slept on by then; std::atomic::wait compares again and goes back to
//    sleep. task_wait_or_stop() (src/pool_waits.cpp) relies on the former: a
//    stop clears a waiting bit that another waiter may set again at once.
//    So an untimed sleeper waits on its bucket's generation, which every
//    wake of the bucket changes, not on the word.
//  - std::atomic::wait has no timeout. A timed sleeper waits on its bucket's
//    condition variable, until the deadline.
//
// Invariants
//   P1  No lost wake-up. A sleeper counts itself in its bucket, issues a
//       seq_cst fence, then compares the word; a waker, after the store the
//       caller made before calling, issues a seq_cst fence, then reads the
//       counts. The fences come one way or the other in the single total
//       order of seq_cst operations:
//        - the waker's first: the sleeper's compare sees the store, and it
//          does not sleep;
//        - the sleeper's first: the waker sees the count and wakes the
//          bucket. An untimed sleeper read the generation after its fence:
//          either before the waker's bump, and its wait returns once the
//          generation changes; or the bump itself (acquire, from the release
//          bump), and then the store happens-before its compare, which sees
//          it. A timed sleeper holds the bucket's mutex from its count until
//          the condition variable's wait releases it; the waker takes the
//          mutex before it notifies, so by then the sleeper is in the wait
//          (or gone).
//   P2  A wake reads no memory at the word's address, only its bucket's: a
//       wake after the word was freed is a stray wake-up, as with a futex
//       (W3 in wait_count.hpp).
//   P3  A wake wakes every sleeper of the bucket, whatever its word, and
//       ignores the count: the bucket is shared by every word that hashes to
//       it, so waking fewer could pick the wrong sleeper. The others return
//       spuriously, which the contract allows; the cost is a herd where a
//       futex would wake one.

namespace quell::detail {
namespace {

using Clock = std::chrono::steady_clock;

struct alignas(kCacheLine) Bucket {
  std::atomic<std::uint32_t> untimed{0};     // sleepers in futex_wait()
  std::atomic<std::uint32_t> generation{0};  // bumped by wakes; untimed sleepers wait on it
  std::atomic<std::uint32_t> timed{0};       // sleepers in futex_wait_until(); written under mutex
  std::mutex mutex;                          // a timed sleeper's compare-and-sleep
  std::condition_variable cv;                // timed sleepers wait here
};

constexpr int kBucketBits = 6;

Bucket& bucket_for(const void* address) noexcept {
  // Built on first use (a pool may run in another library's static
  // initialiser) and never destroyed (or a thread that waits or wakes during
  // static destruction would find it gone).
  union Table {
    Table() : buckets() {}
    ~Table() {}
    std::array<Bucket, std::size_t{1} << kBucketBits> buckets;
  };
  static Table table;
  // Fibonacci hashing: the multiply mixes the address's middle bits (words
  // are 4-byte aligned) into the top bits, which pick the bucket.
  const auto key = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(address));
  return table.buckets[(key * 0x9E3779B97F4A7C15u) >> (64 - kBucketBits)];
}

// The longest a timed sleeper waits before it returns (spuriously, which
// its caller absorbs). A deadline near time_point::max() would overflow in a
// standard library that converts it to another clock for its wait.
constexpr std::chrono::hours kLongestSleep{1};

}  // namespace

void futex_wait(const std::atomic<std::uint32_t>& word, std::uint32_t expected) noexcept {
  Bucket& bucket = bucket_for(&word);
  // Relaxed: ordered by the fence that follows (P1).
  bucket.untimed.fetch_add(1, std::memory_order_relaxed);
  // Seq_cst: pairs with the fence in futex_wake() (P1).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // Acquire: pairs with futex_wake()'s release bump; having read a bump, the
  // compare below sees the store made before it (P1).
  const std::uint32_t generation = bucket.generation.load(std::memory_order_acquire);
  // Relaxed, as the kernel's compare: callers load the word again.
  if (word.load(std::memory_order_relaxed) == expected) {
    // Acquire: pairs with the release bump that ends the wait, so the
    // waker's store happens-before our return and the caller's reload.
    bucket.generation.wait(generation, std::memory_order_acquire);
  }
  // Relaxed: leaving publishes nothing; a waker that still counts us only
  // wakes the bucket for nothing.
  bucket.untimed.fetch_sub(1, std::memory_order_relaxed);
}

bool futex_wait_until(const std::atomic<std::uint32_t>& word, std::uint32_t expected,
                      Clock::time_point deadline) noexcept {
  // As the kernel: a word that differs returns at once, even past the
  // deadline. Relaxed, as the kernel's compare: callers load the word again.
  if (word.load(std::memory_order_relaxed) != expected) return true;
  const auto now = Clock::now();
  if (now >= deadline) return false;
  const auto until = deadline - now > kLongestSleep ? now + kLongestSleep : deadline;
  Bucket& bucket = bucket_for(&word);
  {
    std::unique_lock lock(bucket.mutex);
    // Relaxed: ordered by the fence that follows, and written under the
    // mutex, which the waker takes before it notifies (P1).
    bucket.timed.fetch_add(1, std::memory_order_relaxed);
    // Seq_cst: pairs with the fence in futex_wake() (P1).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // Relaxed, as above. A wake, a spurious return or the time ends the wait.
    if (word.load(std::memory_order_relaxed) == expected) bucket.cv.wait_until(lock, until);
    // Relaxed: leaving publishes nothing.
    bucket.timed.fetch_sub(1, std::memory_order_relaxed);
  }
  // The clock decides, not how the wait ended: false exactly when the
  // deadline has passed, true (a wake, or a spurious return) before it.
  return Clock::now() < deadline;
}

void futex_wake(const std::atomic<std::uint32_t>& word, int /*count: P3*/) noexcept {
  Bucket& bucket = bucket_for(&word);
  // Seq_cst: pairs with each sleeper's fence; the caller's store comes
  // before it (P1).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  // Relaxed: the fences order these loads against the sleepers' counts (P1).
  if (bucket.untimed.load(std::memory_order_relaxed) != 0) {
    // Release: pairs with the untimed sleepers' acquire loads and waits of
    // the generation (P1).
    bucket.generation.fetch_add(1, std::memory_order_release);
    bucket.generation.notify_all();
  }
  if (bucket.timed.load(std::memory_order_relaxed) != 0) {
    // Empty critical section: a timed sleeper between its compare and its
    // wait holds the mutex, so once we have had it, it is in the wait (P1).
    { std::lock_guard lock(bucket.mutex); }
    bucket.cv.notify_all();
  }
}

}  // namespace quell::detail

#endif  // QUELL_FUTEX
