// A TCP echo server on 127.0.0.1, built from scopes, and shut down by
// cancelling one of them:
//
//   root scope ── accept loop task
//              └─ connection task ── child Scope conn(root) ── request task
//                                                              (with a timeout)
//
// Every line a client sends (at most kMaxLine bytes, then '\n') comes back
// as it was. The reply is computed by a task spawned into the connection's
// child scope with a per-request timeout; "sleep <ms>" is a slow request,
// answered "slept <ms>" after that long unless its token is cancelled first.
// Every request the server takes gets exactly one reply line: its answer,
// "ERR timeout" past its deadline, or "ERR shutdown" if the shutdown
// cancelled it first.
//
// SIGINT, SIGTERM or --seconds N cancel the root scope, and with it every
// child scope. Nothing waits for a timer to notice: each blocking poll()
// also watches a pipe that a CancellationCallback on its scope's token
// writes to. The accept loop stops (connections still in the listen backlog
// are refused). Each connection takes no new request, waits for the one in
// flight and writes its reply (the answer if its task finished, "ERR
// shutdown" if the cancellation stopped it), then closes gracefully: FIN
// first, then the client's FIN, so the client reads every reply and a clean
// EOF. main() joins the root scope, prints a summary and exits 0.
//
// Usage: echo_server [--port P] [--seconds N] [--timeout-ms T] [--demo]
//   --port P        0 (the default) picks a free port
//   --seconds N     cancel the root scope after N seconds
//   --timeout-ms T  the per-request deadline (default 500)
//   --demo          also run a client in-process and narrate the shutdown
//                   (--seconds defaults to 2); exits 0 only if every reply
//                   was right and every connection ended cleanly
//
// The first line printed is "listening on 127.0.0.1:PORT"; then the
// narration, the pool's metrics in Prometheus's text format, and last the
// summary. Linux or any POSIX system with poll().
//
// Reading order: what teaches quell comes first: the Waker (a token's
// cancellation as a pollable fd), the request task, the connection slots
// and the Server (root scope, a child scope per connection, the shutdown).
// Then the in-process demo client and main(). The POSIX plumbing (fds,
// poll(), sockets, signals, the blocking client the tests share) is in
// echo_net.hpp.

#include <quell/quell.hpp>

#include <poll.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "echo_net.hpp"  // the POSIX plumbing: fds, poll(), sockets, signals, the client

namespace {

using namespace std::chrono_literals;
using namespace echo;

constexpr std::size_t kMaxLine = 4096;        // bytes before the '\n'
constexpr std::size_t kMaxConnections = 32;   // each holds a pool worker while open
constexpr std::size_t kRequestWorkers = 2;    // workers left for request tasks
constexpr auto kMaxSleep = 60s;               // the longest "sleep <ms>" honoured
constexpr auto kSendGuard = 10s;              // a client that reads nothing cannot hold us
constexpr auto kLinger = 2s;                  // how long a close waits for the client's FIN

const Clock::time_point start_time = Clock::now();
bool narrate = false;  // set by --demo before any thread starts

[[gnu::format(printf, 1, 2)]] void say(const char* format, ...) {
  static std::mutex printing;  // lines in the order of their time stamps
  std::lock_guard lock(printing);
  char line[512];
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start_time);
  int used = std::snprintf(line, sizeof line, "[%5lld ms] ", static_cast<long long>(ms.count()));
  va_list args;
  va_start(args, format);
  std::vsnprintf(line + used, sizeof line - static_cast<std::size_t>(used), format, args);
  va_end(args);
  std::printf("%s\n", line);
  std::fflush(stdout);
}

// Turns a token's cancellation into a readable fd for poll(): the callback
// writes one byte to a pipe. Nobody reads it, so once the token is cancelled
// the fd stays readable for every later poll() too.
class Waker {
 public:
  explicit Waker(const quell::CancellationToken& token)
      : pipe_(make_pipe()), on_cancel_(token, WriteByte{pipe_.write.get()}) {}
  Waker(const Waker&) = delete;  // its address is registered with the token
  Waker& operator=(const Waker&) = delete;
  int fd() const noexcept { return pipe_.read.get(); }

