// The bulk halves of the sheaves: a refill that carves new slabs by address and gives the
// rest of a CPU freelist back with one CAS, and a flush that returns a sheaf slab by slab
// through detached freelists (src/slab/sheaf.cpp, src/slab/slub.cpp; docs/sheaves.md).
#include <uslub/slab.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>
#include <vector>

#include "slab/sheaf.hpp"
#include "slab/slab.hpp"
#include "test_support.hpp"

namespace uslub::test {

static kmem_cache_info info_of(kmem_cache* s) {
  kmem_cache_info in;
  kmem_cache_get_info(s, &in);
  return in;
}

// Every pointer is distinct, an object start of s, and writable over the whole object.
static void expect_objects_of(kmem_cache* s, const std::vector<void*>& v) {
  std::set<void*> uniq(v.begin(), v.end());
  EXPECT_EQ(uniq.size(), v.size()) << "an object handed out twice";
  for (void* p : v) {
    page* slab = virt_to_slab(p);
    ASSERT_NE(slab, nullptr) << p;
    EXPECT_EQ(__atomic_load_n(&slab->slab_cache, __ATOMIC_RELAXED), s) << p;
    auto off =
        static_cast<std::size_t>(static_cast<char*>(p) - static_cast<char*>(slab_address(slab)));
    EXPECT_EQ(off % s->size, 0u) << p;
    EXPECT_LT(off / s->size, info_of(s).objects_per_slab) << p;
    memset(p, 0x5a, s->object_size);
  }
}

// The end of every test: the cache destroyed with no report (nothing leaked or corrupted).
static void destroy_clean(kmem_cache* s) {
  report_capture cap;
  kmem_cache_destroy(s);
  EXPECT_EQ(cap.count(), 0u);
}

// Every object freed: a shrink leaves no slab, then the cache is destroyed clean.
static void shrink_empty_and_destroy(kmem_cache* s) {
  kmem_cache_shrink(s);
  EXPECT_EQ(info_of(s).num_slabs, 0u);
  destroy_clean(s);
}

TEST(Refill, BulkFromNewSlabsCarvesEveryObjectOnceAndValidates) {
  kmem_cache* s = kmem_cache_create("refill-carve", 48, 0,
                                    SLAB_NO_MERGE | SLAB_NO_SHEAVES | SLAB_STATS, nullptr);
  ASSERT_NE(s, nullptr);
  const unsigned per = info_of(s).objects_per_slab;
  ASSERT_GT(per, 8u);
  // Two whole slabs and a piece of a third: the bulk carves each new slab (no partial slab,
  // no CPU freelist in a fresh cache).
  std::vector<void*> v(2 * per + 5);
  ASSERT_EQ(kmem_cache_alloc_bulk(s, 0, v.size(), v.data()), static_cast<int>(v.size()));
  expect_objects_of(s, v);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  auto in = info_of(s);
  EXPECT_EQ(in.num_slabs, 3u);
  EXPECT_EQ(in.stat[ALLOC_SLAB], 3u);
  EXPECT_EQ(in.stat[ALLOC_FASTPATH] + in.stat[ALLOC_SLOWPATH], v.size());
  // The rest of the third slab is the CPU freelist: single allocations take it, no new slab.
  std::vector<void*> rest;
  for (unsigned i = 0; i < per - 5; ++i) rest.push_back(kmem_cache_alloc(s, 0));
  std::vector<void*> all = v;
  all.insert(all.end(), rest.begin(), rest.end());
  expect_objects_of(s, all);
  EXPECT_EQ(info_of(s).stat[ALLOC_SLAB], 3u);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  // Everything goes back: half one by one, half in bulk; the slabs then hold no object.
  for (std::size_t i = 0; i < all.size() / 2; ++i) kmem_cache_free(s, all[i]);
  kmem_cache_free_bulk(s, all.size() - all.size() / 2, all.data() + all.size() / 2);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  shrink_empty_and_destroy(s);
}

TEST(Refill, BulkTakesPartOfTheCpuFreelistAndTheRestStaysUsable) {
  pin_to_this_cpu pin;  // one CPU slab: a migration would make a second one
  kmem_cache* s = kmem_cache_create("refill-giveback", 64, 0,
                                    SLAB_NO_MERGE | SLAB_NO_SHEAVES | SLAB_STATS, nullptr);
  ASSERT_NE(s, nullptr);
  const unsigned per = info_of(s).objects_per_slab;
  ASSERT_GT(per, 16u);
  // One allocation makes a CPU slab whose freelist holds per - 1 objects; a bulk of 7 takes
  // seven of them and gives the rest back; the slab then serves exactly per objects.
  std::vector<void*> v{kmem_cache_alloc(s, 0)};
  std::vector<void*> b(7);
  ASSERT_EQ(kmem_cache_alloc_bulk(s, 0, b.size(), b.data()), 7);
  v.insert(v.end(), b.begin(), b.end());
  while (v.size() < per) v.push_back(kmem_cache_alloc(s, 0));
  expect_objects_of(s, v);
  EXPECT_EQ(info_of(s).stat[ALLOC_SLAB], 1u) << "the rest of the CPU freelist was lost";
  EXPECT_EQ(kmem_cache_validate(s), 0);
  // Bulks that take more than the CPU freelist holds: the freelist, then a carved slab.
  for (int round = 0; round < 20; ++round) {
    std::vector<void*> more(3 + round * 5);
    ASSERT_EQ(kmem_cache_alloc_bulk(s, 0, more.size(), more.data()), static_cast<int>(more.size()));
    v.insert(v.end(), more.begin(), more.end());
    v.push_back(kmem_cache_alloc(s, 0));
  }
  expect_objects_of(s, v);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_free_bulk(s, v.size(), v.data());
  shrink_empty_and_destroy(s);
}

TEST(Refill, SheafRefillsHandOutEveryObjectOnce) {
  // Sheaf refills go through the carving bulk: single allocations over many refills.
  kmem_cache* s = kmem_cache_create("refill-sheaf", 24, 0, SLAB_NO_MERGE | SLAB_SHEAVES, nullptr);
  ASSERT_NE(s, nullptr);
  auto in = info_of(s);
  std::vector<void*> v;
  for (unsigned i = 0; i < 5 * in.objects_per_slab + 3 * in.sheaf_capacity + 1; ++i)
    v.push_back(kmem_cache_alloc(s, 0));
  expect_objects_of(s, v);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  for (void* p : v) kmem_cache_free(s, p);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  shrink_empty_and_destroy(s);
}

// A flush whose sheaf holds objects of more slabs than it builds detached lists at once (8):
// the objects are freed round-robin over 24 slabs, so every flushed sheaf spans them all.
TEST(Flush, SheafSpanningManySlabsGoesBackWhole) {
  kmem_cache* s = kmem_cache_create("flush-spread", 64, 0, SLAB_NO_MERGE | SLAB_SHEAVES, nullptr);
  ASSERT_NE(s, nullptr);
  ASSERT_EQ(kmem_cache_set_sheaf_capacity(s, 128), 0);
  const unsigned per = info_of(s).objects_per_slab;
  constexpr unsigned kSlabs = 24;
  std::vector<void*> v;
  for (unsigned i = 0; i < kSlabs * per; ++i) v.push_back(kmem_cache_alloc(s, 0));
  expect_objects_of(s, v);
  std::map<page*, std::vector<void*>> by_slab;
  for (void* p : v) by_slab[virt_to_slab(p)].push_back(p);
  ASSERT_GE(by_slab.size(), kSlabs);
  std::vector<void*> order;
  for (std::size_t i = 0; order.size() < v.size(); ++i)
    for (auto& [slab, objs] : by_slab)
      if (i < objs.size()) order.push_back(objs[i]);
  for (void* p : order) kmem_cache_free(s, p);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_shrink(s);  // drains the sheaves and barn: everything is back in its slab
  EXPECT_EQ(kmem_cache_validate(s), 0);
  EXPECT_EQ(info_of(s).num_slabs, 0u) << "an object did not go back to its slab";
  // The slabs' free lists are sound: the same count comes out again, each object once.
  std::vector<void*> again;
  for (unsigned i = 0; i < kSlabs * per; ++i) again.push_back(kmem_cache_alloc(s, 0));
  expect_objects_of(s, again);
  for (void* p : again) kmem_cache_free(s, p);
  destroy_clean(s);
}

// A use after free in one object of a flushed sheaf: that object is reported and dropped, the
// others of the same flush (in the same detached lists) go back to their slabs.
TEST(Flush, ObjectThatLostItsKeyIsDroppedTheOthersGoBack) {
  kmem_cache* s = kmem_cache_create("flush-uaf", 64, 0, SLAB_NO_MERGE | SLAB_SHEAVES, nullptr);
  ASSERT_NE(s, nullptr);
  if (!s->free_key) GTEST_SKIP() << "USLUB_DOUBLE_FREE=0";
  const unsigned cap_objs = info_of(s).sheaf_capacity;
  std::vector<void*> v;
  for (unsigned i = 0; i < 3 * cap_objs; ++i) v.push_back(kmem_cache_alloc(s, 0));
  for (void* p : v) kmem_cache_free(s, p);
  void* victim = v[v.size() / 2];
  memset(victim, 0x77, s->object_size);  // the key word too
  {
    report_capture cap;
    kmem_cache_shrink(s);
    EXPECT_EQ(cap.count(), 1u);
    EXPECT_EQ(cap.first_line(), "uslub: BUG flush-uaf: Freepointer corrupt");
  }
  EXPECT_EQ(kmem_cache_validate(s), 0);
  // Only the victim's slab is left, with the victim the one object in use.
  auto in = info_of(s);
  EXPECT_EQ(in.num_slabs, 1u);
  EXPECT_EQ(in.active_objs, 1u);
  kmem_cache_free(s, victim);  // the program's own free of it (it is in use for the cache)
  shrink_empty_and_destroy(s);
}

// Bursts of allocations and frees longer than main + spare (glibc-simple's pattern: n objects
// allocated, freed half FIFO and half LIFO) trade whole sheaves with the barn: after the first
// burst no sheaf is flushed to the slabs or refilled from them, and every burst hands out n
// distinct objects.
TEST(Barn, BurstsOfSeveralSheavesTradeWithTheBarnNotTheSlabs) {
  pin_to_this_cpu pin;  // a migration mid-burst starts on the other CPU's empty slot: a refill
  // 6.25 and 25 sheaves (400 and 1600 objects at capacity 64, glibc-simple's largest counts).
  for (unsigned sheaves4 : {25u, 100u}) {
    kmem_cache* s =
        kmem_cache_create("barn-burst", 16, 0, SLAB_NO_MERGE | SLAB_STATS | SLAB_SHEAVES, nullptr);
    ASSERT_NE(s, nullptr);
    const unsigned n = info_of(s).sheaf_capacity * sheaves4 / 4;
    std::vector<void*> v(n);
    auto burst = [&] {
      for (auto& p : v) p = kmem_cache_alloc(s, 0);
      std::set<void*> uniq(v.begin(), v.end());
      EXPECT_EQ(uniq.size(), v.size()) << "n " << n;
      for (unsigned i = 0; i < n / 2; ++i) kmem_cache_free(s, v[i]);
      for (unsigned i = n; i-- > n / 2;) kmem_cache_free(s, v[i]);
    };
    burst();
    burst();
    auto before = info_of(s);
    for (int round = 0; round < 20; ++round) burst();
    auto after = info_of(s);
    EXPECT_EQ(after.sheaf_stat[SHEAF_FLUSH], before.sheaf_stat[SHEAF_FLUSH]) << "n " << n;
    EXPECT_EQ(after.sheaf_stat[SHEAF_REFILL], before.sheaf_stat[SHEAF_REFILL]) << "n " << n;
    EXPECT_GT(after.sheaf_stat[BARN_PUT], before.sheaf_stat[BARN_PUT]) << "n " << n;
    EXPECT_EQ(kmem_cache_validate(s), 0);
    destroy_clean(s);
  }
}

}  // namespace uslub::test
