// Seqcounts: readers never accept torn data; the latch never blocks readers; a reader facing a
// preempted writer waits on the associated lock; writers without the lock are caught.
#include "sync/seqcount.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "test_support.hpp"

namespace uslub::test {
namespace {

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

}  // namespace

TEST(Seqcount, ReadersNeverAcceptTornDataWithThreadsAboveCpus) {
  spinlock_t lock;
  seqcount_spinlock_t seq(&lock);
  payload shared = payload::make(0);
  std::atomic<bool> stop{false};
  std::atomic<long> torn{0}, reads{0};
  std::vector<std::thread> ts;
  for (int w = 0; w < 2; ++w)
    ts.emplace_back([&, w] {
      for (std::uint64_t i = 1; !stop.load(); ++i) {
        lock.lock();
        seq.write_seqcount_begin();
        payload p = payload::make(i * 16 + static_cast<std::uint64_t>(w));
        seq_store(&shared, &p);
        seq.write_seqcount_end();
        lock.unlock();
      }
    });
  for (int r = 0; r < 8; ++r)
    ts.emplace_back([&] {
      while (!stop.load()) {
        payload p;
        unsigned s;
        do {
          s = seq.read_seqcount_begin();
          seq_load(&p, &shared);
        } while (seq.read_seqcount_retry(s));
        if (!p.consistent()) torn++;
        reads++;
      }
    });
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  stop = true;
  for (auto& t : ts) t.join();
  EXPECT_EQ(torn.load(), 0);
  EXPECT_GT(reads.load(), 1000);
}

TEST(Seqcount, ReaderWaitsOnTheLockOfAPreemptedWriter) {
  spinlock_t lock;
  seqcount_spinlock_t seq(&lock);
  payload shared = payload::make(0);
  std::atomic<int> phase{0};
  std::thread writer([&] {
    lock.lock();
    seq.write_seqcount_begin();
    phase = 1;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // "preempted" mid-write
    payload p = payload::make(100);
    seq_store(&shared, &p);
    seq.write_seqcount_end();
    lock.unlock();
  });
  while (phase.load() != 1) std::this_thread::yield();
  payload p;
  unsigned s;
  do {
    s = seq.read_seqcount_begin();
    seq_load(&p, &shared);
  } while (seq.read_seqcount_retry(s));
  writer.join();
  EXPECT_EQ(p.a[0], 100u);
  EXPECT_GE(seq.lock_fallbacks(), 1u) << "the reader should have waited on the lock";
}

TEST(Seqcount, LatchReadersNeverBlockAndSeeWholeCopies) {
  seqcount_latch_t<payload> latch;
  latch.write_seqcount_latch([](payload& p) { p = payload::make(0); });  // both copies valid
  std::atomic<bool> stop{false};
  std::atomic<long> torn{0};
  std::thread writer([&] {
    for (std::uint64_t i = 1; !stop.load(); ++i)
      latch.write_seqcount_latch([&](payload& p) { p = payload::make(i * 10); });
  });
  std::vector<std::thread> readers;
  for (int r = 0; r < 4; ++r)
    readers.emplace_back([&] {
      while (!stop.load())
        if (!latch.read().consistent()) torn++;
    });
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  stop = true;
  writer.join();
  for (auto& t : readers) t.join();
  EXPECT_EQ(torn.load(), 0);
}

TEST(Seqlock, ReadSeqbeginOrLockTakesTheLockOnTheSecondPass) {
  seqlock_t sl;
  payload data = payload::make(5);
  int seq = 0;
  int passes = 0;
  do {
    sl.read_seqbegin_or_lock(&seq);
    payload p;
    seq_load(&p, &data);
    EXPECT_TRUE(p.consistent());
    if (passes++ == 0) {
      sl.write_seqlock();  // a writer slips in during the lockless pass
      payload q = payload::make(50);
      seq_store(&data, &q);
      sl.write_sequnlock();
    }
    if (!sl.need_seqretry(seq)) break;
    seq = 1;  // retry with the lock
  } while (true);
  sl.done_seqretry(seq);
  EXPECT_EQ(passes, 2);
}

#if USLUB_LOCKDEP
TEST(Seqcount, WriterWithoutTheAssociatedLockIsReported) {
  report_capture cap;
  spinlock_t lock;
  seqcount_spinlock_t seq(&lock);
  seq.write_seqcount_begin();
  seq.write_seqcount_end();
  ASSERT_EQ(cap.count(), 1u);
  EXPECT_EQ(cap.first_line(), "uslub: BUG lockdep: lock not held");
  lock.lock();
  seq.write_seqcount_begin();
  seq.write_seqcount_end();
  lock.unlock();
  EXPECT_EQ(cap.count(), 1u);
}
#endif

}  // namespace uslub::test
