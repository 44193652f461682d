// coro_bench's combinators with small groups (API.md §10.9): C7 (when_any)
// and fan-out, against Asio's awaitable operators and parallel_group. See
// coro_bench.cpp for the method, the threads and the counters.

#include <benchmark/benchmark.h>

#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>
#include <asio/this_coro.hpp>
#include <asio/thread_pool.hpp>
#include <asio/use_future.hpp>
#include <chrono>
#include <cstddef>
#include <tuple>
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

// ---- C7: when_any(a ready child, a child asleep for 1 h), end to end --------
// A root coroutine times kWhenAnySamples co_awaits back to back, each from
// before its children are made to after it resumed: the ready child wins,
// and the sleeper is cancelled and joined (coro_workloads.hpp). quell:
// `when_any(ready, sleeper)` as API.md states it; the sleeper first (it
// starts inline and parks in its sleep, usually before the ready child
// runs, so its cancellation withdraws a timer and posts it); and no_throw,
// the sleeper in its as_result form (what the loser's OperationCancelled
// costs). Asio on a strand of thread_pool(2): `ready() ||
// timer.async_wait()` (awaitable_operators: a parallel_group of two
// co_spawns, waiting for one success and cancelling the other), and the
// timer first.

using quell_bench::WhenAnyForm;

// Returns the samples, in seconds. Aborts (through the root's get()) unless
// the ready child won and every sleeper that started has ended.
template <WhenAnyForm Form>
quell::Task<std::vector<double>> quell_when_any_samples(int n) {
  quell_bench::SleeperCounts sleepers;
  std::vector<double> samples;
  samples.reserve(n);
  for (int i = 0; i < n; ++i) {
    const auto start = Clock::now();
    const auto winner = co_await quell_bench::quell_when_any<Form>(&sleepers, kReady);
    samples.push_back(seconds_since(start));
    check(quell_bench::ready_value<Form>(winner) == kReady, "when_any: the ready child did not win");
    check(sleepers.started == sleepers.ended, "when_any resumed before its loser ended");
  }
  co_return samples;
}

asio::awaitable<std::vector<double>> asio_when_any_samples(int n, bool timer_first) {
  using namespace asio::experimental::awaitable_operators;
  const auto executor = co_await asio::this_coro::executor;
  std::vector<double> samples;
  samples.reserve(n);
  for (int i = 0; i < n; ++i) {
    const auto start = Clock::now();
    asio::steady_timer timer(executor, 1h);
    int value = 0;
    if (timer_first) {
      const auto winner =
          co_await (timer.async_wait(asio::use_awaitable) || quell_bench::asio_child(kReady));
      value = winner.index() == 1 ? std::get<1>(winner) : -1;
    } else {
      const auto winner =
          co_await (quell_bench::asio_child(kReady) || timer.async_wait(asio::use_awaitable));
      value = winner.index() == 0 ? std::get<0>(winner) : -1;
    }
    samples.push_back(seconds_since(start));
    check(value == kReady, "||: the ready child did not win");
  }
  co_return samples;
}

// Runs `batch` (which returns samples in seconds) untimed, then once per
// iteration: us_median and us_p90 over every sample.
template <class Batch>
void report_batch_latencies(benchmark::State& state, Batch batch) {
  batch();  // warm-up
  std::vector<double> us;
  for (auto _ : state) {
    double total = 0;
    for (const double s : batch()) {
      total += s;
      us.push_back(s * 1e6);
    }
    state.SetIterationTime(total);
  }
  report_percentiles(state, std::move(us));
}

template <WhenAnyForm Form>
void C7_when_any_quell(benchmark::State& state) {
  quell::ThreadPool pool(kWorkers);
  report_batch_latencies(
      state, [&] { return pool.submit(quell_when_any_samples<Form>(kWhenAnySamples)).get(); });
}
template <bool TimerFirst>
void C7_when_any_asio(benchmark::State& state) {
  asio::thread_pool pool(kWorkers);
  report_batch_latencies(state, [&] {
    return asio::co_spawn(asio::make_strand(pool),
                          asio_when_any_samples(kWhenAnySamples, TimerFirst), asio::use_future)
        .get();
  });
  pool.join();
}
BENCHMARK(C7_when_any_quell<WhenAnyForm::ready_first>)
    ->Name("C7_when_any/quell")
    ->UseManualTime()
    ->Iterations(3);
