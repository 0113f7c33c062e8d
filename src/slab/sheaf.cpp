// Sheaf slow paths, the barn, refill/flush through the SLUB core, and remote drain.
// Locking rules: sheaf.hpp.
#include <errno.h>
#include <sched.h>

#include <cstring>
#include <new>

#include "base/bits.hpp"
#include "base/check.hpp"
#include "base/stacktrace.hpp"
#include "slab/percpu_area.hpp"
#include "slab/sheaf.hpp"
#include "slab/sheaf_fast.hpp"
#include "slab/slub_fast.hpp"

#ifndef USLUB_STATS_ON_RSEQ
#define USLUB_STATS_ON_RSEQ 0
#endif

namespace uslub {

namespace {

// A slot with no sheaf points here: capacity 0 makes both fast paths miss.
constinit slab_sheaf g_empty_sheaf{0, 0, nullptr};
constinit lock_class_key barn_lock_key{"node_barn->lock"};
// The slot lock as the slow paths take it (pcs_lock_local / pcs_lock_remote, released by
// pcs_release): lockdep checks the order slot -> barn -> list_lock.  The fast paths'
// locked fallback (sheaf_fast.hpp) is a trylock with nothing taken under it and stays
// untracked: no lockdep call on a fast path.
constinit lock_class_key pcs_lock_key{"slub_percpu_sheaves->lock"};

USLUB_ALWAYS_INLINE slab_sheaf* empty_sheaf() {
  return &g_empty_sheaf;
}

sheaf_slot* pcs_slot_of(const kmem_cache* s, const slub_percpu_sheaves* pcs) {
  return pcpu_slot(static_cast<unsigned>(pcs - s->cpu_sheaves), s->slot_off);
}

// Makes the spare the main sheaf and the old main (unless it is the static empty one) the spare;
// returns the new main.  Context: the slot's lock, spare non-null.
slab_sheaf* pcs_swap_main_spare(slub_percpu_sheaves* pcs) {
  slab_sheaf* main = pcs->main;
  pcs->main = pcs->spare;
  pcs->spare = main == empty_sheaf() ? nullptr : main;
  return pcs->main;
}

// The capacity of new sheaves; sheaf_set_capacity() changes it at any time.
USLUB_ALWAYS_INLINE unsigned sheaf_capacity_of(const kmem_cache* s) {
  return __atomic_load_n(&s->sheaf_capacity, __ATOMIC_RELAXED);
}

// ---- taking the slot -------------------------------------------------------------------

// The held slot's count goes back into its sheaf (the slot's was the true one).
void pcs_take_slot(kmem_cache* s, slub_percpu_sheaves* pcs, unsigned cpu) {
  if (pcs->main != empty_sheaf())
    pcs->main->size = __atomic_load_n(&pcpu_slot(cpu, s->slot_off)->size, __ATOMIC_RELAXED);
}

// Takes the current CPU's slot.  Returns it, or nullptr if it is held.
slub_percpu_sheaves* pcs_trylock_local(kmem_cache* s) {
#if USLUB_HAVE_RSEQ_ASM
  if (s->sheaf_rseq) {
    preempt_count_inc();  // (pcs_trylock's rule: a slot-lock holder counts, preempt.hpp)
    std::uint32_t cap;
    int cpu = platform::rseq_slot_lock<kPcpuShift>(pcpu_area(), s->slot_off, &cap);
    if (cpu < 0) {
      preempt_count_dec();
      return nullptr;
    }
    slub_percpu_sheaves* pcs = &s->cpu_sheaves[cpu];
    lockdep_acquire(&pcs_lock_key, pcs, true);
    pcs_take_slot(s, pcs, static_cast<unsigned>(cpu));
    return pcs;
  }
#endif
  slub_percpu_sheaves* pcs = &s->cpu_sheaves[this_cpu_index(s)];
  if (!pcs_trylock(pcs)) return nullptr;
  lockdep_acquire(&pcs_lock_key, pcs, true);
  return pcs;
}

// Takes the current CPU's slot, yielding to its holder up to kSlotBusyYields times; nullptr if
// it is still held (the caller then goes to the slabs).  A slot found held on the CPU we run on
// almost always belongs to a thread that was preempted inside a slow path of this CPU (or
// migrated away holding it, about to release): it cannot finish while we run here.  Going to
// the slabs at once made every operation of every other thread on that CPU miss to the slabs
// until the holder ran again, a whole time slice (xmalloc-test, 4 threads on 2 CPUs: 8.4 M
// busy fallbacks in 2 s, most of its slab traffic).  sched_yield lets the holder finish its
// short section; a thread that holds an allocator lock itself (in_atomic: a nested path, or a
// signal handler that interrupted a holder) never waits.
constexpr int kSlotBusyYields = 4;
slub_percpu_sheaves* pcs_lock_local(kmem_cache* s) {
  for (int i = 0;; ++i) {
    if (slub_percpu_sheaves* pcs = pcs_trylock_local(s)) return pcs;
    if (i == kSlotBusyYields || in_atomic()) return nullptr;
    sched_yield();
  }
}

// Publishes main in the slot and releases it: objs and size first, then cap (release).
void pcs_release(kmem_cache* s, slub_percpu_sheaves* pcs) {
  lockdep_release(&pcs_lock_key, pcs);
  if (!s->sheaf_rseq) return pcs_unlock(pcs);
  sheaf_slot* sl = pcs_slot_of(s, pcs);
  slab_sheaf* main = pcs->main;
  __atomic_store_n(&sl->objs, static_cast<void**>(main->objects), __ATOMIC_RELAXED);
  // size and tick in one 32-bit store, as the fast-path sequences write them: a 16-bit store
  // of size alone would make the next sequence's 32-bit load miss store forwarding.  The tick
  // is unchanged (only the fast paths advance it, and the slot is held).
  std::uint32_t tick = __atomic_load_n(&sl->tick, __ATOMIC_RELAXED);
  __atomic_store_n(reinterpret_cast<std::uint32_t*>(&sl->size), main->size | (tick << 16),
                   __ATOMIC_RELAXED);
  __atomic_store_n(&sl->cap, main == empty_sheaf() ? kSlotNoSheaf : main->capacity,
                   __ATOMIC_RELEASE);
  preempt_count_dec();  // pcs_lock_local / pcs_lock_remote counted the holder
}

// Takes another CPU's slot, waiting for a holder, and restarts its in-flight sequences.
// nest: see spinlock_t::lock_nest_lock (fork's prepare takes every slot under slab_mutex).
void pcs_lock_remote(kmem_cache* s, unsigned cpu, const void* nest = nullptr) {
  slub_percpu_sheaves* pcs = &s->cpu_sheaves[cpu];
  lockdep_acquire(&pcs_lock_key, pcs, false, 0, nest);  // before waiting
  preempt_count_inc();  // a waiter counts too (preempt.hpp); kept as the holder's count
  for (int spins = 0;; ++spins) {
    if (s->sheaf_rseq) {
      std::uint32_t* cap = &pcpu_slot(cpu, s->slot_off)->cap;
      std::uint32_t seen = __atomic_load_n(cap, __ATOMIC_RELAXED);
      if (seen &&
          __atomic_compare_exchange_n(cap, &seen, 0u, false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
        break;
    } else if (pcs_trylock(pcs)) {
      preempt_count_dec();  // pcs_trylock's own count holds it
      return;
    }
    if (spins < 64)
      cpu_relax();
    else
      sched_yield();
  }
  if (platform::rseq_fence_cpu(cpu) != 0)
    panic("membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ) failed after registration");
  pcs_take_slot(s, pcs, cpu);
}

// ---- sheaf memory -----------------------------------------------------------------------

// A sheaf starts kSheafSkew bytes into its slab object.  Every fast-path operation stores the
// sheaf's size word and then, in the next operation, loads s->cpu_sheaves, the slot's lock
// word and main pointer: when the two addresses agree in their low 12 bits the CPU takes the
// load for one that depends on the store (4K aliasing) and replays it.  Slab objects, kmem_cache
// structures and the slot arrays all start at page offset 0 in a fresh heap - a program's first
// cache had its kmem_cache, its slot array and its first sheaf at page offset 0 and ran its
// pair 15 % slower (5.9 against 5.1 ns).  Half a line into the object, the size word never
// shares its page offset with the slots' words (line-aligned, at +0 and +8) or with the start
// of a kmem_cache.
constexpr std::size_t kSheafSkew = 32;

slab_sheaf* sheaf_new(kmem_cache* s) {
  // The capacity follows from the cache actually used, never from a separately read field
  // that a concurrent resize could have changed in between.
  kmem_cache* sc = __atomic_load_n(&s->sheaf_cache, __ATOMIC_ACQUIRE);
  void* mem = slab_alloc_core(sc, 0, NUMA_NO_NODE);
  if (!mem) return nullptr;
  auto* sh = reinterpret_cast<slab_sheaf*>(static_cast<char*>(mem) + kSheafSkew);
  sh->size = 0;
  sh->capacity = static_cast<std::uint32_t>((sc->object_size - kSheafSkew - sizeof(slab_sheaf)) /
                                            sizeof(void*));
  sh->next = nullptr;
  return sh;
}

void sheaf_delete(kmem_cache* s, slab_sheaf* sh) {
  if (sh == empty_sheaf()) return;
  (void)s;
  // The sheaf's own cache (it may predate a resize that switched s->sheaf_cache).
  page* slab = virt_to_slab(sh);
  if (!slab) return;
  auto* sc = static_cast<kmem_cache*>(__atomic_load_n(&slab->slab_cache, __ATOMIC_RELAXED));
  slab_free_core(sc, slab, reinterpret_cast<char*>(sh) - kSheafSkew);
}

// Returns the objects of a sheaf to their slabs: the kernel's build_detached_freelist /
// do_slab_free, with the free-key check fused into the same pass.  Each object's key is checked
// (the free pointer that links it into its slab's detached list then replaces the key); an
// object without it is reported and left out (sheaf_flush_reject), never freed twice into a
// slab.  The objects of a sheaf come from a few slabs in any order: up to kFlushGroups detached
// lists are built at once (the last one used is tried first, then a scan), and each slab gets
// its list with one do_slab_free (one CAS; list_lock only when the slab changes lists).
constexpr unsigned kFlushGroups = 8;

// freeptr_mask (slab.hpp) with the cache's secret in a register.
USLUB_ALWAYS_INLINE std::uintptr_t freeptr_mask_hoisted(std::uintptr_t secret, std::uintptr_t at) {
#if USLUB_NO_FREELIST_HARDENING
  (void)secret, (void)at;
  return 0;
#else
  return secret ^ __builtin_bswap64(at);
#endif
}

struct detached_freelist {
  page* slab;
  void* head;
  void* tail;
  unsigned cnt;
};

struct flush_lists {
  detached_freelist g[kFlushGroups];
  unsigned ng = 0, evict = 0;
};

// The list of obj's slab (a new one if none is open; with kFlushGroups open, the oldest is
// freed first).  Out of line: the flush loop keeps the current list in registers.
USLUB_NOINLINE unsigned flush_list_of(kmem_cache* s, flush_lists& fl, void* obj) {
  page* slab = virt_to_slab(obj);  // a checked object of s (it passed the free's check)
  unsigned k = 0;
  while (k < fl.ng && fl.g[k].slab != slab) ++k;
  if (k < fl.ng) return k;
  if (fl.ng < kFlushGroups) {
    k = fl.ng++;
  } else {
    k = fl.evict;
    fl.evict = (fl.evict + 1) % kFlushGroups;
    detached_freelist& d = fl.g[k];
    do_slab_free(s, d.slab, d.head, d.tail, d.cnt);
  }
  fl.g[k] = {slab, nullptr, obj, 0};
  return k;
}

void sheaf_flush(kmem_cache* s, slab_sheaf* sh) {
  unsigned n = sh->size;
  if (!n) return;
  flush_lists fl;
  // Locals: the stores below (free pointers) may alias *s as far as the compiler knows.
  const bool keyed = s->free_key && !USLUB_NO_FREE_CHECKS;
  const std::uintptr_t secret = s->random, offset = s->offset;
  // The current list, in registers: its slab as an address range [lo, lo + span) (objects of
  // the same slab need no look-up), its head and count.
  std::uintptr_t lo = 0, span = 0;
  unsigned k = 0, cnt = 0;
  void* head = nullptr;
  void** objs = sh->objects;
  for (unsigned i = 0; i < n; ++i) {
    void* obj = objs[i];
    auto a = reinterpret_cast<std::uintptr_t>(obj);
    auto* word = reinterpret_cast<std::uintptr_t*>(a + offset);
    if (keyed && USLUB_UNLIKELY(*word != (secret ^ a))) {
      sheaf_flush_reject(s, obj, objs, i);
      continue;
    }
    if (USLUB_UNLIKELY(a - lo >= span)) {
      if (fl.ng) fl.g[k].head = head, fl.g[k].cnt = cnt;
      k = flush_list_of(s, fl, obj);
      page* slab = fl.g[k].slab;
      lo = reinterpret_cast<std::uintptr_t>(slab_address(slab));
      span = __atomic_load_n(&slab->slab_mask, __ATOMIC_RELAXED) + 1;
      head = fl.g[k].head;
      cnt = fl.g[k].cnt;
    }
    if (USLUB_UNLIKELY(obj == head)) continue;  // twice in a row (the key is off)
    *word = reinterpret_cast<std::uintptr_t>(head) ^ freeptr_mask_hoisted(secret, a + offset);
    head = obj;
    ++cnt;
  }
  if (fl.ng) fl.g[k].head = head, fl.g[k].cnt = cnt;
  for (unsigned j = 0; j < fl.ng; ++j)
    do_slab_free(s, fl.g[j].slab, fl.g[j].head, fl.g[j].tail, fl.g[j].cnt);
  sh->size = 0;
  sheaf_stat_inc(s, SHEAF_FLUSH);
}

// Passive false sharing (Hoard's cache-scratch): a refill takes objects in address order, so
// consecutive allocations of objects smaller than a cache line would share lines, and a thread
// that allocates a few and hands them to other threads makes those threads' writes fight over
// one line for as long as each keeps reusing its object.  The refill orders objects smaller
// than a line by their slot within the line instead (a counting sort on index % k, k objects
// per line): consecutive allocations come from different lines of the same slab, the objects
// of one refill still from the same few pages.  The same pass gives every object the free key
// (sheaf.hpp): objects a refill takes from the slabs enter the sheaf keyed.
// The index is address / size by the cache's reciprocal (boundary_mul = ceil(2^64 / size),
// exact for 32-bit numerators: the address's low 24 bits, a multiple of every slab size, so
// the index's residue mod k is consistent within a slab); k is 2, 4 or 8, or 3 (size 24).
void sheaf_prepare_refill(kmem_cache* s, void** objs, unsigned n) {
  constexpr unsigned kLine = 64;
  const bool keyed = s->free_key && !USLUB_NO_FREE_CHECKS;
  // Locals: the key stores may alias *s as far as the compiler knows.
  const std::uintptr_t secret = s->random, offset = s->offset;
  auto store_key = [&](void* o) {
    auto a = reinterpret_cast<std::uintptr_t>(o);
    *reinterpret_cast<std::uintptr_t*>(a + offset) = secret ^ a;  // free_key_store
  };
  if (s->size >= kLine || n < 2) {
    if (keyed)
      for (unsigned i = 0; i < n; ++i) store_key(objs[i]);
    return;
  }
  unsigned k = (kLine + s->size - 1) / s->size;  // <= 8: sizes are multiples of 8
  const std::uint64_t mul = s->boundary_mul;
  auto group = [&](void* o) -> unsigned {
    auto low = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(o) & 0xffffff);
    auto idx = static_cast<std::uint64_t>((static_cast<unsigned __int128>(low) * mul) >> 64);
    return static_cast<unsigned>(k == 3 ? idx % 3 : idx & (k - 1));
  };
  unsigned count[kLine / 8 + 1] = {};
  unsigned char grp[kMaxSheafCapacity];
  void* tmp[kMaxSheafCapacity];
  for (unsigned i = 0; i < n; ++i) {
    if (keyed) store_key(objs[i]);
    grp[i] = static_cast<unsigned char>(group(objs[i]));
    ++count[grp[i] + 1];
  }
  for (unsigned g = 1; g <= k; ++g) count[g] += count[g - 1];
  for (unsigned i = 0; i < n; ++i) tmp[count[grp[i]]++] = objs[i];
  memcpy(objs, tmp, n * sizeof(void*));
}

// ---- the barn ---------------------------------------------------------------------------

node_barn* local_barn(kmem_cache* s) {
  return &s->barn[static_cast<unsigned>(platform::cpu_to_node(this_cpu_index(s))) % s->nr_nodes];
}

// The base limit of a barn's lists (sheaf.hpp): 10 sheaves, or kBarnBytes of objects.
unsigned barn_base_limit(const kmem_cache* s) {
  std::size_t bytes = std::size_t{sheaf_capacity_of(s)} * s->size;
  std::size_t n = bytes ? kBarnBytes / bytes : kBarnMinSheaves;
  return n < kBarnMinSheaves   ? kBarnMinSheaves
         : n > kBarnMaxSheaves ? kBarnMaxSheaves
                               : static_cast<unsigned>(n);
}

// The limit now.  Context: b->lock.
unsigned barn_limit(const kmem_cache* s, const node_barn* b) {
  unsigned base = barn_base_limit(s);
  return b->grown > base ? b->grown : base;
}

// A put found the full list at its limit: if any full sheaf was taken since the previous
// overflow (another CPU allocates them), double the limit, up to kBarnMaxBytes of objects.
// The limit only grows; shrinking the cache (sheaf_drain_all) forgets it.  Context: b->lock.
void barn_overflow(const kmem_cache* s, node_barn* b) {
  if (b->taken != 0) {
    std::size_t bytes = std::size_t{sheaf_capacity_of(s)} * s->size;
    std::size_t most = bytes ? kBarnMaxBytes / bytes : kBarnMinSheaves;
    std::size_t want = std::size_t{barn_limit(s, b)} * 2;
    b->grown = static_cast<unsigned>(want < most ? want : most);
  }
  b->taken = 0;
}

slab_sheaf* barn_get(kmem_cache* s, node_barn* b, bool full) {
  lock_guard<spinlock_t> g(b->lock);
  slab_sheaf** list = full ? &b->full : &b->empty;
  slab_sheaf* sh = *list;
  if (!sh) {
    sheaf_stat_inc(s, BARN_GET_FAIL);
    return nullptr;
  }
  *list = sh->next;
  (full ? b->nr_full : b->nr_empty)--;
  if (full) b->taken++;
  sheaf_stat_inc(s, BARN_GET);
  return sh;
}

// Parks a sheaf in the barn; false if the list is at its limit or the sheaf has an old
// capacity (the caller then flushes and/or frees it).
bool barn_put(kmem_cache* s, node_barn* b, slab_sheaf* sh) {
  if (sh == empty_sheaf()) return true;
  bool full = sh->size != 0;
  if (sh->capacity != sheaf_capacity_of(s) || (full && sh->size != sh->capacity)) {
    sheaf_stat_inc(s, BARN_PUT_FAIL);
    return false;
  }
  lock_guard<spinlock_t> g(b->lock);
  unsigned& nr = full ? b->nr_full : b->nr_empty;
  if (nr >= barn_limit(s, b)) {
    if (full) barn_overflow(s, b);
    if (nr >= barn_limit(s, b)) {
      sheaf_stat_inc(s, BARN_PUT_FAIL);
      return false;
    }
  }
  slab_sheaf** list = full ? &b->full : &b->empty;
  sh->next = *list;
  *list = sh;
  nr++;
  sheaf_stat_inc(s, BARN_PUT);
  return true;
}

// Gets rid of a sheaf the slot no longer wants: barn, else flush and free.
// Context: no sheaf lock held (it may flush to the slabs).
void sheaf_retire(kmem_cache* s, slab_sheaf* sh) {
  if (sh == empty_sheaf()) return;
  if (barn_put(s, local_barn(s), sh)) return;
  sheaf_flush(s, sh);
  if (!barn_put(s, local_barn(s), sh)) sheaf_delete(s, sh);
}

// Frees the alien buffer's objects back to their slabs.  Context: no lock held.
void flush_alien(kmem_cache* s, void** objs, unsigned n) {
  if (n) kmem_cache_free_bulk_impl(s, n, objs, true);
}

}  // namespace

bool g_free_key_default = true;

// Printed with the current stack: the second free's, the culprit's.
void sheaf_report_double_free(kmem_cache* s, void* obj) {
  void* pcs[kStackDepth];
  unsigned n = capture_stack(pcs, kStackDepth, 1);
  char stack[2048];
  append_stack(stack, 0, sizeof stack, pcs, n);
  report_bug(s->name, "Object already free",
             "object %p freed while it is free in a sheaf (on top of it, or its free key is "
             "there): freed twice; this free is ignored\n  Freed again at:\n%s",
             obj, stack);
}

void sheaf_flush_reject(kmem_cache* s, void* obj, void* const* objs, unsigned i) {
  std::uintptr_t seen = *free_key_word(s, obj);
  // An earlier copy of obj in this flush was linked into its slab's detached list (its free
  // pointer replaced the key); 0 is what an allocation leaves.  Either way the same object was
  // in a sheaf twice (freed twice: two frees racing on two CPUs, or a second free the sampled
  // check passed over) and one copy was handed out or is being flushed.
  bool twice = seen == 0;
  for (unsigned j = 0; j < i && !twice; ++j) twice = objs[j] == obj;
  if (twice)
    report_bug(s->name, "Object already free",
               "object %p is in a sheaf twice or in a sheaf while allocated: it was freed "
               "twice; this copy is dropped\n",
               obj);
  else
    report_bug(s->name, "Freepointer corrupt",
               "object %p in a sheaf lost its free key (word at offset %u is %#lx): written "
               "after it was freed; dropped\n",
               obj, s->offset, static_cast<unsigned long>(seen));
}

void sheaf_stat_inc_slow(const kmem_cache* s, sheaf_stat_item si, std::uint64_t n) {
  auto& c = s->sheaf_stat[this_cpu_index(s) * NR_SHEAF_STAT_ITEMS + si];
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

// A sheaf of objects up to 64 B holds up to 8 KiB of them (512 of 8 or 16 B, 256 of 24 or 32 B,
// 128 of 40 to 64 B), as one of 128-B objects does; larger objects keep the counts below.
// Every trip of a sheaf to or from the barn costs the slot lock and the barn lock however few
// objects it carries, and at 64 objects a sheaf of 16-B objects carried only 1 KiB.  The limit
// is in bytes because the slot keeps, in a program whose allocations and frees balance, about
// one sheaf of free objects per class in steady state (the sheaf level wanders over main and
// spare): a fixed 512 for every class up to 64 B made alloc-test on one thread 25-40 % slower
// at L2- and L3-sized working sets (bench/results/2026-12-03-sheaf-capacity-*.md).
unsigned sheaf_default_capacity(unsigned size) {
  if (size <= 64) {
    unsigned cap = 512;
    while (cap > 64 && cap * size > 8192) cap /= 2;
    return cap;
  }
  return size <= 128 ? 64 : size <= 512 ? 32 : size <= 2048 ? 16 : 8;
}

// ---- slow paths -------------------------------------------------------------------------

// sheaf_alloc_slow without the key clear: the object comes from a sheaf (keyed), from a
// refill (the one not given a key) or from the slabs (a free pointer in the word).
static void* sheaf_alloc_miss(kmem_cache* s, gfp_t gfp) {
  sheaf_stat_inc(s, SHEAF_ALLOC_MISS);
  slub_percpu_sheaves* pcs = pcs_lock_local(s);
  if (!pcs) {  // busy (a drain, or a preempted slow path): straight to the slabs
    sheaf_stat_inc(s, SHEAF_BUSY_FALLBACK);
    return slab_alloc_core(s, gfp & ~__GFP_ZERO, NUMA_NO_NODE);
  }
  slab_sheaf* main = pcs->main;
  if (main->size == 0 && pcs->spare && pcs->spare->size) {  // swap with the spare
    pcs_swap_main_spare(pcs);
    sheaf_stat_inc(s, SHEAF_SWAP);
  } else if (main->size == 0) {
    // Trade the empty main for a full sheaf from the barn.
    if (slab_sheaf* full = barn_get(s, local_barn(s), true)) {
      pcs->main = full;
      slab_sheaf* retire = nullptr;
      if (main != empty_sheaf()) {
        if (!pcs->spare)
          pcs->spare = main;
        else
          retire = main;
      }
      void* obj = full->objects[--full->size];
      pcs_release(s, pcs);
      if (retire) sheaf_retire(s, retire);
      return obj;
    }
    pcs_release(s, pcs);
    // Refill a sheaf from the slabs with no sheaf lock held.
    slab_sheaf* sh = barn_get(s, local_barn(s), false);
    if (!sh || sh->capacity != sheaf_capacity_of(s)) {
      if (sh) sheaf_delete(s, sh);
      sh = sheaf_new(s);
    }
    if (!sh) return slab_alloc_core(s, gfp & ~__GFP_ZERO, NUMA_NO_NODE);
    // At most one page of a new slab per refill (kmem_cache_alloc_bulk_impl's fresh_page): the
    // key stores below are the first writes to those objects, and each new page is a fault.
    int got = kmem_cache_alloc_bulk_impl(s, 0, sh->capacity, sh->objects, true);
    if (!got) {
      sheaf_delete(s, sh);
      return slab_alloc_core(s, gfp & ~__GFP_ZERO, NUMA_NO_NODE);  // NULL + ENOMEM if truly out
    }
    sheaf_stat_inc(s, SHEAF_REFILL);
    auto n = static_cast<unsigned>(got);
    sh->size = n - 1;
    sheaf_prepare_refill(s, sh->objects, n);  // (the one returned: cleared by the caller)
    void* obj = sh->objects[sh->size];
    pcs = pcs_lock_local(s);  // possibly another CPU now
    slab_sheaf* retire = sh;
    if (pcs) {
      if (pcs->main->size == 0) {
        slab_sheaf* old = pcs->main;
        pcs->main = sh;
        retire = nullptr;
        if (old != empty_sheaf()) {
          if (!pcs->spare)
            pcs->spare = old;
          else
            retire = old;
        }
      } else if (!pcs->spare || pcs->spare->size == 0) {
        retire = pcs->spare;
        pcs->spare = sh;
      }
      pcs_release(s, pcs);
    }
    if (retire) sheaf_retire(s, retire);
    return obj;
  }
  // main has objects now (swapped in, or refilled by someone while we looked).
  main = pcs->main;
  void* obj = main->size ? main->objects[--main->size] : nullptr;
  pcs_release(s, pcs);
  if (obj) return obj;
  return slab_alloc_core(s, gfp & ~__GFP_ZERO, NUMA_NO_NODE);
}

void* sheaf_alloc_slow(kmem_cache* s, gfp_t gfp) {
  void* obj = sheaf_alloc_miss(s, gfp);
  if (obj) free_key_clear(s, obj);  // whatever the word held: a key, or a free pointer
  return obj;
}

void sheaf_free_slow(kmem_cache* s, page* slab, void* obj) {
  sheaf_stat_inc(s, SHEAF_FREE_MISS);
  slub_percpu_sheaves* pcs = pcs_lock_local(s);
  if (!pcs) {
    sheaf_stat_inc(s, SHEAF_BUSY_FALLBACK);
    return slab_free_core(s, slab, obj);
  }
  // Frees of objects from another node go back to their node in batches (alien caches).
  int nid = slab_nid(slab);
  if (s->nr_nodes > 1 &&
      nid != platform::cpu_to_node(static_cast<unsigned>(pcs - s->cpu_sheaves))) {
    void* batch[kAlienBatch];
    unsigned n = 0;
    if (pcs->nr_alien && (pcs->alien_node != nid || pcs->nr_alien == kAlienBatch)) {
      n = pcs->nr_alien;
      memcpy(batch, pcs->alien, n * sizeof(void*));
      pcs->nr_alien = 0;
    }
    pcs->alien_node = nid;
    pcs->alien[pcs->nr_alien++] = obj;
    pcs_release(s, pcs);
    sheaf_stat_inc(s, SHEAF_ALIEN_FREE);
    flush_alien(s, batch, n);
    return;
  }
  slab_sheaf* main = pcs->main;
  if (main->size < main->capacity) {  // a refill raced in: just push
    main->objects[main->size++] = obj;
    pcs_release(s, pcs);
    return;
  }
  if (pcs->spare && pcs->spare->size < pcs->spare->capacity) {  // swap with the spare
    slab_sheaf* now = pcs_swap_main_spare(pcs);
    now->objects[now->size++] = obj;
    pcs_release(s, pcs);
    sheaf_stat_inc(s, SHEAF_SWAP);
    return;
  }
  // Trade the full main for an empty sheaf from the barn.
  slab_sheaf* empty = barn_get(s, local_barn(s), false);
  if (empty && empty->capacity == sheaf_capacity_of(s)) {
    pcs->main = empty;
    empty->objects[empty->size++] = obj;
    pcs_release(s, pcs);
    sheaf_retire(s, main);
    return;
  }
  // No empty sheaf: take the full main out, no lock held; park it in the barn for a CPU that
  // allocates (the kernel's __pcs_replace_full_main allocates an empty sheaf rather than
  // flush while the barn has room), else flush it to the slabs.  Flushing whenever the barn
  // had no empty sheaf sent every sheaf of a producer/consumer pair through the slabs: the
  // allocating CPU's refills took the barn's empty sheaves, so the freeing CPU never found
  // one (xmalloc-test: 600 k refills and 600 k flushes in 2 s, no full sheaf ever traded).
  pcs->main = empty_sheaf();
  pcs_release(s, pcs);
  if (empty) sheaf_delete(s, empty);
  slab_sheaf* sh = main;
  if (sh == empty_sheaf() || barn_put(s, local_barn(s), sh)) {
    sh = sheaf_new(s);
    if (!sh) return slab_free_core(s, slab, obj);
  } else {
    sheaf_flush(s, sh);
    if (sh->capacity != sheaf_capacity_of(s)) {
      sheaf_delete(s, sh);
      sh = sheaf_new(s);
      if (!sh) return slab_free_core(s, slab, obj);
    }
  }
  sh->objects[sh->size++] = obj;
  pcs = pcs_lock_local(s);
  if (pcs && pcs->main == empty_sheaf()) {
    pcs->main = sh;
    sh = nullptr;
  }
  if (pcs) pcs_release(s, pcs);
  if (sh) {  // the slot filled up meanwhile: our one object goes to its slab
    sh->size = 0;
    slab_free_core(s, slab, obj);
    sheaf_retire(s, sh);
  }
}

// ---- bulk -------------------------------------------------------------------------------

// Takes up to nr objects from this CPU's main sheaf (swapped with a fuller spare first),
// clearing their free keys.  Returns how many; 0 if the slot is busy.  (Element loops, not
// memcpy: the caller reads p[] right away, and a wide copy's stores would not forward to
// those 8-byte loads.)
static std::size_t sheaf_take(kmem_cache* s, std::size_t nr, void** p) {
  slub_percpu_sheaves* pcs = pcs_lock_local(s);
  if (!pcs) return 0;
  slab_sheaf* main = pcs->main;
  if (main->size < nr && pcs->spare && pcs->spare->size > main->size)
    main = pcs_swap_main_spare(pcs);
  std::size_t k = nr < main->size ? nr : main->size;
  if (k == 0) {  // never write the static empty sheaf (the fast paths read it unlocked)
    pcs_release(s, pcs);
    return 0;
  }
  main->size -= static_cast<unsigned>(k);
  void** from = main->objects + main->size;
  for (std::size_t i = 0; i < k; ++i) {
    p[i] = from[i];
    free_key_clear(s, from[i]);
  }
  pcs_release(s, pcs);
  return k;
}

// Pushes up to n objects into this CPU's main sheaf (swapped with an emptier spare first).
// Returns how many; 0 if the slot is busy.
static std::size_t sheaf_put(kmem_cache* s, std::size_t n, void** p) {
  slub_percpu_sheaves* pcs = pcs_lock_local(s);
  if (!pcs) return 0;
  slab_sheaf* main = pcs->main;
  unsigned room = main->capacity - main->size;
  if (room < n && pcs->spare && pcs->spare->capacity - pcs->spare->size > room) {
    main = pcs_swap_main_spare(pcs);
    room = main->capacity - main->size;
  }
  std::size_t k = n < room ? n : room;
  if (k == 0) {  // never write the static empty sheaf (the fast paths read it unlocked)
    pcs_release(s, pcs);
    return 0;
  }
  void** to = main->objects + main->size;
  for (std::size_t i = 0; i < k; ++i) to[i] = p[i];
  main->size += static_cast<unsigned>(k);
  pcs_release(s, pcs);
  return k;
}

std::size_t sheaf_alloc_bulk(kmem_cache* s, std::size_t nr, void** p) {
  std::size_t k = sheaf_take(s, nr, p), hits = k;
  if (k < nr) {
    // Empty: one object through the single-object slow path (counted as a miss there), which
    // installs a full sheaf (from the barn or refilled from the slabs), then the rest from it.
    if (void* obj = sheaf_alloc_slow(s, 0)) {
      p[k++] = obj;
      std::size_t more = sheaf_take(s, nr - k, p + k);
      k += more;
      hits += more;
    }
  }
  if (USLUB_UNLIKELY(s->sheaf_stat && hits)) sheaf_stat_inc_slow(s, SHEAF_ALLOC_HIT, hits);
  return k;
}

void sheaf_free_bulk(kmem_cache* s, std::size_t nr, void** p) {
  // p[0, n): checked objects of this CPU's node, keyed; other nodes' objects in alien[].
  void* alien[kAlienBatch];
  unsigned nr_alien = 0;
  const int nid = s->nr_nodes > 1 ? platform::cpu_to_node(this_cpu_index(s)) : 0;
  std::size_t n = 0;
  for (std::size_t i = 0; i < nr; ++i) {
    void* obj = p[i];
    if (!obj) continue;
    page* slab = slab_free_check_inline(s, obj, "kmem_cache_free_bulk");
    if (!slab) continue;  // reported
    if (USLUB_UNLIKELY(s->free_key && !free_key_set(s, obj))) {
      sheaf_report_double_free(s, obj);
      continue;
    }
    // (nid is the node of the CPU we ran on a moment ago: a migration in between costs
    // locality, not correctness.)
    if (s->nr_nodes > 1 && slab_nid(slab) != nid) {  // back to its node, not into our sheaf
      alien[nr_alien++] = obj;
      if (nr_alien == kAlienBatch) {
        flush_alien(s, alien, nr_alien);
        nr_alien = 0;
      }
      continue;
    }
    p[n++] = obj;
  }
  if (nr_alien) flush_alien(s, alien, nr_alien);
  if (n == 0) return;
  std::size_t k = sheaf_put(s, n, p), hits = k;
  if (k < n) {
    // Full: one object through the single-object slow path, which makes room (the barn's
    // empty sheaf, or a flush of the full one), then the rest into that sheaf.
    sheaf_free_slow(s, virt_to_slab(p[k]), p[k]);
    ++k;
    std::size_t more = sheaf_put(s, n - k, p + k);
    k += more;
    hits += more;
  }
  if (USLUB_UNLIKELY(s->sheaf_stat && hits)) sheaf_stat_inc_slow(s, SHEAF_FREE_HIT, hits);
  // What still did not fit goes to the slabs (the bulk free's free pointers replace the keys).
  if (k < n) kmem_cache_free_bulk_impl(s, n - k, p + k, true);
}

// ---- drain ------------------------------------------------------------------------------

// Empties one CPU's slot: main, spare and alien buffer go back to the slabs.
// Context: no sheaf lock held (waits for the slot's lock word).
void sheaf_drain_cpu(kmem_cache* s, unsigned cpu) {
  if (!s->cpu_sheaves) return;
  pcs_lock_remote(s, cpu);
  slub_percpu_sheaves* pcs = &s->cpu_sheaves[cpu];
  slab_sheaf* main = pcs->main;
  slab_sheaf* spare = pcs->spare;
  void* alien[kAlienBatch];
  unsigned nr_alien = pcs->nr_alien;
  memcpy(alien, pcs->alien, nr_alien * sizeof(void*));
  pcs->nr_alien = 0;
  pcs->main = empty_sheaf();
  pcs->spare = nullptr;
  pcs_release(s, pcs);
  sheaf_stat_inc(s, SHEAF_REMOTE_DRAIN);
  for (slab_sheaf* sh : {main, spare}) {
    if (!sh || sh == empty_sheaf()) continue;
    sheaf_flush(s, sh);
    sheaf_delete(s, sh);
  }
  flush_alien(s, alien, nr_alien);
}

// sheaf_drain_all: the drain_all generation protocol of seed 004 (see page/pcp.cpp for the
// argument).  Here the fast paths publish objects with rseq commit stores, not under a lock:
// the hand-off is rseq_fence_cpu() (membarrier), which makes the target CPU execute a full
// barrier after we incremented the generation, so a caller that read the old generation has
// its commit store visible to our reads of that CPU's slot; a caller that runs later reads
// the new generation and drains by itself.  Every CPU's slot is locked (never skipped on a
// racy peek).
void sheaf_drain_all(kmem_cache* s) {
  if (!s->cpu_sheaves) return;
  std::uint64_t this_gen = s->sheaf_drain_gen.load(std::memory_order_acquire);
  flush_mutex_lock();
  if (s->sheaf_drain_gen.load(std::memory_order_relaxed) != this_gen) {
    flush_mutex_unlock();
    return;
  }
  s->sheaf_drain_gen.store(this_gen + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_seq_cst);  // the increment before the fences
  for (unsigned cpu = 0; cpu < s->nr_cpus; ++cpu) sheaf_drain_cpu(s, cpu);
  for (unsigned n = 0; n < s->nr_nodes; ++n) {
    node_barn* b = &s->barn[n];
    b->lock.lock();
    slab_sheaf* lists[2] = {b->full, b->empty};
    b->full = b->empty = nullptr;
    b->nr_full = b->nr_empty = 0;
    b->grown = b->taken = 0;  // shrinking forgets the learnt limit
    b->lock.unlock();
    for (slab_sheaf* sh : lists)
      while (sh) {
        slab_sheaf* next = sh->next;
        sheaf_flush(s, sh);
        sheaf_delete(s, sh);
        sh = next;
      }
  }
  flush_mutex_unlock();
}

void sheaf_fork_prepare(kmem_cache* s) {
  if (!s->cpu_sheaves) return;
  for (unsigned cpu = 0; cpu < s->nr_cpus; ++cpu) pcs_lock_remote(s, cpu, &slab_mutex);
  for (unsigned n = 0; n < s->nr_nodes; ++n) s->barn[n].lock.lock_nest_lock(&slab_mutex);
}

void sheaf_fork_release(kmem_cache* s) {
  if (!s->cpu_sheaves) return;
  for (unsigned n = s->nr_nodes; n-- > 0;) s->barn[n].lock.unlock();
  for (unsigned cpu = s->nr_cpus; cpu-- > 0;) pcs_release(s, &s->cpu_sheaves[cpu]);
}

// ---- setup ------------------------------------------------------------------------------

static kmem_cache* sheaf_cache_for(unsigned capacity) {
  char name[32];
  snprintf(name, sizeof name, "slab_sheaf-%u", capacity);
  // Sheaf caches never use sheaves themselves (no recursion) and never merge with one that
  // does; kmem_cache_create's merge finds an existing one of the same size.
  return kmem_cache_create_on(nullptr, name,
                              kSheafSkew + sizeof(slab_sheaf) + capacity * sizeof(void*),
                              kCacheLine, SLAB_NO_SHEAVES, nullptr);
}

// ---- the per-CPU slot area -------------------------------------------------------------

char* g_pcpu_area = nullptr;

namespace {
constinit lock_class_key pcpu_slots_lock_key{"pcpu_slots_lock"};
// Protects g_slot_used and the area's creation.  A leaf.
constinit spinlock_t g_pcpu_slots_lock{&pcpu_slots_lock_key};
// Slot indices in use (kmalloc's and the reserved ones are never handed out).
std::uint64_t g_slot_used[kNrPcpuSlots / 64];

bool pcpu_area_ready_locked() {
  if (g_pcpu_area) return true;
  void* mem;
  if (platform::linux_vm().map(std::size_t{platform::nr_cpu_ids()} << kPcpuShift, &mem) != 0)
    return false;
  for (unsigned i = 0; i < kKmallocSlot0 + kNrKmallocSlots; ++i)
    g_slot_used[i / 64] |= std::uint64_t{1} << (i % 64);
  __atomic_store_n(&g_pcpu_area, static_cast<char*>(mem), __ATOMIC_RELEASE);
  return true;
}

// A free slot index, or 0 if none is left (the cache then runs without the rseq fast paths).
unsigned pcpu_slot_alloc() {
  lock_guard<spinlock_t> g(g_pcpu_slots_lock);
  if (!pcpu_area_ready_locked()) return 0;
  for (unsigned w = 0; w < kNrPcpuSlots / 64; ++w)
    if (~g_slot_used[w]) {
      unsigned b = static_cast<unsigned>(__builtin_ctzll(~g_slot_used[w]));
      g_slot_used[w] |= std::uint64_t{1} << b;
      return w * 64 + b;
    }
  return 0;
}

void pcpu_slot_free(unsigned index) {
  if (index < kKmallocSlot0 + kNrKmallocSlots) return;
  lock_guard<spinlock_t> g(g_pcpu_slots_lock);
  g_slot_used[index / 64] &= ~(std::uint64_t{1} << (index % 64));
}

// Every CPU's slot of s: no sheaf.  Context: s not visible, or every slot held.
void pcpu_slots_reset(kmem_cache* s) {
  for (unsigned c = 0; c < s->nr_cpus; ++c) {
    sheaf_slot* sl = pcpu_slot(c, s->slot_off);
    __atomic_store_n(&sl->objs, static_cast<void**>(empty_sheaf()->objects), __ATOMIC_RELAXED);
    __atomic_store_n(&sl->size, 0u, __ATOMIC_RELAXED);
    __atomic_store_n(&sl->cap, kSlotNoSheaf, __ATOMIC_RELEASE);
  }
}
}  // namespace

bool sheaf_pcpu_area_init() {
  lock_guard<spinlock_t> g(g_pcpu_slots_lock);
  return pcpu_area_ready_locked();
}

void sheaf_use_slot(kmem_cache* s, unsigned index) {
  if (!s->sheaf_rseq) return;
  pcpu_slot_free(s->slot_off / sizeof(sheaf_slot));
  s->slot_off = index * sizeof(sheaf_slot);
  pcpu_slots_reset(s);
}

int sheaves_init(kmem_cache* s, unsigned capacity) {
  s->cpu_sheaves = nullptr;
  s->barn = nullptr;
  s->sheaf_stat = nullptr;
  s->sheaf_rseq = false;
  s->slot_off = kZeroSlot * sizeof(sheaf_slot);
  if (capacity == 0) return 0;
  if (capacity > kMaxSheafCapacity) capacity = kMaxSheafCapacity;
  s->sheaf_cache = sheaf_cache_for(capacity);
  if (!s->sheaf_cache) return ENOMEM;
  std::size_t pcs_bytes = std::size_t{s->nr_cpus} * sizeof(slub_percpu_sheaves);
  std::size_t barn_off = align_up(pcs_bytes, kCacheLine);
  std::size_t stat_off = barn_off + align_up(s->nr_nodes * sizeof(node_barn), kCacheLine);
  std::size_t bytes = stat_off;
  if (s->flags & SLAB_STATS)
    bytes += std::size_t{s->nr_cpus} * NR_SHEAF_STAT_ITEMS * sizeof(std::uint64_t);
  s->pcs_bytes = static_cast<unsigned>(bytes);
  char* mem = static_cast<char*>(percpu_area_alloc(bytes));
  if (!mem) return ENOMEM;
  s->cpu_sheaves = reinterpret_cast<slub_percpu_sheaves*>(mem);
  for (unsigned c = 0; c < s->nr_cpus; ++c) {
    auto* pcs = new (&s->cpu_sheaves[c]) slub_percpu_sheaves();
    pcs->main = empty_sheaf();
  }
  s->barn = reinterpret_cast<node_barn*>(mem + barn_off);
  for (unsigned n = 0; n < s->nr_nodes; ++n) new (&s->barn[n]) node_barn();
  for (unsigned n = 0; n < s->nr_nodes; ++n) s->barn[n].lock.set_class(&barn_lock_key);
  if (s->flags & SLAB_STATS) {
    s->sheaf_stat = reinterpret_cast<std::atomic<std::uint64_t>*>(mem + stat_off);
    for (std::size_t i = 0; i < std::size_t{s->nr_cpus} * NR_SHEAF_STAT_ITEMS; ++i)
      new (&s->sheaf_stat[i]) std::atomic<std::uint64_t>(0);
  }
  // The slot: statistics count on the locked path, so their caches stay off rseq (unless
  // built with -DUSLUB_STATS_ON_RSEQ=1, a measuring build: the slow-path counters, barn,
  // refill, flush and the SLUB core's, count while the fast paths stay on rseq and count
  // nothing, so sheaf_alloc_hit / sheaf_free_hit stay 0).
  if (USLUB_HAVE_RSEQ_ASM && platform::rseq_sequences_usable() &&
      (USLUB_STATS_ON_RSEQ || !s->sheaf_stat)) {
    if (unsigned index = pcpu_slot_alloc()) {
      s->slot_off = index * sizeof(sheaf_slot);
      s->sheaf_rseq = true;
      pcpu_slots_reset(s);
    }
  }
  s->sheaf_fast_alloc = s->sheaf_rseq;
  s->free_key = g_free_key_default;
  s->sheaf_fast_free = s->sheaf_fast_alloc && s->nr_nodes == 1 && s->free_key;
  s->sheaf_fast_free_plain = s->sheaf_fast_alloc && s->nr_nodes == 1 && !s->free_key;
  // Publish the capacity last: a cache is only used after kmem_cache_create returns.
  s->sheaf_capacity = capacity;
  return 0;
}

void sheaves_free(kmem_cache* s) {
  s->sheaf_fast_alloc = s->sheaf_fast_free = s->sheaf_fast_free_plain = false;
  if (!s->cpu_sheaves) return;
  if (s->sheaf_rseq) {
    // Drained: every slot is back to no sheaf; the index may serve another cache.
    for (unsigned c = 0; c < s->nr_cpus; ++c)
      __atomic_store_n(&pcpu_slot(c, s->slot_off)->cap, 0u, __ATOMIC_RELAXED);
    pcpu_slot_free(s->slot_off / sizeof(sheaf_slot));
    s->sheaf_rseq = false;
    s->slot_off = kZeroSlot * sizeof(sheaf_slot);
  }
  percpu_area_free(s->cpu_sheaves, s->pcs_bytes);
  s->cpu_sheaves = nullptr;
  s->barn = nullptr;
}

void sheaf_set_capacity(kmem_cache* s, unsigned capacity) {
  if (capacity > kMaxSheafCapacity) capacity = kMaxSheafCapacity;
  kmem_cache* sc = sheaf_cache_for(capacity);
  if (!sc) return;
  __atomic_store_n(&s->sheaf_cache, sc, __ATOMIC_RELEASE);
  __atomic_store_n(&s->sheaf_capacity, capacity, __ATOMIC_RELEASE);
  sheaf_drain_all(s);  // old sheaves go back; new ones get the new capacity
}

void sheaf_stats(kmem_cache* s, std::uint64_t out[NR_SHEAF_STAT_ITEMS]) {
  for (int i = 0; i < NR_SHEAF_STAT_ITEMS; ++i) out[i] = 0;
  if (!s->sheaf_stat) return;
  for (unsigned c = 0; c < s->nr_cpus; ++c)
    for (int i = 0; i < NR_SHEAF_STAT_ITEMS; ++i)
      out[i] += s->sheaf_stat[c * NR_SHEAF_STAT_ITEMS + i].load(std::memory_order_relaxed);
}

}  // namespace uslub
