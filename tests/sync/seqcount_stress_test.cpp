// Seqcount stress: more threads than CPUs (8 readers + 2 writers on the 2-CPU machine), so
// writers are preempted inside their sections and readers fall back to the lock.  Writers keep
// a[i] == a[0] + i across a multi-word struct; no reader may ever accept a copy that breaks it.
// Each test runs about 1 s (times USLUB_STRESS_SCALE).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

#include "sync/seqcount.hpp"
#include "test_support.hpp"

namespace uslub::test {
namespace {

constexpr int kReaders = 8;
constexpr int kWriters = 2;
constexpr int kWords = 24;  // 192 bytes: three cache lines, so a torn copy is likely

struct payload {
  std::uint64_t a[kWords];
  bool consistent() const {
    for (int i = 1; i < kWords; ++i)
      if (a[i] != a[0] + static_cast<std::uint64_t>(i)) return false;
    return true;
  }
  static payload make(std::uint64_t base) {
    payload p;
    for (int i = 0; i < kWords; ++i) p.a[i] = base + static_cast<std::uint64_t>(i);
    return p;
  }
};

std::chrono::milliseconds run_time() {
  return std::chrono::milliseconds(1000 * stress_scale());
}

struct result {
  long reads = 0, torn = 0, raw_torn = 0;
};

// write(i) performs one write section; read(&p) one validated read (retrying as needed).
template <class Write, class Read>
result stress(Write write, Read read, const payload* shared, bool until_control_tears = false) {
  std::atomic<bool> stop{false};
  std::atomic<long> reads{0}, torn{0}, raw_torn{0};
  std::vector<std::thread> ts;
  for (int w = 0; w < kWriters; ++w)
    ts.emplace_back([&, w] {
      for (std::uint64_t i = 1; !stop.load(std::memory_order_relaxed); ++i)
        write(i * 1000 + static_cast<std::uint64_t>(w));
    });
  for (int r = 0; r < kReaders; ++r)
    ts.emplace_back([&, r] {
      long n = 0, bad = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        payload p;
        read(&p);
        bad += !p.consistent();
        ++n;
        if (r < 2 && (n & 3) == 0 && !seq_load(shared).consistent())  // no seqcount
          raw_torn.fetch_add(1, std::memory_order_relaxed);  // live: the control is awaited
      }
      reads += n;
      torn += bad;
    });
  std::this_thread::sleep_for(run_time());
  // On a loaded machine the writers may barely have run: the control needs a torn copy to
  // mean something, so give it up to 10 s more.
  for (int i = 0; until_control_tears && raw_torn.load() == 0 && i < 100; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  stop = true;
  for (auto& t : ts) t.join();
  result r{reads.load(), torn.load(), raw_torn.load()};
  printf("reads %ld, torn accepted %ld; unvalidated copies torn: %ld\n", r.reads, r.torn,
         r.raw_torn);
  return r;
}

}  // namespace

TEST(SeqcountStress, SpinlockReadersNeverAcceptTornData) {
  spinlock_t lock;
  seqcount_spinlock_t seq(&lock);
  payload shared = payload::make(0);
  unsigned long waits = seqcount_reader_lock_waits.load();
  result r = stress(
      [&](std::uint64_t v) {
        lock.lock();
        write_seqcount_begin(&seq);
        for (int i = 0; i < kWords; ++i)  // word by word, as a real update would
          __atomic_store_n(&shared.a[i], v + static_cast<std::uint64_t>(i), __ATOMIC_RELAXED);
        write_seqcount_end(&seq);
        lock.unlock();
      },
      [&](payload* p) {
        unsigned s;
        do {
          s = read_seqcount_begin(&seq);
          seq_load(p, &shared);
        } while (read_seqcount_retry(&seq, s));
      },
      &shared, /*until_control_tears=*/true);
  EXPECT_EQ(r.torn, 0);
  EXPECT_GT(r.reads, 10000);
  // The control: copies of the same data taken without the seqcount do tear, so a seqcount
  // that let torn copies through would have been seen.
  EXPECT_GT(r.raw_torn, 0) << "the writers never overlapped a reader: the test proves nothing";
  printf("reader lock waits: %lu\n", seqcount_reader_lock_waits.load() - waits);
}

// The other control: a reader that finds a writer inside its section (here: stopped there,
// as a preempted one would be) falls back to the writer's lock and waits on it, instead of
// spinning; it gets the count only after the section ends.
TEST(SeqcountStress, ReaderOfAStoppedWriterWaitsOnItsLock) {
  spinlock_t lock;
  seqcount_spinlock_t seq(&lock);
  unsigned long waits = seqcount_reader_lock_waits.load();
  lock.lock();
  write_seqcount_begin(&seq);
  std::atomic<bool> done{false};
  std::atomic<unsigned> seen{1};
  std::thread reader([&] {
    seen = read_seqcount_begin(&seq);
    done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(done.load()) << "a reader returned an odd count's section";
  EXPECT_GT(seqcount_reader_lock_waits.load(), waits) << "the reader never waited on the lock";
  write_seqcount_end(&seq);
  lock.unlock();
  reader.join();
  EXPECT_TRUE(done.load());
  EXPECT_EQ(seen.load() & 1, 0u);
}

TEST(SeqcountStress, MutexReadersNeverAcceptTornData) {
  std::mutex lock;
  seqcount_mutex_t seq(&lock);
  payload shared = payload::make(0);
  result r = stress(
      [&](std::uint64_t v) {
        std::lock_guard g(lock);
        seq.write_seqcount_begin();
        seq_store(&shared, payload::make(v));
        seq.write_seqcount_end();
      },
      [&](payload* p) {
        unsigned s;
        do {
          s = seq.read_seqcount_begin();
          seq_load(p, &shared);
        } while (seq.read_seqcount_retry(s));
      },
      &shared);
  EXPECT_EQ(r.torn, 0);
  EXPECT_GT(r.reads, 10000);
}

TEST(SeqcountStress, SeqlockLockOrRetryReadersNeverAcceptTornData) {
  seqlock_t sl;
  payload shared = payload::make(0);
  result r = stress(
      [&](std::uint64_t v) {
        write_seqlock(&sl);
        seq_store(&shared, payload::make(v));
        write_sequnlock(&sl);
      },
      [&](payload* p) {
        int seq = 0;
        for (;;) {
          read_seqbegin_or_lock(&sl, &seq);
          seq_load(p, &shared);
          if (!need_seqretry(&sl, seq)) break;
          seq = 1;
        }
        done_seqretry(&sl, seq);
      },
      &shared);
  EXPECT_EQ(r.torn, 0);
  EXPECT_GT(r.reads, 10000);
}

TEST(SeqcountStress, LatchReadersSeeWholeCopies) {
  seqcount_latch_t<payload> latch(payload::make(0));
  std::mutex writers;  // latch writers are serialised by the caller
  result r = stress(
      [&](std::uint64_t v) {
        std::lock_guard g(writers);
        latch.write_value(payload::make(v));
      },
      [&](payload* p) { *p = latch.read(); }, latch.data(0));
  EXPECT_EQ(r.torn, 0);
  EXPECT_GT(r.reads, 10000);
}

}  // namespace uslub::test
