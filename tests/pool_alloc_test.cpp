// Counts heap allocations made by the pool: at most one block per submitted
// task, none once blocks are recycled, nothing to cancel a queued one; and
// the recycling of task blocks itself (detail/task_block.hpp). This binary
// replaces the global operator new/delete, so it stands alone.
#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <latch>
#include <memory>
#include <new>
#include <thread>
#include <utility>
#include <vector>

#include "quell/coro.hpp"
#include "quell/parallel.hpp"
#include "quell/detail/task_block.hpp"
#include "quell/thread_pool.hpp"
#include "quell/when.hpp"
#include "sanitized.hpp"

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

// Allocations made while `fn` runs.
template <class Fn>
long count_allocations_of(Fn&& fn) {
  const long before = g_allocations.load();
  fn();
  return g_allocations.load() - before;
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

// Allocations per task once the pool is warm: none where blocks are
// recycled, one in AddressSanitizer builds (which bypass the caches).
long steady_allocations(long tasks) { return detail::task_blocks_recycled() ? 0 : tasks; }

// Recycling keeps freed blocks in the thread's cache, where the live count
// still sees them; trimming returns them to the heap.
long live_after_trim() {
  detail::task_blocks_trim();
  return g_live.load();
}

class PoolAllocations : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    // This thread's block cache exists before any measurement.
    ThreadPool pool(1);
    pool.submit([] {}).get();
  }

  // With or without a cancellation token in the options.
  TaskOptions options() const {
    TaskOptions options;
    if (GetParam()) options.set_cancellation(source_.token());
    return options;
  }
  CancellationSource source_;
};

TEST_P(PoolAllocations, SubmitFromANonWorkerThreadReusesTheBlocksOfFinishedTasks) {
  std::atomic<int> runs{0};
  std::vector<Future<void>> futures;
  futures.reserve(kTasks);
  const long live_before_pool = live_after_trim();
  {
    ThreadPool pool(1);
    const TaskOptions opts = options();
    warm_up(pool, opts);
    // wait_idle() returns once every task is terminal, which may be just
    // before the worker lets go of the last one's block: a task run after it
    // is one the worker reaches only after that. Its block is counted here
    // and stays, held by its future.
    // A timed wait on this thread does not run the task itself (get() would,
    // and the worker would then not have reached it).
    Future<void> warm_fence = pool.submit([] {});
    ASSERT_TRUE(warm_fence.wait_for(std::chrono::seconds(30)));
    const long live_before = live_after_trim();
    warm_up(pool, opts);  // fills the cache again
    warm_fence.wait();
    const Counts submitted = count([&] {
      for (int i = 0; i < kTasks; ++i) futures.push_back(pool.submit([&runs] { ++runs; }, opts));
    });
    EXPECT_EQ(submitted.allocations, steady_allocations(kTasks))
        << "blocks of finished tasks were not reused";
    for (auto& f : futures) f.get();
    // The one worker has let go of every earlier task once it ran a later
    // one; the fence's own block stays, held by its future.
    Future<void> fence = pool.submit([] {});
    ASSERT_TRUE(fence.wait_for(std::chrono::seconds(30)));
    futures.clear();
    EXPECT_EQ(live_after_trim() - live_before, 1) << "task blocks outlived their last reference";
  }
  EXPECT_EQ(live_after_trim() - live_before_pool, 0) << "the pool leaked";
  EXPECT_EQ(runs.load(), kTasks);
}

TEST_P(PoolAllocations, PostAndHandleReuseBlocksToo) {
  std::atomic<int> runs{0};
  ThreadPool pool(1);
  const TaskOptions opts = options();
  warm_up(pool, opts);
  const Counts posted = count([&] {
    for (int i = 0; i < kTasks; ++i) pool.post([&runs] { ++runs; }, opts);
  });
  EXPECT_EQ(posted.allocations, steady_allocations(kTasks));
  pool.wait_idle();
  std::vector<TaskHandle<void>> handles;
  handles.reserve(kTasks);
  const Counts handled = count([&] {
    for (int i = 0; i < kTasks; ++i) handles.push_back(pool.handle([&runs] { ++runs; }, opts));
  });
  EXPECT_EQ(handled.allocations, steady_allocations(kTasks));
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

TEST_P(PoolAllocations, ARejectedPostFreesItsBlockAtOnceForTheNextToReuse) {
  ThreadPool pool(1);
  const TaskOptions opts = options();
  warm_up(pool, opts);
  pool.shutdown();
  const Counts rejected = count([&] {
    for (int i = 0; i < kTasks; ++i) EXPECT_FALSE(pool.post([] {}, opts));
  });
  EXPECT_EQ(rejected.allocations, steady_allocations(kTasks));
  EXPECT_EQ(rejected.live, 0);
}

INSTANTIATE_TEST_SUITE_P(Token, PoolAllocations, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "WithToken" : "WithoutToken"; });

// ---- coroutines (API.md R12, R32, §10.9 C3, C5) -----------------------------

