// Latency of every allocation and free: each call is timed with rdtscp into a log-linear
// histogram (32 sub-buckets per power of two, so a value is known to within 3 %), per thread,
// merged at the end.  Standalone (libc, libstdc++ and pthreads only) so that any malloc can be
// put under it with LD_PRELOAD; bench/latency/run.py runs it under uslub and every peer.
//
//   latency [--api malloc|kmem] [--threads N] [--ops N] [--remote F] [--slots N] [--size N]
//           [--seed S] [--sheaf-capacity N]
//
// Each thread owns --slots slots and repeats --ops / threads times: pick a slot at random; if it
// holds a block, free it (timed) or, with probability --remote (threads > 1), hand it to a
// random other thread, which frees it later (timed as a remote free); then allocate a new block
// into the slot (timed) and write its first and last byte (not timed).  Sizes are log-uniform
// over 8 B - 4 KiB with one allocation in 1024 of 4-64 KiB, unless --size fixes one.  Blocks
// handed over travel in batches of 32 through a mutex-protected inbox per thread, which its owner
// drains every 32 iterations; neither the hand-over nor the draining is timed, only the free.
//
// --api kmem times kmem_cache_alloc/kmem_cache_free on one cache of --size bytes (default 64)
// instead; it needs uslub's kmem_cache API in the process (LD_PRELOAD of libuslub.so) and looks
// it up with dlsym, so the program itself is not linked to uslub.  --sheaf-capacity N sets that
// cache's sheaf capacity (kmem_cache_set_sheaf_capacity) to see how a refill's or a flush's
// length shows in the tail.
//
// The cost of the empty timer pair (its minimum over 10000 tries, printed as overhead_cycles) is
// subtracted from every sample.  Samples include everything the calling thread lived through:
// page faults, lock waits and preemption, which is the point at 4x and 16x oversubscription.
//
// Output, parsed by run.py:
//   LATENCY api=malloc threads=2 ops=... remote=0.25 tsc_hz=... overhead_cycles=... seconds=...
//   HIST op=malloc count=N max=M buckets=i:c,i:c,...   (cycles; op = malloc, free, free_remote)
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <x86intrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

