// A bounded soak of the echo server example (examples/echo_server.cpp), run
// as a child process. For about 15 s, kClients threads connect, send echo
// lines and "sleep <ms>" requests (some far past the 50 ms deadline), vanish
// at random points mid-request or mid-line and reconnect; every reply a
// client reads is checked against its request. Between phases every client
// pauses with its socket closed, and the server's file descriptors, threads
// and resident memory are read from /proc: none may grow. A SIGTERM under
// load ends the run; the server's summary must show one reply per request it
// took, and agree with what the clients counted.
//
// Nothing sleeps to order events: a std::barrier pauses the clients and a
// socket read waits for its reply. The only sleeps pace the load (phase
// lengths, samples) or poll /proc, under a guard, while the server closes
// the connections the clients have left.

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "../echo_server_process.hpp"
#include "../sanitized.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The server is built with the same flags as this test: under
// AddressSanitizer its RSS is reported, not checked (see sanitized.hpp).
using quell::test::kAddressSanitized;

constexpr std::size_t kClients = 12;
constexpr int kDeadlineMs = 50;  // the server's --timeout-ms
constexpr auto kWarmUp = 3s;
constexpr int kPhases = 4;  // after the warm-up; the last ends with the SIGTERM
constexpr auto kPhase = 3s;
constexpr auto kSampleEvery = 250ms;     // /proc samples under load
constexpr int kSocketGuardSeconds = 30;  // a reply later than this is a hang
constexpr auto kCloseGuard = 10s;        // for the server to close what the clients left
constexpr auto kShutdownGuard = 30s;     // for the server to end every connection
constexpr auto kExitGuard = 60s;
// The server's per-connection file descriptors (the socket and the pipe its
// cancellation wakes), and its cap on open connections.
constexpr std::size_t kFdsPerConnection = 3;
constexpr std::size_t kServerConnections = 32;
constexpr std::size_t kRssSlackKib = 4096;  // or a quarter of the warm RSS, if more

using quell::test::Fd;
using quell::test::ServerProcess;
using quell::test::Summary;

// ---- /proc --------------------------------------------------------------------

struct ProcSample {
  std::size_t fds = 0;
  std::size_t sockets = 0;
  std::size_t threads = 0;
  std::size_t rss_kib = 0;   // VmRSS
  std::size_t peak_kib = 0;  // VmHWM: the peak RSS so far
};

std::size_t entries(const std::filesystem::path& directory, std::size_t* sockets = nullptr) {
  std::error_code error;
  std::size_t count = 0;
  for (std::filesystem::directory_iterator it(directory, error), end; !error && it != end;
       it.increment(error)) {
    ++count;
    if (sockets != nullptr &&
        std::filesystem::read_symlink(it->path(), error).native().starts_with("socket:")) {
      ++*sockets;
    }
    error.clear();  // an fd closed while we looked
  }
  return count;
}

std::size_t status_kib(const std::string& status, std::string_view field) {
  const std::size_t at = status.find(field);
  return at == std::string::npos ? 0
                                 : std::strtoull(status.c_str() + at + field.size(), nullptr, 10);
}

ProcSample sample(pid_t pid) {
  const std::filesystem::path proc = "/proc/" + std::to_string(pid);
  ProcSample s;
  s.fds = entries(proc / "fd", &s.sockets);
  s.threads = entries(proc / "task");
  std::ifstream file(proc / "status");
  const std::string status((std::istreambuf_iterator<char>(file)),
                           std::istreambuf_iterator<char>());
  s.rss_kib = status_kib(status, "VmRSS:");
  s.peak_kib = status_kib(status, "VmHWM:");
  return s;
}

std::string fd_listing(pid_t pid) {
  std::string all;
  std::error_code error;
  const std::filesystem::path fds = "/proc/" + std::to_string(pid) + "/fd";
  for (std::filesystem::directory_iterator it(fds, error), end; !error && it != end;
       it.increment(error)) {
    all += it->path().filename().native() + " -> " +
           std::filesystem::read_symlink(it->path(), error).native() + "\n";
    error.clear();
  }
  return all;
}

// ---- a client connection ------------------------------------------------------------

enum class Vanish { fin, shutdown, reset };

