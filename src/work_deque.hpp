#pragma once

// A work-stealing deque of pointers: the owner pushes and pops at the bottom
// (LIFO), thieves steal at the top (FIFO).
//
// The algorithm is Chase and Lev's ("Dynamic Circular Work-Stealing Deque",
// SPAA 2005) with the memory orders of Lê, Pop, Cohen and Zappa Nardelli
// ("Correct and Efficient Work-Stealing for Weak Memory Models", PPoPP 2013).
// Where that paper puts a seq_cst fence between a store and a load (in pop
// and steal), we make both accesses seq_cst instead: the same store-load
// ordering by the single total order of seq_cst operations, at the same cost
// on x86 (an xchg instead of mov + mfence), and visible to ThreadSanitizer,
// which does not model fences.
//
// Invariants
//   D1  top_ only grows, and only by a successful CAS (a steal, or the
//       owner's pop of the last element): each index in [top_, bottom_) is
//       handed out at most once.
//   D2  Elements live in [top_, bottom_) of the current buffer; only the
//       owner writes slots and bottom_, and only the owner replaces buffer_.
//   D3  A buffer that was replaced is kept until the deque is destroyed: a
//       thief that loaded the old pointer may still read it (its CAS on top_
//       then decides whether what it read counts).
//
// Thread safety: push() and pop() are owner-only; steal() and empty_hint()
// are thread-safe.
//
// Ordering: everything the owner did before push(x) happens-before the
// successful steal() or pop() that returns x.
//
// Performance: push and pop are a few plain loads and stores plus one seq_cst
// store (pop) in the common case; the last element and every steal cost one
// CAS on top_. top_ and bottom_ sit on separate cache lines.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <vector>

#include "quell/detail/config.hpp"

namespace quell::detail {

template <class T>
class WorkDeque {
  static_assert(std::is_pointer_v<T>, "WorkDeque holds pointers");

 public:
  explicit WorkDeque(std::size_t capacity = 256) {
    std::size_t size = 1;
    while (size < capacity) size <<= 1;
    buffers_.push_back(std::make_unique<Buffer>(size));
    buffer_.store(buffers_.back().get(), std::memory_order_relaxed);
  }
  WorkDeque(const WorkDeque&) = delete;
  WorkDeque& operator=(const WorkDeque&) = delete;

  // Owner only. Throws std::bad_alloc, with the deque unchanged, if it must
  // grow and cannot.
  void push(T item) {
    if (!try_push(item)) throw std::bad_alloc();
  }

  // Owner only. False, with the deque unchanged, if it must grow and cannot:
  // the caller queues the item elsewhere (a task accepted must not be lost).
  bool try_push(T item) noexcept {
    const std::int64_t bottom = bottom_.load(std::memory_order_relaxed);
    // Acquire: pairs with the thieves' CAS on top_, so a slot they emptied is
    // not overwritten before they read it.
    const std::int64_t top = top_.load(std::memory_order_acquire);
    Buffer* buffer = buffer_.load(std::memory_order_relaxed);
    QUELL_INVARIANT(D1, top <= bottom);  // no pop runs now, and thieves never pass bottom_
    if (bottom - top >= static_cast<std::int64_t>(buffer->size)) {
      buffer = grow(buffer, top, bottom);
      if (buffer == nullptr) return false;
    }
    buffer->at(bottom).store(item, std::memory_order_relaxed);
    // Release: publishes the slot (and everything before push) to the
    // acquire (seq_cst) load of bottom_ in steal().
    bottom_.store(bottom + 1, std::memory_order_release);
    return true;
  }