// Allocations made by one round of awaits that suspend and are resumed
// through the queues: a yield, a schedule hop, a timed sleep, a wait on a
// future that completes later, and a sleep of an hour that the test
// cancels. The root's token is cancellable, so every wait registers a
// callback. Measured inside the coroutine, after warm-up rounds, while the
// main thread only waits.
using namespace std::chrono_literals;

Task<long> await_round(ThreadPool& pool, int rounds, std::atomic<bool>* parked,
                       CancellationSource* sources) {
  long allocations = 0;
  for (int round = 0; round < rounds; ++round) {
    Future<void> later = pool.submit([] {});  // a recycled block once warm
    const long before = g_allocations.load();
    co_await yield();
    co_await schedule(pool);
    co_await sleep_for(std::chrono::microseconds(1));
    co_await later;
    parked[round].store(true);
    Result<void> r = co_await with_token(as_result(sleep_for(1h)), sources[round].token());
    EXPECT_TRUE(r.cancelled());
    allocations = g_allocations.load() - before;
  }
  co_return allocations;
}

TEST(CoroAllocations, SuspendingAwaitsAndTheirResumptionsAllocateNothing) {
  constexpr int kRounds = 40;
  ThreadPool pool(1);
  CancellationSource root;
  std::vector<CancellationSource> sources(kRounds);
  std::unique_ptr<std::atomic<bool>[]> parked(new std::atomic<bool>[kRounds]);
  for (int i = 0; i < kRounds; ++i) parked[i].store(false);
  Future<long> future =
      pool.submit(await_round(pool, kRounds, parked.get(), sources.data()),
                  TaskOptions().set_cancellation(root.token()));
  for (int i = 0; i < kRounds; ++i) {
    while (!parked[i].load()) std::this_thread::yield();
    // Parked just before its await: the cancellation may find it waiting
    // or not yet registered; both paths must allocate nothing.
    sources[i].request_cancel();
  }
  // The last round's count: every earlier round warmed the caches.
  EXPECT_EQ(future.get(), 0);
}

// R21: a combinator allocates one cancellation state beyond its children's
// frames (made before the count starts), whatever the parent's token.
Task<int> child_value(int v) { co_return v; }

Task<long> combinator_round(int rounds) {
  long allocations = 0;
  for (int round = 0; round < rounds; ++round) {
    Task<int> a = child_value(1);
    Task<int> b = child_value(2);
    Task<int> c = child_value(3);
    Task<int> d = child_value(4);
    const long before = g_allocations.load();
    auto [x, y] = co_await when_all(std::move(a), std::move(b));
    auto any = co_await when_any(std::move(c), std::move(d));
    allocations = g_allocations.load() - before;
    EXPECT_EQ(x + y + static_cast<int>(any.index()), 3);
  }
  co_return allocations;
}

TEST(CoroAllocations, ACombinatorAllocatesOneStateBeyondItsChildrensFrames) {
  constexpr int kRounds = 20;
  ThreadPool pool(1);
  // The last round's count: earlier rounds warmed the caches.
  EXPECT_EQ(pool.submit(combinator_round(kRounds)).get(), 2);
  CancellationSource root;
  EXPECT_EQ(pool.submit(combinator_round(kRounds), TaskOptions().set_cancellation(root.token())).get(),
            2);
}

// ---- parallel loops (API.md §11) ---------------------------------------------

// Allocations of one loop call: bounded by the runners, the same for 10^2
// chunks as for 10^5 (grain 1), none per element or chunk.
TEST(ParallelAllocations, ALoopAllocatesPerRunnerNeverPerChunk) {
  ThreadPool pool(2);
  std::atomic<long> sink{0};
  auto loop = [&](int count) {
    return count_allocations_of([&] {
      parallel_for(pool, 0, count, [&](int i) { sink.fetch_add(i, std::memory_order_relaxed); }, {}, 1);
    });
  };
  auto reduce = [&](int count) {
    return count_allocations_of([&] {
      sink += parallel_reduce(pool, 0, count, 0L, [](int i) { return long{i}; }, std::plus<>(), {}, 1);
    });
  };
  auto deadline = [&](int count) {
    return count_allocations_of([&] {
      parallel_for(pool, 0, count, [&](int i) { sink.fetch_add(i, std::memory_order_relaxed); },
                   TaskOptions().set_timeout(std::chrono::hours(1)), 1);
    });
  };
  for (int warm = 0; warm < 3; ++warm) {
    loop(100);
    reduce(100);
    deadline(100);
  }
  // Runners: the caller and 2 helpers. A plain loop: its state, the group's,
  // one block per helper; reduce adds the partial results; a deadline adds
  // its timer entry. Helpers' blocks may be recycled (fewer).
  const long small = loop(100);
  const long large = loop(100000);
  const long reduced = reduce(100000);
  const long timed = deadline(100000);
  EXPECT_LE(small, 4);
  EXPECT_LE(large, 4);
  EXPECT_LE(reduced, 5);
  EXPECT_LE(timed, 5);
  RecordProperty("for_100", static_cast<int>(small));
  RecordProperty("for_100000", static_cast<int>(large));
  RecordProperty("reduce_100000", static_cast<int>(reduced));
  RecordProperty("deadline_100000", static_cast<int>(timed));
}

