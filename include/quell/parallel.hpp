#pragma once

// Parallel loops that stop early (API.md §11): parallel_for,
// parallel_for_each, parallel_reduce, parallel_find_if, parallel_any_of.
//
// A loop takes the same TaskOptions as a task and stops at the first of: the
// options' token, the deadline, an exception from the body, a found answer.
// Then no further chunk starts, running chunks see the loop's token
// cancelled (reason requested, deadline or failure) and stop within a few
// microseconds (before their next element when elements are long: see
// run_chunks), and the call returns only after every started chunk ended.
// It then throws the first exception from the body, else
// TaskError(Errc::timed_out) for a deadline, else OperationCancelled; a stop
// that comes after every element ran changes nothing.
//
// How it runs: the range is cut into chunks (`grain` elements each, or
// automatically about 16 per runner), which the runners claim in range order
// from one shared counter, so a runner that is fast, or arrives late, simply
// claims more. The runners are the calling thread and up to one helper task
// per worker (one fewer when the caller is itself a worker of the pool).
// Helpers are tasks of a TaskGroup local to the call: when the chunks are
// gone the group is cancelled, so helpers still queued are dropped (and count
// as cancelled in stats()) and the call waits only for those that started.
// A waiting worker runs its own loop's helpers and nothing unrelated, so
// nested loops inside loop bodies cannot deadlock. Allocations per call:
// the loop's cancellation state, the group's, one task per helper, and for
// parallel_reduce the runners' partial results; a deadline adds an entry of
// the pool's timer service, which cancels the loop on the timer thread (so
// it fires while every worker is busy with the loop). None per element or
// per chunk.
//
// Claiming in range order is what makes parallel_find_if cheap: every
// runner works near the front, so when a match is found at position p all
// chunks before p are already running or done, and the chunks after p that
// would start are skipped.
//
// Coroutine forms: co_await async_parallel_for(pool, ...) and the other
// four suspend instead of blocking. They take the coroutine's current token
// in place of the options (a task's deadline reaches them through it: its
// reason is `deadline`), and their runners are Task<void> children of one
// when_all, which starts them on the pool and joins every one before the
// co_await resumes. They take the callables by value: the Task may be
// awaited later than the call.
//
// Thread safety: the calls are thread-safe; f, map, reduce and pred are
// called concurrently from the runners and must be safe for that.
//
// Ordering: everything sequenced before the call happens-before every
// element's body; every body happens-before the call returns or throws.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <exception>
#include <iterator>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "quell/cancellation.hpp"
#include "quell/coro.hpp"
#include "quell/error.hpp"
#include "quell/task_group.hpp"
#include "quell/task_options.hpp"
#include "quell/thread_pool.hpp"
#include "quell/when.hpp"

namespace quell {
namespace detail {

enum class LoopMode { all, find, any };

// The shared part of one loop call, in the caller's frame: the plan, the
// claim counter, the stop and the outcome. Runners reach it by reference; the
// caller leaves only after every helper that started has ended.
class LoopControl {
 public:
  static constexpr std::size_t kNone = std::numeric_limits<std::size_t>::max();

  // Plans `count` (> 0) positions and makes the loop's stop, linked to the
  // options' token; a deadline already passed stops it at once. Throws
  // std::bad_alloc before any element runs.
  LoopControl(ThreadPool& pool, std::size_t count, const TaskOptions& options, std::size_t grain);
  LoopControl(const LoopControl&) = delete;
  LoopControl& operator=(const LoopControl&) = delete;
  ~LoopControl();

  std::size_t runners() const noexcept { return helpers_ + 1; }
  const CancellationToken& token() const noexcept { return token_; }

  // Starts the helpers, runs runner(0) here, then waits for the helpers that
  // started. runner(r) for r in [0, runners()) must not throw.
  template <class Runner>
  void drive(Runner& runner) {
    arm_deadline();
    TaskGroup group(pool_);
    const TaskOptions helper_options =
        TaskOptions().set_cancellation(token_).set_priority(priority_);
    for (std::size_t r = 1; r <= helpers_; ++r) {
      try {
        group.submit([&runner, r] { runner(r); }, helper_options);
      } catch (...) {
        break;  // no memory for another helper: the runners already started finish the loop
      }
    }
    runner(0);
    group.cancel();  // the chunks are gone: helpers still queued have nothing to do
    group.wait();
  }

