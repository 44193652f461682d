#pragma once

// Names a thread for debuggers, top -H and /proc/<pid>/task/<tid>/comm,
// where the platform has pthread_setname_np(thread, name) (glibc, musl,
// FreeBSD; src/meson.build checks and sets QUELL_THREAD_NAMES). Elsewhere the
// thread keeps the name it inherited. Linux takes at most 15 characters.

#include <thread>

#ifndef QUELL_THREAD_NAMES
#error "QUELL_THREAD_NAMES is set by src/meson.build"
#endif

#if QUELL_THREAD_NAMES
#include <pthread.h>
#endif

namespace quell::detail {

inline void set_thread_name(std::thread& thread, const char* name) noexcept {
#if QUELL_THREAD_NAMES
  pthread_setname_np(thread.native_handle(), name);
#else
  static_cast<void>(thread);
  static_cast<void>(name);
#endif
}

// The same for the calling thread.
inline void set_current_thread_name(const char* name) noexcept {
#if QUELL_THREAD_NAMES
  pthread_setname_np(pthread_self(), name);
#else
  static_cast<void>(name);
#endif
}

}  // namespace quell::detail
