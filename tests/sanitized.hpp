#pragma once

// Whether this test binary runs under ThreadSanitizer or AddressSanitizer
// (g++ defines __SANITIZE_*__, clang++ answers __has_feature): race tests run
// fewer rounds there, as each round costs 5-20 times more.

namespace quell::test {

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
#else
inline constexpr bool kSanitized = false;
#endif

// AddressSanitizer alone: its quarantine keeps freed blocks resident, so a
// process's RSS grows with every allocation however well it frees.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kAddressSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kAddressSanitized = true;
#else
inline constexpr bool kAddressSanitized = false;
#endif
#else
inline constexpr bool kAddressSanitized = false;
#endif

}  // namespace quell::test
