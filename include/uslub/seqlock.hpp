// Sequence counts (the kernel's include/linux/seqlock.h, seed 004) for user space:
//   seqcount_t                          the bare counter; writers serialised by the caller
//   seqcount_LOCKNAME_t<Lock>           a counter associated with the lock its writers hold
//     seqcount_mutex_t, seqcount_rwlock_t   (std::mutex, std::shared_mutex)
//   basic_seqlock<Lock>                 a counter with its own writer lock (seqlock_t)
//   seqcount_latch_t<T>                 two copies of T: readers never wait (the latch)
//   seq_load / seq_store                race-free copies of the protected data
// src/sync/seqcount.hpp adds uslub's own flavours over spinlock_t (seqcount_spinlock_t,
// seqlock_t) with lockdep checking; this header depends on the standard library only.
//
// Protocol (Boehm, "Can seqlocks get along with programming language memory models?", 2012):
//   writer: seq = s + 1 (odd, relaxed); fence(release); data stores (relaxed atomics);
//           seq = s + 2 (even, release)
//   reader: s1 = seq (acquire); data loads (relaxed atomics); fence(acquire); s2 = seq
//           (relaxed); the copy is good if s1 == s2 and s1 is even.
// Why this is enough: a reader whose data loads saw any store of a write section has, through
// the writer's release fence and its own acquire fence, the odd count happen-before its second
// count read, so s2 != s1.  A reader whose first count read saw the even count that ended a
// section has every store of that section happen-before its data loads (release store ->
// acquire load), so it sees them all.  Each fence below says which reordering it forbids.
//
// Protected data is read and written only through seq_load/seq_store: word-wise relaxed atomic
// accesses (__atomic builtins on may_alias words), so the race a seqcount tolerates by design is
// not a data race in C++ and ThreadSanitizer needs no suppressions.  TSan does not model fences
// (and GCC warns, -Wtsan), so in TSan builds those accesses become acquire loads and release
// stores, which imply the fences' ordering in a form TSan understands.
//
// Readers and preempted writers (user space is PREEMPT_RT).  A kernel writer runs with
// preemption off, so a reader that sees an odd count spins for a few hundred nanoseconds at
// most.  Here the writer can be descheduled inside its section for a whole time slice, and a
// reader spinning on the odd count would burn its own slice (or, with priorities, never let the
// writer run).  So, as in PREEMPT_RT's seqprop_sequence(), a reader of a seqcount with an
// associated lock spins kSeqcountReaderSpins times and then takes and releases that lock (a
// shared lock for seqcount_rwlock_t): it sleeps until the writer leaves its section, and retries.
// This needs the lock's address at run time, so seqcount_LOCKNAME_t keeps a pointer in every
// build, as the kernel does under PREEMPT_RT.  seqcount_LOCKNAME_t<Lock, seqcount_wait::yield>
// is the non-RT layout: without USLUB_LOCKDEP it is exactly a seqcount_t (static_assert below)
// and its reader spins and then sched_yield()s instead.  A plain seqcount_t has no lock: its
// readers yield too.
//
// Associated-lock checking: with USLUB_LOCKDEP, write_seqcount_begin() asserts that the caller
// holds the lock through seqcount_lock_traits<Lock>::assert_held (lockdep_assert_held for
// uslub's locks; std::mutex cannot be asked who holds it, so there it checks nothing).
#pragma once

#include <sched.h>

#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <type_traits>
#include <utility>

#if defined(__SANITIZE_THREAD__)
#define USLUB_SEQ_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define USLUB_SEQ_TSAN 1
#endif
#endif
#ifndef USLUB_SEQ_TSAN
#define USLUB_SEQ_TSAN 0
#endif

#if defined(USLUB_LOCKDEP) && USLUB_LOCKDEP
#define USLUB_SEQ_LOCKDEP 1
#else
#define USLUB_SEQ_LOCKDEP 0
#endif

