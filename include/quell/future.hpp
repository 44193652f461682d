#pragma once

// Future<T>: the outcome of one task, read once.
//
// A future refers to its task's block (see detail/task.hpp); it is ready once
// the task is terminal. get() returns the value (or rethrows the task's
// exception; throws OperationCancelled for a cancelled task, TaskError with
// Errc::timed_out or Errc::rejected otherwise) and may be called once: a
// second call throws TaskError(Errc::already_retrieved). status(), result(),
// ready() and error() keep working after get().
//
// A wait runs only its own work: get(), wait(), wait_for() and wait_until()
// on one of the pool's workers run the awaited task right there if nobody
// has started or dropped it, and queued tasks of the same request (submitted,
// directly or not, by the same task from outside the pool), so fork-join
// never deadlocks, even with one worker; they never start another request's
// task (a join inside one request cannot start another request's blocking
// task). Otherwise, and on any
// other thread, the wait sleeps until the task is terminal. wait(token)
// never runs the task.
//
// Dropping a future neither cancels nor waits for its task.
//
// A default-constructed future has no task: valid() is false, status() is
// rejected, result() none, error() Errc::no_state, and get() and the waits
// throw TaskError(Errc::no_state).
//
// Thread safety: thread-compatible (const members may be called concurrently,
// also with the task completing).
//
// Ordering: everything the task did happens-before a wait that returns
// because the task is ready, and before get() returns or throws.

#include <chrono>
#include <cstdint>
#include <exception>
#include <system_error>
#include <utility>

#include "quell/cancellation.hpp"
#include "quell/detail/clock.hpp"
#include "quell/detail/coro_task.hpp"
#include "quell/detail/task.hpp"
#include "quell/error.hpp"
#include "quell/task_status.hpp"

namespace quell {

class ThreadPool;
template <class T>
class TaskHandle;

namespace detail {
// Blocks until `task` is terminal; on one of its pool's workers, first runs
// its own work (the task, or queued tasks of its family).
void task_wait(TaskBase* task);
// Blocks until `task` is terminal or `deadline` passes; true if terminal.
bool task_wait_until(TaskBase* task, std::chrono::steady_clock::time_point deadline);
// Blocks until `task` is terminal or `stop` is cancelled; true if terminal.
bool task_wait_or_stop(TaskBase* task, const CancellationToken& stop);

template <class T>
class FutureAwaiter;
template <class T>
class ForeignFutureAwaiter;
// A coroutine's wait on a task (T7): arms and withdraws it.
bool arm_task_waiter(TaskBase* task, CoroWaiter* waiter) noexcept;
bool withdraw_task_waiter(TaskBase* task) noexcept;
}  // namespace detail

template <class T>
class Future {
 public:
  Future() noexcept = default;
  Future(Future&& other) noexcept
      : task_(std::exchange(other.task_, nullptr)), retrieved_(other.retrieved_) {}
  Future& operator=(Future&& other) noexcept {
    Future(std::move(other)).swap(*this);
    return *this;
  }
  ~Future() {
    if (task_ != nullptr) task_->release_token_ref();
  }

  bool valid() const noexcept { return task_ != nullptr; }
  TaskId id() const noexcept { return task_ != nullptr ? task_->id_ : 0; }
  bool ready() const noexcept { return task_ != nullptr && task_->ready(); }

  // The waits throw TaskError(Errc::no_state) on a default future, and
  // nothing else: a task that a wait runs meanwhile (on a worker) keeps its
  // exception in its own future.
  void wait() const { detail::task_wait(checked()); }

  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
    return detail::task_wait_until(
        checked(), detail::saturating_add(std::chrono::steady_clock::now(),
                                          detail::saturating_duration(timeout)));
  }

  template <class Clock, class Duration>
  bool wait_until(std::chrono::time_point<Clock, Duration> deadline) const {
    detail::TaskBase* task = checked();
    if constexpr (std::is_same_v<Clock, std::chrono::steady_clock>) {
      return detail::task_wait_until(
          task, std::chrono::steady_clock::time_point(
                    detail::saturating_duration(deadline.time_since_epoch())));
    } else {
      // Another clock: wait in steady time and re-check against `deadline`.
      // Past deadlines return before the subtraction, which cannot then wrap.
      while (!task->ready()) {
        const auto now = Clock::now();
        if (deadline <= now) return false;
        detail::task_wait_until(task, detail::saturating_add(std::chrono::steady_clock::now(),
                                                             detail::saturating_duration(deadline - now)));
      }
      return true;
    }
  }

