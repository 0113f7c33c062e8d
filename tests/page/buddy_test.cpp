// Buddy split and merge, every order, with pcp made pass-through (batch = high = 1).
#include <algorithm>
#include <random>
#include <vector>

#include "page_test_util.hpp"

namespace uslub::test {

class Buddy : public page_alloc_fixture {
 protected:
  void SetUp() override {
    page_alloc_config c;
    c.pcp_batch = 1;
    c.pcp_high = 1;
    make(c);
  }
};

TEST_F(Buddy, SplitLeavesOneFreeBlockPerLowerOrderForEveryOrder) {
  for (unsigned o = 0; o <= MAX_ORDER; ++o) {
    page* p = pa_.alloc_pages(o);
    ASSERT_NE(p, nullptr) << "order " << o;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(page_address(p)) % (PAGE_SIZE << o), 0u);
    EXPECT_EQ(page_flags(p), PG_head);
    EXPECT_EQ(p->order, o);
    pa_.drain_all_pages();
    // One fresh MAX_ORDER block split down to o: one free block at each order o..MAX-1.
    for (unsigned k = 0; k <= MAX_ORDER; ++k)
      EXPECT_EQ(pa_.nr_free(k), (k >= o && k < MAX_ORDER) ? 1u : 0u) << "alloc " << o << " k " << k;
    pa_.free_pages(p, o);
    pa_.drain_all_pages();
    for (unsigned k = 0; k < MAX_ORDER; ++k) EXPECT_EQ(pa_.nr_free(k), 0u);
    EXPECT_EQ(pa_.nr_free(MAX_ORDER), 1u) << "order " << o << " did not merge back";
    EXPECT_TRUE(pa_.validate());
  }
  EXPECT_EQ(pa_.stats().grow, 1u);  // everything came from one block
}

TEST_F(Buddy, MergeInAnyOrderRebuildsTheMaximalBlock) {
  std::mt19937 rng(42);
  for (unsigned o : {0u, 1u, 3u, 5u, 9u}) {
    std::vector<page*> blocks;
    for (size_t i = 0; i < (size_t{1} << (MAX_ORDER - o)); ++i) {
      page* p = pa_.alloc_pages(o);
      ASSERT_NE(p, nullptr);
      blocks.push_back(p);
    }
    EXPECT_EQ(pa_.stats().grow, 1u) << "the whole block was carved into order " << o;
    std::shuffle(blocks.begin(), blocks.end(), rng);
    for (page* p : blocks) pa_.free_pages(p, o);
    pa_.drain_all_pages();
    EXPECT_EQ(pa_.nr_free(MAX_ORDER), 1u);
    for (unsigned k = 0; k < MAX_ORDER; ++k) EXPECT_EQ(pa_.nr_free(k), 0u);
    EXPECT_TRUE(pa_.validate());
  }
}

TEST_F(Buddy, DescriptorAndAddressRoundTrip) {
  page* p = pa_.alloc_pages(3);
  ASSERT_NE(p, nullptr);
  char* a = static_cast<char*>(page_address(p));
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(virt_to_page(a + i * PAGE_SIZE + 123), p + i);
    EXPECT_EQ(page_address(p + i), a + i * PAGE_SIZE);
  }
  EXPECT_NE(lookup_section(a), nullptr);
  EXPECT_EQ(lookup_section(a)->owner, &pa_);
  int on_stack;
  EXPECT_EQ(lookup_section(&on_stack), nullptr);
  pa_.free_pages(p, 3);
}

TEST_F(Buddy, CompoundBlocksPointTailsAtTheHead) {
  page* p = pa_.alloc_pages(2, __GFP_COMP);
  ASSERT_NE(p, nullptr);
  for (int i = 1; i < 4; ++i) {
    EXPECT_EQ(page_flags(p + i), PG_tail);
    EXPECT_EQ(compound_head(p + i), p);
  }
  pa_.free_pages(p, 2);
  for (int i = 1; i < 4; ++i) EXPECT_EQ(page_flags(p + i) & PG_tail, 0u);
}

TEST_F(Buddy, ZeroedAllocationsReadZeros) {
  for (int round = 0; round < 3; ++round) {
    page* p = pa_.alloc_pages(4);
    ASSERT_NE(p, nullptr);
    memset(page_address(p), 0x5a, PAGE_SIZE << 4);
    pa_.free_pages(p, 4);
    page* q = pa_.alloc_pages(4, __GFP_ZERO);
    ASSERT_NE(q, nullptr);
    auto* b = static_cast<unsigned char*>(page_address(q));
    EXPECT_TRUE(std::all_of(b, b + (PAGE_SIZE << 4), [](unsigned char c) { return c == 0; }));
    pa_.free_pages(q, 4);
  }
}

}  // namespace uslub::test
