/* uslub's fragment allocator (docs/rcu.md "The fragment allocator"): a page split into
 * nr_frags (2..32, a power of two) equal fragments, with frag_free_defer(), which makes a
 * fragment reusable only after an RCU grace period (uslub_rcu_read_lock readers that still
 * hold it are safe).  Deferred fragments are processed without further calls (RCU's monitor
 * thread); a page whose fragments are all free and none pending goes back to the page
 * allocator.  Misuse (double free, a pointer of another pool, an interior pointer) is
 * reported.  Thread-safe. */
#ifndef USLUB_FRAG_H
#define USLUB_FRAG_H

#include <stddef.h>

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif
#ifdef __cplusplus
extern "C" {
#endif

struct uslub_frag_pool;

/* NULL with errno EINVAL (bad nr_frags) or ENOMEM. */
struct uslub_frag_pool* uslub_frag_pool_create(unsigned int nr_frags);
/* Waits for the pool's deferred fragments (rcu_barrier), then frees the pool: 0.  If
 * fragments are still allocated: reported, the pool is kept, -1 (errno EBUSY). */
int uslub_frag_pool_destroy(struct uslub_frag_pool* pool);
/* The size of one fragment (PAGE_SIZE / nr_frags); fragments are aligned to it. */
size_t uslub_frag_size(const struct uslub_frag_pool* pool);
/* NULL with errno ENOMEM. */
void* uslub_frag_alloc(struct uslub_frag_pool* pool);
void uslub_frag_free(struct uslub_frag_pool* pool, void* frag);
/* Reusable only after a grace period.  May wait for one when out of memory, except inside a
 * read-side section or an RCU callback (the fragment is then leaked, reported once). */
void uslub_frag_free_defer(struct uslub_frag_pool* pool, void* frag);

#ifdef __cplusplus
}
#endif
#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif /* USLUB_FRAG_H */
