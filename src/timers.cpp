#include "timers.hpp"

#include <pthread.h>

#include <algorithm>

#include "quell/periodic_task.hpp"

namespace quell::detail {
namespace {
// Below this many entries a sweep is not worth its pass.
constexpr std::size_t kSweepFloor = 64;
}  // namespace

TimerService::TimerService(PoolCore* pool, void (*start_task)(PoolCore*, TaskBase*),
                           const std::string& name)
    : pool_(pool), start_task_(start_task) {
  thread_ = std::thread([this] { run(); });
  // Linux limits a thread name to 15 characters.
  pthread_setname_np(thread_.native_handle(), (name + "-timer").substr(0, 15).c_str());
}

TimerService::~TimerService() { stop(); }

bool TimerService::add_start(TaskBase* task, Clock::time_point due) {
  std::vector<Entry> released;
  {
    std::unique_lock lock(mutex_);
    if (starts_closed_) return false;
    push(lock, Entry{due, task, Kind::start}, released);
  }
  for (const Entry& entry : released) release(entry);
  return true;
}

void TimerService::add_deadline(TaskBase* task, Clock::time_point due) {
  task->add_token_ref();
  std::vector<Entry> released;
  {
    std::unique_lock lock(mutex_);
    push(lock, Entry{due, task, Kind::deadline}, released);
  }
  for (const Entry& entry : released) release(entry);
}

void TimerService::add_periodic(PeriodicCore* periodic, Clock::time_point due) {
  periodic->add_ref();
  std::vector<Entry> released;
  {
    std::unique_lock lock(mutex_);
    push(lock, Entry{due, periodic, Kind::periodic}, released);
  }
  for (const Entry& entry : released) release(entry);
}

void TimerService::push(std::unique_lock<std::mutex>& lock, Entry entry,
                        std::vector<Entry>& released) {
  if (stopping_) {  // the pool has shut down: nothing will fire
    released.push_back(entry);
    return;
  }
  // Relaxed: a hint (see entry_died()).
  const std::size_t dead = dead_hint_.load(std::memory_order_relaxed);
  if (heap_.size() >= kSweepFloor && dead > heap_.size() / 2) {
    sweep(released);
  }
  // Wake the thread only when its sleep would end too late now.
  const bool earliest = heap_.empty() || entry.due < heap_.front().due;
  heap_.push_back(entry);
  std::push_heap(heap_.begin(), heap_.end(), Later{});
  lock.unlock();
  if (earliest) wake_.notify_one();
}

void TimerService::sweep(std::vector<Entry>& released) {
  const auto live_end = std::partition(heap_.begin(), heap_.end(),
                                       [](const Entry& entry) { return !dead(entry); });
  released.insert(released.end(), live_end, heap_.end());
  heap_.erase(live_end, heap_.end());
  std::make_heap(heap_.begin(), heap_.end(), Later{});
  // Relaxed: a hint; deaths counted after this store are swept next time.
  dead_hint_.store(0, std::memory_order_relaxed);
}

bool TimerService::dead(const Entry& entry) noexcept {
  switch (entry.kind) {
    case Kind::start:
      // Not queued any more: dropped (it cannot have started before due).
      return static_cast<TaskBase*>(entry.target)->status() != TaskStatus::queued;
    case Kind::deadline:
      return static_cast<TaskBase*>(entry.target)->ready();
    case Kind::periodic:
      return static_cast<PeriodicCore*>(entry.target)->stopped();
  }
  return false;
}

void TimerService::release(const Entry& entry) noexcept {
  if (entry.kind == Kind::periodic) {
    static_cast<PeriodicCore*>(entry.target)->release();
  } else {
    static_cast<TaskBase*>(entry.target)->release_token_ref();
  }
}

void TimerService::run() noexcept {
  std::vector<Entry> due;
  std::unique_lock lock(mutex_);
  for (;;) {
    if (stopping_) return;
    if (heap_.empty()) {
      wake_.wait(lock);
      continue;
    }
    const Clock::time_point now = Clock::now();
    if (heap_.front().due > now) {
      // A copy: wait_until() reads its time point again after waking, and a
      // push() while we wait may reallocate the heap under a reference.
      const Clock::time_point next = heap_.front().due;
      wake_.wait_until(lock, next);
      continue;
    }
    while (!heap_.empty() && heap_.front().due <= now) {
      std::pop_heap(heap_.begin(), heap_.end(), Later{});
      due.push_back(heap_.back());
      heap_.pop_back();
    }
    lock.unlock();  // M3
    for (const Entry& entry : due) fire(entry);
    due.clear();
    lock.lock();
  }
}

void TimerService::fire(const Entry& entry) noexcept {
  switch (entry.kind) {
    case Kind::start: {
      auto* task = static_cast<TaskBase*>(entry.target);
      if (task->status() == TaskStatus::queued) {
        start_task_(pool_, task);  // takes the queue's reference
        return;
      }
      break;  // dropped while it waited: a tombstone
    }
    case Kind::deadline: {
      auto* task = static_cast<TaskBase*>(entry.target);
      // Queued: dropped, timed_out. Running: its token fires. Ended: nothing.
      task->request_cancel(static_cast<std::uint64_t>(CancelReason::deadline));
      break;
    }
    case Kind::periodic:
      static_cast<PeriodicCore*>(entry.target)->fire();
      break;
  }
  release(entry);
}

void TimerService::close_starts() {
  std::vector<Entry> starts;
  {
    std::lock_guard lock(mutex_);
    starts_closed_ = true;
    const auto rest = std::partition(heap_.begin(), heap_.end(), [](const Entry& entry) {
      return entry.kind != Kind::start;
    });
    starts.assign(rest, heap_.end());
    heap_.erase(rest, heap_.end());
    std::make_heap(heap_.begin(), heap_.end(), Later{});
  }
  for (const Entry& entry : starts) {
    // A queued one is dropped now (cancelled, reason shutdown); a tombstone
    // has nothing to cancel.
    static_cast<TaskBase*>(entry.target)
        ->request_cancel(static_cast<std::uint64_t>(CancelReason::shutdown));
    release(entry);
  }
}

void TimerService::stop() {
  std::vector<Entry> left;
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard lock(mutex_);
    left.swap(heap_);
  }
  for (const Entry& entry : left) release(entry);
}

}  // namespace quell::detail
