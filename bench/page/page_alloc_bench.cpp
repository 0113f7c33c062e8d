// Page allocator micro-benchmark: per-CPU page lists (pcp) vs the zone-only path vs the
// operating system (mmap/munmap) vs glibc's aligned_alloc, single- and two-threaded.
//
//   bench_page_page_alloc_bench [--rounds N] [--iters N] [--quick] [--verbose]
//
// Every variant runs on its own private uslub::page_allocator (nr_nodes = 1; no_pcp = true for
// "zone only").  Each round runs every variant once, interleaved, so slow drifts of the machine
// (frequency, neighbours on the host) hit all variants alike; the tables print the median of
// the rounds.  A first unmeasured round warms everything up (growth, page faults, pcp lists).
//
// Workloads (per thread; with 2 threads each thread runs its own loop on the same allocator,
// pinned to its own CPU, so the zone-only path contends on zone->lock):
//   pair    p = alloc(order 0); free(p)                     ns per pair
//   bulk64  alloc_pages_bulk(0, 64) + free_pages_bulk(64)   ns per page (one alloc + one free)
//   single64 64 x alloc(order 0), then 64 x free            ns per page
//   mixed   a ring of 32 live blocks; each step frees the oldest and allocates a block of a
//           random order 0-3 in its place                  ns per step (one alloc + one free)
//
// Both allocators start with a fragmented zone (free blocks of every order 0-3 whose buddies
// are allocated), so the zone-only path finds a block of the right order without splitting
// and cannot merge on free: it measures zone->lock plus the list work, not a 10-level split
// and merge of a lone 4 MiB block (that case is shown separately as "zone only, unfragmented").
//
// Contention figures come from page_allocator::stats() deltas over the measured (steady-state)
// rounds.  An "operation" is one alloc or one free of one block (a bulk call of 64 pages
// counts 128 operations for alloc+free).
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "page/page_alloc.hpp"

using namespace uslub;

namespace {

// ---- options ------------------------------------------------------------------------------

struct options {
  int rounds = 7;
  long iters = 1000000;  // pairs per thread per measurement (order-0 pair workload)
  bool verbose = false;
};
options g_opt;

[[noreturn]] void usage(const char* argv0) {
  fprintf(stderr,
          "usage: %s [--rounds N] [--iters N] [--quick] [--verbose]\n"
          "  --rounds N  measured rounds per variant (median reported; default 7, min 1)\n"
          "  --iters N   order-0 pairs per thread per measurement (default 1000000)\n"
          "  --quick     --rounds 5 --iters 200000\n"
          "  --verbose   print every round's figures\n",
          argv0);
  exit(2);
}

void parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> long {
      if (i + 1 >= argc) usage(argv[0]);
      char* end;
      long v = strtol(argv[++i], &end, 10);
      if (*end || v <= 0) usage(argv[0]);
      return v;
    };
    if (a == "--rounds")
      g_opt.rounds = static_cast<int>(next());
    else if (a == "--iters")
      g_opt.iters = next();
    else if (a == "--quick")
      g_opt.rounds = 5, g_opt.iters = 200000;
    else if (a == "--verbose")
      g_opt.verbose = true;
    else
      usage(argv[0]);
  }
}

// ---- threads ------------------------------------------------------------------------------

unsigned g_ncpu = 1;

void pin_self(unsigned cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu % g_ncpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

inline std::uint64_t now_ns() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::steady_clock::now().time_since_epoch())
                                        .count());
}

// Runs body(tid) on nthreads threads pinned to CPUs 0..n-1 that start together; returns the
// mean of the threads' elapsed times in ns.
template <class Body>
double run_threads(int nthreads, Body body, bool one_cpu = false) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::uint64_t> elapsed(static_cast<std::size_t>(nthreads));
  std::vector<std::thread> ts;
  for (int t = 0; t < nthreads; ++t) {
    ts.emplace_back([&, t] {
      pin_self(one_cpu ? 0 : static_cast<unsigned>(t));
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) {
      }
      std::uint64_t t0 = now_ns();
      body(t);
      elapsed[static_cast<std::size_t>(t)] = now_ns() - t0;
    });
  }
  while (ready.load() < nthreads) {
  }
  go.store(true, std::memory_order_release);
  for (auto& th : ts) th.join();
  double sum = 0;
  for (auto e : elapsed) sum += static_cast<double>(e);
  return sum / nthreads;
}

