// Per-CPU object queues: sheaves (the kernel's 6.18 "slab sheaves", seed 001's SLUB+Q).
//
// Each cache with sheaves has, per CPU, a main and a spare sheaf (arrays of free objects) and,
// per node, a barn of full and empty sheaves.  The fast paths pop from / push to the current
// CPU's main sheaf inside an rseq restartable sequence (platform/rseq.hpp): no locked
// instruction, no call.  Misses swap in the spare, trade sheaves with the barn (a full main
// is parked there when it has room), and refill or flush whole sheaves through the SLUB core
// with no sheaf lock held: a refill takes the CPU freelist with one CAS and gives the rest back
// with one, or carves a new slab (kmem_cache_alloc_bulk_impl); a flush builds one detached
// freelist per slab and frees each with one do_slab_free (a CAS; list_lock only when a slab
// changes lists).
//
// Lock order (extends slab.hpp's): flush_mutex -> the slot (cap 0, or slub_percpu_sheaves::lock)
// -> node_barn::lock
// -> (the SLUB core's locks, taken by the bulk paths only after the sheaf locks are dropped).
//
// The hot slot.  Each cache with sheaves on rseq has, per CPU, a 16-byte sheaf_slot
// {objs, size, cap} in the per-CPU slot area (g_pcpu_area: kPcpuBytes per CPU, CPU c's at
// c << kPcpuShift; the cache's slot at s->slot_off in each; kmalloc's classes at fixed
// indices, so malloc and free go from the class to the slot with no kmem_cache load).  While
// a sheaf is installed, objs is its object array, size its count (the slot's size is the true
// one; the sheaf's own size word is brought up to date by whoever takes the slot) and cap its
// capacity; without one, cap is kSlotNoSheaf.  The fast-path sequences change only slot.size
// (committed as the 32-bit word {size, tick}: kmalloc's keyed push advances the tick, every
// other sequence stores it back unchanged) and objs[], only on the CPU that owns the slot, and only
// while cap is not 0: cap == 0 is the lock.  Every other change of the slot, and of
// slub_percpu_sheaves's main, spare and alien buffer, happens with cap held at 0:
//   - a slow path takes it with rseq_slot_lock(): a sequence whose commit is the locked
//     cmpxchg cap -> 0, so at that instant no fast path of that CPU is between its start and
//     commit;
//   - a drain from another CPU takes it with a CAS cap -> 0 and then rseq_fence_cpu()
//     (membarrier EXPEDITED_RSEQ): sequences in flight on that CPU restart and see cap 0.
// The holder may then migrate; the slot stays consistent because nobody else touches it.  It
// releases the slot by storing objs and size and then cap (release); the sequences load cap
// before size and objs, so a sequence that sees the new cap sees the new objs and size.
// Caches whose fast paths are off (statistics, debugging, no rseq: GLIBC_TUNABLES=
// glibc.pthread.rseq=0, USLUB_RSEQ=0, TSan, non-x86) point at kZeroSlot, whose cap is 0
// for ever: the inline paths miss, and the out-of-line paths take slub_percpu_sheaves::lock
// (a u32) with a CAS (one locked instruction) instead; sheaf.size is then the true count.
// A held slot makes drains wait for it; the alloc and free slow paths yield to its holder up
// to 4 times (sched_yield: the holder is usually preempted on this very CPU) and then go to
// the SLUB core directly.  A thread that holds any allocator lock (in_atomic) never waits for a
// slot, so the yield cannot wait for itself.
//
// node_barn::lock protects the barn's lists and counts and its learnt limit (grown, taken).
// The barn is where remote frees meet: full sheaves parked by a freeing CPU are taken by an
// allocating one; neither holds a slot while it flushes or refills through the slabs.
//
// main is never null: a slot without a sheaf points at a static empty sheaf of capacity 0,
// so both fast paths miss on it without a null test.
#pragma once

#include <atomic>
#include <cstdint>

#include "slab/slab.hpp"

