// Lock hold-time statistics (spinlock_t): off by default, and when on each class records its
// holds in a log2 histogram with the longest hold, optionally in thread CPU time too, and the
// work counted per hold.  And the page allocator's holds of zone->lock, which are bounded.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "page/page_alloc.hpp"
#include "page_test_util.hpp"
#include "sync/spinlock.hpp"

namespace uslub::test {

static const lock_hold_class* find_class(lock_hold_class* v, int n, const char* name) {
  for (int i = 0; i < n; ++i)
    if (!strcmp(v[i].name, name)) return &v[i];
  return nullptr;
}

TEST(LockHold, RecordsEachClassLongestHoldOnlyWhileOn) {
  static constinit lock_class_key key{"lock_hold_test"};
  spinlock_t l(&key);
  lock_hold_stats_reset();
  l.lock();
  l.unlock();
  lock_hold_class v[64];
  EXPECT_EQ(find_class(v, lock_hold_stats(v, 64), "lock_hold_test"), nullptr) << "off by default";
  lock_hold_stats_enable(true);
  for (int i = 0; i < 10; ++i) {
    l.lock();
    l.unlock();
  }
  l.lock();
  std::this_thread::sleep_for(std::chrono::milliseconds(3));
  l.unlock();
  lock_hold_stats_enable(false);
  l.lock();
  l.unlock();
  int n = lock_hold_stats(v, 64);
  const lock_hold_class* c = find_class(v, n, "lock_hold_test");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->count, 11u);
  EXPECT_GE(c->max_ns, 3000000u);
  EXPECT_LT(lock_hold_quantile(*c, 0.5), 1000000u) << "most holds were short";
  EXPECT_GE(lock_hold_quantile(*c, 1.0), 2097152u);
  std::uint64_t in_hist = 0;
  for (std::uint64_t b : c->hist) in_hist += b;
  EXPECT_EQ(in_hist, 11u);
}

TEST(LockHold, CpuTimeTellsAPreemptedOrSleepingHolderFromABusyOne) {
  static constinit lock_class_key key{"lock_hold_cpu_test"};
  spinlock_t l(&key);
  lock_hold_stats_reset();
  lock_hold_stats_enable(true, /*cpu=*/true);
  l.lock();
  l.hold_work(3);
  l.hold_work(4);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // off the CPU, lock held
  l.unlock();
  l.lock();
  l.hold_work(2);
  l.unlock();
  lock_hold_stats_enable(false);
  lock_hold_class v[64];
  const lock_hold_class* c = find_class(v, lock_hold_stats(v, 64), "lock_hold_cpu_test");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->count, 2u);
  EXPECT_GE(c->max_ns, 20000000u) << "wall time includes the sleep";
  EXPECT_LT(c->cpu_max_ns, 10000000u) << "thread CPU time does not";
  EXPECT_EQ(c->max_work, 7u);
  EXPECT_EQ(c->total_work, 9u);
  EXPECT_EQ(c->work_holds, 2u);
  EXPECT_LT(lock_hold_cpu_quantile(*c, 1.0), 10000000u);
}

static const lock_hold_class* zone_lock_class(lock_hold_class* v) {
  return find_class(v, lock_hold_stats(v, 64), "zone->lock");
}

// A release of N pages (frees, the pcp drains, the final drain_all_pages and a forced reclaim)
// takes zone->lock at least N / kFreeBatchLockBound times, never moving more than
// max(batch, kFreeBatchLockBound) blocks in one hold.
using ZoneLockHold = page_alloc_fixture;  // a private allocator on a failing_vm, one node

TEST_F(ZoneLockHold, AReleaseOfNPagesTakesTheZoneLockAtLeastNOverBatchTimes) {
  make();
  page_allocator& pa = pa_;
  constexpr int N = 8192;
  std::vector<page*> v;
  for (int i = 0; i < N; ++i) {
    v.push_back(pa.alloc_pages(0));
    ASSERT_NE(v.back(), nullptr);
  }
  std::uint64_t before = pa.stats().zone_lock_acquired;
  lock_hold_stats_reset();
  lock_hold_stats_enable(true);
  for (page* p : v) pa.free_pages(p, 0);
  pa.drain_all_pages();
  std::size_t returned = pa.reclaim(/*force=*/true);
  lock_hold_stats_enable(false);
  std::uint64_t taken = pa.stats().zone_lock_acquired - before;
  EXPECT_GE(returned, std::size_t{N} * PAGE_SIZE);
  EXPECT_GE(taken, std::uint64_t{N} / kFreeBatchLockBound) << "one hold per batch at least";
  lock_hold_class cls[64];
  const lock_hold_class* z = zone_lock_class(cls);
  ASSERT_NE(z, nullptr);
  EXPECT_GT(z->work_holds, 0u);
  EXPECT_LE(z->max_work, std::uint64_t{kFreeBatchLockBound}) << "blocks moved in one hold";
  EXPECT_TRUE(pa.validate());
}

// A free that finds its zone due for decay does one bounded reclaim step, not the whole pass:
// 600 idle, unmergeable single pages are returned kReclaimInlinePages at a time.  (Before, the
// first zone-level free after the decay delay madvised all of them inline.)
TEST_F(ZoneLockHold, AFreeRunsAtMostOneBoundedReclaimStep) {
  page_alloc_config c;
  c.no_pcp = true;  // every free is a zone-level free that may trigger reclaim
  c.decay_ms = 30;
  c.retain_bytes = 0;
  make(c);
  page_allocator& pa = pa_;
  failing_vm& vm = vm_;
  std::vector<page*> v;
  for (int i = 0; i < 1400; ++i) v.push_back(pa.alloc_pages(0));
  for (std::size_t i = 0; i < v.size(); i += 2) pa.free_pages(v[i], 0);  // 700 apart
  std::this_thread::sleep_for(std::chrono::milliseconds(80));            // idle now
  int d0 = vm.decommits.load();
  std::uint64_t s0 = pa.stats().reclaim_inline_steps;
  pa.free_pages(v[1], 0);  // one zone-level free, zone due
  int d1 = vm.decommits.load();
  EXPECT_EQ(pa.stats().reclaim_inline_steps - s0, 1u);
  EXPECT_GT(d1 - d0, 0) << "the step returned something";
  EXPECT_LE(d1 - d0, static_cast<int>(kReclaimInlinePages)) << "one free, one bounded step";
  // Later frees continue where it stopped (the zone is due again kReclaimStepMs later).
  for (std::size_t i = 3; i < v.size() && vm.decommits.load() - d0 < 600; i += 2) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    pa.free_pages(v[i], 0);
  }
  EXPECT_GE(vm.decommits.load() - d0, 600) << "the idle pages all went back, step by step";
  for (std::size_t i = 3; i < v.size(); i += 2) {
    if (page_flags(v[i]) & PG_head) pa.free_pages(v[i], 0);
  }
  EXPECT_TRUE(pa.validate());
}

}  // namespace uslub::test