 private:
  struct WriteByte {
    int fd;
    void operator()() const noexcept {
      const char byte = 1;
      [[maybe_unused]] const ssize_t written = ::write(fd, &byte, 1);  // a full pipe wakes as well
    }
  };
  Pipe pipe_;  // declared first: outlives the callback that writes to it
  quell::CancellationCallback<WriteByte> on_cancel_;
};

// ---- requests ------------------------------------------------------------------

// A request's answer, or nothing if its token was cancelled first.
std::optional<std::string> answer(const std::string& line, const quell::CancellationToken& token) {
  constexpr std::string_view kSleep = "sleep ";
  if (line.starts_with(kSleep)) {
    const std::string_view digits = std::string_view(line).substr(kSleep.size());
    unsigned ms = 0;
    const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), ms);
    if (error == std::errc() && end == digits.data() + digits.size()) {
      const auto duration = std::min<Clock::duration>(std::chrono::milliseconds(ms), kMaxSleep);
      if (!quell::sleep_for(duration, token)) return std::nullopt;
      return "slept " + std::to_string(ms);
    }
  }
  // An echo takes no time: once started it finishes, cancelled or not.
  return line;
}

enum class Outcome { answered, timed_out, cancelled };

struct Reply {
  std::string text;  // with its '\n'
  Outcome outcome;
};

// Tallies for the summary. Relaxed throughout: each is a count read for the
// summary after the root scope is joined, and the join orders every task's
// work before it; the demo's progress lines may read a value a little old.
struct Tally {
  std::atomic<std::uint64_t> accepted{0};
  std::atomic<std::uint64_t> taken{0};       // requests read and started
  std::atomic<std::uint64_t> answered{0};    // replies made, one per request taken, by outcome
  std::atomic<std::uint64_t> timed_out{0};
  std::atomic<std::uint64_t> cancelled{0};
  std::atomic<std::uint64_t> undelivered{0};  // replies whose send failed: the client had gone
  std::atomic<std::uint64_t> in_flight_at_cancel{0};  // replied after their scope was cancelled

  static std::uint64_t read(const std::atomic<std::uint64_t>& count) {
    return count.load(std::memory_order_relaxed);  // ordered by the root scope's join, if final
  }
  static std::uint64_t bump(std::atomic<std::uint64_t>& count) {
    return count.fetch_add(1, std::memory_order_relaxed) + 1;  // a count: publishes nothing
  }
};

// ---- connection slots -------------------------------------------------------------

// Caps the open connections. A connection holds a pool worker while it is
// open, so the pool has one worker per slot, one for the accept loop and
// kRequestWorkers for requests; a full server leaves new connections waiting
// in the listen backlog rather than starving requests of workers.
class Slots {
 public:
  // A slot, given back when the lease is destroyed.
  class Lease {
   public:
    explicit Lease(Slots* slots) noexcept : slots_(slots) {}
    Lease(Lease&& other) noexcept : slots_(std::exchange(other.slots_, nullptr)) {}
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (slots_ != nullptr) slots_->release();
    }

   private:
    Slots* slots_;
  };

  explicit Slots(std::size_t count) : free_(count) {}

  // Waits for a free slot; nothing if `token` is cancelled first.
  std::optional<Lease> acquire(const quell::CancellationToken& token) {
    // Registered before taking the mutex: on a cancelled token it runs here,
    // inline, and takes the mutex itself.
    quell::CancellationCallback wake(token, [this] {
      std::lock_guard lock(mutex_);  // the waiter checks under it: no lost wake-up
      changed_.notify_all();
    });
    std::unique_lock lock(mutex_);  // released before `wake` is destroyed
    changed_.wait(lock, [&] { return free_ > 0 || token.cancelled(); });
    if (token.cancelled()) return std::nullopt;
    --free_;
    return Lease(this);
  }

 private:
  void release() {
    std::lock_guard lock(mutex_);
    ++free_;
    changed_.notify_all();
  }

  std::mutex mutex_;
  std::condition_variable changed_;
  std::size_t free_;  // guarded by mutex_
};

