#pragma once

// The shared state behind CancellationSource / CancellationToken /
// CancellationCallback. docs/cancellation.md walks through the protocol with
// a diagram; this comment is the reference.
//
// Layout
//   One heap block per state: a CancelState, followed, for a linked state, by
//   its CancelLink registrations (one per parent), so a state is one
//   allocation. A state can also live inside a larger object (a task): it
//   then has hooks, which react to the request first and free the object
//   when the last reference goes.
//
// The word (`word_`, 64 bits) holds everything the hot paths touch:
//   bits  0..2   reason: 0 while not cancelled, else a CancelReason value
//   bit   3      kLocked: the callback list lock
//   bit   4      kLockWaiters: a thread sleeps in word_.wait() for the lock
//   bits  5..31  live CancellationSources (kSource units)
//   bits 32..63  references: sources + tokens + registered callbacks + links
//                from children + a running request_cancel (kRef units)
//
// Invariants
//   I1  The reason goes from 0 to non-zero once, by the CAS that also takes
//       the lock in request_cancel(); it never changes again.
//   I2  head_, running_, requester_ and done_waiter_ are read and written only
//       with kLocked held. link_count_ and the links never change after
//       create_linked() returns.
//   I3  A node is in the list (prev_next_ != nullptr) iff it was registered
//       and neither deregistered nor taken by request_cancel(). The list is
//       only ever non-empty while the reason is 0 or request_cancel() is
//       draining it.
//   I4  running_ is the node whose callback request_cancel() is invoking, or
//       null; requester_ identifies the thread invoking it. A node taken from
//       the list is never put back, so once running_ moves off a node it
//       never returns to it.
//   I5  Whoever waits for the lock, or for a running callback, holds a
//       reference; whoever notifies holds one until the notify returns (a
//       waiter can leave without being woken). So the state outlives every
//       wait and every notify.
//   I6  The state is destroyed by whoever drops the last reference.
//   I7  A linked state is destroyed through a per-thread list: its links
//       drop their parents' references, and a parent whose last that was is
//       queued there (through next_dead_, which requester_ no longer needs)
//       rather than destroyed in a nested call. The outermost destroy()
//       on the thread empties the list, so a chain of any depth is
//       destroyed in constant stack (§12).
//
// Ordering
//   * request_cancel()'s CAS is a release; cancelled() and try_register()
//     load with acquire. So everything sequenced before request_cancel()
//     happens-before every callback it runs (they run on its thread, after
//     the CAS) and every cancelled() that returns true.
//   * The lock is an acquire CAS and a release CAS (lock() / unlock()).
//   * A deregistration that waits for a running callback loads done_epoch_
//     with acquire; request_cancel() bumps it with release after the
//     callback returned: the callback happens-before the destructor returns.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <utility>

namespace quell {
class CancellationToken;
}

namespace quell::detail {

// An intrusive registration: lives inside a CancellationCallback (or a Link),
// so registering allocates nothing.
class CallbackNode {
 public:
  using InvokeFn = void (*)(CallbackNode*) noexcept;
  explicit CallbackNode(InvokeFn invoke) noexcept : invoke_(invoke) {}
  CallbackNode(const CallbackNode&) = delete;
  CallbackNode& operator=(const CallbackNode&) = delete;

 private:
  friend class CancelState;
  CallbackNode* next_ = nullptr;        // guarded by the state's lock
  CallbackNode** prev_next_ = nullptr;  // guarded by the state's lock; null when not listed
  InvokeFn invoke_;
};

enum class Registration { registered, cancelled, never };

class CancelState;
class CancelLink;

// What an embedding object adds to its state: a reaction that runs first in
// the request_cancel() that cancels the state (outside the lock, before the
// callbacks), and how to free the object when the last reference goes.
struct StateHooks {
  void (*on_cancel)(CancelState* state) noexcept;
  void (*destroy)(CancelState* state) noexcept;
};

class CancelState {
 public:
  static constexpr std::uint64_t kReasonMask = 0x7;
  static constexpr std::uint64_t kLocked = 1u << 3;
  static constexpr std::uint64_t kLockWaiters = 1u << 4;
  static constexpr std::uint64_t kSource = 1u << 5;
  static constexpr std::uint64_t kSourceMask = 0xFFFF'FFFFu & ~(kSource - 1);
  static constexpr std::uint64_t kRef = std::uint64_t{1} << 32;