// Keeps the compiler from dropping a loop whose results are not used.
inline void escape(void* p) {
  asm volatile("" : : "g"(p) : "memory");
}

// ---- the allocators under test -------------------------------------------------------------

// glibc's own aligned_alloc/free, looked up past this executable so that a malloc linked in
// from uslub_static (or anything else in the executable) cannot stand in for them.
using aligned_alloc_fn = void* (*)(std::size_t, std::size_t);
using free_fn = void (*)(void*);
aligned_alloc_fn g_libc_aligned_alloc;
free_fn g_libc_free;
std::string g_libc_from;

void find_libc() {
  g_libc_aligned_alloc = reinterpret_cast<aligned_alloc_fn>(dlsym(RTLD_NEXT, "aligned_alloc"));
  g_libc_free = reinterpret_cast<free_fn>(dlsym(RTLD_NEXT, "free"));
  if (!g_libc_aligned_alloc || !g_libc_free) {
    g_libc_aligned_alloc = aligned_alloc;
    g_libc_free = free;
  }
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(g_libc_aligned_alloc), &info) && info.dli_fname)
    g_libc_from = info.dli_fname;
  else
    g_libc_from = "?";
}

page_allocator* make_allocator(bool no_pcp) {
  page_alloc_config c = page_alloc_config::from_env();
  c.nr_nodes = 1;
  c.no_pcp = no_pcp;
  // No decay during the measurement: reclaim passes (madvise) would land in random variants.
  c.decay_ms = 3600 * 1000;
  auto* pa = new page_allocator();
  if (int err = pa->init(c)) {
    fprintf(stderr, "page_allocator::init: %s\n", strerror(err));
    exit(1);
  }
  return pa;
}

// Leaves free blocks of orders 0-3 whose buddies stay allocated (never freed: the allocators
// live until exit), then empties the pcp lists so every test starts from the zone.
void fragment(page_allocator* pa) {
  for (unsigned o = 0; o < NR_PCP_ORDERS; ++o) {
    std::vector<page*> v;
    for (int i = 0; i < 256; ++i) v.push_back(pa->alloc_pages(o));
    std::sort(v.begin(), v.end());
    for (std::size_t i = 0; i < v.size(); ++i) {
      // Free one block of each buddy pair.
      std::size_t pfn = page_pfn(v[i]);
      if (((pfn >> o) & 1) == 0) pa->free_pages(v[i], o);
    }
  }
  pa->drain_all_pages();
}

// ---- workloads ----------------------------------------------------------------------------

constexpr int kBulk = 64;
constexpr int kRing = 32;

long pair_iters() {
  return g_opt.iters;
}
long mmap_iters() {
  return std::max(1000L, g_opt.iters / 32);
}
long glibc_iters() {
  return std::max(1000L, g_opt.iters / 4);
}
long bulk_rounds() {
  return std::max(10L, g_opt.iters / kBulk);
}
long mixed_iters() {
  return std::max(1000L, g_opt.iters / 2);
}

// Random orders 0-3 for the mixed workload, the same sequence for every variant.
std::vector<std::uint8_t> g_orders[2];

double pair_uslub(page_allocator* pa, int threads, bool one_cpu = false) {
  long n = pair_iters();
  return run_threads(
             threads,
             [&](int) {
               for (long i = 0; i < n; ++i) {
                 page* p = pa->alloc_pages(0);
                 escape(p);
                 pa->free_pages(p, 0);
               }
             },
             one_cpu) /
         static_cast<double>(n);
}

