// Races of the coroutine layer (API.md §10.3 R14-R20, §10.6 R40), each run
// for thousands of rounds (hundreds under a sanitizer). In a round the root
// coroutine, the thread that completes what it waits on and the canceller
// line up on a barrier and go at once, each after a short spin of its own
// length, so the cancellation lands before, during and after the root's
// registration. Every check is exact, per round:
//   R14/R18  a co_await future cancelled while its task completes: the value
//            or OperationCancelled, never both; a cancelled await leaves the
//            future retrievable.
//   R14      a short sleep_for racing handle.cancel(): ok or cancelled, one
//            resumption.
//   R16      a cancellation racing the registration of a wait that never
//            completes by itself: every round ends cancelled (no lost wakeup).
//   R15/R20  the code after a cancelled co_await runs on a worker of the
//            home, never on the canceller's thread; a user-written stoppable
//            awaitable resumed through post_resume is resumed exactly once.
//   R19      an owning await (handle, scope.join(), child Task) never returns
//            while what it owns still runs.
//   R40      shutdown (cancel, drain) while roots park in and resume from
//            sleeps: shutdown returns, every future is ready.
//   §9/R7    a deadline firing while the root sleeps about as long: ok or
//            timed_out, exactly once.
//   R5/R19   10,000 roots, each three children deep, cancelled midway by one
//            source: every future ready, ok + cancelled == N.
#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "quell/coro.hpp"
#include "quell/scope.hpp"
#include "quell/thread_pool.hpp"
#include "../sanitized.hpp"
#include "progress_watchdog.hpp"

namespace quell {
namespace {

using namespace std::chrono_literals;

constexpr int kRounds = test::kSanitized ? 1000 : 3000;

// A round that makes no progress for this long is a hang (a lost wakeup, a
// shutdown that never returns): abort with a message rather than wait for
// the suite's timeout. A failure guard only; nothing is ordered by time.
constexpr std::chrono::seconds kHangGuard{90};

class Watchdog : public test::ProgressWatchdog {
 public:
  Watchdog() : ProgressWatchdog(kHangGuard) {}
};

// Waits for `future` (the watchdog aborts if it never gets ready).
template <class F>
void wait_ready(const F& future) {
  future.wait();
}

// A busy wait of `ns` nanoseconds, to shift one racer against the others
// (never to order anything: every outcome of the race is checked).
void spin(unsigned ns) {
  if (ns == 0) return;
  const auto until = std::chrono::steady_clock::now() + std::chrono::nanoseconds(ns);
  while (std::chrono::steady_clock::now() < until) {
  }
}

// A racer's spin in a round, in ns: 0 to 3 µs, differing per round and per
// racer.
unsigned jitter(int round, unsigned racer) {
  unsigned x = static_cast<unsigned>(round) * 2654435761u + racer * 40503u + 17u;
  x ^= x >> 13;
  x *= 0x5bd1e995u;
  x ^= x >> 15;
  return x % 3000;
}

// The same, spread up to about 100 µs: a thread released from a barrier by
// a futex wake lags the last arriver by a few µs to tens of µs, so the racer
// that must sometimes come late (the canceller, the completer) needs that
// much room for both orders to occur.
unsigned spread(int round, unsigned racer) {
  return jitter(round, racer) * (jitter(round, racer + 1000) % 34);
}

// The ids of a pool's n workers: n tasks that all wait for each other run
// on n distinct workers at once.
std::set<std::thread::id> worker_ids(ThreadPool& pool, std::size_t n) {
  std::latch all(static_cast<std::ptrdiff_t>(n));
  std::mutex mutex;
  std::set<std::thread::id> ids;
  std::vector<Future<void>> futures;
  for (std::size_t i = 0; i < n; ++i) {
    futures.push_back(pool.submit([&] {
      {
        std::lock_guard lock(mutex);
        ids.insert(std::this_thread::get_id());
      }
      all.arrive_and_wait();
    }));
  }
  for (auto& f : futures) f.get();
  return ids;
}

// Counts up when the frame that holds it is destroyed: a coroutine's very
// end, however its body ended.
struct EndMark {
  std::atomic<int>* count;
  ~EndMark() { count->fetch_add(1); }
};

// A one-shot event one coroutine can wait for: a user-written stoppable
// awaitable (R4c, R14-R17, R20), as docs/coroutines.md shows it, with one
// state word (the waiter or kSet) that set() and the cancellation callback
// race for, resuming only through post_resume. It counts how each wait
// ended, so a round can check that the coroutine was resumed exactly once.
class OneShot {
 public:
  void set() noexcept {
    void* old = state_.exchange(kSet, std::memory_order_acq_rel);
    if (old != nullptr && old != kSet) static_cast<Waiter*>(old)->take(false);
  }

