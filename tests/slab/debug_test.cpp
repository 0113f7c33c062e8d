// slub_debug (debug.hpp): one test per problem kind and per USLUB_DEBUG letter, checking the
// report's first line, the addresses in it and the tracked stacks; the grammar; failslab.
// ctest runs every test in its own process, so each may parse its own USLUB_DEBUG rules.
#include <uslub/slab.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "kmalloc/kmalloc.hpp"
#include "slab/debug.hpp"
#include "slab/slab.hpp"
#include "test_support.hpp"

namespace uslub {
namespace {

using test::report_capture;

constexpr slab_flags_t FZPU =
    SLAB_CONSISTENCY_CHECKS | SLAB_RED_ZONE | SLAB_POISON | SLAB_STORE_USER;

std::string hex(const void* p) {
  char b[32];
  snprintf(b, sizeof b, "%p", p);
  return b;
}

bool contains(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

// ---- the grammar ------------------------------------------------------------------------

TEST(SlubDebugGrammar, GlobalLettersApplyToEveryCache) {
  ASSERT_TRUE(parse_slub_debug("FZ"));
  EXPECT_EQ(kmem_cache_flags("anything", 0), SLAB_CONSISTENCY_CHECKS | SLAB_RED_ZONE);
  EXPECT_EQ(kmem_cache_flags("kmalloc-64", SLAB_HWCACHE_ALIGN),
            SLAB_HWCACHE_ALIGN | SLAB_CONSISTENCY_CHECKS | SLAB_RED_ZONE);
}

TEST(SlubDebugGrammar, EmptyLettersMeanFZPU) {
  ASSERT_TRUE(parse_slub_debug(",dentry"));
  EXPECT_EQ(kmem_cache_flags("dentry", 0), FZPU);
  EXPECT_EQ(kmem_cache_flags("inode", 0), 0u);
}

TEST(SlubDebugGrammar, CacheListsBlocksAndPrefixGlobs) {
  ASSERT_TRUE(parse_slub_debug("FZPU,kmalloc-64,my_cache;T,trace_me;P,kmalloc-1*"));
  EXPECT_EQ(kmem_cache_flags("kmalloc-64", 0), FZPU);
  EXPECT_EQ(kmem_cache_flags("my_cache", 0), FZPU);
  EXPECT_EQ(kmem_cache_flags("trace_me", 0), SLAB_TRACE);
  EXPECT_EQ(kmem_cache_flags("kmalloc-128", 0), SLAB_POISON);
  EXPECT_EQ(kmem_cache_flags("kmalloc-96", 0), 0u);  // in no list, and no global block
}

TEST(SlubDebugGrammar, DashTurnsDebuggingOffEvenForExplicitFlags) {
  ASSERT_TRUE(parse_slub_debug("-,quiet;FZ"));
  EXPECT_EQ(kmem_cache_flags("quiet", SLAB_RED_ZONE | SLAB_HWCACHE_ALIGN), SLAB_HWCACHE_ALIGN);
  EXPECT_EQ(kmem_cache_flags("loud", 0), SLAB_CONSISTENCY_CHECKS | SLAB_RED_ZONE);
  ASSERT_TRUE(parse_slub_debug("-"));
  EXPECT_EQ(kmem_cache_flags("loud", SLAB_POISON), 0u);
}

TEST(SlubDebugGrammar, LettersAreCaseInsensitiveAndUnknownOnesAreReported) {
  report_capture cap;
  EXPECT_FALSE(parse_slub_debug("fzQ,c"));
  EXPECT_EQ(kmem_cache_flags("c", 0), SLAB_CONSISTENCY_CHECKS | SLAB_RED_ZONE);
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: USLUB_DEBUG: unknown option 'Q' ignored");
}

TEST(SlubDebugGrammar, OSkipsCachesWhoseOrderDebuggingWouldRaise) {
  ASSERT_TRUE(parse_slub_debug("FZPUO"));
  kmem_cache* big = kmem_cache_create("dbg-o-big", 32768, 0, 0, nullptr);
  kmem_cache* small = kmem_cache_create("dbg-o-small", 64, 0, 0, nullptr);
  ASSERT_TRUE(big && small);
  EXPECT_EQ(big->flags & SLAB_DEBUG_PATH, 0u);  // 32 KiB + red zones would need order 4
  EXPECT_EQ(small->flags & SLAB_DEBUG_PATH, FZPU);
  EXPECT_EQ(big->flags & SLAB_DEBUG_SKIP_HIGHER_ORDER, 0u);
  kmem_cache_destroy(big);
  kmem_cache_destroy(small);
}

// ---- layout -----------------------------------------------------------------------------

TEST(SlubDebugLayout, RedZonesTrackingAndAlignment) {
  kmem_cache* s = kmem_cache_create("dbg-layout", 24, 16, FZPU, nullptr);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->red_left_pad, 16u);
  EXPECT_GE(s->inuse, 32u);  // 24 rounded to a word is 24: a word of right red zone
  EXPECT_EQ(s->offset, s->inuse);
  EXPECT_NE(s->track_offset, 0u);
  EXPECT_EQ(s->size % 16, 0u);
  EXPECT_EQ(s->cpu_sheaves, nullptr);  // every operation takes the checked path
  void* p[40];
  for (auto& q : p) {
    q = kmem_cache_alloc(s, 0);
    ASSERT_NE(q, nullptr);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(q) % 16, 0u);
    // Poisoned on allocation (no __GFP_ZERO): use of uninitialised memory shows as 0x6b.
    EXPECT_EQ(static_cast<unsigned char*>(q)[0], POISON_FREE);
    EXPECT_EQ(static_cast<unsigned char*>(q)[24], SLUB_RED_ACTIVE);
    EXPECT_EQ(static_cast<unsigned char*>(q)[-1], SLUB_RED_ACTIVE);
  }
  for (auto& q : p) kmem_cache_free(s, q);
  void* z = kmem_cache_zalloc(s, 0);
  for (int i = 0; i < 24; ++i) EXPECT_EQ(static_cast<unsigned char*>(z)[i], 0);
  EXPECT_EQ(static_cast<unsigned char*>(z)[24], SLUB_RED_ACTIVE);
  kmem_cache_free(s, z);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_destroy(s);
}

// ---- problems -------------------------------------------------------------------------

// A noinline allocation site whose name must appear in the tracked stack.
__attribute__((noinline)) void* debug_test_alloc_site(kmem_cache* s) {
  void* p = kmem_cache_alloc(s, 0);
  asm volatile("" ::: "memory");
  return p;
}
__attribute__((noinline)) void debug_test_free_site(kmem_cache* s, void* p) {
  kmem_cache_free(s, p);
  asm volatile("" ::: "memory");
}

TEST(SlubDebug, RightRedzoneOverwriteIsReportedWithAddressesStackAndRestored) {
  kmem_cache* s = kmem_cache_create("dbg-rz", 40, 0, FZPU, nullptr);
  auto* p = static_cast<unsigned char*>(debug_test_alloc_site(s));
  report_capture cap;
  p[40] = 'x';
  p[41] = 'y';
  kmem_cache_free(s, p);
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG dbg-rz: Redzone overwritten");
  std::string r = cap.reports()[0];
  EXPECT_TRUE(contains(r, "Right Redzone " + hex(p + 40) + "-" + hex(p + 41))) << r;
  EXPECT_TRUE(contains(r, "First byte 0x78 instead of 0xcc")) << r;
  EXPECT_TRUE(contains(r, "INFO: Object " + hex(p))) << r;
  EXPECT_TRUE(contains(r, "INFO: Allocated age=")) << r;
  EXPECT_TRUE(contains(r, "debug_test_alloc_site")) << r;  // symbolised tracked stack
  EXPECT_TRUE(contains(r, "Redzone  ")) << r;              // hex dump
  EXPECT_TRUE(contains(r, "FIX dbg-rz: Restoring Right Redzone")) << r;
  EXPECT_EQ(kmem_cache_validate(s), 0);  // restored: the cache is consistent again
  EXPECT_EQ(cap.count(), 1u);
  kmem_cache_destroy(s);
}

TEST(SlubDebug, LeftRedzoneUnderflowIsReported) {
  kmem_cache* s = kmem_cache_create("dbg-lrz", 64, 0, SLAB_RED_ZONE, nullptr);
  auto* p = static_cast<unsigned char*>(kmem_cache_alloc(s, 0));
  report_capture cap;
  p[-3] = 0;
  kmem_cache_free(s, p);
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG dbg-lrz: Redzone overwritten");
  EXPECT_TRUE(contains(cap.reports()[0], "Left Redzone " + hex(p - 3)));
  kmem_cache_destroy(s);
}

TEST(SlubDebug, UseAfterFreeWriteIsPoisonOverwrittenWithBothStacks) {
  kmem_cache* s = kmem_cache_create("dbg-poison", 96, 0, FZPU, nullptr);
  auto* p = static_cast<unsigned char*>(debug_test_alloc_site(s));
  debug_test_free_site(s, p);
  report_capture cap;
  p[10] = 0x11;                      // use after free
  void* q = kmem_cache_alloc(s, 0);  // LIFO: the same object, checked when taken
  EXPECT_EQ(q, p);
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG dbg-poison: Poison overwritten");
  std::string r = cap.reports()[0];
  EXPECT_TRUE(contains(r, "Poison " + hex(p + 10) + "-" + hex(p + 10))) << r;
  EXPECT_TRUE(contains(r, "First byte 0x11 instead of 0x6b")) << r;
  EXPECT_TRUE(contains(r, "INFO: Freed age=")) << r;
  EXPECT_TRUE(contains(r, "debug_test_free_site")) << r;
  EXPECT_TRUE(contains(r, "debug_test_alloc_site")) << r;
  kmem_cache_free(s, q);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_destroy(s);
}

TEST(SlubDebug, DoubleFreeNotInARowIsFoundOnTheFreelist) {
  kmem_cache* s =
      kmem_cache_create("dbg-df", 32, 0, SLAB_CONSISTENCY_CHECKS | SLAB_STORE_USER, nullptr);
  void* a = kmem_cache_alloc(s, 0);
  void* b = kmem_cache_alloc(s, 0);
  kmem_cache_free(s, a);
  kmem_cache_free(s, b);
  report_capture cap;
  kmem_cache_free(s, a);  // a is on the slab's free list, not at its head
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG dbg-df: Object already free");
  EXPECT_TRUE(contains(cap.reports()[0], "Object " + hex(a) + " freed twice"));
  EXPECT_TRUE(contains(cap.reports()[0], "INFO: Freed age="));
  EXPECT_EQ(kmem_cache_validate(s), 0);  // not freed again: the free list is intact
  void* x = kmem_cache_alloc(s, 0);
  void* y = kmem_cache_alloc(s, 0);
  EXPECT_NE(x, y);
  kmem_cache_free(s, x);
  kmem_cache_free(s, y);
  kmem_cache_destroy(s);
}

TEST(SlubDebug, InvalidPointerAndWrongCacheOnADebugCache) {
  kmem_cache* s = kmem_cache_create("dbg-inv", 64, 0, FZPU, nullptr);
  kmem_cache* t = kmem_cache_create("dbg-inv2", 64, 0, FZPU, nullptr);
  auto* p = static_cast<char*>(kmem_cache_alloc(s, 0));
  report_capture cap;
  kmem_cache_free(s, p + 8);
  kmem_cache_free(s, p - s->red_left_pad);  // the slot start is not the object
  int local;
  kmem_cache_free(s, &local);
  kmem_cache_free(t, p);
  ASSERT_EQ(cap.count(), 4u);
  EXPECT_EQ(cap.first_line(0), "uslub: BUG dbg-inv: Invalid pointer");
  EXPECT_EQ(cap.first_line(1), "uslub: BUG dbg-inv: Invalid pointer");
  EXPECT_EQ(cap.first_line(2), "uslub: BUG dbg-inv: Invalid pointer");
  EXPECT_EQ(cap.first_line(3), "uslub: BUG dbg-inv2: Wrong cache");
  kmem_cache_free(s, p);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_destroy(s);
  kmem_cache_destroy(t);
}

TEST(SlubDebug, CorruptFreePointerIsReportedAndTheSlabLeakedNotReused) {
  kmem_cache* s = kmem_cache_create("dbg-fp", 64, 0, SLAB_CONSISTENCY_CHECKS, nullptr);
  void* a = kmem_cache_alloc(s, 0);
  void* b = kmem_cache_alloc(s, 0);
  kmem_cache_free(s, b);
  kmem_cache_free(s, a);  // free list: a -> b -> ...
  report_capture cap;
  int local;
  set_freepointer(s, a, &local);  // a wild write over a's free pointer
  void* x = kmem_cache_alloc(s, 0);
  EXPECT_EQ(x, a);
  ASSERT_GE(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG dbg-fp: Freepointer corrupt");
  EXPECT_TRUE(contains(cap.reports()[0], hex(&local)));
  for (int i = 0; i < 200; ++i) {  // never hands out the wild pointer
    void* y = kmem_cache_alloc(s, 0);
    ASSERT_NE(y, static_cast<void*>(&local));
  }
  kmem_cache_destroy(s);
}

TEST(SlubDebug, ValidateFindsARedzoneOverwriteOfALiveObject) {
  kmem_cache* s =
      kmem_cache_create("dbg-val", 48, 0, SLAB_CONSISTENCY_CHECKS | SLAB_RED_ZONE, nullptr);
  auto* p = static_cast<unsigned char*>(kmem_cache_alloc(s, 0));
  report_capture cap;
  p[48] = 1;
  EXPECT_EQ(kmem_cache_validate(s), -1);
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG dbg-val: Redzone overwritten");
  EXPECT_EQ(kmem_cache_validate(s), 0);  // restored
  kmem_cache_free(s, p);
  kmem_cache_destroy(s);
}

TEST(SlubDebug, ObjectsRemainingOnDestroyListsWhoAllocatedThem) {
  kmem_cache* s = kmem_cache_create("dbg-destroy", 64, 0, SLAB_STORE_USER, nullptr);
  void* p = debug_test_alloc_site(s);
  report_capture cap;
  kmem_cache_destroy(s);
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG dbg-destroy: Objects remaining on destroy");
  std::string r = cap.reports()[0];
  EXPECT_TRUE(contains(r, "Object " + hex(p) + " allocated by tid")) << r;
  EXPECT_TRUE(contains(r, "debug_test_alloc_site")) << r;
  kmem_cache_free(s, p);
  kmem_cache_destroy(s);
}

TEST(SlubDebug, KmallocRedzoneFollowsTheRequestedSize) {
  ASSERT_TRUE(parse_slub_debug("ZU,kmalloc-*"));
  auto* p = static_cast<unsigned char*>(kmalloc(40, 0));  // kmalloc-48: 8 bytes of slack
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(ksize(p), 40u);
  report_capture cap;
  p[39] = 1;  // the last requested byte is fine
  p[40] = 1;  // the first byte of slack is not
  kfree(p);
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG kmalloc-48: Redzone overwritten");
  EXPECT_TRUE(contains(cap.reports()[0], "kmalloc Redzone " + hex(p + 40)));
  EXPECT_TRUE(contains(cap.reports()[0], "(requested 40)"));
  // krealloc moves (the red zone must follow the new size) and keeps the contents.
  auto* q = static_cast<unsigned char*>(kmalloc(20, 0));
  memset(q, 7, 20);
  auto* r = static_cast<unsigned char*>(krealloc(q, 30, 0));
  EXPECT_EQ(ksize(r), 30u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(r[i], 7);
  // Aligned allocations from debug classes still honour the alignment.
  void* a = kmalloc_aligned(100, 64, 0);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(a) % 64, 0u);
  kfree(a);
  kfree(r);
  EXPECT_EQ(cap.count(), 1u);
}

TEST(SlubDebug, TraceLogsEveryAllocAndFree) {
  kmem_cache* s = kmem_cache_create("dbg-trace", 64, 0, SLAB_TRACE, nullptr);
  report_capture cap;
  void* p = kmem_cache_alloc(s, 0);
  kmem_cache_free(s, p);
  ASSERT_EQ(cap.count(), 2u);
  EXPECT_EQ(cap.first_line(0), "uslub: TRACE dbg-trace alloc " + hex(p) + " inuse=1");
  EXPECT_EQ(cap.first_line(1), "uslub: TRACE dbg-trace free " + hex(p) + " inuse=0");
  kmem_cache_destroy(s);
}

TEST(SlubDebug, FailslabFailsAllocationsAndBulkIsAllOrNothing) {
  kmem_cache* s = kmem_cache_create("dbg-fail", 64, 0, SLAB_FAILSLAB, nullptr);
  set_failslab(100, 1, 2);  // the next two allocation calls fail
  errno = 0;
  EXPECT_EQ(kmem_cache_alloc(s, 0), nullptr);
  EXPECT_EQ(errno, ENOMEM);
  void* p[16] = {};
  EXPECT_EQ(kmem_cache_alloc_bulk(s, 0, 16, p), 0);
  for (void* q : p) EXPECT_EQ(q, nullptr);
  kmem_cache_info info;
  kmem_cache_get_info(s, &info);
  EXPECT_EQ(info.active_objs, 0u);
  EXPECT_EQ(kmem_cache_alloc_bulk(s, 0, 16, p), 16);  // times exhausted: succeeds
  kmem_cache_free_bulk(s, 16, p);
  set_failslab(100, 4, -1);  // one call in four fails, forever
  int failed = 0;
  for (int i = 0; i < 40; ++i) {
    void* q = kmem_cache_alloc(s, 0);
    if (!q)
      ++failed;
    else
      kmem_cache_free(s, q);
  }
  EXPECT_EQ(failed, 10);
  set_failslab(100, 1, 0);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_destroy(s);
}

TEST(SlubDebug, BulkFreeOfADebugCacheCatchesADuplicate) {
  kmem_cache* s = kmem_cache_create("dbg-bulk", 64, 0, FZPU, nullptr);
  void* p[8];
  ASSERT_EQ(kmem_cache_alloc_bulk(s, 0, 8, p), 8);
  report_capture cap;
  void* q[9];
  memcpy(q, p, sizeof p);
  q[8] = p[3];  // freed twice in one call
  kmem_cache_free_bulk(s, 9, q);
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG dbg-bulk: Object already free");
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_destroy(s);
}

TEST(SlubDebug, LeakReportGroupsByStackLargestFirst) {
  kmem_cache* s = kmem_cache_create("dbg-leak", 256, 0, SLAB_STORE_USER, nullptr);
  kmem_cache* t = kmem_cache_create("dbg-leak-small", 16, 0, SLAB_STORE_USER, nullptr);
  // One call site (a volatile count keeps the compiler from unrolling it into three).
  volatile int three = 3;
  for (int i = 0, n = three; i < n; ++i) debug_test_alloc_site(s);
  debug_test_alloc_site(t);
  char path[] = "/tmp/uslub-leakXXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(slub_debug_leak_report(fd), 4u);
  lseek(fd, 0, SEEK_SET);
  std::string text(16384, '\0');
  text.resize(static_cast<std::size_t>(read(fd, text.data(), text.size())));
  close(fd);
  unlink(path);
  EXPECT_TRUE(contains(text, "4 objects (784 bytes) never freed, from 2 allocation stacks"))
      << text;
  auto big = text.find("768 bytes in 3 objects of dbg-leak allocated from");
  auto small = text.find("16 bytes in 1 objects of dbg-leak-small");
  ASSERT_NE(big, std::string::npos) << text;
  ASSERT_NE(small, std::string::npos) << text;
  EXPECT_LT(big, small);
  EXPECT_TRUE(contains(text, "debug_test_alloc_site")) << text;
}

TEST(SlubDebugDeathTest, AbortOnBugStopsAtTheFirstReport) {
  kmem_cache* s = kmem_cache_create("dbg-abort", 64, 0, SLAB_RED_ZONE, nullptr);
  auto* p = static_cast<unsigned char*>(kmem_cache_alloc(s, 0));
  p[64] = 0;
  EXPECT_DEATH(
      {
        set_abort_on_bug(true);
        kmem_cache_free(s, p);
      },
      "uslub: BUG dbg-abort: Redzone overwritten");
}

}  // namespace
}  // namespace uslub
