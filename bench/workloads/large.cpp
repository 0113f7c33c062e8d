// large: blocks of 64 KiB .. 8 MiB with realloc growth, a working set of 64 per thread.
//   --threads T (1)  --scale S
#include <thread>
#include <vector>

#include "common.h"

int main(int argc, char** argv) {
  wl::Args args{argc, argv};
  const int threads = args.threads(1);
  const uint64_t iters = args.scaled(20000);
  auto work = [&](int t) {
    wl::Rng rng(99 + t);
    std::vector<void*> live(64, nullptr);
    std::vector<size_t> size(64, 0);
    for (uint64_t i = 0; i < iters; ++i) {
      size_t k = rng.below(live.size());
      if (live[k] && rng.below(4) == 0) {  // grow by realloc
        size_t ns = size[k] + size[k] / 2;
        if (ns > (8u << 20)) ns = 8u << 20;
        void* p = std::realloc(live[k], ns);
        if (!p) wl::die("out of memory");
        wl::touch(p, ns);
        live[k] = p;
        size[k] = ns;
        continue;
      }
      std::free(live[k]);
      size_t sz = size_t{64} << 10 << rng.below(8);  // 64 KiB .. 8 MiB
      sz += rng.below(sz / 2);
      if (sz > (8u << 20)) sz = 8u << 20;
      void* p = std::malloc(sz);
      if (!p) wl::die("out of memory");
      wl::touch(p, sz);
      live[k] = p;
      size[k] = sz;
    }
    for (void* p : live) std::free(p);
  };
  double t0 = wl::now();
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) ts.emplace_back(work, t);
  for (auto& t : ts) t.join();
  wl::result("large", threads, iters * threads, wl::now() - t0);
}
