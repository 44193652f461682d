#include "timers.hpp"

#include <utility>

#include "thread_name.hpp"

namespace quell::detail {
namespace {
// Below this many entries a sweep is not worth its pass.
constexpr std::size_t kSweepFloor = 64;
}  // namespace

void TimerService::OutList::push_back(TimerEntry* entry) noexcept {
  entry->next_out = nullptr;
  *tail = entry;
  tail = &entry->next_out;
}

template <class Action>
void TimerService::OutList::take_each(Action action) noexcept {
  // Reads the link first: the action owns the entry and may free it or arm
  // it again (M4).
  for (TimerEntry* entry = head; entry != nullptr;) {
    action(std::exchange(entry, entry->next_out));
  }
}

TimerService::TimerService(const std::string& name) {
  // Linux limits a thread name to 15 characters. Made first: nothing may
  // throw once the thread runs.
  const std::string thread_name = (name + "-timer").substr(0, 15);
  thread_ = std::thread([this] { run(); });
  set_thread_name(thread_, thread_name.c_str());
}

TimerService::~TimerService() { stop(); }

bool TimerService::add(TimerEntry* entry) noexcept {
  OutList swept;
  bool earliest = false;
  {
    std::lock_guard lock(mutex_);
    if (closed_ && entry->kind->close != nullptr) return false;
    if (stopping_) {
      // The pool has shut down: nothing will fire.
      swept.push_back(entry);
    } else {
      // Relaxed: a hint (see entry_died()).
      if (set_.size() >= kSweepFloor && dead_hint_.load(std::memory_order_relaxed) > set_.size() / 2) {
        sweep(swept);
      }
      // Wake the thread only when its sleep would end too late now.
      earliest = set_.empty() || entry->due < set_.begin()->due;
      set_.insert(*entry);
    }
  }
  if (earliest) wake_.notify_one();
  swept.take_each([](TimerEntry* e) { e->kind->release(e); });
  return true;
}

bool TimerService::remove(TimerEntry* entry) noexcept {
  std::lock_guard lock(mutex_);
  // Linked iff in the set: erasing (here, or by a take) unlinks (safe mode).
  if (!entry->is_linked()) return false;
  set_.erase(set_.iterator_to(*entry));
  return true;
}

template <class Pick>
void TimerService::take_if(OutList& out, Pick pick) noexcept {
  for (auto it = set_.begin(); it != set_.end();) {
    TimerEntry& entry = *it;
    if (pick(entry)) {
      it = set_.erase(it);
      out.push_back(&entry);
    } else {
      ++it;
    }
  }
}

void TimerService::sweep(OutList& out) noexcept {
  take_if(out, [](const TimerEntry& entry) { return entry.kind->dead(&entry); });
  // Relaxed: a hint; deaths counted after this store are swept next time.
  dead_hint_.store(0, std::memory_order_relaxed);
}

void TimerService::run() noexcept {
  std::unique_lock lock(mutex_);
  for (;;) {
    if (stopping_) return;
    if (set_.empty()) {
      wake_.wait(lock);
      continue;
    }
    const Clock::time_point now = Clock::now();
    if (set_.begin()->due > now) {
      // A copy: wait_until() reads its time point again after waking, and
      // the entry may leave the set while we wait.
      const Clock::time_point next = set_.begin()->due;
      wake_.wait_until(lock, next);
      continue;
    }
    OutList due;  // in due order
    while (!set_.empty() && set_.begin()->due <= now) {
      TimerEntry& entry = *set_.begin();
      set_.erase(set_.begin());
      due.push_back(&entry);
    }
    lock.unlock();  // M3
    due.take_each([](TimerEntry* e) { e->kind->fire(e); });
    lock.lock();
  }
}

void TimerService::close() noexcept {
  OutList closing;
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
    take_if(closing, [](const TimerEntry& entry) { return entry.kind->close != nullptr; });
  }
  closing.take_each([](TimerEntry* e) { e->kind->close(e); });
}

void TimerService::stop() noexcept {
  OutList left;
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard lock(mutex_);
    take_if(left, [](const TimerEntry&) { return true; });
  }
  left.take_each([](TimerEntry* e) { e->kind->release(e); });
}

}  // namespace quell::detail
