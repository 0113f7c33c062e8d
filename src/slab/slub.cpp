// SLUB allocation and free paths: fast paths (tid + 16-byte CAS), ___slab_alloc, __slab_free,
// per-CPU and node partial lists, deactivate_slab, flush, bulk.  Locking rules and slab
// states: see the comment at the top of slab.hpp.
#include <errno.h>

#include <algorithm>
#include <cstring>
#include <functional>

#include "base/bits.hpp"
#include "base/check.hpp"
#include "rcu/rcu.hpp"
#include "slab/cache_alloc.hpp"
#include "slab/debug.hpp"
#include "slab/sheaf.hpp"
#include "slab/slab.hpp"

namespace uslub {
namespace {

USLUB_ALWAYS_INLINE page* slab_next(const page* slab) {
  return reinterpret_cast<page*>(slab->lru.next);
}
USLUB_ALWAYS_INLINE void set_slab_next(page* slab, page* next) {
  slab->lru.next = reinterpret_cast<list_head*>(next);
}

USLUB_ALWAYS_INLINE void set_c_slab(kmem_cache_cpu* c, page* slab) {
  __atomic_store_n(&c->slab, slab, __ATOMIC_RELAXED);
}
// c->partial and the head's slab count are read racily by kmem_cache_get_info.
USLUB_ALWAYS_INLINE void set_c_partial(kmem_cache_cpu* c, page* p) {
  __atomic_store_n(&c->partial, p, __ATOMIC_RELAXED);
}
USLUB_ALWAYS_INLINE void set_partial_count(page* slab, std::uint64_t n) {
  __atomic_store_n(&slab->slab_private, n, __ATOMIC_RELAXED);
}

USLUB_ALWAYS_INLINE page* get_c_slab(kmem_cache_cpu* c) {
  return __atomic_load_n(&c->slab, __ATOMIC_RELAXED);
}

// Context: the caller owns the slab's freelist+counters transition.
bool cmpxchg_double_slab(kmem_cache* s, page* slab, void* old_fl, std::uint64_t old_cnt,
                         void* new_fl, std::uint64_t new_cnt, unsigned cpu) {
  if (USLUB_LIKELY(cmpxchg16(&slab->freelist, old_fl, old_cnt, new_fl, new_cnt))) return true;
  stat(s, CMPXCHG_DOUBLE_FAIL, cpu);
  cpu_relax();
  return false;
}

std::size_t nr_partial_racy(const kmem_cache_node* n) {
  return __atomic_load_n(&n->nr_partial, __ATOMIC_RELAXED);
}

USLUB_SLOWPATH void report_corrupt_freelist(kmem_cache* s, page* slab, void* at, void* bad) {
  report_bug(s->name, "Freepointer corrupt",
             "object %p in slab %p holds free pointer %p outside the slab\n", at,
             slab_address(slab), bad);
}

// Links the objects [from, end) of a slab in address order, the last one to next; returns the
// head (next if the range is empty).  Writes every object's free pointer: their pages fault in.
void* link_objects(const kmem_cache* s, char* from, char* end, void* next) {
  if (from == end) return next;
  for (char* obj = from; obj + s->size < end; obj += s->size)
    set_freepointer(s, obj, obj + s->size);
  set_freepointer(s, end - s->size, next);
  return from;
}

// Is p an object start inside slab?
bool obj_in_slab(const kmem_cache* s, const page* slab, const void* p) {
  auto base = reinterpret_cast<std::uintptr_t>(slab_address(slab));
  auto a = reinterpret_cast<std::uintptr_t>(p);
  slab_counters c = load_counters(slab);
  return a >= base + s->red_left_pad && a < base + std::size_t{c.objects} * s->size &&
         (a - base - s->red_left_pad) % s->size == 0;
}

}  // namespace

// ---- slab pages ------------------------------------------------------------------------

// Allocates and initialises a new slab: frozen, inuse == objects.  out == nullptr (debug
// caches): every object is linked, the list in slab->freelist (private to the caller until
// published).  out != nullptr (the slow path, lazy carving: slab.hpp): the first
// min(carve, objects) objects go to out[] by address, *carved gets their count, and nothing is
// linked (slab->freelist null): the caller owns the rest, from slab_object(carved) on, as the
// CPU slab's virgin range, and no object of the slab has been written.
static page* allocate_slab_carve(kmem_cache* s, gfp_t, int node, unsigned cpu, std::size_t carve,
                                 void** out, std::size_t* carved);

page* allocate_slab(kmem_cache* s, gfp_t gfp, int node, unsigned cpu) {
  return allocate_slab_carve(s, gfp, node, cpu, 0, nullptr, nullptr);
}

static page* allocate_slab_carve(kmem_cache* s, gfp_t, int node, unsigned cpu, std::size_t carve,
                                 void** out, std::size_t* carved) {
  unsigned order = s->order, objects = s->objects;
  page* slab = s->pa->alloc_pages(order, __GFP_COMP, node);
  if (USLUB_UNLIKELY(!slab) && s->min_order < order) {
    order = s->min_order;
    objects = s->min_objects;
    slab = s->pa->alloc_pages(order, __GFP_COMP, node);
    if (slab) stat(s, ORDER_FALLBACK, cpu);
  }
  if (USLUB_UNLIKELY(!slab)) return nullptr;
  // validate_slab_cache finds slabs in the memory map by PG_slab: everything it reads is
  // written before the flag (release), and the counts around it inside slabs_changing.
  s->slabs_changing.fetch_add(1);
  void* base = slab_address(slab);
  char* start = slab_object(s, base, 0);
  if (s->ctor)
    for (unsigned i = 0; i < objects; ++i) s->ctor(start + std::size_t{i} * s->size);
  void* fl = nullptr;
  if (out) {
    unsigned first = carve < objects ? static_cast<unsigned>(carve) : objects;
    for (unsigned i = 0; i < first; ++i) out[i] = start + std::size_t{i} * s->size;
    *carved = first;
  } else {
    fl = link_objects(s, start, start + std::size_t{objects} * s->size, nullptr);
  }
  slab_counters c{};
  c.inuse = objects;
  c.objects = objects;
  c.frozen = 1;
  __atomic_store_n(&slab->freelist, fl, __ATOMIC_RELAXED);
  __atomic_store_n(&slab->counters, c.v, __ATOMIC_RELAXED);
  __atomic_store_n(&slab->slab_mask, (PAGE_SIZE << order) - 1, __ATOMIC_RELAXED);
  __atomic_store_n(&slab->slab_cache, static_cast<void*>(s), __ATOMIC_RELAXED);
  // The slab map too: a walk that sees PG_slab before this creation's slab_gen bump checks
  // the map words, and must find them set.
  slab_map_set(slab, s, order);
  slab->flags.store(page_flags(slab) | PG_slab, std::memory_order_release);
  kmem_cache_node* n = get_node(s, slab_nid(slab));
  n->nr_slabs.fetch_add(1, std::memory_order_relaxed);
  n->total_objects.fetch_add(objects, std::memory_order_relaxed);
  s->slab_gen.fetch_add(1);
  s->slabs_changing.fetch_sub(1);
  return slab;
}

// SLAB_TYPESAFE_BY_RCU: the slab leaves the cache now, but its pages go back to the page
// allocator only after a grace period, so a reader inside rcu_read_lock() that still holds a
// pointer into it reads memory of the same type (an object of this cache, free or reused),
// never memory given to someone else.  During the grace period the descriptor keeps everything
// a lockless reader may load (slab_cache, freelist, counters, order): a reader that saw PG_slab
// before it was cleared goes on to read slab_cache (kfree, ksize, virt_to_cache) and must find
// the cache.  The 16-byte rcu_head16 lives in lru, dead once the slab is on no list; the page
// allocator is kept in slab_private (dead too: not a CPU partial slab).  The callback clears
// slab_cache and frees the pages.
static void rcu_free_slab(rcu_head16* rh) {
  rcu_callback16_enter(rh);
  page* slab = reinterpret_cast<page*>(reinterpret_cast<char*>(rh) - offsetof(page, lru));
  auto* pa = reinterpret_cast<page_allocator*>(slab->slab_private);
  __atomic_store_n(&slab->slab_cache, nullptr, __ATOMIC_RELAXED);
  pa->free_pages(slab, slab->order);
}
static_assert(sizeof(rcu_head16) <= sizeof(list_head) &&
                  offsetof(page, lru) + sizeof(rcu_head16) <= offsetof(page, slab_cache),
              "the rcu_head of a slab waiting for a grace period must stay inside lru");

// call_rcu16 enters RCU's fork gate, and a fork's prepare handler closes that gate before it
// takes slab_mutex and flush_mutex (rcu.hpp: the gate must close before any lock a reader may
// wait for).  So a thread holding one of those mutexes (shrink, destroy, malloc_trim,
// uslub_cpu_offline) must not enter the gate: it would wait for the fork, which waits for its
// mutex.  Its type-safe slabs wait on a per-thread list (linked through the rcu_head16's next)
// until slab_config_unlock drops the outermost mutex, then are queued with no lock held.
// Initial-exec TLS: no __tls_get_addr (which may call malloc) on a path reachable from malloc.
namespace {
__attribute__((tls_model("initial-exec"))) thread_local unsigned t_config_locks;
__attribute__((tls_model("initial-exec"))) thread_local rcu_head16* t_rcu_slabs;
}  // namespace

static void rcu_free_slab_queue(page* slab) {
  auto* rh = reinterpret_cast<rcu_head16*>(&slab->lru);
  if (t_config_locks) {
    rh->next = t_rcu_slabs;
    t_rcu_slabs = rh;
    return;
  }
  call_rcu16(rh, &rcu_free_slab);
}

void slab_config_lock(spinlock_t& m) {
  m.lock();
  ++t_config_locks;
}

void slab_config_unlock(spinlock_t& m) {
  m.unlock();
  if (--t_config_locks != 0) return;
  while (rcu_head16* rh = t_rcu_slabs) {
    t_rcu_slabs = rh->next;
    call_rcu16(rh, &rcu_free_slab);
  }
}

void slab_map_set(page* slab, kmem_cache* s, unsigned order) {
  auto entry = s->map_tag | order;
  std::uintptr_t* slot = slab_map_slot(slab_address(slab));
  for (std::size_t i = 0; i < std::size_t{1} << order; ++i)
    __atomic_store_n(&slot[i], entry, __ATOMIC_RELEASE);
}
void slab_map_clear(page* slab, unsigned order) {
  std::uintptr_t* slot = slab_map_slot(slab_address(slab));
  for (std::size_t i = 0; i < std::size_t{1} << order; ++i)
    __atomic_store_n(&slot[i], std::uintptr_t{0}, __ATOMIC_RELAXED);
}

void discard_slab(kmem_cache* s, page* slab) {
  kmem_cache_node* n = get_node(s, slab_nid(slab));
  s->slabs_changing.fetch_add(1);  // (validate_slab_cache: see allocate_slab)
  n->nr_slabs.fetch_sub(1, std::memory_order_relaxed);
  n->total_objects.fetch_sub(load_counters(slab).objects, std::memory_order_relaxed);
  s->slab_gen.fetch_add(1);
  slab_map_clear(slab, slab->order);
  set_page_flags(slab, page_flags(slab) & ~PG_slab);
  s->slabs_changing.fetch_sub(1);
  if (USLUB_UNLIKELY(s->flags & SLAB_TYPESAFE_BY_RCU)) {
    slab->slab_private = reinterpret_cast<std::uint64_t>(s->pa);
    rcu_free_slab_queue(slab);
    return;
  }
  __atomic_store_n(&slab->slab_cache, nullptr, __ATOMIC_RELAXED);
  s->pa->free_pages(slab, slab->order);
}

// ---- deactivation and unfreezing --------------------------------------------------------

// Returns a detached CPU slab to its node: splices the CPU's leftover `freelist` back,
// unfreezes, and puts the slab on the partial list, on no list (full), or frees it (empty and
// the node has min_partial).  Context: no locks held; the slab is frozen and owned by us.
static void deactivate_slab(kmem_cache* s, page* slab, void* freelist, unsigned cpu) {
  kmem_cache_node* n = get_node(s, slab_nid(slab));
  // Stage 1: count the CPU freelist and find its tail (cutting a corrupt chain).
  unsigned free_delta = 0;
  void* tail = nullptr;
  slab_counters cur = load_counters(slab);
  for (void* p = freelist; p; p = get_freepointer(s, p)) {
    if (USLUB_UNLIKELY(!obj_in_slab(s, slab, p) || free_delta >= cur.objects)) {
      report_corrupt_freelist(s, slab, tail, p);
      if (tail)
        set_freepointer(s, tail, nullptr);
      else
        freelist = nullptr;
      break;
    }
    tail = p;
    ++free_delta;
  }
  if (load_ptr(&slab->freelist)) stat(s, DEACTIVATE_REMOTE_FREES, cpu);

  enum { M_FREE, M_PARTIAL, M_FULL } mode;
  bool locked = false;
  void* old_fl;
  slab_counters old, nw;
  do {
    old_fl = load_ptr(&slab->freelist);
    old = load_counters(slab);
    nw = old;
    nw.frozen = 0;
    void* new_fl = old_fl;
    if (tail) {
      set_freepointer(s, tail, old_fl);
      new_fl = freelist;
      nw.inuse -= free_delta;
    }
    if (!nw.inuse && nr_partial_racy(n) >= s->min_partial) {
      mode = M_FREE;
    } else if (new_fl) {
      mode = M_PARTIAL;
      if (!locked) {
        n->list_lock.lock();
        locked = true;
      }
    } else {
      mode = M_FULL;
    }
    if (mode != M_PARTIAL && locked) {
      n->list_lock.unlock();
      locked = false;
    }
    if (cmpxchg_double_slab(s, slab, old_fl, old.v, new_fl, nw.v, cpu)) break;
  } while (true);

  if (mode == M_PARTIAL) {
    add_partial(n, slab, tail != nullptr);
    n->list_lock.unlock();
    stat(s, tail ? DEACTIVATE_TO_TAIL : DEACTIVATE_TO_HEAD, cpu);
  } else if (mode == M_FREE) {
    stat(s, DEACTIVATE_EMPTY, cpu);
    discard_slab(s, slab);
    stat(s, FREE_SLAB, cpu);
  } else {
    stat(s, DEACTIVATE_FULL, cpu);
  }
}

// Unfreezes a list of frozen slabs (linked by slab_next) onto their nodes' partial lists,
// freeing the empty ones beyond min_partial.  Context: no locks held.
static void __unfreeze_partials(kmem_cache* s, page* list, unsigned cpu) {
  kmem_cache_node* n = nullptr;
  page* discard = nullptr;
  while (page* slab = list) {
    list = slab_next(slab);
    kmem_cache_node* n2 = get_node(s, slab_nid(slab));
    if (n2 != n) {
      if (n) n->list_lock.unlock();
      n = n2;
      n->list_lock.lock();
    }
    void* fl;
    slab_counters old, nw;
    do {
      fl = load_ptr(&slab->freelist);
      old = load_counters(slab);
      nw = old;
      nw.frozen = 0;
    } while (!cmpxchg_double_slab(s, slab, fl, old.v, fl, nw.v, cpu));
    if (USLUB_UNLIKELY(!nw.inuse && n->nr_partial >= s->min_partial)) {
      set_slab_next(slab, discard);
      discard = slab;
    } else {
      add_partial(n, slab, true);
      stat(s, FREE_ADD_PARTIAL, cpu);
    }
  }
  if (n) n->list_lock.unlock();
  while (page* slab = discard) {
    discard = slab_next(slab);
    stat(s, DEACTIVATE_EMPTY, cpu);
    discard_slab(s, slab);
    stat(s, FREE_SLAB, cpu);
  }
}

// Puts a frozen slab on the current CPU's partial list; with drain, a full list (cpu_partial
// reached) is detached whole and unfrozen outside the slot lock (seed 000 patch 33's shape).
static void put_cpu_partial(kmem_cache* s, page* slab, bool drain) {
  unsigned cpu = this_cpu_index(s);
  kmem_cache_cpu* c = &s->cpu_slab[cpu];
  if (!c->lock.try_lock()) {
    // The slot is busy (its holder may be preempted): unfreeze to the node instead.
    set_slab_next(slab, nullptr);
    __unfreeze_partials(s, slab, cpu);
    return;
  }
  page* old = c->partial;
  page* to_unfreeze = nullptr;
  std::uint64_t slabs = 0;
  if (old) {
    if (drain && old->slab_private >= s->cpu_partial_slabs) {
      to_unfreeze = old;
      old = nullptr;
    } else {
      slabs = old->slab_private;
    }
  }
  set_partial_count(slab, slabs + 1);
  set_slab_next(slab, old);
  set_c_partial(c, slab);
  c->lock.unlock();
  if (to_unfreeze) {
    __unfreeze_partials(s, to_unfreeze, cpu);
    stat(s, CPU_PARTIAL_DRAIN, cpu);
  }
}

// ---- taking slabs from the node --------------------------------------------------------

// Freezes a slab on n->partial and takes it off the list.  first: take its whole freelist
// (returned; inuse = objects); otherwise leave the freelist in place (for the CPU partial
// list) and return it only as "non-null".  *avail gets the free object count.
// Context: n->list_lock.
static void* acquire_slab(kmem_cache* s, kmem_cache_node* n, page* slab, bool first,
                          unsigned* avail, unsigned cpu) {
  lockdep_assert_held(&n->list_lock);
  void* fl;
  slab_counters old, nw;
  do {
    fl = load_ptr(&slab->freelist);
    old = load_counters(slab);
    nw = old;
    *avail = old.objects - old.inuse;
    if (first) nw.inuse = old.objects;
    nw.frozen = 1;
  } while (!cmpxchg_double_slab(s, slab, fl, old.v, first ? nullptr : fl, nw.v, cpu));
  remove_partial(n, slab);
  return fl;
}

// get_partial_node: the first slab's freelist goes to the caller, further slabs (up to half
// of cpu_partial objects) onto the current CPU's partial list.  Context: no locks held.
static page* get_partial_node(kmem_cache* s, kmem_cache_node* n, bool fill_cpu_partial,
                              void** freelist, unsigned cpu) {
  if (!n || !nr_partial_racy(n)) return nullptr;
  page* first = nullptr;
  unsigned available = 0;
  n->list_lock.lock();
  list_head* pos = n->partial.next;
  while (pos != &n->partial) {
    page* slab = list_entry<page, &page::lru>(pos);
    pos = pos->next;
    unsigned avail;
    if (!first) {
      *freelist = acquire_slab(s, n, slab, true, &avail, cpu);
      first = slab;
      stat(s, ALLOC_FROM_PARTIAL, cpu);
    } else {
      kmem_cache_cpu* c = &s->cpu_slab[cpu];
      if (!c->lock.try_lock()) break;  // lock order: list_lock -> cpu_slab->lock
      acquire_slab(s, n, slab, false, &avail, cpu);
      set_partial_count(slab, (c->partial ? c->partial->slab_private : 0) + 1);
      set_slab_next(slab, c->partial);
      set_c_partial(c, slab);
      c->lock.unlock();
      stat(s, CPU_PARTIAL_NODE, cpu);
    }
    available += avail;
    if (!fill_cpu_partial || !s->cpu_partial || available > s->cpu_partial / 2) break;
  }
  n->list_lock.unlock();
  return first;
}

static page* get_partial(kmem_cache* s, int node, bool fill_cpu_partial, void** freelist,
                         unsigned cpu) {
  int search = node < 0 ? platform::cpu_to_node(cpu) : node;
  page* slab = get_partial_node(s, get_node(s, search), fill_cpu_partial, freelist, cpu);
  if (slab || node >= 0) return slab;
  // get_any_partial: other nodes, nearest first would need distances; one pass in order.
  for (unsigned i = 1; i < s->nr_nodes; ++i) {
    slab = get_partial_node(s, get_node(s, static_cast<int>((search + i) % s->nr_nodes)),
                            fill_cpu_partial, freelist, cpu);
    if (slab) return slab;
  }
  return nullptr;
}

// ---- the CPU slot -----------------------------------------------------------------------

// Detaches the CPU slab and its freelist (flush_slab), with what is left of its virgin range
// linked in front of it.  Context: c->lock held.
static page* detach_cpu_slab(kmem_cache* s, kmem_cache_cpu* c, void** freelist) {
  lockdep_assert_held(&c->lock);
  page* slab = c->slab;
  set_c_slab(c, nullptr);  // before the tid bump: see slab.hpp
  for (;;) {
    std::uint64_t tid = __atomic_load_n(&c->tid, __ATOMIC_ACQUIRE);
    void* fl = load_ptr(&c->freelist);
    if (cmpxchg16(c, fl, tid, nullptr, next_tid(s, tid))) {
      *freelist = link_objects(s, c->virgin, c->virgin_end, fl);
      c->virgin = c->virgin_end = nullptr;
      return slab;
    }
  }
}

// Publishes `list` (objects of c->slab, linked, possibly empty) as the CPU freelist, splicing
// it before objects that fast frees pushed meanwhile.  Always advances tid.
// Context: c->lock held, c->slab already stored.
static void install_cpu_freelist(kmem_cache* s, kmem_cache_cpu* c, void* list) {
  lockdep_assert_held(&c->lock);
  void* tail = nullptr;
  for (;;) {
    std::uint64_t tid = __atomic_load_n(&c->tid, __ATOMIC_ACQUIRE);
    void* cur = load_ptr(&c->freelist);
    void* head = list;
    if (!list) {
      head = cur;
    } else if (cur) {
      if (!tail)
        for (tail = list; void* nx = get_freepointer(s, tail);) tail = nx;
      set_freepointer(s, tail, cur);
    }
    if (cmpxchg16(c, cur, tid, head, next_tid(s, tid))) return;
  }
}

// Objects of [from, end) that start in the page of from (at least one if from != end).
static std::size_t objects_in_page(const kmem_cache* s, const char* from, const char* end) {
  auto page_end = align_up(reinterpret_cast<std::uintptr_t>(from) + 1, PAGE_SIZE);
  std::size_t n = 0;
  for (; from != end && reinterpret_cast<std::uintptr_t>(from) < page_end; from += s->size) ++n;
  return n;
}

// Links the virgin objects that start in the page of the first one into the CPU freelist (a
// single allocation's step of lazy carving: the per-CPU slab fast path finds them there).
// Context: c->lock held, c->slab stored.
static void extend_cpu_freelist(kmem_cache* s, kmem_cache_cpu* c) {
  if (c->virgin == c->virgin_end) return;
  char* end = c->virgin + objects_in_page(s, c->virgin, c->virgin_end) * s->size;
  void* list = link_objects(s, c->virgin, end, nullptr);
  c->virgin = end;
  install_cpu_freelist(s, c, list);
}

// Takes up to want objects of the CPU slab's virgin range into out[] by address (nothing is
// written to them), no more than those that start in its first page if one_page; a single
// allocation (want == 1) also extends the CPU freelist.  Returns how many went to out[].
// Context: c->lock held, the virgin range not empty.
static std::size_t take_virgin(kmem_cache* s, kmem_cache_cpu* c, std::size_t want, void** out,
                               bool one_page) {
  lockdep_assert_held(&c->lock);
  std::size_t left = one_page ? objects_in_page(s, c->virgin, c->virgin_end)
                              : static_cast<std::size_t>(c->virgin_end - c->virgin) / s->size;
  std::size_t n = want < left ? want : left;
  for (std::size_t i = 0; i < n; ++i) out[i] = c->virgin + i * s->size;
  c->virgin += n * s->size;
  if (want == 1) extend_cpu_freelist(s, c);
  return n;
}

// Takes the whole freelist of our frozen CPU slab.  Context: c->lock held (or slab private).
static void* get_freelist(kmem_cache* s, page* slab, unsigned cpu) {
  void* fl;
  slab_counters old, nw;
  do {
    fl = load_ptr(&slab->freelist);
    if (!fl) return nullptr;
    old = load_counters(slab);
    nw = old;
    nw.inuse = old.objects;
  } while (!cmpxchg_double_slab(s, slab, fl, old.v, nullptr, nw.v, cpu));
  return fl;
}

// ___slab_alloc for want >= 1 objects into out[]; returns how many it put there (0: ENOMEM).
// fresh != nullptr (kmem_cache_alloc_bulk_impl's fresh_page): objects carved from a virgin range
// are only those that start in one page, and *fresh says whether any were.
// Objects already linked (the CPU slab's remote frees, a partial slab) come one at a time, the
// rest of their list becoming the CPU freelist; the CPU slab's virgin range and a new slab
// (allocate_slab_carve) give up to want objects by address with nothing written to them, the
// rest staying virgin (a single allocation links one page of it: extend_cpu_freelist).
// Context: no locks held on entry or exit; not a debug cache.
static std::size_t ___slab_alloc(kmem_cache* s, gfp_t gfp, int node, unsigned cpu, std::size_t want,
                                 void** out, bool* fresh = nullptr) {
  stat(s, ALLOC_SLOWPATH, cpu);
  kmem_cache_cpu* c = &s->cpu_slab[cpu];
  void* flush_fl = nullptr;
  page* flush = nullptr;
  if (c->lock.try_lock()) {
    for (;;) {
      page* slab = c->slab;
      if (!slab) break;  // new_slab
      if (node >= 0 && slab_nid(slab) != node) {
        stat(s, ALLOC_NODE_MISMATCH, cpu);
        flush = detach_cpu_slab(s, c, &flush_fl);
        break;
      }
      // Fast frees may have refilled the CPU freelist since the fast path looked.
      std::uint64_t tid = __atomic_load_n(&c->tid, __ATOMIC_ACQUIRE);
      void* fl = load_ptr(&c->freelist);
      if (fl) {
        if (cmpxchg16(c, fl, tid, get_freepointer(s, fl), next_tid(s, tid))) {
          c->lock.unlock();
          out[0] = fl;
          return 1;
        }
        continue;
      }
      fl = get_freelist(s, slab, cpu);
      if (!fl && c->virgin != c->virgin_end) {
        stat(s, ALLOC_REFILL, cpu);
        std::size_t got = take_virgin(s, c, want, out, fresh != nullptr);
        c->lock.unlock();
        if (fresh) *fresh = true;
        return got;
      }
      if (!fl) {  // exhausted: drop the CPU slab (with anything freed to it meanwhile)
        flush = detach_cpu_slab(s, c, &flush_fl);
        stat(s, DEACTIVATE_BYPASS, cpu);
        break;
      }
      stat(s, ALLOC_REFILL, cpu);
      install_cpu_freelist(s, c, get_freepointer(s, fl));
      c->lock.unlock();
      out[0] = fl;
      return 1;
    }
    // new_slab: a CPU partial slab first.
    USLUB_CHECK(c->virgin == c->virgin_end);  // detached with the CPU slab
    if (page* slab = c->partial; slab && (node < 0 || slab_nid(slab) == node)) {
      set_c_partial(c, slab_next(slab));
      if (c->partial) set_partial_count(c->partial, slab->slab_private - 1);
      stat(s, CPU_PARTIAL_ALLOC, cpu);
      set_c_slab(c, slab);
      void* fl = get_freelist(s, slab, cpu);  // non-empty: partial slabs have free objects
      USLUB_CHECK(fl != nullptr);
      install_cpu_freelist(s, c, get_freepointer(s, fl));
      c->lock.unlock();
      if (flush) deactivate_slab(s, flush, flush_fl, cpu);
      out[0] = fl;
      return 1;
    }
    c->lock.unlock();
  }
  if (flush) {
    deactivate_slab(s, flush, flush_fl, cpu);
    flush = nullptr;
  }

  // new_objects: the node's partial list, then the page allocator; no lock held.
  // rest: what the slab still has linked, for the CPU freelist (or for deactivate_slab).
  // virgin..virgin_end: a new slab's objects not taken (lazy carving, slab.hpp).
  void* fl = nullptr;
  void* rest = nullptr;
  char *virgin = nullptr, *virgin_end = nullptr;
  std::size_t got = 1;
  page* slab = get_partial(s, node, true, &fl, cpu);
  if (slab) {
    out[0] = fl;
    rest = get_freepointer(s, fl);
  } else {
    // A fresh-page refill carves what starts in the slab's first page (objects start at
    // multiples of size from a page boundary: ceil(PAGE_SIZE / size) of them).
    std::size_t carve = want;
    if (fresh) {
      std::size_t first_page = (PAGE_SIZE + s->size - 1) / s->size;
      if (carve > first_page) carve = first_page;
      *fresh = true;
    }
    slab = allocate_slab_carve(s, gfp, node, cpu, carve, out, &got);
    if (USLUB_UNLIKELY(!slab)) {
      errno = ENOMEM;
      return 0;
    }
    virgin = slab_object(s, slab_address(slab), static_cast<unsigned>(got));
    virgin_end = slab_object(s, slab_address(slab), load_counters(slab).objects);
    stat(s, ALLOC_SLAB, cpu);
  }
  // retry_load_slab: install on the slot of the CPU we run on now.
  cpu = this_cpu_index(s);
  c = &s->cpu_slab[cpu];
  if (!c->lock.try_lock()) {  // busy: the slab goes to its node with the rest (return_single)
    deactivate_slab(s, slab, link_objects(s, virgin, virgin_end, rest), cpu);
    return got;
  }
  if (c->slab) {
    flush = detach_cpu_slab(s, c, &flush_fl);
    stat(s, CPUSLAB_FLUSH, cpu);
  }
  set_c_slab(c, slab);
  c->virgin = virgin;
  c->virgin_end = virgin_end;
  install_cpu_freelist(s, c, rest);
  if (want == 1) extend_cpu_freelist(s, c);
  c->lock.unlock();
  if (flush) deactivate_slab(s, flush, flush_fl, cpu);
  return got;
}

USLUB_SLOWPATH void* __slab_alloc(kmem_cache* s, gfp_t gfp, int node, unsigned cpu) {
  // Debug caches never install a CPU slab: every allocation comes here (debug.hpp).
  if (kmem_cache_debug(s)) return debug_slab_alloc(s, gfp, node, 0);
  void* obj;
  return ___slab_alloc(s, gfp, node, cpu, 1, &obj) ? obj : nullptr;
}

// ---- fast paths -------------------------------------------------------------------------

void* slab_alloc_core(kmem_cache* s, gfp_t gfp, int node) {
  void* obj = slab_alloc_node(s, gfp, node);
  if (obj && (gfp & __GFP_ZERO)) memset(obj, 0, s->object_size);
  return obj;
}

void* slab_alloc(kmem_cache* s, gfp_t gfp, int node) {
  return cache_alloc(s, gfp, node);
}

// __slab_free: free to a slab that is not our CPU slab.  Lockless unless the slab changes
// lists (full -> partial, or empty).  [head..tail] are cnt objects of slab, linked.
USLUB_SLOWPATH void __slab_free(kmem_cache* s, page* slab, void* head, void* tail, unsigned cnt,
                                unsigned cpu) {
  if (kmem_cache_debug(s)) return debug_slab_free(s, slab, head, cnt);
  stat(s, FREE_SLOWPATH, cpu);
  kmem_cache_node* n = nullptr;
  void* prior;
  slab_counters old, nw;
  bool was_frozen;
  do {
    if (n) {
      n->list_lock.unlock();
      n = nullptr;
    }
    prior = load_ptr(&slab->freelist);
    old = load_counters(slab);
    if (USLUB_UNLIKELY(prior == head)) {
      report_bug(s->name, "Object already free", "object %p freed twice (slab %p)\n", head,
                 slab_address(slab));
      return;
    }
    set_freepointer(s, tail, prior);
    nw = old;
    was_frozen = old.frozen;
    nw.inuse -= cnt;
    if ((!nw.inuse || !prior) && !was_frozen) {
      if (s->cpu_partial && !prior) {
        nw.frozen = 1;  // a full slab gets its first free: onto this CPU's partial list
      } else {
        n = get_node(s, slab_nid(slab));
        n->list_lock.lock();  // speculative: we may change its list
      }
    }
  } while (!cmpxchg_double_slab(s, slab, prior, old.v, head, nw.v, cpu));

  if (!n) {
    if (nw.frozen && !was_frozen) {
      put_cpu_partial(s, slab, true);
      stat(s, CPU_PARTIAL_FREE, cpu);
    }
    if (was_frozen) stat(s, FREE_FROZEN, cpu);
    return;
  }
  if (!nw.inuse && n->nr_partial >= s->min_partial) {
    if (prior) {
      remove_partial(n, slab);
      stat(s, FREE_REMOVE_PARTIAL, cpu);
    }
    n->list_lock.unlock();
    stat(s, FREE_SLAB, cpu);
    discard_slab(s, slab);
    return;
  }
  if (!prior) {  // was full (only without cpu partial lists): now partial
    add_partial(n, slab, true);
    stat(s, FREE_ADD_PARTIAL, cpu);
  }
  n->list_lock.unlock();
}

void slab_free_core(kmem_cache* s, page* slab, void* obj) {
  do_slab_free(s, slab, obj, obj, 1);
}

void slab_free(kmem_cache* s, page* slab, void* obj) {
  cache_free(s, slab, obj);
}

page* slab_free_check(kmem_cache* s, const void* obj, const char* caller) {
  return slab_free_check_inline(s, obj, caller);
}

// The report behind slab_free_check_inline: decides which problem it was.
void slab_free_report(kmem_cache* s, const void* obj, const char* caller) {
  page* slab = virt_to_slab(obj);
  if (!slab) {
    // Memory of uslub's heap that is no slab now: most often a slab that was released after
    // its last object was freed, i.e. a double free or a free after the cache was shrunk (the
    // fuzzer's first finding: the report used to say only "not an object").
    auto off = reinterpret_cast<std::uintptr_t>(obj) & (SECTION_SIZE - 1);
    if (lookup_section(obj) && off >= SECTION_DATA_START) {
      page* head = virt_to_page(obj);
      bool free_block = page_flags(head) & (PG_buddy | PG_pcp | PG_isolated);
      report_bug(s->name, free_block ? "Object already free" : "Invalid pointer",
                 "%s(%p): uslub memory that is not a slab now (%s)\n", caller, obj,
                 free_block ? "its slab was released after its last object was freed: a double "
                              "free or a use after free"
                            : "a released slab, or a block that never held this cache's objects");
      return;
    }
    report_bug(s->name, "Invalid pointer", "%s(%p): not an object of any uslub slab\n", caller,
               obj);
    return;
  }
  auto* owner = static_cast<kmem_cache*>(__atomic_load_n(&slab->slab_cache, __ATOMIC_RELAXED));
  if (owner != s) {
    report_bug(s->name, "Wrong cache", "%s(%p): object belongs to cache %s\n", caller, obj,
               owner ? owner->name : "(none)");
    return;
  }
  auto off = static_cast<std::size_t>(static_cast<const char*>(obj) -
                                      static_cast<const char*>(slab_address(slab)));
  report_bug(s->name, "Invalid pointer", "%s(%p): not the start of an object (offset %zu)\n",
             caller, obj, off);
}

// The out-of-line halves of cache_alloc/cache_free (cache_alloc.hpp).
void* cache_alloc_slow(kmem_cache* s, gfp_t gfp, int node, std::size_t orig_size) {
  if (kmem_cache_debug(s)) return debug_slab_alloc(s, gfp, node, orig_size);
  void* obj;
  if (s->cpu_sheaves && node < 0) {
    obj = sheaf_alloc_fast(s);
    if (obj)
      free_key_clear(s, obj);
    else
      obj = sheaf_alloc_slow(s, gfp);  // (cleared there)
  } else {
    obj = slab_alloc_node(s, gfp, node);
  }
  if ((gfp & __GFP_ZERO) && obj) memset(obj, 0, s->object_size);
  return obj;
}

void cache_free_keyed(kmem_cache* s, page* slab, void* obj) {
  if (s->nr_nodes == 1) {
    platform::slot_push r = sheaf_free_fast(s, obj);
    if (r == platform::slot_push::ok) return;
    if (r == platform::slot_push::in_a_row) return sheaf_report_double_free(s, obj);
  }
  sheaf_free_slow(s, slab ? slab : virt_to_slab(obj), obj);
}

void cache_free_slow(kmem_cache* s, page* slab, void* obj) {
  if (s->cpu_sheaves) {
    if (USLUB_UNLIKELY(s->free_key && !free_key_set(s, obj)))
      return sheaf_report_double_free(s, obj);
    return cache_free_keyed(s, slab, obj);  // (looks the slab up only on its slow path)
  }
  do_slab_free(s, slab ? slab : virt_to_slab(obj), obj, obj, 1);
}

// ---- flush ------------------------------------------------------------------------------

static void flush_cpu_slab(kmem_cache* s, unsigned cpu) {
  kmem_cache_cpu* c = &s->cpu_slab[cpu];
  c->lock.lock_wait();
  void* fl = nullptr;
  page* slab = c->slab ? detach_cpu_slab(s, c, &fl) : nullptr;
  page* partial = c->partial;
  set_c_partial(c, nullptr);
  c->lock.unlock();
  if (slab) {
    deactivate_slab(s, slab, fl, cpu);
    stat(s, CPUSLAB_FLUSH, cpu);
  }
  if (partial) __unfreeze_partials(s, partial, cpu);
}

// A CPU the process will no longer run on (it left the affinity mask, or was unplugged): its
// sheaves and CPU slab would otherwise hold objects nobody takes (the kernel's slub_cpu_dead).
void slab_cpu_dead(kmem_cache* s, unsigned cpu) {
  if (cpu >= s->nr_cpus) return;
  sheaf_drain_cpu(s, cpu);
  flush_cpu_slab(s, cpu);
}

static constinit lock_class_key flush_mutex_key{"flush_mutex"};
static constinit spinlock_t flush_mutex{&flush_mutex_key};

void flush_mutex_lock() {
  slab_config_lock(flush_mutex);
}
void flush_mutex_unlock() {
  slab_config_unlock(flush_mutex);
}

// Context: may hold slab_mutex (lock order 1 -> 2), nothing else.
void flush_all(kmem_cache* s) {
  sheaf_drain_all(s);  // sheaves first: their objects go back to the slabs
  flush_mutex_lock();
  for (unsigned cpu = 0; cpu < s->nr_cpus; ++cpu) flush_cpu_slab(s, cpu);
  flush_mutex_unlock();
}

// Discards the empty slabs of every node's partial list.  list_lock is held for at most
// kShrinkBatch slabs at a time (a partial list can hold tens of thousands of slabs): each hold
// looks at the slabs at the head, takes the empty ones off and moves the others to the tail, so
// one rotation through the list (as long as it was at the start) visits each slab once and
// leaves the order of the kept ones as it was.  Slabs added or removed meanwhile by other
// threads may be visited twice or not at all: this is a best-effort shrink.  The empty slabs
// of each batch are discarded with no lock held.
int __kmem_cache_shrink(kmem_cache* s) {
  flush_all(s);
  unsigned cpu = this_cpu_index(s);
  for (unsigned i = 0; i < s->nr_nodes; ++i) {
    kmem_cache_node* n = &s->node[i];
    n->list_lock.lock();
    long todo = n->nr_partial;
    n->list_lock.unlock();
    while (todo > 0) {
      page* discard = nullptr;
      n->list_lock.lock();
      unsigned k = 0;
      for (; k < kShrinkBatch && todo > 0 && !list_empty(&n->partial); ++k, --todo) {
        page* slab = list_entry<page, &page::lru>(n->partial.next);
        if (load_counters(slab).inuse == 0) {  // no object: no concurrent free can touch it
          remove_partial(n, slab);
          set_slab_next(slab, discard);
          discard = slab;
        } else {
          list_move_tail(&slab->lru, &n->partial);
        }
      }
      n->list_lock.hold_work(k);
      bool empty = list_empty(&n->partial);
      n->list_lock.unlock();
      while (page* slab = discard) {
        discard = slab_next(slab);
        discard_slab(s, slab);
        stat(s, FREE_SLAB, cpu);
      }
      if (empty) break;
    }
  }
  return 0;
}

bool __kmem_cache_shutdown(kmem_cache* s) {
  __kmem_cache_shrink(s);
  long slabs = 0, objects = 0;
  for (unsigned i = 0; i < s->nr_nodes; ++i) {
    slabs += s->node[i].nr_slabs.load();
    objects += s->node[i].total_objects.load();
  }
  if (slabs == 0) return true;
  long free_objs = 0;
  for (unsigned i = 0; i < s->nr_nodes; ++i) {
    kmem_cache_node* n = &s->node[i];
    lock_guard<spinlock_t> g(n->list_lock);
    for (list_head* pos = n->partial.next; pos != &n->partial; pos = pos->next) {
      slab_counters c = load_counters(list_entry<page, &page::lru>(pos));
      free_objs += c.objects - c.inuse;
    }
  }
  char live[4096];
  live[0] = '\0';
  debug_list_objects(s, live, 0, sizeof live);  // with SLAB_STORE_USER: who allocated them
  report_bug(s->name, "Objects remaining on destroy",
             "kmem_cache_destroy(%s): %ld objects in %ld slabs are still allocated; the cache "
             "is kept\n%s",
             s->name, objects - free_objs, slabs, live);
  return false;
}

// ---- bulk -------------------------------------------------------------------------------

int kmem_cache_alloc_bulk_impl(kmem_cache* s, gfp_t gfp, std::size_t nr, void** p,
                               bool fresh_page) {
  if (kmem_cache_debug(s)) {  // failslab decides once: all or nothing
    if (should_failslab(s)) {
      errno = ENOMEM;
      return 0;
    }
    for (std::size_t i = 0; i < nr; ++i) {
      p[i] = debug_slab_alloc(s, gfp, NUMA_NO_NODE, 0, false);
      if (USLUB_UNLIKELY(!p[i])) {
        kmem_cache_free_bulk_impl(s, i, p);
        errno = ENOMEM;
        return 0;
      }
    }
    return static_cast<int>(nr);
  }
  std::size_t i = 0;
  while (i < nr) {
    unsigned cpu = this_cpu_index(s);
    kmem_cache_cpu* c = &s->cpu_slab[cpu];
    std::uint64_t tid = __atomic_load_n(&c->tid, __ATOMIC_ACQUIRE);
    void* fl = load_ptr(&c->freelist);
    page* slab = get_c_slab(c);
    if (fl && slab && !USLUB_TSAN) {  // TSan builds: one object at a time under the slot lock
      // Take the whole CPU freelist with one CAS (the kernel's get_freelist), walk it privately
      // for what we need, and give the rest back with one CAS that expects the tid our take
      // left: if it is unchanged nobody used the slot since, so c->slab is still slab and
      // c->freelist empty (a slow path changes c->slab only before a tid-advancing CAS, and
      // a detach that stored c->slab = null before its CAS then takes the rest with it).
      std::uint64_t taken = next_tid(s, tid);
      if (!cmpxchg16(c, fl, tid, nullptr, taken)) continue;
      std::size_t got = 0;
      while (fl && i < nr) {
        p[i++] = fl;
        fl = get_freepointer(s, fl);
        ++got;
      }
      stat(s, ALLOC_FASTPATH, cpu, got);
      if (fl && !cmpxchg16(c, nullptr, taken, fl, next_tid(s, taken))) {
        // The slot moved on: free the rest to its slab as one detached list.
        unsigned cnt = 1;
        void* tail = fl;
        while (void* nx = get_freepointer(s, tail)) tail = nx, ++cnt;
        do_slab_free(s, slab, fl, tail, cnt);
      }
      continue;
    }
    // The CPU freelist is empty: the slow path, which carves a new slab for all we still need.
    bool fresh = false;
    std::size_t got =
        ___slab_alloc(s, gfp, NUMA_NO_NODE, cpu, nr - i, p + i, fresh_page ? &fresh : nullptr);
    if (USLUB_UNLIKELY(!got)) {
      kmem_cache_free_bulk_impl(s, i, p);
      errno = ENOMEM;
      return 0;
    }
    // (As before carving, objects beyond the slow path's first count as taken from the CPU
    // freelist.)
    if (got > 1) stat(s, ALLOC_FASTPATH, cpu, got - 1);
    i += got;
    if (fresh) nr = i;  // one page of a virgin range taken: enough (fresh_page)
  }
  if (gfp & __GFP_ZERO)
    for (std::size_t k = 0; k < nr; ++k) memset(p[k], 0, s->object_size);
  return static_cast<int>(nr);
}

namespace {

// Finds pointers that appear twice in a bulk-free array: an open-addressing set on the stack
// for arrays of up to kMaxHashed (a few instructions per object, the array left as it is);
// larger ones are sorted instead, which makes every duplicate adjacent.
class bulk_dup_filter {
 public:
  static constexpr std::size_t kMaxHashed = 512;
  // Empty, for up to n pointers (n <= kMaxHashed).  Until then the object is uninitialised
  // stack: nothing is paid on paths that do not check.
  void init(std::size_t n) {
    bits_ = 5;
    while ((std::size_t{1} << bits_) < 2 * n) ++bits_;
    memset(slot_, 0, sizeof(void*) << bits_);
  }
  // Adds p (not null); true if it was there already.
  bool seen(void* p) {
    std::size_t mask = (std::size_t{1} << bits_) - 1;
    std::size_t i = (reinterpret_cast<std::uintptr_t>(p) * 0x9e3779b97f4a7c15ull) >> (64 - bits_);
    for (;; i = (i + 1) & mask) {
      if (!slot_[i]) {
        slot_[i] = p;
        return false;
      }
      if (slot_[i] == p) return true;
    }
  }

