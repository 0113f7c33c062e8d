// The malloc family's conformance.  This binary links libuslub.a whole, so every malloc in
// the process (gtest's, libstdc++'s, glibc's internal ones) is uslub's.
#include <errno.h>
#include <malloc.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uslub/slab.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <set>
#include <thread>
#include <vector>

#include "kmalloc/kmalloc.hpp"
#include "test_support.hpp"

namespace uslub::test {

TEST(Malloc, IsUslubs) {
  void* p = malloc(100);
  EXPECT_TRUE(kmalloc_owns(p));
  free(p);
  std::string s(1000, 'x');  // libstdc++'s allocation too
  EXPECT_TRUE(kmalloc_owns(s.data()));
}

TEST(Malloc, ZeroIsUniqueAndFreeable) {
  void* a = malloc(0);
  void* b = malloc(0);
  ASSERT_NE(a, nullptr);
  EXPECT_NE(a, b);
  free(a);
  free(b);
  free(nullptr);
}

TEST(Malloc, EverySizeIsUsableAlignedAndDistinct) {
  std::vector<void*> v;
  for (size_t sz = 1; sz < 70000; sz = sz < 256 ? sz + 1 : sz * 5 / 4) {
    char* p = static_cast<char*>(malloc(sz));
    ASSERT_NE(p, nullptr) << sz;
    EXPECT_GE(malloc_usable_size(p), sz);
    if (sz > 8) EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 16, 0u) << sz;
    memset(p, 0x5a, sz);
    v.push_back(p);
  }
  std::set<void*> u(v.begin(), v.end());
  EXPECT_EQ(u.size(), v.size());
  for (void* p : v) free(p);
}

TEST(Malloc, LargeAndHugeBlocks) {
  for (size_t sz :
       {size_t{40000}, size_t{1} << 20, (size_t{4} << 20) - 1, size_t{5} << 20, size_t{64} << 20}) {
    char* p = static_cast<char*>(malloc(sz));
    ASSERT_NE(p, nullptr) << sz;
    p[0] = 1;
    p[sz - 1] = 2;
    EXPECT_GE(malloc_usable_size(p), sz);
    free(p);
  }
}

TEST(Calloc, ZeroesAndCatchesOverflow) {
  for (size_t n : {1, 7, 100, 5000, 300000}) {
    auto* p = static_cast<unsigned char*>(calloc(n, 8));
    ASSERT_NE(p, nullptr);
    for (size_t i = 0; i < n * 8; ++i) ASSERT_EQ(p[i], 0) << n;
    memset(p, 0xff, n * 8);
    free(p);
  }
  errno = 0;
  EXPECT_EQ(calloc(SIZE_MAX / 2, 3), nullptr);
  EXPECT_EQ(errno, ENOMEM);
}

TEST(Realloc, GlibcSemantics) {
  char* p = static_cast<char*>(realloc(nullptr, 10));  // == malloc
  ASSERT_NE(p, nullptr);
  strcpy(p, "123456789");
  for (size_t sz : {20, 100, 5000, 100000, 9000000, 50, 10}) {
    p = static_cast<char*>(realloc(p, sz));
    ASSERT_NE(p, nullptr);
    EXPECT_STREQ(p, "123456789") << sz;  // contents survive every move
  }
  p = static_cast<char*>(realloc(p, 3));
  EXPECT_EQ(memcmp(p, "123", 3), 0);
  EXPECT_EQ(realloc(p, 0), nullptr);  // frees, like glibc
  errno = 0;
  EXPECT_EQ(reallocarray(nullptr, SIZE_MAX / 2, 4), nullptr);
  EXPECT_EQ(errno, ENOMEM);
  void* q = reallocarray(nullptr, 10, 10);
  EXPECT_GE(malloc_usable_size(q), 100u);
  free(q);
}

