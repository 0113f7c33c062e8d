// cache-scratch: passive false sharing (after Hoard's test of that name).  The main thread
// allocates one small object per worker, back to back, and hands each worker its own.  A
// worker frees it, then repeatedly mallocs an object of the same size, writes to it many
// times and frees it.  An allocator that gives the freed neighbour's memory (same cache line)
// to a different thread makes the workers' writes fight over one line; a good one keeps each
// thread's objects on lines of their own and the run is short.
//   --threads T (2)  --size N (8)  --scale S
#include <atomic>
#include <thread>
#include <vector>

#include "common.h"

int main(int argc, char** argv) {
  wl::Args args{argc, argv};
  const int threads = args.threads(2);
  const size_t size = static_cast<size_t>(args.num("size", 8));
  const uint64_t rounds = args.scaled(2000000);  // malloc/free per thread
  const int writes = 100;                        // writes per object per round

  std::vector<char*> initial(threads);
  for (auto& p : initial) p = static_cast<char*>(std::malloc(size));

  std::atomic<bool> go{false};
  auto work = [&](int id) {
    while (!go.load(std::memory_order_acquire)) {
    }
    std::free(initial[id]);
    for (uint64_t r = 0; r < rounds; r++) {
      auto* p = static_cast<volatile char*>(std::malloc(size));
      for (int w = 0; w < writes; w++) p[w % size] = static_cast<char>(p[w % size] + 1);
      std::free(const_cast<char*>(p));
    }
  };
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; t++) pool.emplace_back(work, t);
  double t0 = wl::now();
  go.store(true, std::memory_order_release);
  for (auto& th : pool) th.join();
  double secs = wl::now() - t0;

  // Also say whether the main thread's objects shared a cache line, for the record.
  bool shared_line = threads > 1 && (reinterpret_cast<uintptr_t>(initial[0]) >> 6) ==
                                        (reinterpret_cast<uintptr_t>(initial[1]) >> 6);
  wl::result("cache-scratch", threads, rounds * threads * writes, secs,
             "size=" + std::to_string(size) + " initial_same_line=" + std::to_string(shared_line));
}