// ---- the server -----------------------------------------------------------------------

struct Connection {
  Connection(Fd accepted, std::uint64_t number, Slots::Lease lease)
      : socket(std::move(accepted)), id(number), slot(std::move(lease)) {}
  Connection(Connection&&) = default;
  Connection& operator=(Connection&&) = delete;

  // A connection whose task never ran (the root scope was cancelled while it
  // was queued) is closed here, on the cancelling thread: without waiting,
  // but FIN first and with its input read, so the client sees EOF, not a reset.
  ~Connection() {
    if (!socket) return;
    ::shutdown(socket.get(), SHUT_WR);
    std::string dropped;
    while (receive(socket.get(), dropped) == Received::data) dropped.clear();
  }

  Fd socket;
  std::uint64_t id;
  Slots::Lease slot;
};

class Server {
 public:
  explicit Server(Clock::duration request_timeout)
      : pool_(pool_config()), slots_(kMaxConnections), request_timeout_(request_timeout) {}
  Server(const Server&) = delete;  // its tasks refer to it
  Server& operator=(const Server&) = delete;
  // Without a stop() (an error on the way), the accept loop must still end.
  ~Server() { root_.cancel(); }

  // Starts the accept loop on `listener`, in the root scope.
  void start(Fd listener) {
    const bool spawned = root_.spawn(
        [this, listener = std::move(listener)](quell::CancellationToken token) mutable {
          accept_loop(std::move(listener), token);
        });
    if (!spawned) throw std::runtime_error("the pool rejected the accept loop");
  }

  // Cancels the root scope and joins it: every connection is closed when this
  // returns. Rethrows a failure of one of its tasks.
  void stop() {
    root_.cancel();
    root_.wait();
  }

  quell::CancellationToken token() const noexcept { return root_.cancellation_token(); }
  quell::ThreadPoolStats pool_stats() const noexcept { return pool_.stats(); }
  std::size_t root_tasks() const noexcept { return root_.size(); }
  const Tally& tally() const noexcept { return tally_; }

 private:
  static quell::ThreadPoolConfig pool_config() {
    quell::ThreadPoolConfig config;
    config.thread_count = kMaxConnections + 1 + kRequestWorkers;
    config.thread_name = "echo";
    return config;
  }

  void accept_loop(Fd listener, const quell::CancellationToken& token);
  Fd accept_one(int listener);
  void serve(Connection connection);
  enum class Ending { client_closed, cancelled, broken };
  Ending serve_requests(Connection& connection, quell::Scope& conn, int cancelled);
  bool take_request(Connection& connection, quell::Scope& conn, std::string line);
  Reply run_request(quell::Scope& conn, std::string line);

  quell::ThreadPool pool_;
  Slots slots_;
  const Clock::duration request_timeout_;
  Tally tally_;
  // Declared last, so destroyed first: it joins its tasks while everything
  // they use is still there.
  quell::Scope root_{pool_};
};

void Server::accept_loop(Fd listener, const quell::CancellationToken& token) {
  const Waker cancelled(token);
  while (std::optional<Slots::Lease> slot = slots_.acquire(token)) {
    if (wait_for(listener.get(), POLLIN, cancelled.fd()) == Ready::cancelled) break;
    Fd socket = accept_one(listener.get());
    if (!socket) continue;
    Connection connection(std::move(socket), Tally::bump(tally_.accepted), std::move(*slot));
    // A task may spawn into its own scope. Should the scope be cancelled in
    // between, spawn() refuses and the connection is closed at once.
    root_.spawn([this, connection = std::move(connection)]() mutable {
      serve(std::move(connection));
    });
  }
  if (narrate) say("accept loop: root scope cancelled, no more connections");
}  // the listener closes here: new connections are refused from now on

