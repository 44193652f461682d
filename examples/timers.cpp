// Time in quell: delayed tasks, deadlines, and a periodic task.
//
// 1. submit_after: a reminder queued for 50 ms, and one cancelled before
//    it is due (dropped at once; nothing waits for its time).
// 2. Deadlines: with the only worker busy, a queued task times out at its
//    deadline, not when the worker gets to it; a running task sees its
//    token cancelled (reason deadline) and stops.
// 3. PeriodicTask: a heartbeat every 20 ms; one slow beat makes it skip the
//    slots it overran instead of bursting to catch up.
//
// Exits 0 only if each behaved as described. docs/timers.md walks through it.

#include <quell/periodic_task.hpp>
#include <quell/thread_pool.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <latch>
#include <thread>

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

long long ms_since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

bool delayed(quell::ThreadPool& pool) {
  std::puts("1. delayed tasks");
  const auto start = Clock::now();
  auto reminder = pool.submit_after(50ms, [start] { return ms_since(start); });
  quell::CancellationSource never_mind;
  auto dropped = pool.submit_after(1h, [] { return 0LL; },
                                   quell::TaskOptions().set_cancellation(never_mind.token()));
  never_mind.request_cancel();
  std::printf("   the 1 h one, cancelled: %s at once\n", quell::to_string(dropped.status()));
  const long long ran_at = reminder.get();
  std::printf("   the 50 ms one ran at %lld ms\n", ran_at);
  return ran_at >= 50 && dropped.status() == quell::TaskStatus::cancelled;
}

bool deadlines(quell::ThreadPool& pool) {
  std::puts("2. deadlines, with the only worker busy");
  const auto start = Clock::now();
  auto busy = pool.submit([](quell::CancellationToken token) {
    while (!token.cancelled()) std::this_thread::sleep_for(1ms);  // "work", polling
    return token.reason() == quell::CancelReason::deadline;
  }, quell::TaskOptions().set_timeout(300ms));
  auto queued = pool.submit([] {}, quell::TaskOptions().set_timeout(30ms));
  queued.wait();  // resolved by the timer, while the worker is still busy
  std::printf("   queued task: %s at %lld ms, the worker still busy: %s\n",
              quell::to_string(queued.status()), ms_since(start), busy.ready() ? "no" : "yes");
  const bool busy_saw_deadline = busy.get();
  std::printf("   running task: its token fired at its deadline, stopped at %lld ms\n",
              ms_since(start));
  return queued.status() == quell::TaskStatus::timed_out && busy_saw_deadline;
}

bool heartbeat(quell::ThreadPool& pool) {
  std::puts("3. a heartbeat every 20 ms; beat 3 takes 70 ms");
  const auto start = Clock::now();
  std::atomic<int> beats{0};
  std::latch five(5);
  quell::PeriodicTask beat(pool, 20ms, [&] {
    const int n = ++beats;
    std::printf("   beat %d at %lld ms\n", n, ms_since(start));
    if (n == 3) std::this_thread::sleep_for(70ms);
    if (n <= 5) five.count_down();
  });
  five.wait();
  beat.stop();
  beat.join();
  std::printf("   stopped: %llu beats, %llu slots skipped, none overlapping\n",
              static_cast<unsigned long long>(beat.ticks()),
              static_cast<unsigned long long>(beat.skipped_ticks()));
  return beat.ticks() >= 5 && beat.skipped_ticks() >= 3 && !beat.running();
}

}  // namespace

int main() {
  quell::ThreadPool pool(1);
  const bool ok = delayed(pool) && deadlines(pool) && heartbeat(pool);
  std::puts(ok ? "ok" : "UNEXPECTED");
  return ok ? 0 : 1;
}
