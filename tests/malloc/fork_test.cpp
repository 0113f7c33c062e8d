// fork() and the malloc drop-in, held to glibc's behaviour (this suite links all of libuslub.a,
// so every malloc in the process is uslub's):
//   - fork while other threads allocate (every size class, large and huge blocks, aligned
//     blocks, realloc, malloc_trim, threads starting and exiting), from several threads at once;
//   - fork from a signal handler that interrupted malloc or free on the same thread (glibc: the
//     fork completes; uslub used to wait in its prepare handler for a lock the interrupted
//     malloc held: sync/preempt.hpp).
// Every scenario runs under a deadline: a hang is reported (with the stuck process's stacks)
// and fails the test instead of hanging the suite.
#include <malloc.h>
#include <signal.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "process.hpp"
#include "test_support.hpp"

namespace uslub::test {
namespace {

using namespace std::chrono_literals;

// One round of mixed allocations: small and medium classes, large (page allocator) and huge
// (mmap) blocks, aligned blocks, realloc; occasionally malloc_trim (slab_mutex, flush_mutex,
// the page allocator's reclaim).
void churn(unsigned& r, void** v, int n) {
  for (int i = 0; i < n; ++i) {
    r = r * 1103515245 + 12345;
    free(v[i]);
    std::size_t sz = (r >> 8) % ((r & 1) ? 300 : 70000) + 1;
    switch ((r >> 4) & 15) {
      case 0:
        v[i] = realloc(malloc(sz), sz / 2 + 1);
        break;
      case 1: {
        void* p = nullptr;
        v[i] = posix_memalign(&p, std::size_t{64} << (r & 7), sz) == 0 ? p : nullptr;
        break;
      }
      case 2:
        v[i] = (r & 0x300) == 0 ? malloc(5u << 20) : calloc(1, sz);
        break;
      default:
        v[i] = malloc(sz);
    }
    if (v[i]) static_cast<char*>(v[i])[0] = 1;
  }
  if ((r & 255) == 7) malloc_trim(0);
}

TEST(MallocFork, ForkFromSeveralThreadsWhileOthersAllocate) {
  pid_t scenario = fork();  // in a child of its own: a hang there fails this test, not the suite
  ASSERT_GE(scenario, 0);
  if (scenario == 0) {
    std::atomic<bool> stop{false};
    std::atomic<int> bad{0};
    std::vector<std::thread> ts;
    for (int t = 0; t < 4; ++t)
      ts.emplace_back([&, t] {
        unsigned r = 7919u * (t + 1);
        static void* v[4][128];
        while (!stop.load(std::memory_order_relaxed)) churn(r, v[t], 128);
        for (void* p : v[t]) free(p);
      });
    ts.emplace_back([&] {  // threads starting and exiting (their TLS and stacks)
      while (!stop.load(std::memory_order_relaxed)) std::thread([] { free(malloc(100)); }).join();
    });
    std::vector<std::thread> forkers;
    for (int f = 0; f < 3; ++f)
      forkers.emplace_back([&] {
        for (int i = 0; i < 15; ++i) {
          pid_t pid = fork();
          if (pid == 0) {
            alarm(20);  // a deadlocked child dies of SIGALRM
            unsigned r = 1;
            static void* v[256];
            for (int k = 0; k < 20; ++k) churn(r, v, 256);
            for (void* p : v) free(p);
            std::thread([] { free(malloc(1000)); }).join();
            _exit(0);
          }
          int status = 0;
          if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
              WEXITSTATUS(status) != 0)
            bad.fetch_add(1);
        }
      });
    for (auto& t : forkers) t.join();
    stop = true;
    for (auto& t : ts) t.join();
    _exit(bad.load() == 0 ? 0 : 1);
  }
  expect_child_exits_ok(scenario, 120s);
}

// ---- fork from a signal handler -----------------------------------------------------------

volatile sig_atomic_t g_forks = 0, g_fork_failures = 0, g_in_grandchild = 0;
bool g_child_returns = false;  // the grandchild returns from the handler and allocates again

void fork_in_handler(int) {
  int saved = errno;
  pid_t pid = fork();
  if (pid == 0) {
    if (!g_child_returns) _exit(0);
    itimerval off{};
    setitimer(ITIMER_REAL, &off, nullptr);  // (async-signal-safe) no more forks down here
    signal(SIGALRM, SIG_IGN);
    g_in_grandchild = 1;  // back in main's loop: the interrupted malloc/free completes first
    errno = saved;
    return;
  }
  int status = 0;
  if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status))
    g_fork_failures = g_fork_failures + 1;
  g_forks = g_forks + 1;
  errno = saved;
}

// The scenario process: a one-shot timer interrupts this thread's mallocs and frees (once per
// round of 64, at a random point); its handler forks and waits for the child.  other_threads
// allocate too (with SIGALRM blocked, so it is always this thread that is interrupted).
// Exits 0 once `want` forks completed.
[[noreturn]] void signal_fork_scenario(int other_threads, bool child_returns, int want) {
  g_child_returns = child_returns;
  std::atomic<bool> stop{false};
  std::vector<std::thread> ts;
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGALRM);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  for (int t = 0; t < other_threads; ++t)
    ts.emplace_back([&, t] {
      unsigned r = 31u * (t + 1);
      static void* v[4][128];
      while (!stop.load(std::memory_order_relaxed)) churn(r, v[t], 128);
      for (void* p : v[t]) free(p);
    });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  struct sigaction sa {};
  sa.sa_handler = &fork_in_handler;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGALRM, &sa, nullptr);
  unsigned r = 12345;
  static void* v[256];
  while (g_forks < want) {
    // One shot, somewhere in the next round (a periodic timer whose handler outlasts its
    // period would interrupt one malloc for ever).
    itimerval it{{0, 0}, {0, static_cast<suseconds_t>(50 + r % 1000)}};
    setitimer(ITIMER_REAL, &it, nullptr);
    churn(r, v, 64);
    if (g_in_grandchild) {
      // The grandchild (single-threaded parent only): its heap is the parent's, with the
      // interrupted operation completed; it allocates and frees again, then leaves.
      for (int k = 0; k < 3; ++k) churn(r, v, 64);
      for (void* p : v) free(p);
      _exit(0);
    }
  }
  itimerval off{};
  setitimer(ITIMER_REAL, &off, nullptr);
  stop = true;
  for (auto& t : ts) t.join();
  for (void* p : v) free(p);
  _exit(g_fork_failures == 0 ? 0 : 2);
}

TEST(MallocFork, ForkFromASignalHandlerThatInterruptedMalloc) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) signal_fork_scenario(0, true, 100);
  expect_child_exits_ok(pid, 60s);
}

TEST(MallocFork, ForkFromASignalHandlerWhileOtherThreadsAllocate) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) signal_fork_scenario(2, false, 100);
  expect_child_exits_ok(pid, 60s);
}

}  // namespace
}  // namespace uslub::test