  // Owner only. The most recently pushed item, or nullptr if empty.
  T pop() {
    const std::int64_t bottom = bottom_.load(std::memory_order_relaxed) - 1;
    Buffer* buffer = buffer_.load(std::memory_order_relaxed);
    // Seq_cst store then seq_cst load of top_: a thief either sees the
    // smaller bottom_, or we see its incremented top_ (the store-load order
    // the paper gets from a fence).
    bottom_.store(bottom, std::memory_order_seq_cst);
    std::int64_t top = top_.load(std::memory_order_seq_cst);
    if (top > bottom) {  // empty
      bottom_.store(bottom + 1, std::memory_order_relaxed);
      return nullptr;
    }
    T item = buffer->at(bottom).load(std::memory_order_relaxed);
    if (top < bottom) return item;  // more than one left: no thief can reach this one
    // The last element: race the thieves for it on top_.
    const bool won = top_.compare_exchange_strong(top, top + 1, std::memory_order_seq_cst,
                                                  std::memory_order_relaxed);
    bottom_.store(bottom + 1, std::memory_order_relaxed);
    return won ? item : nullptr;
  }

  // Any thread; may be stale by the time it returns. Read after a seq_cst
  // fence, it sees every push that preceded the pusher's own fence (the
  // parking lot's protocol relies on this).
  bool empty_hint() const noexcept {
    // Relaxed: a hint; the caller's fences order it.
    return bottom_.load(std::memory_order_relaxed) <= top_.load(std::memory_order_relaxed);
  }

  enum class Steal { empty, lost_race, taken };
  struct Stolen {
    Steal result;
    T item;
  };

  // Any thread. The oldest item; lost_race means another thread took the
  // top at the same moment (the deque may still have items).
  Stolen steal() {
    // Seq_cst loads: with the seq_cst store in pop(), one of the two sees
    // the other's update (see pop). Acquire, as part of seq_cst, pairs with
    // push()'s release of bottom_.
    std::int64_t top = top_.load(std::memory_order_seq_cst);
    const std::int64_t bottom = bottom_.load(std::memory_order_seq_cst);
    if (top >= bottom) return {Steal::empty, nullptr};
    // Acquire: pairs with the release in grow(), so the new buffer's slots
    // are visible. The slot may be overwritten by the owner after a wrap,
    // but then top_ moved and our CAS fails (D1, D3).
    Buffer* buffer = buffer_.load(std::memory_order_acquire);
    T item = buffer->at(top).load(std::memory_order_relaxed);
    if (!top_.compare_exchange_strong(top, top + 1, std::memory_order_seq_cst,
                                      std::memory_order_relaxed)) {
      return {Steal::lost_race, nullptr};
    }
    return {Steal::taken, item};
  }

 private:
  struct Buffer {
    explicit Buffer(std::size_t n) : size(n), mask(n - 1), slots(new std::atomic<T>[n]) {}
    std::atomic<T>& at(std::int64_t index) noexcept {
      return slots[static_cast<std::size_t>(index) & mask];
    }
    const std::size_t size;
    const std::size_t mask;
    std::unique_ptr<std::atomic<T>[]> slots;
  };

  // The new buffer, or null (nothing changed) if it cannot be allocated.
  Buffer* grow(Buffer* old, std::int64_t top, std::int64_t bottom) noexcept {
    Buffer* bigger = nullptr;
    try {
      buffers_.push_back(std::make_unique<Buffer>(old->size * 2));
      bigger = buffers_.back().get();
    } catch (const std::bad_alloc&) {
      return nullptr;
    }
    for (std::int64_t i = top; i < bottom; ++i) {
      bigger->at(i).store(old->at(i).load(std::memory_order_relaxed), std::memory_order_relaxed);
    }
    // Release: pairs with the acquire load in steal(): the copied slots are
    // visible through the new pointer.
    buffer_.store(bigger, std::memory_order_release);
    return bigger;
  }

  alignas(kCacheLine) std::atomic<std::int64_t> top_{0};     // written by thieves and the owner
  alignas(kCacheLine) std::atomic<std::int64_t> bottom_{0};  // written by the owner
  std::atomic<Buffer*> buffer_{nullptr};                     // written by the owner
  std::vector<std::unique_ptr<Buffer>> buffers_;             // owner only; every buffer ever used
};

}  // namespace quell::detail
