#pragma once

#include <cstddef>

// For the library's hot thread-locals (the current worker, task and
// coroutine): in a shared library the default model calls __tls_get_addr on
// every access; initial-exec is one %fs-relative load. It takes a few bytes
// of the static TLS block that glibc keeps spare for libraries, so dlopen()
// still works.
#define QUELL_FAST_TLS [[gnu::tls_model("initial-exec")]]

namespace quell::detail {

// The one cache-line size quell pads to. A fixed constant rather than
// std::hardware_destructive_interference_size, whose value may differ between
// translation units compiled with different flags (and g++ warns about it).
inline constexpr std::size_t kCacheLine = 64;

// Tells the core we are spinning: lowers power and lets a sibling
// hyper-thread run. Only ever used inside short, bounded spins.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  asm volatile("yield" ::: "memory");
#endif
}

// Reports a broken invariant and aborts; see QUELL_INVARIANT.
[[noreturn]] void invariant_failed(const char* id, const char* condition, const char* file,
                                   int line) noexcept;

}  // namespace quell::detail

// Checks an invariant that a comment states under its id (T1, Q2, D1...):
// in builds without NDEBUG (the debug and CI builds) a broken one aborts with
// its id, condition and place; release builds compile the check away.
#ifdef NDEBUG
#define QUELL_INVARIANT(id, ...) static_cast<void>(0)
#else
#define QUELL_INVARIANT(id, ...)                                                         \
  ((__VA_ARGS__) ? static_cast<void>(0)                                                 \
                 : ::quell::detail::invariant_failed(#id, #__VA_ARGS__, __FILE__, __LINE__))
#endif
