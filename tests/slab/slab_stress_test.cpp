// Threads = 4 x CPUs, random sizes over several caches, frees on other threads, flush and
// shrink running concurrently.  A sharded shadow set proves no object is handed out twice;
// a token written into each object catches a concurrent second owner; validate() is clean at
// the end.
#include <uslub/slab.h>

#include <mutex>
#include <random>
#include <thread>
#include <unordered_set>
#include <vector>

#include "slab/slab.hpp"
#include "test_support.hpp"

namespace uslub::test {

namespace {
struct shadow_set {
  static constexpr int kShards = 64;
  std::mutex mu[kShards];
  std::unordered_set<uintptr_t> set[kShards];
  int shard(void* p) { return static_cast<int>((reinterpret_cast<uintptr_t>(p) >> 4) % kShards); }
  bool insert(void* p) {
    int s = shard(p);
    std::lock_guard<std::mutex> g(mu[s]);
    return set[s].insert(reinterpret_cast<uintptr_t>(p)).second;
  }
  bool erase(void* p) {
    int s = shard(p);
    std::lock_guard<std::mutex> g(mu[s]);
    return set[s].erase(reinterpret_cast<uintptr_t>(p)) == 1;
  }
};
}  // namespace

TEST(SlabStress, NoObjectHandedOutTwiceUnderCrossThreadFreesAndFlushes) {
  const size_t sizes[] = {8, 24, 64, 96, 200, 512, 1500, 5000};
  std::vector<kmem_cache*> caches;
  for (size_t sz : sizes) {
    std::string name = "stress-" + std::to_string(sz);
    caches.push_back(kmem_cache_create(name.c_str(), sz, 0, SLAB_NO_MERGE | SLAB_STATS, nullptr));
  }
  const int nthreads = 4 * static_cast<int>(std::thread::hardware_concurrency() ?: 2);
  const int iters = 40000 * stress_scale();
  shadow_set shadow;
  std::atomic<long> dup{0}, lost{0}, corrupt{0}, oom{0};
  constexpr int kSlots = 8192;
  std::vector<std::atomic<uintptr_t>> slots(kSlots);  // (object | cache index)
  std::atomic<bool> stop{false};

  auto release = [&](uintptr_t v) {
    auto* obj = reinterpret_cast<uint64_t*>(v & ~uintptr_t{7});
    int ci = static_cast<int>(v & 7);
    if (*obj != (v & ~uintptr_t{7}) * 31 + 7) corrupt++;
    if (!shadow.erase(obj)) lost++;
    kmem_cache_free(caches[ci], obj);
  };

  std::thread flusher([&] {
    std::mt19937 rng(99);
    while (!stop.load()) {
      kmem_cache* s = caches[rng() % caches.size()];
      if (rng() % 2)
        kmem_cache_shrink(s);
      else
        flush_all(s);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < nthreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(7 + t);
      for (int i = 0; i < iters; ++i) {
        int ci = static_cast<int>(rng() % caches.size());
        if (rng() % 16 == 0) {  // bulk
          void* p[32];
          if (!kmem_cache_alloc_bulk(caches[ci], 0, 32, p)) {
            oom++;
            continue;
          }
          for (void* o : p)
            if (!shadow.insert(o)) dup++;
          for (void* o : p) shadow.erase(o);
          kmem_cache_free_bulk(caches[ci], 32, p);
          continue;
        }
        auto* obj = static_cast<uint64_t*>(kmem_cache_alloc(caches[ci], 0));
        if (!obj) {
          oom++;
          continue;
        }
        if (!shadow.insert(obj)) dup++;
        *obj = reinterpret_cast<uintptr_t>(obj) * 31 + 7;
        uintptr_t old = slots[rng() % kSlots].exchange(reinterpret_cast<uintptr_t>(obj) |
                                                       static_cast<uintptr_t>(ci));
        if (old) release(old);
      }
    });
  }
  for (auto& th : threads) th.join();
  stop = true;
  flusher.join();
  for (auto& s : slots)
    if (uintptr_t v = s.exchange(0)) release(v);
  EXPECT_EQ(dup.load(), 0);
  EXPECT_EQ(lost.load(), 0);
  EXPECT_EQ(corrupt.load(), 0);
  EXPECT_EQ(oom.load(), 0);
  report_capture cap;
  for (kmem_cache* s : caches) {
    EXPECT_EQ(kmem_cache_validate(s), 0) << kmem_cache_name(s);
    kmem_cache_info info;
    kmem_cache_get_info(s, &info);
    kmem_cache_shrink(s);
    kmem_cache_destroy(s);
  }
  EXPECT_EQ(cap.count(), 0u) << cap.reports()[0];
}

// validate_slab_cache walks the memory map while other threads create and discard slabs:
// a slab seen half-made, or counts that changed under the walk, must not be reported.
TEST(SlabStress, ValidateDuringSlabCreationAndDiscardReportsNothing) {
  kmem_cache* s = kmem_cache_create("validate-churn", 200, 0, SLAB_NO_MERGE, nullptr);
  report_capture cap;
  // Empty slabs go back to the page allocator after every round.
  slab_churn traffic(s, 4, 200, slab_churn::shrink::after_free);
  for (int i = 0; i < 300; ++i) ASSERT_EQ(kmem_cache_validate(s), 0) << "round " << i;
  traffic.stop();
  EXPECT_EQ(cap.count(), 0u);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_destroy(s);
}

}  // namespace uslub::test
