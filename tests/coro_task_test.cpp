// quell::Task and what flows through it (API.md §10.1-§10.2, §10.6, §10.8):
//   R1  laziness: a call runs nothing; ~Task of an unstarted task destroys
//       its parameters and never runs the body.
//   R2  rvalue-only await (checked at compile time); an empty or moved-from
//       task throws TaskError(no_state).
//   R3  a child runs on its awaiter's thread (symmetric transfer).
//   R4  classification: (a) this_coro tags, (b) quell awaitables, (c) a
//       user-written stoppable awaitable (FakeIo: one atomic state word,
//       post_resume, R14-R16 seen from outside), (d) a std::stop_token
//       awaiter, (e) foreign awaiters left untouched.
//   R5  token propagation by reference; this_task::cancellation_token() in
//       a coroutine; with_token's token is the current one.
//   R6  checkpoints: a cancelled token destroys a child unstarted, leaves a
//       ready Future retrievable, fails yield().
//   R7  OperationCancelled (reason read from the token) and as_result;
//       Result<T>/Result<void>/Result<T&> semantics.
//   R8  co_yield quell::cancelled, and the cleanup idiom with shielded().
//   R26 with_token / shielded.
//   R35 sync_wait: this thread, a cancelled token starts nothing, nested or
//       on a worker throws std::logic_error; sync_wait(pool, aw, options).
//   R37 frame ownership: parameters die when the co_await expression ends.
//   R38 exceptions: unchanged through levels, OperationCancelled ends the
//       task cancelled, a foreign await_suspend's exception, a throwing move
//       of the value (§10.8).
//   R39 constant stack: 10^7 synchronous children in a loop, 10^6-deep
//       recursion, on sync_wait and on a pool.
//   R41/R42 happens-before from co_return and from request_cancel() (plain
//       ints written before and read after; TSan checks them).
// Also Task<T&>, move-only T, Task<void> and co_invoke.
//
// Pool integration (R9-R13, R27-R34, R40) and stress races live in other
// files. Nothing here sleeps for ordering: latches, gates and atomics do.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>

#include "pool_test_support.hpp"
#include "quell/cancellation.hpp"
#include "quell/coro.hpp"
#include "quell/error.hpp"
#include "quell/stop_token.hpp"
#include "quell/task_options.hpp"
#include "quell/thread_pool.hpp"
#include "sanitized.hpp"

namespace quell {
namespace {

using namespace std::chrono_literals;
using test::Gate;
using test::OpenOnExit;

// ---------------------------------------------------------------------------
// Helpers

// Counts its own destruction, once: a moved-from probe does not count, so a
// coroutine parameter (moved into the frame) counts when the frame dies.
struct Probe {
  explicit Probe(std::atomic<int>* destroyed) noexcept : count(destroyed) {}
  Probe(Probe&& other) noexcept : count(std::exchange(other.count, nullptr)) {}
  Probe(const Probe&) = delete;
  Probe& operator=(const Probe&) = delete;
  Probe& operator=(Probe&&) = delete;
  ~Probe() {
    if (count != nullptr) count->fetch_add(1);
  }
  std::atomic<int>* count;
};

Task<int> answer(int v) { co_return v; }

Task<void> set_flag(bool* ran) {
  *ran = true;
  co_return;
}

Task<int> run_with_probe(Probe probe, bool* ran) {
  (void)probe;
  *ran = true;
  co_return 1;
}

std::error_code code_of(const std::system_error& e) { return e.code(); }

// A concept that says whether `co_await a` is well-formed inside a Task.
template <class A>
concept AwaitableInTask = requires { typename await_result_t<A>; };

// ---------------------------------------------------------------------------
// A test double of an I/O operation, written as a third-party library would
// (R4c, R14-R17, R20): its awaiter takes the current token in
// await_suspend(h, const CancellationToken&), registers a
// CancellationCallback, races completion against cancellation through one
// atomic state word, and the side that wins after the suspension resumes the
// coroutine through quell::post_resume(h) (never inline). Cancelled, the
// co_await throws OperationCancelled (this double's choice).
class FakeIo {
 public:
  class Awaiter {
   public:
    explicit Awaiter(FakeIo& io) noexcept : io_(&io) {}
    Awaiter(const Awaiter&) = delete;
    Awaiter& operator=(const Awaiter&) = delete;

    bool await_ready() const noexcept { return false; }

    template <class P>
    bool await_suspend(std::coroutine_handle<P> h, const CancellationToken& token) {
      frame_ = h.address();
      resume_ = [](void* frame) noexcept {
        post_resume(std::coroutine_handle<P>::from_address(frame));
      };
      FakeIo* const io = io_;
      io->attach(this);
      callback_.emplace(token, Cancel{this});  // runs at once if cancelled already (R16)
      const unsigned before = state_.fetch_or(kSuspended, std::memory_order_acq_rel);
      if ((before & kTaken) != 0) {  // taken while registering: go on here
        io->declined_.fetch_add(1);
        return false;
      }
      return true;
    }

    int await_resume() {
      callback_.reset();  // R17: off the token before user code runs
      if (cancelled_) throw OperationCancelled();
      return value_;
    }

   private:
    friend class FakeIo;
    static constexpr unsigned kTaken = 1;
    static constexpr unsigned kSuspended = 2;

    struct Cancel {
      Awaiter* self;
      void operator()() noexcept {
        if (!self->io_->detach(self)) return;  // the completion won: it delivers
        self->cancelled_ = true;
        self->take();
      }
    };

    void take() noexcept {
      const unsigned before = state_.fetch_or(kTaken, std::memory_order_acq_rel);
      if ((before & kSuspended) == 0) return;  // await_suspend() goes on by itself
      FakeIo* const io = io_;
      void* const frame = frame_;
      void (*const resume)(void*) noexcept = resume_;
      io->posted_.fetch_add(1);
      resume(frame);  // the coroutine may run, and end this awaiter, from here on
    }

    FakeIo* io_;
    void* frame_ = nullptr;
    void (*resume_)(void*) noexcept = nullptr;
    std::atomic<unsigned> state_{0};
    bool cancelled_ = false;
    int value_ = 0;
    std::optional<CancellationCallback<Cancel>> callback_;
  };

  Awaiter read() noexcept { return Awaiter(*this); }

  // Delivers `v` to the attached read, if any (false: none, or cancelled).
  bool complete(int v) {
    Awaiter* awaiter = nullptr;
    {
      std::lock_guard lock(mutex_);
      awaiter = std::exchange(attached_, nullptr);
    }
    if (awaiter == nullptr) return false;
    awaiter->value_ = v;
    awaiter->take();
    return true;
  }

  // Blocks until `n` reads have attached (the test thread's side).
  void wait_attached(int n) const {
    for (int seen = attaches_.load(); seen < n; seen = attaches_.load()) attaches_.wait(seen);
  }

  int posted() const { return posted_.load(); }
  int declined() const { return declined_.load(); }

 private:
  void attach(Awaiter* awaiter) {
    {
      std::lock_guard lock(mutex_);
      attached_ = awaiter;
    }
    attaches_.fetch_add(1);
    attaches_.notify_all();
  }
  bool detach(Awaiter* awaiter) {
    std::lock_guard lock(mutex_);
    if (attached_ != awaiter) return false;
    attached_ = nullptr;
    return true;
  }

