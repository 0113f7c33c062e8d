// Retained huge memory: freed blocks are kept in proportion to the live huge footprint, reused
// by best fit with split or moved (mremap) into a new block, so that reused memory never faults;
// idle memory decays, pressure and the limit empty it, and nothing is kept (or leaked) once
// every huge block is freed.
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "base/compiler.hpp"
#include "kmalloc/kmalloc.hpp"
#include "page/pressure.hpp"
#include "test_support.hpp"

namespace uslub::test {
namespace {

constexpr std::size_t MiB = std::size_t{1} << 20;

long minor_faults() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_minflt;
}

// Faults of TSan's shadow for a first write of n bytes: those of writing a populated mapping of
// that size (its own pages are resident, so every fault is the shadow's; TSan's shadow and
// meta pages are several per application page and not a fixed ratio).
long tsan_shadow_faults(std::size_t n, int byte) {
  void* m =
      mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  if (m == MAP_FAILED) return 0;
  long f = minor_faults();
  memset(m, byte, n);
  long d = minor_faults() - f;
  munmap(m, n);
  return d;
}

// Page faults taken while writing [p, p+n) in full, less those of a sanitizer's shadow memory
// (ASan: one shadow byte per 8 bytes, in pages of its own that fault in on first use; TSan:
// measured on a populated mapping of the same size).
long faults_writing(char* p, std::size_t n, int byte) {
  long tsan_shadow = USLUB_TSAN ? tsan_shadow_faults(n, byte) : 0;
  long f = minor_faults();
  memset(p, byte, n);
  long shadow = USLUB_ASAN ? static_cast<long>(n / 8 / 4096) : tsan_shadow;
  long d = minor_faults() - f - shadow;
  return d > 0 ? d : 0;
}

// Mappings a sanitizer's run time may add meanwhile (its own allocator and shadow).
constexpr int kForeignMappings = USLUB_ASAN || USLUB_TSAN ? 16 : 2;

int nr_mappings() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  int n = 0;
  while (std::getline(maps, line)) ++n;
  return n;
}

// Every retained byte unmapped.
void start_clean() {
  huge_trim();
  ASSERT_EQ(huge_get_stats().cached_bytes, 0u);
}

// Blocks freed full: the program is seen to fill its blocks (retained pages are worth moving).
void start_filled() {
  for (int i = 0; i < 4; ++i) {
    auto* p = static_cast<char*>(kmalloc(6 * MiB, 0));
    ASSERT_NE(p, nullptr);
    memset(p, 1, 6 * MiB);
    kfree(p);
  }
  start_clean();
}

}  // namespace

TEST(HugeCache, RetainsInProportionToTheLiveFootprintAndReuses) {
  start_clean();
  std::vector<char*> v;
  for (int i = 0; i < 8; ++i) {
    v.push_back(static_cast<char*>(kmalloc(8 * MiB, 0)));
    ASSERT_NE(v.back(), nullptr);
    memset(v.back(), i, 8 * MiB);
  }
  kfree(v.back());  // 56 MiB live: a quarter of it, 14 MiB, may be kept
  v.pop_back();
  huge_cache_stats st = huge_get_stats();
  EXPECT_EQ(st.live_bytes, 56 * MiB);
  EXPECT_EQ(st.cached_bytes, 8 * MiB);
  kfree(v.back());  // 48 MiB live: 12 MiB may be kept (15 before a trim): not 16
  v.pop_back();
  st = huge_get_stats();
  EXPECT_EQ(st.cached_bytes, 12 * MiB) << "the oldest mapping is cut";
  // A 7 MiB block reuses retained memory: old pages, no faults, zeroed on request.
  std::uint64_t hits = st.hits;
  auto* p = static_cast<char*>(kmalloc(7 * MiB, __GFP_ZERO));
  ASSERT_NE(p, nullptr);
  st = huge_get_stats();
  EXPECT_EQ(st.hits, hits + 1);
  EXPECT_GE(ksize(p), 7 * MiB);
  for (std::size_t i = 0; i < 7 * MiB; i += 4096) ASSERT_EQ(p[i], 0) << i;
  EXPECT_LE(faults_writing(p, 7 * MiB, 9), 4) << "retained pages are resident";
  v.push_back(p);
  // Everything freed: nothing is kept, whatever the delay.
  for (char* q : v) kfree(q);
  st = huge_get_stats();
  EXPECT_EQ(st.live_bytes, 0u);
  EXPECT_EQ(st.cached_bytes, 0u);
  EXPECT_EQ(huge_bytes(), 0u) << "every huge mapping unmapped";
}

