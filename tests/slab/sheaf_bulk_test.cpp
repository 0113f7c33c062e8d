// kmem_cache_alloc_bulk / kmem_cache_free_bulk on a sheaf cache: served by the current CPU's
// sheaves first (the kernel's alloc_from_pcs_bulk / free_to_pcs_bulk), the SLUB core for the
// rest; every object checked as kmem_cache_free checks it; all or nothing on failure.
#include <errno.h>
#include <sched.h>
#include <uslub/slab.h>

#include <cstring>
#include <set>
#include <vector>

#include "page/page_alloc.hpp"
#include "slab/sheaf.hpp"
#include "slab/slab.hpp"
#include "test_support.hpp"

namespace uslub::test {

static kmem_cache* make(const char* name, size_t size) {
  return kmem_cache_create(name, size, 0, SLAB_NO_MERGE | SLAB_STATS | SLAB_SHEAVES, nullptr);
}

static kmem_cache_info info_of(kmem_cache* s) {
  kmem_cache_info in;
  kmem_cache_get_info(s, &in);
  return in;
}

// Pins the test to one CPU so that "this CPU's sheaf" stays the same one.
struct pin_to_current_cpu {
  cpu_set_t old;
  pin_to_current_cpu() {
    sched_getaffinity(0, sizeof old, &old);
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    sched_setaffinity(0, sizeof one, &one);
  }
  ~pin_to_current_cpu() { sched_setaffinity(0, sizeof old, &old); }
};

TEST(SheafBulk, AllocTakesTheSheafsObjectsAndFreePutsThemBack) {
  pin_to_current_cpu pin;
  kmem_cache* s = make("sheaf-bulk", 64);
  report_capture cap;
  std::vector<void*> v(16);
  for (auto& p : v) p = kmem_cache_alloc(s, 0);
  for (void* p : v) kmem_cache_free(s, p);  // on top of this CPU's main sheaf
  const std::set<void*> freed(v.begin(), v.end());
  auto before = info_of(s);
  std::vector<void*> b(16);
  ASSERT_EQ(kmem_cache_alloc_bulk(s, 0, b.size(), b.data()), 16);
  EXPECT_EQ(std::set<void*>(b.begin(), b.end()), freed) << "the sheaf's top objects";
  auto mid = info_of(s);
  EXPECT_EQ(mid.sheaf_stat[SHEAF_ALLOC_HIT] - before.sheaf_stat[SHEAF_ALLOC_HIT], 16u);
  EXPECT_EQ(mid.stat[ALLOC_FASTPATH] + mid.stat[ALLOC_SLOWPATH],
            before.stat[ALLOC_FASTPATH] + before.stat[ALLOC_SLOWPATH])
      << "no object came from the slabs";
  kmem_cache_free_bulk(s, b.size(), b.data());
  auto after = info_of(s);
  EXPECT_EQ(after.sheaf_stat[SHEAF_FREE_HIT] - mid.sheaf_stat[SHEAF_FREE_HIT], 16u);
  // Back in the sheaf: sixteen single allocations hand out the same objects again, and their
  // frees are no double frees (the bulk allocation cleared the free keys, the bulk free set them).
  for (auto& p : v) p = kmem_cache_alloc(s, 0);
  EXPECT_EQ(std::set<void*>(v.begin(), v.end()), freed);
  for (void* p : v) kmem_cache_free(s, p);
  EXPECT_EQ(cap.count(), 0u) << cap.first_line();
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_destroy(s);
}

TEST(SheafBulk, ADoubleFreeThroughTheBulkFreeIsReportedAndNotHandedOutTwice) {
  kmem_cache* s = make("sheaf-bulk-df", 64);
  report_capture cap;
  void* a = kmem_cache_alloc(s, 0);
  void* b = kmem_cache_alloc(s, 0);
  kmem_cache_free(s, a);
  kmem_cache_free(s, b);
  void* again[2] = {a, nullptr};  // nullptr entries are skipped, as kmem_cache_free skips NULL
  kmem_cache_free_bulk(s, 2, again);
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG sheaf-bulk-df: Object already free");
  std::vector<void*> got(3);
  ASSERT_EQ(kmem_cache_alloc_bulk(s, 0, got.size(), got.data()), 3);
  EXPECT_EQ(std::set<void*>(got.begin(), got.end()).size(), 3u) << "an object handed out twice";
  kmem_cache_free_bulk(s, got.size(), got.data());
  EXPECT_EQ(cap.count(), 1u);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_destroy(s);
}

TEST(SheafBulk, ABadPointerInABulkFreeIsReportedAndTheRestFreed) {
  kmem_cache* s = make("sheaf-bulk-bad", 64);
  report_capture cap;
  std::vector<void*> v(8);
  ASSERT_EQ(kmem_cache_alloc_bulk(s, 0, v.size(), v.data()), 8);
  void* inside = static_cast<char*>(v[3]) + 8;
  std::vector<void*> f = v;
  f.push_back(inside);
  kmem_cache_free_bulk(s, f.size(), f.data());
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG sheaf-bulk-bad: Invalid pointer");
  kmem_cache_shrink(s);
  EXPECT_EQ(info_of(s).active_objs, 0u) << "the eight good objects went back";
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_destroy(s);
}

TEST(SheafBulk, MoreThanTheSheafHoldsGoesToAndComesFromTheSlabs) {
  kmem_cache* s = make("sheaf-bulk-big", 128);
  report_capture cap;
  const unsigned cap_objs = info_of(s).sheaf_capacity;
  std::vector<void*> v(cap_objs * 5);
  ASSERT_EQ(kmem_cache_alloc_bulk(s, __GFP_ZERO, v.size(), v.data()), static_cast<int>(v.size()));
  EXPECT_EQ(std::set<void*>(v.begin(), v.end()).size(), v.size());
  for (void* p : v) {
    for (unsigned i = 0; i < 128; ++i) ASSERT_EQ(static_cast<unsigned char*>(p)[i], 0);
    memset(p, 0xa5, 128);  // the next __GFP_ZERO round must zero sheaf objects too
  }
  kmem_cache_free_bulk(s, v.size(), v.data());  // fills the sheaf, the rest to the slabs
  ASSERT_EQ(kmem_cache_alloc_bulk(s, __GFP_ZERO, v.size(), v.data()), static_cast<int>(v.size()));
  for (void* p : v)
    for (unsigned i = 0; i < 128; ++i) ASSERT_EQ(static_cast<unsigned char*>(p)[i], 0) << p;
  kmem_cache_free_bulk(s, v.size(), v.data());
  EXPECT_EQ(kmem_cache_validate(s), 0);
  flush_all(s);
  kmem_cache_shrink(s);
  EXPECT_EQ(info_of(s).active_objs, 0u) << "every object is back in its slab";
  EXPECT_EQ(cap.count(), 0u) << cap.first_line();
  kmem_cache_destroy(s);
}

TEST(SheafBulk, AFailedBulkAllocationKeepsNothing) {
  pin_to_current_cpu pin;
  failing_vm vm;
  page_allocator pa;
  page_alloc_config cfg;
  cfg.vm = &vm;
  cfg.nr_nodes = 1;
  cfg.memory_limit = MAX_ORDER_BYTES + (1 << 20);  // one 4 MiB block
  ASSERT_EQ(pa.init(cfg), 0);
  kmem_cache* s = kmem_cache_create_on(&pa, "sheaf-bulk-oom", 1024, 0,
                                       SLAB_NO_MERGE | SLAB_STATS | SLAB_SHEAVES, nullptr);
  ASSERT_NE(s, nullptr);
  std::vector<void*> v(8);
  for (auto& p : v) p = kmem_cache_alloc(s, 0);
  for (void* p : v) kmem_cache_free(s, p);  // in the sheaf now
  std::vector<void*> big(8000);             // 8 MiB: more than the limit
  errno = 0;
  EXPECT_EQ(kmem_cache_alloc_bulk(s, 0, big.size(), big.data()), 0);
  EXPECT_EQ(errno, ENOMEM);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  // Nothing was kept: once the sheaves are drained every slab is empty again.
  flush_all(s);
  EXPECT_EQ(info_of(s).active_objs, 0u) << "a failed bulk allocation kept objects";
  std::vector<void*> again(8);
  ASSERT_EQ(kmem_cache_alloc_bulk(s, 0, again.size(), again.data()), 8);
  kmem_cache_free_bulk(s, again.size(), again.data());
  report_capture cap;
  EXPECT_EQ(kmem_cache_validate(s), 0);
  flush_all(s);
  kmem_cache_shrink(s);
  EXPECT_EQ(info_of(s).active_objs, 0u);
  kmem_cache_destroy(s);
  EXPECT_EQ(cap.count(), 0u) << cap.first_line();
}

}  // namespace uslub::test
