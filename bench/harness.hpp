#pragma once

// What the pool-level benchmarks (pool_bench, scope_bench, timer_bench)
// share: the timing loop, completion by count for peers without futures,
// and the blocker that holds workers up so tasks stay queued. Every
// benchmark times itself (UseManualTime, steady_clock) and reports its
// metrics as counters, which bench/run_pool_bench.sh collects.

#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>

namespace quell_bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Runs `once` (which returns the seconds it timed) untimed, then once per
// benchmark iteration; reports ns per `units`, and if asked the milliseconds
// per iteration.
template <class Once>
void run_timed(benchmark::State& state, std::size_t units, const char* unit_counter, Once&& once,
               const char* total_counter = nullptr) {
  once();  // warm-up
  double total = 0;
  for (auto _ : state) {
    const double s = once();
    state.SetIterationTime(s);
    total += s;
  }
  const double iterations = static_cast<double>(state.iterations());
  state.counters[unit_counter] = total * 1e9 / (iterations * static_cast<double>(units));
  if (total_counter != nullptr) state.counters[total_counter] = total * 1e3 / iterations;
}

inline double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n == 0 ? 0 : (n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2);
}

// Completion by count, for peers without futures: the task that brings the
// count to zero wakes the waiter. One atomic RMW per task.
class Countdown {
 public:
  void reset(std::int64_t count) {
    done_.store(0, std::memory_order_relaxed);
    left_.store(count, std::memory_order_relaxed);
  }
  void arrive() noexcept {
    // Acq_rel: every arrival's work happens-before the last one's release
    // store of done_, which wait()'s acquire load pairs with.
    if (left_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      done_.store(1, std::memory_order_release);
      done_.notify_one();
    }
  }
  void wait() const noexcept {
    while (done_.load(std::memory_order_acquire) == 0) done_.wait(0, std::memory_order_acquire);
  }

 private:
  alignas(64) std::atomic<std::int64_t> left_{0};
  alignas(64) std::atomic<std::uint32_t> done_{0};
};

// Holds up workers of a pool until release(), which returns once every
// blocked task has ended and will not touch the Blocker again: the set-up of
// the cancellation workloads (W5, S3).
class Blocker {
 public:
  auto task() {
    return [this] {
      started_.fetch_add(1, std::memory_order_acq_rel);
      while (released_.load(std::memory_order_acquire) == 0) {
        released_.wait(0, std::memory_order_acquire);
      }
      ended_.fetch_add(1, std::memory_order_acq_rel);  // the last access
    };
  }
  void wait_started(std::size_t count) const {
    while (started_.load(std::memory_order_acquire) < static_cast<int>(count)) {
      std::this_thread::yield();
    }
  }
  void release() {
    released_.store(1, std::memory_order_release);
    released_.notify_all();
    while (ended_.load(std::memory_order_acquire) < started_.load(std::memory_order_acquire)) {
      std::this_thread::yield();
    }
  }

 private:
  std::atomic<int> started_{0};
  std::atomic<int> ended_{0};
  std::atomic<std::uint32_t> released_{0};
};

}  // namespace quell_bench
