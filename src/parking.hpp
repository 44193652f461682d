#pragma once

// Where idle workers sleep: an event count (a "parking lot").
//
// A worker that found no work:
//
//   key = prepare_wait();        // sleepers += 1; seq_cst fence;
//                                // key = epoch; clear the pending wake
//   if (work is visible now) cancel_wait();   // re-check every queue
//   else commit_wait(key);       // sleep while epoch == key
//
// A thread that made work visible calls notify_one() (or notify_all()):
//
//   seq_cst fence; if sleepers > 0: epoch += 1 (release), wake one
//
// No lost wake-up: the two fences are ordered one way or the other in the
// single total order of seq_cst operations.
//  - The worker's fence first: the notifier's load sees sleepers > 0 and
//    bumps the epoch. If the worker read the epoch before the bump, its wait
//    returns at once or is woken. If it read the bump itself (acquire, from
//    the release bump), everything before the notifier's fence happens-before
//    the worker's re-check, which therefore sees the work.
//  - The notifier's fence first: everything before it is visible to the loads
//    that follow the worker's fence, so the re-check sees the work.
// The one gap is 2^32 bumps between reading the epoch and sleeping, which no
// real schedule produces (each bump is a system call).
//
// A sleeper can wake without work (a bump meant for someone else); callers
// loop, so that costs only a retry.
//
// One wake at a time: a notifier that finds a wake already pending (issued,
// and the woken worker not yet back) does not issue another; the system call
// is paid once per idle-to-busy transition, not once per submission. Every
// worker leaving a wait (woken or not) clears the flag with an exchange that
// reads the notifier's exchange, so what the notifier published
// happens-before that worker's next look at the queues, and the worker finds
// the work the skipped notify was for. A worker that leaves a wait and then
// runs a task (or returns to one) instead of looking further calls
// notify_one() first, passing the wake on: the work behind it may need
// another worker. prepare_wait() clears the flag too, before its re-check:
// a notifier that read sleepers > 0 just before the last sleeper left may set
// the flag after that sleeper's exchange, with no wake really in flight; the
// next worker to prepare a wait clears it again (and re-checks the queues),
// so the flag cannot stay set while every worker sleeps.
//
// Searching workers (the "spinning thread" rule of Go's and Tokio's
// schedulers): at most kMaxSearching workers spin looking for work at once,
// between begin_search() and end_search(); the others park at once, so a
// spinning worker never takes a core from a thread that produces work. While
// one searches, notify_one() wakes nobody: a submission costs no system call
// while a worker is awake to find it. No lost wake-up, because a searcher
// that stops calls end_search() before the fence of whatever comes next:
//  - it parks: prepare_wait()'s fence and re-check, as above. If the
//    notifier's fence came first, the re-check sees the work; otherwise the
//    notifier's load sees the searcher gone and wakes a sleeper.
//  - it found a task: the caller issues found_work()'s fence and, if work is
//    still visible anywhere, notifies (it may have absorbed a skipped wake).
//    The same two cases: it sees the work, or the notifier sees it gone.
//
// Key before clear: prepare_wait() reads the epoch before it clears the flag.
// A notifier whose exchange comes after the clear reads it (acq_rel), so the
// key load happens-before that notifier's bump and cannot see it: the key is
// stale and commit_wait() returns at once. Read the other way round, a
// notifier could slip in between, set the flag, bump and wake nobody; the
// worker would take the bumped epoch as its key and, if another worker took
// the work, sleep with the flag stuck set, so every later notify_one()
// skipped its wake.
//
// Thread safety: thread-safe.

#include <atomic>
#include <chrono>
#include <cstdint>

#include "quell/detail/config.hpp"
#include "quell/detail/futex.hpp"

namespace quell::detail {

class Parking {
 public:
  static constexpr std::uint32_t kMaxSearching = 1;

  // True if the caller may spin looking for work (then it calls
  // end_search() when it stops); false if enough workers already do.
  bool begin_search() noexcept {
    // Relaxed: a limit on spinning, not a publication; an overshoot when two
    // workers start at once only lets both spin this time.
    if (searching_.load(std::memory_order_relaxed) >= kMaxSearching) return false;
    searching_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  // Relaxed RMW: ordered before the caller's next fence (prepare_wait(), or
  // found_work()), which is what the notifier pairs with (see above).
  void end_search() noexcept { searching_.fetch_sub(1, std::memory_order_relaxed); }

  // After end_search(), when the search found a task: the fence of the
  // second case above. The caller then checks whether work is still visible
  // and, if so, calls notify_one().
  static void found_work() noexcept { std::atomic_thread_fence(std::memory_order_seq_cst); }

  std::uint32_t prepare_wait() noexcept {
    // Relaxed RMW, then the fence that orders it before the epoch load and
    // the caller's re-check (see above).
    sleepers_.fetch_add(1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // Acquire: pairs with the release bump in notify(). Read before the flag
    // is cleared, so that a notifier whose exchange follows the clear bumps
    // the epoch past the key (see "Key before clear" above).
    const std::uint32_t key = epoch_.load(std::memory_order_acquire);
    // Acq_rel: reads a pending notifier's exchange (see above).
    wake_pending_.exchange(false, std::memory_order_acq_rel);
    return key;
  }

  void cancel_wait() noexcept {
    // Relaxed: leaving the count publishes nothing.
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
    // Acq_rel: reads a pending notifier's exchange (see above).
    wake_pending_.exchange(false, std::memory_order_acq_rel);
  }

  // Sleeps while the epoch is `key` (or until `deadline`, if given).
  void commit_wait(std::uint32_t key,
                   const std::chrono::steady_clock::time_point* deadline = nullptr) noexcept {
    if (deadline != nullptr) {
      futex_wait_until(epoch_, key, *deadline);
    } else {
      futex_wait(epoch_, key);
    }
    cancel_wait();
  }

  void notify_one() noexcept { notify(false); }
  void notify_all() noexcept { notify(true); }

 private:
  void notify(bool all) noexcept {
    // Pairs with the fence in prepare_wait(): see the header comment.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // Relaxed: the fences carry the ordering.
    if (sleepers_.load(std::memory_order_relaxed) == 0) return;
    // Relaxed, as above: a searcher will see the work (see "Searching").
    if (!all && searching_.load(std::memory_order_relaxed) != 0) return;
    // Acq_rel: a worker's exchange in cancel_wait() reads ours (see above).
    if (!all && wake_pending_.exchange(true, std::memory_order_acq_rel)) return;
    // Release: pairs with the acquire epoch loads of waiters.
    epoch_.fetch_add(1, std::memory_order_release);
    futex_wake(epoch_, all ? kWakeAll : 1);
  }

  alignas(kCacheLine) std::atomic<std::uint32_t> sleepers_{0};  // workers between prepare and wake
  std::atomic<std::uint32_t> searching_{0};  // workers between begin_search and end_search
  alignas(kCacheLine) std::atomic<std::uint32_t> epoch_{0};     // bumped by notifiers
  std::atomic<bool> wake_pending_{false};  // a wake issued, its worker not back yet
};

}  // namespace quell::detail
