// SLUB: the kmem_cache object allocator (mm/slub.c, seed 000), internal definitions.
//
// Lock order (outermost first; seed 000 patch 35 plus its hotplug fix):
//   0. slab_shrink_mutex      serialises kmem_cache_shrink_all walkers (slab_common.cpp); no
//                             allocation path takes it; slab_mutex is taken under it only
//                             for one step of the cache list at a time
//   1. slab_mutex             the list of caches; create / merge / destroy
//   2. flush_mutex            serialises flush_all() (the kernel's flush_lock)
//   3. kmem_cache_node::list_lock   one node's partial list and nr_partial
//   4. kmem_cache_cpu::lock   slow-path changes to one CPU slot (local_trylock_t)
// (then the page allocator's own locks, which never call back into slab).
// percpu_area_lock (percpu_area.hpp) is a leaf beside them: the per-CPU areas' shared pages,
// taken at cache creation and destruction with nothing else called under it.
// destroy and shrink take slab_mutex before flush_mutex, never the reverse: seed 000's
// "flush_lock -> cpu_hotplug_lock" inversion is exactly the bug this order prevents.
// 3 and 4 are never held across the page allocator's growth (no lock across a system call):
// the slow path drops the slot lock before get_partial()/new_slab().  1 is held by destroy and
// uslub_cpu_offline across one cache's flushes and slab discards, 2 by each cache's flush_all
// and sheaf drain (the page allocator's free path, which runs at most one bounded reclaim
// step, and sheaf drains' membarriers); shrinking every cache (kmem_cache_shrink_all: the
// shrinkers, malloc_trim) holds 1 only between caches and 3 for kShrinkBatch slabs at a time
// (slab_common.cpp, __kmem_cache_shrink).  Never across RCU's fork gate (slab_config_lock).
//
// list_lock protects n->partial, n->nr_partial and the membership of slabs on it (slab->lru).
// It does not protect slab->freelist/counters: those change only by cmpxchg_double_slab
// (one 16-byte CAS), so remote frees never take a list lock unless the slab changes lists.
//
// kmem_cache_cpu::lock (trylock only, like seed 003's pcp lock) protects c->slab, c->partial,
// the CPU slab's virgin range (c->virgin, c->virgin_end) and the slow-path updates of
// c->freelist.  User space is PREEMPT_RT: threads sharing a CPU
// slot interleave at any instruction and a thread may still use a slot after migrating, so
//   - every change of c->freelist, by fast or slow path, is one 16-byte CAS of
//     (c->freelist, c->tid) that also advances tid;
//   - a slow path changes c->slab only while holding c->lock, and stores c->slab *before*
//     the CAS that advances tid; fast paths load tid (acquire) *before* c->slab and c->freelist.
// Hence a fast path whose CAS succeeds saw the c->slab that matches the list it changed: any
// slow-path change in between advanced tid and fails the CAS (the kernel's tid argument,
// with "another thread on this slot" in place of "an interrupt").  A slot lock that is busy
// (its holder may be preempted) sends the slow path to the node (alloc_single_from_partial /
// new slab returned single) instead of waiting.
//
// Lockless paths: slab_alloc_node / do_slab_free fast paths (tid + CAS above); __slab_free's
// remote free (CAS on slab freelist+counters; list_lock only when the slab changes list).
// Reading a stale object's free pointer in the alloc fast path is safe: slab memory is never
// unmapped (the page allocator only madvises it, which reads as zeros), and the CAS fails.
// The slab map (page.hpp; slab_map_entry below) is written without a lock by the one thread
// that creates or discards the slab: allocate_slab stores each page's word (release) after
// PG_slab, discard_slab clears the words before PG_slab and before the pages leave (or, for
// SLAB_TYPESAFE_BY_RCU, before the grace period).  kfree reads it lockless: a free of a live
// object finds its slab's word (the allocation that handed the object out came after the
// store); a word read as 0 sends kfree to kfree_slow, which classifies the address from the
// descriptors (and reports it: the slab was empty, so the free is a double free).
//
// Slab states (slab = head page descriptor; counters = inuse:16 objects:15 frozen:1):
//   frozen, c->slab          the CPU slab: only its CPU slot takes slab->freelist
//   frozen, on c->partial    a CPU's partial list: on no node list
//   !frozen, on n->partial   has free objects; found by get_partial_node under list_lock
//   !frozen, full            freelist == NULL, on no list (a free makes it frozen/partial)
//   empty                    inuse == 0: discarded when nr_partial >= min_partial
// Invariant (validate): inuse + |slab->freelist| + |objects on the owning CPU freelist| +
// |its virgin range| == objects; inuse counts objects handed to a CPU freelist or left in its
// virgin range as in use.
//
// Lazy carving (mimalloc's free-list extension, snmalloc's bump allocation): a new slab's
// objects are not linked when it is made.  The slab becomes the CPU slab with the objects its
// allocation did not take as the CPU's virgin range [c->virgin, c->virgin_end): never written
// by uslub, taken by address by the slow path (a bulk refill takes what it needs, a single
// allocation also links the rest of the page into the CPU freelist), and linked only if the
// CPU slab is detached (detach_cpu_slab) before the range is used up.  So a slab's pages
// become resident as its objects are handed out, not all at once in the call that made it:
// the faults of a 32-KiB slab of 4-KiB objects are spread over the allocations that use it,
// and a class a program allocates once costs a page, not a slab.
#pragma once

