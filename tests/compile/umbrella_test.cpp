// The umbrella header compiles on its own (first include), and the public
// types have the shapes the API promises.
#include "quell/quell.hpp"

#include <gtest/gtest.h>

#include <concepts>
#include <memory>
#include <type_traits>

namespace quell {
namespace {

// P2300's stoppable_token and stoppable-callback-for, as written in the paper.
template <template <class> class>
struct check_type_alias_exists;

template <class Token>
concept stoppable_token = requires(const Token tok) {
  typename check_type_alias_exists<Token::template callback_type>;
  { tok.stop_requested() } noexcept -> std::same_as<bool>;
  { tok.stop_possible() } noexcept -> std::same_as<bool>;
  { Token(tok) } noexcept;
} && std::copyable<Token> && std::equality_comparable<Token> && std::swappable<Token>;

template <class CallbackFn, class Token, class Initializer = CallbackFn>
concept stoppable_callback_for =
    std::invocable<CallbackFn> && std::constructible_from<CallbackFn, Initializer> &&
    requires { typename Token::template callback_type<CallbackFn>; } &&
    std::constructible_from<typename Token::template callback_type<CallbackFn>, Token,
                            Initializer> &&
    std::constructible_from<typename Token::template callback_type<CallbackFn>, Token&,
                            Initializer> &&
    std::constructible_from<typename Token::template callback_type<CallbackFn>, const Token,
                            Initializer> &&
    std::constructible_from<typename Token::template callback_type<CallbackFn>, const Token&,
                            Initializer>;

struct Fn {
  void operator()() {}
};
struct MoveOnlyFn {
  std::unique_ptr<int> p;
  void operator()() {}
};

static_assert(stoppable_token<CancellationToken>);
static_assert(stoppable_callback_for<Fn, CancellationToken>);
static_assert(stoppable_callback_for<MoveOnlyFn, CancellationToken>);
static_assert(std::is_nothrow_copy_constructible_v<CancellationToken>);
static_assert(std::is_nothrow_move_constructible_v<CancellationToken>);
static_assert(std::is_nothrow_default_constructible_v<CancellationToken>);
static_assert(std::is_copy_constructible_v<CancellationSource>);
static_assert(std::is_copy_assignable_v<CancellationSource>);
static_assert(std::is_nothrow_move_constructible_v<CancellationSource>);
// Registered by address: neither copyable nor movable.
static_assert(!std::is_copy_constructible_v<CancellationCallback<Fn>>);
static_assert(!std::is_move_constructible_v<CancellationCallback<Fn>>);
static_assert(!std::is_copy_assignable_v<CancellationCallback<Fn>>);
static_assert(!std::is_move_assignable_v<CancellationCallback<Fn>>);
static_assert(std::is_same_v<CancellationToken::callback_type<Fn>, CancellationCallback<Fn>>);

TEST(Umbrella, HeaderCompilesAloneAndTheTypesHaveTheirShapes) {
  CancellationSource source;
  EXPECT_TRUE(source.token().stop_possible());
}

}  // namespace
}  // namespace quell