  std::mutex mutex_;
  Awaiter* attached_ = nullptr;
  mutable std::atomic<int> attaches_{0};
  std::atomic<int> posted_{0};    // resumptions through post_resume
  std::atomic<int> declined_{0};  // await_suspend() returned false
};

static_assert(stoppable_awaitable<FakeIo::Awaiter, CancellationToken, TaskPromiseBase>);

Task<int> read_once(FakeIo& io) { co_return co_await io.read(); }

// R4(d): an awaiter that takes a std::stop_token. It does not suspend: it
// reports what the token said before and after it cancelled `source`.
struct StopTokenProbe {
  CancellationSource* source;
  struct Seen {
    bool possible = false;
    bool before = false;
    bool after = false;
  } seen;

  bool await_ready() const noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P>, std::stop_token st) {
    seen.possible = st.stop_possible();
    seen.before = st.stop_requested();
    source->request_cancel();
    seen.after = st.stop_requested();
    return false;
  }
  Seen await_resume() const noexcept { return seen; }
};

static_assert(stoppable_awaitable<StopTokenProbe, std::stop_token, TaskPromiseBase>);
static_assert(!stoppable_awaitable<StopTokenProbe, CancellationToken, TaskPromiseBase>);

// R4(d): an awaiter that waits until its std::stop_token is stop-requested,
// then resumes the coroutine through post_resume (a std::stop_callback runs
// on the canceller's thread). One atomic word races the callback against
// the end of await_suspend.
class StopTokenWait {
 public:
  explicit StopTokenWait(std::atomic<bool>* armed) noexcept : armed_(armed) {}
  StopTokenWait(const StopTokenWait&) = delete;
  StopTokenWait& operator=(const StopTokenWait&) = delete;

  bool await_ready() const noexcept { return false; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h, std::stop_token st) {
    frame_ = h.address();
    resume_ = [](void* frame) noexcept {
      post_resume(std::coroutine_handle<P>::from_address(frame));
    };
    std::atomic<bool>* const armed = armed_;
    callback_.emplace(std::move(st), OnStop{this});
    const unsigned before = state_.fetch_or(kSuspended, std::memory_order_acq_rel);
    armed->store(true);
    armed->notify_all();
    return (before & kTaken) == 0;
  }
  bool await_resume() {
    callback_.reset();
    return (state_.load(std::memory_order_acquire) & kTaken) != 0;
  }

 private:
  static constexpr unsigned kTaken = 1;
  static constexpr unsigned kSuspended = 2;
  struct OnStop {
    StopTokenWait* self;
    void operator()() noexcept {
      void* const frame = self->frame_;
      void (*const resume)(void*) noexcept = self->resume_;
      if ((self->state_.fetch_or(kTaken, std::memory_order_acq_rel) & kSuspended) != 0) {
        resume(frame);
      }
    }
  };

  std::atomic<bool>* armed_;
  void* frame_ = nullptr;
  void (*resume_)(void*) noexcept = nullptr;
  std::atomic<unsigned> state_{0};
  std::optional<std::stop_callback<OnStop>> callback_;
};

// R4(e): a hand-written awaiter with a plain await_suspend(h).
struct PlainAwaiter {
  int* suspends;
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<>) const noexcept {
    ++*suspends;
    return false;  // continue at once
  }
  int await_resume() const noexcept { return 5; }
};

// R38: a foreign awaiter whose await_suspend throws.
struct ThrowingAwaiter {
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<>) const { throw std::runtime_error("await_suspend"); }
  void await_resume() const noexcept {}
};

// R38: a stoppable foreign awaiter whose await_suspend throws.
struct ThrowingStoppableAwaiter {
  bool await_ready() const noexcept { return false; }
  template <class P>
  void await_suspend(std::coroutine_handle<P>, const CancellationToken&) const {
    throw std::runtime_error("stoppable await_suspend");
  }
  void await_resume() const noexcept {}
};

struct Failure {
  int payload;
};

Task<int> throw_failure(int payload) {
  co_await yield();  // not synchronous: the throw happens after a suspension
  throw Failure{payload};
}

Task<int> relay(int payload) { co_return co_await throw_failure(payload); }

// ---------------------------------------------------------------------------
// R1 laziness

TEST(CoroTask, CallingATaskRunsNothingUntilSyncWaitAwaitsIt) {
  bool ran = false;
  Task<void> t = set_flag(&ran);
  EXPECT_TRUE(t.valid());
  EXPECT_FALSE(ran);
  sync_wait(std::move(t));
  EXPECT_TRUE(ran);
}

TEST(CoroTask, AChildCreatedInABodyRunsOnlyWhenAwaited) {
  bool ran = false;
  const bool ran_before_await = sync_wait([](bool* flag) -> Task<bool> {
    Task<void> child = set_flag(flag);
    const bool before = *flag;
    co_await std::move(child);
    co_return before;
  }(&ran));
  EXPECT_FALSE(ran_before_await);
  EXPECT_TRUE(ran);
}

TEST(CoroTask, CallingATaskRunsNothingUntilSubmitted) {
  ThreadPool pool(2);
  std::atomic<bool> ran{false};
  Task<int> t = [](std::atomic<bool>* flag) -> Task<int> {
    flag->store(true);
    co_return 3;
  }(&ran);
  EXPECT_FALSE(ran.load());
  Future<int> f = pool.submit(std::move(t));
  EXPECT_EQ(f.get(), 3);
  EXPECT_TRUE(ran.load());
}

TEST(CoroTask, DestroyingAnUnstartedTaskRunsParameterDestructorsNotTheBody) {
  std::atomic<int> destroyed{0};
  bool ran = false;
  {
    Task<int> t = run_with_probe(Probe(&destroyed), &ran);
    EXPECT_EQ(destroyed.load(), 0);  // the parameter lives in the frame
  }
  EXPECT_EQ(destroyed.load(), 1);
  EXPECT_FALSE(ran);
}

TEST(CoroTask, MoveAssigningOverAnUnstartedTaskDestroysTheOldFrame) {
  std::atomic<int> destroyed{0};
  bool ran = false;
  Task<int> t = run_with_probe(Probe(&destroyed), &ran);
  t = answer(9);
  EXPECT_EQ(destroyed.load(), 1);
  EXPECT_FALSE(ran);
  EXPECT_EQ(sync_wait(std::move(t)), 9);
}

// ---------------------------------------------------------------------------
// R2 rvalue-only await

static_assert(AwaitableInTask<Task<int>>);
static_assert(AwaitableInTask<Task<void>&&>);
static_assert(!AwaitableInTask<Task<int>&>, "co_await of an lvalue Task must not compile");
static_assert(!AwaitableInTask<const Task<int>&>);
static_assert(!AwaitableInTask<const Task<int>>);
static_assert(std::is_same_v<await_result_t<Task<int>>, int>);
static_assert(std::is_same_v<await_result_t<Task<int&>>, int&>);
static_assert(std::is_same_v<await_result_t<Task<>>, void>);
static_assert(!std::is_copy_constructible_v<Task<int>>);
static_assert(std::is_nothrow_move_constructible_v<Task<int>>);