#include <uslub/slab.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "base/compiler.hpp"
#include "base/list.hpp"
#include "page/page_alloc.hpp"
#include "sync/local_lock.hpp"
#include "sync/spinlock.hpp"

namespace uslub {

// Flags that forbid merging (debugging or special semantics).
inline constexpr slab_flags_t SLAB_NEVER_MERGE = SLAB_RED_ZONE | SLAB_POISON | SLAB_STORE_USER |
                                                 SLAB_TRACE | SLAB_TYPESAFE_BY_RCU | SLAB_NO_MERGE |
                                                 SLAB_CONSISTENCY_CHECKS | SLAB_FAILSLAB;
// Flags that must agree for two caches to merge.
inline constexpr slab_flags_t SLAB_MERGE_SAME =
    SLAB_HWCACHE_ALIGN | SLAB_STATS | SLAB_NO_SHEAVES | SLAB_SHEAVES;
inline constexpr slab_flags_t SLAB_DEBUG_FLAGS =
    SLAB_RED_ZONE | SLAB_POISON | SLAB_STORE_USER | SLAB_TRACE | SLAB_CONSISTENCY_CHECKS;
// Internal: a kmalloc size class (its objects' requested size is tracked under Z or U).
inline constexpr slab_flags_t SLAB_KMALLOC = 0x20000000u;
// Caches whose every allocation and free take the debug path (debug.hpp): no sheaves, no CPU
// slab, every object checked under the node's list_lock.
inline constexpr slab_flags_t SLAB_DEBUG_PATH = SLAB_DEBUG_FLAGS | SLAB_FAILSLAB;

inline constexpr unsigned kSlabMaxOrder = 3;  // slub_max_order
inline constexpr unsigned kMaxObjsPerSlab = 32767;

// The slab's counters word, swapped together with slab->freelist.
union slab_counters {
  std::uint64_t v;
  struct {
    std::uint32_t inuse : 16;
    std::uint32_t objects : 15;
    std::uint32_t frozen : 1;
    std::uint32_t unused;
  };
};
static_assert(sizeof(slab_counters) == 8);

// Per-CPU slot.  freelist+tid first, 16-byte aligned, for cmpxchg16b (seed 000's
// misalignment bug was a lock placed before them).
struct alignas(kDestructiveLine) kmem_cache_cpu {  // 128: no adjacent-line sharing
  void* freelist;                                  // CAS with tid only
  std::uint64_t tid;                               // CAS with freelist only
  page* slab;                                      // lock; stored before the tid-advancing CAS
  page* partial;     // lock; frozen slabs linked by slab->lru.next, count in slab_private
  char* virgin;      // lock: the CPU slab's objects never handed out (lazy carving, above) ...
  char* virgin_end;  // ... up to here; virgin == virgin_end: none
  local_trylock_t lock;
};
static_assert(offsetof(kmem_cache_cpu, freelist) == 0 && offsetof(kmem_cache_cpu, tid) == 8);
static_assert(alignof(kmem_cache_cpu) % 16 == 0);

// Statistics of one CPU slot: racy relaxed load+store (threads sharing the slot can lose an
// increment, as the kernel's raw_cpu_inc can under preemption).
struct alignas(64) kmem_cache_cpu_stats {
  std::atomic<std::uint64_t> stat[NR_SLUB_STAT_ITEMS];
};

struct kmem_cache_node {
  spinlock_t list_lock;
  std::size_t nr_partial;  // list_lock
  list_head partial;       // list_lock
  std::atomic<long> nr_slabs{0};
  std::atomic<long> total_objects{0};
};

struct slub_percpu_sheaves;
struct node_barn;
struct slab_sheaf;
}  // namespace uslub

