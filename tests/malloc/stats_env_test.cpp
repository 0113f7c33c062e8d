// What a user sees, end to end, through the real `uslub` command (build/tools/uslub) and real
// programs: USLUB_STATS at exit (text, all, JSON), reports in USLUB_LOG with %p, the report
// when the program closed stderr (coreutils' sort does), the option check and USLUB_VERBOSE,
// the CLI's flags, and `uslub stat` / `uslub top` reading a running sort from another process;
// and in this process (every malloc here is uslub's) mallinfo2 / mallinfo / malloc_info /
// mallopt.
#include <gtest/gtest.h>
#include <malloc.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uslub/stats.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "process.hpp"

namespace {

const std::string kCli = USLUB_CLI_PATH;

using result = uslub::test::sh_result;
using uslub::test::read_file;
using uslub::test::sh;

std::string tmp(const std::string& name) {
  return ::testing::TempDir() + "uslub_stats_env_" + std::to_string(getpid()) + "_" + name;
}

// A file of n lines for sort.
std::string lines_file(int n) {
  std::string f = tmp("lines.txt");
  std::ofstream out(f);
  unsigned x = 7;
  for (int i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345u;
    out << (x >> 8) % 100003 << " some text to make the line longer " << i << "\n";
  }
  return f;
}

bool has(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

}  // namespace

TEST(StatsCli, HelpExitsZeroAndUnknownFlagIsAnError) {
  result help = sh(kCli + " --help");
  EXPECT_EQ(help.status, 0);
  EXPECT_TRUE(has(help.out, "uslub run")) << help.out;
  EXPECT_TRUE(has(help.out, "--kfence=N")) << help.out;
  std::string marker = tmp("ran");
  result bad = sh(kCli + " run --bogus touch " + marker + " 2>&1");
  EXPECT_EQ(bad.status, 2);
  EXPECT_TRUE(has(bad.out, "unknown option --bogus")) << bad.out;
  struct stat st;
  EXPECT_NE(stat(marker.c_str(), &st), 0) << "the program must not run";
  EXPECT_EQ(sh(kCli + " frobnicate 2>/dev/null").status, 2);
  EXPECT_EQ(sh(kCli + " 2>/dev/null").status, 2);
}

// Before: USLUB_STATS=1 under sort printed nothing (sort closes stderr at exit), and the
// report was the bare slabinfo table.
TEST(StatsCli, StatsAtExitOfSortEvenWithStderrClosed) {
  std::string in = lines_file(20000);
  std::string err = tmp("sort.err");
  result r = sh(kCli + " run --stats -- sort " + in + " 2>" + err + " | tail -1");
  ASSERT_EQ(r.status, 0);
  std::string text = read_file(err);
  EXPECT_TRUE(has(text, "uslub: statistics of sort (pid ")) << text;
  for (const char* k :
       {"allocated", "active", "resident", "committed", "metadata", "rss", "returned to the OS",
        "allocations ", "slabinfo - version: 2.1", "<sheaf_objs>"})
    EXPECT_TRUE(has(text, k)) << k << "\n" << text;
  // Empty caches are hidden: every table row has objects.
  std::istringstream rows(text.substr(text.find("# name")));
  std::string row;
  std::getline(rows, row);
  int n = 0;
  while (std::getline(rows, row)) {
    std::istringstream f(row);
    std::string name;
    unsigned long active, num;
    f >> name >> active >> num;
    EXPECT_GT(num, 0u) << row;
    ++n;
  }
  EXPECT_GT(n, 2);
  std::string all = sh("USLUB_STATS=all " + kCli + " run -- sort " + in + " 2>&1 >/dev/null").out;
  EXPECT_GT(std::count(all.begin(), all.end(), '\n'), std::count(text.begin(), text.end(), '\n'));
}

TEST(StatsCli, JsonParses) {
  if (sh("command -v python3").status != 0) GTEST_SKIP() << "no python3";
  std::string in = lines_file(5000);
  std::string js = tmp("stats.json");
  result r = sh(kCli + " run --stats=json -- sort " + in + " 2>" + js + " >/dev/null");
  ASSERT_EQ(r.status, 0);
  result py =
      sh("python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); "
         "s=d[\"summary\"]; assert d[\"program\"]==\"sort\"; "
         "assert s[\"allocated\"]>0 and s[\"committed\"]>=s[\"resident\"]; "
         "assert s[\"allocations\"]>0 and s[\"allocations\"]>=s[\"frees\"]; "
         "assert any(c[\"name\"].startswith(\"kmalloc-\") and c[\"active_objs\"]>0 "
         "for c in d[\"caches\"]); print(\"ok\")' " +
         js + " 2>&1");
  EXPECT_EQ(py.out, "ok\n") << read_file(js);
}

TEST(StatsCli, LogWithPidGetsStatsAndBugs) {
  std::string dir = tmp("logdir");
  mkdir(dir.c_str(), 0755);
  sh("rm -f " + dir + "/log.*");
  std::string in = lines_file(1000);
  result r = sh(kCli + " run --stats --log=" + dir + "/log.%p -- sort " + in + " >/dev/null");
  ASSERT_EQ(r.status, 0);
  std::string name = sh("ls " + dir).out;  // one file: log.<pid of sort>
  ASSERT_EQ(name.rfind("log.", 0), 0u) << name;
  std::string pid = name.substr(4, name.find('\n') - 4);
  std::string text = read_file(dir + "/" + name.substr(0, name.find('\n')));
  EXPECT_TRUE(has(text, "uslub: statistics of sort (pid " + pid + ")")) << text;
  // BUG reports and the leak report go there too (a double free under U tracking: this
  // executable's DebugEnvChild-style child is not needed, python is not either: the report
  // comes from the library whatever the program).
  std::string bug_log = dir + "/bug.%p";
  std::string src = tmp("df.c"), exe = tmp("df");
  std::ofstream(src) << "#include <stdlib.h>\nint main(void){ void* volatile keep = malloc(77);"
                        " char* p = malloc(40); free(p); free(p); (void)keep; return 0; }\n";
  if (sh("cc -O0 -o " + exe + " " + src + " 2>&1").status != 0) GTEST_SKIP() << "no C compiler";
  r = sh(kCli + " run --debug=U --log=" + bug_log + " -- " + exe + " 2>&1");
  std::string bugs = sh("cat " + dir + "/bug.*").out;
  EXPECT_TRUE(has(bugs, "uslub: BUG kmalloc-")) << bugs << r.out;
  EXPECT_TRUE(has(bugs, "leak report")) << bugs;
  EXPECT_FALSE(has(r.out, "uslub:")) << "nothing on stderr: " << r.out;
}

TEST(StatsCli, KfenceAndDebugFlags) {
  std::string in = lines_file(3000);
  std::string out = sh(kCli + " run --kfence=1 --stats -- sort " + in + " 2>&1 >/dev/null").out;
  EXPECT_TRUE(has(out, "kfence: ")) << out;
  std::string verbose = sh(kCli + " run --verbose --debug=F -- true 2>&1").out;
  EXPECT_TRUE(has(verbose, "USLUB_DEBUG              F")) << verbose;
  EXPECT_TRUE(has(verbose, "USLUB_VERBOSE            1            (set)")) << verbose;
}

TEST(StatsOptions, UnknownNameAndBadValueWarnOnceWithTheNearest) {
  std::string out = sh("USLUB_STAT=1 USLUB_DOUBLE_FREE=maybe USLUB_FASTPATH=cpuslb "
                       "USLUB_MEMORY_LIMIT=12X USLUB_NOMERGE=yes USLUB_RSEQ=off " +
                       kCli + " run -- true 2>&1")
                        .out;
  EXPECT_TRUE(has(out, "uslub: unknown option USLUB_STAT (did you mean USLUB_STATS?)")) << out;
  EXPECT_TRUE(has(out, "USLUB_DOUBLE_FREE=maybe: not a yes/no value")) << out;
  EXPECT_TRUE(has(out, "USLUB_FASTPATH=cpuslb: not one of sheaf|cpuslab (nearest: cpuslab)"))
      << out;
  EXPECT_TRUE(has(out, "USLUB_MEMORY_LIMIT=12X: not a size")) << out;
  EXPECT_FALSE(has(out, "USLUB_NOMERGE")) << out;
  EXPECT_FALSE(has(out, "USLUB_RSEQ")) << out;
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 4) << out;
}

