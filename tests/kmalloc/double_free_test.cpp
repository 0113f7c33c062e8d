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
  explicit mode_guard(std::int32_t rate) : saved(g_double_free_rate) {
    kmalloc_set_double_free_rate(rate);
  }
  ~mode_guard() { kmalloc_set_double_free_rate(saved); }
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

// The sampling count is the class slot's tick, advanced by the keyed push in the same store
// that commits the slot's size: one free in kDoubleFreeSampleRate per CPU and class takes the
// checked path, so a double free whose second free lands on that push is reported at once
// (here: the tick brought to one push before the carry, then the second free of a block
// freed earlier, not on top of the slot).  Pops leave the tick alone.
TEST(DoubleFreeDetection, TheSampledFreeIsTheOneWhoseTickCarries) {
  kmalloc_init();
  if (!g_kmalloc.fast_area) GTEST_SKIP() << "no class slots (no rseq): every free is checked";
  std::thread t([] {
    pin_to_first_cpu();
    const std::size_t size = 1008;  // a class no other test of this file uses
    const unsigned c = kmalloc_index(size);
    kmem_cache* s = g_kmalloc.caches[c];
    ASSERT_NE(s->map_tag, reinterpret_cast<std::uintptr_t>(s)) << "the class path is on";
    unsigned cpu = platform::current_cpu();
    sheaf_slot* sl = pcpu_slot(cpu, (kKmallocSlot0 + c) * sizeof(sheaf_slot));
    auto tick = [&] { return __atomic_load_n(&sl->tick, __ATOMIC_RELAXED); };
    constexpr std::uint16_t kStep = 0x10000 / kDoubleFreeSampleRate;
    // Room in the slot (a free of a full slot takes the checked path anyway).
    std::vector<void*> keep;
    keep.reserve(kMaxSheafCapacity);  // before the test: no allocation of this class below
    for (unsigned i = 0; i < s->sheaf_capacity; ++i) keep.push_back(kmalloc(size, 0));
    void* victim = kmalloc(size, 0);
    void* top = kmalloc(size, 0);
    // A pop does not move the tick.
    std::uint16_t before = tick();
    void* q = kmalloc(size, 0);
    EXPECT_EQ(tick(), before);
    kfree(q);  // one keyed push: one step (or the wrap, sampled)
    EXPECT_EQ(static_cast<std::uint16_t>(tick() - before), kStep);
    kfree(victim);
    kfree(top);  // victim is no longer on top: the in-a-row compare cannot see it
    // Keyed pushes of fresh blocks until the next one carries.
    while (tick() != static_cast<std::uint16_t>(0x10000 - kStep)) {
      kfree(kmalloc(size, 0));
      ASSERT_EQ(platform::current_cpu(), cpu);
    }
    {
      report_capture cap;
      kfree(victim);  // the push whose tick add carries: the key is checked
      ASSERT_EQ(cap.count(), 1u) << "the sampled free reports the double free";
      EXPECT_NE(cap.reports()[0].find("already free"), std::string::npos) << cap.reports()[0];
    }
    // The reported free pushed nothing (the tick still before the carry): the next free is
    // checked too, and its push (ticked) takes the tick past the wrap.
    EXPECT_EQ(tick(), static_cast<std::uint16_t>(0x10000 - kStep));
    kfree(kmalloc(size, 0));
    EXPECT_EQ(tick(), 0) << "the checked path's push advanced the tick past the wrap";
    for (void* o : keep) kfree(o);
  });
  t.join();
}

}  // namespace uslub::test
