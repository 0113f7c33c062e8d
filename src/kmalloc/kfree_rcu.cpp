// kfree_rcu batching (the kernel's kfree_rcu_cpu / kvfree_rcu_bulk_data): objects waiting for a
// grace period are collected per CPU in page-sized arrays; a full array (or one older than
// kKfreeRcuDelayMs, found by RCU's monitor thread through our monitor hook) is handed to
// call_rcu as one callback, which frees its objects with the bulk free path, grouped by cache.
//
// Locking: krc->lock (a spinlock_t per CPU slot, class "kfree_rcu_cpu->lock") protects the
// slot's open batch.  Taken with no other uslub lock held; inside it only the page allocator is
// called (which never calls back), never liburcu: a full batch is detached under the lock and
// queued after it is dropped (counted in transit meanwhile, rcu_detach_batch, so that a
// concurrent rcu_barrier waits for it).  Fork: RCU's prepare handler (after its gate is closed)
// takes every krc->lock in slot order, parent and child release them.  The in-flight count is
// waited on with a futex (g_batches_wake), with no lock held.
//
// Memory bound: at most one open batch per CPU slot plus the batches in flight; when more than
// kKfreeRcuMaxBatches are in flight a producer waits until the callbacks bring them back under
// the limit, unless it is inside a read section or an RCU callback (waiting there could wait
// for itself): those go on, so the bound holds for producers outside read sections.
//
// Fallbacks when no page can be had for a batch: kfree_rcu uses the object's own rcu_head
// (call_rcu per object, never sleeps; counted in g_pending until its callback has freed it, so
// that kvfree_rcu_barrier waits for it as for a batched one).  The headless form waits for a grace
// period (synchronize_rcu) and frees at once; inside a read section or a callback it cannot wait,
// so the object is leaked, with a one-time report ("kfree_rcu: Headless object leaked").
#include <pthread.h>
#include <sched.h>
#include <unistd.h>
#include <uslub/rcu.h>

#include <atomic>
#include <cstring>

#include "base/report.hpp"
#include "kmalloc/kmalloc.hpp"
#include "platform/platform.hpp"
#include "rcu/rcu.hpp"

