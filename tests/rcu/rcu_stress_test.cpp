// RCU under concurrency, threads > CPUs: readers inside read-side sections check that nothing
// they can reach is reused or unmapped under them.
//   - TypesafeByRcu: the classic lookup - under rcu_read_lock find an object in a table, take
//     its lock, re-check its identity - while writers free and reallocate objects and shrink
//     the cache (slabs leave it and their pages wait for a grace period) and another cache
//     churns pages.  The object's type marker must always be intact (memory never became
//     someone else's), and a changed identity must only ever be seen as "reused".
//   - KfreeRcu / Frag: objects published in a table are retired with kfree_rcu or
//     frag_free_defer; a reader that loaded a pointer finds the pattern written before
//     publication intact until it leaves its section.
//   - RcuBarrier: a thread's rcu_barrier must wait for its own kfree_rcu / frag_free_defer even
//     when another thread (another barrier, the monitor) detached the batch holding them and
//     has not queued it yet.
#include <uslub/rcu.h>
#include <uslub/slab.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "page/page_frag.hpp"
#include "rcu/rcu.hpp"
#include "test_support.hpp"

namespace uslub {
namespace {

constexpr std::uint64_t kMagic = 0x7e57ab1e5afe0001ull;

struct tobj {
  std::atomic<std::uint64_t> magic;  // set by the constructor, never changed
  std::mutex lock;
  std::atomic<long> key;  // identity; -1 while free
  long payload;           // == key * 3 whenever key != -1 (under lock)
};

void tobj_ctor(void* p) {
  auto* o = new (p) tobj;
  o->magic.store(kMagic);
  o->key.store(-1);
}

TEST(RcuStress, TypesafeByRcuLookupLockRecheck) {
  kmem_cache* s = kmem_cache_create("rcu-tsafe", sizeof(tobj), 0, SLAB_TYPESAFE_BY_RCU, &tobj_ctor);
  kmem_cache* churn = kmem_cache_create("rcu-churn", 512, 0, SLAB_NO_MERGE, nullptr);
  constexpr int kSlots = 256;
  std::atomic<tobj*> table[kSlots] = {};
  std::atomic<bool> stop{false};
  std::atomic<long> next_key{0}, hits{0}, reused{0}, not_ours{0}, torn{0};
  auto writer = [&](int seed) {
    unsigned r = static_cast<unsigned>(seed) * 2654435761u + 1;
    std::vector<void*> junk;
    while (!stop.load(std::memory_order_relaxed)) {
      r = r * 1103515245u + 12345u;
      int slot = static_cast<int>((r >> 8) % kSlots);
      auto* o = static_cast<tobj*>(kmem_cache_alloc(s, 0));
      // Slot i holds keys congruent to i: readers know what they look for.  Key and payload
      // change together under the lock: a reader holding a stale pointer to this memory may
      // take the lock at any moment, and an identity stored outside it (as this test did until
      // 2026-11-30) can show it a key of its slot next to the previous payload.
      long k = next_key.fetch_add(1) * kSlots + slot;
      {
        std::lock_guard<std::mutex> g(o->lock);
        o->payload = k * 3;
        o->key.store(k, std::memory_order_release);
      }
      tobj* old = table[slot].exchange(o, std::memory_order_acq_rel);
      if (old) {
        {
          std::lock_guard<std::mutex> g(old->lock);
          old->key.store(-1);
        }
        kmem_cache_free(s, old);  // reused at once: type-safe, not use-after-free
      }
      if ((r & 1023) == 0) kmem_cache_shrink(s);   // slabs go, pages wait for a grace period
      junk.push_back(kmem_cache_alloc(churn, 0));  // wants the pages back
      if (junk.size() > 64) {
        for (void* p : junk) kmem_cache_free(churn, p);
        junk.clear();
        kmem_cache_shrink(churn);
      }
    }
    for (void* p : junk) kmem_cache_free(churn, p);
  };
  auto reader = [&] {
    unsigned r = 12345;
    while (!stop.load(std::memory_order_relaxed)) {
      r = r * 1103515245u + 12345u;
      int slot = static_cast<int>((r >> 8) % kSlots);
      uslub_rcu_read_lock();
      tobj* o = table[slot].load(std::memory_order_acquire);
      if (o) {
        if (o->magic.load() != kMagic) not_ours.fetch_add(1);  // memory became someone else's
        std::lock_guard<std::mutex> g(o->lock);
        long k = o->key.load();
        if (k >= 0 && k % kSlots == slot && o->payload == k * 3)
          hits.fetch_add(1, std::memory_order_relaxed);
        else if (k >= 0 && o->payload != k * 3 && k % kSlots == slot)
          torn.fetch_add(1);  // an object under its lock must be whole
        else
          reused.fetch_add(1, std::memory_order_relaxed);  // freed/reused: the re-check says so
      }
      uslub_rcu_read_unlock();
    }
  };
  std::vector<std::thread> ts;
  for (int i = 0; i < 2; ++i) ts.emplace_back(writer, i);
  for (int i = 0; i < 6; ++i) ts.emplace_back(reader);
  std::this_thread::sleep_for(std::chrono::milliseconds(1500 * test::stress_scale()));
  stop = true;
  for (auto& t : ts) t.join();
  EXPECT_EQ(not_ours.load(), 0) << "a slab's pages were reused before a grace period ended";
  EXPECT_EQ(torn.load(), 0) << "key and payload disagree under the object's lock";
  EXPECT_GT(hits.load(), 0);
  for (auto& e : table)
    if (tobj* o = e.load()) kmem_cache_free(s, o);
  kmem_cache_destroy(s);
  kmem_cache_destroy(churn);
}

template <class Retire, class Alloc>
void publish_and_retire(Alloc alloc, Retire retire) {
  constexpr int kSlots = 128;
  std::atomic<std::uint64_t*> table[kSlots] = {};
  std::atomic<bool> stop{false};
  std::atomic<long> checks{0}, bad{0};
  auto writer = [&](int seed) {
    unsigned r = static_cast<unsigned>(seed) * 2654435761u + 7;
    while (!stop.load(std::memory_order_relaxed)) {
      r = r * 1103515245u + 12345u;
      auto* p = alloc();
      std::uint64_t v = (static_cast<std::uint64_t>(r) << 16) | 0xbeef;
      for (int i = 0; i < 8; ++i) __atomic_store_n(&p[i], v + i, __ATOMIC_RELAXED);
      std::uint64_t* old = table[(r >> 8) % kSlots].exchange(p, std::memory_order_acq_rel);
      if (old) retire(old);
    }
  };
  auto reader = [&] {
    unsigned r = 99;
    while (!stop.load(std::memory_order_relaxed)) {
      r = r * 1103515245u + 12345u;
      uslub_rcu_read_lock();
      if (std::uint64_t* p = table[(r >> 8) % kSlots].load(std::memory_order_acquire)) {
        std::uint64_t v0 = __atomic_load_n(&p[0], __ATOMIC_RELAXED);
        for (int k = 0; k < 50; ++k) {  // keep looking for a while: still ours
          for (int i = 0; i < 8; ++i)
            if (__atomic_load_n(&p[i], __ATOMIC_RELAXED) != v0 + static_cast<std::uint64_t>(i))
              bad.fetch_add(1);
        }
        checks.fetch_add(1, std::memory_order_relaxed);
      }
      uslub_rcu_read_unlock();
    }
  };
  std::vector<std::thread> ts;
  for (int i = 0; i < 2; ++i) ts.emplace_back(writer, i);
  for (int i = 0; i < 6; ++i) ts.emplace_back(reader);
  std::this_thread::sleep_for(std::chrono::milliseconds(1000 * test::stress_scale()));
  stop = true;
  for (auto& t : ts) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(checks.load(), 0);
  for (auto& e : table)
    if (std::uint64_t* p = e.load()) retire(p);
  uslub_rcu_barrier();
}

TEST(RcuStress, KfreeRcuNeverFreesUnderAReader) {
  publish_and_retire([] { return static_cast<std::uint64_t*>(kmalloc(64, 0)); },
                     [](std::uint64_t* p) { kvfree_rcu_mightsleep(p); });
}

TEST(RcuStress, DeferredFragmentsAreNeverReusedUnderAReader) {
  frag_pool* pool = frag_pool_create(16);
  publish_and_retire([&] { return static_cast<std::uint64_t*>(frag_alloc(pool)); },
                     [&](std::uint64_t* p) { frag_free_defer(pool, p); });
  EXPECT_EQ(pool->nr_pending.load(), 0);
  EXPECT_EQ(pool->nr_pages.load(), 0);
  EXPECT_TRUE(frag_pool_destroy(pool));
}

// Each thread has its own cache and its own pool, and every barrier flushes everyone's open
// batches: the batch holding a thread's object is often detached by another thread's barrier
// (or the monitor), which may not have queued it when the owner's barrier runs its hooks.
TEST(RcuStress, BarrierWaitsForBatchesOtherThreadsDetached) {
  const int threads = 4 * static_cast<int>(std::thread::hardware_concurrency() ?: 2);
  const int rounds = 150 * test::stress_scale();
  std::atomic<int> kfree_late{0}, frag_late{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      char name[32];
      std::snprintf(name, sizeof name, "rcu-barrier-%d", t);
      kmem_cache* s =
          kmem_cache_create(name, sizeof(uslub_rcu_head) + 8, 0, SLAB_NO_MERGE, nullptr);
      frag_pool* pool = frag_pool_create(8);
      ASSERT_TRUE(s && pool);
      for (int i = 0; i < rounds; ++i) {
        auto* h = static_cast<uslub_rcu_head*>(kmem_cache_alloc(s, 0));
        uslub_kfree_rcu_offset(h, 0);
        frag_free_defer(pool, frag_alloc(pool));
        uslub_rcu_barrier();
        if (pool->nr_pending.load() != 0) frag_late.fetch_add(1);
        kmem_cache_shrink(s);  // the freed object leaves the sheaves for its slab
        kmem_cache_info info;
        kmem_cache_get_info(s, &info);
        if (info.active_objs != 0) kfree_late.fetch_add(1);
      }
      EXPECT_TRUE(frag_pool_destroy(pool));
      kmem_cache_destroy(s);
    });
  for (auto& th : ts) th.join();
  EXPECT_EQ(kfree_late.load(), 0);
  EXPECT_EQ(frag_late.load(), 0);
}

}  // namespace
}  // namespace uslub
