// Per-CPU page lists (struct per_cpu_pages) and drain_all_pages().
//
// The hit paths (a block on the list for alloc_pages, room below `high` for free_pages) are
// inlined into page_allocator::alloc_pages/free_pages in page_alloc.cpp with the primitives
// of pcp.hpp; this file has the refill, the drain, the bulk paths and drain_all_pages().
//
// Locking (see page_alloc.hpp for the whole order): pcp->lock is taken with try_lock() on
// every allocation and free path; a busy lock returns false/nullptr and the caller goes to the
// zone.  pcp->lock nests outside zone->lock (rmqueue_bulk, free_pcppages_bulk), exactly as in
// mm/page_alloc.c.  drain_all_pages() alone waits for a pcp lock (lock_wait), outside any other
// lock but its own drain_mutex.
#include <errno.h>

#include "base/check.hpp"
#include "page/buddy.hpp"
#include "page/page_alloc.hpp"
#include "page/pcp.hpp"

namespace uslub {
namespace {

USLUB_ALWAYS_INLINE per_cpu_pages* this_cpu_pcp(zone* z, unsigned nr_cpus) {
  return pcp_of(z, platform::current_cpu(), nr_cpus);
}

}  // namespace

// Moves up to `count` blocks of `order` from the zone to the pcp list with one zone->lock
// acquisition (rmqueue_bulk).  Context: pcp->lock held.  Returns the number moved.
int page_allocator::rmqueue_bulk(zone* z, unsigned order, int count, per_cpu_pages* pcp) {
  lockdep_assert_held(&pcp->lock);
  int moved = 0;
  z->lock.lock();
  for (; moved < count; ++moved) {
    bool zeroed;
    page* p = __rmqueue(z, order, &zeroed);
    if (!p) break;
    set_page_flags(p, PG_pcp | (zeroed ? PG_returned : 0));
    set_page_order(p, order);
    list_add_tail(&p->lru, &pcp->lists[order]);  // behind the hot ones
  }
  z->bulk_refill.add();
  z->lock.hold_work(static_cast<std::uint64_t>(moved));
  z->lock.unlock();
  pcp_set_count(pcp, pcp->count + (moved << order));
  return moved;
}

// Returns `count` pages (not blocks) from the pcp lists to the zone, coldest first, dropping
// and re-taking zone->lock every kFreeBatchLockBound blocks (bounded hold time).
// Context: pcp->lock held.
void page_allocator::free_pcppages_bulk(zone* z, int count, per_cpu_pages* pcp) {
  lockdep_assert_held(&pcp->lock);
  std::uint64_t now = platform::coarse_ms();
  unsigned order = NR_PCP_ORDERS;
  while (count > 0 && pcp->count > 0) {
    z->lock.lock();
    unsigned n = 0;
    for (; n < kFreeBatchLockBound && count > 0 && pcp->count > 0; ++n) {
      // Round-robin from the highest order: large blocks are the rarest to be reused hot.
      do order = order == 0 ? NR_PCP_ORDERS - 1 : order - 1;
      while (list_empty(&pcp->lists[order]));
      page* p = list_entry<page, &page::lru>(pcp->lists[order].prev);
      list_del(&p->lru);
      pcp_set_count(pcp, pcp->count - (1 << order));
      count -= 1 << order;
      bool returned = page_flags(p) & PG_returned;
      __free_one_page(z, p, order, returned, now);
    }
    z->bulk_drain.add();
    z->lock.hold_work(n);
    z->lock.unlock();
  }
}

page* page_allocator::rmqueue_pcplist(zone* z, unsigned order, bool* zeroed, bool* busy) {
  per_cpu_pages* pcp = this_cpu_pcp(z, nr_cpus_);
  if (USLUB_UNLIKELY(!pcp->lock.try_lock())) {
    *busy = true;
    return nullptr;
  }
  page* p = pcp_pop(pcp, order);
  if (USLUB_LIKELY(p))
    pcp->alloc_hit.add();
  else
    p = pcp_refill(z, pcp, order);
  pcp->lock.unlock();
  if (p) *zeroed = page_flags(p) & PG_returned;
  return p;
}

// The list of `order` is empty: refill it with one batch from the zone and take the first
// block (nullptr if the zone is empty too).  Context: pcp->lock held.
page* page_allocator::pcp_refill(zone* z, per_cpu_pages* pcp, unsigned order) {
  lockdep_assert_held(&pcp->lock);
  int blocks = pcp->batch >> order;
  if (rmqueue_bulk(z, order, blocks > 0 ? blocks : 1, pcp) == 0) return nullptr;
  pcp->alloc_refill.add();
  return pcp_pop(pcp, order);
}

int page_allocator::rmqueue_pcplist_bulk(zone* z, unsigned order, int nr, page** out) {
  per_cpu_pages* pcp = this_cpu_pcp(z, nr_cpus_);
  if (!pcp->lock.try_lock()) return 0;
  int got = 0;
  while (got < nr) {
    page* p = pcp_pop(pcp, order);
    if (!p) {
      // At least one batch (the rest stays cached), at most max(batch, kFreeBatchLockBound)
      // blocks per zone->lock hold: a large request refills several times rather than
      // holding the lock for all of it (the bound in page_alloc.hpp).
      int per_batch = pcp->batch >> order > 0 ? pcp->batch >> order : 1;
      int cap = per_batch > static_cast<int>(kFreeBatchLockBound)
                    ? per_batch
                    : static_cast<int>(kFreeBatchLockBound);
      int want = nr - got < per_batch ? per_batch : nr - got < cap ? nr - got : cap;
      if (rmqueue_bulk(z, order, want, pcp) == 0) break;
      pcp->alloc_refill.add();
      continue;
    }
    // Keep only the "reads as zeros" bit for prep_new_page.
    set_page_flags(p, page_flags(p) & PG_returned);
    out[got++] = p;
  }
  pcp->alloc_hit.add(static_cast<std::uint64_t>(got));
  pcp->lock.unlock();
  return got;
}

bool page_allocator::free_unref_page_bulk(zone* z, page** pages, int nr, unsigned order) {
  per_cpu_pages* pcp = this_cpu_pcp(z, nr_cpus_);
  if (!pcp->lock.try_lock()) return false;
  for (int i = 0; i < nr; ++i) pcp_push(pcp, pages[i], order);
  pcp->free_hit.add(static_cast<std::uint64_t>(nr));
  bool drained = false;
  if (pcp->count >= pcp->high) {
    // Drain to below high in batch steps (each step bounds its zone->lock holds).
    while (pcp->count >= pcp->high) free_pcppages_bulk(z, pcp->batch, pcp);
    pcp->free_drain.add();
    drained = true;
  }
  pcp->lock.unlock();
  if (drained) maybe_reclaim(z, platform::coarse_ms());
  return true;
}

// drain_all_pages(): empty every CPU's lists from any thread.
//
// Concurrent callers piggyback through drain_gen_, seed 004's lru_add_drain_all protocol:
//   (A) drain_gen_ == x means every drain numbered <= x has started under drain_mutex_.
//   (B) A caller reads this_gen = drain_gen_ (acquire) before taking drain_mutex_.
//   (C) Under the mutex, drain_gen_ != this_gen means some drain G started (incremented the
//       generation, (D)) after our read at (B) and - since it held the mutex we have just
//       taken - finished before we got here.  G covers every block we freed before calling:
//       each of our frees released pcp[c].lock before (B); G incremented the generation after
//       (B) (we read the old value) and locks every pcp[c] after its increment.  Were G's
//       lock of pcp[c] earlier than our free's, our free's acquire of pcp[c].lock would
//       synchronise with G's release and make G's increment happen-before our read at (B),
//       which would then have returned the new value.  So G's lock comes after our free and
//       G saw the block.  We may return at once.
//   (D) Otherwise we increment the generation and drain, taking each pcp lock (never skipping
//       a CPU on a racy "count == 0" peek: the argument above needs the lock hand-off).
// In the kernel the smp_mb/smp_wmb at (D) orders the increment before reading per-CPU vectors
// that are written without a shared lock; here every pcp access is under pcp->lock, whose
// release/acquire pairs give the same ordering, so the increment needs no extra fence beyond
// the mutex's release.  The spin model in models/drain_gen.pml checks the protocol.
void page_allocator::drain_all_pages() {
  drain_calls_.fetch_add(1, std::memory_order_relaxed);
  std::uint64_t this_gen = drain_gen_.load(std::memory_order_acquire);  // (B)
  drain_mutex_.lock();
  if (drain_gen_.load(std::memory_order_relaxed) != this_gen) {  // (C)
    drain_mutex_.unlock();
    return;
  }
  drain_gen_.store(this_gen + 1, std::memory_order_relaxed);  // (D)
  drain_runs_.fetch_add(1, std::memory_order_relaxed);
  for (unsigned n = 0; n < nr_zones_; ++n) {
    zone* z = zones_[n];
    for (unsigned c = 0; c < nr_cpus_; ++c) {
      per_cpu_pages* pcp = &z->pcp[c];
      pcp->lock.lock_wait();
      if (pcp->count) free_pcppages_bulk(z, pcp->count, pcp);
      pcp->lock.unlock();
    }
  }
  drain_mutex_.unlock();
  for (unsigned n = 0; n < nr_zones_; ++n) maybe_reclaim(zones_[n], platform::coarse_ms());
}

}  // namespace uslub
