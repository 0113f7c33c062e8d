// slub_debug under concurrency: 8 threads (4x this machine's CPUs) allocate, write within
// bounds, free locally and remotely (through a shared exchange), on FZPU caches.  A correct
// program must produce no report, and validation must pass afterwards.
#include <uslub/slab.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "slab/debug.hpp"
#include "slab/slab.hpp"
#include "test_support.hpp"

namespace uslub {
namespace {

TEST(SlubDebugStress, ManyThreadsLocalAndRemoteFreesStayClean) {
  constexpr slab_flags_t FZPU =
      SLAB_CONSISTENCY_CHECKS | SLAB_RED_ZONE | SLAB_POISON | SLAB_STORE_USER;
  kmem_cache* s = kmem_cache_create("dbg-stress", 72, 0, FZPU, nullptr);
  ASSERT_NE(s, nullptr);
  test::report_capture cap;
  constexpr int kThreads = 8;
  const int iters = 20000 * test::stress_scale();
  constexpr int kSlots = 64;
  std::atomic<void*> exchange[kSlots] = {};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      std::vector<void*> mine;
      unsigned seed = 77u * static_cast<unsigned>(t) + 1;
      for (int i = 0; i < iters; ++i) {
        seed = seed * 1103515245u + 12345u;
        unsigned op = (seed >> 16) % 4;
        if (op < 2 || mine.empty()) {
          void* p = kmem_cache_alloc(s, 0);
          ASSERT_NE(p, nullptr);
          memset(p, t, 72);  // the whole object, not a byte more
          mine.push_back(p);
        } else if (op == 2) {
          kmem_cache_free(s, mine.back());
          mine.pop_back();
        } else {  // hand one to whoever comes next: a remote free
          void* old = exchange[seed % kSlots].exchange(mine.back());
          mine.pop_back();
          if (old) kmem_cache_free(s, old);
        }
      }
      for (void* p : mine) kmem_cache_free(s, p);
    });
  for (auto& th : ts) th.join();
  for (auto& e : exchange)
    if (void* p = e.load()) kmem_cache_free(s, p);
  EXPECT_EQ(cap.count(), 0u) << (cap.count() ? cap.reports()[0] : "");
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_info info;
  kmem_cache_get_info(s, &info);
  EXPECT_EQ(info.active_objs, 0u);
  kmem_cache_destroy(s);
}

}  // namespace
}  // namespace uslub
