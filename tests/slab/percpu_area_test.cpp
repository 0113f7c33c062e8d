// Packed per-cache per-CPU areas (percpu_area.hpp): small areas share pages, are zeroed,
// aligned and disjoint, pages go back when their last area is freed, and a new cache's CPU
// slots and sheaves no longer take a page each.
#include <uslub/slab.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <thread>
#include <utility>
#include <vector>

#include "page/page_alloc.hpp"
#include "slab/percpu_area.hpp"
#include "slab/sheaf.hpp"
#include "slab/slab.hpp"
#include "test_support.hpp"

namespace uslub::test {

TEST(PercpuArea, SmallAreasShareZeroedAlignedDisjointChunks) {
  kfree(kmalloc(1, 0));  // initialise
  const std::size_t pages_before = percpu_area_pages();
  std::vector<std::pair<char*, std::size_t>> v;
  const std::size_t sizes[] = {1, 128, 129, 256, 384, 700, 2048};
  for (int i = 0; i < 64; ++i) {
    std::size_t n = sizes[i % 7];
    auto* p = static_cast<char*>(percpu_area_alloc(n));
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % kPercpuChunk, 0u);
    for (std::size_t b = 0; b < n; ++b) ASSERT_EQ(p[b], 0) << n;
    memset(p, 0xa5, n);  // dirty: a reused chunk must come back zeroed
    v.emplace_back(p, n);
  }
  std::sort(v.begin(), v.end());
  for (std::size_t i = 1; i < v.size(); ++i)
    EXPECT_LE(v[i - 1].first + v[i - 1].second, v[i].first) << "areas overlap";
  std::size_t chunks = 0;
  for (auto& [p, n] : v) chunks += percpu_area_footprint(n) / kPercpuChunk;
  // 64 areas in 259 chunks: 9 pages if packed perfectly; one page per area before.
  EXPECT_LE(percpu_area_pages() - pages_before, chunks / (PAGE_SIZE / kPercpuChunk) + 4);
  for (auto& [p, n] : v) percpu_area_free(p, n);
  EXPECT_EQ(percpu_area_pages(), pages_before) << "emptied pages go back";
  auto* again = static_cast<char*>(percpu_area_alloc(2048));
  for (int b = 0; b < 2048; ++b) ASSERT_EQ(again[b], 0);
  percpu_area_free(again, 2048);
}

// Threads allocating and freeing areas at once (cache creation and destruction on several
// threads): every area is its owner's alone (a pattern written stays intact) and the shared
// pages all go back.
TEST(PercpuArea, ConcurrentAreasStayDisjoint) {
  kfree(kmalloc(1, 0));
  const std::size_t pages_before = percpu_area_pages();
  auto work = [](unsigned char tag) {
    std::vector<std::pair<unsigned char*, std::size_t>> live;
    for (int i = 0; i < 2000; ++i) {
      std::size_t n = 64 + (i * 97) % 1900;
      auto* p = static_cast<unsigned char*>(percpu_area_alloc(n));
      ASSERT_NE(p, nullptr);
      memset(p, tag, n);
      live.emplace_back(p, n);
      if (live.size() > 8) {
        auto [q, m] = live.front();
        live.erase(live.begin());
        for (std::size_t b = 0; b < m; ++b) ASSERT_EQ(q[b], tag) << "another thread wrote it";
        percpu_area_free(q, m);
      }
    }
    for (auto [q, m] : live) percpu_area_free(q, m);
  };
  std::thread a(work, 0x11), b(work, 0x22);
  a.join();
  b.join();
  EXPECT_EQ(percpu_area_pages(), pages_before);
}

TEST(PercpuArea, LargeAreasAreWholePages) {
  kfree(kmalloc(1, 0));
  auto* p = static_cast<char*>(percpu_area_alloc(kPercpuAreaMaxPacked + 1));
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % PAGE_SIZE, 0u);
  EXPECT_EQ(percpu_area_footprint(kPercpuAreaMaxPacked + 1), PAGE_SIZE);
  EXPECT_EQ(percpu_area_footprint(3 * PAGE_SIZE), 4 * PAGE_SIZE);
  percpu_area_free(p, kPercpuAreaMaxPacked + 1);
}

// Before: every cache took one page for its CPU slots and one for its sheaves (87 pages,
// 348 KiB, at start-up for kmalloc's caches and the rest).  Now caches share pages.
TEST(PercpuArea, NewCachesShareTheirPerCpuPages) {
  kfree(kmalloc(1, 0));
  std::vector<kmem_cache*> caches;
  for (int i = 0; i < 8; ++i) {
    char name[32];
    snprintf(name, sizeof name, "percpu-area-%d", i);
    kmem_cache* s = kmem_cache_create(name, 64 + 16 * i, 0, SLAB_NO_MERGE, nullptr);
    ASSERT_NE(s, nullptr);
    caches.push_back(s);
  }
  // The areas of 8 caches (16 before: one page per area).
  std::set<page*> pages;
  std::size_t bytes = 0;
  bool packed = true;
  for (kmem_cache* s : caches) {
    pages.insert(virt_to_page(s->cpu_slab));
    bytes += percpu_area_footprint(s->cpu_bytes);
    packed &= s->cpu_bytes <= kPercpuAreaMaxPacked;
    if (s->cpu_sheaves) {
      pages.insert(virt_to_page(s->cpu_sheaves));
      bytes += percpu_area_footprint(s->pcs_bytes);
      packed &= s->pcs_bytes <= kPercpuAreaMaxPacked;
    }
  }
  if (packed) EXPECT_LE(pages.size(), bytes / PAGE_SIZE + 2) << bytes << " bytes of areas";
  for (kmem_cache* s : caches) {
    void* obj = kmem_cache_alloc(s, 0);
    ASSERT_NE(obj, nullptr);
    kmem_cache_free(s, obj);
    EXPECT_EQ(kmem_cache_validate(s), 0);
  }
  report_capture cap;
  for (kmem_cache* s : caches) kmem_cache_destroy(s);
  EXPECT_EQ(cap.count(), 0u);
}

}  // namespace uslub::test
