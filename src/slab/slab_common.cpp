// kmem_cache life cycle: bootstrap, geometry (calculate_sizes / calculate_order), merging,
// create, destroy, information and /proc/slabinfo; and the shrink of every cache.
//
// slab_mutex (lock order 1, see slab.hpp) protects slab_caches, each cache's refcount and
// g_shrinking.  It is a sleeping lock (spin, then futex) taken on configuration paths only.
// Creation allocates a new cache's memory before taking it.  Destroy (__kmem_cache_shutdown)
// and uslub_cpu_offline (for_each_kmem_cache) hold it, as the kernel holds its slab_mutex,
// across the flush of every sheaf and CPU slab and the discard of empty slabs of the caches
// they visit: under it run the page allocator's free path (which never runs more than one
// bounded reclaim step, page/reclaim.cpp) and one membarrier per CPU per cache with sheaves
// on rseq (sheaf_drain_all).  Nothing under it waits for another thread's progress except the
// locks below it in the order (flush_mutex, the sheaf, node and CPU slot locks, the page
// allocator's), and it never enters RCU's fork gate: slabs of SLAB_TYPESAFE_BY_RCU caches
// discarded under it are queued with call_rcu16 only when it is dropped
// (slab_config_lock/unlock, slab.hpp).
//
// Shrinking every cache (kmem_cache_shrink_all: the pressure and memory-limit shrinker,
// malloc_trim) does NOT hold slab_mutex across the caches' shrinks.  Rule: slab_mutex is held
// only to step from one cache to the next (one list step per hold, counted as one unit of
// hold_work); the cache being shrunk is pinned by g_shrinking (written under slab_mutex), which
// keeps it on slab_caches: kmem_cache_destroy of that cache waits (slab_mutex dropped, a futex
// on g_shrink_seq) until the walker has moved on.  So kmem_cache_create, destroy of any other
// cache and fork's prepare wait at most for one list step, never for a shrink.  Walkers are
// serialised by slab_shrink_mutex (lock order 0, before slab_mutex; no allocation path takes
// it), held across the whole walk with no other lock; a fork child, where the walking thread
// does not exist, resets it and the pin (slab_fork_child).
#include <errno.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include "base/bits.hpp"
#include "base/check.hpp"
#include "base/stackdepot.hpp"
#include "page/pressure.hpp"
#include "rcu/rcu.hpp"
#include "slab/debug.hpp"
#include "slab/percpu_area.hpp"
#include "slab/sheaf.hpp"
#include "slab/slab.hpp"
#include "slab/stats.hpp"
#include "sync/preempt.hpp"

