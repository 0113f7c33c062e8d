// kmem_cache_free_bulk on caches without sheaves (src/slab/slub.cpp, the detached freelists):
// a pointer that appears twice in the array, adjacent or not, is reported as "Object already
// free" and freed once; the cache stays consistent and never hands an object out twice.
#include <uslub/slab.h>

#include <algorithm>
#include <set>
#include <vector>

#include "slab/slab.hpp"
#include "test_support.hpp"

namespace uslub {
namespace {

using test::report_capture;

kmem_cache* make(const char* name) {
  return kmem_cache_create(name, 64, 0, SLAB_NO_MERGE | SLAB_NO_SHEAVES, nullptr);
}

// Allocates everything the cache has again (up to n) and checks that no object comes twice.
void expect_no_duplicate_handout(kmem_cache* s, std::size_t n) {
  std::vector<void*> v(n);
  ASSERT_EQ(kmem_cache_alloc_bulk(s, 0, n, v.data()), static_cast<int>(n));
  std::set<void*> u(v.begin(), v.end());
  EXPECT_EQ(u.size(), n) << "an object was handed out twice";
  kmem_cache_free_bulk(s, n, v.data());
}

TEST(BulkFree, NonAdjacentDuplicateInOneSlabIsReportedAndFreedOnce) {
  kmem_cache* s = make("bulk-dup-slab");
  void* p[4];
  ASSERT_EQ(kmem_cache_alloc_bulk(s, 0, 4, p), 4);
  void* a = p[0];
  void* f[5] = {p[0], p[1], p[2], a, p[3]};  // a twice, two entries apart
  report_capture cap;
  kmem_cache_free_bulk(s, 5, f);
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG bulk-dup-slab: Object already free");
  char want[64];
  snprintf(want, sizeof want, "%p", a);
  EXPECT_NE(cap.reports()[0].find(want), std::string::npos) << cap.reports()[0];
  EXPECT_EQ(kmem_cache_validate(s), 0) << "a cyclic or miscounted freelist";
  expect_no_duplicate_handout(s, 256);
  EXPECT_EQ(cap.count(), 1u);
  kmem_cache_destroy(s);
}

TEST(BulkFree, DuplicateSeparatedByAnotherSlabsObjectIsReported) {
  kmem_cache* s = make("bulk-dup-far");
  // Objects of two different slabs: allocate more than one slab holds.
  std::vector<void*> v(300);
  ASSERT_EQ(kmem_cache_alloc_bulk(s, 0, v.size(), v.data()), 300);
  void* a = v[0];
  void* b = v[1];
  void* other = nullptr;
  for (void* q : v)
    if (virt_to_slab(q) != virt_to_slab(a)) {
      other = q;
      break;
    }
  ASSERT_NE(other, nullptr);
  std::vector<void*> rest;
  for (void* q : v)
    if (q != a && q != b && q != other) rest.push_back(q);
  void* f[4] = {a, b, other, a};
  report_capture cap;
  kmem_cache_free_bulk(s, 4, f);
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG bulk-dup-far: Object already free");
  kmem_cache_free_bulk(s, rest.size(), rest.data());
  EXPECT_EQ(cap.count(), 1u);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  expect_no_duplicate_handout(s, 600);
  kmem_cache_destroy(s);
}

// Arrays up to 512 entries are checked with a hash set, larger ones sorted: both sizes.
void many_duplicates(const char* name, std::size_t n) {
  kmem_cache* s = make(name);
  std::vector<void*> v(n);
  ASSERT_EQ(kmem_cache_alloc_bulk(s, 0, v.size(), v.data()), static_cast<int>(n));
  std::vector<void*> f = v;
  for (std::size_t i = 0; i < 10; ++i) f.push_back(v[i * 97 % n]);
  std::reverse(f.begin() + static_cast<long>(n / 2), f.end());  // far from their first copies
  report_capture cap;
  kmem_cache_free_bulk(s, f.size(), f.data());
  EXPECT_EQ(cap.count(), 10u) << n;
  for (std::size_t i = 0; i < cap.count(); ++i)
    EXPECT_EQ(cap.first_line(i), std::string("uslub: BUG ") + name + ": Object already free");
  EXPECT_EQ(kmem_cache_validate(s), 0);
  expect_no_duplicate_handout(s, 2 * n);
  kmem_cache_destroy(s);
}

TEST(BulkFree, ManyDuplicatesAnywhereInALargeArray) {
  many_duplicates("bulk-dup-many", 1000);
}

TEST(BulkFree, ManyDuplicatesAnywhereInAMediumArray) {
  many_duplicates("bulk-dup-medium", 300);
}

TEST(BulkFree, DistinctObjectsInAnyOrderFreeWithoutReports) {
  kmem_cache* s = make("bulk-order");
  for (int round = 0; round < 20; ++round) {
    std::vector<void*> v(round % 2 ? 700 : 200);  // sorted and hashed
    ASSERT_EQ(kmem_cache_alloc_bulk(s, 0, v.size(), v.data()), static_cast<int>(v.size()));
    std::set<void*> u(v.begin(), v.end());
    ASSERT_EQ(u.size(), v.size());
    for (std::size_t i = 0; i < v.size(); ++i)
      std::swap(v[i], v[(i * 7919 + static_cast<std::size_t>(round)) % v.size()]);
    v.push_back(nullptr);  // NULL entries are skipped
    report_capture cap;
    kmem_cache_free_bulk(s, v.size(), v.data());
    v.pop_back();
    EXPECT_EQ(cap.count(), 0u);
  }
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_destroy(s);
}

}  // namespace
}  // namespace uslub