  // Runs chunks until none is left or the loop stops. `run(from, to)` runs
  // the elements of [from, to); in the find and any modes it returns the
  // first match in it, or kNone.
  //
  // Inside a chunk the token is read between blocks of elements, not before
  // each one: a block is as many elements as take a few microseconds (one
  // when an element alone takes longer, up to kMaxBlock when elements are
  // trivial), so a stop reaches a running chunk within microseconds, or
  // before its next element when elements are long, and a trivial body
  // still compiles to a plain (vectorisable) loop.
  template <LoopMode mode, class Run>
  void run_chunks(Run& run) noexcept {
    std::size_t block = 1;  // elements per look at the token; adapts to their cost
    for (;;) {
      if (token_.cancelled()) return;  // no further chunk starts after a stop
      if (deadline_ && deadline_passed()) return;  // also when the timer refused the entry
      // Relaxed: the counter only hands out chunk numbers; the elements'
      // data is ordered by the call's start and by the group's wait.
      const std::size_t c = next_chunk_.fetch_add(1, std::memory_order_relaxed);
      if (c >= chunks_) return;
      std::size_t pos = c * chunk_;
      const std::size_t end = std::min(pos + chunk_, count_);
      if constexpr (mode == LoopMode::find) {
        if (pos > found_hint()) return;  // wholly after a match: later chunks are too
      }
      try {
        // One clock read per block: a block's end is the next one's start.
        auto started = std::chrono::steady_clock::now();
        while (pos < end) {
          if (token_.cancelled()) {
            abandon(pos);
            return;
          }
          if constexpr (mode == LoopMode::find) {
            if (pos > found_hint()) break;  // the rest is past the lowest match known
          }
          const std::size_t to = std::min(end, pos + block);
          if constexpr (mode == LoopMode::all) {
            run(pos, to);
          } else {
            const std::size_t match = run(pos, to);
            if (match != kNone) {
              found_at(match);
              if constexpr (mode == LoopMode::any) {
                stop(CancelReason::requested);  // any match answers: stop everything
                return;
              }
              break;  // find: the rest of the chunk is past this match
            }
          }
          pos = to;
          const auto ended = std::chrono::steady_clock::now();
          block = next_block(block, ended - started);
          started = ended;
        }
      } catch (const OperationCancelled&) {
        abandon(pos);  // the block's start: the element that threw is in it
        stop(CancelReason::requested);  // the body's own stop, not a failure
        return;
      } catch (...) {
        abandon(pos);
        fail(std::current_exception());
        return;
      }
    }
  }

  // After drive(): throws as §11 says if the loop stopped before the
  // elements it needed had run. `needed_before`: positions from it on were
  // not needed (find: the match; otherwise kNone, every position).
  void finish(std::size_t needed_before) const;

  // Records the loop's first failure and stops the loop (reason failure).
  void fail(std::exception_ptr error) noexcept;

  // The lowest match, once drive() returned; kNone if none.
  std::size_t found() const noexcept {
    // Relaxed: the group's wait ordered every runner's store before us.
    return found_.load(std::memory_order_relaxed);
  }

 private:
  static constexpr std::size_t kMaxBlock = std::size_t{1} << 16;
  // Doubles a block that ran in under 2 µs, halves one that took over 8 µs.
  static std::size_t next_block(std::size_t block, std::chrono::steady_clock::duration took) noexcept {
    if (took < std::chrono::microseconds(2)) return block < kMaxBlock ? block * 2 : block;
    if (took > std::chrono::microseconds(8)) return block > 1 ? block / 2 : block;
    return block;
  }
  std::size_t found_hint() const noexcept {
    // Relaxed: a hint that skips work past a match; found_at() is exact.
    return found_.load(std::memory_order_relaxed);
  }
  void found_at(std::size_t pos) noexcept;
  void abandon(std::size_t pos) noexcept;
  void stop(CancelReason why) noexcept;
  bool deadline_passed() noexcept;
  void arm_deadline();

