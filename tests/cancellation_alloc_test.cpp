// Counts heap allocations made by the cancellation primitives. This binary
// replaces the global operator new/delete, so it stands alone.
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <functional>
#include <new>
#include <optional>

#include "quell/cancellation.hpp"

namespace {

std::atomic<long> g_allocations{0};  // relaxed: read only on the allocating thread
std::atomic<long> g_live{0};

void* counted_alloc(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  g_live.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}

void counted_free(void* p) noexcept {
  if (p == nullptr) return;
  g_live.fetch_sub(1, std::memory_order_relaxed);
  std::free(p);
}

// Allocations (and blocks still live) made while `fn` runs.
template <class Fn>
std::pair<long, long> count(Fn&& fn) {
  const long allocations = g_allocations.load();
  const long live = g_live.load();
  fn();
  return {g_allocations.load() - allocations, g_live.load() - live};
}

}  // namespace

void* operator new(std::size_t size) { return counted_alloc(size); }
void* operator new[](std::size_t size) { return counted_alloc(size); }
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_free(p); }

namespace quell {
namespace {

TEST(CancellationAllocations, RegisteringAndDeregisteringACallbackAllocatesNothing) {
  CancellationSource source;
  const CancellationToken token = source.token();
  int calls = 0;
  const auto [allocations, live] = count([&] {
    for (int i = 0; i < 1000; ++i) {
      CancellationCallback callback(token, [&calls, pad = std::array<char, 64>{}] {
        calls += pad[0] + 1;
      });
    }
  });
  EXPECT_EQ(allocations, 0);
  EXPECT_EQ(live, 0);
  EXPECT_EQ(calls, 0);
}

TEST(CancellationAllocations, RunningCallbacksAllocatesNothing) {
  CancellationSource source;
  const CancellationToken token = source.token();
  int calls = 0;
  std::optional<CancellationCallback<std::function<void()>>> big;
  big.emplace(token, [&] { ++calls; });  // std::function may allocate here, outside the count
  const auto [allocations, live] = count([&] {
    CancellationCallback a(token, [&] { ++calls; });
    CancellationCallback b(token, [&] { ++calls; });
    source.request_cancel();
    CancellationCallback inline_run(token, [&] { ++calls; });
  });
  EXPECT_EQ(allocations, 0);
  EXPECT_EQ(calls, 4);
}

TEST(CancellationAllocations, CopyingATokenAllocatesNothing) {
  CancellationSource source;
  const CancellationToken token = source.token();
  const auto [allocations, live] = count([&] {
    for (int i = 0; i < 1000; ++i) {
      CancellationToken copy = token;
      CancellationSource source_copy = source;
      EXPECT_TRUE(copy.can_cancel());
    }
  });
  EXPECT_EQ(allocations, 0);
}

TEST(CancellationAllocations, ASourceStateIsOneAllocationFreedWithTheLastReference) {
  std::optional<CancellationToken> token;
  const auto [allocations, live] = count([&] {
    CancellationSource source;
    token = source.token();
  });
  EXPECT_EQ(allocations, 1);
  EXPECT_EQ(live, 1);
  const auto [none, freed] = count([&] { token.reset(); });
  EXPECT_EQ(none, 0);
  EXPECT_EQ(freed, -1);
}

TEST(CancellationAllocations, ALinkedStateIsOneAllocationWhateverTheParents) {
  CancellationSource a;
  CancellationSource b;
  CancellationSource c;
  const auto [allocations, live] = count([&] {
    CancellationSource linked = CancellationSource::linked({a.token(), b.token(), c.token()});
  });
  EXPECT_EQ(allocations, 1);
  EXPECT_EQ(live, 0);
}

TEST(CancellationAllocations, LinksEndWhenTheLastSourceAndTokenOfTheLinkedStateAreGone) {
  std::optional<CancellationSource> parent(std::in_place);
  std::optional<CancellationSource> linked(CancellationSource::linked({parent->token()}));
  std::optional<CancellationToken> token(linked->token());
  // The parent's state (1 block) is kept alive by the link while the linked
  // state (1 block) lives.
  const auto [none, parent_kept] = count([&] { parent.reset(); });
  EXPECT_EQ(parent_kept, 0);
  const auto [none2, still] = count([&] { linked.reset(); });
  EXPECT_EQ(still, 0);  // the token still refers to the linked state
  const auto [none3, both_freed] = count([&] { token.reset(); });
  EXPECT_EQ(both_freed, -2);
}

}  // namespace
}  // namespace quell
