// validate_slab_cache: walks every slab and list of a cache and checks the counters and free
// lists, reporting the first inconsistency (the kernel's validate_slab_cache).
//
// Locking: flush_all() first, so every slab is either on a node partial list (checked under
// list_lock: its freelist can only grow by remote-free CASes, which keep the chain walkable)
// or full / frozen off-list.  Off-list slabs are found by walking the memory map of the
// cache's page allocator; their counters are read with one atomic load, their free lists are
// walked only when the cache is quiescent (slab_gen unchanged across the walk).
//
// Creations and discards run concurrently with the walk (allocate_slab, discard_slab: each
// raises slabs_changing, bumps slab_gen, lowers slabs_changing, all seq_cst; a creation
// writes the slab map and descriptor before PG_slab, with release, a discard clears them
// after its slab_gen bump).  The walk reads slab_gen, then slabs_changing: any creation or
// discard it can half-see either shows in slabs_changing (begun before), or bumps slab_gen
// after the first read and before the effect that was seen.  A slab is checked only if
// slabs_changing was 0 and a mismatch is reported only if slab_gen has not moved; the slab
// and object counts are compared only if slabs_changing is 0 before and after the walk and
// slab_gen unchanged.
#include "base/check.hpp"
#include "slab/debug.hpp"
#include "slab/slab.hpp"

