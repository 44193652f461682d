// ThreadPoolConfig's hooks (API.md §12, "Hooks"):
//   on_thread_start   first on each worker, once per index, before any task
//                     there; the constructor waits for them; one that throws
//                     makes the constructor throw it, with no thread left.
//   on_thread_stop    last on each worker, once per index, after its last task.
//   on_unobserved_failure
//                     a post()ed callable or coroutine, or a periodic tick,
//                     that ends failed: its exception and the id this_task::id()
//                     gave inside it, before wait_idle() returns; never for
//                     submit(), handle() or a group's task; still counted.
//   A throwing stop or failure hook terminates (death tests).
#include <dirent.h>
#include <gtest/gtest.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <fstream>
#include <functional>
#include <latch>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "pool_test_support.hpp"
#include "quell/coro.hpp"
#include "quell/periodic_task.hpp"
#include "quell/task_group.hpp"
#include "quell/thread_pool.hpp"

namespace quell {
namespace {

using namespace std::chrono_literals;
using test::kGuard;
using test::spin_until_true;

constexpr std::size_t kNoWorker = static_cast<std::size_t>(-1);
// The index the start hook was given on this thread; kNoWorker before it ran.
thread_local std::size_t t_worker = kNoWorker;

// Runs f once on every worker at the same time (each task holds its worker
// until all have arrived, so they are on distinct workers) and returns the
// results.
template <class F>
auto on_every_worker(ThreadPool& pool, F f) {
  using R = decltype(f());
  const std::size_t n = pool.thread_count();
  std::latch all_there(static_cast<std::ptrdiff_t>(n));
  std::vector<Future<R>> futures;
  for (std::size_t i = 0; i < n; ++i) {
    futures.push_back(pool.submit([&all_there, &f] {
      all_there.arrive_and_wait();
      return f();
    }));
  }
  std::vector<R> results;
  for (Future<R>& future : futures) results.push_back(future.get());
  return results;
}

std::string current_thread_name() {
  char name[16] = {};
  pthread_getname_np(pthread_self(), name, sizeof name);
  return name;
}

// The threads of this process whose name starts with `prefix`, and all of
// them; -1 if /proc cannot be read.
struct ThreadCensus {
  int named = 0;
  int total = 0;
};
ThreadCensus census(const std::string& prefix) {
  ThreadCensus result;
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return {-1, -1};
  while (const dirent* entry = readdir(dir)) {
    if (entry->d_name[0] == '.') continue;
    ++result.total;
    std::ifstream comm(std::string("/proc/self/task/") + entry->d_name + "/comm");
    std::string name;
    std::getline(comm, name);
    if (name.rfind(prefix, 0) == 0) ++result.named;
  }
  closedir(dir);
  return result;
}

// What on_unobserved_failure received, in order.
class Reports {
 public:
  struct Report {
    std::exception_ptr failure;
    TaskId id;
    std::thread::id thread;
  };

