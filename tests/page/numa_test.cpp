// NUMA placement: sections bound to their zone's node (vm_ops::bind_node, mbind
// MPOL_PREFERRED), node-local pcp refills and alien frees on a fake two-node topology, and the
// policy read back with get_mempolicy(MPOL_F_ADDR) on the real machine (docs/page-allocator.md,
// "NUMA placement", says which parts a one-node machine cannot test).
#include <errno.h>
#include <linux/mempolicy.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <uslub/slab.h>

#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "page_test_util.hpp"
#include "slab/slab.hpp"

namespace uslub::test {
namespace {

// Records every bind_node call (and what the real mbind answered); everything else is the OS.
class recording_vm final : public platform::vm_ops {
 public:
  struct bind_call {
    std::uintptr_t base;
    std::size_t len;
    int node;
    int result;
  };
  int reserve(std::size_t size, std::size_t align, void** out) override {
    return real().reserve(size, align, out);
  }
  int commit(void* p, std::size_t n) override { return real().commit(p, n); }
  int decommit(void* p, std::size_t n, platform::decommit_mode m) override {
    return real().decommit(p, n, m);
  }
  int hugepage(void* p, std::size_t n) override { return real().hugepage(p, n); }
  int release(void* p, std::size_t n) override { return real().release(p, n); }
  int map(std::size_t n, void** out) override { return real().map(n, out); }
  int bind_node(void* p, std::size_t n, int node) override {
    int r = real().bind_node(p, n, node);
    std::lock_guard<std::mutex> g(mu_);
    calls_.push_back({reinterpret_cast<std::uintptr_t>(p), n, node, r});
    return r;
  }
  std::vector<bind_call> calls() {
    std::lock_guard<std::mutex> g(mu_);
    return calls_;
  }
  // The bind call made for the section holding addr (nullptr-like: node -2 if none).
  bind_call call_for(const void* addr) {
    auto a = reinterpret_cast<std::uintptr_t>(addr);
    for (const bind_call& c : calls())
      if (a >= c.base && a < c.base + c.len) return c;
    return {0, 0, -2, 0};
  }

