// quell's ThreadPool against oneTBB, boost::asio::thread_pool and a naive
// mutex + condition_variable pool (bench/naive_pool.hpp), the same workload
// behind every peer. Run it through bench/run_pool_bench.sh: one benchmark
// per fresh process, shuffled, several rounds (allocator state left by one
// benchmark changes the next one by up to 4x in a shared process).
//
// Names are <workload>/<peer>; the script compares each peer with the one
// called "quell" in the same workload. Every benchmark times itself
// (UseManualTime, steady_clock) and reports its metrics as counters:
//   ns_per_task (W1, W5, W6), ns_per_spawn and ms_total (W2),
//   ms_cancel_to_ready and bytes per queued task (W5: see there),
//   ns_submit_per_task and the paired token_* counters (W6: see there).
// Each benchmark runs its workload once untimed first (threads started,
// heap grown, the pool's free lists filled), then a fixed number of timed
// iterations; a sample is their mean.
//
// Threads. Every pool has two workers, created once per benchmark outside
// the timed loop. quell, asio and the naive pool: two workers, the main
// thread only submits and waits (blocked). oneTBB:
//   tbb_task_group  a task_arena(2) (max_concurrency 2, one slot reserved
//                   for the main thread): the main thread runs the group
//                   inside arena.execute() and works in wait(); one TBB
//                   worker joins. Two threads execute, as for quell.
//   tbb_arena_*     a task_arena(2, 0): both slots for TBB workers, filled
//                   by the two workers global_control allows (main() raises
//                   max_allowed_parallelism to 3 = main + 2); the main thread
//                   enqueues from outside the arena, as for quell.

#include <benchmark/benchmark.h>
#include <dlfcn.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <future>
#include <thread>
#include <utility>
#include <vector>

#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

#include "fib.hpp"
#include "harness.hpp"
#include "naive_pool.hpp"
#include "quell/thread_pool.hpp"

namespace {

using quell_bench::Blocker;
using quell_bench::Clock;
using quell_bench::Countdown;
using quell_bench::NaivePool;
using quell_bench::run_timed;
using quell_bench::seconds_since;

constexpr std::size_t kWorkers = 2;
constexpr std::size_t kThroughputTasks = 1'000'000;  // W1
constexpr std::size_t kCancelTasks = 100'000;        // W5
constexpr std::size_t kTokenTasks = 100'000;         // W6

// ---- measurement helpers -------------------------------------------------

// Bytes the C allocator has handed out (all arenas; mmapped blocks too).
std::size_t heap_in_use() {
  const struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
}

std::size_t resident_bytes() {
  long pages_total = 0;
  long pages_resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages_total, &pages_resident) != 2) pages_resident = 0;
    std::fclose(f);
  }
  return static_cast<std::size_t>(pages_resident) * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}

// oneTBB allocates its tasks through tbbmalloc when it can load it; those
// bytes are invisible to mallinfo2 (only the resident growth shows them).
bool tbbmalloc_loaded() {
  void* lib = dlopen("libtbbmalloc.so.2", RTLD_LAZY | RTLD_NOLOAD);
  if (lib != nullptr) dlclose(lib);
  return lib != nullptr;
}

// Touches a vector's reserved storage, so that its pages do not show up as
// resident growth during a measurement (the storage holds no objects yet).
template <class T>
void prefault(std::vector<T>& v) {
  std::memset(static_cast<void*>(v.data()), 0, v.capacity() * sizeof(T));
}

struct Footprint {
  std::size_t heap = heap_in_use();
  std::size_t rss = resident_bytes();
};

double per_task(std::size_t before, std::size_t after, std::size_t tasks) {
  return after >= before ? static_cast<double>(after - before) / static_cast<double>(tasks)
                         : -static_cast<double>(before - after) / static_cast<double>(tasks);
}

// std::packaged_task for TBB's enqueue, which calls its functor as const.
struct PackagedRunner {
  mutable std::packaged_task<void()> task;
  void operator()() const { task(); }
};

// ---- W1: throughput, 1,000,000 empty tasks from one outside thread ------

void w1_quell_post(benchmark::State& state) {
  quell::ThreadPool pool(kWorkers);
  run_timed(state, kThroughputTasks, "ns_per_task", [&] {
    const auto start = Clock::now();
    for (std::size_t i = 0; i < kThroughputTasks; ++i) pool.post([] {});
    pool.wait_idle();
    return seconds_since(start);
  });
}

