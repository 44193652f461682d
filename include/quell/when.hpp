#pragma once

// Combinators that cancel the losers and wait for them (API.md §10.4):
//
//   auto [a, b] = co_await quell::when_all(parse(h), lookup(c));  // the first failure cancels the other
//   auto first = co_await quell::when_any(primary(), replica());  // the loser is cancelled and joined
//
// The children of one combinator share one cancellation state linked to the
// current token (one allocation), so the parent's cancellation reaches
// them, and the combinator cancels them itself: when_all on the first
// failure (reason `failure`), when_any once a child wins (reason
// `requested`). Child 0 starts inline; the others are queued on the current
// worker's deque (work-first), where idle workers steal them; on a
// sync_wait loop they interleave. Nothing a combinator started outlives its
// co_await: it resumes only after every child has ended (R21-R23).
//
// The async parallel loops (§11) are meant to sit on this: a loop's runners
// become Task<void> children of a when_all over a vector (the first failure
// cancels the rest with reason `failure`; every runner is joined before the
// co_await resumes), under with_deadline when its options carry a deadline.
//
// Thread safety: the awaitables are thread-compatible values, awaited once.
// Ordering: everything a child did happens-before the code after the
// co_await.

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "quell/cancellation.hpp"
#include "quell/coro.hpp"
#include "quell/detail/clock.hpp"

namespace quell {
namespace detail {

// What a child's value becomes inside a tuple, variant or vector.
template <class T>
using WhenValue = std::conditional_t<
    std::is_void_v<T>, std::monostate,
    std::conditional_t<std::is_reference_v<T>, std::reference_wrapper<std::remove_reference_t<T>>,
                       T>>;

// An awaitable as a child Task: a Task as it is, anything else wrapped in
// one frame.
template <class A>
auto as_child(A&& aw) {
  if constexpr (kIsTask<std::remove_cvref_t<A>> && !std::is_lvalue_reference_v<A>) {
    return std::move(aw);
  } else {
    using R = await_result_t<A>;
    return [](StoredArg<A> inner) -> Task<R> {
      co_return co_await std::forward<A>(inner);
    }(std::forward<A>(aw));
  }
}

class ChildSet;

// A child's queue node: its resumptions go through it, and its end (a root
// of its own chain: no continuation) reports to the set.
struct ChildStrand : Strand {
  std::coroutine_handle<> child;  // the child's frame, owned by the awaiter
  ChildSet* set = nullptr;
  std::size_t index = 0;
};

// The children of one combinator, started together and joined together.
// The last child to end posts the parent to its home.
//
// Invariants
//   C1  remaining_ counts the children not yet ended; the child that takes
//       it to zero posts the parent, exactly once, and nothing touches the
//       set after that post but the parent.
//   C2  decided_ is written once (a CAS from kNone): the first failure for
//       all, the first value or failure for any.
class ChildSet {
 public:
  static constexpr std::size_t kNone = static_cast<std::size_t>(-1);
  // all: the first failure cancels the others (reason failure).
  // any: the first value or failure wins and cancels the others (requested).
  // first: the first child to end, however, cancels the others (requested).
  enum class Rule : std::uint8_t { all, any, first };

  // strands[i].child and promises[i] are child i's frame and promise.
  ChildSet(Rule rule, std::size_t count, ChildStrand* strands,
           TaskPromiseBase* const* promises) noexcept
      : rule_(rule), count_(count), strands_(strands), promises_(promises) {}
  ChildSet(const ChildSet&) = delete;
  ChildSet& operator=(const ChildSet&) = delete;

  // The children's state, linked to the awaiter's token (may throw:
  // bad_alloc, or length_error past the reference limits).
  void link(const CancellationToken& parent, const CancellationToken& also = {}) {
    if (also.can_cancel()) {
      source_ = CancellationSource::linked({parent, also});
    } else {
      source_ = parent.can_cancel() ? CancellationSource::linked({parent}) : CancellationSource();
    }
    token_ = source_.token();
  }

  // Cancels the children; true if this was the first request.
  bool cancel(CancelReason why) noexcept { return source_.request_cancel(why); }

