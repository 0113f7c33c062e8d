// kmalloc classes, large/huge blocks, krealloc, ksize, and the C++ API.
#include <uslub/slab.h>
#include <uslub/uslub.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "kmalloc/kmalloc.hpp"
#include "test_support.hpp"

namespace uslub::test {

TEST(Kmalloc, ClassesCoverEverySizeWithBoundedWaste) {
  kfree(kmalloc(1, 0));  // initialise
  for (size_t sz = 1; sz <= KMALLOC_MAX_CACHE_SIZE; ++sz) {
    kmem_cache* s = kmalloc_slab(sz);
    ASSERT_GE(s->object_size, sz);
    if (sz > 128) EXPECT_LE(s->object_size, sz + sz / 4 + 1) << sz;
  }
}

TEST(Kmalloc, AllocFreeKsizeAcrossClassesLargeAndHuge) {
  for (size_t sz : {size_t{1}, size_t{8}, size_t{9}, size_t{100}, size_t{4000}, size_t{32768},
                    size_t{32769}, size_t{1} << 20, size_t{4} << 20, (size_t{4} << 20) + 1}) {
    char* p = static_cast<char*>(kmalloc(sz, 0));
    ASSERT_NE(p, nullptr);
    EXPECT_GE(ksize(p), sz);
    memset(p, 1, sz);
    kfree(p);
  }
  auto* z = static_cast<unsigned char*>(kzalloc(5000, 0));
  for (int i = 0; i < 5000; ++i) ASSERT_EQ(z[i], 0);
  kfree(z);
  errno = 0;
  EXPECT_EQ(kcalloc(SIZE_MAX / 4, 8, 0), nullptr);
  EXPECT_EQ(errno, ENOMEM);
}

TEST(Kmalloc, KreallocKeepsContents) {
  char* p = static_cast<char*>(kmalloc(10, 0));
  strcpy(p, "abcdefghi");
  for (size_t sz : {11, 200, 70000, 6000000, 40, 10}) {
    p = static_cast<char*>(krealloc(p, sz, 0));
    ASSERT_NE(p, nullptr);
    EXPECT_STREQ(p, "abcdefghi") << sz;
  }
  EXPECT_EQ(krealloc(p, 0, 0), nullptr);
}

// A large block takes exactly the pages it needs (alloc_pages_exact): realloc grows it in place
// into free pages after it and moves it when they are taken; the usable size is the request in
// whole pages, and a move copies the request (pages never asked for are never read, so never
// faulted in).
TEST(Kmalloc, LargeReallocGrowsInPlaceIntoFreePagesAndMovesWhatWasAsked) {
  const size_t k600 = 600 << 10, k900 = 900 << 10, k1200 = 1200 << 10;
  auto* p = static_cast<unsigned char*>(kmalloc(k600, 0));
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(ksize(p), k600) << "the request, in whole pages";
  page* head = virt_to_page(p);
  EXPECT_TRUE(page_flags(head) & PG_exact);
  EXPECT_EQ(head->nr_pages, k600 / 4096) << "exactly the pages asked for";
  for (size_t i = 0; i < k600; i += 4096) p[i] = static_cast<unsigned char>(i >> 12);
  p[k600 - 1] = 0xAB;
  auto* q = static_cast<unsigned char*>(krealloc(p, k900, 0));
  EXPECT_EQ(q, p) << "the pages after the block are free";
  EXPECT_EQ(ksize(q), k900);
  EXPECT_EQ(head->nr_pages, k900 / 4096);
  q[k900 - 1] = 0xCD;
  void* blocker = kmalloc(100 << 10, 0);  // packed right after q
  ASSERT_EQ(blocker, q + k900);
  auto* r = static_cast<unsigned char*>(krealloc(q, k1200, 0));
  ASSERT_NE(r, nullptr);
  EXPECT_NE(r, q) << "the next pages are taken";
  for (size_t i = 0; i < k600; i += 4096) ASSERT_EQ(r[i], static_cast<unsigned char>(i >> 12));
  EXPECT_EQ(r[k600 - 1], 0xAB);
  EXPECT_EQ(r[k900 - 1], 0xCD);
  EXPECT_EQ(ksize(r), k1200);
  auto* z = static_cast<unsigned char*>(krealloc(r, k1200 + (100 << 10), __GFP_ZERO));
  EXPECT_EQ(z, r) << "grown in place again";
  for (size_t i = k1200; i < k1200 + (100 << 10); ++i) ASSERT_EQ(z[i], 0) << i;
  auto* s = static_cast<unsigned char*>(krealloc(z, 200 << 10, 0));
  EXPECT_EQ(s, z) << "shrunk in place";
  EXPECT_EQ(virt_to_page(s)->nr_pages, (200u << 10) / 4096) << "its tail given back";
  kfree(s);
  kfree(blocker);
}

// bench/workloads/large_blocks.py's sweep sizes up to MAX_ORDER: a block costs its request in
// whole pages (32 KiB is its own class; above it alloc_pages_exact) and ksize is that size
// (tools/large_breakdown.py shows the resident side of the same; the packing of consecutive
// blocks is PageExact.ConsecutiveBlocksArePackedWithoutGaps, on an allocator of its own: in
// this process's heap the pages after a block may be taken).
TEST(Kmalloc, SweepSizesTakeTheirPagesAndNoMore) {
  kfree(kmalloc(1, 0));  // initialise
  EXPECT_EQ(kmalloc_slab(32768)->object_size, 32768u);
  for (size_t sz : {size_t{40000}, size_t{100000}, size_t{256} << 10, size_t{600000},
                    (size_t{1} << 20) + 64, size_t{3000000}, size_t{4} << 20}) {
    const size_t nr = (sz + 4095) / 4096;
    std::vector<unsigned char*> v;
    for (int i = 0; i < 4; ++i) {
      auto* p = static_cast<unsigned char*>(kmalloc(sz, 0));
      ASSERT_NE(p, nullptr) << sz;
      page* head = virt_to_page(p);
      EXPECT_TRUE(page_flags(head) & PG_large) << sz;
      EXPECT_EQ(head->nr_pages, nr) << sz << ": at most ceil(size / 4096) pages";
      EXPECT_EQ(ksize(p), nr * 4096) << sz;
      p[0] = p[sz - 1] = 1;
      v.push_back(p);
    }
    for (auto* p : v) kfree(p);
  }
}

TEST(Kmalloc, ForeignAndInteriorPointersAreReported) {
  report_capture cap;
  int x;
  kfree(&x);
  char* big = static_cast<char*>(kmalloc(100000, 0));
  kfree(big + 4096);
  kfree(big);
  char* huge = static_cast<char*>(kmalloc(8 << 20, 0));
  kfree(huge + 8);
  kfree(huge);
  kfree(huge);
  ASSERT_EQ(cap.count(), 4u);
  EXPECT_EQ(cap.first_line(0), "uslub: BUG kmalloc: Invalid pointer");
  EXPECT_EQ(cap.first_line(1), "uslub: BUG kmalloc: Invalid pointer");  // interior page
  EXPECT_EQ(cap.first_line(3), "uslub: BUG kmalloc: Invalid pointer");
}

// kfree finds the cache in the slab map: every page of a multi-page slab maps to its cache and
// order while the slab lives, and a pointer into a later page of it that is no object start is
// still an Invalid pointer; the words are 0 once the slab is released.
TEST(Kmalloc, SlabMapNamesEveryPageOfASlabUntilItIsReleased) {
  auto* p = static_cast<char*>(kmalloc(2000, 0));
  kmem_cache* s = kmalloc_slab(2000);  // (after the first kmalloc: made by it)
  page* slab = virt_to_slab(p);
  ASSERT_NE(slab, nullptr);
  unsigned order = slab->order;
  ASSERT_GE(order, 1u) << "kmalloc-2048 slabs span several pages";
  auto* base = static_cast<char*>(slab_address(slab));
  for (std::size_t i = 0; i < std::size_t{1} << order; ++i) {
    std::uintptr_t e = slab_map_entry(base + i * PAGE_SIZE);
    EXPECT_EQ(slab_map_cache(e), s) << "page " << i;
    EXPECT_EQ(e & SLAB_MAP_ORDER_MASK, order) << "page " << i;
  }
  report_capture cap;
  kfree(base + PAGE_SIZE + 8);  // inside the slab's second page, not an object start
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG kmalloc-2048: Invalid pointer");
  int x;
  EXPECT_EQ(slab_map_entry(&x), 0u) << "not uslub's memory";
  // A cache of its own, emptied and shrunk: its slab is released and its words cleared.
  kmem_cache* c = kmem_cache_create("slab-map", 2000, 0, SLAB_NO_MERGE | SLAB_NO_SHEAVES, nullptr);
  void* q = kmem_cache_alloc(c, 0);
  char* qbase = static_cast<char*>(slab_address(virt_to_slab(q)));
  unsigned qorder = virt_to_slab(q)->order;
  EXPECT_EQ(slab_map_cache(slab_map_entry(qbase)), c);
  kmem_cache_free(c, q);
  kmem_cache_shrink(c);
  for (std::size_t i = 0; i < std::size_t{1} << qorder; ++i)
    EXPECT_EQ(slab_map_entry(qbase + i * PAGE_SIZE), 0u) << "page " << i;
  kmem_cache_destroy(c);
  kfree(p);
}

// free finds the slab map word of the first section by one range compare and of any other
// section by the section table (kfree_inline); either way the boundary check takes the slab's
// order into account (objects of a 1280-byte class beyond the first page are object starts,
// a pointer 8 bytes into one is not).  The other-section path is exercised by taking the
// first section away for the duration (as for an address outside it).
TEST(Kmalloc, FreeFindsTheSlabMapWordInAndOutsideTheFirstSection) {
  kfree(kmalloc(1280, 0));  // initialise
  const std::uintptr_t first = detail::g_first_section.load();
  ASSERT_NE(first, kNoFirstSection) << "kmalloc's heap is in a section";
  for (bool table : {false, true}) {
    std::vector<char*> v;
    for (int i = 0; i < 24; ++i) v.push_back(static_cast<char*>(kmalloc(1280, 0)));
    bool beyond_first_page = false;
    for (char* p : v) {
      EXPECT_LT(reinterpret_cast<std::uintptr_t>(p) - first, SECTION_SIZE)
          << "the heap's first GiB";
      beyond_first_page |= slab_map_offset(slab_map_entry(p), p) >= PAGE_SIZE;
    }
    EXPECT_TRUE(beyond_first_page) << "kmalloc-1280 slabs span several pages";
    report_capture cap;
    if (table) detail::g_first_section.store(kNoFirstSection);
    kfree(v[5] + 8);
    for (char* p : v) kfree(p);
    if (table) detail::g_first_section.store(first);
    ASSERT_EQ(cap.count(), 1u) << (table ? "section table" : "first section");
    EXPECT_EQ(cap.first_line(), "uslub: BUG kmalloc-1280: Invalid pointer");
  }
}

// The first section's range compare reads the slab map word of any address of the section,
// committed or not (the map is committed whole, memmap.cpp): an address the heap has not grown
// into yet (reserved, PROT_NONE), the section's own header and descriptors, and the addresses
// just past its end and just before its start are reported as Invalid pointer, never a fault.
TEST(Kmalloc, FreeOfAddressesAroundTheFirstSectionIsReported) {
  kfree(kmalloc(64, 0));  // initialise
  const std::uintptr_t first = detail::g_first_section.load();
  ASSERT_NE(first, kNoFirstSection);
  auto* sec = reinterpret_cast<mem_section*>(first);
  std::size_t top = sec->top.load();
  std::vector<std::uintptr_t> bad = {
      first,                      // the section header
      first + MEMMAP_BYTES + 64,  // the slab map itself
  };
  // Reserved, not yet grown into (PROT_NONE): the page after top and the section's last
  // object-sized slot.
  if (top + PAGE_SIZE < SECTION_SIZE) bad.push_back(first + top + PAGE_SIZE);
  if (top < SECTION_SIZE) bad.push_back(first + SECTION_SIZE - 64);
  // Just past the section and just before it, unless another section of the heap is there
  // (then these could be live objects).
  for (std::uintptr_t a : {first + SECTION_SIZE, first - 64})
    if (!kmalloc_owns(reinterpret_cast<void*>(a))) bad.push_back(a);
  report_capture cap;
  for (std::uintptr_t a : bad) kfree(reinterpret_cast<void*>(a));
  ASSERT_EQ(cap.count(), bad.size());
  for (std::size_t i = 0; i < bad.size(); ++i)
    EXPECT_NE(cap.first_line(i).find("Invalid pointer"), std::string::npos)
        << std::hex << bad[i] - first << ": " << cap.first_line(i);
}

TEST(CxxApi, CacheAllocatorAndResource) {
  struct obj {
    int a;
    std::string s;
    obj(int x, std::string y) : a(x), s(std::move(y)) {}
  };
  {
    uslub::cache<obj> c("cxx-obj", SLAB_NO_MERGE);
    obj* o = c.create(7, "seven");
    EXPECT_EQ(o->a, 7);
    EXPECT_EQ(o->s, "seven");
    c.destroy(o);
    obj* raw[16];
    c.alloc_bulk(raw);
    c.free_bulk(raw);
  }
  std::vector<int, uslub::allocator<int>> v;
  for (int i = 0; i < 100000; ++i) v.push_back(i);
  EXPECT_TRUE(kmalloc_owns(v.data()));
  std::pmr::vector<std::pmr::string> pv(uslub::get_resource());
  for (int i = 0; i < 1000; ++i) pv.emplace_back(100, 'x');
  EXPECT_TRUE(kmalloc_owns(pv.data()));
  void* a = uslub::get_resource()->allocate(100, 4096);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 4096, 0u);
  uslub::get_resource()->deallocate(a, 100, 4096);
}

}  // namespace uslub::test

