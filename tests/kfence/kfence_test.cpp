// KFENCE (src/kfence): sampled guard-page objects catch out-of-bounds accesses and use after
// free at the faulting instruction; frees are checked.  The fault paths abort, so they run as
// death tests (in a child) and check the report on stderr.
#include <dlfcn.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uslub/slab.h>

#include <atomic>
#include <set>
#include <thread>
#include <vector>

#include "kfence/kfence.hpp"
#include "kmalloc/kmalloc.hpp"
#include "test_support.hpp"

namespace uslub {
namespace {

void* volatile g_sink;

std::string hexp(const void* p) {
  char b[32];
  snprintf(b, sizeof b, "%#lx", reinterpret_cast<unsigned long>(p));
  return b;
}

// Allocates until a right- (or left-) aligned object comes out.
unsigned char* kfence_obj(std::size_t size, bool right) {
  for (int i = 0; i < 4; ++i) {
    auto* p = static_cast<unsigned char*>(kfence_alloc(size, 16, false));
    if (!p) return nullptr;
    bool is_right = (reinterpret_cast<std::uintptr_t>(p) + ((size + 15) & ~15ul)) % 4096 == 0;
    if (is_right == right) return p;
  }
  return nullptr;
}

TEST(KfenceDeathTest, OverflowByOneByteFaultsAndIsReported) {
  ASSERT_TRUE(kmalloc_kfence_init(1, 16));
  unsigned char* p = kfence_obj(64, true);
  ASSERT_NE(p, nullptr);
  std::string first = "uslub: BUG kfence: Out-of-bounds access";
  EXPECT_DEATH({ static_cast<volatile unsigned char*>(p)[64] = 1; },
               first + ".*Out-of-bounds write at " + hexp(p + 64) +
                   " \\(1 bytes right of the object\\).*size 64 \\(right-aligned\\).*allocated by");
}

TEST(KfenceDeathTest, UnderflowOfALeftAlignedObjectFaults) {
  ASSERT_TRUE(kmalloc_kfence_init(1, 16));
  unsigned char* p = kfence_obj(100, false);
  ASSERT_NE(p, nullptr);
  EXPECT_DEATH({ g_sink = reinterpret_cast<void*>(static_cast<volatile unsigned char*>(p)[-1]); },
               "uslub: BUG kfence: Out-of-bounds access.*Out-of-bounds read at " + hexp(p - 1) +
                   " \\(1 bytes left of the object\\)");
}

TEST(KfenceDeathTest, UseAfterFreeFaultsAndReportsTheFreeingStack) {
  ASSERT_TRUE(kmalloc_kfence_init(1, 16));
  auto* p = static_cast<unsigned char*>(kfence_alloc(40, 16, true));
  ASSERT_NE(p, nullptr);
  kfence_free(p);
  EXPECT_DEATH({ g_sink = reinterpret_cast<void*>(static_cast<volatile unsigned char*>(p)[8]); },
               "uslub: BUG kfence: Use-after-free access.*Use-after-free read at " + hexp(p + 8) +
                   " \\(offset 8 in the object\\).*allocated by.*freed by");
}

// ---- the fault handler: async-signal-safe, and chained with the program's handlers ----------

// A fault while another thread is inside dlopen (holding glibc's loader lock, which dladdr
// takes) is still reported at once: the handler resolves frames from /proc/self/maps.
TEST(KfenceDeathTest, AFaultWhileAnotherThreadHoldsTheLoaderLockIsReported) {
  EXPECT_DEATH(
      {
        kmalloc_kfence_init(1, 16);
        auto* p = static_cast<unsigned char*>(kfence_alloc(40, 16, true));
        kfence_free(p);
        std::thread([] { dlopen(USLUB_SLOW_CTOR_LIB, RTLD_NOW); }).detach();
        usleep(300 * 1000);  // inside the library's constructor, under the loader lock
        alarm(3);            // a handler that waits for the lock dies of SIGALRM, unreported
        g_sink = reinterpret_cast<void*>(static_cast<volatile unsigned char*>(p)[8]);
      },
      "uslub: BUG kfence: Use-after-free access.*allocated by thread [0-9]+ on cpu [0-9]+ "
      "[0-9]+\\.[0-9]{3} s ago:\n    #0 [^ ]+\\+0x[0-9a-f]+ \\([^ ]+\\+0x[0-9a-f]+\\)\n.*freed by");
}

// Died of SIGSEGV's default action.  Sanitizer builds own SIGSEGV (their handler reports a
// deadly signal and exits with their exit code), which is what "the default" is there.
bool killed_by_sigsegv(int status) {
#if USLUB_TSAN || defined(__SANITIZE_ADDRESS__)
  if (WIFEXITED(status) && WEXITSTATUS(status) != 0) return true;
#endif
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV;
}

// A SIGSEGV that is not a fault in the pool goes where it would have gone without KFENCE.
TEST(KfenceDeathTest, OtherFaultsGoToTheHandlerInstalledBefore) {
  EXPECT_EXIT(
      {
        struct sigaction sa {};
        sa.sa_handler = [](int) {
          const char msg[] = "the program's earlier handler\n";
          write(2, msg, sizeof msg - 1);
          _exit(42);
        };
        sigaction(SIGSEGV, &sa, nullptr);
        kmalloc_kfence_init(1, 16);
        void* page = mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        g_sink = reinterpret_cast<void*>(*static_cast<volatile char*>(page));
      },
      ::testing::ExitedWithCode(42), "the program's earlier handler");
}

TEST(KfenceDeathTest, OtherFaultsWithoutAnEarlierHandlerGetTheDefaultAction) {
  EXPECT_EXIT(
      {
        kmalloc_kfence_init(1, 16);
        void* page = mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        g_sink = reinterpret_cast<void*>(*static_cast<volatile char*>(page));
      },
      killed_by_sigsegv, "");
}

// A SIGSEGV sent with kill/raise (no fault to re-execute) is not swallowed.
TEST(KfenceDeathTest, ARaisedSigsegvStillKills) {
  EXPECT_EXIT(
      {
        kmalloc_kfence_init(1, 16);
        raise(SIGSEGV);
        _exit(0);
      },
      killed_by_sigsegv, "");
}

// A handler the program installs later replaces KFENCE's, as with any signal: one that chains
// to the action sigaction returned (as crash reporters do) keeps the KFENCE report ...
struct sigaction g_saved_action;
TEST(KfenceDeathTest, AProgramHandlerThatChainsKeepsTheReport) {
  ASSERT_TRUE(kmalloc_kfence_init(1, 16));
  auto* p = static_cast<unsigned char*>(kfence_alloc(40, 16, true));
  kfence_free(p);
  EXPECT_DEATH(
      {
        struct sigaction sa {};
        sa.sa_flags = SA_SIGINFO;
        sa.sa_sigaction = [](int sig, siginfo_t* info, void* uc) {
          const char msg[] = "crash reporter first\n";
          write(2, msg, sizeof msg - 1);
          g_saved_action.sa_sigaction(sig, info, uc);
        };
        sigaction(SIGSEGV, &sa, &g_saved_action);
        g_sink = reinterpret_cast<void*>(static_cast<volatile unsigned char*>(p)[8]);
      },
      "crash reporter first\nuslub: BUG kfence: Use-after-free access");
}

// ... and one that does not chain gets the KFENCE faults too (no report).
TEST(KfenceDeathTest, AProgramHandlerThatDoesNotChainGetsTheFault) {
  ASSERT_TRUE(kmalloc_kfence_init(1, 16));
  auto* p = static_cast<unsigned char*>(kfence_alloc(40, 16, true));
  kfence_free(p);
  EXPECT_EXIT(
      {
        struct sigaction sa {};
        sa.sa_handler = [](int) {
          const char msg[] = "the program's own handler\n";
          write(2, msg, sizeof msg - 1);
          _exit(7);
        };
        sigaction(SIGSEGV, &sa, nullptr);
        g_sink = reinterpret_cast<void*>(static_cast<volatile unsigned char*>(p)[8]);
      },
      ::testing::ExitedWithCode(7), "the program's own handler");
}

TEST(Kfence, DoubleFreeInteriorFreeAndSlackCorruptionAreReported) {
  ASSERT_TRUE(kmalloc_kfence_init(1, 16));
  test::report_capture cap;
  unsigned char* p = kfence_obj(20, true);  // 12 bytes of slack before the guard page
  ASSERT_NE(p, nullptr);
  kfence_free(p + 4);
  EXPECT_EQ(cap.first_line(0), "uslub: BUG kfence: Invalid free");
  p[21] = 0;  // inside the slack that alignment leaves: no fault, but the canary is gone
  kfence_free(p);
  EXPECT_EQ(cap.first_line(1), "uslub: BUG kfence: Out-of-bounds write");
  kfence_free(p);
  EXPECT_EQ(cap.first_line(2), "uslub: BUG kfence: Invalid free");
  EXPECT_NE(cap.reports()[2].find("double free"), std::string::npos);
}

// Two threads free one sampled object at the same moment: exactly one free succeeds, the other
// is reported as a double free, and the slot goes back to the pool once (it used to be queued
// twice when both saw it allocated, and then handed out twice).
TEST(Kfence, ConcurrentDoubleFreeIsReportedOnceAndTheSlotQueuedOnce) {
  ASSERT_TRUE(kmalloc_kfence_init(1, 8));
  kfence_stats before = kfence_get_stats();
  test::report_capture cap;
  std::atomic<void*> target{nullptr};
  std::atomic<unsigned> gen{0}, done{0};
  std::atomic<bool> stop{false};
  std::thread other([&] {  // frees each round's object as this thread does
    unsigned seen = 0;
    for (;;) {
      unsigned g;
      while ((g = gen.load(std::memory_order_acquire)) == seen)
        if (stop.load(std::memory_order_relaxed)) return;
      seen = g;
      kfence_free(target.load(std::memory_order_relaxed));
      done.fetch_add(1, std::memory_order_acq_rel);
    }
  });
  constexpr unsigned kRounds = 200;
  for (unsigned r = 0; r < kRounds; ++r) {
    void* p = kfence_alloc(64, 16, false);
    ASSERT_NE(p, nullptr) << "round " << r << ": the pool lost slots";
    target.store(p, std::memory_order_relaxed);
    gen.fetch_add(1, std::memory_order_acq_rel);
    kfence_free(p);
    while (done.load(std::memory_order_acquire) < r + 1) cpu_relax();
  }
  stop = true;
  other.join();
  EXPECT_EQ(cap.count(), kRounds) << "one double-free report per round";
  for (std::size_t i = 0; i < cap.count(); ++i) {
    ASSERT_EQ(cap.first_line(i), "uslub: BUG kfence: Invalid free") << i;
    ASSERT_NE(cap.reports()[i].find("double free"), std::string::npos) << cap.reports()[i];
  }
  kfence_stats after = kfence_get_stats();
  EXPECT_EQ(after.frees - before.frees, kRounds);
  EXPECT_EQ(after.objects_in_use, before.objects_in_use);
  // Every slot is in the pool once: the objects allocated until the pool is full all differ.
  std::set<void*> live;
  for (int i = 0; i < 1000; ++i) {
    void* p = kfence_alloc(64, 16, false);
    if (!p) break;
    EXPECT_TRUE(live.insert(p).second) << "slot handed out twice";
  }
  for (void* p : live) kfence_free(p);
  EXPECT_EQ(cap.count(), kRounds);
}

TEST(Kfence, KmallocSamplesAtTheRateAndKfreeKsizeRecogniseThePool) {
  ASSERT_TRUE(kmalloc_kfence_init(10, 255));
  std::vector<void*> v;
  int in_pool = 0;
  for (int i = 0; i < 2000; ++i) {
    void* p = kmalloc(48, 0);
    ASSERT_NE(p, nullptr);
    if (is_kfence_address(p)) {
      ++in_pool;
      EXPECT_EQ(ksize(p), 48u);
    }
    v.push_back(p);
  }
  EXPECT_GT(in_pool, 100);  // about 1 in 10 (200), random spacing
  EXPECT_LT(in_pool, 300);
  test::report_capture cap;
  for (void* p : v) kfree(p);
  EXPECT_EQ(cap.count(), 0u);
  EXPECT_EQ(kfence_get_stats().objects_in_use, 0u);
}

TEST(Kfence, AlignedAllocationsAreSampledAndKeepTheirAlignment) {
  ASSERT_TRUE(kmalloc_kfence_init(1, 64));
  std::vector<void*> v;
  for (std::size_t align : {32ul, 64ul, 256ul, 1024ul, 4096ul})
    for (std::size_t size : {1ul, 40ul, 100ul, 1000ul}) {
      void* p = kmalloc_aligned(size, align, 0);
      ASSERT_NE(p, nullptr);
      EXPECT_TRUE(is_kfence_address(p)) << size << "/" << align;
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % align, 0u) << size << "/" << align;
      EXPECT_EQ(ksize(p), size);
      memset(p, 0x5a, size);
      v.push_back(p);
    }
  test::report_capture cap;
  for (void* p : v) kfree(p);
  EXPECT_EQ(cap.count(), 0u) << "the canary around an aligned object was intact";
  kmalloc_kfence_init(0, 0);
  void* p = kmalloc(48, 0);
  EXPECT_FALSE(is_kfence_address(p)) << "sampling off again";
  kfree(p);
}

TEST(Kfence, OnClosesKmallocsFastPathOffOpensIt) {
  ASSERT_TRUE(kmalloc_kfence_init(5, 64));
  EXPECT_EQ(g_kmalloc.ready.load(), 3);
  EXPECT_EQ(g_kmalloc.fast_area, nullptr) << "every kmalloc takes the sampling path";
  ASSERT_TRUE(kmalloc_kfence_init(0, 0));
  EXPECT_EQ(g_kmalloc.ready.load(), 2);
  if (platform::rseq_sequences_usable() && USLUB_HAVE_RSEQ_ASM)
    EXPECT_EQ(g_kmalloc.fast_area, pcpu_area()) << "off: the class slots";
}

TEST(Kfence, AFullPoolFallsBackToTheNormalAllocator) {
  ASSERT_TRUE(kmalloc_kfence_init(1, 4));
  std::vector<void*> v;
  for (int i = 0; i < 10; ++i) v.push_back(kmalloc(32, 0));
  int in_pool = 0;
  for (void* p : v) in_pool += is_kfence_address(p);
  EXPECT_EQ(in_pool, 4);
  EXPECT_GE(kfence_get_stats().pool_full, 6u);
  for (void* p : v) kfree(p);
}

TEST(KfenceStress, ManyThreadsSampleHalfTheirAllocations) {
  ASSERT_TRUE(kmalloc_kfence_init(2, 64));
  test::report_capture cap;
  std::vector<std::thread> ts;
  for (int t = 0; t < 8; ++t)
    ts.emplace_back([t] {
      std::vector<unsigned char*> mine;
      for (int i = 0; i < 4000; ++i) {
        auto* p = static_cast<unsigned char*>(kmalloc(static_cast<std::size_t>(1 + i % 500), 0));
        memset(p, t, static_cast<std::size_t>(1 + i % 500));
        mine.push_back(p);
        if (mine.size() > 16) {
          kfree(mine.front());
          mine.erase(mine.begin());
        }
      }
      for (auto* p : mine) kfree(p);
    });
  for (auto& th : ts) th.join();
  EXPECT_EQ(cap.count(), 0u);
  EXPECT_EQ(kfence_get_stats().objects_in_use, 0u);
  EXPECT_GT(kfence_get_stats().allocs, 1000u);
}

}  // namespace
}  // namespace uslub
