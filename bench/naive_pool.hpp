#pragma once

// The floor for bench/pool_bench.cpp: the simplest correct thread pool. One
// mutex and one condition variable guard one std::deque of std::function;
// every submission and every pop takes the lock. No work stealing, no
// cancellation, no futures of its own (callers bring a std::promise).
//
// A task that waits for another task of the same pool can deadlock it (all
// workers waiting, the awaited task queued behind them): no fork-join.
//
// Thread safety: thread-safe. post() from any thread; the destructor runs
// what is queued, then joins.

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace quell_bench {

class NaivePool {
 public:
  explicit NaivePool(std::size_t threads) {
    workers_.reserve(threads);
    for (std::size_t i = 0; i < threads; ++i) workers_.emplace_back([this] { run(); });
  }
  NaivePool(const NaivePool&) = delete;
  NaivePool& operator=(const NaivePool&) = delete;

  ~NaivePool() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    ready_.notify_all();
    for (auto& worker : workers_) worker.join();
  }

  void post(std::function<void()> task) {
    {
      std::lock_guard lock(mutex_);
      queue_.push_back(std::move(task));
    }
    ready_.notify_one();
  }

 private:
  void run() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock lock(mutex_);
        ready_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, and everything queued ran
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      task();
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> queue_;  // guarded by mutex_
  bool stopping_ = false;                    // guarded by mutex_
  std::vector<std::thread> workers_;
};

}  // namespace quell_bench
