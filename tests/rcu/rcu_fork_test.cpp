// fork() and RCU (src/rcu/rcu.hpp "fork"): forks from several threads while others are inside
// read sections, register and unregister, call synchronize_rcu and queue call_rcu and
// kfree_rcu work.  Neither the parent nor the child may hang: the child must be able to
// synchronize_rcu, call_rcu, rcu_barrier, kfree_rcu and exit(0) within a deadline (alarm in
// the child, a waitpid deadline in the parent).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uslub/rcu.h>
#include <uslub/slab.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "fork_child_threads.hpp"
#include "kmalloc/kmalloc.hpp"
#include "platform/platform.hpp"
#include "process.hpp"
#include "rcu/rcu.hpp"
#include "slab/slab.hpp"
#include "test_support.hpp"

namespace uslub {
namespace {

using namespace std::chrono_literals;

// What the malloc drop-in's constructor does (this test links the core only): the slab
// layer's fork handlers, then RCU's, so that RCU's prepare runs first.
__attribute__((constructor)) void register_fork_handlers_like_malloc() {
  platform::register_atfork(slab_fork_prepare, slab_fork_parent, slab_fork_child);
  rcu_register_fork_handlers();
}

struct node {
  long value;
  uslub_rcu_head rh;
};

std::atomic<int> g_child_cb{0};
void child_cb(uslub_rcu_head*) {
  g_child_cb.fetch_add(1);
}

std::atomic<long> g_parent_cb{0};
void parent_cb(uslub_rcu_head* h) {
  g_parent_cb.fetch_add(1);
  delete reinterpret_cast<node*>(reinterpret_cast<char*>(h) - offsetof(node, rh));
}

// What a child does: every RCU operation once, then exit(0).  Exit code 3 if a callback did
// not run; SIGALRM (the deadline) if anything hangs.
[[noreturn]] void child_body() {
  alarm(20);
  uslub_synchronize_rcu();
#if USLUB_ASAN || USLUB_TSAN
  // The sanitizers' heaps are not fork-safe while other threads allocate: a thread the child
  // starts (liburcu's call_rcu worker: call_rcu, rcu_barrier, kfree_rcu) allocates from the
  // sanitizer's heap in its start-up and can hang on an allocator lock some parent thread held
  // at the fork (seen: ASan's SizeClassAllocator64 mutex, under AsanThread::Init).  So here the
  // child only uses what starts no thread; the build without sanitizers runs all of it.
  uslub_rcu_read_lock();
  uslub_rcu_read_unlock();
  _exit(0);
#endif
  uslub_rcu_head heads[8];
  for (auto& h : heads) uslub_call_rcu(&h, &child_cb);
  uslub_rcu_read_lock();
  uslub_rcu_read_unlock();
  kvfree_rcu_mightsleep(kmalloc(64, 0));
  auto* n = static_cast<node*>(kmalloc(sizeof(node), 0));
  kfree_rcu(n, rh);
  uslub_rcu_barrier();
  uslub_synchronize_rcu();
  if (g_child_cb.load() != 8) _exit(3);
  std::thread t([] {  // a new thread registers and unregisters in the child
    uslub_rcu_read_lock();
    uslub_rcu_read_unlock();
  });
  t.join();
  uslub_synchronize_rcu();
  exit(0);
}

// Waits for a forked child (30 s at most; a hung one fails with its threads' stacks).
void expect_child_ok(pid_t pid) {
  test::expect_child_exits_ok(pid, 30s, test::kCheckChildStatus);
}

TEST(RcuFork, ForkFromSeveralThreadsWhileOthersReadQueueAndRegister) {
  kmem_cache* s = kmem_cache_create("rcu-fork", sizeof(node), 0, SLAB_NO_MERGE, nullptr);
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  for (int i = 0; i < 2; ++i)  // readers, some queuing from inside their section
    workers.emplace_back([&, i] {
      while (!stop.load(std::memory_order_relaxed)) {
        uslub_rcu_read_lock();
        // Not throttled inside a section (kfree_rcu cannot wait there): keep it modest.
        if (i == 0 && kfree_rcu_get_stats().pending < 100000)
          kfree_rcu(static_cast<node*>(kmem_cache_alloc(s, 0)), rh);
        uslub_rcu_read_unlock();
      }
    });
  workers.emplace_back([&] {  // call_rcu, at most ~10000 callbacks behind
    long queued = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      auto* n = new node;
      uslub_call_rcu(&n->rh, &parent_cb);
      while (++queued - g_parent_cb.load() > 10000 && !stop.load(std::memory_order_relaxed))
        std::this_thread::sleep_for(1ms);
    }
  });
  workers.emplace_back([&] {  // kfree_rcu and the headless form
    while (!stop.load(std::memory_order_relaxed)) {
      kfree_rcu(static_cast<node*>(kmem_cache_alloc(s, 0)), rh);
      kvfree_rcu_mightsleep(kmalloc(32, 0));
    }
  });
  workers.emplace_back([&] {  // grace periods
    while (!stop.load(std::memory_order_relaxed)) uslub_synchronize_rcu();
  });
  workers.emplace_back([&] {  // threads that register and exit (unregister)
    while (!stop.load(std::memory_order_relaxed)) {
      std::thread t([] {
        uslub_rcu_read_lock();
        uslub_rcu_read_unlock();
      });
      t.join();
    }
  });
  std::this_thread::sleep_for(20ms);
  std::vector<std::thread> forkers;
  for (int f = 0; f < 3; ++f)
    forkers.emplace_back([] {
      for (int i = 0; i < 4; ++i) {
        pid_t pid = fork();
        if (pid == 0) child_body();
        ASSERT_GT(pid, 0);
        expect_child_ok(pid);
      }
    });
  for (auto& t : forkers) t.join();
  stop = true;
  for (auto& t : workers) t.join();
  uslub_rcu_barrier();  // the parent still works too
  EXPECT_EQ(kfree_rcu_get_stats().pending, 0);
  kmem_cache_destroy(s);
}

// A deadline for the whole test: a fork whose prepare handler deadlocks never returns, so the
// forking thread cannot report it; this thread does (and aborts: the suite fails, not hangs).
class watchdog {
 public:
  explicit watchdog(const char* what, std::chrono::seconds deadline = 60s)
      : t_([this, what, deadline] {
          auto end = std::chrono::steady_clock::now() + deadline;
          while (!done_.load()) {
            if (std::chrono::steady_clock::now() > end) {
              fprintf(stderr, "%s: still running after %llds: deadlock\n", what,
                      static_cast<long long>(deadline.count()));
              abort();
            }
            std::this_thread::sleep_for(10ms);
          }
        }) {}
  ~watchdog() {
    done_ = true;
    t_.join();
  }

