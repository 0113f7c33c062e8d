// Heap profiles (src/kmalloc/prof.cpp) read by a real reader: a C program that keeps 100000
// blocks of 1000 bytes from one function and churns 200000 blocks of 200 bytes through another
// runs under `uslub run` with USLUB_PROF_SAMPLE=64K; google-pprof (Debian's google-perftools)
// must read the profile, name both functions and estimate what each allocated.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "process.hpp"

namespace {

using result = uslub::test::sh_result;
using uslub::test::sh;

// The MB figure google-pprof --text prints for fn ("  95.5 100.0% ... fn"), or -1.
double megabytes(const std::string& text, const std::string& fn) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() < fn.size() || line.compare(line.size() - fn.size(), fn.size(), fn) != 0)
      continue;
    return std::strtod(line.c_str(), nullptr);
  }
  return -1;
}

const char kProgram[] = R"(#include <stdio.h>
#include <stdlib.h>
void* volatile sink[100001];
__attribute__((noinline)) void keep_in_leaky_site(int n) {
  for (int i = 0; i < n; i++) sink[i] = malloc(1000);
}
__attribute__((noinline)) void churn_in_temp_site(int n) {
  for (int i = 0; i < n; i++) { void* p = malloc(200); sink[100000] = p; free(p); }
}
int main(int argc, char** argv) {
  keep_in_leaky_site(100000);
  churn_in_temp_site(200000);
  puts(argc > 1 ? "ready" : "done");
  fflush(stdout);
  if (argc > 1) getchar(); /* held open by the test: `uslub profile` meanwhile */
  return 0;
}
)";

}  // namespace

TEST(HeapProfile, GooglePprofReadsTheSampledProfile) {
  if (sh("command -v google-pprof").status != 0) GTEST_SKIP() << "google-pprof not installed";
  std::string dir = ::testing::TempDir() + "uslub_prof_" + std::to_string(getpid());
  ASSERT_EQ(sh("mkdir -p " + dir).status, 0);
  std::ofstream(dir + "/p.c") << kProgram;
  if (sh("cc -O1 -g -o " + dir + "/p " + dir + "/p.c 2>&1").status != 0)
    GTEST_SKIP() << "no C compiler";
  result run = sh("USLUB_PROF=" + dir +
                  "/heap.%p USLUB_PROF_SAMPLE=64K " USLUB_CLI_PATH " run -- " + dir + "/p 2>&1");
  ASSERT_EQ(run.status, 0) << run.out;
  EXPECT_EQ(run.out, "done\n");
  std::string profile = sh("ls " + dir + "/heap.*").out;
  ASSERT_FALSE(profile.empty());
  profile = profile.substr(0, profile.find('\n'));
  std::string head = sh("head -1 " + profile).out;
  EXPECT_EQ(head.rfind("heap profile: ", 0), 0u) << head;
  EXPECT_NE(head.find("@ heap_v2/65536"), std::string::npos) << head;

  // In use at exit: the kept blocks only (100000 x 1000 B = 95.4 MiB).
  result inuse = sh("google-pprof --text " + dir + "/p " + profile + " 2>&1");
  ASSERT_EQ(inuse.status, 0) << inuse.out;
  double kept = megabytes(inuse.out, "keep_in_leaky_site");
  EXPECT_GT(kept, 95.4 * 0.8) << inuse.out;
  EXPECT_LT(kept, 95.4 * 1.2) << inuse.out;
  EXPECT_LT(megabytes(inuse.out, "churn_in_temp_site"), 1.0) << inuse.out;
  // Allocated in all: both sites (churn: 200000 x 200 B = 38.1 MiB).
  result alloc = sh("google-pprof --text --alloc_space " + dir + "/p " + profile + " 2>&1");
  double churn = megabytes(alloc.out, "churn_in_temp_site");
  EXPECT_GT(churn, 38.1 * 0.7) << alloc.out;
  EXPECT_LT(churn, 38.1 * 1.3) << alloc.out;
  // Objects in use: 100000 from the kept site.
  result objs = sh("google-pprof --text --inuse_objects " + dir + "/p " + profile + " 2>&1");
  EXPECT_NE(objs.out.find("keep_in_leaky_site"), std::string::npos) << objs.out;
  sh("rm -rf " + dir);
}

// `uslub profile PID` while the program runs: the publisher thread writes the profile.
TEST(HeapProfile, OnDemandFromAnotherProcess) {
  if (sh("command -v google-pprof").status != 0) GTEST_SKIP() << "google-pprof not installed";
  std::string dir = ::testing::TempDir() + "uslub_prof_live_" + std::to_string(getpid());
  ASSERT_EQ(sh("mkdir -p " + dir).status, 0);
  std::ofstream(dir + "/p.c") << kProgram;
  if (sh("cc -O1 -g -o " + dir + "/p " + dir + "/p.c 2>&1").status != 0)
    GTEST_SKIP() << "no C compiler";
  // The program waits on a FIFO this test holds; its pid comes from the shell's exec.
  std::string fifo = dir + "/in";
  ASSERT_EQ(sh("mkfifo " + fifo).status, 0);
  FILE* prog = popen(("exec " USLUB_CLI_PATH " run --prof=64K -- " + dir + "/p wait < " + fifo +
                      " & echo $!; wait")
                         .c_str(),
                     "r");
  ASSERT_NE(prog, nullptr);
  FILE* in = fopen(fifo.c_str(), "w");  // unblocks the program's open of its stdin
  ASSERT_NE(in, nullptr);
  char line[64] = "";
  ASSERT_NE(fgets(line, sizeof line, prog), nullptr);
  std::string pid(line, strcspn(line, "\n"));
  ASSERT_NE(fgets(line, sizeof line, prog), nullptr);
  EXPECT_STREQ(line, "ready\n");
  result r = sh(USLUB_CLI_PATH " profile " + pid + " -o " + dir + "/live.heap 2>&1");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out, dir + "/live.heap\n");
  result text = sh("google-pprof --text " + dir + "/p " + dir + "/live.heap 2>&1");
  double kept = megabytes(text.out, "keep_in_leaky_site");
  EXPECT_GT(kept, 95.4 * 0.8) << text.out;
  EXPECT_LT(kept, 95.4 * 1.2) << text.out;
  fputs("\n", in);
  fclose(in);
  pclose(prog);
  // A process that does not profile says so.
  result off =
      sh(USLUB_CLI_PATH " run -- sleep 5 & q=$!; sleep 0.5; " USLUB_CLI_PATH " profile $q -o " +
         dir + "/none 2>&1; kill $q");
  EXPECT_NE(off.out.find("does not profile"), std::string::npos) << off.out;
  sh("rm -rf " + dir);
}

// Off by default: no profile is written and the program runs as before.
TEST(HeapProfile, OffWithoutASampleRate) {
  std::string path = ::testing::TempDir() + "uslub_prof_off_" + std::to_string(getpid());
  result r = sh("USLUB_PROF=" + path + " " USLUB_CLI_PATH " run -- true 2>&1");
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(access(path.c_str(), F_OK), 0);
}
