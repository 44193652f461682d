#pragma once

// The POSIX plumbing of the echo server example (echo_server.cpp), kept out
// of it so that the example reads as what it teaches, quell: owned file
// descriptors, pipes, poll(), loopback sockets, lines, the signal pipe, and
// the blocking client that both the example's demo and the tests use.
// Nothing here knows quell. Linux or any POSIX system with poll().

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

namespace echo {

using Clock = std::chrono::steady_clock;

[[noreturn]] inline void fail(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

inline int milliseconds_until(Clock::time_point deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::max<std::int64_t>(0, left.count()));
}

// ---- file descriptors ----------------------------------------------------------

// An owned file descriptor, closed on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    Fd(std::move(other)).swap(*this);
    return *this;
  }
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  void swap(Fd& other) noexcept { std::swap(fd_, other.fd_); }

 private:
  int fd_ = -1;
};

inline void set_flags(int fd) {
  if (::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK) < 0 ||
      ::fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
    fail("fcntl");
  }
}

struct Pipe {
  Fd read, write;
};

// Both ends non-blocking and close-on-exec.
inline Pipe make_pipe() {
  int ends[2];
  if (::pipe(ends) < 0) fail("pipe");
  Pipe pipe{Fd(ends[0]), Fd(ends[1])};
  set_flags(pipe.read.get());
  set_flags(pipe.write.get());
  return pipe;
}

enum class Ready { fd, cancelled, timed_out };

// Waits until `fd` has `events` or `waker` is readable (the waker wins a
// tie), for at most `timeout_ms` (-1: no limit); `waker` -1: none.
inline Ready wait_for(int fd, short events, int waker, int timeout_ms = -1) {
  pollfd fds[2] = {{fd, events, 0}, {waker, POLLIN, 0}};
  const nfds_t count = waker >= 0 ? 2 : 1;
  for (;;) {
    const int ready = ::poll(fds, count, timeout_ms);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) fail("poll");
    if (ready == 0) return Ready::timed_out;
    if (count == 2 && fds[1].revents != 0) return Ready::cancelled;
    return Ready::fd;  // also POLLHUP or POLLERR: the next call on fd says which
  }
}

// ---- the server's sockets ------------------------------------------------------

inline sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return address;
}

// A non-blocking listener on 127.0.0.1:`port` (0: any free port).
inline Fd listen_on_loopback(std::uint16_t port) {
  Fd listener(::socket(AF_INET, SOCK_STREAM, 0));
  if (!listener) fail("socket");
  const int on = 1;
  ::setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  const sockaddr_in address = loopback(port);
  if (::bind(listener.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) < 0) {
    fail("bind");
  }
  if (::listen(listener.get(), SOMAXCONN) < 0) fail("listen");
  set_flags(listener.get());
  return listener;
}

inline std::uint16_t local_port(int fd) {
  sockaddr_in address{};
  socklen_t size = sizeof address;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size) < 0) fail("getsockname");
  return ntohs(address.sin_port);
}

// Sends all of `data` on a non-blocking socket, waiting for room until
// `guard` passes. False if the connection broke (or the peer stopped
// reading).
inline bool send_all(int fd, std::string_view data, Clock::duration guard_after) {
  const Clock::time_point guard = Clock::now() + guard_after;
  while (!data.empty()) {
    const ssize_t sent = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (sent > 0) {
      data.remove_prefix(static_cast<std::size_t>(sent));
    } else if (sent < 0 && errno == EINTR) {
      continue;
    } else if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (wait_for(fd, POLLOUT, -1, milliseconds_until(guard)) == Ready::timed_out) return false;
    } else {
      return false;
    }
  }
  return true;
}

enum class Received { data, eof, nothing, error };

inline Received receive(int fd, std::string& into) {
  char chunk[4096];
  const ssize_t got = ::recv(fd, chunk, sizeof chunk, 0);
  if (got > 0) {
    into.append(chunk, static_cast<std::size_t>(got));
    return Received::data;
  }
  if (got == 0) return Received::eof;
  return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? Received::nothing
                                                                   : Received::error;
}

// Closes so that the peer reads everything sent and then EOF, never a
// reset: our FIN first, then input read and dropped until the peer's FIN
// (Linux answers a close with unread input by a reset, which can overtake
// data the peer has not read yet), for at most `linger`.
inline void close_gracefully(Fd socket, Clock::duration linger) {
  ::shutdown(socket.get(), SHUT_WR);
  const Clock::time_point guard = Clock::now() + linger;
  std::string dropped;
  for (;;) {
    dropped.clear();
    const Received received = receive(socket.get(), dropped);
    if (received == Received::eof || received == Received::error) return;
    if (received == Received::nothing &&
        wait_for(socket.get(), POLLIN, -1, milliseconds_until(guard)) == Ready::timed_out) {
      return;
    }
  }
}

