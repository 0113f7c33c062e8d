// Shared helpers for the allocator workloads.  Each workload is a standalone program that uses
// only libc, libstdc++ and pthreads, so any malloc can be put under it with LD_PRELOAD.  It
// times its own measured phase and prints one line:
//   RESULT name=<workload> threads=<n> ops=<n> seconds=<s> [key=value ...]
#pragma once

#include <unistd.h>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace wl {

// Command-line options are `--key value` or `--key=value`; --scale multiplies the work.
struct Args {
  int argc;
  char** argv;
  std::string get(const char* key, const char* fallback) const {
    std::string k = std::string("--") + key;
    for (int i = 1; i < argc; i++) {
      std::string a = argv[i];
      if (a == k && i + 1 < argc) return argv[i + 1];
      if (a.rfind(k + "=", 0) == 0) return a.substr(k.size() + 1);
    }
    return fallback;
  }
  double num(const char* key, double fallback) const {
    std::string v = get(key, "");
    return v.empty() ? fallback : std::atof(v.c_str());
  }
  int threads(int fallback) const { return static_cast<int>(num("threads", fallback)); }
  double scale() const { return num("scale", 1.0); }
  // n scaled by --scale, at least 1.
  uint64_t scaled(double n) const {
    double v = n * scale();
    return v < 1 ? 1 : static_cast<uint64_t>(v);
  }
};

// xorshift64*: small, fast, and the same sequence under every allocator.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
  }
  uint64_t below(uint64_t n) { return next() % n; }                             // [0, n)
  uint64_t range(uint64_t lo, uint64_t hi) { return lo + below(hi - lo + 1); }  // [lo, hi]
  double unit() { return (next() >> 11) * (1.0 / 9007199254740992.0); }         // [0, 1)
};

// Keeps the compiler from proving an allocation unused and deleting the malloc/free pair.
inline void escape(void* p) {
  asm volatile("" : : "g"(p) : "memory");
}

// Writes a few bytes so the block is really used (and its first line is brought into cache).
inline void touch(void* p, size_t n) {
  auto* c = static_cast<volatile char*>(p);
  c[0] = 1;
  if (n > 1) c[n - 1] = 2;
}

inline double now() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

// Resident set size in MiB, from /proc/self/statm (second field, in pages).
inline double rss_mb() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return -1;
  long size = 0, resident = 0;
  int n = std::fscanf(f, "%ld %ld", &size, &resident);
  std::fclose(f);
  if (n != 2) return -1;
  return resident * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

// Prints the result line; `extra` is appended as is ("key=value key=value").
inline void result(const char* name, int threads, uint64_t ops, double seconds,
                   const std::string& extra = "") {
  std::printf("RESULT name=%s threads=%d ops=%llu seconds=%.6f%s%s\n", name, threads,
              static_cast<unsigned long long>(ops), seconds, extra.empty() ? "" : " ",
              extra.c_str());
  std::fflush(stdout);
}

inline std::string kv(const char* key, double v, const char* fmt = "%.3f") {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return std::string(key) + "=" + buf;
}

[[noreturn]] inline void die(const char* what) {
  std::fprintf(stderr, "workload: %s\n", what);
  std::exit(1);
}

}  // namespace wl
