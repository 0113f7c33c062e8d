// spinlock_t: the lock behind zone->lock, list_lock and the other shared locks.
//
// User space is PREEMPT_RT: a lock holder can be preempted at any instruction, so a waiter
// that only spins can burn its whole time slice (or deadlock against a lower-priority holder).
// Like RT's spinlock_t (an rtmutex), ours spins briefly (adaptive: the holder is usually
// running and done within the spin) and then sleeps on a futex.
//
// State: 0 unlocked, 1 locked, 2 locked with (possible) sleepers (Drepper, "Futexes are
// tricky", mutex #3).  Acquire/release ordering comes from the atomic read-modify-writes.
//
// Also counts acquisitions and contended acquisitions (for lock statistics: "shared-lock
// acquisitions per 1000 operations").  The counters are relaxed and approximate.
//
// Hold times (lock_hold_stats_enable, USLUB_LOCK_HOLD_STATS=1; off by default): while on, each
// acquisition stamps hold_start_ (CLOCK_MONOTONIC, ns; written and read only by the holder)
// and the release adds the hold time to its lock class's log2 histogram and maximum (a
// fixed table in spinlock.cpp, relaxed atomics).  Off, lock() and unlock() pay one relaxed
// load and a not-taken branch each.  With USLUB_LOCK_HOLD_STATS=cpu (lock_hold_stats_enable(
// true, true)) each hold is also measured in the holder's thread CPU time
// (CLOCK_THREAD_CPUTIME_ID, one system call at each end): a hold whose wall time is much
// longer than its CPU time was preempted (or slept in a fault), not busy.  The holder may
// count the work it does in a hold (hold_work(n): blocks, slabs, caches, whatever the lock's
// unit is); each class records its largest count per hold, so "how long" and "how much" can
// be told apart.
#pragma once

#include <atomic>
#include <cstdint>

#include "base/compiler.hpp"
#include "platform/platform.hpp"
#include "sync/lockdep.hpp"
#include "sync/preempt.hpp"

namespace uslub {

namespace detail {
extern std::atomic<bool> g_lock_hold_on;
std::uint64_t lock_hold_now_ns();
extern std::atomic<bool> g_lock_hold_cpu;
std::uint64_t lock_hold_thread_cpu_ns();
struct hold_sample {
  std::uint64_t ns, cpu_ns, work;
  bool has_cpu;
};
void lock_hold_record(const lock_class_key* cls, const hold_sample& h);
}  // namespace detail

// Hold-time statistics of one lock class (lock_hold_stats).
inline constexpr unsigned kLockHoldBuckets = 32;  // bucket i: holds of [2^i, 2^(i+1)) ns
struct lock_hold_class {
  const char* name;
  std::uint64_t count, total_ns, max_ns;
  std::uint64_t hist[kLockHoldBuckets];
  // Thread CPU time of the holds (only while enabled with cpu = true; else zero).
  std::uint64_t cpu_total_ns, cpu_max_ns;
  std::uint64_t cpu_hist[kLockHoldBuckets];
  // hold_work(): the largest count of one hold, their sum, and the holds that counted any.
  std::uint64_t max_work, total_work, work_holds;
};
// cpu: also measure each hold in thread CPU time (a system call at each end: costs ~0.1-1 us
// per hold, which the wall times then include).
void lock_hold_stats_enable(bool on, bool cpu = false);
void lock_hold_stats_reset();
// Copies up to max classes (those that recorded a hold) into out; returns how many.
int lock_hold_stats(lock_hold_class* out, int max);
// The smallest hold time (ns, a bucket's upper bound) that q (0..1) of the holds do not pass.
std::uint64_t lock_hold_quantile(const lock_hold_class& c, double q);
// The same over the thread CPU time histogram.
std::uint64_t lock_hold_cpu_quantile(const lock_hold_class& c, double q);

class spinlock_t {
 public:
  constexpr spinlock_t() = default;
  constexpr explicit spinlock_t(const lock_class_key* cls) : cls_(cls) {}
  spinlock_t(const spinlock_t&) = delete;
  spinlock_t& operator=(const spinlock_t&) = delete;

  void set_class(const lock_class_key* cls) { cls_ = cls; }

