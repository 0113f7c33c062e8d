// fork() while other threads allocate: the child must be able to use every cache.
#include <sys/wait.h>
#include <unistd.h>
#include <uslub/slab.h>

#include <thread>
#include <vector>

#include "slab/slab.hpp"
#include "test_support.hpp"

namespace uslub::test {

TEST(SlabFork, ChildAllocatesAfterForkDuringTraffic) {
  kmem_cache* s = kmem_cache_create("fork-test", 72, 0, SLAB_NO_MERGE, nullptr);
  ASSERT_EQ(pthread_atfork(slab_fork_prepare, slab_fork_parent, slab_fork_child), 0);
  slab_churn traffic(s, 4, 64, slab_churn::shrink::before_free);
  for (int round = 0; round < 20; ++round) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // Child: only this thread exists; every lock must be free.  No std::vector here: in the
      // sanitizer builds that is the sanitizer's heap, whose locks another thread of the parent
      // may have held at the fork (it is not fork-safe; seen as a hang in the ASan build).
      static void* v[5000];
      for (auto& p : v) p = kmem_cache_alloc(s, 0);
      for (void* p : v) kmem_cache_free(s, p);
      void* big = global_page_allocator().alloc_pages_addr(5);
      global_page_allocator().free_pages_addr(big, 5);
      global_page_allocator().drain_all_pages();
      _exit(kmem_cache_validate(s) == 0 && big ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status)) << "child died (deadlock would hang instead)";
    EXPECT_EQ(WEXITSTATUS(status), 0);
  }
  traffic.stop();
  EXPECT_EQ(kmem_cache_validate(s), 0);
}

}  // namespace uslub::test