TEST(CoroTask, AwaitingAnEmptyTaskThrowsNoState) {
  const std::error_code code = sync_wait([]() -> Task<std::error_code> {
    Task<int> empty;
    EXPECT_FALSE(empty.valid());
    try {
      co_await std::move(empty);
    } catch (const TaskError& e) {
      co_return e.code();
    }
    co_return std::error_code();
  }());
  EXPECT_EQ(code, make_error_code(Errc::no_state));
}

TEST(CoroTask, AwaitingAMovedFromTaskThrowsNoStateAndTheMovedToTaskStillRuns) {
  struct Out {
    std::error_code code;
    int value = 0;
  };
  const Out out = sync_wait([]() -> Task<Out> {
    Out o;
    Task<int> a = answer(11);
    Task<int> b = std::move(a);
    EXPECT_FALSE(a.valid());  // NOLINT(bugprone-use-after-move): the point
    try {
      co_await std::move(a);  // NOLINT(bugprone-use-after-move)
    } catch (const TaskError& e) {
      o.code = e.code();
    }
    o.value = co_await std::move(b);
    co_return o;
  }());
  EXPECT_EQ(out.code, make_error_code(Errc::no_state));
  EXPECT_EQ(out.value, 11);
}

TEST(CoroTask, AsResultOfAnEmptyTaskIsNoStateNotCancelled) {
  const Result<int> r = sync_wait([]() -> Task<Result<int>> {
    Task<int> empty;
    co_return co_await as_result(std::move(empty));
  }());
  EXPECT_FALSE(r.has_value());
  EXPECT_EQ(r.error(), make_error_code(Errc::no_state));
  EXPECT_FALSE(r.cancelled());
}

// ---------------------------------------------------------------------------
// R3 symmetric transfer on the same thread

Task<std::thread::id> thread_of_child() { co_return std::this_thread::get_id(); }

Task<std::thread::id> thread_of_grandchild() { co_return co_await thread_of_child(); }

TEST(CoroTask, AChildRunsOnTheSyncWaitCallersThread) {
  const std::thread::id child = sync_wait(thread_of_grandchild());
  EXPECT_EQ(child, std::this_thread::get_id());
}

TEST(CoroTask, AChildRunsOnItsAwaitersWorkerThread) {
  ThreadPool pool(2);
  struct Ids {
    std::thread::id before, child, after;
  };
  const Ids ids = pool
                      .submit([]() -> Task<Ids> {
                        Ids i;
                        i.before = std::this_thread::get_id();
                        i.child = co_await thread_of_grandchild();
                        i.after = std::this_thread::get_id();
                        co_return i;
                      })
                      .get();
  EXPECT_NE(ids.before, std::this_thread::get_id());
  EXPECT_EQ(ids.child, ids.before);
  EXPECT_EQ(ids.after, ids.before);
}

// ---------------------------------------------------------------------------
// R4 classification

TEST(CoroTask, ThisCoroTagsAnswerWithoutACheckpointEvenWhenCancelled) {
  CancellationSource source;
  struct Seen {
    bool cancelled = false;
    bool same_token = false;
    bool no_pool = false;
    std::thread::id before, after;
  };
  const Seen seen = sync_wait(
      [](CancellationSource* src) -> Task<Seen> {
        Seen s;
        src->request_cancel();
        s.before = std::this_thread::get_id();
        const CancellationToken& token = co_await this_coro::cancellation_token;  // no throw
        ThreadPool* const home = co_await this_coro::pool;                          // no throw
        s.no_pool = home == nullptr;
        s.after = std::this_thread::get_id();
        s.cancelled = token.cancelled();
        s.same_token = token == src->token();
        co_return s;
      }(&source),
      source.token());
  EXPECT_TRUE(seen.cancelled);
  EXPECT_TRUE(seen.same_token);
  EXPECT_TRUE(seen.no_pool);  // a sync_wait loop has no pool
  EXPECT_EQ(seen.before, seen.after);
}

TEST(CoroTask, ThisCoroPoolIsTheHomePoolOnAWorker) {
  ThreadPool pool(2);
  ThreadPool* seen =
      pool.submit([]() -> Task<ThreadPool*> { co_return co_await this_coro::pool; }).get();
  EXPECT_EQ(seen, &pool);
}

TEST(CoroTask, QuellAwaitablesSeeThePromiseSleepRunsOnTheSyncWaitLoop) {
  // sleep_for needs the home's timer: on sync_wait, the loop's own.
  const std::thread::id after = sync_wait([]() -> Task<std::thread::id> {
    co_await sleep_for(1ms);
    co_await yield();
    co_return std::this_thread::get_id();
  }());
  EXPECT_EQ(after, std::this_thread::get_id());
}

TEST(CoroTask, StoppableAwaitableCompletionDeliversTheValueThroughPostResume) {
  ThreadPool pool(2);
  FakeIo io;
  CancellationSource source;
  Future<int> f = pool.submit([&io]() -> Task<int> { co_return co_await read_once(io); },
                              TaskOptions().set_cancellation(source.token()));
  io.wait_attached(1);
  ASSERT_TRUE(io.complete(42));
  EXPECT_EQ(f.get(), 42);
  EXPECT_EQ(io.posted() + io.declined(), 1);
  source.request_cancel();  // too late: nothing changes
  EXPECT_EQ(f.status(), TaskStatus::completed);
}

TEST(CoroTask, StoppableAwaitableCancelledWhileSuspendedResumesOnAWorkerAndThrows) {
  ThreadPool pool(2);
  FakeIo io;
  CancellationSource source;
  struct Seen {
    bool threw = false;
    CancelReason reason = CancelReason::none;
    std::thread::id resumed_on;
  };
  Future<Seen> f = pool.submit(
      [&io]() -> Task<Seen> {
        Seen s;
        try {
          co_await read_once(io);
        } catch (const OperationCancelled&) {
          s.threw = true;
        }
        s.resumed_on = std::this_thread::get_id();
        const CancellationToken& token = co_await this_coro::cancellation_token;
        s.reason = token.reason();
        co_return s;
      },
      TaskOptions().set_cancellation(source.token()));
  io.wait_attached(1);
  source.request_cancel(CancelReason::failure);
  const Seen seen = f.get();
  EXPECT_TRUE(seen.threw);
  EXPECT_EQ(seen.reason, CancelReason::failure);
  // post_resume: never inline on the canceller's thread (this one).
  EXPECT_NE(seen.resumed_on, std::this_thread::get_id());
  EXPECT_FALSE(io.complete(1));  // the cancellation detached the read
  EXPECT_EQ(io.posted() + io.declined(), 1);
}

TEST(CoroTask, StoppableAwaitableWithATokenCancelledAtRegistrationDeclinesToSuspend) {
  FakeIo io;
  CancellationSource source;
  struct Seen {
    bool threw = false;
    std::thread::id before, after;
  };
  const Seen seen = sync_wait(
      [](FakeIo* fake, CancellationSource* src) -> Task<Seen> {
        Seen s;
        src->request_cancel();
        s.before = std::this_thread::get_id();
        try {
          co_await fake->read();  // not a checkpoint: the awaiter decides (R4c)
        } catch (const OperationCancelled&) {
          s.threw = true;
        }
        s.after = std::this_thread::get_id();
        co_return s;
      }(&io, &source),
      source.token());
  EXPECT_TRUE(seen.threw);
  EXPECT_EQ(io.declined(), 1);  // R16: await_suspend returned false
  EXPECT_EQ(io.posted(), 0);    // and nothing was posted
  EXPECT_EQ(seen.before, seen.after);
}

