// mstress: thread churn with objects outliving their threads.  Rounds of T short-lived
// threads each allocate a batch of blocks (16..2048 B) into a shared pool, free a random part
// of what earlier (now dead) threads left there, and exit.
//   --threads T (8)  --rounds R (200)  --scale S
#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "common.h"

int main(int argc, char** argv) {
  wl::Args args{argc, argv};
  const int threads = args.threads(8);
  const int rounds = static_cast<int>(args.scaled(200));
  const size_t per_thread = 2000;
  std::vector<std::atomic<void*>> pool(threads * per_thread * 2);
  for (auto& p : pool) p.store(nullptr);
  double t0 = wl::now();
  uint64_t ops = 0;
  for (int r = 0; r < rounds; ++r) {
    std::vector<std::thread> ts;
    for (int t = 0; t < threads; ++t)
      ts.emplace_back([&, t] {
        wl::Rng rng(static_cast<uint64_t>(r) * 7919 + t);
        for (size_t i = 0; i < per_thread; ++i) {
          size_t sz = rng.range(16, 2048);
          void* p = std::malloc(sz);
          if (!p) wl::die("out of memory");
          wl::touch(p, sz);
          void* old = pool[rng.below(pool.size())].exchange(p);
          std::free(old);  // a block some earlier thread allocated (or nullptr)
        }
      });
    for (auto& t : ts) t.join();
    ops += threads * per_thread;
  }
  double secs = wl::now() - t0;
  for (auto& p : pool) std::free(p.exchange(nullptr));
  wl::result("mstress", threads, ops, secs, wl::kv("rss_mb", wl::rss_mb(), "%.1f"));
}