  // Queues children 1..n-1 on the parent's home and returns child 0, to
  // transfer to.
  std::coroutine_handle<> start(TaskPromiseBase& parent, std::coroutine_handle<> parent_handle,
                                const CancellationToken& parent_token) noexcept {
    parent_ = &parent;
    parent_handle_ = parent_handle;
    parent_token_ = &parent_token;
    // The parent is parked until the last child posts it: counted as
    // suspended, and a pool root is linked to its pool's shutdown, so that a
    // `cancel` shutdown reaches the children through its token (R40).
    strand_park(parent.strand_);
    // Relaxed: the queue pushes below publish it to the children.
    remaining_.store(count_, std::memory_order_relaxed);
    for (std::size_t i = 0; i < count_; ++i) {
      ChildStrand& strand = strands_[i];
      strand.set = this;
      strand.index = i;
      strand.token_ = &token_;
      strand.done_ = &child_ended;
      TaskPromiseBase& child = *promises_[i];
      child.token_ = &token_;
      child.home_ = parent.home_;
      child.strand_ = &strand;
    }
    for (std::size_t i = 1; i < count_; ++i) {
      strands_[i].resume_ = strands_[i].child;
      parent.home_->post(&strands_[i]);
    }
    set_current_token(&token_);
    return transfer(strands_[0].child);
  }

  // Relaxed: read after the fetch_sub chain that posted the parent (C1).
  std::size_t decided() const noexcept { return decided_.load(std::memory_order_relaxed); }
  // Relaxed: read after the fetch_sub chain that posted the parent.
  bool any_cancelled() const noexcept { return any_cancelled_.load(std::memory_order_relaxed); }

 private:
  static void child_ended(Strand* strand) noexcept {
    auto* const child = static_cast<ChildStrand*>(strand);
    child->set->ended(child->index);
  }

  void ended(std::size_t index) noexcept {
    const TaskPromiseBase& child = *promises_[index];
    const bool cancelled = child.ended_ == TaskPromiseBase::Ended::cancelled ||
                           child.failed_cancelled();
    const bool failed = !cancelled && child.ended_ == TaskPromiseBase::Ended::failure;
    if (cancelled) {
      // Relaxed: published by the fetch_sub below.
      any_cancelled_.store(true, std::memory_order_relaxed);
    }
    if (rule_ == Rule::first || (!cancelled && (failed || rule_ == Rule::any))) {
      std::size_t none = kNone;
      // Relaxed: C2 only decides who wins; the outcome is read after the
      // fetch_sub chain below.
      if (decided_.compare_exchange_strong(none, index, std::memory_order_relaxed)) {
        source_.request_cancel(rule_ == Rule::all ? CancelReason::failure
                                                  : CancelReason::requested);
      }
    }
    // Acq_rel: every child's outcome happens-before the last decrement,
    // which posts the parent (C1).
    if (remaining_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    Strand* const strand = parent_->strand_;
    strand->resume_ = parent_handle_;
    strand->token_ = parent_token_;
    parent_->home_->post(strand);  // the parent may run, and destroy this set, from here on
  }

  Rule rule_;
  std::atomic<bool> any_cancelled_{false};
  std::size_t count_;
  ChildStrand* strands_;
  TaskPromiseBase* const* promises_;
  TaskPromiseBase* parent_ = nullptr;
  std::coroutine_handle<> parent_handle_;
  const CancellationToken* parent_token_ = nullptr;
  CancellationSource source_ = StateAccess::adopt_source(nullptr);  // no state until link()
  CancellationToken token_;
  std::atomic<std::size_t> remaining_{0};
  std::atomic<std::size_t> decided_{kNone};
};

// Rethrows child `promise`'s exception.
[[noreturn]] inline void rethrow_child(const TaskPromiseBase& promise) {
  std::rethrow_exception(promise.error_);
}

// The awaiter of a variadic combinator: its children's strands inline.
template <ChildSet::Rule kRule, class... R>
class WhenAwaiter {
  static constexpr std::size_t kCount = sizeof...(R);
  static_assert(kCount > 0, "a combinator of no awaitables: use the vector form");

 public:
  WhenAwaiter(std::tuple<Task<R>...> tasks, TaskPromiseBase& parent,
              const CancellationToken& token)
      : tasks_(std::move(tasks)),
        parent_(&parent),
        token_(&token),
        set_(kRule, kCount, strands_, promises_) {}
  WhenAwaiter(const WhenAwaiter&) = delete;
  WhenAwaiter& operator=(const WhenAwaiter&) = delete;
  ~WhenAwaiter() {
    std::apply([](auto&... handle) { (destroy(handle), ...); }, handles_);
  }

