#pragma once

// A PeriodicTask's schedule, shared by the PeriodicTask, its timer entry and
// its tick in flight; freed with the last reference. periodic_task.hpp
// describes the behaviour; periodic_task.cpp implements it.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "quell/cancellation.hpp"
#include "quell/coro.hpp"
#include "quell/detail/submission.hpp"
#include "quell/detail/wait_count.hpp"
#include "quell/periodic_task.hpp"
#include "quell/task_options.hpp"
#include "short_lock.hpp"
#include "timers.hpp"

namespace quell::detail {

class PeriodicCore {
 public:
  using Clock = std::chrono::steady_clock;

  PeriodicCore(PoolCore* pool, Clock::duration interval, std::unique_ptr<PeriodicBody> body,
               const TaskOptions& options);
  PeriodicCore(const PeriodicCore&) = delete;
  PeriodicCore& operator=(const PeriodicCore&) = delete;

  void start();  // schedules the first tick, one interval from construction
  void stop() noexcept;
  void join();
  bool stopped() const noexcept;
  void fire() noexcept;  // the timer thread: the slot is due, post a tick

  std::uint64_t ticks() const noexcept { return ticks_.load(std::memory_order_relaxed); }
  // The slots skipped so far, counting those that passed while the tick in
  // flight waits or runs (§12: a monitor sees an overrun climb).
  std::uint64_t skipped() const noexcept;
  std::uint64_t failed() const noexcept { return failed_.load(std::memory_order_relaxed); }

  void add_ref() noexcept {
    // Relaxed: made from an existing reference.
    refs_.fetch_add(1, std::memory_order_relaxed);
  }
  void release() noexcept {
    // Acq_rel: every user's accesses happen-before the deletion.
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  // The owner, after stop() and join(): destroys the callable, so no tick
  // runs any more and its captures go now, not with the last reference.
  void discard() noexcept { body_.reset(); }

 private:
  ~PeriodicCore();

  // A tick's callable: runs the tick; when it goes (run or dropped), the tick
  // is no longer in flight. It holds a reference to the core. A tick that goes
  // unrun while the task is not stopped (the pool rejected it with a full
  // queue, its own timeout passed while it was queued, no block or memory)
  // skips its slot, and the schedule goes on from the next one.
  struct Tick {
    explicit Tick(PeriodicCore* owner) noexcept : core(owner) {}
    Tick(Tick&& other) noexcept : core(std::exchange(other.core, nullptr)) {}
    Tick& operator=(Tick&&) = delete;
    ~Tick();
    // Rethrows what the body threw, after the schedule went on: the
    // tick's task then ends failed.
    void operator()(CancellationToken token);
    // The node's last reference: its block goes back to the core (B1).
    static void release_block(void* node) noexcept;

    PeriodicCore* core;
    bool ran = false;  // the tick chain's only, as slot_
  };
  using TickNode = TaskNode<Tick, void>;

  // A coroutine body's tick (R36): the tick is the task it returns, run as a
  // root, and it is in flight until that ends (the node keeps CoroTick).
  struct CoroTick : Tick {
    explicit CoroTick(Tick&& tick) noexcept : Tick(std::move(tick)) {}
    // Throws std::bad_alloc (the frame): then the tick never ran (~Tick).
    Task<void> operator()(CancellationToken token);
  };
  using CoroTickNode = TaskNode<CoroTick, void>;
  // The tick's root: the body's task, with the tick's bookkeeping.
  Task<void> run_coroutine_tick(CancellationToken token);

  // Ticks allocate nothing (§12): a tick's node is placed in one of two
  // blocks of the core.
  //   B1 A block's bit in free_blocks_ is set exactly while no node lives in
  //      it: fire() clears it before placing a node; the node's last
  //      reference sets it after the node is destroyed.
  //   B2 Only fire() clears bits, and fires are serialised by the tick chain
  //      (one timer entry, re-armed only after the previous tick ran or was
  //      dropped), so a bit fire() saw set stays set until it clears it.
  // Two blocks suffice: when a slot fires, the tick before it has run or
  // been dropped, so at most its node's last references (a worker's release,
  // a cancel callback under way) still hold a block. If both are held, the
  // slot is skipped, as for any tick that cannot be posted.
  struct TickBlock {
    alignas(TickNode) alignas(CoroTickNode) std::byte
        node[sizeof(TickNode) > sizeof(CoroTickNode) ? sizeof(TickNode) : sizeof(CoroTickNode)];
    PeriodicCore* core = nullptr;
    unsigned bit = 0;
  };
  static constexpr unsigned kTickBlocks = 2;
  TickBlock* take_tick_block() noexcept;

  static const TimerKind timer;
  void run_tick(const CancellationToken& token);  // rethrows the body's failure
  // What a tick does when its body ends, `failed` or not.
  void tick_ended(bool failed) noexcept;
  void schedule(std::uint64_t slot) noexcept;
  // Schedules the first slot still ahead, counting those passed over (and
  // the current one, if `missed`: its tick never ran) as skipped.
  void schedule_next(bool missed) noexcept;
  std::uint64_t slots_passed() const noexcept;  // whole intervals since the origin

  PoolCore* const pool_;
  const Clock::duration interval_;
  const Clock::time_point origin_;
  std::unique_ptr<PeriodicBody> body_;  // the owner's until discard()
  CancellationSource source_;  // linked to the options' token
  TaskOptions options_;        // each tick's: the user's, with source_'s token
  const TaskId family_;        // every tick's (F1)
  // slot_ (of the last scheduled tick) and skipped_ (committed when a tick
  // ends) change together, by the tick chain, under slots_lock_, so that
  // skipped() reads a consistent pair.
  mutable ShortLock slots_lock_;
  std::uint64_t slot_ = 0;
  std::uint64_t skipped_ = 0;
  std::atomic<std::uint64_t> ticks_{0};  // relaxed counters: statistics
  std::atomic<std::uint64_t> failed_{0};
  WaitCount in_flight_;  // ticks posted and not yet ended (0 or 1)
  // The next slot's timer entry, armed by the tick chain only, once the
  // last one fired: scheduling allocates nothing and cannot fail (§12).
  TimerEntry entry_;
  TickBlock tick_blocks_[kTickBlocks];
  std::atomic<unsigned> free_blocks_{(1u << kTickBlocks) - 1};  // B1, B2
  std::atomic<std::uint32_t> refs_{1};
};

}  // namespace quell::detail
