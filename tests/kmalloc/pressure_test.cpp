// Memory pressure: a pressure event (injected into the monitor thread, as a PSI trigger or a
// cgroup memory.events change would be) shrinks every cache and returns free memory.
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "fork_child_threads.hpp"
#include "kmalloc/kmalloc.hpp"
#include "page/pressure.hpp"
#include "slab/slab.hpp"
#include "test_support.hpp"

namespace uslub::test {

// This suite links uslub_core without the malloc layer: the fork tests register the slab
// layer's handlers themselves, once per process.
void register_slab_fork_handlers() {
  static const int registered =
      pthread_atfork(slab_fork_prepare, slab_fork_parent, slab_fork_child);
  ASSERT_EQ(registered, 0);
}

// Forks a child that fills and empties s, injects a pressure event into its own monitor and
// waits up to 20 s for it; the child exits 0 if the event was handled and a slab went back.
// Returns the child's pid (the parent waits with expect_child_shrank).
pid_t fork_shrinking_child(kmem_cache* s) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  // Child: no std::vector (uslub_core is not this process's malloc, but keep it simple).
  static void* objs[20000];
  for (auto& p : objs) p = kmem_cache_alloc(s, 0);
  for (void* p : objs) kmem_cache_free(s, p);
  long slabs_before = s->node[0].nr_slabs.load();
  if (slabs_before <= 0) _exit(2);
  pressure_stats before = pressure_get_stats();
  if (!before.source) _exit(3);  // no monitor in the child
  if (!pressure_inject()) _exit(4);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (pressure_get_stats().events == before.events &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  // Not "exactly one": a real PSI event in the child may count too; the parent's monitor
  // taking the child's event (shared fds) leaves the count unchanged.
  if (pressure_get_stats().events == before.events) _exit(5);
  if (s->node[0].nr_slabs.load() >= slabs_before) _exit(6);  // nothing shrunk
  _exit(0);
}

void expect_child_shrank(int status) {
  ASSERT_TRUE(WIFEXITED(status));
  if (kCheckChildStatus) {
    EXPECT_EQ(WEXITSTATUS(status), 0) << "2: no slabs, 3: no monitor, 4: inject failed, 5: the "
                                         "child's event was not handled, 6: no slab went back";
  }
}

TEST(Pressure, AnEventShrinksTheCachesAndReturnsMemory) {
  kfree(kmalloc(8, 0));  // kmalloc up: its shrinkers registered
  ASSERT_TRUE(pressure_start());
  EXPECT_NE(pressure_get_stats().source, nullptr);
  // Empty slabs on the partial lists and free pages: what pressure should give back.
  kmem_cache* s = kmem_cache_create("pressure-test", 512, 0, 0, nullptr);
  std::vector<void*> objs;
  for (int i = 0; i < 20000; ++i) objs.push_back(kmem_cache_alloc(s, 0));
  for (void* p : objs) kmem_cache_free(s, p);
  std::vector<void*> huge;
  for (int i = 0; i < 6; ++i) huge.push_back(kmalloc(std::size_t{6} << 20, 0));
  kfree(huge.back());
  huge.pop_back();
  ASSERT_GT(huge_get_stats().cached_bytes, 0u);
  long slabs_before = s->node[0].nr_slabs.load();
  ASSERT_GT(slabs_before, 0);
  pressure_stats before = pressure_get_stats();
  std::uint64_t returned_before = global_page_allocator().stats().returned_bytes;
  ASSERT_TRUE(pressure_inject());
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (pressure_get_stats().events == before.events &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  pressure_stats after = pressure_get_stats();
  EXPECT_EQ(after.events, before.events + 1);
  EXPECT_EQ(after.shrinks[static_cast<unsigned>(shrink_reason::pressure)],
            before.shrinks[static_cast<unsigned>(shrink_reason::pressure)] + 1);
  EXPECT_LT(s->node[0].nr_slabs.load(), slabs_before) << "empty slabs went back";
  EXPECT_EQ(huge_get_stats().cached_bytes, 0u) << "retained huge mappings went back";
  EXPECT_GT(global_page_allocator().stats().returned_bytes, returned_before)
      << "free pages were returned to the OS";
  for (void* p : huge) kfree(p);
  kmem_cache_destroy(s);
}

// With the monitor running, a free that finds its zone due for decay does no reclaim itself:
// it wakes the monitor, which runs the pass (page_allocator::reclaim_background).
TEST(Pressure, TheMonitorRunsTheDecayInsteadOfTheFreePaths) {
  kfree(kmalloc(8, 0));
  ASSERT_TRUE(pressure_start());
  page_allocator& pa = global_page_allocator();
  std::vector<page*> v;
  for (int i = 0; i < 16; ++i) v.push_back(pa.alloc_pages(5));  // zone-level (no pcp list)
  for (page* p : v) pa.free_pages(p, 5);
  std::uint64_t inline_before = pa.stats().reclaim_inline_steps;
  std::uint64_t bg_before = pressure_get_stats().background_reclaims;
  // Past the decay delay (default 500 ms; next_reclaim_ms at most decay / 2 + 1 later), a
  // zone-level free finds the zone due.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (pressure_get_stats().background_reclaims == bg_before &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    pa.free_pages(pa.alloc_pages(5), 5);
  }
  EXPECT_GT(pressure_get_stats().background_reclaims, bg_before) << "the monitor ran the pass";
  EXPECT_EQ(pa.stats().reclaim_inline_steps, inline_before) << "no free path reclaimed inline";
}

// The monitor thread does not survive fork: the child re-creates it (slab_fork_child, the slab
// layer's atfork child handler, which malloc's runs too), with its own eventfd and PSI
// trigger, and a pressure event in the child shrinks the child's caches.  (Before, the child
// had no monitor but the parent's fds: its injected event was taken by the parent's thread and
// the child never shrank.)
TEST(Pressure, AForkedChildRecreatesTheMonitorAndShrinksOnAnEvent) {
  kfree(kmalloc(8, 0));
  ASSERT_TRUE(pressure_start());
  register_slab_fork_handlers();
  kmem_cache* s = kmem_cache_create("pressure-fork", 256, 0, SLAB_NO_MERGE, nullptr);
  ASSERT_NE(s, nullptr);
  pid_t pid = fork_shrinking_child(s);
  ASSERT_GE(pid, 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  expect_child_shrank(status);
  kmem_cache_destroy(s);
}

// A fork while the parent's monitor is inside a pressure pass (it holds shrink_mutex, a lock
// the fork handlers do not take): the child, where that thread does not exist, still shrinks
// on its own event instead of waiting forever for the parent's pass to end.
namespace {
std::atomic<pid_t> g_blocking_pid{0};
std::atomic<int> g_blocking_state{0};  // 1: the parent's pass is inside, 2: let it go
std::size_t blocking_scan(shrink_reason) {
  if (getpid() != g_blocking_pid.load()) return 0;
  g_blocking_state.store(1);
  while (g_blocking_state.load() != 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return 0;
}
shrinker g_blocking_shrinker{"test-blocking", blocking_scan, false, nullptr};
}  // namespace

TEST(Pressure, AForkDuringTheParentsPressurePassLeavesTheChildAbleToShrink) {
  kfree(kmalloc(8, 0));
  ASSERT_TRUE(pressure_start());
  register_slab_fork_handlers();
  kmem_cache* s = kmem_cache_create("pressure-fork-pass", 256, 0, SLAB_NO_MERGE, nullptr);
  ASSERT_NE(s, nullptr);
  g_blocking_pid.store(getpid());
  register_shrinker(&g_blocking_shrinker);
  ASSERT_TRUE(pressure_inject());
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (g_blocking_state.load() != 1 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_EQ(g_blocking_state.load(), 1) << "the parent's pass did not start";
  pid_t pid = fork_shrinking_child(s);
  ASSERT_GE(pid, 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  g_blocking_state.store(2);  // the parent's pass ends
  expect_child_shrank(status);
  kmem_cache_destroy(s);
}

}  // namespace uslub::test
