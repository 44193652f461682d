// The parking lot (src/parking.hpp): no lost wake-up when a worker sleeps
// just after another worker took the work it was woken for.
#include "parking.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <utility>

#include "../sanitized.hpp"

namespace quell {
namespace {

using Clock = std::chrono::steady_clock;

// On the std::atomic wait fallback (QUELL_FUTEX 0) a round took up to 1 ms
// beside another busy process, and 3.7 ms under ASan beside another test
// (libstdc++'s wait spins and yields before it sleeps), against about 20 us
// on the futex; fewer rounds keep it in bounds.
constexpr long kParkingRounds = QUELL_FUTEX ? (test::kSanitized ? 50'000 : 300'000)
                                            : (test::kSanitized ? 3'000 : 10'000);

// A model of how workers use the parking lot (src/parking.hpp), with the
// real class: W parks exactly as run_worker() does; X is a worker that is
// searching (not parked) and takes the first item of each round, then runs
// a long task; N submits two items per round. The second item can only be
// run by W, so its notify must wake W. Regression: prepare_wait() used to
// clear the pending-wake flag before reading its key, so a notify landing in
// between left the flag set with W asleep, and later notifies skipped their
// wake (a TSan-build hang inside block_workers()). Before the fix this model
// stranded a round on most runs.
TEST(Parking, AWorkerThatSleepsAfterAnotherTookTheWorkStillWakesForTheNextSubmission) {
  detail::Parking parking;
  std::atomic<int> items{0};  // submitted, not yet taken
  std::atomic<long> round_no{0};
  std::atomic<long> x_round{-1};  // the round whose first item X took
  std::atomic<bool> stop{false};
  const auto take = [&items] {
    int available = items.load();
    while (available > 0) {
      if (items.compare_exchange_weak(available, available - 1)) return true;
    }
    return false;
  };
  std::thread w([&] {  // run_worker()'s parking steps
    bool woke = false;
    while (!stop.load()) {
      if (take()) {
        if (std::exchange(woke, false)) parking.notify_one();
        continue;
      }
      const std::uint32_t key = parking.prepare_wait();
      if (take()) {
        parking.cancel_wait();
        parking.notify_one();
        continue;
      }
      if (stop.load()) {
        parking.cancel_wait();
        return;
      }
      parking.commit_wait(key);
      woke = true;
    }
  });
  std::thread x([&] {  // searching, never parked; one task per round, then "busy"
    while (!stop.load()) {
      const long round = round_no.load();
      if (x_round.load() != round && take()) x_round.store(round);
    }
  });
  long stranded_round = -1;
  for (long round = 0; round < kParkingRounds && stranded_round < 0; ++round) {
    round_no.store(round);
    items.fetch_add(1);
    parking.notify_one();
    while (items.load() != 0) {  // X (or W) takes it; spin, to keep the timing tight
    }
    items.fetch_add(1);
    parking.notify_one();
    const auto until = Clock::now() + std::chrono::seconds(5);
    while (items.load() != 0) {
      if (Clock::now() > until) {
        stranded_round = round;
        break;
      }
    }
  }
  stop.store(true);
  items.fetch_add(1'000'000);
  parking.notify_all();
  w.join();
  x.join();
  EXPECT_EQ(stranded_round, -1) << "a submission stayed queued with the parked worker asleep";
}

}  // namespace
}  // namespace quell
