// Allocation counts (API.md §10.9 C3, C7) and frame sizes (C10), printed as
// "C3 <await> heap <n> blocks <n>", "C7 <when_any> heap <n> blocks <n>
// exceptions <n>" and "C10 <what> <bytes>" lines for
// bench/run_coro_bench.sh.
//
// C3: allocations per co_await, in steady state (each loop runs untimed
// first), inside a root on a ThreadPool of two workers:
//   heap    calls of the global operator new (replaced below), any thread
//   blocks  calls of quell::detail::task_block_allocate, the per-thread
//           block cache coroutine frames come from (interposed below); a
//           block is a heap allocation only when the cache is empty
// A Task await costs its child's frame: one block, no heap.
//
// C7: the same per co_await of when_any(a ready child, a child asleep for
// 1 h), in both orders, and with the sleeper in its as_result form
// (no_throw) (coro_workloads.hpp's sleepers; coro_bench times the same
// co_awaits). Two blocks are the children's frames; the target is one
// allocation beyond them (the children's linked cancellation state). Also
//   exceptions  calls of __cxa_allocate_exception (interposed below), which
//               takes exception objects from malloc, not operator new: the
//               loser's cancelled sleep throws OperationCancelled (R7),
//               whose what() string costs heap allocations of its own
//
// C10: the frame a trivial coroutine asks for (`co_return` at once): quell's
// Task<void> and Task<int> (the size task_block_allocate is asked for) and
// the floor task's FloorTask<int> (the size operator new is asked for), and
// sizeof(TaskPromise<int>) - sizeof(int).

#include <dlfcn.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <variant>
#include <vector>

#include "coro_workloads.hpp"
#include "quell/coro.hpp"
#include "quell/thread_pool.hpp"
#include "quell/when.hpp"

namespace {

// Relaxed counters: they order nothing. A measuring coroutine reads them
// after its awaits, which order every allocation they count before it (a
// child's on another worker included, through the combinator's join).
std::atomic<long> heap_allocations{0};
std::atomic<long> frame_blocks{0};
std::atomic<long> exception_allocations{0};
std::atomic<std::size_t> last_heap_size{0};
std::atomic<std::size_t> last_block_size{0};

void* counted(std::size_t size, std::size_t align = 0) {
  heap_allocations.fetch_add(1, std::memory_order_relaxed);
  last_heap_size.store(size, std::memory_order_relaxed);
  if (size == 0) size = 1;
  void* p = align > alignof(std::max_align_t)
                ? std::aligned_alloc(align, (size + align - 1) / align * align)
                : std::malloc(size);
  return p;
}

}  // namespace

// ---- the global operator new, counted --------------------------------------