TEST(Memalign, EveryAlignmentFrom1To64KiB) {
  for (size_t al = 1; al <= 65536; al *= 2) {
    for (size_t sz : {size_t{1}, size_t{24}, al, al * 3 + 5, size_t{100000}}) {
      void* p = nullptr;
      if (al >= sizeof(void*)) {
        ASSERT_EQ(posix_memalign(&p, al, sz), 0);
        EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % al, 0u) << al << " " << sz;
        free(p);
      }
      p = aligned_alloc(al, sz);
      ASSERT_NE(p, nullptr);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % al, 0u) << al << " " << sz;
      memset(p, 1, sz);
      free(p);
      p = memalign(al, sz);
      EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % al, 0u);
      free(p);
    }
  }
  void* p;
  errno = 0;
  EXPECT_EQ(posix_memalign(&p, 24, 8), EINVAL);
  EXPECT_EQ(posix_memalign(&p, 4, 8), EINVAL);
  EXPECT_EQ(errno, 0);  // posix_memalign leaves errno alone
  EXPECT_EQ(aligned_alloc(24, 8), nullptr);
  EXPECT_EQ(errno, EINVAL);
  void* v = valloc(10);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(v) % 4096, 0u);
  free(v);
  void* pv = pvalloc(10);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(pv) % 4096, 0u);
  EXPECT_GE(malloc_usable_size(pv), 4096u);
  free(pv);
}

TEST(Malloc, ImpossibleSizesAreEnomem) {
  errno = 0;
  EXPECT_EQ(malloc(SIZE_MAX - 100), nullptr);
  EXPECT_EQ(errno, ENOMEM);
  errno = 0;
  EXPECT_EQ(malloc(size_t{1} << 50), nullptr);
  EXPECT_EQ(errno, ENOMEM);
}

TEST(Malloc, BadFreesAreReportedNotCorrupting) {
  report_capture cap;
  int x;
  free(&x);
  char* p = static_cast<char*>(malloc(64));
  free(p + 16);
  free(p);
  free(p);
  ASSERT_GE(cap.count(), 3u);
  EXPECT_EQ(cap.first_line(0), "uslub: BUG kmalloc: Invalid pointer");
  EXPECT_EQ(cap.first_line(1), "uslub: BUG kmalloc-64: Invalid pointer");
  EXPECT_EQ(cap.first_line(2), "uslub: BUG kmalloc-64: Object already free");
  void* q = malloc(64);  // still works
  free(q);
}

TEST(New, AllFormsAndBadAlloc) {
  auto* a = new int(5);
  delete a;
  auto* b = new int[100];
  delete[] b;
  struct alignas(256) big {
    char c[300];
  };
  auto* c = new big;
  EXPECT_EQ(reinterpret_cast<uintptr_t>(c) % 256, 0u);
  delete c;
  auto* d = new (std::nothrow) char[10];
  delete[] d;
  EXPECT_THROW((void)::operator new(SIZE_MAX / 2), std::bad_alloc);
  EXPECT_EQ(::operator new(SIZE_MAX / 2, std::nothrow), nullptr);
  void* e = ::operator new (100, std::align_val_t{4096});
  EXPECT_EQ(reinterpret_cast<uintptr_t>(e) % 4096, 0u);
  ::operator delete (e, 100, std::align_val_t{4096});
}

// Sized delete (operator delete(void*, size_t), -fsized-deallocation) is unsized delete: the
// block's class comes from its slab, never from the size the program passes, so a wrong size
// frees the block correctly and is not reported (docs/malloc.md); the boundary check still
// reports an address that is not a block's start, whatever the size.
TEST(New, SizedDeleteFreesByTheBlockNotByTheSizeGiven) {
  cpu_set_t old, one;
  sched_getaffinity(0, sizeof old, &old);
  CPU_ZERO(&one);
  CPU_SET(sched_getcpu(), &one);
  sched_setaffinity(0, sizeof one, &one);  // the sheaf's LIFO order shows the block came back
  {
    report_capture cap;
    for (std::size_t n : {8ul, 24ul, 64ul, 200ul, 1000ul, 5000ul}) {
      for (std::size_t wrong : {std::size_t{0}, std::size_t{1}, n * 3, std::size_t{1} << 40}) {
        void* p = ::operator new(n);
        ::operator delete(p, wrong);
        void* q = ::operator new(n);
        EXPECT_EQ(q, p) << n << " freed with size " << wrong << ": the block is free again";
        ::operator delete[](q, wrong);
        void* r = ::operator new[](n);
        EXPECT_EQ(r, p) << n << " (array form)";
        ::operator delete[](r, n);
      }
    }
    EXPECT_EQ(cap.count(), 0u) << "a wrong size is not an error of the block";
  }
  {
    report_capture cap;
    char* p = static_cast<char*>(::operator new(64));
    ::operator delete(p + 16, 48);  // not a block start: reported, nothing freed
    ASSERT_EQ(cap.count(), 1u);
    EXPECT_EQ(cap.first_line(), "uslub: BUG kmalloc-64: Invalid pointer");
    ::operator delete(p, 64);
  }
  sched_setaffinity(0, sizeof old, &old);
}

