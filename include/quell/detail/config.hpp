#pragma once

#include <cstddef>

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

}  // namespace quell::detail
