#include "timers.hpp"

#include <pthread.h>

#include <algorithm>

namespace quell::detail {
namespace {
// Below this many entries a sweep is not worth its pass.
constexpr std::size_t kSweepFloor = 64;
}  // namespace

TimerService::TimerService(const std::string& name) {
  thread_ = std::thread([this] { run(); });
  // Linux limits a thread name to 15 characters.
  pthread_setname_np(thread_.native_handle(), (name + "-timer").substr(0, 15).c_str());
}

TimerService::~TimerService() { stop(); }

bool TimerService::add(const TimerKind& kind, void* target, Clock::time_point due) {
  std::vector<Entry> released;
  {
    std::unique_lock lock(mutex_);
    if (closed_ && kind.close != nullptr) return false;
    push(lock, Entry{due, target, &kind}, released);
  }
  for (const Entry& entry : released) entry.kind->release(entry.target);
  return true;
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
                                       [](const Entry& entry) { return !entry.kind->dead(entry.target); });
  released.insert(released.end(), live_end, heap_.end());
  heap_.erase(live_end, heap_.end());
  std::make_heap(heap_.begin(), heap_.end(), Later{});
  // Relaxed: a hint; deaths counted after this store are swept next time.
  dead_hint_.store(0, std::memory_order_relaxed);
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
    for (const Entry& entry : due) entry.kind->fire(entry.target);
    due.clear();
    lock.lock();
  }
}

void TimerService::close() {
  std::vector<Entry> closing;
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
    const auto rest = std::partition(heap_.begin(), heap_.end(), [](const Entry& entry) {
      return entry.kind->close == nullptr;
    });
    closing.assign(rest, heap_.end());
    heap_.erase(rest, heap_.end());
    std::make_heap(heap_.begin(), heap_.end(), Later{});
  }
  for (const Entry& entry : closing) entry.kind->close(entry.target);
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
  for (const Entry& entry : left) entry.kind->release(entry.target);
}

}  // namespace quell::detail
