#pragma once

// Coroutines whose cancellation flows by itself (API.md §10).
//
//   quell::Task<int> handle(Request r) {
//     co_await quell::sleep_for(10ms);          // cancellable, no thread blocked
//     int n = co_await parse(r);                // the token flows into parse()
//     co_return n;
//   }
//   quell::Future<int> f = pool.submit(handle(r), quell::TaskOptions().set_timeout(1s));
//
// A Task<T> is lazy: calling the coroutine allocates its frame and runs
// nothing; the body starts when the task is awaited (inside another Task)
// or submitted to a pool, where everything of §6 applies (options, handles,
// deadlines, groups, scopes, shutdown). Its promise carries the current
// cancellation token, and every quell awaitable (a Task, a Future, a
// TaskHandle, sleeps, schedule, yield, joins) checks it: awaited while the
// token is cancelled, it starts nothing and the co_await throws
// OperationCancelled (or, under as_result, yields a Result saying so). While
// suspended, a cancellation ends a sleep or a future's wait at once, and is
// passed on to what the coroutine owns (a child task, a handle's task, a
// scope). A coroutine resumes on its home pool, never inline on the
// canceller's thread. docs/coroutines.md is the guide.
//
// Thread safety: a Task is thread-compatible; a coroutine's code between two
// suspension points runs on one thread, and may continue on another worker
// of its home after one (R41).
//
// Ordering: everything sequenced before a completion (a child's co_return, a
// task's end, a timer firing) happens-before the code after the co_await it
// resumes; everything sequenced before request_cancel() happens-before the
// OperationCancelled or Result it causes (R42).

#include <chrono>
#include <coroutine>
#include <functional>
#include <optional>
#include <type_traits>
#include <utility>

#include "quell/cancellation.hpp"
#include "quell/detail/coro_task.hpp"
#include "quell/error.hpp"
#include "quell/stop_token.hpp"
#include "quell/future.hpp"
#include "quell/task_handle.hpp"
#include "quell/task_options.hpp"
#include "quell/thread_pool.hpp"

namespace quell {

// Resumes h later, on its home; never inline, allocates nothing. For
// third-party stoppable awaitables: the one way to resume from a
// cancellation callback (R15, R20).
template <class P>
  requires std::derived_from<P, TaskPromiseBase>
void post_resume(std::coroutine_handle<P> h) noexcept {
  TaskPromiseBase& promise = h.promise();
  detail::Strand* const strand = promise.strand_;
  strand->resume_ = h;
  strand->token_ = promise.token_;
  detail::strand_park(strand);
  promise.home_->post(strand);
}

// The type of `co_await a` inside a Task.
template <class A>
using await_result_t = decltype(detail::get_awaiter(std::declval<TaskPromiseBase&>().await_transform(
                                                        std::declval<A>()))
                                    .await_resume());

namespace detail {

// A hop to `target`: the coroutine is queued there and resumes there.
class HopAwaiter {
 public:
  HopAwaiter(Executor* target, TaskPriority priority, TaskPromiseBase& promise,
             const CancellationToken& token, bool to_home) noexcept
      : target_(target), promise_(&promise), token_(&token), priority_(priority), to_home_(to_home) {}

  bool await_ready() noexcept {
    cancelled_ = token_->cancelled();  // a checkpoint (R6)
    return cancelled_;
  }
  void await_suspend(std::coroutine_handle<> h);
  void await_resume() const {
    if (cancelled_) throw OperationCancelled();
  }
  Result<void> result() const noexcept {
    return cancelled_ ? Result<void>(make_error_code(Errc::cancelled)) : Result<void>(std::in_place);
  }

