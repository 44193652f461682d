// quell's timer service (submit_after, deadlines) against
// boost::asio::steady_timer and a hand-written map-under-a-mutex timer
// (bench/timer_peers.hpp, shared with timer_instructions for callgrind).
// Run it through bench/run_pool_bench.sh (one benchmark per fresh process,
// shuffled, several rounds); names are <workload>/<peer>.
//
//   T1_timer_cancel   100,000 operations "arm a timer an hour away, cancel
//                     it, see it resolved cancelled", back to back from the
//                     main thread: ns_per_op. For the peers that resolve on
//                     another thread (asio_steady_timer), the batch ends
//                     when the last has. quell_token_only is the share of
//                     quell's operation that is its token, not the timer.
//                     No other timer is armed: each operation's is the
//                     earliest, and arming it may wake the timer thread.
//   T1_timer_cancel_1k  the same with 1,000 standing timers armed half an
//                     hour away, so each operation's timer is never the
//                     earliest.
//   T2_deadline       pool_bench's W6 with a deadline instead of a token:
//                     100,000 empty tasks submitted from outside with a
//                     Future each, all waited for and dropped; quell_timeout
//                     sets set_timeout(1h), so each submission inserts a
//                     timer entry (never due). ns_per_task covers the
//                     whole, ns_submit_per_task the submission loop alone;
//                     quell_paired alternates both in one process and
//                     reports the median of per-pair differences
//                     (deadline_ns_per_task, deadline_submit_ns_per_task).

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstddef>
#include <vector>

#include "harness.hpp"
#include "quell/task_options.hpp"
#include "quell/thread_pool.hpp"
#include "timer_peers.hpp"

namespace {

using quell_bench::Clock;
using quell_bench::median;
using quell_bench::run_timed;
using quell_bench::seconds_since;

constexpr std::size_t kTimerOps = 100'000;    // T1
constexpr std::size_t kDeadlineTasks = 100'000;  // T2

// ---- T1: timer insert + cancel ---------------------------------------------

template <class Peer, std::size_t kStanding>
void t1(benchmark::State& state) {
  Peer peer(kStanding);
  std::size_t done = 0;
  std::size_t resolved_inline = 0;
  run_timed(state, kTimerOps, "ns_per_op", [&] {
    const auto start = Clock::now();
    for (std::size_t i = 0; i < kTimerOps; ++i) resolved_inline += peer.insert_cancel_once() ? 1 : 0;
    done += kTimerOps;
    peer.wait_resolved(done);
    return seconds_since(start);
  });
  // Share of operations resolved (as cancelled) before insert_cancel_once()
  // returned: 1 for the peers that resolve inline.
  state.counters["resolved_inline"] = static_cast<double>(resolved_inline) / static_cast<double>(done);
}

// ---- T2: what a deadline adds to a submission ------------------------------

struct BatchTime {
  double total = 0;   // seconds: submit, wait for all, drop the futures
  double submit = 0;  // seconds: the submission loop
};

BatchTime deadline_batch(quell::ThreadPool& pool, const quell::TaskOptions& options,
                         std::vector<quell::Future<void>>& futures) {
  const auto start = Clock::now();
  for (std::size_t i = 0; i < kDeadlineTasks; ++i) futures.push_back(pool.submit([] {}, options));
  const double submitted = seconds_since(start);
  for (auto& future : futures) future.get();
  futures.clear();
  return {seconds_since(start), submitted};
}

quell::TaskOptions deadline_options(bool with_deadline) {
  quell::TaskOptions options;
  if (with_deadline) options.set_timeout(quell_bench::kTimerDelay);
  return options;
}

void t2_quell(benchmark::State& state, bool with_deadline) {
  quell::ThreadPool pool(quell_bench::kTimerWorkers);
  const quell::TaskOptions options = deadline_options(with_deadline);
  std::vector<quell::Future<void>> futures;
  futures.reserve(kDeadlineTasks);
  double submit_seconds = 0;
  run_timed(state, kDeadlineTasks, "ns_per_task", [&] {
    const BatchTime t = deadline_batch(pool, options, futures);
    submit_seconds += t.submit;
    return t.total;
  });
  // The warm-up's submission time is in submit_seconds too: one more sample.
  state.counters["ns_submit_per_task"] =
      submit_seconds * 1e9 /
      (static_cast<double>(state.iterations() + 1) * static_cast<double>(kDeadlineTasks));
}

void t2_quell_paired(benchmark::State& state) {
  quell::ThreadPool pool(quell_bench::kTimerWorkers);
  const quell::TaskOptions plain_options = deadline_options(false);
  const quell::TaskOptions timed_options = deadline_options(true);
  std::vector<quell::Future<void>> futures;
  futures.reserve(kDeadlineTasks);
  deadline_batch(pool, plain_options, futures);  // warm-up, both ways
  deadline_batch(pool, timed_options, futures);
  std::vector<double> total_diff, submit_diff;
  double plain_total = 0, timed_total = 0;
  std::size_t pair = 0;
  for (auto _ : state) {
    BatchTime plain, timed;
    if (pair++ % 2 == 1) {
      timed = deadline_batch(pool, timed_options, futures);
      plain = deadline_batch(pool, plain_options, futures);
    } else {
      plain = deadline_batch(pool, plain_options, futures);
      timed = deadline_batch(pool, timed_options, futures);
    }
    state.SetIterationTime(plain.total + timed.total);
    plain_total += plain.total;
    timed_total += timed.total;
    total_diff.push_back(timed.total - plain.total);
    submit_diff.push_back(timed.submit - plain.submit);
  }
  const double per_task = 1e9 / static_cast<double>(kDeadlineTasks);
  const double pairs = static_cast<double>(state.iterations());
  state.counters["ns_per_task_no_deadline"] = plain_total * per_task / pairs;
  state.counters["ns_per_task_deadline"] = timed_total * per_task / pairs;
  state.counters["deadline_ns_per_task"] = median(total_diff) * per_task;
  state.counters["deadline_submit_ns_per_task"] = median(submit_diff) * per_task;
}

}  // namespace

