#include "quell/cancellation.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <latch>
#include <memory>
#include <optional>
#include <set>
#include <thread>
#include <vector>

namespace quell {
namespace {

// A callable that can only be invoked as an rvalue, is not noexcept, and
// counts how often it was invoked.
struct RvalueOnlyCallback {
  int* calls;
  void operator()() && { ++*calls; }
};

TEST(CancellationToken, DefaultTokenIsNeverCancelledAndCannotBe) {
  CancellationToken token;
  EXPECT_FALSE(token.cancelled());
  EXPECT_FALSE(token.is_cancelled());
  EXPECT_FALSE(token.stop_requested());
  EXPECT_TRUE(token.can_continue());
  EXPECT_FALSE(token.can_cancel());
  EXPECT_FALSE(token.stop_possible());
  EXPECT_EQ(token.reason(), CancelReason::none);
  EXPECT_NO_THROW(token.throw_if_cancelled());
}

TEST(CancellationToken, ObservesItsSourceThroughEveryAlias) {
  CancellationSource source;
  CancellationToken token = source.token();
  EXPECT_TRUE(token.can_cancel());
  EXPECT_TRUE(token.stop_possible());
  EXPECT_FALSE(token.cancelled());
  EXPECT_EQ(token.reason(), CancelReason::none);

  EXPECT_TRUE(source.request_cancel());
  EXPECT_TRUE(token.cancelled());
  EXPECT_TRUE(token.is_cancelled());
  EXPECT_TRUE(token.stop_requested());
  EXPECT_FALSE(token.can_continue());
  EXPECT_TRUE(token.can_cancel());
  EXPECT_EQ(token.reason(), CancelReason::requested);
  EXPECT_TRUE(source.cancelled());
  EXPECT_TRUE(source.is_cancelled());
}

TEST(CancellationToken, ThrowIfCancelledThrowsOperationCancelled) {
  CancellationSource source;
  CancellationToken token = source.token();
  EXPECT_NO_THROW(token.throw_if_cancelled());
  source.request_cancel();
  try {
    token.throw_if_cancelled();
    FAIL() << "no exception";
  } catch (const OperationCancelled& e) {
    EXPECT_EQ(e.code(), Errc::cancelled);
  }
}

TEST(CancellationToken, ResetDetachesThisTokenOnly) {
  CancellationSource source;
  CancellationToken token = source.token();
  CancellationToken other = token;
  token.reset();
  EXPECT_FALSE(token.can_cancel());
  EXPECT_EQ(token, CancellationToken());
  source.request_cancel();
  EXPECT_FALSE(token.cancelled());
  EXPECT_TRUE(other.cancelled());
}

TEST(CancellationToken, EqualityMeansSameState) {
  CancellationSource a;
  CancellationSource b;
  EXPECT_EQ(a.token(), a.token());
  EXPECT_NE(a.token(), b.token());
  EXPECT_EQ(CancellationToken(), CancellationToken());
  EXPECT_NE(a.token(), CancellationToken());
  CancellationSource a_copy = a;
  EXPECT_EQ(a_copy.token(), a.token());
}

TEST(CancellationToken, MovedFromTokenHasNoState) {
  CancellationSource source;
  CancellationToken token = source.token();
  CancellationToken moved = std::move(token);
  EXPECT_FALSE(token.can_cancel());  // NOLINT(bugprone-use-after-move): specified behaviour
  EXPECT_TRUE(moved.can_cancel());
  source.request_cancel();
  EXPECT_FALSE(token.cancelled());  // NOLINT(bugprone-use-after-move)
  EXPECT_TRUE(moved.cancelled());
}

TEST(CancellationToken, CanCancelTurnsFalseWhenTheLastSourceOfAnUncancelledStateGoes) {
  CancellationToken token;
  {
    CancellationSource source;
    CancellationSource copy = source;
    token = source.token();
    EXPECT_TRUE(token.can_cancel());
    { CancellationSource drop = std::move(copy); }
    EXPECT_TRUE(token.can_cancel());
  }
  EXPECT_FALSE(token.can_cancel());
  EXPECT_FALSE(token.cancelled());
}

TEST(CancellationToken, CanCancelStaysTrueForACancelledStateWithoutSources) {
  CancellationToken token;
  {
    CancellationSource source;
    token = source.token();
    source.request_cancel(CancelReason::shutdown);
  }
  EXPECT_TRUE(token.can_cancel());
  EXPECT_TRUE(token.cancelled());
  EXPECT_EQ(token.reason(), CancelReason::shutdown);
}

TEST(CancellationSource, RequestCancelIsTrueOnlyForTheFirstCall) {
  CancellationSource source;
  CancellationSource copy = source;
  EXPECT_TRUE(source.request_cancel());
  EXPECT_FALSE(source.request_cancel());
  EXPECT_FALSE(copy.request_cancel(CancelReason::deadline));
  EXPECT_TRUE(copy.cancelled());
}

TEST(CancellationSource, FirstReasonIsTheReasonForGood) {
  CancellationSource source;
  source.request_cancel(CancelReason::deadline);
  source.request_cancel(CancelReason::shutdown);
  EXPECT_EQ(source.token().reason(), CancelReason::deadline);
}

TEST(CancellationSource, ReasonNoneCountsAsRequested) {
  CancellationSource source;
  EXPECT_TRUE(source.request_cancel(CancelReason::none));
  EXPECT_EQ(source.token().reason(), CancelReason::requested);
}

TEST(CancellationSource, EachReasonIsReportedAsGiven) {
  for (CancelReason why : {CancelReason::requested, CancelReason::deadline, CancelReason::shutdown,
                           CancelReason::failure}) {
    CancellationSource source;
    source.request_cancel(why);
    EXPECT_EQ(source.token().reason(), why);
  }
}

TEST(CancellationSource, CopiesShareOneStateAndCopyAssignmentRebinds) {
  CancellationSource a;
  CancellationSource b;
  CancellationToken old_b = b.token();
  b = a;
  EXPECT_EQ(b.token(), a.token());
  EXPECT_FALSE(old_b.can_cancel());  // b was the only source of its old state
  b.request_cancel();
  EXPECT_TRUE(a.cancelled());
}

TEST(CancellationSource, MovedFromSourceHasNoState) {
  CancellationSource source;
  CancellationToken token = source.token();
  CancellationSource moved = std::move(source);
  // NOLINTBEGIN(bugprone-use-after-move): specified behaviour
  EXPECT_FALSE(source.request_cancel());
  EXPECT_FALSE(source.cancelled());
  EXPECT_FALSE(source.token().can_cancel());
  EXPECT_EQ(source.token(), CancellationToken());
  // NOLINTEND(bugprone-use-after-move)
  EXPECT_TRUE(token.can_cancel());
  EXPECT_TRUE(moved.request_cancel());
  EXPECT_TRUE(token.cancelled());
}

TEST(CancellationSource, ResetGivesAFreshStateAndEarlierTokensKeepTheOld) {
  CancellationSource source;
  CancellationToken old_token = source.token();
  source.reset();
  EXPECT_NE(source.token(), old_token);
  EXPECT_FALSE(old_token.can_cancel());  // no source refers to it any more
  EXPECT_TRUE(source.request_cancel());
  EXPECT_FALSE(old_token.cancelled());
  EXPECT_TRUE(source.token().cancelled());
}

TEST(CancellationSource, ResetKeepsACancelledOldStateCancelled) {
  CancellationSource source;
  CancellationToken old_token = source.token();
  source.request_cancel();
  source.reset();
  EXPECT_TRUE(old_token.cancelled());
  EXPECT_FALSE(source.cancelled());
}

TEST(CancellationSource, ResetOfAMovedFromSourceMakesItUsable) {
  CancellationSource source;
  CancellationSource moved = std::move(source);
  source.reset();  // NOLINT(bugprone-use-after-move)
  EXPECT_TRUE(source.request_cancel());
  EXPECT_FALSE(moved.cancelled());
}

TEST(CancellationCallback, RunsExactlyOnceInlineOnTheRequestingThreadBeforeRequestReturns) {
  CancellationSource source;
  std::vector<std::thread::id> ran_on;
  CancellationCallback first(source.token(), [&] { ran_on.push_back(std::this_thread::get_id()); });
  CancellationCallback second(source.token(), [&] { ran_on.push_back(std::this_thread::get_id()); });
  EXPECT_TRUE(ran_on.empty());

  std::thread requester([&] { EXPECT_TRUE(source.request_cancel()); });
  const std::thread::id requester_id = requester.get_id();
  requester.join();
  ASSERT_EQ(ran_on.size(), 2u);
  EXPECT_EQ(ran_on[0], requester_id);
  EXPECT_EQ(ran_on[1], requester_id);

  EXPECT_FALSE(source.request_cancel());
  EXPECT_EQ(ran_on.size(), 2u);
}

TEST(CancellationCallback, RegisteringOnACancelledTokenRunsInlineInTheConstructor) {
  CancellationSource source;
  source.request_cancel();
  int calls = 0;
  CancellationCallback callback(source.token(), [&] { ++calls; });
  EXPECT_EQ(calls, 1);
  source.request_cancel();
  EXPECT_EQ(calls, 1);
}

TEST(CancellationCallback, RegisteringOnAnUncancellableTokenNeverRuns) {
  int calls = 0;
  {
    CancellationCallback callback(CancellationToken(), [&] { ++calls; });
  }
  CancellationToken orphan;
  {
    CancellationSource source;
    orphan = source.token();
  }
  {
    CancellationCallback callback(orphan, [&] { ++calls; });
  }
  EXPECT_EQ(calls, 0);
}

TEST(CancellationCallback, DeregisteredCallbackNeverRuns) {
  CancellationSource source;
  int calls = 0;
  {
    CancellationCallback callback(source.token(), [&] { ++calls; });
  }
  source.request_cancel();
  EXPECT_EQ(calls, 0);
}

TEST(CancellationCallback, OutlivesEveryTokenAndSource) {
  int calls = 0;
  std::optional<CancellationSource> source(std::in_place);
  auto callback = std::make_unique<CancellationCallback<std::function<void()>>>(
      source->token(), [&] { ++calls; });
  source->request_cancel();
  source.reset();
  EXPECT_EQ(calls, 1);
  callback.reset();  // the state is still alive for the deregistration
}

TEST(CancellationCallback, CallbackSeesTheReasonAndTheCancelledToken) {
  CancellationSource source;
  CancellationToken token = source.token();
  CancelReason seen = CancelReason::none;
  bool cancelled_seen = false;
  CancellationCallback callback(token, [&] {
    seen = token.reason();
    cancelled_seen = token.cancelled();
  });
  source.request_cancel(CancelReason::failure);
  EXPECT_EQ(seen, CancelReason::failure);
  EXPECT_TRUE(cancelled_seen);
}

TEST(CancellationCallback, IsInvokedAsAnRvalueAndNeedNotBeNoexcept) {
  CancellationSource source;
  int calls = 0;
  CancellationCallback callback(source.token(), RvalueOnlyCallback{&calls});
  static_assert(std::is_same_v<decltype(callback), CancellationCallback<RvalueOnlyCallback>>);
  source.request_cancel();
  EXPECT_EQ(calls, 1);
}

TEST(CancellationCallback, AcceptsMoveOnlyCallables) {
  CancellationSource source;
  auto flag = std::make_unique<int>(0);
  int* seen = flag.get();
  CancellationCallback callback(source.token(), [owned = std::move(flag)] { *owned = 7; });
  source.request_cancel();
  EXPECT_EQ(*seen, 7);
}

TEST(CancellationCallback, DestroyingItselfFromInsideItsCallbackDoesNotDeadlock) {
  CancellationSource source;
  std::optional<CancellationCallback<std::function<void()>>> callback;
  int calls = 0;
  callback.emplace(source.token(), [&] {
    ++calls;
    callback.reset();
  });
  source.request_cancel();
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(callback.has_value());
}

TEST(CancellationCallback, ACallbackMayDestroyAnotherOfTheSameRequest) {
  CancellationSource source;
  std::optional<CancellationCallback<std::function<void()>>> a;
  std::optional<CancellationCallback<std::function<void()>>> b;
  int a_calls = 0;
  int b_calls = 0;
  // Whichever runs first destroys the other: the other then never runs.
  a.emplace(source.token(), [&] {
    ++a_calls;
    b.reset();
  });
  b.emplace(source.token(), [&] {
    ++b_calls;
    a.reset();
  });
  source.request_cancel();
  EXPECT_EQ(a_calls + b_calls, 1);
}

TEST(CancellationCallback, ACallbackMayRegisterAnotherWhichRunsInline) {
  CancellationSource source;
  std::optional<CancellationCallback<std::function<void()>>> inner;
  int inner_calls = 0;
  CancellationCallback outer(source.token(), [&] {
    inner.emplace(source.token(), [&] { ++inner_calls; });
    EXPECT_EQ(inner_calls, 1);
  });
  source.request_cancel();
  EXPECT_EQ(inner_calls, 1);
}

TEST(CancellationCallback, ACallbackMayDestroyTheLastSourceOfItsState) {
  auto source = std::make_unique<CancellationSource>();
  int calls = 0;
  CancellationSource* raw = source.get();
  CancellationCallback callback(raw->token(), [&] {
    ++calls;
    source.reset();  // destroys the source whose request_cancel() is running
  });
  raw->request_cancel();
  EXPECT_EQ(calls, 1);
}

TEST(CancellationCallback, DestructorWaitsForTheCallbackRunningOnAnotherThread) {
  for (int round = 0; round < 200; ++round) {
    CancellationSource source;
    std::latch entered(1);
    std::atomic<bool> destructor_called{false};
    std::atomic<bool> finished{false};
    auto callback = std::make_unique<CancellationCallback<std::function<void()>>>(
        source.token(), [&] {
          entered.count_down();
          while (!destructor_called.load()) std::this_thread::yield();
          // Widen the window in which a destructor that did not wait would
          // return before the callback finished.
          for (int i = 0; i < 1000; ++i) std::this_thread::yield();
          finished.store(true);
        });
    std::thread requester([&] { source.request_cancel(); });
    entered.wait();
    destructor_called.store(true);
    callback.reset();
    EXPECT_TRUE(finished.load()) << "round " << round;
    requester.join();
  }
}

TEST(CancellationCallback, ThrowingCallbackTerminates) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        CancellationSource source;
        CancellationCallback callback(source.token(), [] { throw 42; });
        source.request_cancel();
      },
      "");
}