namespace uslub {

// Spins on an odd count before a reader waits on the writer's lock (or yields).  About 128
// pause instructions: longer than an unpreempted write section, short against a time slice.
inline constexpr int kSeqcountReaderSpins = 128;

// Readers that had to wait on an associated lock (all seqcounts; a statistic for tests).
inline std::atomic<unsigned long> seqcount_reader_lock_waits{0};

namespace seq_detail {

inline void relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

#if USLUB_SEQ_TSAN
inline constexpr int kDataLoad = __ATOMIC_ACQUIRE;   // see the header comment: TSan
inline constexpr int kDataStore = __ATOMIC_RELEASE;  // does not model the fences
inline void fence_acquire() {}
inline void fence_release() {}
#else
inline constexpr int kDataLoad = __ATOMIC_RELAXED;
inline constexpr int kDataStore = __ATOMIC_RELAXED;
inline void fence_acquire() {
  std::atomic_thread_fence(std::memory_order_acquire);
}
inline void fence_release() {
  std::atomic_thread_fence(std::memory_order_release);
}
#endif

// Words that may alias any object (like the kernel's READ_ONCE on an arbitrary type).
using w64 = std::uint64_t __attribute__((may_alias));
using w32 = std::uint32_t __attribute__((may_alias));
using w16 = std::uint16_t __attribute__((may_alias));
using w8 = std::uint8_t __attribute__((may_alias));

template <class W>
inline void copy_words(void* dst, const void* src, std::size_t n, bool to_shared) {
  auto* d = static_cast<W*>(dst);
  auto* s = static_cast<const W*>(src);
  for (std::size_t i = 0; i < n / sizeof(W); ++i) {
    if (to_shared)
      __atomic_store_n(&d[i], s[i], kDataStore);
    else
      d[i] = __atomic_load_n(&s[i], kDataLoad);
  }
}

template <class T>
inline void copy(T* dst, const T* src, bool to_shared) {
  static_assert(std::is_trivially_copyable_v<T>, "seqcount-protected data is copied word-wise");
  // Words as wide as T's alignment guarantees (every word is then naturally aligned).
  if constexpr (alignof(T) >= 8)
    copy_words<w64>(dst, src, sizeof(T), to_shared);
  else if constexpr (alignof(T) >= 4)
    copy_words<w32>(dst, src, sizeof(T), to_shared);
  else if constexpr (alignof(T) >= 2)
    copy_words<w16>(dst, src, sizeof(T), to_shared);
  else
    copy_words<w8>(dst, src, sizeof(T), to_shared);
}

}  // namespace seq_detail

// Reader side: *dst = *src, where *src is seqcount-protected shared data (relaxed atomics).
template <class T>
inline void seq_load(T* dst, const T* src) {
  seq_detail::copy(dst, src, false);
}
template <class T>
inline T seq_load(const T* src) {
  T v;
  seq_detail::copy(&v, src, false);
  return v;
}
// Writer side: *dst = *src, where *dst is the shared data (relaxed atomics).
template <class T>
inline void seq_store(T* dst, const T* src) {
  seq_detail::copy(dst, src, true);
}
template <class T>
inline void seq_store(T* dst, const T& v) {
  seq_detail::copy(dst, &v, true);
}

// ---- seqcount_t ------------------------------------------------------------------------------

class seqcount_t {
 public:
  constexpr seqcount_t() = default;
  seqcount_t(const seqcount_t&) = delete;
  seqcount_t& operator=(const seqcount_t&) = delete;

  // The count, odd while a writer is inside (no waiting).
  unsigned raw_read_seqcount() const {
    // acquire: the data loads that follow cannot move above this load, and a count that ended
    // a write section brings that section's stores with it.
    return sequence_.load(std::memory_order_acquire);
  }

  // Start of a read section: an even count.  No lock to wait on: spins, then yields.
  unsigned read_seqcount_begin() const {
    unsigned s = raw_read_seqcount();
    if (__builtin_expect(!(s & 1), 1)) return s;
    return wait_even(nullptr, nullptr);
  }
  unsigned raw_read_seqcount_begin() const { return read_seqcount_begin(); }

  // Start of a read section that gives up instead of waiting (kernel raw_seqcount_try_begin).
  bool raw_seqcount_try_begin(unsigned* start) const {
    *start = raw_read_seqcount();
    return !(*start & 1);
  }

