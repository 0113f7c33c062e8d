// local_trylock_t: the lock of a per-CPU structure (pcp lists, per-CPU slab slots).
//
// The kernel protects per-CPU data by disabling preemption or IRQs; user space cannot, so two
// threads can use the same CPU's slot at once (one preempted mid-operation, another scheduled
// on that CPU, or a thread that migrated).  Seed 003's rule applies: the per-CPU path only ever
// *tries* the lock, and a busy lock sends the caller to the shared (zone/node) path instead of
// waiting behind a holder that may not be running.  Only drains from other threads wait
// (lock_wait(), sleeping with sched_yield between attempts), and they are rare and bounded by
// the holder's critical section, which never blocks.
//
// Cost: acquire is one locked exchange, release a plain store (x86-TSO makes a release store a
// mov), so a pcp pair pays two locked instructions instead of the four of a mutex.
#pragma once

#include <sched.h>

#include <atomic>
#include <cstdint>

#include "base/compiler.hpp"
#include "sync/lockdep.hpp"
#include "sync/preempt.hpp"

namespace uslub {

class local_trylock_t {
 public:
  constexpr explicit local_trylock_t(const lock_class_key* cls = nullptr) : cls_(cls) {}
  local_trylock_t(const local_trylock_t&) = delete;
  local_trylock_t& operator=(const local_trylock_t&) = delete;

  void set_class(const lock_class_key* cls) { cls_ = cls; }

  USLUB_ALWAYS_INLINE bool try_lock() {
    preempt_count_inc();  // before: see preempt.hpp
    if (USLUB_UNLIKELY(locked_.exchange(1, std::memory_order_acquire) != 0)) {
      preempt_count_dec();
      failed_.store(failed_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      return false;
    }
    lockdep_acquire(cls_, this, true);
    return true;
  }

  // For drains and other rare callers that must get this lock.  nest: see
  // spinlock_t::lock_nest_lock (fork's prepare takes every CPU's lock under one outer lock).
  void lock_wait(const void* nest = nullptr) {
    lockdep_acquire(cls_, this, false, 0, nest);  // before waiting
    preempt_count_inc();
    for (int spins = 0; !try_lock_quiet(); ++spins) {
      if (spins < 64)
        cpu_relax();
      else
        sched_yield();
    }
  }

  USLUB_ALWAYS_INLINE void unlock() {
    lockdep_release(cls_, this);
    locked_.store(0, std::memory_order_release);
    preempt_count_dec();
  }

  bool is_locked() const { return locked_.load(std::memory_order_relaxed) != 0; }
  const lock_class_key* lock_class() const { return cls_; }
  // Failed try_lock() calls (racy count: a statistic, not an invariant).
  std::uint64_t trylock_failures() const { return failed_.load(std::memory_order_relaxed); }

 private:
  bool try_lock_quiet() {
    return locked_.load(std::memory_order_relaxed) == 0 &&
           locked_.exchange(1, std::memory_order_acquire) == 0;
  }

  std::atomic<std::uint32_t> locked_{0};
  const lock_class_key* cls_;
  std::atomic<std::uint64_t> failed_{0};
};

}  // namespace uslub