namespace uslub {
namespace {

constinit lock_class_key slab_mutex_key{"slab_mutex"};
constinit lock_class_key list_lock_key{"kmem_cache_node->list_lock"};
constinit lock_class_key cpu_slab_lock_key{"kmem_cache_cpu->lock"};
}  // namespace
constinit spinlock_t slab_mutex{&slab_mutex_key};  // slab.hpp: fork's nest lock for sheaves
namespace {
constinit list_head slab_caches{&slab_caches, &slab_caches};  // slab_mutex

// kmem_cache_shrink_all's walker (see the top of this file).
constinit lock_class_key slab_shrink_mutex_key{"slab_shrink_mutex"};
constinit spinlock_t slab_shrink_mutex{&slab_shrink_mutex_key};
kmem_cache* g_shrinking = nullptr;                     // slab_mutex
constinit std::atomic<std::uint32_t> g_shrink_seq{0};  // bumped (slab_mutex) when unpinned
void (*g_shrink_hook)(kmem_cache*) = nullptr;          // tests: runs before each cache's shrink

struct slab_mutex_guard {  // slab_config_lock: see slab.hpp
  slab_mutex_guard() { slab_config_lock(slab_mutex); }
  ~slab_mutex_guard() { slab_config_unlock(slab_mutex); }
  slab_mutex_guard(const slab_mutex_guard&) = delete;
  slab_mutex_guard& operator=(const slab_mutex_guard&) = delete;
};

// The bootstrap cache (seed 001): every kmem_cache structure is an object of this cache.
constinit kmem_cache boot_kmem_cache{};
constinit kmem_cache_node boot_nodes[platform::kMaxNodes]{};

constinit std::atomic<int> g_slab_state{0};  // 0 down, 1 coming up, 2 up
bool g_nomerge = false;
bool g_sheaves_default = true;  // USLUB_FASTPATH=sheaf|cpuslab
std::atomic<bool> g_stats{false};

unsigned fls(unsigned v) {
  return v ? 32 - static_cast<unsigned>(__builtin_clz(v)) : 0;
}

// Object layout: [object ... | free pointer if outside | padding to align].  The free pointer
// lives in the middle of the object (hardening: off the edges overflows hit first) unless a
// constructor or SLAB_TYPESAFE_BY_RCU means the object's contents must survive being free.
void calculate_sizes(kmem_cache* s, std::size_t size, std::size_t align) {
  s->object_size = static_cast<unsigned>(size);
  s->red_left_pad = s->inuse = s->track_offset = s->orig_size_offset = 0;
  std::size_t sz = align_up(size < sizeof(void*) ? sizeof(void*) : size, sizeof(void*));
  if (s->flags & SLAB_DEBUG_FLAGS) {
    sz = debug_calculate_sizes(s, size, align);  // red zones, tracking: debug.hpp
  } else if (s->ctor || (s->flags & (SLAB_TYPESAFE_BY_RCU | SLAB_POISON))) {
    s->offset = static_cast<unsigned>(sz);
    sz += sizeof(void*);
  } else if (s->flags & SLAB_KMALLOC) {
    // kmalloc (malloc): the free pointer and free key (sheaf.hpp) at the object's start, so
    // the class fast paths store and clear it with no offset load (glibc's tcache too).
    s->offset = 0;
  } else {
    s->offset = static_cast<unsigned>(align_down(size / 2, sizeof(void*)));
  }
  s->align = static_cast<unsigned>(align);
  s->size = static_cast<unsigned>(align_up(sz, align));
  s->boundary_mul = UINT64_MAX / s->size + 1;
  s->boundary_red_left = s->red_left_pad * s->boundary_mul;
}

std::size_t calculate_alignment(slab_flags_t flags, std::size_t align, std::size_t size) {
  if (flags & SLAB_HWCACHE_ALIGN) {
    std::size_t ralign = kCacheLine;
    while (size <= ralign / 2) ralign /= 2;  // small objects: don't waste a whole line
    if (ralign > align) align = ralign;
  }
  return align < sizeof(void*) ? sizeof(void*) : align;
}

// calculate_order: the smallest order whose slab holds at least min_objects with at most
// 1/16 waste; relax the waste, then the object count.
void calculate_order(kmem_cache* s, unsigned nr_cpus) {
  const std::size_t size = s->size;
  unsigned min_order = order_base_2((size + PAGE_SIZE - 1) / PAGE_SIZE);
  unsigned max_order = min_order > kSlabMaxOrder ? min_order : kSlabMaxOrder;
  unsigned min_objects = 4 * (fls(nr_cpus) + 1);
  unsigned best = min_order;
  bool found = false;
  for (unsigned mo = min_objects; mo >= 1 && !found; mo /= 2) {
    for (unsigned fract = 16; fract >= 4 && !found; fract /= 2) {
      for (unsigned order = min_order; order <= max_order; ++order) {
        std::size_t slab_size = PAGE_SIZE << order;
        std::size_t objs = slab_size / size;
        if (objs < mo || objs > kMaxObjsPerSlab) continue;
        if (slab_size % size <= slab_size / fract) {
          best = order;
          found = true;
          break;
        }
      }
    }
  }
  auto objs_for = [&](unsigned o) {
    std::size_t n = (PAGE_SIZE << o) / size;
    return static_cast<unsigned>(n > kMaxObjsPerSlab ? kMaxObjsPerSlab : n);
  };
  s->order = best;
  s->objects = objs_for(best);
  s->min_order = min_order;
  s->min_objects = objs_for(min_order);
}

void set_cpu_partial(kmem_cache* s) {
  // mm/slub.c set_cpu_partial: fewer objects on per-CPU partial lists for large objects.
  unsigned nr;
  if (s->flags & SLAB_DEBUG_PATH)
    nr = 0;
  else if (s->size >= PAGE_SIZE)
    nr = 2;
  else if (s->size >= 1024)
    nr = 6;
  else if (s->size >= 256)
    nr = 13;
  else
    nr = 30;
  s->cpu_partial = nr;
  s->cpu_partial_slabs = nr ? (nr * 2 + s->objects - 1) / s->objects : 0;
  unsigned mp = ilog2(s->size) / 2;
  s->min_partial = mp < 5 ? 5 : mp > 10 ? 10 : mp;
}

// Allocates and initialises the CPU slots (and statistics) of s.  0 or errno.
int alloc_cpu_slots(kmem_cache* s) {
  std::size_t bytes = std::size_t{s->nr_cpus} * sizeof(kmem_cache_cpu);
  if (s->flags & SLAB_STATS) bytes += std::size_t{s->nr_cpus} * sizeof(kmem_cache_cpu_stats);
  s->cpu_bytes = static_cast<unsigned>(bytes);
  void* mem = percpu_area_alloc(bytes);
  if (!mem) return ENOMEM;
  s->cpu_slab = static_cast<kmem_cache_cpu*>(mem);
  s->tid_step = static_cast<unsigned>(roundup_pow_of_two(s->nr_cpus));
  for (unsigned c = 0; c < s->nr_cpus; ++c) {
    kmem_cache_cpu* cs = new (&s->cpu_slab[c]) kmem_cache_cpu();
    cs->lock.set_class(&cpu_slab_lock_key);
    cs->tid = c;  // tid % tid_step names the CPU; tid / tid_step counts events
  }
  s->cpu_stats = nullptr;
  if (s->flags & SLAB_STATS) {
    s->cpu_stats = reinterpret_cast<kmem_cache_cpu_stats*>(s->cpu_slab + s->nr_cpus);
    for (unsigned c = 0; c < s->nr_cpus; ++c) new (&s->cpu_stats[c]) kmem_cache_cpu_stats();
  }
  return 0;
}

// Fills in everything but the node array and links.  0 or errno.
int kmem_cache_open(kmem_cache* s, page_allocator* pa, const char* name, std::size_t size,
                    std::size_t align, slab_flags_t flags, void (*ctor)(void*)) {
  snprintf(s->name, sizeof s->name, "%s", name);
  s->flags = flags;
  s->ctor = ctor;
  s->pa = pa;
  s->nr_cpus = platform::nr_cpu_ids();
  s->nr_nodes = pa->nr_zones();
  s->random = platform::random_u64() | 1;
  s->map_tag = reinterpret_cast<std::uintptr_t>(s);
  s->refcount = 1;
  calculate_sizes(s, size, calculate_alignment(flags, align, size));
  calculate_order(s, s->nr_cpus);
  if (flags & SLAB_DEBUG_SKIP_HIGHER_ORDER) {
    // USLUB_DEBUG's 'O': no debugging where it would make the slabs bigger.
    s->flags &= ~SLAB_DEBUG_SKIP_HIGHER_ORDER;
    kmem_cache plain{};
    plain.flags = s->flags & ~SLAB_DEBUG_PATH;
    plain.ctor = ctor;
    calculate_sizes(&plain, size, calculate_alignment(plain.flags, align, size));
    calculate_order(&plain, s->nr_cpus);
    if (s->order > plain.order) {
      s->flags = plain.flags;
      calculate_sizes(s, size, calculate_alignment(s->flags, align, size));
      calculate_order(s, s->nr_cpus);
    }
  }
  set_cpu_partial(s);
  for (unsigned n = 0; n < s->nr_nodes; ++n) {
    kmem_cache_node* node = &s->node[n];
    node->list_lock.set_class(&list_lock_key);
    INIT_LIST_HEAD(&node->partial);
    node->nr_partial = 0;
  }
  if (int err = alloc_cpu_slots(s)) return err;
  bool sheaves = s != &boot_kmem_cache && !(s->flags & (SLAB_NO_SHEAVES | SLAB_DEBUG_PATH)) &&
                 ((flags & SLAB_SHEAVES) || g_sheaves_default);
  return sheaves_init(s, sheaves ? sheaf_default_capacity(s->size) : 0);
}

void slab_init() {
  if (USLUB_LIKELY(g_slab_state.load(std::memory_order_acquire) == 2)) return;
  int expected = 0;
  if (!g_slab_state.compare_exchange_strong(expected, 1)) {
    while (g_slab_state.load(std::memory_order_acquire) != 2) sched_yield();
    return;
  }
  page_allocator* pa = &global_page_allocator();
  g_nomerge = platform::env_size("USLUB_NOMERGE", 0) != 0;
  if (stats_mode_from_env() >= 0) g_stats.store(true);
  if (const char* fp = getenv("USLUB_FASTPATH")) g_sheaves_default = strcmp(fp, "cpuslab") != 0;
  if (getenv("USLUB_DOUBLE_FREE"))
    g_free_key_default = platform::env_size("USLUB_DOUBLE_FREE", 1) != 0;
  kmem_cache* s = &boot_kmem_cache;
  s->node = boot_nodes;
  if (kmem_cache_open(s, pa, "kmem_cache", sizeof(kmem_cache), kCacheLine, SLAB_NO_MERGE,
                      nullptr) != 0)
    panic("cannot bootstrap the kmem_cache cache");
  list_add_tail(&s->list, &slab_caches);
  g_slab_state.store(2, std::memory_order_release);
}

bool mergeable_flags(slab_flags_t flags, void (*ctor)(void*)) {
  return !g_nomerge && !(flags & SLAB_NEVER_MERGE) && !ctor;
}

// find_mergeable.  Context: slab_mutex.
kmem_cache* find_mergeable(page_allocator* pa, const kmem_cache& want) {
  for (list_head* l = slab_caches.next; l != &slab_caches; l = l->next) {
    kmem_cache* s = list_entry<kmem_cache, &kmem_cache::list>(l);
    if (s->pa != pa || !mergeable_flags(s->flags, s->ctor) || s->refcount <= 0) continue;
    if (want.size > s->size) continue;
    if ((want.flags & SLAB_MERGE_SAME) != (s->flags & SLAB_MERGE_SAME)) continue;
    if ((s->size & ~(want.align - 1)) != s->size) continue;  // alignment compatible
    if (s->size - want.size >= sizeof(void*)) continue;      // would waste too much
    return s;
  }
  return nullptr;
}

void free_kmem_cache(kmem_cache* s) {
  sheaves_free(s);
  if (s->cpu_slab) percpu_area_free(s->cpu_slab, s->cpu_bytes);
  if (s->node) percpu_area_free(s->node, std::size_t{s->nr_nodes} * sizeof(kmem_cache_node));
  page* slab = virt_to_slab(s);
  if (slab) slab_free(&boot_kmem_cache, slab, s);
}

}  // namespace

kmem_cache* kmem_cache_create_on(page_allocator* pa, const char* name, std::size_t size,
                                 std::size_t align, slab_flags_t flags, void (*ctor)(void*)) {
  if (!name || size == 0 || size > MAX_ORDER_BYTES || (align && !is_power_of_2(align)) ||
      align > PAGE_SIZE) {
    report_bug(name ? name : "(null)", "Invalid argument",
               "kmem_cache_create(%s, size %zu, align %zu): %s\n", name ? name : "(null)", size,
               align,
               !name                                 ? "no name"
               : size == 0 || size > MAX_ORDER_BYTES ? "impossible size"
                                                     : "impossible alignment");
    errno = EINVAL;
    return nullptr;
  }
  slab_init();
  if (flags & SLAB_TYPESAFE_BY_RCU) rcu_init();  // its slabs' freeing goes through call_rcu
  if (!pa) pa = &global_page_allocator();
  flags = kmem_cache_flags(name, flags);  // USLUB_DEBUG
  if (g_stats.load(std::memory_order_relaxed)) flags |= SLAB_STATS;
  if (mergeable_flags(flags, ctor)) {
    kmem_cache want{};
    want.flags = flags;
    calculate_sizes(&want, size, calculate_alignment(flags, align, size));
    slab_mutex_guard g;
    if (kmem_cache* s = find_mergeable(pa, want)) {
      s->refcount++;
      return s;
    }
  }
  auto* s = static_cast<kmem_cache*>(slab_alloc(&boot_kmem_cache, __GFP_ZERO, NUMA_NO_NODE));
  if (!s) {
    errno = ENOMEM;
    return nullptr;
  }
  new (s) kmem_cache();
  s->nr_nodes = pa->nr_zones();
  s->node = static_cast<kmem_cache_node*>(
      percpu_area_alloc(std::size_t{s->nr_nodes} * sizeof(kmem_cache_node)));
  if (!s->node) {
    free_kmem_cache(s);
    errno = ENOMEM;
    return nullptr;
  }
  for (unsigned n = 0; n < s->nr_nodes; ++n) new (&s->node[n]) kmem_cache_node();
  if (kmem_cache_open(s, pa, name, size, align, flags, ctor) != 0) {
    free_kmem_cache(s);
    errno = ENOMEM;
    return nullptr;
  }
  slab_mutex_guard g;
  list_add_tail(&s->list, &slab_caches);
  return s;
}

void for_each_kmem_cache(void (*fn)(kmem_cache*, void*), void* arg) {
  slab_init();
  slab_mutex_guard g;
  for (list_head* l = slab_caches.next; l != &slab_caches; l = l->next)
    fn(list_entry<kmem_cache, &kmem_cache::list>(l), arg);
}

std::size_t kmem_cache_shrink_all() {
  slab_init();
  lock_guard<spinlock_t> walker(slab_shrink_mutex);
  std::size_t caches = 0;
  slab_config_lock(slab_mutex);
  for (list_head* l = slab_caches.next; l != &slab_caches;) {
    kmem_cache* s = list_entry<kmem_cache, &kmem_cache::list>(l);
    slab_mutex.hold_work(1);
    if (s->refcount <= 0) {  // its destroy is under way (it holds slab_mutex throughout)
      l = l->next;
      continue;
    }
    g_shrinking = s;  // pinned: stays on slab_caches until we come back
    slab_config_unlock(slab_mutex);
    if (void (*hook)(kmem_cache*) = __atomic_load_n(&g_shrink_hook, __ATOMIC_ACQUIRE)) hook(s);
    __kmem_cache_shrink(s);
    ++caches;
    slab_config_lock(slab_mutex);
    g_shrinking = nullptr;
    g_shrink_seq.fetch_add(1, std::memory_order_release);
    platform::futex_wake(&g_shrink_seq, 1 << 30);  // a destroy of s waits for this
    l = s->list.next;
  }
  slab_config_unlock(slab_mutex);
  return caches;
}

void slab_shrink_set_test_hook(void (*hook)(kmem_cache*)) {
  __atomic_store_n(&g_shrink_hook, hook, __ATOMIC_RELEASE);
}

void slab_fork_prepare() {
  if (fork_handler_enter()) return;  // fork from a signal handler inside uslub: preempt.hpp
  slab_init();
  slab_config_lock(slab_mutex);
  flush_mutex_lock();
  // Sheaf locks of every cache before any core lock: lock order pcs -> barn -> list_lock.
  for (list_head* l = slab_caches.next; l != &slab_caches; l = l->next)
    sheaf_fork_prepare(list_entry<kmem_cache, &kmem_cache::list>(l));
  for (list_head* l = slab_caches.next; l != &slab_caches; l = l->next) {
    kmem_cache* s = list_entry<kmem_cache, &kmem_cache::list>(l);
    for (unsigned n = 0; n < s->nr_nodes; ++n) s->node[n].list_lock.lock_nest_lock(&slab_mutex);
    for (unsigned c = 0; c < s->nr_cpus; ++c) s->cpu_slab[c].lock.lock_wait(&slab_mutex);
  }
  percpu_area_fork_prepare();  // a leaf
  global_page_allocator().fork_prepare();
  stack_depot_fork_prepare();  // a leaf: only mmap under it
}

static void slab_fork_release() {
  stack_depot_fork_release();
  global_page_allocator().fork_release();
  percpu_area_fork_release();
  for (list_head* l = slab_caches.prev; l != &slab_caches; l = l->prev) {
    kmem_cache* s = list_entry<kmem_cache, &kmem_cache::list>(l);
    for (unsigned c = s->nr_cpus; c-- > 0;) s->cpu_slab[c].lock.unlock();
    for (unsigned n = s->nr_nodes; n-- > 0;) s->node[n].list_lock.unlock();
  }
  for (list_head* l = slab_caches.prev; l != &slab_caches; l = l->prev)
    sheaf_fork_release(list_entry<kmem_cache, &kmem_cache::list>(l));
  flush_mutex_unlock();
  slab_config_unlock(slab_mutex);
}

void slab_fork_parent() {
  if (!fork_handler_exit()) slab_fork_release();
}
void slab_fork_child() {
  if (fork_handler_exit()) return;
  // A shrink-all walk of another thread (which does not exist here) may have held the walker
  // mutex and a pin: this thread is alone, so neither is in use.  slab_mutex is still ours.
  g_shrinking = nullptr;
  new (&slab_shrink_mutex) spinlock_t(&slab_shrink_mutex_key);
  slab_fork_release();
  pressure_fork_child();  // every allocator lock is free: the monitor thread may be created
}

void slab_fill_info(kmem_cache* s, kmem_cache_info* info) {
  memset(info, 0, sizeof *info);
  info->name = s->name;
  info->object_size = s->object_size;
  info->size = s->size;
  info->objects_per_slab = s->objects;
  info->order = s->order;
  info->align = s->align;
  info->refcount = static_cast<unsigned>(s->refcount);
  info->cpu_partial = s->cpu_partial;
  info->min_partial = s->min_partial;
  unsigned long free_partial = 0, empty_partial = 0;
  for (unsigned i = 0; i < s->nr_nodes; ++i) {
    kmem_cache_node* n = &s->node[i];
    info->num_slabs += static_cast<unsigned long>(n->nr_slabs.load());
    info->num_objs += static_cast<unsigned long>(n->total_objects.load());
    info->list_lock_acquired += n->list_lock.acquisitions();
    info->list_lock_contended += n->list_lock.contentions();
    lock_guard<spinlock_t> g(n->list_lock);
    info->partial_slabs += n->nr_partial;
    for (list_head* pos = n->partial.next; pos != &n->partial; pos = pos->next) {
      slab_counters c;
      c.v = load_u64(&list_entry<page, &page::lru>(pos)->counters);
      free_partial += c.objects - c.inuse;
      if (c.inuse == 0) empty_partial++;
    }
  }
  // Active objects are the program's: unlike /proc/slabinfo under SLUB, the free objects of
  // the CPU slabs and CPU partial lists are not active, nor are the free objects parked in
  // the per-CPU sheaves and barns (their own column, sheaf_objs), nor the empty slabs kept
  // on the partial lists (stats.cpp).
  info->sheaf_objs = static_cast<unsigned long>(sheaf_parked_objects(s));
  unsigned long cpu_free = static_cast<unsigned long>(cpu_free_objects(s));
  unsigned long used = info->num_objs - free_partial;
  used = used > cpu_free ? used - cpu_free : 0;
  info->active_objs = used > info->sheaf_objs ? used - info->sheaf_objs : 0;
  info->active_slabs = info->num_slabs - empty_partial;
  for (unsigned c = 0; c < s->nr_cpus; ++c) {
    kmem_cache_cpu* cs = &s->cpu_slab[c];
    if (__atomic_load_n(&cs->slab, __ATOMIC_RELAXED)) info->cpu_slabs++;
    if (page* p = __atomic_load_n(&cs->partial, __ATOMIC_RELAXED))
      info->cpu_slabs += __atomic_load_n(&p->slab_private, __ATOMIC_RELAXED);
    if (s->cpu_stats)
      for (int i = 0; i < NR_SLUB_STAT_ITEMS; ++i)
        info->stat[i] += s->cpu_stats[c].stat[i].load(std::memory_order_relaxed);
  }
  info->sheaf_capacity = s->cpu_sheaves ? __atomic_load_n(&s->sheaf_capacity, __ATOMIC_RELAXED) : 0;
  info->sheaves_rseq = s->cpu_sheaves && s->sheaf_rseq;
  std::uint64_t ss[NR_SHEAF_STAT_ITEMS];
  sheaf_stats(s, ss);
  for (int i = 0; i < NR_SHEAF_STAT_ITEMS; ++i) info->sheaf_stat[i] = ss[i];
}

}  // namespace uslub

