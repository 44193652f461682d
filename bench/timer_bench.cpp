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

quell::TaskOptions deadline_options(bool with_deadline) {
  quell::TaskOptions options;
  if (with_deadline) options.set_timeout(quell_bench::kTimerDelay);
  return options;
}

void t2_quell(benchmark::State& state, bool with_deadline) {
  quell_bench::run_batches(state, quell_bench::kTimerWorkers, deadline_options(with_deadline),
                           kDeadlineTasks);
}

void t2_quell_paired(benchmark::State& state) {
  quell_bench::run_paired_batches(state, quell_bench::kTimerWorkers, deadline_options(false),
                                  deadline_options(true), kDeadlineTasks, "deadline");
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
