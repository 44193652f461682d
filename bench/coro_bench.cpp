// quell's coroutine layer (API.md §10.9) against the floor task
// (bench/floor_task.hpp) and standalone Asio's awaitable, the same workload
// behind every peer. Run it through bench/run_coro_bench.sh: one benchmark
// per fresh process, shuffled, several rounds; the script also runs
// coro_instructions (C2's instruction counts, under callgrind) and
// coro_alloc (C3's allocation counts, C10's frame sizes), and prints every
// figure against its target.
//
// One binary, three translation units, because Asio's combinators are slow
// to compile: this one (C1-C6, C8, C11), coro_bench_when.cpp (C7, fan-out)
// and coro_bench_c9.cpp (C9); the sizes they share are in coro_bench.hpp.
//
// Names are <workload>/<peer>. Every benchmark times itself (UseManualTime,
// steady_clock), runs its workload once untimed first, and reports counters:
//   C1_await           ns_per_await, ms_total (= C8's 10^7 loop)
//   C2_cancellable     ns_per_await_default, ns_per_await_cancellable and
//                      delta_ns_per_await (median of paired differences)
//   C4_submit_get      ns_per_task (10^6 submitted, then every get())
//   C5_hop             ns_per_hop (10^6 hops in one coroutine)
//   C6_cancel          us_median, us_p90 (of kLatencySamples per process)
//   C7_when_any        us_median, us_p90 (of kWhenAnySamples per iteration,
//                      each timed inside the root coroutine)
//   C8_recursion       ms_total (10^6 deep)
//   C9_when_all        ms_parallel, ms_in_turn and speedup (median of the
//                      per-pair ratios in_turn / parallel)
//   C11_unwind         ns_per_level (chains 10 deep minus chains 0 deep)
//   fanout             ns_per_child (when_all of kFanout children)
//
// Threads. quell: a ThreadPool of two workers; the root coroutine runs on a
// worker, the main thread submits and waits. Asio: an io_context run by the
// calling thread (C1, C8: one thread, as the floor), or asio::thread_pool(2)
// (C4, C5, C6, and C7, C9, fanout: combinators over a pool of two, as
// quell's). Asio's combinators (parallel_group, and the awaitable operators
// built on it) are not thread-safe on a multi-threaded executor (asio#1348,
// asio#1630; TSan reports a race in the group's launch here), so their
// parents run on a strand of that pool. The floor runs on the calling
// thread.

#include <benchmark/benchmark.h>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/thread_pool.hpp>
#include <asio/use_future.hpp>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <future>
#include <thread>
#include <utility>
#include <vector>

#include "coro_bench.hpp"
#include "coro_workloads.hpp"
#include "harness.hpp"
#include "quell/coro.hpp"
#include "quell/thread_pool.hpp"
#include "quell/when.hpp"