// `uslub options` lists every option once, and docs/guide.md has the same table.
TEST(StatsOptions, OptionsCommandMatchesTheGuide) {
  result r = sh(kCli + " options");
  ASSERT_EQ(r.status, 0);
  for (const char* o : {"USLUB_STATS ", "USLUB_STATS_SHM", "USLUB_LOG", "USLUB_VERBOSE",
                        "USLUB_DEBUG ", "USLUB_KFENCE_SAMPLE", "USLUB_MEMORY_LIMIT"})
    EXPECT_TRUE(has(r.out, o)) << o;
  EXPECT_FALSE(has(r.out, "USLUB_TEST_QUICK"));
  std::string table = sh(kCli + " options --markdown").out;
  std::string guide = read_file(std::string(USLUB_SOURCE_DIR) + "/docs/guide.md");
  EXPECT_TRUE(has(guide, table)) << "docs/guide.md must contain `uslub options --markdown`:\n"
                                 << table;
}

// A real program (sort, fed through a pipe this test holds open) read from another process.
TEST(StatsCli, StatAndTopReadARunningProgram) {
  int in[2], out[2];
  ASSERT_EQ(pipe(in), 0);
  ASSERT_EQ(pipe(out), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    close(in[1]);
    close(out[0]);
    execl(kCli.c_str(), kCli.c_str(), "run", "--", "sort", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  std::string data;
  for (int i = 0; i < 50000; ++i) data += std::to_string(i * 7919 % 50021) + " a line of text\n";
  ASSERT_EQ(write(in[1], data.data(), data.size()), static_cast<ssize_t>(data.size()));
  std::string shm = "/dev/shm/uslub." + std::to_string(pid);
  struct stat st;
  for (int i = 0; i < 200 && stat(shm.c_str(), &st) != 0; ++i) usleep(10000);
  ASSERT_EQ(stat(shm.c_str(), &st), 0) << shm;
  std::string p = std::to_string(pid);
  result s = sh(kCli + " stat " + p);
  EXPECT_EQ(s.status, 0);
  EXPECT_TRUE(has(s.out, "uslub: statistics of sort (pid " + p + ")")) << s.out;
  EXPECT_TRUE(has(s.out, "slabinfo - version: 2.1")) << s.out;
  // sort holds the 50000 lines: their kmalloc class is active.
  EXPECT_TRUE(has(s.out, "kmalloc-")) << s.out;
  if (sh("command -v python3").status == 0) {
    result j = sh(kCli + " stat " + p +
                  " --json | python3 -c 'import json,sys; d=json.load(sys.stdin); "
                  "print(d[\"pid\"], d[\"summary\"][\"allocated\"] > 50000 * 16)'");
    EXPECT_EQ(j.out, p + " True\n");
  }
  result t = sh(kCli + " top " + p + " --iterations 2 --interval 0.2 </dev/null");
  EXPECT_EQ(t.status, 0);
  EXPECT_TRUE(has(t.out, "uslub top - pid " + p)) << t.out;
  EXPECT_TRUE(has(t.out, "ACT SIZE  NAME")) << t.out;
  // Sorted by active size: the first row is the largest.
  {
    std::istringstream rows(t.out.substr(t.out.find("NAME\n") + 5));
    std::string row;
    unsigned long long last = ~0ull;
    int n = 0;
    while (std::getline(rows, row) && !row.empty()) {
      std::istringstream f(row);
      unsigned long long objs, active, size;
      std::string use;
      f >> objs >> active >> use >> size;
      EXPECT_LE(active * size, last) << t.out;
      last = active * size;
      ++n;
    }
    EXPECT_GT(n, 3) << t.out;
  }
  // q quits a top that would otherwise run forever.
  result q = sh("echo q | timeout 20 " + kCli + " top " + p + " --interval 0.2");
  EXPECT_EQ(q.status, 0) << q.out;
  // End of input: sort prints and exits; its segment goes with it.
  close(in[1]);
  std::string sorted;
  char buf[65536];
  for (ssize_t n; (n = read(out[0], buf, sizeof buf)) > 0;)
    sorted.append(buf, static_cast<size_t>(n));
  close(out[0]);
  int status;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(sorted.size(), data.size());
  EXPECT_NE(stat(shm.c_str(), &st), 0) << "removed at exit";
  result gone = sh(kCli + " stat " + p + " 2>&1");
  EXPECT_NE(gone.status, 0);
}

// `uslub run` publishes; USLUB_STATS_SHM=0 (--no-shm) and the bare library do not, and then
// the program stays single-threaded (unshare -U refuses a multithreaded process).
TEST(StatsCli, ShmOnlyWhenAsked) {
  const std::string probe =
      " -- python3 -c 'import os,time; time.sleep(0.3); "
      "print(os.path.exists(\"/dev/shm/uslub.%d\" % os.getpid()))'";
  if (sh("command -v python3").status != 0) GTEST_SKIP() << "no python3";
  EXPECT_EQ(sh(kCli + " run" + probe).out, "True\n");
  EXPECT_EQ(sh(kCli + " run --no-shm" + probe).out, "False\n");
  EXPECT_EQ(sh("USLUB_STATS_SHM=0 " + kCli + " run" + probe).out, "False\n");
  std::string bare = probe.substr(4);
  EXPECT_EQ(sh("LD_PRELOAD=" USLUB_SO_PATH " " + bare).out, "False\n");
  // A shell that ends with _exit (dash) leaves its file; the next publisher removes it.
  std::string pid = sh(kCli + " run -- sh -c 'sleep 0.2; echo $$'").out;
  pid = pid.substr(0, pid.find('\n'));
  sh(kCli + " run -- sleep 0.3");
  struct stat st;
  EXPECT_NE(stat(("/dev/shm/uslub." + pid).c_str(), &st), 0) << pid;
  if (sh("unshare -U true 2>/dev/null").status == 0) {
    EXPECT_EQ(sh("LD_PRELOAD=" USLUB_SO_PATH " unshare -U true").status, 0);
    EXPECT_EQ(sh(kCli + " run --no-shm -- unshare -U true").status, 0);
  }
}

// In this process: the glibc statistics entry points, fed from uslub_stats_get.
TEST(StatsMalloc, MallinfoFollowsAllocations) {
  struct mallinfo2 a = mallinfo2();
  std::vector<void*> v;
  for (int i = 0; i < 10000; ++i) v.push_back(malloc(1000));
  struct mallinfo2 b = mallinfo2();
  EXPECT_GE(b.uordblks, a.uordblks + 10000u * 1000u);
  EXPECT_GE(b.arena, b.uordblks);
  EXPECT_EQ(b.fordblks, b.arena - b.uordblks);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  struct mallinfo old = mallinfo();
#pragma GCC diagnostic pop
  EXPECT_GE(static_cast<size_t>(old.uordblks), 10000u * 1000u);
  for (void* p : v) free(p);
  struct mallinfo2 c = mallinfo2();
  EXPECT_LE(c.uordblks + 10000u * 1000u / 2, b.uordblks);
  void* volatile huge = malloc(64 << 20);
  EXPECT_GE(mallinfo2().hblkhd, size_t{64} << 20);
  free(huge);
}

TEST(StatsMalloc, MallocInfoIsGlibcXml) {
  char* buf = nullptr;
  size_t len = 0;
  FILE* f = open_memstream(&buf, &len);
  ASSERT_EQ(malloc_info(0, f), 0);
  fclose(f);
  std::string xml(buf, len);
  free(buf);
  EXPECT_EQ(xml.rfind("<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n", 0), 0u) << xml;
  EXPECT_TRUE(has(xml, "<system type=\"current\" size=\"")) << xml;
  EXPECT_TRUE(has(xml, "<total type=\"mmap\" count=\"0\"")) << xml;
  EXPECT_TRUE(xml.size() > 10 && xml.substr(xml.size() - 10) == "</malloc>\n") << xml;
  if (sh("command -v python3").status == 0) {
    std::string path = tmp("info.xml");
    std::ofstream(path) << xml;
    EXPECT_EQ(sh("python3 -c 'import sys, xml.etree.ElementTree as E; "
                 "r=E.parse(sys.argv[1]).getroot(); print(r.tag, r.find(\"heap\").get(\"nr\"))' " +
                 path)
                  .out,
              "malloc 0\n");
  }
  errno = 0;
  EXPECT_EQ(malloc_info(1, stdout), -1);
  EXPECT_EQ(errno, EINVAL);
}

TEST(StatsMalloc, MalloptAcceptsGlibcParameters) {
  EXPECT_EQ(mallopt(M_ARENA_MAX, 2), 1);
  EXPECT_EQ(mallopt(M_MMAP_THRESHOLD, 1 << 20), 1);
  EXPECT_EQ(mallopt(M_TRIM_THRESHOLD, 1 << 20), 1);
  EXPECT_EQ(mallopt(M_MXFAST, 64), 1);
  EXPECT_EQ(mallopt(M_MXFAST, 100000), 0);
  EXPECT_EQ(mallopt(12345, 1), 0);
  EXPECT_EQ(mallopt(M_CHECK_ACTION, 0), 1);
}