// An accepted, non-blocking socket, or none for a connection that went away
// before we took it.
Fd Server::accept_one(int listener) {
  Fd socket(::accept(listener, nullptr, nullptr));
  if (!socket) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED) {
      return Fd();
    }
    fail("accept");
  }
  set_flags(socket.get());
  return socket;
}

void Server::serve(Connection connection) {
  quell::Scope conn(root_);  // this connection's requests; cancelled with the root
  const Waker cancelled(conn.cancellation_token());
  const Ending ending = serve_requests(connection, conn, cancelled.fd());
  if (ending == Ending::cancelled && narrate) {
    say("connection %llu: child scope cancelled (reason %s), closing it",
        static_cast<unsigned long long>(connection.id),
        to_string(conn.cancellation_token().reason()));
  }
  close_gracefully(std::move(connection.socket), kLinger);
  conn.close();
  // Every request was answered; this joins one still stopping after its
  // timeout, and runs nothing of other connections meanwhile.
  conn.wait();
}

// Reads and answers requests, one at a time, until the client closes, the
// connection breaks or the scope is cancelled. A request once taken is
// answered even if the scope is cancelled meanwhile.
Server::Ending Server::serve_requests(Connection& connection, quell::Scope& conn,
                                      int cancelled) {
  const int fd = connection.socket.get();
  std::string input;
  for (;;) {
    while (std::optional<std::string> line = take_line(input)) {
      if (conn.cancelled()) return Ending::cancelled;
      if (!take_request(connection, conn, std::move(*line))) return Ending::broken;
    }
    if (input.size() > kMaxLine) {
      send_all(fd, "ERR line too long\n", kSendGuard);
      return Ending::broken;
    }
    if (wait_for(fd, POLLIN, cancelled) == Ready::cancelled) return Ending::cancelled;
    switch (receive(fd, input)) {
      case Received::data:
      case Received::nothing: break;
      case Received::eof: return Ending::client_closed;
      case Received::error: return Ending::broken;
    }
  }
}

bool Server::take_request(Connection& connection, quell::Scope& conn, std::string line) {
  Tally::bump(tally_.taken);
  const Reply reply = run_request(conn, std::move(line));
  Tally::bump(reply.outcome == Outcome::answered    ? tally_.answered
              : reply.outcome == Outcome::timed_out ? tally_.timed_out
                                                    : tally_.cancelled);
  if (!send_all(connection.socket.get(), reply.text, kSendGuard)) {
    Tally::bump(tally_.undelivered);
    return false;
  }
  const auto id = static_cast<unsigned long long>(connection.id);
  if (conn.cancelled()) {
    Tally::bump(tally_.in_flight_at_cancel);
    if (narrate) say("connection %llu: a request was in flight as the scope was cancelled: replied %.*s", id,
                     static_cast<int>(reply.text.size() - 1), reply.text.c_str());
  } else if (reply.outcome == Outcome::timed_out && narrate) {
    say("connection %llu: a request missed its deadline, replied ERR timeout", id);
  }
  return true;
}

// Computes the reply in a task of the connection's scope, with a deadline,
// and waits for it. A std::future carries the reply because a scope's spawn
// returns no future; the wait could as well be conn.wait(): a join on a
// worker runs only its own scope's queued tasks, never another connection's
// handler, which would hold this worker until that client left.
Reply Server::run_request(quell::Scope& conn, std::string line) {
  std::promise<std::optional<std::string>> promise;
  std::future<std::optional<std::string>> result = promise.get_future();
  quell::CancellationSource request;  // lets us stop the task at our deadline
  const Clock::time_point deadline = Clock::now() + request_timeout_;
  // A task dropped before it runs (scope cancelled, or deadline passed while
  // queued) destroys its promise: the future then reports broken_promise.
  const bool spawned = conn.spawn(
      [line = std::move(line), promise = std::move(promise)](quell::CancellationToken token) mutable {
        promise.set_value(answer(line, token));
      },
      quell::TaskOptions().set_cancellation(request.token()).set_timeout(request_timeout_));
  if (!spawned) return {"ERR shutdown\n", Outcome::cancelled};  // cancelled since we looked
  if (result.wait_until(deadline) == std::future_status::timeout) {
    request.request_cancel(quell::CancelReason::deadline);  // conn.wait() joins it later
    return {"ERR timeout\n", Outcome::timed_out};
  }
  std::optional<std::string> text;
  try {
    text = result.get();
  } catch (const std::future_error&) {  // dropped before it ran
  }
  if (text) return {std::move(*text) + '\n', Outcome::answered};
  // No answer: the task saw its token cancelled, by the scope or its deadline.
  if (conn.cancelled()) return {"ERR shutdown\n", Outcome::cancelled};
  return {"ERR timeout\n", Outcome::timed_out};
}