// A request takes the smallest retained piece it fits in, and the rest of the piece stays
// retained for the next one: a block of a nearby size reuses the memory, without a system call.
// (Sizes in whole huge pages: blocks may be rounded up to them.)
TEST(HugeCache, BestFitSplitsARetainedBlock) {
  start_clean();
  std::vector<void*> keep;
  for (int i = 0; i < 8; ++i) keep.push_back(kmalloc(16 * MiB, 0));  // 128 MiB live
  auto* big = static_cast<char*>(kmalloc(20 * MiB, 0));
  keep.push_back(kmalloc(6 * MiB, 0));  // between the two: they are never merged
  auto* small = static_cast<char*>(kmalloc(10 * MiB, 0));
  ASSERT_NE(big, nullptr);
  ASSERT_NE(small, nullptr);
  memset(big, 1, 20 * MiB);
  memset(small, 2, 10 * MiB);
  kfree(big);
  kfree(small);
  ASSERT_EQ(huge_get_stats().cached_bytes, 30 * MiB);
  // The kernel may place small's mapping right below big's (in a hole another trim left), and
  // then the two pieces merge: the parts below are looked for anywhere in the freed memory.
  char* lo = small < big ? small : big;
  char* hi = small < big ? big + 20 * MiB : small + 10 * MiB;
  auto retained = [&](const char* p, std::size_t n) { return p >= lo && p + n <= hi; };
  const std::uint64_t misses = huge_get_stats().misses;
  // 8 MiB: the 10 MiB piece is the best fit (its 2 MiB tail stays retained).
  auto* a = static_cast<char*>(kmalloc(8 * MiB, 0));
  EXPECT_EQ(a, small);
  EXPECT_EQ(huge_get_stats().cached_bytes, 22 * MiB);
  // 12 MiB: the head of the 20 MiB piece; 6 MiB: the next part of it.
  auto* b = static_cast<char*>(kmalloc(12 * MiB, 0));
  auto* c = static_cast<char*>(kmalloc(6 * MiB, 0));
  EXPECT_TRUE(retained(b, 12 * MiB)) << static_cast<void*>(b);
  EXPECT_TRUE(retained(c, 6 * MiB)) << static_cast<void*>(c);
  if (big + 20 * MiB != small && small + 10 * MiB != big) {  // not merged: the exact places
    EXPECT_EQ(b, big);
    EXPECT_EQ(c, big + 12 * MiB);
  }
  EXPECT_EQ(huge_get_stats().cached_bytes, 4 * MiB);
  EXPECT_LE(faults_writing(a, 8 * MiB, 3) + faults_writing(b, 12 * MiB, 3) +
                faults_writing(c, 6 * MiB, 3),
            8)
      << "split blocks reuse resident pages";
  // Freed again, the adjacent parts merge: one 20 MiB piece serves a 20 MiB block.
  kfree(b);
  kfree(c);
  auto* d = static_cast<char*>(kmalloc(20 * MiB, 0));
  EXPECT_TRUE(retained(d, 20 * MiB)) << static_cast<void*>(d);
  EXPECT_EQ(huge_get_stats().misses, misses) << "every block came from retained memory";
  EXPECT_LE(faults_writing(d, 20 * MiB, 4), 4);
  kfree(d);
  kfree(a);
  for (void* q : keep) kfree(q);
  EXPECT_EQ(huge_bytes(), 0u);
}

// No single retained piece holds the request: the pieces are moved into the new block
// (mremap, page tables only) and writing it takes no page fault.
TEST(HugeCache, RetainedPiecesAreMovedIntoABiggerBlock) {
  start_filled();
  std::vector<void*> keep;
  for (int i = 0; i < 6; ++i) keep.push_back(kmalloc(16 * MiB, 0));  // 96 MiB live
  // Two 8 MiB blocks with a live one between them: retained apart, never merged.
  auto* x = static_cast<char*>(kmalloc(8 * MiB, 0));
  auto* sep = static_cast<char*>(kmalloc(6 * MiB, 0));
  auto* y = static_cast<char*>(kmalloc(8 * MiB, 0));
  ASSERT_TRUE(x && sep && y);
  memset(x, 1, 8 * MiB);
  memset(sep, 1, 6 * MiB);
  memset(y, 2, 8 * MiB);
  kfree(x);
  kfree(y);
  huge_cache_stats st = huge_get_stats();
  ASSERT_EQ(st.cached_bytes, 16 * MiB);
  ASSERT_EQ(st.cached_blocks, 2u);
  auto* z = static_cast<char*>(kmalloc(16 * MiB, __GFP_ZERO));
  ASSERT_NE(z, nullptr);
  huge_cache_stats st2 = huge_get_stats();
  EXPECT_EQ(st2.assembled, st.assembled + 1);
  EXPECT_EQ(st2.moved_bytes, st.moved_bytes + 16 * MiB);
  EXPECT_EQ(st2.cached_bytes, 0u);
  for (std::size_t i = 0; i < 16 * MiB; i += 4096) ASSERT_EQ(z[i], 0) << i;
  EXPECT_LE(faults_writing(z, 16 * MiB, 5), 4) << "moved pages are resident";
  // Growth by realloc: the grown part is a retained piece moved in, the contents stay.
  kfree(sep);
  st = huge_get_stats();
  ASSERT_EQ(st.cached_bytes, 6 * MiB);
  auto* g = static_cast<char*>(krealloc(z, 22 * MiB, 0));
  ASSERT_NE(g, nullptr);
  for (std::size_t i = 0; i < 16 * MiB; i += 4096) ASSERT_EQ(g[i], 5) << i;
  st2 = huge_get_stats();
  EXPECT_EQ(st2.moved_bytes, st.moved_bytes + 6 * MiB);
  EXPECT_EQ(st2.cached_bytes, 0u);
  EXPECT_LE(faults_writing(g + 16 * MiB, 6 * MiB, 6), 4);
  // Shrinking by realloc keeps the block and retains its tail.
  auto* h = static_cast<char*>(krealloc(g, 9 * MiB, 0));
  EXPECT_EQ(h, g);
  EXPECT_EQ(ksize(h), 9 * MiB);
  EXPECT_GE(huge_get_stats().cached_bytes, 12 * MiB);
  for (std::size_t i = 0; i < 9 * MiB; i += 4096) ASSERT_EQ(h[i], 5) << i;
  kfree(h);
  for (void* q : keep) kfree(q);
  EXPECT_EQ(huge_bytes(), 0u);
}

