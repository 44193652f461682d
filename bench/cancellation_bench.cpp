// quell's cancellation primitives against std::stop_* and raw atomics, same
// workload per peer (bench/peers.hpp). Repetitions are left to the command
// line, e.g. --benchmark_repetitions=9 --benchmark_report_aggregates_only=true.

#include <benchmark/benchmark.h>

#include <atomic>
#include <memory>
#include <thread>

#include "peers.hpp"

namespace {

using namespace quell_bench;

template <class Peer>
void bm_poll(benchmark::State& state) {
  typename Peer::source source;
  auto token = Peer::token_of(source);
  for (auto _ : state) poll_once<Peer>(token);
}

void bm_poll_raw(benchmark::State& state) {
  auto flag = std::make_unique<std::atomic<bool>>(false);
  for (auto _ : state) raw_poll_once(*flag);
}

void bm_poll_raw_indirect(benchmark::State& state) {
  auto flag = std::make_unique<std::atomic<bool>>(false);
  std::atomic<bool>* pointer = flag.get();
  for (auto _ : state) raw_indirect_poll_once(pointer);
}

template <class Peer>
void bm_token_copy(benchmark::State& state) {
  typename Peer::source source;
  auto token = Peer::token_of(source);
  for (auto _ : state) copy_once(token);
}

void bm_token_copy_raw(benchmark::State& state) {
  auto flag = std::make_shared<std::atomic<bool>>(false);
  for (auto _ : state) copy_once(flag);
}

template <class Peer>
void bm_source_create_destroy(benchmark::State& state) {
  for (auto _ : state) source_create_destroy_once<Peer>();
}

template <class Peer>
void bm_callback_register_deregister(benchmark::State& state) {
  typename Peer::source source;
  const auto token = Peer::token_of(source);
  int count = 0;
  for (auto _ : state) callback_register_deregister_once<Peer>(token, &count);
}

template <class Peer, std::size_t N, bool Cancel>
void bm_create_register(benchmark::State& state) {
  int count = 0;
  for (auto _ : state) create_register_once<Peer, N, Cancel>(&count);
}

}  // namespace

BENCHMARK_TEMPLATE(bm_poll, quell_peer)->Name("BM_Poll/quell");
BENCHMARK_TEMPLATE(bm_poll, std_peer)->Name("BM_Poll/std_stop_token");
BENCHMARK(bm_poll_raw)->Name("BM_Poll/raw_atomic");
BENCHMARK(bm_poll_raw_indirect)->Name("BM_Poll/raw_atomic_via_pointer");

BENCHMARK_TEMPLATE(bm_token_copy, quell_peer)->Name("BM_TokenCopy/quell");
BENCHMARK_TEMPLATE(bm_token_copy, std_peer)->Name("BM_TokenCopy/std_stop_token");
BENCHMARK(bm_token_copy_raw)->Name("BM_TokenCopy/raw_shared_ptr");

BENCHMARK_TEMPLATE(bm_source_create_destroy, quell_peer)->Name("BM_SourceCreateDestroy/quell");
BENCHMARK_TEMPLATE(bm_source_create_destroy, std_peer)
    ->Name("BM_SourceCreateDestroy/std_stop_source");

BENCHMARK_TEMPLATE(bm_callback_register_deregister, quell_peer)
    ->Name("BM_CallbackRegisterDeregister/quell");
BENCHMARK_TEMPLATE(bm_callback_register_deregister, std_peer)
    ->Name("BM_CallbackRegisterDeregister/std_stop_callback");

// Whole scope: create source, register N, destroy all (no cancel).
BENCHMARK_TEMPLATE(bm_create_register, quell_peer, 0, false)
    ->Name("BM_CreateRegisterDestroy/quell/0");
BENCHMARK_TEMPLATE(bm_create_register, std_peer, 0, false)
    ->Name("BM_CreateRegisterDestroy/std_stop_source/0");
BENCHMARK_TEMPLATE(bm_create_register, quell_peer, 1, false)
    ->Name("BM_CreateRegisterDestroy/quell/1");
BENCHMARK_TEMPLATE(bm_create_register, std_peer, 1, false)
    ->Name("BM_CreateRegisterDestroy/std_stop_source/1");
BENCHMARK_TEMPLATE(bm_create_register, quell_peer, 16, false)
    ->Name("BM_CreateRegisterDestroy/quell/16");
BENCHMARK_TEMPLATE(bm_create_register, std_peer, 16, false)
    ->Name("BM_CreateRegisterDestroy/std_stop_source/16");

// Whole scope with a cancel that runs the N callbacks before they are
// destroyed: create + register + request_cancel/request_stop + destroy.
BENCHMARK_TEMPLATE(bm_create_register, quell_peer, 0, true)
    ->Name("BM_CreateRegisterCancel/quell/0");
BENCHMARK_TEMPLATE(bm_create_register, std_peer, 0, true)
    ->Name("BM_CreateRegisterCancel/std_stop_source/0");
BENCHMARK_TEMPLATE(bm_create_register, quell_peer, 1, true)
    ->Name("BM_CreateRegisterCancel/quell/1");
BENCHMARK_TEMPLATE(bm_create_register, std_peer, 1, true)
    ->Name("BM_CreateRegisterCancel/std_stop_source/1");
BENCHMARK_TEMPLATE(bm_create_register, quell_peer, 16, true)
    ->Name("BM_CreateRegisterCancel/quell/16");
BENCHMARK_TEMPLATE(bm_create_register, std_peer, 16, true)
    ->Name("BM_CreateRegisterCancel/std_stop_source/16");

int main(int argc, char** argv) {
  // libstdc++ skips the atomics in shared_ptr's count and in stop_callback's
  // completion signal while the process has never started a thread. A thread
  // pool's process has: start one so every peer pays its multi-threaded cost.
  std::thread([] {}).join();

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
