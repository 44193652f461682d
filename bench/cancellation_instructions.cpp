// Instruction counts for bench/callgrind.sh: each function below runs one
// operation of one peer kIterations times, so callgrind's inclusive Ir of the
// function divided by kIterations is instructions per operation (set-up and
// loop control included; both are the same for every peer).
//
// Function names are <peer>_<operation>; callgrind.sh looks them up by name.

#include <atomic>
#include <cstdio>
#include <memory>
#include <thread>

#include "peers.hpp"

namespace {

using namespace quell_bench;

constexpr long kIterations = 1'000'000;

template <class F>
inline void repeat(F op) {
  for (long i = 0; i < kIterations; ++i) op();
}

template <class Peer>
inline void poll() {
  typename Peer::source source;
  auto token = Peer::token_of(source);
  repeat([&] { poll_once<Peer>(token); });
}

template <class Peer>
inline void token_copy() {
  typename Peer::source source;
  auto token = Peer::token_of(source);
  repeat([&] { copy_once(token); });
}

template <class Peer>
inline void callback_register_deregister() {
  typename Peer::source source;
  const auto token = Peer::token_of(source);
  int count = 0;
  repeat([&] { callback_register_deregister_once<Peer>(token, &count); });
}

template <class Peer, std::size_t N, bool Cancel>
inline void create_register() {
  int count = 0;
  repeat([&] { create_register_once<Peer, N, Cancel>(&count); });
}

[[gnu::noinline]] void quell_poll() { poll<quell_peer>(); }
[[gnu::noinline]] void std_poll() { poll<std_peer>(); }
[[gnu::noinline]] void raw_poll() {
  auto owner = std::make_unique<std::atomic<bool>>(false);
  // Captured by value: a reference to `owner` would make the memory clobber
  // reload the pointer each time, and this peer is the direct load.
  std::atomic<bool>* flag = owner.get();
  repeat([flag] { raw_poll_once(*flag); });
}

[[gnu::noinline]] void quell_token_copy() { token_copy<quell_peer>(); }
[[gnu::noinline]] void std_token_copy() { token_copy<std_peer>(); }
[[gnu::noinline]] void raw_token_copy() {
  auto flag = std::make_shared<std::atomic<bool>>(false);
  repeat([&] { copy_once(flag); });
}

[[gnu::noinline]] void quell_source_create_destroy() {
  repeat([] { source_create_destroy_once<quell_peer>(); });
}
[[gnu::noinline]] void std_source_create_destroy() {
  repeat([] { source_create_destroy_once<std_peer>(); });
}

[[gnu::noinline]] void quell_callback_register_deregister() {
  callback_register_deregister<quell_peer>();
}
[[gnu::noinline]] void std_callback_register_deregister() {
  callback_register_deregister<std_peer>();
}

[[gnu::noinline]] void quell_create_register_destroy_0() { create_register<quell_peer, 0, false>(); }
[[gnu::noinline]] void std_create_register_destroy_0() { create_register<std_peer, 0, false>(); }
[[gnu::noinline]] void quell_create_register_destroy_1() { create_register<quell_peer, 1, false>(); }
[[gnu::noinline]] void std_create_register_destroy_1() { create_register<std_peer, 1, false>(); }
[[gnu::noinline]] void quell_create_register_destroy_16() { create_register<quell_peer, 16, false>(); }
[[gnu::noinline]] void std_create_register_destroy_16() { create_register<std_peer, 16, false>(); }

[[gnu::noinline]] void quell_create_register_cancel_0() { create_register<quell_peer, 0, true>(); }
[[gnu::noinline]] void std_create_register_cancel_0() { create_register<std_peer, 0, true>(); }
[[gnu::noinline]] void quell_create_register_cancel_1() { create_register<quell_peer, 1, true>(); }
[[gnu::noinline]] void std_create_register_cancel_1() { create_register<std_peer, 1, true>(); }
[[gnu::noinline]] void quell_create_register_cancel_16() { create_register<quell_peer, 16, true>(); }
[[gnu::noinline]] void std_create_register_cancel_16() { create_register<std_peer, 16, true>(); }

}  // namespace

int main() {
  // As in cancellation_bench: libstdc++ drops some atomics in a process that
  // never started a thread; a thread pool's process has.
  std::thread([] {}).join();

  quell_poll();
  std_poll();
  raw_poll();
  quell_token_copy();
  std_token_copy();
  raw_token_copy();
  quell_source_create_destroy();
  std_source_create_destroy();
  quell_callback_register_deregister();
  std_callback_register_deregister();
  quell_create_register_destroy_0();
  std_create_register_destroy_0();
  quell_create_register_destroy_1();
  std_create_register_destroy_1();
  quell_create_register_destroy_16();
  std_create_register_destroy_16();
  quell_create_register_cancel_0();
  std_create_register_cancel_0();
  quell_create_register_cancel_1();
  std_create_register_cancel_1();
  quell_create_register_cancel_16();
  std_create_register_cancel_16();

  std::printf("iterations %ld\n", kIterations);
  return 0;
}