enum class Stop { signal, time_up, root_cancelled };

// Blocks until a signal, `deadline` or the root scope being cancelled from
// inside (a failure).
Stop wait_for_stop(int signals, const Server& server, std::optional<Clock::time_point> deadline) {
  const Waker root_cancelled(server.token());
  for (;;) {
    const int timeout = deadline ? milliseconds_until(*deadline) : -1;
    switch (wait_for(signals, POLLIN, root_cancelled.fd(), timeout)) {
      case Ready::fd: return Stop::signal;
      case Ready::cancelled: return Stop::root_cancelled;
      case Ready::timed_out:
        if (deadline && Clock::now() >= *deadline) return Stop::time_up;
    }
  }
}

// ---- the demo: a client in the same process --------------------------------------------------

// Talks to the server until it shuts down: kHeld connections open for the
// whole run, each sending a request per round (some of them slow, a few too
// slow for their deadline), and short connections of two requests each.
// Checks every reply, and that every connection ends in a clean EOF.
class DemoClient {
 public:
  DemoClient(std::uint16_t port, const Server& server) : port_(port), server_(server) {}

  void run() {
    say("demo client: %zu connections stay open, sending a request per round (a slow \"sleep\""
        " every few); 3 short connections per round",
        kHeld);
    std::vector<Held> held;
    for (std::size_t i = 0; i < kHeld; ++i) {
      held.push_back({connect(), {}});
      if (!held.back().client.connected()) {
        throw std::runtime_error("demo: connection refused before any shutdown");
      }
    }
    for (int round = 0; !shutdown_seen_; ++round) {
      for (std::size_t i = 0; i < held.size(); ++i) send(held[i], request(round, i));
      for (int j = 0; j < 3 && !shutdown_seen_; ++j) short_connection(round, j);
      for (Held& connection : held) read_replies(connection, /*to_eof=*/false);
      if (round % 2 == 1 && !shutdown_seen_) {
        say("root scope: %zu tasks (the accept loop and a task per open connection); %llu"
            " requests answered, %llu timed out",
            server_.root_tasks(),
            static_cast<unsigned long long>(Tally::read(server_.tally().answered)),
            static_cast<unsigned long long>(Tally::read(server_.tally().timed_out)));
      }
    }
    say("demo client: the server is shutting down; reading the last replies");
    for (Held& connection : held) read_replies(connection, /*to_eof=*/true);
  }

  bool ok() const { return ok_; }
  void surprise(const char* what) {
    say("demo client: UNEXPECTED: %s", what);
    ok_ = false;
  }
  // Connections that ended in a clean EOF (the server had accepted them).
  std::uint64_t closed_cleanly() const { return closed_cleanly_; }
  std::uint64_t replies(Outcome outcome) const { return replies_[static_cast<int>(outcome)]; }

 private:
  static constexpr std::size_t kHeld = 8;

  // Refused (connected() false) once the listener is closed; any other
  // failure is an error.
  Client connect() const {
    Client client(port_, 10);
    if (!client.connected() && errno != ECONNREFUSED) fail("demo: connect");
    return client;
  }

  struct Held {
    Client client;
    std::vector<std::string> unanswered;  // oldest first
    bool answered = false;
    bool finished_sending = false;  // so the EOF that follows is ours, not a shutdown
    bool ended = false;
  };