  bool await_ready() {
    handles_ = std::apply([](auto&... task) { return std::tuple(task.release()...); }, tasks_);
    bool empty = false;
    std::apply([&](auto&... handle) { ((empty = empty || !handle), ...); }, handles_);
    if (empty) throw TaskError(make_error_code(Errc::no_state));
    if (token_->cancelled()) {  // a checkpoint (R6): the children die unstarted
      checkpoint_ = true;
      return true;
    }
    set_.link(*token_);
    [this]<std::size_t... I>(std::index_sequence<I...>) {
      ((promises_[I] = &std::get<I>(handles_).promise(), strands_[I].child = std::get<I>(handles_)),
       ...);
    }(std::make_index_sequence<kCount>());
    return false;
  }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> h) noexcept {
    return set_.start(*parent_, h, *token_);
  }
  auto await_resume() {
    set_current_token(parent_->token_);
    if (checkpoint_) throw OperationCancelled();
    const std::size_t decided = set_.decided();
    if constexpr (kRule == ChildSet::Rule::all) {
      if (decided != ChildSet::kNone) rethrow_child(*promises_[decided]);
      if (set_.any_cancelled()) throw OperationCancelled();
      return std::apply(
          [](auto&... handle) {
            return std::tuple<WhenValue<R>...>(take_value<R>(handle.promise())...);
          },
          handles_);
    } else {
      if (decided == ChildSet::kNone) throw OperationCancelled();  // every child was cancelled
      if (promises_[decided]->ended_ == TaskPromiseBase::Ended::failure) {
        rethrow_child(*promises_[decided]);
      }
      std::optional<std::variant<WhenValue<R>...>> out;
      [&]<std::size_t... I>(std::index_sequence<I...>) {
        static_cast<void>(((decided == I ? (out.emplace(std::in_place_index<I>,
                                                        take_value<R>(std::get<I>(handles_).promise())),
                                            true)
                                         : false) ||
                           ...));
      }(std::make_index_sequence<kCount>());
      return std::move(*out);
    }
  }
  auto result() noexcept {
    using V = decltype(std::declval<WhenAwaiter&>().await_resume());
    try {
      return Result<V>(std::in_place, await_resume());
    } catch (const OperationCancelled&) {
      return Result<V>(make_error_code(Errc::cancelled));
    } catch (const TaskError& e) {
      return Result<V>(e.code());
    } catch (...) {
      return Result<V>(std::current_exception());
    }
  }

 private:
  template <class T>
  static WhenValue<T> take_value(TaskPromise<T>& promise) {
    if constexpr (std::is_void_v<T>) {
      return {};
    } else if constexpr (std::is_reference_v<T>) {
      return std::ref(promise.take_value());
    } else {
      return promise.take_value();
    }
  }
  template <class H>
  static void destroy(H& handle) noexcept {
    if (handle) handle.destroy();
  }

  std::tuple<Task<R>...> tasks_;
  std::tuple<std::coroutine_handle<TaskPromise<R>>...> handles_;
  TaskPromiseBase* parent_;
  const CancellationToken* token_;
  bool checkpoint_ = false;
  ChildStrand strands_[kCount];
  TaskPromiseBase* promises_[kCount] = {};
  ChildSet set_;
};

// The awaiter of a combinator over a vector of Task<T>: its strands and
// handles in one block.
template <ChildSet::Rule kRule, class T>
class WhenVectorAwaiter {
 public:
  WhenVectorAwaiter(std::vector<Task<T>> tasks, TaskPromiseBase& parent,
                    const CancellationToken& token)
      : tasks_(std::move(tasks)), parent_(&parent), token_(&token) {}
  WhenVectorAwaiter(const WhenVectorAwaiter&) = delete;
  WhenVectorAwaiter& operator=(const WhenVectorAwaiter&) = delete;
  ~WhenVectorAwaiter() {
    for (std::size_t i = 0; i < started_; ++i) strands_[i].child.destroy();
  }

