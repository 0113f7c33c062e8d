// USLUB_MEMORY_LIMIT: huge blocks count against it, reaching it reclaims before failing, and
// a limit too small to start is raised to the minimum with a message saying what it is.
// The limit is read when the global page allocator starts: this file sets it before that.
#include <stdlib.h>

#include <vector>

#include "kmalloc/kmalloc.hpp"
#include "page/pressure.hpp"
#include "test_support.hpp"

namespace {
constexpr std::size_t kLimit = std::size_t{64} << 20;
// Before any test (and before uslub's first use: gtest allocates with glibc here).
const int g_env = setenv("USLUB_MEMORY_LIMIT", "64M", /*overwrite=*/0);
}  // namespace

namespace uslub::test {

TEST(MemoryLimit, HugeBlocksCountAgainstTheLimit) {
  ASSERT_EQ(global_page_allocator().config().memory_limit, kLimit) << g_env;
  errno = 0;
  EXPECT_EQ(kmalloc(std::size_t{96} << 20, 0), nullptr) << "a 96 MiB block under a 64 MiB limit";
  EXPECT_EQ(errno, ENOMEM);
  void* p = kmalloc(std::size_t{40} << 20, 0);
  ASSERT_NE(p, nullptr);
  EXPECT_GE(global_page_allocator().stats().charged_bytes, std::size_t{40} << 20);
  void* q = kmalloc(std::size_t{40} << 20, 0);
  EXPECT_EQ(q, nullptr) << "40 + 40 MiB pass the limit";
  kfree(p);
  EXPECT_EQ(global_page_allocator().stats().charged_bytes, 0u) << "no live huge block is left";
}

// A retained huge mapping is charged to the limit; when the sections cannot grow any more the
// page allocator runs the shrinkers (the huge cache's mapping goes) and retries, so large
// blocks get more memory than was available without that reclaim.
TEST(MemoryLimit, ReachingTheLimitReclaimsBeforeFailing) {
  std::vector<void*> huge;
  for (int i = 0; i < 5; ++i) {
    huge.push_back(kmalloc(std::size_t{5} << 20, 0));
    ASSERT_NE(huge.back(), nullptr);
  }
  kfree(huge.back());  // 5 MiB retained: up to half of the 20 MiB still live
  huge.pop_back();
  ASSERT_EQ(huge_get_stats().cached_bytes, std::size_t{5} << 20);
  page_alloc_stats st = global_page_allocator().stats();
  std::size_t grow_step = MAX_ORDER_BYTES + MAX_ORDER_BYTES / PAGE_SIZE * sizeof(page);
  std::size_t headroom = kLimit - st.committed_bytes - st.charged_bytes;
  // Without reclaim: the free pages of the sections plus the growth steps that fit.
  std::size_t without = headroom / grow_step * MAX_ORDER_BYTES;
  for (unsigned o = 8; o <= MAX_ORDER; ++o)  // free blocks that can hold a 1 MiB block
    without += global_page_allocator().nr_free(o) * (PAGE_SIZE << o);
  std::uint64_t shrinks = pressure_get_stats().shrinks[static_cast<unsigned>(shrink_reason::limit)];
  std::vector<void*> large;
  std::size_t got = 0;
  for (;;) {
    void* p = kmalloc(std::size_t{1} << 20, 0);
    if (!p) break;
    large.push_back(p);
    got += std::size_t{1} << 20;
  }
  EXPECT_EQ(errno, ENOMEM);
  EXPECT_GT(pressure_get_stats().shrinks[static_cast<unsigned>(shrink_reason::limit)], shrinks);
  EXPECT_EQ(huge_get_stats().cached_bytes, 0u) << "the retained mapping was given back";
  EXPECT_GT(got, without) << "the reclaimed 5 MiB served large blocks";
  for (void* p : large) kfree(p);
  for (void* p : huge) kfree(p);
}

// A limit below what uslub needs to start: a message with the minimum, not a panic.
TEST(MemoryLimitDeathTest, TooSmallALimitPrintsTheMinimum) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        setenv("USLUB_MEMORY_LIMIT", "1M", 1);
        void* p = kmalloc(100, 0);
        _exit(p ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "below the minimum uslub needs to start, 4263936 bytes");
}

}  // namespace uslub::test
