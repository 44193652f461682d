#pragma once

// The floor for coroutine benchmarks (API.md §10.9 C1, C8, C10): the
// textbook lazy task. Symmetric transfer into the child and back, the frame
// from plain operator new, no token, no home, no exceptions kept beyond a
// rethrow. What any task type costs at least.

#include <coroutine>
#include <exception>
#include <utility>

namespace quell_bench {

template <class T>
class FloorTask {
 public:
  struct promise_type {
    T value{};
    std::coroutine_handle<> continuation = std::noop_coroutine();
    FloorTask get_return_object() noexcept {
      return FloorTask(std::coroutine_handle<promise_type>::from_promise(*this));
    }
    std::suspend_always initial_suspend() noexcept { return {}; }
    struct Final {
      bool await_ready() noexcept { return false; }
      std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> h) noexcept {
        return h.promise().continuation;
      }
      void await_resume() noexcept {}
    };
    Final final_suspend() noexcept { return {}; }
    void return_value(T v) noexcept { value = std::move(v); }
    void unhandled_exception() { throw; }
  };

  explicit FloorTask(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
  FloorTask(FloorTask&& other) noexcept : h_(std::exchange(other.h_, {})) {}
  ~FloorTask() {
    if (h_) h_.destroy();
  }

  bool await_ready() noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> parent) noexcept {
    h_.promise().continuation = parent;
    return h_;
  }
  T await_resume() noexcept { return std::move(h_.promise().value); }

  // Runs a root to its end on this thread (it must not suspend elsewhere).
  T run() {
    h_.resume();
    return std::move(h_.promise().value);
  }

 private:
  std::coroutine_handle<promise_type> h_;
};

}  // namespace quell_bench