namespace uslub {
namespace {

struct walk_result {
  long slabs = 0, objects = 0;
  bool ok = true;
};

USLUB_SLOWPATH bool fail(kmem_cache* s, page* slab, const char* problem, const char* fmt,
                         unsigned long a, unsigned long b) {
  char detail[160];
  snprintf(detail, sizeof detail, fmt, a, b);
  report_bug(s->name, problem, "slab %p: %s\n", slab_address(slab), detail);
  return false;
}

// A consistent (freelist, counters) pair: read both, then both again, until the two reads
// agree.  Every change of the freelist also changes the counters (inuse or frozen) in the same
// 16-byte CAS, so two agreeing reads are a state the pair was in.  (Read once each, a remote
// free landing between the two loads made a slab look inconsistent.  Not a CAS of the pair
// onto itself: under TSan 16-byte CASes are emulated with a lock that 8-byte stores to the
// same words do not take, and such a CAS lost a concurrent update.)
void snapshot_freelist(page* slab, void** freelist, slab_counters* c) {
  for (;;) {
    void* fl = load_ptr(&slab->freelist);
    std::uint64_t v = load_u64(&slab->counters);
    if (load_ptr(&slab->freelist) == fl && load_u64(&slab->counters) == v) {
      *freelist = fl;
      c->v = v;
      return;
    }
  }
}

// walk_freelist: walk the snapshot's free list (on a node partial list under list_lock: remote
// frees only push in front of it, the chain below stays).  off_list: a slab found in the memory
// map, which may be discarded (and its pages reused) while we look: only a snapshot taken while
// it was this cache's slab, with no slab created or discarded meanwhile, is checked, else it is
// passed over (the count comparison is skipped then too); its list is walked only when it is
// neither frozen nor has free objects (nothing can change what the snapshot says).
bool validate_slab(kmem_cache* s, page* slab, bool on_partial, bool walk_freelist,
                   bool off_list = false) {
  // Off-list: slab_gen, then slabs_changing (both seq_cst).  A creation or discard whose
  // effects this walk may see either had begun (slabs_changing non-zero: skip the slab) or
  // bumps slab_gen after our read and before the effect we saw (re-read below).
  std::uint64_t gen = off_list ? s->slab_gen.load() : 0;
  if (off_list && s->slabs_changing.load() != 0) return true;
  slab_counters c;
  void* freelist;
  snapshot_freelist(slab, &freelist, &c);
  // A mismatch found in an off-list slab is this cache's fault only if no slab was created or
  // discarded since the snapshot (a discard clears the map and PG_slab after its bump).
  auto moved = [&] { return off_list && s->slab_gen.load() != gen; };
  auto bad = [&](const char* problem, const char* fmt, unsigned long a, unsigned long b) {
    return moved() || fail(s, slab, problem, fmt, a, b);
  };
  if (off_list) {
    bool mine =
        (page_flags(slab) & PG_slab) && __atomic_load_n(&slab->slab_cache, __ATOMIC_RELAXED) == s;
    if (!mine || moved()) return true;
    walk_freelist = !c.frozen && freelist == nullptr;
  } else {  // on a partial list, under list_lock: it cannot be discarded meanwhile
    if (!(page_flags(slab) & PG_slab))
      return fail(s, slab, "Slab corrupt", "not marked PG_slab (flags %#lx)%lu", page_flags(slab),
                  0);
    if (__atomic_load_n(&slab->slab_cache, __ATOMIC_RELAXED) != s)
      return fail(s, slab, "Slab corrupt", "slab_cache %#lx is not this cache%lu",
                  reinterpret_cast<unsigned long>(slab->slab_cache), 0);
  }
  // Every page's slab map word names this cache and the slab's order (kfree reads it).
  unsigned order = __atomic_load_n(&slab->order, __ATOMIC_RELAXED);
  std::uintptr_t* map = slab_map_slot(slab_address(slab));
  for (std::size_t i = 0; i < std::size_t{1} << order; ++i) {
    std::uintptr_t got = __atomic_load_n(&map[i], __ATOMIC_ACQUIRE);
    if (got != (s->map_tag | order))
      return bad("Slab corrupt", "slab map word of page %lu is %#lx", i, got);
  }
  if (c.objects != s->objects && c.objects != s->min_objects)
    return bad("Slab corrupt", "objects %lu, expected %lu", c.objects, s->objects);
  if (c.inuse > c.objects)
    return bad("Slab corrupt", "inuse %lu > objects %lu", c.inuse, c.objects);
  if (on_partial && c.frozen)
    return bad("Slab corrupt", "frozen slab on a node partial list%lu%lu", 0, 0);
  if (!walk_freelist) return true;
  unsigned long nfree = 0;
  auto base = reinterpret_cast<std::uintptr_t>(slab_address(slab));
  for (void* p = freelist; p; p = get_freepointer(s, p)) {
    auto a = reinterpret_cast<std::uintptr_t>(p);
    if (a < base + s->red_left_pad || a >= base + std::size_t{c.objects} * s->size ||
        (a - base - s->red_left_pad) % s->size) {
      if (moved()) return true;
      report_bug(s->name, "Freepointer corrupt",
                 "slab %p: free list entry %p is not an object of this slab\n", slab_address(slab),
                 p);
      return false;
    }
    if (++nfree > c.objects)
      return bad("Freepointer corrupt", "free list longer than %lu objects%lu", c.objects, 0);
  }
  if (!c.frozen && nfree + c.inuse != c.objects)
    return bad("Slab corrupt", "inuse %lu + free %lu != objects", c.inuse, nfree);
  if (on_partial && nfree == 0)
    return bad("Slab corrupt", "full slab on the partial list%lu%lu", 0, 0);
  return true;
}

}  // namespace

bool validate_slab_cache(kmem_cache* s) {
  flush_all(s);
  // 1. Node partial lists, under list_lock.
  for (unsigned i = 0; i < s->nr_nodes; ++i) {
    kmem_cache_node* n = &s->node[i];
    lock_guard<spinlock_t> g(n->list_lock);
    std::size_t count = 0;
    for (list_head* pos = n->partial.next; pos != &n->partial; pos = pos->next) {
      page* slab = list_entry<page, &page::lru>(pos);
      if (slab_nid(slab) != static_cast<int>(i)) {
        report_bug(s->name, "Slab corrupt",
                   "slab %p on the partial list of node %u, but on node %d\n", slab_address(slab),
                   i, slab_nid(slab));
        return false;
      }
      if (!validate_slab(s, slab, true, true)) return false;
      if (++count > n->nr_partial + 1000000) break;
    }
    if (count != n->nr_partial) {
      report_bug(s->name, "Slab corrupt", "node %u: nr_partial %zu but %zu slabs on the list\n", i,
                 n->nr_partial, count);
      return false;
    }
  }
  // 2. Every slab of the cache, from the memory map.  slab_gen before slabs_changing, as in
  // validate_slab: a creation or discard that began after the second read bumps slab_gen
  // after the first.
  std::uint64_t gen = s->slab_gen.load();
  int changing = s->slabs_changing.load();
  long slabs = 0, objects = 0;
  bool ok = true;
  s->pa->for_each_section([&](mem_section* sec) {
    std::size_t top = sec->top.load(std::memory_order_acquire) / PAGE_SIZE;
    for (std::size_t pfn = FIRST_DATA_PFN; pfn < top && ok;) {
      page* p = reinterpret_cast<page*>(sec->base) + pfn;
      std::uint32_t f = p->flags.load(std::memory_order_acquire);  // pairs with allocate_slab
      unsigned order = __atomic_load_n(&p->order, __ATOMIC_RELAXED);
      if ((f & PG_head) && (f & PG_slab) &&
          __atomic_load_n(&p->slab_cache, __ATOMIC_RELAXED) == s) {
        ++slabs;
        slab_counters c;
        c.v = load_u64(&p->counters);
        objects += c.objects;
        // Off-list slabs: checked from a snapshot, free lists only when nothing can change
        // them (validate_slab's off_list).
        ok = validate_slab(s, p, false, false, /*off_list=*/true);
        // Debug caches: every object's red zones, poison and padding (debug.hpp).
        if (ok && kmem_cache_debug(s)) ok = debug_validate_slab(s, p);
      }
      pfn += (f & (PG_head | PG_buddy | PG_pcp | PG_isolated)) && order <= MAX_ORDER
                 ? std::size_t{1} << order
                 : 1;
    }
  });
  if (!ok) return false;
  // The counters are read before the closing checks: one read after them could take in a
  // creation or discard that began after the checks.
  long want_slabs = 0, want_objects = 0;
  for (unsigned i = 0; i < s->nr_nodes; ++i) {
    want_slabs += s->node[i].nr_slabs.load();
    want_objects += s->node[i].total_objects.load();
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);  // the walk's loads before these
  // slabs_changing before slab_gen: a creation the walk saw half-way is still counted in the
  // former, or its slab_gen bump (made before its decrement) shows in the latter.
  bool quiet = changing == 0 && s->slabs_changing.load() == 0 && s->slab_gen.load() == gen;
  if (quiet && (want_slabs != slabs || want_objects != objects)) {
    report_bug(s->name, "Slab corrupt",
               "counters say %ld slabs / %ld objects, the memory map holds %ld / %ld\n", want_slabs,
               want_objects, slabs, objects);
    return false;
  }
  return true;
}

}  // namespace uslub
