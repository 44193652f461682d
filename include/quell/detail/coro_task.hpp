#pragma once

// The coroutine machinery behind <quell/coro.hpp>: Task<T>, its promise, the
// strand and trampoline that resume it, Result<T>, and a root's state inside
// its pool task. docs/coroutines.md walks through the design.
//
// A Task's promise carries what flows implicitly through every co_await:
//   token_         the current token (R5): the awaiter's, by pointer
//   home_          where the coroutine resumes (R9): a pool or a sync_wait loop
//   strand_        the node its resumptions are queued through (R12)
//   continuation_  the awaiting coroutine, resumed by symmetric transfer
// A child Task copies the first three from its awaiter when awaited, so a
// plain co_await of a Task touches no atomic, queue or allocator (R3).
//
// Every co_await in a Task goes through await_transform (R4):
//   (a) this_coro tags: answered at once;
//   (b) quell awaitables (quell_awaiter(promise, token)): see the promise;
//   (c) stoppable awaitables: await_suspend(h, token);
//   (d) std::stop_token ones: await_suspend(h, bridged std::stop_token);
//   (e) anything else: untouched.
//
// Resumption after a suspension goes through the home: Executor::post()
// queues the strand (no allocation: the strand is the queue node), and a
// worker (or the sync_wait loop) resumes it with drive(). Nothing resumes a
// coroutine inline on a canceller's thread (R15).
//
// Trampoline (R39): GCC 12 emits the symmetric-transfer tail call only when
// optimising without sanitizers; elsewhere every transfer would nest a
// stack frame. With QUELL_CORO_TRAMPOLINE, a transfer stores the next handle
// in the slot that drive() armed for this resume() and returns
// noop_coroutine(); drive() resumes it. A transfer finds no slot when a
// foreign resumer entered the chain, and then transfers plainly.

#include <atomic>
#include <concepts>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <functional>
#include <new>
#include <optional>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

#include "quell/cancellation.hpp"
#include "quell/detail/config.hpp"
#include "quell/detail/task.hpp"
#include "quell/detail/task_block.hpp"
#include "quell/error.hpp"
#include "quell/stop_token.hpp"

#ifndef QUELL_CORO_TRAMPOLINE
#if !defined(__clang__) && \
    (!defined(__OPTIMIZE__) || defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__))
#define QUELL_CORO_TRAMPOLINE 1
#else
#define QUELL_CORO_TRAMPOLINE 0
#endif
#endif

namespace quell {

class ThreadPool;
class TaskPromiseBase;
template <class T>
class Result;

inline constexpr struct CancelledTag {
} cancelled{};  // co_yield quell::cancelled: ends the task cancelled, no throw (R8)

namespace this_coro {
struct CancellationTokenTag {};
struct PoolTag {};
inline constexpr CancellationTokenTag cancellation_token{};  // -> const CancellationToken&
inline constexpr PoolTag pool{};                            // -> ThreadPool* (null on a sync_wait loop)
}  // namespace this_coro

namespace detail {

struct TimerEntry;

// A coroutine's home: a pool, or a sync_wait loop.
class Executor {
 public:
  // How a resumption is queued:
  //   resume  a wait ended: on the poster's deque if it is one of our
  //           workers (a thief may take it), else the shared queue; wakes a
  //           worker.
  //   hop     schedule() onto the home from one of its workers, which pops
  //           it next: its own deque, no wake-up.
  //   yield   behind what is queued already: the shared queue (FIFO).
  enum class Post { resume, hop, yield };
  // Queues strand->resume_ for resumption here; never runs it inline, never
  // fails, allocates nothing (R11, R12).
  virtual void post(Strand* strand, Post how = Post::resume) noexcept = 0;
  virtual ThreadPool* pool() const noexcept = 0;
  // Arms a timer entry (its due, kind and target set); allocates nothing.
  virtual void add_timer(TimerEntry* entry) noexcept = 0;
  // Takes an armed entry back: false if it was already taken out to fire.
  virtual bool remove_timer(TimerEntry* entry) noexcept = 0;
  // A coroutine moving in with schedule(): counted until it leaves, so a
  // shutdown waits for it. False if this home no longer takes any (R11).
  virtual bool enter() noexcept = 0;
  virtual void leave() noexcept = 0;

