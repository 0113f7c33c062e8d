// alloc_pages_exact: blocks of any page count, not rounded up to a power of two.
//
// The kernel's alloc_pages_exact takes a block of 2^order pages and frees the unused tail
// pages one by one.  Here a request of nr pages (not a power of two) takes a range of nr free
// pages, placed in this order of preference (all under zone->lock, __take_free_range):
//   1. right after the last exact block (zone::exact_next), when those pages are free: blocks
//      allocated one after another are packed with no gap, so a huge page under them is
//      filled by them (a tail left free between blocks would be made resident by the huge
//      page fault of its neighbours);
//   2. at a free block of order - 1 followed by enough free pages (the space of a freed exact
//      block), at most kExactScan blocks looked at;
//   3. at the start of the smallest free block of 2^order pages or more (__rmqueue), whose
//      tail goes back to the free lists at once.
// The head of an exact block has PG_head | PG_exact, ->nr_pages = nr and ->order =
// ilog2(nr), rounded down: walkers of the memory map (validate_slab_cache) step 2^order pages
// from a head, which must not pass the block's end; the other pages are 0, like the interior
// of any block.
// free_pages_exact frees the range as the largest aligned blocks that tile it, which merge
// with their free buddies as usual.  resize_pages_exact grows a block into the free pages
// after it (krealloc in place) or gives its tail back.
//
// Locking: zone->lock for every change of the free lists, held for O(log nr) list operations
// per call (a range is covered by at most 2 * MAX_ORDER free blocks and freed as at most
// 2 * MAX_ORDER blocks).  The pcp lists are not used for exact blocks that are not powers of
// two.  See page_alloc.hpp for the lock order.
#include <errno.h>

#include <cstring>

#include "base/bits.hpp"
#include "base/check.hpp"
#include "page/buddy.hpp"
#include "page/page_alloc.hpp"

namespace uslub {

namespace {
constexpr int kExactScan = 8;

USLUB_ALWAYS_INLINE bool is_pow2(std::size_t n) {
  return (n & (n - 1)) == 0;
}
// An exact head's ->order: the largest power of two not above nr.
USLUB_ALWAYS_INLINE unsigned ilog2_pages(std::size_t nr) {
  return 63u - static_cast<unsigned>(__builtin_clzll(nr));
}
}  // namespace

// Context: z->lock.  Takes nr free pages (nr not a power of two); nullptr if the zone has no
// room.
page* page_allocator::rmqueue_exact(zone* z, std::size_t nr, bool* zeroed) {
  lockdep_assert_held(&z->lock);
  unsigned order = order_base_2(nr);
  page* p = nullptr;
  if (z->exact_next && __take_free_range(z, z->exact_next, nr, zeroed)) p = z->exact_next;
  for (int which = 0; !p && which < 2; ++which) {
    list_head* head = which ? &z->area[order - 1].returned_list : &z->area[order - 1].free_list;
    int scanned = 0;
    for (list_head* l = head->next; l != head && scanned < kExactScan; l = l->next, ++scanned) {
      page* b = list_entry<page, &page::lru>(l);
      if (__take_free_range(z, b, nr, zeroed)) {
        p = b;
        break;
      }
    }
  }
  if (!p) {
    p = __rmqueue(z, order, zeroed);
    if (!p) return nullptr;
    // The tail keeps the block's state: zeroed pages stay PG_returned.
    __free_range(z, p + nr, (std::size_t{1} << order) - nr, *zeroed, platform::coarse_ms());
  }
  std::size_t end = page_pfn(p) + nr;
  z->exact_next = end < PAGES_PER_SECTION ? p + nr : nullptr;
  return p;
}

page* page_allocator::alloc_pages_exact(std::size_t nr, gfp_t gfp) {
  if (nr == 0 || nr > (std::size_t{1} << MAX_ORDER)) {
    errno = EINVAL;
    return nullptr;
  }
  gfp &= ~__GFP_COMP;
  if (is_pow2(nr)) {
    page* p = alloc_pages(order_base_2(nr), gfp);
    if (p) {
      p->nr_pages = static_cast<std::uint16_t>(nr);
      set_page_flags(p, page_flags(p) | PG_exact);
    }
    return p;
  }
  zone* z = pick_zone(NUMA_NO_NODE);
  bool zeroed = false, drained = false;
  page* p;
  for (;;) {
    z->lock.lock();
    p = rmqueue_exact(z, nr, &zeroed);
    if (p) z->zone_alloc.add();
    z->lock.unlock();
    if (p) break;
    if (grow_zone(z)) continue;
    if (!drained && (drained = true, drain_before_enomem())) continue;
    return nullptr;  // errno set by grow_zone
  }
  set_page_order(p, ilog2_pages(nr));
  p->nr_pages = static_cast<std::uint16_t>(nr);
  p->lru.next = p->lru.prev = nullptr;
  set_page_flags(p, PG_head | PG_exact);
  if ((gfp & __GFP_ZERO) && !zeroed) memset(page_address(p), 0, nr * PAGE_SIZE);
  return p;
}

void page_allocator::free_pages_exact(page* p, std::size_t nr) {
  if (!check_free(page_address(p), p, order_base_2(nr), nr)) return;
  // A naturally aligned power of two (as alloc_pages_exact made it, unless resized since) goes
  // back like an alloc_pages block, through the pcp lists.
  if (is_pow2(nr) && (page_pfn(p) & (nr - 1)) == 0) {
    set_page_order(p, order_base_2(nr));
    set_page_flags(p, page_flags(p) & ~PG_exact);
    free_pages(p, order_base_2(nr));
    return;
  }
  zone* z = page_section(p)->zone;
  std::uint64_t now = platform::coarse_ms();
  z->lock.lock();
  set_page_flags(p, 0);
  __free_range(z, p, nr, /*returned=*/false, now);
  z->zone_free.add();
  z->lock.unlock();
  maybe_reclaim(z, now);
}

bool page_allocator::resize_pages_exact(page* p, std::size_t nr) {
  if (nr == 0 || nr > (std::size_t{1} << MAX_ORDER)) return false;
  if ((page_flags(p) & (PG_head | PG_exact)) != (PG_head | PG_exact)) return false;
  std::size_t have = p->nr_pages;
  if (nr == have) return true;
  zone* z = page_section(p)->zone;
  std::uint64_t now = platform::coarse_ms();
  bool ok = true, zeroed;
  z->lock.lock();
  if (nr > have)
    ok = __take_free_range(z, p + have, nr - have, &zeroed);
  else
    __free_range(z, p + nr, have - nr, /*returned=*/false, now);
  if (ok) {
    p->nr_pages = static_cast<std::uint16_t>(nr);
    set_page_order(p, ilog2_pages(nr));
    // A grown block, or a shrunk one that was the last packed: the next exact block follows.
    if ((nr > have || z->exact_next == p + have) && page_pfn(p) + nr < PAGES_PER_SECTION)
      z->exact_next = p + nr;
  }
  z->lock.unlock();
  if (ok && nr < have) maybe_reclaim(z, now);
  return ok;
}

}  // namespace uslub