 private:
  unsigned bits_;
  void* slot_[2 * kMaxHashed];
};

}  // namespace

void kmem_cache_free_bulk_impl(kmem_cache* s, std::size_t nr, void** p, bool checked) {
  // A pointer twice in the caller's array would be linked into a detached freelist twice (a
  // cycle, or an object lost and the slab's inuse count wrong) or freed again later in the
  // batch, where only a free "in a row" is caught.  Each duplicate is reported and skipped.
  // checked arrays come from sheaves, whose free key already refused duplicates.
  bool hashed = !checked && nr > 1 && nr <= bulk_dup_filter::kMaxHashed;
  bool sorted = !checked && nr > bulk_dup_filter::kMaxHashed;
  bulk_dup_filter filter_mem;
  bulk_dup_filter* filter = nullptr;
  if (hashed) {
    filter_mem.init(nr);
    filter = &filter_mem;
  }
  // (Sorting reorders the caller's array, as the kernel's clearing of processed entries
  // changes it; it also groups each slab's objects into one run.)
  if (sorted) std::sort(p, p + nr, std::less<void*>());
  // Detached freelists: consecutive objects of one slab are freed with one CAS.
  page* cur = nullptr;
  void *head = nullptr, *tail = nullptr;
  unsigned cnt = 0;
  for (std::size_t i = 0; i <= nr; ++i) {
    page* slab = nullptr;
    if (i < nr) {
      if (!p[i]) continue;
      if (USLUB_UNLIKELY(filter ? filter->seen(p[i]) : sorted && i > 0 && p[i] == p[i - 1])) {
        report_bug(s->name, "Object already free",
                   "object %p appears twice in the kmem_cache_free_bulk array\n", p[i]);
        continue;
      }
      slab = checked ? virt_to_slab(p[i]) : slab_free_check(s, p[i], "kmem_cache_free_bulk");
      if (!slab) continue;
      if (kmem_cache_debug(s)) {  // one at a time: a double free must not relink a free object
        debug_slab_free(s, slab, p[i], 1);
        continue;
      }
      if (slab == cur && p[i] != head) {
        set_freepointer(s, p[i], head);
        head = p[i];
        ++cnt;
        continue;
      }
    }
    if (cur) do_slab_free(s, cur, head, tail, cnt);
    cur = slab;
    head = tail = i < nr ? p[i] : nullptr;
    cnt = 1;
  }
}

}  // namespace uslub