// ---- task block recycling (detail/task_block.hpp) ----------------------------

// A size class no pool test above uses, so the lists start empty.
constexpr std::size_t kOddSize = 488;

class TaskBlocks : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!detail::task_blocks_recycled()) GTEST_SKIP() << "AddressSanitizer builds do not recycle";
  }
};

TEST_F(TaskBlocks, ABlockFreedOnItsOwnThreadIsReusedAtOnce) {
  detail::task_blocks_trim();
  void* first = detail::task_block_allocate(kOddSize);
  detail::task_block_free(first, kOddSize);
  const Counts again = count([&] {
    void* second = detail::task_block_allocate(kOddSize);
    EXPECT_EQ(second, first);
    detail::task_block_free(second, kOddSize);
  });
  EXPECT_EQ(again.allocations, 0);
}

TEST_F(TaskBlocks, ABlockFreedOnAnotherThreadReturnsToTheThreadThatAllocatedIt) {
  detail::task_blocks_trim();
  void* block = detail::task_block_allocate(kOddSize);
  std::thread([block] { detail::task_block_free(block, kOddSize); }).join();
  const Counts again = count([&] {
    void* reused = detail::task_block_allocate(kOddSize);
    EXPECT_EQ(reused, block);
    detail::task_block_free(reused, kOddSize);
  });
  EXPECT_EQ(again.allocations, 0);
}

TEST_F(TaskBlocks, BlocksFreedAfterTheirThreadExitedGoBackToTheHeap) {
  detail::task_blocks_trim();
  // Caches are kept for later threads: leave one free for the thread below.
  std::thread([] { detail::task_block_free(detail::task_block_allocate(kOddSize), kOddSize); })
      .join();
  const long live_before = g_live.load();
  std::vector<void*> blocks;
  std::thread([&blocks] {
    for (int i = 0; i < 100; ++i) blocks.push_back(detail::task_block_allocate(kOddSize));
  }).join();  // its cache is abandoned now, holding nothing
  for (void* block : blocks) detail::task_block_free(block, kOddSize);
  blocks.clear();
  blocks.shrink_to_fit();
  EXPECT_EQ(g_live.load() - live_before, 0) << "blocks homed at an exited thread were kept";
}

TEST_F(TaskBlocks, BlocksAboveTheLargestClassAreNotCached) {
  const Counts large = count([] {
    for (int i = 0; i < 10; ++i) detail::task_block_free(detail::task_block_allocate(4096), 4096);
  });
  EXPECT_EQ(large.allocations, 10);
  EXPECT_EQ(large.live, 0);
}

// Threads allocate blocks, stamp them, and hand them round a ring to be
// freed by the next thread, while threads also exit and new ones adopt the
// abandoned caches, sometimes while blocks homed at them are being freed. A
// block handed out twice at once is caught by its stamp;
// TSan checks the remote lists' ordering.
TEST_F(TaskBlocks, BlocksPassedBetweenThreadsAreNeverHandedOutTwice) {
  constexpr int kThreads = 3;
  constexpr int kGenerations = test::kSanitized ? 20 : 60;
  constexpr int kPerThread = 2000;
  std::atomic<long> bad_stamps{0};
  for (int generation = 0; generation < kGenerations; ++generation) {
    std::vector<std::vector<void*>> handed(kThreads);
    std::barrier sync(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        const std::size_t size = 64 + 16 * static_cast<std::size_t>(t % 2);
        for (int i = 0; i < kPerThread; ++i) {
          auto* block = static_cast<std::uint64_t*>(detail::task_block_allocate(size));
          block[0] = static_cast<std::uint64_t>(t) << 32 | static_cast<std::uint64_t>(i);
          handed[t].push_back(block);
        }
        sync.arrive_and_wait();
        // Free the previous thread's blocks, checking each still has its stamp.
        const int from = (t + kThreads - 1) % kThreads;
        const std::size_t their_size = 64 + 16 * static_cast<std::size_t>(from % 2);
        for (std::size_t i = 0; i < handed[from].size(); ++i) {
          auto* block = static_cast<std::uint64_t*>(handed[from][i]);
          if (block[0] != (static_cast<std::uint64_t>(from) << 32 | i)) bad_stamps.fetch_add(1);
          detail::task_block_free(block, their_size);
        }
        // Reuse what came back, then exit, abandoning the cache while the next
        // thread may still be freeing our blocks into it.
        for (int i = 0; i < kPerThread; ++i) {
          void* block = detail::task_block_allocate(size);
          detail::task_block_free(block, size);
        }
      });
    }
    for (auto& thread : threads) thread.join();
  }
  EXPECT_EQ(bad_stamps.load(), 0);
}

}  // namespace
}  // namespace quell
