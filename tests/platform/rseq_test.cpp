// rseq per-CPU slot sequences (the class slots' pop, push and lock): restarted by preemption,
// migration and signals, they never lose or duplicate an element.
#include "platform/rseq.hpp"

#include <gtest/gtest.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "test_support.hpp"

using namespace uslub;

namespace {
constexpr unsigned kCap = 64;
constexpr unsigned kShift = 7;  // one 128-byte area per CPU, the slot at offset 0
// The class slot of platform/rseq.hpp ({objs, size, tick, cap}, rseq_slot_layout) and its
// sheaf.
struct slot_t {
  void** objs;
  std::uint16_t size;
  std::uint16_t tick;  // the plain sequences commit it unchanged
  std::uint32_t cap;   // 0: held (the lock)
};
#if USLUB_HAVE_RSEQ_ASM
struct areas {
  explicit areas(unsigned n)
      : base(static_cast<char*>(aligned_alloc(64, std::size_t{n} << kShift))),
        objects(n, std::vector<void*>(kCap)) {
    memset(base, 0, std::size_t{n} << kShift);
    for (unsigned i = 0; i < n; ++i) *slot(i) = {objects[i].data(), 0, 0x1234, kCap};
  }
  ~areas() { free(base); }
  slot_t* slot(unsigned cpu) {
    return reinterpret_cast<slot_t*>(base + (std::size_t{cpu} << kShift));
  }
  void* pop() { return platform::rseq_slot_pop<kShift, 0, false>(base, 0); }
  bool push(void* p) {
    return platform::rseq_slot_push<kShift, 0, platform::push_kind::plain>(
               base, 0, p, nullptr, 0) == platform::slot_push::ok;
  }
  int lock(std::uint32_t* old_cap) { return platform::rseq_slot_lock<kShift>(base, 0, old_cap); }
  char* base;
  std::vector<std::vector<void*>> objects;
};
#endif
}  // namespace

#if USLUB_HAVE_RSEQ_ASM

class Rseq : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!platform::rseq_sequences_usable()) GTEST_SKIP() << "rseq not usable here";
  }
};

TEST_F(Rseq, PushThenPopOnOneThread) {
  unsigned n = platform::nr_cpu_ids();
  areas A(n);
  // Pinned: every operation below is on this CPU's slot (restored at the end).
  cpu_set_t all, one;
  ASSERT_EQ(sched_getaffinity(0, sizeof all, &all), 0);
  CPU_ZERO(&one);
  CPU_SET(sched_getcpu(), &one);
  if (sched_setaffinity(0, sizeof one, &one) != 0) GTEST_SKIP() << "cannot pin to a CPU";
  int x[3];
  EXPECT_EQ(A.pop(), nullptr);
  for (int& v : x) EXPECT_TRUE(A.push(&v));
  unsigned total = 0;
  for (unsigned i = 0; i < n; ++i) total += A.slot(i)->size;
  EXPECT_EQ(total, 3u);
  unsigned here = platform::current_cpu();
  EXPECT_EQ(A.slot(here)->size, 3u);
  // A locked slot refuses the lock, a pop and a push.
  std::uint32_t old_cap = 0;
  int cpu = A.lock(&old_cap);
  ASSERT_EQ(cpu, static_cast<int>(here));
  EXPECT_EQ(old_cap, kCap);
  EXPECT_EQ(A.lock(&old_cap), -1);
  EXPECT_EQ(A.pop(), nullptr);
  EXPECT_FALSE(A.push(&x[0]));
  EXPECT_EQ(A.slot(here)->size, 3u);
  A.slot(here)->cap = kCap;
  // Unlocked, it serves again.
  EXPECT_NE(A.pop(), nullptr);
  EXPECT_EQ(A.slot(here)->size, 2u);
  // Pops and plain pushes commit the whole {size, tick} word with the tick they read.
  EXPECT_EQ(A.slot(here)->tick, 0x1234);
  sched_setaffinity(0, sizeof all, &all);
}

static void on_signal(int) {}

TEST_F(Rseq, ManyThreadsAndASignalStormNeverLoseOrDuplicate) {
  const unsigned n = platform::nr_cpu_ids();
  areas A(n);
  const int nthreads = 8 * static_cast<int>(n);
  const int per_thread = 64;
  // Tokens: each thread owns per_thread tokens and moves them through the per-CPU stacks;
  // owner[] records who holds each token, so a duplicate pop is caught at once.
  std::vector<std::atomic<int>> holder(nthreads * per_thread);
  for (auto& h : holder) h = 1;  // 1: held by a thread, 0: in a stack
  std::atomic<long> dup{0};
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGUSR1, &sa, nullptr);
  std::atomic<bool> stop{false};
  std::vector<pthread_t> ids(nthreads);
  std::atomic<int> ready{0}, done{0};
  std::vector<std::thread> threads;
  const int iters = 100000 * test::stress_scale();
  for (int t = 0; t < nthreads; ++t) {
    threads.emplace_back([&, t] {
      ids[t] = pthread_self();
      ready++;
      std::vector<uintptr_t> mine;
      for (int k = 0; k < per_thread; ++k)
        mine.push_back(static_cast<uintptr_t>(t * per_thread + k + 1));
      while (ready.load() < nthreads + 1) std::this_thread::yield();  // the storm is on
      auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
      for (int i = 0; i < iters || (platform::rseq_abort_count() < 100 &&
                                    std::chrono::steady_clock::now() < until);
           ++i) {
        if (!mine.empty() && (i & 1)) {
          uintptr_t tok = mine.back();
          holder[tok - 1].store(0);
          if (A.push(reinterpret_cast<void*>(tok)))
            mine.pop_back();
          else
            holder[tok - 1].store(1);
        } else {
          void* p = A.pop();
          if (p) {
            uintptr_t tok = reinterpret_cast<uintptr_t>(p);
            if (holder[tok - 1].exchange(1) != 0) dup++;
            mine.push_back(tok);
          }
        }
      }
      // Leave our tokens in a thread-local list; count them at the end.
      for (uintptr_t tok : mine) holder[tok - 1].store(2);
      done++;
      while (!stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    });
  }
  std::thread storm([&] {
    while (ready.load() < nthreads) std::this_thread::yield();
    ready++;
    // Threads stay alive until `stop`, so their ids stay valid for pthread_kill.
    while (done.load() < nthreads) {
      for (int t = 0; t < nthreads; ++t) pthread_kill(ids[t], SIGUSR1);
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  });
  storm.join();
  stop = true;
  for (auto& th : threads) th.join();
  EXPECT_EQ(dup.load(), 0);
  // Every token is either in exactly one stack slot or was kept by its last holder.
  std::vector<int> seen(holder.size(), 0);
  for (unsigned c = 0; c < n; ++c)
    for (unsigned i = 0; i < A.slot(c)->size; ++i)
      seen[reinterpret_cast<uintptr_t>(A.slot(c)->objs[i]) - 1]++;
  long lost = 0, twice = 0;
  for (size_t i = 0; i < holder.size(); ++i) {
    int where = holder[i].load();
    if (where == 2 && seen[i] != 0) twice++;
    if (where == 0 && seen[i] != 1) (seen[i] == 0 ? lost : twice)++;
  }
  EXPECT_EQ(lost, 0);
  EXPECT_EQ(twice, 0);
  RecordProperty("rseq_aborts", static_cast<int>(platform::rseq_abort_count()));
  EXPECT_GT(platform::rseq_abort_count(), 0u) << "the storm never restarted a sequence";
}

#endif
