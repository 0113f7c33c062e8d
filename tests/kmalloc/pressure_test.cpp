// Memory pressure: a pressure event (injected into the monitor thread, as a PSI trigger or a
// cgroup memory.events change would be) shrinks every cache and returns free memory.
#include <chrono>
#include <thread>
#include <vector>

#include "kmalloc/kmalloc.hpp"
#include "page/pressure.hpp"
#include "test_support.hpp"

namespace uslub::test {

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
  long slabs_before = s->node[0]->nr_slabs.load();
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
  EXPECT_LT(s->node[0]->nr_slabs.load(), slabs_before) << "empty slabs went back";
  EXPECT_EQ(huge_get_stats().cached_bytes, 0u) << "retained huge mappings went back";
  EXPECT_GT(global_page_allocator().stats().returned_bytes, returned_before)
      << "free pages were returned to the OS";
  for (void* p : huge) kfree(p);
  kmem_cache_destroy(s);
}

}  // namespace uslub::test
