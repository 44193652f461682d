// A program built against an installed quell, once through its CMake
// package and once through pkg-config (.ci/run). The only worker runs a task
// that sleeps until cancelled, a second task queues behind it, and one
// request_cancel() ends both: the queued one is dropped before
// request_cancel() returns, the running one sees its token.
#include <quell/quell.hpp>

#include <chrono>
#include <cstdio>
#include <latch>

int main() {
  quell::ThreadPool pool(1);
  quell::CancellationSource source;
  const auto options = quell::TaskOptions().set_cancellation(source.token());

  std::latch started(1);
  auto running = pool.submit(
      [&started](quell::CancellationToken token) {
        started.count_down();
        // False once the token is cancelled: woken from inside request_cancel().
        return quell::sleep_until(std::chrono::steady_clock::time_point::max(), token) ? 1 : 2;
      },
      options);
  auto queued = pool.submit([](quell::CancellationToken) { return 3; }, options);
  started.wait();  // the worker is busy: `queued` stays queued

  source.request_cancel();
  const bool dropped = queued.status() == quell::TaskStatus::cancelled;
  bool threw = false;
  try {
    queued.get();
  } catch (const quell::OperationCancelled&) {
    threw = true;
  }
  const int seen = running.get();
  std::printf("queued task: %s; running task: %s\n",
              dropped && threw ? "dropped, get() threw OperationCancelled" : "NOT DROPPED",
              seen == 2 ? "saw its token cancelled" : "DID NOT SEE ITS TOKEN");
  return dropped && threw && seen == 2 ? 0 : 1;
}
