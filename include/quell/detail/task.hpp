#pragma once

// A task: one heap block holding the callable, the result slot, the status,
// and the task's own cancellation state with its link to the submitter's
// token. Futures, handles, tokens and the queue all point at this block; the
// state's reference count (CancelState::word_) is the block's.
//
// Status word (status_), the value in the low byte:
//
//   queued ──CAS by a worker──> running ──exchange by that worker──> terminal
//     │
//     └──CAS by on_cancel (the token fired)──> dropping ──exchange──> cancelled | timed_out
//
//   rejected is stored before the task is published.
//
//   A tracked task (of a group or scope) has two links, to its options'
//   token and to its set's, attached one after the other at submission; the
//   first may fire before the second is attached. So it is submitted in
//   linking, which the hook only marks:
//
//   linking ──CAS by the submitter, both links attached──> queued
//     │
//     └──CAS by on_cancel──> link_cancelled ──store by the submitter──> dropping
//
// Invariants
//   T1  Exactly one thread moves a task out of queued, by one CAS: a worker
//       (to running) or the cancellation hook (to dropping). So a task is run
//       or dropped, never both, and its callable is destroyed exactly once,
//       by that thread. A task being linked is resolved by its submitter
//       only, once every link is attached, so no link outlives the task.
//   T2  The terminal value is stored once, by an exchange, after the result
//       (or error) is written and the callable destroyed. It never changes.
//   T3  Bit 8 says a thread sleeps on the futex waiting for the terminal
//       value; the exchange returns it, and the completer wakes the futex.
//   T4  The queue holds one reference from submission until a worker pops
//       the task (to run it, or to discard a dropped one).
//   T5  An accepted task is counted once as accepted (by the thread that
//       accepted it) and, after its terminal exchange, once as retired (by
//       the thread that resolved it); the pool is idle when the sums match.
//   F1  A task of a set (group, scope, periodic task) has the set's
//       family_: the family of the task that created the set, or a new one
//       for a set created outside the pool's tasks. Any other task submitted
//       from inside a running task has that task's family_; from outside,
//       its own id. A wait on a worker runs only the awaited task and queued
//       tasks of the awaited family: the same request's work, never
//       another's (TBB calls this isolation).
//   T6  A task of a group or scope (a tracked task) counts once in its set's
//       pending tasks, from spawn until the finished hook, which runs after
//       the terminal exchange and is the last access to the set.
//   T7  Bit 9 says a coroutine waits (coro_waiter_, written before the bit
//       is set, with release). Exactly one thread fires it: the terminal
//       exchange that returns the bit, unless the waiter cleared the bit
//       first by CAS on a word that was not terminal (its await was
//       cancelled): then the completer never reads coro_waiter_.
//
// Ordering: the terminal exchange is a release; ready() and the waits load
// with acquire. So the result, the error and the callable's destruction
// happen-before any observer that sees the task terminal.

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <new>
#include <type_traits>
#include <utility>

#include "quell/cancellation.hpp"
#include "quell/detail/task_block.hpp"
#include "quell/task_status.hpp"

namespace quell {
template <class T>
class Task;
}

namespace quell::detail {

class PoolCore;
class TaskBase;

// What the pool's queues hold: a task to start, or a coroutine strand to
// resume (resumption_). The links and keys the queues read are here.
struct QueueNode {
  QueueNode* queue_next_ = nullptr;  // the injection queue's link, guarded by its lock
  TaskId family_ = 0;                // its root task's id (F1); set at submission
  TaskPriority priority_ = TaskPriority::normal;
  bool resumption_ = false;          // a Strand, not a TaskBase; never changes
};

// A chain of coroutines of which one at a time runs or waits: a root's, or a
// sync_wait's. Its node carries the pending resumption (at most one, R12):
// whoever resumes a coroutine of the strand sets resume_ and queues the
// strand on the coroutine's home. Defined in detail/coro_task.hpp's terms.
struct Strand : QueueNode {
  Strand() noexcept { resumption_ = true; }
  std::coroutine_handle<> resume_;              // written by the poster, before the push
  TaskBase* task_ = nullptr;                    // the root's pool task; null on a sync_wait loop
  const CancellationToken* token_ = nullptr;    // the resumed coroutine's current token
  void (*done_)(Strand* strand) noexcept = nullptr;  // the root coroutine ended (its final suspend)
  // A foreign coroutine moved in by schedule(): its home counted it in
  // (Executor::enter) and counts it out once this resumption ran.
  bool visitor_ = false;
  // Counted in stats().suspended. Parking and unparking are ordered by the
  // suspension's hand-over (park, publish, resume, unpark), so a plain flag
  // makes both idempotent: a root parked twice (a stoppable awaiter that
  // also posts through post_resume) counts once.
  bool parked_ = false;
  // A pool root's link to its pool's shutdown state, attached when it first
  // parks (R40); detached when the root ends.
  CancelLink shutdown_link_;
};

// The hook every task's state runs first when its token fires: moves a
// queued task to dropping, destroys its callable and resolves it. Defined
// with the pool.
void task_on_cancel(CancelState* state) noexcept;

// A coroutine waiting for a task to end (co_await future): fired once, by
// the thread that makes the task terminal, unless the waiter took itself
// back first (TaskBase::kCoroWaiting).
struct CoroWaiter {
  void (*fire)(CoroWaiter* waiter) noexcept;
};

class TaskBase : public CancelState, public QueueNode {
 public:
  using Clock = std::chrono::steady_clock;