  // False if `stop` was cancelled first; true once the future is ready, even
  // when `stop` is cancelled too. Wakes promptly on either (no polling).
  bool wait(const CancellationToken& stop) const {
    return detail::task_wait_or_stop(checked(), stop);
  }

  // Waits, then hands the outcome over once: the value, or the task's
  // exception, OperationCancelled, or TaskError (timed_out, rejected).
  // TaskError(no_state) on a default future, and TaskError(already_retrieved)
  // on a second call, change nothing; nor does std::bad_alloc building the
  // exception to throw (the next get() tries again). Otherwise the outcome
  // is consumed whether get() returns or throws: if moving the value out
  // throws, that exception propagates and the value is lost (basic guarantee).
  T get() {
    detail::TaskSlot<T>* task = checked();
    if (retrieved_) throw TaskError(make_error_code(Errc::already_retrieved));
    detail::task_wait(task);
    // The outcome is marked taken only once nothing can fail before it is
    // handed out: an exception that cannot be built (std::bad_alloc) leaves
    // it for the next get() (§12).
    switch (task->status()) {
      case TaskStatus::completed:
        retrieved_ = true;
        if constexpr (std::is_void_v<T>) {
          return;
        } else {
          return std::move(task->value());
        }
      case TaskStatus::failed:
        retrieved_ = true;
        std::rethrow_exception(task->take_error());
      case TaskStatus::cancelled: {
        OperationCancelled cancelled;
        retrieved_ = true;
        throw cancelled;
      }
      default: {
        TaskError failure(error());
        retrieved_ = true;
        throw failure;
      }
    }
  }

  TaskStatus status() const noexcept {
    return task_ != nullptr ? task_->status() : TaskStatus::rejected;
  }
  TaskResult result() const noexcept {
    return task_ != nullptr ? result_of(task_->status()) : TaskResult::none;
  }

  // Errc::cancelled, timed_out or rejected for a task that ended so,
  // Errc::no_state for a default future; empty otherwise.
  std::error_code error() const noexcept {
    if (task_ == nullptr) return make_error_code(Errc::no_state);
    switch (task_->status()) {
      case TaskStatus::cancelled: return make_error_code(Errc::cancelled);
      case TaskStatus::timed_out: return make_error_code(Errc::timed_out);
      case TaskStatus::rejected: return make_error_code(Errc::rejected);
      default: return {};
    }
  }

  void swap(Future& other) noexcept {
    std::swap(task_, other.task_);
    std::swap(retrieved_, other.retrieved_);
  }

  // co_await future, inside a Task (R30): what get() gives, without
  // blocking. Non-owning: a cancellation ends the wait at once and leaves
  // the future unretrieved; the task goes on. One coroutine at a time may
  // await a given future.
  detail::FutureAwaiter<T> quell_awaiter(TaskPromiseBase& promise,
                                         const CancellationToken& token) & noexcept {
    return detail::FutureAwaiter<T>(*this, promise, token, false);
  }
  detail::FutureAwaiter<T> quell_awaiter(TaskPromiseBase& promise,
                                         const CancellationToken& token) && noexcept {
    return detail::FutureAwaiter<T>(*this, promise, token, false);
  }
  // In a foreign coroutine: resumed on the thread that completes the task;
  // cannot be cancelled.
  detail::ForeignFutureAwaiter<T> operator co_await() & noexcept {
    return detail::ForeignFutureAwaiter<T>(*this);
  }
  detail::ForeignFutureAwaiter<T> operator co_await() && noexcept {
    return detail::ForeignFutureAwaiter<T>(*this);
  }

 private:
  friend class ThreadPool;
  friend class detail::FutureAwaiter<T>;
  friend class detail::ForeignFutureAwaiter<T>;
  friend class TaskGroup;
  template <class>
  friend class TaskHandle;

