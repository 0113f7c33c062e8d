// kmalloc's start-up (issue 17, defect 4): threads that call kmalloc while another thread
// runs kmalloc_init must get a block of the size they asked for.  The malloc fast path reads
// the class table only after an acquire load of g_kmalloc.fast_area, which kmalloc_init
// publishes with one release store after the table and the caches; before it, every kmalloc
// takes kmalloc_slow, which waits for the initialisation.  Each trial runs in a fresh child
// (nothing in this executable calls kmalloc before the fork).
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include "kmalloc/kmalloc.hpp"
#include "test_support.hpp"

namespace uslub::test {

// In the child: 4 threads released at once, each allocating sizes from 8 B to 32 KiB.
static int race_first_kmallocs() {
  std::atomic<int> go{0}, bad{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t)
    ts.emplace_back([&, t] {
      go.fetch_add(1);
      while (go.load() < 4) {
      }
      for (std::size_t size = 8u << t; size <= KMALLOC_MAX_CACHE_SIZE; size = size * 2 + 8) {
        void* p = kmalloc(size, 0);
        if (!p || ksize(p) < size) bad.fetch_add(1);
        if (p) memset(p, 0x5a, size);  // a block too small would corrupt its neighbours
        kfree(p);
      }
    });
  for (auto& t : ts) t.join();
  return bad.load() == 0 && g_kmalloc.ready.load() >= 2 ? 0 : 1;
}

TEST(KmallocInit, ThreadsRacingTheInitialisationGetBlocksOfTheirSize) {
  ASSERT_EQ(g_kmalloc.ready.load(), 0) << "nothing may call kmalloc before the trials";
  for (int trial = 0; trial < 20; ++trial) {
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) _exit(race_first_kmallocs());
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status)) << "trial " << trial << ": killed by signal "
                                   << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    EXPECT_EQ(WEXITSTATUS(status), 0) << "trial " << trial << ": a block smaller than asked";
  }
}

// Before kmalloc_init has published it, the fast path's gate is closed: no thread reads
// index[] (which may be half written) on the way to a class slot.
TEST(KmallocInit, TheFastPathGateOpensOnlyAfterTheTables) {
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    bool closed_before = g_kmalloc.fast_area == nullptr;
    kfree(kmalloc(100, 0));
    bool tables = g_kmalloc.index[(100 + 7) >> 3] != 0 && g_kmalloc.caches[0] != nullptr;
    bool open_after = g_kmalloc.fast_area != nullptr || !platform::rseq_sequences_usable();
    _exit(closed_before && tables && open_after ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

}  // namespace uslub::test
