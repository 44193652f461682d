// Instruction counts for bench/callgrind.sh: each function below runs one
// timer operation of one peer (bench/timer_peers.hpp: arm an hour away,
// cancel, see it resolved) kIterations times, so callgrind's inclusive Ir of
// the function divided by kIterations is instructions per operation on the
// calling thread. Every peer here resolves inline, so that is all of it
// (asio runs its aborted handler through io_context::poll() on this thread).
//
// insert_cancel: no other timer armed; insert_cancel_1k: 1,000 standing
// timers armed earlier (timer_peers.hpp).
//
// Function names are <peer>_<operation>; callgrind.sh looks them up by name,
// from the "peers" and "ops" lines this driver prints.

#include <cstddef>
#include <cstdio>
#include <cstdlib>

#include "timer_peers.hpp"

namespace {

using namespace quell_bench;

constexpr long kIterations = 100'000;
constexpr std::size_t kStanding = 1000;

// Built before any measured function runs, so that their threads' start-up
// and the standing timers are not counted.
template <class Peer>
struct Peers {
  Peer alone{0};
  Peer busy{kStanding};
};
Peers<QuellTimer>* quell_timers = nullptr;
Peers<QuellTokenOnly>* quell_token_only_timers = nullptr;
Peers<AsioTimer<true>>* asio_timers = nullptr;
Peers<NaiveTimers>* naive_timers = nullptr;

long failures = 0;

template <class Peer>
inline void repeat(Peer& peer, long iterations) {
  for (long i = 0; i < iterations; ++i) failures += peer.insert_cancel_once() ? 0 : 1;
}

// Warm-up, not measured: free lists, the timer heaps' capacity.
template <class Peer>
void warm_up(Peers<Peer>& peers) {
  repeat(peers.alone, 1000);
  repeat(peers.busy, 1000);
}

[[gnu::noinline]] void quell_insert_cancel() { repeat(quell_timers->alone, kIterations); }
[[gnu::noinline]] void quell_insert_cancel_1k() { repeat(quell_timers->busy, kIterations); }
[[gnu::noinline]] void quell_token_only_insert_cancel() {
  repeat(quell_token_only_timers->alone, kIterations);
}
[[gnu::noinline]] void asio_insert_cancel() { repeat(asio_timers->alone, kIterations); }
[[gnu::noinline]] void asio_insert_cancel_1k() { repeat(asio_timers->busy, kIterations); }
[[gnu::noinline]] void naive_insert_cancel() { repeat(naive_timers->alone, kIterations); }
[[gnu::noinline]] void naive_insert_cancel_1k() { repeat(naive_timers->busy, kIterations); }

}  // namespace

int main() {
  Peers<QuellTimer> quell_peers;
  Peers<QuellTokenOnly> token_only_peers;
  Peers<AsioTimer<true>> asio_peers;
  Peers<NaiveTimers> naive_peers;
  quell_timers = &quell_peers;
  quell_token_only_timers = &token_only_peers;
  asio_timers = &asio_peers;
  naive_timers = &naive_peers;
  warm_up(quell_peers);
  warm_up(token_only_peers);
  warm_up(asio_peers);
  warm_up(naive_peers);

  quell_insert_cancel();
  quell_insert_cancel_1k();
  quell_token_only_insert_cancel();
  asio_insert_cancel();
  asio_insert_cancel_1k();
  naive_insert_cancel();
  naive_insert_cancel_1k();

  if (failures != 0) {
    std::fprintf(stderr, "%ld operations were not resolved as cancelled\n", failures);
    return EXIT_FAILURE;
  }
  std::printf("peers quell asio naive quell_token_only\n");
  std::printf("ops insert_cancel insert_cancel_1k\n");
  std::printf("iterations %ld\n", kIterations);
  return 0;
}
