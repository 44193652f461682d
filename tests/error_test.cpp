#include "quell/error.hpp"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <system_error>
#include <type_traits>

namespace quell {
namespace {

static_assert(std::is_error_code_enum_v<Errc>);
static_assert(std::is_base_of_v<std::system_error, TaskError>);
static_assert(std::is_base_of_v<TaskError, OperationCancelled>);

TEST(Errc, ValuesStartAtOneInTheDocumentedOrder) {
  EXPECT_EQ(static_cast<int>(Errc::cancelled), 1);
  EXPECT_EQ(static_cast<int>(Errc::timed_out), 2);
  EXPECT_EQ(static_cast<int>(Errc::rejected), 3);
  EXPECT_EQ(static_cast<int>(Errc::broken_promise), 4);
  EXPECT_EQ(static_cast<int>(Errc::already_retrieved), 5);
  EXPECT_EQ(static_cast<int>(Errc::no_state), 6);
}

TEST(Errc, MakeErrorCodeUsesQuellsCategory) {
  const std::error_code code = make_error_code(Errc::rejected);
  EXPECT_EQ(&code.category(), &error_category());
  EXPECT_STREQ(error_category().name(), "quell");
  EXPECT_EQ(code.value(), static_cast<int>(Errc::rejected));
  const std::error_code implicit = Errc::rejected;  // via is_error_code_enum
  EXPECT_EQ(implicit, code);
}

TEST(Errc, CancelledComparesEqualToOperationCanceled) {
  const std::error_code code = Errc::cancelled;
  EXPECT_EQ(code, std::errc::operation_canceled);
  EXPECT_NE(code, std::errc::timed_out);
}

TEST(Errc, TimedOutComparesEqualToStdTimedOut) {
  const std::error_code code = Errc::timed_out;
  EXPECT_EQ(code, std::errc::timed_out);
  EXPECT_NE(code, std::errc::operation_canceled);
}

TEST(Errc, OtherCodesMatchNoStandardCondition) {
  for (Errc e : {Errc::rejected, Errc::broken_promise, Errc::already_retrieved, Errc::no_state}) {
    const std::error_code code = e;
    EXPECT_NE(code, std::errc::operation_canceled);
    EXPECT_NE(code, std::errc::timed_out);
    EXPECT_EQ(code.default_error_condition().category(), error_category());
  }
}

TEST(Errc, EveryCodeHasItsOwnMessage) {
  std::set<std::string> messages;
  for (Errc e : {Errc::cancelled, Errc::timed_out, Errc::rejected, Errc::broken_promise,
                 Errc::already_retrieved, Errc::no_state}) {
    const std::string message = make_error_code(e).message();
    EXPECT_FALSE(message.empty());
    EXPECT_TRUE(messages.insert(message).second) << message;
  }
}

TEST(TaskError, CarriesItsCode) {
  const TaskError error(make_error_code(Errc::no_state));
  EXPECT_EQ(error.code(), Errc::no_state);
  EXPECT_NE(std::string(error.what()).find(make_error_code(Errc::no_state).message()),
            std::string::npos);
}

TEST(OperationCancelled, IsATaskErrorWithCodeCancelled) {
  try {
    throw OperationCancelled();
  } catch (const TaskError& e) {
    EXPECT_EQ(e.code(), Errc::cancelled);
    EXPECT_EQ(e.code(), std::errc::operation_canceled);
  }
}

}  // namespace
}  // namespace quell
