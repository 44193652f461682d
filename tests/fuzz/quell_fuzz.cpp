// A libFuzzer target: the input is a small program of operations on quell
// objects, run by one to three threads at once, and every outcome is checked
// against what API.md §1-§9 allow under any interleaving. A violated check
// prints the line and aborts, which libFuzzer reports as a crash.
//
// Input
//   byte 0   the pool: bit 0 two workers (else one); bit 1 ShutdownPolicy::cancel;
//            bits 2-3 streams, (value % 3) + 1; bit 4 max_queue_size = 4
//   byte 1   the end: bit 0 wait_idle() before the final shutdown()
//   then     operations of 4 bytes [code][a][b][c]: code % kOpCount is the
//            operation (enum Op), code >> 5 picks the stream (modulo their
//            number); a, b, c are its arguments. At most kMaxOps are read.
//   Task arguments: b is the body (bits 0-2 Act, bits 3-4 sleep, bits 5-7 the
//   timing magnitude), c the options (bits 0-1 token kind, bits 2-3 its slot,
//   bits 4-5 priority, bits 6-7 none / timeout / deadline / none).
//   tests/fuzz/make_corpus.py writes the seed corpus in this format.
//
// Each stream owns its slots (sources, tokens, callbacks, futures, handles,
// child scopes, a group); the pool, a root Scope, a TaskGroup and three
// cancellation states are shared by all streams. Every task's callable
// carries a Probe that counts the destruction of the live instance, and
// every task has a Rec: what was known when it was submitted (the model) and
// what its body did. The checks are the ones that hold whatever the timing:
// which outcomes a task may end with given its origins, that a body runs at
// most once and never after it was dropped, that the callable is destroyed
// once and before the future is ready, that callbacks run once, never after
// their destructor returned and with the state's reason, that a request
// reaches linked states and queued tasks before it returns, and that the
// pool's statistics add up once it is shut down.
//
// Nothing here sleeps to order events: the only sleeps are task bodies
// (quell::sleep_for on their token, from a small budget per input) and
// delays and deadlines of a few milliseconds given to the pool.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <exception>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "quell/quell.hpp"