TEST(CoroTask, StoppableAwaitableCompletionRacingCancellationResumesExactlyOnce) {
  const int rounds = test::kSanitized ? 150 : 1500;
  ThreadPool pool(2);
  int values = 0;
  int cancels = 0;
  for (int round = 0; round < rounds; ++round) {
    FakeIo io;
    CancellationSource source;
    Future<int> f = pool.submit([&io]() -> Task<int> { co_return co_await read_once(io); },
                                TaskOptions().set_cancellation(source.token()));
    io.wait_attached(1);
    std::latch go(2);
    std::thread canceller([&] {
      go.arrive_and_wait();
      source.request_cancel();
    });
    go.arrive_and_wait();
    const bool delivered = io.complete(round);
    canceller.join();
    try {
      EXPECT_EQ(f.get(), round);
      EXPECT_TRUE(delivered);
      ++values;
    } catch (const OperationCancelled&) {
      EXPECT_FALSE(delivered);  // R18: a delivered value is never lost
      ++cancels;
    }
    ASSERT_EQ(io.posted() + io.declined(), 1) << "round " << round;
  }
  EXPECT_EQ(values + cancels, rounds);
}

TEST(CoroTask, StdStopTokenAwaiterSeesTheQuellTokensCancellation) {
  CancellationSource source;
  const StopTokenProbe::Seen seen = sync_wait(
      [](CancellationSource* src) -> Task<StopTokenProbe::Seen> {
        co_return co_await StopTokenProbe{src, {}};
      }(&source),
      source.token());
  EXPECT_TRUE(seen.possible);
  EXPECT_FALSE(seen.before);
  EXPECT_TRUE(seen.after);
}

TEST(CoroTask, StdStopTokenAwaiterSuspendedIsResumedByTheQuellCancellation) {
  ThreadPool pool(2);
  CancellationSource source;
  std::atomic<bool> armed{false};
  Future<bool> f = pool.submit(
      [&armed]() -> Task<bool> { co_return co_await StopTokenWait(&armed); },
      TaskOptions().set_cancellation(source.token()));
  armed.wait(false);
  source.request_cancel();
  EXPECT_TRUE(f.get());  // the std::stop_token became stop_requested
}

TEST(CoroTask, ForeignAwaitersAreUntouchedByACancelledToken) {
  CancellationSource source;
  int suspends = 0;
  const int v = sync_wait(
      [](CancellationSource* src, int* count) -> Task<int> {
        src->request_cancel();
        co_await std::suspend_never{};          // no checkpoint
        const int got = co_await PlainAwaiter{count};  // its own await_suspend(h)
        co_return got + 1;
      }(&source, &suspends),
      source.token());
  EXPECT_EQ(v, 6);
  EXPECT_EQ(suspends, 1);
}

TEST(CoroTask, QuellAwaitablesAreCheckpointsWhenTheTokenIsCancelled) {
  ThreadPool pool(2);
  CancellationSource source;
  struct Seen {
    int cancelled = 0;
  };
  Future<Seen> f = pool.submit(
      [&source, &pool]() -> Task<Seen> {
        Seen s;
        source.request_cancel();
        auto r1 = co_await as_result(yield());
        if (r1.cancelled()) ++s.cancelled;
        auto r2 = co_await as_result(sleep_for(0ms));
        if (r2.cancelled()) ++s.cancelled;
        auto r3 = co_await as_result(schedule(pool));
        if (r3.cancelled()) ++s.cancelled;
        auto r4 = co_await as_result(answer(1));
        if (r4.cancelled()) ++s.cancelled;
        co_return s;
      },
      TaskOptions().set_cancellation(source.token()));
  EXPECT_EQ(f.get().cancelled, 4);
}

// ---------------------------------------------------------------------------
// R5 token propagation

Task<bool> grandchild_sees(Gate* gate, std::latch* started, const CancellationToken* root) {
  const CancellationToken& mine = co_await this_coro::cancellation_token;
  EXPECT_EQ(&mine, root);  // the root's token object itself, by reference
  started->count_down();
  gate->wait();  // the test cancels the root's source meanwhile
  co_return mine.cancelled() && mine.reason() == CancelReason::requested;
}

Task<bool> child_passes(Gate* gate, std::latch* started, const CancellationToken* root) {
  co_return co_await grandchild_sees(gate, started, root);
}

TEST(CoroTask, AGrandchildSeesTheRootsSourceCancelled) {
  ThreadPool pool(2);
  Gate gate;
  OpenOnExit open(gate);
  std::latch started(1);
  CancellationSource source;
  Future<bool> f = pool.submit(
      [&gate, &started]() -> Task<bool> {
        // The root's token is its pool task's own (linked to the options').
        const CancellationToken& root = co_await this_coro::cancellation_token;
        co_return co_await child_passes(&gate, &started, &root);
      },
      TaskOptions().set_cancellation(source.token()));
  started.wait();
  source.request_cancel();
  gate.open();
  EXPECT_TRUE(f.get());
}

TEST(CoroTask, ThisTaskTokenInACoroutineOnAWorkerIsTheCoroutinesToken) {
  ThreadPool pool(2);
  CancellationSource root_source;
  CancellationSource replaced_source;
  struct Seen {
    bool root = false, child = false, replaced = false, back = false;
  };
  Future<Seen> f = pool.submit(
      [&]() -> Task<Seen> {
        Seen s;
        const CancellationToken& mine = co_await this_coro::cancellation_token;
        s.root = this_task::cancellation_token() == mine;
        s.child = co_await []() -> Task<bool> {
          const CancellationToken& t = co_await this_coro::cancellation_token;
          co_return this_task::cancellation_token() == t;
        }();
        s.replaced = co_await with_token(
            [](CancellationToken expected) -> Task<bool> {
              const CancellationToken& t = co_await this_coro::cancellation_token;
              co_return t == expected && this_task::cancellation_token() == expected;
            }(replaced_source.token()),
            replaced_source.token());
        s.back = this_task::cancellation_token() == mine;
        co_return s;
      },
      TaskOptions().set_cancellation(root_source.token()));
  const Seen seen = f.get();
  EXPECT_TRUE(seen.root);
  EXPECT_TRUE(seen.child);
  EXPECT_TRUE(seen.replaced);
  EXPECT_TRUE(seen.back);  // restored after the with_token child ended
}

TEST(CoroTask, UnderWithTokenThisCoroGivesTheReplacedToken) {
  CancellationSource outer;
  CancellationSource inner;
  const bool same = sync_wait(
      [](CancellationToken replaced) -> Task<bool> {
        co_return co_await with_token(
            [](CancellationToken expected) -> Task<bool> {
              const CancellationToken& t = co_await this_coro::cancellation_token;
              co_return t == expected;
            }(replaced),
            replaced);
      }(inner.token()),
      outer.token());
  EXPECT_TRUE(same);
}

