/* uslub RCU: read-side critical sections, call_rcu, synchronize_rcu, rcu_barrier and
 * kfree_rcu over liburcu's membarrier flavour (docs/rcu.md).  Threads register themselves on
 * their first uslub_rcu_read_lock() and unregister when they exit.
 *
 * Names carry a uslub_ prefix because liburcu, which the process may also use directly,
 * exports call_rcu/synchronize_rcu/rcu_read_lock itself; the kernel's kfree_rcu(ptr, field)
 * and kvfree_rcu_mightsleep(ptr) macros are defined unless USLUB_RCU_NO_KERNEL_NAMES is set. */
#ifndef USLUB_RCU_H
#define USLUB_RCU_H

#include <stddef.h>

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif
#ifdef __cplusplus
extern "C" {
#endif

/* Embedded in objects freed through call_rcu/kfree_rcu (24 bytes). */
struct uslub_rcu_head {
  void* next_;                               /* liburcu's queue link */
  void (*trampoline_)(void*);                /* liburcu's callback: uslub's */
  void (*func)(struct uslub_rcu_head* head); /* the caller's */
};

void uslub_rcu_read_lock(void);
void uslub_rcu_read_unlock(void);
/* func(head) runs after a grace period, on the RCU callback thread. */
void uslub_call_rcu(struct uslub_rcu_head* head, void (*func)(struct uslub_rcu_head* head));
/* Waits for a grace period.  Must not be called inside a read-side critical section. */
void uslub_synchronize_rcu(void);
/* Waits until every callback queued before it (and every kfree_rcu batch) has run. */
void uslub_rcu_barrier(void);

/* kfree_rcu: frees ptr (from kmalloc or kmem_cache_alloc) after a grace period, in batches
 * (per CPU, freed with the bulk free path).  Never sleeps: if no batch memory can be had, the
 * rcu_head at ptr + head_offset is used instead. */
void uslub_kfree_rcu_offset(void* ptr, size_t head_offset);
/* The headless form (kvfree_rcu_mightsleep): may wait for a grace period when out of memory;
 * not from inside a read-side critical section. */
void uslub_kfree_rcu_mightsleep(void* ptr);

#ifdef __cplusplus
}
#endif
#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifndef USLUB_RCU_NO_KERNEL_NAMES
#define kfree_rcu(ptr, field) uslub_kfree_rcu_offset((ptr), offsetof(__typeof__(*(ptr)), field))
#define kvfree_rcu_mightsleep(ptr) uslub_kfree_rcu_mightsleep(ptr)
#endif

#endif /* USLUB_RCU_H */