 protected:
  ~Executor() = default;
};

// The calling thread's drive() slot (trampoline) and current coroutine
// token (R5: what this_task::cancellation_token() returns in a coroutine).
QUELL_FAST_TLS extern constinit thread_local std::coroutine_handle<>* trampoline_slot;
QUELL_FAST_TLS extern constinit thread_local const CancellationToken* current_coro_token;

// At a transfer between coroutines with different tokens (with_token): what
// this_task::cancellation_token() returns from now on (R5). Only on a
// thread inside drive(): a foreign resumer's thread keeps no pointer to a
// coroutine's token (R13), which could outlive it there.
inline void set_current_token(const CancellationToken* token) noexcept {
  if (current_coro_token != nullptr) current_coro_token = token;
}

// Symmetric transfer to `next`, through the trampoline in that mode.
inline std::coroutine_handle<> transfer(std::coroutine_handle<> next) noexcept {
#if QUELL_CORO_TRAMPOLINE
  if (std::coroutine_handle<>* slot = trampoline_slot) {
    trampoline_slot = nullptr;  // one transfer per resume(): the next returns to drive()
    *slot = next;
    return std::noop_coroutine();
  }
#endif
  return next;
}

// Resumes `handle`, then whatever the trampoline hands back, until the chain
// suspends; with `token` as the current coroutine token meanwhile.
void drive(std::coroutine_handle<> handle, const CancellationToken* token) noexcept;

// A strand about to wait: counted as suspended (its root is a pool task),
// and linked to its pool's shutdown the first time (a `cancel` shutdown then
// cancels it, R40). unpark(): the wait ended before suspending.
void strand_park(Strand* strand) noexcept;
void strand_unpark(Strand* strand) noexcept;

// Everything awaited by a Task reaches its promise through this.
template <class A>
concept QuellAwaitable = requires(A&& a, TaskPromiseBase& p, const CancellationToken& t) {
  std::forward<A>(a).quell_awaiter(p, t);
};


// R20: with assertions on, a quell coroutine resumed inline from inside a
// cancellation callback on the requesting thread terminates, with a message.
bool in_cancel_callback() noexcept;
[[noreturn]] void resumed_in_cancel_callback() noexcept;

// The awaiter that `co_await a` uses, after operator co_await.
template <class A>
decltype(auto) get_awaiter(A&& a) {
  if constexpr (requires { std::forward<A>(a).operator co_await(); }) {
    return std::forward<A>(a).operator co_await();
  } else if constexpr (requires { operator co_await(std::forward<A>(a)); }) {
    return operator co_await(std::forward<A>(a));
  } else {
    return std::forward<A>(a);
  }
}

template <class A>
using AwaiterOf = decltype(get_awaiter(std::declval<A>()));

// R4(c): a stoppable awaiter, handed the current token. Holds the awaiter by
// value when operator co_await made it, else by reference (the operand
// lives until the co_await ends).
// The root counts as suspended (and a `cancel` shutdown reaches it) from
// the suspension until it runs again, however the awaiter resumes it.
//
// R4(d): an awaiter that takes a std::stop_token instead is given one from a
// StopTokenBridge kept here (one allocation, only if the token can cancel).
template <class Aw, bool kStd = false>
class TokenAdapter {
 public:
  TokenAdapter(Aw&& awaiter, const CancellationToken& token, Strand* strand)
      : awaiter_(std::forward<Aw>(awaiter)), token_(&token), strand_(strand) {}
  bool await_ready() { return awaiter_.await_ready(); }
  template <class P>
  decltype(auto) await_suspend(std::coroutine_handle<P> h) {
    if constexpr (kStd) bridge_.emplace(*token_);
    strand_park(strand_);
    try {
      if constexpr (kStd) {
        return awaiter_.await_suspend(h, bridge_->get_token());
      } else {
        return awaiter_.await_suspend(h, *token_);
      }
    } catch (...) {
      strand_unpark(strand_);
      throw;
    }
  }
  decltype(auto) await_resume() {
#ifndef NDEBUG
    if (in_cancel_callback()) resumed_in_cancel_callback();
#endif
    strand_unpark(strand_);  // resumed inline, or await_suspend() declined
    return awaiter_.await_resume();
  }

