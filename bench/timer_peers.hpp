#pragma once

// The timer workload shared by timer_bench (time) and timer_instructions
// (callgrind instruction counts): one operation is "arm a timer an hour
// away, then cancel it, and see its completion report the cancellation".
// Each peer's insert_cancel_once() performs one and returns whether it was
// resolved as cancelled by the time it returned (false for a peer whose
// completion runs on another thread: see its wait_resolved()).
//
// A peer is built with a number of standing timers, armed half an hour away
// and never cancelled until the end: with none, each operation's timer is
// the earliest one, and arming it wakes the timer thread (asio: reprograms
// its timerfd); with some, it never is, as in a server with timers pending.
//
//   QuellTimer      pool.submit_after(1h, f, options with a token), then
//                   request_cancel() on the token's source: the task is
//                   dropped inline and its future ready (cancelled). The
//                   timer entry stays, a tombstone, until a later
//                   insertion sweeps it.
//   QuellTokenOnly  the part of QuellTimer's operation that is not the
//                   pool's: a source, its token into the options, the
//                   cancel. QuellTimer minus this is submit_after's cost.
//   AsioTimer       boost::asio::steady_timer: expires_after(1h),
//                   async_wait, cancel(); the handler then runs with
//                   operation_aborted. `Inline`: the calling thread runs
//                   it (io_context::poll() after the cancel); otherwise a
//                   thread running the io_context does, as quell's timer
//                   thread would, and wait_resolved() waits for the last.
//   NaiveTimers     what one would write by hand: a std::map keyed by
//                   (due, sequence) under a mutex, a thread sleeping on a
//                   condition variable until the earliest; cancel erases
//                   by key and runs the callback inline with "cancelled".

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "quell/cancellation.hpp"
#include "quell/task_options.hpp"
#include "quell/thread_pool.hpp"

namespace quell_bench {

inline constexpr std::chrono::hours kTimerDelay{1};
inline constexpr std::chrono::minutes kStandingDelay{30};
inline constexpr std::size_t kTimerWorkers = 2;

class QuellTimer {
 public:
  explicit QuellTimer(std::size_t standing) {
    for (std::size_t i = 0; i < standing; ++i) {
      standing_.push_back(pool_.submit_after(kStandingDelay, [] {}));
    }
  }

  bool insert_cancel_once() {
    quell::CancellationSource source;
    const quell::TaskOptions options = quell::TaskOptions().set_cancellation(source.token());
    quell::Future<void> future = pool_.submit_after(kTimerDelay, [] {}, options);
    source.request_cancel();
    return future.status() == quell::TaskStatus::cancelled;
  }
  void wait_resolved(std::size_t) {}

 private:
  quell::ThreadPool pool_{kTimerWorkers};
  // Resolved cancelled (reason shutdown) when the pool goes.
  std::vector<quell::Future<void>> standing_;
};

class QuellTokenOnly {
 public:
  explicit QuellTokenOnly(std::size_t) {}

  bool insert_cancel_once() {
    quell::CancellationSource source;
    const quell::TaskOptions options = quell::TaskOptions().set_cancellation(source.token());
    source.request_cancel();
    return options.cancellation().cancelled();
  }
  void wait_resolved(std::size_t) {}
};

template <bool Inline>
class AsioTimer {
 public:
  explicit AsioTimer(std::size_t standing) {
    for (std::size_t i = 0; i < standing; ++i) {
      auto& timer = standing_.emplace_back(std::make_unique<boost::asio::steady_timer>(context_));
      timer->expires_after(kStandingDelay);
      timer->async_wait([](const boost::system::error_code&) {});
    }
    if constexpr (!Inline) thread_ = std::thread([this] { context_.run(); });
  }
  ~AsioTimer() {
    // Runs the standing timers' handlers (aborted) before the io_context
    // runs out of work and run() returns.
    for (auto& timer : standing_) boost::asio::post(context_, [&timer] { timer->cancel(); });
    guard_.reset();
    if constexpr (Inline) context_.run();
    if (thread_.joinable()) thread_.join();
  }
  AsioTimer(const AsioTimer&) = delete;
  AsioTimer& operator=(const AsioTimer&) = delete;

  bool insert_cancel_once() {
    boost::asio::steady_timer timer(context_);
    timer.expires_after(kTimerDelay);
    timer.async_wait([this](const boost::system::error_code& error) {
      if (error == boost::asio::error::operation_aborted) {
        // Release: pairs with wait_resolved()'s acquire load.
        aborted_.fetch_add(1, std::memory_order_release);
      }
    });
    timer.cancel();
    if constexpr (Inline) {
      context_.poll();
      // Relaxed: this thread ran the handler.
      return aborted_.load(std::memory_order_relaxed) == ++expected_;
    } else {
      return false;
    }
  }

  // Until `count` handlers in all have seen operation_aborted. Spins: the
  // io thread is running them meanwhile, on the other core.
  void wait_resolved(std::size_t count) {
    while (aborted_.load(std::memory_order_acquire) < count) {
    }
  }

 private:
  boost::asio::io_context context_{1};
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard_{
      context_.get_executor()};
  std::atomic<std::size_t> aborted_{0};
  std::size_t expected_ = 0;
  std::vector<std::unique_ptr<boost::asio::steady_timer>> standing_;
  std::thread thread_;
};

class NaiveTimers {
 public:
  using Clock = std::chrono::steady_clock;
  using Key = std::pair<Clock::time_point, std::uint64_t>;
  using Callback = std::function<void(bool cancelled)>;

  explicit NaiveTimers(std::size_t standing) : thread_([this] { run(); }) {
    for (std::size_t i = 0; i < standing; ++i) add(kStandingDelay, [](bool) {});
  }
  ~NaiveTimers() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }
  NaiveTimers(const NaiveTimers&) = delete;
  NaiveTimers& operator=(const NaiveTimers&) = delete;

  Key add(Clock::duration delay, Callback callback) {
    std::unique_lock lock(mutex_);
    const Key key{Clock::now() + delay, next_++};
    const auto it = timers_.emplace(key, std::move(callback)).first;
    const bool earliest = it == timers_.begin();
    lock.unlock();
    if (earliest) wake_.notify_one();
    return key;
  }

  // False if it fired (or was cancelled) already.
  bool cancel(const Key& key) {
    std::unique_lock lock(mutex_);
    const auto it = timers_.find(key);
    if (it == timers_.end()) return false;
    Callback callback = std::move(it->second);
    timers_.erase(it);
    lock.unlock();
    callback(true);
    return true;
  }

  bool insert_cancel_once() {
    bool cancelled = false;
    const Key key = add(kTimerDelay, [&cancelled](bool c) { cancelled = c; });
    cancel(key);
    return cancelled;
  }
  void wait_resolved(std::size_t) {}

 private:
  void run() {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      if (timers_.empty()) {
        wake_.wait(lock);
        continue;
      }
      const auto first = timers_.begin();
      // A copy: wait_until() reads it while the lock is released, when the
      // entry may be erased.
      const Clock::time_point due = first->first.first;
      if (due > Clock::now()) {
        wake_.wait_until(lock, due);
        continue;
      }
      Callback callback = std::move(first->second);
      timers_.erase(first);
      lock.unlock();
      callback(false);
      lock.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::map<Key, Callback> timers_;  // guarded by mutex_
  std::uint64_t next_ = 0;          // guarded by mutex_
  bool stopping_ = false;           // guarded by mutex_
  std::thread thread_;
};

}  // namespace quell_bench
