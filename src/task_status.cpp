#include "quell/task_status.hpp"

namespace quell {

const char* to_string(TaskStatus status) noexcept {
  switch (status) {
    case TaskStatus::queued: return "queued";
    case TaskStatus::running: return "running";
    case TaskStatus::completed: return "completed";
    case TaskStatus::failed: return "failed";
    case TaskStatus::cancelled: return "cancelled";
    case TaskStatus::timed_out: return "timed_out";
    case TaskStatus::rejected: return "rejected";
  }
  return "unknown";
}

const char* to_string(TaskResult result) noexcept {
  switch (result) {
    case TaskResult::none: return "none";
    case TaskResult::success: return "success";
    case TaskResult::failure: return "failure";
    case TaskResult::cancelled: return "cancelled";
    case TaskResult::timeout: return "timeout";
    case TaskResult::rejected: return "rejected";
  }
  return "unknown";
}

bool is_terminal(TaskStatus status) noexcept {
  return status != TaskStatus::queued && status != TaskStatus::running;
}

TaskResult result_of(TaskStatus status) noexcept {
  switch (status) {
    case TaskStatus::queued:
    case TaskStatus::running: return TaskResult::none;
    case TaskStatus::completed: return TaskResult::success;
    case TaskStatus::failed: return TaskResult::failure;
    case TaskStatus::cancelled: return TaskResult::cancelled;
    case TaskStatus::timed_out: return TaskResult::timeout;
    case TaskStatus::rejected: return TaskResult::rejected;
  }
  return TaskResult::none;
}

}  // namespace quell
