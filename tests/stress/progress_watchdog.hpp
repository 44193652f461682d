#pragma once

// A stress test's hang detector: a thread that aborts with a message when
// no round has called tick() for `guard`. A failure guard only: nothing is
// ordered by time, and a correct run never comes near it.

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

namespace quell::test {

class ProgressWatchdog {
 public:
  explicit ProgressWatchdog(std::chrono::seconds guard)
      : thread_([this, guard] {
          std::unique_lock lock(mutex_);
          while (!stop_) {
            const long seen = progress_;
            // A timed wait as a failure guard only: tick() wakes it.
            if (!changed_.wait_for(lock, guard, [&] { return stop_ || progress_ != seen; })) {
              std::fprintf(stderr, "no progress for %llds after step %ld: a hang\n",
                           static_cast<long long>(guard.count()), seen);
              std::abort();
            }
          }
        }) {}
  ProgressWatchdog(const ProgressWatchdog&) = delete;
  ProgressWatchdog& operator=(const ProgressWatchdog&) = delete;
  ~ProgressWatchdog() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    changed_.notify_one();
    thread_.join();
  }
  void tick() {
    {
      std::lock_guard lock(mutex_);
      ++progress_;
    }
    changed_.notify_one();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  long progress_ = 0;  // guarded by mutex_
  bool stop_ = false;  // guarded by mutex_
  std::thread thread_;
};

}  // namespace quell::test
