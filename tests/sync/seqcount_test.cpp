// Seqcounts: a reader facing a preempted writer sleeps on the associated lock instead of
// spinning; latch readers never wait; seqlock_t's lock-or-retry reader; writers without the
// lock are caught in lockdep builds; the kernel-style free functions; word-wise copies.
#include "sync/seqcount.hpp"

#include <gtest/gtest.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <vector>

#include "test_support.hpp"

namespace uslub::test {
namespace {

using namespace std::chrono_literals;

struct payload {
  std::uint64_t a[8];
  bool consistent() const {
    for (int i = 1; i < 8; ++i)
      if (a[i] != a[0] + static_cast<std::uint64_t>(i)) return false;
    return true;
  }
  static payload make(std::uint64_t base) {
    payload p;
    for (int i = 0; i < 8; ++i) p.a[i] = base + static_cast<std::uint64_t>(i);
    return p;
  }
};

double thread_cpu_ms() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

// A writer that is "preempted" (sleeps 200 ms) inside its write section; the reader must
// finish through the lock path, having slept rather than spun.
template <class Seq, class Lock>
void reader_waits_for_preempted_writer(Seq& seq, Lock& lock) {
  payload shared = payload::make(0);
  std::atomic<int> phase{0};
  std::thread writer([&] {
    lock.lock();
    seq.write_seqcount_begin();
    payload half = payload::make(1);
    half.a[7] = 0;  // torn on purpose: must never be accepted
    seq_store(&shared, &half);
    phase = 1;
    std::this_thread::sleep_for(200ms);
    seq_store(&shared, payload::make(100));
    seq.write_seqcount_end();
    lock.unlock();
  });
  while (phase.load() != 1) std::this_thread::yield();
  unsigned long waits = seqcount_reader_lock_waits.load();
  double cpu0 = thread_cpu_ms();
  auto t0 = std::chrono::steady_clock::now();
  payload p;
  unsigned s;
  do {
    s = read_seqcount_begin(&seq);
    seq_load(&p, &shared);
  } while (read_seqcount_retry(&seq, s));
  auto waited = std::chrono::steady_clock::now() - t0;
  double cpu = thread_cpu_ms() - cpu0;
  writer.join();
  EXPECT_TRUE(p.consistent());
  EXPECT_EQ(p.a[0], 100u);
  EXPECT_GE(seqcount_reader_lock_waits.load() - waits, 1u) << "the reader did not take the lock";
  EXPECT_GT(waited, 100ms);
  EXPECT_LT(cpu, 50.0) << "the reader spun instead of sleeping on the lock";
}

}  // namespace

TEST(Seqcount, ReaderWaitsOnTheSpinlockOfAPreemptedWriter) {
  spinlock_t lock;
  seqcount_spinlock_t seq(&lock);
  reader_waits_for_preempted_writer(seq, lock);
}

TEST(Seqcount, ReaderWaitsOnTheMutexOfAPreemptedWriter) {
  std::mutex lock;
  seqcount_mutex_t seq(&lock);
  reader_waits_for_preempted_writer(seq, lock);
}

TEST(Seqcount, ReaderWaitsOnTheRwlockOfAPreemptedWriter) {
  std::shared_mutex lock;
  seqcount_rwlock_t seq(&lock);
  reader_waits_for_preempted_writer(seq, lock);
}

TEST(Seqcount, SeqlockReaderWaitsOnItsOwnLock) {
  seqlock_t sl;
  payload shared = payload::make(0);
  std::atomic<int> phase{0};
  std::thread writer([&] {
    write_seqlock(&sl);
    phase = 1;
    std::this_thread::sleep_for(150ms);
    seq_store(&shared, payload::make(7));
    write_sequnlock(&sl);
  });
  while (phase.load() != 1) std::this_thread::yield();
  unsigned long waits = seqcount_reader_lock_waits.load();
  payload p;
  unsigned s;
  do {
    s = read_seqbegin(&sl);
    seq_load(&p, &shared);
  } while (read_seqretry(&sl, s));
  writer.join();
  EXPECT_EQ(p.a[0], 7u);
  EXPECT_GE(seqcount_reader_lock_waits.load() - waits, 1u);
}

TEST(Seqcount, YieldLayoutIsABareCounterInReleaseBuilds) {
  using yield_seq = seqcount_LOCKNAME_t<spinlock_t, seqcount_wait::yield>;
#if USLUB_LOCKDEP
  EXPECT_EQ(sizeof(yield_seq), sizeof(seqcount_spinlock_t)) << "lockdep keeps the lock pointer";
#else
  EXPECT_EQ(sizeof(yield_seq), sizeof(seqcount_t));
  EXPECT_EQ(sizeof(seqcount_spinlock_t), 2 * sizeof(void*));
#endif
  // Its reader yields instead of taking the lock, and still gets a whole copy.
  spinlock_t lock;
  yield_seq seq(&lock);
  payload shared = payload::make(0);
  std::atomic<int> phase{0};
  std::thread writer([&] {
    lock.lock();
    seq.write_seqcount_begin();
    phase = 1;
    std::this_thread::sleep_for(30ms);
    seq_store(&shared, payload::make(3));
    seq.write_seqcount_end();
    lock.unlock();
  });
  while (phase.load() != 1) std::this_thread::yield();
  unsigned long waits = seqcount_reader_lock_waits.load();
  payload p;
  unsigned s;
  do {
    s = seq.read_seqcount_begin();
    seq_load(&p, &shared);
  } while (seq.read_seqcount_retry(s));
  writer.join();
  EXPECT_EQ(p.a[0], 3u);
  EXPECT_EQ(seqcount_reader_lock_waits.load(), waits);
}

TEST(Seqcount, RetryAfterAnyWriteAndTryBeginRefusesAnOddCount) {
  seqcount_t seq;
  unsigned s = read_seqcount_begin(&seq);
  EXPECT_FALSE(read_seqcount_retry(&seq, s));
  write_seqcount_begin(&seq);
  unsigned t;
  EXPECT_FALSE(raw_seqcount_try_begin(&seq, &t));
  EXPECT_EQ(raw_read_seqcount(&seq) & 1, 1u);
  write_seqcount_end(&seq);
  EXPECT_TRUE(read_seqcount_retry(&seq, s));
  s = read_seqcount_begin(&seq);
  write_seqcount_invalidate(&seq);
  EXPECT_TRUE(read_seqcount_retry(&seq, s));
  EXPECT_EQ(raw_read_seqcount(&seq) & 1, 0u);
}

TEST(Seqlock, ReadSeqbeginOrLockTakesTheLockOnTheSecondPass) {
  seqlock_t sl;
  payload data = payload::make(5);
  int seq = 0;
  int passes = 0;
  for (;;) {
    read_seqbegin_or_lock(&sl, &seq);
    payload p = seq_load(&data);
    EXPECT_TRUE(p.consistent());
    if (passes++ == 0) {
      EXPECT_FALSE(sl.lock().is_locked()) << "the first pass is lockless";
      std::thread([&] {  // a writer slips in during the lockless pass
        write_seqlock(&sl);
        seq_store(&data, payload::make(50));
        write_sequnlock(&sl);
      })
          .join();
    } else {
      EXPECT_TRUE(sl.lock().is_locked()) << "the second pass holds the lock";
      EXPECT_EQ(p.a[0], 50u);
    }
    if (!need_seqretry(&sl, seq)) break;
    seq = 1;  // retry with the lock
  }
  done_seqretry(&sl, seq);
  EXPECT_EQ(passes, 2);
  EXPECT_FALSE(sl.lock().is_locked());
}

TEST(Latch, KernelStyleReadersNeverWaitForAPreemptedWriter) {
  seqcount_latch_t<> latch;
  payload data[2] = {payload::make(10), payload::make(10)};
  std::atomic<int> phase{0};
  std::thread writer([&] {
    write_seqcount_latch_begin(&latch);  // readers -> data[1]
    payload half = payload::make(20);
    half.a[5] = 0;
    seq_store(&data[0], &half);  // half-updated copy 0 ...
    phase = 1;
    std::this_thread::sleep_for(150ms);  // ... and the writer is preempted
    seq_store(&data[0], payload::make(20));
    write_seqcount_latch(&latch);  // readers -> data[0]
    seq_store(&data[1], payload::make(20));
    write_seqcount_latch_end(&latch);
    phase = 2;
  });
  while (phase.load() != 1) std::this_thread::yield();
  int reads = 0;
  auto t0 = std::chrono::steady_clock::now();
  while (phase.load() == 1 && reads < 1000) {
    payload p;
    unsigned s;
    do {
      s = read_seqcount_latch(&latch);
      seq_load(&p, &data[s & 1]);
    } while (read_seqcount_latch_retry(&latch, s));
    EXPECT_TRUE(p.consistent());
    EXPECT_EQ(p.a[0], 10u) << "the old value while the writer sleeps";
    ++reads;
  }
  auto took = std::chrono::steady_clock::now() - t0;
  writer.join();
  EXPECT_EQ(reads, 1000) << "readers completed while the writer was inside";
  EXPECT_LT(took, 100ms);
  payload p;
  unsigned s;
  do {
    s = read_seqcount_latch(&latch);
    seq_load(&p, &data[s & 1]);
  } while (read_seqcount_latch_retry(&latch, s));
  EXPECT_EQ(p.a[0], 20u);
}

TEST(Latch, TwoCopyWrapperUpdatesBothCopies) {
  seqcount_latch_t<payload> latch(payload::make(1));
  EXPECT_EQ(latch.read().a[0], 1u);
  latch.write([](payload& p) { p = payload::make(p.a[0] + 1); });
  EXPECT_EQ(latch.read().a[0], 2u);
  EXPECT_EQ(seq_load(latch.data(0)).a[0], 2u);
  EXPECT_EQ(seq_load(latch.data(1)).a[0], 2u);
  latch.write_value(payload::make(9));
  EXPECT_TRUE(latch.read().consistent());
  EXPECT_EQ(latch.read().a[7], 16u);
}

TEST(SeqLoad, CopiesEverySizeAndAlignment) {
  struct b3 {
    char c[3];
  };
  struct h5 {
    std::uint16_t h[5];
  };
  struct w3 {
    std::uint32_t a, b, c;
  };
  b3 x{{'a', 'b', 'c'}}, y{};
  seq_store(&y, &x);
  EXPECT_EQ(std::string(y.c, 3), "abc");
  h5 h{{1, 2, 3, 4, 5}};
  h5 g = seq_load(&h);
  EXPECT_EQ(g.h[4], 5);
  w3 w{1, 2, 3}, v{};
  seq_load(&v, &w);
  EXPECT_EQ(v.c, 3u);
}

#if USLUB_LOCKDEP
TEST(Seqcount, WriterWithoutTheAssociatedLockIsReported) {
  report_capture cap;
  spinlock_t lock;
  seqcount_spinlock_t seq(&lock);
  seq.write_seqcount_begin();  // lock not held
  seq.write_seqcount_end();
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG lockdep: lock not held");
  EXPECT_NE(cap.reports()[0].find("associated lock"), std::string::npos) << cap.reports()[0];
  lock.lock();
  write_seqcount_begin(&seq);
  write_seqcount_end(&seq);
  lock.unlock();
  // Held by another thread is not held by the writer.
  lock.lock();
  std::thread([&] {
    seq.write_seqcount_begin();
    seq.write_seqcount_end();
  }).join();
  lock.unlock();
  EXPECT_EQ(cap.count(), 2u);
  // seqlock_t's writers take the lock themselves: nothing to report.
  seqlock_t sl;
  write_seqlock(&sl);
  write_sequnlock(&sl);
  EXPECT_EQ(cap.count(), 2u);
}
#endif

}  // namespace uslub::test
