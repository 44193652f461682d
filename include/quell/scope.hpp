#pragma once

// Scope: structured concurrency. A block that joins everything it spawned.
//
//   quell::Scope scope(pool);
//   scope.spawn([&](quell::CancellationToken token) { ... });
//   scope.wait();  // rethrows the first failure
//
// Every task spawned follows the scope's token: cancel() cancels running
// tasks' tokens and drops queued ones at once. The first task to fail
// cancels the scope (reason failure), so its siblings stop early, and wait()
// rethrows that failure; a task cancelled through the scope is not a failure.
// A child scope (Scope child(parent)) is cancelled with its parent; the
// parent waits for its own tasks only, the child joins its own. Tasks may
// spawn into their own scope (an accept loop spawning handlers) until it is
// closed.
//
// Waiting on a worker of the scope's pool runs the scope's queued tasks
// meanwhile, and never another request's task.
//
// Thread safety: thread-safe; spawn() may be called from any number of
// threads, including the scope's own tasks. The pool (and a child's parent)
// must outlive the scope.
//
// Ordering: everything a task did happens-before wait() returns.

#include <atomic>
#include <cstddef>
#include <exception>
#include <type_traits>
#include <utility>

#include "quell/cancellation.hpp"
#include "quell/detail/task_set.hpp"
#include "quell/task_options.hpp"
#include "quell/thread_pool.hpp"

namespace quell {

class Scope {
 public:
  // Both constructors throw std::bad_alloc (the scope's cancellation state).
  explicit Scope(ThreadPool& pool)
      : set_(detail::PoolAccess::core(pool), CancellationSource(), /*fail_fast=*/true) {}
  // A child on the parent's pool, cancelled when the parent is (same reason).
  explicit Scope(Scope& parent)
      : set_(parent.set_.pool(), CancellationSource::linked({parent.cancellation_token()}),
             /*fail_fast=*/true) {}

  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

  // Waits for every task; never throws. A failure wait() did not report is
  // dropped.
  ~Scope() { set_.wait(); }

  // Spawns f (f() or f(CancellationToken)) into the scope. False if the
  // scope is closed or cancelled, or the pool rejects the task. A task whose
  // options' token is already cancelled is accepted (true) and resolved
  // cancelled.
  // Strong guarantee: when it throws (std::bad_alloc, or copying or moving
  // f), nothing is spawned or counted and no copy of f is kept.
  template <class F>
  bool spawn(F&& f, const TaskOptions& options = {}) {
    // Acquire: pairs with close()'s release; a task that saw it closed
    // spawns nothing more.
    if (closed_.load(std::memory_order_acquire) || cancelled()) return false;
    using R = detail::TaskResultOf<std::decay_t<F>>;
    auto* task = new detail::TaskNode<std::decay_t<F>, R, true>(std::forward<F>(f), 1, 1);
    return set_.submit(task, options);
  }

  void cancel() noexcept { set_.source().request_cancel(CancelReason::requested); }
  bool cancelled() const noexcept { return set_.source().cancelled(); }
  // Carries reason failure when a failure cancelled the scope.
  CancellationToken cancellation_token() const noexcept { return set_.source().token(); }

  // No more spawns, from outside or from the scope's own tasks.
  void close() noexcept { closed_.store(true, std::memory_order_release); }  // see spawn()

  // Until every spawned task is terminal; then rethrows the first failure.
  // May be called again (after a failure, each call rethrows it); does not
  // close the scope. Throws nothing else.
  void wait() {
    set_.wait();
    if (std::exception_ptr failure = set_.failure()) std::rethrow_exception(failure);
  }

  // co_await scope.join(), inside a Task: as wait(), without blocking the
  // worker (R33). Owning: the joiner's cancellation cancels the scope with
  // its reason, and the join goes on until every task is terminal; it then
  // rethrows the first failure, else throws OperationCancelled if the joiner
  // was cancelled. From a task of this scope: std::logic_error.
  detail::JoinAwaitable join() noexcept { return detail::JoinAwaitable(set_, /*rethrow=*/true); }

  // Tasks not yet terminal.
  std::size_t size() const noexcept { return set_.pending(); }

 private:
  detail::TaskSet set_;
  std::atomic<bool> closed_{false};
};

}  // namespace quell
