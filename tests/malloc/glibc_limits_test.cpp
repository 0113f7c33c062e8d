// glibc's malloc contract at its edges, as a new user would try it: impossible sizes fail with
// NULL and ENOMEM on every thread, every aligned allocator honours every power-of-two alignment
// (to 1 GiB where memory allows, for tiny sizes too), and allocation failure under
// USLUB_MEMORY_LIMIT on one thread while others allocate fails cleanly.  This binary links
// libuslub.a whole: every malloc in the process is uslub's.
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "kmalloc/kmalloc.hpp"
#include "test_support.hpp"

namespace uslub::test {
namespace {

// Keeps the compiler from folding or warning about calls with impossible sizes.
std::size_t opaque(std::size_t v) {
  asm volatile("" : "+r"(v));
  return v;
}

struct huge_case {
  const char* what;
  std::size_t size;
};

const huge_case kHuge[] = {
    {"SIZE_MAX", SIZE_MAX},
    {"SIZE_MAX - 1", SIZE_MAX - 1},
    {"SIZE_MAX - 4095", SIZE_MAX - 4095},
    {"SIZE_MAX - 65536", SIZE_MAX - 65536},
    {"SIZE_MAX / 2 + 1", SIZE_MAX / 2 + 1},
    {"PTRDIFF_MAX", static_cast<std::size_t>(PTRDIFF_MAX)},
    {"1 << 62", std::size_t{1} << 62},
    {"1 << 48", std::size_t{1} << 48},
};

// Every entry point with every impossible size: NULL (or ENOMEM from posix_memalign) and
// errno ENOMEM.  Returns a description of the first failure, "" if none.
std::string check_huge_sizes() {
  char buf[256];
  for (const huge_case& h : kHuge) {
    std::size_t n = opaque(h.size);
    auto bad = [&](const char* fn, const void* p, int err) {
      snprintf(buf, sizeof buf, "%s(%s): %p, errno %d", fn, h.what, p, err);
      return std::string(buf);
    };
    errno = 0;
    if (void* p = malloc(n); p || errno != ENOMEM) return bad("malloc", p, errno);
    errno = 0;
    if (void* p = calloc(1, n); p || errno != ENOMEM) return bad("calloc(1, n)", p, errno);
    errno = 0;
    if (void* p = calloc(n, 1); p || errno != ENOMEM) return bad("calloc(n, 1)", p, errno);
    void* q = malloc(32);
    errno = 0;
    if (void* p = realloc(q, n); p || errno != ENOMEM) return bad("realloc", p, errno);
    free(q);  // a failed realloc leaves the block alone
    errno = 0;
    if (void* p = realloc(nullptr, n); p || errno != ENOMEM) return bad("realloc(NULL)", p, errno);
    errno = 0;
    if (void* p = reallocarray(nullptr, n, 1); p || errno != ENOMEM)
      return bad("reallocarray", p, errno);
    for (std::size_t align : {std::size_t{16}, std::size_t{64}, std::size_t{4096},
                              std::size_t{1} << 21, std::size_t{1} << 30}) {
      errno = 0;
      if (void* p = memalign(align, n); p || errno != ENOMEM) return bad("memalign", p, errno);
      errno = 0;
      if (void* p = aligned_alloc(align, n); p || errno != ENOMEM)
        return bad("aligned_alloc", p, errno);
      void* p = nullptr;
      int saved = errno = 12345;
      if (int r = posix_memalign(&p, align, n); r != ENOMEM || p || errno != saved)
        return bad("posix_memalign", p, r);
    }
    errno = 0;
    if (void* p = valloc(n); p || errno != ENOMEM) return bad("valloc", p, errno);
    errno = 0;
    if (void* p = pvalloc(n); p || errno != ENOMEM) return bad("pvalloc", p, errno);
  }
  return "";
}

TEST(GlibcLimits, SizesNearSizeMaxAreEnomemOnEveryEntryPoint) {
  EXPECT_EQ(check_huge_sizes(), "");
}

TEST(GlibcLimits, SizesNearSizeMaxAreEnomemInEveryThread) {
  std::vector<std::string> errors(6);
  std::vector<std::thread> ts;
  for (std::size_t t = 0; t < errors.size(); ++t)
    ts.emplace_back([&, t] {
      std::vector<void*> mine;  // allocations around the failures: the thread's caches work
      for (int i = 0; i < 200; ++i) mine.push_back(malloc(static_cast<std::size_t>(8 + i * 3)));
      errors[t] = check_huge_sizes();
      for (void* p : mine) free(p);
    });
  for (auto& th : ts) th.join();
  for (std::size_t t = 0; t < errors.size(); ++t) EXPECT_EQ(errors[t], "") << "thread " << t;
}

// memalign, posix_memalign, aligned_alloc for every power of two from 1 to 1 GiB, with tiny,
// odd and alignment-sized sizes; valloc/pvalloc are page-aligned.  The block is usable over
// its whole size (written) and malloc_usable_size covers it.
TEST(GlibcLimits, EveryPowerOfTwoAlignmentUpTo1GiBForEverySize) {
  for (std::size_t al = 1; al <= (std::size_t{1} << 30); al *= 2) {
    std::vector<std::size_t> sizes = {0, 1, 7, 16, 33, 100, al, al + 1};
    if (al <= (std::size_t{1} << 16)) sizes.push_back(al * 3 + 5);
    for (std::size_t sz : sizes) {
      auto check = [&](const char* fn, void* p) {
        ASSERT_NE(p, nullptr) << fn << "(" << al << ", " << sz << ")";
        EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % al, 0u)
            << fn << "(" << al << ", " << sz << ") = " << p;
        EXPECT_GE(malloc_usable_size(p), sz) << fn;
        if (sz) {
          static_cast<char*>(p)[0] = 1;
          static_cast<char*>(p)[sz - 1] = 2;
        }
        free(p);
      };
      check("memalign", memalign(al, sz));
      check("aligned_alloc", aligned_alloc(al, sz));
      if (al >= sizeof(void*)) {
        void* p = nullptr;
        ASSERT_EQ(posix_memalign(&p, al, sz), 0) << al << " " << sz;
        check("posix_memalign", p);
      }
    }
  }
  for (std::size_t sz : {std::size_t{0}, std::size_t{1}, std::size_t{4095}, std::size_t{4097},
                         std::size_t{1} << 20}) {
    void* v = valloc(sz);
    ASSERT_NE(v, nullptr);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(v) % 4096, 0u) << sz;
    free(v);
    void* pv = pvalloc(sz);
    ASSERT_NE(pv, nullptr);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(pv) % 4096, 0u) << sz;
    EXPECT_GE(malloc_usable_size(pv), sz ? (sz + 4095) / 4096 * 4096 : 4096) << sz;
    free(pv);
  }
}