// The C API names this type (include/uslub/slab.h), so it lives in the global namespace.
// 64-byte aligned: the slab map keeps the slab's order in the low bits of a cache's address.
struct alignas(64) kmem_cache {
  using kmem_cache_cpu = uslub::kmem_cache_cpu;
  using kmem_cache_cpu_stats = uslub::kmem_cache_cpu_stats;
  using kmem_cache_node = uslub::kmem_cache_node;
  using page_allocator = uslub::page_allocator;
  using list_head = uslub::list_head;
  // Hot fields first: the fast paths read only the first two cache lines of kmem_cache.
  uslub::slub_percpu_sheaves* cpu_sheaves;  // null: the classic per-CPU slab fast path
  bool sheaf_fast_alloc;       // sheaves on rseq, no statistics: the inline alloc hit path applies
  bool sheaf_fast_free;        // ... and one node: the inline free hit path applies (free key on)
  bool sheaf_fast_free_plain;  // the same with the free key off (USLUB_DOUBLE_FREE=0)
  unsigned slot_off;           // this cache's hot slot in each CPU's slot area (sheaf.hpp)
  bool free_key;               // the always-on double-free check (sheaf.hpp) is on
  kmem_cache_cpu* cpu_slab;    // nr_cpu_ids slots
  kmem_cache_cpu_stats* cpu_stats;  // nullptr unless SLAB_STATS
  slab_flags_t flags;
  unsigned size;         // object stride in the slab
  unsigned object_size;  // what the user asked for
  unsigned offset;       // free pointer offset inside the object
  unsigned align;
  // slub_debug layout (debug.hpp), offsets from the object start; all 0 without debugging:
  unsigned red_left_pad;            // left red zone, before the object (the object starts after it)
  unsigned inuse;                   // object + right red zone; the free pointer follows
  unsigned track_offset;            // two `track`s (alloc, free) with SLAB_STORE_USER
  unsigned orig_size_offset;        // kmalloc caches with Z or U: the size that was requested
  unsigned order;                   // slab order (oo)
  unsigned objects;                 // objects per slab of `order`
  unsigned min_order, min_objects;  // the fallback (min)
  unsigned cpu_partial;             // objects kept on a CPU's partial list
  unsigned cpu_partial_slabs;       // the same in slabs
  unsigned min_partial;             // empty slabs a node keeps
  std::uint64_t random;             // free pointer hardening secret
  // What the slab map stores for this cache's slabs (| order): the cache's address, or
  // (class + 1) << 4 for a kmalloc class on the class fast path (kmalloc.hpp).
  std::uintptr_t map_tag;
  std::uint64_t boundary_mul;       // ceil(2^64 / size) (slab_object_start)
  std::uint64_t boundary_red_left;  // red_left_pad * boundary_mul, mod 2^64
  void (*ctor)(void*);
  page_allocator* pa;
  unsigned nr_cpus;
  unsigned tid_step;
  unsigned cpu_bytes;                      // size of the cpu_slab (+ cpu_stats) area (percpu_area)
  int refcount;                            // slab_mutex; > 1 when merged caches alias it
  list_head list;                          // slab_mutex: slab_caches
  std::atomic<std::uint64_t> slab_gen{0};  // bumped per slab created/freed (validate)
  std::atomic<int> slabs_changing{0};      // allocate_slab / discard_slab under way (validate)
  char name[48];
  // Sheaves (sheaf.hpp); cpu_sheaves is at the top.
  std::atomic<std::uint64_t>* sheaf_stat;  // nr_cpus * NR_SHEAF_STAT_ITEMS, or null
  unsigned sheaf_capacity;                 // capacity of new sheaves
  unsigned pcs_bytes;                      // size of the cpu_sheaves area (percpu_area), or 0
  bool sheaf_rseq;          // fast paths use rseq sequences (else the locked fallback)
  kmem_cache* sheaf_cache;  // where this cache's sheaves come from
  std::atomic<std::uint64_t> sheaf_drain_gen{0};
  // nr_nodes of each, indexed by node: the barns live in the sheaves' per-CPU area (null without
  // sheaves), the node structures in an area of their own (percpu_area.hpp).  Arrays sized by
  // the machine, not by kMaxNodes, keep a kmem_cache at 384 bytes: every process creates
  // about 48 caches at start-up, and fixed arrays of 64 made each 2 KiB (128 KiB resident).
  uslub::node_barn* barn;
  kmem_cache_node* node;
  unsigned nr_nodes;
};

