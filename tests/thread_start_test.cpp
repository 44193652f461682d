// ThreadPool construction when its threads cannot be started (API.md §12
// "Faults"): the constructor throws std::system_error after joining every
// thread it started; nothing is left running and nothing terminates.
//
// The failure is real, with no hook in the library: a forked child switches
// to an unprivileged user and lowers its soft RLIMIT_NPROC, so that
// pthread_create fails with EAGAIN after a chosen number of threads. The
// child reports through its exit status (std::terminate shows as SIGABRT);
// the parent asserts on it.
#include "quell/thread_pool.hpp"

#include <dirent.h>
#include <grp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <latch>
#include <ostream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "pool_test_support.hpp"

#if defined(__SANITIZE_ADDRESS__)
#define QUELL_TEST_LEAK_CHECK 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define QUELL_TEST_LEAK_CHECK 1
#endif
#endif
#ifdef QUELL_TEST_LEAK_CHECK
#include <sanitizer/lsan_interface.h>
#endif

namespace quell {
namespace {

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;
constexpr std::size_t kWorkers = 64;
// Kills a child that hangs (SIGALRM): longer than all its failure guards.
constexpr unsigned kChildAlarmSeconds = 3 * static_cast<unsigned>(test::kGuard.count());

// The child's exit codes: clear of 1, 23 and 66, which sanitizers exit with.
enum Outcome : int {
  kPassed = 0,
  kNoUnprivilegedUser = 40,
  kSetupFailed,
  kNoHeadroom,
  kDidNotThrow,
  kOtherException,
  kNotEagain,
  kThreadsLeft,
  kNoRecovery,
  kThreadsLeftAfterRecovery,
  kLeaked,
};

std::string describe(int code) {
  switch (code) {
    case kSetupFailed:
      return "the child's setup failed (/proc, thread start or rlimit)";
    case kNoHeadroom:
      return "RLIMIT_NPROC could not be set to allow the wanted number of threads";
    case kDidNotThrow:
      return "the constructor did not throw although a thread could not start";
    case kOtherException:
      return "the constructor threw something other than std::system_error";
    case kNotEagain:
      return "the std::system_error's code is not EAGAIN";
    case kThreadsLeft:
      return "threads were left running after the constructor threw";
    case kNoRecovery:
      return "no pool could be made and used once the limit was raised again";
    case kThreadsLeftAfterRecovery:
      return "threads were left after the recovered pool ended";
    case kLeaked:
      return "LeakSanitizer found a leak";
    default:
      return "an unexpected exit code (a sanitizer report? see stderr)";
  }
}

// The threads of this process; -1 if /proc cannot be read.
int thread_count() {
  DIR* dir = opendir("/proc/self/task");
  if (dir == nullptr) return -1;
  int count = 0;
  while (const dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(dir);
  return count;
}

// pthread_join returns once a thread has cleared its tid, a moment before the
// kernel reaps it: until then it is still listed in /proc and still counts
// against RLIMIT_NPROC. Reaping needs nothing more from us, so this waits.
bool threads_back_to(int count) {
  return test::spin_until_true([count] { return thread_count() == count; });
}

// How many threads this process can start now, up to `most`: starts threads
// that wait until one fails, then lets them end. -1 if a start fails other
// than with EAGAIN, or the threads are not gone in time.
int headroom(int most, int baseline) {
  std::latch release(1);
  std::vector<std::thread> held;
  held.reserve(static_cast<std::size_t>(most));
  bool failed = false;
  while (held.size() < static_cast<std::size_t>(most)) {
    try {
      held.emplace_back([&release] { release.wait(); });
    } catch (const std::system_error& e) {
      failed = e.code() != std::errc::resource_unavailable_try_again;
      break;
    }
  }
  release.count_down();
  for (std::thread& thread : held) thread.join();
  if (failed || !threads_back_to(baseline)) return -1;
  return static_cast<int>(held.size());
}

// Lowers the soft RLIMIT_NPROC so that exactly `wanted` more threads can
// start. The limit counts every task of the real user on the system, ours and
// any other process's, so the headroom is measured rather than computed.
bool limit_headroom(int wanted, int baseline) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NPROC, &limit) != 0) return false;
  // Our own tasks count: with no other task of the user, this is exact.
  rlim_t soft = static_cast<rlim_t>(baseline + wanted);
  for (int attempt = 0; attempt < 8; ++attempt) {
    limit.rlim_cur = soft;
    if (setrlimit(RLIMIT_NPROC, &limit) != 0) return false;
    const int got = headroom(wanted + 1, baseline);
    if (got < 0) return false;
    if (got == wanted) return true;
    // Other tasks of the user came or went: move the limit by the difference.
    soft = soft + static_cast<rlim_t>(wanted) - static_cast<rlim_t>(got);
  }
  return false;
}

