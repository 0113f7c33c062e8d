/* uslub: statistics a program can query (the same figures USLUB_STATS=1 prints at exit and
 * `uslub stat PID` reads from a running process).
 *
 * The structs are versioned: a caller sets `version` to USLUB_STATS_VERSION and `size` to
 * sizeof the struct it was compiled with; uslub fills at most `size` bytes and sets
 * `version` to the version it filled (fields are only ever appended, never moved).
 *
 * Byte figures (all in bytes):
 *   allocated   bytes in objects handed out and not freed (slab objects at their size class,
 *               huge blocks at their mapping); objects waiting in per-CPU sheaves are free
 *   active      bytes of slab pages that hold at least one object, plus huge blocks
 *   resident    committed minus what has been returned to the OS (madvised, not yet reused)
 *   committed   what uslub has taken from the OS (page allocator sections + huge mappings)
 *   metadata    uslub's own bookkeeping: page descriptors, cache descriptors, their
 *               per-CPU blocks and sheaves, the stack depot
 *   rss         the process's resident set (/proc/self/statm), everything, not only uslub's
 * Peaks: committed and rss peaks are exact (committed never shrinks: memory goes back to the
 * OS by madvise and stays committed; rss from the kernel's VmHWM); allocated / active /
 * resident / metadata peaks are the highest values any snapshot saw (the fast paths keep no
 * counters).  Allocation and free counts need per-cache statistics (USLUB_STATS set at start,
 * SLAB_STATS, uslub_slab_stats_enable): `counted` says whether they cover every cache.
 */
#ifndef USLUB_STATS_H
#define USLUB_STATS_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif
#ifdef __cplusplus
extern "C" {
#endif

#define USLUB_STATS_VERSION 1

struct uslub_stats {
  uint32_t version; /* in: USLUB_STATS_VERSION; out: the version filled */
  uint32_t size;    /* in: sizeof(struct uslub_stats) */
  int32_t pid;
  uint32_t nr_caches;
  uint64_t allocated, active, resident, committed, metadata;
  uint64_t peak_allocated, peak_active, peak_resident, peak_committed, peak_metadata;
  uint64_t allocations, frees; /* objects of the program's caches; see `counted` */
  uint32_t counted;            /* 1: every cache keeps statistics, the counts are complete */
  uint32_t pad0;
  uint64_t rss, peak_rss;
  uint64_t returned;       /* free memory currently given back to the OS (madvised) */
  uint64_t returned_total; /* bytes given back to the OS since start */
  uint64_t free_pages;     /* free in the page allocator (zones and per-CPU lists), resident */
  uint64_t sheaf_bytes;    /* objects parked in per-CPU sheaves and barns */
  uint64_t huge_bytes;     /* huge blocks (live and cached mappings) */
  uint64_t limit;          /* USLUB_MEMORY_LIMIT, 0: none */
  uint64_t kfence_allocs, kfence_in_use;
};

struct uslub_cache_stats {
  uint32_t version; /* in: USLUB_STATS_VERSION */
  uint32_t size;    /* in: sizeof(struct uslub_cache_stats) */
  char name[48];
  uint32_t object_size, size_class, objects_per_slab, order;
  uint64_t active_objs;  /* in use by the program (not free, not parked in sheaves) */
  uint64_t num_objs;     /* objects in all slabs */
  uint64_t sheaf_objs;   /* free objects parked in per-CPU sheaves and barns */
  uint64_t active_slabs; /* slabs with an object in use or on a CPU */
  uint64_t num_slabs, partial_slabs;
  uint64_t allocations, frees; /* 0 unless the cache keeps statistics */
  uint32_t counted;            /* 1: this cache keeps statistics */
  uint32_t sheaf_capacity;
};

/* Fills *st; 0, or -1 (errno EINVAL) for a null pointer or an unknown version. */
int uslub_stats_get(struct uslub_stats* st);
/* Calls fn once per cache (merged aliases once) with its figures; stops when fn returns
 * nonzero.  Returns the number of caches visited, or -1 for bad arguments.  fn runs with the
 * cache list locked: it must not create or destroy caches. */
int uslub_cache_stats_for_each(int (*fn)(const struct uslub_cache_stats* cs, void* arg), void* arg);

/* Writes the report: the summary then the slabinfo table (flags below).  Returns 0 or -1. */
#define USLUB_STATS_ALL 0x1  /* show empty caches too */
#define USLUB_STATS_JSON 0x2 /* one JSON object instead of text */
int uslub_stats_print(int fd, int flags);

#ifdef __cplusplus
}
#endif
#if defined(__GNUC__)
#pragma GCC visibility pop
#endif
#endif /* USLUB_STATS_H */