void w1_quell_submit(benchmark::State& state) {
  quell::ThreadPool pool(kWorkers);
  std::vector<quell::Future<void>> futures;
  futures.reserve(kThroughputTasks);
  run_timed(state, kThroughputTasks, "ns_per_task", [&] {
    const auto start = Clock::now();
    for (std::size_t i = 0; i < kThroughputTasks; ++i) futures.push_back(pool.submit([] {}));
    for (auto& future : futures) future.get();
    futures.clear();
    return seconds_since(start);
  });
}

void w1_tbb_task_group(benchmark::State& state) {
  tbb::task_arena arena(static_cast<int>(kWorkers));  // one slot is the main thread's
  run_timed(state, kThroughputTasks, "ns_per_task", [&] {
    const auto start = Clock::now();
    arena.execute([] {
      tbb::task_group group;
      for (std::size_t i = 0; i < kThroughputTasks; ++i) group.run([] {});
      group.wait();
    });
    return seconds_since(start);
  });
}

void w1_tbb_arena_enqueue(benchmark::State& state) {
  tbb::task_arena arena(static_cast<int>(kWorkers), 0);
  Countdown countdown;
  run_timed(state, kThroughputTasks, "ns_per_task", [&] {
    const auto start = Clock::now();
    countdown.reset(kThroughputTasks);
    for (std::size_t i = 0; i < kThroughputTasks; ++i) {
      arena.enqueue([&countdown] { countdown.arrive(); });
    }
    countdown.wait();
    return seconds_since(start);
  });
}

void w1_tbb_arena_packaged_task(benchmark::State& state) {
  tbb::task_arena arena(static_cast<int>(kWorkers), 0);
  std::vector<std::future<void>> futures;
  futures.reserve(kThroughputTasks);
  run_timed(state, kThroughputTasks, "ns_per_task", [&] {
    const auto start = Clock::now();
    for (std::size_t i = 0; i < kThroughputTasks; ++i) {
      std::packaged_task<void()> task([] {});
      futures.push_back(task.get_future());
      arena.enqueue(PackagedRunner{std::move(task)});
    }
    for (auto& future : futures) future.get();
    futures.clear();
    return seconds_since(start);
  });
}

void w1_asio_post(benchmark::State& state) {
  boost::asio::thread_pool pool(kWorkers);
  Countdown countdown;
  run_timed(state, kThroughputTasks, "ns_per_task", [&] {
    const auto start = Clock::now();
    countdown.reset(kThroughputTasks);
    for (std::size_t i = 0; i < kThroughputTasks; ++i) {
      boost::asio::post(pool, [&countdown] { countdown.arrive(); });
    }
    countdown.wait();
    return seconds_since(start);
  });
  pool.join();
}

void w1_asio_packaged_task(benchmark::State& state) {
  boost::asio::thread_pool pool(kWorkers);
  std::vector<std::future<void>> futures;
  futures.reserve(kThroughputTasks);
  run_timed(state, kThroughputTasks, "ns_per_task", [&] {
    const auto start = Clock::now();
    for (std::size_t i = 0; i < kThroughputTasks; ++i) {
      std::packaged_task<void()> task([] {});
      futures.push_back(task.get_future());
      boost::asio::post(pool, std::move(task));
    }
    for (auto& future : futures) future.get();
    futures.clear();
    return seconds_since(start);
  });
  pool.join();
}

void w1_naive_post(benchmark::State& state) {
  NaivePool pool(kWorkers);
  Countdown countdown;
  run_timed(state, kThroughputTasks, "ns_per_task", [&] {
    const auto start = Clock::now();
    countdown.reset(kThroughputTasks);
    for (std::size_t i = 0; i < kThroughputTasks; ++i) {
      pool.post([&countdown] { countdown.arrive(); });
    }
    countdown.wait();
    return seconds_since(start);
  });
}

// std::function needs a copyable callable, so no packaged_task: the task
// holds a pointer to its promise, which the submitter keeps (as it keeps
// the future); the pointer fits std::function's inline buffer.
void w1_naive_promise(benchmark::State& state) {
  NaivePool pool(kWorkers);
  std::vector<std::promise<void>> promises;
  std::vector<std::future<void>> futures;
  promises.reserve(kThroughputTasks);
  futures.reserve(kThroughputTasks);
  run_timed(state, kThroughputTasks, "ns_per_task", [&] {
    const auto start = Clock::now();
    for (std::size_t i = 0; i < kThroughputTasks; ++i) {
      std::promise<void>& promise = promises.emplace_back();
      futures.push_back(promise.get_future());
      pool.post([&promise] { promise.set_value(); });
    }
    for (auto& future : futures) future.get();
    futures.clear();
    promises.clear();
    return seconds_since(start);
  });
}

