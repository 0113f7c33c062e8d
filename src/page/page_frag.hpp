// The fragment allocator (seed 002's s390 page-table fragments, generalised): a page split into
// nr_frags (2..32, a power of two) equal fragments, with an "allocated" and a "pending" bit per
// fragment in the page descriptor, a list of pages that have a free fragment, and
// frag_free_defer(), which makes a fragment reusable only after an RCU grace period.  A page
// goes back to the page allocator when all its fragments are free and none is pending.
// C API: include/uslub/frag.h (uslub_frag_*, thin wrappers at the end of page_frag.cpp).
//
// Page descriptor use (PG_frag pages): slab_cache = the pool; counters = allocated bits (low
// 32) | pending bits (high 32); lru = link on pool->partial; slab_private = 1 while on it.
//
// Locking: pool->lock (spinlock_t, class "frag_pool->lock") protects pool->partial, every
// descriptor's bits and list membership, and the pool's open deferral batch.  Only the page
// allocator is called under it (it never calls back); call_rcu is called after it is dropped
// (a batch taken under the lock is counted in transit, rcu_detach_batch, so that a concurrent
// rcu_barrier waits for it to be queued).
// g_pools_lock ("frag_pools_lock") protects the list of pools and nests outside pool->lock.
// Lockless: frag_check, the look-up at the start of frag_free / frag_free_defer (the section,
// the descriptor's PG_frag flag and slab_cache, both written under pool->lock with relaxed
// atomic stores), like kfree's slab look-up.  The page can be released (or reused by another
// pool) before the lock is taken, so both ask again under pool->lock and refuse the free if
// the page is no longer the pool's; nothing is changed on the strength of the unlocked look.
// The pool's counters (nr_pages, nr_pending, nr_allocated) are relaxed statistics.  Fork: RCU's
// prepare handler takes g_pools_lock then every pool->lock (after its fork gate is closed); parent
// and child release them.
//
// The races of seed 002 and why they cannot happen here:
//   - list maintenance against concurrent deferred frees: the RCU callback that ends a
//     deferral changes bits and list membership under the same pool->lock as frag_alloc and
//     frag_free, so no path can see a half-updated page, and a page is taken off the list and
//     freed by exactly one path (the one that saw allocated == pending == 0 under the lock);
//   - double use of the rcu_head: a page has no rcu_head.  Each deferral is an entry in a
//     batch that owns its rcu_head, so any number of fragments of one page may be pending in
//     any number of batches at once;
//   - a fragment deferred after a grace period began and freed at its end: an entry is added
//     to the open batch before that batch is passed to call_rcu, so the batch's grace period
//     starts after every one of its entries was deferred.
// Latency: the open batch is queued when full, by any operation on the pool that finds it
// older than kFragDeferDelayMs, by RCU's monitor thread (kicked when a batch is opened; it
// queues batches older than kFragDeferDelayMs even if nobody calls into the pool again) and
// by rcu_barrier().  So every deferred fragment ends its deferral, and a page whose fragments
// are then all free goes back to the page allocator, without further calls.
// No batch memory: frag_free_defer waits for a grace period and frees; inside a read section
// or an RCU callback it cannot wait, and leaks the fragment (reported once).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "base/list.hpp"
#include "page/page_alloc.hpp"
#include "sync/spinlock.hpp"

namespace uslub {

struct frag_batch;

struct frag_pool {
  spinlock_t lock;
  list_head partial;  // lock
  frag_batch* open;   // lock
  unsigned nr_frags, frag_size;
  page_allocator* pa;
  std::atomic<long> nr_pages{0}, nr_pending{0}, nr_allocated{0};
  list_head pools;  // g_pools_lock: every pool (rcu_barrier flushes them)
};

// nr_frags: 2..32, a power of two.  nullptr (errno EINVAL/ENOMEM) on bad input or no memory.
frag_pool* frag_pool_create(unsigned nr_frags, page_allocator* pa = nullptr);
// Returns false (after "Objects remaining on destroy") if fragments are still allocated.
bool frag_pool_destroy(frag_pool* pool);
void* frag_alloc(frag_pool* pool);
void frag_free(frag_pool* pool, void* frag);
void frag_free_defer(frag_pool* pool, void* frag);

}  // namespace uslub