namespace uslub {

struct slab_sheaf {
  std::uint32_t size;      // objects held; the rseq commit target
  std::uint32_t capacity;  // fixed at allocation
  slab_sheaf* next;        // barn lists
  void* objects[];         // capacity entries
};
static_assert(offsetof(slab_sheaf, size) == 0 && offsetof(slab_sheaf, capacity) == 4 &&
              offsetof(slab_sheaf, objects) == 16);

inline constexpr unsigned kAlienBatch = 16;
inline constexpr unsigned kMaxSheafCapacity = 512;
// A barn keeps up to a limit of full and as many empty sheaves per node (sheaf.cpp,
// barn_limit): at least mm/slub.c's 10, or as many as hold kBarnBytes of objects when that is
// more (small objects), at most kBarnMaxSheaves; and more once another CPU takes the full
// sheaves out: a put that finds the full list at its limit doubles the limit (up to
// kBarnMaxBytes of objects) if any full sheaf was taken since the previous overflow.  Full
// sheaves parked in the barn are how objects freed on one CPU reach another CPU that
// allocates (producer/consumer threads) without a walk of the slabs' free lists: with the
// fixed limit, xmalloc-test's freeing CPUs overflowed it and sent a third to three quarters
// (10 sheaves) or 15 % (8 MiB) of their sheaves through the slabs; with the learnt limit up to
// 32 MiB, 1-3 % (bench/results/2026-12-03-remote-895a6b1.md).  The learnt limit
// only grows; shrinking (kmem_cache_shrink, malloc_trim, memory pressure) empties the barn and
// forgets it.  A program that only frees (no CPU takes full sheaves) keeps the base limit, so
// its memory goes back to the slabs and the page allocator as before.
inline constexpr unsigned kBarnMinSheaves = 10, kBarnMaxSheaves = 64;
inline constexpr std::size_t kBarnBytes = 256 * 1024, kBarnMaxBytes = 32 * 1024 * 1024;

struct alignas(kDestructiveLine) slub_percpu_sheaves {
  std::uint32_t lock;  // caches off rseq only: 0 free, 1 held
  std::uint32_t pad_;
  slab_sheaf* main;   // lock (fast paths: size and objects only)
  slab_sheaf* spare;  // lock
  int alien_node;     // lock: node of the objects in alien[]
  unsigned nr_alien;  // lock
  void* alien[kAlienBatch];
};
static_assert(offsetof(slub_percpu_sheaves, lock) == 0 && offsetof(slub_percpu_sheaves, main) == 8);

// The per-CPU slot area (see above).
struct sheaf_slot {
  void** objs;         // the installed sheaf's objects (the static empty sheaf's without one)
  std::uint16_t size;  // objects in it; the rseq commit target
  // kmalloc's double-free sampling count (kmalloc.hpp): advanced only by the class path's
  // keyed and ticked pushes, in the 32-bit store that commits size; nothing else writes it.
  std::uint16_t tick;
  std::uint32_t cap;  // its capacity; 0: held (the lock); kSlotNoSheaf: no sheaf
};
static_assert(sizeof(sheaf_slot) == 16 && offsetof(sheaf_slot, objs) == 0 &&
              offsetof(sheaf_slot, size) == 8 && offsetof(sheaf_slot, tick) == 10 &&
              offsetof(sheaf_slot, cap) == 12);
static_assert(kMaxSheafCapacity < 0xffff, "size + 1 must not carry into tick");
inline constexpr std::uint32_t kSlotNoSheaf = 0x80000000u;  // negative: a signed push misses
inline constexpr unsigned kPcpuShift = 15;
inline constexpr std::size_t kPcpuBytes = std::size_t{1} << kPcpuShift;
inline constexpr unsigned kNrPcpuSlots = kPcpuBytes / sizeof(sheaf_slot);
// Slot indices: 0 is reserved for the CPU's own words (none at present); kZeroSlot is never written
// (cap 0: the slot of every cache whose fast paths are off); kmalloc's classes from kKmallocSlot0;
// other caches after them.
inline constexpr unsigned kZeroSlot = 1, kKmallocSlot0 = 2, kNrKmallocSlots = 48;
// Set once, before the first cache with sheaves is published; never unmapped.
extern USLUB_HIDDEN char* g_pcpu_area;
USLUB_ALWAYS_INLINE char* pcpu_area() {
  return __atomic_load_n(&g_pcpu_area, __ATOMIC_RELAXED);
}
USLUB_ALWAYS_INLINE sheaf_slot* pcpu_slot(unsigned cpu, std::size_t off) {
  return reinterpret_cast<sheaf_slot*>(pcpu_area() + (std::size_t{cpu} << kPcpuShift) + off);
}
// Maps the slot area if it is not yet (kmalloc_init); false if it cannot be mapped.
bool sheaf_pcpu_area_init();
// kmalloc: moves s's slot to the fixed index (a class's).  Context: s not yet visible.
void sheaf_use_slot(kmem_cache* s, unsigned index);

struct node_barn {
  spinlock_t lock;
  slab_sheaf* full;            // lock
  slab_sheaf* empty;           // lock
  unsigned nr_full, nr_empty;  // lock
  unsigned grown;              // lock: the limit learnt from traffic (0: the cache's base limit)
  unsigned taken;              // lock: full sheaves taken since the last overflow
};

enum sheaf_stat_item {
  SHEAF_ALLOC_HIT,
  SHEAF_ALLOC_MISS,
  SHEAF_FREE_HIT,
  SHEAF_FREE_MISS,
  SHEAF_SWAP,
  SHEAF_REFILL,
  SHEAF_FLUSH,
  BARN_GET,
  BARN_GET_FAIL,
  BARN_PUT,
  BARN_PUT_FAIL,
  SHEAF_REMOTE_DRAIN,
  SHEAF_ALIEN_FREE,
  SHEAF_BUSY_FALLBACK,
  NR_SHEAF_STAT_ITEMS
};

// Sets up sheaves for s (capacity 0: none).  0 or errno.  Context: s not yet visible.
int sheaves_init(kmem_cache* s, unsigned capacity);
// Empties every CPU's sheaves and the barns into the slabs (remote drain, drain_all
// generation piggyback).  Context: flush_mutex NOT held.
void sheaf_drain_all(kmem_cache* s);
// Empties one CPU's sheaves (a CPU leaving the process's affinity mask: uslub_cpu_offline).
void sheaf_drain_cpu(kmem_cache* s, unsigned cpu);
// Frees the per-CPU and barn structures (destroy).  Sheaves must be drained.
void sheaves_free(kmem_cache* s);
// Changes the capacity of new sheaves and drains the old ones.
void sheaf_set_capacity(kmem_cache* s, unsigned capacity);
unsigned sheaf_default_capacity(unsigned object_size);
void sheaf_stats(kmem_cache* s, std::uint64_t out[NR_SHEAF_STAT_ITEMS]);

// pthread_atfork: take every CPU slot lock (with the rseq fence) and barn lock of s; release.
void sheaf_fork_prepare(kmem_cache* s);
void sheaf_fork_release(kmem_cache* s);

// Slow paths (sheaf.cpp).
// A miss of this CPU's sheaves: swap, barn, refill, or the slabs.  The object's free-key word
// is cleared, as an allocation leaves it.
void* sheaf_alloc_slow(kmem_cache* s, gfp_t gfp);
void sheaf_free_slow(kmem_cache* s, page* slab, void* obj);
// kmem_cache_alloc_bulk's sheaf half (the kernel's alloc_from_pcs_bulk): up to nr objects
// from this CPU's main sheaf (swapped with the spare first if that one is fuller) under the
// slot lock; if that was not enough, one object through sheaf_alloc_slow (which installs a full
// sheaf) and more from that sheaf.  Free keys cleared.  Returns how many; the caller takes the
// rest from the slabs.
std::size_t sheaf_alloc_bulk(kmem_cache* s, std::size_t nr, void** p);
// kmem_cache_free_bulk's sheaf half (free_to_pcs_bulk): checks every object as kmem_cache_free
// does (slab_free_check, the free key: reported and left out), pushes what fits into this
// CPU's main sheaf (swapped with the spare first if that one has more room) under the slot
// lock, makes room once through sheaf_free_slow, returns the rest to the slabs; other nodes'
// objects go back to their node.  Reorders p.
void sheaf_free_bulk(kmem_cache* s, std::size_t nr, void** p);

// The free key (glibc's tcache e->key): every object in a sheaf carries secret ^ address in its
// free-pointer word (s->offset, outside the object for caches with a constructor or
// SLAB_TYPESAFE_BY_RCU).  A free checks the word first: the key there means the object is
// already in a sheaf (any CPU's, or the barn's: not only on top, not only in a row), so the
// second free is reported at once, with its own stack, and dropped; otherwise it stores the
// key.  An allocation clears the word (a store, no load of the object it hands out).  Refills
// write the key into the objects they take from the slabs; a flush checks each object
// before it goes back to its slab (whose free pointer then replaces the key), so a write into a
// free object's key word (use after free) or a second copy left by two frees racing on two CPUs is
// reported there.  Objects on slab free lists hold an encoded free pointer in that word, never the
// key.  A false report needs a program to store secret ^ address into a live object without ever
// seeing the 64-bit secret.  (-DUSLUB_NO_FREE_CHECKS=1 benchmark builds drop the key altogether.)
//
// USLUB_DOUBLE_FREE=0 turns the key off for the caches made afterwards (all of them when set in
// the environment): a free then pushes the pointer without touching the object (the key's load
// of a cold object being freed is most of alloc-test's cost, docs/debug.md), and a double free
// goes unseen: the object is handed out twice, as with mimalloc's or jemalloc's defaults.  The
// boundary check (Invalid pointer) and the hardened slab free pointers stay on.  The choice is
// the cache's (s->free_key), fixed at creation: its sheaves never mix keyed and plain objects.
// The allocation still clears the key word (free_key_clear, one store to the object it hands
// out): skipping it would cost the keyed default a test on every allocation.
extern bool g_free_key_default;  // USLUB_DOUBLE_FREE (slab_init), default on
USLUB_ALWAYS_INLINE std::uintptr_t* free_key_word(const kmem_cache* s, void* obj) {
  return reinterpret_cast<std::uintptr_t*>(static_cast<char*>(obj) + s->offset);
}
USLUB_ALWAYS_INLINE std::uintptr_t free_key(const kmem_cache* s, const void* obj) {
  return s->random ^ reinterpret_cast<std::uintptr_t>(obj);
}
// The free half: false (nothing stored) if obj already carries its key: freed twice.
USLUB_ALWAYS_INLINE bool free_key_set(const kmem_cache* s, void* obj) {
  if (USLUB_NO_FREE_CHECKS) return true;
  std::uintptr_t* word = free_key_word(s, obj);
  std::uintptr_t key = free_key(s, obj);
  if (USLUB_UNLIKELY(*word == key)) return false;
  *word = key;
  return true;
}
// The refill's half: objects fresh from the slabs hold a free pointer, nothing to check.
USLUB_ALWAYS_INLINE void free_key_store(const kmem_cache* s, void* obj) {
  if (!USLUB_NO_FREE_CHECKS) *free_key_word(s, obj) = free_key(s, obj);
}
// The allocation half.
USLUB_ALWAYS_INLINE void free_key_clear(const kmem_cache* s, void* obj) {
  if (!USLUB_NO_FREE_CHECKS) *free_key_word(s, obj) = 0;
}
// A free found obj's key (free_key_set returned false): "Object already free".
USLUB_SLOWPATH void sheaf_report_double_free(kmem_cache* s, void* obj);
// The flush's check (sheaf.cpp: sheaf_flush): an object leaving a sheaf for its slab must carry
// its key, which the free pointer linking it into its slab's detached list then replaces.  This
// reports one that does not (objs[0, i): the objects of the same flush before it, where a
// second copy of it would have been); the flush drops it.
USLUB_SLOWPATH void sheaf_flush_reject(kmem_cache* s, void* obj, void* const* objs, unsigned i);

}  // namespace uslub