// The VmFlags of the mapping that holds p (/proc/self/smaps), or "" if none does.
std::string vm_flags_of(const void* p) {
  FILE* f = fopen("/proc/self/smaps", "r");
  if (!f) return "";
  auto a = reinterpret_cast<unsigned long>(p);
  char line[512];
  bool in = false;
  std::string flags;
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
      in = lo <= a && a < hi;
    } else if (in && strncmp(line, "VmFlags:", 8) == 0) {
      flags = line + 8;
      break;
    }
  }
  fclose(f);
  return flags;
}

// A huge block of at least USLUB_THP_MIN (16 MiB by default) asks for transparent huge pages
// (VmFlags "hg"); a smaller one does not, whatever the heap's size.
TEST(Kmalloc, HugeBlocksFromTheThpThresholdAskForHugePages) {
  if (!uslub::test::thp_threshold_mode() || getenv("USLUB_THP_MIN"))
    GTEST_SKIP() << "THP set in the environment";
  void* big = kmalloc(std::size_t{32} << 20, 0);
  void* small = kmalloc(std::size_t{6} << 20, 0);
  ASSERT_TRUE(big && small);
  std::string fb = vm_flags_of(big), fs = vm_flags_of(small);
  ASSERT_FALSE(fb.empty()) << "no mapping found for the 32 MiB block";
  EXPECT_NE(fb.find(" hg"), std::string::npos) << fb;
  EXPECT_EQ(fs.find(" hg"), std::string::npos) << fs;
  kfree(big);
  kfree(small);
}

