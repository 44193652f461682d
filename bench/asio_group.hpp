#pragma once

// Asio's parallel_group over N co_spawned children, for coro_bench's C9 and
// fan-out. Each N is a separate, slow instantiation (Asio 1.22's group is
// variadic), hence C9's 64 and fan-out's 50 in separate translation units.

#include <asio/co_spawn.hpp>
#include <asio/experimental/deferred.hpp>
#include <asio/experimental/parallel_group.hpp>
#include <asio/use_awaitable.hpp>
#include <cstddef>
#include <tuple>
#include <utility>

#include "coro_bench.hpp"

namespace quell_bench {

// A parallel_group of N children (`child()` returns an awaitable of an
// arithmetic value), each co_spawned on `executor`, waited for all; the sum
// of their values. Aborts if a child failed.
template <std::size_t N, class Child>
asio::awaitable<long> asio_group_sum(asio::any_io_executor executor, Child child) {
  const auto results = co_await [&]<std::size_t... I>(std::index_sequence<I...>) {
    return asio::experimental::make_parallel_group(
               (static_cast<void>(I),
                asio::co_spawn(executor, child(), asio::experimental::deferred))...)
        .async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);
  }(std::make_index_sequence<N>());
  // results: the completion order, then each child's exception_ptr and value.
  co_return [&]<std::size_t... I>(std::index_sequence<I...>) {
    coro::check(((std::get<1 + 2 * I>(results) == nullptr) && ...), "a group's child failed");
    return (0L + ... + static_cast<long>(std::get<2 + 2 * I>(results)));
  }(std::make_index_sequence<N>());
}

}  // namespace quell_bench
