// The contention figures that predict scaling beyond this machine's 2 CPUs: for a steady
// alloc/free mix on 1, 2, 8 and 32 threads, shared-lock acquisitions (list_lock, barn lock via
// barn gets/puts, zone->lock) per 1000 operations, and sheaf misses per 1000 operations.
// Locked instructions per fast-path operation: 0 (tests/golden/fastpath.md).
#include <uslub/slab.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "page/page_alloc.hpp"
#include "slab/sheaf.hpp"

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

  // Remote frees: half the threads allocate batches of 64 objects and hand them to the other
  // half through a queue (at most 256 batches in it), which free them: every free is on
  // another thread, usually another CPU.  Sheaf flushes+refills count the sheaves that went
  // through the slabs instead of the barn.  Locked instructions per operation are counted from
  // the counters, a lower bound: one slot-lock cmpxchg per sheaf miss, two (lock and unlock)
  // per barn operation, list_lock and zone->lock acquisition; not counted: the 16-byte
  // cmpxchg per slab run of a refill or flush.  The cache counts statistics, so its sheaves
  // take the locked path (one more locked instruction per operation, not counted here)
  // unless the library was built with -DUSLUB_STATS_ON_RSEQ=1.
  printf(
      "\n| threads (producers+consumers) | ops | list_lock /1000 ops | zone->lock /1000 ops | "
      "barn get+put /1000 ops | sheaf misses /1000 ops | flush+refill /1000 ops | locked "
      "instructions / op (lower bound) |\n");
  printf("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (int threads : {2, 8, 32}) {
    kmem_cache* s = kmem_cache_create(("remote-" + std::to_string(threads)).c_str(), 64, 0,
                                      SLAB_NO_MERGE | SLAB_STATS, nullptr);
    auto run = [&](long objects) {
      std::mutex mu;
      std::condition_variable ne, nf;
      std::vector<std::vector<void*>> q;
      const int producers = threads / 2;
      const long per_producer = objects / producers / 64;
      std::atomic<int> done{0};
      std::vector<std::thread> ts;
      for (int t = 0; t < threads; ++t)
        ts.emplace_back([&, t] {
          if (t < producers) {
            for (long b = 0; b < per_producer; ++b) {
              std::vector<void*> batch(64);
              for (auto& p : batch) p = kmem_cache_alloc(s, 0);
              std::unique_lock<std::mutex> g(mu);
              nf.wait(g, [&] { return q.size() < 256; });
              q.push_back(std::move(batch));
              ne.notify_one();
            }
            std::lock_guard<std::mutex> g(mu);
            ++done;
            ne.notify_all();
          } else {
            for (;;) {
              std::vector<void*> batch;
              {
                std::unique_lock<std::mutex> g(mu);
                ne.wait(g, [&] { return !q.empty() || done == producers; });
                if (q.empty()) return;
                batch = std::move(q.back());
                q.pop_back();
                nf.notify_one();
              }
              for (void* p : batch) kmem_cache_free(s, p);
            }
          }
        });
      for (auto& t : ts) t.join();
    };
    run(400000);  // warm up
    kmem_cache_info a, b;
    kmem_cache_get_info(s, &a);
    auto za = uslub::global_page_allocator().stats();
    const long objects = 2000000;
    run(objects);
    kmem_cache_get_info(s, &b);
    auto zb = uslub::global_page_allocator().stats();
    double ops = 2.0 * static_cast<double>(objects);  // an allocation and a free per object
    auto d = [&](int i) { return static_cast<double>(b.sheaf_stat[i] - a.sheaf_stat[i]); };
    double list = static_cast<double>(b.list_lock_acquired - a.list_lock_acquired);
    double zone = static_cast<double>(zb.zone_lock_acquired - za.zone_lock_acquired);
    double barn =
        d(uslub::BARN_GET) + d(uslub::BARN_GET_FAIL) + d(uslub::BARN_PUT) + d(uslub::BARN_PUT_FAIL);
    double misses = d(uslub::SHEAF_ALLOC_MISS) + d(uslub::SHEAF_FREE_MISS);
    double locked = misses + 2 * (barn + list + zone);
    auto per_k = [&](double x) { return x * 1000.0 / ops; };
    printf("| %d (%d+%d) | %.0f | %.3f | %.3f | %.3f | %.3f | %.3f | %.4f |\n", threads,
           threads / 2, threads - threads / 2, ops, per_k(list), per_k(zone), per_k(barn),
           per_k(misses), per_k(d(uslub::SHEAF_FLUSH) + d(uslub::SHEAF_REFILL)), locked / ops);
    kmem_cache_shrink(s);
    kmem_cache_destroy(s);
  }
  return 0;
}
