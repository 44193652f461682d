// Counts heap allocations made by the pool: one block per submitted task,
// nothing to cancel a queued one. This binary replaces the global operator
// new/delete, so it stands alone.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <latch>
#include <memory>
#include <new>
#include <utility>
#include <vector>

#include "quell/thread_pool.hpp"

namespace {

// Every thread's allocations count: the measured windows run while the
// workers are idle, held, or running tasks that allocate nothing.
std::atomic<long> g_allocations{0};
std::atomic<long> g_live{0};

void* counted_alloc(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  g_live.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}

void* counted_aligned_alloc(std::size_t size, std::align_val_t align) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  g_live.fetch_add(1, std::memory_order_relaxed);
  const auto alignment = static_cast<std::size_t>(align);
  const std::size_t rounded = (size + alignment - 1) / alignment * alignment;
  if (void* p = std::aligned_alloc(alignment, rounded == 0 ? alignment : rounded)) return p;
  throw std::bad_alloc();
}

void counted_free(void* p) noexcept {
  if (p == nullptr) return;
  g_live.fetch_sub(1, std::memory_order_relaxed);
  std::free(p);
}

struct Counts {
  long allocations;
  long live;
};

// Allocations (and blocks still live) made while `fn` runs.
template <class Fn>
Counts count(Fn&& fn) {
  const long allocations = g_allocations.load();
  const long live = g_live.load();
  fn();
  return {g_allocations.load() - allocations, g_live.load() - live};
}

}  // namespace

void* operator new(std::size_t size) { return counted_alloc(size); }
void* operator new[](std::size_t size) { return counted_alloc(size); }
void* operator new(std::size_t size, std::align_val_t align) {
  return counted_aligned_alloc(size, align);
}
void* operator new[](std::size_t size, std::align_val_t align) {
  return counted_aligned_alloc(size, align);
}
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_free(p); }
void operator delete(void* p, std::align_val_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { counted_free(p); }

namespace quell {
namespace {

// Fewer than the injection queue's preallocated nodes, so a measured batch
// never needs a new one even if no worker pops in between.
constexpr int kTasks = 500;

// Runs enough tasks through every path the measurement takes that whatever
// the pool allocates lazily (queue nodes, thread-locals) is in place.
void warm_up(ThreadPool& pool, const TaskOptions& options) {
  std::atomic<int> runs{0};
  for (int round = 0; round < 4; ++round) {
    std::vector<Future<void>> futures;
    futures.reserve(kTasks);
    for (int i = 0; i < kTasks; ++i) futures.push_back(pool.submit([&runs] { ++runs; }, options));
    for (auto& f : futures) f.wait();
    for (int i = 0; i < kTasks; ++i) pool.post([&runs] { ++runs; }, options);
    pool.handle([&runs] { ++runs; }, options).wait();
    pool.wait_idle();
  }
}

class PoolAllocations : public ::testing::TestWithParam<bool> {
 protected:
  // With or without a cancellation token in the options.
  TaskOptions options() const {
    TaskOptions options;
    if (GetParam()) options.set_cancellation(source_.token());
    return options;
  }
  CancellationSource source_;
};

TEST_P(PoolAllocations, SubmitOfASmallLambdaFromANonWorkerThreadIsOneAllocation) {
  std::atomic<int> runs{0};
  std::vector<Future<void>> futures;
  futures.reserve(kTasks);
  const long live_before_pool = g_live.load();
  {
    ThreadPool pool(1);
    const TaskOptions opts = options();
    warm_up(pool, opts);
    // wait_idle() returns once every task is terminal, which may be just
    // before the worker lets go of the last one's block: a task run after it
    // is one the worker reaches only after that. Its block is counted here
    // and stays, held by its future.
    Future<void> warm_fence = pool.submit([] {});
    warm_fence.get();
    const long live_before = g_live.load();
    const Counts submitted = count([&] {
      for (int i = 0; i < kTasks; ++i) futures.push_back(pool.submit([&runs] { ++runs; }, opts));
    });
    EXPECT_EQ(submitted.allocations, kTasks);
    for (auto& f : futures) f.get();
    // The one worker has let go of every earlier task once it ran a later
    // one; the fence's own block stays, held by its future.
    Future<void> fence = pool.submit([] {});
    fence.get();
    futures.clear();
    EXPECT_EQ(g_live.load() - live_before, 1) << "task blocks outlived their last reference";
  }
  EXPECT_EQ(g_live.load() - live_before_pool, 0) << "the pool leaked";
  EXPECT_EQ(runs.load(), kTasks);
}

TEST_P(PoolAllocations, PostAndHandleAreOneAllocationPerTaskToo) {
  std::atomic<int> runs{0};
  ThreadPool pool(1);
  const TaskOptions opts = options();
  warm_up(pool, opts);
  const Counts posted = count([&] {
    for (int i = 0; i < kTasks; ++i) pool.post([&runs] { ++runs; }, opts);
  });
  EXPECT_EQ(posted.allocations, kTasks);
  pool.wait_idle();
  std::vector<TaskHandle<void>> handles;
  handles.reserve(kTasks);
  const Counts handled = count([&] {
    for (int i = 0; i < kTasks; ++i) handles.push_back(pool.handle([&runs] { ++runs; }, opts));
  });
  EXPECT_EQ(handled.allocations, kTasks);
  for (auto& h : handles) h.get();
}

TEST_P(PoolAllocations, CancellingAQueuedTaskAllocatesNothing) {
  std::atomic<int> runs{0};
  std::latch gate(1);
  ThreadPool pool(1);
  const TaskOptions opts = options();
  warm_up(pool, opts);
  std::latch started(1);
  Future<void> blocker = pool.submit([&] {
    started.count_down();
    gate.wait();
  });
  started.wait();

  std::vector<TaskHandle<void>> handles;
  handles.reserve(kTasks);
  for (int i = 0; i < kTasks / 2; ++i) handles.push_back(pool.handle([&runs] { ++runs; }, opts));
  CancellationSource group;
  std::vector<Future<void>> futures;
  futures.reserve(kTasks);
  for (int i = 0; i < kTasks / 2; ++i) {
    futures.push_back(pool.submit([&runs] { ++runs; }, TaskOptions().set_cancellation(group.token())));
  }

  const Counts by_handle = count([&] {
    for (auto& h : handles) h.cancel();
  });
  const Counts by_token = count([&] { group.request_cancel(); });
  EXPECT_EQ(by_handle.allocations, 0);
  EXPECT_EQ(by_token.allocations, 0);
  for (auto& h : handles) EXPECT_EQ(h.status(), TaskStatus::cancelled);
  for (auto& f : futures) EXPECT_EQ(f.status(), TaskStatus::cancelled);
  gate.count_down();
  blocker.get();
  pool.wait_idle();
  EXPECT_EQ(runs.load(), 0);
}

TEST_P(PoolAllocations, ARejectedPostAllocatesItsBlockAndFreesItAtOnce) {
  ThreadPool pool(1);
  const TaskOptions opts = options();
  warm_up(pool, opts);
  pool.shutdown();
  const Counts rejected = count([&] {
    for (int i = 0; i < kTasks; ++i) EXPECT_FALSE(pool.post([] {}, opts));
  });
  EXPECT_EQ(rejected.allocations, kTasks);
  EXPECT_EQ(rejected.live, 0);
}

INSTANTIATE_TEST_SUITE_P(Token, PoolAllocations, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "WithToken" : "WithoutToken"; });

}  // namespace
}  // namespace quell