  std::function<void(std::exception_ptr, TaskId)> hook() {
    return [this](std::exception_ptr failure, TaskId id) {
      std::lock_guard lock(mutex_);
      reports_.push_back({std::move(failure), id, std::this_thread::get_id()});
      changed_.notify_all();
    };
  }
  // False if fewer than `n` arrived within the guard.
  bool wait_for(std::size_t n) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, kGuard, [&] { return reports_.size() >= n; });
  }
  std::vector<Report> take() {
    std::lock_guard lock(mutex_);
    return std::move(reports_);
  }
  std::size_t size() {
    std::lock_guard lock(mutex_);
    return reports_.size();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<Report> reports_;
};

std::string message_of(const std::exception_ptr& failure) {
  try {
    std::rethrow_exception(failure);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "(not a std::exception)";
  }
}

struct HookFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

ThreadPoolConfig config_of(std::size_t workers, std::string name) {
  ThreadPoolConfig config;
  config.thread_count = workers;
  config.thread_name = std::move(name);
  return config;
}

class PoolHooks : public ::testing::TestWithParam<std::size_t> {
 protected:
  std::size_t workers() const { return GetParam(); }
};

// ---- on_thread_start --------------------------------------------------------------

TEST_P(PoolHooks, TheStartHookRunsOnceForEachIndexBeforeTheConstructorReturns) {
  const std::size_t n = workers();
  std::vector<std::atomic<int>> calls(n);
  std::vector<std::thread::id> threads(n);  // each written by its worker's hook
  std::atomic<int> out_of_range{0};
  ThreadPoolConfig config = config_of(n, "hkstart");
  config.on_thread_start = [&](std::size_t i) {
    if (i >= n) {
      out_of_range.fetch_add(1);
      return;
    }
    t_worker = i;
    threads[i] = std::this_thread::get_id();
    calls[i].fetch_add(1);
  };
  ThreadPool pool(config);
  // No wait: the constructor returned after every hook did (and that
  // return orders the writes above before these reads).
  EXPECT_EQ(out_of_range.load(), 0);
  for (std::size_t i = 0; i < n; ++i) EXPECT_EQ(calls[i].load(), 1) << "worker " << i;
  // Each worker ran its hook on its own thread, before this task.
  const auto seen = on_every_worker(pool, [&threads] {
    return t_worker != kNoWorker && threads[t_worker] == std::this_thread::get_id() ? t_worker
                                                                                     : kNoWorker;
  });
  std::vector<int> hits(n, 0);
  for (std::size_t index : seen) {
    ASSERT_NE(index, kNoWorker) << "a task ran on a worker whose start hook had not run there";
    ++hits[index];
  }
  for (std::size_t i = 0; i < n; ++i) EXPECT_EQ(hits[i], 1) << "worker " << i;
}

TEST_P(PoolHooks, EveryTaskRunsAfterItsWorkersStartHook) {
  const std::size_t n = workers();
  ThreadPoolConfig config = config_of(n, "hkbefore");
  config.on_thread_start = [](std::size_t i) { t_worker = i; };
  constexpr int kTasks = 2000;
  std::atomic<int> early{0};
  std::atomic<int> ran{0};
  {
    ThreadPool pool(config);
    for (int i = 0; i < kTasks; ++i) {
      pool.post([&] {
        if (t_worker == kNoWorker) early.fetch_add(1);
        ran.fetch_add(1);
      });
    }
  }
  EXPECT_EQ(ran.load(), kTasks);
  EXPECT_EQ(early.load(), 0);
}

TEST_P(PoolHooks, AStartHookCanNameItsThreadAndThePoolKeepsThatName) {
  ThreadPoolConfig config = config_of(workers(), "hkname");
  config.on_thread_start = [](std::size_t i) {
    t_worker = i;
    const std::string name = "own-" + std::to_string(i);
    pthread_setname_np(pthread_self(), name.c_str());
  };
  ThreadPool pool(config);
  const auto names = on_every_worker(pool, [] {
    return std::make_pair(t_worker, current_thread_name());
  });
  for (const auto& [index, name] : names) EXPECT_EQ(name, "own-" + std::to_string(index));
}

TEST_P(PoolHooks, WithoutANameOfItsOwnAStartHookSeesThePoolsName) {
  if (!test::kThreadNames) GTEST_SKIP() << "built without thread names";
  ThreadPoolConfig config = config_of(workers(), "hkpool");
  std::vector<std::string> names(workers());  // each written by its worker's hook
  config.on_thread_start = [&names](std::size_t i) { names[i] = current_thread_name(); };
  ThreadPool pool(config);
  for (std::size_t i = 0; i < workers(); ++i) EXPECT_EQ(names[i], "hkpool-" + std::to_string(i));
}

TEST_P(PoolHooks, AStartHookCanPinItsWorkerToCpuZero) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  ASSERT_EQ(sched_getaffinity(0, sizeof allowed, &allowed), 0);
  if (!CPU_ISSET(0, &allowed)) GTEST_SKIP() << "CPU 0 is not in this process's affinity mask";
  std::atomic<int> refused{0};
  ThreadPoolConfig config = config_of(workers(), "hkpin");
  config.on_thread_start = [&refused](std::size_t i) {
    t_worker = i;
    cpu_set_t only_zero;
    CPU_ZERO(&only_zero);
    CPU_SET(0, &only_zero);
    // pid 0: the calling thread only.
    if (sched_setaffinity(0, sizeof only_zero, &only_zero) != 0) refused.fetch_add(1);
  };
  ThreadPool pool(config);
  ASSERT_EQ(refused.load(), 0);
  const auto cpus = on_every_worker(pool, [] { return std::make_pair(t_worker, sched_getcpu()); });
  for (const auto& [index, cpu] : cpus) {
    EXPECT_NE(index, kNoWorker);
    EXPECT_EQ(cpu, 0) << "worker " << index;
  }
}

