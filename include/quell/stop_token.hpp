#pragma once

// quell's tokens and the standard's, each usable where the other is taken.
//
//   stoppable_token        P2300R10's concept, with callback_type found
//                          through stop_callback_for_t, so that C++20's
//                          std::stop_token (which has no callback_type)
//                          models it too.
//   unstoppable_token      a stoppable_token whose stop_possible() is a
//                          constant false (P2175's form).
//   NeverStopToken         the token that is never stopped.
//   stoppable_awaitable    an awaiter whose await_suspend also takes a token.
//   to_cancellation_token  any stoppable_token -> CancellationToken (R44).
//   StopTokenBridge        CancellationToken -> std::stop_token (R45).
//
// to_cancellation_token(t, why) returns a token of a new state that is
// cancelled with `why` when `t` is stop-requested. The state owns the
// registration on `t` (one heap block holds both), so the token may be
// copied, stored in TaskOptions and outlive the call; the registration ends
// when the state's last token, callback or link goes. Until then the state
// can_cancel(), even once `t` can no longer stop.
//
// StopTokenBridge goes the other way and is RAII: a std::stop_token cannot
// own foreign state, so the bridge owns the std::stop_source and the
// CancellationCallback that calls its request_stop(). Tokens taken from it
// are stopped when the CancellationToken is cancelled while the bridge lives;
// once it is gone they report stop_possible() == false unless they were
// already stopped (the rule of a std::stop_token whose sources are gone).
//
// Thread safety: to_cancellation_token() and the concepts are thread-safe;
// its result is a CancellationToken (thread-compatible, its state
// thread-safe). StopTokenBridge is thread-compatible: get_token() may be
// called from any threads at once, and the token it bridges may be cancelled
// from any thread, even while the bridge is being destroyed.
//
// Ordering: no atomics of their own; each direction chains the two
// libraries' guarantees. Everything sequenced before the request on `t` that
// cancels a to_cancellation_token() state happens-before every callback that
// cancellation runs and every cancelled() that observes it: the registration
// runs request_cancel() on the requesting thread, after the request (or, if
// `t` was already stopped, on the converting thread, after a
// stop_requested() that saw it). Likewise everything sequenced before the
// request_cancel() that cancels a bridged token happens-before every
// std::stop_callback it runs and every stop_requested() on the bridge's
// tokens that returns true: the bridge's callback calls request_stop() on
// the cancelling thread.
//
// Costs: to_cancellation_token() makes one allocation (none if `t` can never
// stop or is a CancellationToken); a StopTokenBridge makes one (its
// std::stop_source), none if the CancellationToken cannot be cancelled.

#include <concepts>
#include <coroutine>
#include <cstdint>
#include <stop_token>
#include <type_traits>
#include <utility>

#include "quell/cancellation.hpp"

namespace quell {

namespace detail {

// No `type` for what is not a token, so stop_callback_for_t fails softly.
template <class Token, class F>
struct StopCallbackFor {};
template <class Token, class F>
  requires(!std::same_as<Token, std::stop_token>) &&
          requires { typename Token::template callback_type<F>; }
struct StopCallbackFor<Token, F> {
  using type = typename Token::template callback_type<F>;
};
// C++20's std::stop_token has no callback_type (C++26 adds it).
template <class F>
struct StopCallbackFor<std::stop_token, F> {
  using type = std::stop_callback<F>;
};

// The callable stoppable_token asks a callback type for.
struct StopCallbackProbe {
  void operator()() const noexcept {}
};

}  // namespace detail

// Token::callback_type<F>; std::stop_callback<F> for std::stop_token.
template <class Token, class F>
using stop_callback_for_t = typename detail::StopCallbackFor<Token, F>::type;

// P2300R10 [stoptoken.concepts], with callback_type found through
// stop_callback_for_t (R43).
template <class Token>
concept stoppable_token =
    requires(const Token tok) {
      typename stop_callback_for_t<Token, detail::StopCallbackProbe>;
      { tok.stop_requested() } noexcept -> std::same_as<bool>;
      { tok.stop_possible() } noexcept -> std::same_as<bool>;
      { Token(tok) } noexcept;
    } && std::copyable<Token> && std::equality_comparable<Token> && std::swappable<Token>;

// P2175's form: C++26 writes tok.stop_possible(), which g++ 12 and clang 14
// reject as a constant expression in C++20 (it needs P2280).
template <class Token>
concept unstoppable_token = stoppable_token<Token> && requires {
  requires std::bool_constant<(!Token::stop_possible())>::value;
};

// A token that is never stopped; its callbacks are never registered or run.
struct NeverStopToken {
  template <class F>
  class callback_type {
   public:
    template <class G>
      requires std::constructible_from<F, G>
    explicit callback_type(NeverStopToken, G&&) noexcept {}
  };

  static constexpr bool stop_requested() noexcept { return false; }
  static constexpr bool stop_possible() noexcept { return false; }

