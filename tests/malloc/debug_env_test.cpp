// USLUB_DEBUG on the drop-in malloc: the environment is read before main (the first malloc),
// so the parent test re-runs this executable with USLUB_DEBUG set and checks what the child
// printed (each child prints how many reports it saw, so a check for "no report" also proves
// the child ran): the report of an off-by-one write past malloc(40) inside kmalloc-48's slack, and
// the exit-time leak report of a block never freed, with its allocation stack; and
// USLUB_DOUBLE_FREE=0, which turns the always-on double-free check off.
#include <gtest/gtest.h>
#include <malloc.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <sched.h>
#include <unistd.h>

#include "process.hpp"
#include "test_support.hpp"

namespace {

using uslub::test::report_capture;

bool child() {
  return getenv("USLUB_DEBUG_TEST_CHILD") != nullptr;
}

// Output (stdout and stderr) of DebugEnvChild.<test> re-run with the environment env, then of
// the shell command `after`.
std::string run_child(const std::string& env, const char* test, const char* after = "") {
  return uslub::test::run_child_test(env, "USLUB_DEBUG_TEST_CHILD", "DebugEnvChild", test, after);
}

__attribute__((noinline)) void* leaky_function() {
  void* p = malloc(1000);
  asm volatile("" ::: "memory");
  return p;
}

TEST(DebugEnvChild, OverflowAndLeak) {
  if (!child()) GTEST_SKIP() << "run by DebugEnv.* with USLUB_DEBUG set";
  report_capture cap;
  auto* p = static_cast<unsigned char*>(malloc(40));
  printf("usable: %zu\n", malloc_usable_size(p));      // 40 when kmalloc-48 is debugged
  static_cast<volatile unsigned char*>(p)[40] = 0x41;  // volatile: not a dead store
  free(p);
  printf("child reports: %zu\n", cap.count());
  static void* volatile keep;
  keep = leaky_function();
}

// Frees a block twice on one CPU (pinned: the per-CPU sheaves then see both frees), then
// allocates twice and prints whether the block came back both times.
TEST(DebugEnvChild, DoubleFree) {
  if (!child()) GTEST_SKIP() << "run by DebugEnv.DoubleFree*";
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(sched_getcpu(), &one);
  ASSERT_EQ(sched_setaffinity(0, sizeof one, &one), 0);
  report_capture cap;
  void* keep = malloc(40);  // the slab stays a slab throughout
  void* p = malloc(40);
  free(p);
  free(p);
  void* a = malloc(40);
  void* b = malloc(40);
  printf("handed out twice: %d\n", a == p && b == p);
  printf("child reports: %zu\n", cap.count());
  static void* volatile sink[3];
  sink[0] = keep, sink[1] = a, sink[2] = b;  // (not freed: a and b may be one block)
}

// The same with another free between the two: not in a row, so the default's always-on
// compare passes it over (its sampled check may or may not see it); strict reports it.
TEST(DebugEnvChild, DoubleFreeApart) {
  if (!child()) GTEST_SKIP() << "run by DebugEnv.DoubleFree*";
  report_capture cap;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(sched_getcpu(), &one);
  ASSERT_EQ(sched_setaffinity(0, sizeof one, &one), 0);
  void* keep = malloc(40);
  void* p = malloc(40);
  void* q = malloc(40);
  static void* volatile escape;
  escape = q;  // (else the compiler drops q's malloc and free: p's frees would be in a row)
  free(p);
  free(escape);
  free(p);
  void* a = malloc(40);
  void* b = malloc(40);
  void* c = malloc(40);
  printf("handed out twice: %d\n", (a == p) + (b == p) + (c == p) > 1);
  printf("child reports: %zu\n", cap.count());
  static void* volatile sink[4];
  sink[0] = keep, sink[1] = a, sink[2] = b, sink[3] = c;
}

TEST(DebugEnv, DoubleFreeIsReportedByDefault) {
  if (child()) GTEST_SKIP();
  std::string out = run_child("USLUB_LEAK_REPORT=0", "DoubleFree");
  EXPECT_NE(out.find("uslub: BUG kmalloc-48: Object already free"), std::string::npos) << out;
  EXPECT_NE(out.find("Freed again at:"), std::string::npos) << "the culprit's stack\n" << out;
  EXPECT_NE(out.find("DoubleFree_Test::TestBody"), std::string::npos) << out;
  EXPECT_NE(out.find("handed out twice: 0"), std::string::npos) << out;
  EXPECT_NE(out.find("child reports: 1\n"), std::string::npos) << out;
  EXPECT_NE(out.find("[  PASSED  ] 1 test"), std::string::npos) << out;
}

// The documented price of USLUB_DOUBLE_FREE=0: nothing is reported and the block is handed
// out twice (what mimalloc's and jemalloc's defaults do); the proof that the free path no
// longer reads the block.
TEST(DebugEnv, DoubleFreeCheckOffHandsTheBlockOutTwice) {
  if (child()) GTEST_SKIP();
  std::string out = run_child("USLUB_DOUBLE_FREE=0 USLUB_LEAK_REPORT=0", "DoubleFreeApart");
  EXPECT_EQ(out.find("uslub: BUG"), std::string::npos) << out;
  EXPECT_NE(out.find("handed out twice: 1"), std::string::npos) << out;
  EXPECT_NE(out.find("child reports: 0\n"), std::string::npos) << out;
  EXPECT_NE(out.find("[  PASSED  ] 1 test"), std::string::npos) << out;
}

// USLUB_DOUBLE_FREE=strict: every free checks the key, so a double free apart is reported
// at its second free (with the stack of that free) and the block is handed out once.
TEST(DebugEnv, StrictReportsADoubleFreeApart) {
  if (child()) GTEST_SKIP();
  std::string out = run_child("USLUB_DOUBLE_FREE=strict USLUB_LEAK_REPORT=0", "DoubleFreeApart");
  EXPECT_NE(out.find("uslub: BUG kmalloc-48: Object already free"), std::string::npos) << out;
  EXPECT_NE(out.find("handed out twice: 0"), std::string::npos) << out;
  EXPECT_NE(out.find("child reports: 1\n"), std::string::npos) << out;
  EXPECT_NE(out.find("[  PASSED  ] 1 test"), std::string::npos) << out;
}

TEST(DebugEnv, MallocRedzoneAndLeakReport) {
  if (child()) GTEST_SKIP();
  std::string out = run_child("USLUB_DEBUG=FZPU", "OverflowAndLeak");
  EXPECT_NE(out.find("uslub: BUG kmalloc-48: Redzone overwritten"), std::string::npos) << out;
  EXPECT_NE(out.find("(requested 40)"), std::string::npos) << out;
  EXPECT_NE(out.find("usable: 40\n"), std::string::npos) << out;
  EXPECT_NE(out.find("First byte 0x41 instead of 0xcc"), std::string::npos) << out;
  EXPECT_NE(out.find("child reports: 1\n"), std::string::npos) << out;
  EXPECT_NE(out.find("uslub: leak report:"), std::string::npos) << out;
  auto leak = out.find("1000 bytes in 1 objects of kmalloc-1024 allocated from:");
  ASSERT_NE(leak, std::string::npos) << out;
  EXPECT_NE(out.find("leaky_function", leak), std::string::npos) << out;
  EXPECT_NE(out.find("[  PASSED  ] 1 test"), std::string::npos) << out;
}

TEST(DebugEnv, DisabledListAndAbort) {
  if (child()) GTEST_SKIP();
  // '-' for kmalloc-48: no report for the same bug; everything else still debugged.
  std::string out =
      run_child("USLUB_DEBUG='-,kmalloc-48;FZ' USLUB_LEAK_REPORT=0", "OverflowAndLeak");
  EXPECT_EQ(out.find("uslub: BUG"), std::string::npos) << out;
  EXPECT_NE(out.find("usable: 48\n"), std::string::npos) << "kmalloc-48 not debugged:\n" << out;
  EXPECT_NE(out.find("child reports: 0\n"), std::string::npos) << out;
  EXPECT_NE(out.find("[  PASSED  ] 1 test"), std::string::npos) << out;
  // USLUB_DEBUG_ABORT=1: the first report aborts the process.
  out = run_child("USLUB_DEBUG=Z USLUB_DEBUG_ABORT=1", "OverflowAndLeak", "; echo status=$?");
  EXPECT_NE(out.find("uslub: BUG kmalloc-48: Redzone overwritten"), std::string::npos) << out;
  EXPECT_EQ(out.find("[  PASSED  ]"), std::string::npos) << out;
  EXPECT_EQ(out.find("child reports:"), std::string::npos) << "aborted at the report:\n" << out;
  EXPECT_NE(out.find("status=134"), std::string::npos) << out;
}

}  // namespace
