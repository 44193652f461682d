// Per-thread recycling of task blocks (detail/task_block.hpp).
//
// Each block starts with a 16-byte header naming its home: the cache of the
// thread that first took it from the heap (null for a block the caches do
// not keep). A freed block goes back to its home: onto the home's local list
// if the home is the freeing thread's own cache, else onto the home's remote
// list for its size class, a Treiber stack that others only push to and the
// owner only takes whole (exchange), so it has no ABA problem.
//
// A cache outlives its thread: threads come and go, but a block may be
// freed long after the thread that allocated it exited. So caches are never
// destroyed. A thread's exit marks its cache abandoned (every remote list
// holds kAbandoned), frees what it held, and leaves the cache in the
// registry for a later thread to adopt; a block whose home is abandoned is
// freed to the heap at once.
//
// Invariants
//   B1  A cache's local lists and counts are touched only by its owner.
//   B2  A remote list is kAbandoned exactly while no thread owns the cache;
//       only the owner (at exit) stores kAbandoned and only an adopter
//       clears it, under the registry's mutex.
//   B3  Every cached block is in exactly one list, and a list holds blocks
//       of one size class, all homed at the list's cache.
//
// Ordering: a remote push is a release CAS and the owner's take an acquire
// exchange, so the freeing thread's last use of the block, and the link it
// wrote, happen-before the owner reuses it.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#include "fast_tls.hpp"
#include "quell/detail/config.hpp"
#include "quell/detail/task_block.hpp"

#if defined(__SANITIZE_ADDRESS__)
#define QUELL_RECYCLE_BLOCKS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define QUELL_RECYCLE_BLOCKS 0
#endif
#endif
#ifndef QUELL_RECYCLE_BLOCKS
#define QUELL_RECYCLE_BLOCKS 1
#endif