TEST(Kmalloc, HugeReallocRemapsWithoutLosingContents) {
  std::size_t sz = std::size_t{6} << 20;
  auto* p = static_cast<unsigned char*>(kmalloc(sz, 0));
  ASSERT_NE(p, nullptr);
  for (std::size_t i = 0; i < sz; i += 4096) p[i] = static_cast<unsigned char>(i >> 12);
  auto* q = static_cast<unsigned char*>(krealloc(p, std::size_t{40} << 20, 0));  // grow: mremap
  ASSERT_NE(q, nullptr);
  EXPECT_GE(ksize(q), std::size_t{40} << 20);
  for (std::size_t i = 0; i < sz; i += 4096) ASSERT_EQ(q[i], static_cast<unsigned char>(i >> 12));
  q[(std::size_t{40} << 20) - 1] = 1;  // the new tail is usable
  auto* r = static_cast<unsigned char*>(krealloc(q, std::size_t{5} << 20, 0));  // shrink
  ASSERT_NE(r, nullptr);
  for (std::size_t i = 0; i < (std::size_t{5} << 20); i += 4096)
    ASSERT_EQ(r[i], static_cast<unsigned char>(i >> 12));
  uslub::test::report_capture cap;
  kfree(r);
  EXPECT_EQ(cap.count(), 0u);
}
