#pragma once

// The pool's shared injection queue: the tasks that threads other than its
// workers submit, and delayed tasks that came due. One FIFO list per
// priority, all under one ShortLock.
//
// Intrusive: a task waits through its own queue_next_ link, so a push
// allocates nothing and cannot fail. The lists and the count share one
// cache line, which is the one line every outside submission writes; an idle
// worker reads only the count (a relaxed hint) until it finds it non-zero.
//
// Why a lock and not a lock-free queue: the lock is held for a handful of
// instructions, its uncontended cost (a CAS and an exchange) equals a
// lock-free queue's CASes, and it is exact under ThreadSanitizer, which
// boost::lockfree::queue (the previous structure here) is not: its
// optimistic reads of recycled nodes are races by design.
//
// Invariants
//   Q1  Under the lock, for each priority: head == nullptr iff tail ==
//       nullptr, and the list from head through queue_next_ ends at tail.
//   Q2  size_ equals the number of listed tasks whenever the lock is free;
//       it is written only under the lock.
//   Q3  A listed task holds the queue's reference (T4) and is in one list
//       once; its queue_next_ is written only under the lock.
//
// Ordering: push() and pop() are ordered by the lock, so everything before
// push(task) happens-before the pop() that returns it. A worker about to
// sleep reads size_ after the parking lot's fence, and a pusher notifies
// after its unlock, so the count is seen or the worker woken (parking.hpp).
//
// Thread safety: thread-safe.

#include <atomic>
#include <cstddef>

#include "quell/detail/config.hpp"
#include "quell/detail/task.hpp"
#include "quell/task_options.hpp"
#include "short_lock.hpp"

namespace quell::detail {

class InjectionQueue {
 public:
  // At least one lower-priority task per this many higher ones, while
  // lower work waits (API.md §9, "priority").
  static constexpr unsigned kLowerEvery = 64;

  InjectionQueue() = default;
  InjectionQueue(const InjectionQueue&) = delete;
  InjectionQueue& operator=(const InjectionQueue&) = delete;

  void push(QueueNode* task) noexcept {
    List& list = lists_[static_cast<std::size_t>(task->priority_)];
    task->queue_next_ = nullptr;
    lock_.lock();
    if (list.tail != nullptr) {
      list.tail->queue_next_ = task;
    } else {
      list.head = task;
    }
    list.tail = task;
    // Relaxed: written under the lock (Q2); a reader outside it takes it as a
    // hint, and the lock or the parking lot's fences order what it guards.
    size_.store(size_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    lock_.unlock();
  }

  // The next task by priority (high, normal, low; see kLowerEvery), or null.
  // `since_lower` is the caller's count of higher-priority tasks taken since
  // its last lower one.
  QueueNode* pop(unsigned& since_lower) noexcept {
    if (empty_hint()) return nullptr;
    lock_.lock();
    QueueNode* task = nullptr;
    if (since_lower >= kLowerEvery) {
      // Lower work may be waiting behind a stream of higher: take one.
      if ((task = take(TaskPriority::low)) != nullptr ||
          (task = take(TaskPriority::normal)) != nullptr) {
        since_lower = 0;
      }
    }
    for (TaskPriority priority : {TaskPriority::high, TaskPriority::normal, TaskPriority::low}) {
      if (task != nullptr) break;
      if ((task = take(priority)) != nullptr) {
        since_lower = priority == TaskPriority::low ? 0 : since_lower + 1;
      }
    }
    lock_.unlock();
    return task;
  }

  // The oldest queued task of `family` (any priority), or null. A scan
  // under the lock: only a worker waiting for that family's work calls it,
  // once each time it looks before sleeping, and is woken only when a task
  // of its family is submitted.
  QueueNode* take_family(TaskId family) noexcept {
    if (empty_hint()) return nullptr;
    lock_.lock();
    QueueNode* found = nullptr;
    for (List& list : lists_) {
      QueueNode* before = nullptr;
      for (QueueNode* task = list.head; task != nullptr; before = task, task = task->queue_next_) {
        if (task->family_ != family) continue;
        (before != nullptr ? before->queue_next_ : list.head) = task->queue_next_;
        if (list.tail == task) list.tail = before;
        QUELL_INVARIANT(Q1, (list.head == nullptr) == (list.tail == nullptr));
        const std::size_t size = size_.load(std::memory_order_relaxed);
        QUELL_INVARIANT(Q2, size != 0);
        size_.store(size - 1, std::memory_order_relaxed);  // relaxed: as in push()
        found = task;
        break;
      }
      if (found != nullptr) break;
    }
    lock_.unlock();
    return found;
  }

  // Relaxed: a hint (Q2); see Ordering above for why a sleeper cannot miss a push.
  bool empty_hint() const noexcept { return size_.load(std::memory_order_relaxed) == 0; }

 private:
  struct List {
    QueueNode* head = nullptr;  // guarded by lock_
    QueueNode* tail = nullptr;  // guarded by lock_
  };

  // Lock held.
  QueueNode* take(TaskPriority priority) noexcept {
    List& list = lists_[static_cast<std::size_t>(priority)];
    QueueNode* task = list.head;
    if (task == nullptr) return nullptr;
    list.head = task->queue_next_;
    if (list.head == nullptr) list.tail = nullptr;
    QUELL_INVARIANT(Q1, (list.head == nullptr) == (list.tail == nullptr));
    const std::size_t size = size_.load(std::memory_order_relaxed);
    QUELL_INVARIANT(Q2, size != 0);
    size_.store(size - 1, std::memory_order_relaxed);  // relaxed: as in push()
    return task;
  }

  alignas(kCacheLine) ShortLock lock_;
  std::atomic<std::size_t> size_{0};
  List lists_[3];  // indexed by TaskPriority
};

}  // namespace quell::detail