double pair_mmap(int threads) {
  long n = mmap_iters();
  return run_threads(threads,
                     [&](int) {
                       for (long i = 0; i < n; ++i) {
                         void* p = mmap(nullptr, PAGE_SIZE, PROT_READ | PROT_WRITE,
                                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                         if (p == MAP_FAILED) abort();
                         escape(p);
                         munmap(p, PAGE_SIZE);
                       }
                     }) /
         static_cast<double>(n);
}

double pair_glibc(int threads) {
  long n = glibc_iters();
  return run_threads(threads,
                     [&](int) {
                       for (long i = 0; i < n; ++i) {
                         void* p = g_libc_aligned_alloc(PAGE_SIZE, PAGE_SIZE);
                         escape(p);
                         g_libc_free(p);
                       }
                     }) /
         static_cast<double>(n);
}

double bulk_uslub(page_allocator* pa, int threads) {
  long n = bulk_rounds();
  return run_threads(threads,
                     [&](int) {
                       page* v[kBulk];
                       for (long i = 0; i < n; ++i) {
                         int got = pa->alloc_pages_bulk(0, kBulk, v);
                         if (got != kBulk) abort();
                         escape(v);
                         pa->free_pages_bulk(v, kBulk, 0);
                       }
                     }) /
         static_cast<double>(n * kBulk);
}

double singles_uslub(page_allocator* pa, int threads) {
  long n = bulk_rounds();
  return run_threads(threads,
                     [&](int) {
                       page* v[kBulk];
                       for (long i = 0; i < n; ++i) {
                         for (auto& p : v) p = pa->alloc_pages(0);
                         escape(v);
                         for (page* p : v) pa->free_pages(p, 0);
                       }
                     }) /
         static_cast<double>(n * kBulk);
}

double mixed_uslub(page_allocator* pa, int threads) {
  long n = mixed_iters();
  return run_threads(threads,
                     [&](int t) {
                       const auto& ord = g_orders[t & 1];
                       const std::size_t mask = ord.size() - 1;
                       page* ring[kRing];
                       std::uint8_t ring_order[kRing];
                       for (int k = 0; k < kRing; ++k) {
                         ring_order[k] = ord[static_cast<std::size_t>(k)];
                         ring[k] = pa->alloc_pages(ring_order[k]);
                       }
                       for (long i = 0; i < n; ++i) {
                         int k = static_cast<int>(i % kRing);
                         pa->free_pages(ring[k], ring_order[k]);
                         unsigned o = ord[static_cast<std::size_t>(i + kRing) & mask];
                         ring[k] = pa->alloc_pages(o);
                         ring_order[k] = static_cast<std::uint8_t>(o);
                         escape(ring[k]);
                       }
                       for (int k = 0; k < kRing; ++k) pa->free_pages(ring[k], ring_order[k]);
                     }) /
         static_cast<double>(n);
}

double mixed_glibc(int threads) {
  long n = mixed_iters() / 4;
  return run_threads(threads,
                     [&](int t) {
                       const auto& ord = g_orders[t & 1];
                       const std::size_t mask = ord.size() - 1;
                       void* ring[kRing];
                       for (int k = 0; k < kRing; ++k)
                         ring[k] = g_libc_aligned_alloc(
                             PAGE_SIZE, PAGE_SIZE << ord[static_cast<std::size_t>(k)]);
                       for (long i = 0; i < n; ++i) {
                         int k = static_cast<int>(i % kRing);
                         g_libc_free(ring[k]);
                         unsigned o = ord[static_cast<std::size_t>(i + kRing) & mask];
                         ring[k] = g_libc_aligned_alloc(PAGE_SIZE, PAGE_SIZE << o);
                         escape(ring[k]);
                       }
                       for (int k = 0; k < kRing; ++k) g_libc_free(ring[k]);
                     }) /
         static_cast<double>(n);
}

// ---- measurement bookkeeping ----------------------------------------------------------------

struct contention {
  double ops = 0;
  std::uint64_t zone_lock = 0, zone_contended = 0, trylock_fail = 0, refill = 0, drain = 0;
};

struct variant {
  std::string key;
  std::vector<double> ns;  // one per measured round
  page_allocator* pa = nullptr;
  contention c;
  double median() const {
    if (ns.empty()) return 0;
    std::vector<double> v = ns;
    std::sort(v.begin(), v.end());
    std::size_t m = v.size() / 2;
    return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
  }
};

std::deque<variant> g_variants;

// "<workload>.<variant>/<threads>"
std::string key(const char* what, int threads) {
  char buf[64];
  snprintf(buf, sizeof buf, "%s/%d", what, threads);
  return buf;
}

variant& var(const std::string& key) {
  for (auto& v : g_variants)
    if (v.key == key) return v;
  g_variants.push_back(variant{key, {}, nullptr, {}});
  return g_variants.back();
}

// Runs one measurement; with an allocator, also records its statistics delta.
template <class Fn>
void measure(bool record, const std::string& key, page_allocator* pa, double ops_per_unit,
             long units, int threads, Fn fn) {
  page_alloc_stats before{}, after{};
  if (pa) before = pa->stats();
  double ns = fn();
  if (pa) after = pa->stats();
  if (!record) return;
  variant& v = var(key);
  v.ns.push_back(ns);
  if (pa) {
    v.pa = pa;
    v.c.ops += ops_per_unit * static_cast<double>(units) * threads;
    // The second stats() call took zone->lock once itself.
    v.c.zone_lock += after.zone_lock_acquired - before.zone_lock_acquired - 1;
    v.c.zone_contended += after.zone_lock_contended - before.zone_lock_contended;
    v.c.trylock_fail += after.pcp_trylock_fail - before.pcp_trylock_fail;
    v.c.refill += after.pcp_alloc_refill - before.pcp_alloc_refill;
    v.c.drain += after.pcp_free_drain - before.pcp_free_drain;
  }
}

struct allocators {
  page_allocator* pcp;
  page_allocator* zone;
};

allocators g_pair, g_bulk, g_mixed;
page_allocator* g_unfragmented;

void one_round(bool record) {
  for (int threads : {1, 2}) {
    // Order-0 pairs, variants interleaved.
    measure(record, key("pair.pcp", threads), g_pair.pcp, 2, pair_iters(), threads,
            [&] { return pair_uslub(g_pair.pcp, threads); });
    measure(record, key("pair.zone", threads), g_pair.zone, 2, pair_iters(), threads,
            [&] { return pair_uslub(g_pair.zone, threads); });
    // Both threads on CPU 0 (one pcp): the trylock fallback when a holder is preempted.
    if (threads == 2)
      measure(record, key("pair.pcp_onecpu", threads), g_pair.pcp, 2, pair_iters(), threads,
              [&] { return pair_uslub(g_pair.pcp, threads, /*one_cpu=*/true); });
    measure(record, key("pair.mmap", threads), nullptr, 2, mmap_iters(), threads,
            [&] { return pair_mmap(threads); });
    measure(record, key("pair.glibc", threads), nullptr, 2, glibc_iters(), threads,
            [&] { return pair_glibc(threads); });
    measure(record, key("pair.zone_unfrag", threads), g_unfragmented, 2, pair_iters() / 4, threads,
            [&] {
              long n = pair_iters() / 4;
              return run_threads(threads,
                                 [&](int) {
                                   for (long i = 0; i < n; ++i) {
                                     page* p = g_unfragmented->alloc_pages(0);
                                     escape(p);
                                     g_unfragmented->free_pages(p, 0);
                                   }
                                 }) /
                     static_cast<double>(n);
            });
    // 64 pages: bulk vs singles.
    measure(record, key("bulk.pcp", threads), g_bulk.pcp, 2, bulk_rounds() * kBulk, threads,
            [&] { return bulk_uslub(g_bulk.pcp, threads); });
    measure(record, key("single.pcp", threads), g_bulk.pcp, 2, bulk_rounds() * kBulk, threads,
            [&] { return singles_uslub(g_bulk.pcp, threads); });
    measure(record, key("bulk.zone", threads), g_bulk.zone, 2, bulk_rounds() * kBulk, threads,
            [&] { return bulk_uslub(g_bulk.zone, threads); });
    measure(record, key("single.zone", threads), g_bulk.zone, 2, bulk_rounds() * kBulk, threads,
            [&] { return singles_uslub(g_bulk.zone, threads); });
    // Mixed orders.
    measure(record, key("mixed.pcp", threads), g_mixed.pcp, 2, mixed_iters(), threads,
            [&] { return mixed_uslub(g_mixed.pcp, threads); });
    measure(record, key("mixed.zone", threads), g_mixed.zone, 2, mixed_iters(), threads,
            [&] { return mixed_uslub(g_mixed.zone, threads); });
    measure(record, key("mixed.glibc", threads), nullptr, 2, mixed_iters() / 4, threads,
            [&] { return mixed_glibc(threads); });
  }
}

// ---- output -------------------------------------------------------------------------------

double med(const std::string& k) {
  return var(k).median();
}

void print_row_ratio(double num, double den) {
  if (den > 0)
    printf(" %.1fx |", num / den);
  else
    printf(" - |");
}

void print_contention(const char* workload, int threads, const char* name, const variant& v) {
  if (v.c.ops <= 0) return;
  double k = 1000.0 / v.c.ops;
  printf("| %s | %d | %s | %.2f | %.3f | %.4f | %.2f | %.2f |\n", workload, threads, name,
         v.c.zone_lock * k, v.c.zone_contended * k, v.c.trylock_fail * k, v.c.refill * k,
         v.c.drain * k);
}

void print_tables(double seconds) {
  printf("\n### Order-0 alloc+free pair (ns per pair, median of %d rounds)\n\n", g_opt.rounds);
  printf(
      "| threads | pcp | zone only | zone only, unfragmented | mmap+munmap 4 KiB | glibc "
      "aligned_alloc(4096) | zone only / pcp | glibc / pcp |\n");
  printf("|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (int th : {1, 2}) {
    double pcp = med(key("pair.pcp", th)), zone = med(key("pair.zone", th));
    double glibc = med(key("pair.glibc", th));
    printf("| %d | %.1f | %.1f | %.1f | %.0f | %.1f |", th, pcp, zone,
           med(key("pair.zone_unfrag", th)), med(key("pair.mmap", th)), glibc);
    print_row_ratio(zone, pcp);
    print_row_ratio(glibc, pcp);
    printf("\n");
  }

  printf(
      "\n### 64 order-0 pages: one bulk call each way vs 64 single calls (ns per page: one alloc + "
      "one free)\n\n");
  printf(
      "| threads | pcp bulk | pcp 64 singles | zone only bulk | zone only 64 singles | pcp singles "
      "/ bulk | zone only bulk / pcp bulk |\n");
  printf("|---:|---:|---:|---:|---:|---:|---:|\n");
  for (int th : {1, 2}) {
    double pb = med(key("bulk.pcp", th)), ps = med(key("single.pcp", th));
    double zb = med(key("bulk.zone", th)), zs = med(key("single.zone", th));
    printf("| %d | %.1f | %.1f | %.1f | %.1f |", th, pb, ps, zb, zs);
    print_row_ratio(ps, pb);
    print_row_ratio(zb, pb);
    printf("\n");
  }

  printf("\n### Mixed orders 0-3 (ring of %d live blocks per thread; ns per free+alloc step)\n\n",
         kRing);
  printf("| threads | pcp | zone only | glibc aligned_alloc | zone only / pcp | glibc / pcp |\n");
  printf("|---:|---:|---:|---:|---:|---:|\n");
  for (int th : {1, 2}) {
    double pcp = med(key("mixed.pcp", th)), zone = med(key("mixed.zone", th)),
           glibc = med(key("mixed.glibc", th));
    printf("| %d | %.1f | %.1f | %.1f |", th, pcp, zone, glibc);
    print_row_ratio(zone, pcp);
    print_row_ratio(glibc, pcp);
    printf("\n");
  }

  printf(
      "\n### Contention in steady state (page_allocator::stats() deltas over the measured rounds; "
      "per 1000 operations, an operation = one alloc or one free of one block)\n\n");
  printf(
      "| workload | threads | variant | zone->lock acquisitions | zone->lock contended | pcp "
      "trylock failures | pcp refills | pcp drains at high |\n");
  printf("|---|---:|---|---:|---:|---:|---:|---:|\n");
  struct row {
    const char* name;
    const char* prefix;
  };
  for (row r : {row{"order-0 pair", "pair"}, row{"bulk 64", "bulk"}, row{"64 singles", "single"},
                row{"mixed 0-3", "mixed"}}) {
    for (int th : {1, 2}) {
      for (const char* which : {"pcp", "zone"}) {
        variant& v = var(key((std::string(r.prefix) + "." + which).c_str(), th));
        print_contention(r.name, th, which[0] == 'p' ? "pcp" : "zone only", v);
      }
    }
  }
  print_contention("order-0 pair, both threads on CPU 0", 2, "pcp", var(key("pair.pcp_onecpu", 2)));
  printf(
      "\nWith both threads pinned to CPU 0 they share one pcp.  A thread preempted while holding\n"
      "pcp->lock (a few ns of each pair) keeps it for the other thread's whole time slice, and\n"
      "every try_lock of that thread fails and goes to the zone until the holder runs again:\n"
      "rare events, but each costs a slice of zone-path operations.  With one thread per CPU\n"
      "try_lock never fails here.\n");

  printf(
      "\nLocked instructions on the pcp fast path (hit, no refill/drain): 1 per alloc_pages (the\n"
      "xchg of local_trylock_t::try_lock), 1 per free_pages (same), so 2 per pair; the unlock is\n"
      "a release store (plain mov on x86-64) and the statistics counters are relaxed\n"
      "load+store.  Counted from the disassembly of page_allocator::alloc_pages and\n"
      "free_pages, where the hit paths are inlined (docs/page-allocator.md).  A zone-only pair\n"
      "pays 2 lock cmpxchg + 2 lock xadd (spinlock_t lock/unlock).\n");

  printf(
      "\nPer-thread time per pair; threads pinned to CPUs 0 and 1; pcp batch %d, high %d; "
      "aligned_alloc from %s; %d rounds, --iters %ld; total %.1f s.\n",
      g_pair.pcp->config().pcp_batch, g_pair.pcp->config().pcp_high, g_libc_from.c_str(),
      g_opt.rounds, g_opt.iters, seconds);
}

void print_verbose() {
  printf("\n### Every round (ns)\n\n");
  for (auto& v : g_variants) {
    printf("%-22s", v.key.c_str());
    for (double x : v.ns) printf(" %8.1f", x);
    printf("   median %.1f\n", v.median());
  }
}

}  // namespace

