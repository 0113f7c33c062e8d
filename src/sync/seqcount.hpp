// Sequence counts (include/linux/seqlock.h, seed 004): seqcount_t, the associated-lock family,
// seqlock_t and the latch.
//
// Protocol (Boehm, "Can seqlocks get along with programming language memory models?"):
//   writer: seq = s + 1 (odd, relaxed); fence(release); data stores (relaxed atomics);
//           seq = s + 2 (even, release).
//   reader: s1 = seq (acquire); data loads (relaxed atomics); fence(acquire); s2 = seq
//           (relaxed); the copy is good if s1 == s2 and s1 is even.
// The release fence after the odd store forbids data stores from moving above it (a reader
// that sees new data then sees an odd or newer count); the release store of the even count
// forbids them from moving below it.  The reader's acquire load forbids data loads from moving
// above the first count read; its acquire fence forbids them from moving below the second.
// Protected data must be read and written through seq_load/seq_store (word-wise relaxed
// atomics), so that the race a seqcount tolerates is not a data race in C++ and ThreadSanitizer
// stays quiet without suppressions.
//
// Associated locks (seqcount_LOCKNAME_t): the writer must hold the lock; with USLUB_LOCKDEP the
// begin of a write section asserts it (for uslub's spinlock_t), and the release build stores no
// lock pointer at all.  User-space writers can be preempted inside the write section (like
// PREEMPT_RT), so a reader that finds the count odd spins briefly and then takes and drops the
// associated lock, which makes it wait for the writer instead of burning its time slice.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <type_traits>

#include "base/compiler.hpp"
#include "base/report.hpp"
#include "sync/lockdep.hpp"
#include "sync/spinlock.hpp"

namespace uslub {

// ---- race-free copies of seqcount-protected data -----------------------------------------

template <class T>
USLUB_ALWAYS_INLINE void seq_load(T* dst, const T* src) {
  static_assert(std::is_trivially_copyable_v<T>);
  auto* d = reinterpret_cast<unsigned char*>(dst);
  auto* s = reinterpret_cast<const unsigned char*>(src);
  std::size_t i = 0;
  if (alignof(T) >= alignof(std::uint64_t))
    for (; i + 8 <= sizeof(T); i += 8) {
      std::uint64_t w =
          __atomic_load_n(reinterpret_cast<const std::uint64_t*>(s + i), __ATOMIC_RELAXED);
      memcpy(d + i, &w, 8);
    }
  for (; i < sizeof(T); ++i) d[i] = __atomic_load_n(s + i, __ATOMIC_RELAXED);
}

template <class T>
USLUB_ALWAYS_INLINE void seq_store(T* dst, const T* src) {
  static_assert(std::is_trivially_copyable_v<T>);
  auto* d = reinterpret_cast<unsigned char*>(dst);
  auto* s = reinterpret_cast<const unsigned char*>(src);
  std::size_t i = 0;
  if (alignof(T) >= alignof(std::uint64_t))
    for (; i + 8 <= sizeof(T); i += 8) {
      std::uint64_t w;
      memcpy(&w, s + i, 8);
      __atomic_store_n(reinterpret_cast<std::uint64_t*>(d + i), w, __ATOMIC_RELAXED);
    }
  for (; i < sizeof(T); ++i) __atomic_store_n(d + i, s[i], __ATOMIC_RELAXED);
}

// ---- seqcount_t ---------------------------------------------------------------------------

class seqcount_t {
 public:
  constexpr seqcount_t() = default;

  unsigned raw_read_seqcount() const { return seq_.load(std::memory_order_acquire); }

  // Waits (spinning) for an even count.  Plain seqcount_t has no lock to wait on.
  unsigned read_seqcount_begin() const {
    for (;;) {
      unsigned s = seq_.load(std::memory_order_acquire);
      if (USLUB_LIKELY(!(s & 1))) return s;
      cpu_relax();
    }
  }

  bool read_seqcount_retry(unsigned start) const {
    std::atomic_thread_fence(std::memory_order_acquire);  // data loads stay above
    return seq_.load(std::memory_order_relaxed) != start;
  }

  void raw_write_seqcount_begin() {
    seq_.store(seq_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);  // data stores stay below
  }
  void raw_write_seqcount_end() {
    seq_.store(seq_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  }
  void write_seqcount_begin() { raw_write_seqcount_begin(); }
  void write_seqcount_end() { raw_write_seqcount_end(); }

  // The latch (raw_write_seqcount_latch): each call flips which copy readers use.
  void raw_write_seqcount_latch() {
    std::atomic_thread_fence(std::memory_order_release);  // earlier copy's stores first
    seq_.store(seq_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);  // then the other copy's stores
  }
  unsigned read_seqcount_latch() const { return seq_.load(std::memory_order_acquire); }
  bool read_seqcount_latch_retry(unsigned start) const { return read_seqcount_retry(start); }

 private:
  std::atomic<unsigned> seq_{0};
};

// ---- associated locks ---------------------------------------------------------------------

template <class Lock>
struct seqcount_lock_traits {
  static void reader_wait(Lock& l) {
    l.lock();
    l.unlock();
  }
  static bool held(const Lock&) { return true; }  // not checkable for foreign lock types
};
template <>
struct seqcount_lock_traits<std::shared_mutex> {
  static void reader_wait(std::shared_mutex& l) {
    l.lock_shared();
    l.unlock_shared();
  }
  static bool held(const std::shared_mutex&) { return true; }
};
#if USLUB_LOCKDEP
template <>
struct seqcount_lock_traits<spinlock_t> {
  static void reader_wait(spinlock_t& l) {
    l.lock();
    l.unlock();
  }
  static bool held(const spinlock_t& l) { return lockdep_is_held(&l); }
};
#endif

inline constexpr int kSeqcountReaderSpins = 128;

template <class Lock>
class seqcount_LOCKNAME_t {
 public:
  // The lock is kept in every build: the reader's fallback waits on it.  Only the writer's
  // assertion (lockdep builds) is debug-only.
  explicit seqcount_LOCKNAME_t(Lock* lock) : lock_(lock) {}