TEST(PoolHooks, AThrowingStartHookMakesTheConstructorThrowItAndLeavesNoThread) {
  const std::string prefix = "hkfail";
  // A first thread starts what sanitizer runtimes start lazily (TSan's
  // background thread), so that the count before holds them; it is gone
  // from /proc a moment after its join.
  pid_t first = 0;
  std::thread([&first] { first = gettid(); }).join();
  const std::string first_entry = "/proc/self/task/" + std::to_string(first);
  ASSERT_TRUE(spin_until_true([&] { return access(first_entry.c_str(), F_OK) != 0; }));
  const ThreadCensus before = census(prefix);
  ASSERT_GE(before.total, 1) << "cannot read /proc/self/task";
  ASSERT_EQ(before.named, 0);
  std::vector<std::atomic<int>> starts(3);
  std::vector<std::atomic<int>> stops(3);
  ThreadPoolConfig config = config_of(3, prefix);
  config.on_thread_start = [&starts](std::size_t i) {
    starts[i].fetch_add(1);
    if (i == 1) throw HookFailure("worker 1 refused to start");
  };
  config.on_thread_stop = [&stops](std::size_t i) { stops[i].fetch_add(1); };
  bool threw = false;
  try {
    ThreadPool pool(config);
  } catch (const HookFailure& e) {
    threw = true;
    EXPECT_STREQ(e.what(), "worker 1 refused to start");
  } catch (...) {
    ADD_FAILURE() << "the constructor threw something other than the hook's exception";
  }
  ASSERT_TRUE(threw) << "the constructor did not throw";
  // Joined before the throw: every hook call is over, and counted.
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(starts[i].load(), 1) << "worker " << i;
  EXPECT_EQ(stops[0].load(), 1);
  EXPECT_EQ(stops[1].load(), 0) << "the stop hook ran on the worker whose start hook threw";
  EXPECT_EQ(stops[2].load(), 1);
  // A joined thread leaves /proc a moment after pthread_join returns (the
  // kernel reaps it): wait for that, under the guard.
  EXPECT_TRUE(spin_until_true([&] {
    const ThreadCensus now = census(prefix);
    return now.named == 0 && now.total <= before.total;
  })) << "threads were left: " << census(prefix).named << " named " << prefix << "*";
}

// ---- on_thread_stop ---------------------------------------------------------------

TEST_P(PoolHooks, TheStopHookRunsOnceOnEveryWorkerAfterItsLastTask) {
  const std::size_t n = workers();
  struct PerWorker {
    std::atomic<int> stops{0};
    std::atomic<bool> stopped{false};
    std::atomic<std::uint64_t> last_task{0};  // sequence number of its last task's end
    std::atomic<std::uint64_t> stop_at{0};    // ... and of its stop hook
    std::thread::id start_thread;             // written by its start hook
    std::thread::id stop_thread;              // written by its stop hook
  };
  std::vector<PerWorker> per(n);
  std::atomic<std::uint64_t> sequence{0};
  std::atomic<int> after_stop{0};
  std::atomic<int> out_of_range{0};
  ThreadPoolConfig config = config_of(n, "hkstop");
  config.on_thread_start = [&](std::size_t i) {
    t_worker = i;
    per[i].start_thread = std::this_thread::get_id();
  };
  config.on_thread_stop = [&](std::size_t i) {
    if (i >= n || t_worker != i) {
      out_of_range.fetch_add(1);
      return;
    }
    per[i].stop_thread = std::this_thread::get_id();
    per[i].stopped.store(true);
    per[i].stop_at.store(sequence.fetch_add(1) + 1);
    per[i].stops.fetch_add(1);
  };
  ThreadPool pool(config);
  auto task = [&] {
    PerWorker& mine = per[t_worker];
    if (mine.stopped.load()) after_stop.fetch_add(1);
    mine.last_task.store(sequence.fetch_add(1) + 1);
  };
  // Tasks on every worker, then more queued right before the drain.
  on_every_worker(pool, [&] {
    task();
    return 0;
  });
  pool.wait_idle();
  for (std::size_t i = 0; i < n; ++i) EXPECT_EQ(per[i].stops.load(), 0) << "stopped early";
  for (int i = 0; i < 1000; ++i) pool.post(task);
  pool.shutdown();  // joins: every stop hook has returned
  EXPECT_EQ(out_of_range.load(), 0);
  EXPECT_EQ(after_stop.load(), 0) << "a task ran on a worker after its stop hook";
  for (std::size_t i = 0; i < n; ++i) {
    EXPECT_EQ(per[i].stops.load(), 1) << "worker " << i;
    EXPECT_GT(per[i].stop_at.load(), per[i].last_task.load()) << "worker " << i;
    EXPECT_EQ(per[i].stop_thread, per[i].start_thread) << "worker " << i;
  }
}

// ---- on_unobserved_failure --------------------------------------------------------