// The child: `wanted` threads can start, the pool needs kWorkers + 1 (its
// timer thread and workers), so the constructor meets a failure after
// starting `wanted` of them. Never returns.
[[noreturn]] void run_child(int wanted) {
  alarm(kChildAlarmSeconds);
  // A first thread starts what sanitizer runtimes start lazily (TSan's
  // background thread), so that the baseline holds them.
  pid_t first = 0;
  std::thread([&first] { first = gettid(); }).join();
  const std::string first_entry = "/proc/self/task/" + std::to_string(first);
  if (!test::spin_until_true([&] { return access(first_entry.c_str(), F_OK) != 0; })) {
    _exit(kSetupFailed);
  }
  const int baseline = thread_count();
  if (baseline < 1) _exit(kSetupFailed);
  rlimit original{};
  if (getrlimit(RLIMIT_NPROC, &original) != 0) _exit(kSetupFailed);

  // RLIMIT_NPROC binds neither root nor CAP_SYS_RESOURCE; leaving uid 0 drops
  // every capability. Supplementary groups are dropped where permitted.
  (void)setgroups(0, nullptr);
  if (setgid(kNogroup) != 0 || setuid(kNobody) != 0) _exit(kNoUnprivilegedUser);
  // A uid change makes the process undumpable, which puts its /proc entries
  // (and LeakSanitizer's ptrace of it) out of its own reach.
  if (prctl(PR_SET_DUMPABLE, 1) != 0) _exit(kSetupFailed);
  if (thread_count() != baseline) _exit(kSetupFailed);

  if (!limit_headroom(wanted, baseline)) _exit(kNoHeadroom);
  ThreadPoolConfig config;
  config.thread_count = kWorkers;
  config.thread_name = "tstart";
  Outcome outcome = kDidNotThrow;
  try {
    ThreadPool pool(config);
  } catch (const std::system_error& e) {
    outcome = e.code() == std::errc::resource_unavailable_try_again ? kPassed : kNotEagain;
  } catch (...) {
    outcome = kOtherException;
  }
  if (outcome != kPassed) _exit(outcome);
  if (!threads_back_to(baseline)) _exit(kThreadsLeft);

  // An unprivileged process may raise its soft limit up to the hard one.
  if (setrlimit(RLIMIT_NPROC, &original) != 0) _exit(kSetupFailed);
  try {
    ThreadPool pool(config);
    if (pool.submit([] { return 7; }).get() != 7) _exit(kNoRecovery);
  } catch (...) {
    _exit(kNoRecovery);
  }
  if (!threads_back_to(baseline)) _exit(kThreadsLeftAfterRecovery);
#ifdef QUELL_TEST_LEAK_CHECK
  // _exit skips LeakSanitizer's check at exit: run it here.
  if (__lsan_do_recoverable_leak_check() != 0) _exit(kLeaked);
#endif
  _exit(kPassed);
}

struct Case {
  int threads_that_start;  // before the failing one
  const char* name;
};

void PrintTo(const Case& c, std::ostream* out) { *out << c.name; }

class ThreadStartFailure : public ::testing::TestWithParam<Case> {};

TEST_P(ThreadStartFailure, TheConstructorThrowsSystemErrorAfterJoiningEveryThreadItStarted) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root, to switch to an unprivileged user";
  // A fork copies only the calling thread: locks held by others would stay
  // held in the child, and TSan refuses threads after a multithreaded fork.
  ASSERT_EQ(thread_count(), 1) << "the test process must be single-threaded to fork";
  const pid_t pid = fork();
  ASSERT_NE(pid, -1) << std::strerror(errno);
  if (pid == 0) run_child(GetParam().threads_that_start);

  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid) << std::strerror(errno);
  if (WIFEXITED(status) && WEXITSTATUS(status) == kNoUnprivilegedUser) {
    GTEST_SKIP() << "cannot switch to uid/gid 65534 here";
  }
  if (WIFSIGNALED(status)) {
    const int signal = WTERMSIG(status);
    FAIL() << "the child was killed by signal " << signal << " (" << strsignal(signal)
           << "): SIGABRT is std::terminate, SIGALRM a hang";
  }
  ASSERT_TRUE(WIFEXITED(status)) << "wait status " << status;
  const int code = WEXITSTATUS(status);
  EXPECT_EQ(code, kPassed) << describe(code);
}

INSTANTIATE_TEST_SUITE_P(RlimitNproc, ThreadStartFailure,
                         ::testing::Values(Case{0, "TheTimerThreadCannotStart"},
                                           Case{1, "TheFirstWorkerCannotStart"},
                                           Case{4, "TheFourthWorkerCannotStart"}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return std::string(info.param.name);
                         });

}  // namespace
}  // namespace quell