class Connection {
 public:
  enum class Read { line, eof, reset, failed };

  // Connected to the server, or nothing with errno set.
  static std::optional<Connection> open(std::uint16_t port) {
    Fd socket = quell::test::connect_loopback(port, kSocketGuardSeconds);
    if (socket.get() < 0) return std::nullopt;
    return Connection(std::move(socket));
  }

  bool send(std::string_view data) {
    return ::send(socket_.get(), data.data(), data.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(data.size());
  }

  // The next line, without its '\n'. `failed`: a reply cut short, an error,
  // or no reply within the guard.
  Read read_line(std::string& line) {
    for (;;) {
      if (const std::size_t end = input_.find('\n'); end != std::string::npos) {
        line = input_.substr(0, end);
        input_.erase(0, end + 1);
        return Read::line;
      }
      char chunk[4096];
      const ssize_t got = ::recv(socket_.get(), chunk, sizeof chunk, 0);
      if (got > 0) {
        input_.append(chunk, static_cast<std::size_t>(got));
      } else if (got == 0) {
        return input_.empty() ? Read::eof : Read::failed;
      } else if (errno == ECONNRESET) {
        return Read::reset;
      } else if (errno != EINTR) {
        return Read::failed;
      }
    }
  }

  // Our FIN, then what the server sends until its EOF.
  Read finish(std::string& line) {
    ::shutdown(socket_.get(), SHUT_WR);
    return read_line(line);
  }

  // Leaves without reading what is owed: a FIN, both directions shut, or a
  // reset (SO_LINGER of 0 turns close() into an RST).
  void vanish(Vanish how) {
    if (how == Vanish::shutdown) ::shutdown(socket_.get(), SHUT_RDWR);
    if (how == Vanish::reset) {
      const linger abort{1, 0};
      ::setsockopt(socket_.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
    }
    socket_ = Fd();
  }

 private:
  explicit Connection(Fd socket) : socket_(std::move(socket)) {}
  Fd socket_;
  std::string input_;
};

// ---- the clients ------------------------------------------------------------------

// What the controller publishes to the clients before the barrier that
// starts a phase; the barrier orders the writes before the clients' reads.
struct Shared {
  explicit Shared(std::uint16_t server_port) : port(server_port) {}
  const std::uint16_t port;
  std::barrier<> sync{kClients + 1};
  Clock::time_point phase_end;
  bool last_phase = false;  // the SIGTERM comes at its phase_end
  // Stored before kill(): a client that reads what the signal caused finds
  // it set (the server process stands between, not a C++ edge).
  std::atomic<bool> sigterm_sent{false};
};

// Unsigned long long, as the server's summary prints its counts.
struct Counts {
  unsigned long long connections = 0;           // connect() calls that succeeded
  unsigned long long reconnects = 0;            // ... after leaving one in the same phase
  unsigned long long answered_connections = 0;  // ... that read at least one reply
  unsigned long long requests = 0;              // complete lines sent
  unsigned long long echoed = 0;                // replies read, by kind
  unsigned long long slept = 0;
  unsigned long long timed_out = 0;
  unsigned long long shut_down = 0;
  unsigned long long echo_timed_out = 0;  // of timed_out: echoes and short sleeps (a slow machine)
  unsigned long long short_sleep_timed_out = 0;
  unsigned long long vanished_mid_request = 0;  // left with requests unanswered
  unsigned long long vanished_mid_line = 0;     // left with a partial line written
  unsigned long long by_fin = 0, by_shutdown = 0, by_reset = 0;
  unsigned long long abandoned = 0;           // requests sent and left unanswered
  unsigned long long surely_undelivered = 0;  // a reset while the server surely ran a slow request
  unsigned long long closed_cleanly = 0;      // our FIN, then the server's EOF, nothing owed
  unsigned long long cut_by_shutdown = 0;     // unanswered when the server closed after SIGTERM

  unsigned long long replies() const { return echoed + slept + timed_out + shut_down; }

  Counts& operator+=(const Counts& o) {
    connections += o.connections;
    reconnects += o.reconnects;
    answered_connections += o.answered_connections;
    requests += o.requests;
    echoed += o.echoed;
    slept += o.slept;
    timed_out += o.timed_out;
    shut_down += o.shut_down;
    echo_timed_out += o.echo_timed_out;
    short_sleep_timed_out += o.short_sleep_timed_out;
    vanished_mid_request += o.vanished_mid_request;
    vanished_mid_line += o.vanished_mid_line;
    by_fin += o.by_fin;
    by_shutdown += o.by_shutdown;
    by_reset += o.by_reset;
    abandoned += o.abandoned;
    surely_undelivered += o.surely_undelivered;
    closed_cleanly += o.closed_cleanly;
    cut_by_shutdown += o.cut_by_shutdown;
    return *this;
  }
};

struct Request {
  enum Kind { echo, short_sleep, long_sleep };
  Kind kind;
  std::string line;  // without its '\n'
  unsigned ms = 0;
  Clock::time_point sent{};
};

class SoakClient {
 public:
  SoakClient(std::size_t index, Shared& shared, std::uint64_t seed)
      : index_(index), shared_(shared), random_(seed) {}

  // The thread's body: phase after phase, pausing at the barrier in between
  // with no connection open.
  void run() {
    for (;;) {
      shared_.sync.arrive_and_wait();  // the controller has published the phase
      last_phase_ = shared_.last_phase;
      connected_in_phase_ = false;
      run_phase(shared_.phase_end);
      if (last_phase_) return;
      shared_.sync.arrive_and_wait();  // paused, socket closed
    }
  }

  const Counts& counts() const { return counts_; }
  const std::vector<std::string>& errors() const { return errors_; }

 private:
  static constexpr std::size_t kMaxErrors = 10;  // then this client stops loading

  void run_phase(Clock::time_point end) {
    while (errors_.size() < kMaxErrors) {
      if (!last_phase_ && Clock::now() >= end) break;
      if (last_phase_ && Clock::now() >= end + kShutdownGuard) {
        error("the server still served " + std::to_string(kShutdownGuard.count()) +
              " s after the SIGTERM");
        break;
      }
      if (!connection_ && !connect()) break;
      step();
    }
    if (connection_) finish();
  }

  bool connect() {
    const bool after_sigterm = shared_.sigterm_sent.load();
    connection_ = Connection::open(shared_.port);
    if (!connection_) {
      // Refused once the server has closed its listener after the SIGTERM.
      if (!after_sigterm) error(std::string("connect: ") + std::strerror(errno));
      return false;
    }
    ++counts_.connections;
    if (connected_in_phase_) ++counts_.reconnects;
    connected_in_phase_ = true;
    answered_ = false;
    return true;
  }

  void step() {
    const unsigned roll = uniform(1000);
    if (roll < 25) {
      vanish_mid_request();
    } else if (roll < 35) {
      vanish_mid_line();
    } else if (roll < 50) {
      finish();  // a polite close; the next step reconnects
    } else {
      exchange(roll < 130 ? 2 + uniform(3) : 1);
    }
  }

  // Sends `count` requests at once and checks each reply in turn.
  void exchange(unsigned count) {
    std::vector<Request> requests;
    for (unsigned i = 0; i < count; ++i) requests.push_back(make_request());
    if (!send(requests)) return;
    for (std::size_t i = 0; i < requests.size(); ++i) {
      if (!read_reply(requests[i], requests.size() - i)) return;
    }
  }

  void vanish_mid_request() {
    ++counts_.vanished_mid_request;
    if (uniform(4) == 0) {
      // The slow request travels with an echo, in one segment: once the echo
      // is back the server has read the slow one and is running it, so its
      // "ERR timeout" meets our reset and cannot be delivered.
      std::vector<Request> requests{make_request(Request::echo), make_request(Request::long_sleep)};
      if (!send(requests) || !read_reply(requests[0], 2)) return;
      vanish(Vanish::reset, 1);
      if (!last_phase_) ++counts_.surely_undelivered;  // no SIGTERM can intervene
      return;
    }
    std::vector<Request> requests{make_request()};
    if (uniform(2) == 0) requests.push_back(make_request(Request::long_sleep));
    if (!send(requests)) return;
    vanish(static_cast<Vanish>(uniform(3)), requests.size());
  }

  void vanish_mid_line() {
    ++counts_.vanished_mid_line;
    std::vector<Request> requests;
    if (uniform(2) == 0) requests.push_back(make_request());
    if (!send(requests)) return;
    std::string part = make_request(Request::echo).line;
    part.resize(uniform(static_cast<unsigned>(part.size())) + 1);
    if (!connection_->send(part)) return end_connection(send_failure(), requests.size());
    vanish(static_cast<Vanish>(uniform(3)), requests.size());
  }

  void vanish(Vanish how, std::size_t unanswered) {
    connection_->vanish(how);
    connection_.reset();
    counts_.abandoned += unanswered;
    ++(how == Vanish::fin        ? counts_.by_fin
       : how == Vanish::shutdown ? counts_.by_shutdown
                                 : counts_.by_reset);
  }

  // Our FIN, then the server's EOF with nothing owed.
  void finish() {
    std::string line;
    const Connection::Read read = connection_->finish(line);
    if (read == Connection::Read::eof) {
      ++counts_.closed_cleanly;
      connection_.reset();
    } else if (read == Connection::Read::line) {
      error("a reply nobody asked for: \"" + line + "\"");
      connection_.reset();
    } else {
      end_connection(read, 0);
    }
  }

  bool send(std::vector<Request>& requests) {
    if (requests.empty()) return true;
    std::string data;
    for (const Request& request : requests) data += request.line + '\n';
    const Clock::time_point now = Clock::now();
    for (Request& request : requests) request.sent = now;
    if (!connection_->send(data)) {
      end_connection(send_failure(), 0);
      return false;
    }
    counts_.requests += requests.size();
    return true;
  }

  // Reads and checks the reply to `request`; `owed` replies are due,
  // counting this one. False if the connection ended instead.
  bool read_reply(const Request& request, std::size_t owed) {
    std::string reply;
    const Connection::Read read = connection_->read_line(reply);
    if (read != Connection::Read::line) {
      end_connection(read, owed);
      return false;
    }
    if (!answered_) ++counts_.answered_connections;
    answered_ = true;
    check(request, reply);
    return true;
  }

  void check(const Request& request, const std::string& reply) {
    if (reply == "ERR shutdown") {
      ++counts_.shut_down;
      if (!shared_.sigterm_sent.load()) error("\"ERR shutdown\" before the SIGTERM");
    } else if (reply == "ERR timeout") {
      // A slow machine may let even an echo miss its deadline: the server's
      // answer is then "ERR timeout", which is right; such cases are counted.
      ++counts_.timed_out;
      if (request.kind == Request::echo) ++counts_.echo_timed_out;
      if (request.kind == Request::short_sleep) ++counts_.short_sleep_timed_out;
    } else if (request.kind == Request::echo && reply == request.line) {
      ++counts_.echoed;
    } else if (request.kind == Request::short_sleep &&
               reply == "slept " + std::to_string(request.ms)) {
      ++counts_.slept;
    } else {
      const auto took =
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - request.sent);
      error("\"" + request.line.substr(0, 40) + "\" got \"" + reply.substr(0, 40) + "\" after " +
            std::to_string(took.count()) + " ms");
    }
  }

  // A broken pipe is the reset that reached us first.
  static Connection::Read send_failure() {
    return errno == EPIPE || errno == ECONNRESET ? Connection::Read::reset
                                                 : Connection::Read::failed;
  }

  // The connection ended on us with `owed` replies not read.
  void end_connection(Connection::Read how, std::size_t owed) {
    connection_.reset();
    // After the SIGTERM the server closes every connection, answering only
    // the request it is running; a connection still in its listen backlog
    // when the listener closes is reset.
    if (shared_.sigterm_sent.load() && how != Connection::Read::failed) {
      counts_.cut_by_shutdown += owed;
      return;
    }
    error(std::string(how == Connection::Read::eof     ? "EOF"
                      : how == Connection::Read::reset ? "reset"
                                                       : "a failed read or write") +
          " with " + std::to_string(owed) + " replies owed" +
          (how == Connection::Read::failed ? std::string(": ") + std::strerror(errno) : ""));
  }

  Request make_request() {
    const unsigned roll = uniform(100);
    return make_request(roll < 75   ? Request::echo
                        : roll < 90 ? Request::short_sleep
                                    : Request::long_sleep);
  }

  // Echo lines are arbitrary bytes but '\n', behind a prefix no command
  // has. Short sleeps end well within the deadline; long ones so far past
  // it that only a server stalled for a second could answer "slept" (a
  // loaded 2-core machine stalls it for 150 ms at times).
  Request make_request(Request::Kind kind) {
    Request request{kind, {}, 0};
    if (kind == Request::echo) {
      request.line = "e " + std::to_string(index_) + "." + std::to_string(++sequence_) + " ";
      for (unsigned n = uniform(300); n > 0; --n) {
        const char byte = static_cast<char>(uniform(256));
        request.line += byte == '\n' ? '\r' : byte;
      }
    } else {
      request.ms = kind == Request::short_sleep ? uniform(kDeadlineMs / 2)
                                                : 20 * kDeadlineMs + uniform(40 * kDeadlineMs);
      request.line = "sleep " + std::to_string(request.ms);
    }
    return request;
  }

  unsigned uniform(unsigned bound) {
    return std::uniform_int_distribution<unsigned>(0, bound - 1)(random_);
  }

  void error(std::string what) {
    errors_.push_back("client " + std::to_string(index_) + ": " + std::move(what));
  }

  const std::size_t index_;
  Shared& shared_;
  std::mt19937_64 random_;
  std::optional<Connection> connection_;
  bool last_phase_ = false;
  bool connected_in_phase_ = false;
  bool answered_ = false;  // the open connection has had a reply
  std::uint64_t sequence_ = 0;
  Counts counts_;
  std::vector<std::string> errors_;
};

std::uint64_t seed() {
  if (const char* chosen = std::getenv("SOAK_SEED")) return std::strtoull(chosen, nullptr, 10);
  return std::random_device()();
}

std::string list(const std::vector<std::size_t>& values) {
  std::string all;
  for (std::size_t value : values) all += (all.empty() ? "" : " ") + std::to_string(value);
  return all;
}

std::size_t rss_bound(std::size_t warm_kib) {
  return warm_kib + std::max(kRssSlackKib, warm_kib / 4);
}

// The server's file descriptors, threads and memory, from /proc. Checks with
// EXPECT only: the controller must go on to release the clients from their
// barriers whatever it finds.
class Watch {
 public:
  Watch(pid_t pid, const ProcSample& idle, const ProcSample& settled)
      : pid_(pid),
        idle_sockets_(idle.sockets),
        settled_(settled),
        fd_bound_loaded_(settled.fds + kFdsPerConnection * kServerConnections) {}