// ---- W2: fork-join fib(25), one spawn per call with n >= 2, no cutoff ----
//
// Only the pools whose waits help: asio and the naive pool are left out, as
// a worker blocked in get() would hold its thread while the child it waits
// for sits in the queue behind it, and with two workers that deadlocks.

void w2_quell(benchmark::State& state) {
  quell_bench::run_fib_quell(state, kWorkers, [](quell::ThreadPool& pool) {
    return quell_bench::fib_submit(pool, quell_bench::kFibN);
  });
}

void w2_tbb_task_group(benchmark::State& state) { quell_bench::run_fib_tbb(state, kWorkers); }

// ---- W5: cancel latency and bytes per queued task -------------------------
//
// Every iteration: block every worker that could take the tasks, queue
// 100,000 empty tasks, then time only the cancellation (see each peer), then
// unblock and drain untimed. Bytes per queued task: growth of the C heap
// (mallinfo2) and of the resident set across the 100,000 submissions, with
// the vectors of futures reserved and touched beforehand; B_handle is what the
// submitter keeps per task on top (sizeof future, and promise). The _cold
// counters are from the warm-up iteration (a pool that never queued that
// many before: its free lists grow), the others the mean of the timed ones.

struct Bytes {
  double heap_cold = 0, rss_cold = 0, heap_warm = 0;
  int warm_samples = -1;  // the first sample is the cold one

  void add(const Footprint& before, const Footprint& after, std::size_t tasks) {
    const double heap = per_task(before.heap, after.heap, tasks);
    const double rss = per_task(before.rss, after.rss, tasks);
    if (warm_samples++ < 0) {
      heap_cold = heap;
      rss_cold = rss;
    } else {
      heap_warm += heap;  // resident growth is ~0 once the heap has grown
    }
  }
  void report(benchmark::State& state, std::size_t handle_bytes) const {
    state.counters["B_per_task_heap_cold"] = heap_cold;
    state.counters["B_per_task_rss_cold"] = rss_cold;
    if (warm_samples > 0) {
      state.counters["B_per_task_heap"] = heap_warm / warm_samples;
    }
    state.counters["B_handle"] = static_cast<double>(handle_bytes);
  }
};

// Timed: request_cancel() (which resolves every queued task inline, on
// this thread, while both workers stay blocked) plus the check that all
// 100,000 futures are ready.
void w5_quell(benchmark::State& state) {
  quell::ThreadPool pool(kWorkers);
  std::vector<quell::Future<void>> futures;
  futures.reserve(kCancelTasks);
  prefault(futures);
  Bytes bytes;
  bool not_ready = false;
  run_timed(state, kCancelTasks, "ns_per_task", [&] {
    Blocker blocker;
    for (std::size_t i = 0; i < kWorkers; ++i) pool.post(blocker.task());
    blocker.wait_started(kWorkers);
    quell::CancellationSource source;
    const quell::TaskOptions options = quell::TaskOptions().set_cancellation(source.token());
    const Footprint before;
    for (std::size_t i = 0; i < kCancelTasks; ++i) futures.push_back(pool.submit([] {}, options));
    bytes.add(before, Footprint(), kCancelTasks);

    const auto start = Clock::now();
    source.request_cancel();
    std::size_t ready = 0;
    for (const auto& future : futures) ready += future.ready() ? 1 : 0;
    const double s = seconds_since(start);

    not_ready |= ready != kCancelTasks;
    blocker.release();
    pool.wait_idle();
    futures.clear();
    return s;
  }, "ms_cancel_to_ready");
  bytes.report(state, sizeof(quell::Future<void>));
  if (not_ready) state.SkipWithError("futures not ready when request_cancel() returned");
}