TEST(CancellationCallback, ThrowingCallbackRegisteredOnACancelledTokenTerminates) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        CancellationSource source;
        source.request_cancel();
        CancellationCallback callback(source.token(), [] { throw 42; });
      },
      "");
}

TEST(CancellationCallback, ManyCallbacksEachRunOnceInSomeOrder) {
  CancellationSource source;
  constexpr int kCount = 100;
  std::vector<int> calls(kCount, 0);
  std::vector<std::unique_ptr<CancellationCallback<std::function<void()>>>> callbacks;
  for (int i = 0; i < kCount; ++i) {
    callbacks.push_back(std::make_unique<CancellationCallback<std::function<void()>>>(
        source.token(), [&calls, i] { ++calls[i]; }));
  }
  // Deregister every third one: those must not run.
  for (int i = 0; i < kCount; i += 3) callbacks[i].reset();
  source.request_cancel();
  for (int i = 0; i < kCount; ++i) EXPECT_EQ(calls[i], i % 3 == 0 ? 0 : 1) << i;
}

TEST(CancellationCallback, DeductionGuideDecaysTheCallable) {
  CancellationSource source;
  auto fn = [] {};
  CancellationCallback callback(source.token(), fn);
  static_assert(std::is_same_v<decltype(callback), CancellationCallback<decltype(fn)>>);
  CancellationToken::callback_type<decltype(fn)> same(source.token(), fn);
}