  bool await_ready() {
    const std::size_t n = tasks_.size();
    if constexpr (kRule == ChildSet::Rule::any) {
      if (n == 0) throw std::invalid_argument("when_any of no tasks");
    }
    for (const Task<T>& task : tasks_) {
      if (!task.valid()) throw TaskError(make_error_code(Errc::no_state));
    }
    if (token_->cancelled()) {  // a checkpoint (R6): tasks_ dies unstarted
      checkpoint_ = true;
      return true;
    }
    if (n == 0) return true;  // when_all of nothing: done at once
    strands_ = std::make_unique<ChildStrand[]>(n);
    promises_ = std::make_unique<TaskPromiseBase*[]>(n);
    set_.emplace(kRule, n, strands_.get(), promises_.get());
    set_->link(*token_);
    for (; started_ < n; ++started_) {
      const auto handle = tasks_[started_].release();
      strands_[started_].child = handle;
      promises_[started_] = &handle.promise();
    }
    tasks_.clear();
    return false;
  }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> h) noexcept {
    return set_->start(*parent_, h, *token_);
  }
  auto await_resume() {
    set_current_token(parent_->token_);
    if (checkpoint_) throw OperationCancelled();
    if constexpr (kRule == ChildSet::Rule::all) {
      if (!set_) return Values();
      const std::size_t decided = set_->decided();
      if (decided != ChildSet::kNone) rethrow_child(*promises_[decided]);
      if (set_->any_cancelled()) throw OperationCancelled();
      if constexpr (std::is_void_v<T>) {
        return;
      } else {
        Values values;
        values.reserve(started_);
        for (std::size_t i = 0; i < started_; ++i) values.push_back(child(i).take_value());
        return values;
      }
    } else {
      const std::size_t decided = set_->decided();
      if (decided == ChildSet::kNone) throw OperationCancelled();  // every child was cancelled
      if (promises_[decided]->ended_ == TaskPromiseBase::Ended::failure) {
        rethrow_child(*promises_[decided]);
      }
      if constexpr (std::is_void_v<T>) {
        return decided;
      } else {
        return std::pair<std::size_t, T>(decided, child(decided).take_value());
      }
    }
  }
  auto result() noexcept {
    using V = decltype(std::declval<WhenVectorAwaiter&>().await_resume());
    try {
      if constexpr (std::is_void_v<V>) {
        await_resume();
        return Result<V>(std::in_place);
      } else {
        return Result<V>(std::in_place, await_resume());
      }
    } catch (const OperationCancelled&) {
      return Result<V>(make_error_code(Errc::cancelled));
    } catch (const TaskError& e) {
      return Result<V>(e.code());
    } catch (...) {
      return Result<V>(std::current_exception());
    }
  }

 private:
  using Values = std::conditional_t<std::is_void_v<T>, void, std::vector<T>>;
  TaskPromise<T>& child(std::size_t i) noexcept { return static_cast<TaskPromise<T>&>(*promises_[i]); }

  std::vector<Task<T>> tasks_;
  TaskPromiseBase* parent_;
  const CancellationToken* token_;
  bool checkpoint_ = false;
  std::size_t started_ = 0;
  std::unique_ptr<ChildStrand[]> strands_;
  std::unique_ptr<TaskPromiseBase*[]> promises_;
  std::optional<ChildSet> set_;
};

// A child task's outcome as the co_await of it gives it.
template <class T>
decltype(auto) take_child(TaskPromise<T>& promise) {
  return promise.take();
}

// Sleeps until `due` on the home's timer, then cancels its set with reason
// deadline (with_timeout's second child; the first's end cancels it).
// Defined in src/coro.cpp: clang 14 cannot compile an inline coroutine
// with -fsanitize=function ("Cannot represent a difference across
// sections").
Task<void> deadline_child(ChildSet* set, std::chrono::steady_clock::time_point due, bool* fired);

// stop_when and with_timeout: aw runs as child 0 under a state linked to the
// current token and, for the token form, to `also`. The trigger forms add
// a second child (a trigger, or a sleep until the deadline); whichever ends
// first cancels the other, and the co_await waits for both (R24, R25).
enum class Guard : std::uint8_t { token, trigger, deadline };

template <Guard kGuard, class R, class TriggerR = void>
class GuardAwaiter {
  static constexpr std::size_t kCount = kGuard == Guard::token ? 1 : 2;

