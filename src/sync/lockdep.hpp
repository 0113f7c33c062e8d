// Lock classes and the hooks of the lock-order checker (the kernel's lockdep).
//
// Every uslub lock names a lock_class_key (one static object per kind of lock: "zone->lock",
// "pcp->lock", "list_lock", ...).  With USLUB_LOCKDEP (Debug builds and the test suite's lockdep
// build) each acquire/release is reported to the checker in lockdep.cpp, which keeps the locks
// held by each thread, learns the order in which classes nest, and reports the first inversion.
// Without USLUB_LOCKDEP these hooks compile to nothing.
//
// Hooks: a lock calls lockdep_acquire() after it has the lock (trylock = true for a successful
// try, which adds no ordering edge) and lockdep_release() before it gives it up.  Functions whose
// caller must hold a lock open with lockdep_assert_held(&lock) ("uslub: BUG lockdep: lock not
// held" otherwise).  Design, limits and the report format: docs/sync.md.
#pragma once

#include "base/compiler.hpp"

namespace uslub {

struct lock_class_key {
  const char* name;
};

#if USLUB_LOCKDEP
void lockdep_acquire(const lock_class_key* cls, const void* lock, bool trylock);
void lockdep_release(const lock_class_key* cls, const void* lock);
bool lockdep_is_held(const void* lock);
// Reports (report_bug "lockdep") if the calling thread does not hold lock.
void lockdep_assert_held_fn(const void* lock, const char* what, const char* file, int line);
// Forgets every recorded ordering and re-arms the one-report latch (tests).
void lockdep_reset();
// Re-arms the one-report latch, keeping the dependencies learned so far (the test main, after
// a test that made a report).
void lockdep_rearm();
// Has the dependency a -> b (a held while b was acquired, not tried) been recorded?
bool lockdep_depends(const lock_class_key* a, const lock_class_key* b);
#define lockdep_assert_held(l) ::uslub::lockdep_assert_held_fn((l), #l, __FILE__, __LINE__)
#else
inline void lockdep_acquire(const lock_class_key*, const void*, bool) {}
inline void lockdep_release(const lock_class_key*, const void*) {}
inline void lockdep_reset() {}
#define lockdep_assert_held(l) \
  do {                         \
  } while (0 && (l))
#endif

}  // namespace uslub
