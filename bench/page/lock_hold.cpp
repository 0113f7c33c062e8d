// Lock hold times while memory is returned: 1 GiB allocated (half in small kmalloc objects of
// 64-512 bytes, half in large blocks of 64 KiB - 1 MiB, every page touched), then freed and
// given back to the OS (shrink_all_memory: every cache shrunk, pcp lists drained, reclaim)
// while a second thread keeps allocating and freeing.  Prints, for each shared lock class,
// the holds recorded during the release phase: count, p99, p99.9, p99.99 and the longest (us),
// the largest work count of one hold (hold_work: blocks for zone->lock, slabs for list_lock,
// list steps for slab_mutex) and, with --cpu, the same percentiles in thread CPU time: a hold
// whose wall time is far above its CPU time had its holder preempted, not busy.  Also the
// latency of each kfree of the releasing thread (where reclaim used to run inline) and of each
// kmalloc+kfree pair of the other thread (which waits for the locks the release holds):
// p50 ... p99.99 and the longest, timed with CLOCK_MONOTONIC into log2 buckets.
//   bench_page_lock_hold [--mib 1024] [--cpu]
#include <time.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "kmalloc/kmalloc.hpp"
#include "page/pressure.hpp"
#include "sync/spinlock.hpp"

using namespace uslub;

namespace {
struct lat_hist {
  std::uint64_t b[64] = {}, n = 0, max = 0;
  void add(std::uint64_t ns) {
    ++b[ns ? 63 - __builtin_clzll(ns) : 0];
    ++n;
    if (ns > max) max = ns;
  }
  double q(double f) const {  // upper bound of the bucket holding quantile f, in us
    std::uint64_t want = static_cast<std::uint64_t>(f * static_cast<double>(n) + 0.5), seen = 0;
    for (int i = 0; i < 64; ++i) {
      seen += b[i];
      if (seen >= want && seen) return static_cast<double>(std::uint64_t{2} << i) / 1e3;
    }
    return max / 1e3;
  }
};
std::uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u +
         static_cast<std::uint64_t>(ts.tv_nsec);
}
}  // namespace

