#pragma once

// The pool's timer service: one thread, one min-heap of entries under a
// mutex. It starts delayed tasks when they are due, cancels tasks' tokens at
// their deadlines, and fires periodic tasks' ticks. docs/timers.md argues the
// design; in short, a deadline must fire while every worker is busy, so the
// service cannot live in the workers.
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
//   M2  Once starts_closed_ is set (a shutdown began), no start entry is in
//       the heap and add_start() refuses: nothing delayed waits for a timer.
//   M3  Actions run on the timer thread outside the mutex, so a cancellation
//       callback may submit delayed work or stop a periodic task.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "quell/detail/task.hpp"

namespace quell::detail {

class PeriodicCore;

class TimerService {
 public:
  using Clock = std::chrono::steady_clock;

  // `start_task` hands a due delayed task (with the queue's reference) to
  // the pool.
  TimerService(PoolCore* pool, void (*start_task)(PoolCore*, TaskBase*), const std::string& name);
  ~TimerService();  // stop() must have run

  TimerService(const TimerService&) = delete;
  TimerService& operator=(const TimerService&) = delete;

  // Starts `task` at `due`, taking over the queue's reference. False once a
  // shutdown closed the starts (M2): the caller resolves the task.
  bool add_start(TaskBase* task, Clock::time_point due);
  // Cancels `task`'s token with reason deadline at `due`. Adds a reference.
  void add_deadline(TaskBase* task, Clock::time_point due);
  // Fires `periodic` at `due`. Adds a reference. Once stopped, does nothing:
  // the periodic task sees its pool closed.
  void add_periodic(PeriodicCore* periodic, Clock::time_point due);

  // An entry's target ended before its due time: a hint for the sweep.
  void entry_died() noexcept {
    // Relaxed: a heuristic; the sweep checks each entry itself.
    dead_hint_.fetch_add(1, std::memory_order_relaxed);
  }

  // Shutdown: resolves every delayed task not yet started as cancelled
  // (reason shutdown) and refuses later ones (M2).
  void close_starts();
  // Joins the thread and releases every entry. Idempotent.
  void stop();

 private:
  enum class Kind : std::uint8_t { start, deadline, periodic };
  struct Entry {
    Clock::time_point due;
    void* target;  // TaskBase* or PeriodicCore*, by kind
    Kind kind;
  };
  struct Later {
    bool operator()(const Entry& a, const Entry& b) const noexcept { return a.due > b.due; }
  };

  // Unlocks. Once stopped, the entry goes to `released` instead.
  void push(std::unique_lock<std::mutex>& lock, Entry entry, std::vector<Entry>& released);
  void sweep(std::vector<Entry>& released);
  void run() noexcept;
  void fire(const Entry& entry) noexcept;
  static bool dead(const Entry& entry) noexcept;
  static void release(const Entry& entry) noexcept;

  PoolCore* const pool_;
  void (*const start_task_)(PoolCore*, TaskBase*);
  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<Entry> heap_;    // guarded by mutex_; a min-heap on due
  bool starts_closed_ = false;  // guarded by mutex_
  bool stopping_ = false;       // guarded by mutex_
  std::atomic<std::size_t> dead_hint_{0};
  std::thread thread_;
};

}  // namespace quell::detail