// ---------------------------------------------------------------------------
// R6 checkpoints

TEST(CoroTask, AwaitingATaskWithACancelledTokenDestroysItsFrameUnstarted) {
  CancellationSource source;
  std::atomic<int> destroyed{0};
  bool ran = false;
  struct Seen {
    bool threw = false;
    int destroyed_after_await = -1;
  };
  const Seen seen = sync_wait(
      [](CancellationSource* src, std::atomic<int>* d, bool* flag) -> Task<Seen> {
        Seen s;
        src->request_cancel();
        try {
          co_await run_with_probe(Probe(d), flag);
        } catch (const OperationCancelled&) {
          s.threw = true;
        }
        s.destroyed_after_await = d->load();
        co_return s;
      }(&source, &destroyed, &ran),
      source.token());
  EXPECT_TRUE(seen.threw);
  EXPECT_FALSE(ran);
  EXPECT_EQ(seen.destroyed_after_await, 1);  // parameters died with the frame
}

TEST(CoroTask, AReadyFutureAwaitedWithACancelledTokenStaysRetrievable) {
  ThreadPool pool(2);
  Future<int> ready = pool.submit([] { return 5; });
  ready.wait();
  CancellationSource source;
  const bool threw = sync_wait(
      [](Future<int>* fut, CancellationSource* src) -> Task<bool> {
        src->request_cancel();
        try {
          co_await *fut;
        } catch (const OperationCancelled&) {
          co_return true;
        }
        co_return false;
      }(&ready, &source),
      source.token());
  EXPECT_TRUE(threw);
  EXPECT_EQ(ready.get(), 5);  // the checkpoint consumed nothing
}

// as_result(future) (R7, R30): the future's awaiter cannot move, so
// as_result builds it in place; a cancelled await consumes nothing.
TEST(CoroTask, AsResultOfAReadyFutureWithACancelledTokenIsCancelledAndLeavesItRetrievable) {
  ThreadPool pool(2);
  Future<int> ready = pool.submit([] { return 5; });
  ready.wait();
  CancellationSource source;
  const bool cancelled = sync_wait(
      [](Future<int>* f, CancellationSource* src) -> Task<bool> {
        src->request_cancel();
        auto r = co_await as_result(*f);
        co_return r.cancelled() && r.error() == make_error_code(Errc::cancelled);
      }(&ready, &source),
      source.token());
  EXPECT_TRUE(cancelled);
  EXPECT_EQ(ready.get(), 5);
}

// R20: a stoppable awaiter that breaks R15, resuming the coroutine inline
// from its cancellation callback on the canceller's thread.
class ResumesInline {
 public:
  bool await_ready() const noexcept { return false; }
  template <class P>
  void await_suspend(std::coroutine_handle<P> h, const CancellationToken& token) {
    handle_ = h;
    callback_.emplace(token, Resume{this});
    parked_.store(true);
  }
  void await_resume() noexcept {}
  static bool parked() { return parked_.load(); }

 private:
  struct Resume {
    ResumesInline* self;
    void operator()() noexcept { self->handle_.resume(); }
  };
  std::coroutine_handle<> handle_;
  std::optional<CancellationCallback<Resume>> callback_;
  static inline std::atomic<bool> parked_{false};
};

TEST(CoroTaskDeathTest, ResumingFromACancellationCallbackTerminatesWithAMessage) {
#ifdef NDEBUG
  GTEST_SKIP() << "the check is on with assertions only";
#endif
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        CancellationSource source;
        std::thread canceller([&source] {
          while (!ResumesInline::parked()) std::this_thread::yield();
          source.request_cancel();
        });
        canceller.detach();
        sync_wait([]() -> Task<void> { co_await ResumesInline(); }(), source.token());
      },
      "resumed inline from a cancellation callback");
}

TEST(CoroTask, YieldWithACancelledTokenFails) {
  ThreadPool pool(2);
  CancellationSource source;
  Future<bool> f = pool.submit(
      [&source]() -> Task<bool> {
        source.request_cancel();
        try {
          co_await yield();
        } catch (const OperationCancelled&) {
          co_return true;
        }
        co_return false;
      },
      TaskOptions().set_cancellation(source.token()));
  EXPECT_TRUE(f.get());
}

// ---------------------------------------------------------------------------
// R7 completes cancelled; Result

TEST(CoroTask, OperationCancelledCarriesTheCancelledCodeAndTheTokenTheReason) {
  CancellationSource source;
  struct Seen {
    std::error_code code;
    CancelReason reason = CancelReason::none;
  };
  const Seen seen = sync_wait(
      [](CancellationSource* src) -> Task<Seen> {
        Seen s;
        src->request_cancel(CancelReason::shutdown);
        try {
          co_await answer(1);
        } catch (const OperationCancelled& e) {
          s.code = code_of(e);
        }
        const CancellationToken& t = co_await this_coro::cancellation_token;
        s.reason = t.reason();
        co_return s;
      }(&source),
      source.token());
  EXPECT_EQ(seen.code, make_error_code(Errc::cancelled));
  EXPECT_EQ(seen.code, std::errc::operation_canceled);
  EXPECT_EQ(seen.reason, CancelReason::shutdown);
}

TEST(CoroTask, AsResultOfACancelledAwaitIsACancelledResultWithoutAnException) {
  CancellationSource source;
  Result<int> r = sync_wait(
      [](CancellationSource* src) -> Task<Result<int>> {
        src->request_cancel();
        co_return co_await as_result(answer(1));
      }(&source),
      source.token());
  EXPECT_FALSE(r.has_value());
  EXPECT_FALSE(static_cast<bool>(r));
  EXPECT_EQ(r.error(), make_error_code(Errc::cancelled));
  EXPECT_TRUE(r.cancelled());
  EXPECT_EQ(r.exception(), nullptr);
  EXPECT_THROW(r.value(), OperationCancelled);
}

TEST(CoroTask, AsResultCarriesAValueAFailureAndVoid) {
  struct Seen {
    Result<int> value{std::in_place, 0};
    Result<int> failure{std::in_place, 0};
    Result<void> done{std::in_place};
  };
  Seen seen = sync_wait([]() -> Task<Seen> {
    Seen s;
    s.value = co_await as_result(answer(7));
    s.failure = co_await as_result(throw_failure(3));
    bool ran = false;
    s.done = co_await as_result(set_flag(&ran));
    EXPECT_TRUE(ran);
    co_return s;
  }());
  ASSERT_TRUE(seen.value.has_value());
  EXPECT_EQ(seen.value.value(), 7);
  EXPECT_FALSE(seen.value.error());
  EXPECT_EQ(seen.value.exception(), nullptr);
  EXPECT_FALSE(seen.value.cancelled());
  EXPECT_EQ(std::move(seen.value).value(), 7);

  EXPECT_FALSE(seen.failure.has_value());
  EXPECT_FALSE(seen.failure.error());  // empty for a failure thrown by user code
  EXPECT_NE(seen.failure.exception(), nullptr);
  EXPECT_FALSE(seen.failure.cancelled());
  try {
    seen.failure.value();
    ADD_FAILURE() << "value() on a failure must rethrow it";
  } catch (const Failure& e) {
    EXPECT_EQ(e.payload, 3);
  }

  EXPECT_TRUE(seen.done.has_value());
  EXPECT_NO_THROW(seen.done.value());
  static_assert(std::is_void_v<decltype(seen.done.value())>);
}

