// memory-return: allocate 1 GiB in small objects (64..256 B), free them all, wait 1 s doing
// nothing, and report the resident set then, against the resident set before the run.
//   --scale S (1: 1 GiB)
#include <thread>
#include <vector>

#include "common.h"

int main(int argc, char** argv) {
  wl::Args args{argc, argv};
  const uint64_t total = args.scaled(1024.0 * 1024 * 1024);
  wl::Rng rng(7);
  double before = wl::rss_mb();
  std::vector<void*> v;
  v.reserve(total / 64);
  double t0 = wl::now();
  uint64_t bytes = 0;
  while (bytes < total) {
    size_t sz = rng.range(64, 256);
    void* p = std::malloc(sz);
    if (!p) wl::die("out of memory");
    wl::touch(p, sz);
    v.push_back(p);
    bytes += sz;
  }
  double peak = wl::rss_mb();
  for (void* p : v) std::free(p);
  double secs = wl::now() - t0;
  std::vector<void*>().swap(v);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  double after = wl::rss_mb();
  wl::result("memory_return", 1, total, secs,
             wl::kv("peak_mb", peak, "%.1f") + " " + wl::kv("rss_after_free_mb", after, "%.1f") +
                 " " + wl::kv("rss_before_mb", before, "%.1f"));
}