  USLUB_ALWAYS_INLINE void lock() {
    lockdep_acquire(cls_, this, false);  // before waiting: a deadlock is reported, not hung on
    lock_nolockdep();
  }
  // lockdep annotations (sync/lockdep.hpp): a fixed nesting of two locks of one class (the
  // inner one names its level, the kernel's spin_lock_nested), and many locks of one class
  // taken under one serialising lock (spin_lock_nest_lock).
  void lock_nested(unsigned subclass) {
    lockdep_acquire(cls_, this, false, subclass);
    lock_nolockdep();
  }
  template <class Outer>
  void lock_nest_lock(const Outer* nest) {
    lockdep_acquire(cls_, this, false, 0, nest);
    lock_nolockdep();
  }

  USLUB_ALWAYS_INLINE bool try_lock() {
    preempt_count_inc();
    std::uint32_t expected = 0;
    if (!state_.compare_exchange_strong(expected, 1, std::memory_order_acquire,
                                        std::memory_order_relaxed)) {
      preempt_count_dec();
      return false;
    }
    bump(acquired_);
    lockdep_acquire(cls_, this, true);
    if (USLUB_UNLIKELY(detail::g_lock_hold_on.load(std::memory_order_relaxed))) hold_begin();
    return true;
  }

  USLUB_ALWAYS_INLINE void unlock() {
    if (USLUB_UNLIKELY(hold_start_)) record_hold();
    lockdep_release(cls_, this);
    if (USLUB_UNLIKELY(state_.fetch_sub(1, std::memory_order_release) != 1)) unlock_slow();
    preempt_count_dec();
  }

  // The holder counts n units of work done in this hold (hold statistics; nothing when off).
  USLUB_ALWAYS_INLINE void hold_work(std::uint64_t n) {
    if (USLUB_UNLIKELY(hold_start_)) hold_work_ += n;
  }

  bool is_locked() const { return state_.load(std::memory_order_relaxed) != 0; }
  std::uint64_t acquisitions() const { return acquired_.load(std::memory_order_relaxed); }
  std::uint64_t contentions() const { return contended_.load(std::memory_order_relaxed); }
  const lock_class_key* lock_class() const { return cls_; }

 private:
  USLUB_ALWAYS_INLINE void lock_nolockdep() {
    preempt_count_inc();  // before: a waiter counts as a holder (preempt.hpp)
    std::uint32_t expected = 0;
    if (USLUB_UNLIKELY(!state_.compare_exchange_strong(expected, 1, std::memory_order_acquire,
                                                       std::memory_order_relaxed)))
      lock_slow();
    bump(acquired_);
    if (USLUB_UNLIKELY(detail::g_lock_hold_on.load(std::memory_order_relaxed))) hold_begin();
  }
  USLUB_SLOWPATH void lock_slow();
  // Counters are written only by the holder: a plain load+store, no locked instruction.
  static USLUB_ALWAYS_INLINE void bump(std::atomic<std::uint64_t>& c) {
    c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  USLUB_SLOWPATH void unlock_slow();
  USLUB_SLOWPATH void record_hold();
  USLUB_SLOWPATH void hold_begin();
  void lock_wait();

  std::atomic<std::uint32_t> state_{0};
  const lock_class_key* cls_ = nullptr;
  // Counters sit beside the state word: they are written only by the holder, on the line
  // the holder already owns.
  std::atomic<std::uint64_t> acquired_{0};
  std::atomic<std::uint64_t> contended_{0};
  // Holder only, hold statistics on: when it took the lock (wall, and thread CPU time when
  // measured, else 0) and the work it counted.
  std::uint64_t hold_start_ = 0;
  std::uint64_t hold_cpu_start_ = 0;
  std::uint64_t hold_work_ = 0;
};

// RAII guard (the kernel's guard(spinlock)).
template <class Lock>
class lock_guard {
 public:
  explicit lock_guard(Lock& l) : l_(l) { l_.lock(); }
  ~lock_guard() { l_.unlock(); }
  lock_guard(const lock_guard&) = delete;
  lock_guard& operator=(const lock_guard&) = delete;

 private:
  Lock& l_;
};

}  // namespace uslub
