// quell's parallel loops (API.md §11) against oneTBB in the same binary,
// both with two workers and the calling thread (quell: ThreadPool(2) and the
// caller; TBB: a task_arena of 3 slots, one of them the caller's).
//   P1 for over 10^7 trivial elements    quell parallel_for, tbb blocked_range, tbb index form
//   P2 reduce (a sum) over 10^7          quell parallel_reduce, tbb parallel_reduce
//   P3 for_each over 10^7                quell parallel_for_each, tbb parallel_for_each
//   P4 find, the match at 1% of 10^8     quell parallel_find_if, tbb cancelling its context on
//                                        a match, and quell's full scan (no early exit)
//   P5 cancel in the middle of 10^8      time from request_cancel() (tbb: cancel_group_execution())
//                                        on another thread to the call's return
// Run it with bench/run_pool_bench.sh (a fresh process per sample, shuffled
// rounds); every benchmark times itself.
#include <benchmark/benchmark.h>
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/parallel_for_each.h>
#include <oneapi/tbb/parallel_reduce.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "quell/parallel.hpp"
#include "quell/thread_pool.hpp"

namespace {

using quell_bench::Clock;
using quell_bench::run_timed;
using quell_bench::seconds_since;

constexpr std::size_t kWorkers = 2;
constexpr int kSmall = 10'000'000;
constexpr int kLarge = 100'000'000;
constexpr int kMatch = kLarge / 100;

tbb::task_arena& arena() {
  // TBB caps its workers at hardware_concurrency - 1 (one here) unless told.
  static tbb::global_control parallelism(tbb::global_control::max_allowed_parallelism, kWorkers + 1);
  static tbb::task_arena a(static_cast<int>(kWorkers + 1));  // one slot is the caller's
  return a;
}

// ---- P1 parallel_for: out[i] = 3i ---------------------------------------------

void p1_quell(benchmark::State& state) {
  quell::ThreadPool pool(kWorkers);
  std::vector<int> out(kSmall);
  run_timed(state, kSmall, "ns_per_element", [&] {
    const auto start = Clock::now();
    quell::parallel_for(pool, 0, kSmall, [&](int i) { out[static_cast<std::size_t>(i)] = 3 * i; });
    return seconds_since(start);
  }, "ms_per_loop");
  benchmark::DoNotOptimize(out.data());
}

void p1_tbb(benchmark::State& state) {
  std::vector<int> out(kSmall);
  run_timed(state, kSmall, "ns_per_element", [&] {
    const auto start = Clock::now();
    arena().execute([&] {
      tbb::parallel_for(tbb::blocked_range<int>(0, kSmall), [&](const tbb::blocked_range<int>& r) {
        for (int i = r.begin(); i != r.end(); ++i) out[static_cast<std::size_t>(i)] = 3 * i;
      });
    });
    return seconds_since(start);
  }, "ms_per_loop");
  benchmark::DoNotOptimize(out.data());
}

void p1_tbb_index(benchmark::State& state) {
  std::vector<int> out(kSmall);
  run_timed(state, kSmall, "ns_per_element", [&] {
    const auto start = Clock::now();
    arena().execute([&] {
      tbb::parallel_for(0, kSmall, [&](int i) { out[static_cast<std::size_t>(i)] = 3 * i; });
    });
    return seconds_since(start);
  }, "ms_per_loop");
  benchmark::DoNotOptimize(out.data());
}

// ---- P2 parallel_reduce: the sum of 10^7 values -----------------------------

std::vector<std::int64_t> values() {
  std::vector<std::int64_t> v(kSmall);
  for (int i = 0; i < kSmall; ++i) v[static_cast<std::size_t>(i)] = i % 1000;
  return v;
}

void p2_quell(benchmark::State& state) {
  quell::ThreadPool pool(kWorkers);
  const std::vector<std::int64_t> v = values();
  std::int64_t sum = 0;
  run_timed(state, kSmall, "ns_per_element", [&] {
    const auto start = Clock::now();
    sum = quell::parallel_reduce(pool, 0, kSmall, std::int64_t{0},
                                 [&](int i) { return v[static_cast<std::size_t>(i)]; }, std::plus<>());
    return seconds_since(start);
  }, "ms_per_loop");
  if (sum != std::int64_t{4995} * kSmall / 10) state.SkipWithError("wrong sum");
}

void p2_tbb(benchmark::State& state) {
  const std::vector<std::int64_t> v = values();
  std::int64_t sum = 0;
  run_timed(state, kSmall, "ns_per_element", [&] {
    const auto start = Clock::now();
    arena().execute([&] {
      sum = tbb::parallel_reduce(
          tbb::blocked_range<int>(0, kSmall), std::int64_t{0},
          [&](const tbb::blocked_range<int>& r, std::int64_t acc) {
            for (int i = r.begin(); i != r.end(); ++i) acc += v[static_cast<std::size_t>(i)];
            return acc;
          },
          std::plus<>());
    });
    return seconds_since(start);
  }, "ms_per_loop");
  if (sum != std::int64_t{4995} * kSmall / 10) state.SkipWithError("wrong sum");
}

// ---- P3 parallel_for_each: x += 1 over 10^7 ---------------------------------

void p3_quell(benchmark::State& state) {
  quell::ThreadPool pool(kWorkers);
  std::vector<int> v(kSmall);
  run_timed(state, kSmall, "ns_per_element", [&] {
    const auto start = Clock::now();
    quell::parallel_for_each(pool, v.begin(), v.end(), [](int& x) { x += 1; });
    return seconds_since(start);
  }, "ms_per_loop");
  benchmark::DoNotOptimize(v.data());
}

void p3_tbb(benchmark::State& state) {
  std::vector<int> v(kSmall);
  run_timed(state, kSmall, "ns_per_element", [&] {
    const auto start = Clock::now();
    arena().execute([&] { tbb::parallel_for_each(v.begin(), v.end(), [](int& x) { x += 1; }); });
    return seconds_since(start);
  }, "ms_per_loop");
  benchmark::DoNotOptimize(v.data());
}

// ---- P4 find: the match at 1% of 10^8 ---------------------------------------

std::vector<std::uint8_t> haystack() {
  std::vector<std::uint8_t> v(kLarge, 0);
  v[kMatch] = 1;
  v[kLarge - 100] = 1;  // a later match, which must not win
  return v;
}

void check_found(benchmark::State& state, std::size_t at) {
  if (at != static_cast<std::size_t>(kMatch)) state.SkipWithError("not the lowest match");
}

void p4_quell(benchmark::State& state) {
  quell::ThreadPool pool(kWorkers);
  const auto v = haystack();
  std::size_t at = 0;
  run_timed(state, 1, "ns_per_find", [&] {
    const auto start = Clock::now();
    at = static_cast<std::size_t>(
        quell::parallel_find_if(pool, v.begin(), v.end(), [](std::uint8_t x) { return x != 0; }) -
        v.begin());
    return seconds_since(start);
  }, "ms_per_loop");
  check_found(state, at);
}

void p4_tbb_cancelling(benchmark::State& state) {
  const auto v = haystack();
  std::size_t at = 0;
  run_timed(state, 1, "ns_per_find", [&] {
    const auto start = Clock::now();
    std::atomic<std::size_t> found{v.size()};
    arena().execute([&] {
      tbb::task_group_context context;
      tbb::parallel_for(
          tbb::blocked_range<std::size_t>(0, v.size()),
          [&](const tbb::blocked_range<std::size_t>& r) {
            for (std::size_t i = r.begin(); i != r.end(); ++i) {
              if (i > found.load(std::memory_order_relaxed)) return;
              if (v[i] != 0) {
                std::size_t seen = found.load(std::memory_order_relaxed);
                while (i < seen && !found.compare_exchange_weak(seen, i, std::memory_order_relaxed)) {
                }
                context.cancel_group_execution();  // as a tbb user stops a search
                return;
              }
            }
          },
          context);
    });
    at = found.load();
    return seconds_since(start);
  }, "ms_per_loop");
  check_found(state, at);
}

// The same search over a haystack with no match: every element scanned.
void p4_quell_full_scan(benchmark::State& state) {
  quell::ThreadPool pool(kWorkers);
  const std::vector<std::uint8_t> v(kLarge, 0);
  bool found = false;
  run_timed(state, 1, "ns_per_find", [&] {
    const auto start = Clock::now();
    found |= quell::parallel_find_if(pool, v.begin(), v.end(), [](std::uint8_t x) { return x != 0; }) !=
             v.end();
    return seconds_since(start);
  }, "ms_per_loop");
  if (found) state.SkipWithError("a match in an empty haystack");
}

// ---- P5 cancel in the middle of a 10^8 loop ---------------------------------

// A loop of about 20 ms here (v[i] = 3 v[i] + 1 over 10^8 ints), cancelled
// from another thread 5 ms after it began: the time from the cancel to the
// call's return. The canceller sleeps (a benchmark may), so it takes no core from
// the three runners until then.
constexpr auto kCancelAfter = std::chrono::milliseconds(5);

template <class Loop, class Cancel>
double cancel_midway(Loop loop, Cancel cancel, double& us_cancel_to_return) {
  std::atomic<std::int64_t> cancelled_at{0};
  const auto start = Clock::now();
  std::thread canceller([&] {
    std::this_thread::sleep_until(start + kCancelAfter);
    cancelled_at.store(Clock::now().time_since_epoch().count(), std::memory_order_release);
    cancel();
  });
  loop();
  const auto returned = Clock::now();
  canceller.join();
  us_cancel_to_return =
      static_cast<double>(returned.time_since_epoch().count() - cancelled_at.load()) / 1e3;
  return seconds_since(start);
}

void report_cancel(benchmark::State& state, const std::vector<double>& samples, long finished) {
  state.counters["us_cancel_to_return"] = quell_bench::median(samples);
  state.counters["loops_not_stopped"] = static_cast<double>(finished);
}

void p5_quell(benchmark::State& state) {
  quell::ThreadPool pool(kWorkers);
  std::vector<std::uint32_t> v(kLarge, 1);
  std::vector<double> samples;
  long finished = 0;
  run_timed(state, 1, "ns_per_loop", [&] {
    quell::CancellationSource source;
    double us = 0;
    const double s = cancel_midway(
        [&] {
          try {
            quell::parallel_for_each(pool, v.begin(), v.end(), [](std::uint32_t& x) { x = 3 * x + 1; },
                                     quell::TaskOptions().set_cancellation(source.token()));
            ++finished;
          } catch (const quell::OperationCancelled&) {
          }
        },
        [&] { source.request_cancel(); }, us);
    samples.push_back(us);
    return s;
  });
  report_cancel(state, samples, finished);
  // The automatic grain: 16 chunks per runner.
  state.counters["chunk_elements"] = static_cast<double>(kLarge / ((kWorkers + 1) * 16));
  benchmark::DoNotOptimize(v.data());
}

void p5_tbb(benchmark::State& state) {
  std::vector<std::uint32_t> v(kLarge, 1);
  std::vector<double> samples;
  long finished = 0;
  run_timed(state, 1, "ns_per_loop", [&] {
    double us = 0;
    tbb::task_group_context context;
    const double s = cancel_midway(
        [&] {
          arena().execute([&] {
            tbb::parallel_for(
                tbb::blocked_range<std::size_t>(0, v.size()),
                [&](const tbb::blocked_range<std::size_t>& r) {
                  for (std::size_t i = r.begin(); i != r.end(); ++i) v[i] = 3 * v[i] + 1;
                },
                context);
          });
          if (!context.is_group_execution_cancelled()) ++finished;
        },
        [&] { context.cancel_group_execution(); }, us);
    samples.push_back(us);
    return s;
  });
  report_cancel(state, samples, finished);
  benchmark::DoNotOptimize(v.data());
}

}  // namespace