TEST(CoroTask, ResultBuiltFromAnErrorThrowsWhatTheAwaitWould) {
  const Result<void> timed_out(make_error_code(Errc::timed_out));
  EXPECT_TRUE(timed_out.cancelled());
  try {
    Result<void>(make_error_code(Errc::timed_out)).value();
    ADD_FAILURE();
  } catch (const TaskError& e) {
    EXPECT_EQ(e.code(), make_error_code(Errc::timed_out));
  }
  Result<int> no_state(make_error_code(Errc::no_state));
  EXPECT_FALSE(no_state.cancelled());
  try {
    no_state.value();
    ADD_FAILURE();
  } catch (const TaskError& e) {
    EXPECT_EQ(e.code(), make_error_code(Errc::no_state));
  }
}

// ---------------------------------------------------------------------------
// R8 co_yield quell::cancelled

Task<int> give_up(std::atomic<int>* destroyed, bool* handler_ran, bool* after_ran) {
  Probe local(destroyed);
  try {
    co_yield quell::cancelled;
    *after_ran = true;
  } catch (...) {
    *handler_ran = true;
  }
  co_return 1;
}

TEST(CoroTask, CoYieldCancelledEndsTheTaskCancelledWithoutThrowing) {
  std::atomic<int> destroyed{0};
  bool handler_ran = false;
  bool after_ran = false;
  struct Seen {
    bool cancelled = false;
    std::error_code code;
    int destroyed_after = -1;
    bool threw = false;
  };
  const Seen seen = sync_wait(
      [](std::atomic<int>* d, bool* h, bool* a) -> Task<Seen> {
        Seen s;
        auto r = co_await as_result(give_up(d, h, a));
        s.cancelled = r.cancelled();
        s.code = r.error();
        s.destroyed_after = d->load();
        try {
          co_await give_up(d, h, a);
        } catch (const OperationCancelled&) {
          s.threw = true;
        }
        co_return s;
      }(&destroyed, &handler_ran, &after_ran));
  EXPECT_TRUE(seen.cancelled);
  EXPECT_EQ(seen.code, make_error_code(Errc::cancelled));
  EXPECT_EQ(seen.destroyed_after, 1);  // the local in scope was destroyed
  EXPECT_TRUE(seen.threw);
  EXPECT_EQ(destroyed.load(), 2);
  EXPECT_FALSE(handler_ran);
  EXPECT_FALSE(after_ran);
}

TEST(CoroTask, ARootEndingInCoYieldCancelledEndsCancelled) {
  ThreadPool pool(2);
  std::atomic<int> destroyed{0};
  bool handler_ran = false;
  bool after_ran = false;
  Future<int> f = pool.submit(give_up(&destroyed, &handler_ran, &after_ran));
  EXPECT_THROW(f.get(), OperationCancelled);
  EXPECT_EQ(f.status(), TaskStatus::cancelled);
  EXPECT_EQ(destroyed.load(), 1);
  EXPECT_FALSE(handler_ran);
}

Task<void> work_that_gets_cancelled(CancellationSource* source) {
  source->request_cancel();
  co_await yield();  // a checkpoint: fails now
}

Task<void> bye(bool* said) {
  co_await yield();       // would fail without the shield
  co_await sleep_for(0ms);
  *said = true;
}

Task<void> cleanup_idiom(CancellationSource* source, bool* said, bool* after) {
  auto r = co_await as_result(work_that_gets_cancelled(source));
  if (r.cancelled()) {
    co_await shielded(bye(said));
    co_yield quell::cancelled;
  }
  *after = true;
}

TEST(CoroTask, TheCleanupIdiomRunsShieldedCleanupThenEndsCancelled) {
  CancellationSource source;
  bool said = false;
  bool after = false;
  EXPECT_THROW(sync_wait(cleanup_idiom(&source, &said, &after), source.token()),
               OperationCancelled);
  EXPECT_TRUE(said);
  EXPECT_FALSE(after);
}

TEST(CoroTask, TheCleanupIdiomOnAPoolEndsTheRootCancelled) {
  ThreadPool pool(2);
  CancellationSource source;
  bool said = false;
  bool after = false;
  Future<void> f = pool.submit(cleanup_idiom(&source, &said, &after),
                               TaskOptions().set_cancellation(source.token()));
  EXPECT_THROW(f.get(), OperationCancelled);
  EXPECT_EQ(f.status(), TaskStatus::cancelled);
  EXPECT_TRUE(said);
  EXPECT_FALSE(after);
}

// ---------------------------------------------------------------------------
// R26 with_token / shielded

Task<int> several_awaits() {
  co_await yield();
  co_await sleep_for(0ms);
  const int a = co_await answer(20);
  co_return a + 1;
}

TEST(CoroTask, WithTokenReplacesTheTokenSoTheParentsCancellationDoesNotReach) {
  CancellationSource parent;
  CancellationSource own;
  const int v = sync_wait(
      [](CancellationSource* p, CancellationToken t) -> Task<int> {
        p->request_cancel();
        co_return co_await with_token(several_awaits(), std::move(t));
      }(&parent, own.token()),
      parent.token());
  EXPECT_EQ(v, 21);
}

TEST(CoroTask, WithACancelledReplacementTokenTheChildNeverStarts) {
  CancellationSource own;
  own.request_cancel();
  bool ran = false;
  const bool threw = sync_wait([](CancellationToken t, bool* flag) -> Task<bool> {
    try {
      co_await with_token(set_flag(flag), std::move(t));
    } catch (const OperationCancelled&) {
      co_return true;
    }
    co_return false;
  }(own.token(), &ran));
  EXPECT_TRUE(threw);
  EXPECT_FALSE(ran);
}

TEST(CoroTask, ShieldedRunsToCompletionAfterCancellationOnAPool) {
  ThreadPool pool(2);
  CancellationSource source;
  Future<int> f = pool.submit(
      [&source]() -> Task<int> {
        source.request_cancel();
        co_return co_await shielded(several_awaits());
      },
      TaskOptions().set_cancellation(source.token()));
  EXPECT_EQ(f.get(), 21);
}

// ---------------------------------------------------------------------------
// R37 frame ownership

// Records, when moved out of the child's promise (in await_resume), whether
// the child's local and parameter were destroyed by then.
struct Witness {
  std::atomic<int>* local_dead;
  std::atomic<int>* param_dead;
  int local_at_move = -1;
  int param_at_move = -1;
  Witness(std::atomic<int>* l, std::atomic<int>* p) noexcept : local_dead(l), param_dead(p) {}
  Witness(Witness&& other) noexcept
      : local_dead(other.local_dead),
        param_dead(other.param_dead),
        local_at_move(other.local_dead->load()),
        param_at_move(other.param_dead->load()) {}
};

Task<Witness> witness_child(Probe param, std::atomic<int>* local_dead) {
  Probe local(local_dead);
  co_await yield();
  co_return Witness(local_dead, param.count);
}

