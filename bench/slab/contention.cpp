// The contention figures that predict scaling beyond this machine's 2 CPUs: for a steady
// alloc/free mix on 1, 2, 8 and 32 threads, shared-lock acquisitions (list_lock, barn lock via
// barn gets/puts, zone->lock) per 1000 operations, and sheaf misses per 1000 operations.
// Locked instructions per fast-path operation: 0 (tests/golden/fastpath.md).
#include <uslub/slab.h>

#include <atomic>
#include <cstdio>
#include <random>
#include <thread>
#include <vector>

#include "page/page_alloc.hpp"

int main() {
  printf(
      "| threads | ops | list_lock /1000 ops | zone->lock /1000 ops | barn get+put /1000 ops | "
      "sheaf misses /1000 ops |\n");
  printf("| --- | --- | --- | --- | --- | --- |\n");
  for (int threads : {1, 2, 8, 32}) {
    kmem_cache* s = kmem_cache_create(("contention-" + std::to_string(threads)).c_str(), 64, 0,
                                      SLAB_NO_MERGE | SLAB_STATS, nullptr);
    const long per_thread = 4000000 / threads;
    auto run = [&](long n) {
      std::vector<std::thread> ts;
      for (int t = 0; t < threads; ++t)
        ts.emplace_back([&, t] {
          std::mt19937 rng(t);
          std::vector<void*> live;
          for (long i = 0; i < n; ++i) {
            if (live.size() < 200 && (live.empty() || rng() % 2)) {
              live.push_back(kmem_cache_alloc(s, 0));
            } else {
              size_t k = rng() % live.size();
              kmem_cache_free(s, live[k]);
              live[k] = live.back();
              live.pop_back();
            }
          }
          for (void* p : live) kmem_cache_free(s, p);
        });
      for (auto& t : ts) t.join();
    };
    run(per_thread / 4);  // warm up: slabs, sheaves and barn exist
    kmem_cache_info a, b;
    kmem_cache_get_info(s, &a);
    auto za = uslub::global_page_allocator().stats();
    run(per_thread);
    kmem_cache_get_info(s, &b);
    auto zb = uslub::global_page_allocator().stats();
    double ops = static_cast<double>(per_thread) * threads;
    auto per_k = [&](double x) { return x * 1000.0 / ops; };
    printf("| %d | %.0f | %.3f | %.3f | %.3f | %.3f |\n", threads, ops,
           per_k(static_cast<double>(b.list_lock_acquired - a.list_lock_acquired)),
           per_k(static_cast<double>(zb.zone_lock_acquired - za.zone_lock_acquired)),
           per_k(static_cast<double>(b.sheaf_stat[7] + b.sheaf_stat[9] - a.sheaf_stat[7] -
                                     a.sheaf_stat[9])),
           per_k(static_cast<double>(b.sheaf_stat[1] + b.sheaf_stat[3] - a.sheaf_stat[1] -
                                     a.sheaf_stat[3])));
    kmem_cache_shrink(s);
    kmem_cache_destroy(s);
  }
  return 0;
}
