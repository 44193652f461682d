#include <cstdio>
#include <exception>

#include "pool_core.hpp"
#include "thread_name.hpp"

namespace quell::detail {

QueueNode* PoolCore::steal(Worker& worker) noexcept {
  const std::size_t count = workers_.size();
  if (count < 2) return nullptr;
  worker.rng ^= worker.rng << 13;
  worker.rng ^= worker.rng >> 7;
  worker.rng ^= worker.rng << 17;
  const std::size_t first = static_cast<std::size_t>(worker.rng % count);
  for (std::size_t i = 0; i < count; ++i) {
    Worker& victim = *workers_[(first + i) % count];
    if (&victim == &worker) continue;
    for (;;) {
      auto [result, task] = victim.deque.steal();
      if (result == WorkDeque<QueueNode*>::Steal::taken) {
        worker.counters.bump(&Counters::stolen);
        return task;
      }
      if (result == WorkDeque<QueueNode*>::Steal::empty) break;
    }
  }
  return nullptr;
}

bool PoolCore::work_visible() const noexcept {
  if (!injection_.empty_hint()) return true;
  for (const auto& worker : workers_) {
    if (!worker->deque.empty_hint()) return true;
  }
  return false;
}

QueueNode* PoolCore::find_task(Worker& worker) noexcept {
  if (QueueNode* task = worker.deque.pop()) return task;
  if (QueueNode* task = injection_.pop(worker.since_lower)) return task;
  return steal(worker);
}

// Leaving a wait clears the parking lot's pending wake, and notifiers skip
// their wake while one is pending (see parking.hpp). So a worker that
// leaves a wait and then takes a task, or goes back to a task of its own,
// passes the wake on: otherwise work queued behind the one it took could wait,
// with another worker asleep, for as long as that task runs.

void PoolCore::run_worker(Worker& worker) noexcept {
  this_worker = &worker;
  bool woke = false;
  for (;;) {
    QueueNode* task = find_task(worker);
    if (task == nullptr && parking_.begin_search()) {
      for (int round = 0; task == nullptr && round < kSpinRounds; ++round) {
        for (int i = 0; i < 16; ++i) cpu_relax();
        task = find_task(worker);
      }
      parking_.end_search();
      if (task != nullptr) {
        // A notify skipped while we searched may have been for other work.
        Parking::found_work();
        if (work_visible()) parking_.notify_one();
      }
    }
    if (task != nullptr) {
      if (std::exchange(woke, false)) parking_.notify_one();
      execute(worker, task);
      continue;
    }
    const std::uint32_t key = parking_.prepare_wait();
    if ((task = find_task(worker)) != nullptr) {
      parking_.cancel_wait();
      parking_.notify_one();
      execute(worker, task);
      continue;
    }
    // Acquire: pairs with shutdown()'s release store; nothing is left to do.
    if (exiting_.load(std::memory_order_acquire)) {
      parking_.cancel_wait();
      return;
    }
    parking_.commit_wait(key);
    woke = true;
  }
}

PoolCore::PoolCore(ThreadPoolConfig config)
    : config_(checked(std::move(config))), timers_(config_.thread_name) {
  try {
    workers_.reserve(config_.thread_count);
    for (std::size_t i = 0; i < config_.thread_count; ++i) {
      workers_.push_back(std::make_unique<Worker>(*this, i));
      workers_.back()->counters.shared = false;  // before its thread starts
    }
    for (auto& worker : workers_) {
      // Relaxed: the thread's start publishes it to the worker.
      if (config_.on_thread_start) starting_.fetch_add(1, std::memory_order_relaxed);
      worker->thread = std::thread([this, w = worker.get()] { worker_main(*w); });
    }
    if (config_.on_thread_start) await_started();
  } catch (...) {
    // No task was submitted: the workers started are idle, and leave. The
    // same path serves a thread that could not start (§12) and a start
    // hook that threw.
    join_workers();
    timers_.stop();
    throw;
  }
}

void PoolCore::worker_main(Worker& worker) noexcept {
  // Named here, not through the handle by the constructor: so the name is
  // set before the start hook, which may choose its own.
  name_thread(worker);
  if (config_.on_thread_start) {
    try {
      config_.on_thread_start(worker.index);
    } catch (...) {
      worker.start_failure = std::current_exception();
    }
    const bool failed = worker.start_failure != nullptr;
    // Release: publishes start_failure to await_started()'s acquire load
    // that reads the count this makes zero (a release sequence of the RMWs).
    if (starting_.fetch_sub(1, std::memory_order_release) == 1) futex_wake_all(starting_);
    // The constructor will throw and join us: there is nothing to stop.
    if (failed) return;
  }
  run_worker(worker);
  // Exiting: no task is left for this worker (shutdown() or the
  // constructor's failure path). noexcept: a throw terminates.
  if (config_.on_thread_stop) config_.on_thread_stop(worker.index);
}

void PoolCore::await_started() {
  // Acquire: pairs with each worker's release count-down, so every
  // start_failure written is visible once the count is zero.
  for (std::uint32_t left = starting_.load(std::memory_order_acquire); left != 0;
       left = starting_.load(std::memory_order_acquire)) {
    futex_wait(starting_, left);
  }
  for (const auto& worker : workers_) {
    if (worker->start_failure) std::rethrow_exception(worker->start_failure);
  }
}

void PoolCore::join_workers() noexcept {
  // Release: pairs with the workers' acquire load; they leave once idle.
  exiting_.store(true, std::memory_order_release);
  parking_.notify_all();
  for (auto& worker : workers_) {
    if (worker->thread.joinable()) worker->thread.join();
  }
}

void PoolCore::name_thread(const Worker& worker) noexcept {
  // Linux limits a thread name to 15 characters; snprintf truncates and
  // allocates nothing. The worker's own thread: worker.thread may still be
  // being assigned by the constructor.
  char name[16];
  std::snprintf(name, sizeof name, "%s-%zu", config_.thread_name.c_str(), worker.index);
  set_current_thread_name(name);
}

}  // namespace quell::detail
