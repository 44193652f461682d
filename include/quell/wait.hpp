#pragma once

// Blocking that a CancellationToken cuts short.
//
//   sleep_for(d, token)    sleeps for d; true if the time passed, false if
//   sleep_until(t, token)  the token was cancelled first (at once if it
//                          already was). A time already past returns
//                          !token.cancelled() at once.
//   wait(cv, lock, token, pred)
//                          std::condition_variable_any::wait(lock,
//                          stop_token, pred) for a CancellationToken: waits
//                          until pred() holds or the token is cancelled, and
//                          returns pred() (true if it holds, false if
//                          cancelled with pred() false). `lock` is held on
//                          return.
//
// None of them polls: a cancellation wakes the sleeper from inside the
// request_cancel() that makes it, and a sleep that is not cancelled is one
// futex wait whose timeout is the deadline.
//
// Sleeping. A 32-bit word on the sleeper's stack, 0 until a
// CancellationCallback (registered on the token, no allocation) stores 1 and
// futex-wakes it; the sleeper futex-waits on the word for 0, with the
// deadline as the kernel's absolute timeout. No lost wake-up: the kernel
// compares the word with 0 under the futex's lock, and the callback stores
// before it wakes, so a store landing before the wait makes the wait return
// at once. The word may live on the stack because ~CancellationCallback()
// waits for a callback running on another thread, wake included.
// std::this_thread::sleep_for cannot be woken; std::condition_variable
// could, at the cost of a mutex and of a callback that must take it.
//
// Waiting on a condition variable. Checking the token and then calling
// cv.wait(lock) loses a wake-up when the cancellation lands between the two:
// its notify finds no waiter yet, and the waiter then sleeps until the next
// unrelated notify. Closing that window needs the cv's internal mutex, which
// only the standard library reaches, in its stop_token overload (libstdc++
// registers a stop_callback that notifies under that mutex, and checks
// stop_requested() under it before each sleep). So wait() bridges to it: a local
// std::stop_source, a CancellationCallback that calls request_stop() on it,
// then cv.wait(lock, stop_source.get_token(), pred). The price is one heap
// allocation per call (the std::stop_source's shared state), paid only when
// the token can be cancelled and is not yet; without access to the cv's
// internals it is that or polling.
//
// Thread safety: thread-safe, as far as the arguments are (the cv and lock as
// for std::condition_variable_any; the token may be cancelled from any
// thread at any time).
//
// Ordering: everything sequenced before a request_cancel() happens-before the
// return of a sleep or a wait that it cut short.

#include <chrono>
#include <condition_variable>
#include <stop_token>
#include <utility>

#include "quell/cancellation.hpp"

namespace quell {

// Sleeps until `deadline`; true if it passed, false if `token` was cancelled
// first. time_point::max() sleeps until cancelled. Never throws: it
// allocates nothing.
bool sleep_until(std::chrono::steady_clock::time_point deadline, const CancellationToken& token);

// sleep_until(now + duration); a duration too large for the clock saturates
// to time_point::max() rather than overflow. Never throws.
bool sleep_for(std::chrono::steady_clock::duration duration, const CancellationToken& token);

// Waits on `cv` with `lock` held on entry and on return, until pred() holds
// (returns true) or `token` is cancelled (returns pred()). As for the
// standard overload, pred() is called with `lock` held, and a notify that
// leaves pred() false goes back to waiting.
// Throws std::bad_alloc for the bridge's stop state, before any wait (no
// effect), and whatever pred() throws, as the standard overload does;
// `lock` is held whenever it returns or throws.
template <class Lock, class Pred>
bool wait(std::condition_variable_any& cv, Lock& lock, const CancellationToken& token, Pred pred) {
  if (!token.can_cancel()) {
    cv.wait(lock, std::move(pred));
    return true;
  }
  // Already cancelled: no need for a bridge (and its allocation).
  if (token.cancelled()) return pred();
  // Declared before the callback, so it outlives any request_stop() made on it.
  std::stop_source stop;
  // request_stop() runs the overload's own stop_callback inline, which
  // notifies under the cv's internal mutex; ~CancellationCallback() waits
  // for a request_stop() still running on the cancelling thread.
  CancellationCallback bridge(token, [&stop]() noexcept { stop.request_stop(); });
  return cv.wait(lock, stop.get_token(), std::move(pred));
}

}  // namespace quell