namespace {

constexpr int kSubBits = 5;  // 32 sub-buckets per power of two
constexpr int kSub = 1 << kSubBits;
constexpr int kBuckets = (64 - kSubBits + 1) * kSub;
constexpr int kBatch = 32;

inline int bucket_of(uint64_t v) {
  if (v < static_cast<uint64_t>(kSub)) return static_cast<int>(v);
  int e = 63 - __builtin_clzll(v);  // >= kSubBits
  int sub = static_cast<int>((v >> (e - kSubBits)) & (kSub - 1));
  return (e - kSubBits + 1) * kSub + sub;
}

struct Hist {
  uint64_t count = 0;
  uint64_t max = 0;
  uint64_t b[kBuckets] = {};
  void add(uint64_t v) {
    ++count;
    if (v > max) max = v;
    ++b[bucket_of(v)];
  }
  void merge(const Hist& o) {
    count += o.count;
    max = std::max(max, o.max);
    for (int i = 0; i < kBuckets; ++i) b[i] += o.b[i];
  }
};

enum Op { kMalloc, kFree, kFreeRemote, kOps };
const char* const kOpName[kOps] = {"malloc", "free", "free_remote"};

inline uint64_t tsc() {
  unsigned aux;
  return __rdtscp(&aux);
}

uint64_t g_overhead = 0;

struct Rng {
  uint64_t s;
  uint64_t next() {  // xorshift64*
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1DULL;
  }
};

// The allocator under test: malloc/free, or uslub's kmem_cache through dlsym.
struct kmem_cache;
using create_fn = kmem_cache* (*)(const char*, size_t, size_t, unsigned, void (*)(void*));
using alloc_fn = void* (*)(kmem_cache*, unsigned);
using free_fn = void (*)(kmem_cache*, void*);
using destroy_fn = void (*)(kmem_cache*);
bool g_kmem = false;
kmem_cache* g_cache = nullptr;
alloc_fn g_kalloc = nullptr;
free_fn g_kfree = nullptr;
size_t g_fixed_size = 0;

inline void* do_alloc(size_t sz) {
  if (g_kmem) return g_kalloc(g_cache, 0);
  return malloc(sz);
}
inline void do_free(void* p) {
  if (g_kmem)
    g_kfree(g_cache, p);
  else
    free(p);
}

struct Inbox {
  std::mutex lock;
  std::vector<void*> items;
  std::atomic<size_t> pending{0};
};

struct Shared {
  int threads = 1;
  uint64_t iters = 0;  // per thread
  double remote = 0;
  size_t slots = 2048;
  uint64_t seed = 1;
  std::vector<Inbox> inbox;
  std::atomic<int> arrived{0};
  explicit Shared(int n) : inbox(n) {}
};

void barrier(Shared& sh, int& generation) {
  // A counting barrier with a sense per use; spins with sched_yield, so an oversubscribed
  // run does not burn its time slices here.
  ++generation;
  sh.arrived.fetch_add(1, std::memory_order_acq_rel);
  while (sh.arrived.load(std::memory_order_acquire) < generation * sh.threads) sched_yield();
}

size_t pick_size(Rng& r) {
  if (g_fixed_size) return g_fixed_size;
  uint64_t x = r.next();
  if ((x & 1023) == 0) return 4096 + (x >> 20) % (60 * 1024);  // 4-64 KiB, 1 in 1024
  size_t lo = size_t{8} << ((x >> 10) % 9);                    // 8 .. 2048
  return lo + (x >> 24) % lo;                                  // lo .. 2 lo - 1
}

void timed_free(void* p, Hist& h) {
  uint64_t t0 = tsc();
  do_free(p);
  uint64_t t1 = tsc();
  h.add(t1 - t0 > g_overhead ? t1 - t0 - g_overhead : 0);
}

void drain(Shared& sh, int self, Hist& h, std::vector<void*>& scratch) {
  Inbox& in = sh.inbox[self];
  if (in.pending.load(std::memory_order_relaxed) == 0) return;
  {
    std::lock_guard<std::mutex> g(in.lock);
    scratch.swap(in.items);
    in.pending.store(0, std::memory_order_relaxed);
  }
  for (void* p : scratch) timed_free(p, h);
  scratch.clear();
}

void flush(Shared& sh, int dest, std::vector<void*>& out) {
  Inbox& in = sh.inbox[dest];
  std::lock_guard<std::mutex> g(in.lock);
  in.items.insert(in.items.end(), out.begin(), out.end());
  in.pending.store(in.items.size(), std::memory_order_relaxed);
  out.clear();
}

void worker(Shared& sh, int self, Hist* hist) {
  Rng r{sh.seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(self) * 7919 + 1};
  std::vector<void*> slot(sh.slots, nullptr);
  std::vector<std::vector<void*>> out(sh.threads);
  for (auto& o : out) o.reserve(kBatch);
  std::vector<void*> scratch;
  scratch.reserve(4096);
  sh.inbox[self].items.reserve(4096);
  const uint64_t remote_cut =
      sh.threads > 1 ? static_cast<uint64_t>(sh.remote * 4294967296.0) : 0;  // of 2^32
  int gen = 0;
  barrier(sh, gen);
  for (uint64_t it = 0; it < sh.iters; ++it) {
    uint64_t x = r.next();
    size_t i = x % sh.slots;
    if (void* p = slot[i]) {
      if ((x >> 32) < remote_cut) {
        int dest = static_cast<int>((self + 1 + r.next() % (sh.threads - 1)) % sh.threads);
        out[dest].push_back(p);
        if (out[dest].size() == kBatch) flush(sh, dest, out[dest]);
      } else {
        timed_free(p, hist[kFree]);
      }
    }
    size_t sz = pick_size(r);
    uint64_t t0 = tsc();
    void* p = do_alloc(sz);
    uint64_t t1 = tsc();
    hist[kMalloc].add(t1 - t0 > g_overhead ? t1 - t0 - g_overhead : 0);
    if (!p) {
      fprintf(stderr, "latency: allocation of %zu bytes failed\n", sz);
      exit(1);
    }
    static_cast<volatile char*>(p)[0] = 1;
    static_cast<volatile char*>(p)[sz - 1] = 1;
    slot[i] = p;
    if ((it & (kBatch - 1)) == 0) drain(sh, self, hist[kFreeRemote], scratch);
  }
  for (int d = 0; d < sh.threads; ++d)
    if (!out[d].empty()) flush(sh, d, out[d]);
  barrier(sh, gen);  // every hand-over is in an inbox now
  drain(sh, self, hist[kFreeRemote], scratch);
  for (void* p : slot)
    if (p) do_free(p);  // the teardown is not timed
}

double tsc_hz() {
  timespec a, b;
  clock_gettime(CLOCK_MONOTONIC_RAW, &a);
  uint64_t t0 = tsc();
  timespec d{0, 100 * 1000 * 1000};
  nanosleep(&d, nullptr);
  clock_gettime(CLOCK_MONOTONIC_RAW, &b);
  uint64_t t1 = tsc();
  double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
  return (t1 - t0) / ns * 1e9;
}

uint64_t timer_overhead() {
  uint64_t best = ~0ULL;
  for (int i = 0; i < 10000; ++i) {
    uint64_t t0 = tsc();
    uint64_t t1 = tsc();
    best = std::min(best, t1 - t0);
  }
  return best;
}

[[noreturn]] void usage() {
  fprintf(stderr,
          "usage: latency [--api malloc|kmem] [--threads N] [--ops N] [--remote F] "
          "[--slots N] [--size N] [--seed S] [--sheaf-capacity N]\n");
  exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 1;
  uint64_t ops = 2000000;
  double remote = 0.25;
  size_t slots = 2048;
  uint64_t seed = 1;
  const char* api = "malloc";
  unsigned sheaf_capacity = 0;
  for (int i = 1; i < argc; ++i) {
    auto arg = [&](const char* name) {
      if (strcmp(argv[i], name) != 0) return false;
      if (i + 1 >= argc) usage();
      return true;
    };
    if (arg("--threads"))
      threads = atoi(argv[++i]);
    else if (arg("--ops"))
      ops = strtoull(argv[++i], nullptr, 10);
    else if (arg("--remote"))
      remote = atof(argv[++i]);
    else if (arg("--slots"))
      slots = strtoull(argv[++i], nullptr, 10);
    else if (arg("--size"))
      g_fixed_size = strtoull(argv[++i], nullptr, 10);
    else if (arg("--seed"))
      seed = strtoull(argv[++i], nullptr, 10);
    else if (arg("--sheaf-capacity"))
      sheaf_capacity = static_cast<unsigned>(strtoul(argv[++i], nullptr, 10));
    else if (arg("--api"))
      api = argv[++i];
    else
      usage();
  }
  if (threads < 1 || slots < 1 || remote < 0 || remote > 1) usage();
  destroy_fn kdestroy = nullptr;
  if (strcmp(api, "kmem") == 0) {
    auto create = reinterpret_cast<create_fn>(dlsym(RTLD_DEFAULT, "kmem_cache_create"));
    g_kalloc = reinterpret_cast<alloc_fn>(dlsym(RTLD_DEFAULT, "kmem_cache_alloc"));
    g_kfree = reinterpret_cast<free_fn>(dlsym(RTLD_DEFAULT, "kmem_cache_free"));
    kdestroy = reinterpret_cast<destroy_fn>(dlsym(RTLD_DEFAULT, "kmem_cache_destroy"));
    if (!create || !g_kalloc || !g_kfree || !kdestroy) {
      fprintf(stderr,
              "latency: --api kmem needs uslub's kmem_cache API (LD_PRELOAD=libuslub.so)\n");
      return 3;
    }
    if (!g_fixed_size) g_fixed_size = 64;
    g_cache = create("latency", g_fixed_size, 0, 0, nullptr);
    if (!g_cache) {
      fprintf(stderr, "latency: kmem_cache_create failed\n");
      return 1;
    }
    if (sheaf_capacity) {
      using cap_fn = int (*)(kmem_cache*, unsigned);
      auto set_cap = reinterpret_cast<cap_fn>(dlsym(RTLD_DEFAULT, "kmem_cache_set_sheaf_capacity"));
      if (!set_cap || set_cap(g_cache, sheaf_capacity) != 0) {
        fprintf(stderr, "latency: kmem_cache_set_sheaf_capacity(%u) failed\n", sheaf_capacity);
        return 1;
      }
    }
    g_kmem = true;
  } else if (strcmp(api, "malloc") != 0) {
    usage();
  }
  double hz = tsc_hz();
  g_overhead = timer_overhead();
  Shared sh(threads);
  sh.threads = threads;
  sh.iters = std::max<uint64_t>(1, ops / threads);
  sh.remote = remote;
  sh.slots = slots;
  sh.seed = seed;
  std::vector<Hist> hist(static_cast<size_t>(threads) * kOps);
  timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  std::vector<std::thread> th;
  th.reserve(threads);
  for (int t = 0; t < threads; ++t) th.emplace_back(worker, std::ref(sh), t, &hist[t * kOps]);
  for (auto& t : th) t.join();
  clock_gettime(CLOCK_MONOTONIC, &b);
  if (g_kmem) kdestroy(g_cache);
  printf(
      "LATENCY api=%s threads=%d ops=%llu remote=%g tsc_hz=%.0f overhead_cycles=%llu "
      "seconds=%.3f\n",
      api, threads, static_cast<unsigned long long>(sh.iters * threads), threads > 1 ? remote : 0.0,
      hz, static_cast<unsigned long long>(g_overhead),
      (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
  for (int op = 0; op < kOps; ++op) {
    Hist total;
    for (int t = 0; t < threads; ++t) total.merge(hist[t * kOps + op]);
    printf("HIST op=%s count=%llu max=%llu buckets=", kOpName[op],
           static_cast<unsigned long long>(total.count),
           static_cast<unsigned long long>(total.max));
    bool first = true;
    for (int i = 0; i < kBuckets; ++i) {
      if (!total.b[i]) continue;
      printf("%s%d:%llu", first ? "" : ",", i, static_cast<unsigned long long>(total.b[i]));
      first = false;
    }
    printf("\n");
  }
  return 0;
}