  static constexpr std::uint32_t kQueued = 0;
  static constexpr std::uint32_t kRunning = 1;
  static constexpr std::uint32_t kCompleted = 2;
  static constexpr std::uint32_t kFailed = 3;
  static constexpr std::uint32_t kCancelled = 4;
  static constexpr std::uint32_t kTimedOut = 5;
  static constexpr std::uint32_t kRejected = 6;
  static constexpr std::uint32_t kDropping = 7;  // internal: resolves to cancelled / timed_out
  static constexpr std::uint32_t kLinking = 8;   // internal: a tracked task's links being attached
  static constexpr std::uint32_t kLinkCancelled = 9;  // internal: cancelled while linking
  static constexpr std::uint32_t kValueMask = 0xFF;
  static constexpr std::uint32_t kThreadWaiting = 1u << 8;
  // coro_waiter_ is set and waits for the terminal exchange (T7).
  static constexpr std::uint32_t kCoroWaiting = 1u << 9;
  // run() returned with the task still running: a coroutine root parked at a
  // co_await, which finishes the task itself when it ends.
  static constexpr std::uint32_t kStillRunning = kRunning;

  static constexpr bool is_terminal(std::uint32_t word) noexcept {
    const std::uint32_t value = word & kValueMask;
    return value >= kCompleted && value <= kRejected;
  }

  struct Ops : StateHooks {
    std::uint32_t (*run)(TaskBase* task) noexcept;  // runs and destroys the callable; the outcome
    void (*drop)(TaskBase* task) noexcept;           // destroys the callable unrun
    // After the terminal exchange, for a tracked task (T6); null otherwise.
    void (*finished)(TaskBase* task, std::uint32_t outcome) noexcept;
  };

  const Ops* ops() const noexcept { return static_cast<const Ops*>(hooks()); }

  // Inside a catch handler: the outcome of the exception in flight (a
  // callable's, or a coroutine root's that escaped before its first await), which is
  // kept in error_ unless it is OperationCancelled (cancelled, or timed_out
  // when the task's reason is its deadline).
  std::uint32_t root_outcome_of_exception() noexcept {
    try {
      throw;
    } catch (const OperationCancelled&) {
      return reason() == static_cast<std::uint64_t>(CancelReason::deadline) ? kTimedOut : kCancelled;
    } catch (...) {
      error_ = std::current_exception();
      return kFailed;
    }
  }

  // A failed task's exception for its future. Moved out when the future is
  // its only reader, so that the exception's last owner is the thread that
  // rethrows it, not whichever thread drops the task's last reference
  // (ThreadSanitizer cannot see the exception's own reference count in
  // libstdc++). Copied when a group or scope may read it too, from another
  // thread, at the same time (TaskSet::failure()).
  std::exception_ptr take_error() noexcept { return set_ != nullptr ? error_ : std::move(error_); }

  TaskStatus status() const noexcept {
    // Acquire: pairs with the release exchange that stored a terminal value.
    const std::uint32_t value = status_.load(std::memory_order_acquire) & kValueMask;
    return value >= kDropping ? TaskStatus::queued : static_cast<TaskStatus>(value);
  }
  bool ready() const noexcept { return is_terminal(status_.load(std::memory_order_acquire)); }