using namespace uslub;

extern "C" {

const char* const uslub_stat_names[NR_SLUB_STAT_ITEMS] = {
    "alloc_fastpath",      "alloc_slowpath",      "free_fastpath",
    "free_slowpath",       "free_frozen",         "free_add_partial",
    "free_remove_partial", "alloc_from_partial",  "alloc_slab",
    "alloc_refill",        "alloc_node_mismatch", "free_slab",
    "cpuslab_flush",       "deactivate_full",     "deactivate_empty",
    "deactivate_to_head",  "deactivate_to_tail",  "deactivate_remote_frees",
    "deactivate_bypass",   "order_fallback",      "cmpxchg_double_cpu_fail",
    "cmpxchg_double_fail", "cpu_partial_alloc",   "cpu_partial_free",
    "cpu_partial_node",    "cpu_partial_drain",
};

const char* const uslub_sheaf_stat_names[] = {
    "sheaf_alloc_hit",
    "sheaf_alloc_miss",
    "sheaf_free_hit",
    "sheaf_free_miss",
    "sheaf_swap",
    "sheaf_refill",
    "sheaf_flush",
    "barn_get",
    "barn_get_fail",
    "barn_put",
    "barn_put_fail",
    "sheaf_remote_drain",
    "sheaf_alien_free",
    "sheaf_busy_fallback",
    nullptr,
};

struct kmem_cache* kmem_cache_create(const char* name, size_t size, size_t align,
                                     slab_flags_t flags, void (*ctor)(void*)) {
  return kmem_cache_create_on(nullptr, name, size, align, flags, ctor);
}

struct kmem_cache* kmem_cache_create_args(const char* name, size_t size,
                                          const struct kmem_cache_args* args, slab_flags_t flags) {
  return kmem_cache_create_on(nullptr, name, size, args ? args->align : 0, flags,
                              args ? args->ctor : nullptr);
}

void kmem_cache_destroy(struct kmem_cache* s) {
  if (!s) return;
  // Objects of s still queued by kfree_rcu are freed first (the kernel's kvfree_rcu_barrier
  // in kmem_cache_destroy), before slab_mutex: the barrier's callbacks free into s.
  if (!rcu_in_callback() && !rcu_read_lock_held()) kvfree_rcu_barrier();
  {
    slab_mutex_guard g;
    if (--s->refcount > 0) return;
    // A shrink-all walker shrinking s without slab_mutex: wait until it moved on.
    while (g_shrinking == s) {
      std::uint32_t seq = g_shrink_seq.load(std::memory_order_acquire);
      slab_config_unlock(slab_mutex);
      platform::futex_wait(&g_shrink_seq, seq);
      slab_config_lock(slab_mutex);
    }
    // slab_mutex -> flush_mutex: the documented order (never the reverse).
    if (!__kmem_cache_shutdown(s)) {
      s->refcount = 1;  // objects remain: keep the cache rather than corrupt them
      return;
    }
    list_del(&s->list);
  }
  // Its slabs still waiting for a grace period go back to the page allocator first (the
  // kernel's rcu_barrier in kmem_cache_destroy).  No uslub lock is held here.
  if (s->flags & SLAB_TYPESAFE_BY_RCU) rcu_barrier();
  free_kmem_cache(s);
}

int kmem_cache_shrink(struct kmem_cache* s) {
  return __kmem_cache_shrink(s);
}
unsigned int kmem_cache_size(struct kmem_cache* s) {
  return s->object_size;
}
const char* kmem_cache_name(struct kmem_cache* s) {
  return s->name;
}

int kmem_cache_get_info(struct kmem_cache* s, struct kmem_cache_info* info) {
  slab_fill_info(s, info);
  return 0;
}

static void cpu_dead_one(kmem_cache* s, void* arg) {
  slab_cpu_dead(s, *static_cast<unsigned*>(arg));
}

void uslub_cpu_offline(unsigned int cpu) {
  for_each_kmem_cache(&cpu_dead_one, &cpu);  // slab_mutex -> (sheaf slot, list_lock, slot)
}

void uslub_slab_stats_enable(int on) {
  g_stats.store(on != 0);
}

static void print_one(kmem_cache* s, void* arg) {
  int fd = *static_cast<int*>(arg);
  kmem_cache_info in;
  slab_fill_info(s, &in);
  char line[256];
  int n = snprintf(line, sizeof line,
                   "%-27s %6lu %6lu %6u %4u %4u : tunables %4u %4u %4u : slabdata %6lu %6lu %6u\n",
                   in.name, in.active_objs, in.num_objs, in.size, in.objects_per_slab,
                   1u << in.order, 0u, 0u, 0u, in.active_slabs, in.num_slabs, 0u);
  if (n > 0) (void)!write(fd, line, static_cast<size_t>(n));
}

// One line per cache with any nonzero counter: "<name>: counter=value ...", the SLUB
// counters, the sheaf counters and the list_lock acquisitions (a cache counts only with
// statistics on: SLAB_STATS, uslub_slab_stats_enable or USLUB_STATS=1 before its creation).
static void print_stats_one(kmem_cache* s, void* arg) {
  int fd = *static_cast<int*>(arg);
  kmem_cache_info in;
  slab_fill_info(s, &in);
  char line[2048];
  std::size_t n = 0;
  auto add = [&](const char* name, unsigned long v) {
    if (v == 0 || n >= sizeof line) return;
    int k = snprintf(line + n, sizeof line - n, " %s=%lu", name, v);
    if (k > 0) n += static_cast<std::size_t>(k);
  };
  int k = snprintf(line, sizeof line, "%s:", in.name);
  if (k <= 0) return;
  n = static_cast<std::size_t>(k);
  const std::size_t head = n;
  for (int i = 0; i < NR_SLUB_STAT_ITEMS; ++i) add(uslub_stat_names[i], in.stat[i]);
  for (int i = 0; uslub_sheaf_stat_names[i]; ++i) add(uslub_sheaf_stat_names[i], in.sheaf_stat[i]);
  add("list_lock_acquired", in.list_lock_acquired);
  add("list_lock_contended", in.list_lock_contended);
  if (n == head) return;  // nothing counted
  if (n >= sizeof line) n = sizeof line - 1;
  line[n++] = '\n';
  (void)!write(fd, line, n);
}

void uslub_print_slab_stats(int fd) {
  for_each_kmem_cache(&print_stats_one, &fd);
}

void uslub_print_slabinfo(int fd) {
  static const char head[] =
      "slabinfo - version: 2.1\n"
      "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : "
      "tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> "
      "<sharedavail>\n";
  (void)!write(fd, head, sizeof head - 1);
  for_each_kmem_cache(&print_one, &fd);
}

}  // extern "C"