  static std::string request(int round, std::size_t i) {
    if ((static_cast<std::size_t>(round) * kHeld + i) % 19 == 5) return "sleep 900";
    if ((static_cast<std::size_t>(round) + i) % 4 == 0) return "sleep 300";
    return "hello " + std::to_string(round) + "." + std::to_string(i);
  }

  void send(Held& connection, const std::string& line) {
    if (connection.ended || shutdown_seen_) return;
    // A send may race the server's close: the request then goes unanswered,
    // which the server may do once it is shutting down.
    if (connection.client.send_line(line)) connection.unanswered.push_back(line);
  }

  void short_connection(int round, int j) {
    Held connection{connect(), {}};
    if (!connection.client.connected()) {  // the listener is closed
      shutdown_seen_ = true;
      return;
    }
    for (int k = 0; k < 2; ++k) {
      send(connection, "short " + std::to_string(round) + "." + std::to_string(j) + "." +
                           std::to_string(k));
    }
    connection.client.finish_sending();
    connection.finished_sending = true;
    read_replies(connection, /*to_eof=*/true);
  }

  // Reads the replies to every request sent so far; to EOF if `to_eof` or
  // once the server is shutting down (it then closes every connection).
  void read_replies(Held& connection, bool to_eof) {
    while (!connection.ended && (to_eof || shutdown_seen_ || !connection.unanswered.empty())) {
      if (std::optional<std::string> line = connection.client.read_line()) {
        check(connection, *line);
        continue;
      }
      switch (connection.client.end()) {
        case Client::End::eof:
          ++closed_cleanly_;
          break;
        case Client::End::reset:
          // Only a connection still in the listen backlog when the listener
          // closed may be reset: the server never accepted it. One that was
          // answered was accepted, and must end in EOF.
          if (connection.answered) surprise("an answered connection was reset");
          break;
        case Client::End::other:
          // A reply cut short, or the guard: the server hangs.
          throw std::runtime_error("demo: a reply cut short, or no reply within the guard");
      }
      connection.ended = true;
      // The server closes a connection first only when it shuts down.
      if (!connection.finished_sending) shutdown_seen_ = true;
    }
  }

  void check(Held& connection, const std::string& reply) {
    if (connection.unanswered.empty()) return surprise("a reply nobody asked for");
    const std::string asked = connection.unanswered.front();
    connection.unanswered.erase(connection.unanswered.begin());
    connection.answered = true;
    const std::string expected =
        asked.starts_with("sleep ") ? "slept " + asked.substr(6) : asked;
    if (reply == expected) {
      ++replies_[static_cast<int>(Outcome::answered)];
    } else if (reply == "ERR timeout") {
      ++replies_[static_cast<int>(Outcome::timed_out)];
    } else if (reply == "ERR shutdown") {
      ++replies_[static_cast<int>(Outcome::cancelled)];
      shutdown_seen_ = true;
    } else {
      surprise(("\"" + asked + "\" got \"" + reply + "\"").c_str());
    }
  }

  const std::uint16_t port_;
  const Server& server_;
  bool shutdown_seen_ = false;
  bool ok_ = true;
  std::uint64_t closed_cleanly_ = 0;
  std::uint64_t replies_[3] = {};
};

// ---- main -----------------------------------------------------------------------------------

struct Options {
  std::uint16_t port = 0;
  std::optional<double> seconds;
  Clock::duration request_timeout = 500ms;
  bool demo = false;
};

[[noreturn]] void usage(const char* problem) {
  std::fprintf(stderr,
               "echo_server: %s\n"
               "usage: echo_server [--port P] [--seconds N] [--timeout-ms T] [--demo]\n",
               problem);
  std::exit(2);
}