  std::atomic<std::uint32_t> status_{kQueued};
  bool timed_ = false;                            // has timer entries; set before publication
  bool delayed_ = false;                          // starts later, by the timer; ditto
  // No future, handle or set sees its outcome (post(), a periodic tick): a
  // failure goes to the pool's on_unobserved_failure. Set before publication.
  bool unobserved_ = false;
  TaskId id_ = 0;
  PoolCore* pool_ = nullptr;                      // set at submission; never changes
  Clock::time_point deadline_ = Clock::time_point::max();
  std::exception_ptr error_;                      // written by the thread that ran the task
  CancelLink origin_;                             // to the submitter's token; owner: whoever resolves
  const void* set_ = nullptr;                     // the group or scope tracking it; set before publication
  CoroWaiter* coro_waiter_ = nullptr;             // T7; written before kCoroWaiting is set
  // Statistics (ThreadPoolStats). A sampled task's enqueue time, then its
  // start time, in steady_clock nanoseconds; 0: not sampled. Written before
  // the task is published, then by the worker that started it.
  std::int64_t sampled_at_ = 0;
  // When its token was cancelled while it ran (0: it was not), for
  // cancel_reaction. Relaxed: a statistic, read once when the task ends.
  std::atomic<std::int64_t> cancelled_at_{0};

 protected:
  // `refs` references (queue, future, handle) and `sources` sources (the
  // pool's own, and a handle's) to begin with.
  TaskBase(const Ops* ops, std::uint32_t refs, std::uint32_t sources) noexcept
      : CancelState(ops, refs * kRef + sources * kSource) {}
  ~TaskBase() = default;
};

// The result slot, constructed when the task completes.
template <class R>
class TaskSlot : public TaskBase {
 public:
  R& value() noexcept { return value_; }

 protected:
  // User-provided, leaving value_ unborn: an inherited constructor would
  // default-initialise the union, which R's non-trivial constructor deletes.
  TaskSlot(const Ops* ops, std::uint32_t refs, std::uint32_t sources) noexcept
      : TaskBase(ops, refs, sources) {}
  ~TaskSlot() {}  // the node's destroy hook ends value_'s life if it began

  union {
    R value_;
  };
};

template <>
class TaskSlot<void> : public TaskBase {
 protected:
  using TaskBase::TaskBase;
};

template <class F>
inline constexpr bool kTakesToken = std::is_invocable_v<F&&, CancellationToken>;

template <class T>
inline constexpr bool kIsTask = false;
template <class T>
inline constexpr bool kIsTask<Task<T>> = true;

// What calling f for its task gives. A Task itself counts as a callable
// returning itself, so that everything taking a callable takes a Task.
template <class F, bool = kIsTask<F>>
struct CallResult {
  using type = std::decay_t<typename std::conditional_t<
      kTakesToken<F>, std::invoke_result<F&&, CancellationToken>, std::invoke_result<F&&>>::type>;
};
template <class F>
struct CallResult<F, true> {
  using type = F;
};
template <class F>
using CallResultOf = typename CallResult<F>::type;

// A callable that returns a Task<T> runs that task to its end (R28): the
// task's value is the result, and the callable lives until the task ends.
template <class R>
struct TaskValue {
  using type = R;
  static constexpr bool coroutine = false;
};
template <class T>
struct TaskValue<Task<T>> {
  using type = T;
  static constexpr bool coroutine = true;
};

template <class F>
using TaskResultOf = typename TaskValue<CallResultOf<F>>::type;
template <class F>
inline constexpr bool kReturnsTask = TaskValue<CallResultOf<F>>::coroutine;

// A coroutine root's state inside its task node (detail/coro_task.hpp).
template <class R>
class CoroRoot;
struct NoCoroRoot {};

// What a tracked task adds: a second origin, an owner (a group or scope,
// detail/task_set.hpp) whose token also cancels the task and who is told
// when it ends. The link is attached at submission, detached when it ends.
struct ExtraOrigin {
  void* owner = nullptr;
  void (*ended)(void* owner, TaskBase* task, std::uint32_t outcome) noexcept = nullptr;
  CancelLink link;
};
struct NoExtraOrigin {};

// A callable whose node lives in a block its owner keeps (a PeriodicTask's
// ticks): the node is placed there, and its last reference hands the block
// back through F::release_block instead of freeing it.
template <class F>
concept OwnsItsBlock = requires(void* block) {
  { F::release_block(block) } noexcept;
};

template <class F, class R, bool kTracked = false>
class TaskNode final : public TaskSlot<R> {
 public:
  template <class G>
  TaskNode(G&& fn, std::uint32_t refs, std::uint32_t sources)
      : TaskSlot<R>(&kOps, refs, sources) {
    new (&fn_) F(std::forward<G>(fn));
  }