// Iterations are fixed (a sample is their mean, after one untimed warm-up);
// bench/run_pool_bench.sh supplies the repetition, one process per sample.
BENCHMARK_TEMPLATE(t1, quell_bench::QuellTimer, 0)
    ->Name("T1_timer_cancel/quell")
    ->UseManualTime()
    ->Iterations(10);
BENCHMARK_TEMPLATE(t1, quell_bench::QuellTokenOnly, 0)
    ->Name("T1_timer_cancel/quell_token_only")
    ->UseManualTime()
    ->Iterations(10);
BENCHMARK_TEMPLATE(t1, quell_bench::AsioTimer<false>, 0)
    ->Name("T1_timer_cancel/asio_steady_timer")
    ->UseManualTime()
    ->Iterations(10);
BENCHMARK_TEMPLATE(t1, quell_bench::AsioTimer<true>, 0)
    ->Name("T1_timer_cancel/asio_steady_timer_inline")
    ->UseManualTime()
    ->Iterations(10);
BENCHMARK_TEMPLATE(t1, quell_bench::NaiveTimers, 0)
    ->Name("T1_timer_cancel/naive_map")
    ->UseManualTime()
    ->Iterations(10);

BENCHMARK_TEMPLATE(t1, quell_bench::QuellTimer, 1000)
    ->Name("T1_timer_cancel_1k/quell")
    ->UseManualTime()
    ->Iterations(10);
BENCHMARK_TEMPLATE(t1, quell_bench::AsioTimer<false>, 1000)
    ->Name("T1_timer_cancel_1k/asio_steady_timer")
    ->UseManualTime()
    ->Iterations(10);
BENCHMARK_TEMPLATE(t1, quell_bench::AsioTimer<true>, 1000)
    ->Name("T1_timer_cancel_1k/asio_steady_timer_inline")
    ->UseManualTime()
    ->Iterations(10);
BENCHMARK_TEMPLATE(t1, quell_bench::NaiveTimers, 1000)
    ->Name("T1_timer_cancel_1k/naive_map")
    ->UseManualTime()
    ->Iterations(10);

BENCHMARK_CAPTURE(t2_quell, no_deadline, false)
    ->Name("T2_deadline/quell")
    ->UseManualTime()
    ->Iterations(20);
BENCHMARK_CAPTURE(t2_quell, deadline, true)
    ->Name("T2_deadline/quell_timeout")
    ->UseManualTime()
    ->Iterations(20);
BENCHMARK(t2_quell_paired)->Name("T2_deadline/quell_paired")->UseManualTime()->Iterations(20);

BENCHMARK_MAIN();