 private:
  Executor* target_;
  TaskPromiseBase* promise_;
  const CancellationToken* token_;
  TaskPriority priority_;
  bool to_home_;  // yield(): back onto the current home, whatever it is
  bool cancelled_ = false;
};

// Moves the coroutine to `target` (schedule) or requeues it (yield); throws
// TaskError(rejected), before suspending, if `target` takes no coroutine.
void hop(TaskPromiseBase& promise, Executor* target, TaskPriority priority, bool to_home,
         std::coroutine_handle<> h, const CancellationToken& token);

inline void HopAwaiter::await_suspend(std::coroutine_handle<> h) {
  hop(*promise_, target_, priority_, to_home_, h, *token_);
}

void arm_sleep(Executor* home, void* storage, std::chrono::steady_clock::time_point due,
               StoppableWait* wait) noexcept;
bool disarm_sleep(Executor* home, void* storage) noexcept;
void destroy_sleep_entry(void* storage) noexcept;

// A sleep: a timer entry of the home's, inside the awaiter (no allocation,
// R32). Non-owning: cancelled, it takes its entry back and ends at once.
class SleepAwaiter final : private StoppableWait {
 public:
  SleepAwaiter(std::chrono::steady_clock::time_point due, TaskPromiseBase& promise,
               const CancellationToken& token) noexcept
      : due_(due), promise_(&promise), token_(&token) {}
  SleepAwaiter(SleepAwaiter&& other) noexcept
      : StoppableWait(), due_(other.due_), promise_(other.promise_), token_(other.token_) {}
  ~SleepAwaiter() {
    if (armed_) destroy_sleep_entry(entry_);
  }

  bool await_ready() noexcept {
    if (token_->cancelled()) {  // a checkpoint (R6)
      cancelled_ = true;
      return true;
    }
    return due_ <= std::chrono::steady_clock::now();
  }
  bool await_suspend(std::coroutine_handle<> h) noexcept {
    return suspend(*promise_, h, *token_, [this]() noexcept {
      arm_sleep(promise_->home_, entry_, due_, this);
      armed_ = true;
      return true;
    });
  }
  void await_resume() {
    if (ended_cancelled()) throw OperationCancelled();
  }
  Result<void> result() noexcept {
    if (ended_cancelled()) return Result<void>(make_error_code(Errc::cancelled));
    return Result<void>(std::in_place);
  }

 private:
  bool ended_cancelled() noexcept { return cancelled_ || (armed_ && finish()); }
  bool withdraw() noexcept override { return disarm_sleep(promise_->home_, entry_); }

  std::chrono::steady_clock::time_point due_;
  TaskPromiseBase* promise_;
  const CancellationToken* token_;
  bool cancelled_ = false;
  bool armed_ = false;
  alignas(void*) unsigned char entry_[kTimerEntrySize];
};

template <class A>
using StoredArg = std::conditional_t<std::is_lvalue_reference_v<A>, A, std::remove_cvref_t<A>>;

// as_result(aw): the awaiter of aw, resumed into a Result.
template <class Inner>
class AsResultAwaiter {
 public:
  // Built in place from make(): the awaiters of futures, handles and joins
  // are registered by address and cannot move.
  template <class Make>
  explicit AsResultAwaiter(std::in_place_t, Make&& make) : inner_(std::forward<Make>(make)()) {}
  bool await_ready() {
    try {
      return inner_.await_ready();
    } catch (const TaskError& e) {
      error_ = e.code();  // e.g. no_state: an empty task
      return true;
    }
  }
  // A refusal before suspending (schedule() onto a shut-down pool) becomes
  // the Result too.
  template <class P>
  auto await_suspend(std::coroutine_handle<P> h) {
    using Suspend = decltype(inner_.await_suspend(h));
    if constexpr (std::is_same_v<Suspend, void>) {
      try {
        inner_.await_suspend(h);
        return true;
      } catch (const TaskError& e) {
        error_ = e.code();
        return false;
      }
    } else {
      return inner_.await_suspend(h);
    }
  }
  auto await_resume() {
    using R = decltype(inner_.result());
    if (error_) return R(error_);
    return inner_.result();
  }

 private:
  Inner inner_;
  std::error_code error_;
};

void run_sync_loop(std::coroutine_handle<> root, TaskPromiseBase& promise);

// schedule(pool) awaited by a foreign coroutine (R46): its own queue node,
// counted in by the pool until the resumption ran.
class ForeignHop final : private Strand {
 public:
  ForeignHop(Executor* pool, TaskPriority priority) noexcept : pool_(pool) {
    priority_ = priority;
    visitor_ = true;
  }
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    if (!pool_->enter()) throw TaskError(make_error_code(Errc::rejected));
    resume_ = h;
    pool_->post(this);  // runs on a worker from here on
  }
  void await_resume() const noexcept {}

 private:
  Executor* pool_;
};

}  // namespace detail

