// large_sweep: --count blocks (100) of --size bytes each, every byte written; prints the
// process's VmRSS (KiB) with all of them live, and the time to allocate and write them.
// bench/workloads/large_sweep.py runs it for sizes from 32 KiB to 64 MiB under each malloc.
#include <cstdio>
#include <cstring>
#include <vector>

#include "common.h"

static long vm_rss_kib() {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  long kib = -1;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "VmRSS: %ld kB", &kib) == 1) break;
  std::fclose(f);
  return kib;
}

int main(int argc, char** argv) {
  wl::Args args{argc, argv};
  const size_t size = static_cast<size_t>(args.num("size", 600000));
  const int count = static_cast<int>(args.num("count", 100));
  std::vector<void*> blocks(count);
  long before = vm_rss_kib();
  double t0 = wl::now();
  for (int i = 0; i < count; ++i) {
    blocks[i] = std::malloc(size);
    if (!blocks[i]) wl::die("out of memory");
    std::memset(blocks[i], i + 1, size);
  }
  double t1 = wl::now();
  long rss = vm_rss_kib();
  for (void* p : blocks) std::free(p);
  double t2 = wl::now();
  std::string extra = "rss_kib=" + std::to_string(rss) + " base_kib=" + std::to_string(before) +
                      " " + wl::kv("free_seconds", t2 - t1, "%.6f");
  wl::result("large_sweep", 1, static_cast<uint64_t>(count), t1 - t0, extra);
}
