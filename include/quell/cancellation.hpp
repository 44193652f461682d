#pragma once

// Cooperative cancellation: who asks, who looks, who reacts.
//
//   CancellationSource    asks: request_cancel(reason). Copies share one state.
//   CancellationToken     looks: cancelled(), reason(). Cheap to copy, read-only.
//   CancellationCallback  reacts: runs a function once when the state is
//                         cancelled. RAII; registering allocates nothing.
//
// The split is the one of std::stop_source / std::stop_token /
// std::stop_callback, with a reason attached to the request and sources that
// can be linked to parent tokens. CancellationToken models P2300's
// stoppable_token (stop_requested, stop_possible, callback_type, ==).
//
// Lifetime: a state lives as long as any source, token or registered callback
// refers to it. A linked source's state keeps its parents alive and stays
// registered on them until its last source, token and callback are gone. A
// chain of linked sources of any depth is freed without recursion.
//
// Limits: the counts of a state never wrap. A state has at most 2^24 sources
// and 2^31 references (tokens, callbacks, links from linked sources, tasks
// submitted with its token) for the operations that may throw: past them,
// copying a source, linked() and a submission throw std::length_error and
// change nothing. Copying a token, token() and registering a callback are
// nothrow; they abort rather than wrap, and only past 2^32 - 2^16 references.
//
// Thread safety: thread-safe. Distinct objects sharing one state may be used
// from any threads at once; one object is thread-compatible (const members
// concurrently, mutation exclusively), like std::shared_ptr.
//
// Ordering: everything sequenced before a request_cancel() that returns true
// happens-before every callback it runs and every cancelled() (or reason())
// that observes the request. After ~CancellationCallback() returns, its
// callback is not running and never will; whatever the callback did
// happens-before that return.
//
// Costs: polling a token is one acquire load (a plain load on x86); copying a
// token is one atomic increment; a source's state is one allocation;
// registering and deregistering a callback are two uncontended CASes each
// and no allocation.

#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <type_traits>
#include <utility>

#include "quell/detail/cancel_state.hpp"
#include "quell/error.hpp"

namespace quell {

enum class CancelReason { none, requested, deadline, shutdown, failure };

// "none", "requested", "deadline", "shutdown", "failure"; "unknown" for a
// value outside the enum.
const char* to_string(CancelReason reason) noexcept;

template <class F>
class CancellationCallback;

namespace detail {
struct StateAccess;
}

class CancellationToken {
 public:
  // A token no one can cancel: can_cancel() == false.
  CancellationToken() noexcept = default;
  CancellationToken(const CancellationToken& other) noexcept : state_(other.state_) {
    if (state_ != &detail::never_cancelled) state_->add_token_ref();
  }
  CancellationToken(CancellationToken&& other) noexcept
      : state_(std::exchange(other.state_, &detail::never_cancelled)) {}
  CancellationToken& operator=(const CancellationToken& other) noexcept {
    CancellationToken(other).swap(*this);
    return *this;
  }
  CancellationToken& operator=(CancellationToken&& other) noexcept {
    CancellationToken(std::move(other)).swap(*this);
    return *this;
  }
  ~CancellationToken() {
    if (state_ != &detail::never_cancelled) state_->release_token_ref();
  }

  bool cancelled() const noexcept { return state_->cancelled(); }
  bool is_cancelled() const noexcept { return cancelled(); }
  bool stop_requested() const noexcept { return cancelled(); }
  bool can_continue() const noexcept { return !cancelled(); }

  // False for a default token, after reset(), and once nothing can cancel the
  // state any more (no source left, no parent that can).
  bool can_cancel() const noexcept { return state_->can_cancel(); }
  bool stop_possible() const noexcept { return can_cancel(); }

  // CancelReason::none until cancelled; then the first request's reason.
  CancelReason reason() const noexcept { return static_cast<CancelReason>(state_->reason()); }

  // Throws OperationCancelled if cancelled, and nothing else; changes nothing.
  void throw_if_cancelled() const {
    if (cancelled()) throw OperationCancelled();
  }

  // Lets go of the state: the token now behaves as a default one.
  void reset() noexcept { CancellationToken().swap(*this); }

  void swap(CancellationToken& other) noexcept { std::swap(state_, other.state_); }
  friend void swap(CancellationToken& a, CancellationToken& b) noexcept { a.swap(b); }

  template <class F>
  using callback_type = CancellationCallback<F>;

  // Same state (two default tokens are equal).
  friend bool operator==(const CancellationToken& a, const CancellationToken& b) noexcept {
    return a.state_ == b.state_;
  }

 private:
  friend class CancellationSource;
  friend class detail::CancelState;
  friend struct detail::StateAccess;
  template <class F>
  friend class CancellationCallback;

  explicit CancellationToken(detail::CancelState* adopted) noexcept : state_(adopted) {}

  // One reference, or &detail::never_cancelled (never null, never counted).
  detail::CancelState* state_ = &detail::never_cancelled;
};

class CancellationSource {
 public:
  // A fresh state, not cancelled. Allocates once: throws std::bad_alloc.
  CancellationSource() : state_(detail::CancelState::create()) {}
  // Throws std::length_error, with no effect, past 2^24 sources of a state.
  CancellationSource(const CancellationSource& other) : state_(other.state_) {
    if (state_ != nullptr) state_->add_source_ref();
  }
  CancellationSource(CancellationSource&& other) noexcept
      : state_(std::exchange(other.state_, nullptr)) {}
  // Strong guarantee: as the copy constructor.
  CancellationSource& operator=(const CancellationSource& other) {
    CancellationSource(other).swap(*this);
    return *this;
  }
  CancellationSource& operator=(CancellationSource&& other) noexcept {
    CancellationSource(std::move(other)).swap(*this);
    return *this;
  }
  ~CancellationSource() { release(); }