BENCHMARK(p1_quell)->Name("P1_for_1e7/quell")->UseManualTime()->Iterations(10);
BENCHMARK(p1_tbb)->Name("P1_for_1e7/tbb")->UseManualTime()->Iterations(10);
BENCHMARK(p1_tbb_index)->Name("P1_for_1e7/tbb_index")->UseManualTime()->Iterations(10);
BENCHMARK(p2_quell)->Name("P2_reduce_1e7/quell")->UseManualTime()->Iterations(10);
BENCHMARK(p2_tbb)->Name("P2_reduce_1e7/tbb")->UseManualTime()->Iterations(10);
BENCHMARK(p3_quell)->Name("P3_for_each_1e7/quell")->UseManualTime()->Iterations(10);
BENCHMARK(p3_tbb)->Name("P3_for_each_1e7/tbb")->UseManualTime()->Iterations(10);
BENCHMARK(p4_quell)->Name("P4_find_1pct_1e8/quell")->UseManualTime()->Iterations(10);
BENCHMARK(p4_tbb_cancelling)->Name("P4_find_1pct_1e8/tbb_cancelling")->UseManualTime()->Iterations(10);
BENCHMARK(p4_quell_full_scan)->Name("P4_find_1pct_1e8/quell_full_scan")->UseManualTime()->Iterations(3);
BENCHMARK(p5_quell)->Name("P5_cancel_mid_1e8/quell")->UseManualTime()->Iterations(5);
BENCHMARK(p5_tbb)->Name("P5_cancel_mid_1e8/tbb")->UseManualTime()->Iterations(5);

BENCHMARK_MAIN();