 private:
  Aw awaiter_;
  const CancellationToken* token_;
  Strand* strand_;
  [[no_unique_address]] std::conditional_t<kStd, std::optional<StopTokenBridge>, std::monostate>
      bridge_;
};

template <class V>
struct Ready {
  V value;
  bool await_ready() const noexcept { return true; }
  void await_suspend(std::coroutine_handle<>) const noexcept {}
  V await_resume() const noexcept { return value; }
};

// The storage a sleep's timer entry takes in its awaiter (src/coro.cpp).
inline constexpr std::size_t kTimerEntrySize = 64;

// Throws what an await that completed with `code` throws.
[[noreturn]] void throw_error(std::error_code code);

}  // namespace detail

// What as_result(x) yields: x's value, or why there is none.
template <class T>
class Result {
  using Stored = std::conditional_t<
      std::is_void_v<T>, std::monostate,
      std::conditional_t<std::is_reference_v<T>, std::remove_reference_t<T>*, T>>;

 public:
  template <class... Args>
  explicit Result(std::in_place_t, Args&&... args)
      : v_(std::in_place_index<0>, std::forward<Args>(args)...) {}
  explicit Result(std::error_code error) noexcept : v_(std::in_place_index<1>, error) {}
  explicit Result(std::exception_ptr failure) noexcept
      : v_(std::in_place_index<2>, std::move(failure)) {}

  bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  // The value; else throws what `co_await x` would have thrown.
  decltype(auto) value() & {
    check();
    if constexpr (std::is_void_v<T>) {
      return;
    } else if constexpr (std::is_reference_v<T>) {
      return static_cast<T>(*std::get<0>(v_));
    } else {
      return static_cast<T&>(std::get<0>(v_));
    }
  }
  decltype(auto) value() && {
    check();
    if constexpr (std::is_void_v<T>) {
      return;
    } else if constexpr (std::is_reference_v<T>) {
      return static_cast<T>(*std::get<0>(v_));
    } else {
      return static_cast<T&&>(std::get<0>(v_));
    }
  }

  // Errc::cancelled, timed_out, rejected, no_state...; empty for a value or
  // a failure thrown by user code.
  std::error_code error() const noexcept {
    return v_.index() == 1 ? std::get<1>(v_) : std::error_code();
  }
  // A failure thrown by user code; null otherwise.
  std::exception_ptr exception() const noexcept {
    return v_.index() == 2 ? std::get<2>(v_) : nullptr;
  }
  bool cancelled() const noexcept {
    const std::error_code code = error();
    return code == make_error_code(Errc::cancelled) || code == make_error_code(Errc::timed_out);
  }

 private:
  void check() const {
    if (v_.index() == 1) detail::throw_error(std::get<1>(v_));
    if (v_.index() == 2) std::rethrow_exception(std::get<2>(v_));
  }

  std::variant<Stored, std::error_code, std::exception_ptr> v_;
};

// What every Task promise offers third-party awaitables.
class TaskPromiseBase {
 public:
  // The current token (R5); valid until the coroutine ends.
  const CancellationToken& cancellation_token() const noexcept { return *token_; }
  // The home pool (R9); null on a sync_wait loop.
  ThreadPool* pool() const noexcept { return home_ != nullptr ? home_->pool() : nullptr; }

