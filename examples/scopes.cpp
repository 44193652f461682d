// Structured concurrency with Scope: a request fans out to three backends.
//
// 1. One backend fails: the scope cancels its siblings (their tokens say
//    "failure"), and wait() rethrows the failure.
// 2. The client goes away: cancelling the request's scope cancels the child
//    scope each backend opened for its retries, and everything in it.
//
// Exits 0 only if both went as described. docs/scopes.md walks through it.

#include <quell/scope.hpp>
#include <quell/thread_pool.hpp>

#include <atomic>
#include <cstdio>
#include <latch>
#include <stdexcept>
#include <string>

namespace {

// A backend call that polls its token while it "works".
void call_backend(const char* name, const quell::CancellationToken& token, std::latch& started,
                  std::atomic<int>& saw_failure) {
  started.count_down();
  while (!token.cancelled()) {
  }  // a long computation, checking its token as it goes
  if (token.reason() == quell::CancelReason::failure) ++saw_failure;
  std::printf("  %s: stopped, a sibling failed\n", name);
}

bool fan_out_with_a_failure(quell::ThreadPool& pool) {
  std::puts("request 1: three backends, one of them down");
  std::latch started(2);
  std::atomic<int> saw_failure{0};
  quell::Scope request(pool);
  request.spawn([&](quell::CancellationToken token) {
    call_backend("users", token, started, saw_failure);
  });
  request.spawn([&](quell::CancellationToken token) {
    call_backend("orders", token, started, saw_failure);
  });
  request.spawn([&] {
    started.wait();  // fail once the others are busy
    throw std::runtime_error("billing is down");
  });
  try {
    request.wait();
  } catch (const std::exception& failure) {
    std::printf("  wait() rethrew: %s\n", failure.what());
    return saw_failure == 2 && request.cancellation_token().reason() == quell::CancelReason::failure;
  }
  return false;
}

bool client_goes_away(quell::ThreadPool& pool) {
  std::puts("request 2: the client disconnects while backends retry");
  std::latch retrying(2);
  std::atomic<int> stopped{0};
  quell::Scope request(pool);
  for (const char* name : {"search", "ads"}) {
    request.spawn([&, name] {
      quell::Scope retries(request);  // a child: cancelled with the request
      retries.spawn([&, name](quell::CancellationToken token) {
        retrying.count_down();
        while (!token.cancelled()) {
        }
        std::printf("  %s: retry loop cancelled (reason %s)\n", name,
                    token.reason() == quell::CancelReason::requested ? "requested" : "other");
        ++stopped;
      });
    });  // ~Scope joins the retries before the outer task ends
  }
  retrying.wait();
  std::puts("  client gone: request.cancel()");
  request.cancel();
  request.wait();  // a cancellation is not a failure: nothing to rethrow
  return stopped == 2;
}

}  // namespace

int main() {
  quell::ThreadPool pool(4);
  const bool failure_ok = fan_out_with_a_failure(pool);
  const bool cancel_ok = client_goes_away(pool);
  std::printf("%s\n", failure_ok && cancel_ok ? "ok" : "UNEXPECTED");
  return failure_ok && cancel_ok ? 0 : 1;
}
