#pragma once

// What the translation units of coro_bench (coro_bench.cpp,
// coro_bench_when.cpp, coro_bench_c9.cpp) share: the workload sizes and the
// checks. One binary, split because Asio's combinators are slow to compile:
// apart, the parts compile side by side.

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <stdexcept>
#include <utility>
#include <vector>

#include "harness.hpp"

namespace quell_bench::coro {

// What every part uses, for its `using namespace quell_bench::coro`.
using namespace std::chrono_literals;
using quell_bench::Clock;
using quell_bench::median;
using quell_bench::run_alternating;
using quell_bench::run_timed;
using quell_bench::seconds_since;

inline constexpr std::size_t kWorkers = 2;
inline constexpr long kAwaits = 10'000'000;         // C1, C2, C8's loop
inline constexpr std::size_t kSubmits = 1'000'000;  // C4
inline constexpr long kHops = 1'000'000;            // C5
inline constexpr int kLatencySamples = 200;         // C6
inline constexpr int kWhenAnySamples = 10'000;      // C7, per iteration
inline constexpr int kReady = 7;                    // C7: the ready child's value
inline constexpr long kDepth = 1'000'000;           // C8
inline constexpr int kFibChildren = 64;             // C9
inline constexpr int kFibN = 22;                    // C9: each child's fib(n)
inline constexpr int kFanout = 1'000;               // fanout: children per when_all
inline constexpr int kFanouts = 100;                // fanout: when_alls per iteration
inline constexpr int kAsioGroup = 50;               // fanout: Asio's children per group
inline constexpr int kUnwindLevels = 10;            // C11
inline constexpr int kUnwindChains = 20'000;        // C11, per iteration and depth

inline void check(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(what);
}

// us_median and us_p90 of latencies in microseconds.
inline void report_percentiles(benchmark::State& state, std::vector<double> us) {
  std::sort(us.begin(), us.end());
  state.counters["us_median"] = median(us);
  state.counters["us_p90"] = us[us.size() * 9 / 10];
}

}  // namespace quell_bench::coro
