// Lock classes and the hooks of the lock-order checker (the kernel's lockdep).
//
// Every uslub lock names a lock_class_key (one static object per kind of lock: "zone->lock",
// "pcp->lock", "list_lock", ...).  With USLUB_LOCKDEP (Debug builds and the test suite's lockdep
// build) each acquire/release is reported to the checker in lockdep.cpp, which keeps the locks
// held by each thread, learns the order in which classes nest, and reports the first inversion.
// Without USLUB_LOCKDEP these hooks compile to nothing.
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
#define lockdep_assert_held(l) ::uslub::lockdep_assert_held_fn((l), #l, __FILE__, __LINE__)
#else
inline void lockdep_acquire(const lock_class_key*, const void*, bool) {}
inline void lockdep_release(const lock_class_key*, const void*) {}
#define lockdep_assert_held(l) \
  do {                         \
  } while (0 && (l))
#endif

}  // namespace uslub
