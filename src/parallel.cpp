#include "quell/parallel.hpp"

#include "pool_core.hpp"
#include "timers.hpp"

namespace quell::detail {

namespace {

// Chunks per runner when the grain is automatic: enough that a runner which
// is slow, or starts late, leaves work for the others to claim, few enough
// that claims (one shared counter) cost nothing next to the elements.
constexpr std::size_t kChunksPerRunner = 16;

CancellationSource loop_source(const TaskOptions& options) {
  const CancellationToken& parent = options.cancellation();
  return parent.can_cancel() ? CancellationSource::linked({parent}) : CancellationSource();
}

// A loop's deadline: an entry of the pool's timer service that cancels the
// loop's state on the timer thread, so it fires even while every worker runs
// the loop's own elements. On the heap, with two owners: the timer's action
// (timers.hpp, M4), which may run after the call returned, and the loop,
// whose remove() must find the entry alive even after it fired.
struct LoopDeadline {
  TimerEntry entry;
  CancelState* state;          // a token reference, held for the action
  std::atomic<int> owners{2};  // the action's share and the loop's
};

void drop(LoopDeadline* deadline) noexcept {
  // Acq_rel: the last owner's delete follows the other owner's accesses.
  if (deadline->owners.fetch_sub(1, std::memory_order_acq_rel) == 1) delete deadline;
}

LoopDeadline* deadline_of(const TimerEntry* entry) noexcept {
  return static_cast<LoopDeadline*>(entry->target);
}

// The action's share: unfired (swept, the service stopped, or taken back).
void release_deadline(TimerEntry* entry) noexcept {
  LoopDeadline* deadline = deadline_of(entry);
  deadline->state->release_token_ref();
  drop(deadline);
}

void fire_deadline(TimerEntry* entry) noexcept {
  deadline_of(entry)->state->request_cancel(static_cast<std::uint64_t>(CancelReason::deadline));
  release_deadline(entry);
}

bool deadline_dead(const TimerEntry* entry) noexcept { return deadline_of(entry)->state->cancelled(); }

constexpr TimerKind kLoopDeadline{&fire_deadline, &release_deadline, &deadline_dead};

}  // namespace

LoopControl::LoopControl(ThreadPool& pool, std::size_t count, const TaskOptions& options,
                         std::size_t grain)
    : pool_(pool),
      count_(count),
      priority_(options.priority()),
      deadline_(options.deadline_from(std::chrono::steady_clock::now())),
      stop_(loop_source(options)),
      token_(stop_.token()) {
  // A worker calling in is one of the runners already.
  const std::size_t workers = pool.thread_count();
  const std::size_t helpers =
      helper_in(PoolAccess::core(pool)) != nullptr ? workers - 1 : workers;
  chunk_ = grain != 0 ? grain : std::max<std::size_t>(1, count / ((helpers + 1) * kChunksPerRunner));
  chunks_ = count / chunk_ + (count % chunk_ != 0 ? 1 : 0);
  helpers_ = std::min(helpers, chunks_ - 1);
  if (deadline_) deadline_passed();
}

LoopControl::~LoopControl() {
  if (deadline_entry_ == nullptr) return;
  auto* deadline = static_cast<LoopDeadline*>(deadline_entry_);
  // Taken back: no action will run, so its share is ours to drop too.
  if (PoolAccess::core(pool_)->timers().remove(&deadline->entry)) release_deadline(&deadline->entry);
  drop(deadline);
}

bool LoopControl::deadline_passed() noexcept {
  if (std::chrono::steady_clock::now() < *deadline_) return false;
  stop(CancelReason::deadline);
  return true;
}

void LoopControl::arm_deadline() {
  if (!deadline_ || token_.cancelled()) return;
  auto* deadline = new LoopDeadline;
  CancelState* const state = StateAccess::state(token_);
  state->add_token_ref();  // the entry's
  deadline->state = state;
  deadline->entry.due = *deadline_;
  deadline->entry.kind = &kLoopDeadline;
  deadline->entry.target = deadline;
  if (!PoolAccess::core(pool_)->timers().add(&deadline->entry)) {
    release_deadline(&deadline->entry);  // refused: deadline_passed() at each claim still stops it
    drop(deadline);
    return;
  }
  deadline_entry_ = deadline;
}

void LoopControl::found_at(std::size_t pos) noexcept {
  // Relaxed: an atomic minimum; the caller reads it after the group's wait.
  std::size_t seen = found_.load(std::memory_order_relaxed);
  while (pos < seen && !found_.compare_exchange_weak(seen, pos, std::memory_order_relaxed)) {
  }
}

void LoopControl::abandon(std::size_t pos) noexcept {
  // Relaxed: as found_at().
  std::size_t seen = abandoned_.load(std::memory_order_relaxed);
  while (pos < seen && !abandoned_.compare_exchange_weak(seen, pos, std::memory_order_relaxed)) {
  }
}

void LoopControl::stop(CancelReason why) noexcept { stop_.request_cancel(why); }

void LoopControl::fail(std::exception_ptr error) noexcept {
  // Relaxed: the exchange picks the one writer of failure_; the caller reads
  // both after the group's wait.
  if (!has_failure_.exchange(true, std::memory_order_relaxed)) failure_ = std::move(error);
  stop(CancelReason::failure);
}

void LoopControl::finish(std::size_t needed_before) const {
  // Relaxed loads: drive() returned, so every runner's writes happen-before.
  if (has_failure_.load(std::memory_order_relaxed)) std::rethrow_exception(failure_);
  const std::size_t claimed = next_chunk_.load(std::memory_order_relaxed);
  const std::size_t unclaimed = claimed < chunks_ ? claimed * chunk_ : kNone;
  const std::size_t unrun = std::min(unclaimed, abandoned_.load(std::memory_order_relaxed));
  // Every position before needed_before ran: a later stop changes nothing.
  if (unrun >= needed_before) return;
  if (token_.reason() == CancelReason::deadline) throw TaskError(make_error_code(Errc::timed_out));
  throw OperationCancelled();
}

}  // namespace quell::detail
