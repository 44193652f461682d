#pragma once

// Knowing that a thread is blocked, not about to block: a test of a wake-up
// is only sharp if the sleeper was already asleep when the wake came. Linux
// reports each thread's scheduler state in /proc/self/task/<tid>/stat; 'S'
// means it sleeps in the kernel (here: a futex wait), not that it runs or
// waits for a CPU.

#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>

namespace quell::test {

// The kernel's id of the calling thread.
inline pid_t current_tid() { return static_cast<pid_t>(::syscall(SYS_gettid)); }

// True if thread `tid` of this process is sleeping in the kernel.
inline bool sleeping_in_kernel(pid_t tid) {
  std::ifstream stat("/proc/self/task/" + std::to_string(tid) + "/stat");
  std::string line;
  std::getline(stat, line);
  // "tid (comm) S ...": the name may hold spaces and parentheses; the state
  // follows the last ')'.
  const auto paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'S';
}

// Waits until thread `tid` sleeps in the kernel. False if `gone()` turns
// true first (the thread ended, or will not sleep) or after `guard` (a
// failure guard, not a timing assumption). Polls: nothing signals that a
// thread fell asleep.
template <class Gone>
bool wait_until_sleeping(pid_t tid, Gone gone, std::chrono::seconds guard) {
  const auto give_up = std::chrono::steady_clock::now() + guard;
  while (!sleeping_in_kernel(tid)) {
    if (gone() || std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::yield();
  }
  return true;
}

}  // namespace quell::test