TEST_P(PoolHooks, APostedCallableThatThrowsReachesTheFailureHookWithItsExceptionAndId) {
  Reports reports;
  ThreadPoolConfig config = config_of(workers(), "hkpost");
  config.on_unobserved_failure = reports.hook();
  ThreadPool pool(config);
  std::atomic<TaskId> inside{0};
  ASSERT_TRUE(pool.post([&inside] {
    inside.store(this_task::id());
    throw HookFailure("posted callable failed");
  }));
  // The hook runs before the task counts as finished: no other wait needed.
  pool.wait_idle();
  std::vector<Reports::Report> got = reports.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_NE(inside.load(), 0u);
  EXPECT_EQ(got[0].id, inside.load());
  EXPECT_NE(got[0].thread, std::this_thread::get_id()) << "not run on a worker";
  EXPECT_EQ(message_of(got[0].failure), "posted callable failed");
  EXPECT_THROW(std::rethrow_exception(got[0].failure), HookFailure);
  EXPECT_EQ(pool.stats().failed, 1u);
}

TEST_P(PoolHooks, EachPostedFailureIsReportedOnceWithItsOwnId) {
  Reports reports;
  ThreadPoolConfig config = config_of(workers(), "hkmany");
  config.on_unobserved_failure = reports.hook();
  ThreadPool pool(config);
  constexpr int kTasks = 200;
  std::vector<std::atomic<TaskId>> ids(kTasks);
  for (int i = 0; i < kTasks; ++i) {
    pool.post([&ids, i] {
      ids[static_cast<std::size_t>(i)].store(this_task::id());
      if (i % 2 == 0) throw HookFailure(std::to_string(i));
    });
  }
  pool.wait_idle();
  std::vector<Reports::Report> got = reports.take();
  ASSERT_EQ(got.size(), static_cast<std::size_t>(kTasks / 2));
  std::vector<int> hits(kTasks, 0);
  for (const Reports::Report& report : got) {
    const int i = std::stoi(message_of(report.failure));
    ASSERT_TRUE(i >= 0 && i < kTasks && i % 2 == 0) << i;
    EXPECT_EQ(report.id, ids[static_cast<std::size_t>(i)].load()) << "task " << i;
    ++hits[static_cast<std::size_t>(i)];
  }
  for (int i = 0; i < kTasks; i += 2) EXPECT_EQ(hits[static_cast<std::size_t>(i)], 1) << i;
  const ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.failed, static_cast<std::uint64_t>(kTasks / 2));
  EXPECT_EQ(stats.completed, static_cast<std::uint64_t>(kTasks / 2));
}

Task<void> failing_coroutine(std::atomic<TaskId>* before, std::atomic<TaskId>* after,
                             bool suspend) {
  before->store(this_task::id());
  if (suspend) co_await quell::yield();  // ends after run() returned: the root finishes itself
  after->store(this_task::id());
  throw HookFailure(suspend ? "coroutine failed after a yield" : "coroutine failed at once");
}

TEST_P(PoolHooks, APostedCoroutineThatThrowsReachesTheFailureHook) {
  for (const bool suspend : {false, true}) {
    SCOPED_TRACE(suspend ? "after a co_await" : "before any co_await");
    Reports reports;
    ThreadPoolConfig config = config_of(workers(), "hkcoro");
    config.on_unobserved_failure = reports.hook();
    ThreadPool pool(config);
    std::atomic<TaskId> before{0};
    std::atomic<TaskId> after{0};
    ASSERT_TRUE(pool.post(failing_coroutine(&before, &after, suspend)));
    pool.wait_idle();
    std::vector<Reports::Report> got = reports.take();
    ASSERT_EQ(got.size(), 1u);
    EXPECT_NE(before.load(), 0u);
    EXPECT_EQ(after.load(), before.load());
    EXPECT_EQ(got[0].id, before.load());
    EXPECT_EQ(message_of(got[0].failure), suspend ? "coroutine failed after a yield"
                                                  : "coroutine failed at once");
    EXPECT_EQ(pool.stats().failed, 1u);
  }
}

TEST_P(PoolHooks, APeriodicTickThatThrowsReachesTheFailureHook) {
  Reports reports;
  ThreadPoolConfig config = config_of(workers(), "hktick");
  config.on_unobserved_failure = reports.hook();
  ThreadPool pool(config);
  std::atomic<int> calls{0};
  std::atomic<TaskId> failing_id{0};
  PeriodicTask task(pool, 1ms, [&] {
    if (calls.fetch_add(1) == 0) {
      failing_id.store(this_task::id());
      throw HookFailure("tick failed");
    }
  });
  ASSERT_TRUE(reports.wait_for(1)) << "no report within the guard";
  ASSERT_TRUE(spin_until_true([&] { return calls.load() >= 2; })) << "the schedule stopped";
  task.stop();
  task.join();
  pool.wait_idle();
  std::vector<Reports::Report> got = reports.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_NE(failing_id.load(), 0u);
  EXPECT_EQ(got[0].id, failing_id.load());
  EXPECT_EQ(message_of(got[0].failure), "tick failed");
  EXPECT_EQ(task.failed_ticks(), 1u);
  EXPECT_EQ(pool.stats().failed, 1u);
}

