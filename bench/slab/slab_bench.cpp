// kmem_cache vs malloc, the measurements of the SLUB issue:
//   pair 64/256 B on 1 and 2 threads, bulk 16 and 64 (ns per object), producer/consumer.
// Default: uslub's kmem_cache API.  --malloc: the same patterns with malloc/free, so the
// binary can be run under LD_PRELOAD of each peer (bench/slab/run.py interleaves them).
// Prints "name value" lines (ns per operation).
#include <uslub/slab.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

using clk = std::chrono::steady_clock;
bool g_malloc = false;
long g_iters = 10000000;

struct api {
  kmem_cache* s = nullptr;
  size_t size;
  explicit api(size_t sz) : size(sz) {
    if (!g_malloc)
      s = kmem_cache_create(("bench-" + std::to_string(sz)).c_str(), sz, 0, SLAB_NO_MERGE, nullptr);
  }
  void* alloc() { return g_malloc ? malloc(size) : kmem_cache_alloc(s, 0); }
  void free(void* p) { g_malloc ? ::free(p) : kmem_cache_free(s, p); }
  int alloc_bulk(size_t n, void** p) {
    if (!g_malloc) return kmem_cache_alloc_bulk(s, 0, n, p);
    for (size_t i = 0; i < n; ++i) p[i] = malloc(size);
    return static_cast<int>(n);
  }
  void free_bulk(size_t n, void** p) {
    if (!g_malloc) return kmem_cache_free_bulk(s, n, p);
    for (size_t i = 0; i < n; ++i) ::free(p[i]);
  }
};

double pair(size_t size, int threads) {
  api a(size);
  std::atomic<int> ready{0};
  std::vector<double> ns(threads);
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      // Untimed warm-up (a tenth of the run), the same for every allocator: the steady state
      // is measured, not the first refill, page faults and lazy set-up of a fresh cache/thread.
      for (long i = 0; i < g_iters / 10; ++i) {
        void* p = a.alloc();
        asm volatile("" ::"r"(p) : "memory");
        a.free(p);
      }
      ready++;
      while (ready.load() < threads) {
      }
      auto t0 = clk::now();
      for (long i = 0; i < g_iters; ++i) {
        void* p = a.alloc();
        asm volatile("" ::"r"(p) : "memory");
        a.free(p);
      }
      ns[t] = std::chrono::duration<double, std::nano>(clk::now() - t0).count() / g_iters;
    });
  for (auto& t : ts) t.join();
  std::sort(ns.begin(), ns.end());
  return ns[ns.size() / 2];
}

double bulk(size_t size, size_t n) {
  api a(size);
  std::vector<void*> v(n);
  long rounds = g_iters / static_cast<long>(n);
  auto t0 = clk::now();
  for (long r = 0; r < rounds; ++r) {
    a.alloc_bulk(n, v.data());
    asm volatile("" ::"r"(v.data()) : "memory");
    a.free_bulk(n, v.data());
  }
  return std::chrono::duration<double, std::nano>(clk::now() - t0).count() / (rounds * n);
}

double prodcons(size_t size) {
  api a(size);
  constexpr int kQ = 1024;
  std::vector<std::atomic<void*>> q(kQ);
  long n = g_iters / 4;
  auto t0 = clk::now();
  std::thread cons([&] {
    for (long i = 0; i < n; ++i) {
      void* p;
      while (!(p = q[i % kQ].exchange(nullptr, std::memory_order_acquire))) {
      }
      a.free(p);
    }
  });
  for (long i = 0; i < n; ++i) {
    void* p = a.alloc();
    while (q[i % kQ].load(std::memory_order_relaxed)) {
    }
    q[i % kQ].store(p, std::memory_order_release);
  }
  cons.join();
  return std::chrono::duration<double, std::nano>(clk::now() - t0).count() / n;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--malloc")) g_malloc = true;
    if (!strcmp(argv[i], "--quick")) g_iters = 2000000;
  }
  printf("pair-64-1t %.2f\n", pair(64, 1));
  printf("pair-64-2t %.2f\n", pair(64, 2));
  printf("pair-256-1t %.2f\n", pair(256, 1));
  printf("pair-256-2t %.2f\n", pair(256, 2));
  printf("bulk16-64 %.2f\n", bulk(64, 16));
  printf("bulk64-64 %.2f\n", bulk(64, 64));
  printf("prodcons-64 %.2f\n", prodcons(64));
  return 0;
}
