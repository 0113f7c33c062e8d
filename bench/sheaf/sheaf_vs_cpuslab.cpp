// Sheaves vs the classic per-CPU slab, side by side in one process, on speed and memory.
//
//   pair      alloc+free in a loop (ns per pair), 64 B and 256 B, 1 and 2 threads
//   bulk      a burst of 512 allocations then 512 frees (ns per object)
//   xthread   producer allocates, consumer frees (ns per object)
//   churn     fragmenting pattern; then slabs in use and slab memory (KiB) before and after
//             kmem_cache_shrink, and objects parked in sheaves
// Each round runs every variant once (order alternating); medians of --rounds (default 5).
#include <uslub/slab.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using clk = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

kmem_cache* make(bool sheaves, size_t size) {
  static int n = 0;
  std::string name = std::string(sheaves ? "sheaf-" : "cpuslab-") + std::to_string(size) + "-" +
                     std::to_string(n++);
  return kmem_cache_create(name.c_str(), size, 0,
                           SLAB_NO_MERGE | (sheaves ? SLAB_SHEAVES : SLAB_NO_SHEAVES), nullptr);
}

double pair_ns(kmem_cache* s, int threads, long iters) {
  std::atomic<int> go{0};
  std::vector<std::thread> ts;
  std::vector<double> ns(threads);
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      go++;
      while (go.load() < threads) {
      }
      auto t0 = clk::now();
      for (long i = 0; i < iters; ++i) {
        void* p = kmem_cache_alloc(s, 0);
        asm volatile("" ::"r"(p) : "memory");
        kmem_cache_free(s, p);
      }
      ns[t] = std::chrono::duration<double, std::nano>(clk::now() - t0).count() / iters;
    });
  for (auto& t : ts) t.join();
  return median(ns);
}

double burst_ns(kmem_cache* s, long rounds) {
  std::vector<void*> v(512);
  auto t0 = clk::now();
  for (long r = 0; r < rounds; ++r) {
    for (auto& p : v) p = kmem_cache_alloc(s, 0);
    for (auto* p : v) kmem_cache_free(s, p);
  }
  return std::chrono::duration<double, std::nano>(clk::now() - t0).count() / (rounds * 512.0);
}

double xthread_ns(kmem_cache* s, long n) {
  constexpr int kQ = 4096;
  std::vector<std::atomic<void*>> q(kQ);
  std::atomic<long> produced{0};
  auto t0 = clk::now();
  std::thread cons([&] {
    long got = 0, i = 0;
    while (got < n) {
      void* p = q[i % kQ].exchange(nullptr, std::memory_order_acquire);
      if (p) {
        kmem_cache_free(s, p);
        ++got;
        ++i;
      }
    }
  });
  long i = 0;
  while (i < n) {
    void* p = kmem_cache_alloc(s, 0);
    while (q[i % kQ].load(std::memory_order_relaxed)) std::this_thread::yield();
    q[i % kQ].store(p, std::memory_order_release);
    ++i;
  }
  produced = i;
  cons.join();
  return std::chrono::duration<double, std::nano>(clk::now() - t0).count() / n;
}

struct churn_result {
  double slabs_kib, slabs_kib_after_shrink, live_kib;
};

churn_result churn(kmem_cache* s, size_t size, int threads) {
  std::vector<std::thread> ts;
  std::vector<std::vector<void*>> keep(threads);
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      std::mt19937 rng(t + 1);
      std::vector<void*> v;
      for (int i = 0; i < 100000; ++i) v.push_back(kmem_cache_alloc(s, 0));
      std::shuffle(v.begin(), v.end(), rng);
      for (size_t i = 0; i < v.size() / 2; ++i) kmem_cache_free(s, v[i]);
      v.erase(v.begin(), v.begin() + static_cast<long>(v.size() / 2));
      for (int i = 0; i < 50000; ++i) v.push_back(kmem_cache_alloc(s, 0));
      std::shuffle(v.begin(), v.end(), rng);
      size_t k = v.size() / 10;  // keep 10 %, scattered
      for (size_t i = k; i < v.size(); ++i) kmem_cache_free(s, v[i]);
      v.resize(k);
      keep[t] = std::move(v);
    });
  for (auto& t : ts) t.join();
  kmem_cache_info in;
  kmem_cache_get_info(s, &in);
  churn_result r;
  double slab_kib = static_cast<double>(4096u << in.order) / 1024.0;
  r.slabs_kib = in.num_slabs * slab_kib;
  size_t live = 0;
  for (auto& v : keep) live += v.size();
  r.live_kib = live * size / 1024.0;
  kmem_cache_shrink(s);
  kmem_cache_get_info(s, &in);
  r.slabs_kib_after_shrink = in.num_slabs * slab_kib;
  for (auto& v : keep)
    for (void* p : v) kmem_cache_free(s, p);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 5;
  long iters = 5000000;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
    if (!strcmp(argv[i], "--quick")) rounds = 3, iters = 1000000;
  }
  const size_t sizes[] = {64, 256};
  struct row {
    std::string name;
    std::vector<double> v[2];  // [cpuslab, sheaf]
  };
  std::vector<row> rows;
  auto add = [&](const std::string& name, int mode, double x) {
    for (auto& r : rows)
      if (r.name == name) return r.v[mode].push_back(x);
    rows.push_back({name, {}});
    rows.back().v[mode].push_back(x);
  };
  for (int r = 0; r < rounds; ++r) {
    for (int k = 0; k < 2; ++k) {
      int mode = (r + k) % 2;  // alternate which design goes first
      for (size_t sz : sizes) {
        kmem_cache* s = make(mode == 1, sz);
        std::string z = std::to_string(sz) + " B";
        add("pair " + z + ", 1 thread (ns)", mode, pair_ns(s, 1, iters));
        add("pair " + z + ", 2 threads (ns)", mode, pair_ns(s, 2, iters / 2));
        if (sz == 64) {  // oversubscribed: 8 and 32 threads on this machine's CPUs
          add("pair " + z + ", 8 threads (ns, per thread)", mode, pair_ns(s, 8, iters / 8));
          add("pair " + z + ", 32 threads (ns, per thread)", mode, pair_ns(s, 32, iters / 32));
        }
        add("burst 512 " + z + " (ns/object)", mode, burst_ns(s, iters / 2048));
        add("producer/consumer " + z + " (ns/object)", mode, xthread_ns(s, iters / 10));
        churn_result c = churn(s, sz, 2);
        add("churn " + z + ": slab KiB (live " + std::to_string(static_cast<long>(c.live_kib)) +
                " KiB)",
            mode, c.slabs_kib);
        add("churn " + z + ": slab KiB after shrink", mode, c.slabs_kib_after_shrink);
        kmem_cache_shrink(s);
        kmem_cache_destroy(s);
      }
    }
  }
  printf("| measure (median of %d rounds) | cpuslab | sheaf | sheaf / cpuslab |\n", rounds);
  printf("| --- | --- | --- | --- |\n");
  for (auto& r : rows) {
    double a = median(r.v[0]), b = median(r.v[1]);
    printf("| %s | %.1f | %.1f | %.2f |\n", r.name.c_str(), a, b, a > 0 ? b / a : 0);
  }
  return 0;
}