  // Counts never wrap (§12). Copying a source, linked() and a submission
  // with a token check first and throw std::length_error, changing nothing,
  // once the state has kMaxSources sources or kMaxRefs references. Copying a
  // token, token() and registering a callback may not throw (P2300): they
  // terminate instead, and only past kRefCapacity, the room the word keeps
  // above kMaxRefs for them (2^31 more tokens: 16 GiB of them). The margins
  // above both limits also absorb threads that pass a check together.
  static constexpr std::uint64_t kMaxSources = std::uint64_t{1} << 24;
  static constexpr std::uint64_t kMaxRefs = std::uint64_t{1} << 31;
  static constexpr std::uint64_t kRefCapacity = (std::uint64_t{1} << 32) - (1u << 16);

  struct NeverTag {};
  // The state of never_cancelled (below): no source, no reference counted.
  constexpr explicit CancelState(NeverTag) noexcept : word_(0), link_count_(0) {}

  // A fresh state with one source (the caller's): refs = 1, sources = 1.
  static CancelState* create() {
    return new (::operator new(sizeof(CancelState))) CancelState(0);
  }
  // A state cancelled when any parent is. Parents that can never cancel are
  // skipped; one that already is cancelled makes a plain state cancelled with
  // its reason. Returns a state owned by one source, like create().
  static CancelState* create_linked(const CancellationToken* parents, std::size_t count);

  // A state embedded in another object, with `initial` as its word
  // (references and sources the embedder starts with).
  CancelState(const StateHooks* hooks, std::uint64_t initial) noexcept
      : word_(initial), hooks_(hooks), link_count_(0) {}

  CancelState(const CancelState&) = delete;
  CancelState& operator=(const CancelState&) = delete;
  ~CancelState() = default;

  const StateHooks* hooks() const noexcept { return hooks_; }

  // Acquire: pairs with request_cancel()'s release CAS (see Ordering).
  std::uint64_t reason() const noexcept { return word_.load(std::memory_order_acquire) & kReasonMask; }
  bool cancelled() const noexcept { return reason() != 0; }
  bool can_cancel() const noexcept;

  // Relaxed: a new reference is made from an existing one, which keeps the
  // state alive; it publishes nothing.
  void add_token_ref() noexcept {
    if (word_.fetch_add(kRef, std::memory_order_relaxed) >= kRefCapacity * kRef) [[unlikely]] {
      references_exhausted();
    }
  }
  // Throws std::length_error, with no effect, at kMaxSources or kMaxRefs.
  void add_source_ref() {
    check_room(true);
    // Relaxed: as add_token_ref().
    word_.fetch_add(kRef + kSource, std::memory_order_relaxed);
  }
  // Throws std::length_error if the state is at kMaxRefs references (or, for
  // a new `source`, at kMaxSources sources). A check, not a reservation: see
  // the limits above.
  void check_room(bool source = false) const {
    // Relaxed: a snapshot; the margins cover what changes after it.
    const std::uint64_t word = word_.load(std::memory_order_relaxed);
    if ((word >> 32) >= kMaxRefs || (source && (word & kSourceMask) / kSource >= kMaxSources)) {
      throw_length_error();
    }
  }
  void release_token_ref() noexcept { release(kRef); }
  void release_source_ref() noexcept { release(kRef + kSource); }

