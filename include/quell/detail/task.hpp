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
//
// Ordering: the terminal exchange is a release; ready() and the waits load
// with acquire. So the result, the error and the callable's destruction
// happen-before any observer that sees the task terminal.

#include <chrono>
#include <cstdint>
#include <exception>
#include <new>
#include <type_traits>
#include <utility>

#include "quell/cancellation.hpp"
#include "quell/detail/task_block.hpp"
#include "quell/task_status.hpp"

namespace quell::detail {

class PoolCore;
class TaskBase;

// The hook every task's state runs first when its token fires: moves a
// queued task to dropping, destroys its callable and resolves it. Defined
// with the pool.
void task_on_cancel(CancelState* state) noexcept;

class TaskBase : public CancelState {
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

  TaskStatus status() const noexcept {
    // Acquire: pairs with the release exchange that stored a terminal value.
    const std::uint32_t value = status_.load(std::memory_order_acquire) & kValueMask;
    return value >= kDropping ? TaskStatus::queued : static_cast<TaskStatus>(value);
  }
  bool ready() const noexcept { return is_terminal(status_.load(std::memory_order_acquire)); }

  std::atomic<std::uint32_t> status_{kQueued};
  TaskPriority priority_ = TaskPriority::normal;
  bool timed_ = false;                            // has timer entries; set before publication
  bool delayed_ = false;                          // starts later, by the timer; ditto
  TaskId id_ = 0;
  TaskId family_ = 0;  // its root task's id (F1); set at submission
  PoolCore* pool_ = nullptr;                      // set at submission; never changes
  Clock::time_point deadline_ = Clock::time_point::max();
  std::exception_ptr error_;                      // written by the thread that ran the task
  CancelLink origin_;                             // to the submitter's token; owner: whoever resolves
  TaskBase* queue_next_ = nullptr;                // the injection queue's link, guarded by its lock

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

template <class F>
using TaskResultOf = std::decay_t<typename std::conditional_t<
    kTakesToken<F>, std::invoke_result<F&&, CancellationToken>, std::invoke_result<F&&>>::type>;

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
    std::uint32_t outcome = TaskBase::kCompleted;
    try {
      if constexpr (kTakesToken<F>) {
        self->invoke(StateAccess::token(self));
      } else {
        self->invoke();
      }
    } catch (const OperationCancelled&) {
      const bool deadline = self->reason() == static_cast<std::uint64_t>(CancelReason::deadline);
      outcome = deadline ? TaskBase::kTimedOut : TaskBase::kCancelled;
    } catch (...) {
      self->error_ = std::current_exception();
      outcome = TaskBase::kFailed;
    }
    self->fn_.~F();
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
  union {
    F fn_;
  };
};

}  // namespace quell::detail