// Moves the current coroutine to `pool` (its home from now on, R9); always
// suspends and requeues, even onto the current home. Throws
// TaskError(rejected) without suspending if the pool is shut down (R11).
// Also awaitable from a foreign coroutine, which then resumes on `pool`.
class [[nodiscard]] ScheduleAwaitable {
 public:
  ScheduleAwaitable(ThreadPool& pool, TaskPriority priority) noexcept
      : pool_(&pool), priority_(priority) {}
  detail::HopAwaiter quell_awaiter(TaskPromiseBase& promise, const CancellationToken& token) const {
    return detail::HopAwaiter(executor(), priority_, promise, token, false);
  }
  // From a foreign coroutine: resumes it on a worker of the pool.
  detail::ForeignHop operator co_await() const noexcept {
    return detail::ForeignHop(executor(), priority_);
  }

 private:
  detail::Executor* executor() const noexcept {
    return detail::pool_executor(detail::PoolAccess::core(*pool_));
  }

  ThreadPool* pool_;
  TaskPriority priority_;
};

inline ScheduleAwaitable schedule(ThreadPool& pool, TaskPriority priority = TaskPriority::normal) {
  return ScheduleAwaitable(pool, priority);
}

// Requeues the current coroutine on its home (fairness); a checkpoint.
struct [[nodiscard]] YieldAwaitable {
  detail::HopAwaiter quell_awaiter(TaskPromiseBase& promise, const CancellationToken& token) const {
    return detail::HopAwaiter(promise.home_, TaskPriority::normal, promise, token, true);
  }
};
inline YieldAwaitable yield() noexcept { return {}; }

// Suspends until `due` through the home's timer; no thread blocks (R32).
struct [[nodiscard]] SleepAwaitable {
  std::chrono::steady_clock::time_point due;
  detail::SleepAwaiter quell_awaiter(TaskPromiseBase& promise, const CancellationToken& token) const {
    return detail::SleepAwaiter(due, promise, token);
  }
};
inline SleepAwaitable sleep_until(std::chrono::steady_clock::time_point due) noexcept {
  return SleepAwaitable{due};
}
inline SleepAwaitable sleep_for(std::chrono::steady_clock::duration delay) noexcept {
  return SleepAwaitable{detail::saturating_add(std::chrono::steady_clock::now(), delay)};
}

// with_token(aw, t): aw sees t instead of the current token (R26); on a
// foreign awaitable, does nothing. shielded(aw): with a token never cancelled.
template <class A>
class [[nodiscard]] WithToken {
 public:
  WithToken(A&& aw, CancellationToken token) : aw_(std::forward<A>(aw)), token_(std::move(token)) {}
  decltype(auto) quell_awaiter(TaskPromiseBase& promise, const CancellationToken&) && {
    if constexpr (detail::QuellAwaitable<A>) {
      return std::forward<A>(aw_).quell_awaiter(promise, token_);
    } else {
      return promise.await_transform(std::forward<A>(aw_));
    }
  }

 private:
  detail::StoredArg<A> aw_;
  CancellationToken token_;
};

template <class A>
WithToken<A> with_token(A&& aw, CancellationToken token) {
  return WithToken<A>(std::forward<A>(aw), std::move(token));
}
template <class A>
WithToken<A> shielded(A&& aw) {
  return WithToken<A>(std::forward<A>(aw), CancellationToken());
}

// as_result(aw): aw's outcome as a Result; cancellation creates no exception
// anywhere (R7).
template <class A>
class [[nodiscard]] AsResult {
  static_assert(detail::QuellAwaitable<A>, "as_result() takes quell awaitables");

 public:
  explicit AsResult(A&& aw) : aw_(std::forward<A>(aw)) {}
  auto quell_awaiter(TaskPromiseBase& promise, const CancellationToken& token) && {
    using Inner = decltype(std::forward<A>(aw_).quell_awaiter(promise, token));
    return detail::AsResultAwaiter<Inner>(std::in_place, [&]() -> Inner {
      return std::forward<A>(aw_).quell_awaiter(promise, token);
    });
  }

 private:
  detail::StoredArg<A> aw_;
};

template <class A>
AsResult<A> as_result(A&& aw) {
  return AsResult<A>(std::forward<A>(aw));
}