TEST(CoroTask, AnAwaitedFramesParametersDieWhenTheCoAwaitExpressionEnds) {
  std::atomic<int> local_dead{0};
  std::atomic<int> param_dead{0};
  struct Seen {
    int local_at_move, param_at_move, param_after;
  };
  const Seen seen = sync_wait([](std::atomic<int>* l, std::atomic<int>* p) -> Task<Seen> {
    Witness w = co_await witness_child(Probe(p), l);
    co_return Seen{w.local_at_move, w.param_at_move, p->load()};
  }(&local_dead, &param_dead));
  EXPECT_EQ(seen.local_at_move, 1);  // locals died before final_suspend
  EXPECT_EQ(seen.param_at_move, 0);  // the parameter still lived in await_resume
  EXPECT_EQ(seen.param_after, 1);    // and died when the co_await ended
}

// ---------------------------------------------------------------------------
// R38 exceptions

TEST(CoroTask, AnExceptionPropagatesUnchangedThroughLevels) {
  const int payload = sync_wait([]() -> Task<int> {
    try {
      co_await relay(77);
    } catch (const Failure& e) {
      co_return e.payload;
    }
    co_return -1;
  }());
  EXPECT_EQ(payload, 77);
  try {
    sync_wait(relay(5));
    ADD_FAILURE();
  } catch (const Failure& e) {
    EXPECT_EQ(e.payload, 5);
  }
}

TEST(CoroTask, AnExceptionPropagatesUnchangedToTheFuture) {
  ThreadPool pool(2);
  Future<int> f = pool.submit(relay(8));
  try {
    f.get();
    ADD_FAILURE();
  } catch (const Failure& e) {
    EXPECT_EQ(e.payload, 8);
  }
  EXPECT_EQ(f.status(), TaskStatus::failed);
}

Task<int> throws_cancelled() {
  co_await yield();
  throw OperationCancelled();
}

TEST(CoroTask, OperationCancelledLeavingABodyEndsTheTaskCancelled) {
  const Result<int> r = sync_wait([]() -> Task<Result<int>> {
    co_return co_await as_result(throws_cancelled());
  }());
  EXPECT_TRUE(r.cancelled());
  EXPECT_EQ(r.error(), make_error_code(Errc::cancelled));
  EXPECT_EQ(r.exception(), nullptr);

  ThreadPool pool(2);
  Future<int> f = pool.submit(throws_cancelled());
  EXPECT_THROW(f.get(), OperationCancelled);
  EXPECT_EQ(f.status(), TaskStatus::cancelled);
}

TEST(CoroTask, AnExceptionFromAForeignAwaitSuspendSurfacesAtTheCoAwait) {
  ThreadPool pool(2);
  Future<int> f = pool.submit([]() -> Task<int> {
    int caught = 0;
    try {
      co_await ThrowingAwaiter{};
    } catch (const std::runtime_error&) {
      ++caught;
    }
    try {
      co_await ThrowingStoppableAwaiter{};
    } catch (const std::runtime_error&) {
      ++caught;
    }
    co_await yield();  // the coroutine goes on normally afterwards
    co_return caught;
  });
  EXPECT_EQ(f.get(), 2);
}

struct ThrowingMove {
  int v;
  explicit ThrowingMove(int x) : v(x) {}
  ThrowingMove(ThrowingMove&&) { throw std::length_error("move"); }
};

Task<ThrowingMove> make_throwing_move(int x) { co_return x; }  // constructed in place

TEST(CoroTask, AValueWhoseMoveThrowsSurfacesAtTheCoAwait) {
  struct Seen {
    bool threw = false;
    bool result_failure = false;
  };
  const Seen seen = sync_wait([]() -> Task<Seen> {
    Seen s;
    try {
      ThrowingMove m = co_await make_throwing_move(3);
      (void)m;
    } catch (const std::length_error&) {
      s.threw = true;
    }
    auto r = co_await as_result(make_throwing_move(4));
    s.result_failure = !r.has_value() && r.exception() != nullptr;
    co_return s;
  }());
  EXPECT_TRUE(seen.threw);
  EXPECT_TRUE(seen.result_failure);
}

// ---------------------------------------------------------------------------
// R39 constant stack. 10^7 synchronous children in a loop and a recursion
// 10^6 deep (API.md R39). Under ASan/TSan each await costs 10-50 times more
// and every frame carries redzones, so there the loop runs 10^6 times and the
// recursion 2*10^5 deep: still far past an 8 MB stack without the
// trampoline (hundreds of bytes of stack per nested resume under a
// sanitizer).

constexpr int kLoopCount = test::kSanitized ? 1'000'000 : 10'000'000;
constexpr int kRecursionDepth = test::kSanitized ? 200'000 : 1'000'000;

Task<int> one() { co_return 1; }

Task<long> loop_over_children(int n) {
  long sum = 0;
  for (int i = 0; i < n; ++i) sum += co_await one();
  co_return sum;
}

Task<int> recurse(int depth) {
  if (depth == 0) co_return 0;
  const int below = co_await recurse(depth - 1);
  co_return below + 1;
}

TEST(CoroTask, ALoopOverSynchronousChildrenRunsInConstantStackOnSyncWait) {
  EXPECT_EQ(sync_wait(loop_over_children(kLoopCount)), kLoopCount);
}

TEST(CoroTask, ALoopOverSynchronousChildrenRunsInConstantStackOnAPool) {
  ThreadPool pool(2);
  EXPECT_EQ(pool.submit(loop_over_children(kLoopCount)).get(), kLoopCount);
}

TEST(CoroTask, ADeepRecursionRunsInConstantStackOnSyncWait) {
  EXPECT_EQ(sync_wait(recurse(kRecursionDepth)), kRecursionDepth);
}

TEST(CoroTask, ADeepRecursionRunsInConstantStackOnAPool) {
  ThreadPool pool(2);
  EXPECT_EQ(pool.submit(recurse(kRecursionDepth)).get(), kRecursionDepth);
  EXPECT_EQ(sync_wait(pool, recurse(kRecursionDepth)), kRecursionDepth);
}

// ---------------------------------------------------------------------------
// Values: Task<T&>, move-only T, Task<void>; co_invoke

Task<int&> ref_to(int* x) { co_return *x; }

TEST(CoroTask, ATaskOfAReferenceGivesTheSameObject) {
  int x = 1;
  int& r = sync_wait(ref_to(&x));
  EXPECT_EQ(&r, &x);
  const bool same = sync_wait([](int* p) -> Task<bool> {
    int& a = co_await ref_to(p);
    a = 5;
    auto res = co_await as_result(ref_to(p));
    co_return &res.value() == p;
  }(&x));
  EXPECT_TRUE(same);
  EXPECT_EQ(x, 5);
}

Task<std::unique_ptr<int>> make_unique_int(int v) { co_return std::make_unique<int>(v); }

Task<std::unique_ptr<int>> pass_unique(int v) {
  std::unique_ptr<int> p = co_await make_unique_int(v);
  *p += 1;
  co_return p;
}

TEST(CoroTask, AMoveOnlyValueTravelsThroughLevelsAndTheFuture) {
  std::unique_ptr<int> a = sync_wait(pass_unique(1));
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(*a, 2);
  ThreadPool pool(2);
  std::unique_ptr<int> b = pool.submit(pass_unique(10)).get();
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(*b, 11);
}

