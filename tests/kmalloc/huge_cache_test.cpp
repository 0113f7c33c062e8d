// The huge block cache: freed mappings are kept in proportion to the live huge footprint,
// reused (mremap to the length needed), and none are kept once every huge block is freed.
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kmalloc/kmalloc.hpp"
#include "page/pressure.hpp"
#include "test_support.hpp"

namespace uslub::test {

constexpr std::size_t MiB = std::size_t{1} << 20;

TEST(HugeCache, RetainsInProportionToTheLiveFootprintAndReuses) {
  huge_trim();
  std::vector<char*> v;
  for (int i = 0; i < 8; ++i) {
    v.push_back(static_cast<char*>(kmalloc(8 * MiB, 0)));
    ASSERT_NE(v.back(), nullptr);
    memset(v.back(), i, 8 * MiB);
  }
  kfree(v.back());  // 56 MiB live: a quarter is 14 MiB, the 8 MiB mapping is kept
  v.pop_back();
  huge_cache_stats st = huge_get_stats();
  EXPECT_EQ(st.live_bytes, 56 * MiB);
  EXPECT_EQ(st.cached_bytes, 8 * MiB);
  kfree(v.back());  // 48 MiB live: 12 MiB may be kept, not 16: the older mapping goes
  v.pop_back();
  st = huge_get_stats();
  EXPECT_LE(st.cached_bytes, 12 * MiB);
  EXPECT_EQ(st.cached_bytes, 8 * MiB);
  // A 7 MiB block reuses the 8 MiB mapping (shrunk in place by mremap, or kept whole when
  // blocks are rounded to whole huge pages): old pages, no faults, zeroed on request.
  std::uint64_t hits = st.hits;
  auto* p = static_cast<char*>(kmalloc(7 * MiB, __GFP_ZERO));
  ASSERT_NE(p, nullptr);
  st = huge_get_stats();
  EXPECT_EQ(st.hits, hits + 1);
  EXPECT_EQ(st.cached_bytes, 0u);
  EXPECT_GE(ksize(p), 7 * MiB);
  for (std::size_t i = 0; i < 7 * MiB; i += 4096) ASSERT_EQ(p[i], 0) << i;
  v.push_back(p);
  // Everything freed: nothing is kept, whatever the delay.
  for (char* q : v) kfree(q);
  st = huge_get_stats();
  EXPECT_EQ(st.live_bytes, 0u);
  EXPECT_EQ(st.cached_bytes, 0u);
  EXPECT_EQ(huge_bytes(), 0u) << "every huge mapping unmapped";
}

TEST(HugeCache, IdleMappingsAreUnmappedAfterTheDecayDelay) {
  huge_trim();
  std::vector<void*> v;
  for (int i = 0; i < 8; ++i) v.push_back(kmalloc(6 * MiB, 0));
  kfree(v.back());
  v.pop_back();
  ASSERT_EQ(huge_get_stats().cached_bytes, 6 * MiB);
  long decay = global_page_allocator().config().decay_ms;
  usleep(static_cast<useconds_t>(decay + 50) * 1000);
  kfree(v.back());  // the next huge call drops the idle mapping and keeps the fresh one
  v.pop_back();
  huge_cache_stats st = huge_get_stats();
  EXPECT_EQ(st.cached_bytes, 6 * MiB);
  EXPECT_GE(st.released, 1u);
  for (void* p : v) kfree(p);
  EXPECT_EQ(huge_get_stats().cached_bytes, 0u);
}

// Blocks freed full make the next huge blocks huge-page blocks: 2 MiB aligned, a whole number
// of huge pages (so 8 faults for 16 MiB, not 4096 plus a partial huge page's 4 KiB faults).
TEST(HugeCache, FilledBlocksMakeTheNextOnesWholeHugePages) {
  if (getenv("USLUB_THP")) GTEST_SKIP() << "THP set in the environment";
  huge_trim();
  for (int i = 0; i < 4; ++i) {
    auto* p = static_cast<char*>(kmalloc(6 * MiB, 0));
    ASSERT_NE(p, nullptr);
    memset(p, 1, 6 * MiB);
    kfree(p);
  }
  auto* q = static_cast<char*>(kmalloc(5 * MiB + 100, 0));
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(q) % (2 * MiB), 0u);
  EXPECT_EQ(ksize(q), 6 * MiB) << "rounded up to whole huge pages";
  kfree(q);
}

}  // namespace uslub::test
