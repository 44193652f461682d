#pragma once

// The pool's timer service: one thread, one min-heap of entries under a
// mutex. What an entry does when due is its kind's business (a TimerKind,
// given by whoever arms it): the pool starts delayed tasks and cancels tasks'
// tokens at their deadlines, periodic tasks post their ticks. docs/timers.md
// argues the design; in short, a deadline must fire while every worker is
// busy, so the service cannot live in the workers.
//
// Entries are never searched for: cancelling what an entry is for (a task
// dropped, a periodic task stopped) leaves it a tombstone, which does
// nothing when due. Every entry holds a reference to its target, so a
// tombstone keeps a block (without the callable, which went with the drop)
// until it is swept: an insertion sweeps the heap when the dead hint says
// most entries may be tombstones, so the heap stays within twice the live
// entries, at O(1) amortised per insertion.
//
// Invariants
//   M1  heap_ is guarded by mutex_; each entry holds one reference to its
//       target, released outside the mutex (a release may run user code: a
//       result's destructor).
//   M2  Once closed_ is set (a shutdown began), no entry of a kind with a
//       close action is in the heap and add() refuses one: nothing delayed
//       waits for a timer.
//   M3  Actions run on the timer thread outside the mutex, so a cancellation
//       callback may submit delayed work or stop a periodic task.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace quell::detail {

// What an entry does, for one kind of target. Each action takes over the
// entry's reference to its target.
struct TimerKind {
  void (*fire)(void* target) noexcept;  // due: on the timer thread, outside the mutex
  void (*release)(void* target) noexcept;  // unfired: a tombstone swept, or the service stopped
  bool (*dead)(const void* target) noexcept;  // the target ended: the entry is a tombstone
  // At shutdown, for entries that must not wait for their time (delayed
  // starts); null for kinds that keep firing until the service stops.
  void (*close)(void* target) noexcept = nullptr;
};

class TimerService {
 public:
  using Clock = std::chrono::steady_clock;

  explicit TimerService(const std::string& name);
  ~TimerService();  // stop() must have run

  TimerService(const TimerService&) = delete;
  TimerService& operator=(const TimerService&) = delete;

  // Fires `target` at `due`, taking over a reference the caller made for
  // the entry. False (the reference stays the caller's) if `kind` has a
  // close action and close() ran (M2).
  bool add(const TimerKind& kind, void* target, Clock::time_point due);

  // An entry's target ended before its due time: a hint for the sweep.
  void entry_died() noexcept {
    // Relaxed: a heuristic; the sweep checks each entry itself.
    dead_hint_.fetch_add(1, std::memory_order_relaxed);
  }

  // Shutdown: runs the close action of every entry that has one, and
  // refuses such entries from now on (M2).
  void close();
  // Joins the thread and releases every entry. Idempotent.
  void stop();

 private:
  struct Entry {
    Clock::time_point due;
    void* target;
    const TimerKind* kind;
  };
  struct Later {
    bool operator()(const Entry& a, const Entry& b) const noexcept { return a.due > b.due; }
  };

  // Unlocks. Once stopped, the entry goes to `released` instead.
  void push(std::unique_lock<std::mutex>& lock, Entry entry, std::vector<Entry>& released);
  void sweep(std::vector<Entry>& released);
  void run() noexcept;

  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<Entry> heap_;  // guarded by mutex_; a min-heap on due
  bool closed_ = false;      // guarded by mutex_
  bool stopping_ = false;    // guarded by mutex_
  std::atomic<std::size_t> dead_hint_{0};
  std::thread thread_;
};

}  // namespace quell::detail