TEST(LinkedSource, IsCancelledWhenAnyParentIsWithThatParentsReason) {
  CancellationSource a;
  CancellationSource b;
  CancellationSource linked = CancellationSource::linked({a.token(), b.token()});
  CancellationToken token = linked.token();
  int calls = 0;
  CancellationCallback callback(token, [&] { ++calls; });
  EXPECT_FALSE(token.cancelled());
  b.request_cancel(CancelReason::deadline);
  EXPECT_TRUE(token.cancelled());
  EXPECT_EQ(token.reason(), CancelReason::deadline);
  EXPECT_EQ(calls, 1);
  a.request_cancel(CancelReason::shutdown);
  EXPECT_EQ(token.reason(), CancelReason::deadline);
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(linked.request_cancel());
}

TEST(LinkedSource, IsCancelledAtOnceIfAParentAlreadyIs) {
  CancellationSource a;
  CancellationSource b;
  b.request_cancel(CancelReason::shutdown);
  CancellationSource linked = CancellationSource::linked({a.token(), b.token()});
  EXPECT_TRUE(linked.cancelled());
  EXPECT_EQ(linked.token().reason(), CancelReason::shutdown);
  EXPECT_FALSE(a.cancelled());
}

TEST(LinkedSource, CancellingItDoesNotTouchTheParents) {
  CancellationSource a;
  CancellationSource linked = CancellationSource::linked({a.token()});
  EXPECT_TRUE(linked.request_cancel(CancelReason::failure));
  EXPECT_FALSE(a.cancelled());
  EXPECT_EQ(linked.token().reason(), CancelReason::failure);
  a.request_cancel(CancelReason::shutdown);
  EXPECT_EQ(linked.token().reason(), CancelReason::failure);
}