  // Adopts one reference to `task`.
  explicit Future(detail::TaskSlot<T>* task) noexcept : task_(task) {}

  detail::TaskSlot<T>* checked() const {
    if (task_ == nullptr) throw TaskError(make_error_code(Errc::no_state));
    return task_;
  }

  // get()'s outcome as a Result, for a ready future; creates no exception.
  Result<T> take_result() noexcept {
    if (task_ == nullptr) return Result<T>(make_error_code(Errc::no_state));
    if (retrieved_) return Result<T>(make_error_code(Errc::already_retrieved));
    retrieved_ = true;
    switch (task_->status()) {
      case TaskStatus::completed:
        if constexpr (std::is_void_v<T>) {
          return Result<T>(std::in_place);
        } else {
          try {
            return Result<T>(std::in_place, std::move(task_->value()));
          } catch (...) {
            return Result<T>(std::current_exception());
          }
        }
      case TaskStatus::failed: return Result<T>(task_->take_error());
      default: return Result<T>(error());
    }
  }

  detail::TaskSlot<T>* task_ = nullptr;  // one reference, or null
  bool retrieved_ = false;
};

namespace detail {

// co_await of a Future (owning_: false) or a TaskHandle (true) in a Task.
// An owning await passes the awaiter's cancellation, with its reason, to
// the task and keeps waiting for it (R19, R31).
template <class T>
class FutureAwaiter final : private StoppableWait, private CoroWaiter {
 public:
  FutureAwaiter(Future<T>& future, TaskPromiseBase& promise, const CancellationToken& token,
                bool owning) noexcept
      : CoroWaiter{&fired}, future_(&future), promise_(&promise), token_(&token), owning_(owning) {}

  bool await_ready() noexcept {
    if (!future_->valid() || future_->retrieved_) return true;  // get() throws
    if (token_->cancelled()) {
      if (!owning_) {  // a checkpoint (R6): wins over a ready future
        checkpoint_ = true;
        return true;
      }
      // Owning (a handle): never returns while the task runs (R19), so the
      // cancellation goes on to the task, and the await to its end.
      future_->task_->request_cancel(static_cast<std::uint64_t>(token_->reason()));
    }
    return future_->ready();
  }
  bool await_suspend(std::coroutine_handle<> h) noexcept {
    return suspend(*promise_, h, *token_, [this]() noexcept {
      armed_ = true;
      return arm_task_waiter(future_->task_, this);
    });
  }
  T await_resume() {
    if (ended_cancelled()) throw OperationCancelled();
    return future_->get();
  }
  Result<T> result() noexcept {
    if (ended_cancelled()) return Result<T>(make_error_code(Errc::cancelled));
    return future_->take_result();
  }

 private:
  bool ended_cancelled() noexcept { return checkpoint_ || (armed_ && finish()); }
  bool withdraw() noexcept override {
    if (!owning_) return withdraw_task_waiter(future_->task_);
    future_->task_->request_cancel(static_cast<std::uint64_t>(token_->reason()));
    return false;  // owning: the task's end resumes us
  }
  static void fired(CoroWaiter* waiter) noexcept {
    static_cast<FutureAwaiter*>(waiter)->complete();
  }

  Future<T>* future_;
  TaskPromiseBase* promise_;
  const CancellationToken* token_;
  bool owning_;
  bool checkpoint_ = false;
  bool armed_ = false;
};

// co_await of a Future in a foreign coroutine: resumed inline by the thread
// that makes the task terminal (R30).
template <class T>
class ForeignFutureAwaiter final : private CoroWaiter {
 public:
  explicit ForeignFutureAwaiter(Future<T>& future) noexcept
      : CoroWaiter{&fired}, future_(&future) {}
  bool await_ready() const noexcept { return !future_->valid() || future_->ready(); }
  bool await_suspend(std::coroutine_handle<> h) noexcept {
    handle_ = h;
    return arm_task_waiter(future_->task_, this);
  }
  T await_resume() { return future_->get(); }

 private:
  static void fired(CoroWaiter* waiter) noexcept {
    static_cast<ForeignFutureAwaiter*>(waiter)->handle_.resume();
  }

  Future<T>* future_;
  std::coroutine_handle<> handle_;
};

}  // namespace detail

}  // namespace quell
