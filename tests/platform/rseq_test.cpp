// rseq per-CPU stack sequences: restarted by preemption, migration and signals, they never
// lose or duplicate an element.
#include "platform/rseq.hpp"

#include <gtest/gtest.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "test_support.hpp"

using namespace uslub;

namespace {
constexpr unsigned kCap = 64;
struct stack_t_ {
  std::uint32_t size;
  std::uint32_t capacity;
  std::uint64_t pad;
  void* objects[kCap];
};
struct alignas(64) slot_t {
  std::uint32_t lock;
  std::uint32_t pad;
  stack_t_* main;
};
constexpr unsigned kLock = offsetof(slot_t, lock), kMain = offsetof(slot_t, main);
constexpr unsigned kSize = offsetof(stack_t_, size), kCapOff = offsetof(stack_t_, capacity),
                   kObjs = offsetof(stack_t_, objects);
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
  std::vector<slot_t> slots(n);
  std::vector<stack_t_> stacks(n);
  for (unsigned i = 0; i < n; ++i) {
    stacks[i] = {};
    stacks[i].capacity = kCap;
    slots[i].lock = 0;
    slots[i].main = &stacks[i];
  }
  char* base = reinterpret_cast<char*>(slots.data());
  // Pinned: every operation below is on this CPU's slot (restored at the end).
  cpu_set_t all, one;
  ASSERT_EQ(sched_getaffinity(0, sizeof all, &all), 0);
  CPU_ZERO(&one);
  CPU_SET(sched_getcpu(), &one);
  if (sched_setaffinity(0, sizeof one, &one) != 0) GTEST_SKIP() << "cannot pin to a CPU";
  int x[3];
  EXPECT_EQ((platform::rseq_percpu_pop<kLock, kMain, kSize, kObjs, sizeof(slot_t)>(base)), nullptr);
  for (int& v : x)
    EXPECT_TRUE((
        platform::rseq_percpu_push<kLock, kMain, kSize, kCapOff, kObjs, sizeof(slot_t)>(base, &v)));
  unsigned total = 0;
  for (auto& s : stacks) total += s.size;
  EXPECT_EQ(total, 3u);
  unsigned here = platform::current_cpu();
  EXPECT_EQ(stacks[here].size, 3u);
  // A locked slot refuses the lock, a pop and a push.
  int cpu = platform::rseq_lock_slot<kLock>(base, sizeof(slot_t));
  ASSERT_EQ(cpu, static_cast<int>(here));
  EXPECT_EQ(platform::rseq_lock_slot<kLock>(base, sizeof(slot_t)), -1);
  EXPECT_EQ((platform::rseq_percpu_pop<kLock, kMain, kSize, kObjs, sizeof(slot_t)>(base)), nullptr);
  EXPECT_FALSE((platform::rseq_percpu_push<kLock, kMain, kSize, kCapOff, kObjs, sizeof(slot_t)>(
      base, &x[0])));
  EXPECT_EQ(stacks[here].size, 3u);
  slots[cpu].lock = 0;
  // Unlocked, it serves again.
  EXPECT_NE((platform::rseq_percpu_pop<kLock, kMain, kSize, kObjs, sizeof(slot_t)>(base)), nullptr);
  EXPECT_EQ(stacks[here].size, 2u);
  sched_setaffinity(0, sizeof all, &all);
}

static void on_signal(int) {}

TEST_F(Rseq, ManyThreadsAndASignalStormNeverLoseOrDuplicate) {
  const unsigned n = platform::nr_cpu_ids();
  std::vector<slot_t> slots(n);
  std::vector<stack_t_> stacks(n);
  for (unsigned i = 0; i < n; ++i) {
    stacks[i] = {};
    stacks[i].capacity = kCap;
    slots[i].lock = 0;
    slots[i].main = &stacks[i];
  }
  char* base = reinterpret_cast<char*>(slots.data());
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
          if (platform::rseq_percpu_push<kLock, kMain, kSize, kCapOff, kObjs, sizeof(slot_t)>(
                  base, reinterpret_cast<void*>(tok)))
            mine.pop_back();
          else
            holder[tok - 1].store(1);
        } else {
          void* p = platform::rseq_percpu_pop<kLock, kMain, kSize, kObjs, sizeof(slot_t)>(base);
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
  for (auto& st : stacks)
    for (unsigned i = 0; i < st.size; ++i) seen[reinterpret_cast<uintptr_t>(st.objects[i]) - 1]++;
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
