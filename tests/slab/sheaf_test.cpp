// Sheaves: hits, refills and flushes through the barn, drain during traffic, resizing while in
// use, the locked fallback, alien frees on a fake two-node machine, and a signal storm with
// threads = 8 x CPUs that must never lose or duplicate an object; bulk allocation and free
// through the sheaves.
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <uslub/slab.h>

#include <cstring>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <unordered_set>
#include <vector>

#include "kmalloc/kmalloc.hpp"
#include "page/page_alloc.hpp"
#include "platform/rseq.hpp"
#include "slab/cache_alloc.hpp"
#include "slab/sheaf.hpp"
#include "slab/slab.hpp"
#include "test_support.hpp"

namespace uslub::test {

static kmem_cache* make(const char* name, size_t size, slab_flags_t extra = 0) {
  return kmem_cache_create(name, size, 0, SLAB_NO_MERGE | SLAB_STATS | SLAB_SHEAVES | extra,
                           nullptr);
}

// The end of a test that holds v: every object handed out once, all freed, the cache sound.
static void free_distinct_and_destroy(kmem_cache* s, const std::vector<void*>& v) {
  std::set<void*> u(v.begin(), v.end());
  EXPECT_EQ(u.size(), v.size()) << "an object was handed out twice";
  for (void* p : v) kmem_cache_free(s, p);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_destroy(s);
}

static kmem_cache_info info_of(kmem_cache* s) {
  kmem_cache_info in;
  kmem_cache_get_info(s, &in);
  return in;
}

TEST(Sheaf, CacheUsesSheavesAndRseqWhenAvailable) {
  kmem_cache* s = make("sheaf-basic", 64);
  auto in = info_of(s);
  EXPECT_EQ(in.sheaf_capacity, sheaf_default_capacity(64));
  const char* t = getenv("GLIBC_TUNABLES");
  bool rseq_off = t && strstr(t, "glibc.pthread.rseq=0");
  EXPECT_EQ(in.sheaves_rseq, 0) << "statistics: the locked path (the hot slot's cap stays 0)";
  kmem_cache_destroy(s);
  s = kmem_cache_create("sheaf-slot", 64, 0, SLAB_NO_MERGE | SLAB_SHEAVES, nullptr);
  EXPECT_EQ(info_of(s).sheaves_rseq != 0, USLUB_HAVE_RSEQ_ASM && !rseq_off);
  kmem_cache_destroy(s);
  kmem_cache* c = kmem_cache_create("sheaf-none", 64, 0, SLAB_NO_MERGE | SLAB_NO_SHEAVES, nullptr);
  EXPECT_EQ(info_of(c).sheaf_capacity, 0u);
  kmem_cache_destroy(c);
}

TEST(Sheaf, HitsAfterOneRefillAndFlushOnDrain) {
  kmem_cache* s = make("sheaf-hits", 64);
  unsigned cap = info_of(s).sheaf_capacity;
  std::vector<void*> v;
  for (unsigned i = 0; i < cap / 2; ++i) v.push_back(kmem_cache_alloc(s, 0));
  for (void* p : v) kmem_cache_free(s, p);
  v.clear();
  for (unsigned i = 0; i < cap / 2; ++i) v.push_back(kmem_cache_alloc(s, 0));
  auto in = info_of(s);
  EXPECT_GE(in.sheaf_stat[SHEAF_REFILL], 1u);
  EXPECT_GE(in.sheaf_stat[SHEAF_ALLOC_HIT], cap / 2);  // the second round came from the sheaf
  EXPECT_GE(in.sheaf_stat[SHEAF_FREE_HIT], cap / 2 - 1);
  for (void* p : v) kmem_cache_free(s, p);
  flush_all(s);
  in = info_of(s);
  EXPECT_GE(in.sheaf_stat[SHEAF_REMOTE_DRAIN], 1u);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  // After the drain every object is back in a slab: shrink can empty the cache.
  kmem_cache_shrink(s);
  report_capture cap_reports;
  kmem_cache_destroy(s);
  EXPECT_EQ(cap_reports.count(), 0u);
}

TEST(Sheaf, BarnTradesFullAndEmptySheaves) {
  kmem_cache* s = make("sheaf-barn", 128);
  unsigned cap = info_of(s).sheaf_capacity;
  std::vector<void*> v;
  for (unsigned i = 0; i < cap * 6; ++i) v.push_back(kmem_cache_alloc(s, 0));
  for (void* p : v) kmem_cache_free(s, p);  // fills main, spare, then the barn
  v.clear();
  for (unsigned i = 0; i < cap * 6; ++i) v.push_back(kmem_cache_alloc(s, 0));
  auto in = info_of(s);
  EXPECT_GT(in.sheaf_stat[BARN_PUT], 0u);
  EXPECT_GT(in.sheaf_stat[BARN_GET], 0u);
  EXPECT_GT(in.sheaf_stat[SHEAF_SWAP], 0u);
  free_distinct_and_destroy(s, v);
}

// A full main sheaf with no empty sheaf in the barn goes into the barn for a CPU that
// allocates (mm/slub.c's __pcs_replace_full_main), not through the slabs: a producer/consumer
// pair otherwise sends every object through the slab free lists (the refills of the
// allocating CPU take the barn's empty sheaves).  Before: one flush per sheaf freed.
TEST(Sheaf, AFullSheafWithNoEmptyOneInTheBarnIsParkedNotFlushed) {
  pin_to_this_cpu pin;
  kmem_cache* s = make("sheaf-park", 64);
  unsigned cap = info_of(s).sheaf_capacity;
  std::vector<void*> v;
  for (unsigned i = 0; i < cap * 6; ++i) v.push_back(kmem_cache_alloc(s, 0));
  kmem_cache_shrink(s);  // no sheaf anywhere: the barn has no empty sheaf to trade
  auto a = info_of(s);
  for (void* p : v) kmem_cache_free(s, p);
  auto b = info_of(s);
  EXPECT_EQ(b.sheaf_stat[SHEAF_FLUSH] - a.sheaf_stat[SHEAF_FLUSH], 0u)
      << "a full sheaf went through the slabs while the barn had room";
  EXPECT_GE(b.sheaf_stat[BARN_PUT] - a.sheaf_stat[BARN_PUT], 4u);
  EXPECT_EQ(b.sheaf_objs, cap * 6ul) << "every freed object waits in a sheaf";
  v.clear();
  for (unsigned i = 0; i < cap * 6; ++i) v.push_back(kmem_cache_alloc(s, 0));
  auto c = info_of(s);
  EXPECT_EQ(c.sheaf_stat[SHEAF_REFILL] - b.sheaf_stat[SHEAF_REFILL], 0u)
      << "the allocations took the parked sheaves";
  free_distinct_and_destroy(s, v);
}

// The barn's full list: a program that only frees keeps the base limit (its memory goes back
// to the slabs); once full sheaves are taken out of the barn, an overflow doubles the limit,
// and shrinking forgets it.
TEST(Sheaf, TheBarnLimitGrowsOnlyWhileFullSheavesAreTaken) {
  pin_to_this_cpu pin;
  kmem_cache* s = make("sheaf-barn-grow", 64);
  const unsigned cap = info_of(s).sheaf_capacity;
  const unsigned base = std::clamp(static_cast<unsigned>(kBarnBytes / (cap * 64ul)),
                                   kBarnMinSheaves, kBarnMaxSheaves);
  const unsigned n = cap * (base + base / 2);  // one and a half base limits of full sheaves
  std::vector<void*> v;
  auto alloc_all = [&] {
    for (unsigned i = 0; i < n; ++i) v.push_back(kmem_cache_alloc(s, 0));
  };
  auto free_all = [&] {
    for (void* p : v) kmem_cache_free(s, p);
    v.clear();
  };
  alloc_all();
  kmem_cache_shrink(s);
  free_all();  // nothing taken yet: the overflow goes to the slabs
  auto a = info_of(s);
  EXPECT_LE(a.sheaf_objs, (base + 2ul) * cap) << "the barn grew for a program that only frees";
  EXPECT_GT(a.sheaf_stat[SHEAF_FLUSH], 0u);
  alloc_all();  // takes the parked full sheaves (and refills the rest)
  auto b = info_of(s);
  EXPECT_GE(b.sheaf_stat[BARN_GET] - a.sheaf_stat[BARN_GET], base / 2);
  free_all();  // overflows with full sheaves taken since: the limit doubles
  auto c = info_of(s);
  EXPECT_EQ(c.sheaf_objs, std::uint64_t{n}) << "every object parked after the growth";
  EXPECT_EQ(c.sheaf_stat[SHEAF_FLUSH], b.sheaf_stat[SHEAF_FLUSH]);
  kmem_cache_shrink(s);  // forgets the limit
  alloc_all();
  kmem_cache_shrink(s);
  free_all();
  EXPECT_LE(info_of(s).sheaf_objs, (base + 2ul) * cap) << "shrinking kept the learnt limit";
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_destroy(s);
}

TEST(Sheaf, DoubleFreeOfAnObjectDeeperInTheSheafIsReportedAtTheSecondFree) {
  kmem_cache* s = make("sheaf-df2", 48);
  report_capture cap;
  void* a = kmem_cache_alloc(s, 0);
  void* b = kmem_cache_alloc(s, 0);
  void* c = kmem_cache_alloc(s, 0);
  kmem_cache_free(s, a);
  kmem_cache_free(s, b);
  kmem_cache_free(s, c);
  ASSERT_EQ(cap.count(), 0u);
  kmem_cache_free(s, a);  // not on top: the free key (sheaf.hpp) is in a's word
  ASSERT_EQ(cap.count(), 1u) << "reported by the second free itself, not later";
  EXPECT_EQ(cap.first_line(), "uslub: BUG sheaf-df2: Object already free");
  EXPECT_NE(cap.reports()[0].find("freed twice"), std::string::npos) << cap.reports()[0];
  // The second free was ignored: four allocations give four different objects.
  void* w = kmem_cache_alloc(s, 0);
  void* x = kmem_cache_alloc(s, 0);
  void* y = kmem_cache_alloc(s, 0);
  void* z = kmem_cache_alloc(s, 0);
  std::set<void*> got{w, x, y, z};
  EXPECT_EQ(got.size(), 4u) << "an object was handed out twice";
  EXPECT_EQ(cap.count(), 1u);
  for (void* p : got) kmem_cache_free(s, p);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_destroy(s);
}

TEST(Sheaf, AnIgnoredDoubleFreeLeavesTheSlabCountsRightAfterAFlush) {
  kmem_cache* s = make("sheaf-df3", 48);
  report_capture cap;
  void* a = kmem_cache_alloc(s, 0);
  void* b = kmem_cache_alloc(s, 0);
  kmem_cache_free(s, a);
  kmem_cache_free(s, b);
  kmem_cache_free(s, a);
  kmem_cache_shrink(s);  // flushes the sheaves: a goes back to its slab once
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG sheaf-df3: Object already free");
  EXPECT_EQ(kmem_cache_validate(s), 0) << "the slab's counts stayed right";
  kmem_cache_destroy(s);
}

// The fuzzer's second finding: a thread that moves to another CPU between the two frees (no
// "in a row" to see) - the key is in the object whichever CPU's sheaf holds it.
TEST(Sheaf, ADoubleFreeAcrossAMigrationIsReported) {
  if (platform::nr_cpu_ids() < 2) GTEST_SKIP() << "needs two CPUs";
  cpu_set_t old;
  ASSERT_EQ(sched_getaffinity(0, sizeof old, &old), 0);
  auto pin = [](int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof set, &set) == 0;
  };
  if (!pin(0) || !CPU_ISSET(1, &old)) GTEST_SKIP() << "cannot pin to CPUs 0 and 1";
  kmem_cache* s = make("sheaf-mig", 64);
  report_capture cap;
  void* keep = kmem_cache_alloc(s, 0);
  void* p = kmem_cache_alloc(s, 0);
  kmem_cache_free(s, p);  // into CPU 0's sheaf
  ASSERT_TRUE(pin(1));
  kmem_cache_free(s, p);  // on CPU 1: not in a row there
  EXPECT_EQ(cap.count(), 1u);
  kmem_cache_shrink(s);
  sched_setaffinity(0, sizeof old, &old);
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG sheaf-mig: Object already free");
  kmem_cache_free(s, keep);
  EXPECT_EQ(kmem_cache_validate(s), 0) << "the slab's counts stayed right";
  kmem_cache_destroy(s);
}