  // Samples the server under load until `end`; the sleeps pace the samples.
  void under_load(Clock::time_point end) {
    while (Clock::now() < end) {
      std::this_thread::sleep_until(std::min(Clock::now() + kSampleEvery, end));
      last_ = sample(pid_);
      ++samples_;
      peak_loaded_fds_ = std::max(peak_loaded_fds_, last_.fds);
      if (std::find(loaded_threads_.begin(), loaded_threads_.end(), last_.threads) ==
          loaded_threads_.end()) {
        loaded_threads_.push_back(last_.threads);
      }
    }
  }

  // With every client paused and its socket closed: no more fds than the
  // server held idle with one connection open, no socket but its own, the
  // same threads, and RSS flat since the first pause (after the warm-up).
  void paused() {
    // The server closes its ends as it sees each FIN or reset: poll, with
    // the guard as the failure.
    const Clock::time_point guard = Clock::now() + kCloseGuard;
    ProcSample now = sample(pid_);
    while ((now.fds > settled_.fds || now.sockets > idle_sockets_) && Clock::now() < guard) {
      std::this_thread::sleep_for(5ms);
      now = sample(pid_);
    }
    EXPECT_LE(now.fds, settled_.fds) << "file descriptors leaked:\n" << fd_listing(pid_);
    EXPECT_EQ(now.sockets, idle_sockets_) << "sockets leaked:\n" << fd_listing(pid_);
    EXPECT_EQ(now.threads, settled_.threads) << "the pool is fixed: no thread comes or goes";
    paused_fds_.push_back(now.fds);
    paused_rss_.push_back(now.rss_kib);
    if (!warm_) {
      warm_ = now;
    } else if (!kAddressSanitized) {
      EXPECT_LE(now.rss_kib, rss_bound(warm_->rss_kib)) << "resident memory grows";
    }
  }

