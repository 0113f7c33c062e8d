// large_sweep: --count blocks (100) of --size bytes each, every byte written; prints the
// process's VmRSS (KiB) with all of them live, and the time to allocate and write them.
// bench/workloads/large_blocks.py runs it for sizes from 32 KiB to 64 MiB under each malloc;
// tools/large_breakdown.py runs it with --smaps 1, which also prints (to stderr) the resident
// KiB of each mapping group (a file's mappings together, anonymous memory as [anon]) before the
// first block and with every block live: where a process's fixed and per-block RSS goes.
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
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

// Rss of /proc/self/smaps by mapping group, printed as "smaps <when> <kib> <group>" lines.
static void print_smaps(const char* when) {
  FILE* f = std::fopen("/proc/self/smaps", "r");
  if (!f) return;
  std::map<std::string, long> rss;
  std::string group;
  char line[1024];
  while (std::fgets(line, sizeof line, f)) {
    long kib;
    std::size_t first = std::strcspn(line, " ");
    // A mapping's header (range perms offset dev inode [path]) or a field ("Rss:", ...).
    if (first > 0 && line[first - 1] != ':') {
      char path[512] = "";
      std::sscanf(line, "%*s %*s %*s %*s %*s %511s", path);
      group = path[0] ? path : "[anon]";
    } else if (std::sscanf(line, "Rss: %ld kB", &kib) == 1) {
      rss[group] += kib;
    }
  }
  std::fclose(f);
  for (auto& [name, kib] : rss)
    if (kib) std::fprintf(stderr, "smaps %s %ld %s\n", when, kib, name.c_str());
}

int main(int argc, char** argv) {
  wl::Args args{argc, argv};
  const size_t size = static_cast<size_t>(args.num("size", 600000));
  const int count = static_cast<int>(args.num("count", 100));
  const bool smaps = args.num("smaps", 0) != 0;
  std::vector<void*> blocks(count);
  if (smaps) print_smaps("base");
  long before = vm_rss_kib();
  double t0 = wl::now();
  for (int i = 0; i < count; ++i) {
    blocks[i] = std::malloc(size);
    if (!blocks[i]) wl::die("out of memory");
    std::memset(blocks[i], i + 1, size);
  }
  double t1 = wl::now();
  long rss = vm_rss_kib();
  if (smaps) print_smaps("live");
  for (void* p : blocks) std::free(p);
  double t2 = wl::now();
  std::string extra = "rss_kib=" + std::to_string(rss) + " base_kib=" + std::to_string(before) +
                      " " + wl::kv("free_seconds", t2 - t1, "%.6f");
  wl::result("large_sweep", 1, static_cast<uint64_t>(count), t1 - t0, extra);
}
