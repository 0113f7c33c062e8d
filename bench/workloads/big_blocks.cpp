// big_blocks: --live (20) blocks of --min..--max bytes (5-25 MiB) live at once; each of --steps
// (400) steps frees one at random and allocates a new one of a random size, written in full.
// Prints the time of the steps (wall and CPU), the page faults per new block (getrusage minflt),
// the RSS with everything live, and the RSS --wait seconds (1) after everything was freed, with the
// live bytes at the end for comparison.
#include <sys/resource.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "common.h"

static long minflt() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_minflt;
}

// User + system CPU seconds of this process (on a loaded machine the wall time of the steps
// also counts the time other processes held the CPU).
static double cpu_seconds() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

int main(int argc, char** argv) {
  wl::Args args{argc, argv};
  const int live = static_cast<int>(args.num("live", 20));
  const uint64_t steps = static_cast<uint64_t>(args.num("steps", 400));
  const size_t lo = static_cast<size_t>(args.num("min", 5 << 20));
  const size_t hi = static_cast<size_t>(args.num("max", 25 << 20));
  const double wait = args.num("wait", 1.0);
  wl::Rng rng(2024);
  std::vector<void*> p(live);
  std::vector<size_t> sz(live);
  for (int i = 0; i < live; ++i) {
    sz[i] = rng.range(lo, hi);
    p[i] = std::malloc(sz[i]);
    if (!p[i]) wl::die("out of memory");
    std::memset(p[i], 1, sz[i]);
  }
  long f0 = minflt();
  double c0 = cpu_seconds();
  double t0 = wl::now();
  for (uint64_t s = 0; s < steps; ++s) {
    int k = static_cast<int>(rng.below(live));
    std::free(p[k]);
    sz[k] = rng.range(lo, hi);
    p[k] = std::malloc(sz[k]);
    if (!p[k]) wl::die("out of memory");
    std::memset(p[k], static_cast<int>(s), sz[k]);
  }
  double t1 = wl::now();
  double cpu = cpu_seconds() - c0;
  long faults = minflt() - f0;
  double rss_live = wl::rss_mb();
  size_t live_bytes = 0;
  for (size_t b : sz) live_bytes += b;
  for (void* q : p) std::free(q);
  usleep(static_cast<useconds_t>(wait * 1e6));
  double rss_freed = wl::rss_mb();
  std::string extra = wl::kv("cpu_seconds", cpu, "%.4f") + " " +
                      wl::kv("faults_per_block", static_cast<double>(faults) / steps, "%.1f") +
                      " " + wl::kv("rss_live_mb", rss_live, "%.1f") + " " +
                      wl::kv("live_mb", live_bytes / 1048576.0, "%.1f") + " " +
                      wl::kv("rss_freed_mb", rss_freed, "%.1f");
  wl::result("big_blocks", 1, steps, t1 - t0, extra);
}