// Many live tiny blocks at every alignment up to a page at once: distinct, aligned, intact.
TEST(GlibcLimits, ManyTinyAlignedBlocksLiveAtOnce) {
  std::vector<std::pair<unsigned char*, std::size_t>> live;
  for (int round = 0; round < 40; ++round)
    for (std::size_t al = 16; al <= 4096; al *= 2) {
      auto* p = static_cast<unsigned char*>(aligned_alloc(al, 1 + round % 3));
      ASSERT_NE(p, nullptr);
      ASSERT_EQ(reinterpret_cast<std::uintptr_t>(p) % al, 0u) << al;
      memset(p, static_cast<int>(live.size() & 0xff), 1 + round % 3);
      live.emplace_back(p, 1 + round % 3);
    }
  for (std::size_t i = 0; i < live.size(); ++i)
    for (std::size_t k = 0; k < live[i].second; ++k)
      ASSERT_EQ(live[i].first[k], static_cast<unsigned char>(i & 0xff)) << "overlap at " << i;
  for (auto& [p, n] : live) free(p);
}

// Runs this binary's GlibcLimitsChild tests in a child process with name=value in its
// environment (read at start-up); returns its wait status.
int in_child_with_env(const char* name, const char* value) {
  pid_t pid = fork();
  if (pid == 0) {
    alarm(60);
    setenv(name, value, 1);
    execl("/proc/self/exe", "/proc/self/exe", "--gtest_filter=GlibcLimitsChild.*",
          "--gtest_also_run_disabled_tests", nullptr);
    _exit(127);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  return st;
}

}  // namespace

