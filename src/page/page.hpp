// struct page: the descriptor of one 4 KiB page, and the memory map that finds it.
//
// Memory comes in sections (the kernel's SPARSEMEM): SECTION_SIZE-aligned reservations of
// SECTION_SIZE bytes whose first 1/64th holds the descriptors of the whole section, one 64-byte
// `page` per 4 KiB page.  Hence, for any address inside a section, with no table look-up:
//
//     page   = section_base + ((addr - section_base) >> PAGE_SHIFT) * sizeof(page)
//     addr   = section_base + ((page - section_base) / sizeof(page)) << PAGE_SHIFT
//
// Whether an address belongs to uslub at all is one load from mem_section[addr >> SECTION_SHIFT]
// (lookup_section).  The descriptor area is committed lazily together with the memory it
// describes, 64 KiB of descriptors per 4 MiB block.
//
// Descriptor layout: freelist and counters sit at offset 16 so that the slab layer can swap
// them together with one 16-byte compare-and-swap (cmpxchg16b needs 16-byte alignment: seed
// 000's local_lock-size bug moved such a pair off its alignment).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "base/compiler.hpp"
#include "base/list.hpp"
#include "platform/platform.hpp"

namespace uslub {

class page_allocator;
struct zone;

// MAX_ORDER: the largest block is 2^MAX_ORDER pages = 4 MiB (the kernel's MAX_PAGE_ORDER 10).
inline constexpr unsigned MAX_ORDER = 10;
inline constexpr unsigned NR_ORDERS = MAX_ORDER + 1;
inline constexpr std::size_t MAX_ORDER_BYTES = PAGE_SIZE << MAX_ORDER;
inline constexpr unsigned SECTION_SHIFT = 30;
inline constexpr std::size_t SECTION_SIZE = std::size_t{1} << SECTION_SHIFT;
inline constexpr std::size_t PAGES_PER_SECTION = SECTION_SIZE / PAGE_SIZE;
// Address bits covered by mem_section[] (47: the x86-64 / aarch64 user half without LA57).
inline constexpr unsigned ADDRESS_BITS = 47;

using gfp_t = unsigned;
inline constexpr gfp_t __GFP_ZERO = 1u << 0;      // return zeroed memory
inline constexpr gfp_t __GFP_COMP = 1u << 1;      // compound block: tails point to the head
inline constexpr gfp_t __GFP_THISNODE = 1u << 2;  // only the requested node's zone
inline constexpr gfp_t GFP_KERNEL = 0;
inline constexpr int NUMA_NO_NODE = -1;

// page->flags.  A descriptor is in exactly one of these states (the others are clear):
//   PG_head            allocated block of 2^order pages starting here
//   PG_buddy           free block head on a zone free list (order in ->order)
//   PG_pcp             order-(->order) block on a per-CPU page list
//   PG_isolated        free block taken off the lists by reclaim while its memory is returned
//   PG_tail            page inside an allocated __GFP_COMP block (->compound_head)
//   0                  page inside a block (free or allocated)
//   PG_reserved        the section's own descriptor area
// PG_returned qualifies PG_buddy/PG_pcp: the block's memory was returned to the OS (it reads
// as zeros).  PG_exact qualifies PG_head (alloc_pages_exact).  PG_slab and PG_large are set by
// the layers above on PG_head blocks.
inline constexpr std::uint32_t PG_head = 1u << 0;
inline constexpr std::uint32_t PG_buddy = 1u << 1;
inline constexpr std::uint32_t PG_pcp = 1u << 2;
inline constexpr std::uint32_t PG_isolated = 1u << 3;
inline constexpr std::uint32_t PG_tail = 1u << 4;
inline constexpr std::uint32_t PG_reserved = 1u << 5;
inline constexpr std::uint32_t PG_returned = 1u << 6;
inline constexpr std::uint32_t PG_comp = 1u << 7;
inline constexpr std::uint32_t PG_slab = 1u << 8;
inline constexpr std::uint32_t PG_large = 1u << 9;
inline constexpr std::uint32_t PG_frag = 1u << 10;  // a page of a frag_pool (page_frag.hpp)
// Qualifies PG_head: a block of ->nr_pages pages (any count up to 2^MAX_ORDER, not only powers
// of two) from alloc_pages_exact, freed with free_pages_exact.
inline constexpr std::uint32_t PG_exact = 1u << 11;

struct alignas(64) page {
  // Relaxed atomics: read without the owner's lock by error checks and by merge look-ups.
  std::atomic<std::uint32_t> flags;
  std::uint8_t order;
  std::uint8_t node;
  std::uint16_t nr_pages;  // PG_exact head: pages of the block (alloc_pages_exact)
  union {
    page* compound_head;       // PG_tail
    std::uint64_t freed_ms;    // PG_buddy: when the block became free (decay)
    std::uint64_t private_;    // owner's use
    std::uintptr_t slab_mask;  // PG_slab head: (PAGE_SIZE << order) - 1 (slab_offset)
  };
  // ---- 16-byte aligned pair for the slab layer's cmpxchg16b ----
  void* freelist;
  std::uint64_t counters;
  // ---- list links: free lists, pcp lists, slab lists ----
  list_head lru;
  void* slab_cache;
  std::uint64_t slab_private;
};
static_assert(sizeof(page) == 64, "page descriptors are 64 bytes: address arithmetic uses it");
static_assert(offsetof(page, freelist) % 16 == 0, "freelist+counters must be 16-byte aligned");
static_assert(offsetof(page, counters) == offsetof(page, freelist) + 8);
static_assert(SECTION_SIZE / PAGE_SIZE * sizeof(page) % MAX_ORDER_BYTES == 0,
              "the descriptor area must end on a MAX_ORDER boundary");

// The section header lives in the first descriptors of the section (they describe the
// descriptor area itself and are otherwise unused).
struct mem_section {
  std::uintptr_t base;
  page_allocator* owner;
  struct zone* zone;
  int node;
  // The section's NUMA binding (memmap.cpp new_section): 0 bound to `node` (MPOL_PREFERRED),
  // an errno if mbind refused, -1 not asked (numa_bind off, or zones are not the machine's
  // nodes).
  int bind_err;
  // Bytes from base that are committed (descriptor area first).  Grows by CAS.
  std::atomic<std::size_t> top;
  // Address space that could not be committed after top moved past it (not memory).
  std::atomic<std::size_t> lost;
  // The owner's sections, newest first (destroy, statistics).  Written once before publishing.
  mem_section* next_in_owner;
};
static_assert(sizeof(mem_section) <= 128);
// virt_to_slab reads the descriptor of any address of a section, the descriptor area's own
// included: slot 0 is this header, whose flags word is the low half of `base`, a multiple of
// SECTION_SIZE, so it never carries PG_tail or PG_slab; the other slots of the descriptor
// area's pages are never written (zero).
static_assert(offsetof(mem_section, base) == 0 && offsetof(page, flags) == 0 &&
              sizeof(mem_section) <= sizeof(page));
static_assert(SECTION_SIZE >= (std::size_t{1} << 30) && PG_tail < (1u << 30) &&
              PG_slab < (1u << 30));

inline constexpr std::size_t MEMMAP_BYTES = PAGES_PER_SECTION * sizeof(page);

// The slab map: one word per page of the section, right after the descriptors, holding the
// cache and order of the slab the page belongs to (slab.hpp: slab_map_entry), 0 for any other
// page.  The free fast path reads this word instead of the page's 64-byte descriptor: the same
// fact in an eighth of the memory (a 30 MiB heap's descriptors are 480 KiB, its map 60 KiB), so
// a free of a block nobody touched for a while finds it in the cache far more often.  Like the
// descriptor area it is made accessible when the section is created and becomes resident only
// where slabs are made.
inline constexpr std::size_t SLAB_MAP_BYTES = PAGES_PER_SECTION * sizeof(std::uintptr_t);
// Blocks start after the descriptors and the map, on a MAX_ORDER boundary (buddy alignment).
inline constexpr std::size_t SECTION_DATA_START =
    (MEMMAP_BYTES + SLAB_MAP_BYTES + MAX_ORDER_BYTES - 1) / MAX_ORDER_BYTES * MAX_ORDER_BYTES;
inline constexpr std::size_t FIRST_DATA_PFN = SECTION_DATA_START / PAGE_SIZE;

namespace detail {
extern std::atomic<mem_section*> g_mem_section[std::size_t{1} << (ADDRESS_BITS - SECTION_SHIFT)];
}

// The section holding addr, or nullptr if uslub never reserved it.
USLUB_ALWAYS_INLINE mem_section* lookup_section(const void* addr) {
  auto a = reinterpret_cast<std::uintptr_t>(addr);
  if (USLUB_UNLIKELY(a >> ADDRESS_BITS)) return nullptr;
  return detail::g_mem_section[a >> SECTION_SHIFT].load(std::memory_order_acquire);
}

// The first section uslub kept, as a one-compare answer to lookup_section for the heap's
// first GiB (kfree_inline): `addr - g_first_section < SECTION_SIZE` means addr is in a live
// section.  Set (release) once the section is kept, after its g_mem_section[] entry; reset
// by destroy() before that entry is cleared.  Until then it holds kNoFirstSection, a window
// of non-canonical addresses no user pointer has.
inline constexpr std::uintptr_t kNoFirstSection = std::uintptr_t{1} << 63;
namespace detail {
extern USLUB_HIDDEN std::atomic<std::uintptr_t> g_first_section;
}

// Descriptor of the page holding addr.  addr must be inside a section (see lookup_section).
USLUB_ALWAYS_INLINE page* virt_to_page(const void* addr) {
  auto a = reinterpret_cast<std::uintptr_t>(addr);
  std::uintptr_t base = a & ~(SECTION_SIZE - 1);
  return reinterpret_cast<page*>(base + (((a - base) >> PAGE_SHIFT) * sizeof(page)));
}

// The slab map word of the page holding addr.  addr must be inside a section.
USLUB_ALWAYS_INLINE std::uintptr_t* slab_map_slot(const void* addr) {
  auto a = reinterpret_cast<std::uintptr_t>(addr);
  std::uintptr_t base = a & ~(SECTION_SIZE - 1);
  return reinterpret_cast<std::uintptr_t*>(base + MEMMAP_BYTES +
                                           ((a - base) >> PAGE_SHIFT) * sizeof(std::uintptr_t));
}

USLUB_ALWAYS_INLINE void* page_address(const page* p) {
  auto d = reinterpret_cast<std::uintptr_t>(p);
  std::uintptr_t base = d & ~(SECTION_SIZE - 1);
  return reinterpret_cast<void*>(base + ((d - base) / sizeof(page) << PAGE_SHIFT));
}

USLUB_ALWAYS_INLINE mem_section* page_section(const page* p) {
  return reinterpret_cast<mem_section*>(reinterpret_cast<std::uintptr_t>(p) & ~(SECTION_SIZE - 1));
}

// Index of the page inside its section (the kernel's pfn, section-relative).
USLUB_ALWAYS_INLINE std::size_t page_pfn(const page* p) {
  return (reinterpret_cast<std::uintptr_t>(p) & (SECTION_SIZE - 1)) / sizeof(page);
}

USLUB_ALWAYS_INLINE std::uint32_t page_flags(const page* p) {
  return p->flags.load(std::memory_order_relaxed);
}
USLUB_ALWAYS_INLINE void set_page_flags(page* p, std::uint32_t f) {
  p->flags.store(f, std::memory_order_relaxed);
}
// Relaxed atomic like the flags: validate_slab_cache's memory-map walk reads it unlocked.
USLUB_ALWAYS_INLINE void set_page_order(page* p, unsigned order) {
  __atomic_store_n(&p->order, static_cast<std::uint8_t>(order), __ATOMIC_RELAXED);
}

// Head of the block holding p (for __GFP_COMP blocks; otherwise p itself).
USLUB_ALWAYS_INLINE page* compound_head(page* p) {
  return (page_flags(p) & PG_tail) ? p->compound_head : p;
}

}  // namespace uslub
