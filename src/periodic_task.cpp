#include "quell/periodic_task.hpp"

#include <algorithm>
#include <bit>
#include <exception>
#include <mutex>
#include <stdexcept>

#include "periodic_core.hpp"
#include "timers.hpp"

namespace quell::detail {

// The pool's timer service, and whether its intake is closed (a shutdown
// began). Defined with the pool.
TimerService& pool_timers(PoolCore* pool) noexcept;
bool pool_closed(const PoolCore* pool) noexcept;

namespace {
thread_local const PeriodicCore* running_tick_of = nullptr;  // the core whose tick runs here
}  // namespace

PeriodicCore::Tick::~Tick() {
  if (core == nullptr) return;
  if (!ran && !core->stopped()) core->schedule_next(true);
  PoolCore* const pool = core->pool_;  // read before the count may let a joiner go (W3)
  core->in_flight_.done(pool);
  core->release();
}

void PeriodicCore::Tick::operator()(CancellationToken token) {
  ran = true;
  core->run_tick(token);
}

Task<void> PeriodicCore::CoroTick::operator()(CancellationToken token) {
  Task<void> tick = core->run_coroutine_tick(std::move(token));
  ran = true;
  return tick;
}

Task<void> PeriodicCore::run_coroutine_tick(CancellationToken token) {
  ticks_.fetch_add(1, std::memory_order_relaxed);
  std::exception_ptr failure;
  try {
    Result<void> outcome = co_await as_result(body_->invoke_task(token));
    failure = outcome.exception();
  } catch (...) {
    failure = std::current_exception();  // f threw instead of returning its task
  }
  tick_ended(failure != nullptr);
  // The tick's task ends failed with it: counted in the pool's statistics
  // and given to on_unobserved_failure.
  if (failure != nullptr) std::rethrow_exception(std::move(failure));
}

void PeriodicCore::Tick::release_block(void* node) noexcept {
  // The node is the block's first member (TickBlock::node).
  auto* block = static_cast<TickBlock*>(node);
  PeriodicCore* const core = block->core;  // read before the block may be reused
  const unsigned bit = block->bit;
  // Release: the node's destruction happens-before fire() places the next
  // node here (its acquire load in take_tick_block).
  core->free_blocks_.fetch_or(bit, std::memory_order_release);
  core->release();  // the block's reference, taken in fire()
}

PeriodicCore::TickBlock* PeriodicCore::take_tick_block() noexcept {
  // Acquire: pairs with release_block's release (B1).
  const unsigned free = free_blocks_.load(std::memory_order_acquire);
  if (free == 0) return nullptr;
  const unsigned bit = free & (~free + 1);  // the lowest free block
  // Relaxed: only fire() clears bits (B2), so `bit` is still set here.
  const unsigned before = free_blocks_.fetch_and(~bit, std::memory_order_relaxed);
  QUELL_INVARIANT(B2, (before & bit) != 0);
  static_cast<void>(before);
  TickBlock* const block = &tick_blocks_[std::countr_zero(bit)];
  QUELL_INVARIANT(B1, block->core == this && block->bit == bit);
  return block;
}

// The timer entry of the next slot: due, it posts the tick. Once the
// schedule stopped, a tombstone. It keeps firing until the pool's service
// stops: a periodic task sees its pool closed.
const TimerKind PeriodicCore::timer{
    [](TimerEntry* entry) noexcept {
      auto* core = static_cast<PeriodicCore*>(entry->target);
      core->fire();
      core->release();
    },
    [](TimerEntry* entry) noexcept { static_cast<PeriodicCore*>(entry->target)->release(); },
    [](const TimerEntry* entry) noexcept {
      return static_cast<const PeriodicCore*>(entry->target)->stopped();
    },
};

PeriodicCore::PeriodicCore(PoolCore* pool, Clock::duration interval,
                           std::unique_ptr<PeriodicBody> body, const TaskOptions& options)
    : pool_(pool),
      interval_(interval),
      origin_(Clock::now()),
      body_(std::move(body)),
      source_(CancellationSource::linked({options.cancellation()})),
      options_(options),
      family_(pool_family_here(pool)) {
  if (interval <= Clock::duration::zero()) {
    throw std::invalid_argument("quell::PeriodicTask: the interval must be positive");
  }
  options_.set_cancellation(source_.token());
  entry_.kind = &timer;
  entry_.target = this;
  for (unsigned i = 0; i < kTickBlocks; ++i) {
    tick_blocks_[i].core = this;
    tick_blocks_[i].bit = 1u << i;
  }
}

PeriodicCore::~PeriodicCore() {
  // Relaxed: the last reference's acq_rel decrement ordered every release.
  QUELL_INVARIANT(B1, free_blocks_.load(std::memory_order_relaxed) == (1u << kTickBlocks) - 1);
}

void PeriodicCore::start() {
  {
    std::lock_guard lock(slots_lock_);
    slot_ = 1;
  }
  schedule(1);
}

void PeriodicCore::schedule(std::uint64_t slot) noexcept {
  const Clock::time_point due = origin_ + interval_ * static_cast<Clock::rep>(slot);
  add_ref();  // the timer entry's
  entry_.due = due;
  pool_timers(pool_).add(&entry_);  // never refused: the kind has no close action
}

bool PeriodicCore::stopped() const noexcept {
  // The pool's shutdown ends the schedule however the chain is cut: a tick
  // rejected, a queued tick dropped by a `cancel` shutdown, the next slot's
  // timer entry released unfired.
  return source_.cancelled() || pool_closed(pool_);
}

void PeriodicCore::stop() noexcept {
  if (source_.request_cancel(CancelReason::requested)) pool_timers(pool_).entry_died();
}

void PeriodicCore::fire() noexcept {
  in_flight_.add();
  // Seq_cst fence between the add and the check, against join()'s fence
  // between stop()'s cancel and its count load: either we see the stop, or
  // join() sees the tick in flight and waits for it.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  add_ref();  // the tick's
  Tick tick(this);
  if (stopped()) return;  // ~Tick: no longer in flight
  TickBlock* const block = take_tick_block();
  if (block == nullptr) return;  // both blocks still held: ~Tick skips the slot
  add_ref();  // the block's, until the node hands it back
  TaskBase* task = nullptr;
  if (body_->coroutine()) {
    task = new (block->node) CoroTickNode(CoroTick(std::move(tick)), 1, 1);
  } else {
    task = new (block->node) TickNode(std::move(tick), 1, 1);
  }
  task->unobserved_ = true;  // a tick's failure: before publication, by pool_submit
  try {
    // A stop() from here on cancels the tick's token: dropped, or seen. A
    // rejection destroys the tick unrun: see ~Tick.
    Placement placement;
    placement.family = family_;  // join() on a worker runs a queued tick (F1)
    pool_submit(pool_, task, options_, placement);
  } catch (const std::bad_alloc&) {
    // Only a tick with a timeout allocates (its deadline's timer entry); the
    // submission discarded the node, and ~Tick skips the slot.
  }
}

void PeriodicCore::run_tick(const CancellationToken& token) {
  ticks_.fetch_add(1, std::memory_order_relaxed);
  const PeriodicCore* const outer = std::exchange(running_tick_of, this);
  try {
    body_->invoke(token);
  } catch (const OperationCancelled&) {
    // Cooperative cancellation, not a failure.
  } catch (...) {
    running_tick_of = outer;
    tick_ended(true);
    // The tick's task ends failed with it: counted in the pool's statistics
    // and given to on_unobserved_failure. Rethrown here, so a tick that
    // does not fail pays nothing for it.
    throw;
  }
  running_tick_of = outer;
  tick_ended(false);
}

void PeriodicCore::tick_ended(bool failed) noexcept {
  if (failed) failed_.fetch_add(1, std::memory_order_relaxed);
  if (stopped()) return;
  schedule_next(false);
}

void PeriodicCore::schedule_next(bool missed) noexcept {
  // The first slot still ahead; those passed while this tick ran (or while
  // it waited to start) are skipped, and so is this tick's own if it never
  // ran.
  const std::uint64_t passed = slots_passed();
  std::uint64_t next = 0;
  {
    std::lock_guard lock(slots_lock_);
    next = std::max(slot_ + 1, passed + 1);
    skipped_ += next - (slot_ + 1) + (missed ? 1 : 0);
    slot_ = next;
  }
  schedule(next);
}

std::uint64_t PeriodicCore::slots_passed() const noexcept {
  return static_cast<std::uint64_t>((Clock::now() - origin_) / interval_);
}

std::uint64_t PeriodicCore::skipped() const noexcept {
  const std::uint64_t passed = slots_passed();
  std::lock_guard lock(slots_lock_);
  // Slots after the scheduled one that passed before its tick ended; once
  // the tick ends they are committed to skipped_ and slot_ moves past them,
  // so the sum never goes down.
  const std::uint64_t live = slot_ != 0 && passed > slot_ && !stopped() ? passed - slot_ : 0;
  return skipped_ + live;
}

void PeriodicCore::join() {
  if (running_tick_of == this) {
    throw std::logic_error("quell::PeriodicTask::join() called from its own tick");
  }
  // Seq_cst: see fire().
  std::atomic_thread_fence(std::memory_order_seq_cst);
  wait_count_zero(in_flight_, pool_, family_);
}

}  // namespace quell::detail

namespace quell {

PeriodicTask::PeriodicTask(detail::PoolCore* pool, std::chrono::steady_clock::duration interval,
                           std::unique_ptr<detail::PeriodicBody> body, const TaskOptions& options)
    : core_(new detail::PeriodicCore(pool, interval, std::move(body), options)) {
  try {
    core_->start();
  } catch (...) {
    core_->discard();
    core_->release();
    throw;
  }
}

PeriodicTask::~PeriodicTask() {
  core_->stop();
  core_->join();
  core_->discard();
  core_->release();
}

void PeriodicTask::stop() noexcept { core_->stop(); }
void PeriodicTask::join() { core_->join(); }
bool PeriodicTask::running() const noexcept { return !core_->stopped(); }
std::uint64_t PeriodicTask::ticks() const noexcept { return core_->ticks(); }
std::uint64_t PeriodicTask::skipped_ticks() const noexcept { return core_->skipped(); }
std::uint64_t PeriodicTask::failed_ticks() const noexcept { return core_->failed(); }

}  // namespace quell
