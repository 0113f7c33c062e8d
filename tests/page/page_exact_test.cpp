// alloc_pages_exact: blocks of any page count give the rest of their power-of-two block back to
// the buddy lists, are packed one after another, resize in place, and are checked on free.
#include <random>
#include <vector>

#include "page/buddy.hpp"
#include "page_test_util.hpp"

namespace uslub::test {

class PageExact : public page_alloc_fixture {
 protected:
  std::size_t free_pages() { return pa_.stats().free_bytes / PAGE_SIZE; }
};

// The kernel's alloc_pages_exact: 147 pages take 147 pages of the 256-page block; the 109
// pages of its tail are free in the buddy lists at once, and freeing the block merges it all
// back into the 4 MiB block it came from.
TEST_F(PageExact, AnExactBlockReturnsItsTailToTheBuddyAllocator) {
  make();
  page* p = pa_.alloc_pages_exact(147);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(page_flags(p), PG_head | PG_exact);
  EXPECT_EQ(p->nr_pages, 147u);
  EXPECT_EQ(pa_.stats().committed_bytes / MAX_ORDER_BYTES, 1u);
  EXPECT_EQ(free_pages(), 1024u - 147u) << "the tail of the 256-page block is free";
  EXPECT_EQ(pa_.nr_free(MAX_ORDER), 0u);
  // The tail is usable: an order-6 block (64 pages) fits inside it.
  page* q = pa_.alloc_pages(6);
  ASSERT_NE(q, nullptr);
  EXPECT_LT(page_pfn(q), page_pfn(p) + 256) << "taken from the tail, not from the rest";
  EXPECT_GE(page_pfn(q), page_pfn(p) + 147);
  pa_.free_pages(q, 6);
  EXPECT_TRUE(pa_.validate());
  pa_.free_pages_exact(p, 147);
  EXPECT_EQ(free_pages(), 1024u);
  EXPECT_EQ(pa_.nr_free(MAX_ORDER), 1u) << "everything merged back";
  EXPECT_TRUE(pa_.validate());
}

// Blocks allocated one after another sit one after another: no gap for a huge page under
// them to make resident.
TEST_F(PageExact, ConsecutiveBlocksArePackedWithoutGaps) {
  make();
  std::vector<page*> v;
  for (int i = 0; i < 20; ++i) {
    page* p = pa_.alloc_pages_exact(147);
    ASSERT_NE(p, nullptr);
    if (!v.empty() && page_section(p) == page_section(v.back()))
      EXPECT_EQ(page_pfn(p), page_pfn(v.back()) + 147) << i;
    v.push_back(p);
  }
  // 20 * 147 = 2940 pages: three 4 MiB blocks, not five (20 * 256 pages).
  EXPECT_EQ(pa_.stats().committed_bytes / MAX_ORDER_BYTES, 3u);
  EXPECT_TRUE(pa_.validate());
  for (page* p : v) pa_.free_pages_exact(p, 147);
  EXPECT_EQ(pa_.nr_free(MAX_ORDER), 3u);
  EXPECT_TRUE(pa_.validate());
}

TEST_F(PageExact, ResizeGrowsIntoFreePagesAndShrinkGivesTheTailBack) {
  make();
  page* p = pa_.alloc_pages_exact(100);
  ASSERT_NE(p, nullptr);
  std::size_t before = free_pages();
  ASSERT_TRUE(pa_.resize_pages_exact(p, 300));
  EXPECT_EQ(p->nr_pages, 300u);
  EXPECT_EQ(free_pages(), before - 200);
  page* blocker = pa_.alloc_pages_exact(10);
  ASSERT_EQ(page_pfn(blocker), page_pfn(p) + 300) << "packed right after";
  EXPECT_FALSE(pa_.resize_pages_exact(p, 301)) << "the next page is taken";
  EXPECT_EQ(p->nr_pages, 300u);
  ASSERT_TRUE(pa_.resize_pages_exact(p, 20));
  EXPECT_EQ(free_pages(), before - 200 - 10 + 280);
  EXPECT_TRUE(pa_.validate());
  pa_.free_pages_exact(blocker, 10);
  pa_.free_pages_exact(p, 20);
  EXPECT_EQ(pa_.nr_free(MAX_ORDER), 1u);
  EXPECT_TRUE(pa_.validate());
}

TEST_F(PageExact, WrongFreesAreReportedAndTheBlockStaysAllocated) {
  make();
  report_capture cap;
  page* p = pa_.alloc_pages_exact(147);
  pa_.free_pages(p, 8);          // not an alloc_pages block
  pa_.free_pages_exact(p, 146);  // wrong count
  page* q = pa_.alloc_pages(3);
  pa_.free_pages_exact(q, 8);  // not an exact block
  ASSERT_EQ(cap.count(), 3u);
  for (size_t i = 0; i < 3; ++i)
    EXPECT_EQ(cap.first_line(i), "uslub: BUG page allocator: Wrong order");
  EXPECT_NE(cap.reports()[0].find("alloc_pages_exact as 147 pages"), std::string::npos);
  EXPECT_EQ(page_flags(p), PG_head | PG_exact);
  pa_.free_pages_exact(p, 147);
  pa_.free_pages_exact(p, 147);  // double free
  ASSERT_EQ(cap.count(), 4u);
  EXPECT_EQ(cap.first_line(3), "uslub: BUG page allocator: Object already free");
  pa_.free_pages(q, 3);
  pa_.drain_all_pages();
  EXPECT_EQ(pa_.nr_free(MAX_ORDER), 1u);
  EXPECT_TRUE(pa_.validate());
}

TEST_F(PageExact, ZeroedBlocksReadAsZerosAfterReuse) {
  make();
  page* p = pa_.alloc_pages_exact(37);
  memset(page_address(p), 0xAA, 37 * PAGE_SIZE);
  pa_.free_pages_exact(p, 37);
  page* q = pa_.alloc_pages_exact(37, __GFP_ZERO);
  auto* b = static_cast<unsigned char*>(page_address(q));
  for (std::size_t i = 0; i < 37 * PAGE_SIZE; i += 97) ASSERT_EQ(b[i], 0) << i;
  pa_.free_pages_exact(q, 37);
}

// Random exact, power-of-two and resized blocks: the lists stay consistent and everything
// merges back at the end.
TEST_F(PageExact, RandomMixKeepsTheFreeListsConsistent) {
  make();
  std::mt19937 rng(7);
  struct blk {
    page* p;
    std::size_t nr;
    int order;  // -1: exact
  };
  std::vector<blk> live;
  for (int i = 0; i < 3000; ++i) {
    unsigned op = rng() % 8;
    if (!live.empty() && op < 3) {
      std::size_t k = rng() % live.size();
      blk b = live[k];
      live[k] = live.back();
      live.pop_back();
      if (b.order >= 0)
        pa_.free_pages(b.p, static_cast<unsigned>(b.order));
      else
        pa_.free_pages_exact(b.p, b.nr);
    } else if (!live.empty() && op == 3) {
      blk& b = live[rng() % live.size()];
      if (b.order >= 0) continue;
      std::size_t nr = 1 + rng() % 1024;
      if (pa_.resize_pages_exact(b.p, nr)) b.nr = nr;
      ASSERT_EQ(b.p->nr_pages, b.nr);
    } else if (op == 4) {
      int order = static_cast<int>(rng() % 6);
      page* p = pa_.alloc_pages(static_cast<unsigned>(order));
      ASSERT_NE(p, nullptr);
      live.push_back({p, std::size_t{1} << order, order});
    } else {
      std::size_t nr = 1 + rng() % (rng() % 2 ? 64 : 1024);
      page* p = pa_.alloc_pages_exact(nr);
      ASSERT_NE(p, nullptr);
      live.push_back({p, nr, -1});
    }
    if (i % 500 == 0) {
      ASSERT_TRUE(pa_.validate()) << i;
    }
  }
  for (blk& b : live) {
    if (b.order >= 0)
      pa_.free_pages(b.p, static_cast<unsigned>(b.order));
    else
      pa_.free_pages_exact(b.p, b.nr);
  }
  pa_.drain_all_pages();
  ASSERT_TRUE(pa_.validate());
  auto s = pa_.stats();
  EXPECT_EQ(s.free_bytes, s.grow * MAX_ORDER_BYTES) << "every page free";
  EXPECT_EQ(pa_.nr_free(MAX_ORDER), s.grow) << "and merged into whole 4 MiB blocks";
}

// A block that merges into its lower buddy's block leaves no flag on its descriptor: an exact
// block taken over that space later is walked (validate_slab_cache, the leak scan) in steps
// of 2^order from its head, and a stale PG_pcp/PG_head order there made the walk skip live
// slabs after it (the slab fuzzer's "Slab corrupt: counters say 1 slabs, the memory map holds
// 0").  Fails without the flag clearing in __free_one_page.
TEST_F(PageExact, AMergedBlockLeavesNoFlagAWalkWouldStepBy) {
  make();
  page* a = pa_.alloc_pages(3);
  page* b = pa_.alloc_pages(3);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  if ((page_pfn(a) ^ page_pfn(b)) != 8) GTEST_SKIP() << "the two blocks are not buddies";
  page* upper = page_pfn(a) < page_pfn(b) ? b : a;
  pa_.free_pages(a, 3);
  pa_.free_pages(b, 3);
  pa_.drain_all_pages();  // off the pcp lists: the two merge
  EXPECT_EQ(page_flags(upper) & (PG_head | PG_buddy | PG_pcp | PG_isolated), 0u)
      << "the upper half is an interior page of a free block now";
  // An exact block over the merged space, then a block allocated from its freed tail: the
  // memory map walk must see the latter (validate() walks it).
  page* e = pa_.alloc_pages_exact(11);
  ASSERT_NE(e, nullptr);
  EXPECT_TRUE(pa_.resize_pages_exact(e, 9));
  page* c = pa_.alloc_pages(1);
  ASSERT_NE(c, nullptr);
  EXPECT_TRUE(pa_.validate());
  pa_.free_pages(c, 1);
  pa_.free_pages_exact(e, 9);
  EXPECT_TRUE(pa_.validate());
}

}  // namespace uslub::test