TEST(LinkedSource, ChainsPropagateThroughEveryLevel) {
  CancellationSource root;
  CancellationSource middle = CancellationSource::linked({root.token()});
  CancellationSource leaf = CancellationSource::linked({middle.token()});
  root.request_cancel(CancelReason::shutdown);
  EXPECT_EQ(leaf.token().reason(), CancelReason::shutdown);
}

TEST(LinkedSource, OfNoParentsIsAPlainFreshSource) {
  CancellationSource linked = CancellationSource::linked({});
  EXPECT_TRUE(linked.token().can_cancel());
  EXPECT_FALSE(linked.cancelled());
  EXPECT_TRUE(linked.request_cancel());
}

TEST(LinkedSource, IgnoresParentsThatCanNeverCancel) {
  CancellationToken orphan;
  {
    CancellationSource gone;
    orphan = gone.token();
  }
  CancellationSource linked = CancellationSource::linked({CancellationToken(), orphan});
  EXPECT_TRUE(linked.token().can_cancel());
  EXPECT_TRUE(linked.request_cancel());
}

TEST(LinkedSource, CanCancelIsFalseOnlyWhenNeitherItsSourcesNorItsParentsCan) {
  std::optional<CancellationSource> parent(std::in_place);
  std::optional<CancellationSource> linked(CancellationSource::linked({parent->token()}));
  CancellationToken token = linked->token();
  EXPECT_TRUE(token.can_cancel());
  linked.reset();  // the parent can still cancel it
  EXPECT_TRUE(token.can_cancel());
  int calls = 0;
  CancellationCallback callback(token, [&] { ++calls; });
  parent.reset();  // now nothing can
  EXPECT_FALSE(token.can_cancel());
  EXPECT_EQ(calls, 0);
}