  std::suspend_always initial_suspend() noexcept { return {}; }

  // Frames come from the per-thread block cache (detail/task_block.hpp).
  static void* operator new(std::size_t size) { return detail::task_block_allocate(size); }
  static void operator delete(void* frame, std::size_t size) noexcept {
    detail::task_block_free(frame, size);
  }

  template <class A>
  decltype(auto) await_transform(A&& a) {
    using D = std::remove_cvref_t<A>;
    if constexpr (std::is_same_v<D, this_coro::CancellationTokenTag>) {
      return detail::Ready<const CancellationToken&>{*token_};
    } else if constexpr (std::is_same_v<D, this_coro::PoolTag>) {
      return detail::Ready<ThreadPool*>{pool()};
    } else if constexpr (detail::QuellAwaitable<A>) {
      return std::forward<A>(a).quell_awaiter(*this, *token_);
    } else if constexpr (stoppable_awaitable<std::remove_reference_t<detail::AwaiterOf<A>>,
                                             CancellationToken, TaskPromiseBase>) {
      return detail::TokenAdapter<detail::AwaiterOf<A>>(detail::get_awaiter(std::forward<A>(a)),
                                                        *token_, strand_);
    } else if constexpr (stoppable_awaitable<std::remove_reference_t<detail::AwaiterOf<A>>,
                                             std::stop_token, TaskPromiseBase>) {
      return detail::TokenAdapter<detail::AwaiterOf<A>, true>(
          detail::get_awaiter(std::forward<A>(a)), *token_, strand_);
    } else {
      return std::forward<A>(a);
    }
  }

  // Internal state; read through the accessors above.
  enum class Ended : std::uint8_t { no, value, failure, cancelled };

  const CancellationToken* token_ = &kNoToken;
  detail::Executor* home_ = nullptr;
  // Set when schedule() moved this coroutine off its awaiter's home: the
  // awaiter resumes there (R10, §10.8), not by transfer.
  detail::Executor* return_home_ = nullptr;
  detail::Strand* strand_ = nullptr;
  std::coroutine_handle<> continuation_;  // the awaiter; null for a root
  std::exception_ptr error_;
  Ended ended_ = Ended::no;
  bool entered_ = false;  // home_ counts this coroutine as a visitor (Executor::enter)

  static const CancellationToken kNoToken;

 protected:
  TaskPromiseBase() = default;
  ~TaskPromiseBase() = default;

  struct FinalAwaiter {
    bool await_ready() const noexcept { return false; }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
      TaskPromiseBase& p = h.promise();
      if (p.continuation_ && p.return_home_ == nullptr && !p.entered_) {
        return detail::transfer(p.continuation_);
      }
      return p.end_elsewhere();
    }
    void await_resume() const noexcept {}
  };

  // unhandled_exception(): keeps the exception, unclassified. Telling
  // OperationCancelled from a failure takes a rethrow, so it is done only
  // where it matters (failed_cancelled()): a root's end, as_result.
  void capture_exception() noexcept {
    error_ = std::current_exception();
    ended_ = Ended::failure;
  }

 public:
  // Ended with an exception that is OperationCancelled (R38: it ends the
  // task cancelled).
  bool failed_cancelled() const noexcept;

 protected:

 private:
  // The final step when this is a root, or moved homes: hands control to
  // the awaiter on its own home, or ends the root. May destroy the frame.
  std::coroutine_handle<> end_elsewhere() noexcept;
};

inline constinit const CancellationToken TaskPromiseBase::kNoToken{};

template <class T>
class [[nodiscard]] Task;

namespace detail {

template <class T>
class TaskPromise;

// Where a promise keeps its value.
template <class T>
class PromiseValue : public TaskPromiseBase {
 public:
  template <class U = T>
  void return_value(U&& value) noexcept(std::is_nothrow_constructible_v<T, U&&>) {
    new (&value_) T(std::forward<U>(value));
    ended_ = Ended::value;
  }
  T take_value() { return std::move(value_); }
  // User-provided, leaving value_ unborn (T's constructor may be non-trivial).
  PromiseValue() noexcept {}
  ~PromiseValue() {
    if (ended_ == Ended::value) value_.~T();
  }

