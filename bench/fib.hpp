#pragma once

// Fork-join fib(25), one spawn per call with n >= 2 and no cutoff: the
// workload of pool_bench's W2 and scope_bench's S1, with the plain-submit
// and tbb::task_group forms both binaries run. A wait on a worker runs
// other tasks meanwhile, in quell and in tbb alike.

#include <benchmark/benchmark.h>

#include <cstddef>
#include <cstdint>

#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

#include "harness.hpp"
#include "quell/thread_pool.hpp"

namespace quell_bench {

inline constexpr int kFibN = 25;

constexpr std::uint64_t spawns(int n) { return n < 2 ? 0 : 1 + spawns(n - 1) + spawns(n - 2); }
constexpr int fib_value(int n) { return n < 2 ? n : fib_value(n - 1) + fib_value(n - 2); }

inline int fib_submit(quell::ThreadPool& pool, int n) {
  if (n < 2) return n;
  auto child = pool.submit([&pool, n] { return fib_submit(pool, n - 1); });
  const int b = fib_submit(pool, n - 2);
  return child.get() + b;  // on a worker, get() runs other tasks until ready
}

inline int fib_tbb(int n) {
  if (n < 2) return n;
  int a = 0;
  tbb::task_group group;
  group.run([&a, n] { a = fib_tbb(n - 1); });
  const int b = fib_tbb(n - 2);
  group.wait();
  return a + b;
}

// Times `fib` (returning fib(kFibN)) once per iteration: ns_per_spawn and
// ms_total; an error if it returns the wrong value.
template <class Fib>
void run_fib(benchmark::State& state, Fib&& fib) {
  bool wrong = false;
  run_timed(state, spawns(kFibN), "ns_per_spawn", [&] {
    const auto start = Clock::now();
    const int result = fib();
    const double s = seconds_since(start);
    wrong |= result != fib_value(kFibN);
    return s;
  }, "ms_total");
  if (wrong) state.SkipWithError("wrong fib result");
}

// `root(pool)` computes fib(kFibN) on a worker of a `workers` pool, as every
// other call does.
template <class Root>
void run_fib_quell(benchmark::State& state, std::size_t workers, Root root) {
  quell::ThreadPool pool(workers);
  run_fib(state, [&] { return pool.submit([&pool, &root] { return root(pool); }).get(); });
}

// The same through tbb::task_group, in an arena of `workers` threads (the
// calling thread and workers - 1).
inline void run_fib_tbb(benchmark::State& state, std::size_t workers) {
  tbb::task_arena arena(static_cast<int>(workers));
  run_fib(state, [&arena] {
    int result = 0;
    arena.execute([&result] { result = fib_tbb(kFibN); });
    return result;
  });
}

}  // namespace quell_bench