TEST(LinkedSource, ParentCancelsTheLinkedStateAfterItsOwnSourcesAreGone) {
  CancellationSource parent;
  CancellationToken token = CancellationSource::linked({parent.token()}).token();
  EXPECT_TRUE(token.can_cancel());
  parent.request_cancel(CancelReason::deadline);
  EXPECT_EQ(token.reason(), CancelReason::deadline);
}

TEST(LinkedSource, ResetGivesAFreshUnlinkedState) {
  CancellationSource parent;
  CancellationSource linked = CancellationSource::linked({parent.token()});
  linked.reset();
  parent.request_cancel();
  EXPECT_FALSE(linked.cancelled());
}

TEST(LinkedSource, LinkedToTheSameParentTwiceFiresOnce) {
  CancellationSource parent;
  CancellationSource linked = CancellationSource::linked({parent.token(), parent.token()});
  int calls = 0;
  CancellationCallback callback(linked.token(), [&] { ++calls; });
  parent.request_cancel();
  EXPECT_EQ(calls, 1);
}

// §12: each linked state holds its parent, so dropping the youngest of a
// chain frees every level. Before the destroy list (I7) each level was a
// nested call, and a chain this deep overflowed the stack.
TEST(LinkedSource, AChainAMillionDeepIsDestroyedInConstantStack) {
  constexpr int kDepth = 1'000'000;
  CancellationSource root;  // keeps every link able to fire, so none is skipped
  CancellationSource tail = root;
  for (int i = 0; i < kDepth; ++i) tail = CancellationSource::linked({tail.token()});
  EXPECT_TRUE(tail.token().can_cancel());
  tail = CancellationSource();  // frees the whole chain
  EXPECT_FALSE(root.cancelled());
}