  ThreadPool& pool_;
  const std::size_t count_;
  std::size_t chunk_ = 1;
  std::size_t chunks_ = 0;
  std::size_t helpers_ = 0;
  TaskPriority priority_;
  std::optional<std::chrono::steady_clock::time_point> deadline_;
  CancellationSource stop_;    // linked to the options' token; cancelled to stop the loop
  CancellationToken token_;    // stop_'s: what the bodies see
  void* deadline_entry_ = nullptr;  // the timer entry that cancels the loop at its deadline
  // Padding, not alignas: the coroutine forms keep the loop in a frame,
  // which is not allocated over-aligned.
  [[maybe_unused]] char before_claims_[kCacheLine] = {};  // the claim counter gets a line of its own:
  std::atomic<std::size_t> next_chunk_{0};  // every claim writes it
  [[maybe_unused]] char after_claims_[kCacheLine] = {};
  std::atomic<std::size_t> found_{kNone};  // the lowest match seen
  std::atomic<std::size_t> abandoned_{kNone};  // the lowest position cut short by a stop
  std::atomic<bool> has_failure_{false};
  std::exception_ptr failure_;  // written once, by the runner that set has_failure_
};

// Invokes a body with (x) or (x, token), whichever it takes.
template <class F, class X>
decltype(auto) call_body(F& f, X&& x, const CancellationToken& token) {
  if constexpr (std::is_invocable_v<F&, X, const CancellationToken&>) {
    return f(std::forward<X>(x), token);
  } else {
    return f(std::forward<X>(x));
  }
}

// The number of positions in [first, last), 0 if first >= last.
template <class Index>
std::size_t index_count(Index first, Index last) noexcept {
  using U = std::make_unsigned_t<Index>;
    // The cast back to U undoes the promotion of narrow types to int.
  return last > first ? static_cast<std::size_t>(static_cast<U>(static_cast<U>(last) - static_cast<U>(first)))
                      : 0;
}
template <class Index>
Index index_at(Index first, std::size_t pos) noexcept {
  using U = std::make_unsigned_t<Index>;
  return static_cast<Index>(static_cast<U>(static_cast<U>(first) + static_cast<U>(pos)));
}

template <LoopMode mode, class Run>
void run_loop(LoopControl& loop, Run& run) {
  auto runner = [&loop, &run](std::size_t) noexcept { loop.run_chunks<mode>(run); };
  loop.drive(runner);
}

// The first position in [from, to) whose element satisfies pred, or kNone.
template <class It, class Pred>
std::size_t find_in(It first, std::size_t from, std::size_t to, Pred& pred,
                    const CancellationToken& token) {
  It it = first + static_cast<std::iter_difference_t<It>>(from);
  for (std::size_t pos = from; pos != to; ++pos, ++it) {
    if (call_body(pred, *it, token)) return pos;
  }
  return LoopControl::kNone;
}

}  // namespace detail

// f(i) or f(i, token) for every i in [first, last).
template <class Index, class F>
  requires std::is_integral_v<Index>
void parallel_for(ThreadPool& pool, Index first, Index last, F&& f,
                  const TaskOptions& options = {}, std::size_t grain = 0) {
  const std::size_t count = detail::index_count(first, last);
  if (count == 0) return;
  detail::LoopControl loop(pool, count, options, grain);
  auto run = [&f, &loop, first](std::size_t from, std::size_t to) {
    // Counted in Index (which cannot overflow: it ends at last), so a
    // trivial body is the loop a compiler vectorises.
    Index i = detail::index_at(first, from);
    for (std::size_t n = to - from; n != 0; --n, ++i) detail::call_body(f, i, loop.token());
  };
  detail::run_loop<detail::LoopMode::all>(loop, run);
  loop.finish(detail::LoopControl::kNone);
}

// f(x) or f(x, token) for every element x of [first, last).
template <class It, class F>
  requires std::random_access_iterator<It>
void parallel_for_each(ThreadPool& pool, It first, It last, F&& f,
                       const TaskOptions& options = {}, std::size_t grain = 0) {
  const std::size_t count = last > first ? static_cast<std::size_t>(last - first) : 0;
  if (count == 0) return;
  detail::LoopControl loop(pool, count, options, grain);
  auto run = [&f, &loop, first](std::size_t from, std::size_t to) {
    It it = first + static_cast<std::iter_difference_t<It>>(from);
    for (std::size_t n = to - from; n != 0; --n, ++it) detail::call_body(f, *it, loop.token());
  };
  detail::run_loop<detail::LoopMode::all>(loop, run);
  loop.finish(detail::LoopControl::kNone);
}

// reduce over map(i) (or map(i, token)) for i in [first, last), starting
// from `identity` in every runner; the runners' results are then reduced in
// runner order. Equals a sequential left fold when `reduce` is associative
// and commutative. T must be copyable: each runner starts from a copy.
template <class Index, class T, class Map, class Reduce>
  requires std::is_integral_v<Index>
T parallel_reduce(ThreadPool& pool, Index first, Index last, T identity, Map&& map, Reduce&& reduce,
                  const TaskOptions& options = {}, std::size_t grain = 0) {
  const std::size_t count = detail::index_count(first, last);
  if (count == 0) return identity;
  detail::LoopControl loop(pool, count, options, grain);
  std::vector<std::optional<T>> partial(loop.runners());
  auto runner = [&](std::size_t r) noexcept {
    try {
      T acc = identity;
      auto run = [&](std::size_t from, std::size_t to) {
        Index i = detail::index_at(first, from);
        for (std::size_t n = to - from; n != 0; --n, ++i) {
          acc = reduce(std::move(acc), detail::call_body(map, i, loop.token()));
        }
      };
      loop.run_chunks<detail::LoopMode::all>(run);
      partial[r].emplace(std::move(acc));
    } catch (...) {
      loop.fail(std::current_exception());  // copying identity or moving acc threw
    }
  };
  loop.drive(runner);
  loop.finish(detail::LoopControl::kNone);
  T result = std::move(identity);
  for (std::optional<T>& part : partial) {
    if (part) result = reduce(std::move(result), std::move(*part));
  }
  return result;
}

// The first x in [first, last), in range order, with pred(x) (or
// pred(x, token)) true; last if none.
template <class It, class Pred>
  requires std::random_access_iterator<It>
It parallel_find_if(ThreadPool& pool, It first, It last, Pred&& pred,
                    const TaskOptions& options = {}, std::size_t grain = 0) {
  const std::size_t count = last > first ? static_cast<std::size_t>(last - first) : 0;
  if (count == 0) return last;
  detail::LoopControl loop(pool, count, options, grain);
  auto run = [&pred, &loop, first](std::size_t from, std::size_t to) {
    return detail::find_in(first, from, to, pred, loop.token());
  };
  detail::run_loop<detail::LoopMode::find>(loop, run);
  const std::size_t found = loop.found();
  loop.finish(found);
  return found == detail::LoopControl::kNone
             ? last
             : first + static_cast<std::iter_difference_t<It>>(found);
}

// Whether some x in [first, last) has pred(x) (or pred(x, token)): the first
// match found anywhere stops the others.
template <class It, class Pred>
  requires std::random_access_iterator<It>
bool parallel_any_of(ThreadPool& pool, It first, It last, Pred&& pred,
                     const TaskOptions& options = {}, std::size_t grain = 0) {
  const std::size_t count = last > first ? static_cast<std::size_t>(last - first) : 0;
  if (count == 0) return false;
  detail::LoopControl loop(pool, count, options, grain);
  auto run = [&pred, &loop, first](std::size_t from, std::size_t to) {
    return detail::find_in(first, from, to, pred, loop.token());
  };
  detail::run_loop<detail::LoopMode::any>(loop, run);
  const bool any = loop.found() != detail::LoopControl::kNone;
  loop.finish(any ? 0 : detail::LoopControl::kNone);
  return any;
}

// ---- coroutine forms ---------------------------------------------------------
//
// Each is a lambda coroutine called at once (clang's -fsanitize=function
// cannot compile named template coroutines that await). The loop's state is
// a local of its frame; the runners borrow it and are joined by when_all.

namespace detail {

// Runs the loop's runners as children of one when_all; `runner(r)` never
// throws. A cancelled when_all is the loop's stop, reported by finish().
template <class Runner>
Task<void> run_async(LoopControl& loop, Runner& runner) {
  return [](LoopControl* l, Runner* run) -> Task<void> {
    std::vector<Task<void>> runners;
    runners.reserve(l->runners());
    for (std::size_t r = 0; r < l->runners(); ++r) {
      runners.push_back([](Runner* f, std::size_t index) -> Task<void> {
        (*f)(index);
        co_return;
      }(run, r));
    }
    (void)co_await as_result(when_all(std::move(runners)));
  }(&loop, &runner);
}

template <LoopMode mode, class Run>
Task<void> run_loop_async(LoopControl& loop, Run& run) {
  return [](LoopControl* l, Run* r) -> Task<void> {
    auto runner = [l, r](std::size_t) noexcept { l->run_chunks<mode>(*r); };
    co_await run_async(*l, runner);
  }(&loop, &run);
}

inline TaskOptions options_of(const CancellationToken& token) {
  return TaskOptions().set_cancellation(token);
}

}  // namespace detail

template <class Index, class F>
  requires std::is_integral_v<Index>
Task<void> async_parallel_for(ThreadPool& pool, Index first, Index last, F f, std::size_t grain = 0) {
  return [](ThreadPool* p, Index begin, Index end, F body, std::size_t g) -> Task<void> {
    const std::size_t count = detail::index_count(begin, end);
    if (count == 0) co_return;
    detail::LoopControl loop(*p, count, detail::options_of(co_await this_coro::cancellation_token), g);
    auto run = [&body, &loop, begin](std::size_t from, std::size_t to) {
      Index i = detail::index_at(begin, from);
      for (std::size_t n = to - from; n != 0; --n, ++i) detail::call_body(body, i, loop.token());
    };
    co_await detail::run_loop_async<detail::LoopMode::all>(loop, run);
    loop.finish(detail::LoopControl::kNone);
  }(&pool, first, last, std::move(f), grain);
}

template <class It, class F>
  requires std::random_access_iterator<It>
Task<void> async_parallel_for_each(ThreadPool& pool, It first, It last, F f, std::size_t grain = 0) {
  return [](ThreadPool* p, It begin, It end, F body, std::size_t g) -> Task<void> {
    const std::size_t count = end > begin ? static_cast<std::size_t>(end - begin) : 0;
    if (count == 0) co_return;
    detail::LoopControl loop(*p, count, detail::options_of(co_await this_coro::cancellation_token), g);
    auto run = [&body, &loop, begin](std::size_t from, std::size_t to) {
      It it = begin + static_cast<std::iter_difference_t<It>>(from);
      for (std::size_t n = to - from; n != 0; --n, ++it) detail::call_body(body, *it, loop.token());
    };
    co_await detail::run_loop_async<detail::LoopMode::all>(loop, run);
    loop.finish(detail::LoopControl::kNone);
  }(&pool, first, last, std::move(f), grain);
}

template <class Index, class T, class Map, class Reduce>
  requires std::is_integral_v<Index>
Task<T> async_parallel_reduce(ThreadPool& pool, Index first, Index last, T identity, Map map,
                              Reduce reduce, std::size_t grain = 0) {
  return [](ThreadPool* p, Index begin, Index end, T init, Map m, Reduce red,
            std::size_t g) -> Task<T> {
    const std::size_t count = detail::index_count(begin, end);
    if (count == 0) co_return init;
    detail::LoopControl loop(*p, count, detail::options_of(co_await this_coro::cancellation_token), g);
    std::vector<std::optional<T>> partial(loop.runners());
    auto runner = [&](std::size_t r) noexcept {
      try {
        T acc = init;
        auto run = [&](std::size_t from, std::size_t to) {
          Index i = detail::index_at(begin, from);
          for (std::size_t n = to - from; n != 0; --n, ++i) {
            acc = red(std::move(acc), detail::call_body(m, i, loop.token()));
          }
        };
        loop.run_chunks<detail::LoopMode::all>(run);
        partial[r].emplace(std::move(acc));
      } catch (...) {
        loop.fail(std::current_exception());  // copying init or moving acc threw
      }
    };
    co_await detail::run_async(loop, runner);
    loop.finish(detail::LoopControl::kNone);
    T result = std::move(init);
    for (std::optional<T>& part : partial) {
      if (part) result = red(std::move(result), std::move(*part));
    }
    co_return result;
  }(&pool, first, last, std::move(identity), std::move(map), std::move(reduce), grain);
}

template <class It, class Pred>
  requires std::random_access_iterator<It>
Task<It> async_parallel_find_if(ThreadPool& pool, It first, It last, Pred pred, std::size_t grain = 0) {
  return [](ThreadPool* p, It begin, It end, Pred pr, std::size_t g) -> Task<It> {
    const std::size_t count = end > begin ? static_cast<std::size_t>(end - begin) : 0;
    if (count == 0) co_return end;
    detail::LoopControl loop(*p, count, detail::options_of(co_await this_coro::cancellation_token), g);
    auto run = [&pr, &loop, begin](std::size_t from, std::size_t to) {
      return detail::find_in(begin, from, to, pr, loop.token());
    };
    co_await detail::run_loop_async<detail::LoopMode::find>(loop, run);
    const std::size_t found = loop.found();
    loop.finish(found);
    co_return found == detail::LoopControl::kNone
        ? end
        : begin + static_cast<std::iter_difference_t<It>>(found);
  }(&pool, first, last, std::move(pred), grain);
}

template <class It, class Pred>
  requires std::random_access_iterator<It>
Task<bool> async_parallel_any_of(ThreadPool& pool, It first, It last, Pred pred, std::size_t grain = 0) {
  return [](ThreadPool* p, It begin, It end, Pred pr, std::size_t g) -> Task<bool> {
    const std::size_t count = end > begin ? static_cast<std::size_t>(end - begin) : 0;
    if (count == 0) co_return false;
    detail::LoopControl loop(*p, count, detail::options_of(co_await this_coro::cancellation_token), g);
    auto run = [&pr, &loop, begin](std::size_t from, std::size_t to) {
      return detail::find_in(begin, from, to, pr, loop.token());
    };
    co_await detail::run_loop_async<detail::LoopMode::any>(loop, run);
    const bool any = loop.found() != detail::LoopControl::kNone;
    loop.finish(any ? 0 : detail::LoopControl::kNone);
    co_return any;
  }(&pool, first, last, std::move(pred), grain);
}

}  // namespace quell