  // Tracked tasks only.
  ExtraOrigin& extra_origin() noexcept { return tracked_; }

  // Blocks are recycled per thread (detail/task_block.hpp); an over-aligned
  // callable's block comes from the heap.
  static void* operator new(std::size_t size) { return task_block_allocate(size); }
  static void operator delete(void* block, std::size_t size) noexcept {
    task_block_free(block, size);
  }
  static void* operator new(std::size_t size, std::align_val_t align) {
    return ::operator new(size, align);
  }
  static void operator delete(void* block, std::size_t size, std::align_val_t align) noexcept {
    static_cast<void>(size);  // clang declares the sized forms only with -fsized-deallocation
    ::operator delete(block, align);
  }
  // Into a block the callable's owner keeps (OwnsItsBlock).
  static void* operator new(std::size_t, void* block) noexcept { return block; }
  static void operator delete(void*, void*) noexcept {}

 private:
  ~TaskNode() {}

  static std::uint32_t run(TaskBase* base) noexcept {
    auto* self = static_cast<TaskNode*>(base);
    if constexpr (kReturnsTask<F>) {
      return self->start_coroutine();
    } else {
      return self->run_callable();
    }
  }

  std::uint32_t run_callable() noexcept {
    std::uint32_t outcome = TaskBase::kCompleted;
    try {
      if constexpr (kTakesToken<F>) {
        invoke(StateAccess::token(this));
      } else {
        invoke();
      }
    } catch (...) {
      outcome = this->root_outcome_of_exception();
    }
    fn_.~F();
    return outcome;
  }

  template <class... Token>
  void invoke(Token&&... token) {
    if constexpr (std::is_void_v<R>) {
      std::move(fn_)(std::forward<Token>(token)...);
    } else {
      new (&this->value_) R(std::move(fn_)(std::forward<Token>(token)...));
    }
  }

  // Calls f for its task and starts that as this task's root coroutine:
  // the outcome if it ended here, else kStillRunning (it finishes the task
  // when it ends, and destroys f then).
  std::uint32_t start_coroutine() noexcept {
    Task<R> task;
    try {
      if constexpr (kIsTask<F>) {
        task = std::move(fn_);
      } else if constexpr (kTakesToken<F>) {
        task = std::move(fn_)(StateAccess::token(this));
      } else {
        task = std::move(fn_)();
      }
    } catch (...) {
      fn_.~F();
      return this->root_outcome_of_exception();
    }
    return root_.start(this, std::move(task), [](TaskBase* base) noexcept {
      static_cast<TaskNode*>(base)->fn_.~F();
    });
  }

  static void drop(TaskBase* base) noexcept { static_cast<TaskNode*>(base)->fn_.~F(); }

  static void destroy(CancelState* state) noexcept {
    auto* self = static_cast<TaskNode*>(static_cast<TaskBase*>(state));
    if constexpr (!std::is_void_v<R>) {
      // Relaxed: the last reference's acq_rel decrement ordered everything.
      if ((self->status_.load(std::memory_order_relaxed) & TaskBase::kValueMask) ==
          TaskBase::kCompleted) {
        self->value_.~R();
      }
    }
    if constexpr (OwnsItsBlock<F>) {
      self->~TaskNode();
      F::release_block(self);
    } else {
      delete self;
    }
  }

  static void finished(TaskBase* base, std::uint32_t outcome) noexcept {
    if constexpr (kTracked) {
      auto* self = static_cast<TaskNode*>(base);
      // Off the owner's token before the owner may go (T6).
      self->tracked_.link.detach();
      self->tracked_.ended(self->tracked_.owner, base, outcome);
    }
  }

  static constexpr TaskBase::Ops kOps{
      {&task_on_cancel, &destroy}, &run, &drop, kTracked ? &finished : nullptr};

  [[no_unique_address]] std::conditional_t<kTracked, ExtraOrigin, NoExtraOrigin> tracked_;
  [[no_unique_address]] std::conditional_t<kReturnsTask<F>, CoroRoot<R>, NoCoroRoot> root_;
  union {
    F fn_;
  };
};

}  // namespace quell::detail