namespace uslub {
namespace {

constexpr unsigned kKfreeRcuDelayMs = 5;
constexpr unsigned kMaxSlots = 64;

struct kfree_rcu_batch {
  rcu_head rh;
  unsigned n;
  std::uint64_t opened_ms;
  void* ptrs[(PAGE_SIZE - sizeof(rcu_head) - 16) / sizeof(void*)];
};
static_assert(sizeof(kfree_rcu_batch) <= PAGE_SIZE);
constexpr unsigned kBatch = sizeof(kfree_rcu_batch::ptrs) / sizeof(void*);

constinit lock_class_key krc_lock_key{"kfree_rcu_cpu->lock"};

struct alignas(kDestructiveLine) kfree_rcu_cpu {
  spinlock_t lock{&krc_lock_key};
  kfree_rcu_batch* cur = nullptr;  // lock
};

kfree_rcu_cpu g_krc[kMaxSlots];
std::atomic<long> g_pending{0}, g_peak{0}, g_batches{0}, g_peak_batches{0};
std::atomic<std::uint32_t> g_batches_wake{0};  // bumped when g_batches drops to the limit
std::atomic<int> g_hook{0};
std::atomic<bool> g_leak_reported{false};
std::atomic<bool> g_fail_batches{false};  // tests

void raise_peak(std::atomic<long>& peak, long v) {
  for (long p = peak.load(std::memory_order_relaxed);
       v > p && !peak.compare_exchange_weak(p, v, std::memory_order_relaxed);) {
  }
}

kfree_rcu_cpu* this_krc() {
  return &g_krc[platform::current_cpu() % kMaxSlots];
}

// kfree_bulk: consecutive objects of one cache go to kmem_cache_free_bulk together.
void kfree_bulk(unsigned n, void** p) {
  unsigned i = 0;
  while (i < n) {
    page* slab = virt_to_slab(p[i]);
    if (!slab) {
      kfree(p[i++]);
      continue;
    }
    auto* s = static_cast<kmem_cache*>(slab->slab_cache);
    unsigned j = i + 1;
    while (j < n) {
      page* sj = virt_to_slab(p[j]);
      if (!sj || sj->slab_cache != s) break;
      ++j;
    }
    kmem_cache_free_bulk(s, j - i, p + i);
    i = j;
  }
}

void free_batch(rcu_head* rh) {
  auto* b = reinterpret_cast<kfree_rcu_batch*>(rh);
  kfree_bulk(b->n, b->ptrs);
  // Release: kvfree_rcu_barrier (and so kmem_cache_destroy) may return on seeing 0 once this
  // batch no longer touches its caches.
  g_pending.fetch_sub(b->n, std::memory_order_release);
  global_page_allocator().free_pages_addr(b, 0);
  if (g_batches.fetch_sub(1, std::memory_order_release) - 1 <= kKfreeRcuMaxBatches) {
    g_batches_wake.fetch_add(1, std::memory_order_release);
    platform::futex_wake(&g_batches_wake, INT32_MAX);
  }
}

// Queues a batch detached under its krc->lock (detach, or kfree_rcu_queue's full batch).
void queue_batch(kfree_rcu_batch* b) {
  raise_peak(g_peak_batches, g_batches.fetch_add(1, std::memory_order_relaxed) + 1);
  call_rcu_detached(&b->rh, &free_batch);
}

// Takes the open batch of krc off its slot, counted in transit.  Context: krc->lock; the caller
// passes it to queue_batch after dropping the lock.
kfree_rcu_batch* detach(kfree_rcu_cpu* krc) {
  lockdep_assert_held(&krc->lock);
  kfree_rcu_batch* b = krc->cur;
  __atomic_store_n(&krc->cur, nullptr, __ATOMIC_RELAXED);  // peeked at without the lock
  rcu_detach_batch(&b->rh);
  return b;
}

// detach() if krc has a batch and `all` or it is old enough.
kfree_rcu_batch* detach_if(kfree_rcu_cpu* krc, bool all, std::uint64_t now) {
  kfree_rcu_batch* b = krc->cur;
  if (!b || !b->n) return nullptr;
  if (!all && now - b->opened_ms < kKfreeRcuDelayMs) return nullptr;
  return detach(krc);
}

void flush_all_batches(bool all) {
  std::uint64_t now = platform::coarse_ms();
  for (auto& krc : g_krc) {
    // The monitor may skip a slot that looks empty.  rcu_barrier's hook may not: the slot may
    // look empty because another thread detached its batch, counted under the lock.
    if (!all && !__atomic_load_n(&krc.cur, __ATOMIC_RELAXED)) continue;
    krc.lock.lock();
    kfree_rcu_batch* b = detach_if(&krc, all, now);
    krc.lock.unlock();
    if (b) queue_batch(b);
  }
}

// RCU's monitor: queues batches older than kKfreeRcuDelayMs; true while objects are pending.
bool monitor_hook() {
  flush_all_batches(false);
  return g_pending.load(std::memory_order_relaxed) != 0;
}

void fork_prepare() {
  for (auto& krc : g_krc) krc.lock.lock_nest_lock(rcu_fork_nest_lock());
}
void fork_release() {
  for (unsigned i = kMaxSlots; i-- > 0;) g_krc[i].lock.unlock();
}

// A producer outside any read section waits while too many batches are in flight (their
// callbacks bring the count down: nothing they wait for can be waiting for us).
void throttle() {
  if (rcu_read_lock_held() || rcu_in_callback()) return;  // could wait for ourselves: go on
  for (;;) {
    std::uint32_t v = g_batches_wake.load(std::memory_order_acquire);
    if (g_batches.load(std::memory_order_acquire) <= kKfreeRcuMaxBatches) return;
    platform::futex_wait(&g_batches_wake, v);
  }
}

void barrier_hook() {
  flush_all_batches(true);
}

// The fallback's callback (call_rcu_kvfree): the object is counted in g_pending until freed.
void kvfree_fn(void* p) {
  kfree(p);
  g_pending.fetch_sub(1, std::memory_order_release);  // (free_batch's release, for one object)
}

USLUB_NOINLINE void set_up() {
  rcu_client_set_up(&g_hook,
                    {&barrier_hook, &monitor_hook, &fork_prepare, &fork_release, &kvfree_fn});
}

// Queues ptr; false if no batch page could be had.
bool kfree_rcu_queue(void* ptr) {
  if (USLUB_UNLIKELY(g_hook.load(std::memory_order_acquire) != 2)) set_up();
  kfree_rcu_cpu* krc = this_krc();
  kfree_rcu_batch* full = nullptr;
  krc->lock.lock();
  if (!krc->cur) {
    auto* b = USLUB_UNLIKELY(g_fail_batches.load(std::memory_order_relaxed))
                  ? nullptr
                  : static_cast<kfree_rcu_batch*>(global_page_allocator().alloc_pages_addr(0));
    if (!b) {
      krc->lock.unlock();
      return false;
    }
    b->n = 0;
    b->opened_ms = platform::coarse_ms();
    __atomic_store_n(&krc->cur, b, __ATOMIC_RELAXED);
  }
  kfree_rcu_batch* b = krc->cur;
  b->ptrs[b->n++] = ptr;
  if (b->n == kBatch) full = detach(krc);
  krc->lock.unlock();
  long p = g_pending.fetch_add(1, std::memory_order_relaxed) + 1;
  raise_peak(g_peak, p);
  if (full) {
    queue_batch(full);
    if (USLUB_UNLIKELY(g_batches.load(std::memory_order_relaxed) > kKfreeRcuMaxBatches)) throttle();
  }
  if (p == 1) rcu_kick_monitor();
  return true;
}

}  // namespace

kfree_rcu_stats kfree_rcu_get_stats() {
  return {g_pending.load(), g_peak.load(), g_batches.load(), g_peak_batches.load()};
}

void kfree_rcu_fail_batches_for_test(bool on) {
  g_fail_batches.store(on);
}

void kvfree_rcu_barrier() {
  if (g_pending.load(std::memory_order_acquire) == 0) return;
  rcu_barrier();  // its hook queues every open batch first
}

}  // namespace uslub

