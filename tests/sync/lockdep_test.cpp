// lockdep: seed 000's hotplug inversion is reported with both classes and both stacks; orders
// that agree and trylocks are not; recursion, unannotated same-class nesting, an unlock of a
// lock not held and too many locks are; a real AA or ABBA deadlock is reported before it
// hangs; subclass and nest-lock annotations; lockdep_assert_held() catches a caller without
// the lock.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>
#include <uslub/rcu.h>
#include <uslub/slab.h>

#include <cstdlib>

#include "sync/local_lock.hpp"
#include "sync/lockdep.hpp"
#include "sync/spinlock.hpp"
#include "test_support.hpp"

#if USLUB_LOCKDEP
namespace uslub::test {
namespace {

constinit lock_class_key cpu_hotplug_lock_key{"cpu_hotplug_lock"};
constinit lock_class_key slab_mutex_key{"slab_mutex"};
constinit lock_class_key flush_lock_key{"flush_lock"};

spinlock_t cpu_hotplug_lock{&cpu_hotplug_lock_key};
spinlock_t slab_mutex{&slab_mutex_key};
spinlock_t flush_lock{&flush_lock_key};

int count(const std::string& s, const std::string& what) {
  int n = 0;
  for (auto p = s.find(what); p != std::string::npos; p = s.find(what, p + 1)) ++n;
  return n;
}

class Lockdep : public ::testing::Test {
 protected:
  void SetUp() override { lockdep_reset(); }
  void TearDown() override { lockdep_reset(); }
};

// Seed 000, path 1: a flush work item (flush_lock) that needs the CPU list stable.
USLUB_NOINLINE void flush_all_path() {
  flush_lock.lock();
  cpu_hotplug_lock.lock();
  cpu_hotplug_lock.unlock();
  flush_lock.unlock();
}

// Path 2: CPU hotplug callback (cpu_hotplug_lock) -> slab_mutex -> flush the caches.
USLUB_NOINLINE void hotplug_path() {
  cpu_hotplug_lock.lock();
  slab_mutex.lock();
  flush_lock.lock();
  flush_lock.unlock();
  slab_mutex.unlock();
  cpu_hotplug_lock.unlock();
}

}  // namespace

TEST_F(Lockdep, HotplugInversionIsReportedWithBothClassesAndStacks) {
  report_capture cap;
  // Two threads, one after the other: no deadlock happens, the possibility is reported.
  std::thread(flush_all_path).join();
  EXPECT_EQ(cap.count(), 0u);
  std::thread(hotplug_path).join();
  ASSERT_EQ(cap.count(), 1u);
  std::string r = cap.reports()[0];
  EXPECT_EQ(cap.first_line(), "uslub: BUG lockdep: possible circular locking dependency");
  EXPECT_NE(r.find("acquiring flush_lock"), std::string::npos) << r;
  EXPECT_NE(r.find("while holding cpu_hotplug_lock"), std::string::npos) << r;
  EXPECT_NE(r.find("flush_lock -> cpu_hotplug_lock"), std::string::npos) << r;
  EXPECT_NE(r.find("slab_mutex (0x"), std::string::npos) << "held locks listed:\n" << r;
  // Both stacks: this acquisition and the first opposite one, each with frames.
  EXPECT_NE(r.find("stack of this acquisition (cpu_hotplug_lock -> flush_lock)"), std::string::npos)
      << r;
  EXPECT_NE(r.find("stack of the first flush_lock -> cpu_hotplug_lock acquisition"),
            std::string::npos)
      << r;
  EXPECT_GE(count(r, "  #0 "), 2) << r;
  EXPECT_NE(r.find("sync_lockdep_test+0x"), std::string::npos) << r;
  // One report only: repeating either path adds nothing.
  hotplug_path();
  flush_all_path();
  EXPECT_EQ(cap.count(), 1u);
}

TEST_F(Lockdep, LongerCycleIsReportedWithItsPath) {
  report_capture cap;
  cpu_hotplug_lock.lock();  // hotplug -> slab_mutex
  slab_mutex.lock();
  slab_mutex.unlock();
  cpu_hotplug_lock.unlock();
  slab_mutex.lock();  // slab_mutex -> flush_lock
  flush_lock.lock();
  flush_lock.unlock();
  slab_mutex.unlock();
  EXPECT_EQ(cap.count(), 0u);
  flush_lock.lock();  // flush_lock -> hotplug closes hotplug -> slab_mutex -> flush_lock
  cpu_hotplug_lock.lock();
  cpu_hotplug_lock.unlock();
  flush_lock.unlock();
  ASSERT_EQ(cap.count(), 1u);
  std::string r = cap.reports()[0];
  EXPECT_NE(r.find("cpu_hotplug_lock -> slab_mutex -> flush_lock"), std::string::npos) << r;
  EXPECT_EQ(count(r, "stack of the first"), 2) << r;
}

TEST_F(Lockdep, SameOrderEverywhereIsNotReported) {
  report_capture cap;
  auto nested = [] {
    for (int i = 0; i < 1000; ++i) {
      cpu_hotplug_lock.lock();
      slab_mutex.lock();
      flush_lock.lock();
      flush_lock.unlock();
      slab_mutex.unlock();
      cpu_hotplug_lock.unlock();
      slab_mutex.lock();  // a suffix of the same order
      flush_lock.lock();
      flush_lock.unlock();
      slab_mutex.unlock();
    }
  };
  std::thread a(nested), b(nested);
  a.join();
  b.join();
  EXPECT_EQ(cap.count(), 0u);
  EXPECT_TRUE(lockdep_depends(&cpu_hotplug_lock_key, &flush_lock_key));
  EXPECT_FALSE(lockdep_depends(&flush_lock_key, &cpu_hotplug_lock_key));
}

TEST_F(Lockdep, TrylockAddsNoDependency) {
  report_capture cap;
  flush_lock.lock();
  ASSERT_TRUE(cpu_hotplug_lock.try_lock());  // cannot wait, so cannot deadlock
  cpu_hotplug_lock.unlock();
  flush_lock.unlock();
  EXPECT_FALSE(lockdep_depends(&flush_lock_key, &cpu_hotplug_lock_key));
  cpu_hotplug_lock.lock();  // the opposite order, blocking: still no cycle
  flush_lock.lock();
  flush_lock.unlock();
  cpu_hotplug_lock.unlock();
  EXPECT_EQ(cap.count(), 0u);
  // A lock taken by trylock is still the source of later dependencies.
  ASSERT_TRUE(slab_mutex.try_lock());
  flush_lock.lock();
  flush_lock.unlock();
  slab_mutex.unlock();
  EXPECT_TRUE(lockdep_depends(&slab_mutex_key, &flush_lock_key));
}

TEST_F(Lockdep, SameClassNestingIsReportedUnlessAnnotated) {
  report_capture cap;
  spinlock_t a{&slab_mutex_key}, b{&slab_mutex_key};
  a.lock();
  b.lock();  // two of one class, no annotation: a second thread doing b then a deadlocks
  b.unlock();
  a.unlock();
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG lockdep: possible recursive locking detected");
  std::string r = cap.reports()[0];
  EXPECT_NE(r.find("of the same class"), std::string::npos) << r;
  EXPECT_NE(r.find("#0 slab_mutex ("), std::string::npos) << "held locks listed:\n" << r;
  // A trylock of the same class cannot wait: not reported.
  lockdep_rearm();
  a.lock();
  ASSERT_TRUE(b.try_lock());
  b.unlock();
  a.unlock();
  EXPECT_EQ(cap.count(), 1u);
}

TEST_F(Lockdep, SubclassAnnotatedNestingIsOrderCheckedAsItsOwnClass) {
  report_capture cap;
  spinlock_t a{&slab_mutex_key}, b{&slab_mutex_key};
  a.lock();
  b.lock_nested(1);  // "slab_mutex/1" inside "slab_mutex": a fixed order, not reported
  b.unlock();
  a.unlock();
  EXPECT_EQ(cap.count(), 0u);
  b.lock_nested(1);  // the opposite nesting of the two levels closes a cycle
  a.lock();
  a.unlock();
  b.unlock();
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG lockdep: possible circular locking dependency");
  EXPECT_NE(cap.reports()[0].find("slab_mutex/1 -> slab_mutex"), std::string::npos)
      << cap.reports()[0];
}

TEST_F(Lockdep, RecursiveAcquisitionIsReported) {
  report_capture cap;
  local_trylock_t l{&flush_lock_key};
  l.lock_wait();
  EXPECT_FALSE(l.try_lock());  // a failed try is no acquisition
  EXPECT_EQ(cap.count(), 0u);
  // The acquisition that would wait for itself (l.lock_wait() again) is reported before it
  // waits; checked through the hook (the lock itself would then spin forever).
  lockdep_acquire(&flush_lock_key, &l, false);
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG lockdep: possible recursive locking detected");
  EXPECT_NE(cap.reports()[0].find("which it already holds"), std::string::npos) << cap.reports()[0];
  lockdep_release(&flush_lock_key, &l);
  l.unlock();
  EXPECT_FALSE(lockdep_is_held(&l));
}

// Many locks of one class under a nest lock (fork's prepare): no report, one held entry, and
// every one of them answers "held" (by class, with its lock word taken).
TEST_F(Lockdep, NestLockHoldsManyLocksOfOneClass) {
  report_capture cap;
  constexpr int kLocks = 200;  // more than the 48 entries a thread has
  std::vector<spinlock_t> locks(kLocks);
  for (auto& l : locks) l.set_class(&flush_lock_key);
  slab_mutex.lock();
  for (auto& l : locks) l.lock_nest_lock(&slab_mutex);
  cpu_hotplug_lock.lock();  // still tracked after them
  EXPECT_TRUE(lockdep_is_held(&cpu_hotplug_lock));
  for (auto& l : locks) lockdep_assert_held(&l);
  spinlock_t other{&flush_lock_key};  // same class, not taken: not held
  EXPECT_FALSE(lockdep_is_held(&other, other.lock_class(), other.is_locked()));
  cpu_hotplug_lock.unlock();
  for (int i = kLocks; i-- > 0;) locks[static_cast<size_t>(i)].unlock();
  slab_mutex.unlock();
  EXPECT_EQ(cap.count(), 0u);
  EXPECT_FALSE(lockdep_is_held(&locks[0], &flush_lock_key, false));
  EXPECT_FALSE(lockdep_is_held(&slab_mutex));
  // Without the nest lock held, the annotation does not apply.
  locks[0].lock_nest_lock(&slab_mutex);
  locks[1].lock_nest_lock(&slab_mutex);
  locks[1].unlock();
  locks[0].unlock();
  EXPECT_EQ(cap.count(), 1u);
}

TEST_F(Lockdep, ReleaseOfALockNotHeldIsReported) {
  report_capture cap;
  spinlock_t l{&flush_lock_key};
  std::atomic<int> step{0};
  std::thread owner([&] {
    l.lock();
    step = 1;
    while (step.load() != 2) std::this_thread::yield();
  });
  while (step.load() != 1) std::this_thread::yield();
  l.unlock();  // taken by another thread
  step = 2;
  owner.join();
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG lockdep: bad unlock balance detected");
  EXPECT_NE(cap.reports()[0].find("flush_lock"), std::string::npos) << cap.reports()[0];
}

TEST_F(Lockdep, TooManyLocksIsReportedAndNeverAnswersHeld) {
  report_capture cap;
  constexpr int kLocks = 60;
  std::vector<spinlock_t> locks(kLocks);  // no class: none is nesting of one class
  for (auto& l : locks) l.lock();
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG lockdep: too many locks held");
  EXPECT_TRUE(lockdep_is_held(&locks[0]));
  EXPECT_FALSE(lockdep_is_held(&locks[kLocks - 1])) << "untracked: cannot say held";
  spinlock_t never;
  EXPECT_FALSE(lockdep_is_held(&never));
  for (int i = kLocks; i-- > 0;) locks[static_cast<size_t>(i)].unlock();
  EXPECT_FALSE(lockdep_is_held(&locks[0]));
  EXPECT_EQ(cap.count(), 1u);  // the releases balance: no "bad unlock" report
  locks[0].lock();             // tracked again
  EXPECT_TRUE(lockdep_is_held(&locks[0]));
  locks[0].unlock();
}

TEST_F(Lockdep, OutOfOrderReleaseKeepsTheHeldStack) {
  flush_lock.lock();
  slab_mutex.lock();
  flush_lock.unlock();  // not LIFO
  EXPECT_TRUE(lockdep_is_held(&slab_mutex));
  EXPECT_FALSE(lockdep_is_held(&flush_lock));
  slab_mutex.unlock();
  EXPECT_FALSE(lockdep_is_held(&slab_mutex));
}

TEST_F(Lockdep, AssertHeldReportsACallerWithoutTheLock) {
  report_capture cap;
  lockdep_assert_held(&slab_mutex);
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG lockdep: lock not held");
  std::string r = cap.reports()[0];
  EXPECT_NE(r.find("&slab_mutex"), std::string::npos) << r;
  EXPECT_NE(r.find("lockdep_test.cpp"), std::string::npos) << r;
  EXPECT_NE(r.find("  #0 "), std::string::npos) << "a stack trace:\n" << r;
  slab_mutex.lock();
  lockdep_assert_held(&slab_mutex);
  slab_mutex.unlock();
  EXPECT_EQ(cap.count(), 1u);
  // Held by another thread is not held by this one.
  slab_mutex.lock();
  std::thread([] { lockdep_assert_held(&slab_mutex); }).join();
  slab_mutex.unlock();
  EXPECT_EQ(cap.count(), 2u);
}

// Gate locks: both orders taken under one same lock instance cannot deadlock (slab_fork_prepare
// takes CPU-slot and list locks of cache after cache under slab_mutex).
constinit lock_class_key gate_key{"gate"};

void take(spinlock_t& first, spinlock_t& second) {
  first.lock();
  second.lock();
  second.unlock();
  first.unlock();
}

TEST_F(Lockdep, CycleUnderOneGateLockIsNotReported) {
  report_capture cap;
  spinlock_t gate{&gate_key};
  gate.lock();
  take(flush_lock, cpu_hotplug_lock);
  gate.unlock();
  gate.lock();
  take(cpu_hotplug_lock, flush_lock);
  gate.unlock();
  EXPECT_EQ(cap.count(), 0u);
  // The same order again without the gate: the dependency loses it and the cycle is real.
  take(flush_lock, cpu_hotplug_lock);
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_NE(cap.reports()[0].find("acquiring cpu_hotplug_lock"), std::string::npos);
}

TEST_F(Lockdep, GateMustBeTheSameLockInstance) {
  report_capture cap;
  spinlock_t gate1{&gate_key}, gate2{&gate_key};  // one class, two locks: no exclusion
  gate1.lock();
  take(flush_lock, cpu_hotplug_lock);
  gate1.unlock();
  gate2.lock();
  take(cpu_hotplug_lock, flush_lock);
  gate2.unlock();
  EXPECT_EQ(cap.count(), 1u);
}

TEST_F(Lockdep, GatedLongerCycleNeedsTheGateOnEveryEdge) {
  report_capture cap;
  spinlock_t gate{&gate_key};
  take(cpu_hotplug_lock, slab_mutex);  // ungated
  gate.lock();
  take(slab_mutex, flush_lock);
  gate.unlock();
  gate.lock();
  take(flush_lock, cpu_hotplug_lock);  // closes hotplug -> slab_mutex -> flush_lock
  gate.unlock();
  EXPECT_EQ(cap.count(), 1u) << "the hotplug -> slab_mutex edge was taken without the gate";
}

TEST_F(Lockdep, ConcurrentOppositeOrdersAreReportedOnce) {
  // Two threads add flush_lock -> cpu_hotplug_lock and the reverse at the same moment, on
  // distinct lock objects of the two classes (so nothing can really deadlock): the graph lock
  // serialises check-then-add, so the cycle is never missed and reported once.
  for (int round = 0; round < 50; ++round) {
    lockdep_reset();
    report_capture cap;
    spinlock_t f1{&flush_lock_key}, h1{&cpu_hotplug_lock_key};
    spinlock_t f2{&flush_lock_key}, h2{&cpu_hotplug_lock_key};
    std::atomic<int> ready{0};
    auto take = [&](spinlock_t& first, spinlock_t& second) {
      ready++;
      while (ready.load() < 2) {
      }
      first.lock();
      second.lock();
      second.unlock();
      first.unlock();
    };
    std::thread t1(take, std::ref(f1), std::ref(h1));
    std::thread t2(take, std::ref(h2), std::ref(f2));
    t1.join();
    t2.join();
    EXPECT_EQ(cap.count(), 1u) << "round " << round;
  }
}

// The fork path's classes are checked in their documented order: g_fork_lock, then the RCU gate
// closed, then the RCU clients' fork hooks (kfree_rcu's per-CPU locks) - and no report.
TEST(LockdepFork, ForkTakesTheRcuForkLockGateAndClientLocksInOrder) {
  report_capture cap;
  kvfree_rcu_mightsleep(kmalloc(64, 0));  // RCU and kfree_rcu in use: their fork handlers run
  uslub_rcu_barrier();
  pid_t pid = fork();
  if (pid == 0) _exit(0);
  ASSERT_GT(pid, 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_TRUE(lockdep_depends_by_name("rcu_fork_lock", "rcu_fork_gate"));
  EXPECT_TRUE(lockdep_depends_by_name("rcu_fork_gate", "kfree_rcu_cpu->lock"));
  EXPECT_FALSE(lockdep_depends_by_name("rcu_fork_gate", "rcu_fork_lock"));
  EXPECT_EQ(cap.count(), 0u);
}

// A real deadlock is reported before the threads hang in it (the check runs before a lock
// waits); USLUB_DEBUG_ABORT's abort then ends the process.
void recursive_lock() {
  lockdep_reset();
  set_abort_on_bug(true);
  spinlock_t l{&slab_mutex_key};
  l.lock();
  l.lock();
}

void abba_deadlock() {
  lockdep_reset();
  set_abort_on_bug(true);
  spinlock_t a{&flush_lock_key};
  spinlock_t b{&cpu_hotplug_lock_key};
  std::atomic<int> step{0};
  std::thread t([&] {
    b.lock();
    step = 1;
    while (step.load() != 2) {
    }
    a.lock();  // waits for the main thread, which waits for b
  });
  a.lock();
  while (step.load() != 1) {
  }
  step = 2;
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  b.lock();
  t.join();
}

TEST(LockdepDeathTest, RecursiveLockIsReportedNotHung) {
  EXPECT_DEATH(recursive_lock(), "uslub: BUG lockdep: possible recursive locking detected");
}

TEST(LockdepDeathTest, RealAbbaDeadlockIsReportedNotHung) {
  EXPECT_DEATH(abba_deadlock(), "uslub: BUG lockdep: possible circular locking dependency");
}

}  // namespace uslub::test
#else
TEST(Lockdep, NotBuilt) {
  GTEST_SKIP() << "USLUB_LOCKDEP is off in this build";
}
#endif
