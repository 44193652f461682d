#include "quell/thread_pool.hpp"

#include <algorithm>
#include <cstdio>
#include <exception>

#include "pool_core.hpp"

namespace quell::detail {

QUELL_FAST_TLS constinit thread_local Worker* this_worker = nullptr;
QUELL_FAST_TLS constinit thread_local TaskBase* this_task_ptr = nullptr;
QUELL_FAST_TLS constinit thread_local unsigned this_stripe = kStripes;
std::atomic<unsigned> next_stripe{0};

namespace {

void add_histogram(LatencyHistogram& into, const Counters::Histogram& from) noexcept {
  // Relaxed: as every statistic (see Counters).
  for (std::size_t b = 0; b < LatencyHistogram::kBuckets; ++b) {
    into.buckets[b] += from.buckets[b].load(std::memory_order_relaxed);
  }
  into.count += from.count.load(std::memory_order_relaxed);
  into.sum_ns += from.sum_ns.load(std::memory_order_relaxed);
}

}  // namespace

ThreadPoolStats PoolCore::stats() const noexcept {
  // Relaxed sums of monotonic counters: exact once wait_idle() returned,
  // otherwise a moment's picture. Outcomes are read before what precedes
  // them (started before accepted) so differences do not go negative.
  ThreadPoolStats stats;
  std::uint64_t started = 0;
  std::uint64_t ended = 0;
  std::uint64_t dropped = 0;
  std::uint64_t parked = 0;
  std::uint64_t unparked = 0;
  std::uint64_t visits = 0;
  auto add = [&](const Counters& c) {
    unparked += c.unparked.load(std::memory_order_relaxed);
    stats.completed += c.completed.load(std::memory_order_relaxed);
    stats.failed += c.failed.load(std::memory_order_relaxed);
    stats.cancelled += c.cancelled.load(std::memory_order_relaxed);
    stats.timed_out += c.timed_out.load(std::memory_order_relaxed);
    stats.stolen += c.stolen.load(std::memory_order_relaxed);
    ended += c.ended.load(std::memory_order_relaxed);
    dropped += c.dropped.load(std::memory_order_relaxed);
    for (std::size_t r = 0; r < stats.ended_by_reason.size(); ++r) {
      stats.ended_by_reason[r] += c.by_reason[r].load(std::memory_order_relaxed);
    }
    add_histogram(stats.queue_wait, c.queue_wait);
    add_histogram(stats.run_time, c.run_time);
    add_histogram(stats.cancel_reaction, c.cancel_reaction);
  };
  auto add_intake = [&](const Counters& c) {
    started += c.started.load(std::memory_order_relaxed);
    parked += c.parked.load(std::memory_order_relaxed);
    visits += c.visits.load(std::memory_order_relaxed);
    stats.rejected += c.rejected.load(std::memory_order_relaxed);
    stats.submitted += c.accepted.load(std::memory_order_relaxed);
  };
  for (const Counters& c : shared_counters_) add(c);
  for (const auto& worker : workers_) add(worker->counters);
  for (const Counters& c : shared_counters_) add_intake(c);
  for (const auto& worker : workers_) add_intake(worker->counters);
  stats.submitted -= visits;  // coroutines moved in by schedule() were not submitted
  const std::uint64_t accepted = stats.submitted - stats.rejected;
  stats.queued = accepted > started + dropped ? accepted - started - dropped : 0;
  stats.running = started > ended ? started - ended : 0;
  stats.suspended = std::min<std::uint64_t>(parked > unparked ? parked - unparked : 0, stats.running);
  return stats;
}

TimerService& pool_timers(PoolCore* pool) noexcept { return pool->timers(); }

bool pool_closed(const PoolCore* pool) noexcept { return pool->closed(); }

}  // namespace quell::detail

namespace quell {

namespace {
ThreadPoolConfig config_with(std::size_t thread_count) {
  ThreadPoolConfig config;
  config.thread_count = thread_count;
  return config;
}
}  // namespace

ThreadPool::ThreadPool()
    : ThreadPool(config_with(std::max<std::size_t>(1, std::thread::hardware_concurrency()))) {}

ThreadPool::ThreadPool(std::size_t thread_count) : ThreadPool(config_with(thread_count)) {}

ThreadPool::ThreadPool(ThreadPoolConfig config) : core_(new detail::PoolCore(std::move(config))) {
  core_->set_owner(this);
}

ThreadPool::~ThreadPool() {
  if (core_->is_own_worker()) {
    std::fputs("quell::ThreadPool destroyed from one of its own workers\n", stderr);
    std::terminate();
  }
  core_->shutdown();
  core_->unpin();
}

void ThreadPool::shutdown() { core_->shutdown(); }
detail::PoolCore* detail::PoolAccess::core(const ThreadPool& pool) noexcept { return pool.core_; }
void ThreadPool::wait_idle() { core_->wait_idle(); }
std::size_t ThreadPool::thread_count() const noexcept { return core_->thread_count(); }
ThreadPoolStats ThreadPool::stats() const noexcept { return core_->stats(); }

namespace this_task {

CancellationToken cancellation_token() noexcept {
  // In a coroutine: its current token (R5), updated at every resumption.
  if (const CancellationToken* token = detail::current_coro_token) return *token;
  detail::TaskBase* task = detail::this_task_ptr;
  return task != nullptr ? detail::StateAccess::token(task) : CancellationToken();
}

bool cancelled() noexcept {
  if (const CancellationToken* token = detail::current_coro_token) return token->cancelled();
  const detail::TaskBase* task = detail::this_task_ptr;
  return task != nullptr && task->cancelled();
}

TaskId id() noexcept {
  // A coroutine's resumption sets this_task_ptr to its root's task.
  const detail::TaskBase* task = detail::this_task_ptr;
  return task != nullptr ? task->id_ : 0;
}

}  // namespace this_task
}  // namespace quell
