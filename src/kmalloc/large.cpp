// Large blocks: above KMALLOC_MAX_CACHE_SIZE (32 KiB) up to MAX_ORDER_BYTES (4 MiB), straight
// from the page allocator.
//
// A block takes exactly the pages it needs (alloc_pages_exact: the rest of the power-of-two
// block stays in the buddy lists), so a 600 000-byte block costs 147 pages, not 256.  The head
// descriptor has PG_large, and the requested size in slab_private (ksize is that size in whole
// pages: krealloc copies only it, never untouched pages beyond the request, which reading would
// fault in).  A block aligned to more than a page (aligned_alloc, posix_memalign) is a
// power-of-two block, naturally aligned.  krealloc resizes an exact block in place when the
// pages after it are free (growing) or gives its tail back (shrinking).
//
// Locking: none here; the page allocator's rules (page_alloc.hpp).  A large block's head is
// written only by its owner (allocation, free, realloc), like any allocated block's.
#include <errno.h>

#include <cstring>

#include "base/bits.hpp"
#include "base/check.hpp"
#include "kmalloc/kmalloc.hpp"
#include "page/pressure.hpp"

namespace uslub {

void* kmalloc_large(std::size_t size, gfp_t gfp, std::size_t align) {
  std::size_t need = size > align ? size : align;
  if (need > MAX_ORDER_BYTES) return huge_alloc(size, align, gfp & __GFP_ZERO);
  std::size_t nr = (need + PAGE_SIZE - 1) / PAGE_SIZE;
  page_allocator& pa = global_page_allocator();
  // Not __GFP_COMP: marking up to 1023 tail descriptors per block costs more than it buys;
  // kfree only needs the head (an interior pointer is still reported, as "not allocated").
  auto alloc = [&] {
    return align > PAGE_SIZE ? pa.alloc_pages(order_base_2(nr), gfp)
                             : pa.alloc_pages_exact(nr, gfp);
  };
  page* p = alloc();
  // At the memory limit: shrink every cache (no lock is held here) and retry before failing.
  if (!p && pa.config().memory_limit) {
    shrink_all_memory(shrink_reason::limit);
    p = alloc();
  }
  if (!p) {
    errno = ENOMEM;
    return nullptr;
  }
  set_page_flags(p, page_flags(p) | PG_large);
  __atomic_store_n(&p->slab_private, static_cast<std::uint64_t>(size), __ATOMIC_RELAXED);
  return page_address(p);
}

void large_free(page* head) {
  std::uint32_t f = page_flags(head) & ~PG_large;
  set_page_flags(head, f);
  if (f & PG_exact)
    global_page_allocator().free_pages_exact(head, head->nr_pages);
  else
    global_page_allocator().free_pages(head, head->order);
}

page* large_head(const mem_section* sec, const void* p) {
  auto off = reinterpret_cast<std::uintptr_t>(p) - sec->base;
  if (off < SECTION_DATA_START || off >= sec->top.load(std::memory_order_acquire)) return nullptr;
  page* head = compound_head(virt_to_page(p));
  return (page_flags(head) & PG_large) && page_address(head) == p ? head : nullptr;
}

std::size_t large_usable(const page* head) {
  return align_up(__atomic_load_n(&head->slab_private, __ATOMIC_RELAXED), PAGE_SIZE);
}

bool large_realloc_in_place(page* head, std::size_t have, std::size_t new_size, gfp_t gfp) {
  if (new_size > MAX_ORDER_BYTES) return false;
  void* p = page_address(head);
  std::size_t nr = (new_size + PAGE_SIZE - 1) / PAGE_SIZE;
  if (page_flags(head) & PG_exact) {
    // Shrinking gives the tail back; growing takes the free pages after the block.
    if (!global_page_allocator().resize_pages_exact(head, nr)) return false;
  } else {
    // A power-of-two (aligned) block: in place while the size fits and uses over half of it.
    std::size_t block = PAGE_SIZE << head->order;
    if (new_size > block || new_size <= block / 2) return false;
  }
  if ((gfp & __GFP_ZERO) && new_size > have)
    memset(static_cast<char*>(p) + have, 0, new_size - have);
  __atomic_store_n(&head->slab_private, static_cast<std::uint64_t>(new_size), __ATOMIC_RELAXED);
  return true;
}

namespace {
// Empty slabs and per-CPU sheaves go back to the page allocator (counted by its reclaim);
// slab_mutex is held only between caches.
std::size_t shrink_slab_caches(shrink_reason) {
  kmem_cache_shrink_all();
  return 0;
}
std::size_t shrink_huge_cache(shrink_reason) {
  return huge_trim();
}
constinit shrinker slab_shrinker{"slab caches", shrink_slab_caches, false, nullptr};
// huge_lock is a leaf never held across a page allocation: safe inside a failing one.
constinit shrinker huge_shrinker{"huge block cache", shrink_huge_cache, true, nullptr};
constinit std::atomic<bool> shrinkers_registered{false};
}  // namespace

void kmalloc_pressure_init() {
  if (!shrinkers_registered.exchange(true)) {
    register_shrinker(&slab_shrinker);
    register_shrinker(&huge_shrinker);
  }
  pressure_init_from_env();
}

}  // namespace uslub