  // End of a read section: true if the copy must be thrown away and the section retried.
  bool read_seqcount_retry(unsigned start) const {
    // acquire fence: the data loads above cannot move below the count load that follows; and
    // if they saw a writer's store, that writer's odd count is visible to the load.
    seq_detail::fence_acquire();
    return sequence_.load(std::memory_order_relaxed) != start;
  }

  // Writers (serialised by the caller).
  void raw_write_seqcount_begin() {
    sequence_.store(sequence_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    // release fence: the odd count cannot move below the data stores that follow (a reader
    // that sees any of them then sees the odd count or a later one).
    seq_detail::fence_release();
  }
  void raw_write_seqcount_end() {
    // release: the data stores above cannot move below the even count.
    sequence_.store(sequence_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  }
  void write_seqcount_begin() { raw_write_seqcount_begin(); }
  void write_seqcount_end() { raw_write_seqcount_end(); }

  // Makes every reader in flight retry, without a write section (kernel
  // write_seqcount_invalidate: the count moves by 2, staying even).
  void write_seqcount_invalidate() {
    // release fence: stores made before the invalidation cannot move below the count store.
    seq_detail::fence_release();
    sequence_.store(sequence_.load(std::memory_order_relaxed) + 2, std::memory_order_release);
  }

  // Spins kSeqcountReaderSpins times on an odd count, then calls wait(lock) (or yields when
  // wait is null) and retries; returns the first even count.
  using wait_fn = void (*)(void*);
  __attribute__((noinline, cold)) unsigned wait_even(wait_fn wait, void* lock) const {
    for (;;) {
      for (int i = 0; i < kSeqcountReaderSpins; ++i) {
        unsigned s = raw_read_seqcount();
        if (!(s & 1)) return s;
        seq_detail::relax();
      }
      if (wait) {
        seqcount_reader_lock_waits.fetch_add(1, std::memory_order_relaxed);
        wait(lock);  // sleeps until the writer (holding the lock) leaves its section
      } else {
        sched_yield();
      }
    }
  }

 private:
  std::atomic<unsigned> sequence_{0};
};

// ---- associated locks ------------------------------------------------------------------------

// How a lock type serves a seqcount: reader_wait() blocks until no writer holds it;
// assert_held() reports a writer that does not hold it (lockdep builds; nothing if the lock
// type cannot tell).  Specialise for other lock types.
template <class Lock>
struct seqcount_lock_traits {
  static void reader_wait(Lock& l) {
    l.lock();
    l.unlock();
  }
  static void assert_held(const Lock&) {}
};
template <>
struct seqcount_lock_traits<std::shared_mutex> {
  static void reader_wait(std::shared_mutex& l) {  // readers do not exclude each other
    l.lock_shared();
    l.unlock_shared();
  }
  static void assert_held(const std::shared_mutex&) {}
};

enum class seqcount_wait : unsigned char {
  lock,   // spin, then wait on the associated lock (PREEMPT_RT; the default)
  yield,  // spin, then sched_yield(); no lock pointer in release builds (non-RT layout)
};

namespace seq_detail {
template <class Lock, bool Keep>
struct lock_ref {
  constexpr explicit lock_ref(Lock* l) : lock(l) {}
  Lock* get() const { return lock; }
  Lock* lock;
};
template <class Lock>
struct lock_ref<Lock, false> {
  constexpr explicit lock_ref(Lock*) {}
  Lock* get() const { return nullptr; }
};
}  // namespace seq_detail

template <class Lock, seqcount_wait Wait = seqcount_wait::lock>
class seqcount_LOCKNAME_t {
  static constexpr bool kKeepLock = Wait == seqcount_wait::lock || USLUB_SEQ_LOCKDEP;

 public:
  using lock_type = Lock;
  constexpr explicit seqcount_LOCKNAME_t(Lock* lock) : lock_(lock) {}
  seqcount_LOCKNAME_t(const seqcount_LOCKNAME_t&) = delete;
  seqcount_LOCKNAME_t& operator=(const seqcount_LOCKNAME_t&) = delete;

  unsigned raw_read_seqcount() const { return s_.raw_read_seqcount(); }

  unsigned read_seqcount_begin() const {
    unsigned s = s_.raw_read_seqcount();
    if (__builtin_expect(!(s & 1), 1)) return s;
    if constexpr (Wait == seqcount_wait::lock)
      return s_.wait_even(&reader_wait, lock_.get());
    else
      return s_.wait_even(nullptr, nullptr);
  }
  unsigned raw_read_seqcount_begin() const { return read_seqcount_begin(); }
  bool raw_seqcount_try_begin(unsigned* start) const { return s_.raw_seqcount_try_begin(start); }
  bool read_seqcount_retry(unsigned start) const { return s_.read_seqcount_retry(start); }

  // Context: the caller holds the associated lock (asserted with USLUB_LOCKDEP).
  void write_seqcount_begin() {
#if USLUB_SEQ_LOCKDEP
    seqcount_lock_traits<Lock>::assert_held(*lock_.get());
#endif
    s_.raw_write_seqcount_begin();
  }
  void write_seqcount_end() {
    s_.raw_write_seqcount_end();
  }
  void raw_write_seqcount_begin() {
    s_.raw_write_seqcount_begin();
  }
  void raw_write_seqcount_end() {
    s_.raw_write_seqcount_end();
  }
  void write_seqcount_invalidate() {
    s_.write_seqcount_invalidate();
  }

  // The associated lock (nullptr in the yield layout of release builds).
  Lock* lock() const {
    return lock_.get();
  }

 private:
  static void reader_wait(void* l) {
    seqcount_lock_traits<Lock>::reader_wait(*static_cast<Lock*>(l));
  }

  seqcount_t s_;
  [[no_unique_address]] seq_detail::lock_ref<Lock, kKeepLock> lock_;
};

using seqcount_mutex_t = seqcount_LOCKNAME_t<std::mutex>;
using seqcount_rwlock_t = seqcount_LOCKNAME_t<std::shared_mutex>;

#if !USLUB_SEQ_LOCKDEP
// Release builds: the association itself costs nothing (the non-RT layout is a bare counter);
// the RT layout adds exactly the lock pointer its readers wait on.
static_assert(sizeof(seqcount_LOCKNAME_t<std::mutex, seqcount_wait::yield>) == sizeof(seqcount_t));
static_assert(sizeof(seqcount_mutex_t) == 2 * sizeof(void*));  // count (padded) + lock pointer
#endif

// ---- seqlock_t: a seqcount with its own writer lock ------------------------------------------

template <class Lock>
class basic_seqlock {
 public:
  using lock_type = Lock;
  template <class... Args>
  constexpr explicit basic_seqlock(Args&&... args) : lock_(std::forward<Args>(args)...) {}
  basic_seqlock(const basic_seqlock&) = delete;
  basic_seqlock& operator=(const basic_seqlock&) = delete;

  // Lockless readers; a reader facing a writer mid-section waits on lock_ (see above).
  unsigned read_seqbegin() const {
    unsigned s = seq_.raw_read_seqcount();
    if (__builtin_expect(!(s & 1), 1)) return s;
    return seq_.wait_even(&reader_wait, &lock_);
  }
  bool read_seqretry(unsigned start) const { return seq_.read_seqcount_retry(start); }

  void write_seqlock() {
    lock_.lock();
    seq_.raw_write_seqcount_begin();
  }
  void write_sequnlock() {
    seq_.raw_write_seqcount_end();
    lock_.unlock();
  }

  // Locking readers: exclude writers and each other, never retry.
  void read_seqlock_excl() { lock_.lock(); }
  void read_sequnlock_excl() { lock_.unlock(); }

  // One lockless pass, then (if it must retry) a locked one:
  //   int seq = 0;
  //   again: read_seqbegin_or_lock(&seq); ...read...;
  //   if (need_seqretry(seq)) { seq = 1; goto again; }
  //   done_seqretry(seq);
  void read_seqbegin_or_lock(int* seq) {
    if (!(*seq & 1))  // even: lockless
      *seq = static_cast<int>(read_seqbegin());
    else  // odd: locked
      read_seqlock_excl();
  }
  bool need_seqretry(int seq) const {
    return !(seq & 1) && read_seqretry(static_cast<unsigned>(seq));
  }
  void done_seqretry(int seq) {
    if (seq & 1) read_sequnlock_excl();
  }

  Lock& lock() { return lock_; }
  const seqcount_t& seqcount() const { return seq_; }

 private:
  static void reader_wait(void* l) {
    seqcount_lock_traits<Lock>::reader_wait(*static_cast<Lock*>(l));
  }

  mutable Lock lock_;  // readers only take and drop it, to wait for a writer
  seqcount_t seq_;
};

// ---- the latch -------------------------------------------------------------------------------

// seqcount_latch_t<>: the latch counter alone (kernel API); the caller keeps data[2].
//   writer (serialised by the caller):
//     write_seqcount_latch_begin();  modify data[0];   // readers are on data[1]
//     write_seqcount_latch();        modify data[1];   // readers are on data[0]
//     write_seqcount_latch_end();
//   reader (never waits, even while a writer is preempted):
//     do { s = read_seqcount_latch(); copy data[s & 1]; } while (read_seqcount_latch_retry(s));
// seqcount_latch_t<T>: the counter with the two copies and write()/read() helpers.
template <class T = void>
class seqcount_latch_t;

template <>
class seqcount_latch_t<void> {
 public:
  constexpr seqcount_latch_t() = default;
  seqcount_latch_t(const seqcount_latch_t&) = delete;
  seqcount_latch_t& operator=(const seqcount_latch_t&) = delete;

  unsigned raw_read_seqcount_latch() const {
    // acquire: the copy's loads cannot move above; the flip brings the copy's last update.
    return sequence_.load(std::memory_order_acquire);
  }
  unsigned read_seqcount_latch() const { return raw_read_seqcount_latch(); }
  bool raw_read_seqcount_latch_retry(unsigned start) const {
    // acquire fence: the copy's loads cannot move below the count load; if they saw a store
    // made after a later flip, that flip is visible to it.
    seq_detail::fence_acquire();
    return sequence_.load(std::memory_order_relaxed) != start;
  }
  bool read_seqcount_latch_retry(unsigned start) const {
    return raw_read_seqcount_latch_retry(start);
  }

  // Flips readers to the other copy.
  void raw_write_seqcount_latch() {
    // release (store): the stores to the copy readers are moving to cannot move below the flip.
    sequence_.store(sequence_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    // release fence: the flip cannot move below the stores to the copy readers just left.
    seq_detail::fence_release();
  }
  void write_seqcount_latch_begin() { raw_write_seqcount_latch(); }
  void write_seqcount_latch() { raw_write_seqcount_latch(); }
  void write_seqcount_latch_end() {}

 private:
  std::atomic<unsigned> sequence_{0};
};

template <class T>
class seqcount_latch_t : public seqcount_latch_t<void> {
  static_assert(std::is_trivially_copyable_v<T>);

 public:
  constexpr seqcount_latch_t() = default;
  explicit seqcount_latch_t(const T& v) : data_{v, v} {}

  // Writers must be serialised by the caller.  update(T&) edits a copy of the current value;
  // the result is stored into data[0] while readers use data[1], then into data[1].
  template <class Fn>
  void write(Fn&& update) {
    T v;
    seq_load(&v, &data_[0]);  // both copies hold the current value between writes
    update(v);
    write_seqcount_latch_begin();
    seq_store(&data_[0], &v);
    write_seqcount_latch();
    seq_store(&data_[1], &v);
    write_seqcount_latch_end();
  }
  void write_value(const T& v) {
    write([&](T& x) { x = v; });
  }

  // Never waits: retries only if a writer flipped during the copy.
  T read() const {
    for (;;) {
      unsigned s = read_seqcount_latch();
      T v;
      seq_load(&v, &data_[s & 1]);
      if (!read_seqcount_latch_retry(s)) return v;
    }
  }

  // For the kernel-style loop above (data(s & 1)); access through seq_load/seq_store.
  const T* data(unsigned idx) const { return &data_[idx & 1]; }
  T* data(unsigned idx) { return &data_[idx & 1]; }

 private:
  T data_[2]{};
};

// ---- the kernel's free functions -------------------------------------------------------------

template <class S>
concept seqcount_type = requires(const S& s, unsigned u) {
  { s.read_seqcount_begin() } -> std::same_as<unsigned>;
  { s.read_seqcount_retry(u) } -> std::same_as<bool>;
};

template <seqcount_type S>
inline unsigned raw_read_seqcount(const S* s) {
  return s->raw_read_seqcount();
}
template <seqcount_type S>
inline unsigned read_seqcount_begin(const S* s) {
  return s->read_seqcount_begin();
}
template <seqcount_type S>
inline unsigned raw_read_seqcount_begin(const S* s) {
  return s->raw_read_seqcount_begin();
}
template <seqcount_type S>
inline bool raw_seqcount_try_begin(const S* s, unsigned* start) {
  return s->raw_seqcount_try_begin(start);
}
template <seqcount_type S>
inline bool read_seqcount_retry(const S* s, unsigned start) {
  return s->read_seqcount_retry(start);
}
template <seqcount_type S>
inline void write_seqcount_begin(S* s) {
  s->write_seqcount_begin();
}
template <seqcount_type S>
inline void write_seqcount_end(S* s) {
  s->write_seqcount_end();
}
template <seqcount_type S>
inline void raw_write_seqcount_begin(S* s) {
  s->raw_write_seqcount_begin();
}
template <seqcount_type S>
inline void raw_write_seqcount_end(S* s) {
  s->raw_write_seqcount_end();
}
template <seqcount_type S>
inline void write_seqcount_invalidate(S* s) {
  s->write_seqcount_invalidate();
}

template <class L>
inline unsigned read_seqbegin(const basic_seqlock<L>* sl) {
  return sl->read_seqbegin();
}
template <class L>
inline bool read_seqretry(const basic_seqlock<L>* sl, unsigned start) {
  return sl->read_seqretry(start);
}
template <class L>
inline void write_seqlock(basic_seqlock<L>* sl) {
  sl->write_seqlock();
}
template <class L>
inline void write_sequnlock(basic_seqlock<L>* sl) {
  sl->write_sequnlock();
}
template <class L>
inline void read_seqlock_excl(basic_seqlock<L>* sl) {
  sl->read_seqlock_excl();
}
template <class L>
inline void read_sequnlock_excl(basic_seqlock<L>* sl) {
  sl->read_sequnlock_excl();
}
template <class L>
inline void read_seqbegin_or_lock(basic_seqlock<L>* sl, int* seq) {
  sl->read_seqbegin_or_lock(seq);
}
template <class L>
inline bool need_seqretry(const basic_seqlock<L>* sl, int seq) {
  return sl->need_seqretry(seq);
}
template <class L>
inline void done_seqretry(basic_seqlock<L>* sl, int seq) {
  sl->done_seqretry(seq);
}

template <class T>
inline unsigned raw_read_seqcount_latch(const seqcount_latch_t<T>* s) {
  return s->raw_read_seqcount_latch();
}
template <class T>
inline unsigned read_seqcount_latch(const seqcount_latch_t<T>* s) {
  return s->read_seqcount_latch();
}
template <class T>
inline bool raw_read_seqcount_latch_retry(const seqcount_latch_t<T>* s, unsigned start) {
  return s->raw_read_seqcount_latch_retry(start);
}
template <class T>
inline bool read_seqcount_latch_retry(const seqcount_latch_t<T>* s, unsigned start) {
  return s->read_seqcount_latch_retry(start);
}
template <class T>
inline void raw_write_seqcount_latch(seqcount_latch_t<T>* s) {
  s->raw_write_seqcount_latch();
}
template <class T>
inline void write_seqcount_latch_begin(seqcount_latch_t<T>* s) {
  s->write_seqcount_latch_begin();
}
template <class T>
inline void write_seqcount_latch(seqcount_latch_t<T>* s) {
  s->write_seqcount_latch();
}
template <class T>
inline void write_seqcount_latch_end(seqcount_latch_t<T>* s) {
  s->write_seqcount_latch_end();
}

}  // namespace uslub