TEST_P(PoolHooks, ACoroutineTickThatThrowsReachesTheFailureHook) {
  Reports reports;
  ThreadPoolConfig config = config_of(workers(), "hkctick");
  config.on_unobserved_failure = reports.hook();
  ThreadPool pool(config);
  std::atomic<int> calls{0};
  std::atomic<TaskId> failing_id{0};
  PeriodicTask task(pool, 1ms, [&]() -> Task<void> {
    const bool fail = calls.fetch_add(1) == 0;
    co_await quell::yield();
    if (fail) {
      failing_id.store(this_task::id());
      throw HookFailure("coroutine tick failed");
    }
  });
  ASSERT_TRUE(reports.wait_for(1)) << "no report within the guard";
  ASSERT_TRUE(spin_until_true([&] { return calls.load() >= 2; })) << "the schedule stopped";
  task.stop();
  task.join();
  pool.wait_idle();
  std::vector<Reports::Report> got = reports.take();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_NE(failing_id.load(), 0u);
  EXPECT_EQ(got[0].id, failing_id.load());
  EXPECT_EQ(message_of(got[0].failure), "coroutine tick failed");
  EXPECT_EQ(task.failed_ticks(), 1u);
  EXPECT_EQ(pool.stats().failed, 1u);
}

TEST_P(PoolHooks, FailuresSomeoneObservesNeverReachTheFailureHook) {
  Reports reports;
  ThreadPoolConfig config = config_of(workers(), "hkseen");
  config.on_unobserved_failure = reports.hook();
  ThreadPool pool(config);
  Future<void> submitted = pool.submit([] { throw HookFailure("submitted"); });
  TaskHandle<int> handled = pool.handle([]() -> int { throw HookFailure("handled"); });
  TaskGroup group(pool);
  group.submit([] { throw HookFailure("grouped"); });
  // A posted task that ends cancelled is no failure either.
  pool.post([] { throw OperationCancelled(); });
  pool.wait_idle();
  EXPECT_EQ(reports.size(), 0u);
  try {
    submitted.get();
    ADD_FAILURE() << "get() did not rethrow";
  } catch (const HookFailure& e) {
    EXPECT_STREQ(e.what(), "submitted");
  }
  EXPECT_THROW(static_cast<void>(handled.get()), HookFailure);
  EXPECT_THROW(group.wait_and_rethrow(), HookFailure);
  const ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.failed, 3u);
  EXPECT_EQ(stats.cancelled, 1u);
  EXPECT_EQ(reports.size(), 0u);
}

TEST_P(PoolHooks, WithoutAFailureHookUnobservedFailuresAreStillCounted) {
  ThreadPool pool(config_of(workers(), "hkdrop"));
  for (int i = 0; i < 10; ++i) pool.post([] { throw HookFailure("dropped"); });
  std::atomic<TaskId> before{0};
  std::atomic<TaskId> after{0};
  pool.post(failing_coroutine(&before, &after, true));
  pool.wait_idle();
  EXPECT_EQ(pool.stats().failed, 11u);
}

INSTANTIATE_TEST_SUITE_P(PoolSizes, PoolHooks, ::testing::Values(1, 2, 4), test::pool_size_name);

// ---- throwing hooks terminate -----------------------------------------------------

TEST(PoolHooksDeathTest, AStopHookThatThrowsTerminates) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        ThreadPoolConfig config = config_of(2, "hkdie");
        config.on_thread_stop = [](std::size_t) { throw HookFailure("stop hook failed"); };
        ThreadPool pool(config);
        pool.shutdown();
      },
      "");
}

TEST(PoolHooksDeathTest, AFailureHookThatThrowsTerminates) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        ThreadPoolConfig config = config_of(2, "hkdie");
        config.on_unobserved_failure = [](std::exception_ptr, TaskId) {
          throw HookFailure("failure hook failed");
        };
        ThreadPool pool(config);
        pool.post([] { throw HookFailure("posted"); });
        pool.wait_idle();
      },
      "");
}

}  // namespace
}  // namespace quell
