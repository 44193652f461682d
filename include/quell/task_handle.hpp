#pragma once

// TaskHandle<T>: a future that can also cancel its task.
//
// ThreadPool::handle() returns one. It owns a CancellationSource of the
// task's own state: cancel() requests cancellation with reason `requested`.
// A queued task is then dropped at once (its future becomes ready as
// cancelled and its callable is destroyed on the cancelling thread); a
// running task sees its token cancelled and decides for itself.
//
// cancel() returns true only for the call that made the request; after the
// task ended it changes nothing about the outcome. Dropping a handle neither
// cancels nor waits.
//
// Thread safety: thread-compatible, like Future.

#include <chrono>
#include <utility>

#include "quell/cancellation.hpp"
#include "quell/future.hpp"

namespace quell {

template <class T>
class TaskHandle {
 public:
  // No task: cancel() returns false, and the waits and get() throw
  // TaskError(Errc::no_state), as a default Future's.
  TaskHandle() noexcept = default;

  TaskId id() const noexcept { return future_.id(); }
  bool cancel() noexcept { return source_.request_cancel(CancelReason::requested); }
  bool cancelled() const noexcept { return source_.cancelled(); }
  CancellationToken token() const noexcept { return source_.token(); }

  // As the Future's, exceptions included.
  void wait() const { future_.wait(); }
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
    return future_.wait_for(timeout);
  }
  T get() { return future_.get(); }

  TaskStatus status() const noexcept { return future_.status(); }
  TaskResult result() const noexcept { return future_.result(); }
  Future<T>& future() noexcept { return future_; }

  // co_await handle, inside a Task (R31): as the future's, and owning: the
  // awaiter's cancellation cancels the task (with its reason), and the await
  // goes on until the task ends.
  detail::FutureAwaiter<T> quell_awaiter(TaskPromiseBase& promise,
                                         const CancellationToken& token) & noexcept {
    return detail::FutureAwaiter<T>(future_, promise, token, true);
  }
  // In a foreign coroutine: as the future's.
  detail::ForeignFutureAwaiter<T> operator co_await() & noexcept {
    return detail::ForeignFutureAwaiter<T>(future_);
  }

 private:
  friend class ThreadPool;

  TaskHandle(CancellationSource source, Future<T> future) noexcept
      : source_(std::move(source)), future_(std::move(future)) {}

  CancellationSource source_{detail::StateAccess::adopt_source(nullptr)};
  Future<T> future_;
};

}  // namespace quell