 protected:
  union {
    T value_;
  };
};

template <class T>
class PromiseValue<T&> : public TaskPromiseBase {
 public:
  void return_value(T& value) noexcept {
    value_ = &value;
    ended_ = Ended::value;
  }
  T& take_value() noexcept { return *value_; }

 protected:
  T* value_ = nullptr;
};

template <>
class PromiseValue<void> : public TaskPromiseBase {
 public:
  void return_void() noexcept { ended_ = Ended::value; }
  void take_value() noexcept {}
};

template <class T>
class TaskPromise final : public PromiseValue<T> {
 public:
  Task<T> get_return_object() noexcept;
  typename TaskPromiseBase::FinalAwaiter final_suspend() noexcept { return {}; }
  void unhandled_exception() noexcept { this->capture_exception(); }

  // co_yield quell::cancelled (R8): ends the task cancelled, no throw; the
  // owner destroys the frame with the locals in scope.
  typename TaskPromiseBase::FinalAwaiter yield_value(CancelledTag) noexcept {
    this->ended_ = TaskPromiseBase::Ended::cancelled;
    return {};
  }

  // The outcome, once ended: the value, or throws what the task ended with.
  decltype(auto) take() {
    switch (this->ended_) {
      case TaskPromiseBase::Ended::value: return this->take_value();
      case TaskPromiseBase::Ended::failure: std::rethrow_exception(this->error_);
      default: throw OperationCancelled();
    }
  }

  Result<T> take_result() noexcept {
    switch (this->ended_) {
      case TaskPromiseBase::Ended::value:
        if constexpr (std::is_void_v<T>) {
          return Result<T>(std::in_place);
        } else if constexpr (std::is_reference_v<T>) {
          return Result<T>(std::in_place, &this->take_value());
        } else {
          try {
            return Result<T>(std::in_place, this->take_value());
          } catch (...) {
            return Result<T>(std::current_exception());
          }
        }
      case TaskPromiseBase::Ended::failure:
        if (this->failed_cancelled()) return Result<T>(make_error_code(Errc::cancelled));
        return Result<T>(this->error_);
      default: return Result<T>(make_error_code(Errc::cancelled));
    }
  }
};

// Awaiting a Task: symmetric transfer into the child, which transfers back
// from its final suspend (R3). Owning (R19): the child sees the awaiter's
// token, so a cancellation reaches it by itself.
template <class T>
class TaskAwaiter {
 public:
  TaskAwaiter(std::coroutine_handle<TaskPromise<T>> child, TaskPromiseBase& parent,
              const CancellationToken& token) noexcept
      : child_(child), parent_(&parent), token_(&token) {}
  TaskAwaiter(TaskAwaiter&& other) noexcept
      : child_(std::exchange(other.child_, {})),
        cancelled_(other.cancelled_),
        parent_(other.parent_),
        token_(other.token_) {}
  TaskAwaiter& operator=(TaskAwaiter&&) = delete;
  ~TaskAwaiter() {
    if (child_) child_.destroy();  // R37: the awaiter's, once awaited
  }

  bool await_ready() {
    if (!child_) throw TaskError(make_error_code(Errc::no_state));  // R2
    if (token_->cancelled()) {  // R6: a checkpoint; the frame dies unstarted
      std::exchange(child_, {}).destroy();
      cancelled_ = true;
      return true;
    }
    return false;
  }

  std::coroutine_handle<> await_suspend(std::coroutine_handle<> parent) noexcept {
    TaskPromise<T>& child = child_.promise();
    set_current_token(token_);
    child.token_ = token_;
    child.home_ = parent_->home_;
    child.strand_ = parent_->strand_;
    child.continuation_ = parent;
    return transfer(child_);
  }

