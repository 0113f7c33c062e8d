// alloc-test: a size mix like real programs (many small, few large) over a working set.
// Sizes follow a Pareto distribution (minimum 16 B, alpha 1.1) capped at 1 KiB; each thread
// keeps a working set of live blocks, and every operation frees a random one and allocates a
// new block in its place, touching it.  Unlike `pair`, blocks live a while, so the run also
// pays for the allocator's cache footprint and fragmentation.
//   --threads T (1)  --working-set N (262144 blocks per thread)  --scale S
#include <cmath>
#include <thread>
#include <vector>

#include "common.h"

namespace {

// A table of Pareto-distributed sizes, drawn once, so the hot loop does no pow().
std::vector<uint32_t> pareto_sizes(size_t n, uint64_t seed) {
  wl::Rng rng(seed);
  std::vector<uint32_t> t(n);
  for (auto& s : t) {
    double u = 1.0 - rng.unit();               // (0, 1]
    double x = 16.0 / std::pow(u, 1.0 / 1.1);  // Pareto(x_m = 16, alpha = 1.1)
    s = static_cast<uint32_t>(x > 1024 ? 1024 : x);
  }
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  wl::Args args{argc, argv};
  const int threads = args.threads(1);
  const size_t ws = static_cast<size_t>(args.num("working-set", 262144));
  const uint64_t ops = args.scaled(40e6);  // per thread
  const std::vector<uint32_t> sizes = pareto_sizes(1 << 16, 7);

  auto work = [&](int id) {
    wl::Rng rng(id + 100);
    std::vector<void*> live(ws);
    size_t next = rng.below(sizes.size());
    for (auto& p : live) p = std::malloc(sizes[next++ % sizes.size()]);
    for (uint64_t i = 0; i < ops; i++) {
      size_t k = rng.below(ws);
      std::free(live[k]);
      size_t sz = sizes[next++ % sizes.size()];
      void* p = std::malloc(sz);
      if (!p) wl::die("out of memory");
      wl::touch(p, sz);
      live[k] = p;
    }
    for (void* p : live) std::free(p);
  };

  double t0 = wl::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; t++) pool.emplace_back(work, t);
  for (auto& th : pool) th.join();
  double secs = wl::now() - t0;

  double mean = 0;
  for (auto s : sizes) mean += s;
  mean /= sizes.size();
  wl::result(
      "alloc-test", threads, ops * threads, secs,
      wl::kv("mean_size", mean, "%.0f") + " " + wl::kv("ns_per_op", secs * 1e9 / ops, "%.2f"));
}