namespace detail {

// on(pool, aw) awaited by a foreign coroutine (R46): aw runs as a root task
// of the pool, and the coroutine resumes on the worker that finished it.
template <class R>
class ForeignOnAwaiter {
 public:
  ForeignOnAwaiter(ThreadPool& pool, Task<R> task) noexcept : pool_(&pool), task_(std::move(task)) {}
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> h) { return start(h, TaskOptions()); }
  // Seed 004's callee role: the caller's token, bridged into the root's
  // (R44); the caller still resumes on the worker that finished aw.
  template <stoppable_token Token>
  bool await_suspend(std::coroutine_handle<> h, const Token& token) {
    TaskOptions options;
    options.set_cancellation(token);
    return start(h, options);
  }
  R await_resume() { return waiter_->await_resume(); }

 private:
  bool start(std::coroutine_handle<> h, const TaskOptions& options) {
    future_ = pool_->submit(std::move(task_), options);
    waiter_.emplace(future_);
    return waiter_->await_suspend(h);
  }

  ThreadPool* pool_;
  Task<R> task_;
  Future<R> future_;
  std::optional<ForeignFutureAwaiter<R>> waiter_;
};

}  // namespace detail

// on(pool, aw): runs aw with `pool` as its home, then resumes the caller on
// its own home (R9). Owning: the caller's token flows into aw. With `pool`
// already the home, no hop. Also awaitable from a foreign coroutine (R46).
template <class A>
class [[nodiscard]] OnAwaitable {
 public:
  using Value = await_result_t<A>;

  OnAwaitable(ThreadPool& pool, A&& aw) : pool_(&pool), aw_(std::forward<A>(aw)) {}

  detail::TaskAwaiter<Value> quell_awaiter(TaskPromiseBase& promise,
                                           const CancellationToken& token) && {
    return task().quell_awaiter(promise, token);
  }
  detail::ForeignOnAwaiter<Value> operator co_await() && {
    return detail::ForeignOnAwaiter<Value>(*pool_, task());
  }

 private:
  Task<Value> task() {
    return [](ThreadPool& target, detail::StoredArg<A> inner) -> Task<Value> {
      ThreadPool* const here = co_await this_coro::pool;
      if (here != &target) co_await schedule(target);
      co_return co_await std::forward<A>(inner);
    }(*pool_, std::forward<A>(aw_));
  }

  ThreadPool* pool_;
  detail::StoredArg<A> aw_;
};

template <class A>
OnAwaitable<A> on(ThreadPool& pool, A&& aw) {
  return OnAwaitable<A>(pool, std::forward<A>(aw));
}

// co_invoke(f, args...): f(args...)'s task, with f and the arguments kept in
// the frame until it ends (R28).
template <class F, class... Args>
auto co_invoke(F&& f, Args&&... args)
    -> Task<await_result_t<std::invoke_result_t<std::decay_t<F>&, std::decay_t<Args>&...>>> {
  using R = await_result_t<std::invoke_result_t<std::decay_t<F>&, std::decay_t<Args>&...>>;
  return [](std::decay_t<F> fn, std::decay_t<Args>... as) -> Task<R> {
    co_return co_await std::invoke(fn, as...);
  }(std::forward<F>(f), std::forward<Args>(args)...);
}

// Runs aw as a root on the calling thread's loop, which serves its
// resumptions and sleeps, and returns its value or throws (R35). Throws
// std::logic_error on a pool worker or inside another sync_wait: it would
// block without helping. A token cancelled already starts nothing.
template <class A>
auto sync_wait(A&& aw, CancellationToken token = {}) -> await_result_t<A> {
  using R = await_result_t<A>;
  Task<R> root = [](detail::StoredArg<A> inner) -> Task<R> {
    co_return co_await std::forward<A>(inner);
  }(std::forward<A>(aw));
  struct Frame {
    std::coroutine_handle<detail::TaskPromise<R>> handle;
    ~Frame() { handle.destroy(); }
  } frame{root.release()};
  frame.handle.promise().token_ = &token;
  detail::run_sync_loop(frame.handle, frame.handle.promise());
  return frame.handle.promise().take();
}

// pool.submit(aw as a task, options).get().
template <class A>
auto sync_wait(ThreadPool& pool, A&& aw, const TaskOptions& options = {}) -> await_result_t<A> {
  using R = await_result_t<A>;
  if constexpr (detail::kIsTask<std::remove_cvref_t<A>> && !std::is_lvalue_reference_v<A>) {
    return pool.submit(std::move(aw), options).get();
  } else {
    return pool
        .submit([](detail::StoredArg<A> inner) -> Task<R> {
          co_return co_await std::forward<A>(inner);
        }(std::forward<A>(aw)), options)
        .get();
  }
}

}  // namespace quell
