// Per-CPU page lists: refill, drain at high, batch, trylock fallback, drain_all piggyback.
#include <thread>
#include <vector>

#include "page_test_util.hpp"

namespace uslub::test {

class Pcp : public page_alloc_fixture {
 protected:
  void SetUp() override {
    page_alloc_config c;
    c.pcp_batch = 8;
    c.pcp_high = 32;
    make(c);
    ASSERT_EQ(sched_getaffinity(0, sizeof allowed_, &allowed_), 0);  // before pinning
    ASSERT_TRUE(pin_to_cpu(0));
  }
  void TearDown() override {
    unpin();
    page_alloc_fixture::TearDown();
  }
  // Can this process run on cpu?  Pinning tests skip loudly when not.
  bool cpu_allowed(unsigned cpu) const { return CPU_ISSET(cpu, &allowed_); }
  cpu_set_t allowed_;
};

TEST_F(Pcp, RefillTakesOneBatchThenHits) {
  page* p = pa_.alloc_pages(0);
  ASSERT_NE(p, nullptr);
  auto s = pa_.stats();
  EXPECT_EQ(s.pcp_alloc_refill, 1u);
  EXPECT_EQ(pcp(0).count, 7);  // batch 8, one handed out
  std::vector<page*> v{p};
  for (int i = 0; i < 7; ++i) v.push_back(pa_.alloc_pages(0));
  s = pa_.stats();
  EXPECT_EQ(s.pcp_alloc_refill, 1u);
  EXPECT_EQ(s.pcp_alloc_hit, 7u);
  EXPECT_EQ(pcp(0).count, 0);
  for (page* q : v) pa_.free_pages(q, 0);
  EXPECT_EQ(pcp(0).count, 8);
}

TEST_F(Pcp, FreeAboveHighDrainsOneBatch) {
  std::vector<page*> v;
  for (int i = 0; i < 64; ++i) v.push_back(pa_.alloc_pages(0));
  pa_.drain_all_pages();
  EXPECT_EQ(pcp(0).count, 0);
  for (int i = 0; i < 32; ++i) pa_.free_pages(v[i], 0);
  // The 32nd free reached high (32) and drained a batch of 8.
  EXPECT_EQ(pcp(0).count, 24);
  EXPECT_EQ(pa_.stats().pcp_free_drain, 1u);
  for (int i = 32; i < 64; ++i) pa_.free_pages(v[i], 0);
  EXPECT_LT(pcp(0).count, 32);
  EXPECT_TRUE(pa_.validate());
}

TEST_F(Pcp, HigherOrdersShareTheCountInPages) {
  page* p = pa_.alloc_pages(3);  // batch 8 pages >> 3 = one block
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(pcp(0).count, 0);
  pa_.free_pages(p, 3);
  EXPECT_EQ(pcp(0).count, 8);
  EXPECT_EQ(page_flags(p) & PG_pcp, PG_pcp);
}

TEST_F(Pcp, BusyPcpLockFallsBackToTheZone) {
  page* warm = pa_.alloc_pages(0);  // the zone has memory
  std::atomic<int> state{0};
  std::thread holder([&] {
    ASSERT_TRUE(pin_to_cpu(0));
    ASSERT_TRUE(pcp(0).lock.try_lock());  // as if preempted inside a pcp operation
    state = 1;
    while (state.load() != 2) std::this_thread::yield();
    pcp(0).lock.unlock();
  });
  while (state.load() != 1) std::this_thread::yield();
  auto before = pa_.stats();
  page* p = pa_.alloc_pages(0);  // this thread is on CPU 0 too: trylock fails
  ASSERT_NE(p, nullptr);
  pa_.free_pages(p, 0);
  auto after = pa_.stats();
  state = 2;
  holder.join();
  EXPECT_EQ(after.pcp_trylock_fail - before.pcp_trylock_fail, 2u);
  EXPECT_EQ(after.zone_alloc - before.zone_alloc, 1u);
  EXPECT_EQ(after.zone_free - before.zone_free, 1u);
  EXPECT_EQ(after.pcp_alloc_hit, before.pcp_alloc_hit);
  pa_.free_pages(warm, 0);
  EXPECT_TRUE(pa_.validate());
}

TEST_F(Pcp, BulkAllocAndFree) {
  std::vector<page*> v(64);
  ASSERT_EQ(pa_.alloc_pages_bulk(0, 64, v.data()), 64);
  std::sort(v.begin(), v.end());
  EXPECT_EQ(std::adjacent_find(v.begin(), v.end()), v.end());
  for (page* p : v) EXPECT_EQ(page_flags(p), PG_head);
  pa_.free_pages_bulk(v.data(), 64, 0);
  EXPECT_EQ(pa_.stats().pcp_free_hit, 64u);
  EXPECT_LT(pcp(0).count, 32);
  std::vector<page*> big(16);
  ASSERT_EQ(pa_.alloc_pages_bulk(5, 16, big.data()), 16);
  pa_.free_pages_bulk(big.data(), 16, 5);
  pa_.drain_all_pages();
  EXPECT_TRUE(pa_.validate());
  EXPECT_EQ(pa_.stats().free_bytes, pa_.nr_free(MAX_ORDER) * MAX_ORDER_BYTES);
}

TEST_F(Pcp, LargeBulkAllocationRefillsInBoundedSteps) {
  // zone->lock is held for bounded work: a bulk request far larger than a batch refills the
  // pcp list in steps of at most max(batch, kFreeBatchLockBound) blocks.
  page* warm = pa_.alloc_pages(0);  // the zone has a 4 MiB block (bulk never grows via pcp)
  pa_.free_pages(warm, 0);
  pa_.drain_all_pages();
  std::vector<page*> v(300);
  auto before = pa_.stats();
  ASSERT_EQ(pa_.alloc_pages_bulk(0, 300, v.data()), 300);
  auto after = pa_.stats();
  EXPECT_GE(after.pcp_alloc_refill - before.pcp_alloc_refill, 300u / kFreeBatchLockBound);
  EXPECT_LT(pcp(0).count, 32);  // at most one batch's remainder stays cached
  pa_.free_pages_bulk(v.data(), 300, 0);
  pa_.drain_all_pages();
  EXPECT_TRUE(pa_.validate());
  EXPECT_EQ(pa_.nr_free(MAX_ORDER), 1u);
}

TEST(PcpLimit, AtTheMemoryLimitPagesCachedOnPcpListsAreDrainedBeforeEnomem) {
  // One growth step fits under the limit.  Pages cached on a pcp list keep the 4 MiB block
  // split; an allocation that needs it whole must drain the lists (the kernel drains them
  // before failing) instead of failing with ENOMEM while the memory sits free.
  failing_vm vm;
  page_allocator pa;
  page_alloc_config c;
  c.vm = &vm;
  c.nr_nodes = 1;
  c.decay_ms = 1000000;
  c.memory_limit = MAX_ORDER_BYTES + (1u << 20);
  ASSERT_EQ(pa.init(c), 0);
  std::vector<page*> v(40);
  std::thread other([&] {  // another thread, likely another CPU: its own pcp list
    for (auto& p : v) p = pa.alloc_pages(0);
    for (auto* p : v) pa.free_pages(p, 0);
  });
  other.join();
  page* small = pa.alloc_pages(0);
  ASSERT_NE(small, nullptr);
  pa.free_pages(small, 0);
  ASSERT_GT(pa.stats().pcp_bytes, 0u);
  errno = 0;
  page* big = pa.alloc_pages(MAX_ORDER);
  EXPECT_NE(big, nullptr) << "errno " << errno;
  if (big) pa.free_pages(big, MAX_ORDER);
  // The bulk path too.
  for (auto& p : v) p = pa.alloc_pages(1);
  for (auto* p : v) pa.free_pages(p, 1);
  page* blocks[1] = {nullptr};
  EXPECT_EQ(pa.alloc_pages_bulk(MAX_ORDER, 1, blocks), 1);
  if (blocks[0]) pa.free_pages(blocks[0], MAX_ORDER);
  EXPECT_EQ(pa.stats().grow, 1u);
  EXPECT_TRUE(pa.validate());
  pa.destroy();
}

TEST_F(Pcp, DrainAllEmptiesEveryCpu) {
  if (!cpu_allowed(1)) GTEST_SKIP() << "CPU 1 is not in this process's affinity mask";
  std::vector<page*> v;
  for (int i = 0; i < 20; ++i) v.push_back(pa_.alloc_pages(0));
  bool pinned = false;
  std::thread other([&] {
    if (!(pinned = pin_to_cpu(1))) return;
    for (int i = 0; i < 10; ++i) pa_.free_pages(v[i], 0);
  });
  other.join();
  ASSERT_TRUE(pinned) << "could not pin to CPU 1";
  for (int i = 10; i < 20; ++i) pa_.free_pages(v[i], 0);
  pa_.drain_all_pages();
  EXPECT_EQ(pa_.stats().pcp_bytes, 0u);
  EXPECT_EQ(pa_.nr_free(MAX_ORDER), 1u);
}

TEST_F(Pcp, ConcurrentDrainAllPiggybacksOnARunningDrain) {
  // Hold the drain mutex as a drain in progress would; callers arriving now read the old
  // generation, and once that drain bumps it they must return without draining again.
  auto& mu = page_alloc_test_peer::drain_mutex(pa_);
  auto& gen = page_alloc_test_peer::drain_gen(pa_);
  mu.lock();
  std::vector<std::thread> callers;
  for (int i = 0; i < 4; ++i) callers.emplace_back([&] { pa_.drain_all_pages(); });
  while (pa_.stats().drain_all_calls < 4) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  gen.fetch_add(1);  // the running drain's (D)
  mu.unlock();
  for (auto& t : callers) t.join();
  auto s = pa_.stats();
  EXPECT_EQ(s.drain_all_calls, 4u);
  EXPECT_EQ(s.drain_all_runs, 0u);
  pa_.drain_all_pages();  // a caller after it drains again
  EXPECT_EQ(pa_.stats().drain_all_runs, 1u);
}

TEST_F(Pcp, DrainAllCoversEveryFreeBeforeTheCall) {
  // Two threads on two CPUs free into their own pcp and drain; whenever drain_all returns,
  // the caller's own pcp must be empty even if it piggybacked on the other's drain.
  if (platform::nr_cpu_ids() < 2) GTEST_SKIP() << "needs two CPUs";
  if (!cpu_allowed(0) || !cpu_allowed(1))
    GTEST_SKIP() << "CPUs 0 and 1 are not both in this process's affinity mask";
  std::atomic<int> failures{0}, unpinned{0};
  auto worker = [&](unsigned cpu) {
    if (!pin_to_cpu(cpu)) {
      unpinned++;
      return;
    }
    std::vector<page*> v(16);
    for (int it = 0; it < 300 * stress_scale(); ++it) {
      for (auto& p : v) p = pa_.alloc_pages(0);
      for (auto* p : v) pa_.free_pages(p, 0);
      pa_.drain_all_pages();
      if (__atomic_load_n(&pcp(cpu).count, __ATOMIC_RELAXED) != 0) failures++;
    }
  };
  std::thread a(worker, 0), b(worker, 1);
  a.join();
  b.join();
  ASSERT_EQ(unpinned.load(), 0) << "could not pin to CPU 0 or 1";
  EXPECT_EQ(failures.load(), 0);
}

}  // namespace uslub::test
