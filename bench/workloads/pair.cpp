// pair: malloc(N) immediately followed by free(), in a tight loop on every thread.  Measures
// the allocator's fast path alone (no cache misses, no cross-thread traffic).
//   --size N (64)  --threads T (1)  --scale S
#include <atomic>
#include <thread>
#include <vector>

#include "common.h"

int main(int argc, char** argv) {
  wl::Args args{argc, argv};
  const size_t size = static_cast<size_t>(args.num("size", 64));
  const int threads = args.threads(1);
  const uint64_t iters = args.scaled(100e6);

  std::atomic<bool> go{false};
  auto work = [&] {
    while (!go.load(std::memory_order_acquire)) {
    }
    for (uint64_t i = 0; i < iters; i++) {
      void* p = std::malloc(size);
      wl::escape(p);
      std::free(p);
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; t++) pool.emplace_back(work);
  double t0 = wl::now();
  go.store(true, std::memory_order_release);
  for (auto& th : pool) th.join();
  double secs = wl::now() - t0;

  // Every thread does `iters` pairs concurrently, so wall time / iters is the time one thread
  // spends on a pair (it is the single-thread figure when the threads do not interfere).
  wl::result(
      "pair", threads, iters * threads, secs,
      "size=" + std::to_string(size) + " " + wl::kv("ns_per_pair", secs * 1e9 / iters, "%.2f"));
}
