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
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "quell/task_options.hpp"
#include "quell/thread_pool.hpp"

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

// Two workloads compared in one process: a() and b() once each untimed, then
// once each per iteration, alternating which goes first, so that neither
// always runs on the machine the other left. The iteration's time is
// seconds(a's sample) + seconds(b's sample). Returns every pair's samples.
template <class A, class B, class Seconds = std::identity>
auto run_alternating(benchmark::State& state, A&& a, B&& b, Seconds seconds = {}) {
  using Sample = decltype(a());
  a();
  b();
  std::vector<std::pair<Sample, Sample>> pairs;
  for (auto _ : state) {
    Sample first{}, second{};
    if (pairs.size() % 2 == 1) {
      second = b();
      first = a();
    } else {
      first = a();
      second = b();
    }
    state.SetIterationTime(seconds(first) + seconds(second));
    pairs.emplace_back(first, second);
  }
  return pairs;
}

// ---- a submission option's cost (W6 a token, T2 a deadline) ---------------

struct BatchTime {
  double total = 0;   // seconds: submit, wait for all, drop the futures
  double submit = 0;  // seconds: the submission loop
};

// Submits `count` empty tasks with `options`, keeping their futures, then
// waits for all of them.
inline BatchTime submit_batch(quell::ThreadPool& pool, const quell::TaskOptions& options,
                              std::size_t count, std::vector<quell::Future<void>>& futures) {
  const auto start = Clock::now();
  for (std::size_t i = 0; i < count; ++i) futures.push_back(pool.submit([] {}, options));
  const double submitted = seconds_since(start);
  for (auto& future : futures) future.get();
  futures.clear();
  return {seconds_since(start), submitted};
}

// Batches of `count` submissions with `options`: ns_per_task and
// ns_submit_per_task.
inline void run_batches(benchmark::State& state, std::size_t workers,
                        const quell::TaskOptions& options, std::size_t count) {
  quell::ThreadPool pool(workers);
  std::vector<quell::Future<void>> futures;
  futures.reserve(count);
  double submit_seconds = 0;
  run_timed(state, count, "ns_per_task", [&] {
    const BatchTime t = submit_batch(pool, options, count, futures);
    submit_seconds += t.submit;
    return t.total;
  });
  // The warm-up's submission time is in submit_seconds too: one more sample.
  state.counters["ns_submit_per_task"] =
      submit_seconds * 1e9 /
      (static_cast<double>(state.iterations() + 1) * static_cast<double>(count));
}

// What an option adds, measured in one process: batches without it and with
// it, alternating which goes first, and the median of the per-pair
// differences. Counters ns_per_task_no_<what>, ns_per_task_<what>,
// <what>_ns_per_task and <what>_submit_ns_per_task.
inline void run_paired_batches(benchmark::State& state, std::size_t workers,
                               const quell::TaskOptions& without, const quell::TaskOptions& with,
                               std::size_t count, const std::string& what) {
  quell::ThreadPool pool(workers);
  std::vector<quell::Future<void>> futures;
  futures.reserve(count);
  const auto samples = run_alternating(
      state, [&] { return submit_batch(pool, without, count, futures); },
      [&] { return submit_batch(pool, with, count, futures); },
      [](const BatchTime& t) { return t.total; });
  std::vector<double> total_diff, submit_diff;
  double plain_total = 0, with_total = 0;
  for (const auto& [plain, other] : samples) {
    plain_total += plain.total;
    with_total += other.total;
    total_diff.push_back(other.total - plain.total);
    submit_diff.push_back(other.submit - plain.submit);
  }
  const double per_task = 1e9 / static_cast<double>(count);
  const double pairs = static_cast<double>(state.iterations());
  state.counters["ns_per_task_no_" + what] = plain_total * per_task / pairs;
  state.counters["ns_per_task_" + what] = with_total * per_task / pairs;
  state.counters[what + "_ns_per_task"] = median(total_diff) * per_task;
  state.counters[what + "_submit_ns_per_task"] = median(submit_diff) * per_task;
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
