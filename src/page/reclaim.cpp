// Returning idle free memory to the OS (decay).
//
// A free block remembers when it became free (page->freed_ms).  Blocks free for at least
// decay_ms are "idle"; reclaim returns their memory with madvise and keeps them on the zone's
// returned_list, where they still serve allocations (reading as zeros, so __GFP_ZERO skips the
// memset).  Each free_area list is newest-first, so the idle blocks are at the tail.
//
// Never under zone->lock: a pass isolates at most kReclaimIsolate idle blocks (PG_isolated:
// off every list, invisible to merging), drops the lock, madvises them, and re-takes the lock
// to free them back with PG_returned (merging with free neighbours as usual).  So every
// zone->lock hold of reclaim moves at most kReclaimIsolate blocks.
//
// Triggers: a zone-level free or drain notices that next_reclaim_ms has passed (or that the
// zone keeps more free resident memory than the retain bound) and calls maybe_reclaim; and
// the explicit page_allocator::reclaim() (malloc_trim, shrink_all_memory).  maybe_reclaim
// runs on free paths (free_pages, kfree, a pcp drain), so it never does unbounded work there:
//   - with a background worker (the pressure monitor thread, USLUB_PRESSURE=1, which registers
//     itself with set_reclaim_worker), it only wakes the worker, which runs the whole pass
//     (reclaim_background) off the caller's path;
//   - without one (the default: a malloc library does not start threads behind a program's
//     back) it runs one bounded step: at most kReclaimInlinePages pages are isolated and
//     madvised (or a single larger block, so that 4 MiB blocks still go back).  If idle
//     blocks remain the zone is due again kReclaimStepMs later, so the next zone-level free
//     after that continues; a zone over its retain bound is due at every zone-level free
//     until it keeps less than an eighth of the bound resident (zone::draining; each step
//     returns up to 8 times what a pcp drain frees, so the return keeps up with the frees).
//     A free thus pays at most one such step.
// One thread reclaims a zone at a time (zone::reclaiming); others skip (maybe_reclaim) or
// wait (reclaim()).
#include "base/check.hpp"
#include "page/buddy.hpp"
#include "page/page_alloc.hpp"

