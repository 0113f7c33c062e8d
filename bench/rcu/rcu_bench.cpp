// RCU costs (issue #8's table): kfree_rcu throughput and memory held while waiting, grace-period
// latency, read-side cost, fragment alloc + deferred free throughput; 1, 2 and 8 threads.
// Medians of --rounds (default 5), every variant once per round.
//   ./build-release/bench/bench_rcu_rcu_bench [--rounds N]
#include <uslub/rcu.h>
#include <uslub/slab.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "kmalloc/kmalloc.hpp"
#include "page/page_frag.hpp"
#include "rcu/rcu.hpp"

namespace {

using clk = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

struct obj {
  char data[48];
  uslub_rcu_head rh;
};

// Millions of kfree_rcu per second (alloc + kfree_rcu pairs), and the peak of objects waiting.
std::pair<double, long> kfree_rcu_rate(kmem_cache* s, int threads, long per_thread) {
  std::atomic<int> go{0};
  std::vector<std::thread> ts;
  auto t0 = clk::now();
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&] {
      while (!go.load()) {
      }
      for (long i = 0; i < per_thread; ++i) {
        auto* o = static_cast<obj*>(kmem_cache_alloc(s, 0));
        o->data[0] = 1;
        kfree_rcu(o, rh);
      }
    });
  t0 = clk::now();
  go = 1;
  for (auto& t : ts) t.join();
  double sec = std::chrono::duration<double>(clk::now() - t0).count();
  long peak = uslub::kfree_rcu_get_stats().peak;
  uslub_rcu_barrier();
  return {threads * per_thread / sec / 1e6, peak};
}

// synchronize_rcu latency (us) with `readers` threads in short read sections.
std::pair<double, double> gp_latency(int readers, int samples) {
  std::atomic<bool> stop{false};
  std::vector<std::thread> ts;
  for (int r = 0; r < readers; ++r)
    ts.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        uslub_rcu_read_lock();
        for (int k = 0; k < 100; ++k) asm volatile("" ::: "memory");
        uslub_rcu_read_unlock();
      }
    });
  std::vector<double> lat;
  for (int i = 0; i < samples; ++i) {
    auto t0 = clk::now();
    uslub_synchronize_rcu();
    lat.push_back(std::chrono::duration<double, std::micro>(clk::now() - t0).count());
  }
  stop = true;
  for (auto& t : ts) t.join();
  std::sort(lat.begin(), lat.end());
  return {lat[lat.size() / 2], lat[lat.size() * 99 / 100]};
}

double read_section_ns(long iters) {
  uslub_rcu_read_lock();
  uslub_rcu_read_unlock();  // registers
  auto t0 = clk::now();
  for (long i = 0; i < iters; ++i) {
    uslub_rcu_read_lock();
    asm volatile("" ::: "memory");
    uslub_rcu_read_unlock();
  }
  return std::chrono::duration<double, std::nano>(clk::now() - t0).count() / iters;
}

// Millions of frag_alloc + frag_free_defer per second.
double frag_rate(uslub::frag_pool* pool, int threads, long per_thread) {
  std::atomic<int> go{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&] {
      while (!go.load()) {
      }
      for (long i = 0; i < per_thread; ++i) {
        void* f = uslub::frag_alloc(pool);
        static_cast<char*>(f)[0] = 1;
        uslub::frag_free_defer(pool, f);
      }
    });
  auto t0 = clk::now();
  go = 1;
  for (auto& t : ts) t.join();
  double sec = std::chrono::duration<double>(clk::now() - t0).count();
  uslub_rcu_barrier();
  return threads * per_thread / sec / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 5;
  for (int i = 1; i < argc; ++i)
    if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
  kmem_cache* s = kmem_cache_create("bench-rcu", sizeof(obj), 0, SLAB_NO_MERGE, nullptr);
  uslub::frag_pool* pool = uslub::frag_pool_create(16);
  const int threads[] = {1, 2, 8};
  std::vector<double> kr[3], fr[3], gpm[3], gpp[3], rd;
  std::vector<double> peak[3];
  for (int r = 0; r < rounds; ++r) {
    for (int i = 0; i < 3; ++i) {
      auto [rate, pk] = kfree_rcu_rate(s, threads[i], 400000 / threads[i]);
      kr[i].push_back(rate);
      peak[i].push_back(static_cast<double>(pk));
      fr[i].push_back(frag_rate(pool, threads[i], 400000 / threads[i]));
      auto [m, p99] = gp_latency(threads[i], 200);
      gpm[i].push_back(m);
      gpp[i].push_back(p99);
    }
    rd.push_back(read_section_ns(20000000));
  }
  printf("Command: ./build-release/bench/bench_rcu_rcu_bench --rounds %d (medians)\n\n", rounds);
  printf(
      "| threads | kfree_rcu (M obj/s) | peak waiting (objects, since start) | frag "
      "alloc+free_defer (M/s) | synchronize_rcu median (us) | p99 (us) |\n");
  printf("| --- | --- | --- | --- | --- | --- |\n");
  for (int i = 0; i < 3; ++i)
    printf("| %d | %.2f | %.0f (%.1f MiB) | %.2f | %.1f | %.1f |\n", threads[i], median(kr[i]),
           median(peak[i]), median(peak[i]) * 64 / 1048576.0, median(fr[i]), median(gpm[i]),
           median(gpp[i]));
  printf("\nrcu_read_lock + rcu_read_unlock: %.2f ns\n", median(rd));
  return 0;
}
