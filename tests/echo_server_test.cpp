// The echo server example (examples/echo_server.cpp), driven from outside as
// a child process: hundreds of loopback connections checked byte for byte,
// a SIGTERM while connections are open mid-request, and the counts of its
// summary line checked against what the clients saw.
//
// Nothing sleeps to order events: the clients wait for replies and EOFs,
// and every wait has a generous failure guard (the machine may be loaded).

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "echo_server_process.hpp"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto kGuard = 60s;  // for the server's exit; a socket read waits at most 30 s

using quell::test::Fd;
using quell::test::ServerProcess;
using quell::test::Summary;

// The example's blocking client (examples/echo_net.hpp); a read waits at
// most 30 s.
using echo::Client;

// A line of `length` varied bytes, anything but '\n' ('\0' and '\r' too).
std::string request_line(std::size_t seed, std::size_t length) {
  std::string line(length, ' ');
  for (std::size_t i = 0; i < length; ++i) {
    char byte = static_cast<char>((seed * 131 + i * 7) % 256);
    line[i] = byte == '\n' ? '\r' : byte;
  }
  return line;
}

// One short conversation: 1 to 3 lines, sent together or one at a time,
// each echoed byte for byte; then the client closes. Returns the replies
// received; appends to `errors` what went wrong.
std::size_t converse(std::uint16_t port, std::size_t n, std::vector<std::string>& errors) {
  Client client(port);
  if (!client.connected()) {
    errors.push_back("connection " + std::to_string(n) + " refused");
    return 0;
  }
  std::vector<std::string> lines;
  for (std::size_t k = 0; k < 1 + n % 3; ++k) lines.push_back(request_line(n + k, (n * 37 + k) % 2000));
  if (n % 2 == 0) {
    std::string all;
    for (const std::string& line : lines) all += line + '\n';
    client.send(all);
  }
  std::size_t replies = 0;
  for (const std::string& line : lines) {
    if (n % 2 == 1) client.send(line + '\n');
    std::optional<std::string> reply = client.read_line();
    if (!reply || *reply != line) {
      errors.push_back("connection " + std::to_string(n) + ": a wrong or missing echo");
      return replies;
    }
    ++replies;
  }
  return replies;
}

// A connection the server has answered once, then left as `state` says
// when the server gets its SIGTERM.
struct Held {
  enum State { idle, partial_line, slow_request, unread_echo };
  Client client;
  State state;
};

// After the SIGTERM: what a held connection may still receive, then EOF.
// Returns the replies received; appends to `errors` what went wrong.
std::size_t drain(Held& held, std::size_t i, std::vector<std::string>& errors) {
  std::size_t replies = 0;
  while (std::optional<std::string> line = held.client.read_line()) {
    const bool allowed =
        replies == 0 &&
        ((held.state == Held::slow_request && *line == "ERR shutdown") ||
         (held.state == Held::unread_echo && (*line == "after " + std::to_string(i) ||
                                              *line == "ERR shutdown")));
    if (!allowed) errors.push_back("held " + std::to_string(i) + ": unexpected \"" + *line + "\"");
    ++replies;
  }
  if (held.client.end() != Client::End::eof) {
    errors.push_back("held " + std::to_string(i) + ": not closed with a clean EOF");
  }
  return replies;
}

std::string joined(const std::vector<std::string>& errors) {
  std::string all;
  for (std::size_t i = 0; i < std::min<std::size_t>(errors.size(), 10); ++i) all += errors[i] + "\n";
  return all;
}