  // Sets the reason (non-zero) and runs every registered callback inline.
  // True only for the call that set the reason. The caller holds a reference.
  bool request_cancel(std::uint64_t reason) noexcept {
    std::uint64_t word = word_.load(std::memory_order_relaxed);
    for (;;) {
      if ((word & kReasonMask) != 0) return false;
      if ((word & kLocked) != 0) {
        word = wait_unlocked(word);
        continue;
      }
      // Release: publishes what preceded the request to every acquire load
      // that sees the reason. Acquire: we take the lock.
      if (word_.compare_exchange_weak(word, word | reason | kLocked, std::memory_order_acq_rel,
                                      std::memory_order_relaxed)) {
        break;
      }
    }
    if (head_ == nullptr) {
      // Nothing can join the list now that the reason is set (try_register()
      // then has its caller run the callback inline), so only the hook is
      // left to run, and the caller's reference keeps the state alive for
      // it: no reference of our own, no second trip through the lock.
      unlock(0);
      if (hooks_ != nullptr) hooks_->on_cancel(this);
      return true;
    }
    run_callbacks();
    return true;
  }

  // Links `node` into the list and takes a reference for it, unless the state
  // is cancelled (the caller runs the callback inline) or can never be.
  Registration try_register(CallbackNode* node) noexcept {
    // Acquire: if we see the reason, the caller's inline callback must see
    // what preceded the request, as a listed callback would.
    std::uint64_t word = word_.load(std::memory_order_acquire);
    for (;;) {
      if ((word & kReasonMask) != 0) return Registration::cancelled;
      if ((word & kSourceMask) == 0 && link_count_ == 0) return Registration::never;
      if ((word & kLocked) != 0) {
        word = wait_unlocked(word);
        continue;
      }
      // Acquire: takes the lock. The failure order is acquire for the same
      // reason as the first load.
      if (word >= kRefCapacity * kRef) [[unlikely]] references_exhausted();
      if (word_.compare_exchange_weak(word, (word | kLocked) + kRef, std::memory_order_acquire,
                                      std::memory_order_acquire)) {
        break;
      }
    }
    node->next_ = head_;
    if (head_ != nullptr) head_->prev_next_ = &node->next_;
    node->prev_next_ = &head_;
    head_ = node;
    unlock(0);
    return Registration::registered;
  }

  // Unlinks `node` and drops its reference. If request_cancel() already took
  // it and its callback is running on another thread, waits until it returns
  // (unless `wait` is false: the caller knows the callback will not touch
  // anything of the node's owner again); if it runs on this thread (we are
  // inside it), returns at once.
  void deregister(CallbackNode* node, bool wait = true) noexcept {
    lock();
    if (node->prev_next_ == nullptr) {
      deregister_taken(node, wait);
      return;
    }
    *node->prev_next_ = node->next_;
    if (node->next_ != nullptr) node->next_->prev_next_ = node->prev_next_;
    if (unlock(kRef)) destroy();
  }

  // Takes a reference unless the count already reached zero (the state is
  // being destroyed). Used by links, which point at a child they do not own.
  bool try_add_ref() noexcept {
    std::uint64_t word = word_.load(std::memory_order_relaxed);
    do {
      if (word < kRef) return false;
      // Relaxed: as add_token_ref(); the destroying thread's acq_rel
      // decrement to zero is what we must not race with, and the CAS fails
      // if it happened.
    } while (!word_.compare_exchange_weak(word, word + kRef, std::memory_order_relaxed));
    return true;
  }

  // Drops `delta` (references, maybe with a source); the last reference
  // destroys. Acq_rel: the release orders this owner's uses before the
  // destruction; the acquire on the last one orders the destruction after
  // everyone's.
  void release(std::uint64_t delta) noexcept {
    if ((word_.fetch_sub(delta, std::memory_order_acq_rel) >> 32) == 1) destroy();
  }

 private:
  friend class CancelLink;

  explicit CancelState(std::uint32_t link_count) noexcept : link_count_(link_count) {}

  CancelLink* links() noexcept;
  const CancelLink* links() const noexcept;

  void lock() noexcept {
    std::uint64_t word = word_.load(std::memory_order_relaxed);
    for (;;) {
      if ((word & kLocked) != 0) {
        word = wait_unlocked(word);
        continue;
      }
      // Acquire: pairs with unlock()'s release; the list is ours.
      if (word_.compare_exchange_weak(word, word | kLocked, std::memory_order_acquire,
                                      std::memory_order_relaxed)) {
        return;
      }
    }
  }