  class Waiter {
   public:
    explicit Waiter(OneShot& e) noexcept : event_(&e) {}
    Waiter(const Waiter&) = delete;
    Waiter& operator=(const Waiter&) = delete;

    bool await_ready() const noexcept {
      const bool ready = event_->state_.load(std::memory_order_acquire) == kSet;
      if (ready) event_->ready_.fetch_add(1);
      return ready;
    }
    template <class P>
    bool await_suspend(std::coroutine_handle<P> h, const CancellationToken& token) {
      frame_ = h.address();
      post_ = [](void* f) noexcept { post_resume(std::coroutine_handle<P>::from_address(f)); };
      void* none = nullptr;  // publish ourselves, unless set() came first
      if (!event_->state_.compare_exchange_strong(none, this, std::memory_order_acq_rel)) {
        event_->declined_.fetch_add(1);
        return false;
      }
      event_->published_.store(true);
      callback_.emplace(token, Cancel{this});  // runs here if already cancelled
      // The second of take() and this decides: true = stay suspended.
      if ((bits_.fetch_or(kSuspended, std::memory_order_acq_rel) & kTaken) != 0) {
        event_->declined_.fetch_add(1);
        return false;
      }
      return true;
    }
    void await_resume() {
      callback_.reset();  // waits for a callback running elsewhere
      event_->resumes_.fetch_add(1);
      if (cancelled_) throw OperationCancelled();
    }
    void take(bool cancelled) noexcept {  // only the side that withdrew the wait
      cancelled_ = cancelled;
      if ((bits_.fetch_or(kTaken, std::memory_order_acq_rel) & kSuspended) != 0) {
        event_->posts_.fetch_add(1);
        post_(frame_);
      }
    }

   private:
    struct Cancel {
      Waiter* w;
      void operator()() noexcept {  // withdraw first: set() may have taken it
        void* me = w;
        if (w->event_->state_.compare_exchange_strong(me, nullptr, std::memory_order_acq_rel)) {
          w->take(true);
        }
      }
    };
    static constexpr unsigned kTaken = 1;
    static constexpr unsigned kSuspended = 2;
    OneShot* event_;
    void* frame_ = nullptr;
    void (*post_)(void*) noexcept = nullptr;
    std::atomic<unsigned> bits_{0};
    bool cancelled_ = false;
    std::optional<CancellationCallback<Cancel>> callback_;
  };

  Waiter wait() noexcept { return Waiter(*this); }

  // How the one wait ended: exactly one of these paths, and one resumption.
  int ready() const noexcept { return ready_.load(); }
  int declined() const noexcept { return declined_.load(); }
  int posts() const noexcept { return posts_.load(); }
  int resumes() const noexcept { return resumes_.load(); }
  // A waiter has published itself (it may have left again since).
  bool published() const noexcept { return published_.load(); }

 private:
  static inline int set_tag;
  static constexpr void* kSet = &set_tag;

  std::atomic<void*> state_{nullptr};  // null, kSet, or the one Waiter
  std::atomic<int> ready_{0};
  std::atomic<int> declined_{0};
  std::atomic<int> posts_{0};
  std::atomic<int> resumes_{0};
  std::atomic<bool> published_{false};
};

// A thread that runs `body(round)` once per round, released by `start`
// together with the others, and reports on `done`.
class Racer {
 public:
  Racer(int rounds, std::barrier<>& start, std::barrier<>& done, std::function<void(int)> body)
      : thread_([rounds, &start, &done, body = std::move(body)] {
          for (int round = 0; round < rounds; ++round) {
            start.arrive_and_wait();
            body(round);
            done.arrive_and_wait();
          }
        }) {}