TEST(Sheaf, AWriteIntoAFreeObjectsKeyWordIsReportedByTheFlush) {
  kmem_cache* s = make("sheaf-uaf", 64);
  report_capture cap;
  auto* p = static_cast<std::uintptr_t*>(kmem_cache_alloc(s, 0));
  kmem_cache_free(s, p);
  *free_key_word(s, p) = 0x1234;  // use after free
  kmem_cache_shrink(s);           // the flush finds the word without its key
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG sheaf-uaf: Freepointer corrupt");
  EXPECT_EQ(kmem_cache_validate(s), 0) << "the object was dropped, not freed into the slab";
  kmem_cache_destroy(s);  // (reports the dropped object as remaining)
}

// Two frees of one object racing on two CPUs can both miss the key; the flush sees the copy
// that was handed out again (its word cleared by the allocation) and drops it.
TEST(Sheaf, ASecondCopyHandedOutMeanwhileIsDroppedByTheFlush) {
  pin_to_this_cpu pin;  // both copies and the allocation must meet in one CPU's sheaf
  kmem_cache* s = make("sheaf-race", 64);
  report_capture cap;
  void* keep = kmem_cache_alloc(s, 0);
  void* p = kmem_cache_alloc(s, 0);
  kmem_cache_free(s, p);
  *free_key_word(s, p) = 0;  // as if the other CPU's free had not seen the key yet
  kmem_cache_free(s, p);     // two copies in the sheaf now
  void* q = kmem_cache_alloc(s, 0);
  ASSERT_EQ(q, p);
  kmem_cache_shrink(s);  // the other copy's word is 0: allocated
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG sheaf-race: Object already free");
  kmem_cache_free(s, q);
  kmem_cache_free(s, keep);
  EXPECT_EQ(kmem_cache_validate(s), 0) << "the slab's counts stayed right";
  kmem_cache_destroy(s);
}