  // Once the load is over: the samples under load, and the peak RSS.
  void check_load() const {
    EXPECT_EQ(loaded_threads_, std::vector<std::size_t>{settled_.threads})
        << "the pool is fixed: no thread comes or goes";
    EXPECT_LE(peak_loaded_fds_, fd_bound_loaded_);
    ASSERT_TRUE(warm_) << "no pause";
    if (!kAddressSanitized) {
      EXPECT_LE(last_.peak_kib, rss_bound(warm_->peak_kib)) << "the peak RSS grows";
    }
  }

  void report() const {
    std::printf(
        "soak: server fds: %zu with one connection open at the start; at the %zu pauses "
        "%s; at most %zu under load (bound %zu); sockets when paused: %zu\n",
        settled_.fds, paused_fds_.size(), list(paused_fds_).c_str(), peak_loaded_fds_,
        fd_bound_loaded_, idle_sockets_);
    std::printf("soak: server threads: %zu at the start, %s in %zu samples under load\n",
                settled_.threads, list(loaded_threads_).c_str(), samples_);
    std::printf(
        "soak: server RSS: %zu KiB (peak %zu KiB) after the warm-up; at the pauses %s KiB;"
        " %zu KiB (peak %zu KiB) at the SIGTERM%s\n",
        warm_ ? warm_->rss_kib : 0, warm_ ? warm_->peak_kib : 0, list(paused_rss_).c_str(),
        last_.rss_kib, last_.peak_kib,
        kAddressSanitized ? " (not checked under AddressSanitizer)" : "");
  }

