// Racing, fanning out and timing out with quell's combinators, on a small
// request server. No sockets: each connection is a script of request lines,
// read one at a time; when its script runs out, the connection idles, as a
// client that keeps its socket open does.
//
//   server: when_any ─┬─ when_all ─┬─ serve(conn 0)  per line: with_timeout(handle(line), 50 ms)
//                     │            ├─ serve(conn 1)    "user K": when_all(find_name(K), find_plan(K))
//                     │            └─ serve(conn 2)    "slow":   an hour of sleep_for
//                     └─ shutdown.wait()
//
// What it teaches:
// * with_timeout(handle(line), 50ms): "slow" is cancelled at its deadline
//   and answered "ERR timeout". (Had a value arrived as the deadline fired,
//   it would be returned, not dropped.)
// * when_all(find_name(k), find_plan(k)): both lookups run in parallel. For
//   an unknown user the plan lookup would take an hour; the name lookup's
//   failure cancels it at once and is rethrown: "ERR no user K".
// * when_any(serving, shutdown.wait()): once main sets the shutdown event,
//   it wins; every connection's idle wait is cancelled, and each one's
//   cleanup (its "closed" line) has run before the when_any resumes:
//   nothing the server started outlives the co_await that started it.
// * A third-party awaitable (Event, from docs/coroutines.md) takes part
//   through the stoppable-awaitable protocol.
//
// Exits 0 only if every reply is as expected and every connection closed
// before the server's when_any returned.

#include <quell/coro.hpp>
#include <quell/thread_pool.hpp>
#include <quell/when.hpp>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdio>
#include <latch>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using namespace std::chrono_literals;

// A one-shot event one coroutine can wait for; the walk-through of its
// protocol is in docs/coroutines.md ("A stoppable awaitable of your own").
class Event {
 public:
  void set() noexcept {  // from any thread, once
    // acq_rel: publishes set() to a later await_ready, takes a waiter's fields.
    void* old = state_.exchange(kSet, std::memory_order_acq_rel);
    if (old != nullptr && old != kSet) static_cast<Waiter*>(old)->take(false);
  }
  auto wait() noexcept { return Waiter(*this); }

 private:
  static inline int set_tag;
  static constexpr void* kSet = &set_tag;

  class Waiter {
   public:
    explicit Waiter(Event& e) noexcept : event_(&e) {}
    // Movable until awaited, so that a combinator can take it as a child.
    Waiter(Waiter&& unawaited) noexcept : event_(unawaited.event_) {}
    bool await_ready() const noexcept {
      // acquire: pairs with set()'s exchange.
      return event_->state_.load(std::memory_order_acquire) == kSet;
    }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h, const quell::CancellationToken& token) {
      frame_ = h.address();
      post_ = [](void* f) noexcept { quell::post_resume(std::coroutine_handle<P>::from_address(f)); };
      void* none = nullptr;
      // acq_rel: publishes frame_ and post_ to whoever takes the waiter out.
      if (!event_->state_.compare_exchange_strong(none, this, std::memory_order_acq_rel)) {
        return false;  // set() came first
      }
      callback_.emplace(token, Cancel{this});  // runs here if already cancelled
      // acq_rel: the second of take() and this decides; true = stay suspended.
      return (bits_.fetch_or(kSuspended, std::memory_order_acq_rel) & kTaken) == 0;
    }
    void await_resume() {
      callback_.reset();  // waits for a callback running elsewhere
      if (cancelled_) throw quell::OperationCancelled();
    }
    void take(bool cancelled) noexcept {  // only by the side that withdrew the wait
      cancelled_ = cancelled;
      // acq_rel: the first side to arrive leaves, the second resumes.
      if (bits_.fetch_or(kTaken, std::memory_order_acq_rel) & kSuspended) post_(frame_);
    }

   private:
    struct Cancel {
      Waiter* w;
      void operator()() noexcept {  // withdraw first: set() may have taken it
        void* me = w;
        // acq_rel: exactly one of set() and this finds the waiter.
        if (w->event_->state_.compare_exchange_strong(me, nullptr, std::memory_order_acq_rel)) {
          w->take(true);
        }
      }
    };
    static constexpr unsigned kTaken = 1, kSuspended = 2;
    Event* event_;
    void* frame_ = nullptr;
    void (*post_)(void*) noexcept = nullptr;
    std::atomic<unsigned> bits_{0};
    bool cancelled_ = false;
    std::optional<quell::CancellationCallback<Cancel>> callback_;
  };

  std::atomic<void*> state_{nullptr};  // null, kSet, or the one Waiter
};

