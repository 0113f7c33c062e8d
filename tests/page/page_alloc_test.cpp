// Bad input, out of memory (limit and injected OS failure), decay and reclaim, fork.
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "page_test_util.hpp"

namespace uslub::test {

class PageAlloc : public page_alloc_fixture {};

// USLUB_THP unset: huge pages from 16 MiB of heap on, except on a VM whose host discards free
// 2 MiB blocks (free page reporting), where a huge-page fault waits for the host
// (src/platform/host_memory.cpp).  Either way an explicit USLUB_THP wins.
TEST(PageAllocConfig, HugePagesByDefaultUnlessTheHostDiscardsFreeHugePages) {
  if (getenv("USLUB_THP") || getenv("USLUB_THP_MIN")) GTEST_SKIP() << "THP set in the environment";
  const bool discards = platform::host_discards_free_huge_pages();
  std::printf("host discards free huge pages: %s\n", discards ? "yes" : "no");
  EXPECT_EQ(page_alloc_config::from_env().thp_min, discards ? SIZE_MAX : std::size_t{16} << 20);
  setenv("USLUB_THP", "2", 1);
  EXPECT_EQ(page_alloc_config::from_env().thp_min, std::size_t{16} << 20);
  setenv("USLUB_THP", "0", 1);
  EXPECT_EQ(page_alloc_config::from_env().thp_min, SIZE_MAX);
  unsetenv("USLUB_THP");
}

TEST_F(PageAlloc, DoubleFreeIsReportedAndIgnored) {
  make();
  report_capture cap;
  page* p = pa_.alloc_pages(0);
  page* q = pa_.alloc_pages(5);
  pa_.free_pages(p, 0);
  pa_.free_pages(p, 0);
  pa_.free_pages(q, 5);
  pa_.free_pages(q, 5);
  ASSERT_EQ(cap.count(), 2u);
  EXPECT_EQ(cap.first_line(0), "uslub: BUG page allocator: Object already free");
  EXPECT_EQ(cap.first_line(1), "uslub: BUG page allocator: Object already free");
  EXPECT_NE(cap.reports()[0].find("double free"), std::string::npos);
  EXPECT_EQ(pa_.stats().bad_free, 2u);
  pa_.drain_all_pages();
  EXPECT_TRUE(pa_.validate());
  EXPECT_EQ(pa_.nr_free(MAX_ORDER), 1u);  // nothing was freed twice into the lists
}

TEST_F(PageAlloc, WrongOrderIsReportedAndTheBlockStaysAllocated) {
  make();
  report_capture cap;
  page* p = pa_.alloc_pages(2);
  pa_.free_pages(p, 3);
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG page allocator: Wrong order");
  EXPECT_NE(cap.reports()[0].find("allocated as order 2"), std::string::npos);
  EXPECT_EQ(page_flags(p), PG_head);
  pa_.free_pages(p, 2);
  EXPECT_EQ(cap.count(), 1u);
}

TEST_F(PageAlloc, ForeignAndInteriorPointersAreReported) {
  make();
  report_capture cap;
  int on_stack;
  pa_.free_pages_addr(&on_stack, 0);
  void* heap = malloc(8192);
  pa_.free_pages_addr(heap, 0);
  free(heap);
  page* p = pa_.alloc_pages(2, __GFP_COMP);
  pa_.free_pages(p + 1, 0);                                         // a tail page
  pa_.free_pages_addr(static_cast<char*>(page_address(p)) + 8, 2);  // not page aligned
  ASSERT_EQ(cap.count(), 4u);
  for (size_t i = 0; i < 4; ++i)
    EXPECT_EQ(cap.first_line(i), "uslub: BUG page allocator: Invalid pointer") << i;
  EXPECT_NE(cap.reports()[0].find("not from uslub's memory map"), std::string::npos);
  EXPECT_NE(cap.reports()[2].find("inside an allocated block"), std::string::npos);
  // Another allocator's block.
  page_allocator other;
  failing_vm vm2;
  page_alloc_config c;
  c.vm = &vm2;
  c.nr_nodes = 1;
  ASSERT_EQ(other.init(c), 0);
  page* o = other.alloc_pages(0);
  pa_.free_pages(o, 0);
  EXPECT_NE(cap.reports().back().find("another page allocator"), std::string::npos);
  other.free_pages(o, 0);
  other.destroy();
  pa_.free_pages(p, 2);
  EXPECT_TRUE(pa_.validate());
}

TEST_F(PageAlloc, OrderAboveMaxIsEinval) {
  make();
  errno = 0;
  EXPECT_EQ(pa_.alloc_pages(MAX_ORDER + 1), nullptr);
  EXPECT_EQ(errno, EINVAL);
}

TEST_F(PageAlloc, MemoryLimitFailsCleanlyAndRecovers) {
  page_alloc_config c;
  c.memory_limit = 3 * MAX_ORDER_BYTES + (1 << 20);  // three 4 MiB blocks and their descriptors
  make(c);
  std::vector<page*> got;
  for (;;) {
    errno = 0;
    page* p = pa_.alloc_pages(MAX_ORDER);
    if (!p) {
      EXPECT_EQ(errno, ENOMEM);
      break;
    }
    got.push_back(p);
    ASSERT_LT(got.size(), 10u);
  }
  EXPECT_EQ(got.size(), 3u);
  EXPECT_LE(pa_.stats().committed_bytes, c.memory_limit);
  // Small allocations fail too, and leave the state consistent.
  EXPECT_EQ(pa_.alloc_pages(0), nullptr);
  EXPECT_TRUE(pa_.validate());
  for (page* p : got) pa_.free_pages(p, MAX_ORDER);
  page* again = pa_.alloc_pages(0);
  EXPECT_NE(again, nullptr);
  pa_.free_pages(again, 0);
  EXPECT_EQ(pa_.stats().grow, 3u);
}

TEST_F(PageAlloc, OsRefusalIsEnomemAndNothingLeaks) {
  make();
  vm_.fail_commit = true;
  errno = 0;
  EXPECT_EQ(pa_.alloc_pages(0), nullptr);
  EXPECT_EQ(errno, ENOMEM);
  EXPECT_EQ(pa_.alloc_pages(MAX_ORDER), nullptr);
  std::vector<page*> v(8);
  EXPECT_EQ(pa_.alloc_pages_bulk(0, 8, v.data()), 0);
  auto s = pa_.stats();
  EXPECT_GE(s.grow_fail, 3u);
  EXPECT_EQ(s.committed_bytes, 0u);  // even the section header commit failed: nothing kept
  vm_.fail_commit = false;
  page* p = pa_.alloc_pages(0);
  ASSERT_NE(p, nullptr);
  pa_.free_pages(p, 0);
  // The OS refuses address space: the section in use is filled, then the next growth needs
  // a new reservation and fails cleanly.
  vm_.fail_reserve = true;
  int reserves = vm_.reserves.load();
  auto grow_fail = pa_.stats().grow_fail;
  std::vector<page*> blocks;
  errno = 0;
  for (page* b; (b = pa_.alloc_pages(MAX_ORDER)) != nullptr;) {
    blocks.push_back(b);
    ASSERT_LT(blocks.size(), 2 * SECTION_SIZE / MAX_ORDER_BYTES) << "never needed a section";
  }
  EXPECT_EQ(errno, ENOMEM);
  EXPECT_GT(blocks.size(), 0u) << "the reserved section still had room";
  EXPECT_EQ(vm_.reserves.load(), reserves);
  EXPECT_GT(pa_.stats().grow_fail, grow_fail);
  EXPECT_TRUE(pa_.validate());
  vm_.fail_reserve = false;  // and recovers when the OS has address space again
  page* more = pa_.alloc_pages(MAX_ORDER);
  ASSERT_NE(more, nullptr);
  EXPECT_EQ(vm_.reserves.load(), reserves + 1);
  blocks.push_back(more);
  for (page* b : blocks) pa_.free_pages(b, MAX_ORDER);
  EXPECT_TRUE(pa_.validate());
}

TEST_F(PageAlloc, MetadataMapFailureFailsInit) {
  vm_.fail_map = true;
  page_alloc_config c;
  c.vm = &vm_;
  c.nr_nodes = 1;
  EXPECT_EQ(pa_.init(c), ENOMEM);
}

static bool resident(void* p, size_t len) {
  std::vector<unsigned char> vec(len / PAGE_SIZE);
  EXPECT_EQ(mincore(p, len, vec.data()), 0);
  for (auto v : vec)
    if (v & 1) return true;
  return false;
}

TEST_F(PageAlloc, DecayReturnsIdleBlocksAfterTheDelay) {
  page_alloc_config c;
  c.decay_ms = 100;
  make(c);
  page* p = pa_.alloc_pages(6);
  void* a = page_address(p);
  memset(a, 1, PAGE_SIZE << 6);
  pa_.free_pages(p, 6);  // straight to the zone (order >= NR_PCP_ORDERS)
  EXPECT_TRUE(resident(a, PAGE_SIZE << 6));
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  // Any zone-level free notices the deadline and reclaims.
  page* q = pa_.alloc_pages(5);
  pa_.free_pages(q, 5);
  EXPECT_FALSE(resident(a, PAGE_SIZE << 6));
  auto s = pa_.stats();
  EXPECT_GE(s.reclaimed_bytes, PAGE_SIZE << 6);
  EXPECT_GE(s.returned_bytes, PAGE_SIZE << 6);
  EXPECT_GT(vm_.decommits.load(), 0);
  // Reused returned memory reads as zeros without a memset.
  page* z = pa_.alloc_pages(6, __GFP_ZERO);
  auto* b = static_cast<unsigned char*>(page_address(z));
  EXPECT_TRUE(std::all_of(b, b + (PAGE_SIZE << 6), [](unsigned char x) { return x == 0; }));
  pa_.free_pages(z, 6);
  EXPECT_TRUE(pa_.validate());
}

TEST_F(PageAlloc, ForcedReclaimReturnsEverythingFree) {
  make();
  std::vector<page*> v;
  for (int i = 0; i < 64; ++i) {
    v.push_back(pa_.alloc_pages(4));
    memset(page_address(v.back()), 1, PAGE_SIZE << 4);
  }
  for (page* p : v) pa_.free_pages(p, 4);
  pa_.drain_all_pages();
  size_t got = pa_.reclaim(/*force=*/true);
  auto s = pa_.stats();
  EXPECT_GE(got, 64 * (PAGE_SIZE << 4));
  EXPECT_EQ(s.returned_bytes, s.free_bytes);
  for (page* p : v) EXPECT_FALSE(resident(page_address(p), PAGE_SIZE << 4));
  EXPECT_TRUE(pa_.validate());
}

TEST_F(PageAlloc, DecayZeroReturnsAtOnce) {
  page_alloc_config c;
  c.decay_ms = 0;
  make(c);
  page* p = pa_.alloc_pages(8);
  memset(page_address(p), 1, PAGE_SIZE << 8);
  pa_.free_pages(p, 8);
  EXPECT_FALSE(resident(page_address(p), PAGE_SIZE << 8));
}

TEST_F(PageAlloc, LazyFreeReclaimAdvisesEachIdleBlockOnce) {
  // MADV_FREE leaves a block's contents in place, so reclaim puts it back on the resident
  // list; a pass must not pick the same block up again (it once did, 4096 passes in a row).
  page_alloc_config c;
  c.decay_ms = 0;
  c.decommit = platform::decommit_mode::free;
  make(c);
  page* p = pa_.alloc_pages(6);
  memset(page_address(p), 1, PAGE_SIZE << 6);
  pa_.free_pages(p, 6);  // a zone free: reclaims the whole (merged) 4 MiB block
  EXPECT_LE(vm_.decommits.load(), 2);
  int before = vm_.decommits.load();
  pa_.reclaim(/*force=*/true);
  EXPECT_LE(vm_.decommits.load() - before, 2);
  EXPECT_EQ(pa_.stats().returned_bytes, 0u);  // lazily freed memory does not read as zeros
  EXPECT_TRUE(pa_.validate());
}

TEST_F(PageAlloc, HugePagesOnlyOnceTheHeapIsLarge) {
  page_alloc_config c;
  c.thp_min = 16u << 20;  // MADV_HUGEPAGE from 16 MiB committed on
  make(c);
  std::vector<page*> blocks;
  while (pa_.stats().committed_bytes < (12u << 20)) blocks.push_back(pa_.alloc_pages(MAX_ORDER));
  EXPECT_EQ(vm_.hugepages.load(), 0) << "a small heap keeps 4 KiB pages";
  while (pa_.stats().committed_bytes < (32u << 20)) blocks.push_back(pa_.alloc_pages(MAX_ORDER));
  EXPECT_GE(vm_.hugepages.load(), 3) << "each block grown past the threshold is advised";
  for (page* p : blocks) {
    ASSERT_NE(p, nullptr);
    pa_.free_pages(p, MAX_ORDER);
  }
  EXPECT_TRUE(pa_.validate());
}

TEST_F(PageAlloc, HugePagesNeverByDefaultForPrivateAllocators) {
  make();
  std::vector<page*> blocks;
  for (int i = 0; i < 8; ++i) blocks.push_back(pa_.alloc_pages(MAX_ORDER));
  EXPECT_EQ(vm_.hugepages.load(), 0);
  for (page* p : blocks) pa_.free_pages(p, MAX_ORDER);
}

// A vm_ops whose decommit blocks until released: a reclaim pass stopped inside madvise.
class blocking_vm final : public platform::vm_ops {
 public:
  std::atomic<bool> block{false}, blocked{false};
  int reserve(std::size_t size, std::size_t align, void** out) override {
    return real().reserve(size, align, out);
  }
  int commit(void* p, std::size_t n) override { return real().commit(p, n); }
  int decommit(void* p, std::size_t n, platform::decommit_mode m) override {
    while (block.load()) {
      blocked.store(true);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return real().decommit(p, n, m);
  }
  int hugepage(void* p, std::size_t n) override { return real().hugepage(p, n); }
  int release(void* p, std::size_t n) override { return real().release(p, n); }
  int map(std::size_t n, void** out) override { return real().map(n, out); }
  int bind_node(void* p, std::size_t n, int node) override { return real().bind_node(p, n, node); }

 private:
  static platform::vm_ops& real() { return platform::linux_vm(); }
};

TEST(PageAllocFork, ForkDuringReclaimLeavesTheChildAbleToReclaim) {
  // fork_prepare() must also wait out a reclaim pass (zone::reclaiming is held across
  // madvise with no lock): forked in the middle of one, the child would inherit the flag
  // set forever and its reclaim() (malloc_trim) would spin for good.
  blocking_vm vm;
  page_allocator pa;
  page_alloc_config c;
  c.vm = &vm;
  c.nr_nodes = 1;
  c.decay_ms = 1000000;
  ASSERT_EQ(pa.init(c), 0);
  page* p = pa.alloc_pages(4);
  ASSERT_NE(p, nullptr);
  pa.free_pages(p, 4);
  vm.block = true;
  std::thread reclaimer([&] { pa.reclaim(/*force=*/true); });
  while (!vm.blocked.load()) std::this_thread::yield();
  std::atomic<bool> prepared{false};
  pid_t child = -1;
  std::thread forker([&] {
    pa.fork_prepare();
    prepared = true;
    child = fork();
    if (child == 0) {
      pa.fork_release();
      pa.reclaim(/*force=*/true);  // must return
      _exit(pa.validate() ? 0 : 1);
    }
    pa.fork_release();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(prepared.load()) << "fork_prepare did not wait for the running reclaim pass";
  vm.block = false;
  forker.join();
  reclaimer.join();
  ASSERT_GT(child, 0);
  int status = 0;
  pid_t r = 0;
  for (int i = 0; i < 500 && (r = waitpid(child, &status, WNOHANG)) == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (r == 0) {
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    FAIL() << "the child hung in reclaim()";
  }
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_TRUE(pa.validate());
  pa.destroy();
}

TEST(GlobalPageAllocator, IsUsableAndSelfInitialising) {
  page_allocator& pa = global_page_allocator();
  page* p = pa.alloc_pages(1, __GFP_ZERO);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(static_cast<char*>(page_address(p))[PAGE_SIZE + 7], 0);
  pa.free_pages(p, 1);
  EXPECT_EQ(&global_page_allocator(), &pa);
}

}  // namespace uslub::test