TEST(CoroTask, ATaskOfVoidRunsToItsEnd) {
  bool ran = false;
  sync_wait(set_flag(&ran));
  EXPECT_TRUE(ran);
  static_assert(std::is_void_v<decltype(sync_wait(set_flag(&ran)))>);
  ThreadPool pool(2);
  bool ran_on_pool = false;
  pool.submit(set_flag(&ran_on_pool)).get();
  EXPECT_TRUE(ran_on_pool);
}

TEST(CoroTask, CoInvokeKeepsTheLambdaCapturesAliveInTheFrame) {
  std::atomic<int> destroyed{0};
  struct Seen {
    std::string text;
    int alive_while_running = -1;
  };
  Task<Seen> t = co_invoke(
      [probe = Probe(&destroyed), text = std::string("captured, long enough to allocate")](
          int suffix) -> Task<Seen> {
        co_await yield();
        co_return Seen{text + std::to_string(suffix), probe.count->load()};
      },
      7);
  // The lambda temporary is gone; its captures moved into co_invoke's frame.
  EXPECT_EQ(destroyed.load(), 0);
  const Seen seen = sync_wait(std::move(t));
  EXPECT_EQ(seen.text, "captured, long enough to allocate7");
  EXPECT_EQ(seen.alive_while_running, 0);
  EXPECT_EQ(destroyed.load(), 1);
}

TEST(CoroTask, CoInvokeOnAPool) {
  ThreadPool pool(2);
  auto shared = std::make_shared<int>(40);
  Future<int> f = pool.submit(co_invoke(
      [shared](int add) -> Task<int> {
        co_await yield();
        co_return *shared + add;
      },
      2));
  EXPECT_EQ(f.get(), 42);
}

// ---------------------------------------------------------------------------
// R35 sync_wait

TEST(CoroTask, SyncWaitRunsOnThisThreadWithTheGivenToken) {
  CancellationSource source;
  struct Seen {
    std::thread::id id;
    bool same_token = false;
  };
  const Seen seen = sync_wait(
      [](CancellationToken expected) -> Task<Seen> {
        Seen s;
        co_await sleep_for(1ms);
        s.id = std::this_thread::get_id();
        const CancellationToken& t = co_await this_coro::cancellation_token;
        s.same_token = t == expected;
        co_return s;
      }(source.token()),
      source.token());
  EXPECT_EQ(seen.id, std::this_thread::get_id());
  EXPECT_TRUE(seen.same_token);
}

TEST(CoroTask, SyncWaitWithACancelledTokenNeverStartsTheAwaitable) {
  CancellationSource source;
  source.request_cancel();
  std::atomic<int> destroyed{0};
  bool ran = false;
  EXPECT_THROW(sync_wait(run_with_probe(Probe(&destroyed), &ran), source.token()),
               OperationCancelled);
  EXPECT_FALSE(ran);
  EXPECT_EQ(destroyed.load(), 1);
}

TEST(CoroTask, SyncWaitNestedThrowsLogicError) {
  const bool threw = sync_wait([]() -> Task<bool> {
    try {
      sync_wait(answer(1));
    } catch (const std::logic_error&) {
      co_return true;
    }
    co_return false;
  }());
  EXPECT_TRUE(threw);
  EXPECT_EQ(sync_wait(answer(2)), 2);  // the outer loop ended cleanly
}

TEST(CoroTask, SyncWaitOnAWorkerThrowsLogicError) {
  ThreadPool pool(2);
  Future<int> from_callable = pool.submit([] { return sync_wait(answer(1)); });
  EXPECT_THROW(from_callable.get(), std::logic_error);
  Future<bool> from_task = pool.submit([]() -> Task<bool> {
    try {
      sync_wait(answer(1));
    } catch (const std::logic_error&) {
      co_return true;
    }
    co_return false;
  });
  EXPECT_TRUE(from_task.get());
}

TEST(CoroTask, SyncWaitOnAPoolRunsThereWithTheOptions) {
  ThreadPool pool(2);
  struct Seen {
    std::thread::id id;
    ThreadPool* home = nullptr;
  };
  const Seen seen = sync_wait(pool, []() -> Task<Seen> {
    Seen s;
    s.id = std::this_thread::get_id();
    s.home = co_await this_coro::pool;
    co_return s;
  }());
  EXPECT_NE(seen.id, std::this_thread::get_id());
  EXPECT_EQ(seen.home, &pool);

  // A non-Task awaitable is wrapped in a task of its own.
  EXPECT_NO_THROW(sync_wait(pool, sleep_for(1ms)));

  CancellationSource source;
  source.request_cancel();
  bool ran = false;
  EXPECT_THROW(sync_wait(pool, set_flag(&ran), TaskOptions().set_cancellation(source.token())),
               OperationCancelled);
  EXPECT_FALSE(ran);
}

// ---------------------------------------------------------------------------
// R41/R42 happens-before (plain ints; TSan flags a missing edge)

Task<void> write_elsewhere(ThreadPool* other, int* data, int value) {
  co_await schedule(*other);
  *data = value;  // on a worker of `other`
  co_return;
}

TEST(CoroTask, CoReturnHappensBeforeTheCodeAfterTheCoAwait) {
  constexpr int rounds = test::kSanitized ? 100 : 1000;
  ThreadPool home(2);
  ThreadPool other(2);
  Future<long> f = home.submit([&other]() -> Task<long> {
    long sum = 0;
    for (int i = 0; i < rounds; ++i) {
      int data = 0;  // plain: no atomic orders it but the co_await
      co_await write_elsewhere(&other, &data, i + 1);
      sum += data;
    }
    co_return sum;
  });
  EXPECT_EQ(f.get(), static_cast<long>(rounds) * (rounds + 1) / 2);
}

TEST(CoroTask, RequestCancelHappensBeforeTheOperationCancelledItCauses) {
  const int rounds = test::kSanitized ? 50 : 300;
  ThreadPool pool(2);
  for (int round = 0; round < rounds; ++round) {
    CancellationSource source;
    int note = 0;  // plain
    std::atomic<bool> parked{false};
    Future<int> f = pool.submit(
        [&note, &parked]() -> Task<int> {
          parked.store(true);
          parked.notify_all();
          try {
            co_await sleep_for(1h);  // ends only by cancellation
          } catch (const OperationCancelled&) {
            co_return note;
          }
          co_return -1;
        },
        TaskOptions().set_cancellation(source.token()));
    parked.wait(false);
    note = round + 1;
    source.request_cancel();
    ASSERT_EQ(f.get(), round + 1) << "round " << round;
  }
}

TEST(CoroTask, RequestCancelHappensBeforeTheResultItCauses) {
  ThreadPool pool(2);
  FakeIo io;
  CancellationSource source;
  int note = 0;  // plain
  Future<int> f = pool.submit(
      [&io, &note]() -> Task<int> {
        auto r = co_await as_result(
            [](FakeIo* fake) -> Task<int> { co_return co_await fake->read(); }(&io));
        co_return r.cancelled() ? note : -1;
      },
      TaskOptions().set_cancellation(source.token()));
  io.wait_attached(1);
  note = 17;
  source.request_cancel();
  EXPECT_EQ(f.get(), 17);
}

}  // namespace
}  // namespace quell
