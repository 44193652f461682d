// Scopes three deep (root → child → grandchild) under concurrent spawning,
// round after round, while another thread cancels the root at a moment
// chosen at random, or a grandchild task fails; and a TaskGroup whose
// cancel() races submissions. The checks are conservation laws: every
// callable made is destroyed exactly once, every spawned task either ran or
// was dropped, no task starts after its scope's wait() returned, reasons
// arrive as sent (requested, failure), and the pool's counters sum up.
#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "quell/scope.hpp"
#include "quell/task_group.hpp"
#include "quell/thread_pool.hpp"
#include "../sanitized.hpp"
#include "progress_watchdog.hpp"

namespace quell {
namespace {

constexpr int kRounds = test::kSanitized ? 2000 : 5000;

// A round that makes no progress for this long is a hang: abort with a
// message rather than wait for the suite's timeout.
constexpr std::chrono::seconds kHangGuard{120};

class Watchdog : public test::ProgressWatchdog {
 public:
  Watchdog() : ProgressWatchdog(kHangGuard) {}
};

// What every callable of a round carries: counts its live instances (a
// moved-from probe counts nothing), and says at destruction whether the body
// ran.
struct Counts {
  std::atomic<long> made{0};            // live probes constructed
  std::atomic<long> destroyed_run{0};   // destroyed after the body ran
  std::atomic<long> destroyed_unrun{0}; // destroyed without running: dropped or refused
  std::atomic<long> started{0};         // bodies started
  std::atomic<long> spawned{0};         // spawn() returned true
  std::atomic<long> refused{0};         // spawn() returned false
  std::atomic<long> late_starts{0};     // a body started after its scope's wait() returned
  std::atomic<long> wrong_reason{0};    // a token cancelled with a reason not sent
  std::atomic<long> failures_thrown{0};
};

class Probe {
 public:
  explicit Probe(Counts* counts) : counts_(counts) { counts_->made.fetch_add(1); }
  Probe(Probe&& other) noexcept : counts_(std::exchange(other.counts_, nullptr)), ran_(other.ran_) {}
  Probe(const Probe&) = delete;
  Probe& operator=(const Probe&) = delete;
  Probe& operator=(Probe&&) = delete;
  ~Probe() {
    if (counts_ == nullptr) return;
    (ran_ ? counts_->destroyed_run : counts_->destroyed_unrun).fetch_add(1);
  }
  void ran() { ran_ = true; }

