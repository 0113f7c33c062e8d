// The production lock-free paths (rseq sheaves, the per-CPU slab's tid + cmpxchg16b, kmalloc
// over both) under what ThreadSanitizer cannot run them with: TSan builds take the locked
// paths (USLUB_TSAN, docs/sync.md), so these paths are proven here, in the optimised build,
// with threads = 4 x CPUs (preemption inside the sequences), a signal storm (rseq aborts at
// any instruction) and forced migration (sched_setaffinity moving threads between CPUs while
// they allocate).  Every thread marks the objects it holds with its id in a shared atomic
// table (one 16-bit owner per 8 bytes of address space, mapped lazily); taking an object whose
// entry is not free, or freeing one whose entry is not the thread's, is a second owner: a
// failure.  Objects also travel between threads (remote frees).  Each object carries its
// owner's id, checked before it is freed: a write by the allocator into a live object fails.
//
// Default: about 2 s per test.  Long form: USLUB_HANDOUT_SECONDS=N (e.g. 600 for a soak), or
// a higher USLUB_STRESS_SCALE build.
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <uslub/slab.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "base/report.hpp"
#include "kmalloc/kmalloc.hpp"
#include "test_support.hpp"

namespace uslub::test {
namespace {

constexpr std::uint16_t kFree = 0, kTransit = 0xffff;

// Owner of every 8-byte granule of the address space, one lazily mapped 256 MiB array per GiB
// of address space that objects come from.
class owner_table {
 public:
  ~owner_table() {
    for (auto& c : chunks_)
      if (void* t = c.table.load()) munmap(t, kChunkBytes);
  }
  std::atomic<std::uint16_t>& at(const void* p) {
    auto a = reinterpret_cast<std::uintptr_t>(p);
    std::uintptr_t key = (a >> 30) + 1;
    for (;;) {
      for (auto& c : chunks_) {
        std::uintptr_t k = c.key.load(std::memory_order_acquire);
        if (k == key) return c.table.load(std::memory_order_acquire)[(a & ((1ul << 30) - 1)) >> 3];
        if (k == 0) break;
      }
      add(key);
    }
  }

