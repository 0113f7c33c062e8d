#include "platform/platform.hpp"

#include <gtest/gtest.h>
#include <sched.h>
#include <sys/mman.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

using namespace uslub;

TEST(Cpu, CurrentCpuIsBelowNrCpuIds) {
  unsigned n = platform::nr_cpu_ids();
  ASSERT_GE(n, 1u);
  for (int i = 0; i < 1000; ++i) EXPECT_LT(platform::current_cpu(), n);
}

TEST(Cpu, RseqMatchesGlibcTunable) {
  // CI runs this binary a second time with GLIBC_TUNABLES=glibc.pthread.rseq=0.
  const char* t = getenv("GLIBC_TUNABLES");
  bool disabled = t && strstr(t, "glibc.pthread.rseq=0");
  EXPECT_EQ(platform::rseq_available(), !disabled);
}

TEST(Cpu, PinnedThreadSeesItsCpu) {
  unsigned n = platform::nr_cpu_ids();
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  ASSERT_EQ(sched_getaffinity(0, sizeof allowed, &allowed), 0);
  std::string not_allowed;
  for (unsigned cpu = 0; cpu < n && cpu < 4; ++cpu) {
    if (!CPU_ISSET(cpu, &allowed)) {
      not_allowed += " " + std::to_string(cpu);
      continue;
    }
    std::thread t([&] {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpu, &set);
      ASSERT_EQ(sched_setaffinity(0, sizeof set, &set), 0) << "cpu " << cpu;
      for (int i = 0; i < 100; ++i) EXPECT_EQ(platform::current_cpu(), cpu);
    });
    t.join();
  }
  if (!not_allowed.empty())
    GTEST_SKIP() << "not in the affinity mask, not tested: CPU" << not_allowed;
}

TEST(Numa, FakeTopologyMapsCpusToNodes) {
  int map[2] = {0, 1};
  platform::set_fake_topology(2, map, 2);
  EXPECT_EQ(platform::nr_node_ids(), 2u);
  EXPECT_EQ(platform::cpu_to_node(1), 1);
  EXPECT_EQ(platform::cpu_to_node(0), 0);
  platform::set_fake_topology(0, nullptr, 0);
  EXPECT_GE(platform::nr_node_ids(), 1u);
  // Restored for good: the machine's count again, not the fake's.
  unsigned real_nodes = platform::nr_node_ids();
  platform::set_fake_topology(3, map, 2);
  EXPECT_EQ(platform::nr_node_ids(), 3u);
  platform::set_fake_topology(0, nullptr, 0);
  EXPECT_EQ(platform::nr_node_ids(), real_nodes);
  EXPECT_NE(real_nodes, 3u);
}

TEST(Vm, ReserveCommitDecommitRelease) {
  auto& vm = platform::linux_vm();
  void* p = nullptr;
  constexpr size_t kSize = 64 << 20, kAlign = 32 << 20;
  ASSERT_EQ(vm.reserve(kSize, kAlign, &p), 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % kAlign, 0u);
  ASSERT_EQ(vm.commit(p, 1 << 20), 0);
  memset(p, 0xab, 1 << 20);
  unsigned char vec[256];
  ASSERT_EQ(mincore(p, 1 << 20, vec), 0);
  EXPECT_TRUE(vec[0] & 1);
  ASSERT_EQ(vm.decommit(p, 1 << 20, platform::decommit_mode::dontneed), 0);
  ASSERT_EQ(mincore(p, 1 << 20, vec), 0);
  EXPECT_FALSE(vec[0] & 1);
  EXPECT_EQ(static_cast<unsigned char*>(p)[100], 0);  // reads zeros again
  EXPECT_EQ(vm.release(p, kSize), 0);
}

TEST(Vm, ErrorsComeBackAsValues) {
  auto& vm = platform::linux_vm();
  void* p = nullptr;
  // An absurd reservation fails with an errno, not a crash.
  EXPECT_NE(vm.reserve(size_t{1} << 62, PAGE_SIZE, &p), 0);
  EXPECT_NE(vm.commit(reinterpret_cast<void*>(12345 * PAGE_SIZE + 1), PAGE_SIZE), 0);
}

TEST(Futex, WakeReleasesWaiter) {
  std::atomic<uint32_t> word{0};
  std::thread t([&] {
    while (word.load() == 0) platform::futex_wait(&word, 0);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  word.store(1);
  platform::futex_wake(&word, 1);
  t.join();
  SUCCEED();
}

static std::atomic<int> g_exit_calls{0};
static void on_exit_hook(void* v) {
  g_exit_calls += *static_cast<int*>(v);
}

TEST(ThreadExit, HookRunsForArmedThreadsOnly) {
  static platform::thread_exit_hook hook(&on_exit_hook);
  static int one = 1;
  g_exit_calls = 0;
  std::thread a([] { EXPECT_EQ(hook.arm(&one), 0); });
  std::thread b([] {});
  a.join();
  b.join();
  EXPECT_EQ(g_exit_calls.load(), 1);
}

TEST(Env, SizesWithSuffixes) {
  setenv("USLUB_TEST_SIZE", "64M", 1);
  EXPECT_EQ(platform::env_size("USLUB_TEST_SIZE", 1), 64ull << 20);
  setenv("USLUB_TEST_SIZE", "3k", 1);
  EXPECT_EQ(platform::env_size("USLUB_TEST_SIZE", 1), 3ull << 10);
  setenv("USLUB_TEST_SIZE", "12", 1);
  EXPECT_EQ(platform::env_size("USLUB_TEST_SIZE", 1), 12u);
  setenv("USLUB_TEST_SIZE", "bogus", 1);
  EXPECT_EQ(platform::env_size("USLUB_TEST_SIZE", 7), 7u);
  unsetenv("USLUB_TEST_SIZE");
  EXPECT_EQ(platform::env_size("USLUB_TEST_SIZE", 9), 9u);
}

TEST(Time, MonotonicClocksAdvance) {
  auto a = platform::monotonic_ns();
  auto am = platform::coarse_ms();
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_GT(platform::monotonic_ns(), a);
  EXPECT_GE(platform::coarse_ms(), am + 10);
}
