// Scope: spawning, closing, failure that cancels the scope, cancellation and
// its reasons, child scopes, waiting (also on the pool's own workers) and
// destruction (API.md §7 and §9 "Groups and scopes", "Outcomes").
#include "quell/scope.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <latch>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include "pool_test_support.hpp"
#include "quell/cancellation.hpp"
#include "quell/error.hpp"
#include "quell/thread_pool.hpp"

namespace quell {
namespace {

using namespace std::chrono_literals;
using test::DestructionProbe;
using test::Gate;
using test::OpenOnExit;
using Clock = std::chrono::steady_clock;

class ScopeP : public ::testing::TestWithParam<std::size_t> {
 protected:
  std::size_t workers() const { return GetParam(); }
};

// Runs `action` on another thread and aborts the binary if it has not
// returned within the guard: a deadlock would otherwise hang every test
// after this one.
void finishes_or_abort(const std::function<void()>& action, const char* what) {
  test::GuardedRun run(action);
  if (!run.finished_within(test::kGuard)) {
    std::fprintf(stderr, "%s did not finish within the guard: a deadlock\n", what);
    std::abort();
  }
}

// Yields until `done()` holds; false if the guard passed first.
template <class Pred>
bool eventually(Pred done) {
  const auto until = Clock::now() + test::kGuard;
  while (!done()) {
    if (Clock::now() > until) return false;
    std::this_thread::yield();
  }
  return true;
}

// The exception wait() rethrows, or null.
std::exception_ptr wait_error(Scope& scope) {
  try {
    scope.wait();
  } catch (...) {
    return std::current_exception();
  }
  return nullptr;
}

std::string message_of(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "(not a std::exception)";
  }
}

// ---- spawning ----------------------------------------------------------------

TEST_P(ScopeP, SpawnReturnsTrueAndWaitRunsEveryTaskInBothForms) {
  ThreadPool pool(workers());
  std::atomic<int> plain{0};
  std::atomic<int> with_token{0};
  Scope scope(pool);
  for (int i = 0; i < 100; ++i) {
    EXPECT_TRUE(scope.spawn([&] { plain.fetch_add(1); }));
    EXPECT_TRUE(scope.spawn([&](CancellationToken token) {
      if (token.can_cancel() && token == this_task::cancellation_token()) with_token.fetch_add(1);
    }));
  }
  scope.wait();
  EXPECT_EQ(plain.load(), 100);
  EXPECT_EQ(with_token.load(), 100);
  EXPECT_EQ(scope.size(), 0u);
}

TEST(Scope, SpawnAcceptsAMoveOnlyCallable) {
  ThreadPool pool(1);
  std::atomic<int> value{0};
  Scope scope(pool);
  EXPECT_TRUE(scope.spawn([&value, owned = std::make_unique<int>(5)] { value = *owned; }));
  scope.wait();
  EXPECT_EQ(value.load(), 5);
}

TEST(Scope, EverythingATaskDidHappensBeforeWaitReturns) {
  ThreadPool pool(2);
  std::vector<int> written(64, 0);  // plain memory: TSan checks the ordering
  Scope scope(pool);
  for (std::size_t i = 0; i < written.size(); ++i) {
    scope.spawn([&written, i] { written[i] = static_cast<int>(i) + 1; });
  }
  scope.wait();
  for (std::size_t i = 0; i < written.size(); ++i) EXPECT_EQ(written[i], static_cast<int>(i) + 1);
}

TEST(Scope, SpawnReturnsFalseOnceClosedAndRunsNothing) {
  ThreadPool pool(1);
  Scope scope(pool);
  scope.close();
  DestructionProbe::Record record;
  std::atomic<bool> ran{false};
  EXPECT_FALSE(scope.spawn([&ran, probe = DestructionProbe(&record)] { ran = true; }));
  EXPECT_EQ(record.destroyed.load(), 1);
  EXPECT_EQ(scope.size(), 0u);
  scope.wait();
  pool.wait_idle();
  EXPECT_FALSE(ran.load());
}

TEST(Scope, SpawnReturnsFalseOnceCancelledAndRunsNothing) {
  ThreadPool pool(1);
  Scope scope(pool);
  scope.cancel();
  std::atomic<bool> ran{false};
  EXPECT_FALSE(scope.spawn([&ran] { ran = true; }));
  EXPECT_EQ(scope.size(), 0u);
  EXPECT_NO_THROW(scope.wait());
  pool.wait_idle();
  EXPECT_FALSE(ran.load());
  EXPECT_EQ(pool.stats().submitted, 0u);
}

TEST(Scope, SpawnReturnsFalseWhenThePoolRejectsAfterShutdown) {
  ThreadPool pool(1);
  Scope scope(pool);
  pool.shutdown();
  DestructionProbe::Record record;
  EXPECT_FALSE(scope.spawn([probe = DestructionProbe(&record)] {}));
  EXPECT_EQ(record.destroyed.load(), 1);
  EXPECT_EQ(scope.size(), 0u);
  EXPECT_NO_THROW(scope.wait());  // a rejection is not a failure
  EXPECT_EQ(pool.stats().rejected, 1u);
}

TEST(Scope, SpawnReturnsFalseWhenThePoolRejectsPastItsQueueBound) {
  ThreadPoolConfig config;
  config.thread_count = 1;
  config.max_queue_size = 1;
  ThreadPool pool(config);
  Gate gate;
  OpenOnExit open(gate);
  auto blockers = test::block_workers(pool, gate, 1);
  Scope scope(pool);
  std::atomic<int> ran{0};
  EXPECT_TRUE(scope.spawn([&] { ran.fetch_add(1); }));
  EXPECT_FALSE(scope.spawn([&] { ran.fetch_add(1); }));
  EXPECT_EQ(scope.size(), 1u);
  gate.open();
  scope.wait();
  EXPECT_EQ(ran.load(), 1);
}

// The task is accepted and resolved cancelled at once (as post() does); it
// must leave nothing behind in the scope, which is cancelled afterwards.
TEST(Scope, SpawnWithAnAlreadyCancelledOptionsTokenReturnsTrueAndResolvesTheTaskCancelled) {
  ThreadPool pool(1);
  CancellationSource source;
  source.request_cancel();
  for (int round = 0; round < 64; ++round) {
    Scope scope(pool);
    DestructionProbe::Record record;
    std::atomic<bool> ran{false};
    const auto cancelled_before = pool.stats().cancelled;
    EXPECT_TRUE(scope.spawn([&ran, probe = DestructionProbe(&record)] { ran = true; },
                            TaskOptions().set_cancellation(source.token())));
    EXPECT_EQ(record.destroyed.load(), 1);
    EXPECT_EQ(scope.size(), 0u);
    EXPECT_EQ(pool.stats().cancelled, cancelled_before + 1);
    // Spawn more tasks of the same type: they reuse the freed block.
    for (int i = 0; i < 4; ++i) scope.spawn([probe = DestructionProbe(nullptr)] {});
    scope.wait();
    scope.cancel();
    EXPECT_NO_THROW(scope.wait());
    EXPECT_FALSE(ran.load());
  }
}

// ---- failure -----------------------------------------------------------------

TEST(Scope, TheFirstFailureCancelsSiblingsDropsQueuedOnesAndWaitRethrowsIt) {
  ThreadPool pool(2);
  Scope scope(pool);
  constexpr int kQueued = 8;
  std::vector<DestructionProbe::Record> records(kQueued);
  std::latch both_running(2);
  Gate fail;
  OpenOnExit open(fail);
  std::atomic<CancelReason> sibling_saw{CancelReason::none};
  std::atomic<int> queued_ran{0};

  // A sibling that runs until its token fires, then holds its worker until
  // the queued siblings are gone, so no worker can be free to start one.
  ASSERT_TRUE(scope.spawn([&](CancellationToken token) {
    both_running.count_down();
    if (!test::wait_cancelled(token)) return;
    sibling_saw = token.reason();
    EXPECT_TRUE(eventually([&] {
      for (const auto& record : records) {
        if (record.destroyed.load() == 0) return false;
      }
      return true;
    }));
  }));
  ASSERT_TRUE(scope.spawn([&] {
    both_running.count_down();
    fail.wait();
    throw std::runtime_error("first failure");
  }));
  both_running.wait();
  for (auto& record : records) {
    ASSERT_TRUE(scope.spawn([&queued_ran, probe = DestructionProbe(&record)] { queued_ran.fetch_add(1); }));
  }
  EXPECT_EQ(scope.size(), static_cast<std::size_t>(kQueued + 2));
  fail.open();

  const std::exception_ptr first = wait_error(scope);
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(message_of(first), "first failure");
  EXPECT_EQ(sibling_saw.load(), CancelReason::failure);
  EXPECT_TRUE(scope.cancelled());
  EXPECT_EQ(scope.cancellation_token().reason(), CancelReason::failure);
  for (const auto& record : records) EXPECT_EQ(record.destroyed.load(), 1);
  EXPECT_EQ(queued_ran.load(), 0);
  EXPECT_EQ(scope.size(), 0u);

  // Each later wait() rethrows that same failure.
  const std::exception_ptr again = wait_error(scope);
  EXPECT_EQ(again, first);
  EXPECT_EQ(message_of(again), "first failure");
  EXPECT_FALSE(scope.spawn([] {}));  // cancelled
}

TEST(Scope, OnlyTheFirstOfSeveralFailuresIsRethrown) {
  ThreadPool pool(1);  // one worker: the tasks end in spawn order
  Scope scope(pool);
  Gate gate;
  OpenOnExit open(gate);
  auto blockers = test::block_workers(pool, gate, 1);
  // Queued behind the blocker; the first to run fails and drops the rest,
  // whatever they would have thrown.
  scope.spawn([] { throw std::runtime_error("one"); });
  scope.spawn([] { throw std::logic_error("two"); });
  gate.open();
  const std::exception_ptr error = wait_error(scope);
  ASSERT_NE(error, nullptr);
  EXPECT_EQ(message_of(error), "one");
}

TEST(Scope, CancelUsesReasonRequestedAndIsNotAFailure) {
  ThreadPool pool(2);
  Scope scope(pool);
  std::latch started(2);
  std::atomic<int> saw_requested{0};
  for (int i = 0; i < 2; ++i) {
    scope.spawn([&](CancellationToken token) {
      started.count_down();
      ASSERT_TRUE(test::wait_cancelled(token));
      if (token.reason() == CancelReason::requested) saw_requested.fetch_add(1);
      token.throw_if_cancelled();  // ends cancelled: not a failure
    });
  }
  started.wait();
  EXPECT_FALSE(scope.cancelled());
  scope.cancel();
  EXPECT_TRUE(scope.cancelled());
  EXPECT_EQ(scope.cancellation_token().reason(), CancelReason::requested);
  EXPECT_NO_THROW(scope.wait());
  EXPECT_EQ(saw_requested.load(), 2);
  EXPECT_EQ(pool.stats().cancelled, 2u);
}

TEST(Scope, CancelDropsQueuedTasksAtOnceAndDestroysTheirCapturesBeforeReturning) {
  ThreadPool pool(1);
  Gate gate;
  OpenOnExit open(gate);
  auto blockers = test::block_workers(pool, gate, 1);
  Scope scope(pool);
  constexpr int kQueued = 16;
  std::vector<DestructionProbe::Record> records(kQueued);
  std::atomic<int> ran{0};
  for (auto& record : records) {
    ASSERT_TRUE(scope.spawn([&ran, probe = DestructionProbe(&record)] { ran.fetch_add(1); }));
  }
  EXPECT_EQ(scope.size(), static_cast<std::size_t>(kQueued));
  for (const auto& record : records) ASSERT_EQ(record.destroyed.load(), 0);
  scope.cancel();
  for (const auto& record : records) {
    EXPECT_EQ(record.destroyed.load(), 1);
    EXPECT_EQ(record.thread.load(), std::this_thread::get_id());
  }
  EXPECT_EQ(scope.size(), 0u);
  gate.open();
  EXPECT_NO_THROW(scope.wait());
  pool.wait_idle();
  EXPECT_EQ(ran.load(), 0);
}

TEST(Scope, ATaskThatThrowsOperationCancelledOnItsOwnIsNotAFailure) {
  ThreadPool pool(1);
  Scope scope(pool);
  scope.spawn([] { throw OperationCancelled(); });
  EXPECT_NO_THROW(scope.wait());
  EXPECT_FALSE(scope.cancelled());
  EXPECT_TRUE(scope.spawn([] {}));
  scope.wait();
}

// ---- waiting -----------------------------------------------------------------

TEST(Scope, WaitOnAnEmptyScopeReturnsAtOnce) {
  ThreadPool pool(1);
  Scope scope(pool);
  finishes_or_abort([&] { scope.wait(); }, "wait() on an empty scope");
}

TEST(Scope, WaitReturnsOnlyWhenEveryTaskIsTerminal) {
  ThreadPool pool(2);
  Gate gate;
  OpenOnExit open(gate);
  Scope scope(pool);
  std::atomic<int> finished{0};
  for (int i = 0; i < 8; ++i) {
    scope.spawn([&] {
      gate.wait();
      finished.fetch_add(1);
    });
  }
  int seen_after_wait = -1;
  test::GuardedRun waiter([&] {
    scope.wait();
    seen_after_wait = finished.load();
  });
  EXPECT_FALSE(waiter.finished_within(50ms)) << "wait() returned while tasks were held";
  EXPECT_EQ(scope.size(), 8u);
  gate.open();
  ASSERT_TRUE(waiter.finished_within(test::kGuard));
  EXPECT_EQ(seen_after_wait, 8);
}

TEST(Scope, WaitMayBeCalledAgainAndDoesNotClose) {
  ThreadPool pool(2);
  Scope scope(pool);
  std::atomic<int> ran{0};
  EXPECT_TRUE(scope.spawn([&] { ran.fetch_add(1); }));
  scope.wait();
  EXPECT_EQ(ran.load(), 1);
  EXPECT_TRUE(scope.spawn([&] { ran.fetch_add(1); }));
  scope.wait();
  scope.wait();
  EXPECT_EQ(ran.load(), 2);
}

TEST(Scope, SizeCountsTasksNotYetTerminal) {
  ThreadPool pool(1);
  Gate gate;
  OpenOnExit open(gate);
  Scope scope(pool);
  EXPECT_EQ(scope.size(), 0u);
  std::latch started(1);
  scope.spawn([&] {
    started.count_down();
    gate.wait();
  });
  started.wait();
  scope.spawn([] {});
  scope.spawn([] {});
  EXPECT_EQ(scope.size(), 3u);  // one running, two queued
  gate.open();
  scope.wait();
  EXPECT_EQ(scope.size(), 0u);
}

// ---- tasks that spawn, and close() --------------------------------------------

// An accept loop: a task of the scope spawns handlers into it until the scope
// is closed from outside.
TEST_P(ScopeP, TasksSpawnIntoTheirOwnScopeUntilItIsClosedFromOutside) {
  ThreadPool pool(workers());
  Scope scope(pool);
  constexpr int kFirst = 50;
  std::latch accepted_first(1);
  Gate closed;
  OpenOnExit open(closed);
  std::atomic<int> accepted{0};
  std::atomic<int> handled{0};
  std::atomic<bool> refused{false};
  ASSERT_TRUE(scope.spawn([&] {
    for (;;) {
      if (!scope.spawn([&] { handled.fetch_add(1); })) {
        refused = true;
        return;
      }
      if (accepted.fetch_add(1) + 1 == kFirst) {
        accepted_first.count_down();
        closed.wait();
      }
    }
  }));
  accepted_first.wait();
  scope.close();
  closed.open();
  scope.wait();
  EXPECT_TRUE(refused.load());
  EXPECT_EQ(accepted.load(), kFirst);
  EXPECT_EQ(handled.load(), kFirst);
  EXPECT_FALSE(scope.spawn([] {}));
}

TEST(Scope, CloseFromATaskStopsFurtherSpawns) {
  ThreadPool pool(2);
  Scope scope(pool);
  std::atomic<bool> spawned_before{false};
  std::atomic<bool> spawned_after{true};
  ASSERT_TRUE(scope.spawn([&] {
    spawned_before = scope.spawn([] {});
    scope.close();
    spawned_after = scope.spawn([] {});
  }));
  scope.wait();
  EXPECT_TRUE(spawned_before.load());
  EXPECT_FALSE(spawned_after.load());
  EXPECT_FALSE(scope.spawn([] {}));
  EXPECT_FALSE(scope.cancelled());  // closing is not cancelling
}

// Each task spawns two into its own scope until a depth: wait() from outside
// covers all of them, however late each was spawned.
void grow(Scope& scope, std::atomic<int>& ran, int depth) {
  ran.fetch_add(1);
  if (depth == 0) return;
  for (int i = 0; i < 2; ++i) scope.spawn([&scope, &ran, depth] { grow(scope, ran, depth - 1); });
}

TEST_P(ScopeP, WaitCoversTasksSpawnedByTheScopesOwnTasks) {
  ThreadPool pool(workers());
  Scope scope(pool);
  std::atomic<int> ran{0};
  constexpr int kDepth = 9;
  scope.spawn([&] { grow(scope, ran, kDepth); });
  scope.wait();
  EXPECT_EQ(ran.load(), (1 << (kDepth + 1)) - 1);
}

// ---- child scopes ---------------------------------------------------------------

TEST(Scope, AChildScopeIsCancelledWithItsParentAndTakesItsReason) {
  ThreadPool pool(2);
  Scope parent(pool);
  Scope child(parent);
  std::latch started(1);
  std::atomic<CancelReason> saw{CancelReason::none};
  ASSERT_TRUE(child.spawn([&](CancellationToken token) {
    started.count_down();
    if (test::wait_cancelled(token)) saw = token.reason();
  }));
  started.wait();
  parent.cancel();
  EXPECT_TRUE(child.cancelled());
  EXPECT_EQ(child.cancellation_token().reason(), CancelReason::requested);
  EXPECT_NO_THROW(child.wait());
  EXPECT_EQ(saw.load(), CancelReason::requested);
  EXPECT_FALSE(child.spawn([] {}));
}

TEST(Scope, AParentsFailureCancelsItsChildWithReasonFailure) {
  ThreadPool pool(2);
  Scope parent(pool);
  Scope child(parent);
  std::latch started(1);
  std::atomic<CancelReason> saw{CancelReason::none};
  ASSERT_TRUE(child.spawn([&](CancellationToken token) {
    started.count_down();
    if (test::wait_cancelled(token)) saw = token.reason();
  }));
  started.wait();
  ASSERT_TRUE(parent.spawn([] { throw std::runtime_error("parent failed"); }));
  EXPECT_NO_THROW(child.wait());  // the child's task did not fail
  EXPECT_EQ(saw.load(), CancelReason::failure);
  EXPECT_EQ(child.cancellation_token().reason(), CancelReason::failure);
  const std::exception_ptr error = wait_error(parent);
  ASSERT_NE(error, nullptr);
  EXPECT_EQ(message_of(error), "parent failed");
}

TEST(Scope, AChildsCancelOrFailureLeavesItsParentAlone) {
  ThreadPool pool(1);
  Scope parent(pool);
  {
    Scope child(parent);
    child.cancel();
    EXPECT_FALSE(parent.cancelled());
  }
  {
    Scope child(parent);
    child.spawn([] { throw std::runtime_error("child failed"); });
    EXPECT_THROW(child.wait(), std::runtime_error);
    EXPECT_TRUE(child.cancelled());
  }
  EXPECT_FALSE(parent.cancelled());
  std::atomic<bool> ran{false};
  EXPECT_TRUE(parent.spawn([&] { ran = true; }));
  EXPECT_NO_THROW(parent.wait());
  EXPECT_TRUE(ran.load());
}

TEST(Scope, AParentWaitsForItsOwnTasksOnlyAndAChildJoinsItsOwnInItsDestructor) {
  ThreadPool pool(2);
  Scope parent(pool);
  Gate gate;
  OpenOnExit open(gate);
  std::atomic<bool> child_task_done{false};
  std::atomic<bool> parent_task_done{false};
  {
    Scope child(parent);
    ASSERT_TRUE(child.spawn([&] {
      gate.wait();
      child_task_done = true;
    }));
    ASSERT_TRUE(parent.spawn([&] { parent_task_done = true; }));
    finishes_or_abort([&] { parent.wait(); }, "a parent's wait() with a child's task held");
    EXPECT_TRUE(parent_task_done.load());
    EXPECT_FALSE(child_task_done.load());
    EXPECT_EQ(child.size(), 1u);
    gate.open();
  }
  EXPECT_TRUE(child_task_done.load()) << "the child's destructor did not join its task";
}

TEST(Scope, AChildScopeOpenedInsideATaskJoinsBeforeTheTaskEnds) {
  ThreadPool pool(2);
  Scope parent(pool);
  std::atomic<int> grandchildren{0};
  std::atomic<int> seen_at_end{-1};
  parent.spawn([&] {
    {
      Scope child(parent);
      for (int i = 0; i < 16; ++i) child.spawn([&] { grandchildren.fetch_add(1); });
    }
    seen_at_end = grandchildren.load();
  });
  parent.wait();
  EXPECT_EQ(seen_at_end.load(), 16);
}

// ---- destruction -----------------------------------------------------------------

TEST(Scope, TheDestructorWaitsForEveryTask) {
  ThreadPool pool(2);
  Gate gate;
  OpenOnExit open(gate);
  std::atomic<int> finished{0};
  auto scope = std::make_unique<Scope>(pool);
  for (int i = 0; i < 4; ++i) {
    scope->spawn([&] {
      gate.wait();
      finished.fetch_add(1);
    });
  }
  test::GuardedRun destroy([&] { scope.reset(); });
  EXPECT_FALSE(destroy.finished_within(50ms)) << "~Scope returned while tasks were held";
  gate.open();
  ASSERT_TRUE(destroy.finished_within(test::kGuard));
  EXPECT_EQ(finished.load(), 4);
}

TEST(Scope, TheDestructorNeverThrowsAndDropsAFailureWaitDidNotReport) {
  ThreadPool pool(2);
  std::atomic<bool> sibling_done{false};
  std::latch sibling_started(1);
  EXPECT_NO_THROW({
    Scope scope(pool);
    scope.spawn([&](CancellationToken token) {
      sibling_started.count_down();
      test::wait_cancelled(token);  // the failure cancels it
      sibling_done = true;
    });
    scope.spawn([&] {
      sibling_started.wait();
      throw std::runtime_error("unobserved");
    });
  });
  EXPECT_TRUE(sibling_done.load());
}

// ---- on the pool's own workers ----------------------------------------------------

TEST(Scope, WaitOnThePoolsOnlyWorkerHelpsInsteadOfDeadlocking) {
  ThreadPool pool(1);
  int ran = 0;
  finishes_or_abort(
      [&] {
        ran = pool.submit([&pool] {
                    std::atomic<int> children{0};
                    Scope scope(pool);
                    for (int i = 0; i < 16; ++i) scope.spawn([&] { children.fetch_add(1); });
                    scope.wait();
                    return children.load();
                  })
                  .get();
      },
      "Scope::wait() on the pool's only worker");
  EXPECT_EQ(ran, 16);
}

TEST(Scope, TheDestructorOnThePoolsOnlyWorkerHelpsInsteadOfDeadlocking) {
  ThreadPool pool(1);
  std::atomic<int> children{0};
  finishes_or_abort(
      [&] {
        pool.submit([&] {
              Scope scope(pool);
              for (int i = 0; i < 16; ++i) scope.spawn([&] { children.fetch_add(1); });
            })
            .get();
      },
      "~Scope on the pool's only worker");
  EXPECT_EQ(children.load(), 16);
}

TEST(Scope, NestedScopesOnThePoolsOnlyWorkerDoNotDeadlock) {
  ThreadPool pool(1);
  std::atomic<int> leaves{0};
  finishes_or_abort(
      [&] {
        pool.submit([&] {
              Scope outer(pool);
              for (int i = 0; i < 4; ++i) {
                outer.spawn([&] {
                  Scope inner(outer);
                  for (int j = 0; j < 4; ++j) inner.spawn([&] { leaves.fetch_add(1); });
                  inner.wait();
                });
              }
              outer.wait();
            })
            .get();
      },
      "nested scopes on the pool's only worker");
  EXPECT_EQ(leaves.load(), 16);
}

// ---- a task's token and its origins -------------------------------------------------

TEST(Scope, ATasksTokenTakesTheReasonOfTheFirstOriginToCancelIt) {
  for (const bool options_first : {true, false}) {
    SCOPED_TRACE(options_first ? "options' token first" : "scope first");
    ThreadPool pool(1);
    Scope scope(pool);
    CancellationSource source;
    std::latch started(1);
    std::atomic<CancelReason> saw{CancelReason::none};
    ASSERT_TRUE(scope.spawn(
        [&](CancellationToken token) {
          started.count_down();
          if (test::wait_cancelled(token)) saw = token.reason();
        },
        TaskOptions().set_cancellation(source.token())));
    started.wait();
    if (options_first) {
      source.request_cancel(CancelReason::shutdown);
      scope.cancel();
    } else {
      scope.cancel();
      source.request_cancel(CancelReason::shutdown);
    }
    scope.wait();
    EXPECT_EQ(saw.load(), options_first ? CancelReason::shutdown : CancelReason::requested);
  }
}

TEST(Scope, TheOptionsTokenCancelsItsTaskAloneNotTheScope) {
  ThreadPool pool(2);
  Scope scope(pool);
  CancellationSource source;
  std::latch started(1);
  std::atomic<CancelReason> saw{CancelReason::none};
  ASSERT_TRUE(scope.spawn(
      [&](CancellationToken token) {
        started.count_down();
        if (test::wait_cancelled(token)) saw = token.reason();
        token.throw_if_cancelled();
      },
      TaskOptions().set_cancellation(source.token())));
  started.wait();
  source.request_cancel();
  EXPECT_NO_THROW(scope.wait());
  EXPECT_EQ(saw.load(), CancelReason::requested);
  EXPECT_FALSE(scope.cancelled());
  EXPECT_TRUE(scope.spawn([] {}));
  scope.wait();
}

TEST(Scope, ARunningTaskWhoseDeadlinePassesTimesOutAndIsNotAFailure) {
  ThreadPool pool(1);
  // On a loaded machine the deadline can pass before the worker takes the
  // task, which then times out queued (the next test's case): try again
  // with a longer timeout until the task was running when it fired.
  bool ran = false;
  for (auto timeout = 20ms; !ran && timeout < 10s; timeout *= 2) {
    Scope scope(pool);
    std::atomic<bool> started{false};
    std::atomic<CancelReason> saw{CancelReason::none};
    ASSERT_TRUE(scope.spawn(
        [&](CancellationToken token) {
          started = true;
          if (test::wait_cancelled(token)) saw = token.reason();
          token.throw_if_cancelled();
        },
        TaskOptions().set_timeout(timeout)));
    EXPECT_NO_THROW(scope.wait());
    EXPECT_FALSE(scope.cancelled());
    ran = started.load();
    if (ran) {
      EXPECT_EQ(saw.load(), CancelReason::deadline);
    }
  }
  EXPECT_TRUE(ran);
  EXPECT_GE(pool.stats().timed_out, 1u);
  EXPECT_EQ(pool.stats().failed, 0u);
}

TEST(Scope, AQueuedTaskWhoseDeadlinePassesTimesOutAndIsNotAFailure) {
  ThreadPool pool(1);
  Gate gate;
  OpenOnExit open(gate);
  auto blockers = test::block_workers(pool, gate, 1);
  Scope scope(pool);
  DestructionProbe::Record record;
  ASSERT_TRUE(scope.spawn([probe = DestructionProbe(&record)] {}, TaskOptions().set_timeout(10ms)));
  // Resolved at the deadline, while the only worker is still held.
  EXPECT_TRUE(eventually([&] { return scope.size() == 0; }));
  EXPECT_EQ(record.destroyed.load(), 1);
  EXPECT_FALSE(gate.is_open());
  EXPECT_NO_THROW(scope.wait());
  EXPECT_FALSE(scope.cancelled());
  EXPECT_EQ(pool.stats().timed_out, 1u);
}

// A connection handler joins its own scope while another connection's
// handler is queued ahead of the scope's last request: the join runs the
// scope's tasks, never the other handler. One worker; the main thread queues
// the other handler, then a request into the handler's scope behind it.
TEST(ScopeFromWorker, AJoinRunsItsOwnTasksAndNeverAnotherRequestsTask) {
  for (int round = 0; round < 200; ++round) {
    ThreadPool pool(1);
    std::atomic<Scope*> conn_of_handler{nullptr};
    std::latch go(1);
    std::atomic<int> requests{0};
    std::atomic<bool> other_ran{false};
    std::atomic<bool> other_ran_inside_join{false};
    Future<void> handler = pool.submit([&] {
      Scope conn(pool);
      conn.spawn([&] { requests.fetch_add(1); });
      conn_of_handler.store(&conn);
      go.wait();
      conn.wait();
      other_ran_inside_join.store(other_ran.load());
    });
    while (conn_of_handler.load() == nullptr) std::this_thread::yield();
    pool.post([&] { other_ran.store(true); });
    ASSERT_TRUE(conn_of_handler.load()->spawn([&] { requests.fetch_add(1); }));
    go.count_down();
    handler.get();
    pool.wait_idle();
    ASSERT_EQ(requests.load(), 2);
    ASSERT_FALSE(other_ran_inside_join.load())
        << "round " << round << ": a scope's join ran another request's task";
    ASSERT_TRUE(other_ran.load());
  }
}

INSTANTIATE_TEST_SUITE_P(PoolSizes, ScopeP, ::testing::Values(1, 2), test::pool_size_name);

}  // namespace
}  // namespace quell