 private:
  const pid_t pid_;
  const std::size_t idle_sockets_;  // the listener, and any the server inherited
  const ProcSample settled_;        // idle, with one connection open
  const std::size_t fd_bound_loaded_;
  std::optional<ProcSample> warm_;  // at the first pause
  ProcSample last_;                 // the last sample under load
  std::size_t samples_ = 0;
  std::size_t peak_loaded_fds_ = 0;
  std::vector<std::size_t> loaded_threads_;  // each count seen
  std::vector<std::size_t> paused_fds_, paused_rss_;
};

void report(double seconds, const Counts& c, const std::string& summary) {
  std::printf("soak: run time %.1f s\n", seconds);
  std::printf(
      "soak: clients: %llu connections (%llu reconnects), %llu requests sent; replies read:"
      " %llu echoed, %llu slept, %llu ERR timeout (%llu of them echoes, %llu short sleeps),"
      " %llu ERR shutdown\n",
      c.connections, c.reconnects, c.requests, c.echoed, c.slept, c.timed_out, c.echo_timed_out,
      c.short_sleep_timed_out, c.shut_down);
  std::printf(
      "soak: clients vanished %llu times mid-request and %llu mid-line (%llu FIN, %llu "
      "shutdown, %llu reset), leaving %llu requests unanswered (%llu surely taken by the server, "
      "their replies undeliverable); %llu polite closes; %llu requests cut off by the shutdown\n",
      c.vanished_mid_request, c.vanished_mid_line, c.by_fin, c.by_shutdown, c.by_reset, c.abandoned,
      c.surely_undelivered, c.closed_cleanly, c.cut_by_shutdown);
  std::printf("soak: server: %s\n", summary.c_str());
}

// ---- the test ------------------------------------------------------------------------

TEST(EchoSoak, UnderChurnEveryReplyIsRightNothingGrowsAndEachRequestTakenGetsOneReply) {
  const Clock::time_point started = Clock::now();
  const std::uint64_t base_seed = seed();
  std::printf(
      "soak: seed %llu (SOAK_SEED repeats the choices), %zu clients, %d ms deadline, "
      "%lld s warm-up, then %d phases of %lld s, the last ended by SIGTERM\n",
      static_cast<unsigned long long>(base_seed), kClients, kDeadlineMs,
      static_cast<long long>(kWarmUp.count()), kPhases, static_cast<long long>(kPhase.count()));

  ServerProcess server({"--port", "0", "--timeout-ms", std::to_string(kDeadlineMs)}, kExitGuard);
  const std::uint16_t port = server.port();
  ASSERT_NE(port, 0) << "no \"listening on\" line";
  const ProcSample idle = sample(server.pid());  // the listener is open

  // One connection answered: the pool and the accept loop are up. With it
  // still open, this is as many file descriptors as an idle server may hold.
  ProcSample settled;
  {
    std::optional<Connection> first = Connection::open(port);
    ASSERT_TRUE(first);
    ASSERT_TRUE(first->send("hello\n"));
    std::string reply;
    ASSERT_EQ(first->read_line(reply), Connection::Read::line);
    ASSERT_EQ(reply, "hello");
    settled = sample(server.pid());
    ASSERT_EQ(first->finish(reply), Connection::Read::eof);
  }
  Watch watch(server.pid(), idle, settled);

  Shared shared(port);
  std::vector<SoakClient> clients;
  clients.reserve(kClients);
  for (std::size_t i = 0; i < kClients; ++i) clients.emplace_back(i, shared, base_seed + i);
  std::vector<std::thread> threads;
  for (SoakClient& client : clients) threads.emplace_back([&client] { client.run(); });

  for (int phase = 0; phase <= kPhases; ++phase) {
    shared.phase_end = Clock::now() + (phase == 0 ? kWarmUp : kPhase);
    shared.last_phase = phase == kPhases;
    shared.sync.arrive_and_wait();  // the clients start
    watch.under_load(shared.phase_end);
    if (shared.last_phase) break;
    shared.sync.arrive_and_wait();  // every client has closed its socket
    watch.paused();
  }
  // The SIGTERM, with the clients at work.
  shared.sigterm_sent.store(true);
  server.signal(SIGTERM);
  for (std::thread& thread : threads) thread.join();
  const int status = server.wait_for_exit();

  Counts c;
  std::vector<std::string> errors;
  for (const SoakClient& client : clients) {
    c += client.counts();
    errors.insert(errors.end(), client.errors().begin(), client.errors().end());
  }
  report(std::chrono::duration<double>(Clock::now() - started).count(), c, server.last_line());
  watch.report();

  std::string first_errors;
  for (std::size_t i = 0; i < std::min<std::size_t>(errors.size(), 20); ++i) {
    first_errors += errors[i] + "\n";
  }
  EXPECT_TRUE(errors.empty()) << errors.size() << " client errors:\n" << first_errors;
  watch.check_load();
  ASSERT_EQ(status, 0) << server.output();
  const std::optional<Summary> s = server.summary();
  ASSERT_TRUE(s) << "no summary line:\n" << server.output();

  // The server's own tally: one reply made per request taken.
  EXPECT_EQ(s->requests, s->answered + s->timed_out + s->cancelled);
  // Against the clients: a reply read was delivered, and a delivered reply
  // was read unless its client left (or the shutdown cut it off) first.
  const unsigned long long delivered = s->answered + s->timed_out + s->cancelled - s->undelivered;
  EXPECT_LE(c.replies(), delivered);
  EXPECT_LE(delivered, c.replies() + c.abandoned + c.cut_by_shutdown);
  EXPECT_LE(s->undelivered, c.abandoned + c.cut_by_shutdown);
  EXPECT_GE(s->undelivered, c.surely_undelivered);
  EXPECT_LE(s->requests, c.requests);
  EXPECT_LE(c.echoed + c.slept, s->answered);
  EXPECT_LE(c.timed_out, s->timed_out);
  EXPECT_LE(c.shut_down, s->cancelled);
  EXPECT_LE(s->accepted, c.connections + 1);  // + the first, settling connection
  EXPECT_GE(s->accepted, c.answered_connections + 1);
  // The load did what it claims.
  EXPECT_GT(c.timed_out, 0u) << "no deadline fired";
  EXPECT_GT(c.vanished_mid_request, 0u);
  EXPECT_GT(c.vanished_mid_line, 0u);
  EXPECT_GT(c.echoed, 0u);
  EXPECT_GT(c.slept, 0u);
}

}  // namespace
