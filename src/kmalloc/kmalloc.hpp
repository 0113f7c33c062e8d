// kmalloc: size classes over kmem_cache, large blocks from the page allocator, huge ones from
// mmap (the kernel's kmalloc_caches[] and kmalloc_large).
//
// Size classes: 8, then 16-byte steps to 128, then four classes per power of two up to 32 KiB
// (160, 192, 224, 256, 320, ...): at most 25 % internal waste above 128 B (the kernel's powers
// of two plus 96/192 waste up to 50 %).  Every class above 8 is a multiple of 16, so objects
// are 16-byte aligned; power-of-two classes are aligned to their size (slabs are buddy blocks,
// aligned to their own size), which serves aligned allocations up to 32 KiB.
//
// Above 32 KiB: exactly the pages needed from the page allocator (alloc_pages_exact; a block
// aligned to more than a page is a power-of-two block), PG_large on the head, the requested
// size in head->slab_private (large.cpp).  Above MAX_ORDER (4 MiB): mmap, remembered in a hash
// table (huge.cpp) so that kfree can tell its blocks from foreign pointers.
//
// Locking: the class table is written once at initialisation; the caches follow slab.hpp's
// rules, the huge-block table its own (huge.cpp).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kfence/kfence.hpp"
#include "slab/cache_alloc.hpp"
#include "slab/sheaf.hpp"

// Prefetch (for writing) the object the next malloc of the class will return, after a pop:
// off by default (-DUSLUB_KMALLOC_PREFETCH=1 turns it on): the pair ran 7 % slower with it
// (3.89 against 3.63 ns, its next object is the one just freed) and alloc-test showed no
// difference above the noise.
#ifndef USLUB_KMALLOC_PREFETCH
#define USLUB_KMALLOC_PREFETCH 0
#endif
#include "slab/slab.hpp"

