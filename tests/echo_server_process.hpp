#pragma once

// The echo server example (examples/echo_server.cpp) as a child process, for
// the tests that drive it from outside (echo_server_test, the soak): its
// path comes from ECHO_SERVER, its stdout is read line by line, and its last
// line is its summary.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../examples/echo_net.hpp"

extern char** environ;

namespace quell::test {

// The example's own file descriptor and loopback client connection
// (examples/echo_net.hpp), for the tests' clients.
using echo::connect_loopback;
using echo::Fd;

// What the server prints last.
struct Summary {
  unsigned long long accepted = 0, requests = 0, answered = 0, timed_out = 0, cancelled = 0,
                     undelivered = 0;
};

inline std::optional<Summary> parse_summary(const std::string& line) {
  Summary s;
  if (std::sscanf(line.c_str(),
                  "summary: %llu connections accepted, %llu requests: %llu answered, %llu timed "
                  "out, %llu cancelled by the shutdown; %llu replies not delivered",
                  &s.accepted, &s.requests, &s.answered, &s.timed_out, &s.cancelled,
                  &s.undelivered) != 6) {
    return std::nullopt;
  }
  return s;
}

// Our environment, with halt_on_error=1 added to TSAN_OPTIONS: a race in the
// server ends it at the first report, and the test fails on its exit status.
inline std::vector<std::string> server_environment() {
  std::vector<std::string> env;
  std::string tsan = "TSAN_OPTIONS=";
  for (char** entry = environ; *entry != nullptr; ++entry) {
    const std::string_view variable = *entry;
    if (variable.starts_with(tsan)) {
      tsan = std::string(variable) + ' ';
    } else {
      env.emplace_back(variable);
    }
  }
  env.push_back(tsan + "halt_on_error=1");
  return env;
}

// The server as a child process. `guard` bounds every wait for its output
// and its exit.
class ServerProcess {
 public:
  using Clock = std::chrono::steady_clock;

  ServerProcess(std::vector<std::string> args, Clock::duration guard) : guard_(guard) {
    const char* path = std::getenv("ECHO_SERVER");
    if (path == nullptr) throw std::runtime_error("ECHO_SERVER is not set (meson sets it)");
    int ends[2];
    if (::pipe2(ends, O_CLOEXEC) < 0) throw std::runtime_error("pipe2");
    stdout_ = Fd(ends[0]);
    const Fd write_end(ends[1]);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, write_end.get(), STDOUT_FILENO);
    args.insert(args.begin(), path);
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    std::vector<std::string> env = server_environment();
    std::vector<char*> envp;
    for (std::string& variable : env) envp.push_back(variable.data());
    envp.push_back(nullptr);
    const int error = ::posix_spawn(&pid_, path, &actions, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    if (error != 0) throw std::runtime_error(std::string("posix_spawn: ") + std::strerror(error));
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
  ~ServerProcess() {
    if (pid_ > 0) {  // a failed test: do not leave it running
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }

  pid_t pid() const noexcept { return pid_; }

  // The port of its "listening on 127.0.0.1:PORT" line; 0 if none came.
  std::uint16_t port() {
    const std::optional<std::string> line = read_line(Clock::now() + guard_);
    unsigned port = 0;
    if (!line || std::sscanf(line->c_str(), "listening on 127.0.0.1:%u", &port) != 1) return 0;
    return static_cast<std::uint16_t>(port);
  }

  void signal(int number) { ::kill(pid_, number); }

  // Reads its output to the end, then reaps it. Its exit status, or -1 if it
  // did not exit within the guard (it is then killed) or died of a signal.
  int wait_for_exit() {
    const Clock::time_point guard = Clock::now() + guard_;
    while (std::optional<std::string> line = read_line(guard)) lines_.push_back(std::move(*line));
    if (Clock::now() >= guard) return -1;
    int status = 0;
    ::waitpid(std::exchange(pid_, 0), &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

  std::optional<Summary> summary() const {
    return lines_.empty() ? std::nullopt : parse_summary(lines_.back());
  }
  std::string last_line() const { return lines_.empty() ? std::string() : lines_.back(); }
  std::string output() const {
    std::string all;
    for (const std::string& line : lines_) all += line + '\n';
    return all;
  }

 private:
  // The next line, or nothing at EOF or when the guard passes.
  std::optional<std::string> read_line(Clock::time_point guard) {
    for (;;) {
      if (const std::size_t end = buffer_.find('\n'); end != std::string::npos) {
        std::string line = buffer_.substr(0, end);
        buffer_.erase(0, end + 1);
        return line;
      }
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(guard - Clock::now());
      pollfd readable{stdout_.get(), POLLIN, 0};
      if (left.count() <= 0 || ::poll(&readable, 1, static_cast<int>(left.count())) == 0) {
        return std::nullopt;
      }
      char chunk[4096];
      const ssize_t got = ::read(stdout_.get(), chunk, sizeof chunk);
      if (got <= 0 && !(got < 0 && errno == EINTR)) return std::nullopt;
      if (got > 0) buffer_.append(chunk, static_cast<std::size_t>(got));
    }
  }

  const Clock::duration guard_;
  pid_t pid_ = 0;
  Fd stdout_;
  std::string buffer_;
  std::vector<std::string> lines_;
};

}  // namespace quell::test
