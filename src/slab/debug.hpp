// slub_debug for user space (mm/slub.c's debugging, seed 000): red zones, poisoning, alloc/free
// tracking, tracing, consistency checks and failslab, chosen at run time per cache.
//
// Who gets debugging: flags passed to kmem_cache_create (SLAB_RED_ZONE, SLAB_POISON,
// SLAB_STORE_USER, SLAB_TRACE, SLAB_CONSISTENCY_CHECKS, SLAB_FAILSLAB) and USLUB_DEBUG, with
// slub_debug's grammar (parsed by parse_slub_debug):
//     USLUB_DEBUG=<letters>[,<cache>[,<cache>...]][;<letters>,<cache>...]...
//   letters F consistency checks, Z red zones, P poisoning, U alloc/free tracking, T trace,
//   A failslab (USLUB_FAILSLAB=probability%,interval,times), O skip caches whose slab order
//   debugging would raise, - none (a later list may re-enable some caches).  A block without a
//   cache list applies to every cache no list names; an empty letter set means FZPU.  A cache
//   name ending in '*' matches every cache with that prefix (kmalloc-*).
//
// Object layout of a debug cache (offsets from the object pointer p; kernel names):
//   [p - red_left_pad, p)        left red zone                      (Z)
//   [p, p + object_size)         the object; poisoned while free     (P)
//   [p + object_size, p + inuse) right red zone, at least one word  (Z)
//   [p + offset, +8)             the free pointer (always outside the object here)
//   [p + track_offset, +2*32)    struct track alloc, free            (U)
//   [p + orig_size_offset, +8)   the requested size of a kmalloc object (Z or U)
//   [..., next object)           padding, filled with POISON_INUSE   (Z or P)
// An allocated kmalloc object's red zone starts at its requested size (orig_size), so p[n]
// after kmalloc(n) is caught even inside the size class's slack; ksize() then returns n.
//
// Locking (adds nothing to slab.hpp's order): a debug cache never uses its CPU slots or
// sheaves; every allocation and free takes the node's list_lock (the kernel's
// alloc_single_from_partial / free_to_partial_list), so the checks see a stable slab.  The
// object itself is checked outside the lock where it belongs to the caller (red zones at free,
// poison after an allocation took it), and every report is printed with no uslub lock held:
// symbolising a stack may call malloc, which may be uslub's.
//
// Reports: "uslub: BUG <cache>: <problem>" (report_bug), then the bad bytes, the object, its
// slab, with U the allocating and freeing thread, CPU, age and stack, a hex dump of the red
// zones, the object and the padding, and the "FIX" line saying what was restored.  Then uslub
// goes on (the kernel's behaviour) unless USLUB_DEBUG_ABORT=1.
#pragma once

#include <cstddef>

#include "slab/slab.hpp"

namespace uslub {

// Internal flag of USLUB_DEBUG's 'O' letter: drop debugging where it would raise the order.
inline constexpr slab_flags_t SLAB_DEBUG_SKIP_HIGHER_ORDER = 0x40000000u;

inline constexpr unsigned char SLUB_RED_INACTIVE = 0xbb;
inline constexpr unsigned char SLUB_RED_ACTIVE = 0xcc;
inline constexpr unsigned char POISON_INUSE = 0x5a;
inline constexpr unsigned char POISON_FREE = 0x6b;
inline constexpr unsigned char POISON_END = 0xa5;

// The flags USLUB_DEBUG adds to (or, with '-', removes from) a cache called name.
slab_flags_t kmem_cache_flags(const char* name, slab_flags_t flags);
// Parses a USLUB_DEBUG value into the rules kmem_cache_flags applies (tests call it directly;
// the environment is read once at start-up).  Returns false (and reports the first bad letter
// with report_info) if something was not understood; the rest still applies.
bool parse_slub_debug(const char* value);

// Geometry: the debug part of calculate_sizes.  Returns the object stride (before alignment).
std::size_t debug_calculate_sizes(kmem_cache* s, std::size_t size, std::size_t align);
// Fills a new slab's objects (red zones, poison, padding) before it is published.
void debug_init_slab(kmem_cache* s, page* slab);

// The debug paths (all allocations and frees of a cache with kmem_cache_debug(s)).
// orig_size 0 means object_size; may_fail false skips failslab (bulk decides once per call).
USLUB_SLOWPATH void* debug_slab_alloc(kmem_cache* s, gfp_t gfp, int node, std::size_t orig_size,
                                      bool may_fail = true);
// [head..] is a list of cnt objects of slab linked by their free pointers (bulk free).
USLUB_SLOWPATH void debug_slab_free(kmem_cache* s, page* slab, void* head, unsigned cnt);
// failslab: should this allocation fail?  (SLAB_FAILSLAB caches only.)
bool should_failslab(kmem_cache* s);
// Sets failslab's attributes (what USLUB_FAILSLAB=probability,interval,times does).
void set_failslab(unsigned probability, unsigned long interval, long times);

// The requested size of a kmalloc object of a debug cache (object_size if not tracked).
std::size_t debug_orig_size(const kmem_cache* s, const void* obj);

// validate_slab_cache's per-object part: checks every object of a quiescent slab (red zones,
// poison of free objects, padding).  Reports and returns false at the first bad object.
bool debug_validate_slab(kmem_cache* s, page* slab);

// "Objects remaining on destroy": lists up to a few live objects with their allocation stacks.
std::size_t debug_list_objects(kmem_cache* s, char* buf, std::size_t len, std::size_t cap);

// At exit (and on demand): validates every cache with F, and with U prints the objects never
// freed grouped by allocation stack, largest first.  Returns the number of leaked objects.
std::size_t slub_debug_leak_report(int fd);
void slub_debug_exit_checks();

}  // namespace uslub