  // A token of this source's state (a default token if moved-from).
  CancellationToken token() const noexcept {
    if (state_ == nullptr) return CancellationToken();
    state_->add_token_ref();
    return CancellationToken(state_);
  }

  // Cancels the state with `why` (none counts as requested) and runs every
  // registered callback inline before returning. True only for the call
  // that made the request; false for later calls and for a moved-from source.
  // Never throws: a callback that throws terminates (see CancellationCallback).
  bool request_cancel(CancelReason why = CancelReason::requested) noexcept {
    if (why == CancelReason::none) why = CancelReason::requested;
    return state_ != nullptr && state_->request_cancel(static_cast<std::uint64_t>(why));
  }

  bool cancelled() const noexcept { return state_ != nullptr && state_->cancelled(); }
  bool is_cancelled() const noexcept { return cancelled(); }

  // A fresh, unlinked state; tokens taken earlier keep the old one.
  // Strong guarantee: the fresh state is allocated first, so on
  // std::bad_alloc the source keeps its old state.
  void reset() {
    detail::CancelState* fresh = detail::CancelState::create();
    release();
    state_ = fresh;
  }

  void swap(CancellationSource& other) noexcept { std::swap(state_, other.state_); }
  friend void swap(CancellationSource& a, CancellationSource& b) noexcept { a.swap(b); }

  // A source cancelled when any parent is (at once if one already is), with
  // that parent's reason. It can also be cancelled on its own, which does not
  // touch the parents. linked({}) is a plain fresh source. Throws
  // std::length_error, with no effect, if a parent has 2^31 references.
  // Strong guarantee: the state and its links are one allocation, made before
  // anything registers on a parent, so std::bad_alloc leaves the parents as
  // they were.
  static CancellationSource linked(std::initializer_list<CancellationToken> parents);

 private:
  friend struct detail::StateAccess;

  explicit CancellationSource(detail::CancelState* adopted) noexcept : state_(adopted) {}

  void release() noexcept {
    if (state_ != nullptr) std::exchange(state_, nullptr)->release_source_ref();
  }

  detail::CancelState* state_;  // one source reference, or null once moved from
};

// Runs `fn` once, as std::move(fn)(), when the token's state is cancelled:
// inline in the constructor if it already is, else inline on the thread that
// calls request_cancel(). Exactly one of the two happens when they race, and
// neither if the token can never be cancelled.
//
// ~CancellationCallback(): after it returns, the callback is not running and
// never will. If it is running on another thread, the destructor waits for
// it. If it runs on this very thread (the destructor is called from inside
// it, or from code it calls), the destructor does not wait: that would
// deadlock.
//
// The callback runs in a noexcept context: if it throws, std::terminate.
// Not copyable or movable: its address is registered in the state.
//
// Exceptions: the constructor throws only what constructing F from `fn`
// throws, before anything is registered (strong guarantee); registering
// allocates nothing. The destructor never throws (it may block, as above).
template <class F>
class CancellationCallback : private detail::CallbackNode {
  static_assert(std::is_object_v<F> && !std::is_array_v<F>, "F must be a decayed callable type");
  static_assert(std::is_invocable_v<F>, "F must be invocable as std::move(f)()");

 public:
  using callback_type = F;

  template <class G>
    requires std::constructible_from<F, G>
  CancellationCallback(const CancellationToken& token, G&& fn) noexcept(
      std::is_nothrow_constructible_v<F, G>)
      : CallbackNode(&invoke), fn_(std::forward<G>(fn)) {
    switch (token.state_->try_register(this)) {
      case detail::Registration::registered: state_ = token.state_; break;
      case detail::Registration::cancelled: invoke(this); break;
      case detail::Registration::never: break;
    }
  }

  CancellationCallback(const CancellationCallback&) = delete;
  CancellationCallback& operator=(const CancellationCallback&) = delete;

  ~CancellationCallback() {
    if (state_ != nullptr) state_->deregister(this);
  }

 private:
  friend struct detail::StateAccess;

  static void invoke(detail::CallbackNode* node) noexcept {
    std::move(static_cast<CancellationCallback*>(node)->fn_)();
  }

  detail::CancelState* state_ = nullptr;  // registered on, with one reference; else null
  F fn_;
};

template <class F>
CancellationCallback(CancellationToken, F) -> CancellationCallback<F>;

namespace detail {

// How the rest of quell reaches the state behind tokens and sources.
struct StateAccess {
  static CancelState* state(const CancellationToken& token) noexcept { return token.state_; }
  // The source's state, or null once moved from.
  static CancelState* state(const CancellationSource& source) noexcept { return source.state_; }
  // A token of `state`, taking a new reference.
  static CancellationToken token(CancelState* state) noexcept {
    state->add_token_ref();
    return CancellationToken(state);
  }
  // A token adopting a reference the caller already counted.
  static CancellationToken adopt_token(CancelState* state) noexcept {
    return CancellationToken(state);
  }
  // Deregisters `callback` without waiting for it to return if it runs on
  // another thread: for a callback known to touch nothing of its owner's
  // any more (its last act handed the owner over). Its destructor then
  // does nothing.
  template <class F>
  static void deregister_ran(CancellationCallback<F>& callback) noexcept {
    if (callback.state_ != nullptr) std::exchange(callback.state_, nullptr)->deregister(&callback, false);
  }
  // A source adopting a source reference the caller already counted.
  static CancellationSource adopt_source(CancelState* state) noexcept {
    return CancellationSource(state);
  }
};

}  // namespace detail

inline CancellationSource CancellationSource::linked(
    std::initializer_list<CancellationToken> parents) {
  return CancellationSource(detail::CancelState::create_linked(parents.begin(), parents.size()));
}

}  // namespace quell
