// The counts of a cancellation state never wrap (API.md §12): the
// operations that may throw stop at the documented limits with
// std::length_error and change nothing; the nothrow ones abort, far past
// them. The reference limits are reached with a state made with its counts
// already high, as no test can hold 2^31 tokens.
#include <gtest/gtest.h>

#include <cstddef>
#include <stdexcept>
#include <vector>

#include "quell/cancellation.hpp"
#include "quell/task_group.hpp"
#include "quell/thread_pool.hpp"

namespace quell {
namespace {

using detail::CancelState;

void ignore_cancel(CancelState*) noexcept {}
void never_destroyed(CancelState*) noexcept { std::abort(); }
constexpr detail::StateHooks kInert{&ignore_cancel, &never_destroyed};

// A state with `refs` references and one source to begin with; the test
// drops none of them, so it is never destroyed.
struct CountedState {
  explicit CountedState(std::uint64_t refs) : state(&kInert, refs * CancelState::kRef + CancelState::kSource) {}
  CancellationToken token() { return detail::StateAccess::token(&state); }
  CancelState state;
};

TEST(CancellationLimits, CopyingASourcePastTwoToTheTwentyFourThrowsAndChangesNothing) {
  CancellationSource source;
  std::vector<CancellationSource> copies;
  copies.reserve(CancelState::kMaxSources);
  while (copies.size() + 1 < CancelState::kMaxSources) copies.push_back(source);
  EXPECT_THROW(CancellationSource{source}, std::length_error);
  CancellationSource other;
  const CancellationToken others_token = other.token();
  EXPECT_THROW(other = source, std::length_error);
  EXPECT_TRUE(other.request_cancel());  // still its own state
  EXPECT_TRUE(others_token.cancelled());
  EXPECT_FALSE(source.cancelled());

  copies.pop_back();
  CancellationSource again(source);  // room for one again: nothing was counted
  EXPECT_TRUE(again.request_cancel());
  EXPECT_TRUE(copies.front().cancelled());
}

TEST(CancellationLimits, LinkingToAParentWithTwoToTheThirtyOneReferencesThrows) {
  CountedState parent(CancelState::kMaxRefs - 1);
  const CancellationToken token = parent.token();  // the limit, reached
  EXPECT_THROW(CancellationSource::linked({token}), std::length_error);
  CancellationSource free_parent;
  EXPECT_THROW(CancellationSource::linked({free_parent.token(), token}), std::length_error);
  // Nothing registered on the first parent: cancelling it reaches no child.
  EXPECT_TRUE(free_parent.request_cancel());
}

TEST(CancellationLimits, ASubmissionWithATokenAtTheLimitThrowsAndIsNotCounted) {
  CountedState state(CancelState::kMaxRefs - 1);
  const CancellationToken token = state.token();
  ThreadPool pool(1);
  int runs = 0;
  EXPECT_THROW(pool.submit([&] { ++runs; }, TaskOptions().set_cancellation(token)),
               std::length_error);
  EXPECT_THROW(pool.post([&] { ++runs; }, TaskOptions().set_cancellation(token)),
               std::length_error);
  {
    TaskGroup group(pool);
    EXPECT_THROW(group.submit([&] { ++runs; }, TaskOptions().set_cancellation(token)),
                 std::length_error);
    EXPECT_EQ(group.size(), 0u);
  }
  pool.wait_idle();
  EXPECT_EQ(pool.stats().submitted, 0u);
  EXPECT_EQ(runs, 0);
}

TEST(CancellationLimits, TheNothrowOperationsStillWorkAtTheLimit) {
  CountedState state(CancelState::kMaxRefs);
  const CancellationToken token = state.token();
  const CancellationToken copy = token;  // P2300: copying a token never throws
  bool called = false;
  CancellationCallback callback(copy, [&] { called = true; });
  state.state.request_cancel(static_cast<std::uint64_t>(CancelReason::requested));
  EXPECT_TRUE(called);
}

TEST(CancellationLimitsDeathTest, ATokenCopyPastTheWordsCapacityAbortsRatherThanWraps) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  CountedState state(CancelState::kRefCapacity);
  EXPECT_DEATH(static_cast<void>(state.token()), "more than 2\\^32 - 2\\^16 references");
}

}  // namespace
}  // namespace quell