  decltype(auto) await_resume() {
    if (cancelled_) throw OperationCancelled();
    set_current_token(parent_->token_);
    return child_.promise().take();
  }

  Result<T> result() noexcept {
    if (cancelled_) return Result<T>(make_error_code(Errc::cancelled));
    set_current_token(parent_->token_);
    return child_.promise().take_result();
  }

 private:
  std::coroutine_handle<TaskPromise<T>> child_;
  bool cancelled_ = false;
  TaskPromiseBase* parent_;
  const CancellationToken* token_;
};

}  // namespace detail

// A lazy coroutine task: the body starts when the task is awaited or
// submitted, never earlier (R1). Move-only; awaited at most once, as an
// rvalue (R2). Awaitable only inside a Task (elsewhere: on(pool, task)).
//
// Thread safety: thread-compatible.
template <class T = void>
class [[nodiscard]] Task {
 public:
  using promise_type = detail::TaskPromise<T>;
  using value_type = T;

  Task() noexcept = default;
  Task(Task&& other) noexcept : frame_(std::exchange(other.frame_, {})) {}
  Task& operator=(Task&& other) noexcept {
    Task(std::move(other)).swap(*this);
    return *this;
  }
  // Destroys a frame never started: the parameters' destructors run, the
  // body never does (R37).
  ~Task() {
    if (frame_) frame_.destroy();
  }

  bool valid() const noexcept { return static_cast<bool>(frame_); }
  void swap(Task& other) noexcept { std::swap(frame_, other.frame_); }

  // Inside a Task: the child's awaiter (R3).
  detail::TaskAwaiter<T> quell_awaiter(TaskPromiseBase& parent,
                                       const CancellationToken& token) && noexcept {
    return detail::TaskAwaiter<T>(std::exchange(frame_, {}), parent, token);
  }

  // The frame, handed over (the pool's and sync_wait's).
  std::coroutine_handle<promise_type> release() noexcept { return std::exchange(frame_, {}); }

 private:
  friend class detail::TaskPromise<T>;
  explicit Task(std::coroutine_handle<promise_type> frame) noexcept : frame_(frame) {}

  std::coroutine_handle<promise_type> frame_;
};

template <class T>
Task<T> detail::TaskPromise<T>::get_return_object() noexcept {
  return Task<T>(std::coroutine_handle<TaskPromise>::from_promise(*this));
}

namespace detail {

// One suspension of a quell awaitable that cancellation can end (sleeps,
// futures, handles, joins): a completion side (what is waited on fires) and
// a cancellation side (a callback on the current token).
//
// Invariants
//   S1  kTaken is set once: by the completion side, or by the cancellation
//       side after its withdraw() succeeded, never both (withdraw() succeeds
//       only if the completion side has not begun, and then never fires).
//   S2  kSuspended is set once, by suspend(), after the last access
//       suspend() makes to the awaiter.
//   S3  The coroutine is resumed once: by the post of the one who sets the
//       second of the two bits when it is kTaken's setter, else by
//       suspend() returning false.
//
// Protocol (R14-R18):
//   * Exactly one side takes the wait. The completion side takes it by
//     firing; the cancellation side only by withdrawing the wait from what
//     it waits on first (withdraw(), under that thing's own lock or CAS), so
//     a completion that already began always wins (no lost result, R18) and
//     a withdrawn one never touches the awaiter again.
//   * The taker sets kTaken; await_suspend() sets kSuspended when it is done
//     touching the awaiter. Whichever comes second decides: a taker that
//     sees kSuspended posts the coroutine to its home (never resumes it
//     inline, R15); an await_suspend() that sees kTaken returns false and
//     the coroutine goes on at once (R16: cancelled already, or completed
//     while it registered).
//   * await_resume() first destroys the callback (waiting for one running
//     on another thread, §1), so nothing refers to the awaiter after it (R17).
class StoppableWait {
 public:
  StoppableWait() noexcept = default;
  StoppableWait(const StoppableWait&) = delete;
  StoppableWait& operator=(const StoppableWait&) = delete;