// Under USLUB_MEMORY_LIMIT, one thread allocates until it fails while others keep allocating
// and freeing and new threads are created: the failing thread gets NULL + ENOMEM (never a
// crash or a report), pthread_create fails with EAGAIN/ENOMEM or succeeds, the others never
// see corrupted blocks, and once the hog frees, allocation works again.  Runs in a child
// started with the limit (the limit is read at start-up).
TEST(GlibcLimitsChild, DISABLED_FailureOnOneThreadWhileOthersAllocate) {
  const char* lim = getenv("USLUB_MEMORY_LIMIT");
  ASSERT_NE(lim, nullptr);
  std::atomic<bool> stop{false};
  std::atomic<long> corrupt{0}, worker_rounds{0}, worker_enomem{0}, other_errno{0};
  std::atomic<int> ready{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < 3; ++t)
    workers.emplace_back([&, t] {
      std::vector<std::pair<unsigned char*, std::size_t>> mine;
      mine.reserve(128);  // the test's own bookkeeping must not allocate at the limit
      ready++;
      while (!stop.load(std::memory_order_relaxed)) {
        std::size_t n = static_cast<std::size_t>(16 + (worker_rounds.load() * 37 + t) % 3000);
        auto* p = static_cast<unsigned char*>(malloc(n));
        if (!p) {
          if (errno == ENOMEM)
            worker_enomem++;
          else
            other_errno++;
        } else {
          memset(p, t + 1, n);
          mine.emplace_back(p, n);
        }
        if (mine.size() > 64) {
          for (auto& [q, m] : mine) {
            for (std::size_t k = 0; k < m; k += 97)
              if (q[k] != t + 1) corrupt++;
            free(q);
          }
          mine.clear();
        }
        worker_rounds++;
      }
      for (auto& [q, m] : mine) free(q);
    });
  while (ready.load() < 3) std::this_thread::yield();
  // The hog: 64 KiB and 1 MiB blocks until the limit says no.
  std::vector<void*> hog;
  hog.reserve(400000);
  int hog_errno = 0;
  for (int i = 0; i < 100000; ++i) {
    errno = 0;
    void* p = malloc(i % 2 ? (std::size_t{1} << 20) : (std::size_t{64} << 10));
    if (!p) {
      hog_errno = errno;
      break;
    }
    memset(p, 0x77, 4096);
    hog.push_back(p);
  }
  EXPECT_EQ(hog_errno, ENOMEM) << "the hog never failed under USLUB_MEMORY_LIMIT=" << lim;
  // Then small blocks until those fail too: the slack the workers' caches could still use.
  for (int i = 0; i < 200000; ++i) {
    errno = 0;
    void* p = malloc(i % 2 ? 4096 : 512);
    if (!p) {
      EXPECT_EQ(errno, ENOMEM);
      break;
    }
    hog.push_back(p);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // workers at the limit
  // Thread creation at the limit: it may fail (no memory for the stack's bookkeeping), cleanly.
  int created = 0, refused = 0;
  for (int i = 0; i < 20; ++i) {
    pthread_t th;
    int r = pthread_create(
        &th, nullptr,
        [](void*) -> void* {
          void* p = malloc(100);  // may be NULL at the limit
          free(p);
          return nullptr;
        },
        nullptr);
    if (r == 0) {
      pthread_join(th, nullptr);
      ++created;
    } else {
      EXPECT_TRUE(r == EAGAIN || r == ENOMEM) << r;
      ++refused;
    }
  }
  for (void* p : hog) free(p);
  stop = true;
  for (auto& th : workers) th.join();
  EXPECT_EQ(corrupt.load(), 0) << "a worker's block changed under it";
  EXPECT_EQ(other_errno.load(), 0) << "a failure other than ENOMEM";
  EXPECT_GT(worker_rounds.load(), 0);
  EXPECT_EQ(bug_count(), 0u) << "uslub reported a bug";
  // Memory is back: a large block and a thread work again.
  void* again = malloc(std::size_t{1} << 20);
  EXPECT_NE(again, nullptr);
  free(again);
  std::thread([] { free(malloc(100)); }).join();
  printf("hog %zu blocks, workers %ld rounds (%ld ENOMEM), threads %d created %d refused\n",
         hog.size(), worker_rounds.load(), worker_enomem.load(), created, refused);
}

TEST(GlibcLimits, AllocationFailureOnOneThreadWhileOthersAllocateUnderAMemoryLimit) {
  int st = in_child_with_env("USLUB_MEMORY_LIMIT", "48M");
  ASSERT_TRUE(WIFEXITED(st)) << "the child died: signal " << (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  EXPECT_EQ(WEXITSTATUS(st), 0) << "the child's test failed (its output is above)";
}

}  // namespace uslub::test
