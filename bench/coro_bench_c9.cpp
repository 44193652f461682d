// coro_bench's C9 (API.md §10.9): when_all of 64 children against Asio's
// parallel_group of 64, alone in its translation unit because that group
// takes as long to compile as the rest of coro_bench. See coro_bench.cpp for
// the method, the threads and the counters.

#include <benchmark/benchmark.h>

#include <asio/post.hpp>
#include <asio/strand.hpp>
#include <asio/this_coro.hpp>
#include <asio/thread_pool.hpp>
#include <asio/use_future.hpp>
#include <chrono>
#include <cstddef>
#include <utility>
#include <vector>

#include "asio_group.hpp"
#include "coro_bench.hpp"
#include "coro_workloads.hpp"
#include "harness.hpp"
#include "quell/coro.hpp"
#include "quell/thread_pool.hpp"
#include "quell/when.hpp"

namespace {

using namespace quell_bench::coro;  // sizes, checks, the harness (coro_bench.hpp)

// ---- C9: when_all of 64 children, each computing fib(22) --------------------
// Each child computes fib(kFibN) by plain recursion, inside one coroutine
// (fib.hpp's fork-join fib would pull in TBB). The parallel form against the
// same children awaited in turn, paired in one process as C2: each
// iteration runs both, alternating which goes first; speedup is the median
// of the per-pair ratios. Each form is timed inside its root coroutine, from
// before its children are made to after their values are summed (so the
// root's own start and the main thread's wake-up are not in it, the idle
// second worker's wake-up is). quell: `when_all` over a
// std::vector<Task<int>>.
// Asio on thread_pool(2), the parent on a strand: a parallel_group of 64
// co_spawned children, wait_for_all (Asio 1.22's group is variadic: a group
// over a range came in a later release). co_spawn enters its coroutine
// through dispatch(), which on a pool thread runs it inline, so that group,
// its children on the parent's strand, runs them one after another on the
// parent's thread; asio_group_posted's children are spawned on the pool
// itself and first post themselves to it, so they run in parallel (their
// completions reach the group from either thread, which its atomics allow).

constexpr int fib_recursive(int n) {
  return n < 2 ? n : fib_recursive(n - 1) + fib_recursive(n - 2);
}
constexpr long kFibSum = static_cast<long>(kFibChildren) * fib_recursive(kFibN);

quell::Task<int> quell_fib_child(int n) {
  benchmark::DoNotOptimize(n);  // computed here, not at compile time
  co_return fib_recursive(n);
}
struct TimedSum {
  long sum;
  double seconds;
};

quell::Task<TimedSum> quell_fib_when_all() {
  const auto start = Clock::now();
  std::vector<quell::Task<int>> children;
  children.reserve(kFibChildren);
  for (int i = 0; i < kFibChildren; ++i) children.push_back(quell_fib_child(kFibN));
  const std::vector<int> values = co_await quell::when_all(std::move(children));
  long sum = 0;
  for (const int value : values) sum += value;
  co_return TimedSum{sum, seconds_since(start)};
}
quell::Task<TimedSum> quell_fib_in_turn() {
  const auto start = Clock::now();
  long sum = 0;
  for (int i = 0; i < kFibChildren; ++i) sum += co_await quell_fib_child(kFibN);
  co_return TimedSum{sum, seconds_since(start)};
}

// Posted: the child first posts itself to the pool.
asio::awaitable<int> asio_fib_child(int n, bool posted) {
  if (posted) {
    const auto executor = co_await asio::this_coro::executor;
    co_await asio::post(executor, asio::use_awaitable);
  }
  benchmark::DoNotOptimize(n);
  co_return fib_recursive(n);
}
asio::awaitable<TimedSum> asio_fib_in_turn() {
  const auto start = Clock::now();
  long sum = 0;
  for (int i = 0; i < kFibChildren; ++i) sum += co_await asio_fib_child(kFibN, false);
  co_return TimedSum{sum, seconds_since(start)};
}
// One type for both groups: a 64-way group is slow to compile.
struct AsioFibChild {
  bool posted;
  asio::awaitable<int> operator()() const { return asio_fib_child(kFibN, posted); }
};

// The group of asio_group_posted (Posted) or asio_parallel_group, timed.
asio::awaitable<TimedSum> asio_fib_group(asio::any_io_executor children, bool posted) {
  const auto start = Clock::now();
  const long sum = co_await quell_bench::asio_group_sum<kFibChildren>(children, AsioFibChild{posted});
  co_return TimedSum{sum, seconds_since(start)};
}

template <class Parallel, class InTurn>
void run_fib_pairs(benchmark::State& state, Parallel parallel, InTurn in_turn) {
  const auto once = [](auto& run) {
    const TimedSum timed = run();
    check(timed.sum == kFibSum, "wrong fib sum");
    return timed.seconds;
  };
  const auto pairs = run_alternating(state, [&] { return once(parallel); }, [&] { return once(in_turn); });
  std::vector<double> ratios;
  double parallel_total = 0, in_turn_total = 0;
  for (const auto& [p, t] : pairs) {
    parallel_total += p;
    in_turn_total += t;
    ratios.push_back(t / p);
  }
  const double iterations = static_cast<double>(state.iterations());
  state.counters["ms_parallel"] = parallel_total * 1e3 / iterations;
  state.counters["ms_in_turn"] = in_turn_total * 1e3 / iterations;
  state.counters["speedup"] = median(ratios);
}

void C9_when_all_quell(benchmark::State& state) {
  quell::ThreadPool pool(kWorkers);
  run_fib_pairs(
      state, [&] { return pool.submit(quell_fib_when_all()).get(); },
      [&] { return pool.submit(quell_fib_in_turn()).get(); });
}
template <bool Posted>
void C9_when_all_asio(benchmark::State& state) {
  asio::thread_pool pool(kWorkers);
  const auto strand = asio::make_strand(pool);
  const asio::any_io_executor children =
      Posted ? asio::any_io_executor(pool.get_executor()) : asio::any_io_executor(strand);
  run_fib_pairs(
      state,
      [&] {
        return asio::co_spawn(strand, asio_fib_group(children, Posted), asio::use_future).get();
      },
      [&] { return asio::co_spawn(strand, asio_fib_in_turn(), asio::use_future).get(); });
  pool.join();
}
BENCHMARK(C9_when_all_quell)->Name("C9_when_all/quell")->UseManualTime()->Iterations(20);
BENCHMARK(C9_when_all_asio<false>)
    ->Name("C9_when_all/asio_parallel_group")
    ->UseManualTime()
    ->Iterations(20);
BENCHMARK(C9_when_all_asio<true>)
    ->Name("C9_when_all/asio_group_posted")
    ->UseManualTime()
    ->Iterations(20);

}  // namespace