void* operator new(std::size_t size) {
  if (void* p = counted(size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return operator new(size); }
void* operator new(std::size_t size, std::align_val_t align) {
  if (void* p = counted(size, static_cast<std::size_t>(align))) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size, std::align_val_t align) { return operator new(size, align); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept { return counted(size); }
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept { return counted(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

// ---- quell's frame allocator, counted ----------------------------------------
// Interposes libquell's definition (this executable's comes first in symbol
// lookup) and forwards to it. Calls compiled into this file (a promise's
// operator new) always reach this one.

namespace quell::detail {
void* task_block_allocate(std::size_t size) {
  using Fn = void* (*)(std::size_t);
  static const Fn real =
      reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "_ZN5quell6detail19task_block_allocateEm"));
  if (real == nullptr) std::abort();
  frame_blocks.fetch_add(1, std::memory_order_relaxed);
  last_block_size.store(size, std::memory_order_relaxed);
  return real(size);
}
}  // namespace quell::detail

// ---- exception objects, counted ----------------------------------------------
// Interposes libstdc++'s (or libc++abi's) definition, as above.

extern "C" void* __cxa_allocate_exception(std::size_t size) noexcept {
  using Fn = void* (*)(std::size_t);
  static const Fn real = reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "__cxa_allocate_exception"));
  if (real == nullptr) std::abort();
  exception_allocations.fetch_add(1, std::memory_order_relaxed);
  return real(size);
}

namespace {

using namespace std::chrono_literals;

struct Counts {
  long heap = 0;
  long blocks = 0;
  long exceptions = 0;
};
Counts now() {
  return {heap_allocations.load(std::memory_order_relaxed),
          frame_blocks.load(std::memory_order_relaxed),
          exception_allocations.load(std::memory_order_relaxed)};
}
Counts since(Counts before) {
  const Counts after = now();
  return {after.heap - before.heap, after.blocks - before.blocks,
          after.exceptions - before.exceptions};
}

constexpr long kAwaits = 100'000;
constexpr long kSleeps = 500;
constexpr long kWarmUp = 1000;
constexpr long kWhenAnys = 10'000;

quell::Task<Counts> task_awaits() {
  long sum = 0;
  for (long i = 0; i < kWarmUp; ++i) sum += co_await quell_bench::quell_child(1);
  const Counts before = now();
  for (long i = 0; i < kAwaits; ++i) sum += co_await quell_bench::quell_child(1);
  const Counts counts = since(before);
  if (sum != kWarmUp + kAwaits) std::abort();
  co_return counts;
}

// Futures of tasks that ended before the awaits.
quell::Task<Counts> future_ready_awaits(quell::ThreadPool& pool) {
  std::vector<quell::Future<int>> futures;
  futures.reserve(kAwaits);
  for (long i = 0; i < kAwaits; ++i) futures.push_back(pool.submit([] { return 1; }));
  co_await quell::sleep_for(50ms);
  long sum = 0;
  const Counts before = now();
  for (auto& future : futures) sum += co_await future;
  const Counts counts = since(before);
  if (sum != kAwaits) std::abort();
  co_return counts;
}

// Futures of tasks that start after the await began (submit_after): the
// await suspends and the task's end resumes it.
quell::Task<Counts> future_pending_awaits(quell::ThreadPool& pool) {
  std::vector<quell::Future<int>> futures;
  futures.reserve(kSleeps);
  for (long i = 0; i < kSleeps; ++i) {
    futures.push_back(pool.submit_after(2ms + i * 20us, [] { return 1; }));
  }
  long sum = 0;
  const Counts before = now();
  for (auto& future : futures) sum += co_await future;
  const Counts counts = since(before);
  if (sum != kSleeps) std::abort();
  co_return counts;
}

// A deadline already past: completes without suspending.
quell::Task<Counts> sleep_zero_awaits() {
  for (long i = 0; i < kWarmUp; ++i) co_await quell::sleep_for(0ns);
  const Counts before = now();
  for (long i = 0; i < kAwaits; ++i) co_await quell::sleep_for(0ns);
  co_return since(before);
}

quell::Task<Counts> sleep_short_awaits() {
  for (long i = 0; i < kSleeps / 10; ++i) co_await quell::sleep_for(50us);
  const Counts before = now();
  for (long i = 0; i < kSleeps; ++i) co_await quell::sleep_for(50us);
  co_return since(before);
}

quell::Task<Counts> schedule_awaits(quell::ThreadPool& pool) {
  for (long i = 0; i < kWarmUp; ++i) co_await quell::schedule(pool);
  const Counts before = now();
  for (long i = 0; i < kAwaits; ++i) co_await quell::schedule(pool);
  co_return since(before);
}

quell::Task<Counts> yield_awaits() {
  for (long i = 0; i < kWarmUp; ++i) co_await quell::yield();
  const Counts before = now();
  for (long i = 0; i < kAwaits; ++i) co_await quell::yield();
  co_return since(before);
}

quell::Task<Counts> this_coro_awaits() {
  long seen = 0;
  const Counts before = now();
  for (long i = 0; i < kAwaits; ++i) {
    const quell::CancellationToken& token = co_await quell::this_coro::cancellation_token;
    quell::ThreadPool* pool = co_await quell::this_coro::pool;
    seen += (!token.cancelled() && pool != nullptr) ? 1 : 0;
  }
  const Counts counts = since(before);
  if (seen != kAwaits) std::abort();
  co_return counts;
}

// C7: kWhenAnys co_awaits of when_any(ready, sleeper), when_any(sleeper,
// ready) or when_any(ready, as_result sleeper). Aborts unless the ready
// child won every time and every sleeper that started has ended.
using quell_bench::WhenAnyForm;

template <WhenAnyForm Form>
quell::Task<Counts> when_any_awaits() {
  quell_bench::SleeperCounts sleepers;
  long won = 0;
  Counts before;
  for (long i = 0; i < kWarmUp + kWhenAnys; ++i) {
    if (i == kWarmUp) before = now();
    const auto winner = co_await quell_bench::quell_when_any<Form>(&sleepers, 1);
    won += quell_bench::ready_value<Form>(winner);
    if (sleepers.started != sleepers.ended) std::abort();
  }
  const Counts counts = since(before);
  if (won != kWarmUp + kWhenAnys) std::abort();
  co_return counts;
}

void print_when_any(const char* what, Counts counts) {
  const auto per = [](long n) { return static_cast<double>(n) / static_cast<double>(kWhenAnys); };
  std::printf("C7 %s heap %.4f blocks %.4f exceptions %.4f\n", what, per(counts.heap),
              per(counts.blocks), per(counts.exceptions));
}

void print(const char* what, Counts counts, long awaits) {
  std::printf("C3 %s heap %.4f blocks %.4f\n", what,
              static_cast<double>(counts.heap) / static_cast<double>(awaits),
              static_cast<double>(counts.blocks) / static_cast<double>(awaits));
}

quell_bench::FloorTask<int> floor_trivial() { co_return 0; }
quell::Task<void> quell_trivial_void() { co_return; }
quell::Task<int> quell_trivial_int() { co_return 0; }

}  // namespace

int main() {
  {
    quell::ThreadPool pool(2);
    print("task", pool.submit(task_awaits()).get(), kAwaits);
    print("future_ready", pool.submit(future_ready_awaits(pool)).get(), kAwaits);
    print("future_pending", pool.submit(future_pending_awaits(pool)).get(), kSleeps);
    print("sleep_zero", pool.submit(sleep_zero_awaits()).get(), kAwaits);
    print("sleep_50us", pool.submit(sleep_short_awaits()).get(), kSleeps);
    print("schedule", pool.submit(schedule_awaits(pool)).get(), kAwaits);
    print("yield", pool.submit(yield_awaits()).get(), kAwaits);
    print("this_coro", pool.submit(this_coro_awaits()).get(), 2 * kAwaits);
    print_when_any("when_any", pool.submit(when_any_awaits<WhenAnyForm::ready_first>()).get());
    print_when_any("when_any_sleeper_first",
                   pool.submit(when_any_awaits<WhenAnyForm::sleeper_first>()).get());
    print_when_any("when_any_no_throw", pool.submit(when_any_awaits<WhenAnyForm::no_throw>()).get());
  }

  std::size_t floor_frame = 0, quell_void_frame = 0, quell_int_frame = 0;
  {
    auto task = floor_trivial();
    floor_frame = last_heap_size.load();
  }
  {
    auto task = quell_trivial_void();
    quell_void_frame = last_block_size.load();
  }
  {
    auto task = quell_trivial_int();
    quell_int_frame = last_block_size.load();
  }
  std::printf("C10 floor_frame_int %zu\n", floor_frame);
  std::printf("C10 quell_frame_void %zu\n", quell_void_frame);
  std::printf("C10 quell_frame_int %zu\n", quell_int_frame);
  std::printf("C10 frame_int_minus_floor %zd\n",
              static_cast<std::ptrdiff_t>(quell_int_frame) - static_cast<std::ptrdiff_t>(floor_frame));
  std::printf("C10 promise_int_minus_int %zu\n",
              sizeof(quell::detail::TaskPromise<int>) - sizeof(int));
  std::printf("C10 promise_base %zu\n", sizeof(quell::TaskPromiseBase));
  return 0;
}