 public:
  GuardAwaiter(Task<R> aw, Task<TriggerR> trigger, CancellationToken also,
               std::chrono::steady_clock::time_point due, TaskPromiseBase& parent,
               const CancellationToken& token)
      : aw_(std::move(aw)),
        trigger_(std::move(trigger)),
        also_(std::move(also)),
        due_(due),
        parent_(&parent),
        token_(&token),
        set_(kGuard == Guard::token ? ChildSet::Rule::all : ChildSet::Rule::first, kCount,
             strands_, promises_) {}
  GuardAwaiter(const GuardAwaiter&) = delete;
  GuardAwaiter& operator=(const GuardAwaiter&) = delete;
  ~GuardAwaiter() {
    if (started_) {
      for (ChildStrand& strand : strands_) strand.child.destroy();
    }
  }

  bool await_ready() {
    if (!aw_.valid()) throw TaskError(make_error_code(Errc::no_state));
    if constexpr (kGuard == Guard::trigger) {
      if (!trigger_.valid()) throw TaskError(make_error_code(Errc::no_state));
    }
    if (token_->cancelled()) {  // a checkpoint (R6): nothing starts
      checkpoint_ = true;
      return true;
    }
    set_.link(*token_, also_);
    auto first = aw_.release();
    strands_[0].child = first;
    promises_[0] = &first.promise();
    if constexpr (kGuard == Guard::trigger) {
      auto second = trigger_.release();
      strands_[1].child = second;
      promises_[1] = &second.promise();
    } else if constexpr (kGuard == Guard::deadline) {
      auto second = deadline_child(&set_, due_, &timed_out_).release();
      strands_[1].child = second;
      promises_[1] = &second.promise();
    }
    started_ = true;
    return false;
  }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> h) noexcept {
    return set_.start(*parent_, h, *token_);
  }
  decltype(auto) await_resume() {
    set_current_token(parent_->token_);
    if (checkpoint_) throw OperationCancelled();
    auto& child = static_cast<TaskPromise<R>&>(*promises_[0]);
    if constexpr (kGuard == Guard::deadline) {
      // Cancelled, and the deadline was the first reason: timed out (R25).
      // A value that arrived anyway is kept.
      const bool cancelled = child.ended_ == TaskPromiseBase::Ended::cancelled ||
                             child.failed_cancelled();
      if (cancelled && timed_out_) throw TaskError(make_error_code(Errc::timed_out));
    }
    return take_child(child);
  }
  auto result() noexcept {
    using V = decltype(std::declval<GuardAwaiter&>().await_resume());
    try {
      if constexpr (std::is_void_v<V>) {
        await_resume();
        return Result<V>(std::in_place);
      } else {
        return Result<V>(std::in_place, await_resume());
      }
    } catch (const OperationCancelled&) {
      return Result<V>(make_error_code(Errc::cancelled));
    } catch (const TaskError& e) {
      return Result<V>(e.code());
    } catch (...) {
      return Result<V>(std::current_exception());
    }
  }

 private:
  Task<R> aw_;
  Task<TriggerR> trigger_;
  CancellationToken also_;
  std::chrono::steady_clock::time_point due_;
  TaskPromiseBase* parent_;
  const CancellationToken* token_;
  bool checkpoint_ = false;
  bool started_ = false;
  bool timed_out_ = false;  // written by the deadline child, read after the join
  ChildStrand strands_[kCount];
  TaskPromiseBase* promises_[kCount] = {};
  ChildSet set_;
};

template <Guard kGuard, class R, class TriggerR = void>
class [[nodiscard]] Guarded {
 public:
  Guarded(Task<R> aw, Task<TriggerR> trigger, CancellationToken also,
          std::chrono::steady_clock::time_point due)
      : aw_(std::move(aw)), trigger_(std::move(trigger)), also_(std::move(also)), due_(due) {}
  GuardAwaiter<kGuard, R, TriggerR> quell_awaiter(TaskPromiseBase& promise,
                                                  const CancellationToken& token) && {
    return GuardAwaiter<kGuard, R, TriggerR>(std::move(aw_), std::move(trigger_), std::move(also_),
                                             due_, promise, token);
  }

 private:
  Task<R> aw_;
  Task<TriggerR> trigger_;
  CancellationToken also_;
  std::chrono::steady_clock::time_point due_;
};

