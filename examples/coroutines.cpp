// A request handler written as coroutines: handle_request awaits load_user,
// which awaits fetch_profile, which waits on slow I/O (a one-hour
// quell::sleep_for stands in for it). No thread is blocked while it waits,
// and the pool task's token reaches the innermost await by itself.
//
// 1. A request whose I/O is quick: it completes, every level cleans up.
// 2. A request stuck three levels deep in the hour-long wait: cancelled
//    from outside with handle.cancel(). The sleep ends at once, each level
//    unwinds in turn (RAII guards, and one level's cleanup awaited under
//    quell::shielded), and the task ends cancelled, well within a second.
//
// Exits 0 only if each behaved as described. docs/coroutines.md walks
// through it.

#include <quell/coro.hpp>
#include <quell/thread_pool.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Which levels ran their cleanup: one bit each.
constexpr unsigned kProfileClosed = 1;  // fetch_profile's guard
constexpr unsigned kUserReleased = 2;   // load_user's guard
constexpr unsigned kAuditWritten = 4;   // handle_request's shielded cleanup
constexpr unsigned kRequestDone = 8;    // handle_request's guard
constexpr unsigned kAll = kProfileClosed | kUserReleased | kAuditWritten | kRequestDone;

struct Request {
  int id = 0;
  Clock::duration io_time{};
  std::atomic<unsigned> cleaned{0};
  std::atomic<bool> in_io{false};  // set just before the slow wait
};

// Records its bit when its scope ends: normally, by an exception, or by
// co_yield quell::cancelled destroying the frame.
class Cleanup {
 public:
  Cleanup(Request& request, unsigned bit) : request_(request), bit_(bit) {}
  Cleanup(const Cleanup&) = delete;
  Cleanup& operator=(const Cleanup&) = delete;
  ~Cleanup() { request_.cleaned.fetch_or(bit_); }

 private:
  Request& request_;
  unsigned bit_;
};

quell::Task<std::string> fetch_profile(Request& request) {
  Cleanup closed(request, kProfileClosed);
  request.in_io.store(true);
  request.in_io.notify_all();
  co_await quell::sleep_for(request.io_time);  // throws OperationCancelled if cancelled
  co_return "profile of user " + std::to_string(request.id);
}

quell::Task<std::string> load_user(Request& request) {
  Cleanup released(request, kUserReleased);
  std::string profile = co_await fetch_profile(request);  // the token flows in
  co_return "{" + profile + "}";
}

// Cleanup that must itself await runs after the co_await, not in a catch
// handler (C++20 forbids co_await there): as_result turns the cancellation
// into a value, and shielded lets the cleanup's own await run although the
// token is cancelled.
quell::Task<void> write_audit(Request& request, const char* what) {
  co_await quell::yield();  // stands for an await a cleanup may need
  std::printf("   request %d: audit \"%s\"\n", request.id, what);
  request.cleaned.fetch_or(kAuditWritten);
}

quell::Task<std::string> handle_request(Request& request) {
  Cleanup done(request, kRequestDone);
  quell::Result<std::string> user = co_await quell::as_result(load_user(request));
  if (user.cancelled()) {
    co_await quell::shielded(write_audit(request, "cancelled"));
    co_yield quell::cancelled;  // ends the task cancelled, no exception
  }
  co_await write_audit(request, "served");
  co_return "200 " + std::move(user).value();
}

bool completes(quell::ThreadPool& pool) {
  std::puts("1. a request whose I/O takes 20 ms");
  Request request;
  request.id = 1;
  request.io_time = 20ms;
  auto reply = pool.submit(handle_request(request));
  const std::string body = reply.get();
  std::printf("   reply: %s; cleanup at every level: %s\n", body.c_str(),
              request.cleaned.load() == kAll ? "yes" : "no");
  return body == "200 {profile of user 1}" && request.cleaned.load() == kAll;
}

bool cancelled(quell::ThreadPool& pool) {
  std::puts("2. a request stuck in an hour of I/O, cancelled from outside");
  Request request;
  request.id = 2;
  request.io_time = 1h;
  auto handle = pool.handle(handle_request(request));
  // Wait until it is parked in the sleep: the flag is set just before it,
  // and the pool counts the root as suspended as it parks (a window of a few
  // instructions, hence the short yield loop). No worker is blocked.
  request.in_io.wait(false);
  while (pool.stats().suspended != 1) std::this_thread::yield();
  std::printf("   three levels deep and suspended: %zu suspended, %zu running\n",
              pool.stats().suspended, pool.stats().running);
  const auto start = Clock::now();
  handle.cancel();
  // Generous guard: the wait ends within microseconds of the cancel.
  const bool ended = handle.wait_for(5s);
  const auto took = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - start);
  std::printf("   cancelled: %s after %lld us; cleanup at every level: %s\n",
              quell::to_string(handle.status()), static_cast<long long>(took.count()),
              request.cleaned.load() == kAll ? "yes" : "no");
  bool threw_cancelled = false;
  try {
    handle.get();
  } catch (const quell::OperationCancelled&) {
    threw_cancelled = true;
  }
  return ended && handle.status() == quell::TaskStatus::cancelled && threw_cancelled &&
         request.cleaned.load() == kAll;
}

}  // namespace

int main() {
  quell::ThreadPool pool(2);
  const bool ok = completes(pool) && cancelled(pool);
  std::puts(ok ? "ok" : "UNEXPECTED");
  return ok ? 0 : 1;
}
