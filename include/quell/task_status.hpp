#pragma once

// What a task is doing, and how it ended.
//
//   queued ──> running ──> completed | failed | cancelled | timed_out
//     └──────────────────> cancelled | timed_out      (dropped before it started)
//   rejected                                           (never accepted)
//
// A status other than queued and running is terminal: it never changes
// again. result() is TaskResult::none until the status is terminal.
//
// Thread safety: plain enums and pure functions, none of which throws.

#include <cstdint>

namespace quell {

// 0 is never a valid id; ids are unique within a process.
using TaskId = std::uint64_t;

enum class TaskStatus { queued, running, completed, failed, cancelled, timed_out, rejected };
enum class TaskResult { none, success, failure, cancelled, timeout, rejected };
enum class TaskPriority { low, normal, high };

const char* to_string(TaskStatus status) noexcept;
const char* to_string(TaskResult result) noexcept;
bool is_terminal(TaskStatus status) noexcept;

// The result a terminal status stands for; none for queued and running.
TaskResult result_of(TaskStatus status) noexcept;

}  // namespace quell
