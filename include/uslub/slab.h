/* uslub: SLUB object caches and kmalloc, the C API.
 *
 * Names and semantics follow the Linux kernel (include/linux/slab.h) so that a reader of
 * mm/slub.c finds their way.  Out of memory returns NULL with errno = ENOMEM; bad input (a
 * double free, a pointer uslub never handed out, an object of another cache) is reported as
 * "uslub: BUG <cache>: <problem>" on stderr (or USLUB_LOG) and refused.
 */
#ifndef USLUB_SLAB_H
#define USLUB_SLAB_H

#include <stddef.h>
#include <stdint.h>

/* uslub is built with -fvisibility=hidden: what this header declares is its ABI. */
#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif
#ifdef __cplusplus
extern "C" {
#endif

typedef unsigned int slab_flags_t;
typedef unsigned int uslub_gfp_t;

/* gfp flags */
#define USLUB_GFP_KERNEL 0u
#define USLUB_GFP_ZERO 0x1u /* __GFP_ZERO: zeroed object */
#define USLUB_NUMA_NO_NODE (-1)

/* kmem_cache_create flags (values are uslub's own; names are the kernel's) */
#define SLAB_CONSISTENCY_CHECKS 0x00000100u /* F: sanity checks on alloc/free */
#define SLAB_RED_ZONE 0x00000400u           /* Z: red zones around objects */
#define SLAB_POISON 0x00000800u             /* P: poison free objects */
#define SLAB_HWCACHE_ALIGN 0x00002000u      /* align objects on cache lines */
#define SLAB_STORE_USER 0x00010000u         /* U: track allocating/freeing caller */
#define SLAB_TRACE 0x00200000u              /* T: trace every alloc/free */
#define SLAB_TYPESAFE_BY_RCU 0x00080000u    /* slab memory freed only after a grace period */
#define SLAB_NO_MERGE 0x01000000u           /* never alias this cache with another */
#define SLAB_STATS 0x02000000u              /* keep the 26 SLUB statistics counters */
#define SLAB_FAILSLAB 0x04000000u           /* A: fault injection */
#define SLAB_NO_SHEAVES 0x08000000u         /* classic per-CPU slab fast path (no sheaves) */
#define SLAB_SHEAVES 0x10000000u            /* per-CPU sheaves even if USLUB_FASTPATH=cpuslab */

struct kmem_cache;

struct kmem_cache_args {
  size_t align;            /* 0: natural (8 bytes, or a cache line with SLAB_HWCACHE_ALIGN) */
  void (*ctor)(void* obj); /* run once per object when its slab is created */
};

struct kmem_cache* kmem_cache_create(const char* name, size_t size, size_t align,
                                     slab_flags_t flags, void (*ctor)(void*));
struct kmem_cache* kmem_cache_create_args(const char* name, size_t size,
                                          const struct kmem_cache_args* args, slab_flags_t flags);
/* Reports "Objects remaining on destroy" and keeps the cache if objects are still allocated. */
void kmem_cache_destroy(struct kmem_cache* s);

void* kmem_cache_alloc(struct kmem_cache* s, uslub_gfp_t gfp);
void* kmem_cache_alloc_node(struct kmem_cache* s, uslub_gfp_t gfp, int node);
void* kmem_cache_zalloc(struct kmem_cache* s, uslub_gfp_t gfp);
void kmem_cache_free(struct kmem_cache* s, void* obj);
/* All or nothing: returns nr with p[0..nr) filled, or 0 (errno ENOMEM) with nothing allocated. */
int kmem_cache_alloc_bulk(struct kmem_cache* s, uslub_gfp_t gfp, size_t nr, void** p);
/* Frees p[0..nr) (NULL entries skipped); a pointer that appears twice is reported as "Object
 * already free" and freed once.  On caches without sheaves an array of more than 512 entries is
 * sorted in place to find duplicates (its order is not kept). */
void kmem_cache_free_bulk(struct kmem_cache* s, size_t nr, void** p);
/* Flushes per-CPU slabs and frees empty slabs.  Returns 0. */
int kmem_cache_shrink(struct kmem_cache* s);
unsigned int kmem_cache_size(struct kmem_cache* s);
const char* kmem_cache_name(struct kmem_cache* s);
/* Walks every slab and list of the cache; returns 0 if consistent, else reports the first
 * inconsistency ("uslub: BUG <cache>: ...") and returns -1. */
int kmem_cache_validate(struct kmem_cache* s);

/* The 26 SLUB statistics counters (mm/slub.c enum stat_item), summed over CPUs. */
enum uslub_stat_item {
  ALLOC_FASTPATH,
  ALLOC_SLOWPATH,
  FREE_FASTPATH,
  FREE_SLOWPATH,
  FREE_FROZEN,
  FREE_ADD_PARTIAL,
  FREE_REMOVE_PARTIAL,
  ALLOC_FROM_PARTIAL,
  ALLOC_SLAB,
  ALLOC_REFILL,
  ALLOC_NODE_MISMATCH,
  FREE_SLAB,
  CPUSLAB_FLUSH,
  DEACTIVATE_FULL,
  DEACTIVATE_EMPTY,
  DEACTIVATE_TO_HEAD,
  DEACTIVATE_TO_TAIL,
  DEACTIVATE_REMOTE_FREES,
  DEACTIVATE_BYPASS,
  ORDER_FALLBACK,
  CMPXCHG_DOUBLE_CPU_FAIL,
  CMPXCHG_DOUBLE_FAIL,
  CPU_PARTIAL_ALLOC,
  CPU_PARTIAL_FREE,
  CPU_PARTIAL_NODE,
  CPU_PARTIAL_DRAIN,
  NR_SLUB_STAT_ITEMS
};

struct kmem_cache_info {
  const char* name;
  unsigned long active_objs, num_objs; /* /proc/slabinfo columns */
  unsigned long active_slabs, num_slabs, partial_slabs, cpu_slabs;
  unsigned int object_size, size, objects_per_slab, order, align, refcount;
  unsigned int cpu_partial, min_partial;
  unsigned long list_lock_acquired, list_lock_contended;
  unsigned long stat[NR_SLUB_STAT_ITEMS];
  /* Sheaves (per-CPU object queues): capacity 0 means the classic per-CPU slab path. */
  unsigned int sheaf_capacity;
  int sheaves_rseq;             /* 1: lock-free rseq fast paths, 0: locked fallback */
  unsigned long sheaf_stat[16]; /* see uslub_sheaf_stat_names */
  /* Free objects parked in per-CPU sheaves and barns (not counted in active_objs). */
  unsigned long sheaf_objs;
};
extern const char* const uslub_sheaf_stat_names[];
/* Changes the sheaf capacity of a cache at run time (drains its sheaves).  0 or -EINVAL. */
int kmem_cache_set_sheaf_capacity(struct kmem_cache* s, unsigned int capacity);
extern const char* const uslub_stat_names[NR_SLUB_STAT_ITEMS];

int kmem_cache_get_info(struct kmem_cache* s, struct kmem_cache_info* info);
/* Writes every cache in /proc/slabinfo 2.1 format to fd. */
void uslub_print_slabinfo(int fd);
/* Writes the statistics counters of every cache that counted (see uslub_slab_stats_enable), a
 * line per cache: "<name>: alloc_slowpath=12 sheaf_refill=3 ..." (nonzero counters only). */
void uslub_print_slab_stats(int fd);
/* Drains every cache's per-CPU sheaves and slab of a CPU the process will no longer use (call
 * after narrowing the affinity mask; the kernel's slub_cpu_dead). */
void uslub_cpu_offline(unsigned int cpu);
/* Statistics for caches created from now on (also USLUB_STATS=1). */
void uslub_slab_stats_enable(int on);

/* kmalloc (size classes over kmem_cache; large sizes from the page allocator / mmap) */
void* kmalloc(size_t size, uslub_gfp_t gfp);
void* kzalloc(size_t size, uslub_gfp_t gfp);
void* kcalloc(size_t n, size_t size, uslub_gfp_t gfp);
void* krealloc(const void* p, size_t new_size, uslub_gfp_t gfp);
void kfree(const void* p);
size_t ksize(const void* p);

#ifdef __cplusplus
}
#endif
#if defined(__GNUC__)
#pragma GCC visibility pop
#endif
#endif /* USLUB_SLAB_H */