 private:
  Counts* counts_;
  bool ran_ = false;
};

struct Boom {};

// One round's shared facts. Joined flags are shared so a late body can read
// them after the frame that owned its scope is gone.
struct Round {
  Counts* counts;
  CancelReason expected;  // the only reason a cancelled token may carry
  int fail_at;            // the n-th grandchild to start throws Boom; 0: none
  std::atomic<int> grandchildren_started{0};
};

using Joined = std::shared_ptr<std::atomic<bool>>;

void check_start(Round& round, const Joined& joined) {
  round.counts->started.fetch_add(1);
  if (joined->load()) round.counts->late_starts.fetch_add(1);
}

void check_reason(Round& round, const CancellationToken& token) {
  if (token.cancelled() && token.reason() != round.expected) round.counts->wrong_reason.fetch_add(1);
}

template <class F>
void spawn_counted(Round& round, Scope& scope, F body) {
  const bool ok = scope.spawn(std::move(body));
  (ok ? round.counts->spawned : round.counts->refused).fetch_add(1);
}

// A grandchild: may fail, may give up on cancellation, may spawn one sibling.
void grandchild(Round& round, Scope& scope, const Joined& joined, Probe& probe,
                const CancellationToken& token, int depth) {
  probe.ran();
  check_start(round, joined);
  check_reason(round, token);
  const int n = round.grandchildren_started.fetch_add(1) + 1;
  if (n == round.fail_at) {
    round.counts->failures_thrown.fetch_add(1);
    throw Boom{};
  }
  if (depth > 0 && !token.cancelled()) {
    spawn_counted(round, scope,
                  [&round, &scope, joined, p = Probe(round.counts), depth](CancellationToken t) mutable {
                    grandchild(round, scope, joined, p, t, depth - 1);
                  });
  }
  if ((n & 1) != 0) token.throw_if_cancelled();  // some end cancelled, others completed
}

// A child task: opens a grandchild scope, fills it, joins it (a failure in
// it propagates: this task fails too).
void child(Round& round, Scope& parent, const Joined& joined, Probe& probe,
           const CancellationToken& token) {
  probe.ran();
  check_start(round, joined);
  check_reason(round, token);
  const Joined inner_joined = std::make_shared<std::atomic<bool>>(false);
  Scope inner(parent);
  for (int i = 0; i < 3; ++i) {
    spawn_counted(round, inner,
                  [&round, &inner, inner_joined, p = Probe(round.counts)](CancellationToken t) mutable {
                    grandchild(round, inner, inner_joined, p, t, 1);
                  });
  }
  try {
    inner.wait();
  } catch (...) {
    inner_joined->store(true);
    throw;
  }
  inner_joined->store(true);
  check_reason(round, inner.cancellation_token());
}

// A root task: opens a child scope and spawns child tasks into it.
void root_task(Round& round, Scope& root, const Joined& joined, Probe& probe,
               const CancellationToken& token) {
  probe.ran();
  check_start(round, joined);
  check_reason(round, token);
  const Joined inner_joined = std::make_shared<std::atomic<bool>>(false);
  Scope inner(root);
  for (int i = 0; i < 2; ++i) {
    spawn_counted(round, inner,
                  [&round, &inner, inner_joined, p = Probe(round.counts)](CancellationToken t) mutable {
                    child(round, inner, inner_joined, p, t);
                  });
  }
  try {
    inner.wait();
  } catch (...) {
    inner_joined->store(true);
    throw;
  }
  inner_joined->store(true);
}

class ScopeStress : public ::testing::TestWithParam<std::size_t> {};

TEST_P(ScopeStress, CascadesConserveTasksAndCallablesAndCarryTheirReasons) {
  ThreadPool pool(GetParam());
  Counts counts;
  Watchdog watchdog;
  std::barrier meet(2);
  std::atomic<Scope*> current{nullptr};
  std::atomic<bool> cancel_this_round{false};
  std::atomic<int> delay{0};
  std::atomic<bool> done{false};
  long failure_rounds = 0;
  long root_threw_boom = 0;
  long root_threw_other = 0;
  long reasons_checked = 0;

  std::thread canceller([&] {
    for (;;) {
      meet.arrive_and_wait();  // the round's root exists (or we are done)
      if (done.load()) return;
      if (cancel_this_round.load()) {
        for (int i = delay.load(); i > 0; --i) std::this_thread::yield();
        current.load()->cancel();
      }
      meet.arrive_and_wait();  // the round is over
    }
  });

  std::mt19937 rng(12345);
  for (int r = 0; r < kRounds; ++r) {
    const bool fail = (r % 3) == 2;
    Round round{&counts, fail ? CancelReason::failure : CancelReason::requested,
                fail ? static_cast<int>(rng() % 4) + 1 : 0};
    failure_rounds += fail ? 1 : 0;
    cancel_this_round = !fail;
    delay = static_cast<int>(rng() % 64);
    const Joined joined = std::make_shared<std::atomic<bool>>(false);
    {
      Scope root(pool);
      current = &root;
      meet.arrive_and_wait();
      for (int i = 0; i < 2; ++i) {
        spawn_counted(round, root,
                      [&round, &root, joined, p = Probe(&counts)](CancellationToken t) mutable {
                        root_task(round, root, joined, p, t);
                      });
      }
      try {
        root.wait();
      } catch (const Boom&) {
        ++root_threw_boom;
      } catch (...) {
        ++root_threw_other;
      }
      joined->store(true);
      meet.arrive_and_wait();  // the canceller is done with the root
      const CancellationToken token = root.cancellation_token();
      if (fail || token.cancelled()) {
        ++reasons_checked;
        EXPECT_EQ(token.reason(), round.expected) << "round " << r;
      }
      current = nullptr;
    }
    watchdog.tick();
  }
  done = true;
  meet.arrive_and_wait();
  canceller.join();
  pool.wait_idle();

  // Every callable made was destroyed once, after running or unrun.
  EXPECT_EQ(counts.made.load(), counts.destroyed_run.load() + counts.destroyed_unrun.load());
  EXPECT_EQ(counts.destroyed_run.load(), counts.started.load());
  // Unrun: refused by spawn(), or spawned and dropped; never negative.
  const long dropped = counts.destroyed_unrun.load() - counts.refused.load();
  EXPECT_GE(dropped, 0);
  EXPECT_EQ(counts.spawned.load(), counts.started.load() + dropped);
  EXPECT_EQ(counts.late_starts.load(), 0);
  EXPECT_EQ(counts.wrong_reason.load(), 0);
  // A failure reaches the root through every level's wait(): three failed
  // tasks per failure round (grandchild, child, root task).
  EXPECT_EQ(counts.failures_thrown.load(), failure_rounds);
  EXPECT_EQ(root_threw_boom, failure_rounds);
  EXPECT_EQ(root_threw_other, 0);
  const ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.submitted, static_cast<std::uint64_t>(counts.spawned.load()));
  EXPECT_EQ(stats.rejected, 0u);
  EXPECT_EQ(stats.timed_out, 0u);
  EXPECT_EQ(stats.failed, static_cast<std::uint64_t>(3 * failure_rounds));
  EXPECT_EQ(stats.completed + stats.failed + stats.cancelled, stats.submitted);
  EXPECT_EQ(stats.queued, 0u);
  EXPECT_EQ(stats.running, 0u);
  RecordProperty("tasks", static_cast<int>(counts.spawned.load()));
  RecordProperty("dropped", static_cast<int>(dropped));
  RecordProperty("reasons_checked", static_cast<int>(reasons_checked));
}

// ---- TaskGroup: cancel() against submissions ----------------------------------

TEST_P(ScopeStress, TaskGroupCancelRacingSubmissionsLosesNothing) {
  ThreadPool pool(GetParam());
  Watchdog watchdog;
  constexpr int kSubmitters = 2;
  constexpr int kEach = 24;
  Counts counts;
  long after_cancel_checked = 0;
  std::mt19937 rng(777);
  for (int r = 0; r < kRounds; ++r) {
    TaskGroup group(pool);
    // A second origin: submission i of each submitter follows sources[i],
    // which another thread cancels in order, racing the submissions, so an
    // options' token often fires while its task is being linked.
    std::vector<CancellationSource> sources(kEach);
    std::atomic<bool> cancel_returned{false};
    std::barrier start(kSubmitters + 2);
    const int cancel_delay = static_cast<int>(rng() % 128);
    const int options_delay = static_cast<int>(rng() % 16);
    struct Submitted {
      Future<int> future;
      bool after_cancel;  // submit() began after cancel() returned
    };
    std::vector<std::vector<Submitted>> submitted(kSubmitters);
    std::vector<std::thread> threads;
    for (int s = 0; s < kSubmitters; ++s) {
      threads.emplace_back([&, s] {
        auto& out = submitted[static_cast<std::size_t>(s)];
        out.reserve(kEach);
        start.arrive_and_wait();
        for (int i = 0; i < kEach; ++i) {
          const bool after = cancel_returned.load();
          TaskOptions options;
          if ((i & 3) != 3) options.set_cancellation(sources[static_cast<std::size_t>(i)].token());
          out.push_back({group.submit(
                             [p = Probe(&counts), &counts](CancellationToken token) mutable {
                               p.ran();
                               counts.started.fetch_add(1);
                               if ((reinterpret_cast<std::uintptr_t>(&p) & 64) != 0) {
                                 token.throw_if_cancelled();
                               }
                               return 1;
                             },
                             options),
                         after});
        }
      });
    }
    threads.emplace_back([&] {
      start.arrive_and_wait();
      for (int i = cancel_delay; i > 0; --i) std::this_thread::yield();
      group.cancel();
      cancel_returned = true;
    });
    threads.emplace_back([&] {
      start.arrive_and_wait();
      for (int i = options_delay; i > 0; --i) std::this_thread::yield();
      for (auto& source : sources) source.request_cancel(CancelReason::shutdown);
    });
    for (auto& thread : threads) thread.join();
    group.wait_and_rethrow();
    EXPECT_EQ(group.size(), static_cast<std::size_t>(kSubmitters * kEach));
    EXPECT_EQ(group.pending(), 0u);
    for (auto& list : submitted) {
      for (auto& entry : list) {
        ASSERT_TRUE(entry.future.ready()) << "round " << r;
        const TaskStatus status = entry.future.status();
        EXPECT_TRUE(status == TaskStatus::completed || status == TaskStatus::cancelled)
            << to_string(status);
        if (entry.after_cancel) {
          ++after_cancel_checked;
          EXPECT_EQ(status, TaskStatus::cancelled) << "submitted after cancel() returned";
        }
      }
    }
    watchdog.tick();
  }
  pool.wait_idle();
  EXPECT_EQ(counts.made.load(), counts.destroyed_run.load() + counts.destroyed_unrun.load());
  EXPECT_EQ(counts.destroyed_run.load(), counts.started.load());
  const ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.submitted, static_cast<std::uint64_t>(kRounds) * kSubmitters * kEach);
  EXPECT_EQ(stats.completed + stats.cancelled, stats.submitted);
  EXPECT_EQ(stats.failed + stats.rejected + stats.timed_out, 0u);
  // Dropped ones never ran; every one that ran was either completed or
  // cancelled by its own throw.
  EXPECT_LE(static_cast<std::uint64_t>(counts.started.load()), stats.submitted);
  RecordProperty("after_cancel_checked", static_cast<int>(after_cancel_checked));
}

INSTANTIATE_TEST_SUITE_P(PoolSizes, ScopeStress, ::testing::Values(2, 4),
                         [](const ::testing::TestParamInfo<std::size_t>& info) {
                           return std::to_string(info.param) + "Workers";
                         });

}  // namespace
}  // namespace quell