  // Releases the lock, dropping `delta` as well; true if that dropped the
  // last reference (the caller destroys).
  bool unlock(std::uint64_t delta) noexcept {
    // Release: pairs with the acquire of the next lock() (list writes). When
    // this also drops references, acq_rel: if it is the last, everyone's
    // accesses must happen-before the caller's destroy().
    const auto order = delta != 0 ? std::memory_order_acq_rel : std::memory_order_release;
    std::uint64_t word = word_.load(std::memory_order_relaxed);
    for (;;) {
      if ((word & kLockWaiters) != 0) {
        // A sleeper may take the lock and free the state as soon as the lock
        // is free, even before it is woken: keep our reference until the
        // notify is done, then drop it (I5).
        word_.fetch_and(~(kLocked | kLockWaiters), std::memory_order_release);
        word_.notify_all();
        return delta != 0 && (word_.fetch_sub(delta, std::memory_order_acq_rel) >> 32) == 1;
      }
      if (word_.compare_exchange_weak(word, word - kLocked - delta, order,
                                      std::memory_order_relaxed)) {
        return ((word - delta) >> 32) == 0;
      }
    }
  }

  std::uint64_t wait_unlocked(std::uint64_t word) noexcept;
  void run_callbacks() noexcept;
  void deregister_taken(CallbackNode* node, bool wait) noexcept;
  void destroy() noexcept;
  [[noreturn]] static void references_exhausted() noexcept;  // past kRefCapacity: aborts
  [[noreturn]] static void throw_length_error();
  void destroy_links() noexcept;  // a linked state's, from destroy()'s loop (I7)

  std::atomic<std::uint64_t> word_{kRef + kSource};
  CallbackNode* head_ = nullptr;                   // guarded by kLocked
  CallbackNode* running_ = nullptr;                // guarded by kLocked
  union {
    const void* requester_ = nullptr;  // guarded by kLocked; set when callbacks run
    CancelState* next_dead_;           // I7: the destroy list's link, once unreferenced
  };
  const StateHooks* hooks_ = nullptr;              // immutable; null for a plain state
  std::atomic<std::uint32_t> done_epoch_{0};       // bumped when a waited-for callback returns
  bool done_waiter_ = false;                       // guarded by kLocked
  const std::uint32_t link_count_;                 // immutable
};

// Makes a parent state's cancellation cancel a child state, with the
// parent's reason. It lives in the child's storage and points at the child
// without owning it: when the parent fires, it takes a reference only if the
// child is still alive (try_add_ref), because the child's owner detaches the
// link, which waits for a firing link, before the child's storage goes.
//
// Thread safety: attach() and detach() are owner-only (the child's owner).
class CancelLink : public CallbackNode {
 public:
  CancelLink() noexcept : CallbackNode(&fire) {}

  // Registers on `parent`. If the parent is already cancelled, cancels the
  // child now; if it never can be, does nothing. The caller holds a
  // reference to the child.
  void attach(CancelState* parent, CancelState* child) noexcept;

  // Leaves the parent, if registered, waiting for a fire() running on
  // another thread; drops the reference held on the parent. parent_ is
  // cleared only after deregister() returns: a fire() on another thread
  // reads it until then.
  void detach() noexcept {
    if (parent_ == nullptr) return;
    parent_->deregister(this);
    parent_ = nullptr;
  }

  // The parent registered on (and referenced), or null.
  const CancelState* parent() const noexcept { return parent_; }

 private:
  static void fire(CallbackNode* node) noexcept;

  CancelState* parent_ = nullptr;  // written by the owner, read by fire()
  CancelState* child_ = nullptr;
};

// The state of every token that has none (default, moved-from, reset): never
// cancelled, never cancellable, never reference-counted and never written, so
// a token's state pointer is never null and polling needs no null check.
inline constinit CancelState never_cancelled{CancelState::NeverTag{}};

}  // namespace quell::detail
