// The token concepts of <quell/stop_token.hpp> (API.md R43), checked at
// compile time; the one test only records that this file compiled.
#include "quell/stop_token.hpp"

#include <gtest/gtest.h>

#include <coroutine>
#include <stop_token>
#include <type_traits>
#include <version>

namespace quell {
namespace {

static_assert(stoppable_token<CancellationToken>);
static_assert(stoppable_token<std::stop_token>);
static_assert(stoppable_token<NeverStopToken>);
static_assert(unstoppable_token<NeverStopToken>);
static_assert(!unstoppable_token<CancellationToken>);
static_assert(!unstoppable_token<std::stop_token>);
static_assert(!stoppable_token<int>);
static_assert(!stoppable_token<std::stop_source>);

// The standard library's concept, where it has one (P2300R10).
#if defined(__cpp_lib_senders)
static_assert(std::stoppable_token<CancellationToken>);
#endif

static_assert(std::is_same_v<stop_callback_for_t<std::stop_token, detail::StopCallbackProbe>,
                             std::stop_callback<detail::StopCallbackProbe>>);
static_assert(std::is_same_v<stop_callback_for_t<CancellationToken, detail::StopCallbackProbe>,
                             CancellationCallback<detail::StopCallbackProbe>>);

// NeverStopToken answers at compile time, and its callbacks take what any
// token's do.
static_assert(!NeverStopToken::stop_requested() && !NeverStopToken::stop_possible());
static_assert(NeverStopToken() == NeverStopToken());
static_assert(
    std::is_nothrow_constructible_v<NeverStopToken::callback_type<detail::StopCallbackProbe>,
                                    NeverStopToken, detail::StopCallbackProbe>);

// An awaiter that takes a CancellationToken in await_suspend, one that takes
// a std::stop_token, and one that takes none.
struct CancellableAwaiter {
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<>, const CancellationToken&) {}
  void await_resume() const noexcept {}
};
struct StdStoppableAwaiter {
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<>, std::stop_token) {}
  void await_resume() const noexcept {}
};
struct PlainAwaiter {
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<>) {}
  void await_resume() const noexcept {}
};

static_assert(stoppable_awaitable<CancellableAwaiter>);
static_assert(
    stoppable_awaitable<CancellableAwaiter, CancellationToken, std::noop_coroutine_promise>);
static_assert(!stoppable_awaitable<CancellableAwaiter, std::stop_token>);
static_assert(stoppable_awaitable<StdStoppableAwaiter, std::stop_token>);
static_assert(!stoppable_awaitable<StdStoppableAwaiter>);
static_assert(!stoppable_awaitable<PlainAwaiter>);
static_assert(!stoppable_awaitable<PlainAwaiter, std::stop_token>);
// The token must itself be stoppable.
static_assert(!stoppable_awaitable<CancellableAwaiter, int>);

// Neither copyable nor movable: its callback points into it.
static_assert(!std::is_copy_constructible_v<StopTokenBridge>);
static_assert(!std::is_move_constructible_v<StopTokenBridge>);
static_assert(!std::is_copy_assignable_v<StopTokenBridge>);
static_assert(!std::is_move_assignable_v<StopTokenBridge>);
// Explicit: a CancellationToken does not silently become a bridge.
static_assert(!std::is_convertible_v<CancellationToken, StopTokenBridge>);

TEST(StopTokenConcepts, TheConceptsHoldAsStaticAssertedWhenThisFileCompiles) { SUCCEED(); }

}  // namespace
}  // namespace quell
