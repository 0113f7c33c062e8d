// Sequence counts inside uslub: the standard-library-only family of include/uslub/seqlock.hpp
// (seqcount_t, seqcount_LOCKNAME_t<Lock>, basic_seqlock<Lock>, seqcount_latch_t<T>, seq_load /
// seq_store; protocol, fences and the preempted-writer reader fallback are described there)
// plus the flavours over uslub's own spinlock_t, which lockdep tracks:
//   seqcount_spinlock_t   writers hold the spinlock_t; with USLUB_LOCKDEP write_seqcount_begin()
//                         reports "uslub: BUG lockdep: lock not held" otherwise; a reader that
//                         finds a writer preempted mid-section sleeps on the spinlock_t's futex
//   seqlock_t             a seqcount with its own spinlock_t
// Lock order: the associated lock is the writer's lock and nests like any lock of its class; a
// reader that falls back takes it too (with no other lock of a later class held, or lockdep
// records the dependency - which is right, the reader then really waits for it).
#pragma once

#include <uslub/seqlock.hpp>

#include "sync/lockdep.hpp"
#include "sync/spinlock.hpp"

namespace uslub {

template <>
struct seqcount_lock_traits<spinlock_t> {
  static void reader_wait(spinlock_t& l) {
    l.lock();
    l.unlock();
  }
  static void assert_held([[maybe_unused]] const spinlock_t& l) {
#if USLUB_LOCKDEP
    lockdep_assert_held_fn(&l, "the seqcount writer's associated lock", __FILE__, __LINE__);
#endif
  }
};

using seqcount_spinlock_t = seqcount_LOCKNAME_t<spinlock_t>;
using seqlock_t = basic_seqlock<spinlock_t>;

#if !USLUB_LOCKDEP
// The association is free in release builds: the non-RT layout is the bare counter.
static_assert(sizeof(seqcount_LOCKNAME_t<spinlock_t, seqcount_wait::yield>) == sizeof(seqcount_t));
#endif

}  // namespace uslub
