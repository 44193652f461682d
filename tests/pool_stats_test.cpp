// The pool's cancellation-aware statistics (API.md §12 "Observability"):
// ended_by_reason, the sampled queue_wait and run_time histograms, the
// cancel_reaction histogram, percentile_ns, and to_prometheus's text.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <latch>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "pool_test_support.hpp"
#include "quell/scope.hpp"
#include "quell/thread_pool.hpp"

namespace quell {
namespace {

using namespace std::chrono_literals;

std::uint64_t by_reason(const ThreadPoolStats& stats, CancelReason reason) {
  return stats.ended_by_reason[static_cast<std::size_t>(reason)];
}

// Runs `fn` on a new thread: its first submission is one the pool times.
template <class Fn>
void on_fresh_thread(Fn fn) {
  std::thread thread(fn);
  thread.join();
}

TEST(LatencyHistogram, PercentileIsTheUpperBoundOfTheBucketHoldingIt) {
  LatencyHistogram h;
  EXPECT_EQ(h.percentile_ns(0.5), 0u);  // empty
  h.buckets[3] = 90;                     // [8, 16) ns
  h.buckets[10] = 10;                    // [1024, 2048) ns
  h.count = 100;
  EXPECT_EQ(h.percentile_ns(0.0), 16u);
  EXPECT_EQ(h.percentile_ns(0.5), 16u);
  EXPECT_EQ(h.percentile_ns(0.9), 16u);
  EXPECT_EQ(h.percentile_ns(0.91), 2048u);
  EXPECT_EQ(h.percentile_ns(1.0), 2048u);
  EXPECT_EQ(h.percentile_ns(7.0), 2048u);  // clamped
  EXPECT_EQ(h.percentile_ns(-1.0), 16u);
}

TEST(PoolStats, EndedByReasonCountsEachReason) {
  // requested: a queued task cancelled through its handle.
  {
    ThreadPool pool(1);
    test::Gate gate;
    auto blocked = test::block_workers(pool, gate, 1);
    auto handle = pool.handle([] {});
    handle.cancel();
    gate.open();
    pool.wait_idle();
    const ThreadPoolStats stats = pool.stats();
    EXPECT_EQ(by_reason(stats, CancelReason::requested), 1u);
    EXPECT_EQ(stats.ended_by_reason[0] + by_reason(stats, CancelReason::deadline) +
                  by_reason(stats, CancelReason::shutdown) + by_reason(stats, CancelReason::failure),
              0u);
  }
  // deadline: a queued task whose deadline passes.
  {
    ThreadPool pool(1);
    test::Gate gate;
    auto blocked = test::block_workers(pool, gate, 1);
    auto late = pool.submit([] {}, TaskOptions().set_timeout(1ms));
    EXPECT_TRUE(late.wait_for(test::kGuard));
    gate.open();
    pool.wait_idle();
    EXPECT_EQ(late.status(), TaskStatus::timed_out);
    EXPECT_EQ(by_reason(pool.stats(), CancelReason::deadline), 1u);
  }
  // shutdown: queued tasks dropped by a cancel shutdown.
  {
    ThreadPoolConfig config;
    config.thread_count = 1;
    config.shutdown_policy = ShutdownPolicy::cancel;
    ThreadPool pool(config);
    test::Gate gate;
    auto blocked = test::block_workers(pool, gate, 1);
    for (int i = 0; i < 3; ++i) pool.post([] {});
    std::thread opener([&] {
      // The shutdown drops the queued three, then waits for the blocker.
      while (pool.stats().cancelled < 3) std::this_thread::yield();
      gate.open();
    });
    pool.shutdown();
    opener.join();
    EXPECT_EQ(by_reason(pool.stats(), CancelReason::shutdown), 3u);
  }
  // failure: a scope's failure cancels its queued sibling. On the only
  // worker, the waiting task runs the scope's tasks newest first: the
  // failing one, while the sibling is still queued.
  {
    ThreadPool pool(1);
    pool.submit([&] {
          Scope scope(pool);
          scope.spawn([] {});
          scope.spawn([] { throw std::runtime_error("first"); });
          try {
            scope.wait();
          } catch (const std::runtime_error&) {
          }
        }).get();
    pool.wait_idle();
    EXPECT_EQ(by_reason(pool.stats(), CancelReason::failure), 1u);
    EXPECT_EQ(pool.stats().cancelled, 1u);
  }
}

TEST(PoolStats, TheFirstTaskOfAThreadIsTimedThenOneIn64) {
  ThreadPool pool(1);
  on_fresh_thread([&] {
    pool.submit([] { test::spin_until(std::chrono::steady_clock::now() + 2ms); }).get();
  });
  ThreadPoolStats stats = pool.stats();
  ASSERT_EQ(stats.run_time.count, 1u);
  EXPECT_EQ(stats.queue_wait.count, 1u);
  EXPECT_GE(stats.run_time.sum_ns, 2'000'000u);
  EXPECT_GE(stats.run_time.percentile_ns(1.0), std::uint64_t{1} << 21);  // 2 ms is in [2^20, 2^21) ns or above
  on_fresh_thread([&] {
    std::vector<Future<void>> futures;
    for (std::uint64_t i = 0; i < ThreadPoolStats::kLatencySample + 1; ++i) futures.push_back(pool.submit([] {}));
    for (auto& f : futures) f.get();
  });
  pool.wait_idle();
  stats = pool.stats();
  EXPECT_EQ(stats.run_time.count, 3u);    // the 1st and the 65th of that thread
  EXPECT_EQ(stats.queue_wait.count, 3u);
  std::uint64_t in_buckets = 0;
  for (const std::uint64_t n : stats.queue_wait.buckets) in_buckets += n;
  EXPECT_EQ(in_buckets, stats.queue_wait.count);
}

TEST(PoolStats, CancelReactionTimesEveryTaskCancelledWhileItRan) {
  ThreadPool pool(2);
  std::latch started(2);
  auto polls = pool.handle([&](CancellationToken token) {
    started.count_down();
    EXPECT_TRUE(test::wait_cancelled(token));
    test::spin_until(std::chrono::steady_clock::now() + 1ms);  // a slow reaction
    token.throw_if_cancelled();
  });
  auto ignores = pool.handle([&](CancellationToken token) {
    started.count_down();
    EXPECT_TRUE(test::wait_cancelled(token));
    return 42;  // completes all the same
  });
  started.wait();
  polls.cancel();
  ignores.cancel();
  polls.wait();
  EXPECT_EQ(ignores.get(), 42);
  pool.wait_idle();
  const ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.cancel_reaction.count, 2u);
  EXPECT_GE(stats.cancel_reaction.sum_ns, 1'000'000u);
  EXPECT_EQ(by_reason(stats, CancelReason::requested), 1u);  // only the one that ended cancelled
  // A task cancelled while queued is no reaction.
  ThreadPool other(1);
  test::Gate gate;
  auto blocked = test::block_workers(other, gate, 1);
  other.handle([] {}).cancel();
  gate.open();
  other.wait_idle();
  EXPECT_EQ(other.stats().cancel_reaction.count, 0u);
}

TEST(PoolStats, PrometheusTextHasEveryMetricWithHelpAndTypeUnderThePrefix) {
  ThreadPool pool(2);
  on_fresh_thread([&] {
    for (int i = 0; i < 10; ++i) pool.submit([] {}).get();
  });
  pool.submit([] { throw std::runtime_error("x"); }).wait();
  pool.wait_idle();
  const ThreadPoolStats stats = pool.stats();
  const std::string text = to_prometheus(stats, "myapp");
  std::map<std::string, std::string> types;
  std::map<std::string, int> helps;
  std::map<std::string, std::uint64_t> values;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    ASSERT_FALSE(line.empty());
    if (line.rfind("# HELP ", 0) == 0) {
      helps[line.substr(7, line.find(' ', 7) - 7)]++;
    } else if (line.rfind("# TYPE ", 0) == 0) {
      const std::size_t space = line.find(' ', 7);
      types[line.substr(7, space - 7)] = line.substr(space + 1);
    } else {
      ASSERT_EQ(line.rfind("myapp_", 0), 0u) << line;
      const std::size_t space = line.rfind(' ');
      if (line.find("_sum ") == std::string::npos) {
        values[line.substr(0, space)] = std::stoull(line.substr(space + 1));
      }
    }
  }
  for (const char* counter : {"myapp_tasks_total", "myapp_tasks_ended_by_reason_total", "myapp_tasks_stolen_total"}) {
    EXPECT_EQ(types[counter], "counter") << counter;
    EXPECT_EQ(helps[counter], 1) << counter;
  }
  for (const char* gauge : {"myapp_tasks_queued", "myapp_tasks_running", "myapp_tasks_suspended"}) {
    EXPECT_EQ(types[gauge], "gauge") << gauge;
  }
  for (const char* histogram :
       {"myapp_queue_wait_seconds", "myapp_run_time_seconds", "myapp_cancel_reaction_seconds"}) {
    EXPECT_EQ(types[histogram], "histogram") << histogram;
    EXPECT_EQ(helps[histogram], 1) << histogram;
  }
  EXPECT_EQ(values["myapp_tasks_total{status=\"completed\"}"], stats.completed);
  EXPECT_EQ(values["myapp_tasks_total{status=\"failed\"}"], 1u);
  EXPECT_EQ(values.count("myapp_tasks_ended_by_reason_total{reason=\"deadline\"}"), 1u);
  EXPECT_EQ(values["myapp_queue_wait_seconds_bucket{le=\"+Inf\"}"], stats.queue_wait.count);
  EXPECT_EQ(values["myapp_queue_wait_seconds_count"], stats.queue_wait.count);
  // Every bucket, cumulative, ending with +Inf at the count.
  int buckets = 0;
  for (const auto& entry : values) {
    if (entry.first.rfind("myapp_run_time_seconds_bucket", 0) == 0) ++buckets;
  }
  EXPECT_EQ(buckets, static_cast<int>(LatencyHistogram::kBuckets) + 1);
  std::uint64_t previous = 0;
  std::istringstream again(text);
  while (std::getline(again, line)) {
    if (line.rfind("myapp_run_time_seconds_bucket", 0) != 0) continue;
    const std::uint64_t value = std::stoull(line.substr(line.rfind(' ') + 1));
    EXPECT_GE(value, previous) << line;
    previous = value;
  }
  EXPECT_EQ(previous, stats.run_time.count);
  EXPECT_NE(to_prometheus(stats).find("quell_tasks_total{status=\"completed\"}"), std::string::npos);
}

}  // namespace
}  // namespace quell