double number(int argc, char** argv, int& i, double max) {
  if (i + 1 >= argc) usage("a number is missing");
  char* end = nullptr;
  const double value = std::strtod(argv[++i], &end);
  if (*end != '\0' || !(value >= 0 && value <= max)) usage("not a number in range");
  return value;
}

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--port") {
      options.port = static_cast<std::uint16_t>(number(argc, argv, i, 65535));
    } else if (arg == "--seconds") {
      options.seconds = number(argc, argv, i, 86400);
    } else if (arg == "--timeout-ms") {
      options.request_timeout = std::chrono::milliseconds(
          static_cast<std::int64_t>(number(argc, argv, i, 3600000)));
    } else if (arg == "--demo") {
      options.demo = true;
    } else {
      usage("unknown argument");
    }
  }
  if (options.demo && !options.seconds) options.seconds = 2;
  return options;
}

void print_summary(const Tally& tally) {
  auto count = [](const std::atomic<std::uint64_t>& n) {
    return static_cast<unsigned long long>(Tally::read(n));
  };
  std::printf("summary: %llu connections accepted, %llu requests: %llu answered, %llu timed out,"
              " %llu cancelled by the shutdown; %llu replies not delivered\n",
              count(tally.accepted), count(tally.taken), count(tally.answered),
              count(tally.timed_out), count(tally.cancelled), count(tally.undelivered));
  std::fflush(stdout);
}

// The demo's cross-check: what the client saw is what the server counted.
bool demo_agrees(const DemoClient& client, const Tally& tally) {
  const std::uint64_t replies_made =
      Tally::read(tally.answered) + Tally::read(tally.timed_out) + Tally::read(tally.cancelled);
  const bool ok = client.ok() && client.closed_cleanly() == Tally::read(tally.accepted) &&
                  Tally::read(tally.taken) == replies_made &&
                  client.replies(Outcome::answered) == Tally::read(tally.answered) &&
                  client.replies(Outcome::timed_out) == Tally::read(tally.timed_out) &&
                  client.replies(Outcome::cancelled) == Tally::read(tally.cancelled);
  say(ok ? "demo: every request got one reply, every connection ended in a clean EOF"
         : "demo: FAILED: the client and the server disagree");
  return ok;
}

const char* stop_reason(Stop stop) {
  switch (stop) {
    case Stop::signal: return "SIGINT or SIGTERM";
    case Stop::time_up: return "--seconds are up";
    case Stop::root_cancelled: return "a task failed";
  }
  return "?";
}

int run(const Options& options) {
  const SignalPipe signals;
  Fd listener = listen_on_loopback(options.port);
  const std::uint16_t port = local_port(listener.get());
  std::printf("listening on 127.0.0.1:%u\n", static_cast<unsigned>(port));
  std::fflush(stdout);

  Server server(options.request_timeout);
  server.start(std::move(listener));
  std::optional<DemoClient> demo;
  std::thread client;
  if (options.demo) {
    demo.emplace(port, server);
    client = std::thread([&demo] {
      try {
        demo->run();
      } catch (const std::exception& error) {
        demo->surprise(error.what());
      }
    });
  }

  std::optional<Clock::time_point> deadline;
  if (options.seconds) {
    deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                  std::chrono::duration<double>(*options.seconds));
  }
  const Stop why = wait_for_stop(signals.fd(), server, deadline);
  say("cancelling the root scope: %s", stop_reason(why));
  std::exception_ptr failure;
  try {
    server.stop();
  } catch (...) {
    failure = std::current_exception();
  }
  const Tally& tally = server.tally();
  say("root scope cancelled (reason %s) and joined: every connection is closed; requests in"
      " flight at the cancellation: %llu, each one answered",
      to_string(server.token().reason()),
      static_cast<unsigned long long>(Tally::read(tally.in_flight_at_cancel)));
  bool ok = true;
  if (client.joinable()) {
    client.join();
    ok = demo_agrees(*demo, tally);
  }
  // What an operator would scrape: the pool's numbers, ended_by_reason and
  // cancel_reaction included, in Prometheus's text format.
  std::printf("the pool's metrics, as Prometheus reads them:\n%s",
              quell::to_prometheus(server.pool_stats(), "echo").c_str());
  print_summary(tally);
  if (failure) std::rethrow_exception(failure);
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  narrate = options.demo;
  try {
    return run(options);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "echo_server: %s\n", error.what());
    return 1;
  }
}
