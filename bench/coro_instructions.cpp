// Instruction counts for bench/callgrind.sh (API.md §10.9 C2): each function
// below awaits a child that co_returns at once kIterations times inside one
// root on this thread, so callgrind's inclusive Ir of the function divided
// by kIterations is instructions per co_await (the root's start and end
// included, spread over kIterations).
//
//   await              quell: root token default (sync_wait's own, never
//                      cancelled); floor task; asio::awaitable on an
//                      io_context run by this thread
//   await_cancellable  quell: the root's token from a CancellationSource
//
// The per-await code is the same whether the root runs on a sync_wait loop
// (here, so that callgrind charges it to these functions) or on a pool
// worker (coro_bench's C2): the child reads the root's token through a
// pointer either way.
//
// Function names are <peer>_<operation>; callgrind.sh looks them up by name,
// from the "peers" and "ops" lines this driver prints.

#include <cstdio>
#include <cstdlib>
#include <thread>

#include "coro_workloads.hpp"

namespace {

using namespace quell_bench;

constexpr long kIterations = 1'000'000;
constexpr long kExpected = kIterations * (kIterations - 1) / 2;

long failures = 0;

void expect(long sum) { failures += sum == kExpected ? 0 : 1; }

[[gnu::noinline]] void quell_await() { expect(quell::sync_wait(quell_await_loop(kIterations))); }
[[gnu::noinline]] void quell_await_cancellable() {
  quell::CancellationSource source;
  expect(quell::sync_wait(quell_await_loop(kIterations), source.token()));
}
[[gnu::noinline]] void floor_await() { expect(floor_await_loop(kIterations).run()); }
[[gnu::noinline]] void asio_await() { expect(run_asio_await_loop(kIterations)); }

}  // namespace

int main() {
  // As in cancellation_instructions: libstdc++ drops some atomics in a
  // process that never started a thread; a thread pool's process has.
  std::thread([] {}).join();

  // Warm-up, not measured: the frame caches (quell's per-thread blocks,
  // asio's recycling allocator, malloc's bins).
  quell::sync_wait(quell_await_loop(1000));
  {
    quell::CancellationSource source;
    quell::sync_wait(quell_await_loop(1000), source.token());
  }
  floor_await_loop(1000).run();
  run_asio_await_loop(1000);

  quell_await();
  quell_await_cancellable();
  floor_await();
  asio_await();

  if (failures != 0) {
    std::fprintf(stderr, "%ld loops returned a wrong sum\n", failures);
    return EXIT_FAILURE;
  }
  std::printf("peers quell floor asio\n");
  std::printf("ops await await_cancellable\n");
  std::printf("iterations %ld\n", kIterations);
  return 0;
}
