// quell's Scope and TaskGroup against oneTBB's task_group, the same workload
// behind every peer, with quell's plain submit (pool_bench's W2) for
// reference. Run it through bench/run_pool_bench.sh (one benchmark per fresh
// process, shuffled, several rounds); names are <workload>/<peer>.
//
// Threads, as in pool_bench: every quell pool has two workers and the main
// thread only submits and waits; oneTBB runs in a task_arena(2) whose second
// slot is the main thread's (it works in wait()), so two threads execute for
// every peer.
//
//   S1_fib25     fork-join fib(25), one spawn per call with n >= 2, no
//                cutoff: ns_per_spawn and ms_total.
//   S3_cancel    100,000 empty tasks queued behind blocked workers, then
//                timed: the cancel and the check that every task is
//                resolved: ms_cancel_to_ready and ns_per_task.

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <vector>

#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>

#include "fib.hpp"
#include "harness.hpp"
#include "quell/scope.hpp"
#include "quell/task_group.hpp"
#include "quell/thread_pool.hpp"

namespace {

using quell_bench::Blocker;
using quell_bench::Clock;
using quell_bench::run_timed;
using quell_bench::seconds_since;

constexpr std::size_t kWorkers = 2;
using quell_bench::kFibN;  // S1, as pool_bench's W2
constexpr std::size_t kCancelTasks = 100'000;  // S3, as pool_bench's W5

// ---- S1: fork-join fib(25) -------------------------------------------------
//
// Every node forks fib(n-1), computes fib(n-2) inline, and joins:
//   quell_scope_child  the structured form: a node opens a child scope of
//                      its caller's (Scope s(parent), linked to the parent's
//                      token), spawns into it, joins with s.wait(); the
//                      result goes through a captured reference.
//   quell_scope        the same with an unlinked scope per node (Scope
//                      s(pool)): what the link to the parent costs.
//   quell_task_group   a TaskGroup per node: submit, then the future's get()
//                      (the group's destructor then cancels and waits, on
//                      nothing left).
//   quell_submit       pool.submit + get(), pool_bench's W2.
//   tbb_task_group     a tbb::task_group per node: run, then wait.
// A wait on a worker runs other tasks meanwhile, in every peer.

int fib_scope_child(quell::Scope& parent, int n) {
  if (n < 2) return n;
  quell::Scope scope(parent);
  int a = 0;
  scope.spawn([&scope, &a, n] { a = fib_scope_child(scope, n - 1); });
  const int b = fib_scope_child(scope, n - 2);
  scope.wait();
  return a + b;
}

int fib_scope(quell::ThreadPool& pool, int n) {
  if (n < 2) return n;
  quell::Scope scope(pool);
  int a = 0;
  scope.spawn([&pool, &a, n] { a = fib_scope(pool, n - 1); });
  const int b = fib_scope(pool, n - 2);
  scope.wait();
  return a + b;
}

int fib_task_group(quell::ThreadPool& pool, int n) {
  if (n < 2) return n;
  quell::TaskGroup group(pool);
  quell::Future<int> child = group.submit([&pool, n] { return fib_task_group(pool, n - 1); });
  const int b = fib_task_group(pool, n - 2);
  return child.get() + b;
}

template <class Root>
void s1_quell(benchmark::State& state, Root root) {
  quell_bench::run_fib_quell(state, kWorkers, root);
}

void s1_quell_scope_child(benchmark::State& state) {
  s1_quell(state, [](quell::ThreadPool& pool) {
    quell::Scope root(pool);
    const int result = fib_scope_child(root, kFibN);
    root.wait();
    return result;
  });
}

void s1_quell_scope(benchmark::State& state) {
  s1_quell(state, [](quell::ThreadPool& pool) { return fib_scope(pool, kFibN); });
}

void s1_quell_task_group(benchmark::State& state) {
  s1_quell(state, [](quell::ThreadPool& pool) { return fib_task_group(pool, kFibN); });
}

void s1_quell_submit(benchmark::State& state) {
  s1_quell(state, [](quell::ThreadPool& pool) { return quell_bench::fib_submit(pool, kFibN); });
}

void s1_tbb_task_group(benchmark::State& state) { quell_bench::run_fib_tbb(state, kWorkers); }

// ---- S3: cancel 100,000 queued tasks -----------------------------------------
//
// Every iteration: block both workers, queue 100,000 empty tasks from the
// main thread, then time only the cancellation and the check that every
// task is resolved; then unblock and let the pool settle, untimed.
//   quell_scope        Scope::cancel(), then size() == 0.
//   quell_task_group   TaskGroup::cancel(), then pending() == 0 (the futures
//                      submit() returns are dropped at once, as tbb keeps
//                      no handle either).
//   quell_pool_token   pool.submit with a token in the options, a future
//                      kept per task; request_cancel(), then every future
//                      ready: pool_bench's W5.
//   tbb_task_group     task_group::cancel() then wait(), pool_bench's W5:
//                      the arena's one worker is blocked, the main thread
//                      queued the tasks into its own deque and pops and
//                      disposes of each in wait().
// quell resolves every queued task inline in cancel(); a count still above
// zero after it is reported (not_resolved_at_return) and waited for, timed.

// Blocks both workers of `pool`, queues the tasks with `spawn`, times
// `cancel` plus `resolved` (spinning until it is true), then lets go.
template <class Spawn, class Cancel, class Resolved>
double cancel_once(quell::ThreadPool& pool, Spawn&& spawn, Cancel&& cancel, Resolved&& resolved,
                   std::size_t& late) {
  Blocker blocker;
  for (std::size_t i = 0; i < kWorkers; ++i) pool.post(blocker.task());
  blocker.wait_started(kWorkers);
  spawn();

  const auto start = Clock::now();
  cancel();
  if (!resolved()) {
    ++late;
    while (!resolved()) {
    }
  }
  const double s = seconds_since(start);

  blocker.release();
  pool.wait_idle();
  return s;
}

void report_late(benchmark::State& state, std::size_t late) {
  state.counters["not_resolved_at_return"] = static_cast<double>(late);
}

void s3_quell_scope(benchmark::State& state) {
  quell::ThreadPool pool(kWorkers);
  std::size_t late = 0;
  run_timed(state, kCancelTasks, "ns_per_task", [&] {
    quell::Scope scope(pool);
    return cancel_once(
        pool,
        [&] {
          for (std::size_t i = 0; i < kCancelTasks; ++i) scope.spawn([] {});
        },
        [&] { scope.cancel(); }, [&] { return scope.size() == 0; }, late);
  }, "ms_cancel_to_ready");
  report_late(state, late);
}

void s3_quell_task_group(benchmark::State& state) {
  quell::ThreadPool pool(kWorkers);
  std::size_t late = 0;
  run_timed(state, kCancelTasks, "ns_per_task", [&] {
    quell::TaskGroup group(pool);
    return cancel_once(
        pool,
        [&] {
          for (std::size_t i = 0; i < kCancelTasks; ++i) group.submit([] {});
        },
        [&] { group.cancel(); }, [&] { return group.pending() == 0; }, late);
  }, "ms_cancel_to_ready");
  report_late(state, late);
}

void s3_quell_pool_token(benchmark::State& state) {
  quell::ThreadPool pool(kWorkers);
  std::vector<quell::Future<void>> futures;
  futures.reserve(kCancelTasks);
  std::size_t late = 0;
  run_timed(state, kCancelTasks, "ns_per_task", [&] {
    quell::CancellationSource source;
    const quell::TaskOptions options = quell::TaskOptions().set_cancellation(source.token());
    const double s = cancel_once(
        pool,
        [&] {
          for (std::size_t i = 0; i < kCancelTasks; ++i) {
            futures.push_back(pool.submit([] {}, options));
          }
        },
        [&] { source.request_cancel(); },
        [&] {
          std::size_t ready = 0;
          for (const auto& future : futures) ready += future.ready() ? 1 : 0;
          return ready == kCancelTasks;
        },
        late);
    futures.clear();
    return s;
  }, "ms_cancel_to_ready");
  report_late(state, late);
}

void s3_tbb_task_group(benchmark::State& state) {
  tbb::task_arena arena(static_cast<int>(kWorkers));
  // One slot is reserved for the main thread.
  const auto arena_workers = static_cast<std::size_t>(arena.max_concurrency() - 1);
  bool not_cancelled = false;
  run_timed(state, kCancelTasks, "ns_per_task", [&] {
    double s = 0;
    Blocker blocker;
    arena.execute([&] {
      for (std::size_t i = 0; i < arena_workers; ++i) arena.enqueue(blocker.task());
      blocker.wait_started(arena_workers);
      tbb::task_group group;
      for (std::size_t i = 0; i < kCancelTasks; ++i) group.run([] {});

      const auto start = Clock::now();
      group.cancel();
      const tbb::task_group_status status = group.wait();
      s = seconds_since(start);
      not_cancelled |= status != tbb::canceled;
    });
    blocker.release();
    return s;
  }, "ms_cancel_to_ready");
  if (not_cancelled) state.SkipWithError("task_group::wait() did not report canceled");
}

}  // namespace