  // Parks the strand, arms the wait (arm(): false if it completed already)
  // and registers on `token`; true if the coroutine stays suspended.
  template <class Arm>
  bool suspend(TaskPromiseBase& promise, std::coroutine_handle<> handle,
               const CancellationToken& token, Arm arm) noexcept {
    promise_ = &promise;
    handle_ = handle;
    token_ = &token;
    strand_park(promise.strand_);
    if (!arm()) {
      strand_unpark(promise.strand_);
      return false;
    }
    callback_.emplace(token, Cancel{this});
    // Acq_rel: the release publishes the registration to a taker that sees
    // kSuspended; the acquire sees a taker's writes (cancelled_).
    const std::uint8_t before = state_.fetch_or(kSuspended, std::memory_order_acq_rel);
    QUELL_INVARIANT(S2, (before & kSuspended) == 0);
    if ((before & kTaken) != 0) {  // S3: taken while we registered; go on here
      strand_unpark(promise.strand_);
      return false;
    }
    return true;
  }

  // The completion side: what was waited on fired (once, and not withdrawn).
  void complete() noexcept { take(); }

  // In await_resume(): off the token; true if the cancellation took the wait.
  // A callback that took the wait posted the coroutine as its last act
  // (take()), so there is no need to wait for it to return: that wait
  // would cost the canceller and this worker a futex round trip each.
  bool finish() noexcept {
    if (cancelled_ && callback_) StateAccess::deregister_ran(*callback_);
    callback_.reset();
    return cancelled_;
  }

 protected:
  ~StoppableWait() = default;
  // Takes the wait back from what it waits on: true if the completion side
  // will now never fire.
  virtual bool withdraw() noexcept = 0;

 private:
  static constexpr std::uint8_t kTaken = 1;
  static constexpr std::uint8_t kSuspended = 2;

  struct Cancel {
    StoppableWait* wait;
    void operator()() noexcept {
      if (!wait->withdraw()) return;  // the completion side fires, or fired
      wait->cancelled_ = true;        // published by take()'s release
      wait->take();
    }
  };

  void take() noexcept {
    // Acq_rel: pairs with suspend()'s fetch_or; see the protocol above.
    const std::uint8_t before = state_.fetch_or(kTaken, std::memory_order_acq_rel);
    QUELL_INVARIANT(S1, (before & kTaken) == 0);
    if ((before & kSuspended) == 0) return;  // S3: suspend() goes on by itself
    Strand* const strand = promise_->strand_;
    strand->resume_ = handle_;
    strand->token_ = token_;
    promise_->home_->post(strand);  // the coroutine may run, and end this, from here on
  }