// Passive false sharing: objects smaller than a cache line, allocated one after the other,
// come from different lines (a thread handing them to other threads must not make those
// threads write one line); they still come from a few pages, walked line by line (a refill
// of up to 512 small objects takes them from a few slabs, one group of slots after the other).
TEST(Sheaf, ConsecutiveSmallObjectsComeFromDifferentCacheLines) {
  for (size_t size : {8ul, 16ul, 24ul, 32ul, 48ul}) {
    kmem_cache* s = make("sheaf-lines", size);
    std::vector<uintptr_t> v;
    for (int i = 0; i < 64; ++i) v.push_back(reinterpret_cast<uintptr_t>(kmem_cache_alloc(s, 0)));
    for (size_t i = 1; i < v.size(); ++i) {
      EXPECT_NE(v[i] >> 6, v[i - 1] >> 6) << "size " << size << ", allocation " << i;
    }
    std::set<uintptr_t> pages;
    for (uintptr_t p : v) pages.insert(p >> 12);
    EXPECT_LE(pages.size(), 8u) << "size " << size << ": 64 allocations from a few pages";
    for (uintptr_t p : v) kmem_cache_free(s, reinterpret_cast<void*>(p));
    EXPECT_EQ(kmem_cache_validate(s), 0);
    kmem_cache_destroy(s);
  }
}