int main(int argc, char** argv) {
  parse(argc, argv);
  g_ncpu = std::max(1u, std::thread::hardware_concurrency());
  find_libc();
  std::mt19937 rng(20221106);
  for (auto& o : g_orders) {
    o.resize(1 << 14);
    for (auto& x : o) x = static_cast<std::uint8_t>(rng() % 4);
  }
  g_pair = {make_allocator(false), make_allocator(true)};
  g_bulk = {make_allocator(false), make_allocator(true)};
  g_mixed = {make_allocator(false), make_allocator(true)};
  for (allocators* a : {&g_pair, &g_bulk, &g_mixed}) {
    fragment(a->pcp);
    fragment(a->zone);
  }
  g_unfragmented = make_allocator(true);

  printf("## uslub page allocator benchmark\n\n");
  printf("CPUs: %u online.  Command: bench_page_page_alloc_bench --rounds %d --iters %ld\n", g_ncpu,
         g_opt.rounds, g_opt.iters);
  if (g_ncpu < 2) printf("Only one CPU: the two-thread rows share it.\n");
  fflush(stdout);

  std::uint64_t t0 = now_ns();
  one_round(false);  // warm-up
  for (int r = 0; r < g_opt.rounds; ++r) one_round(true);
  double seconds = static_cast<double>(now_ns() - t0) / 1e9;

  print_tables(seconds);
  if (g_opt.verbose) print_verbose();
  for (allocators* a : {&g_pair, &g_bulk, &g_mixed})
    for (page_allocator* pa : {a->pcp, a->zone})
      if (!pa->validate()) return 1;
  return 0;
}
