#pragma once

// Helpers shared by the pool's unit tests: gates that hold workers, a wait
// for a token with a failure guard, probes that report when a callable's
// captures are destroyed, and a check that an action does not block.
//
// Nothing here sleeps to order events: tests synchronise with latches and
// atomics. Every time limit is a generous failure guard that no correct run
// comes near.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <future>
#include <latch>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "quell/thread_pool.hpp"

namespace quell::test {

// Whether the library names its threads (-Dthread_names; the build passes
// the library's QUELL_THREAD_NAMES to the tests). Tests that find a thread by
// its name skip without.
#ifndef QUELL_THREAD_NAMES
#error "QUELL_THREAD_NAMES is not set: the tests are built with the library's platform flags"
#endif
inline constexpr bool kThreadNames = QUELL_THREAD_NAMES != 0;


using namespace std::chrono_literals;

// The failure guard for anything that should happen "soon".
inline constexpr std::chrono::seconds kGuard{30};

// A one-shot gate tasks wait on. open() is idempotent.
//
// The destructor opens it and waits until every waiter has left wait(): a
// thread released from a latch still reads it on its way out, so a gate
// declared after the pool whose tasks wait on it (and so destroyed first)
// would otherwise be read after its end.
class Gate {
 public:
  Gate() = default;
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;
  ~Gate() {
    open();
    while (waiters_.load() != 0) std::this_thread::yield();
  }

  void wait() const {
    waiters_.fetch_add(1);
    latch_.wait();
    waiters_.fetch_sub(1);  // the waiter's last access to the gate
  }
  void open() {
    if (!opened_.exchange(true)) latch_.count_down();
  }
  bool is_open() const { return opened_.load(); }

 private:
  mutable std::latch latch_{1};
  mutable std::atomic<int> waiters_{0};
  std::atomic<bool> opened_{false};
};

// Opens a gate when it goes out of scope. Declare it after the pool, so the
// gate opens before the pool's destructor waits for the tasks that wait on
// it, even when a failed assertion returns early.
class OpenOnExit {
 public:
  explicit OpenOnExit(Gate& gate) : gate_(gate) {}
  OpenOnExit(const OpenOnExit&) = delete;
  OpenOnExit& operator=(const OpenOnExit&) = delete;
  ~OpenOnExit() { gate_.open(); }

 private:
  Gate& gate_;
};

// Occupies `count` workers with tasks that wait for `gate`. Submits them one
// at a time and waits until each runs, so each holds a distinct worker and a
// bounded queue never holds more than one of them.
inline std::vector<Future<void>> block_workers(ThreadPool& pool, const Gate& gate,
                                               std::size_t count) {
  std::vector<Future<void>> blockers;
  for (std::size_t i = 0; i < count; ++i) {
    auto started = std::make_shared<std::latch>(1);
    blockers.push_back(pool.submit([started, &gate] {
      started->count_down();
      gate.wait();
    }));
    // It cannot end before the gate opens: ready now means rejected.
    if (blockers.back().ready()) {
      ADD_FAILURE() << "a blocker was not accepted: " << to_string(blockers.back().status());
      break;
    }
    started->wait();
  }
  return blockers;
}

// Blocks until `token` is cancelled; false if `guard` passed first.
inline bool wait_cancelled(const CancellationToken& token,
                           std::chrono::steady_clock::duration guard = kGuard) {
  std::mutex mutex;
  std::condition_variable changed;
  bool fired = false;
  CancellationCallback callback(token, [&] {
    std::lock_guard lock(mutex);
    fired = true;
    changed.notify_all();
  });
  std::unique_lock lock(mutex);
  return changed.wait_for(lock, guard, [&] { return fired; });
}

// A move-only capture that counts its destruction (once, by the live
// object; a moved-from probe counts nothing) and records the thread it was
// destroyed on.
class DestructionProbe {
 public:
  struct Record {
    std::atomic<int> destroyed{0};
    std::atomic<std::thread::id> thread{};
  };

  explicit DestructionProbe(Record* record) : record_(record) {}
  DestructionProbe(DestructionProbe&& other) noexcept
      : record_(std::exchange(other.record_, nullptr)) {}
  DestructionProbe(const DestructionProbe&) = delete;
  DestructionProbe& operator=(const DestructionProbe&) = delete;
  DestructionProbe& operator=(DestructionProbe&&) = delete;
  ~DestructionProbe() {
    if (record_ != nullptr) {
      record_->thread.store(std::this_thread::get_id());
      record_->destroyed.fetch_add(1);
    }
  }

 private:
  Record* record_;
};

// Runs `action` on another thread; finished_within() tells whether it
// returned in time. The destructor joins, so open whatever the action may
// wait for before this object goes out of scope.
class GuardedRun {
 public:
  explicit GuardedRun(std::function<void()> action)
      : thread_([this, action = std::move(action)] {
          action();
          done_.set_value();
        }),
        finished_(done_.get_future()) {}
  GuardedRun(const GuardedRun&) = delete;
  GuardedRun& operator=(const GuardedRun&) = delete;
  ~GuardedRun() { thread_.join(); }

  template <class Rep, class Period>
  bool finished_within(std::chrono::duration<Rep, Period> limit) {
    return finished_.wait_for(limit) == std::future_status::ready;
  }

 private:
  std::promise<void> done_;
  std::thread thread_;
  std::future<void> finished_;
};

// Waits until the steady clock is past `when` (without sleeping on a guess:
// it yields until the clock says so).
inline void spin_until(std::chrono::steady_clock::time_point when) {
  while (std::chrono::steady_clock::now() <= when) std::this_thread::yield();
}

// Waits, yielding under the failure guard, until `done()` holds.
template <class Pred>
bool spin_until_true(Pred done) {
  const auto limit = std::chrono::steady_clock::now() + kGuard;
  while (!done()) {
    if (std::chrono::steady_clock::now() > limit) return false;
    std::this_thread::yield();
  }
  return true;
}

inline std::string pool_size_name(const ::testing::TestParamInfo<std::size_t>& info) {
  return std::to_string(info.param) + "Workers";
}

}  // namespace quell::test
