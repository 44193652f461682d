#pragma once

// How a task block reaches a pool: the one entry point the public headers
// call, and what it takes beyond the task's options.

#include <chrono>

#include "quell/cancellation.hpp"
#include "quell/detail/task.hpp"
#include "quell/task_options.hpp"

namespace quell {
class ThreadPool;
}

namespace quell::detail {

// How a task enters the pool beyond its options.
struct Placement {
  // A tracked task's second origin: the owner's state, followed through the link.
  CancelState* extra_state = nullptr;
  CancelLink* extra_link = nullptr;
  const std::chrono::steady_clock::time_point* start = nullptr;  // delayed until then
  // The family of the set the task joins (F1); 0: the submitter's.
  TaskId family = 0;
};

// Assigns the task to `pool`, then accepts and enqueues it (or hands it to
// the timer, for a delayed start), or resolves it as rejected. Consumes the
// queue's reference either way. False if rejected. Throws std::bad_alloc
// before anything is counted, having destroyed the task with every
// reference the caller made (no future or handle exists yet).
bool pool_submit(PoolCore* pool, TaskBase* task, const TaskOptions& options,
                 const Placement& placement = {});

// The family a set created here gives its tasks (F1): the running task's,
// on a worker of `pool`; a new one anywhere else.
TaskId pool_family_here(const PoolCore* pool) noexcept;

// How groups, scopes and periodic tasks reach the pool's core.
struct PoolAccess {
  static PoolCore* core(const ThreadPool& pool) noexcept;
};

}  // namespace quell::detail
