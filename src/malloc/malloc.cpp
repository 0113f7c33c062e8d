// The malloc family over kmalloc: the drop-in (LD_PRELOAD=libuslub.so, or linked -luslub).
//
// glibc-compatible semantics (glibc 2.36): errno ENOMEM on failure; calloc/reallocarray
// overflow -> NULL + ENOMEM; realloc(NULL, n) == malloc(n); realloc(p, 0) frees p and returns
// NULL (glibc's REALLOC_ZERO_BYTES_FREES); posix_memalign returns EINVAL for an alignment that
// is not a power of two multiple of sizeof(void*) and leaves errno alone; aligned_alloc
// rejects a non-power-of-two alignment with EINVAL; memalign rounds it up; malloc(0) returns
// a unique pointer.  A free of a pointer uslub never handed out (glibc's heap, the stack, the
// middle of an object) is reported and ignored, never passed on: nothing is mixed.
//
// Initialisation: everything below allocates from static storage and mmap, never malloc, so a
// malloc call during our own initialisation (or from dlsym/TLS set-up) cannot recurse.
// pthread_atfork is registered after the allocator is up (it may itself call malloc).
//
// Fork: prepare takes every slab and page-allocator lock in the documented order
// (slab_fork_prepare: slab_mutex -> flush_mutex -> sheaf slots/barns -> list_locks -> CPU
// slots -> page allocator -> stack depot, then the leaves huge_lock and kfence_lock), parent
// and child release them; the child then owns a consistent heap.  RCU's handlers
// (src/rcu/rcu.hpp) are registered right after ours, so its prepare (pause the call_rcu
// threads, close the RCU fork gate, kfree_rcu's and the frag pools' locks) runs before
// malloc_fork_prepare and its parent/child after ours.  No per-thread state exists, so
// threads that exit leak nothing.
#include <errno.h>
#include <malloc.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>

#include "base/bits.hpp"
#include "kmalloc/kmalloc.hpp"
#include "rcu/rcu.hpp"
#include "sync/preempt.hpp"

using namespace uslub;

namespace {

std::atomic<int> g_atfork{0};

// kfence_lock is a leaf: taken after every slab and page lock, released first.
// huge_lock is a leaf too (no lock and no system call under it).
// A fork from a signal handler that interrupted uslub on this thread takes nothing and
// releases nothing (fork_handler_enter: sync/preempt.hpp); slab_fork_* decide alike.
void malloc_fork_prepare() {
  if (fork_handler_enter()) return;
  slab_fork_prepare();
  huge_fork_prepare();
  kfence_fork_prepare();
}
void malloc_fork_parent() {
  if (fork_handler_exit()) return;
  kfence_fork_release();
  huge_fork_release();
  slab_fork_parent();
}
void malloc_fork_child() {
  if (fork_handler_exit()) return;
  kfence_fork_release();
  huge_fork_release();
  slab_fork_child();
}

USLUB_NOINLINE void register_fork_handlers() {
  int expected = 0;
  if (g_atfork.compare_exchange_strong(expected, 1)) {
    platform::register_atfork(malloc_fork_prepare, malloc_fork_parent, malloc_fork_child);
    // RCU's handlers after ours: its prepare runs first (pthread_atfork runs prepare handlers
    // in reverse order) and pauses the call_rcu threads, whose callbacks free into the slab
    // layer, before malloc_fork_prepare takes the slab locks; its parent/child run last.
    rcu_register_fork_handlers();
  }
}

// The fork handlers are registered by a constructor when the library is loaded (and, for a
// program that allocates before constructors run, by the first aligned allocation): the
// malloc hit path then has nothing to check and can tail-call its slow half.
USLUB_ALWAYS_INLINE void* do_malloc(size_t size, gfp_t gfp) {
  return kmalloc_inline(size, gfp);
}

__attribute__((constructor)) void register_fork_handlers_at_load() {
  register_fork_handlers();
}

void* do_aligned(size_t align, size_t size) {
  void* p = kmalloc_aligned(size, align, 0);
  if (USLUB_UNLIKELY(g_atfork.load(std::memory_order_relaxed) == 0) && p) register_fork_handlers();
  return p;
}

}  // namespace

extern "C" {

USLUB_EXPORT void* malloc(size_t size) {
  return do_malloc(size, 0);
}

USLUB_EXPORT void free(void* p) {
  kfree_inline(p, "free");
}

USLUB_EXPORT void* calloc(size_t n, size_t size) {
  size_t bytes;
  if (USLUB_UNLIKELY(__builtin_mul_overflow(n, size, &bytes))) {
    errno = ENOMEM;
    return nullptr;
  }
  return do_malloc(bytes, __GFP_ZERO);
}

USLUB_EXPORT void* realloc(void* p, size_t size) {
  if (!p) return do_malloc(size, 0);
  if (size == 0) {
    free(p);
    return nullptr;
  }
  return krealloc(p, size, 0);
}

USLUB_EXPORT void* reallocarray(void* p, size_t n, size_t size) {
  size_t bytes;
  if (__builtin_mul_overflow(n, size, &bytes)) {
    errno = ENOMEM;
    return nullptr;
  }
  return realloc(p, bytes);
}

USLUB_EXPORT int posix_memalign(void** out, size_t align, size_t size) {
  if (align < sizeof(void*) || !is_power_of_2(align)) return EINVAL;
  int saved = errno;
  void* p = do_aligned(align, size);
  if (!p) {
    errno = saved;
    return ENOMEM;
  }
  *out = p;
  return 0;
}

USLUB_EXPORT void* aligned_alloc(size_t align, size_t size) {
  if (!is_power_of_2(align)) {
    errno = EINVAL;
    return nullptr;
  }
  return do_aligned(align, size);
}

USLUB_EXPORT void* memalign(size_t align, size_t size) {
  if (align > (size_t{1} << 40)) {
    errno = EINVAL;
    return nullptr;
  }
  return do_aligned(roundup_pow_of_two(align ? align : 1), size);
}

USLUB_EXPORT void* valloc(size_t size) {
  return do_aligned(PAGE_SIZE, size);
}

USLUB_EXPORT void* pvalloc(size_t size) {
  size_t rounded = align_up(size ? size : 1, PAGE_SIZE);
  if (rounded < size) {
    errno = ENOMEM;
    return nullptr;
  }
  return do_aligned(PAGE_SIZE, rounded);
}

USLUB_EXPORT size_t malloc_usable_size(void* p) {
  return p ? ksize_slow(p) : 0;
}

USLUB_EXPORT int malloc_trim(size_t) {
  kmem_cache_shrink_all();  // slab_mutex only between caches
  global_page_allocator().drain_all_pages();
  std::size_t released = huge_trim();
  return global_page_allocator().reclaim(/*force=*/true) + released > 0 ? 1 : 0;
}

}  // extern "C"