 private:
  static constexpr std::size_t kChunkBytes = (std::size_t{1} << 27) * 2;  // 2^27 granules
  struct chunk {
    std::atomic<std::uintptr_t> key{0};
    std::atomic<std::atomic<std::uint16_t>*> table{nullptr};
  };
  void add(std::uintptr_t key) {
    std::lock_guard<std::mutex> g(mu_);
    for (auto& c : chunks_) {
      if (c.key.load() == key) return;
      if (c.key.load() != 0) continue;
      void* t = mmap(nullptr, kChunkBytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (t == MAP_FAILED) abort();
      c.table.store(static_cast<std::atomic<std::uint16_t>*>(t), std::memory_order_release);
      c.key.store(key, std::memory_order_release);
      return;
    }
    abort();  // more than 64 GiB of address space in use: not this test
  }
  std::mutex mu_;
  chunk chunks_[64];
};

struct shared_state {
  owner_table owners;
  std::atomic<long> second_owner{0}, wrong_free{0}, overwritten{0}, ops{0};
  std::atomic<bool> stop{false};
  std::vector<std::atomic<void*>> mailbox;  // one object in transit per slot
  std::vector<std::atomic<pid_t>> tids;
  explicit shared_state(unsigned threads) : mailbox(threads * 4), tids(threads) {}
};

// One allocator under test: allocate and free objects of `size` bytes (size >= 8).
struct allocator_ops {
  std::string name;
  void* (*alloc)(void* ctx, std::size_t size);
  void (*free)(void* ctx, void* p);
  void* ctx;
  std::size_t min_size, max_size;
};

std::atomic<long> g_signals{0};
void on_usr1(int) {
  g_signals.fetch_add(1, std::memory_order_relaxed);
}

double test_seconds() {
  if (const char* e = getenv("USLUB_HANDOUT_SECONDS")) return atof(e);
  return 2.0 * stress_scale();
}

// The id word: relaxed atomics, so that the checker's own cross-thread accesses (and the
// deliberate second owner of the checker test) are no data race; a real one stays visible.
std::uint64_t load_id(const void* p) {
  return __atomic_load_n(static_cast<const std::uint64_t*>(p), __ATOMIC_RELAXED);
}
void store_id(void* p, std::uint64_t v) {
  __atomic_store_n(static_cast<std::uint64_t*>(p), v, __ATOMIC_RELAXED);
}

struct held {
  void* p;
  std::size_t size;
};

void take(shared_state& st, void* p, std::uint16_t me, std::uint16_t expect) {
  std::uint16_t old = st.owners.at(p).exchange(me, std::memory_order_acq_rel);
  if (old != expect) st.second_owner.fetch_add(1);
}

void worker(shared_state& st, const allocator_ops& ops, unsigned id, unsigned nthreads) {
  st.tids[id].store(static_cast<pid_t>(syscall(SYS_gettid)));
  auto me = static_cast<std::uint16_t>(id + 1);
  std::mt19937_64 rng(id * 7919 + 1);
  std::vector<held> mine;
  mine.reserve(512);
  auto release = [&](const held& h) {
    if (load_id(h.p) != (0x5eedull << 48 | me)) st.overwritten.fetch_add(1);
    std::uint16_t old = st.owners.at(h.p).exchange(kFree, std::memory_order_acq_rel);
    if (old != me) st.wrong_free.fetch_add(1);
    ops.free(ops.ctx, h.p);
  };
  while (!st.stop.load(std::memory_order_relaxed)) {
    unsigned burst = 1 + static_cast<unsigned>(rng() % 64);
    for (unsigned i = 0; i < burst; ++i) {
      std::size_t size = ops.min_size + rng() % (ops.max_size - ops.min_size + 1);
      void* p = ops.alloc(ops.ctx, size);
      if (!p) continue;
      take(st, p, me, kFree);
      store_id(p, 0x5eedull << 48 | me);
      mine.push_back({p, size});
    }
    // Hand some to other threads (their free is a remote free) and adopt what others sent.
    for (unsigned k = 0; k < 4 && !mine.empty(); ++k) {
      auto& slot = st.mailbox[rng() % st.mailbox.size()];
      void* expected = nullptr;
      held h = mine.back();
      if (st.owners.at(h.p).exchange(kTransit, std::memory_order_acq_rel) != me)
        st.second_owner.fetch_add(1);
      store_id(h.p, 0x5eedull << 48 | kTransit);
      if (slot.compare_exchange_strong(expected, h.p)) {
        mine.pop_back();
      } else {  // slot busy: keep it
        st.owners.at(h.p).store(me, std::memory_order_release);
        store_id(h.p, 0x5eedull << 48 | me);
      }
    }
    for (unsigned k = 0; k < 4; ++k) {
      auto& slot = st.mailbox[rng() % st.mailbox.size()];
      if (void* p = slot.exchange(nullptr, std::memory_order_acq_rel)) {
        if (load_id(p) != (0x5eedull << 48 | kTransit)) st.overwritten.fetch_add(1);
        take(st, p, me, kTransit);
        store_id(p, 0x5eedull << 48 | me);
        mine.push_back({p, ops.min_size});
      }
    }
    // Free in random order, keeping up to a few hundred objects live.
    std::size_t keep = rng() % 256;
    while (mine.size() > keep) {
      std::size_t j = rng() % mine.size();
      release(mine[j]);
      mine[j] = mine.back();
      mine.pop_back();
    }
    st.ops.fetch_add(burst, std::memory_order_relaxed);
  }
  for (auto& h : mine) release(h);
  (void)nthreads;
}

struct storm_result {
  long ops, signals, migrations;
  long second_owner, wrong_free, overwritten;
};

// Runs the workers for `seconds` with the signal storm and the migrations.
storm_result run_storm(const allocator_ops& ops, double seconds = test_seconds()) {
  unsigned cpus = std::thread::hardware_concurrency();
  if (!cpus) cpus = 1;
  unsigned nthreads = 4 * cpus < 8 ? 8 : 4 * cpus;
  shared_state st(nthreads);
  struct sigaction sa {};
  sa.sa_handler = &on_usr1;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  struct sigaction old;
  sigaction(SIGUSR1, &sa, &old);
  std::vector<std::thread> ts;
  for (unsigned i = 0; i < nthreads; ++i) ts.emplace_back([&, i] { worker(st, ops, i, nthreads); });
  long migrations = 0;
  long signals_before = g_signals.load();
  std::thread storm([&] {  // signals to random workers, 16 every ~50 us
    std::mt19937 rng(42);
    while (!st.stop.load(std::memory_order_relaxed)) {
      for (int k = 0; k < 16; ++k)
        if (pid_t tid = st.tids[rng() % nthreads].load())
          syscall(SYS_tgkill, getpid(), tid, SIGUSR1);
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  });
  std::thread mover([&] {  // pins a random worker to a random CPU, then frees it again
    std::mt19937 rng(7);
    cpu_set_t all;
    CPU_ZERO(&all);
    for (unsigned c = 0; c < cpus; ++c) CPU_SET(c, &all);
    while (!st.stop.load(std::memory_order_relaxed)) {
      pid_t tid = st.tids[rng() % nthreads].load();
      if (tid) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(rng() % cpus, &one);
        if (sched_setaffinity(tid, sizeof one, &one) == 0) ++migrations;
        std::this_thread::sleep_for(std::chrono::microseconds(300));
        sched_setaffinity(tid, sizeof all, &all);
      }
    }
  });
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  st.stop = true;
  storm.join();
  mover.join();
  for (auto& t : ts) t.join();
  for (auto& slot : st.mailbox)  // objects still in transit
    if (void* p = slot.load()) {
      take(st, p, 1, kTransit);
      st.owners.at(p).store(kFree);
      ops.free(ops.ctx, p);
    }
  sigaction(SIGUSR1, &old, nullptr);
  return {st.ops.load(),        g_signals.load() - signals_before,
          migrations,           st.second_owner.load(),
          st.wrong_free.load(), st.overwritten.load()};
}

void expect_clean(const char* what, const storm_result& r) {
  printf("%s: %ld objects, %ld signals, %ld forced migrations\n", what, r.ops, r.signals,
         r.migrations);
  EXPECT_EQ(r.second_owner, 0) << what << ": an object handed out twice";
  EXPECT_EQ(r.wrong_free, 0) << what << ": an object changed owner while held";
  EXPECT_EQ(r.overwritten, 0) << what << ": a live object was written by uslub";
  EXPECT_GT(r.ops, 10000) << what;
}

kmem_cache* make_cache(const char* name, std::size_t size, slab_flags_t flags) {
  kmem_cache* s = kmem_cache_create(name, size, 0, flags | SLAB_NO_MERGE, nullptr);
  EXPECT_NE(s, nullptr);
  return s;
}

void* cache_alloc_op(void* ctx, std::size_t) {
  return kmem_cache_alloc(static_cast<kmem_cache*>(ctx), 0);
}
void cache_free_op(void* ctx, void* p) {
  kmem_cache_free(static_cast<kmem_cache*>(ctx), p);
}

TEST(HandoutStress, SheafCacheRseqPathsNeverHandAnObjectOutTwice) {
  unsigned long bugs = bug_count();
  kmem_cache* s = make_cache("handout-sheaf", 64, 0);
  kmem_cache_info info{};
  kmem_cache_get_info(s, &info);
  if (!info.sheaves_rseq)
    printf("NOTE: rseq is not usable here: the sheaves' locked fallback is what runs\n");
  storm_result r = run_storm({"sheaf cache", &cache_alloc_op, &cache_free_op, s, 64, 64});
  expect_clean("sheaf cache", r);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  EXPECT_EQ(bug_count(), bugs) << "uslub reported a bug";
  kmem_cache_destroy(s);
}

TEST(HandoutStress, PerCpuSlabCmpxchgPathsNeverHandAnObjectOutTwice) {
  unsigned long bugs = bug_count();
  kmem_cache* s = make_cache("handout-cpuslab", 96, SLAB_NO_SHEAVES);
  storm_result r = run_storm({"per-CPU slab cache", &cache_alloc_op, &cache_free_op, s, 96, 96});
  expect_clean("per-CPU slab cache", r);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  EXPECT_EQ(bug_count(), bugs) << "uslub reported a bug";
  kmem_cache_destroy(s);
}

TEST(HandoutStress, KmallocClassesNeverHandAnObjectOutTwice) {
  unsigned long bugs = bug_count();
  storm_result r = run_storm({"kmalloc 8..2048", [](void*, std::size_t n) { return kmalloc(n, 0); },
                              [](void*, void* p) { kfree(p); }, nullptr, 8, 2048});
  expect_clean("kmalloc 8..2048", r);
  EXPECT_EQ(bug_count(), bugs) << "uslub reported a bug";
}

// Producer/consumer: half the threads (threads = 4 x CPUs, at least 8) allocate batches and
// hand them to the other half, which free them: every free is a remote free, and the freeing
// CPUs' full sheaves reach the allocating CPUs through the barn (sheaf.hpp) or the slabs when
// it overflows.  The owner table catches an object handed out twice; the cache's counts after
// a shrink catch an object lost on the way (it would stay in use); the objects carry their
// producer's id, checked by the consumer.
void producer_consumer(const char* what, void* (*alloc)(void*, std::size_t),
                       void (*release)(void*, void*), void* ctx, std::size_t min_size,
                       std::size_t max_size, long* allocated, long* freed) {
  unsigned cpus = std::thread::hardware_concurrency();
  if (!cpus) cpus = 1;
  const unsigned nthreads = 4 * cpus < 8 ? 8 : 4 * cpus, producers = nthreads / 2;
  constexpr std::size_t kBatch = 256, kMaxQueued = 64;
  owner_table owners;
  std::mutex mu;
  std::condition_variable not_empty, not_full;
  std::vector<std::vector<void*>> queue;
  std::atomic<bool> stop{false};
  std::atomic<long> n_alloc{0}, n_free{0}, second_owner{0}, wrong_free{0}, overwritten{0};
  auto consume = [&](std::vector<void*>& batch, std::uint16_t me) {
    for (void* p : batch) {
      std::uint64_t id = load_id(p);
      if ((id >> 48) != 0x5eed || (id & 0xffff) == 0 || (id & 0xffff) > producers)
        overwritten.fetch_add(1);
      std::uint16_t old = owners.at(p).exchange(kFree, std::memory_order_acq_rel);
      if (old != (id & 0xffff)) wrong_free.fetch_add(1);
      release(ctx, p);
      n_free.fetch_add(1, std::memory_order_relaxed);
    }
    (void)me;
  };
  std::vector<std::thread> ts;
  for (unsigned t = 0; t < nthreads; ++t)
    ts.emplace_back([&, t] {
      auto me = static_cast<std::uint16_t>(t + 1);
      std::mt19937_64 rng(t * 31 + 7);
      if (t < producers) {
        while (!stop.load(std::memory_order_relaxed)) {
          std::vector<void*> batch;
          batch.reserve(kBatch);
          for (std::size_t i = 0; i < kBatch; ++i) {
            void* p = alloc(ctx, min_size + rng() % (max_size - min_size + 1));
            if (!p) continue;
            if (owners.at(p).exchange(me, std::memory_order_acq_rel) != kFree)
              second_owner.fetch_add(1);
            store_id(p, 0x5eedull << 48 | me);
            batch.push_back(p);
            n_alloc.fetch_add(1, std::memory_order_relaxed);
          }
          std::unique_lock<std::mutex> g(mu);
          not_full.wait(g, [&] { return queue.size() < kMaxQueued || stop.load(); });
          queue.push_back(std::move(batch));
          not_empty.notify_one();
        }
      } else {
        for (;;) {
          std::vector<void*> batch;
          {
            std::unique_lock<std::mutex> g(mu);
            not_empty.wait(g, [&] { return !queue.empty() || stop.load(); });
            if (queue.empty()) break;
            batch = std::move(queue.back());
            queue.pop_back();
            not_full.notify_one();
          }
          consume(batch, me);
        }
      }
    });
  std::this_thread::sleep_for(std::chrono::duration<double>(test_seconds()));
  {
    std::lock_guard<std::mutex> g(mu);
    stop = true;
  }
  not_empty.notify_all();
  not_full.notify_all();
  for (auto& t : ts) t.join();
  for (auto& batch : queue) consume(batch, 0);  // what the producers queued last
  printf("%s: %ld objects through %u producers and %u consumers\n", what, n_alloc.load(), producers,
         nthreads - producers);
  EXPECT_EQ(second_owner.load(), 0) << what << ": an object handed out twice";
  EXPECT_EQ(wrong_free.load(), 0) << what << ": an object changed owner in transit";
  EXPECT_EQ(overwritten.load(), 0) << what << ": a live object was written by uslub";
  EXPECT_GT(n_alloc.load(), 10000) << what;
  *allocated = n_alloc.load();
  *freed = n_free.load();
}

TEST(HandoutStress, ProducerConsumerRemoteFreesLoseAndDuplicateNothing) {
  unsigned long bugs = bug_count();
  kmem_cache* s = make_cache("handout-remote", 64, 0);
  long allocated = 0, freed = 0;
  producer_consumer("kmem_cache 64 remote frees", &cache_alloc_op, &cache_free_op, s, 64, 64,
                    &allocated, &freed);
  EXPECT_EQ(allocated, freed);
  kmem_cache_shrink(s);  // sheaves and barn back to the slabs
  kmem_cache_info info{};
  kmem_cache_get_info(s, &info);
  EXPECT_EQ(info.active_objs, 0ul) << "objects lost on the way stay in use";
  EXPECT_EQ(info.sheaf_objs, 0ul);
  EXPECT_EQ(kmem_cache_validate(s), 0);
  kmem_cache_destroy(s);
  producer_consumer(
      "kmalloc 8..1024 remote frees", [](void*, std::size_t n) { return kmalloc(n, 0); },
      [](void*, void* p) { kfree(p); }, nullptr, 8, 1024, &allocated, &freed);
  EXPECT_EQ(allocated, freed);
  EXPECT_EQ(bug_count(), bugs) << "uslub reported a bug";
}

// The checker itself: an "allocator" that hands one object out twice in a row every 50 000
// allocations (a static object, so that uslub never sees its double free) must be caught.
struct faulty {
  kmem_cache* s;
  std::atomic<long> n{0};
  alignas(64) std::uint64_t shared_obj[8];
};
TEST(HandoutStress, TheCheckerCatchesADeliberateSecondHandout) {
  faulty f;
  f.s = make_cache("handout-faulty", 64, 0);
  storm_result r = run_storm({"faulty",
                              [](void* ctx, std::size_t) -> void* {
                                auto* fa = static_cast<faulty*>(ctx);
                                if (fa->n.fetch_add(1) % 50000 < 2) return fa->shared_obj;
                                return kmem_cache_alloc(fa->s, 0);
                              },
                              [](void* ctx, void* p) {
                                auto* fa = static_cast<faulty*>(ctx);
                                if (p != fa->shared_obj) kmem_cache_free(fa->s, p);
                              },
                              &f, 64, 64},
                             0.5);
  printf("faulty: %ld objects, %ld second owners, %ld wrong frees, %ld overwritten\n", r.ops,
         r.second_owner, r.wrong_free, r.overwritten);
  EXPECT_GT(r.second_owner + r.wrong_free + r.overwritten, 0)
      << "the owner table missed a second owner";
  EXPECT_EQ(kmem_cache_validate(f.s), 0);
  kmem_cache_destroy(f.s);
}

}  // namespace
}  // namespace uslub::test