TEST(Malloc, TrimReturnsMemoryAndStatsAreSane) {
  std::vector<void*> v;
  for (int i = 0; i < 200000; ++i) v.push_back(malloc(128));
  for (void* p : v) free(p);
  malloc_trim(0);
  struct mallinfo2 mi = mallinfo2();
  EXPECT_GT(mi.arena, 0u);
  EXPECT_GE(mi.arena, mi.uordblks);
  auto st = global_page_allocator().stats();
  EXPECT_GE(st.returned_bytes, 20u << 20) << "trim returned the freed 25 MiB";
}

TEST(Malloc, ForkFromSeveralAllocatingThreads) {
  std::atomic<bool> stop{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      while (!stop.load()) {
        std::vector<void*> v;
        for (int i = 0; i < 100; ++i) v.push_back(malloc(16 + i * 40));
        for (void* p : v) free(p);
      }
    });
  for (int i = 0; i < 30; ++i) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      std::vector<void*> v;
      for (int k = 0; k < 10000; ++k) v.push_back(malloc(k % 3000 + 1));
      for (void* p : v) free(p);
      _exit(0);
    }
    int status;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  stop = true;
  for (auto& t : ts) t.join();
}

// KFENCE's slot lock and the stack depot's lock are in the fork handlers: a child forked while
// other threads sample allocations (one in two here) must be able to sample and free too.
TEST(Malloc, ForkWhileKfenceSamplesInOtherThreads) {
  ASSERT_TRUE(kmalloc_kfence_init(2, 64));
  std::atomic<bool> stop{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < 3; ++t)
    ts.emplace_back([&] {
      while (!stop.load()) {
        std::vector<void*> v;
        for (int i = 0; i < 16; ++i) v.push_back(malloc(24 + i * 100));
        for (void* p : v) free(p);
      }
    });
  for (int i = 0; i < 30; ++i) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      alarm(20);  // a deadlocked child dies of SIGALRM instead of hanging the test
      std::vector<void*> v;
      for (int k = 0; k < 200; ++k) v.push_back(malloc(k % 700 + 1));
      unsigned long sampled = kfence_get_stats().allocs;
      for (void* p : v) free(p);
      _exit(sampled > 0 ? 0 : 3);
    }
    int status;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  }
  stop = true;
  for (auto& t : ts) t.join();
  kmalloc_kfence_init(0, 0);  // sampling off again for the other tests
}

TEST(Malloc, ThousandsOfShortLivedThreadsDoNotGrowTheHeap) {
  auto run = [] {
    for (int round = 0; round < 10; ++round) {
      std::vector<std::thread> ts;
      for (int t = 0; t < 50; ++t)
        ts.emplace_back([] {
          std::vector<void*> v;
          for (int i = 0; i < 200; ++i) v.push_back(malloc(48));
          for (void* p : v) free(p);
        });
      for (auto& t : ts) t.join();
    }
  };
  run();
  auto before = global_page_allocator().stats().committed_bytes;
  run();
  run();
  auto after = global_page_allocator().stats().committed_bytes;
  EXPECT_LE(after, before + (8u << 20)) << "1000 more threads grew the heap";
}

}  // namespace uslub::test