namespace quell::detail {
namespace {

constexpr std::size_t kGranule = 16;
constexpr std::size_t kClasses = 32;       // sizes up to 512 bytes are recycled
constexpr std::uint32_t kMaxLocal = 1024;  // per class; a free beyond it goes to the heap
constexpr std::uintptr_t kAbandoned = 1;

struct FreeBlock {
  FreeBlock* next;
};

struct Cache;

struct alignas(16) Header {
  Cache* home;  // null: not recycled
};
static_assert(sizeof(Header) == 16);

struct Cache {
  // Owner only (B1).
  FreeBlock* local[kClasses] = {};
  std::uint32_t local_count[kClasses] = {};
  // Pushed to by other threads; its own line group, away from the owner's.
  alignas(kCacheLine) std::atomic<std::uintptr_t> remote[kClasses] = {};
  bool owned = false;  // guarded by the registry's mutex
};

struct Registry {
  std::mutex mutex;
  std::vector<Cache*> caches;  // every cache ever made; never shrinks
};

Registry& registry() {
  // Never destroyed: a thread may exit (and abandon its cache) during or
  // after static destruction.
  static Registry* const instance = new Registry;
  return *instance;
}

QUELL_FAST_TLS thread_local Cache* this_cache = nullptr;

Header* header_of(void* block) noexcept { return static_cast<Header*>(block) - 1; }

void free_list(FreeBlock* block) noexcept {
  while (block != nullptr) {
    FreeBlock* next = block->next;
    ::operator delete(header_of(block));
    block = next;
  }
}

// At thread exit: gives the cache up (B2) and frees what it held.
struct Abandon {
  ~Abandon() {
    Cache* cache = this_cache;
    if (cache == nullptr) return;
    this_cache = nullptr;
    for (std::size_t c = 0; c < kClasses; ++c) {
      free_list(std::exchange(cache->local[c], nullptr));
      cache->local_count[c] = 0;
      // Acquire: pairs with the pushers' release CAS; their blocks are ours.
      const std::uintptr_t list = cache->remote[c].exchange(kAbandoned, std::memory_order_acquire);
      free_list(reinterpret_cast<FreeBlock*>(list));
    }
    std::lock_guard lock(registry().mutex);
    cache->owned = false;
  }
};
thread_local Abandon abandon_at_exit;

Cache* adopt_cache() {
  Registry& r = registry();
  Cache* cache = nullptr;
  {
    std::lock_guard lock(r.mutex);
    for (Cache* c : r.caches) {
      if (!c->owned) {
        cache = c;
        break;
      }
    }
    if (cache == nullptr) {
      r.caches.reserve(r.caches.size() + 1);  // may throw: nothing changed yet
      cache = new Cache;
      r.caches.push_back(cache);
    } else {
      for (auto& list : cache->remote) {
        // Relaxed: pushers that see 0 push with release, which our take
        // acquires; one that saw kAbandoned freed its block itself.
        list.store(0, std::memory_order_relaxed);
      }
    }
    cache->owned = true;
  }
  static_cast<void>(&abandon_at_exit);  // odr-use: registers the exit hook
  this_cache = cache;
  return cache;
}

std::size_t class_of(std::size_t size) noexcept { return (size + kGranule - 1) / kGranule - 1; }

}  // namespace

void* task_block_allocate(std::size_t size) {
  const std::size_t c = class_of(size);
  if (!QUELL_RECYCLE_BLOCKS || c >= kClasses) {
    auto* header = static_cast<Header*>(::operator new(sizeof(Header) + size));
    header->home = nullptr;
    return header + 1;
  }
  Cache* cache = this_cache != nullptr ? this_cache : adopt_cache();
  FreeBlock* block = cache->local[c];
  // Relaxed check first: no write to the shared line while nothing came back.
  if (block == nullptr && cache->remote[c].load(std::memory_order_relaxed) != 0) {
    // Acquire: pairs with the pushers' release CAS (see Ordering).
    block = reinterpret_cast<FreeBlock*>(cache->remote[c].exchange(0, std::memory_order_acquire));
    std::uint32_t taken = 0;
    for (FreeBlock* b = block; b != nullptr; b = b->next) ++taken;
    cache->local_count[c] = taken;
  }
  if (block != nullptr) {
    cache->local[c] = block->next;
    --cache->local_count[c];
    QUELL_INVARIANT(B3, header_of(block)->home == cache);
    return block;
  }
  auto* header = static_cast<Header*>(::operator new(sizeof(Header) + (c + 1) * kGranule));
  header->home = cache;
  return header + 1;
}

void task_block_free(void* block, std::size_t size) noexcept {
  Header* header = header_of(block);
  Cache* home = header->home;
  if (home == nullptr) {
    ::operator delete(header);
    return;
  }
  const std::size_t c = class_of(size);
  auto* freed = static_cast<FreeBlock*>(block);
  if (home == this_cache) {
    if (home->local_count[c] >= kMaxLocal) {
      ::operator delete(header);
      return;
    }
    freed->next = home->local[c];
    home->local[c] = freed;
    ++home->local_count[c];
    return;
  }
  std::atomic<std::uintptr_t>& list = home->remote[c];
  // Relaxed: only a guess for the CAS, which rereads the head on failure.
  std::uintptr_t head = list.load(std::memory_order_relaxed);
  do {
    if (head == kAbandoned) {  // no owner to take it back (B2)
      ::operator delete(header);
      return;
    }
    freed->next = reinterpret_cast<FreeBlock*>(head);
    // Release: publishes our link and our last use of the block to the
    // owner's acquire exchange.
  } while (!list.compare_exchange_weak(head, reinterpret_cast<std::uintptr_t>(freed),
                                       std::memory_order_release, std::memory_order_relaxed));
}

bool task_blocks_recycled() noexcept { return QUELL_RECYCLE_BLOCKS != 0; }

void task_blocks_trim() noexcept {
  Cache* cache = this_cache;
  if (cache == nullptr) return;
  for (std::size_t c = 0; c < kClasses; ++c) {
    free_list(std::exchange(cache->local[c], nullptr));
    cache->local_count[c] = 0;
    if (cache->remote[c].load(std::memory_order_relaxed) != 0) {
      // Acquire: as in task_block_allocate().
      free_list(reinterpret_cast<FreeBlock*>(cache->remote[c].exchange(0, std::memory_order_acquire)));
    }
  }
}

}  // namespace quell::detail