  unsigned raw_read_seqcount() const { return s_.raw_read_seqcount(); }

  unsigned read_seqcount_begin() const {
    for (int spins = 0;; ++spins) {
      unsigned s = s_.raw_read_seqcount();
      if (USLUB_LIKELY(!(s & 1))) return s;
      if (spins < kSeqcountReaderSpins) {
        cpu_relax();
        continue;
      }
      // The writer may be preempted: wait for it on its lock instead of spinning.
      lock_fallbacks_.fetch_add(1, std::memory_order_relaxed);
      seqcount_lock_traits<Lock>::reader_wait(*lock_);
      spins = 0;
    }
  }
  bool read_seqcount_retry(unsigned start) const { return s_.read_seqcount_retry(start); }

  void write_seqcount_begin() {
#if USLUB_LOCKDEP
    if (!seqcount_lock_traits<Lock>::held(*lock_))
      report_bug("lockdep", "lock not held",
                 "write_seqcount_begin: the associated lock %p is not held\n",
                 static_cast<const void*>(lock_));
#endif
    s_.raw_write_seqcount_begin();
  }
  void write_seqcount_end() {
    s_.raw_write_seqcount_end();
  }

  Lock* lock() const {
    return lock_;
  }
  // Readers that had to wait on the lock (a statistic for tests and benchmarks).
  std::uint64_t lock_fallbacks() const {
    return lock_fallbacks_.load(std::memory_order_relaxed);
  }

 private:
  seqcount_t s_;
  Lock* lock_;
  mutable std::atomic<std::uint64_t> lock_fallbacks_{0};
};

using seqcount_spinlock_t = seqcount_LOCKNAME_t<spinlock_t>;
using seqcount_mutex_t = seqcount_LOCKNAME_t<std::mutex>;
using seqcount_rwlock_t = seqcount_LOCKNAME_t<std::shared_mutex>;

// ---- seqlock_t: a seqcount with its own spinlock ------------------------------------------

class seqlock_t {
 public:
  seqlock_t() : seq_(&lock_) {}

  unsigned read_seqbegin() const { return seq_.read_seqcount_begin(); }
  bool read_seqretry(unsigned start) const { return seq_.read_seqcount_retry(start); }

  void write_seqlock() {
    lock_.lock();
    seq_.write_seqcount_begin();
  }
  void write_sequnlock() {
    seq_.write_seqcount_end();
    lock_.unlock();
  }
  // Exclusive readers (they block writers and each other).
  void read_seqlock_excl() { lock_.lock(); }
  void read_sequnlock_excl() { lock_.unlock(); }

  // read_seqbegin_or_lock: the first pass (*seq even) is lockless; a caller that must retry
  // sets *seq odd (need_seqretry) and the next pass takes the lock.
  void read_seqbegin_or_lock(int* seq) {
    if (!(*seq & 1))
      *seq = static_cast<int>(read_seqbegin());
    else
      read_seqlock_excl();
  }
  bool need_seqretry(int seq) const {
    return !(seq & 1) && read_seqretry(static_cast<unsigned>(seq));
  }
  void done_seqretry(int seq) {
    if (seq & 1) read_sequnlock_excl();
  }

  const seqcount_spinlock_t& seqcount() const { return seq_; }

 private:
  spinlock_t lock_;
  seqcount_spinlock_t seq_;
};

// ---- latch ----------------------------------------------------------------------------------

// Two copies of T; writers (serialised by the caller) update copy 0 then copy 1 around latch
// flips, readers never wait: they read the copy the count's low bit names and retry if the
// count moved.
template <class T>
class seqcount_latch_t {
 public:
  template <class Fn>
  void write_seqcount_latch(Fn&& update) {
    seq_.raw_write_seqcount_latch();  // readers move to copy 1
    T v;
    seq_load(&v, &data_[0]);
    update(v);
    seq_store(&data_[0], &v);
    seq_.raw_write_seqcount_latch();  // readers move to copy 0
    seq_store(&data_[1], &v);
  }
  T read() const {
    for (;;) {
      unsigned s = seq_.read_seqcount_latch();
      T v;
      seq_load(&v, &data_[s & 1]);
      if (!seq_.read_seqcount_latch_retry(s)) return v;
    }
  }

 private:
  seqcount_t seq_;
  T data_[2]{};
};

}  // namespace uslub
