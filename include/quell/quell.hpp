#pragma once

// Everything quell offers, in one include.

#include "quell/cancellation.hpp"
#include "quell/coro.hpp"
#include "quell/error.hpp"
#include "quell/future.hpp"
#include "quell/parallel.hpp"
#include "quell/periodic_task.hpp"
#include "quell/scope.hpp"
#include "quell/stop_token.hpp"
#include "quell/task_group.hpp"
#include "quell/task_handle.hpp"
#include "quell/task_options.hpp"
#include "quell/task_status.hpp"
#include "quell/thread_pool.hpp"
#include "quell/wait.hpp"
#include "quell/when.hpp"