 private:
  std::atomic<bool> done_{false};
  std::thread t_;
};

// discard_slab of a SLAB_TYPESAFE_BY_RCU cache queues the slab with call_rcu16, which enters
// the fork gate.  Shrink, destroy and malloc_trim discard under flush_mutex / slab_mutex, and
// the fork's prepare handler closes the gate before it takes those mutexes: a shrinker blocked
// on the closed gate while holding flush_mutex, and a fork waiting for flush_mutex, wait for
// each other for good.  Here threads create, fill, empty, shrink and destroy type-safe caches
// (and one keeps the gate busy with grace periods, so it drains slowly) while another forks;
// the window is narrow (this never hung in 3 runs before the fix: the next test is the
// deterministic form, which did every time).
TEST(RcuFork, ForkWhileOtherThreadsShrinkAndDestroyTypesafeCaches) {
  watchdog wd("ForkWhileOtherThreadsShrinkAndDestroyTypesafeCaches");
  std::atomic<bool> stop{false};
  std::atomic<long> cycles{0};
  std::vector<std::thread> workers;
  for (int w = 0; w < 2; ++w)
    workers.emplace_back([&, w] {
      static void* objs[2][2048];
      char name[32];
      for (int i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        snprintf(name, sizeof name, "rcu-fork-tsrcu-%d-%d", w, i % 4);
        kmem_cache* s = kmem_cache_create(name, 200, 0, SLAB_TYPESAFE_BY_RCU, nullptr);
        ASSERT_NE(s, nullptr);
        for (int round = 0; round < (w == 0 ? 1 : 4); ++round) {
          for (auto& o : objs[w]) o = kmem_cache_alloc(s, 0);
          for (auto& o : objs[w]) kmem_cache_free(s, o);
          if (w == 1) kmem_cache_shrink(s);  // empty slabs leave under flush_mutex
        }
        kmem_cache_destroy(s);  // ... and under slab_mutex
        cycles.fetch_add(1);
      }
    });
  workers.emplace_back([&] {
    while (!stop.load(std::memory_order_relaxed)) uslub_synchronize_rcu();
  });
  while (cycles.load() < 2) std::this_thread::sleep_for(1ms);
  for (int i = 0; i < 60; ++i) {
    pid_t pid = fork();
    if (pid == 0) {
      alarm(20);
      // The child can still shrink and destroy a type-safe cache (call_rcu16, rcu_barrier).
      kmem_cache* s =
          kmem_cache_create("rcu-fork-tsrcu-child", 200, 0, SLAB_TYPESAFE_BY_RCU, nullptr);
      static void* v[2048];
      for (auto& o : v) o = kmem_cache_alloc(s, 0);
      for (auto& o : v) kmem_cache_free(s, o);
      kmem_cache_shrink(s);
      kmem_cache_destroy(s);
      _exit(0);
    }
    ASSERT_GT(pid, 0);
    expect_child_ok(pid);
  }
  stop = true;
  for (auto& t : workers) t.join();
  EXPECT_GT(cycles.load(), 2);
}

// The same, made deterministic: a shrink under slab_mutex (malloc_trim's shape:
// for_each_kmem_cache) that discards type-safe slabs after a fork has begun.
struct trim_arg {
  kmem_cache* s;
  std::atomic<int>* phase;
};
void shrink_if_ours(kmem_cache* c, void* arg) {
  auto* a = static_cast<trim_arg*>(arg);
  if (c != a->s) return;
  a->phase->store(1);                                           // slab_mutex held: fork now
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // its prepare is under way
  kmem_cache_shrink(c);  // discard_slab -> call_rcu16, still under slab_mutex
}

TEST(RcuFork, ForkWhileATrimDiscardsTypesafeSlabsUnderSlabMutex) {
  watchdog wd("ForkWhileATrimDiscardsTypesafeSlabsUnderSlabMutex");
  kmem_cache* s = kmem_cache_create("rcu-fork-trim", 200, 0, SLAB_TYPESAFE_BY_RCU, nullptr);
  ASSERT_NE(s, nullptr);
  for (int round = 0; round < 3; ++round) {
    static void* v[4096];
    for (auto& o : v) o = kmem_cache_alloc(s, 0);
    for (auto& o : v) kmem_cache_free(s, o);
    std::atomic<int> phase{0};
    unsigned long queued = rcu_get_stats().callbacks_queued;
    std::thread trimmer([&] {
      trim_arg a{s, &phase};
      for_each_kmem_cache(&shrink_if_ours, &a);
    });
    while (phase.load() == 0) std::this_thread::yield();
    pid_t pid = fork();
    if (pid == 0) _exit(0);
    ASSERT_GT(pid, 0);
    trimmer.join();
    expect_child_ok(pid);
    EXPECT_GT(rcu_get_stats().callbacks_queued, queued) << "the shrink discarded no slab";
  }
  kmem_cache_destroy(s);
}

TEST(RcuFork, ChildDoesNotWaitForAReaderThatWasInsideItsSectionAtFork) {
  std::atomic<int> phase{0};
  std::thread reader([&] {
    uslub_rcu_read_lock();
    phase = 1;
    while (phase.load() != 2) std::this_thread::sleep_for(1ms);
    uslub_rcu_read_unlock();
  });
  while (phase.load() != 1) std::this_thread::yield();
  pid_t pid = fork();
  if (pid == 0) child_body();  // that reader does not exist here: grace periods must end
  ASSERT_GT(pid, 0);
  expect_child_ok(pid);
  phase = 2;
  reader.join();
  uslub_synchronize_rcu();
}

TEST(RcuFork, ForkInsideAReadSectionIsReported) {
  uslub_synchronize_rcu();
  test::report_capture cap;
  uslub_rcu_read_lock();
  pid_t pid = fork();
  if (pid == 0) _exit(0);  // RCU is not usable here (documented); just leave
  uslub_rcu_read_unlock();
  ASSERT_GT(pid, 0);
  expect_child_ok(pid);
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(0), "uslub: BUG rcu: fork in a read-side section");
  uslub_synchronize_rcu();  // the parent is unaffected
}

}  // namespace
}  // namespace uslub
