// KFENCE for user space (the kernel's mm/kfence, tcmalloc's GWP-ASan): with
// USLUB_KFENCE_SAMPLE=N, one kmalloc/malloc in N (per thread, sizes up to a page) is served from
// a guarded pool instead of a slab: the object sits against a PROT_NONE guard page (right-
// aligned, so an overflow faults at once, or left-aligned for underflows, alternately), and a
// freed object's page is made PROT_NONE and kept in a FIFO quarantine, so a use after free
// faults too.  A SIGSEGV handler turns a fault inside the pool into a report
//     uslub: BUG kfence: Out-of-bounds access | Use-after-free access
// with the address, read or write, the object, its size and the access's offset from it, and
// the allocating (and freeing) thread and stack; then the process aborts (the access cannot be
// completed).  Frees are checked too: "Invalid free" (double free, not the object start) and
// "Out-of-bounds write" (the canary bytes between a right-aligned object and its page end,
// which alignment leaves, were overwritten).
//
// Pool: USLUB_KFENCE_POOL_PAGES objects (default 255), each on its own page, with a guard page
// between every two; reserved once with mmap at start-up when the mode is on.  A full pool
// (every slot in use) makes kfence_alloc fail: the caller falls back to its normal path.
//
// Cost when off: nothing.  kmalloc's fast path takes the class's cache from g_kmalloc.fast;
// turning KFENCE on (kmalloc_kfence_init) points every entry at a cache that is never on the
// fast path (g_kmalloc_bypass), so every kmalloc takes the out-of-line kmalloc_slow, which runs
// the per-thread countdown.  Frees
// pay nothing either: pool addresses are recognised on kfree's slow path, after the slab lookup
// failed.  When on: the countdown per kmalloc; a sampled allocation costs two mprotect calls
// (alloc and free), which split and merge the pool's VMA (docs/kfence.md has the figures).
//
// Locking: kfence_lock (spinlock_t, class "kfence_lock", a leaf) protects g_never_used, the
// free FIFO and every change of a slot's state out of UNUSED, ALLOCATED or FREED: kfence_alloc
// claims an UNUSED or FREED slot and kfence_free an ALLOCATED one by setting BUSY under the
// lock, so of two frees of one object exactly one wins and the other is reported as a double
// free.  A BUSY slot belongs to the thread that claimed it: it fills the metadata and calls
// mprotect without the lock, then publishes ALLOCATED (release store) or FREED (under the lock,
// as it queues the slot).  Lockless readers: kfence_ksize (acquire load of ALLOCATED, then the
// fields its release published), kfence_enabled (g_kfence_sample, written at start-up), and
// the SIGSEGV handler, which cannot take a lock (the interrupted thread may hold it): it reads
// the faulting slot's metadata unlocked, so an allocation racing with the fault can make it
// name the wrong object; it never blocks.  The handler is async-signal-safe (own integer
// formatting, frames resolved from /proc/self/maps, report_bug_signal_safe: no hook, malloc,
// stdio or loader lock) and passes every other SIGSEGV to the handler installed before it.
// The countdown's thread-locals are initial-exec (docs/malloc.md: no __tls_get_addr in malloc).
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/compiler.hpp"

namespace uslub {

namespace detail {
extern std::uint32_t g_kfence_sample;  // 0: off; written once at start-up
}

// Is sampling on?  (kmalloc's slow path asks; its fast path never does: kfence.hpp's top.)
USLUB_ALWAYS_INLINE bool kfence_enabled() {
  return USLUB_UNLIKELY(__atomic_load_n(&detail::g_kfence_sample, __ATOMIC_RELAXED) != 0);
}

// Reads USLUB_KFENCE_SAMPLE / USLUB_KFENCE_POOL_PAGES once (kmalloc_init calls it).
void kfence_init_from_env();
// Turns the mode on with this sample rate and pool size, or off with sample 0 (the pool
// stays); false if it cannot.  Use kmalloc_kfence_init, which also switches kmalloc's path.
bool kfence_init(std::uint32_t sample, unsigned pool_objects);

// Should this allocation be sampled?  (Per-thread countdown; call only if kfence_enabled().)
bool kfence_should_sample();
// A guarded object of size bytes (<= PAGE_SIZE) aligned to align (a power of two <= PAGE_SIZE;
// 16 at least), or nullptr (pool full, too big).
void* kfence_alloc(std::size_t size, std::size_t align, bool zero);
bool is_kfence_address(const void* p);
// Frees a pool object (reports invalid and double frees).  p must satisfy is_kfence_address.
void kfence_free(const void* p);
// The requested size of a live pool object, 0 if p is not one.
std::size_t kfence_ksize(const void* p);

// fork: prepare takes kfence_lock (a leaf), parent and child release it.
void kfence_fork_prepare();
void kfence_fork_release();

struct kfence_stats {
  unsigned long allocs, frees, pool_full, objects_in_use;
};
kfence_stats kfence_get_stats();

}  // namespace uslub
