// Read-mostly loop: seqcount read vs std::shared_mutex vs std::mutex (1, 2 and 8 threads,
// 1 % of operations write), and the latch's read cost.  ns per operation, medians of 5 rounds.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <vector>

#include "sync/seqcount.hpp"

namespace {
using clk = std::chrono::steady_clock;
struct data {
  std::uint64_t a[4];
};

template <class Read, class Write>
double run(int threads, long ops, Read read, Write write) {
  std::atomic<int> ready{0};
  std::vector<std::thread> ts;
  std::vector<double> ns(threads);
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      ready++;
      while (ready.load() < threads) {
      }
      auto t0 = clk::now();
      std::uint64_t sink = 0;
      for (long i = 0; i < ops; ++i) {
        if (i % 100 == 0)
          write(i);
        else
          sink += read();
      }
      asm volatile("" ::"r"(sink));
      ns[t] = std::chrono::duration<double, std::nano>(clk::now() - t0).count() / ops;
    });
  for (auto& t : ts) t.join();
  std::sort(ns.begin(), ns.end());
  return ns[ns.size() / 2];
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
}  // namespace

int main() {
  const long ops = 2000000;
  printf(
      "| threads | seqcount_spinlock_t read | std::shared_mutex | std::mutex | latch read (no "
      "writer) |\n");
  printf("| --- | --- | --- | --- | --- |\n");
  for (int threads : {1, 2, 8}) {
    std::vector<double> a, b, c, d;
    for (int r = 0; r < 5; ++r) {
      uslub::spinlock_t lock;
      uslub::seqcount_spinlock_t seq(&lock);
      data shared{};
      a.push_back(run(
          threads, ops / threads,
          [&] {
            data v;
            unsigned s;
            do {
              s = seq.read_seqcount_begin();
              uslub::seq_load(&v, &shared);
            } while (seq.read_seqcount_retry(s));
            return v.a[0];
          },
          [&](long i) {
            lock.lock();
            seq.write_seqcount_begin();
            data v{{std::uint64_t(i), 1, 2, 3}};
            uslub::seq_store(&shared, &v);
            seq.write_seqcount_end();
            lock.unlock();
          }));
      std::shared_mutex sm;
      data sd{};
      b.push_back(run(
          threads, ops / threads,
          [&] {
            std::shared_lock g(sm);
            return sd.a[0];
          },
          [&](long i) {
            std::unique_lock g(sm);
            sd.a[0] = static_cast<std::uint64_t>(i);
          }));
      std::mutex m;
      data md{};
      c.push_back(run(
          threads, ops / threads,
          [&] {
            std::lock_guard g(m);
            return md.a[0];
          },
          [&](long i) {
            std::lock_guard g(m);
            md.a[0] = static_cast<std::uint64_t>(i);
          }));
      uslub::seqcount_latch_t<data> latch;
      d.push_back(run(
          threads, ops / threads, [&] { return latch.read().a[0]; }, [&](long) {}));
    }
    printf("| %d | %.1f ns | %.1f ns | %.1f ns | %.1f ns |\n", threads, median(a), median(b),
           median(c), median(d));
  }
}
