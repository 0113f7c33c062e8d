// Lock classes and the hooks of the lock-order checker (the kernel's lockdep).
//
// Every uslub lock names a lock_class_key (one static object per kind of lock: "zone->lock",
// "pcp->lock", "list_lock", ...).  With USLUB_LOCKDEP (Debug builds and the test suite's lockdep
// build) each acquire/release is reported to the checker in lockdep.cpp, which keeps the locks
// held by each thread, learns the order in which classes nest, and reports the first inversion.
// Without USLUB_LOCKDEP these hooks compile to nothing.
//
// Hooks: a lock calls lockdep_acquire() before it waits for the lock (so a deadlock is reported,
// not hung on), or after a successful try (trylock = true, which adds no ordering edge), and
// lockdep_release() before it gives it up.  Functions whose
// caller must hold a lock open with lockdep_assert_held(&lock) ("uslub: BUG lockdep: lock not
// held" otherwise).  Design, limits and the report format: docs/sync.md.
#pragma once

#include "base/compiler.hpp"

namespace uslub {

struct lock_class_key {
  const char* name;
};

// Subclasses (the kernel's spin_lock_nested): a lock taken with subclass n > 0 is checked as
// class "name/n", so two locks of one class may nest when the inner one says which level it is.
inline constexpr unsigned kLockdepSubclasses = 8;

#if USLUB_LOCKDEP
// Called before a blocking acquisition waits (so a deadlock it would close is reported rather
// than hung on) and after a successful trylock.  nest (the kernel's spin_lock_nest_lock): a
// lock this thread holds that serialises every taker of many locks of this class at once
// (fork's prepare takes each cache's list_lock under slab_mutex); such locks are counted in
// one held entry instead of being reported as same-class nesting.
void lockdep_acquire(const lock_class_key* cls, const void* lock, bool trylock,
                     unsigned subclass = 0, const void* nest = nullptr);
void lockdep_release(const lock_class_key* cls, const void* lock);
// Does this thread hold lock?  A lock of a class held under a nest lock (one entry for many
// instances) is reported held only given its class and that its lock word is taken.
bool lockdep_is_held(const void* lock, const lock_class_key* cls = nullptr, bool locked = false);
// Reports (report_bug "lockdep") if the calling thread does not hold lock.
void lockdep_assert_held_fn(const void* lock, const char* what, const char* file, int line,
                            const lock_class_key* cls = nullptr, bool locked = false);
template <class Lock>
inline void lockdep_assert_held_lock(const Lock* l, const char* what, const char* file, int line) {
  lockdep_assert_held_fn(l, what, file, line, l->lock_class(), l->is_locked());
}
// Forgets every recorded ordering and re-arms the one-report latch (tests).
void lockdep_reset();
// Re-arms the one-report latch, keeping the dependencies learned so far (the test main, after
// a test that made a report).
void lockdep_rearm();
// Has the dependency a -> b (a held while b was acquired, not tried) been recorded?
bool lockdep_depends(const lock_class_key* a, const lock_class_key* b);
// The same by class names (subclass 0), for classes whose keys are private to their file.
bool lockdep_depends_by_name(const char* a, const char* b);
#define lockdep_assert_held(l) ::uslub::lockdep_assert_held_lock((l), #l, __FILE__, __LINE__)
#else
inline void lockdep_acquire(const lock_class_key*, const void*, bool, unsigned = 0,
                            const void* = nullptr) {}
inline void lockdep_release(const lock_class_key*, const void*) {}
inline void lockdep_reset() {}
#define lockdep_assert_held(l) \
  do {                         \
  } while (0 && (l))
#endif

}  // namespace uslub