 private:
  std::jthread thread_;
};

class CoroRace : public ::testing::TestWithParam<std::size_t> {};

// R14/R18: a producer task returns its value while the main thread cancels
// the root awaiting its future. Completion won: the root has the value and
// the future is consumed. Cancellation won: the root ends cancelled, and the
// future still holds the value for get(). Never both, never neither.
TEST_P(CoroRace, FutureAwaitCancelledWhileItsTaskCompletesGivesTheValueOrCancelledNeverBoth) {
  Watchdog watchdog;
  ThreadPool pool(GetParam());
  ThreadPool other(1);
  // With one worker the producer needs a pool of its own (both block on the
  // barrier); with three it completes from a worker of the root's home.
  ThreadPool& producers = GetParam() > 1 ? pool : other;
  std::barrier<> start(3);
  int won_by_value = 0;
  int won_by_cancel = 0;
  for (int round = 0; round < kRounds; ++round) {
    std::atomic<int> resumed{0};
    std::atomic<int> got{-1};
    Future<int> future = producers.submit([&start, round] {
      start.arrive_and_wait();
      spin(jitter(round, 1));
      return round;
    });
    auto root = pool.handle([&, round]() -> Task<int> {
      start.arrive_and_wait();
      spin(jitter(round, 2));
      int value = -1;
      bool cancelled = false;
      // Lvalue, rvalue and as_result forms.
      try {
        if (round % 3 == 0) {
          value = co_await future;
        } else if (round % 3 == 1) {
          value = co_await std::move(future);
        } else {
          Result<int> r = co_await as_result(future);
          if (r.cancelled()) {
            cancelled = true;
          } else {
            value = std::move(r).value();
          }
        }
      } catch (const OperationCancelled&) {
        cancelled = true;
      }
      resumed.fetch_add(1);
      got.store(value);
      if (cancelled) co_yield quell::cancelled;
      co_return value;
    });
    start.arrive_and_wait();
    spin(spread(round, 3));
    root.cancel();
    wait_ready(root.future());
    ASSERT_EQ(resumed.load(), 1) << "round " << round;
    if (root.status() == TaskStatus::completed) {
      ++won_by_value;
      ASSERT_EQ(root.get(), round) << "round " << round;
      ASSERT_EQ(got.load(), round) << "round " << round;
      // The await consumed the outcome: it is not handed out twice.
      try {
        (void)future.get();
        ADD_FAILURE() << "round " << round << ": the future gave its value twice";
      } catch (const TaskError& e) {
        ASSERT_EQ(e.code(), make_error_code(Errc::already_retrieved)) << "round " << round;
      }
    } else {
      ++won_by_cancel;
      ASSERT_EQ(root.status(), TaskStatus::cancelled) << "round " << round;
      ASSERT_EQ(got.load(), -1) << "round " << round;
      // Non-owning: the task went on, and its value is still there.
      ASSERT_EQ(future.get(), round) << "round " << round;
    }
    watchdog.tick();
  }
  RecordProperty("won_by_value", won_by_value);
  RecordProperty("won_by_cancel", won_by_cancel);
  EXPECT_EQ(won_by_value + won_by_cancel, kRounds);
}

// R14: a sleep of 0-50 µs racing handle.cancel(): the root sees the sleep
// end once, ok or cancelled, and ends accordingly.
TEST_P(CoroRace, ShortSleepRacingCancelEndsOkOrCancelledExactlyOnce) {
  Watchdog watchdog;
  ThreadPool pool(GetParam());
  std::barrier<> start(2);
  int ok = 0;
  int cancelled = 0;
  for (int round = 0; round < kRounds; ++round) {
    std::atomic<int> resumed{0};
    std::atomic<int> outcome{0};  // 1: the sleep ended ok, 2: cancelled
    const auto delay = std::chrono::microseconds(jitter(round, 4) % 51);
    auto root = pool.handle([&, round, delay]() -> Task<void> {
      start.arrive_and_wait();
      spin(jitter(round, 5));
      bool ended_ok = true;
      if (round % 2 == 0) {
        auto r = co_await as_result(sleep_for(delay));
        ended_ok = r.has_value();
      } else {
        try {
          co_await sleep_for(delay);
        } catch (const OperationCancelled&) {
          ended_ok = false;
        }
      }
      resumed.fetch_add(1);
      outcome.store(ended_ok ? 1 : 2);
      if (!ended_ok) co_yield quell::cancelled;
    });
    start.arrive_and_wait();
    spin(spread(round, 6));
    root.cancel();
    wait_ready(root.future());
    ASSERT_EQ(resumed.load(), 1) << "round " << round;
    if (outcome.load() == 1) {
      ++ok;
      ASSERT_EQ(root.status(), TaskStatus::completed) << "round " << round;
    } else {
      ++cancelled;
      ASSERT_EQ(outcome.load(), 2) << "round " << round;
      ASSERT_EQ(root.status(), TaskStatus::cancelled) << "round " << round;
    }
    watchdog.tick();
  }
  RecordProperty("ok", ok);
  RecordProperty("cancelled", cancelled);
  EXPECT_EQ(ok + cancelled, kRounds);
}

// R16: a cancellation racing the moment the root registers a wait that only
// a cancellation ends (an hour's sleep, a future whose task sleeps an hour,
// a child task sleeping an hour): every round ends, cancelled. A wakeup lost
// between "token not cancelled yet" and "callback registered" hangs a round.
TEST_P(CoroRace, CancelRacingRegistrationOfAnEndlessWaitAlwaysEndsTheRootCancelled) {
  Watchdog watchdog;
  ThreadPool pool(GetParam());
  std::barrier<> start(2);
  for (int round = 0; round < kRounds; ++round) {
    const int kind = round % 3;
    std::atomic<int> resumed{0};
    std::optional<TaskHandle<int>> producer;
    if (kind == 1) {
      producer.emplace(pool.handle([]() -> Task<int> {
        co_await sleep_for(1h);
        co_return 1;
      }));
    }
    auto root = pool.handle([&, round, kind]() -> Task<void> {
      start.arrive_and_wait();
      spin(jitter(round, 7));
      bool cancelled = false;
      try {
        if (kind == 0) {
          co_await sleep_for(1h);
        } else if (kind == 1) {
          (void)co_await producer->future();
        } else {
          co_await []() -> Task<void> { co_await sleep_for(1h); }();
        }
      } catch (const OperationCancelled&) {
        cancelled = true;
      }
      resumed.fetch_add(1);
      if (cancelled) co_yield quell::cancelled;
    });
    start.arrive_and_wait();
    spin(spread(round, 8));
    root.cancel();
    wait_ready(root.future());
    ASSERT_EQ(root.status(), TaskStatus::cancelled) << "round " << round << " kind " << kind;
    ASSERT_EQ(resumed.load(), 1) << "round " << round << " kind " << kind;
    if (producer) {
      // Non-owning: the root's cancellation did not reach the producer.
      ASSERT_FALSE(producer->future().ready()) << "round " << round;
      producer->cancel();
      wait_ready(producer->future());
      ASSERT_EQ(producer->status(), TaskStatus::cancelled) << "round " << round;
    }
    watchdog.tick();
  }
}

// R15/R20: the cancellation callback runs on the canceller's thread (here
// the main thread, no worker), but the code after every kind of cancelled
// co_await runs on a worker of the root's home, never on the canceller.
TEST_P(CoroRace, CodeAfterACancelledAwaitRunsOnAWorkerNeverOnTheCancellersThread) {
  Watchdog watchdog;
  ThreadPool pool(GetParam());
  const std::set<std::thread::id> workers = worker_ids(pool, GetParam());
  ASSERT_EQ(workers.size(), GetParam());
  const std::thread::id canceller = std::this_thread::get_id();
  ASSERT_EQ(workers.count(canceller), 0u);
  std::barrier<> start(2);
  for (int round = 0; round < kRounds; ++round) {
    const int kind = round % 5;
    std::vector<std::thread::id> seen;  // written by the root only, read after it ended
    std::optional<TaskHandle<int>> other;
    OneShot event;
    if (kind == 1 || kind == 2) {
      other.emplace(pool.handle([]() -> Task<int> {
        auto r = co_await as_result(sleep_for(1h));
        co_return r.has_value() ? 1 : 2;
      }));
    }
    auto root = pool.handle([&, round, kind]() -> Task<void> {
      start.arrive_and_wait();
      spin(jitter(round, 9));
      try {
        if (kind == 0) {
          co_await sleep_for(1h);
        } else if (kind == 1) {
          (void)co_await other->future();  // non-owning
        } else if (kind == 2) {
          (void)co_await *other;  // owning: resumes when the handle's task ends
        } else if (kind == 3) {
          co_await [](std::vector<std::thread::id>& ids) -> Task<void> {
            auto r = co_await as_result(sleep_for(1h));
            ids.push_back(std::this_thread::get_id());
            if (!r) co_yield quell::cancelled;
          }(seen);
        } else {
          co_await event.wait();
        }
      } catch (const OperationCancelled&) {
      }
      seen.push_back(std::this_thread::get_id());
    });
    start.arrive_and_wait();
    spin(spread(round, 10));
    root.cancel();
    wait_ready(root.future());
    ASSERT_FALSE(seen.empty()) << "round " << round << " kind " << kind;
    for (const std::thread::id id : seen) {
      ASSERT_NE(id, canceller) << "round " << round << " kind " << kind;
      ASSERT_EQ(workers.count(id), 1u) << "round " << round << " kind " << kind;
    }
    if (kind == 4) {
      ASSERT_EQ(event.resumes(), 1) << "round " << round;
    }
    if (other) {
      other->cancel();
      wait_ready(other->future());
    }
    watchdog.tick();
  }
}

// R14/R20: a user-written stoppable awaitable, completed by an external
// thread while the main thread cancels the root: exactly one of the paths
// (ready at once, declined in await_suspend, posted by the winner) ends the
// wait, and the coroutine is resumed once. The outcome matches the path:
// cancelled only if the cancellation withdrew the wait.
TEST_P(CoroRace, StoppableAwaitableCompletedByAnotherThreadWhileCancelledResumesExactlyOnce) {
  Watchdog watchdog;
  ThreadPool pool(GetParam());
  std::barrier<> start(3);
  std::barrier<> done(2);
  std::optional<OneShot> event;
  Racer setter(kRounds, start, done, [&](int round) {
    // The root comes out of the barrier last more often than not: on half
    // the rounds, set only once its waiter is published, so the completion
    // also races the cancellation of a registered wait.
    if (round % 2 == 1) {
      while (!event->published()) std::this_thread::yield();
    }
    spin(spread(round, 11));
    event->set();
  });
  int completed = 0;
  int cancelled = 0;
  int ready = 0;     // set before the await
  int declined = 0;  // taken while await_suspend registered (R16)
  int posted = 0;    // taken while suspended, resumed through post_resume
  for (int round = 0; round < kRounds; ++round) {
    event.emplace();
    std::atomic<int> resumed{0};
    std::atomic<int> outcome{0};  // 1: set, 2: cancelled
    auto root = pool.handle([&, round]() -> Task<void> {
      start.arrive_and_wait();
      spin(jitter(round, 12));
      bool was_cancelled = false;
      try {
        co_await event->wait();
      } catch (const OperationCancelled&) {
        was_cancelled = true;
      }
      resumed.fetch_add(1);
      outcome.store(was_cancelled ? 2 : 1);
      if (was_cancelled) co_yield quell::cancelled;
    });
    start.arrive_and_wait();
    spin(spread(round, 13));
    root.cancel();
    wait_ready(root.future());
    done.arrive_and_wait();  // the setter is done with this round's event
    ASSERT_EQ(resumed.load(), 1) << "round " << round;
    ASSERT_EQ(event->resumes(), 1) << "round " << round;
    ASSERT_EQ(event->ready() + event->declined() + event->posts(), 1) << "round " << round;
    ready += event->ready();
    declined += event->declined();
    posted += event->posts();
    if (outcome.load() == 1) {
      ++completed;
      ASSERT_EQ(root.status(), TaskStatus::completed) << "round " << round;
    } else {
      ++cancelled;
      ASSERT_EQ(outcome.load(), 2) << "round " << round;
      ASSERT_EQ(root.status(), TaskStatus::cancelled) << "round " << round;
    }
    watchdog.tick();
  }
  RecordProperty("completed", completed);
  RecordProperty("cancelled", cancelled);
  RecordProperty("ready", ready);
  RecordProperty("declined", declined);
  RecordProperty("posted", posted);
  EXPECT_EQ(completed + cancelled, kRounds);
}

// Owned work that outlives a cancellation: its sleep may be cut short, but
// it then goes on for a while and marks its very end.
Task<int> owned_work(std::atomic<int>& started, std::atomic<int>& finished,
                     std::chrono::microseconds nap, unsigned tail) {
  started.fetch_add(1);
  auto r = co_await as_result(sleep_for(nap));
  spin(tail);
  finished.fetch_add(1);
  co_return r.has_value() ? 1 : 2;
}

// R19: an owning await (co_await handle, co_await scope.join(), co_await a
// child Task) cancelled while what it owns is still working never returns
// before that work has ended: every owned body that started has finished by
// the time the await returns, and none starts afterwards.
TEST_P(CoroRace, OwningAwaitCancelledNeverReturnsWhileTheOwnedWorkStillRuns) {
  Watchdog watchdog;
  ThreadPool pool(GetParam());
  std::barrier<> start(2);
  int checkpoints = 0;
  for (int round = 0; round < kRounds; ++round) {
    const int kind = round % 3;
    // An hour (only the cancellation ends it) or a few µs (racing it).
    const auto nap = round % 2 == 0 ? std::chrono::microseconds(1h)
                                    : std::chrono::microseconds(jitter(round, 14) % 30);
    const unsigned tail = 1000 + jitter(round, 15);
    std::atomic<int> started{0};
    std::atomic<int> finished{0};
    std::atomic<int> started_at_return{-1};
    std::atomic<int> finished_at_return{-1};
    std::atomic<bool> handle_ready_at_return{false};
    std::atomic<bool> handle_cancelled_at_return{false};
    std::atomic<bool> await_cancelled{false};
    std::atomic<int> resumed{0};
    std::optional<TaskHandle<int>> owned;  // kind 0; outlives the root
    auto root = pool.handle([&, round, kind, nap, tail]() -> Task<void> {
      if (kind == 0) {
        owned.emplace(pool.handle(owned_work(started, finished, nap, tail)));
        start.arrive_and_wait();
        spin(jitter(round, 16));
        try {
          (void)co_await *owned;
        } catch (const OperationCancelled&) {
          await_cancelled.store(true);
        }
        handle_ready_at_return.store(owned->future().ready());
        handle_cancelled_at_return.store(owned->cancelled());
      } else if (kind == 1) {
        Scope scope(pool);
        scope.spawn([&started, &finished, tail] {
          started.fetch_add(1);
          spin(tail);
          finished.fetch_add(1);
        });
        scope.spawn([&started, &finished, nap, tail] {
          return owned_work(started, finished, nap, tail);
        });
        scope.spawn([&started, &finished, tail] {
          started.fetch_add(1);
          spin(tail / 2);
          finished.fetch_add(1);
        });
        start.arrive_and_wait();
        spin(jitter(round, 16));
        try {
          co_await scope.join();
        } catch (const OperationCancelled&) {
        }
        started_at_return.store(started.load());
        finished_at_return.store(finished.load());
      } else {
        start.arrive_and_wait();
        spin(jitter(round, 16));
        try {
          (void)co_await owned_work(started, finished, nap, tail);
        } catch (const OperationCancelled&) {
          // the child was never started: the token was cancelled already
        }
      }
      if (kind != 1) {
        started_at_return.store(started.load());
        finished_at_return.store(finished.load());
      }
      resumed.fetch_add(1);
    });
    start.arrive_and_wait();
    spin(spread(round, 17));
    root.cancel();
    wait_ready(root.future());
    ASSERT_EQ(resumed.load(), 1) << "round " << round << " kind " << kind;
    if (kind == 0) {
      // Owning even when the root's token was cancelled before the await:
      // the task is cancelled too and awaited to its end (R19).
      ASSERT_TRUE(handle_ready_at_return.load()) << "round " << round;
      if (await_cancelled.load()) {
        ASSERT_TRUE(handle_cancelled_at_return.load()) << "round " << round;
        ++checkpoints;
      }
    }
    ASSERT_EQ(finished_at_return.load(), started_at_return.load())
        << "round " << round << " kind " << kind << ": the await returned while owned work ran";
    // Nothing owned started after the await returned.
    ASSERT_EQ(started.load(), started_at_return.load()) << "round " << round << " kind " << kind;
    ASSERT_EQ(finished.load(), started.load()) << "round " << round << " kind " << kind;
    watchdog.tick();
  }
  RecordProperty("handle_awaits_cancelled", checkpoints);
}

INSTANTIATE_TEST_SUITE_P(Workers, CoroRace, ::testing::Values(std::size_t{1}, std::size_t{3}),
                         ::testing::PrintToStringParamName());

constexpr int kShutdownRounds = test::kSanitized ? 200 : 500;
constexpr int kRootsPerPool = 16;

// R40 (cancel): roots parked in sleeps (half an hour's, half a few µs, in a
// loop so they keep parking and resuming) while another thread shuts the
// pool down. shutdown() returns, every future is ready when it does, the
// hour sleepers ended cancelled, and every body that started has ended.
TEST(CoroShutdownRace, CancelShutdownWhileRootsParkAndResumeReadiesEveryFuture) {
  Watchdog watchdog;
  for (int round = 0; round < kShutdownRounds; ++round) {
    ThreadPoolConfig config;
    config.thread_count = round % 2 == 0 ? 1 : 3;
    config.shutdown_policy = ShutdownPolicy::cancel;
    ThreadPool pool(config);
    std::atomic<int> parked{0};
    std::atomic<int> bodies{0};
    std::atomic<int> ended{0};
    std::vector<Future<int>> futures;
    for (int i = 0; i < kRootsPerPool; ++i) {
      const bool long_sleep = i % 2 == 0;
      futures.push_back(pool.submit([&, i, long_sleep, round]() -> Task<int> {
        bodies.fetch_add(1);
        EndMark mark{&ended};
        for (int step = 0; step < 3; ++step) {
          parked.fetch_add(1);
          if (long_sleep) {
            co_await sleep_for(1h);
          } else {
            co_await sleep_for(std::chrono::microseconds(jitter(round, i + step) % 50));
          }
        }
        co_return i;
      }));
    }
    std::thread closer([&] {
      // Some roots parked already, others still on their way.
      while (parked.load() < kRootsPerPool / 2) std::this_thread::yield();
      spin(jitter(round, 18));
      pool.shutdown();
    });
    closer.join();  // shutdown() returned
    for (int i = 0; i < kRootsPerPool; ++i) {
      Future<int>& f = futures[static_cast<std::size_t>(i)];
      ASSERT_TRUE(f.ready()) << "round " << round << " root " << i;
      if (i % 2 == 0) {
        ASSERT_EQ(f.status(), TaskStatus::cancelled) << "round " << round << " root " << i;
      } else {
        const TaskStatus s = f.status();
        ASSERT_TRUE(s == TaskStatus::completed || s == TaskStatus::cancelled)
            << "round " << round << " root " << i << ": " << to_string(s);
        if (s == TaskStatus::completed) {
          ASSERT_EQ(f.get(), i);
        }
      }
    }
    ASSERT_EQ(ended.load(), bodies.load()) << "round " << round;
    watchdog.tick();
  }
}

// R40 (drain): roots in short sleeps while another thread drains the pool:
// nothing is cancelled, the timers keep firing, every root completes before
// shutdown() returns.
TEST(CoroShutdownRace, DrainShutdownWhileRootsSleepCompletesEveryRoot) {
  Watchdog watchdog;
  for (int round = 0; round < kShutdownRounds; ++round) {
    ThreadPoolConfig config;
    config.thread_count = round % 2 == 0 ? 1 : 3;
    config.shutdown_policy = ShutdownPolicy::drain;
    ThreadPool pool(config);
    std::atomic<int> parked{0};
    std::atomic<int> ended{0};
    std::vector<Future<int>> futures;
    for (int i = 0; i < kRootsPerPool; ++i) {
      futures.push_back(pool.submit([&, i, round]() -> Task<int> {
        EndMark mark{&ended};
        for (int step = 0; step < 3; ++step) {
          parked.fetch_add(1);
          co_await sleep_for(std::chrono::microseconds(jitter(round, i + step) % 50));
          co_await yield();
        }
        co_return i;
      }));
    }
    std::thread closer([&] {
      while (parked.load() < kRootsPerPool / 2) std::this_thread::yield();
      spin(jitter(round, 19));
      pool.shutdown();
    });
    closer.join();
    for (int i = 0; i < kRootsPerPool; ++i) {
      Future<int>& f = futures[static_cast<std::size_t>(i)];
      ASSERT_TRUE(f.ready()) << "round " << round << " root " << i;
      ASSERT_EQ(f.status(), TaskStatus::completed) << "round " << round << " root " << i;
      ASSERT_EQ(f.get(), i);
    }
    ASSERT_EQ(ended.load(), kRootsPerPool) << "round " << round;
    watchdog.tick();
  }
}

constexpr int kDeadlineRounds = test::kSanitized ? 200 : 600;
constexpr int kDeadlineBatch = 8;

// §9/R7: a deadline set just around the root's sleep: the deadline fires
// while the root sleeps, or the sleep ends first. Either the root resumed
// from its sleep ok and completed, or the sleep ended cancelled and the root
// timed out; exactly one resumption per root that started (one that never
// started was resolved timed_out in the queue).
TEST(CoroDeadlineRace, DeadlineAroundTheSleepEndsOkOrTimedOutExactlyOnce) {
  Watchdog watchdog;
  ThreadPool pool(3);
  constexpr auto kTimeout = 100us;
  int ok = 0;
  int timed_out = 0;
  for (int round = 0; round < kDeadlineRounds; ++round) {
    std::vector<std::atomic<int>> started(kDeadlineBatch);
    std::vector<std::atomic<int>> resumed(kDeadlineBatch);
    std::vector<std::atomic<int>> outcome(kDeadlineBatch);  // 1: sleep ok, 2: cancelled
    std::vector<Future<void>> futures;
    for (int i = 0; i < kDeadlineBatch; ++i) {
      // 50 to 150 µs: well before, about at, and well after the deadline.
      const auto nap = std::chrono::microseconds(50 + jitter(round, i) % 101);
      const auto index = static_cast<std::size_t>(i);
      futures.push_back(pool.submit(
          [&, index, nap]() -> Task<void> {
            started[index].fetch_add(1);
            auto r = co_await as_result(sleep_for(nap));
            resumed[index].fetch_add(1);
            outcome[index].store(r.has_value() ? 1 : 2);
            if (!r) co_yield quell::cancelled;
          },
          TaskOptions().set_timeout(kTimeout)));
    }
    for (int i = 0; i < kDeadlineBatch; ++i) {
      const auto index = static_cast<std::size_t>(i);
      Future<void>& f = futures[index];
      wait_ready(f);
      const TaskStatus s = f.status();
      if (started[index].load() == 0) {
        ASSERT_EQ(s, TaskStatus::timed_out) << "round " << round << " root " << i;
        ++timed_out;
        continue;
      }
      ASSERT_EQ(resumed[index].load(), 1) << "round " << round << " root " << i;
      if (outcome[index].load() == 1) {
        ++ok;
        ASSERT_EQ(s, TaskStatus::completed) << "round " << round << " root " << i;
      } else {
        ++timed_out;
        ASSERT_EQ(outcome[index].load(), 2) << "round " << round << " root " << i;
        ASSERT_EQ(s, TaskStatus::timed_out)
            << "round " << round << " root " << i << ": " << to_string(s);
      }
    }
    watchdog.tick();
  }
  RecordProperty("ok", ok);
  RecordProperty("timed_out", timed_out);
  EXPECT_EQ(ok + timed_out, kDeadlineRounds * kDeadlineBatch);
}

constexpr int kManyRoots = test::kSanitized ? 2000 : 10000;

struct ManyCounts {
  std::atomic<int> frames_entered{0};
  std::atomic<int> frames_ended{0};
  std::atomic<int> ok{0};
};

// One level of a root's chain: a sleep of zero, a yield, then the next
// level (three of them below the root); the innermost of every tenth root sleeps an hour (only the
// cancellation ends it).
Task<int> level(ManyCounts& counts, int depth, bool endless) {
  counts.frames_entered.fetch_add(1);
  EndMark mark{&counts.frames_ended};
  co_await sleep_for(0us);
  co_await yield();
  if (depth == 3) {
    if (endless) co_await sleep_for(1h);
    co_return depth;
  }
  const int below = co_await level(counts, depth + 1, endless);
  co_await yield();
  co_return below + depth;
}

// R5/R19: 10,000 roots on three workers, each three children deep, all on
// one CancellationSource cancelled midway through their work:
// every future is ready, each root completed exactly when its body reached
// its end, ok + cancelled == N, every frame is destroyed.
TEST(CoroManyRoots, ManyRootsThreeChildrenDeepCancelledMidwayAllEndAndCountsAddUp) {
  Watchdog watchdog;
  ThreadPool pool(3);
  CancellationSource source;
  ManyCounts counts;
  std::vector<std::atomic<int>> reached(kManyRoots);
  std::vector<Future<int>> futures;
  futures.reserve(kManyRoots);
  const TaskOptions options = TaskOptions().set_cancellation(source.token());
  int endless = 0;
  for (int i = 0; i < kManyRoots; ++i) {
    const bool is_endless = i % 10 == 0;
    endless += is_endless ? 1 : 0;
    futures.push_back(pool.submit(
        [&counts, &reached, i, is_endless]() -> Task<int> {
          counts.frames_entered.fetch_add(1);
          EndMark mark{&counts.frames_ended};
          const int sum = co_await level(counts, 1, is_endless);
          reached[static_cast<std::size_t>(i)].store(1);
          counts.ok.fetch_add(1);
          co_return sum;
        },
        options));
  }
  // Midway: once a tenth of the roots completed (the yields queue FIFO, so
  // most of the others are then a level or two away from their end).
  while (counts.ok.load() < kManyRoots / 10) std::this_thread::yield();
  source.request_cancel();
  int ok = 0;
  int cancelled = 0;
  for (int i = 0; i < kManyRoots; ++i) {
    Future<int>& f = futures[static_cast<std::size_t>(i)];
    wait_ready(f);
    const TaskStatus s = f.status();
    if (reached[static_cast<std::size_t>(i)].load() == 1) {
      ++ok;
      ASSERT_EQ(s, TaskStatus::completed) << "root " << i;
      ASSERT_EQ(f.get(), 6) << "root " << i;
    } else {
      ++cancelled;
      ASSERT_EQ(s, TaskStatus::cancelled) << "root " << i << ": " << to_string(s);
    }
    if (i % 10 == 0) {
      ASSERT_EQ(s, TaskStatus::cancelled) << "endless root " << i;
    }
    if (i % 1000 == 0) watchdog.tick();
  }
  RecordProperty("ok", ok);
  RecordProperty("cancelled", cancelled);
  EXPECT_EQ(ok + cancelled, kManyRoots);
  EXPECT_EQ(ok, counts.ok.load());
  EXPECT_GE(ok, kManyRoots / 10);
  EXPECT_GE(cancelled, endless);
  EXPECT_EQ(counts.frames_ended.load(), counts.frames_entered.load());
  pool.wait_idle();
  const ThreadPoolStats stats = pool.stats();
  EXPECT_EQ(stats.running, 0u);
  EXPECT_EQ(stats.suspended, 0u);
}

}  // namespace
}  // namespace quell
