// The fragment allocator.  Design, locking and the races it excludes: page_frag.hpp.
#include "page/page_frag.hpp"

#include <uslub/frag.h>

#include <errno.h>
#include <sched.h>

#include <new>

#include "base/report.hpp"
#include "rcu/rcu.hpp"

namespace uslub {

namespace {
constexpr std::uint64_t kFragDeferDelayMs = 5;
constinit lock_class_key frag_lock_key{"frag_pool->lock"};
constinit lock_class_key pools_lock_key{"frag_pools_lock"};
constinit spinlock_t g_pools_lock{&pools_lock_key};
constinit list_head g_pools{&g_pools, &g_pools};  // g_pools_lock
std::atomic<int> g_hook{0};
std::atomic<bool> g_leak_reported{false};
}  // namespace

struct frag_batch {
  rcu_head rh;
  frag_pool* pool;
  unsigned n;
  std::uint64_t opened_ms;
  void* frags[(PAGE_SIZE - sizeof(rcu_head) - 24) / sizeof(void*)];
};
static_assert(sizeof(frag_batch) <= PAGE_SIZE);

namespace {

constexpr unsigned kBatch = sizeof(frag_batch::frags) / sizeof(void*);

std::uint32_t allocated(const page* p) {
  return static_cast<std::uint32_t>(p->counters);
}
std::uint32_t pending(const page* p) {
  return static_cast<std::uint32_t>(p->counters >> 32);
}
void set_bits(page* p, std::uint32_t alloc, std::uint32_t pend) {
  __atomic_store_n(&p->counters, (std::uint64_t{pend} << 32) | alloc, __ATOMIC_RELAXED);
}
std::uint32_t all_mask(const frag_pool* pool) {
  return pool->nr_frags == 32 ? ~0u : (1u << pool->nr_frags) - 1;
}
bool on_list(const page* p) {
  return p->slab_private != 0;
}
void list_on(frag_pool* pool, page* p) {
  list_add(&p->lru, &pool->partial);
  p->slab_private = 1;
}
void list_off(page* p) {
  list_del(&p->lru);
  p->slab_private = 0;
}

// After a bit change, under pool->lock: fixes list membership; returns the page if it must go
// back to the page allocator (the caller frees it after dropping the lock).
page* settle(frag_pool* pool, page* p) {
  std::uint32_t a = allocated(p), pd = pending(p);
  if (!a && !pd) {
    if (on_list(p)) list_off(p);
    set_page_flags(p, page_flags(p) & ~PG_frag);
    __atomic_store_n(&p->slab_cache, nullptr, __ATOMIC_RELAXED);  // frag_check reads unlocked
    return p;
  }
  bool has_free = ((a | pd) & all_mask(pool)) != all_mask(pool);
  if (has_free && !on_list(p)) list_on(pool, p);
  if (!has_free && on_list(p)) list_off(p);
  return nullptr;
}

void release_page(frag_pool* pool, page* p) {
  pool->nr_pages.fetch_sub(1, std::memory_order_relaxed);
  pool->pa->free_pages(p, 0);
}

// Is p a fragment page of pool?  Unlocked in frag_check (a look-up, as kfree's virt_to_slab):
// the page may be released, or reused, before the caller takes pool->lock, which is why
// frag_free and frag_free_defer ask again under it.
bool frag_page_of(const page* p, const frag_pool* pool) {
  return (page_flags(p) & PG_frag) && __atomic_load_n(&p->slab_cache, __ATOMIC_RELAXED) == pool;
}

// Under pool->lock: p stopped being pool's between frag_check and the lock (a racing free of
// the page's last fragment released it).  Reports; the caller drops the lock and refuses.
bool frag_page_gone(frag_pool* pool, page* p, void* frag, const char* caller) {
  if (USLUB_LIKELY(frag_page_of(p, pool))) return false;
  pool->lock.unlock();
  report_bug("frag_pool", "Object already free",
             "%s(%p): its page was freed meanwhile (a racing free of the same fragment)\n", caller,
             frag);
  return true;
}

// The fragment's page and index, or nullptr after reporting.
page* frag_check(frag_pool* pool, void* frag, unsigned* idx, const char* caller) {
  mem_section* sec = lookup_section(frag);
  auto off = reinterpret_cast<std::uintptr_t>(frag) & (SECTION_SIZE - 1);
  if (sec && off >= SECTION_DATA_START) {
    page* p = virt_to_page(frag);
    if (frag_page_of(p, pool)) {
      auto in = reinterpret_cast<std::uintptr_t>(frag) & (PAGE_SIZE - 1);
      if (in % pool->frag_size == 0) {
        *idx = static_cast<unsigned>(in / pool->frag_size);
        return p;
      }
      report_bug("frag_pool", "Invalid pointer", "%s(%p): not the start of a fragment\n", caller,
                 frag);
      return nullptr;
    }
  }
  report_bug("frag_pool", "Invalid pointer", "%s(%p): not a fragment of this pool\n", caller, frag);
  return nullptr;
}

void end_deferral(rcu_head* rh) {
  auto* b = reinterpret_cast<frag_batch*>(rh);
  frag_pool* pool = b->pool;
  page* to_free[kBatch];
  unsigned nfree = 0;
  pool->lock.lock();
  for (unsigned i = 0; i < b->n; ++i) {
    page* p = virt_to_page(b->frags[i]);
    auto idx = static_cast<unsigned>(
        (reinterpret_cast<std::uintptr_t>(b->frags[i]) & (PAGE_SIZE - 1)) / pool->frag_size);
    set_bits(p, allocated(p), pending(p) & ~(1u << idx));
    if (page* f = settle(pool, p)) to_free[nfree++] = f;
  }
  pool->lock.unlock();
  pool->nr_pending.fetch_sub(b->n, std::memory_order_relaxed);
  for (unsigned i = 0; i < nfree; ++i) release_page(pool, to_free[i]);
  pool->pa->free_pages_addr(b, 0);
}

// Takes the open batch if `all` or it is old enough; the caller queues it with
// call_rcu_detached after dropping the lock.  Context: pool->lock.
frag_batch* take_open(frag_pool* pool, bool all) {
  lockdep_assert_held(&pool->lock);
  frag_batch* b = pool->open;
  if (!b || !b->n || (!all && platform::coarse_ms() - b->opened_ms < kFragDeferDelayMs))
    return nullptr;
  pool->open = nullptr;
  rcu_detach_batch(&b->rh);
  return b;
}

// Queues the open batches (every one if `all`, else those older than kFragDeferDelayMs) with
// no lock held; returns true if an open batch remains.
bool flush_pools(bool all) {
  frag_batch* taken = nullptr;
  bool open_left = false;
  {
    lock_guard<spinlock_t> g(g_pools_lock);
    for (list_head* l = g_pools.next; l != &g_pools; l = l->next) {
      frag_pool* pool = list_entry<frag_pool, &frag_pool::pools>(l);
      pool->lock.lock();
      if (frag_batch* b = take_open(pool, all)) {
        b->rh.next_ = taken;  // a private chain until call_rcu takes the head over
        taken = b;
      }
      if (pool->open && pool->open->n) open_left = true;
      pool->lock.unlock();
    }
  }
  while (frag_batch* b = taken) {
    taken = static_cast<frag_batch*>(b->rh.next_);
    call_rcu_detached(&b->rh, &end_deferral);
  }
  return open_left;
}

void barrier_hook() {  // rcu_barrier: every open batch
  flush_pools(true);
}

bool monitor_hook() {  // RCU's monitor thread: the old ones
  return flush_pools(false);
}

// Fork (run by RCU's prepare handler after its gate is closed): g_pools_lock, then every
// pool's lock; released in the reverse order.
void fork_prepare() {
  g_pools_lock.lock();
  for (list_head* l = g_pools.next; l != &g_pools; l = l->next)
    list_entry<frag_pool, &frag_pool::pools>(l)->lock.lock_nest_lock(&g_pools_lock);
}
void fork_release() {
  for (list_head* l = g_pools.prev; l != &g_pools; l = l->prev)
    list_entry<frag_pool, &frag_pool::pools>(l)->lock.unlock();
  g_pools_lock.unlock();
}

void set_up() {
  rcu_client_set_up(&g_hook, {&barrier_hook, &monitor_hook, &fork_prepare, &fork_release, nullptr});
}

}  // namespace

frag_pool* frag_pool_create(unsigned nr_frags, page_allocator* pa) {
  if (nr_frags < 2 || nr_frags > 32 || (nr_frags & (nr_frags - 1))) {
    report_bug("frag_pool", "Invalid argument", "frag_pool_create(%u): 2..32, a power of two\n",
               nr_frags);
    errno = EINVAL;
    return nullptr;
  }
  if (!pa) pa = &global_page_allocator();
  void* mem = pa->alloc_pages_addr(0, __GFP_ZERO);
  if (!mem) {
    errno = ENOMEM;
    return nullptr;
  }
  auto* pool = new (mem) frag_pool{spinlock_t{&frag_lock_key},
                                   {},
                                   nullptr,
                                   nr_frags,
                                   static_cast<unsigned>(PAGE_SIZE / nr_frags),
                                   pa};
  INIT_LIST_HEAD(&pool->partial);
  if (g_hook.load(std::memory_order_acquire) != 2) set_up();
  lock_guard<spinlock_t> g(g_pools_lock);
  list_add(&pool->pools, &g_pools);
  return pool;
}

void* frag_alloc(frag_pool* pool) {
  page* fresh = nullptr;
  for (;;) {
    pool->lock.lock();
    frag_batch* late = take_open(pool, false);
    if (pool->partial.next == &pool->partial && fresh) {
      list_on(pool, fresh);
      fresh = nullptr;
    }
    if (pool->partial.next != &pool->partial) {
      page* p = list_entry<page, &page::lru>(pool->partial.next);
      std::uint32_t busy = allocated(p) | pending(p);
      auto idx = static_cast<unsigned>(__builtin_ctz(~busy & all_mask(pool)));
      set_bits(p, allocated(p) | (1u << idx), pending(p));
      settle(pool, p);
      pool->lock.unlock();
      if (late) call_rcu_detached(&late->rh, &end_deferral);
      if (fresh) release_page(pool, fresh);  // lost a race: someone else refilled
      pool->nr_allocated.fetch_add(1, std::memory_order_relaxed);
      return static_cast<char*>(page_address(p)) + std::size_t{idx} * pool->frag_size;
    }
    pool->lock.unlock();
    if (late) call_rcu_detached(&late->rh, &end_deferral);
    // No page with a free fragment: a new one, allocated with no lock held.
    fresh = pool->pa->alloc_pages(0);
    if (!fresh) {
      errno = ENOMEM;
      return nullptr;
    }
    pool->nr_pages.fetch_add(1, std::memory_order_relaxed);
    set_page_flags(fresh, page_flags(fresh) | PG_frag);
    __atomic_store_n(&fresh->slab_cache, static_cast<void*>(pool), __ATOMIC_RELAXED);
    fresh->slab_private = 0;
    set_bits(fresh, 0, 0);
  }
}

void frag_free(frag_pool* pool, void* frag) {
  unsigned idx;
  page* p = frag_check(pool, frag, &idx, "frag_free");
  if (!p) return;
  pool->lock.lock();
  if (frag_page_gone(pool, p, frag, "frag_free")) return;
  if (!(allocated(p) & (1u << idx))) {
    bool pend = pending(p) & (1u << idx);
    pool->lock.unlock();
    report_bug("frag_pool", "Object already free", "frag_free(%p): fragment %u is %s\n", frag, idx,
               pend ? "pending a grace period" : "free");
    return;
  }
  set_bits(p, allocated(p) & ~(1u << idx), pending(p));
  page* dead = settle(pool, p);
  pool->lock.unlock();
  pool->nr_allocated.fetch_sub(1, std::memory_order_relaxed);
  if (dead) release_page(pool, dead);
}

void frag_free_defer(frag_pool* pool, void* frag) {
  unsigned idx;
  page* p = frag_check(pool, frag, &idx, "frag_free_defer");
  if (!p) return;
  frag_batch* full = nullptr;
  pool->lock.lock();
  if (frag_page_gone(pool, p, frag, "frag_free_defer")) return;
  if (!(allocated(p) & (1u << idx))) {
    pool->lock.unlock();
    report_bug("frag_pool", "Object already free", "frag_free_defer(%p): fragment %u is free\n",
               frag, idx);
    return;
  }
  bool opened = false;
  if (!pool->open) {
    auto* b = static_cast<frag_batch*>(pool->pa->alloc_pages_addr(0));
    if (!b) {
      pool->lock.unlock();
      if (rcu_read_lock_held() || rcu_in_callback()) {
        // Cannot wait for a grace period here (it would wait for this section): the fragment
        // stays allocated for good.
        if (!g_leak_reported.exchange(true))
          report_bug("frag_pool", "Fragment leaked",
                     "frag_free_defer(%p): no memory for a batch inside a read section or an "
                     "RCU callback; the fragment is leaked (reported once)\n",
                     frag);
        return;
      }
      synchronize_rcu();  // no memory for a batch: wait for a grace period here, then free
      return frag_free(pool, frag);
    }
    b->pool = pool;
    b->n = 0;
    b->opened_ms = platform::coarse_ms();
    pool->open = b;
    opened = true;
  }
  set_bits(p, allocated(p) & ~(1u << idx), pending(p) | (1u << idx));
  settle(pool, p);  // neither free nor newly reusable: at most leaves the list
  pool->open->frags[pool->open->n++] = frag;
  if (pool->open->n == kBatch) full = take_open(pool, true);
  frag_batch* late = full ? nullptr : take_open(pool, false);
  // Counted before the batch can end (its end_deferral subtracts it).
  pool->nr_pending.fetch_add(1, std::memory_order_relaxed);
  pool->lock.unlock();
  pool->nr_allocated.fetch_sub(1, std::memory_order_relaxed);
  if (full) call_rcu_detached(&full->rh, &end_deferral);
  if (late) call_rcu_detached(&late->rh, &end_deferral);
  if (opened) rcu_kick_monitor();  // queues it after kFragDeferDelayMs if nobody else does
}

bool frag_pool_destroy(frag_pool* pool) {
  if (!pool) return true;
  rcu_barrier();  // every deferral of this pool has ended
  if (long n = pool->nr_allocated.load()) {
    report_bug("frag_pool", "Objects remaining on destroy",
               "frag_pool_destroy: %ld fragments are still allocated; the pool is kept\n", n);
    return false;
  }
  {
    lock_guard<spinlock_t> g(g_pools_lock);
    list_del(&pool->pools);
  }
  pool->pa->free_pages_addr(pool, 0);
  return true;
}

}  // namespace uslub

using namespace uslub;

extern "C" {

struct uslub_frag_pool* uslub_frag_pool_create(unsigned int nr_frags) {
  return reinterpret_cast<uslub_frag_pool*>(frag_pool_create(nr_frags));
}

int uslub_frag_pool_destroy(struct uslub_frag_pool* pool) {
  if (frag_pool_destroy(reinterpret_cast<frag_pool*>(pool))) return 0;
  errno = EBUSY;
  return -1;
}

size_t uslub_frag_size(const struct uslub_frag_pool* pool) {
  return reinterpret_cast<const frag_pool*>(pool)->frag_size;
}

void* uslub_frag_alloc(struct uslub_frag_pool* pool) {
  return frag_alloc(reinterpret_cast<frag_pool*>(pool));
}

void uslub_frag_free(struct uslub_frag_pool* pool, void* frag) {
  frag_free(reinterpret_cast<frag_pool*>(pool), frag);
}

void uslub_frag_free_defer(struct uslub_frag_pool* pool, void* frag) {
  frag_free_defer(reinterpret_cast<frag_pool*>(pool), frag);
}

}  // extern "C"
