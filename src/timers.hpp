#pragma once

// The pool's timer service: one thread, one ordered set of entries under a
// mutex. What an entry does when due is its kind's business (a TimerKind,
// given by whoever arms it): the pool starts delayed tasks and cancels tasks'
// tokens at their deadlines, periodic tasks post their ticks. docs/timers.md
// argues the design; in short, a deadline must fire while every worker is
// busy, so the service cannot live in the workers.
//
// The set is intrusive (Boost.Intrusive's red-black multiset): an entry's
// links live in the entry, and the entry lives in memory its arming code
// got before it committed to anything (a block allocated before a task is
// accepted, a member of a periodic task). So arming a timer allocates
// nothing and cannot fail, and neither can firing, sweeping or closing: every
// list the service builds is threaded through the entries themselves.
//
// Entries are never searched for: cancelling what an entry is for (a task
// dropped, a periodic task stopped) leaves it a tombstone, which does
// nothing when due. Every entry holds a reference to its target, so a
// tombstone keeps a block (without the callable, which went with the drop)
// until it is swept: an insertion sweeps the set when the dead hint says
// most entries may be tombstones, so the set stays within twice the live
// entries, at O(1) amortised per insertion.
//
// Invariants
//   M1  set_ is guarded by mutex_; each entry holds one reference to its
//       target, and its kind's actions run outside the mutex (a release may
//       run user code: a result's destructor).
//   M2  Once closed_ is set (a shutdown began), no entry of a kind with a
//       close action is in the set and add() refuses one: nothing delayed
//       waits for a timer.
//   M3  Actions run on the timer thread outside the mutex, so a cancellation
//       callback may submit delayed work or stop a periodic task.
//   M4  An entry taken out of the set is handed to exactly one action, which
//       owns it from then on (a kind frees or reuses its entries); the
//       service reads nothing of it after the call.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include <boost/intrusive/set.hpp>

namespace quell::detail {

struct TimerEntry;

// What an entry does, for one kind of target. Each action takes over the
// entry, and with it the entry's reference to its target (M4).
struct TimerKind {
  void (*fire)(TimerEntry* entry) noexcept;     // due: on the timer thread, outside the mutex
  void (*release)(TimerEntry* entry) noexcept;  // unfired: a tombstone swept, or the service stopped
  bool (*dead)(const TimerEntry* entry) noexcept;  // the target ended: the entry is a tombstone
  // At shutdown, for entries that must not wait for their time (delayed
  // starts); null for kinds that keep firing until the service stops.
  void (*close)(TimerEntry* entry) noexcept = nullptr;
};

using TimerHook = boost::intrusive::set_base_hook<boost::intrusive::optimize_size<true>>;

struct TimerEntry : TimerHook {
  std::chrono::steady_clock::time_point due;
  const TimerKind* kind = nullptr;
  void* target = nullptr;
  TimerEntry* next_out = nullptr;  // a list of entries taken out of the set, handled outside the mutex
};

class TimerService {
 public:
  using Clock = std::chrono::steady_clock;

  explicit TimerService(const std::string& name);  // throws std::system_error: no thread
  ~TimerService();  // stop() must have run

  TimerService(const TimerService&) = delete;
  TimerService& operator=(const TimerService&) = delete;

  // Arms `entry` (its due, kind and target set, and a reference to the
  // target made for it). Allocates nothing. False if its kind has a close
  // action and close() ran (M2): the entry stays the caller's.
  bool add(TimerEntry* entry) noexcept;

  // Takes an armed entry back out of the set, unless it was already taken
  // out to fire (or swept, or released): true if it was, and then no action
  // will run on it.
  bool remove(TimerEntry* entry) noexcept;

  // An entry's target ended before its due time: a hint for the sweep.
  void entry_died() noexcept {
    // Relaxed: a heuristic; the sweep checks each entry itself.
    dead_hint_.fetch_add(1, std::memory_order_relaxed);
  }

  // Shutdown: runs the close action of every entry that has one, and
  // refuses such entries from now on (M2).
  void close() noexcept;
  // Joins the thread and releases every entry. Idempotent.
  void stop() noexcept;

 private:
  struct ByDue {
    bool operator()(const TimerEntry& a, const TimerEntry& b) const noexcept {
      return a.due < b.due;
    }
  };
  using EntrySet = boost::intrusive::multiset<TimerEntry, boost::intrusive::compare<ByDue>>;

  // Entries taken out of the set under the mutex, in order, for their
  // actions outside it: threaded through the entries, so it allocates nothing.
  struct OutList {
    TimerEntry* head = nullptr;
    TimerEntry** tail = &head;
    void push_back(TimerEntry* entry) noexcept;
    template <class Action>
    void take_each(Action action) noexcept;
  };

  // Moves the entries `pick` chooses out of the set onto `out`, in due order.
  template <class Pick>
  void take_if(OutList& out, Pick pick) noexcept;
  // Moves the tombstones out of the set onto `out`.
  void sweep(OutList& out) noexcept;
  void run() noexcept;

  std::mutex mutex_;
  std::condition_variable wake_;
  EntrySet set_;            // guarded by mutex_; ordered by due
  bool closed_ = false;     // guarded by mutex_
  bool stopping_ = false;   // guarded by mutex_
  std::atomic<std::size_t> dead_hint_{0};
  std::thread thread_;
};

}  // namespace quell::detail