namespace uslub {

// Is z over its retain bound / div (more free resident memory than it may keep, however fresh)?
bool page_allocator::over_retain(zone* z, unsigned div) const {
  std::size_t resident = __atomic_load_n(&z->free_pages, __ATOMIC_RELAXED) -
                         __atomic_load_n(&z->returned_pages, __ATOMIC_RELAXED);
  // The bound grows with the heap (1/8 of committed memory) so that a program cycling large
  // blocks through a big heap does not madvise and re-fault them on every free.
  std::size_t bound = cfg_.retain_bytes;
  std::size_t eighth = committed_.load(std::memory_order_relaxed) / 8;
  if (bound && eighth > bound) bound = eighth;
  return bound && resident * PAGE_SIZE > bound / div;
}

// Context: a free path (no lock held).  Bounded work: see the top of this file.
// Due when the decay deadline passed, while the zone is over its retain bound, and while a
// drain that started over the bound goes on (zone::draining).
void page_allocator::maybe_reclaim(zone* z, std::uint64_t now_ms) {
  if (USLUB_LIKELY(now_ms < z->next_reclaim_ms.load(std::memory_order_relaxed)) &&
      USLUB_LIKELY(!z->draining.load(std::memory_order_relaxed)) && USLUB_LIKELY(!over_retain(z)))
    return;
  maybe_reclaim_due(z, now_ms);
}

void page_allocator::maybe_reclaim_due(zone* z, std::uint64_t now_ms) {
  std::uint64_t decay = static_cast<std::uint64_t>(cfg_.decay_ms);
  std::uint64_t period = (decay ? decay / 2 : 0) + 1;
  if (void (*kick)() = reclaim_worker_.load(std::memory_order_acquire)) {
    // The worker runs the whole pass.  One kick per kReclaimStepMs at most (a zone over its
    // bound stays due until the worker has run).
    if (now_ms < z->next_kick_ms.load(std::memory_order_relaxed)) return;
    z->next_kick_ms.store(now_ms + kReclaimStepMs, std::memory_order_relaxed);
    z->next_reclaim_ms.store(now_ms + period, std::memory_order_relaxed);
    kick();
    return;
  }
  preempt_count_inc();  // the flag is waited for by fork's prepare (sync/preempt.hpp)
  if (z->reclaiming.exchange(true, std::memory_order_acquire)) {
    preempt_count_dec();
    return;
  }
  // Over the retain bound: free blocks go back, however fresh, a step at every zone-level
  // free (each returns up to 8 times what a pcp drain frees, so the return keeps up with the
  // frees).  Otherwise the idle blocks, a step per kReclaimStepMs.
  bool drain = z->draining.load(std::memory_order_relaxed) || over_retain(z);
  bool more = false;
  inline_steps_.fetch_add(1, std::memory_order_relaxed);
  reclaim_zone(z, drain ? ~std::uint64_t{0} : now_ms - (decay < now_ms ? decay : now_ms),
               kReclaimInlinePages, &more);
  // A drain goes on, a step per zone-level free, while the step was cut short or the zone
  // still keeps more than an eighth of its bound resident (frees during the drain refill it).
  z->draining.store(drain && (more || over_retain(z, 8)), std::memory_order_relaxed);
  z->next_reclaim_ms.store(now_ms + (more ? kReclaimStepMs : period), std::memory_order_relaxed);
  z->reclaiming.store(false, std::memory_order_release);
  preempt_count_dec();
}

void page_allocator::set_reclaim_worker(void (*kick)()) {
  reclaim_worker_.store(kick, std::memory_order_release);
}

std::size_t page_allocator::reclaim_background() {
  std::size_t total = 0;
  std::uint64_t now = platform::coarse_ms();
  std::uint64_t decay = static_cast<std::uint64_t>(cfg_.decay_ms);
  for (unsigned n = 0; n < nr_zones_; ++n) {
    zone* z = zones_[n];
    preempt_count_inc();
    if (z->reclaiming.exchange(true, std::memory_order_acquire)) {
      preempt_count_dec();
      continue;  // another thread is at it
    }
    bool over = over_retain(z);
    total += reclaim_zone(z, over ? ~std::uint64_t{0} : now - (decay < now ? decay : now));
    z->reclaiming.store(false, std::memory_order_release);
    preempt_count_dec();
  }
  return total;
}

std::size_t page_allocator::reclaim(bool force) {
  std::size_t total = 0;
  std::uint64_t now = platform::coarse_ms();
  std::uint64_t decay = static_cast<std::uint64_t>(cfg_.decay_ms);
  std::uint64_t cutoff = force ? ~std::uint64_t{0} : now - (decay < now ? decay : now);
  for (unsigned n = 0; n < nr_zones_; ++n) {
    zone* z = zones_[n];
    // An explicit reclaim waits for a running one rather than skipping (malloc_trim must
    // return memory); the flag is held only across madvise passes, never a lock.
    preempt_count_inc();
    while (z->reclaiming.exchange(true, std::memory_order_acquire)) sched_yield();
    total += reclaim_zone(z, cutoff);
    z->reclaiming.store(false, std::memory_order_release);
    preempt_count_dec();
  }
  return total;
}

// Context: z->reclaiming owned by the caller; no lock held.
//
// One run advises each resident free page at most once: its budget is the zone's resident
// free pages when it starts.  Without it a block whose memory does not come back as zeros
// (MADV_FREE, or a failed madvise) - put back on the resident list, still idle - was isolated
// again by the next pass, up to the pass bound (4096 madvise calls per run for one block).
// Such a block also restarts its idle time, so periodic runs advise it again only after
// another decay period.
//
// page_limit: at most this many pages isolated and madvised by this call (the first block is
// taken whatever its size); *more is set when it stopped on that limit with idle blocks left.
std::size_t page_allocator::reclaim_zone(zone* z, std::uint64_t cutoff_ms, std::size_t page_limit,
                                         bool* more) {
  struct isolated {
    page* p;
    unsigned order;
    std::uint64_t freed_ms;
  };
  std::size_t total = 0;
  std::size_t budget = 0;  // resident free pages this run may still isolate
  std::size_t taken = 0;   // pages isolated by this call (page_limit)
  bool limited = false;
  reclaim_runs_.fetch_add(1, std::memory_order_relaxed);
  // MADV_FREE leaves contents in place until the kernel takes the pages: not zeroed.
  const bool zeroes = cfg_.decommit == platform::decommit_mode::dontneed;
  // Bounded: at most every block of the zone once per order (merges can re-create idle
  // non-returned blocks; they are picked up by the next pass or the next run).
  for (int pass = 0; pass < 4096; ++pass) {
    isolated iso[kReclaimIsolate];
    unsigned n = 0;
    z->lock.lock();
    if (pass == 0) budget = z->free_pages - z->returned_pages;
    for (int o = MAX_ORDER; o >= 0 && n < kReclaimIsolate; --o) {
      list_head* head = &z->area[o].free_list;
      std::size_t pages = std::size_t{1} << o;
      while (n < kReclaimIsolate && budget >= pages && !list_empty(head)) {
        page* p = list_entry<page, &page::lru>(head->prev);  // oldest
        if (p->freed_ms > cutoff_ms) break;
        if (taken && taken + pages > page_limit) {
          limited = true;  // an idle block left for the next call
          break;
        }
        taken += pages;
        std::uint64_t t = p->freed_ms;
        __del_page_from_free_list(z, p, static_cast<unsigned>(o));
        set_page_flags(p, PG_isolated);
        iso[n++] = {p, static_cast<unsigned>(o), t};
        budget -= pages;
      }
    }
    z->lock.hold_work(n);
    z->lock.unlock();
    if (n == 0) break;
    bool ok[kReclaimIsolate];
    for (unsigned i = 0; i < n; ++i) {
      std::size_t bytes = PAGE_SIZE << iso[i].order;
      ok[i] = vm_->decommit(page_address(iso[i].p), bytes, cfg_.decommit) == 0;
      if (ok[i]) total += bytes;
    }
    std::uint64_t now = platform::coarse_ms();
    z->lock.lock();
    for (unsigned i = 0; i < n; ++i) {
      bool returned = ok[i] && zeroes;
      __free_one_page(z, iso[i].p, iso[i].order, returned, returned ? iso[i].freed_ms : now);
    }
    z->lock.hold_work(n);
    z->lock.unlock();
    if (limited || taken >= page_limit) {
      limited = true;
      break;
    }
  }
  if (more) *more = limited;
  reclaimed_bytes_.fetch_add(total, std::memory_order_relaxed);
  return total;
}

}  // namespace uslub