namespace {

using namespace std::chrono_literals;
using quell::CancellationCallback;
using quell::CancellationSource;
using quell::CancellationToken;
using quell::CancelReason;
using quell::Future;
using quell::OperationCancelled;
using quell::Scope;
using quell::TaskError;
using quell::TaskGroup;
using quell::TaskHandle;
using quell::TaskOptions;
using quell::TaskStatus;
using quell::ThreadPool;
using Clock = std::chrono::steady_clock;

[[noreturn]] void violated(const char* what, int line) {
  std::fprintf(stderr, "quell_fuzz.cpp:%d: check failed: %s\n", line, what);
  std::fflush(stderr);
  std::abort();
}
#define CHECK(cond)                          \
  do {                                       \
    if (!(cond)) violated(#cond, __LINE__);  \
  } while (0)

constexpr std::size_t kMaxOps = 96;
constexpr std::size_t kSources = 4;
constexpr std::size_t kTokens = 4;
constexpr std::size_t kCallbacks = 4;
constexpr std::size_t kSelfCallbacks = 2;
constexpr std::size_t kFutures = 4;
constexpr std::size_t kHandles = 2;
constexpr std::size_t kChildScopes = 2;
constexpr std::size_t kShared = 3;
constexpr std::size_t kMaxLineage = 24;
constexpr int kSleepBudgetUs = 4000;  // per input, over every sleeping body
constexpr int kBurst = 300;           // posts from one task, once per input

// Timeouts and deadlines (relative to now); the last is "never".
constexpr std::chrono::microseconds kTimings[8] = {-1000us, 0us,    50us,   200us,
                                                    1000us,  2000us, 5000us, 0us};
constexpr std::chrono::microseconds kSleeps[4] = {0us, 50us, 200us, 1000us};
constexpr std::chrono::microseconds kDelays[8] = {0us, 50us, 200us, 1000us,
                                                   2000us, -1000us, 0us, 100us};

enum class Act : std::uint8_t { value, fail, cancel, poll, sleep, fork, sibling, watch };

enum class Kind : std::uint8_t { submit, handle, post, delayed, group, spawn };

// What a body did, written by the body before it returns or throws.
enum class Outcome : std::uint8_t { none, returned, failed, cancelled };

struct BodyError {
  int id;
};

// One task: the model's view at submission, and what happened.
struct Rec {
  int id = 0;
  Kind kind = Kind::submit;
  int owner = 0;  // the group's or scope's uid, 0 for a pool task
  // The task's origins, copied at submission.
  CancellationToken opt_token;
  CancellationToken set_token;     // group or scope
  CancellationToken handle_token;  // the task's own state, for a handle
  bool has_deadline = false;
  bool deadline_past = false;  // certainly passed before submission
  bool delayed = false;        // due after submission
  bool pre_cancelled = false;  // an origin was cancelled before submission
  bool pre_exact = false;      // ... and no other origin can have come first
  CancelReason pre_reason = CancelReason::none;
  bool must_reject = false;     // submitted after shutdown() returned
  bool maybe_rejected = false;  // bounded queue, or shutdown() began by submit's return
  bool reached = true;          // the pool saw it (a spawn may stop before)
  bool accepted = true;         // post()'s and spawn()'s answer
  std::atomic<bool> handle_cancelled{false};  // cancel() was called on its handle
  // Counted by the probes and the body, at any time.
  std::atomic<int> runs{0};
  std::atomic<int> destroyed{0};
  std::atomic<int> observed{-1};  // the terminal status a wait saw
  // Written by the body; read only after something that orders the body
  // before the reader (a ready future, wait_idle(), a scope's wait()...),
  // so ThreadSanitizer checks those orderings.
  Outcome outcome = Outcome::none;
  CancelReason seen = CancelReason::none;
  CancellationToken body_token;
};

// Counts the destruction of the live instance of a task's callable: a
// moved-from probe counts nothing.
class Probe {
 public:
  explicit Probe(Rec* rec) noexcept : rec_(rec) {}
  Probe(Probe&& other) noexcept : rec_(std::exchange(other.rec_, nullptr)) {}
  Probe(const Probe&) = delete;
  Probe& operator=(const Probe&) = delete;
  Probe& operator=(Probe&&) = delete;
  ~Probe() {
    if (rec_ != nullptr) CHECK(rec_->destroyed.fetch_add(1, std::memory_order_relaxed) == 0);
  }
  Rec* rec() const noexcept { return rec_; }

 private:
  Rec* rec_;
};

struct Registry {
  Rec& make(Kind kind) {
    std::lock_guard lock(mutex);
    Rec& rec = recs.emplace_back();
    rec.id = static_cast<int>(recs.size());
    rec.kind = kind;
    return rec;
  }
  Rec& find(int id) {
    std::lock_guard lock(mutex);
    CHECK(id >= 1 && static_cast<std::size_t>(id) <= recs.size());
    return recs[static_cast<std::size_t>(id) - 1];
  }
  std::mutex mutex;
  std::deque<Rec> recs;  // stable addresses
};

struct Config {
  std::size_t workers = 1;
  bool cancel_policy = false;
  std::size_t streams = 1;
  bool bounded = false;
  bool idle_before_shutdown = false;
};

// A scope and what the model knows of it.
struct ScopeRef {
  Scope* scope = nullptr;
  int uid = 0;
  // A close() of the scope: `closing` is set before it is called, `closed`
  // after it returned.
  struct Close {
    std::atomic<bool> closing{false};
    std::atomic<bool> closed{false};
    void reset() {
      closing.store(false);
      closed.store(false);
    }
  };
  Close* close = nullptr;
};

// Everything one input shares between its streams.
struct Ctx {
  explicit Ctx(const Config& c) : config(c) {
    quell::ThreadPoolConfig pc;
    pc.thread_count = c.workers;
    pc.max_queue_size = c.bounded ? 4 : 0;
    pc.shutdown_policy = c.cancel_policy ? quell::ShutdownPolicy::cancel : quell::ShutdownPolicy::drain;
    pc.thread_name = "qfuzz";
    pool.emplace(pc);
    root.emplace(*pool);
    root_uid = next_uid++;
    group.emplace(*pool);
    group_uid = next_uid++;
  }

  ScopeRef root_ref() { return ScopeRef{&*root, root_uid, &root_close}; }

  bool shutdown_may_cancel(const Rec& rec) const {
    return shutdown_started.load() && (config.cancel_policy || rec.delayed);
  }

  void shutdown() {
    shutdown_started.store(true);
    pool->shutdown();
    shutdown_done.store(true);
  }

  const Config config;
  Registry recs;  // outlives the pool: bodies and probes point into it
  std::atomic<int> next_uid{1};
  std::atomic<int> sleep_budget_us{kSleepBudgetUs};
  std::atomic<bool> burst_done{false};
  std::atomic<bool> shutdown_started{false};  // set before shutdown() is called
  std::atomic<bool> shutdown_done{false};     // set after it returned
  CancellationSource shared[kShared];
  std::optional<ThreadPool> pool;
  std::optional<Scope> root;
  int root_uid = 0;
  ScopeRef::Close root_close;
  std::atomic<int> root_failure{0};  // the failure root.wait() rethrew, by rec id
  std::optional<TaskGroup> group;
  int group_uid = 0;
  std::atomic<int> group_failure{0};
};

CancelReason reason_of(std::uint8_t byte) { return static_cast<CancelReason>(byte % 5); }

CancelReason effective(CancelReason why) {
  return why == CancelReason::none ? CancelReason::requested : why;
}

// --- The model's judgement of a terminal task ------------------------------

// Could an origin other than a deadline have cancelled the task?
bool cancellable_by_request(const Ctx& ctx, const Rec& rec) {
  const auto requested = [](const CancellationToken& t) {
    return t.cancelled() && t.reason() != CancelReason::deadline;
  };
  return requested(rec.opt_token) || requested(rec.set_token) ||
         rec.handle_cancelled.load() || requested(rec.handle_token) ||
         ctx.shutdown_may_cancel(rec);
}

bool may_time_out(const Rec& rec) {
  return rec.has_deadline || rec.opt_token.reason() == CancelReason::deadline ||
         rec.handle_token.reason() == CancelReason::deadline;
}

// A task seen terminal with `status`: is that an outcome its origins and
// its body allow? Also called for tasks never seen through a future (post,
// spawn, a dropped future) once the pool is shut down, with `status` queued
// for "unknown".
void judge(const Ctx& ctx, Rec& rec, TaskStatus status) {
  const int runs = rec.runs.load();
  CHECK(runs <= 1);
  // The callable is destroyed once, before the task is terminal (T2).
  CHECK(rec.destroyed.load() == 1);
  if (!rec.reached) {
    CHECK(runs == 0);
    return;
  }
  const bool known = status != TaskStatus::queued;
  if (known) {
    CHECK(quell::is_terminal(status));
    const int before = rec.observed.exchange(static_cast<int>(status));
    CHECK(before == -1 || before == static_cast<int>(status));  // terminal for good
  }
  if (rec.must_reject) {
    // Submitted after shutdown() returned.
    CHECK(runs == 0);
    CHECK(!known || status == TaskStatus::rejected);
    return;
  }
  if (runs == 1) {
    // A task whose token or deadline ended it before submission never starts.
    CHECK(!rec.pre_cancelled);
    CHECK(!rec.deadline_past);
    CHECK(rec.accepted);
    CHECK(rec.outcome != Outcome::none);  // terminal while the body still ran
    switch (rec.outcome) {
      case Outcome::returned: CHECK(!known || status == TaskStatus::completed); break;
      case Outcome::failed: CHECK(!known || status == TaskStatus::failed); break;
      case Outcome::cancelled:
        CHECK(!known || status == TaskStatus::cancelled || status == TaskStatus::timed_out);
        // It ends timed_out exactly when its token's reason is deadline.
        if (rec.seen == CancelReason::deadline) CHECK(status != TaskStatus::cancelled);
        if (status == TaskStatus::timed_out) {
          CHECK(rec.body_token.reason() == CancelReason::deadline);
        }
        break;
      case Outcome::none: break;
    }
    return;
  }
  // Never ran: dropped (cancelled, timed_out) or rejected.
  CHECK(status != TaskStatus::completed && status != TaskStatus::failed);
  if (status == TaskStatus::rejected || !rec.accepted) {
    CHECK(rec.maybe_rejected);
    return;
  }
  if (!known) {
    // Something dropped it: nothing accepted is lost.
    CHECK(rec.pre_cancelled || rec.maybe_rejected || may_time_out(rec) ||
          cancellable_by_request(ctx, rec));
    return;
  }
  if (rec.pre_exact) {
    CHECK(status == (rec.pre_reason == CancelReason::deadline ? TaskStatus::timed_out
                                                              : TaskStatus::cancelled));
    return;
  }
  const bool pre_deadline = rec.pre_cancelled && rec.pre_reason == CancelReason::deadline;
  if (status == TaskStatus::timed_out) {
    CHECK(may_time_out(rec) || pre_deadline);
  } else {
    CHECK(cancellable_by_request(ctx, rec) || (rec.pre_cancelled && !pre_deadline));
  }
}

// get() on a future: its answer matches status() and the model.
template <class Fut>
void judge_get(const Ctx& ctx, Rec& rec, Fut& fut) {
  TaskStatus got = TaskStatus::queued;
  try {
    const int value = fut.get();
    CHECK(value == rec.id);
    got = TaskStatus::completed;
  } catch (const BodyError& e) {
    CHECK(e.id == rec.id);
    got = TaskStatus::failed;
  } catch (const OperationCancelled&) {
    got = TaskStatus::cancelled;
  } catch (const TaskError& e) {
    if (e.code() == quell::Errc::timed_out) {
      got = TaskStatus::timed_out;
    } else {
      CHECK(e.code() == quell::Errc::rejected);
      got = TaskStatus::rejected;
    }
  }
  CHECK(fut.status() == got);
  judge(ctx, rec, got);
  // Once only; the status stays.
  bool again = false;
  try {
    static_cast<void>(fut.get());
  } catch (const TaskError& e) {
    again = e.code() == quell::Errc::already_retrieved;
  }
  CHECK(again);
  CHECK(fut.status() == got);
}

// A ready future's status(), result() and error() agree.
template <class Fut>
TaskStatus ready_status(Fut& fut) {
  const TaskStatus status = fut.status();
  CHECK(quell::is_terminal(status));
  const quell::TaskResult result = fut.result();
  switch (status) {
    case TaskStatus::completed: CHECK(result == quell::TaskResult::success); break;
    case TaskStatus::failed: CHECK(result == quell::TaskResult::failure); break;
    case TaskStatus::cancelled:
      CHECK(result == quell::TaskResult::cancelled);
      CHECK(fut.error() == quell::Errc::cancelled);
      break;
    case TaskStatus::timed_out:
      CHECK(result == quell::TaskResult::timeout);
      CHECK(fut.error() == quell::Errc::timed_out);
      break;
    case TaskStatus::rejected:
      CHECK(result == quell::TaskResult::rejected);
      CHECK(fut.error() == quell::Errc::rejected);
      break;
    default: CHECK(false);
  }
  return status;
}

// Before submission: which origin, if any, has already cancelled the task.
void note_pre_cancel(Rec& rec) {
  // The options' token is linked first: its reason wins.
  if (rec.opt_token.cancelled()) {
    rec.pre_cancelled = true;
    rec.pre_exact = true;
    rec.pre_reason = rec.opt_token.reason();
  } else if (rec.set_token.cancelled()) {
    rec.pre_cancelled = true;
    rec.pre_exact = !rec.opt_token.can_cancel();
    rec.pre_reason = rec.set_token.reason();
  }
  if (rec.pre_cancelled) rec.deadline_past = false;  // the token's reason wins
}

// --- Task bodies ----------------------------------------------------------

struct Body;
bool spawn_into(Ctx& ctx, const ScopeRef& target, Body body, const TaskOptions& options);

struct Body {
  Body(Ctx& c, Rec& rec, std::uint8_t s, ScopeRef where = {}, int d = 0)
      : probe(&rec), ctx(&c), spec(s), scope(where), depth(d) {}

  int operator()(CancellationToken token) {
    Rec* rec = probe.rec();
    CHECK(rec != nullptr);  // the live instance runs, not a moved-from one
    CHECK(rec->runs.fetch_add(1) == 0);
    CHECK(rec->destroyed.load() == 0);
    rec->body_token = token;
    CHECK(quell::this_task::cancellation_token() == token);
    if (token.cancelled()) CHECK(quell::this_task::cancelled());
    const auto act = static_cast<Act>(depth == 0 ? spec % 8 : spec % 4);
    switch (act) {
      case Act::value: break;
      case Act::fail: rec->outcome = Outcome::failed; throw BodyError{rec->id};
      case Act::cancel:
        rec->seen = token.reason();
        rec->outcome = Outcome::cancelled;
        throw OperationCancelled();
      case Act::poll: break;
      case Act::sleep: {
        const auto want = static_cast<int>(kSleeps[(spec >> 3) % 4].count());
        const int left = ctx->sleep_budget_us.fetch_sub(want);
        const int take = left >= want ? want : (left > 0 ? left : 0);
        const bool slept = quell::sleep_for(std::chrono::microseconds(take), token);
        if (!slept) CHECK(token.cancelled());
        break;
      }
      case Act::fork: fork(); break;
      case Act::sibling: sibling(); break;
      case Act::watch: watch(token); break;
    }
    if (act == Act::poll || act == Act::sleep) {
      if (token.cancelled()) {
        rec->seen = token.reason();
        CHECK(rec->seen != CancelReason::none);
        rec->outcome = Outcome::cancelled;
        throw OperationCancelled();
      }
    }
    rec->outcome = Outcome::returned;
    return rec->id;
  }

  // Fork-join from inside the pool, waited for here, on a worker: a child
  // task; a Scope or a TaskGroup of two; or (once per input) a burst of
  // posts that outgrows the worker's deque. Bits 3-4 pick which, bits 5-7
  // the children's acts.
  void fork() {
    const auto child_spec = [this](int k) { return static_cast<std::uint8_t>(spec >> (5 + k)); };
    switch ((spec >> 3) % 4) {
      case 0: break;
      case 1: fork_scope(child_spec(0), child_spec(1)); return;
      case 2: fork_group(child_spec(0), child_spec(1)); return;
      default:
        if (!ctx->burst_done.exchange(true)) {
          burst();
          return;
        }
        break;
    }
    Rec& child = ctx->recs.make(Kind::submit);
    child.must_reject = ctx->shutdown_done.load();
    Future<int> future = ctx->pool->submit(Body(*ctx, child, child_spec(0), {}, depth + 1));
    child.maybe_rejected = ctx->config.bounded || ctx->shutdown_started.load();
    judge_get(*ctx, child, future);
  }

  void fork_scope(std::uint8_t first, std::uint8_t second) {
    ScopeRef::Close close;
    Scope local(*ctx->pool);
    const ScopeRef ref{&local, ctx->next_uid++, &close};
    Rec* children[2];
    int k = 0;
    for (const std::uint8_t s : {first, second}) {
      Rec& child = ctx->recs.make(Kind::spawn);
      child.owner = ref.uid;
      child.set_token = local.cancellation_token();
      note_pre_cancel(child);
      spawn_into(*ctx, ref, Body(*ctx, child, s, ref, depth + 1), TaskOptions());
      children[k++] = &child;
    }
    int failure = 0;
    try {
      local.wait();
    } catch (const BodyError& e) {
      failure = e.id;
    }
    CHECK(local.size() == 0);
    bool any_failed = false;
    for (Rec* child : children) {
      CHECK(child->destroyed.load() == 1);
      if (child->runs.load() == 1 && child->outcome == Outcome::failed) any_failed = true;
    }
    // Rethrows exactly a failure of its own tasks, which cancelled it.
    CHECK(any_failed == (failure != 0));
    if (failure != 0) {
      CHECK(failure == children[0]->id || failure == children[1]->id);
      CHECK(local.cancelled());
      CHECK(local.cancellation_token().reason() == CancelReason::failure);
    }
  }

  void fork_group(std::uint8_t first, std::uint8_t second) {
    TaskGroup local(*ctx->pool);
    const int uid = ctx->next_uid++;
    Rec* children[2];
    Future<int> futures[2];
    int k = 0;
    for (const std::uint8_t s : {first, second}) {
      Rec& child = ctx->recs.make(Kind::group);
      child.owner = uid;
      child.set_token = local.cancellation_token();
      child.must_reject = ctx->shutdown_done.load();
      futures[k] = local.submit(Body(*ctx, child, s, {}, depth + 1));
      child.maybe_rejected = ctx->config.bounded || ctx->shutdown_started.load();
      children[k++] = &child;
    }
    int failure = 0;
    try {
      local.wait_and_rethrow();
    } catch (const BodyError& e) {
      failure = e.id;
    }
    CHECK(local.pending() == 0 && local.size() == 2);
    CHECK(!local.cancelled());  // a failure does not cancel a group
    bool any_failed = false;
    for (int i = 0; i < 2; ++i) {
      CHECK(futures[i].ready());
      if (children[i]->runs.load() == 1 && children[i]->outcome == Outcome::failed) any_failed = true;
      judge_get(*ctx, *children[i], futures[i]);
    }
    CHECK(any_failed == (failure != 0));
  }

  // More posts from one worker than its deque holds at first.
  void burst() {
    for (int i = 0; i < kBurst; ++i) {
      Rec& child = ctx->recs.make(Kind::post);
      child.must_reject = ctx->shutdown_done.load();
      child.accepted = ctx->pool->post(Body(*ctx, child, 0, {}, depth + 1));
      child.maybe_rejected = ctx->config.bounded || ctx->shutdown_started.load();
      if (child.must_reject) CHECK(!child.accepted);
    }
  }

  // A scope's task spawns a sibling into its own scope; another task posts one.
  void sibling() {
    Rec& child = ctx->recs.make(scope.scope != nullptr ? Kind::spawn : Kind::post);
    if (scope.scope != nullptr) {
      child.owner = scope.uid;
      child.set_token = scope.scope->cancellation_token();
      spawn_into(*ctx, scope, Body(*ctx, child, spec >> 3, scope, depth + 1), TaskOptions());
      return;
    }
    child.must_reject = ctx->shutdown_done.load();
    child.accepted = ctx->pool->post(Body(*ctx, child, spec >> 3, {}, depth + 1));
    child.maybe_rejected = ctx->config.bounded || ctx->shutdown_started.load();
    if (child.must_reject) CHECK(!child.accepted);
  }

  // A callback on the running task's own token, registered and destroyed here.
  static void watch(const CancellationToken& token) {
    std::atomic<int> calls{0};
    const bool was = token.cancelled();
    {
      CancellationCallback callback(token, [&calls, token] {
        CHECK(token.reason() != CancelReason::none);
        calls.fetch_add(1);
      });
      if (was) CHECK(calls.load() == 1);
    }
    CHECK(calls.load() <= 1);
    if (calls.load() == 1) CHECK(token.cancelled());
  }

  Probe probe;
  Ctx* ctx;
  std::uint8_t spec;
  ScopeRef scope;  // the scope a task of a scope spawns siblings into
  int depth;
};

// Spawns into a scope and checks spawn()'s answer against the model.
bool spawn_into(Ctx& ctx, const ScopeRef& target, Body body, const TaskOptions& options) {
  Rec& rec = *body.probe.rec();
  const bool closed_before = target.close->closed.load();
  const bool cancelled_before = target.scope->cancelled();
  rec.must_reject = ctx.shutdown_done.load();
  const bool ok = target.scope->spawn(std::move(body), options);
  rec.maybe_rejected = ctx.config.bounded || ctx.shutdown_started.load();
  rec.accepted = ok;
  // The callable moved into a task exactly when the pool saw the spawn.
  rec.reached = body.probe.rec() == nullptr;
  if (closed_before || cancelled_before) CHECK(!rec.reached && !ok);
  if (!rec.reached) {
    CHECK(!ok);
    CHECK(target.close->closing.load() || target.scope->cancelled());
    rec.must_reject = false;
  } else if (!ok) {
    CHECK(rec.maybe_rejected);
  }
  return ok;
}

// --- Streams --------------------------------------------------------------

enum class Op : std::uint8_t {
  source_cancel,
  source_copy,
  source_move,
  source_reset,
  source_link,
  source_chain,
  token_take,
  token_change,
  observe,
  callback_register,
  callback_destroy,
  callback_self,
  submit,
  handle,
  post,
  submit_after,
  submit_at,
  handle_cancel,
  future_get,
  future_wait,
  future_drop,
  wait_idle,
  shutdown,
  scope_spawn,
  scope_cancel,
  scope_close,
  scope_wait,
  scope_child,
  group_make,
  group_submit,
  group_cancel,
  group_wait,
  count
};
constexpr unsigned kOpCount = static_cast<unsigned>(Op::count);

struct Instr {
  Op op;
  std::uint8_t a, b, c;
};

// A callback's record: kept until the input ends, so a late call is caught.
struct CbRec {
  std::atomic<int> calls{0};
  std::atomic<bool> running{false};
  std::atomic<bool> destroyed{false};  // set once its destructor returned
  std::atomic<int> seen{0};
  CancellationToken token;  // the token it was registered on
  bool never = false;       // registered on a token that could never be cancelled
};

void callback_body(CbRec* rec, const CancellationToken& token) {
  CHECK(!rec->destroyed.load());  // never after the destructor returned
  CHECK(!rec->running.exchange(true));
  CHECK(rec->calls.fetch_add(1) == 0);  // at most once
  const CancelReason why = token.reason();
  CHECK(why != CancelReason::none);  // the reason is set before callbacks run
  rec->seen.store(static_cast<int>(why));
  rec->running.store(false);
}

struct CbFn {
  CbRec* rec;
  CancellationToken token;
  void operator()() { callback_body(rec, token); }
};

// A callback that may destroy itself from inside its own call.
struct SelfFn;
struct SelfCell {
  std::atomic<CancellationCallback<SelfFn>*> callback{nullptr};
  CbRec* rec = nullptr;
};
struct SelfFn {
  SelfCell* cell;
  CancellationToken token;
  void operator()() {
    SelfCell* const c = cell;  // `this` goes with the delete below
    callback_body(c->rec, token);
    if (CancellationCallback<SelfFn>* self = c->callback.exchange(nullptr)) delete self;
  }
};

struct Lineage {
  CancellationToken self;
  CancellationToken parents[2];
  int count;
};

struct Stream {
  explicit Stream(Ctx& c) : ctx(c) {
    for (std::size_t k = 0; k < kShared; ++k) sources[k].emplace(ctx.shared[k]);
    sources[kShared].emplace();
    for (std::size_t k = 0; k < kShared; ++k) shared[k] = true;
  }

  void run() {
    for (const Instr& instr : ops) step(instr);
    teardown();
  }

  void step(const Instr& in);
  void teardown();

  // Slots.
  CancellationToken source_token(std::size_t i) const {
    return sources[i] ? sources[i]->token() : CancellationToken();
  }
  bool held_elsewhere(const CancellationToken& t, std::size_t except) const {
    for (std::size_t k = 0; k < kSources; ++k) {
      if (k != except && sources[k] && sources[k]->token() == t) return true;
    }
    return false;
  }
  // Slot i is about to lose its source: afterwards, a state nothing else can
  // cancel reports can_cancel() == false.
  // `next_shared`, `next_linked`: the new state is shared with other
  // streams, or linked to parents.
  void replace_source(std::size_t i, std::optional<CancellationSource> next, bool next_shared,
                      bool next_linked) {
    const CancellationToken old = source_token(i);
    const bool check = !shared[i] && !linked[i] && old.can_cancel() && !old.cancelled() &&
                       !held_elsewhere(old, i);
    sources[i] = std::move(next);
    shared[i] = next_shared;
    linked[i] = next_linked;
    if (check && !held_elsewhere(old, kSources)) {
      CHECK(!old.can_cancel());
      CHECK(!old.cancelled());
    }
  }
  void add_lineage(Lineage l) {
    if (lineage.size() < kMaxLineage) lineage.push_back(std::move(l));
  }

  TaskOptions options(std::uint8_t spec, std::uint8_t c, Rec& rec);
  Rec& task_rec(Kind kind, std::uint8_t spec, std::uint8_t c, TaskOptions& opts);
  void after_submit(Rec& rec);
  ScopeRef scope_ref(std::uint8_t a);
  void check_tasks_resolved(const CancellationToken& state);
  void check_scope_done(int uid);
  void destroy_child(std::size_t i);
  void destroy_group();
  void check_stats();

  void cancel_source(std::size_t i, CancelReason why);
  void register_callback(std::uint8_t a, std::uint8_t b, bool self);
  void destroy_callback(std::size_t i);
  void destroy_self_callback(std::size_t i);
  void wait_future(std::uint8_t a, std::uint8_t b);

  Ctx& ctx;
  std::vector<Instr> ops;

  std::optional<CancellationSource> sources[kSources];
  bool shared[kSources] = {};  // the state is one of ctx.shared
  bool linked[kSources] = {};  // the state has parents
  CancellationToken tokens[kTokens];
  std::vector<Lineage> lineage;

  std::deque<CbRec> cb_recs;
  std::deque<SelfCell> cells;
  std::unique_ptr<CancellationCallback<CbFn>> callbacks[kCallbacks];
  CbRec* callback_recs[kCallbacks] = {};
  SelfCell* self_callbacks[kSelfCallbacks] = {};

  struct FutureSlot {
    Future<int> future;
    Rec* rec = nullptr;
  } futures[kFutures];
  struct HandleSlot {
    TaskHandle<int> handle;
    Rec* rec = nullptr;
  } handles[kHandles];

  struct ChildScope {
    std::optional<Scope> scope;
    int uid = 0;
    std::size_t parent = kChildScopes;  // a slot, or kChildScopes for the root
    ScopeRef::Close close;
    int failure = 0;  // the failure wait() rethrew, by rec id
  } children[kChildScopes];

  std::optional<TaskGroup> group;
  int group_uid = 0;
  std::size_t group_submitted = 0;
  bool group_cancelled = false;

  std::vector<Rec*> mine;
  quell::ThreadPoolStats last{};
};

TaskOptions Stream::options(std::uint8_t spec, std::uint8_t c, Rec& rec) {
  TaskOptions opts;
  const std::size_t slot = (c >> 2) % 4;
  switch (c % 4) {
    case 0: break;
    case 1: opts.set_cancellation(source_token(slot)); break;
    case 2: opts.set_cancellation(tokens[slot]); break;
    case 3:
      if (handles[slot % kHandles].rec != nullptr) {
        opts.set_cancellation(handles[slot % kHandles].handle.token());
      }
      break;
  }
  opts.set_priority(static_cast<quell::TaskPriority>(((c >> 4) % 4) % 3));
  const std::size_t t = spec >> 5;
  const Clock::time_point now = Clock::now();
  switch (c >> 6) {
    case 1:
      rec.has_deadline = true;
      if (t == 7) {
        opts.set_timeout(Clock::duration::max());
      } else {
        opts.set_timeout(kTimings[t]);
        rec.deadline_past = kTimings[t] <= 0us;
      }
      break;
    case 2:
      rec.has_deadline = true;
      if (t == 7) {
        opts.set_deadline(Clock::time_point::max());
      } else {
        opts.set_deadline(now + kTimings[t]);
        rec.deadline_past = kTimings[t] <= 0us;
      }
      break;
    default: break;
  }
  rec.opt_token = opts.cancellation();
  return opts;
}

// A new task's record with its options; the origins as they are just
// before submission.
Rec& Stream::task_rec(Kind kind, std::uint8_t spec, std::uint8_t c, TaskOptions& opts) {
  Rec& rec = ctx.recs.make(kind);
  mine.push_back(&rec);
  opts = options(spec, c, rec);
  return rec;
}

void Stream::after_submit(Rec& rec) {
  rec.maybe_rejected = ctx.config.bounded || ctx.shutdown_started.load();
}


// After this thread's request cancelled `state`: no task of this stream that
// only that request could drop is still queued (§6: dropped at once, on the
// cancelling thread).
void Stream::check_tasks_resolved(const CancellationToken& state) {
  if (ctx.shutdown_started.load()) return;
  const auto plain = [&](const Rec* rec) {
    return rec != nullptr && rec->owner == 0 && !rec->has_deadline && rec->opt_token == state;
  };
  for (FutureSlot& f : futures) {
    if (plain(f.rec)) CHECK(f.future.status() != TaskStatus::queued);
  }
  for (HandleSlot& h : handles) {
    if (plain(h.rec)) CHECK(h.handle.status() != TaskStatus::queued);
  }
}

void Stream::cancel_source(std::size_t i, CancelReason why) {
  if (!sources[i]) return;
  CancellationSource& source = *sources[i];
  const CancellationToken token = source.token();
  const bool moved_from = token == CancellationToken();
  const bool was = source.cancelled();
  std::vector<bool> lineage_was;
  for (const Lineage& l : lineage) lineage_was.push_back(l.self.cancelled());
  const bool made = source.request_cancel(why);
  if (moved_from) {
    CHECK(!made && !source.cancelled());
    return;
  }
  CHECK(source.cancelled());
  if (!made) return;
  CHECK(!was);
  const CancelReason expect = effective(why);
  CHECK(token.reason() == expect);
  // Every state linked below it is cancelled; those only it could cancel,
  // with its reason, their callbacks run and their tasks dropped, all by now.
  std::vector<CancellationToken> reached{token};
  std::vector<CancellationToken> exact{token};
  const auto in = [](const std::vector<CancellationToken>& set, const CancellationToken& t) {
    for (const CancellationToken& s : set) {
      if (s == t) return true;
    }
    return false;
  };
  for (std::size_t k = 0; k < lineage.size(); ++k) {
    const Lineage& l = lineage[k];
    bool any = false;
    bool only = false;
    for (int p = 0; p < l.count; ++p) {
      if (in(reached, l.parents[p])) any = true;
      if (l.count == 1 && in(exact, l.parents[p])) only = true;
    }
    if (!any) continue;
    CHECK(l.self.cancelled());
    reached.push_back(l.self);
    if (only && !lineage_was[k]) {
      CHECK(l.self.reason() == expect);
      exact.push_back(l.self);
    }
  }
  for (std::size_t k = 0; k < kCallbacks; ++k) {
    CbRec* rec = callback_recs[k];
    if (rec != nullptr && in(exact, rec->token)) {
      CHECK(rec->calls.load() == 1);
      CHECK(rec->seen.load() == static_cast<int>(expect));
    }
  }
  for (const CancellationToken& t : exact) check_tasks_resolved(t);
}

void Stream::register_callback(std::uint8_t a, std::uint8_t b, bool self) {
  CancellationToken token;
  const std::size_t slot = a % 4;
  switch ((a >> 2) % 4) {
    case 0: token = tokens[slot]; break;
    case 1: token = source_token(slot); break;
    case 2:
      if (handles[slot % kHandles].rec != nullptr) token = handles[slot % kHandles].handle.token();
      break;
    case 3: break;  // a default token: never called
  }
  CbRec& rec = cb_recs.emplace_back();
  rec.token = token;
  const bool was = token.cancelled();
  rec.never = !was && !token.can_cancel();
  if (!self) {
    const std::size_t i = b % kCallbacks;
    destroy_callback(i);
    callbacks[i] = std::make_unique<CancellationCallback<CbFn>>(token, CbFn{&rec, token});
    callback_recs[i] = &rec;
  } else {
    const std::size_t i = b % kSelfCallbacks;
    destroy_self_callback(i);
    SelfCell& cell = cells.emplace_back();
    cell.rec = &rec;
    auto* callback = new CancellationCallback<SelfFn>(token, SelfFn{&cell, token});
    cell.callback.store(callback);
    self_callbacks[i] = &cell;
  }
  // Registering on a cancelled token runs the callback inline.
  if (was) {
    CHECK(rec.calls.load() == 1);
    CHECK(rec.seen.load() == static_cast<int>(token.reason()));
  }
}

void Stream::destroy_callback(std::size_t i) {
  CbRec* rec = callback_recs[i];
  if (rec == nullptr) return;
  callbacks[i].reset();
  // After the destructor returned the callback is not running and never will.
  rec->destroyed.store(true);
  CHECK(!rec->running.load());
  const int calls = rec->calls.load();
  CHECK(calls <= 1);
  if (rec->never) CHECK(calls == 0);
  if (calls == 1) CHECK(rec->seen.load() == static_cast<int>(rec->token.reason()));
  callback_recs[i] = nullptr;
}

void Stream::destroy_self_callback(std::size_t i) {
  SelfCell* cell = self_callbacks[i];
  if (cell == nullptr) return;
  self_callbacks[i] = nullptr;
  CancellationCallback<SelfFn>* callback = cell->callback.exchange(nullptr);
  if (callback == nullptr) return;  // it destroyed itself, or is doing so
  delete callback;
  cell->rec->destroyed.store(true);
  CHECK(!cell->rec->running.load());
  CHECK(cell->rec->calls.load() <= 1);
  if (cell->rec->never) CHECK(cell->rec->calls.load() == 0);
}

void Stream::wait_future(std::uint8_t a, std::uint8_t b) {
  const bool use_handle = (a >> 3) & 1;
  Rec* rec = use_handle ? handles[a % kHandles].rec : futures[a % kFutures].rec;
  if (rec == nullptr) return;
  Future<int>& future = use_handle ? handles[a % kHandles].handle.future() : futures[a % kFutures].future;
  bool ready = false;
  switch (b % 8) {
    case 0:
      if (use_handle) {
        handles[a % kHandles].handle.wait();
      } else {
        future.wait();
      }
      ready = true;
      break;
    case 1: ready = future.wait_for(0us); break;
    case 2:
      ready = use_handle ? handles[a % kHandles].handle.wait_for(200us) : future.wait_for(200us);
      break;
    case 3: {
      const CancellationToken& stop = tokens[(b >> 3) % kTokens];
      ready = future.wait(stop);
      if (!ready) CHECK(stop.cancelled());
      break;
    }
    case 4: ready = future.wait_until(Clock::now() + 100us); break;
    case 5: ready = future.wait_until(std::chrono::system_clock::now() + 100us); break;
    case 6:
      // Every timeout saturates (§12): each waits until ready, never "times
      // out" in the past.
      switch ((b >> 3) % 3) {
        case 0: ready = future.wait_for(Clock::duration::max()); break;
        case 1: ready = future.wait_for(std::chrono::hours::max()); break;
        default: ready = future.wait_until(std::chrono::system_clock::time_point::max()); break;
      }
      CHECK(ready);
      break;
    default: ready = future.ready(); break;
  }
  if (ready) CHECK(future.ready());
  if (future.ready()) judge(ctx, *rec, ready_status(future));
  CHECK(future.valid());
  CHECK(future.id() != 0);
}

ScopeRef Stream::scope_ref(std::uint8_t a) {
  const std::size_t i = a % 3;
  if (i == 0 || !children[i - 1].scope) return ctx.root_ref();
  ChildScope& child = children[i - 1];
  return ScopeRef{&*child.scope, child.uid, &child.close};
}

// Every task of the scope or group `uid` is terminal, its callable gone.
void Stream::check_scope_done(int uid) {
  for (Rec* rec : mine) {
    if (rec->owner == uid && rec->reached) CHECK(rec->destroyed.load() == 1);
  }
}

void Stream::destroy_child(std::size_t i) {
  ChildScope& child = children[i];
  if (!child.scope) return;
  for (std::size_t k = 0; k < kChildScopes; ++k) {
    if (children[k].scope && children[k].parent == i) destroy_child(k);  // children first
  }
  child.scope.reset();  // waits
  check_scope_done(child.uid);
  child.close.reset();
  child.failure = 0;
}

void Stream::destroy_group() {
  if (!group) return;
  group.reset();  // cancels and waits
  check_scope_done(group_uid);
}

// Counters only grow; the sums of outcomes never pass the submissions.
void Stream::check_stats() {
  const quell::ThreadPoolStats now = ctx.pool->stats();
  CHECK(now.submitted >= last.submitted);
  CHECK(now.completed >= last.completed);
  CHECK(now.failed >= last.failed);
  CHECK(now.cancelled >= last.cancelled);
  CHECK(now.timed_out >= last.timed_out);
  CHECK(now.rejected >= last.rejected);
  CHECK(now.stolen >= last.stolen);
  last = now;
}

void Stream::step(const Instr& in) {
  const std::uint8_t a = in.a;
  const std::uint8_t b = in.b;
  const std::uint8_t c = in.c;
  switch (in.op) {
    case Op::source_cancel: cancel_source(a % kSources, reason_of(b)); break;

    case Op::source_copy: {
      const std::size_t from = a % kSources;
      const std::size_t to = b % kSources;
      if (from == to || !sources[from]) break;
      replace_source(to, *sources[from], shared[from], linked[from]);
      CHECK(sources[to]->token() == sources[from]->token());
      break;
    }

    case Op::source_move: {
      const std::size_t from = a % kSources;
      const std::size_t to = b % kSources;
      if (from == to || !sources[from]) break;
      const CancellationToken moved = sources[from]->token();
      replace_source(to, std::move(*sources[from]), shared[from], linked[from]);
      CHECK(sources[to]->token() == moved);
      // A moved-from source has no state.
      CancellationSource& empty = *sources[from];
      CHECK(!empty.cancelled());
      CHECK(!empty.request_cancel());
      CHECK(!empty.token().can_cancel());
      CHECK(empty.token() == CancellationToken());
      shared[from] = false;
      linked[from] = false;
      break;
    }

    case Op::source_reset: {
      const std::size_t i = a % kSources;
      if (!sources[i]) break;
      const CancellationToken old = sources[i]->token();
      if (b & 1) {
        // reset() in place: a fresh state; tokens taken earlier keep the old one.
        CancellationSource copy = *sources[i];
        copy.reset();
        CHECK(!copy.cancelled());
        CHECK(!(copy.token() == old));
        replace_source(i, std::move(copy), false, false);
      } else {
        replace_source(i, std::nullopt, false, false);
      }
      break;
    }

    case Op::source_link: {
      // linked({p, q}) from the slots' tokens; linked({}) is a plain source.
      Lineage l;
      l.count = 0;
      if ((c & 0x80) == 0) l.parents[l.count++] = source_token(a % kSources);
      switch ((c >> 4) % 4) {
        case 1: l.parents[l.count++] = source_token((a >> 2) % kSources); break;
        case 2: l.parents[l.count++] = tokens[(a >> 2) % kTokens]; break;
        case 3: l.parents[l.count++] = ctx.shared[(a >> 2) % kShared].token(); break;
        default: break;
      }
      bool cancelled_before = false;
      for (int p = 0; p < l.count; ++p) cancelled_before |= l.parents[p].cancelled();
      std::optional<CancellationSource> made;
      if (l.count == 0) {
        made.emplace(CancellationSource::linked({}));
      } else if (l.count == 1) {
        made.emplace(CancellationSource::linked({l.parents[0]}));
      } else {
        made.emplace(CancellationSource::linked({l.parents[0], l.parents[1]}));
      }
      l.self = made->token();
      bool cancelled_now = false;
      bool reason_from_parent = false;
      for (int p = 0; p < l.count; ++p) {
        if (l.parents[p].cancelled()) {
          cancelled_now = true;
          if (l.parents[p].reason() == l.self.reason()) reason_from_parent = true;
        }
      }
      // Cancelled at once, with a parent's reason, if a parent already was;
      // never while no parent is.
      if (cancelled_before) CHECK(l.self.cancelled() && reason_from_parent);
      if (!cancelled_now) CHECK(!l.self.cancelled());
      if (l.self.cancelled()) CHECK(reason_from_parent);
      CHECK(l.self.can_cancel());
      add_lineage(l);
      replace_source(b % kSources, std::move(made), false, l.count > 0);
      break;
    }

    case Op::source_chain: {
      // A chain of linked states of which only the last keeps a source: the
      // others live through their links.
      const CancellationToken head = source_token(a % kSources);
      const bool cancelled_before = head.cancelled();
      const int depth = 1 + c % 8;
      CancellationSource tail = CancellationSource::linked({head});
      for (int d = 1; d < depth; ++d) tail = CancellationSource::linked({tail.token()});
      Lineage l;
      l.self = tail.token();
      l.parents[0] = head;
      l.count = 1;
      if (cancelled_before) CHECK(l.self.cancelled() && l.self.reason() == head.reason());
      if (!head.cancelled()) CHECK(!l.self.cancelled());
      add_lineage(l);
      replace_source(b % kSources, std::move(tail), false, true);
      break;
    }

    case Op::token_take: {
      CancellationToken& dst = tokens[b % kTokens];
      if ((b >> 2) & 1) {
        HandleSlot& h = handles[a % kHandles];
        dst = h.rec != nullptr ? h.handle.token() : CancellationToken();
      } else {
        dst = source_token(a % kSources);
      }
      break;
    }

    case Op::token_change: {
      CancellationToken& from = tokens[a % kTokens];
      CancellationToken& to = tokens[b % kTokens];
      switch (c % 4) {
        case 0: to = from; CHECK(to == from); break;
        case 1: {
          if (&from == &to) break;
          const CancellationToken was = from;
          to = std::move(from);
          CHECK(to == was);
          // A moved-from token has no state.
          CHECK(!from.cancelled() && !from.can_cancel());
          CHECK(from.reason() == CancelReason::none);
          CHECK(from == CancellationToken());
          break;
        }
        case 2:
          from.reset();
          CHECK(!from.cancelled() && !from.can_cancel() && !from.stop_possible());
          break;
        default: swap(from, to); break;
      }
      break;
    }

    case Op::observe: {
      if (a & 1) {
        check_stats();
        break;
      }
      // A token's answers agree and only move forward.
      const CancellationToken& t = tokens[b % kTokens];
      const bool possible = t.can_cancel();
      const CancelReason why = t.reason();
      const bool cancelled = t.cancelled();
      if (why != CancelReason::none) CHECK(cancelled && t.reason() == why);
      if (cancelled) {
        CHECK(t.is_cancelled() && t.stop_requested() && !t.can_continue());
        CHECK(t.reason() != CancelReason::none);
        CHECK(t.can_cancel());
      }
      bool threw = false;
      try {
        t.throw_if_cancelled();
      } catch (const OperationCancelled& e) {
        threw = true;
        CHECK(e.code() == quell::Errc::cancelled);
      }
      if (cancelled) CHECK(threw);
      if (threw) CHECK(t.reason() != CancelReason::none);
      if (!possible && !cancelled) CHECK(!t.stop_possible() && !t.cancelled());
      break;
    }

    case Op::callback_register: register_callback(a, b, false); break;
    case Op::callback_destroy:
      if (b & 1) {
        destroy_self_callback(a % kSelfCallbacks);
      } else {
        destroy_callback(a % kCallbacks);
      }
      break;
    case Op::callback_self: register_callback(a, b, true); break;

    case Op::submit:
    case Op::submit_after:
    case Op::submit_at: {
      FutureSlot& slot = futures[a % kFutures];
      TaskOptions opts;
      const bool delayed = in.op != Op::submit;
      Rec& rec = task_rec(delayed ? Kind::delayed : Kind::submit, b, c, opts);
      note_pre_cancel(rec);
      const auto delay = kDelays[(a >> 3) % 8];
      rec.delayed = delayed && delay > 0us;
      rec.must_reject = ctx.shutdown_done.load();
      Body body(ctx, rec, b);
      if (in.op == Op::submit) {
        slot.future = ctx.pool->submit(std::move(body), opts);
      } else if (in.op == Op::submit_after) {
        slot.future = ctx.pool->submit_after(delay, std::move(body), opts);
      } else {
        slot.future = ctx.pool->submit_at(Clock::now() + delay, std::move(body), opts);
      }
      slot.rec = &rec;
      after_submit(rec);
      CHECK(slot.future.valid());
      if (rec.must_reject) CHECK(slot.future.status() == TaskStatus::rejected);
      // Resolved at submission: no worker needed to see it.
      if (rec.pre_cancelled || rec.deadline_past) CHECK(slot.future.ready());
      break;
    }

    case Op::handle: {
      HandleSlot& slot = handles[a % kHandles];
      TaskOptions opts;
      Rec& rec = task_rec(Kind::handle, b, c, opts);
      note_pre_cancel(rec);
      rec.must_reject = ctx.shutdown_done.load();
      slot.handle = ctx.pool->handle(Body(ctx, rec, b), opts);
      slot.rec = &rec;
      after_submit(rec);
      rec.handle_token = slot.handle.token();
      CHECK(slot.handle.id() == slot.handle.future().id());
      if (rec.must_reject) CHECK(slot.handle.status() == TaskStatus::rejected);
      if (rec.pre_cancelled || rec.deadline_past) CHECK(slot.handle.future().ready());
      break;
    }

    case Op::post: {
      TaskOptions opts;
      Rec& rec = task_rec(Kind::post, b, c, opts);
      note_pre_cancel(rec);
      rec.must_reject = ctx.shutdown_done.load();
      rec.accepted = ctx.pool->post(Body(ctx, rec, b), opts);
      after_submit(rec);
      if (rec.must_reject) CHECK(!rec.accepted);
      // An already-cancelled token is accepted, then resolved cancelled.
      if (!rec.accepted) CHECK(rec.maybe_rejected);
      if (!rec.accepted || rec.pre_cancelled || rec.deadline_past) {
        CHECK(rec.destroyed.load() == 1 && rec.runs.load() == 0);
      }
      break;
    }

    case Op::handle_cancel: {
      HandleSlot& slot = handles[a % kHandles];
      if (slot.rec == nullptr) break;
      const bool was = slot.handle.cancelled();
      slot.rec->handle_cancelled.store(true);
      const bool made = slot.handle.cancel();
      CHECK(slot.handle.cancelled());
      if (made) {
        CHECK(!was);
        CHECK(slot.handle.token().reason() == CancelReason::requested);
        // Queued, it was dropped by this very call; else it runs or ended.
        CHECK(slot.handle.status() != TaskStatus::queued);
        if (slot.handle.future().ready()) judge(ctx, *slot.rec, ready_status(slot.handle.future()));
      }
      break;
    }

    case Op::future_get: {
      if ((a >> 3) & 1) {
        HandleSlot& slot = handles[a % kHandles];
        if (slot.rec == nullptr) break;
        judge_get(ctx, *slot.rec, slot.handle);
        slot = HandleSlot{};
      } else {
        FutureSlot& slot = futures[a % kFutures];
        if (slot.rec == nullptr) break;
        judge_get(ctx, *slot.rec, slot.future);
        slot = FutureSlot{};
      }
      break;
    }

    case Op::future_wait: wait_future(a, b); break;

    case Op::future_drop:
      // Dropping neither cancels nor waits; the model judges it at the end.
      if ((a >> 3) & 1) {
        handles[a % kHandles] = HandleSlot{};
      } else {
        futures[a % kFutures] = FutureSlot{};
      }
      break;

    case Op::wait_idle:
    case Op::shutdown: {
      if (in.op == Op::wait_idle) {
        ctx.pool->wait_idle();
      } else {
        ctx.shutdown();
      }
      // Everything this stream submitted before is terminal.
      for (Rec* rec : mine) CHECK(rec->destroyed.load() == 1);
      for (FutureSlot& f : futures) {
        if (f.rec != nullptr) CHECK(f.future.ready());
      }
      for (HandleSlot& h : handles) {
        if (h.rec != nullptr) CHECK(h.handle.future().ready());
      }
      check_stats();
      break;
    }

    case Op::scope_spawn: {
      const ScopeRef target = scope_ref(a);
      TaskOptions opts;
      Rec& rec = task_rec(Kind::spawn, b, c, opts);
      rec.owner = target.uid;
      rec.set_token = target.scope->cancellation_token();
      note_pre_cancel(rec);
      spawn_into(ctx, target, Body(ctx, rec, b, target), opts);
      break;
    }

    case Op::scope_cancel: {
      const ScopeRef target = scope_ref(a);
      target.scope->cancel();
      CHECK(target.scope->cancelled());
      CHECK(target.scope->cancellation_token().cancelled());
      break;
    }

    case Op::scope_close: {
      const ScopeRef target = scope_ref(a);
      target.close->closing.store(true);
      target.scope->close();
      target.close->closed.store(true);
      break;
    }

    case Op::scope_wait: {
      const ScopeRef target = scope_ref(a);
      const bool own = target.uid != ctx.root_uid;
      int failure = 0;
      try {
        target.scope->wait();
      } catch (const BodyError& e) {
        failure = e.id;
      }
      if (failure != 0) {
        // A failure of one of its tasks, which cancelled the scope.
        Rec& failed = ctx.recs.find(failure);
        CHECK(failed.owner == target.uid);
        CHECK(failed.runs.load() == 1 && failed.outcome == Outcome::failed);
        CHECK(target.scope->cancelled());
        // Each wait rethrows that same failure.
        if (own) {
          ChildScope& child = children[a % 3 - 1];
          CHECK(child.failure == 0 || child.failure == failure);
          child.failure = failure;
        } else {
          int expected = 0;
          if (!ctx.root_failure.compare_exchange_strong(expected, failure)) {
            CHECK(expected == failure);
          }
        }
      }
      if (own) {
        // No other thread spawns into a child scope of this stream: every
        // task is terminal, and wait() threw exactly if one failed.
        CHECK(target.scope->size() == 0);
        bool any_failed = false;
        for (Rec* rec : mine) {
          if (rec->owner != target.uid || !rec->reached) continue;
          CHECK(rec->destroyed.load() == 1);
          if (rec->runs.load() == 1 && rec->outcome == Outcome::failed) any_failed = true;
        }
        if (children[a % 3 - 1].failure != 0) CHECK(failure != 0);
        if (any_failed) CHECK(failure != 0);
      }
      break;
    }

    case Op::scope_child: {
      const std::size_t i = a % kChildScopes;
      ChildScope& child = children[i];
      if (child.scope) {
        if (b & 1) destroy_child(i);
        break;
      }
      // Slot 1 nests in slot 0 when there is one.
      Scope& parent = i == 1 && children[0].scope ? *children[0].scope : *ctx.root;
      const bool parent_cancelled = parent.cancelled();
      if (i == 1 && children[0].scope) {
        child.parent = 0;
        child.scope.emplace(*children[0].scope);
      } else {
        child.parent = kChildScopes;
        child.scope.emplace(*ctx.root);
      }
      child.uid = ctx.next_uid++;
      child.close.reset();
      // Cancelled with its parent, at once if the parent already is.
      if (parent_cancelled) CHECK(child.scope->cancelled());
      break;
    }

    case Op::group_make:
      if (group) {
        destroy_group();
      } else {
        group.emplace(*ctx.pool);
        group_uid = ctx.next_uid++;
        group_submitted = 0;
        group_cancelled = false;
      }
      break;

    case Op::group_submit: {
      const bool own = ((a >> 3) & 1) && group;
      TaskGroup& target = own ? *group : *ctx.group;
      FutureSlot& slot = futures[a % kFutures];
      TaskOptions opts;
      Rec& rec = task_rec(Kind::group, b, c, opts);
      rec.owner = own ? group_uid : ctx.group_uid;
      rec.set_token = target.cancellation_token();
      note_pre_cancel(rec);
      rec.must_reject = ctx.shutdown_done.load();
      slot.future = target.submit(Body(ctx, rec, b), opts);
      slot.rec = &rec;
      after_submit(rec);
      if (rec.must_reject) CHECK(slot.future.status() == TaskStatus::rejected);
      if (rec.pre_cancelled || rec.deadline_past) CHECK(slot.future.ready());
      if (own) {
        CHECK(target.size() == ++group_submitted);
        CHECK(target.pending() <= target.size());
      }
      break;
    }

    case Op::group_cancel: {
      const bool own = ((a >> 3) & 1) && group;
      TaskGroup& target = own ? *group : *ctx.group;
      const bool was = target.cancelled();
      target.cancel();
      CHECK(target.cancelled());
      CHECK(target.cancellation_token().reason() == CancelReason::requested);
      if (own && !was && !ctx.shutdown_started.load()) {
        // Its queued tasks were dropped by this call.
        for (FutureSlot& f : futures) {
          if (f.rec != nullptr && f.rec->owner == group_uid && !f.rec->has_deadline &&
              f.rec->opt_token == CancellationToken()) {
            CHECK(f.future.status() != TaskStatus::queued);
          }
        }
      }
      if (own) group_cancelled = true;
      break;
    }

    case Op::group_wait: {
      const bool own = ((a >> 3) & 1) && group;
      TaskGroup& target = own ? *group : *ctx.group;
      const int uid = own ? group_uid : ctx.group_uid;
      int failure = 0;
      if (b & 1) {
        try {
          target.wait_and_rethrow();
        } catch (const BodyError& e) {
          failure = e.id;
        }
      } else {
        target.wait();
      }
      if (failure != 0) {
        Rec& failed = ctx.recs.find(failure);
        CHECK(failed.owner == uid);
        CHECK(failed.runs.load() == 1 && failed.outcome == Outcome::failed);
        if (!own) {
          int expected = 0;
          if (!ctx.group_failure.compare_exchange_strong(expected, failure)) {
            CHECK(expected == failure);
          }
        }
      }
      if (own) {
        CHECK(target.pending() == 0);
        // A failure does not cancel a group.
        CHECK(target.cancelled() == group_cancelled);
        bool any_failed = false;
        for (Rec* rec : mine) {
          if (rec->owner != uid) continue;
          CHECK(rec->destroyed.load() == 1);
          if (rec->runs.load() == 1 && rec->outcome == Outcome::failed) any_failed = true;
        }
        if ((b & 1) && any_failed) CHECK(failure != 0);
      }
      break;
    }

    case Op::count: break;
  }
}

void Stream::teardown() {
  for (FutureSlot& f : futures) {
    if (f.rec != nullptr) judge_get(ctx, *f.rec, f.future);
    f = FutureSlot{};
  }
  for (HandleSlot& h : handles) {
    if (h.rec != nullptr) judge_get(ctx, *h.rec, h.handle.future());
    h = HandleSlot{};
  }
  for (std::size_t i = 0; i < kCallbacks; ++i) destroy_callback(i);
  for (std::size_t i = 0; i < kSelfCallbacks; ++i) destroy_self_callback(i);
  destroy_child(1);
  destroy_child(0);
  destroy_group();
}

Config parse_config(const std::uint8_t* data, std::size_t size) {
  const std::uint8_t h0 = size > 0 ? data[0] : 0;
  const std::uint8_t h1 = size > 1 ? data[1] : 0;
  Config config;
  config.workers = 1 + (h0 & 1);
  config.cancel_policy = (h0 >> 1) & 1;
  config.streams = 1 + ((h0 >> 2) & 3) % 3;
  config.bounded = (h0 >> 4) & 1;
  config.idle_before_shutdown = h1 & 1;
  return config;
}

// After every stream ended: the shared objects' waits, the shutdown, then
// every task and the statistics against the model.
void finish(Ctx& ctx) {
  int failure = 0;
  try {
    ctx.root->wait();
  } catch (const BodyError& e) {
    failure = e.id;
  }
  if (failure != 0) {
    CHECK(ctx.root->cancelled());
    CHECK(ctx.recs.find(failure).owner == ctx.root_uid);
    const int earlier = ctx.root_failure.load();
    CHECK(earlier == 0 || earlier == failure);
  }
  CHECK(ctx.root->size() == 0);
  failure = 0;
  try {
    ctx.group->wait_and_rethrow();
  } catch (const BodyError& e) {
    failure = e.id;
  }
  if (failure != 0) CHECK(ctx.recs.find(failure).owner == ctx.group_uid);
  CHECK(ctx.group->pending() == 0);

  if (ctx.config.idle_before_shutdown) ctx.pool->wait_idle();
  ctx.shutdown();
  ctx.shutdown();  // idempotent

  std::uint64_t reached = 0;
  std::uint64_t completed = 0;
  std::uint64_t failed = 0;
  std::uint64_t rejected_known = 0;
  std::uint64_t rejected_possible = 0;
  std::lock_guard lock(ctx.recs.mutex);
  for (Rec& rec : ctx.recs.recs) {
    const int seen = rec.observed.load();
    judge(ctx, rec, seen >= 0 ? static_cast<TaskStatus>(seen) : TaskStatus::queued);
    if (!rec.reached) continue;
    ++reached;
    if (rec.runs.load() == 1) {
      if (rec.outcome == Outcome::returned) ++completed;
      if (rec.outcome == Outcome::failed) ++failed;
      continue;
    }
    if (seen == static_cast<int>(TaskStatus::rejected) || !rec.accepted) ++rejected_known;
    if (rec.maybe_rejected || rec.must_reject) ++rejected_possible;
  }
  const quell::ThreadPoolStats s = ctx.pool->stats();
  CHECK(s.submitted == reached);
  CHECK(s.completed == completed);
  CHECK(s.failed == failed);
  CHECK(s.rejected >= rejected_known && s.rejected <= rejected_possible);
  CHECK(s.submitted == s.completed + s.failed + s.cancelled + s.timed_out + s.rejected);
  CHECK(s.queued == 0 && s.running == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const Config config = parse_config(data, size);
  Ctx ctx(config);
  std::vector<std::unique_ptr<Stream>> streams;
  for (std::size_t i = 0; i < config.streams; ++i) {
    streams.push_back(std::make_unique<Stream>(ctx));
  }
  for (std::size_t at = 2, n = 0; at + 4 <= size && n < kMaxOps; at += 4, ++n) {
    const Instr instr{static_cast<Op>((data[at] & 31u) % kOpCount), data[at + 1], data[at + 2],
                      data[at + 3]};
    streams[(data[at] >> 5) % config.streams]->ops.push_back(instr);
  }
  // The streams start together; stream 0 runs on this thread.
  std::latch start(static_cast<std::ptrdiff_t>(config.streams));
  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < config.streams; ++i) {
    threads.emplace_back([&start, &stream = *streams[i]] {
      start.arrive_and_wait();
      stream.run();
    });
  }
  start.arrive_and_wait();
  streams[0]->run();
  for (std::thread& t : threads) t.join();
  finish(ctx);
  // The callbacks' records (in the streams) outlive every thread that could
  // call them: the pool is shut down.
  ctx.group.reset();
  ctx.root.reset();
  streams.clear();
  return 0;
}