namespace uslub {
using ::kmem_cache;

// ---- free pointer (hardened: ptr ^ secret ^ bswap(address of the pointer)) --------------
// CONFIG_SLAB_FREELIST_HARDENED: on unless built with -DUSLUB_NO_FREELIST_HARDENING=1 (the
// benchmark builds both to measure its cost).

#ifndef USLUB_NO_FREE_CHECKS
#define USLUB_NO_FREE_CHECKS 0
#endif

#if USLUB_NO_FREELIST_HARDENING
USLUB_ALWAYS_INLINE std::uintptr_t freeptr_mask(const kmem_cache*, std::uintptr_t) {
  return 0;
}
#else
USLUB_ALWAYS_INLINE std::uintptr_t freeptr_mask(const kmem_cache* s, std::uintptr_t at) {
  return s->random ^ __builtin_bswap64(at);
}
#endif

USLUB_ALWAYS_INLINE void* freeptr_decode(const kmem_cache* s, std::uintptr_t stored,
                                         std::uintptr_t at) {
  return reinterpret_cast<void*>(stored ^ freeptr_mask(s, at));
}

USLUB_ALWAYS_INLINE void* get_freepointer(const kmem_cache* s, void* obj) {
  auto at = reinterpret_cast<std::uintptr_t>(obj) + s->offset;
  auto stored = __atomic_load_n(reinterpret_cast<std::uintptr_t*>(at), __ATOMIC_RELAXED);
  return freeptr_decode(s, stored, at);
}

USLUB_ALWAYS_INLINE void set_freepointer(const kmem_cache* s, void* obj, void* fp) {
  auto at = reinterpret_cast<std::uintptr_t>(obj) + s->offset;
  __atomic_store_n(reinterpret_cast<std::uintptr_t*>(at),
                   reinterpret_cast<std::uintptr_t>(fp) ^ freeptr_mask(s, at), __ATOMIC_RELAXED);
}

// ---- the 16-byte CAS --------------------------------------------------------------------

USLUB_ALWAYS_INLINE bool cmpxchg16(void* addr, void* old_ptr, std::uint64_t old_word, void* new_ptr,
                                   std::uint64_t new_word) {
  using u128 = unsigned __int128;
  u128 expected = static_cast<u128>(reinterpret_cast<std::uintptr_t>(old_ptr)) |
                  (static_cast<u128>(old_word) << 64);
  u128 desired = static_cast<u128>(reinterpret_cast<std::uintptr_t>(new_ptr)) |
                 (static_cast<u128>(new_word) << 64);
  return __sync_bool_compare_and_swap(static_cast<u128*>(addr), expected, desired);
}

// Acquire: pairs with the CAS that published the list, so the objects' contents (their free
// pointers) written before it are visible (free on x86).
USLUB_ALWAYS_INLINE void* load_ptr(void* const* p) {
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
USLUB_ALWAYS_INLINE std::uint64_t load_u64(const std::uint64_t* p) {
  return __atomic_load_n(p, __ATOMIC_RELAXED);
}

// ---- statistics -------------------------------------------------------------------------

USLUB_ALWAYS_INLINE void stat(const kmem_cache* s, uslub_stat_item si, unsigned cpu,
                              std::uint64_t n = 1) {
  if (USLUB_UNLIKELY(s->cpu_stats != nullptr)) {
    auto& c = s->cpu_stats[cpu].stat[si];
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
}

// ---- lookups ----------------------------------------------------------------------------

USLUB_ALWAYS_INLINE unsigned this_cpu_index(const kmem_cache* s) {
  unsigned cpu = platform::current_cpu();
  return USLUB_LIKELY(cpu < s->nr_cpus) ? cpu : cpu % s->nr_cpus;
}

USLUB_ALWAYS_INLINE kmem_cache_node* get_node(const kmem_cache* s, int node) {
  return &s->node[static_cast<unsigned>(node) % s->nr_nodes];
}

USLUB_ALWAYS_INLINE int slab_nid(const page* slab) {
  return page_section(slab)->node;
}

USLUB_ALWAYS_INLINE void* slab_address(const page* slab) {
  return page_address(slab);
}

USLUB_ALWAYS_INLINE bool kmem_cache_debug(const kmem_cache* s) {
  return USLUB_UNLIKELY(s->flags & SLAB_DEBUG_PATH);
}

// Object idx of a slab starting at base (after the left red zone, if any).
USLUB_ALWAYS_INLINE char* slab_object(const kmem_cache* s, void* base, std::size_t idx) {
  return static_cast<char*>(base) + idx * s->size + s->red_left_pad;
}

// ---- the slab map (page.hpp) ------------------------------------------------------------
// Each page of a slab has `s->map_tag | order` in its map word (kmem_cache is 64-byte aligned, the
// order needs 4 bits), written after PG_slab (release) by allocate_slab and cleared by
// discard_slab before the slab leaves the cache; 0 for every other page.
inline constexpr std::uintptr_t SLAB_MAP_ORDER_MASK = 15;
static_assert(MAX_ORDER <= SLAB_MAP_ORDER_MASK && alignof(kmem_cache) > SLAB_MAP_ORDER_MASK);

void slab_map_set(page* slab, kmem_cache* s, unsigned order);
void slab_map_clear(page* slab, unsigned order);

// obj's slab map word: 0 if obj is not in a slab (or not in uslub's memory at all).
USLUB_ALWAYS_INLINE std::uintptr_t slab_map_entry(const void* obj) {
  if (USLUB_UNLIKELY(!lookup_section(obj))) return 0;
  return __atomic_load_n(slab_map_slot(obj), __ATOMIC_ACQUIRE);
}
// A tag below kSlabMapClassLimit is a kmalloc class (kmalloc.hpp): (class + 1) << 4.
inline constexpr std::uintptr_t kSlabMapClassLimit = 64 << 4;
extern USLUB_HIDDEN kmem_cache* g_slab_map_classes[64];  // kmalloc.cpp: class -> cache
USLUB_ALWAYS_INLINE kmem_cache* slab_map_cache(std::uintptr_t entry) {
  std::uintptr_t tag = entry & ~SLAB_MAP_ORDER_MASK;
  if (tag < kSlabMapClassLimit) return tag ? g_slab_map_classes[(tag >> 4) - 1] : nullptr;
  return reinterpret_cast<kmem_cache*>(tag);
}
// obj's offset in its slab (slabs are aligned to their size, like slab_offset).
USLUB_ALWAYS_INLINE std::size_t slab_map_offset(std::uintptr_t entry, const void* obj) {
  return reinterpret_cast<std::uintptr_t>(obj) & ((PAGE_SIZE << (entry & SLAB_MAP_ORDER_MASK)) - 1);
}

// The slab holding obj, or nullptr if obj is not inside a uslub slab page.  One load for the
// section, one for the descriptor's flags (and the head pointer for multi-page slabs).
// The descriptor area of a section is accessible as a whole (memmap.cpp), so the section's
// fields are not needed: the table load only says "ours", and the descriptor load does not
// depend on it.
USLUB_ALWAYS_INLINE page* virt_to_slab(const void* obj) {
  if (USLUB_UNLIKELY(!lookup_section(obj))) return nullptr;
  // An address in the descriptor area itself needs no test: its descriptor slot was never
  // written (zero: not a slab), except slot 0, which is the section header, whose first word
  // (the section's base, 1 GiB aligned) has none of the flag bits tested here (page.hpp).
  page* p = virt_to_page(obj);
  std::uint32_t f = page_flags(p);  // one load of the flags, not one per test
  if (USLUB_UNLIKELY(f & PG_tail)) {
    p = p->compound_head;
    f = page_flags(p);
  }
  if (!p) __builtin_unreachable();  // a descriptor address (so the callers' null tests fold)
  return (f & PG_slab) ? p : nullptr;
}

// obj's offset in its slab.  Slabs are buddy blocks, aligned to their own size, so this is a
// mask of the address; the mask is kept in the head descriptor (one load, no shift).
USLUB_ALWAYS_INLINE std::size_t slab_offset(const page* slab, const void* obj) {
  return reinterpret_cast<std::uintptr_t>(obj) &
         __atomic_load_n(&slab->slab_mask, __ATOMIC_RELAXED);
}

// Is off (slab_offset) the start of an object, i.e. off - red_left_pad a multiple of size?
// Lemire's divisibility test: with M = ceil(2^64 / size), n is a multiple of size iff
// n * M mod 2^64 < M, exact for n < 2^32 (slabs are at most 4 MiB); the red zone enters as
// the precomputed red_left_pad * M.  An offset inside the left red zone (n "negative") fails
// too, since red_left_pad < size - 1.  One multiply, one subtract, one compare.
USLUB_ALWAYS_INLINE bool slab_object_start(const kmem_cache* s, std::size_t off) {
  return off * s->boundary_mul - s->boundary_red_left < s->boundary_mul;
}

// ---- slab counters and node partial lists ----------------------------------------------

USLUB_ALWAYS_INLINE slab_counters load_counters(const page* slab) {
  slab_counters c;
  c.v = load_u64(&slab->counters);
  return c;
}

// Context: n->list_lock.
USLUB_ALWAYS_INLINE void add_partial(kmem_cache_node* n, page* slab, bool tail) {
  lockdep_assert_held(&n->list_lock);
  if (tail)
    list_add_tail(&slab->lru, &n->partial);
  else
    list_add(&slab->lru, &n->partial);
  __atomic_store_n(&n->nr_partial, n->nr_partial + 1, __ATOMIC_RELAXED);
}

// Context: n->list_lock.
USLUB_ALWAYS_INLINE void remove_partial(kmem_cache_node* n, page* slab) {
  lockdep_assert_held(&n->list_lock);
  list_del(&slab->lru);
  __atomic_store_n(&n->nr_partial, n->nr_partial - 1, __ATOMIC_RELAXED);
}

// ---- internal entry points (slub.cpp, slab_common.cpp) ----------------------------------

// A new slab of s: frozen, inuse == objects, every object on slab->freelist (private to the
// caller until published).  nullptr if the page allocator has no memory.
page* allocate_slab(kmem_cache* s, gfp_t gfp, int node, unsigned cpu);

USLUB_SLOWPATH void slab_free_report(kmem_cache* s, const void* obj, const char* caller);

// Is obj an object start of cache s?  The always-on "Invalid pointer"/"Wrong cache" check of
// every free: a section load, a flags load, a compare, a mask and a multiply; reports and
// returns nullptr if not.
USLUB_ALWAYS_INLINE page* slab_free_check_inline(kmem_cache* s, const void* obj,
                                                 const char* caller) {
  page* slab = virt_to_slab(obj);
  if (USLUB_LIKELY(slab) &&
      USLUB_LIKELY(__atomic_load_n(&slab->slab_cache, __ATOMIC_RELAXED) == s)) {
    // -DUSLUB_NO_FREE_CHECKS=1 (benchmark builds only) drops the boundary check to measure it.
    if (USLUB_NO_FREE_CHECKS || USLUB_LIKELY(slab_object_start(s, slab_offset(slab, obj))))
      return slab;
  }
  slab_free_report(s, obj, caller);
  return nullptr;
}

// The object paths (sheaves if the cache has them, else the per-CPU slab).  The inline forms
// are cache_alloc/cache_free in cache_alloc.hpp.
void* slab_alloc(kmem_cache* s, gfp_t gfp, int node);
void slab_free(kmem_cache* s, page* slab, void* obj);
// The SLUB core alone (the per-CPU slab), bypassing sheaves.
void* slab_alloc_core(kmem_cache* s, gfp_t gfp, int node);
void slab_free_core(kmem_cache* s, page* slab, void* obj);
// Checks that obj is an object of s handed out by uslub; reports and returns nullptr if not.
page* slab_free_check(kmem_cache* s, const void* obj, const char* caller);
void flush_all(kmem_cache* s);
void slab_cpu_dead(kmem_cache* s, unsigned cpu);
void flush_mutex_lock();
void flush_mutex_unlock();
// slab_mutex and flush_mutex are taken and dropped through these: while this thread holds one,
// discard_slab of a SLAB_TYPESAFE_BY_RCU cache keeps its slab on a per-thread list instead of
// calling call_rcu16 (RCU's fork gate is closed before a fork takes these mutexes), and the
// release of the outermost one queues them, holding no lock.
void slab_config_lock(spinlock_t& m);
void slab_config_unlock(spinlock_t& m);
int __kmem_cache_shrink(kmem_cache* s);
// Slabs looked at per list_lock hold by __kmem_cache_shrink.
inline constexpr unsigned kShrinkBatch = 32;
// Returns false (after reporting) if objects remain.
bool __kmem_cache_shutdown(kmem_cache* s);
bool validate_slab_cache(kmem_cache* s);
void slab_fill_info(kmem_cache* s, kmem_cache_info* info);
void discard_slab(kmem_cache* s, page* slab);
// fresh_page (the sheaf refill): stop once objects were taken from a CPU slab's virgin range
// (lazy carving, above), taking no more than those that start in one of its pages, and return
// how many are in p[] (1 to nr), so that a refill makes at most one new page resident.
int kmem_cache_alloc_bulk_impl(kmem_cache* s, gfp_t gfp, std::size_t nr, void** p,
                               bool fresh_page = false);
// checked: every p[i] is known to be an object of s (it passed slab_free_check when it was
// freed into a sheaf), so only its slab is looked up.
void kmem_cache_free_bulk_impl(kmem_cache* s, std::size_t nr, void** p, bool checked = false);

// Creates a cache whose slabs come from pa (tests use a failing page allocator).
kmem_cache* kmem_cache_create_on(page_allocator* pa, const char* name, std::size_t size,
                                 std::size_t align, slab_flags_t flags, void (*ctor)(void*));
// pthread_atfork handlers for the slab layer and the global page allocator.  prepare takes, in
// the documented order, slab_mutex, flush_mutex, every cache's list_locks and CPU slot locks,
// then the page allocator's locks; parent and child release them all.  Operations that were
// in flight in other threads without a lock (a deactivate_slab between its steps) leave their
// objects unreachable in the child: leaked, never corrupted.
void slab_fork_prepare();
// The cache list's lock (lock order 1): fork's prepare takes the per-cache locks under it
// (lockdep's nest lock for them).
extern spinlock_t slab_mutex;
void slab_fork_parent();
void slab_fork_child();

// Calls fn(s, arg) for every cache, under slab_mutex.
void for_each_kmem_cache(void (*fn)(kmem_cache*, void*), void* arg);
// __kmem_cache_shrink of every cache, holding slab_mutex only between caches (slab_common.cpp).
// Returns the caches shrunk.  Context: no lock held.
std::size_t kmem_cache_shrink_all();
// Tests: hook(s) runs in kmem_cache_shrink_all before each cache's shrink, with no lock held.
void slab_shrink_set_test_hook(void (*hook)(kmem_cache*));

}  // namespace uslub