BENCHMARK(C7_when_any_quell<WhenAnyForm::sleeper_first>)
    ->Name("C7_when_any/quell_sleeper_first")
    ->UseManualTime()
    ->Iterations(3);
BENCHMARK(C7_when_any_quell<WhenAnyForm::no_throw>)
    ->Name("C7_when_any/quell_no_throw")
    ->UseManualTime()
    ->Iterations(3);
BENCHMARK(C7_when_any_asio<false>)->Name("C7_when_any/asio")->UseManualTime()->Iterations(3);
BENCHMARK(C7_when_any_asio<true>)
    ->Name("C7_when_any/asio_timer_first")
    ->UseManualTime()
    ->Iterations(3);

// ---- fanout: when_all of 1,000 children that co_return at once --------------
// kFanouts fan-outs in one root per iteration, the children made, started,
// joined and their values summed; ns per child. quell: `when_all` over a
// std::vector<Task<int>>. Asio on a strand of thread_pool(2):
// parallel_groups of co_spawned children, wait_for_all. Asio 1.22's group is
// variadic only (and slow to compile past a few dozen), so each fan-out is
// kFanout / kAsioGroup groups of kAsioGroup children, awaited in turn. (Not
// a group of groups: on the strand, an inner group's completion resumes the
// outer parent inline while Asio's co_spawn is still on the stack, and the
// process crashes in co_spawn_entry_point; on the bare pool TSan reports
// the race of asio#1630. Asio runs these children inline on the parent's
// thread either way, so awaiting the groups in turn changes little.)

static_assert(kFanout % kAsioGroup == 0);

quell::Task<long> quell_fanouts(int rounds) {
  long sum = 0;
  for (int r = 0; r < rounds; ++r) {
    std::vector<quell::Task<int>> children;
    children.reserve(kFanout);
    for (int i = 0; i < kFanout; ++i) children.push_back(quell_bench::quell_child(1));
    const std::vector<int> values = co_await quell::when_all(std::move(children));
    for (const int value : values) sum += value;
  }
  co_return sum;
}

asio::awaitable<long> asio_fanouts(int rounds) {
  const asio::any_io_executor executor = co_await asio::this_coro::executor;
  long sum = 0;
  for (int r = 0; r < rounds; ++r) {
    for (int g = 0; g < kFanout / kAsioGroup; ++g) {
      sum +=
          co_await quell_bench::asio_group_sum<kAsioGroup>(executor, [] { return quell_bench::asio_child(1); });
    }
  }
  co_return sum;
}

template <class Fanouts>
void run_fanouts(benchmark::State& state, Fanouts fanouts) {
  run_timed(state, static_cast<std::size_t>(kFanouts) * kFanout, "ns_per_child", [&] {
    const auto start = Clock::now();
    const long sum = fanouts();
    const double s = seconds_since(start);
    check(sum == static_cast<long>(kFanouts) * kFanout, "wrong fan-out sum");
    return s;
  });
}
void fanout_quell(benchmark::State& state) {
  quell::ThreadPool pool(kWorkers);
  run_fanouts(state, [&] { return pool.submit(quell_fanouts(kFanouts)).get(); });
}
void fanout_asio(benchmark::State& state) {
  asio::thread_pool pool(kWorkers);
  run_fanouts(state, [&] {
    return asio::co_spawn(asio::make_strand(pool), asio_fanouts(kFanouts), asio::use_future).get();
  });
  pool.join();
}
BENCHMARK(fanout_quell)->Name("fanout/quell")->UseManualTime()->Iterations(5);
BENCHMARK(fanout_asio)->Name("fanout/asio_parallel_group")->UseManualTime()->Iterations(5);

}  // namespace