// ---- the C API of the object paths (here so that the fast paths inline) ------------------

using namespace uslub;

extern "C" {

void* kmem_cache_alloc(struct kmem_cache* s, uslub_gfp_t gfp) {
  return cache_alloc(s, gfp, NUMA_NO_NODE);
}

void* kmem_cache_alloc_node(struct kmem_cache* s, uslub_gfp_t gfp, int node) {
  return cache_alloc(s, gfp, node);
}

void* kmem_cache_zalloc(struct kmem_cache* s, uslub_gfp_t gfp) {
  return cache_alloc(s, gfp | __GFP_ZERO, NUMA_NO_NODE);
}

void kmem_cache_free(struct kmem_cache* s, void* obj) {
  if (USLUB_UNLIKELY(!obj)) return;
  // The free key's load (sheaf.hpp) of a cold object overlaps the descriptor look-up.
  if (!USLUB_NO_FREE_CHECKS) USLUB_PREFETCH_WRITE(static_cast<char*>(obj) + s->offset);
  page* slab = slab_free_check_inline(s, obj, "kmem_cache_free");
  if (USLUB_LIKELY(slab)) cache_free(s, slab, obj);
}

int kmem_cache_set_sheaf_capacity(struct kmem_cache* s, unsigned int capacity) {
  if (!s->cpu_sheaves || capacity == 0 || capacity > kMaxSheafCapacity) return -EINVAL;
  sheaf_set_capacity(s, capacity);
  return 0;
}

// Sheaf caches serve bulk requests from the sheaves first, as the kernel does since 6.18
// (kmem_cache_alloc_bulk -> alloc_from_pcs_bulk); the SLUB core does the rest.
int kmem_cache_alloc_bulk(struct kmem_cache* s, uslub_gfp_t gfp, size_t nr, void** p) {
  if (!s->cpu_sheaves) return kmem_cache_alloc_bulk_impl(s, gfp, nr, p);  // (debug caches too)
  std::size_t k = sheaf_alloc_bulk(s, nr, p);
  if (k < nr && !kmem_cache_alloc_bulk_impl(s, gfp, nr - k, p + k)) {
    sheaf_free_bulk(s, k, p);  // all or nothing
    return 0;                  // errno ENOMEM from the core
  }
  if (gfp & __GFP_ZERO)
    for (std::size_t i = 0; i < k; ++i) memset(p[i], 0, s->object_size);
  return static_cast<int>(nr);
}

void kmem_cache_free_bulk(struct kmem_cache* s, size_t nr, void** p) {
  if (!s->cpu_sheaves) return kmem_cache_free_bulk_impl(s, nr, p);
  sheaf_free_bulk(s, nr, p);
}

int kmem_cache_validate(struct kmem_cache* s) {
  return validate_slab_cache(s) ? 0 : -1;
}

}  // extern "C"