TEST(Sheaf, ProgramDataInTheKeyWordIsNotADoubleFree) {
  kmem_cache* s = make("sheaf-key", 64);
  report_capture cap;
  void* other = kmem_cache_alloc(s, 0);
  kmem_cache_free(s, other);  // other's key is in its word now
  auto* other_key = free_key_word(s, other);
  // Values a program might leave there: zeros, ones, its own address, another object's key.
  for (int kind = 0; kind < 4; ++kind) {
    auto* p = static_cast<std::uintptr_t*>(kmem_cache_alloc(s, 0));
    std::uintptr_t own = reinterpret_cast<std::uintptr_t>(p);
    *free_key_word(s, p) = kind == 0   ? 0
                           : kind == 1 ? ~std::uintptr_t{0}
                           : kind == 2 ? own
                                       : *other_key;
    kmem_cache_free(s, p);
    EXPECT_EQ(cap.count(), 0u);
    void* q = kmem_cache_alloc(s, 0);
    EXPECT_EQ(q, p);  // freed for real, and handed out again
    kmem_cache_free(s, q);
  }
  EXPECT_EQ(cap.count(), 0u);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_destroy(s);
}

TEST(Sheaf, DoubleFreeOfTheLastObjectIsReported) {
  kmem_cache* s = make("sheaf-df", 32);
  report_capture cap;
  void* p = kmem_cache_alloc(s, 0);
  kmem_cache_free(s, p);
  kmem_cache_free(s, p);
  EXPECT_EQ(cap.first_line(), "uslub: BUG sheaf-df: Object already free");
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_destroy(s);
}

TEST(Sheaf, ResizeWhileInUse) {
  kmem_cache* s = make("sheaf-resize", 48);
  std::atomic<bool> stop{false};
  std::atomic<long> dup{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&] {
      std::vector<void*> v;
      std::unordered_set<void*> live;
      while (!stop.load()) {
        for (int i = 0; i < 100; ++i) {
          void* p = kmem_cache_alloc(s, 0);
          if (!live.insert(p).second) dup++;
          v.push_back(p);
        }
        for (void* p : v) {
          live.erase(p);
          kmem_cache_free(s, p);
        }
        v.clear();
      }
    });
  for (unsigned cap : {8u, 100u, 3u, 64u, 1u, 256u, 32u}) {
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    EXPECT_EQ(kmem_cache_set_sheaf_capacity(s, cap), 0);
    EXPECT_EQ(info_of(s).sheaf_capacity, cap);
  }
  stop = true;
  for (auto& t : ts) t.join();
  EXPECT_EQ(dup.load(), 0);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  EXPECT_EQ(kmem_cache_set_sheaf_capacity(s, 0), -EINVAL);
  report_capture cap;
  kmem_cache_destroy(s);
  EXPECT_EQ(cap.count(), 0u);
}