// Iterations are fixed (a sample is their mean, after one untimed warm-up);
// bench/run_pool_bench.sh supplies the repetition, one process per sample.
BENCHMARK(s1_quell_scope_child)->Name("S1_fib25/quell_scope_child")->UseManualTime()->Iterations(20);
BENCHMARK(s1_quell_scope)->Name("S1_fib25/quell_scope")->UseManualTime()->Iterations(20);
BENCHMARK(s1_quell_task_group)->Name("S1_fib25/quell_task_group")->UseManualTime()->Iterations(20);
BENCHMARK(s1_quell_submit)->Name("S1_fib25/quell_submit")->UseManualTime()->Iterations(20);
BENCHMARK(s1_tbb_task_group)->Name("S1_fib25/tbb_task_group")->UseManualTime()->Iterations(20);

BENCHMARK(s3_quell_scope)->Name("S3_cancel/quell_scope")->UseManualTime()->Iterations(10);
BENCHMARK(s3_quell_task_group)->Name("S3_cancel/quell_task_group")->UseManualTime()->Iterations(10);
BENCHMARK(s3_quell_pool_token)->Name("S3_cancel/quell_pool_token")->UseManualTime()->Iterations(10);
BENCHMARK(s3_tbb_task_group)->Name("S3_cancel/tbb_task_group")->UseManualTime()->Iterations(10);

BENCHMARK_MAIN();