TEST(LinkedSource, ManyParentsEachCanCancel) {
  constexpr int kParents = 20;
  for (int which = 0; which < kParents; ++which) {
    std::vector<CancellationSource> parents(kParents);
    auto linked = CancellationSource::linked(
        {parents[0].token(),  parents[1].token(),  parents[2].token(),  parents[3].token(),
         parents[4].token(),  parents[5].token(),  parents[6].token(),  parents[7].token(),
         parents[8].token(),  parents[9].token(),  parents[10].token(), parents[11].token(),
         parents[12].token(), parents[13].token(), parents[14].token(), parents[15].token(),
         parents[16].token(), parents[17].token(), parents[18].token(), parents[19].token()});
    parents[which].request_cancel(CancelReason::shutdown);
    EXPECT_TRUE(linked.cancelled()) << which;
  }
}

TEST(LinkedSource, CallbackOnTheLinkedStateMayDropItsLastReference) {
  CancellationSource parent;
  auto linked = std::make_unique<CancellationSource>(CancellationSource::linked({parent.token()}));
  std::optional<CancellationCallback<std::function<void()>>> callback;
  int calls = 0;
  callback.emplace(linked->token(), [&] {
    ++calls;
    linked.reset();
    callback.reset();  // the last reference to the linked state goes here
  });
  parent.request_cancel();
  EXPECT_EQ(calls, 1);
}

TEST(CancelReason, ToStringNamesEveryReason) {
  EXPECT_STREQ(to_string(CancelReason::none), "none");
  EXPECT_STREQ(to_string(CancelReason::requested), "requested");
  EXPECT_STREQ(to_string(CancelReason::deadline), "deadline");
  EXPECT_STREQ(to_string(CancelReason::shutdown), "shutdown");
  EXPECT_STREQ(to_string(CancelReason::failure), "failure");
  EXPECT_STREQ(to_string(static_cast<CancelReason>(42)), "unknown");
}

}  // namespace
}  // namespace quell
