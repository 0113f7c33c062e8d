// Buddy allocation inside a zone: split (expand) and merge (__free_one_page).
//
// Context: zone->lock for every function (see the lock order in page_alloc.hpp).
//
// Invariants (checked by page_allocator::validate):
//   - a free block of order o starts at a section-relative pfn that is a multiple of 2^o and
//     lies in the data area of its section;
//   - its head has PG_buddy (plus PG_returned if and only if it is on returned_list) and
//     ->order == o, and area[o].nr_free counts it once;
//   - two free buddies of the same order never coexist (they would have merged).
#include "page/buddy.hpp"

#include "base/check.hpp"
#include "sync/lockdep.hpp"

namespace uslub {
namespace {

USLUB_ALWAYS_INLINE page* pfn_to_page_in(page* any_in_section, std::size_t pfn) {
  auto base = reinterpret_cast<std::uintptr_t>(page_section(any_in_section));
  return reinterpret_cast<page*>(base + pfn * sizeof(page));
}

void add_to_free_list(zone* z, page* p, unsigned order, bool returned, std::uint64_t freed_ms) {
  set_page_flags(p, PG_buddy | (returned ? std::uint32_t{PG_returned} : 0u));
  set_page_order(p, order);
  p->freed_ms = freed_ms;
  free_area* a = &z->area[order];
  if (returned) {
    list_add(&p->lru, &a->returned_list);
    __atomic_store_n(&z->returned_pages, z->returned_pages + (std::size_t{1} << order),
                     __ATOMIC_RELAXED);
  } else {
    list_add(&p->lru, &a->free_list);  // newest first: reclaim takes the oldest from the tail
  }
  a->nr_free++;
  __atomic_store_n(&z->free_pages, z->free_pages + (std::size_t{1} << order), __ATOMIC_RELAXED);
}

// Is `b` the head of a free block of exactly `order` that can merge?
USLUB_ALWAYS_INLINE bool page_is_buddy(page* b, unsigned order) {
  return (page_flags(b) & PG_buddy) && b->order == order;
}

}  // namespace

void __del_page_from_free_list(zone* z, page* p, unsigned order) {
  lockdep_assert_held(&z->lock);
  list_del(&p->lru);
  z->area[order].nr_free--;
  // Atomic stores (under zone->lock): maybe_reclaim() reads them without the lock.
  __atomic_store_n(&z->free_pages, z->free_pages - (std::size_t{1} << order), __ATOMIC_RELAXED);
  if (page_flags(p) & PG_returned)
    __atomic_store_n(&z->returned_pages, z->returned_pages - (std::size_t{1} << order),
                     __ATOMIC_RELAXED);
  set_page_flags(p, 0);
}

void __free_one_page(zone* z, page* p, unsigned order, bool returned, std::uint64_t freed_ms) {
  lockdep_assert_held(&z->lock);
  std::size_t pfn = page_pfn(p);
  USLUB_ASSERT((pfn & ((std::size_t{1} << order) - 1)) == 0);
  // The freed block's own head flag (PG_pcp from a pcp list, PG_head) goes now: if it merges
  // into a lower buddy's block, its descriptor is an interior page that must carry nothing a
  // walker of the memory map would step by - an exact block (page_exact.cpp) taken over it
  // later is walked in steps that land on such interior pages.
  set_page_flags(p, 0);
  while (order < MAX_ORDER) {
    std::size_t buddy_pfn = pfn ^ (std::size_t{1} << order);
    if (buddy_pfn < FIRST_DATA_PFN) break;  // the descriptor area is never free
    page* buddy = pfn_to_page_in(p, buddy_pfn);
    // A buddy beyond the section's committed top has never been handed out: its descriptor
    // may not even be committed.  Growth hands out whole MAX_ORDER blocks, so a buddy inside
    // the same MAX_ORDER block is always committed.
    if (!page_is_buddy(buddy, order)) break;
    bool buddy_returned = page_flags(buddy) & PG_returned;
    // Equal halves: the merged block's idle time is their mean, so one fresh free neither
    // resets a large idle block's decay (max) nor makes fresh pages look idle (min).
    freed_ms = (freed_ms + buddy->freed_ms) / 2;
    __del_page_from_free_list(z, buddy, order);
    if (!buddy_returned) returned = false;  // the merged block is only partly returned
    pfn &= buddy_pfn;
    order++;
  }
  add_to_free_list(z, pfn_to_page_in(p, pfn), order, returned, freed_ms);
}

// Splits a block of order `high` down to `low`, freeing the upper halves (expand()).
static void expand(zone* z, page* p, unsigned low, unsigned high, bool returned,
                   std::uint64_t freed_ms) {
  std::size_t size = std::size_t{1} << high;
  while (high > low) {
    high--;
    size >>= 1;
    add_to_free_list(z, p + size, high, returned, freed_ms);
  }
}

// The head of the free block holding section-relative page pfn, or nullptr if pfn is not in a
// free block.  Probes the aligned heads of orders 0..MAX_ORDER around pfn (all inside pfn's
// MAX_ORDER block, whose descriptors are committed when pfn is below the section's top).
static page* free_block_containing(page* any_in_section, std::size_t pfn) {
  for (unsigned o = 0; o <= MAX_ORDER; ++o) {
    std::size_t hp = pfn & ~((std::size_t{1} << o) - 1);
    page* h = pfn_to_page_in(any_in_section, hp);
    if ((page_flags(h) & PG_buddy) && h->order >= o) return h;
  }
  return nullptr;
}

bool __range_is_free(zone* z, page* start, std::size_t nr) {
  lockdep_assert_held(&z->lock);
  std::size_t pfn = page_pfn(start), end = pfn + nr;
  if (pfn < FIRST_DATA_PFN || end > PAGES_PER_SECTION) return false;
  mem_section* sec = page_section(start);
  if (sec->zone != z || end > (sec->top.load(std::memory_order_acquire) >> PAGE_SHIFT))
    return false;
  while (pfn < end) {
    page* h = free_block_containing(start, pfn);
    if (!h) return false;
    pfn = page_pfn(h) + (std::size_t{1} << h->order);
  }
  return true;
}

void __free_range(zone* z, page* start, std::size_t nr, bool returned, std::uint64_t freed_ms) {
  lockdep_assert_held(&z->lock);
  std::size_t pfn = page_pfn(start), end = pfn + nr;
  while (pfn < end) {
    // The largest aligned block that starts at pfn and fits.
    unsigned o = pfn ? static_cast<unsigned>(__builtin_ctzll(pfn)) : MAX_ORDER;
    if (o > MAX_ORDER) o = MAX_ORDER;
    while ((std::size_t{1} << o) > end - pfn) --o;
    __free_one_page(z, pfn_to_page_in(start, pfn), o, returned, freed_ms);
    pfn += std::size_t{1} << o;
  }
}

bool __take_free_range(zone* z, page* start, std::size_t nr, bool* zeroed) {
  lockdep_assert_held(&z->lock);
  if (!__range_is_free(z, start, nr)) return false;
  std::size_t pfn = page_pfn(start), end = pfn + nr;
  bool all_returned = true;
  while (pfn < end) {
    page* h = free_block_containing(start, pfn);
    std::size_t hp = page_pfn(h), hend = hp + (std::size_t{1} << h->order);
    bool returned = page_flags(h) & PG_returned;
    std::uint64_t freed_ms = h->freed_ms;
    all_returned &= returned;
    __del_page_from_free_list(z, h, h->order);
    // The parts of the block outside the range go back as they were (expand's rule).  None of
    // them can merge: each one's buddy lies inside this block, in the range or in a smaller
    // part given back before it.
    if (hp < pfn) __free_range(z, h, pfn - hp, returned, freed_ms);
    if (hend > end) __free_range(z, pfn_to_page_in(start, end), hend - end, returned, freed_ms);
    pfn = hend;
  }
  *zeroed = all_returned;
  return true;
}

page* __rmqueue(zone* z, unsigned order, bool* zeroed) {
  lockdep_assert_held(&z->lock);
  for (unsigned o = order; o < NR_ORDERS; ++o) {
    free_area* a = &z->area[o];
    // Prefer resident blocks (no page faults); returned ones read as zeros.
    list_head* l = !list_empty(&a->free_list)       ? &a->free_list
                   : !list_empty(&a->returned_list) ? &a->returned_list
                                                    : nullptr;
    if (!l) continue;
    page* p = list_entry<page, &page::lru>(l->next);
    bool returned = page_flags(p) & PG_returned;
    std::uint64_t freed_ms = p->freed_ms;
    __del_page_from_free_list(z, p, o);
    expand(z, p, order, o, returned, freed_ms);
    *zeroed = returned;
    return p;
  }
  return nullptr;
}

}  // namespace uslub
