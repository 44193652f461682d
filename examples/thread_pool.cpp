// The pool, cancelled while you watch: two slow reports keep both workers
// busy, a batch of work queues up behind them, and then
//   1. the batch's token is cancelled: every queued future is ready at once,
//      with the workers still busy, and the batch's captures are freed then;
//   2. a queued task's deadline passes: it ends timed_out without running;
//   3. a running report is cancelled through its handle: it notices its
//      token at its next step and stops early.
//
// Exits 0 only if all of that happened as described.

#include <quell/quell.hpp>

#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <memory>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

const Clock::time_point start = Clock::now();

[[gnu::format(printf, 1, 2)]] void say(const char* format, ...) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  std::printf("[%5lld ms] ", static_cast<long long>(ms.count()));
  va_list args;
  va_start(args, format);
  std::vprintf(format, args);
  va_end(args);
  std::printf("\n");
  std::fflush(stdout);
}

// A capture whose destruction we can see.
struct Buffer {
  explicit Buffer(std::atomic<int>* freed_count) : freed(freed_count) {}
  Buffer(const Buffer&) = delete;
  ~Buffer() { freed->fetch_add(1); }
  std::atomic<int>* freed;
};

// A slow report: 20 steps of 50 ms, checking its token between steps.
int slow_report(const char* name, const quell::CancellationToken& token) {
  int step = 0;
  for (; step < 20 && !token.cancelled(); ++step) {
    std::this_thread::sleep_for(50ms);
    if (step % 5 == 4) say("%s: step %d of 20", name, step + 1);
  }
  if (token.cancelled()) say("%s: noticed its token after %d steps, stopping", name, step);
  return step;
}

}  // namespace

int main() {
  bool ok = true;
  quell::ThreadPoolConfig config;
  config.thread_count = 2;
  config.thread_name = "demo";
  quell::ThreadPool pool(config);

  say("two slow reports start on the two workers");
  std::atomic<int> started{0};
  auto report_a = pool.handle([&](quell::CancellationToken token) {
    started.fetch_add(1);
    return slow_report("report A", token);
  });
  auto report_b = pool.submit([&](quell::CancellationToken token) {
    started.fetch_add(1);
    return slow_report("report B", token);
  });
  while (started.load() < 2) std::this_thread::yield();

  say("a batch of 1000 tasks queues up behind them, sharing one token");
  quell::CancellationSource batch;
  std::atomic<int> freed{0};
  std::vector<quell::Future<int>> batch_futures;
  for (int i = 0; i < 1000; ++i) {
    auto buffer = std::make_unique<Buffer>(&freed);
    batch_futures.push_back(pool.submit([i, buffer = std::move(buffer)] { return i; },
                                        quell::TaskOptions().set_cancellation(batch.token())));
  }
  auto late = pool.submit([] { return 1; }, quell::TaskOptions().set_timeout(100ms));
  auto stats = pool.stats();
  say("queued: %zu, running: %zu", stats.queued, stats.running);

  std::this_thread::sleep_for(200ms);
  say("1. cancel the batch");
  const auto before = Clock::now();
  batch.request_cancel();
  const auto took = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - before);
  int ready = 0;
  for (auto& future : batch_futures) ready += future.ready() ? 1 : 0;
  say("   %d of 1000 futures ready (status %s) %lld us later; captures freed: %d;"
      " reports still running: %s",
      ready, quell::to_string(batch_futures.front().status()),
      static_cast<long long>(took.count()), freed.load(),
      report_b.ready() ? "no" : "yes");
  ok &= ready == 1000 && freed.load() == 1000 && !report_b.ready();
  try {
    batch_futures.front().get();
    ok = false;
  } catch (const quell::OperationCancelled&) {
    say("   get() on a cancelled future throws OperationCancelled");
  }

  say("2. the late task's 100 ms deadline has passed while it waited (status now: %s)",
      quell::to_string(late.status()));

  std::this_thread::sleep_for(100ms);
  say("3. cancel report A through its handle");
  report_a.cancel();
  const int a_steps = report_a.get();
  say("   report A returned after %d steps: %s (it chose to finish)", a_steps,
      quell::to_string(report_a.status()));
  ok &= a_steps < 20 && report_a.status() == quell::TaskStatus::completed;

  say("   report B runs to the end: %d steps", report_b.get());
  late.wait();
  say("   the late task ended %s, without running", quell::to_string(late.status()));
  ok &= late.status() == quell::TaskStatus::timed_out;

  pool.wait_idle();
  stats = pool.stats();
  say("stats: submitted %llu, completed %llu, cancelled %llu, timed out %llu",
      static_cast<unsigned long long>(stats.submitted),
      static_cast<unsigned long long>(stats.completed),
      static_cast<unsigned long long>(stats.cancelled),
      static_cast<unsigned long long>(stats.timed_out));
  ok &= stats.cancelled == 1000 && stats.timed_out == 1 && stats.completed == 2;
  std::puts(ok ? "demo: the pool dropped, timed out and stopped work as asked"
               : "demo: FAILED");
  return ok ? 0 : 1;
}