int main(int argc, char** argv) {
  std::size_t mib = 1024;
  bool cpu = false;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--mib") && i + 1 < argc) mib = strtoull(argv[++i], nullptr, 10);
    if (!strcmp(argv[i], "--cpu")) cpu = true;
  }
  const std::size_t half = mib << 19;
  std::mt19937_64 rng(1);
  std::vector<void*> blocks;
  std::size_t small = 0, large = 0;
  while (small < half) {
    std::size_t sz = 64 + rng() % 449;
    auto* p = static_cast<char*>(kmalloc(sz, 0));
    p[0] = 1;
    blocks.push_back(p);
    small += sz;
  }
  while (large < half) {
    std::size_t sz = (64u << 10) + rng() % (960u << 10);
    auto* p = static_cast<char*>(kmalloc(sz, 0));
    for (std::size_t o = 0; o < sz; o += 4096) p[o] = 1;
    blocks.push_back(p);
    large += sz;
  }
  std::shuffle(blocks.begin(), blocks.end(), rng);
  lock_hold_stats_reset();
  lock_hold_stats_enable(true, cpu);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> mutator_ops{0};
  lat_hist free_lat, pair_lat;
  std::thread mutator([&] {
    std::mt19937_64 r(2);
    void* keep[256] = {};
    std::uint64_t n = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      unsigned k = r() % 256;
      std::size_t sz = r() % 8 ? 16 + r() % 2048 : (40u << 10) + r() % (200u << 10);
      std::uint64_t a = now_ns();
      kfree(keep[k]);
      keep[k] = kmalloc(sz, 0);
      pair_lat.add(now_ns() - a);
      static_cast<char*>(keep[k])[0] = 1;
      ++n;
    }
    for (void* p : keep) kfree(p);
    mutator_ops.store(n);
  });
  auto t0 = std::chrono::steady_clock::now();
  for (void* p : blocks) {
    std::uint64_t a = now_ns();
    kfree(p);
    free_lat.add(now_ns() - a);
  }
  auto t1 = std::chrono::steady_clock::now();
  std::size_t returned = shrink_all_memory(shrink_reason::trim);
  auto t2 = std::chrono::steady_clock::now();
  stop.store(true);
  mutator.join();
  lock_hold_stats_enable(false);
  lock_hold_class cls[64];
  int n = lock_hold_stats(cls, 64);
  auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
  printf(
      "Freed %zu MiB (%zu blocks) in %.0f ms, shrink_all_memory returned %zu MiB in %.0f ms;"
      " the other thread made %llu allocation+free pairs meanwhile.\n\n",
      (small + large) >> 20, blocks.size(), ms(t1 - t0), returned >> 20, ms(t2 - t1),
      static_cast<unsigned long long>(mutator_ops.load()));
  printf(
      "Latency while the memory is released (us, log2 bucket upper bounds; the timer's own"
      " cost included):\n\n");
  printf("| operation | calls | p50 | p99 | p99.9 | p99.99 | longest |\n");
  printf("| --- | --- | --- | --- | --- | --- | --- |\n");
  for (auto [name, h] :
       {std::pair<const char*, lat_hist*>{"kfree of the releasing thread", &free_lat},
        {"kmalloc+kfree pair of the other thread", &pair_lat}})
    printf("| %s | %llu | <%.2f | <%.2f | <%.2f | <%.2f | %.1f |\n", name,
           static_cast<unsigned long long>(h->n), h->q(0.5), h->q(0.99), h->q(0.999), h->q(0.9999),
           h->max / 1e3);
  printf("\n");
  std::sort(cls, cls + n, [](const lock_hold_class& a, const lock_hold_class& b) {
    return strcmp(a.name, b.name) < 0;
  });
  printf("Wall clock%s (us; percentiles are log2 bucket upper bounds):\n\n",
         cpu ? ", each hold including one CLOCK_THREAD_CPUTIME_ID read" : "");
  printf(
      "| lock class | holds | mean | p99 | p99.9 | p99.99 | longest | max work/hold |"
      " mean work/hold |\n");
  printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
  for (int i = 0; i < n; ++i) {
    const lock_hold_class& c = cls[i];
    printf("| %s | %llu | %.2f | <%.2f | <%.2f | <%.2f | %.1f | %llu | %.1f |\n", c.name,
           static_cast<unsigned long long>(c.count), c.total_ns / 1e3 / c.count,
           lock_hold_quantile(c, 0.99) / 1e3, lock_hold_quantile(c, 0.999) / 1e3,
           lock_hold_quantile(c, 0.9999) / 1e3, c.max_ns / 1e3,
           static_cast<unsigned long long>(c.max_work),
           c.work_holds ? static_cast<double>(c.total_work) / c.work_holds : 0.0);
  }
  if (!cpu) return 0;
  // The cost of one CPU-clock read, which each wall hold above includes once.
  std::uint64_t a = detail::lock_hold_now_ns();
  for (int i = 0; i < 1000; ++i) detail::lock_hold_thread_cpu_ns();
  double read_ns = (detail::lock_hold_now_ns() - a) / 1000.0;
  printf("\nThread CPU time (us; one CLOCK_THREAD_CPUTIME_ID read costs %.0f ns here):\n\n",
         read_ns);
  printf("| lock class | mean | p99 | p99.9 | p99.99 | longest | longest wall - longest cpu |\n");
  printf("| --- | --- | --- | --- | --- | --- | --- |\n");
  for (int i = 0; i < n; ++i) {
    const lock_hold_class& c = cls[i];
    printf("| %s | %.2f | <%.2f | <%.2f | <%.2f | %.1f | %.1f |\n", c.name,
           c.cpu_total_ns / 1e3 / c.count, lock_hold_cpu_quantile(c, 0.99) / 1e3,
           lock_hold_cpu_quantile(c, 0.999) / 1e3, lock_hold_cpu_quantile(c, 0.9999) / 1e3,
           c.cpu_max_ns / 1e3, (static_cast<double>(c.max_ns) - c.cpu_max_ns) / 1e3);
  }
}
