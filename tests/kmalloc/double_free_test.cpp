// Double-free detection of kmalloc's class path (docs/debug.md): a double free at 1, 2, 10
// and 1000 frees apart, the second free on the same thread or another one, under the default
// (in a row always, the free key checked on a sampled fraction of frees and at flush) and
// strict (USLUB_DOUBLE_FREE=strict: the key checked at every free).  Strict catches every one
// at its second free; the default catches every one in a row; the rates of the others are
// printed (bench/workloads/double_free_rates.sh measures them beside glibc's).
#include <sched.h>

#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#include "kmalloc/kmalloc.hpp"
#include "test_support.hpp"

namespace uslub::test {
namespace {

void pin_to_first_cpu() {
  cpu_set_t set;
  sched_getaffinity(0, sizeof set, &set);
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(c, &one);
      sched_setaffinity(0, sizeof one, &one);
      return;
    }
}

// Trials of one double free of a size-byte block, `distance` frees apart (distance - 1 other
// frees between the two); returns how many were reported at the second free.
int detected(std::size_t size, int distance, bool other_thread, int trials, int* later = nullptr) {
  int hits = 0;
  kmem_cache* s = kmalloc_slab(size);
  std::mt19937 rng(static_cast<unsigned>(distance * 2 + other_thread));
  for (int t = 0; t < trials; ++t) {
    void* p = nullptr;
    std::vector<void*> others, live;
    std::thread first([&] {
      pin_to_first_cpu();
      // The slot at a random fill level, as in a program (after the previous trial's drain
      // a refill leaves it nearly full, and a free of a full slot takes the checked path).
      for (unsigned j = rng() % (s->sheaf_capacity + 1); j > 0; --j)
        live.push_back(kmalloc(size, 0));
      p = kmalloc(size, 0);
      for (int i = 1; i < distance; ++i) others.push_back(kmalloc(size, 0));
      kfree(p);
      if (other_thread)
        for (void* o : others) kfree(o);
    });
    first.join();
    report_capture cap;
    auto second = [&] {
      pin_to_first_cpu();
      if (!other_thread)
        for (void* o : others) kfree(o);
      kfree(p);
    };
    if (other_thread) {
      std::thread t2(second);
      t2.join();
    } else {
      std::thread t2([&] {
        // The same thread's frees: one thread does the rest of the sequence.
        second();
      });
      t2.join();
    }
    if (cap.count() > 0) ++hits;
    for (void* o : live) kfree(o);
    kmem_cache_shrink(s);  // the flush drops a copy left behind (its report is swallowed)
    if (cap.count() > 0 && later) ++*later;
  }
  return hits;
}

struct mode_guard {
  explicit mode_guard(std::int32_t rate) : saved(g_double_free_rate) { g_double_free_rate = rate; }
  ~mode_guard() { g_double_free_rate = saved; }
  std::int32_t saved;
};

}  // namespace

// Same thread: "first" and "second" above run one after the other, both pinned to one CPU,
// so the frees between the two are that CPU's, as in one thread.
TEST(DoubleFreeDetection, StrictCatchesEveryOneDefaultEveryOneInARow) {
  kmalloc_init();
  if (!g_kmalloc.fast_area) GTEST_SKIP() << "no class slots (no rseq): every free is checked";
  constexpr int kTrials = 200;
  const int distances[] = {1, 2, 10, 1000};
  std::size_t size = 48;
  for (bool other : {false, true})
    for (int d : distances) {
      int strict, strict_all = 0, def, def_all = 0;
      {
        mode_guard m(1);
        strict = detected(size, d, other, kTrials, &strict_all);
      }
      {
        mode_guard m(kDoubleFreeSampleRate);
        def = detected(size, d, other, kTrials, &def_all);
      }
      printf(
          "distance %4d, %s thread: reported at the second free / at all (second free or "
          "a later flush): strict %3d / %3d of %d, default %3d / %3d of %d\n",
          d, other ? "other" : "same ", strict, strict_all, kTrials, def, def_all, kTrials);
      EXPECT_EQ(strict_all, kTrials) << "strict: every double free is reported (d " << d << ")";
      EXPECT_GE(strict, kTrials * 95 / 100) << "strict: at the second free but for a copy flushed "
                                               "out of the sheaves in between (d "
                                            << d << ")";
      if (d == 1) EXPECT_EQ(def, kTrials) << "default: every double free in a row";
      size += 16;  // a fresh class per case: a missed double free stays in its own cache
    }
  for (unsigned c = 0; c < g_kmalloc.nr; ++c) kmem_cache_shrink(g_kmalloc.caches[c]);
}

}  // namespace uslub::test
