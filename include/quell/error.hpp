#pragma once

// Error codes and exceptions of quell.
//
// `Errc` is a `std::error_code` enum in its own category ("quell").
// `Errc::cancelled` compares equal to `std::errc::operation_canceled` and
// `Errc::timed_out` to `std::errc::timed_out`, so code that only knows the
// standard conditions can still test quell's errors.
//
// `TaskError` is what a future throws when a task has no value to give
// (rejected, timed out, already retrieved, no state). `OperationCancelled`,
// the `TaskError` for `Errc::cancelled`, is also what a task throws to say
// "I stopped because I was asked to": such a task ends `cancelled`, not
// `failed`.
//
// Thread safety: everything here is immutable and thread-safe.

#include <system_error>
#include <type_traits>

namespace quell {

enum class Errc {
  cancelled = 1,
  timed_out,
  rejected,
  broken_promise,
  already_retrieved,
  no_state,
};

const std::error_category& error_category() noexcept;
std::error_code make_error_code(Errc e) noexcept;

// Its constructors are std::system_error's: they may throw std::bad_alloc
// (building what()), and nothing else.
class TaskError : public std::system_error {
 public:
  using system_error::system_error;
};

class OperationCancelled : public TaskError {
 public:
  // May throw std::bad_alloc, as TaskError's constructors.
  OperationCancelled();
};

}  // namespace quell

template <>
struct std::is_error_code_enum<quell::Errc> : std::true_type {};