  TaskPromiseBase* promise_ = nullptr;
  std::coroutine_handle<> handle_;
  const CancellationToken* token_ = nullptr;
  std::atomic<std::uint8_t> state_{0};
  bool cancelled_ = false;
  std::optional<CancellationCallback<Cancel>> callback_;
};

// The finishing step of a coroutine root that ended after run() returned.
void coro_root_finish(TaskBase* task, std::uint32_t outcome) noexcept;
// The pool core as a home.
Executor* pool_executor(PoolCore* pool) noexcept;

// A pool task's root coroutine (TaskNode::start_coroutine()): its strand,
// its token and frame, and who finishes the task.
//
//   phase_: first_run ──root ends during run()──> done  (run() returns the outcome)
//           first_run ──run() returns first──> detached ──root ends──> done
//                                                 (the ending thread finishes the task)
// Exactly one of run() and the ending step sees the other's mark, by one
// exchange each, and that one finishes the task: run() through its return
// value, the ending step through coro_root_finish().
//   P1  Each side exchanges once, so each sees first_run or the other's mark.
template <class R>
class CoroRoot : public Strand {
 public:
  template <class Ended>
  std::uint32_t start(TaskBase* task, Task<R> coroutine, Ended callable_ended) noexcept {
    if (!coroutine.valid()) {
      callable_ended(task);
      task->error_ = std::make_exception_ptr(TaskError(make_error_code(Errc::no_state)));
      return TaskBase::kFailed;
    }
    family_ = task->family_;
    priority_ = task->priority_;
    task_ = task;
    done_ = &ended;
    callable_ended_ = callable_ended;
    token_.emplace(StateAccess::token(task));  // the root's token (R5); keeps the task
    frame_ = coroutine.release();
    TaskPromise<R>& promise = frame_.promise();
    promise.token_ = &*token_;
    promise.home_ = pool_executor(task->pool_);
    promise.strand_ = this;
    // Relaxed: nothing to publish yet; the exchanges below order the rest.
    phase_.store(kFirstRun, std::memory_order_relaxed);
    drive(frame_, promise.token_);
    // Acq_rel: the release orders everything run() did before an ending step
    // on another thread; the acquire sees outcome_ if it ended already.
    const std::uint8_t phase = phase_.exchange(kDetached, std::memory_order_acq_rel);
    QUELL_INVARIANT(P1, phase == kFirstRun || phase == kDone);
    if (phase == kDone) {
      token_.reset();  // the queue's reference keeps the task until run() returns
      return outcome_;
    }
    return TaskBase::kStillRunning;
  }

  CoroRoot() noexcept = default;
  CoroRoot(const CoroRoot&) = delete;
  CoroRoot& operator=(const CoroRoot&) = delete;
  ~CoroRoot() = default;

 private:
  static constexpr std::uint8_t kFirstRun = 0;
  static constexpr std::uint8_t kDetached = 1;
  static constexpr std::uint8_t kDone = 2;

  // The root's final suspend: collects the outcome, destroys the frame and
  // the callable (R29, R28), then finishes the task unless run() will.
  static void ended(Strand* strand) noexcept {
    auto* self = static_cast<CoroRoot*>(strand);
    TaskBase* const task = self->task_;
    self->shutdown_link_.detach();
    self->outcome_ = self->collect();
    self->frame_.destroy();
    self->callable_ended_(task);
    std::optional<CancellationToken> keep = std::move(self->token_);
    self->token_.reset();
    // Acq_rel: see start().
    const std::uint8_t phase = self->phase_.exchange(kDone, std::memory_order_acq_rel);
    QUELL_INVARIANT(P1, phase == kFirstRun || phase == kDetached);
    if (phase == kDetached) coro_root_finish(task, self->outcome_);
    // `keep` goes last: it may hold the task's last reference.
  }

  std::uint32_t collect() noexcept {
    TaskPromise<R>& promise = frame_.promise();
    TaskBase* const task = task_;
    switch (promise.ended_) {
      case TaskPromiseBase::Ended::value:
        if constexpr (std::is_void_v<R>) {
          return TaskBase::kCompleted;
        } else {
          try {
            new (&static_cast<TaskSlot<R>*>(task)->value()) R(promise.take_value());
            return TaskBase::kCompleted;
          } catch (...) {
            task->error_ = std::current_exception();
            return TaskBase::kFailed;
          }
        }
      case TaskPromiseBase::Ended::failure:
        if (!promise.failed_cancelled()) {
          task->error_ = promise.error_;
          return TaskBase::kFailed;
        }
        [[fallthrough]];
      default:
        return task->reason() == static_cast<std::uint64_t>(CancelReason::deadline)
                   ? TaskBase::kTimedOut
                   : TaskBase::kCancelled;
    }
  }

  std::optional<CancellationToken> token_;
  std::coroutine_handle<TaskPromise<R>> frame_;
  void (*callable_ended_)(TaskBase*) noexcept = nullptr;
  std::uint32_t outcome_ = 0;
  std::atomic<std::uint8_t> phase_{kFirstRun};
};

}  // namespace detail
}  // namespace quell