namespace {

using namespace quell_bench::coro;  // sizes, checks, the harness (coro_bench.hpp)

// ---- C1: co_await a child that co_returns at once, 10^7 times -------------

template <class Loop>
void run_await_loop(benchmark::State& state, Loop loop) {
  long expected = kAwaits * (kAwaits - 1) / 2;
  run_timed(state, kAwaits, "ns_per_await", [&] {
    const auto start = Clock::now();
    const long sum = loop();
    const double s = seconds_since(start);
    check(sum == expected, "wrong sum");
    return s;
  }, "ms_total");
}

void C1_await_quell(benchmark::State& state) {
  quell::ThreadPool pool(kWorkers);
  run_await_loop(state, [&] { return pool.submit(quell_bench::quell_await_loop(kAwaits)).get(); });
}
void C1_await_floor(benchmark::State& state) {
  run_await_loop(state, [] { return quell_bench::floor_await_loop(kAwaits).run(); });
}
void C1_await_asio(benchmark::State& state) {
  run_await_loop(state, [] { return quell_bench::run_asio_await_loop(kAwaits); });
}
BENCHMARK(C1_await_quell)->Name("C1_await/quell")->UseManualTime()->Iterations(5);
BENCHMARK(C1_await_floor)->Name("C1_await/floor")->UseManualTime()->Iterations(5);
BENCHMARK(C1_await_asio)->Name("C1_await/asio")->UseManualTime()->Iterations(5);

// ---- C2: the same, the root's token cancellable vs default -----------------
// Paired in one process: each iteration runs both loops, alternating which
// goes first; delta is the median of the per-pair differences.

void C2_cancellable_quell(benchmark::State& state) {
  quell::ThreadPool pool(kWorkers);
  quell::CancellationSource source;
  const quell::TaskOptions cancellable = quell::TaskOptions().set_cancellation(source.token());
  const auto once = [&](const quell::TaskOptions& options) {
    const auto start = Clock::now();
    const long sum = pool.submit(quell_bench::quell_await_loop(kAwaits), options).get();
    const double s = seconds_since(start);
    check(sum == kAwaits * (kAwaits - 1) / 2, "wrong sum");
    return s;
  };
  const auto pairs = run_alternating(state, [&] { return once({}); }, [&] { return once(cancellable); });
  std::vector<double> diffs;
  double plain_total = 0, cancellable_total = 0;
  for (const auto& [plain, other] : pairs) {
    plain_total += plain;
    cancellable_total += other;
    diffs.push_back(other - plain);
  }
  const double per = 1e9 / (static_cast<double>(kAwaits) * static_cast<double>(state.iterations()));
  state.counters["ns_per_await_default"] = plain_total * per;
  state.counters["ns_per_await_cancellable"] = cancellable_total * per;
  state.counters["delta_ns_per_await"] = median(diffs) * 1e9 / static_cast<double>(kAwaits);
}
BENCHMARK(C2_cancellable_quell)->Name("C2_cancellable/quell")->UseManualTime()->Iterations(6);

// ---- C4: submit a root from outside, 10^6, then get() each ----------------

quell::Task<void> empty_task() { co_return; }
asio::awaitable<void> asio_empty() { co_return; }

template <class Submit, class Future>
void run_submit_get(benchmark::State& state, Submit submit, std::vector<Future>& futures) {
  futures.reserve(kSubmits);
  run_timed(state, kSubmits, "ns_per_task", [&] {
    const auto start = Clock::now();
    for (std::size_t i = 0; i < kSubmits; ++i) futures.push_back(submit());
    for (auto& future : futures) future.get();
    const double s = seconds_since(start);
    futures.clear();
    return s;
  });
}

void C4_submit_get_quell_task(benchmark::State& state) {
  quell::ThreadPool pool(kWorkers);
  std::vector<quell::Future<void>> futures;
  run_submit_get(state, [&] { return pool.submit(empty_task()); }, futures);
}
void C4_submit_get_quell_lambda(benchmark::State& state) {
  quell::ThreadPool pool(kWorkers);
  std::vector<quell::Future<void>> futures;
  run_submit_get(state, [&] { return pool.submit([] {}); }, futures);
}
void C4_submit_get_asio(benchmark::State& state) {
  asio::thread_pool pool(kWorkers);
  std::vector<std::future<void>> futures;
  run_submit_get(state, [&] { return asio::co_spawn(pool, asio_empty(), asio::use_future); },
                 futures);
  pool.join();
}
BENCHMARK(C4_submit_get_quell_task)->Name("C4_submit_get/quell_task")->UseManualTime()->Iterations(3);
BENCHMARK(C4_submit_get_quell_lambda)
    ->Name("C4_submit_get/quell_lambda")
    ->UseManualTime()
    ->Iterations(3);
BENCHMARK(C4_submit_get_asio)->Name("C4_submit_get/asio_co_spawn")->UseManualTime()->Iterations(3);

// ---- C5: hop onto the pool from a worker, 10^6 times -----------------------

quell::Task<void> quell_hops(quell::ThreadPool& pool, long n) {
  for (long i = 0; i < n; ++i) co_await quell::schedule(pool);
}
asio::awaitable<void> asio_hops(long n) {
  auto executor = co_await asio::this_coro::executor;
  for (long i = 0; i < n; ++i) co_await asio::post(executor, asio::use_awaitable);
}

void C5_hop_quell(benchmark::State& state) {
  quell::ThreadPool pool(kWorkers);
  run_timed(state, kHops, "ns_per_hop", [&] {
    const auto start = Clock::now();
    pool.submit(quell_hops(pool, kHops)).get();
    return seconds_since(start);
  });
}
void C5_hop_asio(benchmark::State& state) {
  asio::thread_pool pool(kWorkers);
  run_timed(state, kHops, "ns_per_hop", [&] {
    const auto start = Clock::now();
    asio::co_spawn(pool, asio_hops(kHops), asio::use_future).get();
    return seconds_since(start);
  });
  pool.join();
}
BENCHMARK(C5_hop_quell)->Name("C5_hop/quell")->UseManualTime()->Iterations(3);
BENCHMARK(C5_hop_asio)->Name("C5_hop/asio")->UseManualTime()->Iterations(3);

// ---- C6: cancel a root parked in a 1 h sleep -> its completion --------------
// Each sample lets the pool go idle first (1 ms), as it would be with every
// root asleep; the main thread then spins until it sees the outcome.

void report_latencies(benchmark::State& state, const std::function<double()>& sample) {
  std::vector<double> us;
  sample();  // warm-up
  for (auto _ : state) {
    double total = 0;
    for (int i = 0; i < kLatencySamples; ++i) {
      const double s = sample();
      total += s;
      us.push_back(s * 1e6);
    }
    state.SetIterationTime(total);
  }
  report_percentiles(state, std::move(us));
}

void spin_until(const std::atomic<int>& flag) {
  while (flag.load(std::memory_order_acquire) == 0) {
  }
}

// Reads the clock when the coroutine's locals die: after the cancelled
// sleep resumed it (and, in the throwing form, the exception left the body).
struct EndStamp {
  Clock::time_point* at;
  ~EndStamp() { *at = Clock::now(); }
};

quell::Task<void> sleep_an_hour(std::atomic<int>* started, Clock::time_point* ended) {
  EndStamp stamp{ended};
  started->store(1, std::memory_order_release);
  co_await quell::sleep_for(1h);
}
quell::Task<void> sleep_an_hour_as_result(std::atomic<int>* started, Clock::time_point* ended) {
  EndStamp stamp{ended};
  started->store(1, std::memory_order_release);
  auto r = co_await quell::as_result(quell::sleep_for(1h));
  if (r.cancelled()) co_yield quell::cancelled;
}

// cancel() -> the future ready, the root woken by a cancelled sleep that
// throws (`co_await sleep_for(1h)`) or not (as_result + co_yield cancelled).
// Also us_to_locals_end: cancel() -> the coroutine's locals destroyed, and
// us_in_cancel_call: how long cancel() itself took.
// Block: the main thread blocks in wait() instead of spinning on ready()
// (with it spinning, one of the two CPUs is taken while the pool works).
template <bool AsResult, bool Block = false>
void C6_cancel_quell(benchmark::State& state) {
  quell::ThreadPool pool(kWorkers);
  std::vector<double> to_end, cancel_call;
  report_latencies(state, [&] {
    std::atomic<int> started{0};
    Clock::time_point ended;
    auto handle = AsResult ? pool.handle(sleep_an_hour_as_result(&started, &ended))
                           : pool.handle(sleep_an_hour(&started, &ended));
    spin_until(started);
    while (pool.stats().suspended == 0) std::this_thread::yield();
    std::this_thread::sleep_for(1ms);
    const auto start = Clock::now();
    handle.cancel();
    cancel_call.push_back(seconds_since(start) * 1e6);
    if constexpr (Block) handle.wait();
    while (!handle.future().ready()) {
    }
    const double s = seconds_since(start);
    check(handle.status() == quell::TaskStatus::cancelled, "not cancelled");
    to_end.push_back(std::chrono::duration<double>(ended - start).count() * 1e6);
    return s;
  });
  state.counters["us_to_locals_end_median"] = median(to_end);
  state.counters["us_in_cancel_call_median"] = median(cancel_call);
}
// submit -> the first instruction of a lambda, on an idle pool.
void C6_cancel_quell_submit_start(benchmark::State& state) {
  quell::ThreadPool pool(kWorkers);
  report_latencies(state, [&] {
    std::this_thread::sleep_for(1ms);
    std::atomic<int> ran{0};
    Clock::time_point started;
    const auto start = Clock::now();
    auto future = pool.submit([&] {
      started = Clock::now();
      ran.store(1, std::memory_order_release);
    });
    spin_until(ran);
    future.get();
    return std::chrono::duration<double>(started - start).count();
  });
}
// Asio: a coroutine on thread_pool(2) waiting on a 1 h steady_timer, its
// co_spawn completion bound to a cancellation slot; emit() posted to the
// pool -> the completion handler runs (it reads the clock).
void C6_cancel_asio(benchmark::State& state) {
  asio::thread_pool pool(kWorkers);
  report_latencies(state, [&] {
    auto signal = std::make_unique<asio::cancellation_signal>();
    std::atomic<int> started{0}, done{0};
    Clock::time_point ended;
    asio::co_spawn(
        pool,
        [&started]() -> asio::awaitable<void> {
          asio::steady_timer timer(co_await asio::this_coro::executor, 1h);
          started.store(1, std::memory_order_release);
          co_await timer.async_wait(asio::use_awaitable);
        },
        asio::bind_cancellation_slot(signal->slot(), [&](std::exception_ptr) {
          ended = Clock::now();
          done.store(1, std::memory_order_release);
        }));
    spin_until(started);
    std::this_thread::sleep_for(1ms);
    const auto start = Clock::now();
    asio::post(pool.get_executor(),
               [&signal] { signal->emit(asio::cancellation_type::terminal); });
    spin_until(done);
    return std::chrono::duration<double>(ended - start).count();
  });
  pool.join();
}
BENCHMARK(C6_cancel_quell<false>)->Name("C6_cancel/quell")->UseManualTime()->Iterations(1);
BENCHMARK(C6_cancel_quell<true>)
    ->Name("C6_cancel/quell_as_result")
    ->UseManualTime()
    ->Iterations(1);
BENCHMARK(C6_cancel_quell<false, true>)
    ->Name("C6_cancel/quell_blocking_wait")
    ->UseManualTime()
    ->Iterations(1);
BENCHMARK(C6_cancel_quell_submit_start)
    ->Name("C6_cancel/quell_submit_start")
    ->UseManualTime()
    ->Iterations(1);
BENCHMARK(C6_cancel_asio)->Name("C6_cancel/asio")->UseManualTime()->Iterations(1);
// ---- C8: recursion 10^6 deep (the 10^7 loop is C1's ms_total) -------------

template <class Recurse>
void run_recursion(benchmark::State& state, Recurse recurse) {
  run_timed(state, 1, "ns_total", [&] {
    const auto start = Clock::now();
    const long depth = recurse();
    const double s = seconds_since(start);
    check(depth == kDepth, "wrong depth");
    return s;
  }, "ms_total");
}
void C8_recursion_quell(benchmark::State& state) {
  quell::ThreadPool pool(kWorkers);
  run_recursion(state, [&] { return pool.submit(quell_bench::quell_recurse(kDepth)).get(); });
}
void C8_recursion_floor(benchmark::State& state) {
  run_recursion(state, [] { return quell_bench::floor_recurse(kDepth).run(); });
}
void C8_recursion_asio(benchmark::State& state) {
  run_recursion(state, [] { return quell_bench::run_asio_recurse(kDepth); });
}
BENCHMARK(C8_recursion_quell)->Name("C8_recursion/quell")->UseManualTime()->Iterations(3);
BENCHMARK(C8_recursion_floor)->Name("C8_recursion/floor")->UseManualTime()->Iterations(3);
BENCHMARK(C8_recursion_asio)->Name("C8_recursion/asio")->UseManualTime()->Iterations(3);

// ---- C11: a cancelled chain unwinding, per level ---------------------------
// Chains kUnwindLevels deep and chains 0 deep (the leaf alone, same set-up),
// alternating; per level: the difference over kUnwindLevels. On the calling
// thread's sync_wait loop.

template <bool AsResult>
void C11_unwind(benchmark::State& state) {
  const auto chains = [](int levels) {
    const auto start = Clock::now();
    for (int i = 0; i < kUnwindChains; ++i) {
      check(quell_bench::unwind_once<AsResult>(levels), "not cancelled");
    }
    return seconds_since(start);
  };
  chains(kUnwindLevels);
  chains(0);
  double deep = 0, shallow = 0;
  for (auto _ : state) {
    const double d = chains(kUnwindLevels);
    const double s = chains(0);
    state.SetIterationTime(d + s);
    deep += d;
    shallow += s;
  }
  const double per_chain = 1e9 / (static_cast<double>(kUnwindChains) * state.iterations());
  state.counters["ns_per_chain_deep"] = deep * per_chain;
  state.counters["ns_per_chain_0"] = shallow * per_chain;
  state.counters["ns_per_level"] = (deep - shallow) * per_chain / kUnwindLevels;
}
BENCHMARK(C11_unwind<true>)->Name("C11_unwind/quell_as_result")->UseManualTime()->Iterations(5);
BENCHMARK(C11_unwind<false>)->Name("C11_unwind/quell_throw")->UseManualTime()->Iterations(5);

}  // namespace

BENCHMARK_MAIN();