// The arena's one worker is blocked; the main thread (its other slot) runs
// 100,000 group.run() into its own deque. Timed: group.cancel() plus
// group.wait(), in which the main thread itself pops and disposes of every
// task (TBB skips the body of a task whose group is cancelled). Nothing runs
// on the blocked worker.
void w5_tbb_task_group(benchmark::State& state) {
  tbb::task_arena arena(static_cast<int>(kWorkers));
  const auto arena_workers = static_cast<std::size_t>(arena.max_concurrency() - 1);  // one slot is reserved for us
  Bytes bytes;
  bool not_cancelled = false;
  run_timed(state, kCancelTasks, "ns_per_task", [&] {
    double s = 0;
    Blocker blocker;
    arena.execute([&] {
      for (std::size_t i = 0; i < arena_workers; ++i) arena.enqueue(blocker.task());
      blocker.wait_started(arena_workers);
      tbb::task_group group;
      const Footprint before;
      for (std::size_t i = 0; i < kCancelTasks; ++i) group.run([] {});
      bytes.add(before, Footprint(), kCancelTasks);

      const auto start = Clock::now();
      group.cancel();
      const tbb::task_group_status status = group.wait();
      s = seconds_since(start);
      not_cancelled |= status != tbb::canceled;
    });
    blocker.release();
    return s;
  }, "ms_cancel_to_ready");
  state.counters["tbbmalloc"] = tbbmalloc_loaded() ? 1 : 0;
  bytes.report(state, 0);
  if (not_cancelled) state.SkipWithError("task_group::wait() did not report canceled");
}

// The peers that keep a future per task have no cancellation: bytes only.
// Their workers are blocked the same way, the 100,000 tasks queued, then the
// workers released and the futures waited for (untimed, not reported).
template <class Queue, class Block, class Release>
void w5_bytes_only(benchmark::State& state, std::size_t handle_bytes, Queue&& queue,
                   Block&& block, Release&& release) {
  Bytes bytes;
  auto once = [&] {
    Blocker blocker;
    block(blocker);
    const Footprint before;
    queue();
    bytes.add(before, Footprint(), kCancelTasks);
    blocker.release();
    release();
  };
  once();
  for (auto _ : state) {
    once();
    state.SetIterationTime(1e-9);  // no time to report: a placeholder
  }
  bytes.report(state, handle_bytes);
}

void w5_tbb_arena_packaged_task(benchmark::State& state) {
  tbb::task_arena arena(static_cast<int>(kWorkers), 0);
  std::vector<std::future<void>> futures;
  futures.reserve(kCancelTasks);
  prefault(futures);
  w5_bytes_only(
      state, sizeof(std::future<void>),
      [&] {
        for (std::size_t i = 0; i < kCancelTasks; ++i) {
          std::packaged_task<void()> task([] {});
          futures.push_back(task.get_future());
          arena.enqueue(PackagedRunner{std::move(task)});
        }
      },
      [&](Blocker& blocker) {
        for (std::size_t i = 0; i < kWorkers; ++i) arena.enqueue(blocker.task());
        blocker.wait_started(kWorkers);
      },
      [&] {
        for (auto& future : futures) future.get();
        futures.clear();
      });
  state.counters["tbbmalloc"] = tbbmalloc_loaded() ? 1 : 0;
}

void w5_asio_packaged_task(benchmark::State& state) {
  boost::asio::thread_pool pool(kWorkers);
  std::vector<std::future<void>> futures;
  futures.reserve(kCancelTasks);
  prefault(futures);
  w5_bytes_only(
      state, sizeof(std::future<void>),
      [&] {
        for (std::size_t i = 0; i < kCancelTasks; ++i) {
          std::packaged_task<void()> task([] {});
          futures.push_back(task.get_future());
          boost::asio::post(pool, std::move(task));
        }
      },
      [&](Blocker& blocker) {
        for (std::size_t i = 0; i < kWorkers; ++i) boost::asio::post(pool, blocker.task());
        blocker.wait_started(kWorkers);
      },
      [&] {
        for (auto& future : futures) future.get();
        futures.clear();
      });
  pool.join();
}

void w5_naive_promise(benchmark::State& state) {
  NaivePool pool(kWorkers);
  std::vector<std::promise<void>> promises;
  std::vector<std::future<void>> futures;
  promises.reserve(kCancelTasks);
  prefault(promises);
  futures.reserve(kCancelTasks);
  prefault(futures);
  w5_bytes_only(
      state, sizeof(std::future<void>) + sizeof(std::promise<void>),
      [&] {
        for (std::size_t i = 0; i < kCancelTasks; ++i) {
          std::promise<void>& promise = promises.emplace_back();
          futures.push_back(promise.get_future());
          pool.post([&promise] { promise.set_value(); });
        }
      },
      [&](Blocker& blocker) {
        for (std::size_t i = 0; i < kWorkers; ++i) pool.post(blocker.task());
        blocker.wait_started(kWorkers);
      },
      [&] {
        for (auto& future : futures) future.get();
        futures.clear();
        promises.clear();
      });
}

