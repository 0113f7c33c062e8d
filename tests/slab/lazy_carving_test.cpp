// Lazy carving (slab.hpp): a new slab's objects are written only as they are handed out, so its
// pages become resident one by one; a sheaf refill from a new slab takes one page of objects;
// a CPU slab detached before its virgin range is used up links what is left, and every object
// of the slab is still handed out exactly once.  Each test runs in its own process (ctest), so
// the slabs here come from memory no earlier test made resident.
#include <sys/mman.h>
#include <uslub/slab.h>

#include <cstdint>
#include <set>
#include <vector>

#include "page/page.hpp"
#include "slab/slab.hpp"
#include "test_support.hpp"

namespace uslub::test {
namespace {

// Pages of [addr, addr + bytes) that are resident (mincore).
unsigned resident_pages(const void* addr, std::size_t bytes) {
  std::vector<unsigned char> vec(bytes / PAGE_SIZE);
  EXPECT_EQ(mincore(const_cast<void*>(addr), bytes, vec.data()), 0);
  unsigned n = 0;
  for (unsigned char v : vec) n += v & 1;
  return n;
}

struct slab_extent {
  void* base;
  std::size_t bytes;
  unsigned objects;
};

slab_extent extent_of(kmem_cache* s, void* obj) {
  page* slab = virt_to_slab(obj);
  EXPECT_NE(slab, nullptr);
  return {slab_address(slab), PAGE_SIZE << s->order, s->objects};
}

// Allocates every object of the slab obj is in (obj already allocated) and checks that each
// comes once; returns them all, obj included.
std::vector<void*> fill_slab(kmem_cache* s, void* obj, const slab_extent& e) {
  std::vector<void*> v{obj};
  std::set<void*> in_slab{obj};
  std::vector<void*> elsewhere;
  auto* lo = static_cast<char*>(e.base);
  while (in_slab.size() < e.objects && elsewhere.size() < 4 * e.objects) {
    void* p = kmem_cache_alloc(s, 0);
    EXPECT_NE(p, nullptr);
    if (!p) break;
    if (p >= lo && p < lo + e.bytes) {
      EXPECT_TRUE(in_slab.insert(p).second) << "object " << p << " handed out twice";
      v.push_back(p);
    } else {
      elsewhere.push_back(p);
    }
  }
  EXPECT_EQ(in_slab.size(), e.objects) << "every object of the slab is handed out";
  v.insert(v.end(), elsewhere.begin(), elsewhere.end());
  return v;
}

void free_all(kmem_cache* s, const std::vector<void*>& v) {
  for (void* p : v) kmem_cache_free(s, p);
}

}  // namespace

TEST(LazyCarving, ANewSlabOfPageSizedObjectsFaultsInOnlyThePageHandedOut) {
  kmem_cache* s = kmem_cache_create("lazy-4k", 4096, 0, SLAB_NO_MERGE, nullptr);
  ASSERT_NE(s, nullptr);
  ASSERT_GT(s->order, 0u) << "the test needs a slab of several pages";
  void* obj = kmem_cache_alloc(s, 0);
  ASSERT_NE(obj, nullptr);
  slab_extent e = extent_of(s, obj);
  EXPECT_EQ(resident_pages(e.base, e.bytes), 1u)
      << "one object of " << e.objects << " handed out: only its page is written";
  std::vector<void*> all = fill_slab(s, obj, e);
  EXPECT_EQ(resident_pages(e.base, e.bytes), e.bytes / PAGE_SIZE);
  free_all(s, all);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_destroy(s);
}

TEST(LazyCarving, ASheafRefillFromANewSlabTakesOnePageOfObjects) {
  kmem_cache* s = kmem_cache_create("lazy-256", 256, 0, SLAB_NO_MERGE | SLAB_SHEAVES, nullptr);
  ASSERT_NE(s, nullptr);
  ASSERT_GT(s->sheaf_capacity, PAGE_SIZE / 256) << "a whole sheaf would take more than a page";
  void* obj = kmem_cache_alloc(s, 0);
  ASSERT_NE(obj, nullptr);
  kmem_cache_info in;
  kmem_cache_get_info(s, &in);
  EXPECT_EQ(in.sheaf_objs, PAGE_SIZE / 256 - 1) << "one page refilled, one object handed out";
  slab_extent e = extent_of(s, obj);
  EXPECT_EQ(resident_pages(e.base, e.bytes), 1u);
  std::vector<void*> all = fill_slab(s, obj, e);
  free_all(s, all);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_destroy(s);
}

// The per-CPU slab path (no sheaves): a single allocation links one page of the virgin range
// into the CPU freelist, which the fast path then takes.
TEST(LazyCarving, ThePerCpuSlabPathLinksOnePageAtATime) {
  kmem_cache* s =
      kmem_cache_create("lazy-cpuslab", 512, 0, SLAB_NO_MERGE | SLAB_NO_SHEAVES, nullptr);
  ASSERT_NE(s, nullptr);
  ASSERT_EQ(s->cpu_sheaves, nullptr);
  void* obj = kmem_cache_alloc(s, 0);
  ASSERT_NE(obj, nullptr);
  slab_extent e = extent_of(s, obj);
  ASSERT_GT(e.bytes, PAGE_SIZE) << "the test needs a slab of several pages";
  EXPECT_EQ(resident_pages(e.base, e.bytes), 1u);
  std::vector<void*> all = fill_slab(s, obj, e);
  EXPECT_EQ(resident_pages(e.base, e.bytes), e.bytes / PAGE_SIZE);
  free_all(s, all);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_destroy(s);
}

// A CPU slab detached with most of it virgin (a flush: shrink, validate) links the rest into its
// slab's freelist: the slab goes to the partial list with them, and allocation hands each out
// once.  Both kinds of cache.
class LazyCarvingDetach : public ::testing::TestWithParam<slab_flags_t> {};

TEST_P(LazyCarvingDetach, AFlushedCpuSlabGivesItsVirginObjectsToItsSlab) {
  kmem_cache* s = kmem_cache_create("lazy-detach", 128, 0, SLAB_NO_MERGE | GetParam(), nullptr);
  ASSERT_NE(s, nullptr);
  void* obj = kmem_cache_alloc(s, 0);
  ASSERT_NE(obj, nullptr);
  slab_extent e = extent_of(s, obj);
  kmem_cache_info before;
  kmem_cache_get_info(s, &before);
  EXPECT_EQ(before.active_objs, 1u) << "virgin objects count as free, not active";
  EXPECT_EQ(kmem_cache_shrink(s), 0);  // flush_all: the CPU slab is detached
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_info after;
  kmem_cache_get_info(s, &after);
  EXPECT_EQ(after.active_objs, 1u);
  EXPECT_EQ(after.num_objs, e.objects);
  std::vector<void*> all = fill_slab(s, obj, e);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  free_all(s, all);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_destroy(s);
}

INSTANTIATE_TEST_SUITE_P(Kinds, LazyCarvingDetach, ::testing::Values(SLAB_SHEAVES, SLAB_NO_SHEAVES),
                         [](const auto& info) {
                           return info.param == SLAB_SHEAVES ? std::string("Sheaves")
                                                             : std::string("CpuSlab");
                         });

}  // namespace uslub::test
