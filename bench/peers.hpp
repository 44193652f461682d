#pragma once

// The workload shared by cancellation_bench (time) and
// cancellation_instructions (callgrind instruction counts), so both measure
// exactly the same code. Each *_once function performs one operation; the
// peers differ only in the types plugged in.

#include <array>
#include <atomic>
#include <cstddef>
#include <memory>
#include <stop_token>
#include <utility>

#include "quell/cancellation.hpp"

namespace quell_bench {

// Forces `object` into memory and makes the compiler assume it changed, so
// nothing read through it can be hoisted out of a loop. The same constraint
// Google Benchmark's DoNotOptimize uses with g++ for non-trivially-copyable
// types; applied identically to every peer.
template <class T>
inline void escape(T& object) noexcept {
  asm volatile("" : "+m"(object) : : "memory");
}

// Keeps a result alive without forcing it to memory.
inline void consume(bool value) noexcept { asm volatile("" : : "r"(value)); }

struct quell_peer {
  using source = quell::CancellationSource;
  using token = quell::CancellationToken;
  template <class F>
  using callback = quell::CancellationCallback<F>;
  static token token_of(const source& s) { return s.token(); }
  static bool poll(const token& t) noexcept { return t.cancelled(); }
  static bool cancel(source& s) noexcept { return s.request_cancel(); }
};

struct std_peer {
  using source = std::stop_source;
  using token = std::stop_token;
  template <class F>
  using callback = std::stop_callback<F>;
  static token token_of(const source& s) { return s.get_token(); }
  static bool poll(const token& t) noexcept { return t.stop_requested(); }
  static bool cancel(source& s) noexcept { return s.request_stop(); }
};

// Every registration uses this: trivial, one pointer captured.
inline auto make_callback(int* count) noexcept {
  return [count]() noexcept { ++*count; };
}
using callback_fn = decltype(make_callback(nullptr));

template <class Peer>
inline void poll_once(typename Peer::token& token) noexcept {
  escape(token);
  consume(Peer::poll(token));
}

// The floor: a flag held directly, no shared state to reach.
inline void raw_poll_once(std::atomic<bool>& flag) noexcept {
  escape(flag);
  consume(flag.load(std::memory_order_acquire));
}

// A flag reached through a pointer reloaded each time, as a token reaches its
// state: separates the cost of the indirection from the rest.
inline void raw_indirect_poll_once(std::atomic<bool>*& flag) noexcept {
  escape(flag);
  consume(flag->load(std::memory_order_acquire));
}

// Copy + destroy: a token, or the shared_ptr<atomic<bool>> baseline.
template <class T>
inline void copy_once(T& original) noexcept {
  escape(original);
  T copy(original);
  escape(copy);
}

template <class Peer>
inline void source_create_destroy_once() {
  typename Peer::source source;
  escape(source);
}

template <class Peer>
inline void callback_register_deregister_once(const typename Peer::token& token, int* count) {
  typename Peer::template callback<callback_fn> callback(token, make_callback(count));
  escape(callback);
}

// `value`, whatever the index: expands a pack into N copies of one argument.
template <std::size_t>
inline const auto& same(const auto& value) noexcept {
  return value;
}

// N callbacks in place: neither library's callbacks are movable, so they are
// built as prvalues straight into the array. (Unused when N == 0.)
template <class Peer, std::size_t... I>
inline auto register_all([[maybe_unused]] const typename Peer::token& token,
                         [[maybe_unused]] int* count, std::index_sequence<I...>) {
  using callback = typename Peer::template callback<callback_fn>;
  return std::array<callback, sizeof...(I)>{{callback(same<I>(token), make_callback(count))...}};
}

// Source create + token + N registrations + (cancel, running all N) + N
// deregistrations + token and source destroy: the whole life of a
// cancellation scope. Nothing is subtracted; the Destroy variant (no cancel)
// is measured separately, so the difference is the cancel's own cost.
template <class Peer, std::size_t N, bool Cancel>
inline void create_register_once(int* count) {
  typename Peer::source source;
  const typename Peer::token token = Peer::token_of(source);
  auto callbacks = register_all<Peer>(token, count, std::make_index_sequence<N>{});
  escape(callbacks);
  if constexpr (Cancel) consume(Peer::cancel(source));
}

}  // namespace quell_bench
