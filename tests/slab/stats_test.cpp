// Statistics of the slab layer (src/slab/stats.cpp, <uslub/stats.h>): objects parked in the
// per-CPU sheaves are free, not active (their own column); the summary and per-cache
// iteration agree with what was allocated; the versioned struct is filled only as far as the
// caller's size; the report hides empty caches unless asked, and its JSON form parses.
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <uslub/slab.h>
#include <uslub/stats.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"

namespace uslub::test {

namespace {

kmem_cache_info info_of(kmem_cache* s) {
  kmem_cache_info in;
  kmem_cache_get_info(s, &in);
  return in;
}

struct found {
  const char* name;
  uslub_cache_stats cs;
  bool seen;
};

int find_cache(const uslub_cache_stats* cs, void* arg) {
  auto* f = static_cast<found*>(arg);
  if (strcmp(cs->name, f->name) != 0) return 0;
  f->cs = *cs;
  f->seen = true;
  return 1;  // stop
}

std::string report(int flags) {
  char path[] = "/tmp/uslub_stats_XXXXXX";
  int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(uslub_stats_print(fd, flags), 0);
  std::string out;
  char buf[4096];
  lseek(fd, 0, SEEK_SET);
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  close(fd);
  unlink(path);
  return out;
}

}  // namespace

// Before: active_objs counted the objects freed into the sheaves as in use.
TEST(SlabStats, SheafParkedObjectsAreNotActive) {
  kmem_cache* s = kmem_cache_create("stats-sheaf", 64, 0, SLAB_NO_MERGE | SLAB_SHEAVES, nullptr);
  ASSERT_NE(s, nullptr);
  ASSERT_GT(info_of(s).sheaf_capacity, 0u);
  std::vector<void*> v;
  for (int i = 0; i < 1000; ++i) v.push_back(kmem_cache_alloc(s, 0));
  auto full = info_of(s);
  EXPECT_GE(full.active_objs, 1000u);
  for (void* p : v) kmem_cache_free(s, p);
  auto in = info_of(s);
  EXPECT_GT(in.sheaf_objs, 0u) << "frees fill this CPU's sheaves first";
  EXPECT_EQ(in.active_objs, 0u) << "sheaf_objs " << in.sheaf_objs << " num_objs " << in.num_objs;
  EXPECT_LE(in.sheaf_objs, in.num_objs);
  found f{"stats-sheaf", {}, false};
  EXPECT_GT(uslub_cache_stats_for_each(&find_cache, &f), 0);
  ASSERT_TRUE(f.seen);
  EXPECT_EQ(f.cs.active_objs, 0u);
  EXPECT_EQ(f.cs.sheaf_objs, in.sheaf_objs);
  EXPECT_EQ(f.cs.size_class, 64u);
  kmem_cache_destroy(s);
}

TEST(SlabStats, SummaryFollowsAllocations) {
  kmem_cache* s = kmem_cache_create("stats-summary", 1000, 0, SLAB_NO_MERGE | SLAB_STATS, nullptr);
  uslub_stats before{};
  before.version = USLUB_STATS_VERSION;
  before.size = sizeof before;
  ASSERT_EQ(uslub_stats_get(&before), 0);
  EXPECT_EQ(before.version, unsigned{USLUB_STATS_VERSION});
  EXPECT_EQ(before.pid, getpid());
  std::vector<void*> v;
  for (int i = 0; i < 10000; ++i) v.push_back(kmem_cache_alloc(s, 0));
  uslub_stats after{};
  after.version = USLUB_STATS_VERSION;
  after.size = sizeof after;
  ASSERT_EQ(uslub_stats_get(&after), 0);
  EXPECT_GE(after.allocated, before.allocated + 10000u * 1000u);
  EXPECT_GE(after.active, after.allocated - after.huge_bytes - (1u << 20));
  EXPECT_GE(after.committed, after.resident);
  EXPECT_GE(after.peak_allocated, after.allocated);
  EXPECT_GE(after.peak_committed, after.committed);
  EXPECT_GT(after.metadata, 0u);
  EXPECT_GT(after.rss, 0u);
  EXPECT_GE(after.peak_rss, after.rss);
  found f{"stats-summary", {}, false};
  uslub_cache_stats_for_each(&find_cache, &f);
  ASSERT_TRUE(f.seen);
  EXPECT_EQ(f.cs.counted, 1u);
  EXPECT_EQ(f.cs.allocations, 10000u);
  EXPECT_EQ(f.cs.frees, 0u);
  for (void* p : v) kmem_cache_free(s, p);
  uslub_cache_stats_for_each(&find_cache, &f);
  EXPECT_EQ(f.cs.frees, 10000u);
  kmem_cache_destroy(s);
}

TEST(SlabStats, VersionedStructFilledOnlyAsFarAsItsSize) {
  EXPECT_EQ(uslub_stats_get(nullptr), -1);
  uslub_stats st{};
  st.version = 0;
  st.size = sizeof st;
  errno = 0;
  EXPECT_EQ(uslub_stats_get(&st), -1);
  EXPECT_EQ(errno, EINVAL);
  // A caller compiled against a shorter struct: nothing past its size is written.
  unsigned char buf[sizeof(uslub_stats) + 16];
  memset(buf, 0xab, sizeof buf);
  auto* p = reinterpret_cast<uslub_stats*>(buf);
  p->version = USLUB_STATS_VERSION;
  p->size = offsetof(uslub_stats, rss);
  ASSERT_EQ(uslub_stats_get(p), 0);
  EXPECT_EQ(p->size, offsetof(uslub_stats, rss));
  for (size_t i = offsetof(uslub_stats, rss); i < sizeof buf; ++i) ASSERT_EQ(buf[i], 0xab) << i;
  EXPECT_GT(p->committed, 0u);
}

TEST(SlabStats, ReportHidesEmptyCachesUnlessAll) {
  kmem_cache* empty = kmem_cache_create("stats-empty", 24, 0, SLAB_NO_MERGE, nullptr);
  kmem_cache* used = kmem_cache_create("stats-used", 24, 0, SLAB_NO_MERGE, nullptr);
  void* o = kmem_cache_alloc(used, 0);
  std::string text = report(0);
  EXPECT_NE(text.find("uslub: statistics of"), std::string::npos) << text;
  EXPECT_NE(text.find("slabinfo - version: 2.1"), std::string::npos);
  EXPECT_NE(text.find("\nstats-used "), std::string::npos) << text;
  EXPECT_EQ(text.find("\nstats-empty "), std::string::npos) << text;
  std::string all = report(USLUB_STATS_ALL);
  EXPECT_NE(all.find("\nstats-empty "), std::string::npos);
  std::string json = report(USLUB_STATS_JSON);
  EXPECT_EQ(json.front(), '{');
  EXPECT_NE(json.find("\"summary\": {"), std::string::npos);
  EXPECT_NE(json.find("{\"name\": \"stats-used\""), std::string::npos);
  EXPECT_EQ(json.find("{\"name\": \"stats-empty\""), std::string::npos);
  EXPECT_NE(report(USLUB_STATS_JSON | USLUB_STATS_ALL).find("{\"name\": \"stats-empty\""),
            std::string::npos);
  if (system("command -v python3 >/dev/null 2>&1") == 0) {
    char path[] = "/tmp/uslub_stats_json_XXXXXX";
    int fd = mkstemp(path);
    ASSERT_EQ(write(fd, json.data(), json.size()), static_cast<ssize_t>(json.size()));
    close(fd);
    std::string cmd = std::string(
                          "python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); "
                          "assert d[\"summary\"][\"committed\"] > 0; "
                          "assert any(c[\"name\"] == \"stats-used\" for c in "
                          "d[\"caches\"])' ") +
                      path;
    EXPECT_EQ(system(cmd.c_str()), 0) << json;
    unlink(path);
  }
  kmem_cache_free(used, o);
  kmem_cache_destroy(used);
  kmem_cache_destroy(empty);
}

// Snapshots while other threads allocate and free: the walks of sheaves, CPU freelists and
// CPU partial lists stay bounded and the figures consistent (run under TSan by the sanitizer
// builds).
TEST(SlabStats, SnapshotsDuringTraffic) {
  kmem_cache* a = kmem_cache_create("stats-traffic-sheaf", 96, 0, SLAB_NO_MERGE, nullptr);
  kmem_cache* b =
      kmem_cache_create("stats-traffic-cpuslab", 96, 0, SLAB_NO_MERGE | SLAB_NO_SHEAVES, nullptr);
  std::atomic<bool> stop{false};
  auto churn = [&](kmem_cache* s, unsigned seed) {
    std::vector<void*> live;
    while (!stop.load(std::memory_order_relaxed)) {
      seed = seed * 1103515245u + 12345u;
      if (live.size() < 3000 && (seed >> 16) % 3 != 0) {
        if (void* p = kmem_cache_alloc(s, 0)) live.push_back(p);
      } else if (!live.empty()) {
        std::size_t i = (seed >> 8) % live.size();
        kmem_cache_free(s, live[i]);
        live[i] = live.back();
        live.pop_back();
      }
    }
    for (void* p : live) kmem_cache_free(s, p);
  };
  std::thread t1(churn, a, 1u), t2(churn, b, 2u), t3(churn, a, 3u);
  for (int i = 0; i < 300; ++i) {
    uslub_stats st{};
    st.version = USLUB_STATS_VERSION;
    st.size = sizeof st;
    ASSERT_EQ(uslub_stats_get(&st), 0);
    EXPECT_GE(st.committed, st.resident);
    for (kmem_cache* s : {a, b}) {
      kmem_cache_info in = info_of(s);
      EXPECT_LE(in.active_objs + in.sheaf_objs, in.num_objs + 2 * 512u) << in.name;
      EXPECT_LE(in.active_objs, 6000u + 512u) << in.name;
    }
  }
  stop = true;
  t1.join();
  t2.join();
  t3.join();
  EXPECT_EQ(info_of(b).active_objs, 0u);
  kmem_cache_destroy(a);
  kmem_cache_destroy(b);
}

}  // namespace uslub::test