using namespace uslub;

extern "C" {

void uslub_kfree_rcu_offset(void* ptr, size_t head_offset) {
  if (!ptr) return;
  if (head_offset >= kMaxKvfreeOffset) {
    report_bug("kfree_rcu", "Invalid argument", "rcu_head at offset %zu (at most %zu)\n",
               head_offset, kMaxKvfreeOffset - 1);
    return;
  }
  if (kfree_rcu_queue(ptr)) return;
  // The kernel's trick: the head's callback slot holds its offset in the object.  Counted as
  // pending like a batched object, so that kvfree_rcu_barrier (kmem_cache_destroy) waits for
  // it too; kvfree_fn uncounts it once freed.
  long p = g_pending.fetch_add(1, std::memory_order_relaxed) + 1;
  raise_peak(g_peak, p);
  call_rcu_kvfree(reinterpret_cast<rcu_head*>(static_cast<char*>(ptr) + head_offset), head_offset);
}

void uslub_kfree_rcu_mightsleep(void* ptr) {
  if (!ptr) return;
  if (kfree_rcu_queue(ptr)) return;
  if (rcu_read_lock_held() || rcu_in_callback()) {
    // synchronize_rcu would wait for this very section (or the callback thread): leak.
    if (!g_leak_reported.exchange(true))
      report_bug("kfree_rcu", "Headless object leaked",
                 "kvfree_rcu_mightsleep(%p): no memory for a batch inside a read section or "
                 "an RCU callback, where it cannot wait for a grace period; the object is "
                 "leaked (reported once)\n",
                 ptr);
    return;
  }
  synchronize_rcu();
  kfree(ptr);
}

}  // extern "C"
