#include "quell/cancellation.hpp"

#include <cstdio>
#include <cstdlib>
#include <new>
#include <stdexcept>

#include "fast_tls.hpp"
#include "quell/detail/config.hpp"

namespace quell::detail {
namespace {

// Identifies the calling thread by the address of a thread-local: unlike
// std::thread::id, a plain pointer keeps CancelState constant-initialisable.
QUELL_FAST_TLS thread_local char this_thread_tag;

const void* this_thread() noexcept { return &this_thread_tag; }

// Callbacks run_callbacks() is invoking on this thread, nested (R20).
QUELL_FAST_TLS constinit thread_local unsigned callbacks_running = 0;

}  // namespace

bool in_cancel_callback() noexcept { return callbacks_running != 0; }

void CancelLink::attach(CancelState* parent, CancelState* child) noexcept {
  child_ = child;
  // Set before registering: fire() may run on another thread as soon as the
  // registration is visible, and it reads parent_.
  parent_ = parent;
  switch (parent->try_register(this)) {
    case Registration::registered: break;
    case Registration::cancelled:
      parent_ = nullptr;  // not registered: nothing to detach
      child->request_cancel(parent->reason());
      break;
    case Registration::never: parent_ = nullptr; break;
  }
}

void CancelLink::fire(CallbackNode* node) noexcept {
  auto* link = static_cast<CancelLink*>(node);
  CancelState* child = link->child_;
  if (!child->try_add_ref()) return;  // being destroyed; its owner waits for us
  child->request_cancel(link->parent_->reason());
  child->release(CancelState::kRef);  // may destroy the child, and this link with it
}

// Links start right after the state, so the state's size must keep them aligned.
static_assert(sizeof(CancelState) % alignof(CallbackNode) == 0);

CancelLink* CancelState::links() noexcept { return reinterpret_cast<CancelLink*>(this + 1); }
const CancelLink* CancelState::links() const noexcept {
  return reinterpret_cast<const CancelLink*>(this + 1);
}

void CancelState::references_exhausted() noexcept {
  std::fputs("quell: a cancellation state has more than 2^32 - 2^16 references\n", stderr);
  std::abort();
}

void CancelState::throw_length_error() {
  throw std::length_error("quell: a cancellation state has too many sources or references");
}

CancelState* CancelState::create_linked(const CancellationToken* tokens, std::size_t count) {
  const auto parent = [tokens](std::size_t i) { return tokens[i].state_; };
  const auto viable = [](const CancelState* state) {
    return state != nullptr && state->can_cancel();
  };
  std::uint32_t link_count = 0;
  for (std::size_t i = 0; i < count; ++i) {
    if (!viable(parent(i))) continue;
    if (const std::uint64_t reason = parent(i)->reason(); reason != 0) {
      CancelState* state = create();
      state->request_cancel(reason);
      return state;
    }
    parent(i)->check_room();  // its link will take a reference on it
    ++link_count;
  }
  if (link_count == 0) return create();

  void* block = ::operator new(sizeof(CancelState) + link_count * sizeof(CancelLink));
  auto* state = new (block) CancelState(link_count);
  // can_cancel() only ever turns from true to false for a state that is not
  // cancelled, so this second pass finds at most link_count viable parents;
  // slots it does not fill stay detached.
  CancelLink* links = state->links();
  for (std::uint32_t i = 0; i < link_count; ++i) new (links + i) CancelLink();
  std::uint32_t filled = 0;
  for (std::size_t i = 0; i < count && filled < link_count; ++i) {
    if (viable(parent(i))) links[filled++].attach(parent(i), state);
  }
  return state;
}

bool CancelState::can_cancel() const noexcept {
  // Relaxed: the answer is a snapshot that publishes nothing.
  if ((word_.load(std::memory_order_relaxed) & (kReasonMask | kSourceMask)) != 0) return true;
  for (std::uint32_t i = 0; i < link_count_; ++i) {
    if (const CancelState* parent = links()[i].parent(); parent != nullptr && parent->can_cancel()) {
      return true;
    }
  }
  return false;
}

std::uint64_t CancelState::wait_unlocked(std::uint64_t word) noexcept {
  // The lock is held for a few list operations, never across user code:
  // spin briefly, then sleep until unlock() wakes us.
  constexpr int kSpins = 64;
  for (int i = 0; i < kSpins && (word & kLocked) != 0; ++i) {
    cpu_relax();
    word = word_.load(std::memory_order_relaxed);
  }
  while ((word & kLocked) != 0) {
    if ((word & kLockWaiters) == 0) {
      // Relaxed: the bit is only a request for a notify_all; the lock CAS
      // that follows our wake-up provides the ordering.
      if (!word_.compare_exchange_weak(word, word | kLockWaiters, std::memory_order_relaxed)) {
        continue;
      }
      word |= kLockWaiters;
    }
    // No lost wake-up: unlock() sees kLockWaiters and clears it (so the
    // value differs from `word` and wait() returns at once) before it
    // notifies. Every sleeper wakes; those that lose the lock again re-set
    // the bit before sleeping.
    word_.wait(word, std::memory_order_relaxed);
    word = word_.load(std::memory_order_relaxed);
  }
  // Acquire: callers that see the reason here act on it without locking.
  return word_.load(std::memory_order_acquire);
}

void CancelState::run_callbacks() noexcept {
  // Entered with the lock held and the reason set. A callback may drop the
  // last outside reference (even destroy the source we were called through),
  // so we hold one of our own until the list is drained.
  word_.fetch_add(kRef, std::memory_order_relaxed);  // relaxed: as add_token_ref()
  requester_ = this_thread();
  if (hooks_ != nullptr) {
    unlock(0);
    hooks_->on_cancel(this);
    lock();
  }
  while (CallbackNode* node = head_) {
    head_ = node->next_;
    if (head_ != nullptr) head_->prev_next_ = &head_;
    node->prev_next_ = nullptr;
    running_ = node;
    unlock(0);
    ++callbacks_running;
    node->invoke_(node);  // the node may be gone from here on: never touch it again
    --callbacks_running;
    lock();
    running_ = nullptr;
    if (done_waiter_) {
      done_waiter_ = false;
      // Release: pairs with the acquire wait in wait_for_running_callback():
      // the callback happens-before its destructor returns.
      done_epoch_.fetch_add(1, std::memory_order_release);
      done_epoch_.notify_all();  // the waiter holds a reference (I5)
    }
  }
  if (unlock(kRef)) destroy();
}

void CancelState::deregister_taken(CallbackNode* node, bool wait) noexcept {
  // Entered with the lock held, for a node request_cancel() took from the
  // list: its callback has run, or runs now, here or on another thread.
  // run_callbacks() never touches a node after invoking it, so without
  // `wait` only the reference is left to drop.
  if (wait && running_ == node && requester_ != this_thread()) {
    // While the lock is held done_epoch_ cannot move: it is bumped under the
    // lock, after running_ is cleared.
    done_waiter_ = true;
    const std::uint32_t epoch = done_epoch_.load(std::memory_order_relaxed);
    unlock(0);
    // Acquire: pairs with the release bump in run_callbacks().
    done_epoch_.wait(epoch, std::memory_order_acquire);
    release(kRef);
    return;
  }
  // Done, or running on this thread: we are inside it, nothing to wait for.
  // Unlocking and dropping the node's reference in one step.
  if (unlock(kRef)) destroy();
}

namespace {
// I7: the linked states this thread is destroying, and whether a destroy()
// further up its stack is emptying the list.
QUELL_FAST_TLS thread_local CancelState* dead_states = nullptr;
QUELL_FAST_TLS thread_local bool destroying_links = false;
}  // namespace

void CancelState::destroy() noexcept {
  if (hooks_ != nullptr) {
    hooks_->destroy(this);
    return;
  }
  if (link_count_ == 0) {
    this->~CancelState();
    ::operator delete(static_cast<void*>(this));
    return;
  }
  next_dead_ = dead_states;
  dead_states = this;
  if (destroying_links) return;  // the loop below, further up, destroys it
  destroying_links = true;
  while (CancelState* state = dead_states) {
    dead_states = state->next_dead_;
    state->destroy_links();
  }
  destroying_links = false;
}

void CancelState::destroy_links() noexcept {
  CancelLink* first = links();
  for (std::uint32_t i = 0; i < link_count_; ++i) {
    // Waits for this link's callback if it is running on another thread;
    // that callback's try_add_ref() fails (our count is zero), so it returns
    // promptly. Drops the reference the link held on its parent: a linked
    // parent whose last reference that was joins the list (I7).
    first[i].detach();
    first[i].~CancelLink();
  }
  this->~CancelState();
  ::operator delete(static_cast<void*>(this));
}

}  // namespace quell::detail

namespace quell {

const char* to_string(CancelReason reason) noexcept {
  switch (reason) {
    case CancelReason::none: return "none";
    case CancelReason::requested: return "requested";
    case CancelReason::deadline: return "deadline";
    case CancelReason::shutdown: return "shutdown";
    case CancelReason::failure: return "failure";
  }
  return "unknown";
}

}  // namespace quell