// ---- W6: what a (never-cancelled) token adds to a submission -------------
//
// 100,000 empty tasks submitted from outside with a Future each, then every
// future waited for and dropped; the same options object for every task.
// ns_per_task covers the whole (the token is attached at submission and
// detached at completion, on the workers); ns_submit_per_task the
// submission loop alone. The script's "peer - quell" column between
// W6_token/quell and W6_token/quell_token is the token's cost, from
// separate processes; on a noisy machine that difference drowns in the
// spread of either, so W6_token/quell_paired also runs both, alternating
// (token first on odd pairs), in one process and reports the median of the
// per-pair differences (token_ns_per_task, token_submit_ns_per_task).

void w6_quell(benchmark::State& state, bool with_token) {
  quell::CancellationSource source;  // never cancelled
  quell::TaskOptions options;
  if (with_token) options.set_cancellation(source.token());
  quell_bench::run_batches(state, kWorkers, options, kTokenTasks);
}

void w6_quell_paired(benchmark::State& state) {
  quell::CancellationSource source;  // never cancelled
  quell_bench::run_paired_batches(state, kWorkers, quell::TaskOptions(),
                                  quell::TaskOptions().set_cancellation(source.token()),
                                  kTokenTasks, "token");
}

}  // namespace

// Iterations are fixed (a sample is their mean, after one untimed warm-up);
// bench/run_pool_bench.sh supplies the repetition, one process per sample.
BENCHMARK(w1_quell_post)->Name("W1_post/quell")->UseManualTime()->Iterations(5);
BENCHMARK(w1_tbb_task_group)->Name("W1_post/tbb_task_group")->UseManualTime()->Iterations(5);
BENCHMARK(w1_tbb_arena_enqueue)->Name("W1_post/tbb_arena_enqueue")->UseManualTime()->Iterations(5);
BENCHMARK(w1_asio_post)->Name("W1_post/asio")->UseManualTime()->Iterations(5);
BENCHMARK(w1_naive_post)->Name("W1_post/naive")->UseManualTime()->Iterations(5);

BENCHMARK(w1_quell_submit)->Name("W1_future/quell")->UseManualTime()->Iterations(5);
BENCHMARK(w1_tbb_arena_packaged_task)
    ->Name("W1_future/tbb_arena_packaged_task")
    ->UseManualTime()
    ->Iterations(5);
BENCHMARK(w1_asio_packaged_task)
    ->Name("W1_future/asio_packaged_task")
    ->UseManualTime()
    ->Iterations(5);
BENCHMARK(w1_naive_promise)->Name("W1_future/naive_promise")->UseManualTime()->Iterations(5);

BENCHMARK(w2_quell)->Name("W2_fib25/quell")->UseManualTime()->Iterations(20);
BENCHMARK(w2_tbb_task_group)->Name("W2_fib25/tbb_task_group")->UseManualTime()->Iterations(20);

BENCHMARK(w5_quell)->Name("W5_cancel/quell")->UseManualTime()->Iterations(10);
BENCHMARK(w5_tbb_task_group)->Name("W5_cancel/tbb_task_group")->UseManualTime()->Iterations(10);
BENCHMARK(w5_tbb_arena_packaged_task)
    ->Name("W5_cancel/tbb_arena_packaged_task")
    ->UseManualTime()
    ->Iterations(3);
BENCHMARK(w5_asio_packaged_task)
    ->Name("W5_cancel/asio_packaged_task")
    ->UseManualTime()
    ->Iterations(3);
BENCHMARK(w5_naive_promise)->Name("W5_cancel/naive_promise")->UseManualTime()->Iterations(3);

BENCHMARK_CAPTURE(w6_quell, no_token, false)
    ->Name("W6_token/quell")
    ->UseManualTime()
    ->Iterations(20);
BENCHMARK_CAPTURE(w6_quell, token, true)
    ->Name("W6_token/quell_token")
    ->UseManualTime()
    ->Iterations(20);
BENCHMARK(w6_quell_paired)->Name("W6_token/quell_paired")->UseManualTime()->Iterations(20);

int main(int argc, char** argv) {
  // Room for two TBB workers (the default, hardware_concurrency, allows one
  // on this 2-core machine besides the main thread), so task_arena(2, 0)
  // gets two workers like every other pool.
  tbb::global_control parallelism(tbb::global_control::max_allowed_parallelism,
                                  static_cast<std::size_t>(kWorkers) + 1);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