template <ChildSet::Rule kRule, class... R>
class [[nodiscard]] When {
 public:
  explicit When(Task<R>... tasks) : tasks_(std::move(tasks)...) {}
  WhenAwaiter<kRule, R...> quell_awaiter(TaskPromiseBase& promise,
                                         const CancellationToken& token) && {
    return WhenAwaiter<kRule, R...>(std::move(tasks_), promise, token);
  }

 private:
  std::tuple<Task<R>...> tasks_;
};

template <ChildSet::Rule kRule, class T>
class [[nodiscard]] WhenVector {
 public:
  explicit WhenVector(std::vector<Task<T>> tasks) : tasks_(std::move(tasks)) {}
  WhenVectorAwaiter<kRule, T> quell_awaiter(TaskPromiseBase& promise,
                                            const CancellationToken& token) && {
    return WhenVectorAwaiter<kRule, T>(std::move(tasks_), promise, token);
  }

 private:
  std::vector<Task<T>> tasks_;
};

}  // namespace detail

// Runs every awaitable as a child (in parallel on a pool) and completes when
// all have ended (R22): the first failure cancels the others (reason
// `failure`) and is rethrown; else OperationCancelled if any child ended
// cancelled; else the values, in order (void -> std::monostate, U& ->
// std::reference_wrapper<U>).
template <class... A>
auto when_all(A&&... aws) {
  return detail::When<detail::ChildSet::Rule::all, await_result_t<A>...>(
      detail::as_child(std::forward<A>(aws))...);
}
// The same over a vector: std::vector<T>, or void for Task<void>. An empty
// vector completes at once.
template <class T>
auto when_all(std::vector<Task<T>> tasks) {
  return detail::WhenVector<detail::ChildSet::Rule::all, T>(std::move(tasks));
}

// Runs every awaitable as a child; the first to end with a value or a
// failure wins and cancels the others (reason `requested`), which are
// joined before the co_await resumes (R23). A child that ends cancelled
// never wins; if all do, OperationCancelled. The variant's index() is the
// winner's.
template <class... A>
auto when_any(A&&... aws) {
  return detail::When<detail::ChildSet::Rule::any, await_result_t<A>...>(
      detail::as_child(std::forward<A>(aws))...);
}
// The same over a vector: the winner's index and value (the index alone for
// Task<void>). An empty vector throws std::invalid_argument at the co_await.
template <class T>
auto when_any(std::vector<Task<T>> tasks) {
  return detail::WhenVector<detail::ChildSet::Rule::any, T>(std::move(tasks));
}

// Runs aw with a token cancelled when either the current token or `trigger`
// is, with that one's reason (R24).
template <class A>
auto stop_when(A&& aw, CancellationToken trigger) {
  return detail::Guarded<detail::Guard::token, await_result_t<A>>(
      detail::as_child(std::forward<A>(aw)), Task<void>(), std::move(trigger), {});
}
// Runs aw and the trigger awaitable together (P2175): the trigger ending,
// however, cancels aw (reason requested), and aw ending cancels the
// trigger. Waits for both; gives aw's outcome (R24).
template <class A, class Trig>
  requires(!std::is_same_v<std::remove_cvref_t<Trig>, CancellationToken>)
auto stop_when(A&& aw, Trig&& trigger) {
  return detail::Guarded<detail::Guard::trigger, await_result_t<A>, await_result_t<Trig>>(
      detail::as_child(std::forward<A>(aw)), detail::as_child(std::forward<Trig>(trigger)), {}, {});
}

// Runs aw; at `deadline` its token is cancelled with reason deadline, on the
// home's timer. If aw then ends cancelled, the co_await throws
// TaskError(timed_out); a value that still arrives is returned; the current
// token's cancellation first gives OperationCancelled (R25).
template <class A>
auto with_deadline(A&& aw, std::chrono::steady_clock::time_point deadline) {
  return detail::Guarded<detail::Guard::deadline, await_result_t<A>>(
      detail::as_child(std::forward<A>(aw)), Task<void>(), {}, deadline);
}
// with_deadline(aw, now + timeout).
template <class A>
auto with_timeout(A&& aw, std::chrono::steady_clock::duration timeout) {
  return with_deadline(std::forward<A>(aw), detail::saturating_add(std::chrono::steady_clock::now(),
                                                                   timeout));
}

}  // namespace quell
