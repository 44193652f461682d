#pragma once

// How a task is submitted: the token that cancels it, its deadline, its
// priority. A value type; the default is "no token, no deadline, normal".
//
// set_deadline() and set_timeout() replace each other: the later call wins
// and the other accessor then reports nullopt. A timeout becomes a deadline
// of "submission time + timeout" when the task is submitted.
//
// Thread safety: thread-compatible.

#include <chrono>
#include <concepts>
#include <optional>

#include "quell/cancellation.hpp"
#include "quell/detail/clock.hpp"
#include "quell/stop_token.hpp"
#include "quell/task_status.hpp"

namespace quell {

class TaskOptions {
 public:
  using Clock = std::chrono::steady_clock;

  // The setters never throw, set_cancellation(const Token&) excepted: they
  // move a token and store plain values.
  TaskOptions& set_cancellation(CancellationToken token) {
    token_ = std::move(token);
    return *this;
  }
  // Any other stoppable_token (a std::stop_token, say), through
  // to_cancellation_token(): the task is cancelled when `token` is
  // stop-requested. The one setter that may throw: std::bad_alloc from that
  // conversion, with no effect.
  template <stoppable_token Token>
    requires(!std::same_as<Token, CancellationToken>)
  TaskOptions& set_cancellation(const Token& token) {
    return set_cancellation(to_cancellation_token(token));
  }
  TaskOptions& set_deadline(Clock::time_point deadline) {
    deadline_ = deadline;
    timeout_.reset();
    return *this;
  }
  TaskOptions& set_timeout(Clock::duration timeout) {
    timeout_ = timeout;
    deadline_.reset();
    return *this;
  }
  TaskOptions& set_priority(TaskPriority priority) {
    priority_ = priority;
    return *this;
  }

  const CancellationToken& cancellation() const noexcept { return token_; }
  std::optional<Clock::time_point> deadline() const noexcept { return deadline_; }
  std::optional<Clock::duration> timeout() const noexcept { return timeout_; }
  TaskPriority priority() const noexcept { return priority_; }

  // The deadline for a task submitted at `now`, if any. A timeout too long
  // for the clock saturates to time_point::max().
  std::optional<Clock::time_point> deadline_from(Clock::time_point now) const noexcept {
    if (timeout_) return detail::saturating_add(now, *timeout_);
    return deadline_;
  }

 private:
  CancellationToken token_;
  std::optional<Clock::time_point> deadline_;
  std::optional<Clock::duration> timeout_;
  TaskPriority priority_ = TaskPriority::normal;
};

}  // namespace quell
