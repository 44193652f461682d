// Cancellation you can watch: a request handler copies a file chunk by chunk
// and polls its token between chunks. Its token is linked to two parents, the
// client's connection and the server's shutdown, so either can stop it, and
// the reason says which one did. A callback reacts the moment it happens.
//
// Exits 0 only if every handler stopped for the reason it was given.

#include <quell/cancellation.hpp>

#include <chrono>
#include <cstdio>
#include <latch>
#include <thread>

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

const Clock::time_point start = Clock::now();

template <class... Args>
void say(const char* who, const char* format, Args... args) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  std::printf("[%5lld ms] %-10s ", static_cast<long long>(ms.count()), who);
  std::printf(format, args...);
  std::printf("\n");
  std::fflush(stdout);
}

// Copies up to 100 chunks, stopping when the token is cancelled. Returns the
// number of chunks copied.
int copy_file(const char* who, const quell::CancellationToken& token, std::latch& started) {
  quell::CancellationCallback on_cancel(token, [&] {
    say(who, "callback: cancelled, reason = %s", to_string(token.reason()));
  });
  started.count_down();
  int chunks = 0;
  while (chunks < 100 && !token.cancelled()) {
    std::this_thread::sleep_for(20ms);  // a chunk of "work"
    if (++chunks % 5 == 0) say(who, "copied %d chunks", chunks);
  }
  say(who, "noticed the token, stopped after %d chunks", chunks);
  return chunks;
}

// One request: its token is linked to the client and to the server.
bool run_request(const char* who, quell::CancellationSource& client,
                 quell::CancellationSource& server, quell::CancellationSource& trigger,
                 quell::CancelReason why, quell::CancelReason expected) {
  quell::CancellationSource request =
      quell::CancellationSource::linked({client.token(), server.token()});
  const quell::CancellationToken token = request.token();
  std::latch started(1);
  int chunks = 0;
  std::thread handler([&] { chunks = copy_file(who, token, started); });
  started.wait();
  std::this_thread::sleep_for(230ms);
  say("main", "%s", trigger.token() == client.token() ? "client goes away" : "server shuts down");
  trigger.request_cancel(why);
  handler.join();
  const bool ok = token.reason() == expected && chunks < 100;
  say(who, ok ? "ok: stopped for the expected reason" : "UNEXPECTED: reason %s", to_string(token.reason()));
  return ok;
}

}  // namespace

int main() {
  bool ok = true;
  {
    std::puts("--- 1. the client disconnects ---");
    quell::CancellationSource client;
    quell::CancellationSource server;
    ok &= run_request("request-1", client, server, client, quell::CancelReason::requested,
                      quell::CancelReason::requested);
  }
  {
    std::puts("--- 2. the server shuts down ---");
    quell::CancellationSource client;
    quell::CancellationSource server;
    ok &= run_request("request-2", client, server, server, quell::CancelReason::shutdown,
                      quell::CancelReason::shutdown);
  }
  {
    std::puts("--- 3. a token cancelled before registration runs the callback at once ---");
    quell::CancellationSource source;
    source.request_cancel(quell::CancelReason::deadline);
    bool ran = false;
    quell::CancellationCallback late(source.token(), [&] { ran = true; });
    say("main", "%s", ran ? "callback ran inline in its constructor" : "callback did NOT run");
    ok &= ran;
  }
  std::puts(ok ? "demo: all handlers stopped as asked" : "demo: FAILED");
  return ok ? 0 : 1;
}