 private:
  static platform::vm_ops& real() { return platform::linux_vm(); }
  std::mutex mu_;
  std::vector<bind_call> calls_;
};

struct fake_two_nodes {
  fake_two_nodes() {
    // The global allocator (kmem_cache structures come from it) takes its zone count from
    // the topology when it is first used: make it with the machine's before faking.
    global_page_allocator();
    int map[2] = {0, 1};
    platform::set_fake_topology(2, map, 2);
  }
  ~fake_two_nodes() { platform::set_fake_topology(0, nullptr, 0); }
};

// Runs fn on a thread pinned to cpu; false if the CPU is not in this process's mask.
template <class Fn>
bool on_cpu(unsigned cpu, Fn fn) {
  bool pinned = false;
  std::thread t([&] {
    pinned = pin_to_cpu(cpu);
    if (pinned) fn();
  });
  t.join();
  return pinned;
}

int pcp_count(page_allocator& pa, int node, unsigned cpu) {
  return __atomic_load_n(&pa.zone_of_node(node)->pcp[cpu].count, __ATOMIC_RELAXED);
}

// A page allocator on the recording vm_ops with nr_nodes zones, its pcp decay far off.
page_alloc_config fake_config(recording_vm& vm, unsigned nr_nodes) {
  page_alloc_config cfg;
  cfg.vm = &vm;
  cfg.nr_nodes = nr_nodes;
  cfg.decay_ms = 1000000;
  return cfg;
}

// A page of pa (from node, or the CPU's node) lies in a section that was never bound: no
// mbind call at all.  Then pa is drained and destroyed.
void expect_unbound_and_destroy(page_allocator& pa, recording_vm& vm, int node) {
  page* p = pa.alloc_pages(0, GFP_KERNEL, node);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(page_section(p)->bind_err, -1);
  EXPECT_TRUE(vm.calls().empty());
  pa.free_pages(p, 0);
  pa.drain_all_pages();
  pa.destroy();
}

}  // namespace

TEST(NumaFake, SectionsAreBoundToTheirNodeRefillsAreLocalAlienFreesGoHome) {
  if (platform::nr_cpu_ids() < 2) GTEST_SKIP() << "needs CPUs 0 and 1 (one per fake node)";
  fake_two_nodes topo;
  recording_vm vm;
  page_allocator pa;
  page_alloc_config cfg = fake_config(vm, 2);
  cfg.pcp_batch = 8;
  cfg.pcp_high = 64;
  ASSERT_EQ(pa.init(cfg), 0);

  // CPU 1 (node 1) allocates: its pcp list of zone 1 is refilled from zone 1, whose section
  // was bound to node 1 before any of it was touched.
  std::vector<page*> from1;
  if (!on_cpu(1, [&] {
        for (int i = 0; i < 16; ++i) from1.push_back(pa.alloc_pages(0));
      }))
    GTEST_SKIP() << "CPU 1 is not in this process's affinity mask";
  ASSERT_EQ(from1.size(), 16u);
  for (page* p : from1) {
    ASSERT_NE(p, nullptr);
    mem_section* sec = page_section(p);
    EXPECT_EQ(sec->node, 1);
    EXPECT_EQ(sec->zone, pa.zone_of_node(1));
    auto call = vm.call_for(page_address(p));
    EXPECT_EQ(call.node, 1) << "section of a node-1 page not bound to node 1";
    EXPECT_EQ(call.base, sec->base);
    EXPECT_EQ(call.len, SECTION_SIZE);
    EXPECT_EQ(sec->bind_err, call.result);  // EINVAL here: node 1 is fake
  }
  EXPECT_GT(pa.stats().pcp_alloc_refill, 0u);
  EXPECT_EQ(pcp_count(pa, 1, 1), 0);  // two refills of 8, all 16 handed out
  EXPECT_EQ(pa.zone_of_node(0)->grow_section.load(), nullptr) << "node 0 grew for node 1";

  // CPU 0 (node 0) allocates from node 0, then frees the node-1 pages: they go back to zone
  // 1 (its pcp list for CPU 0), never onto node 0's lists, and CPU 0's next allocations are
  // node 0 pages again.
  std::vector<page*> from0, again0;
  int zone0_pcp_before = -1, zone0_pcp_after = -1, zone1_pcp_after = -1;
  ASSERT_TRUE(on_cpu(0, [&] {
    for (int i = 0; i < 8; ++i) from0.push_back(pa.alloc_pages(0));
    zone0_pcp_before = pcp_count(pa, 0, 0);
    for (page* p : from1) pa.free_pages(p, 0);
    zone0_pcp_after = pcp_count(pa, 0, 0);
    zone1_pcp_after = pcp_count(pa, 1, 0);
    for (int i = 0; i < 16; ++i) again0.push_back(pa.alloc_pages(0));
  }));
  EXPECT_EQ(zone0_pcp_after, zone0_pcp_before) << "an alien free landed on node 0's list";
  EXPECT_EQ(zone1_pcp_after, 16) << "alien frees did not go back to node 1's zone";
  for (page* p : from0) {
    EXPECT_EQ(page_section(p)->node, 0);
    EXPECT_EQ(vm.call_for(page_address(p)).node, 0);
  }
  for (page* p : again0) EXPECT_EQ(page_section(p)->node, 0) << "node 0 reused an alien page";
  EXPECT_EQ(pcp_count(pa, 1, 0), 16);

  // An explicit node overrides the CPU's: node 1 from CPU 0.
  page* explicit1 = nullptr;
  ASSERT_TRUE(on_cpu(0, [&] { explicit1 = pa.alloc_pages(0, GFP_KERNEL, 1); }));
  ASSERT_NE(explicit1, nullptr);
  EXPECT_EQ(page_section(explicit1)->node, 1);

  // Drained, every node-1 page is free in zone 1 again.
  pa.free_pages(explicit1, 0);
  for (page* p : from0) pa.free_pages(p, 0);
  for (page* p : again0) pa.free_pages(p, 0);
  pa.drain_all_pages();
  EXPECT_EQ(pa.zone_of_node(1)->free_pages, MAX_ORDER_BYTES / PAGE_SIZE);
  EXPECT_EQ(pa.zone_of_node(0)->free_pages, MAX_ORDER_BYTES / PAGE_SIZE);
  EXPECT_TRUE(pa.validate());
  // One section per node, each bound once, to its own node.
  auto calls = vm.calls();
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_NE(calls[0].node, calls[1].node);
  pa.destroy();
}

TEST(NumaFake, SlabRefillsOfACpuComeFromItsNodesBoundSections) {
  if (platform::nr_cpu_ids() < 2) GTEST_SKIP() << "needs CPUs 0 and 1 (one per fake node)";
  fake_two_nodes topo;
  recording_vm vm;
  page_allocator pa;
  ASSERT_EQ(pa.init(fake_config(vm, 2)), 0);
  // A cache per CPU: a CPU whose node has no partial slab takes another node's before making
  // a new local slab (get_any_partial), so a shared cache would mix the two runs.
  for (unsigned cpu = 0; cpu < 2; ++cpu) {
    kmem_cache* s = kmem_cache_create_on(&pa, cpu ? "numa-refill-1" : "numa-refill-0", 64, 0,
                                         SLAB_NO_MERGE, nullptr);
    ASSERT_NE(s, nullptr);
    std::vector<void*> objs;
    if (!on_cpu(cpu, [&] {
          for (int i = 0; i < 100; ++i) objs.push_back(kmem_cache_alloc(s, 0));
        }))
      GTEST_SKIP() << "CPU " << cpu << " is not in this process's affinity mask";
    for (void* o : objs) {
      ASSERT_NE(o, nullptr);
      EXPECT_EQ(slab_nid(virt_to_slab(o)), static_cast<int>(cpu));
      EXPECT_EQ(vm.call_for(o).node, static_cast<int>(cpu));
    }
    for (void* o : objs) kmem_cache_free(s, o);
    kmem_cache_destroy(s);
  }
}

TEST(NumaFake, NoBindingWhenZonesAreNotTheMachinesNodesOrBindingIsOff) {
  fake_two_nodes topo;
  {
    // One zone on a two-node machine spans both: first touch decides, no binding.
    recording_vm vm;
    page_allocator pa;
    ASSERT_EQ(pa.init(fake_config(vm, 1)), 0);
    EXPECT_FALSE(pa.config().numa_bind);
    expect_unbound_and_destroy(pa, vm, NUMA_NO_NODE);
  }
  {
    recording_vm vm;
    page_allocator pa;
    page_alloc_config cfg = fake_config(vm, 2);
    cfg.numa_bind = false;
    ASSERT_EQ(pa.init(cfg), 0);
    expect_unbound_and_destroy(pa, vm, 1);
  }
}

// The real machine: every node's section reads back as MPOL_PREFERRED on that node, and a
// touched page sits on it.  (One node here: node 0 is all this can check.)
static void check_real_placement(page_allocator& pa, const char* what) {
  unsigned nodes = platform::nr_node_ids();
  ASSERT_EQ(pa.nr_zones(), nodes);
  for (unsigned n = 0; n < nodes; ++n) {
    page* p = pa.alloc_pages(0, GFP_KERNEL, static_cast<int>(n));
    ASSERT_NE(p, nullptr);
    char* addr = static_cast<char*>(page_address(p));
    addr[0] = 1;  // fault it in
    mem_section* sec = page_section(p);
    int mode = -1;
    unsigned long mask[1024 / (8 * sizeof(unsigned long))] = {};
    ASSERT_EQ(syscall(SYS_get_mempolicy, &mode, mask, 1024ul + 1, addr, MPOL_F_ADDR), 0)
        << strerror(errno);
    if (sec->bind_err == 0) {
      EXPECT_EQ(mode, MPOL_PREFERRED) << what << ", node " << n;
      for (unsigned i = 0; i < 1024; ++i)
        EXPECT_EQ((mask[i / 64] >> (i % 64)) & 1, i == n ? 1u : 0u) << what << ", bit " << i;
      int where = -1;
      ASSERT_EQ(syscall(SYS_get_mempolicy, &where, nullptr, 0ul, addr, MPOL_F_NODE | MPOL_F_ADDR),
                0);
      EXPECT_EQ(where, static_cast<int>(n)) << what << ": page not on its preferred node";
    } else {
      // mbind refused (a seccomp profile without CAP_SYS_NICE): the range keeps the default.
      fprintf(stderr, "NOTE %s: mbind refused (%s): no placement to read back\n", what,
              strerror(sec->bind_err));
      EXPECT_TRUE(sec->bind_err == EPERM || sec->bind_err == ENOSYS) << strerror(sec->bind_err);
      EXPECT_EQ(mode, MPOL_DEFAULT);
    }
    pa.free_pages(p, 0);
  }
}

TEST(NumaReal, PrivateAllocatorSectionsReadBackAsPreferredNode) {
  page_allocator pa;
  page_alloc_config cfg;  // the real vm_ops and the machine's node count
  cfg.decay_ms = 1000000;
  ASSERT_EQ(pa.init(cfg), 0);
  check_real_placement(pa, "private allocator");
  pa.drain_all_pages();
  pa.destroy();
}

TEST(NumaReal, GlobalAllocatorFollowsTheEnvironment) {
  page_alloc_config env = page_alloc_config::from_env();
  if (!env.numa_bind) {
    // USLUB_NUMA_BIND=0 or a numactl policy: nothing of ours may override it.
    page* p = global_page_allocator().alloc_pages(0);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(page_section(p)->bind_err, -1);
    global_page_allocator().free_pages(p, 0);
    return;
  }
  check_real_placement(global_page_allocator(), "global allocator");
}

TEST(NumaReal, ATaskPolicyTurnsBindingOff) {
  // set_mempolicy is per thread: a thread of its own, as numactl's policy would be inherited.
  bool refused = false, had = false, bind = true, after = true;
  std::thread t([&] {
    unsigned long mask = 1;  // node 0 exists on every machine
    if (syscall(SYS_set_mempolicy, MPOL_PREFERRED, &mask, 65ul) != 0) {
      refused = true;
      return;
    }
    had = platform::task_has_mempolicy();
    bind = page_alloc_config::from_env().numa_bind;
    syscall(SYS_set_mempolicy, MPOL_DEFAULT, nullptr, 0ul);
    after = platform::task_has_mempolicy();
  });
  t.join();
  if (refused) GTEST_SKIP() << "set_mempolicy refused here (no CAP_SYS_NICE under seccomp?)";
  EXPECT_TRUE(had);
  EXPECT_FALSE(bind);
  EXPECT_FALSE(after);
}

}  // namespace uslub::test