  friend constexpr bool operator==(NeverStopToken, NeverStopToken) noexcept = default;
};

// An awaiter (what operator co_await gave) that can also be suspended with a
// token: a.await_suspend(h, token).
template <class A, class Token = CancellationToken, class Promise = void>
concept stoppable_awaitable =
    stoppable_token<Token> &&
    requires(A& a, std::coroutine_handle<Promise> h, const Token& t) { a.await_suspend(h, t); };

namespace detail {

// The state behind to_cancellation_token(t): a CancelState and the
// registration on `t` in one block.
//
// Counts: the block starts as one reference (the returned token) and one
// source. The source stands for the registration, which holds no reference:
// it lives exactly as long as the state, so a reference of its own would
// keep the state alive for ever. Counting it as a source makes the state
// can_cancel() and lets callbacks register on it for its whole life.
//
// Lifetime of the registration against its callback (Fire):
//   * Fire touches the state only between a successful try_add_ref() and its
//     release(). try_add_ref() fails once the count has reached zero, so a
//     Fire that starts while the state is being destroyed leaves at once.
//   * The last reference going elsewhere: destroy() runs the hook, whose
//     first act is the registration's destructor. If Fire is running on
//     another thread, that destructor waits for it to return, which is
//     prompt (its try_add_ref() fails: the count is zero and nothing raises
//     it again), and nothing else waits: no deadlock. The block is freed
//     only after that.
//   * The last reference going in Fire's own release(): the registration is
//     destroyed from inside its own callback, on the callback's thread. A
//     std::stop_callback destructor does not wait then ([stopcallback.cons]),
//     nor does a CancellationCallback's, so the block is freed and Fire must
//     not touch itself afterwards: it reads what it needs into locals first.
//   * `t` already stopped: the registration's constructor runs Fire inline,
//     while the returned token's reference is held, so that release() is
//     never the last.
template <class Token>
class ForeignStopState final : public CancelState {
  struct Fire {
    CancelState* state;
    std::uint64_t reason;

    void operator()() const noexcept {
      CancelState* const target = state;
      const std::uint64_t why = reason;
      if (!target->try_add_ref()) return;  // being destroyed; the destroyer waits for us
      target->request_cancel(why);
      target->release(kRef);  // may destroy the state, this callback with it
    }
  };

 public:
  // Throws what constructing Token's callback type throws (std::stop_callback
  // throws nothing); the new-expression then frees the block.
  ForeignStopState(const Token& token, std::uint64_t reason) noexcept(
      std::is_nothrow_constructible_v<stop_callback_for_t<Token, Fire>, const Token&, Fire>)
      : CancelState(&kHooks, kRef + kSource), registration_(token, Fire{this, reason}) {}

 private:
  static void on_cancel(CancelState*) noexcept {}
  static void destroy(CancelState* state) noexcept {
    delete static_cast<ForeignStopState*>(state);
  }
  static constexpr StateHooks kHooks{&on_cancel, &destroy};

  stop_callback_for_t<Token, Fire> registration_;
};

}  // namespace detail

// R44. A token cancelled with `why` (none counts as requested) when `token`
// is stop-requested, at once if it already is. A CancellationToken is
// returned as is; a token that cannot stop gives a default token.
//
// Exceptions: std::bad_alloc, or what constructing Token's callback type
// throws, with no effect (strong guarantee).
template <stoppable_token Token>
CancellationToken to_cancellation_token(const Token& token,
                                        CancelReason why = CancelReason::requested) {
  if constexpr (std::same_as<Token, CancellationToken>) {
    return token;
  } else if constexpr (unstoppable_token<Token>) {
    return CancellationToken();
  } else {
    if (!token.stop_possible()) return CancellationToken();
    if (why == CancelReason::none) why = CancelReason::requested;
    auto* state = new detail::ForeignStopState<Token>(token, static_cast<std::uint64_t>(why));
    return detail::StateAccess::adopt_token(state);
  }
}

// R45. get_token() is stop-requested when the CancellationToken given to the
// constructor is cancelled (at once if it already is) while the bridge lives.
//
// Not copyable or movable: its callback points at its std::stop_source.
class StopTokenBridge {
 public:
  // Allocates the std::stop_source unless `token` cannot be cancelled:
  // throws std::bad_alloc, with no effect.
  explicit StopTokenBridge(const CancellationToken& token)
      : source_(token.can_cancel() ? std::stop_source() : std::stop_source(std::nostopstate)),
        callback_(token, RequestStop{&source_}) {}

  StopTokenBridge(const StopTokenBridge&) = delete;
  StopTokenBridge& operator=(const StopTokenBridge&) = delete;

  // Waits for the callback if it runs on another thread (see
  // ~CancellationCallback), then lets go of the std::stop_source.
  ~StopTokenBridge() = default;

  // A token with no state (stop_possible() == false) if the
  // CancellationToken could not be cancelled.
  std::stop_token get_token() const noexcept { return source_.get_token(); }

 private:
  struct RequestStop {
    std::stop_source* source;
    void operator()() const noexcept { source->request_stop(); }
  };

  std::stop_source source_;                 // declared first: callback_ uses it until it is gone
  CancellationCallback<RequestStop> callback_;
};

}  // namespace quell
