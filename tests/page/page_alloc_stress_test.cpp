// Threads > CPUs allocate random orders and free on other threads; a shadow bitmap proves no
// page is handed out twice, and at the end each zone holds only maximal blocks.
#include <random>
#include <thread>
#include <vector>

#include "page_test_util.hpp"

namespace uslub::test {

class PageAllocStress : public page_alloc_fixture {};

TEST_F(PageAllocStress, NoPageHandedOutTwiceAndEverythingMergesBack) {
  page_alloc_config c;
  c.pcp_batch = 8;
  c.pcp_high = 24;
  c.decay_ms = 5;               // exercise reclaim concurrently with traffic
  c.memory_limit = 512u << 20;  // stays inside one section (shadow map indexes pfns)
  make(c);
  const int nthreads = 4 * static_cast<int>(std::thread::hardware_concurrency() ?: 2);
  const int iters = 100000 * stress_scale();
  std::vector<std::atomic<uint8_t>> shadow(PAGES_PER_SECTION);
  std::atomic<uintptr_t> section_base{0};
  std::atomic<long> double_alloc{0}, failures{0};
  // Blocks in flight between threads: (page, order) slots anyone may take.
  constexpr int kSlots = 4096;
  std::vector<std::atomic<uintptr_t>> slots(kSlots);

  auto claim = [&](page* p, unsigned order, bool on) {
    uintptr_t base = reinterpret_cast<uintptr_t>(page_section(p));
    uintptr_t expect = 0;
    section_base.compare_exchange_strong(expect, base);
    if (section_base.load() != base) {
      failures++;
      return;
    }
    size_t pfn = page_pfn(p);
    for (size_t i = 0; i < (size_t{1} << order); ++i) {
      uint8_t prev = shadow[pfn + i].exchange(on ? 1 : 0);
      if (prev == (on ? 1 : 0)) double_alloc++;
    }
  };
  auto release = [&](uintptr_t v) {
    page* p = reinterpret_cast<page*>(v & ~uintptr_t{63});
    unsigned order = static_cast<unsigned>(v & 63);
    claim(p, order, false);
    pa_.free_pages(p, order);
  };

  std::vector<std::thread> threads;
  for (int t = 0; t < nthreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(1234 + t);
      for (int i = 0; i < iters; ++i) {
        unsigned r = rng() % 100;
        unsigned order = r < 60 ? 0 : r < 80 ? 1 : r < 90 ? 3 : r < 97 ? 5 : 9;
        if (rng() % 8 == 0) {
          page* batch[16];
          int n = pa_.alloc_pages_bulk(order % 4, 16, batch);
          for (int k = 0; k < n; ++k) claim(batch[k], order % 4, true);
          for (int k = 0; k < n; ++k) claim(batch[k], order % 4, false);
          pa_.free_pages_bulk(batch, n, order % 4);
          continue;
        }
        page* p = pa_.alloc_pages(order, rng() % 16 == 0 ? __GFP_ZERO : 0);
        if (!p) {
          failures++;
          continue;
        }
        claim(p, order, true);
        static_cast<char*>(page_address(p))[0] = static_cast<char>(i);
        // Park it; whatever was parked there (by any thread) is freed here.
        uintptr_t old = slots[rng() % kSlots].exchange(reinterpret_cast<uintptr_t>(p) | order);
        if (old) release(old);
        if (t == 0 && i % 2000 == 0) pa_.drain_all_pages();
        // Statistics and validation read the allocator while everyone else runs.
        if (t == 1 && i % 1000 == 0) (void)pa_.stats();
        if (t == 1 && i % 20000 == 0 && !pa_.validate()) failures++;
      }
    });
  }
  for (auto& th : threads) th.join();
  for (auto& s : slots)
    if (uintptr_t v = s.exchange(0)) release(v);
  EXPECT_EQ(double_alloc.load(), 0);
  EXPECT_EQ(failures.load(), 0);
  pa_.drain_all_pages();
  ASSERT_TRUE(pa_.validate());
  auto st = pa_.stats();
  for (unsigned o = 0; o < MAX_ORDER; ++o) EXPECT_EQ(pa_.nr_free(o), 0u) << "order " << o;
  EXPECT_EQ(st.free_bytes, st.grow * MAX_ORDER_BYTES);
  EXPECT_EQ(st.bad_free, 0u);
}

}  // namespace uslub::test