namespace uslub {

inline constexpr std::size_t KMALLOC_MAX_CACHE_SIZE = 32768;
inline constexpr unsigned kNrKmallocClasses = 41;  // 8, 16..128 by 16, 4 per doubling to 32 KiB

// What free needs of a class (the class fast path, kfree_inline): no kmem_cache load.
struct kmalloc_class_info {
  std::uint64_t boundary_mul;  // the cache's (slab_object_start; no red zone on this path)
  std::uint64_t key_secret;    // the cache's s->random: the free key is secret ^ address
};

struct kmalloc_state {
  // The malloc fast path's gate: the per-CPU slot area (sheaf.hpp) while kmalloc is up, the
  // slots are on rseq and KFENCE is off; nullptr otherwise (every kmalloc then takes
  // kmalloc_slow).  Published with one release store after index[], cls[] and the caches,
  // and read with an acquire load before index[]: a thread that sees it sees the tables
  // (before it, index[] may be half written: issue 17's start-up race).
  char* fast_area;
  // 0 before kmalloc_init, 1 during it, 2 once initialised, 3 initialised with KFENCE sampling
  // on (every kmalloc then takes kmalloc_slow, where KFENCE's sampling runs).
  std::atomic<int> ready;
  kmalloc_class_info cls[kNrKmallocClasses];
  kmem_cache* caches[kNrKmallocClasses];
  unsigned sizes[kNrKmallocClasses];
  unsigned nr;
  // (size + 7) / 8 -> class, for size <= KMALLOC_MAX_CACHE_SIZE.
  std::uint8_t index[KMALLOC_MAX_CACHE_SIZE / 8 + 1];
};
extern USLUB_HIDDEN kmalloc_state g_kmalloc;
static_assert(kNrKmallocClasses <= kNrKmallocSlots);

// The double-free check of the class path (docs/debug.md): every free compares the object
// with the slot's top one (in a row) and stores its free key; one free in
// kDoubleFreeSampleRate per CPU and class checks the key first, as do frees that miss the
// slot.  The count is the slot's tick (sheaf_slot, rseq_slot_push): the keyed push adds
// platform::detail::g_slot_tick_inc[0] = 1 + 2^32 / rate to the 32-bit word {size, tick} it
// commits anyway, and a carry out of it sends the free to the checked path, which pushes with
// g_slot_tick_inc[1] (the same step; strict: 1, the tick held at 0xffff so that every add
// carries).  USLUB_DOUBLE_FREE=strict makes the rate 1 (every free checked),
// USLUB_DOUBLE_FREE=0 takes the key off.
inline constexpr std::int32_t kDoubleFreeSampleRate = 64;
extern std::int32_t g_double_free_rate;  // kDoubleFreeSampleRate, or 1 (strict)
// Sets the rate (a power of two, 1: strict) and the class slots' ticks to match (strict:
// 0xffff on every CPU; a push committing at that moment may put one unchecked free before
// it).  kmalloc_init calls it; tests too.
void kmalloc_set_double_free_rate(std::int32_t rate);

USLUB_SLOWPATH void kmalloc_init();

// Context: kmalloc initialised (ready >= 2, read with acquire).
USLUB_ALWAYS_INLINE unsigned kmalloc_index(std::size_t size) {
  return __atomic_load_n(&g_kmalloc.index[(size + 7) >> 3], __ATOMIC_RELAXED);
}
USLUB_ALWAYS_INLINE kmem_cache* kmalloc_slab(std::size_t size) {
  return g_kmalloc.caches[kmalloc_index(size)];
}

// Out-of-line parts.
void* kmalloc_slow(std::size_t size, gfp_t gfp);  // init, large, huge
// Large blocks (large.cpp).
void* kmalloc_large(std::size_t size, gfp_t gfp, std::size_t align);
void large_free(page* head);  // head: a PG_large head at its block's start
// The head of the large block that starts at p, or nullptr; sec is p's section.
page* large_head(const mem_section* sec, const void* p);
// A large block's usable size: what was asked for, in whole pages.
std::size_t large_usable(const page* head);
// krealloc of a large block without moving it (to new_size <= MAX_ORDER_BYTES); false if the
// block cannot be resized where it is.  have: its usable size.
bool large_realloc_in_place(page* head, std::size_t have, std::size_t new_size, gfp_t gfp);
// Registers kmalloc's shrinkers (slab caches, huge block cache) and starts the pressure monitor
// if USLUB_PRESSURE=1 (pressure.hpp).  Called at the end of kmalloc_init.
void kmalloc_pressure_init();
void kfree_slow(const void* p, const char* caller);  // large, huge, foreign
std::size_t ksize_slow(const void* p);
// Is p an object of a debug cache (debug.hpp)?
bool kmalloc_debug_object(const void* p);
// Aligned allocation (align a power of two): NULL + errno on failure.
void* kmalloc_aligned(std::size_t size, std::size_t align, gfp_t gfp);
// Is p a block uslub handed out (slab object, large or huge block)?  Never faults.
bool kmalloc_owns(const void* p);

// kfree_rcu (kfree_rcu.cpp): objects waiting for a grace period now, and the most ever.
// batches: page batches handed to call_rcu and not yet freed (peak_batches: the most ever).
struct kfree_rcu_stats {
  long pending, peak, batches, peak_batches;
};
kfree_rcu_stats kfree_rcu_get_stats();
// More batches than this in flight: a producer outside any read section waits for them.
inline constexpr long kKfreeRcuMaxBatches = 256;
// Tests: while on, kfree_rcu finds no page for a new batch (its out-of-memory fallbacks).
void kfree_rcu_fail_batches_for_test(bool on);

// Huge blocks (> MAX_ORDER_BYTES): huge.cpp
void* huge_alloc(std::size_t size, std::size_t align, bool zero);
bool huge_free(const void* p);                            // false if p is not a huge block
void* huge_realloc(const void* p, std::size_t new_size);  // mremap; nullptr if not done
std::size_t huge_size(const void* p);                     // 0 if p is not a huge block
std::size_t huge_bytes();                                 // total mapped (live and cached)
std::size_t huge_trim();  // unmaps the cache of freed blocks; bytes released
struct huge_cache_stats {
  std::size_t live_bytes, cached_bytes, cached_blocks;
  std::uint64_t hits, misses, released;  // allocations from the cache / from mmap; unmapped
  std::uint64_t assembled, moved_bytes;  // fresh blocks retained pieces were moved into; bytes
};
huge_cache_stats huge_get_stats();
void huge_fork_prepare();  // takes huge_lock (a leaf) across fork
void huge_fork_release();

// KFENCE on (sample > 0: one kmalloc in sample per thread) or off (0) for kmalloc and malloc;
// false if the guarded pool cannot be mapped.
bool kmalloc_kfence_init(std::uint32_t sample, unsigned pool_objects);

// Out-of-line halves of the class paths (kmalloc.cpp).
void* kmalloc_class_miss(unsigned c, std::size_t size);
void kfree_class_slow(unsigned c, void* obj, platform::slot_push why);

// The hit path: size -> class (index[]) -> this CPU's slot of the class -> pop, and the free
// key's clear (offset 0 for kmalloc caches); no kmem_cache, lock word or sheaf header.  A miss
// of the slot goes to kmalloc_class_miss (cache_alloc_slow), anything else (not initialised,
// KFENCE, zeroing, large sizes, no rseq) to kmalloc_slow.
USLUB_ALWAYS_INLINE void* kmalloc_inline(std::size_t size, gfp_t gfp) {
#if USLUB_HAVE_RSEQ_ASM
  if (USLUB_LIKELY(size <= KMALLOC_MAX_CACHE_SIZE)) {
    // Acquire (a plain load on x86): the tables were written before (kmalloc_init).
    char* area = __atomic_load_n(&g_kmalloc.fast_area, __ATOMIC_ACQUIRE);
    if (USLUB_LIKELY(area != nullptr) && gfp == 0) {
      unsigned c = __atomic_load_n(&g_kmalloc.index[(size + 7) >> 3], __ATOMIC_RELAXED);
      void* obj = platform::rseq_slot_pop<kPcpuShift, kKmallocSlot0 * sizeof(sheaf_slot),
                                          USLUB_KMALLOC_PREFETCH>(area, c * sizeof(sheaf_slot));
      if (USLUB_LIKELY(obj)) {
        if (!USLUB_NO_FREE_CHECKS) *static_cast<std::uintptr_t*>(obj) = 0;  // the free key
        return obj;
      }
      return kmalloc_class_miss(c, size);
    }
  }
#endif
  return kmalloc_slow(size, gfp);
}

// The cache of a kmalloc'd object from the slab map (slab.hpp), validated like
// slab_free_check_inline (object boundary by slab_object_start); nullptr if p is not a slab
// object start.  The slab's descriptor is not read: the slow halves look it up if they need it.
USLUB_ALWAYS_INLINE kmem_cache* kfree_cache_check(const void* p) {
  std::uintptr_t entry = slab_map_entry(p);
  kmem_cache* s = slab_map_cache(entry);
  if (USLUB_UNLIKELY(!s)) return nullptr;
  if (!USLUB_NO_FREE_CHECKS && USLUB_UNLIKELY(!slab_object_start(s, slab_map_offset(entry, p))))
    return nullptr;
  return s;
}

// A class tag in the slab map word ((class + 1) << 4 | order: the class's cache is on the
// class path) sends the free straight to the class's slot: boundary check by the class's
// multiplier, in-a-row compare, free key stored (never loaded: docs/debug.md) and the push.
USLUB_ALWAYS_INLINE void kfree_inline(const void* p, const char* caller) {
#if USLUB_HAVE_RSEQ_ASM
  // The first section by one range compare (page.hpp), the section table for the others.
  auto a = reinterpret_cast<std::uintptr_t>(p);
  std::uintptr_t first = detail::g_first_section.load(std::memory_order_relaxed);
  std::uintptr_t entry =
      USLUB_LIKELY(a - first < SECTION_SIZE)
          ? __atomic_load_n(reinterpret_cast<std::uintptr_t*>(first + MEMMAP_BYTES) +
                                ((a - first) >> PAGE_SHIFT),
                            __ATOMIC_ACQUIRE)
          : slab_map_entry(p);
  // tag = (class + 1) << 4 indexes the class table and the slot from one below class 0 (both
  // have 16-byte entries): no shift of the class.
  static_assert(sizeof(kmalloc_class_info) == 16 && sizeof(sheaf_slot) == 16);
  if (std::uintptr_t tag = entry & ~SLAB_MAP_ORDER_MASK;
      USLUB_LIKELY(tag - 16 < kNrKmallocClasses * 16)) {
    const auto& ci = *reinterpret_cast<const kmalloc_class_info*>(
        reinterpret_cast<const char*>(g_kmalloc.cls) - 16 + tag);
    std::uintptr_t off = slab_map_offset(entry, p);
    if (!USLUB_NO_FREE_CHECKS && USLUB_UNLIKELY(off * ci.boundary_mul >= ci.boundary_mul))
      return kfree_slow(p, caller);  // not an object start: reported there
    void* obj = const_cast<void*>(p);
    constexpr auto kind =
        USLUB_NO_FREE_CHECKS ? platform::push_kind::plain : platform::push_kind::keyed;
    platform::slot_push r =
        platform::rseq_slot_push<kPcpuShift, (kKmallocSlot0 - 1) * sizeof(sheaf_slot), kind>(
            pcpu_area(), tag, obj, static_cast<std::uintptr_t*>(obj),
            ci.key_secret ^ reinterpret_cast<std::uintptr_t>(p));
    if (USLUB_LIKELY(r == platform::slot_push::ok)) return;
    return kfree_class_slow(static_cast<unsigned>(tag >> 4) - 1, obj, r);
  }
#else
  std::uintptr_t entry = slab_map_entry(p);
#endif
  kmem_cache* s = slab_map_cache(entry);
  if (USLUB_LIKELY(s) &&
      (USLUB_NO_FREE_CHECKS || USLUB_LIKELY(slab_object_start(s, slab_map_offset(entry, p)))))
    return cache_free(s, nullptr, const_cast<void*>(p));
  if (p) kfree_slow(p, caller);
}

}  // namespace uslub