TEST(EchoServer, AnswersEveryConnectionAndOnSigtermClosesEachCleanlyAndExitsZero) {
  // A request deadline longer than the test: no request times out, and the
  // slow one is certainly still running when the SIGTERM comes.
  ServerProcess server({"--port", "0", "--timeout-ms", "120000"}, kGuard);
  const std::uint16_t port = server.port();
  ASSERT_NE(port, 0) << "no \"listening on\" line";

  constexpr std::size_t kThreads = 3;
  constexpr std::size_t kConnectionsPerThread = 100;
  std::vector<std::vector<std::string>> errors(kThreads);
  std::vector<std::size_t> replies(kThreads, 0);
  std::vector<std::thread> clients;
  for (std::size_t t = 0; t < kThreads; ++t) {
    clients.emplace_back([&, t] {
      for (std::size_t c = 0; c < kConnectionsPerThread; ++c) {
        replies[t] += converse(port, t * kConnectionsPerThread + c, errors[t]);
      }
    });
  }
  for (std::thread& client : clients) client.join();
  std::size_t answered = 0;
  for (std::size_t t = 0; t < kThreads; ++t) {
    EXPECT_TRUE(errors[t].empty()) << joined(errors[t]);
    answered += replies[t];
  }

  // Connections open mid-request at the SIGTERM; each answered once first,
  // so the server has certainly accepted it.
  constexpr std::size_t kHeld = 12;
  std::vector<Held> held;
  std::vector<std::string> held_errors;
  for (std::size_t i = 0; i < kHeld; ++i) {
    held.push_back({Client(port), static_cast<Held::State>(i % 4)});
    Client& client = held.back().client;
    client.send("hello " + std::to_string(i) + "\n");
    ASSERT_EQ(client.read_line(), "hello " + std::to_string(i));
    ++answered;
    switch (held.back().state) {
      case Held::idle: break;
      case Held::partial_line: client.send("half a li"); break;
      case Held::slow_request: client.send("sleep 100000\n"); break;
      case Held::unread_echo: client.send("after " + std::to_string(i) + "\n"); break;
    }
  }
  server.signal(SIGTERM);
  for (std::size_t i = 0; i < kHeld; ++i) {
    answered += drain(held[i], i, held_errors);
    held[i].client.close();  // the server waits for our FIN before it closes
  }
  EXPECT_TRUE(held_errors.empty()) << joined(held_errors);

  ASSERT_EQ(server.wait_for_exit(), 0) << server.output();
  const std::optional<Summary> summary = server.summary();
  ASSERT_TRUE(summary) << server.output();
  EXPECT_EQ(summary->accepted, kThreads * kConnectionsPerThread + kHeld);
  EXPECT_EQ(summary->answered + summary->timed_out + summary->cancelled, answered)
      << "every reply the server counts arrived, and no other";
  EXPECT_EQ(summary->requests, answered) << "every request the server took was answered";
  EXPECT_EQ(summary->timed_out, 0u);
}

TEST(EchoServer, WithSecondsExitsZeroOnItsOwn) {
  ServerProcess server({"--port", "0", "--seconds", "1"}, kGuard);
  ASSERT_NE(server.port(), 0);
  ASSERT_EQ(server.wait_for_exit(), 0) << server.output();
  const std::optional<Summary> summary = server.summary();
  ASSERT_TRUE(summary) << server.output();
  EXPECT_EQ(summary->accepted, 0u);
}

TEST(EchoServer, ARequestPastItsDeadlineGetsErrTimeoutAndTheConnectionGoesOn) {
  ServerProcess server({"--port", "0", "--timeout-ms", "300"}, kGuard);
  const std::uint16_t port = server.port();
  ASSERT_NE(port, 0);
  {
    Client client(port);
    ASSERT_TRUE(client.connected());
    client.send("sleep 100000\n");
    EXPECT_EQ(client.read_line(), "ERR timeout");
    client.send("still here\nsleep 1\n");
    EXPECT_EQ(client.read_line(), "still here");
    EXPECT_EQ(client.read_line(), "slept 1");
  }
  server.signal(SIGTERM);
  ASSERT_EQ(server.wait_for_exit(), 0) << server.output();
  const std::optional<Summary> summary = server.summary();
  ASSERT_TRUE(summary) << server.output();
  EXPECT_EQ(summary->timed_out, 1u);
  EXPECT_EQ(summary->answered, 2u);
}

TEST(EchoServer, ALineLongerThanTheLimitGetsAnErrorAndAClose) {
  ServerProcess server({"--port", "0"}, kGuard);
  const std::uint16_t port = server.port();
  ASSERT_NE(port, 0);
  {
    Client client(port);
    ASSERT_TRUE(client.connected());
    client.send(std::string(10000, 'x'));
    EXPECT_EQ(client.read_line(), "ERR line too long");
    EXPECT_FALSE(client.read_line().has_value());
    EXPECT_EQ(client.end(), Client::End::eof);
  }
  server.signal(SIGTERM);
  ASSERT_EQ(server.wait_for_exit(), 0) << server.output();
}

}  // namespace