// Drains from another CPU against the fast paths: with statistics (the slot lock word, CAS)
// and without (the hot slot on rseq: cap 0 taken by CAS and the membarrier fence).
static void drain_during_traffic(bool stats) {
  kmem_cache* s =
      stats ? make("sheaf-drain", 256)
            : kmem_cache_create("sheaf-drain-slot", 256, 0, SLAB_NO_MERGE | SLAB_SHEAVES, nullptr);
  if (!stats && USLUB_HAVE_RSEQ_ASM && platform::rseq_sequences_usable()) {
    EXPECT_TRUE(s->sheaf_rseq) << "no statistics: the hot slot on rseq";
  }
  std::atomic<bool> stop{false};
  std::atomic<long> dup{0};
  std::mutex mu;
  std::unordered_set<void*> global;
  std::vector<std::thread> ts;
  for (int t = 0; t < 6; ++t)
    ts.emplace_back([&] {
      std::vector<void*> v;
      while (!stop.load()) {
        for (int i = 0; i < 64; ++i) v.push_back(kmem_cache_alloc(s, 0));
        {
          std::lock_guard<std::mutex> g(mu);
          for (void* p : v)
            if (!global.insert(p).second) dup++;
          for (void* p : v) global.erase(p);
        }
        for (void* p : v) kmem_cache_free(s, p);
        v.clear();
      }
    });
  for (int i = 0; i < 200; ++i) {
    flush_all(s);
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  stop = true;
  for (auto& t : ts) t.join();
  EXPECT_EQ(dup.load(), 0);
  if (stats) {
    EXPECT_GT(info_of(s).sheaf_stat[SHEAF_REMOTE_DRAIN], 100u);
  }
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_shrink(s);
  report_capture cap;
  kmem_cache_destroy(s);
  EXPECT_EQ(cap.count(), 0u);
}

TEST(Sheaf, DrainDuringTrafficLosesNothing) {
  drain_during_traffic(true);
}
TEST(Sheaf, DrainDuringTrafficLosesNothingOnTheHotSlot) {
  drain_during_traffic(false);
}

TEST(Sheaf, ConcurrentDrainAllPiggyback) {
  kmem_cache* s = make("sheaf-piggy", 64);
  for (int i = 0; i < 100; ++i) kmem_cache_free(s, kmem_cache_alloc(s, 0));
  // Eight callers that all read the drain generation while one drain is in progress (the
  // flush_mutex held here stands for it): the first to get the mutex drains, the others see
  // the generation moved and return without draining.
  constexpr int kCallers = 8;
  std::uint64_t gen0 = s->sheaf_drain_gen.load();
  auto drains0 = info_of(s).sheaf_stat[SHEAF_REMOTE_DRAIN];
  flush_mutex_lock();
  std::vector<std::thread> ts;
  for (int t = 0; t < kCallers; ++t) ts.emplace_back([&] { sheaf_drain_all(s); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // all read gen0 and wait
  flush_mutex_unlock();
  for (auto& t : ts) t.join();
  std::uint64_t drains_run = s->sheaf_drain_gen.load() - gen0;
  EXPECT_EQ(drains_run, 1u) << "callers that waited behind one drain must piggyback on it";
  EXPECT_EQ(info_of(s).sheaf_stat[SHEAF_REMOTE_DRAIN] - drains0, drains_run * s->nr_cpus);
  // A caller after that drain finished drains again by itself.
  sheaf_drain_all(s);
  EXPECT_EQ(s->sheaf_drain_gen.load() - gen0, drains_run + 1);
  // Racing callers with nothing held leave a consistent cache.
  for (int t = 0; t < kCallers; ++t)
    ts[static_cast<size_t>(t)] = std::thread([&] {
      for (int i = 0; i < 200; ++i) sheaf_drain_all(s);
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_destroy(s);
}

TEST(Sheaf, AlienFreesGoBackToTheirNodeOnAFakeTwoNodeMachine) {
  // A private page allocator with two zones; CPU 0 is node 0, CPU 1 node 1.
  if (platform::nr_cpu_ids() < 2) GTEST_SKIP();
  int map[2] = {0, 1};
  platform::set_fake_topology(2, map, 2);
  failing_vm vm;
  page_allocator pa;
  page_alloc_config cfg;
  cfg.vm = &vm;
  cfg.nr_nodes = 2;
  ASSERT_EQ(pa.init(cfg), 0);
  kmem_cache* s = kmem_cache_create_on(&pa, "sheaf-alien", 64, 0,
                                       SLAB_NO_MERGE | SLAB_STATS | SLAB_SHEAVES, nullptr);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->nr_nodes, 2u);
  std::vector<void*> on_node1(200);
  std::thread a([&] {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(1, &set);
    ASSERT_EQ(sched_setaffinity(0, sizeof set, &set), 0);
    for (auto& p : on_node1) p = kmem_cache_alloc_node(s, 0, 1);
  });
  a.join();
  for (void* p : on_node1) EXPECT_EQ(slab_nid(virt_to_slab(p)), 1);
  std::thread b([&] {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(0, &set);
    ASSERT_EQ(sched_setaffinity(0, sizeof set, &set), 0);
    for (void* p : on_node1) kmem_cache_free(s, p);  // node-1 objects freed on node 0
  });
  b.join();
  auto in = info_of(s);
  EXPECT_EQ(in.sheaf_stat[SHEAF_ALIEN_FREE], 200u);
  // None of them sits in a node-0 sheaf: after draining the alien buffers node 1's slabs
  // hold every object again.
  flush_all(s);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_shrink(s);
  EXPECT_LE(s->node[1].nr_slabs.load(), static_cast<long>(s->min_partial));
  report_capture cap;
  kmem_cache_destroy(s);
  EXPECT_EQ(cap.count(), 0u);
  platform::set_fake_topology(0, nullptr, 0);
}

static void on_usr1(int) {}

// Threads (8 per CPU, so preempted inside sequences) allocate and free under a storm of
// signals (each one aborts the sequence it lands in).  kind 0: a cache with statistics (the
// locked path), 1: without (the hot slot on rseq), 2: kmalloc (the class slot, keyed push).
static void signal_storm(int kind) {
  kmem_cache* s = kind == 0   ? make("sheaf-storm", 40)
                  : kind == 1 ? kmem_cache_create("sheaf-storm-slot", 40, 0,
                                                  SLAB_NO_MERGE | SLAB_SHEAVES, nullptr)
                              : nullptr;
  auto alloc = [&] { return s ? kmem_cache_alloc(s, 0) : kmalloc(40, 0); };
  auto release = [&](void* p) { s ? kmem_cache_free(s, p) : kfree(p); };
  std::uint64_t aborts = platform::rseq_abort_count();
  report_capture during;  // no false report (a push aborted after its key store)
  // kmalloc: every other free on the checked path, so that a push restarted after its key
  // store meets the check on its next try (a false "Object already free" if the key stayed).
  std::int32_t saved_rate = g_double_free_rate;
  if (kind == 2) kmalloc_set_double_free_rate(2);
  const int nthreads = 8 * static_cast<int>(platform::nr_cpu_ids());
  struct sigaction sa {};
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, nullptr);
  std::vector<pthread_t> ids(nthreads);
  std::atomic<int> ready{0}, done{0};
  std::atomic<bool> stop{false};
  std::atomic<long> dup{0}, bad{0};
  std::vector<std::thread> ts;
  const int iters = 1000000 * stress_scale();
  for (int t = 0; t < nthreads; ++t)
    ts.emplace_back([&, t] {
      ids[t] = pthread_self();
      ready++;
      while (ready.load() < nthreads + 1) std::this_thread::yield();  // the storm is on
      std::vector<uint64_t*> mine;
      std::mt19937 rng(t);
      for (int i = 0; i < iters; ++i) {
        if (mine.size() < 40 && (rng() & 1)) {
          auto* p = static_cast<uint64_t*>(alloc());
          if (p[1] == 0xfeedfacecafebeefull) dup++;  // still marked as someone's live object
          p[1] = 0xfeedfacecafebeefull;              // (word 0 is kmalloc's free key)
          mine.push_back(p);
        } else if (!mine.empty()) {
          uint64_t* p = mine.back();
          mine.pop_back();
          if (p[1] != 0xfeedfacecafebeefull) bad++;
          p[1] = 0;
          release(p);
        }
      }
      for (auto* p : mine) {
        p[1] = 0;
        release(p);
      }
      done++;
      while (!stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    });
  std::thread storm([&] {
    while (ready.load() < nthreads) std::this_thread::yield();
    ready++;
    while (done.load() < nthreads) {
      for (int t = 0; t < nthreads; ++t) pthread_kill(ids[t], SIGUSR1);
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  });
  storm.join();
  stop = true;
  for (auto& t : ts) t.join();
  EXPECT_EQ(dup.load(), 0);
  EXPECT_EQ(bad.load(), 0);
  if (kind > 0 && USLUB_HAVE_RSEQ_ASM && platform::rseq_sequences_usable()) {
    EXPECT_GT(platform::rseq_abort_count(), aborts) << "the storm aborted sequences";
  }
  kmalloc_set_double_free_rate(saved_rate);
  EXPECT_EQ(during.count(), 0u) << (during.count() ? during.reports()[0] : "");
  if (!s) {
    kmem_cache* k = kmalloc_slab(40);
    EXPECT_EQ(kmem_cache_validate(k), 0);
    return;
  }
  EXPECT_EQ(kmem_cache_validate(s), 0);
  auto in = info_of(s);
  EXPECT_EQ(in.active_objs, 0u) << "validate flushed every sheaf: no object may be missing";
  kmem_cache_shrink(s);
  report_capture cap;
  kmem_cache_destroy(s);
  EXPECT_EQ(cap.count(), 0u) << (cap.count() ? cap.reports()[0] : "");
}

TEST(SheafStorm, SignalsAndPreemptionNeverLoseOrDuplicate) {
  signal_storm(0);
}
TEST(SheafStorm, SignalsAndPreemptionNeverLoseOrDuplicateOnTheHotSlot) {
  signal_storm(1);
}
TEST(SheafStorm, SignalsAndPreemptionNeverLoseOrDuplicateOnKmallocsClassSlot) {
  signal_storm(2);
}

}  // namespace uslub::test

namespace uslub::test {
TEST(Sheaf, CpuOfflineDrainsThatCpuOnly) {
  if (platform::nr_cpu_ids() < 2) GTEST_SKIP();
  kmem_cache* s = make("sheaf-offline", 64);
  std::thread t([&] {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(1, &set);
    ASSERT_EQ(sched_setaffinity(0, sizeof set, &set), 0);
    std::vector<void*> v;
    for (int i = 0; i < 20; ++i) v.push_back(kmem_cache_alloc(s, 0));
    for (void* p : v) kmem_cache_free(s, p);  // parked in CPU 1's sheaf
  });
  t.join();
  EXPECT_GT(s->cpu_sheaves[1].main->size, 0u);
  uslub_cpu_offline(1);
  EXPECT_EQ(s->cpu_sheaves[1].main->size, 0u);
  EXPECT_EQ(s->cpu_sheaves[1].spare, nullptr);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_destroy(s);
}
// ---- bulk: kmem_cache_alloc_bulk / kmem_cache_free_bulk on a sheaf cache, served by the
// current CPU's sheaves first (the kernel's alloc_from_pcs_bulk / free_to_pcs_bulk), the SLUB
// core for the rest; every object checked as kmem_cache_free checks it; all or nothing.

// USLUB_DOUBLE_FREE=0 (g_free_key_default, read at start-up): caches made meanwhile free
// without writing the object (no key) when it goes into a sheaf, on the inline path and the
// counting one alike, and their flush has no key to check; the same free with the key on writes it
// (the control).
TEST(Sheaf, WithTheFreeKeyOffAFreeLeavesTheObjectAsItWas) {
  for (slab_flags_t stats : {slab_flags_t{0}, SLAB_STATS}) {
    for (bool key : {false, true}) {
      g_free_key_default = key;
      kmem_cache* s =
          kmem_cache_create("sheaf-nokey", 64, 0, SLAB_NO_MERGE | SLAB_SHEAVES | stats, nullptr);
      g_free_key_default = true;
      pin_to_this_cpu pin;
      report_capture cap;
      void* keep = kmem_cache_alloc(s, 0);
      void* warm[4];  // this CPU's main sheaf gets room (the first free installs an empty one)
      for (void*& w : warm) w = kmem_cache_alloc(s, 0);
      for (void* w : warm) kmem_cache_free(s, w);
      auto* p = static_cast<unsigned char*>(kmem_cache_alloc(s, 0));
      memset(p, 0x5a, 64);
      kmem_cache_free(s, p);
      unsigned changed = 0;
      for (unsigned i = 0; i < 64; ++i) changed += p[i] != 0x5a;
      if (key)
        EXPECT_GT(changed, 0u) << "the key was stored";
      else
        EXPECT_EQ(changed, 0u) << "stats " << stats;
      kmem_cache_shrink(s);  // the flush takes it back to its slab
      EXPECT_EQ(cap.count(), 0u);
      kmem_cache_free(s, keep);
      EXPECT_EQ(kmem_cache_validate(s), 0);
      kmem_cache_destroy(s);
    }
  }
}

TEST(SheafBulk, AllocTakesTheSheafsObjectsAndFreePutsThemBack) {
  pin_to_this_cpu pin;
  kmem_cache* s = make("sheaf-bulk", 64);
  report_capture cap;
  std::vector<void*> v(16);
  for (auto& p : v) p = kmem_cache_alloc(s, 0);
  for (void* p : v) kmem_cache_free(s, p);  // on top of this CPU's main sheaf
  const std::set<void*> freed(v.begin(), v.end());
  auto before = info_of(s);
  std::vector<void*> b(16);
  ASSERT_EQ(kmem_cache_alloc_bulk(s, 0, b.size(), b.data()), 16);
  EXPECT_EQ(std::set<void*>(b.begin(), b.end()), freed) << "the sheaf's top objects";
  auto mid = info_of(s);
  EXPECT_EQ(mid.sheaf_stat[SHEAF_ALLOC_HIT] - before.sheaf_stat[SHEAF_ALLOC_HIT], 16u);
  EXPECT_EQ(mid.stat[ALLOC_FASTPATH] + mid.stat[ALLOC_SLOWPATH],
            before.stat[ALLOC_FASTPATH] + before.stat[ALLOC_SLOWPATH])
      << "no object came from the slabs";
  kmem_cache_free_bulk(s, b.size(), b.data());
  auto after = info_of(s);
  EXPECT_EQ(after.sheaf_stat[SHEAF_FREE_HIT] - mid.sheaf_stat[SHEAF_FREE_HIT], 16u);
  // Back in the sheaf: sixteen single allocations hand out the same objects again, and their
  // frees are no double frees (the bulk allocation cleared the free keys, the bulk free set them).
  for (auto& p : v) p = kmem_cache_alloc(s, 0);
  EXPECT_EQ(std::set<void*>(v.begin(), v.end()), freed);
  for (void* p : v) kmem_cache_free(s, p);
  EXPECT_EQ(cap.count(), 0u) << cap.first_line();
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_destroy(s);
}

TEST(SheafBulk, ADoubleFreeThroughTheBulkFreeIsReportedAndNotHandedOutTwice) {
  kmem_cache* s = make("sheaf-bulk-df", 64);
  report_capture cap;
  void* a = kmem_cache_alloc(s, 0);
  void* b = kmem_cache_alloc(s, 0);
  kmem_cache_free(s, a);
  kmem_cache_free(s, b);
  void* again[2] = {a, nullptr};  // nullptr entries are skipped, as kmem_cache_free skips NULL
  kmem_cache_free_bulk(s, 2, again);
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG sheaf-bulk-df: Object already free");
  std::vector<void*> got(3);
  ASSERT_EQ(kmem_cache_alloc_bulk(s, 0, got.size(), got.data()), 3);
  EXPECT_EQ(std::set<void*>(got.begin(), got.end()).size(), 3u) << "an object handed out twice";
  kmem_cache_free_bulk(s, got.size(), got.data());
  EXPECT_EQ(cap.count(), 1u);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_destroy(s);
}

TEST(SheafBulk, ABadPointerInABulkFreeIsReportedAndTheRestFreed) {
  kmem_cache* s = make("sheaf-bulk-bad", 64);
  report_capture cap;
  std::vector<void*> v(8);
  ASSERT_EQ(kmem_cache_alloc_bulk(s, 0, v.size(), v.data()), 8);
  void* inside = static_cast<char*>(v[3]) + 8;
  std::vector<void*> f = v;
  f.push_back(inside);
  kmem_cache_free_bulk(s, f.size(), f.data());
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG sheaf-bulk-bad: Invalid pointer");
  kmem_cache_shrink(s);
  EXPECT_EQ(info_of(s).active_objs, 0u) << "the eight good objects went back";
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_destroy(s);
}

TEST(SheafBulk, MoreThanTheSheafHoldsGoesToAndComesFromTheSlabs) {
  kmem_cache* s = make("sheaf-bulk-big", 128);
  report_capture cap;
  const unsigned cap_objs = info_of(s).sheaf_capacity;
  std::vector<void*> v(cap_objs * 5);
  ASSERT_EQ(kmem_cache_alloc_bulk(s, __GFP_ZERO, v.size(), v.data()), static_cast<int>(v.size()));
  EXPECT_EQ(std::set<void*>(v.begin(), v.end()).size(), v.size());
  for (void* p : v) {
    for (unsigned i = 0; i < 128; ++i) ASSERT_EQ(static_cast<unsigned char*>(p)[i], 0);
    memset(p, 0xa5, 128);  // the next __GFP_ZERO round must zero sheaf objects too
  }
  kmem_cache_free_bulk(s, v.size(), v.data());  // fills the sheaf, the rest to the slabs
  ASSERT_EQ(kmem_cache_alloc_bulk(s, __GFP_ZERO, v.size(), v.data()), static_cast<int>(v.size()));
  for (void* p : v)
    for (unsigned i = 0; i < 128; ++i) ASSERT_EQ(static_cast<unsigned char*>(p)[i], 0) << p;
  kmem_cache_free_bulk(s, v.size(), v.data());
  EXPECT_EQ(kmem_cache_validate(s), 0);
  flush_all(s);
  kmem_cache_shrink(s);
  EXPECT_EQ(info_of(s).active_objs, 0u) << "every object is back in its slab";
  EXPECT_EQ(cap.count(), 0u) << cap.first_line();
  kmem_cache_destroy(s);
}

TEST(SheafBulk, AFailedBulkAllocationKeepsNothing) {
  pin_to_this_cpu pin;
  failing_vm vm;
  page_allocator pa;
  page_alloc_config cfg;
  cfg.vm = &vm;
  cfg.nr_nodes = 1;
  cfg.memory_limit = MAX_ORDER_BYTES + (1 << 20);  // one 4 MiB block
  ASSERT_EQ(pa.init(cfg), 0);
  kmem_cache* s = kmem_cache_create_on(&pa, "sheaf-bulk-oom", 1024, 0,
                                       SLAB_NO_MERGE | SLAB_STATS | SLAB_SHEAVES, nullptr);
  ASSERT_NE(s, nullptr);
  std::vector<void*> v(8);
  for (auto& p : v) p = kmem_cache_alloc(s, 0);
  for (void* p : v) kmem_cache_free(s, p);  // in the sheaf now
  std::vector<void*> big(8000);             // 8 MiB: more than the limit
  errno = 0;
  EXPECT_EQ(kmem_cache_alloc_bulk(s, 0, big.size(), big.data()), 0);
  EXPECT_EQ(errno, ENOMEM);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  // Nothing was kept: once the sheaves are drained every slab is empty again.
  flush_all(s);
  EXPECT_EQ(info_of(s).active_objs, 0u) << "a failed bulk allocation kept objects";
  std::vector<void*> again(8);
  ASSERT_EQ(kmem_cache_alloc_bulk(s, 0, again.size(), again.data()), 8);
  kmem_cache_free_bulk(s, again.size(), again.data());
  report_capture cap;
  EXPECT_EQ(kmem_cache_validate(s), 0);
  flush_all(s);
  kmem_cache_shrink(s);
  EXPECT_EQ(info_of(s).active_objs, 0u);
  kmem_cache_destroy(s);
  EXPECT_EQ(cap.count(), 0u) << cap.first_line();
}

}  // namespace uslub::test