// Retained memory the program does not need during a whole decay period is unmapped by the
// next huge call after it (so within two periods).
TEST(HugeCache, IdleRetainedMemoryIsUnmappedAfterTheDecayDelay) {
  start_clean();
  long decay = global_page_allocator().config().decay_ms;
  ASSERT_GT(decay, 0);
  std::vector<void*> v;
  for (int i = 0; i < 12; ++i) v.push_back(kmalloc(6 * MiB, 0));
  kfree(v.back());
  v.pop_back();
  ASSERT_EQ(huge_get_stats().cached_bytes, 6 * MiB);
  std::uint64_t released = huge_get_stats().released;
  // A period in which nothing was retained the whole time: nothing goes.
  usleep(static_cast<useconds_t>(decay + 20) * 1000);
  kfree(v.back());
  v.pop_back();
  EXPECT_EQ(huge_get_stats().cached_bytes, 12 * MiB);
  // Then a period in which both were retained and never needed: both go at the next huge call
  // (here a free, whose block is kept).
  usleep(static_cast<useconds_t>(decay + 20) * 1000);
  kfree(v.back());
  v.pop_back();
  huge_cache_stats st = huge_get_stats();
  EXPECT_EQ(st.cached_bytes, 6 * MiB) << "only the block freed now is retained";
  EXPECT_GT(st.released, released);
  for (void* p : v) kfree(p);
  EXPECT_EQ(huge_get_stats().cached_bytes, 0u);
  EXPECT_EQ(huge_bytes(), 0u);
}

// Blocks freed full make the next huge blocks huge-page blocks: 2 MiB aligned, a whole number
// of huge pages (so 8 faults for 16 MiB, not 4096 plus a partial huge page's 4 KiB faults).
TEST(HugeCache, FilledBlocksMakeTheNextOnesWholeHugePages) {
  if (!thp_threshold_mode()) GTEST_SKIP() << "USLUB_THP is not 2 in the environment";
  start_filled();
  auto* q = static_cast<char*>(kmalloc(5 * MiB + 100, 0));
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(q) % (2 * MiB), 0u);
  EXPECT_EQ(ksize(q), 6 * MiB) << "rounded up to whole huge pages";
  kfree(q);
}

// Blocks of random sizes replaced at random, grown and shrunk by realloc, some aligned: at the
// end every huge mapping is gone (the table, the retained pieces, the kernel's mappings) and
// nothing stays charged to the page allocator.
TEST(HugeCache, NoMappingIsLeaked) {
  kfree(kmalloc(8, 0));  // kmalloc and the huge block table set up
  kfree(kmalloc(6 * MiB, 0));
  start_clean();
  int maps_before = nr_mappings();
  std::size_t charged_before = global_page_allocator().stats().charged_bytes;
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::size_t> size(5 * MiB, 25 * MiB);
  std::vector<char*> v(12, nullptr);
  for (int step = 0; step < 300; ++step) {
    std::size_t k = rng() % v.size(), n = size(rng);
    unsigned op = rng() % 4;
    switch (op) {
      case 0:
        v[k] = static_cast<char*>(krealloc(v[k], n, 0));
        break;
      case 1:
        kfree(v[k]);
        v[k] = static_cast<char*>(kmalloc_aligned(n, 4 * MiB, 0));
        break;
      default:
        kfree(v[k]);
        v[k] = static_cast<char*>(kmalloc(n, 0));
    }
    ASSERT_NE(v[k], nullptr) << "step " << step << " op " << op << " size " << n;
    v[k][0] = 1;
    v[k][ksize(v[k]) - 1] = 1;
    if (step % 16 == 0) memset(v[k], 2, ksize(v[k]));
  }
  for (char* p : v) kfree(p);
  huge_cache_stats st = huge_get_stats();
  EXPECT_EQ(st.live_bytes, 0u);
  EXPECT_EQ(st.cached_bytes, 0u);
  EXPECT_EQ(huge_bytes(), 0u);
  EXPECT_EQ(global_page_allocator().stats().charged_bytes, charged_before);
  EXPECT_LE(nr_mappings(), maps_before + kForeignMappings) << "the kernel's mappings went too";
}

}  // namespace uslub::test
