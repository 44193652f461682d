#include "quell/error.hpp"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "quell/detail/config.hpp"

namespace quell {
namespace {

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "quell"; }

  std::string message(int value) const override {
    switch (static_cast<Errc>(value)) {
      case Errc::cancelled: return "operation cancelled";
      case Errc::timed_out: return "task timed out";
      case Errc::rejected: return "task rejected";
      case Errc::broken_promise: return "task destroyed without an outcome";
      case Errc::already_retrieved: return "result already retrieved";
      case Errc::no_state: return "future has no state";
    }
    return "unknown quell error";
  }

  // Maps the two codes that have a standard meaning onto the generic
  // category, which makes them compare equal to std::errc values.
  std::error_condition default_error_condition(int value) const noexcept override {
    switch (static_cast<Errc>(value)) {
      case Errc::cancelled: return std::errc::operation_canceled;
      case Errc::timed_out: return std::errc::timed_out;
      default: return {value, *this};
    }
  }
};

}  // namespace

const std::error_category& error_category() noexcept {
  static const Category category;
  return category;
}

std::error_code make_error_code(Errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

OperationCancelled::OperationCancelled() : TaskError(make_error_code(Errc::cancelled)) {}

}  // namespace quell

namespace quell::detail {

void invariant_failed(const char* id, const char* condition, const char* file, int line) noexcept {
  std::fprintf(stderr, "quell: invariant %s broken at %s:%d: %s\n", id, file, line, condition);
  std::abort();
}

}  // namespace quell::detail