constexpr auto kRequestTimeout = 50ms;

struct Connection {
  int id = 0;
  std::vector<std::string> lines;    // what the client sends
  std::vector<std::string> replies;  // what the server answered, in order
  bool closed = false;               // set by serve's cleanup
};

// The user directory: ids 1-3 exist.
quell::Task<std::string> find_name(int user) {
  static const char* const kNames[] = {"ada", "grace", "edsger"};
  if (user < 1 || user > 3) throw std::out_of_range("no user " + std::to_string(user));
  co_return kNames[user - 1];
}

// The billing backend answers known users at once; for unknown ones it
// would search for an hour, unless cancelled.
quell::Task<std::string> find_plan(int user) {
  if (user < 1 || user > 3) co_await quell::sleep_for(1h);
  co_return user == 1 ? "pro" : "free";
}

quell::Task<std::string> handle(const std::string& line) {
  if (line == "slow") {
    co_await quell::sleep_for(1h);
    co_return "done";
  }
  if (line.starts_with("user ")) {
    const int user = std::stoi(line.substr(5));
    auto [name, plan] = co_await quell::when_all(find_name(user), find_plan(user));
    co_return name + " (" + plan + ")";
  }
  throw std::invalid_argument("bad request '" + line + "'");
}

// Every line gets exactly one reply: the answer or the error. Then it idles
// until cancelled, and its cleanup runs however the coroutine ends.
quell::Task<void> serve(Connection& conn, std::latch& replied) {
  struct Close {
    Connection& conn;
    ~Close() {
      conn.closed = true;
      std::printf("   conn %d: closed\n", conn.id);
    }
  } close{conn};
  for (const std::string& line : conn.lines) {
    co_await quell::yield();  // lets the other connections take turns
    std::string reply;
    try {
      reply = co_await quell::with_timeout(handle(line), kRequestTimeout);
    } catch (const quell::TaskError& e) {
      reply = e.code() == quell::Errc::timed_out ? "ERR timeout" : "ERR " + e.code().message();
    } catch (const std::exception& e) {
      reply = std::string("ERR ") + e.what();
    }
    std::printf("   conn %d: %-8s -> %s\n", conn.id, line.c_str(), reply.c_str());
    conn.replies.push_back(std::move(reply));
    replied.count_down();
  }
  co_await quell::sleep_for(24h);  // an idle client: only the shutdown ends it
}

// The index of the when_any's winner: 1 for the shutdown event. Every
// connection must have closed by the time the when_any resumes.
quell::Task<std::size_t> run_server(std::vector<Connection>& conns, Event& shutdown,
                                    std::latch& replied) {
  std::vector<quell::Task<void>> serving;
  for (Connection& conn : conns) serving.push_back(serve(conn, replied));
  auto winner = co_await quell::when_any(quell::when_all(std::move(serving)), shutdown.wait());
  bool all_closed = true;
  for (const Connection& conn : conns) all_closed = all_closed && conn.closed;
  std::printf("   when_any resumed: winner %zu, every connection closed: %s\n", winner.index(),
              all_closed ? "yes" : "no");
  co_return all_closed ? winner.index() : std::size_t(-1);
}

}  // namespace

int main() {
  std::vector<Connection> conns{
      {0, {"user 1", "slow", "user 2"}, {}, false},
      {1, {"user 7", "user 3"}, {}, false},
      {2, {"hello", "user 1"}, {}, false},
  };
  const std::vector<std::vector<std::string>> expected{
      {"ada (pro)", "ERR timeout", "grace (free)"},
      {"ERR no user 7", "edsger (free)"},
      {"ERR bad request 'hello'", "ada (pro)"},
  };
  std::size_t lines = 0;
  for (const Connection& conn : conns) lines += conn.lines.size();

  quell::ThreadPool pool(2);
  Event shutdown;
  std::latch replied(static_cast<std::ptrdiff_t>(lines));
  std::puts("serving three connections");
  auto server = pool.submit(run_server(conns, shutdown, replied));
  replied.wait();
  std::puts("every request answered; the connections idle. shutdown:");
  shutdown.set();
  // A generous guard: the server ends within microseconds of the set().
  bool ok = server.wait_for(10s) && server.get() == 1;
  for (std::size_t i = 0; i < conns.size(); ++i) ok = ok && conns[i].replies == expected[i];
  std::puts(ok ? "ok" : "UNEXPECTED");
  return ok ? 0 : 1;
}