// The next complete line of `input` (without its '\n'), taken out of it.
inline std::optional<std::string> take_line(std::string& input) {
  const std::size_t end = input.find('\n');
  if (end == std::string::npos) return std::nullopt;
  std::string line = input.substr(0, end);
  input.erase(0, end + 1);
  return line;
}

// ---- signals -------------------------------------------------------------------

inline int signal_pipe = -1;  // write end; set before the handler is installed, then only read

extern "C" inline void on_signal(int) {
  const int saved = errno;
  const char byte = 1;
  [[maybe_unused]] const ssize_t written = ::write(signal_pipe, &byte, 1);  // async-signal-safe
  errno = saved;
}

// Routes SIGINT and SIGTERM to a pipe to poll, while it lives; ignores
// SIGPIPE (a broken connection is an error code, not a signal).
class SignalPipe {
 public:
  SignalPipe() : pipe_(make_pipe()) {
    signal_pipe = pipe_.write.get();
    struct sigaction action {};
    action.sa_handler = on_signal;
    sigemptyset(&action.sa_mask);
    if (::sigaction(SIGINT, &action, nullptr) < 0 || ::sigaction(SIGTERM, &action, nullptr) < 0) {
      fail("sigaction");
    }
    ::signal(SIGPIPE, SIG_IGN);
  }
  SignalPipe(const SignalPipe&) = delete;
  SignalPipe& operator=(const SignalPipe&) = delete;
  ~SignalPipe() {  // before the pipe closes: the handler must not write to a reused fd
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
  }
  int fd() const noexcept { return pipe_.read.get(); }

 private:
  Pipe pipe_;
};

// ---- the client ----------------------------------------------------------------

// A blocking TCP connection to 127.0.0.1:`port` whose every send and
// receive gives up after `guard_seconds`; an empty Fd, with errno set, if
// it cannot be made.
inline Fd connect_loopback(std::uint16_t port, int guard_seconds) {
  Fd socket(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!socket) return socket;
  const timeval guard{guard_seconds, 0};
  ::setsockopt(socket.get(), SOL_SOCKET, SO_RCVTIMEO, &guard, sizeof guard);
  ::setsockopt(socket.get(), SOL_SOCKET, SO_SNDTIMEO, &guard, sizeof guard);
  const sockaddr_in address = loopback(port);
  if (::connect(socket.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) < 0) {
    const int error = errno;
    socket = Fd();
    errno = error;  // close() may have changed it
  }
  return socket;
}

// A blocking client of the echo server, line by line; the demo's and the
// tests'. Every call gives up after the guard.
class Client {
 public:
  enum class End { eof, reset, other };

  // connected() says whether it worked; errno says why not.
  explicit Client(std::uint16_t port, int guard_seconds = 30)
      : socket_(connect_loopback(port, guard_seconds)) {}

  bool connected() const noexcept { return static_cast<bool>(socket_); }

  // False if the connection is broken (or the server closed it).
  bool send(std::string_view data) {
    return ::send(socket_.get(), data.data(), data.size(), MSG_NOSIGNAL) ==
           static_cast<ssize_t>(data.size());
  }
  bool send_line(std::string_view line) { return send(std::string(line) + '\n'); }
  void finish_sending() { ::shutdown(socket_.get(), SHUT_WR); }

  // The next line, without its '\n'; nothing when the connection ends
  // (end() then says how: a clean EOF, a reset, or anything else: a line
  // cut off by the EOF, the guard, another error).
  std::optional<std::string> read_line() {
    for (;;) {
      if (std::optional<std::string> line = take_line(input_)) return line;
      char chunk[4096];
      const ssize_t got = ::recv(socket_.get(), chunk, sizeof chunk, 0);
      if (got > 0) {
        input_.append(chunk, static_cast<std::size_t>(got));
        continue;
      }
      if (got < 0 && errno == EINTR) continue;
      end_ = got == 0 && input_.empty() ? End::eof
             : got < 0 && errno == ECONNRESET ? End::reset
                                              : End::other;
      return std::nullopt;
    }
  }

  End end() const noexcept { return end_; }
  void close() { socket_ = Fd(); }

 private:
  Fd socket_;
  std::string input_;
  End end_ = End::other;
};

}  // namespace echo
