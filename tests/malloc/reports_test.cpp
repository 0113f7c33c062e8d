// Reports that point at the culprit, checked on real runs: the test re-runs this executable with
// the environment set (USLUB_DEBUG is read before main) and checks what the child printed.
//  - a double free under slub_debug U names the allocation, the first free and the second free
//    (the culprit), each stack symbolised to the function that made the call;
//  - KFENCE reports are symbolised the same way (function names, no bare module+offset
//    frames), inside the SIGSEGV handler too, and name each site once;
//  - the leak report leaves out the C library's own buffers (stdio, locale, dlopen) and what a
//    USLUB_LEAK_SUPPRESS file names.
#include <gtest/gtest.h>

#include <dlfcn.h>
#include <unistd.h>

#include <array>
#include <clocale>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>

#include "kfence/kfence.hpp"
#include "process.hpp"
#include "test_support.hpp"

namespace {

bool child() {
  return getenv("REPORTS_TEST_CHILD") != nullptr;
}

std::string run_child(const std::string& env, const char* test, const char* after = "") {
  return uslub::test::run_child_test(env, "REPORTS_TEST_CHILD", "ReportsChild", test, after);
}

// Position of `what` at or after `from`, or npos.
size_t at(const std::string& out, const char* what, size_t from = 0) {
  return from == std::string::npos ? std::string::npos : out.find(what, from);
}

// The lines of one stack: from `from` to the next line that is not a frame ("    #").
std::string stack_after(const std::string& out, size_t from) {
  if (from == std::string::npos) return {};
  size_t b = out.find('\n', from);
  size_t e = b;
  while (e != std::string::npos && out.compare(e + 1, 5, "    #") == 0) e = out.find('\n', e + 1);
  return b == std::string::npos ? std::string{} : out.substr(b + 1, e - b);
}

}  // namespace

extern "C" {
__attribute__((noinline)) void* reports_allocating_site(size_t n) {
  void* p = malloc(n);
  asm volatile("" ::: "memory");
  return p;
}
__attribute__((noinline)) void reports_first_free_site(void* p) {
  free(p);
  asm volatile("" ::: "memory");
}
__attribute__((noinline)) void reports_second_free_site(void* p) {
  free(p);
  asm volatile("" ::: "memory");
}
__attribute__((noinline)) int reports_leaking_comparator(const void* a, const void* b) {
  static void* volatile keep;
  if (!keep) keep = malloc(333);  // called back from inside qsort: still the program's leak
  return *static_cast<const int*>(a) - *static_cast<const int*>(b);
}
__attribute__((noinline)) int reports_reading_site(const volatile char* p) {
  return p[3];
}
}

namespace {

TEST(ReportsChild, DoubleFree) {
  if (!child()) GTEST_SKIP() << "run by Reports.* with the environment set";
  uslub::test::report_capture cap;  // this child provokes its report
  void* p = reports_allocating_site(40);
  reports_first_free_site(p);
  reports_second_free_site(p);
}

TEST(Reports, DoubleFreeUnderTrackingNamesAllocationFirstFreeAndCulprit) {
  if (child()) GTEST_SKIP();
  for (const char* letters : {"U", "FZPU"}) {
    std::string out =
        run_child(std::string("USLUB_LEAK_REPORT=0 USLUB_DEBUG=") + letters, "DoubleFree");
    size_t bug = at(out, "uslub: BUG kmalloc-48: Object already free");
    size_t alloc = at(out, "INFO: Allocated", bug);
    size_t first = at(out, "INFO: Freed age=", alloc);
    size_t again = at(out, "INFO: Freed again (this free)", first);
    ASSERT_NE(again, std::string::npos) << letters << "\n" << out;
    EXPECT_NE(stack_after(out, alloc).find("#0 reports_allocating_site"), std::string::npos) << out;
    EXPECT_NE(stack_after(out, first).find("#0 reports_first_free_site"), std::string::npos) << out;
    EXPECT_NE(stack_after(out, again).find("#0 reports_second_free_site"), std::string::npos)
        << out;
    EXPECT_NE(at(out, "FIX kmalloc-48: Object not freed again", again), std::string::npos) << out;
    EXPECT_NE(out.find("[  PASSED  ] 1 test"), std::string::npos) << out;
  }
}

// Without U there is no record of the allocation or first free, but the culprit's stack is the
// current one: the report still names it.
TEST(Reports, DoubleFreeUnderConsistencyChecksNamesTheCulprit) {
  if (child()) GTEST_SKIP();
  std::string out = run_child("USLUB_DEBUG=F", "DoubleFree");
  size_t again = at(out, "INFO: Freed again (this free)", at(out, "Object already free"));
  ASSERT_NE(again, std::string::npos) << out;
  EXPECT_NE(stack_after(out, again).find("#0 reports_second_free_site"), std::string::npos) << out;
  EXPECT_EQ(out.find("INFO: Allocated"), std::string::npos) << out;
}

// The C library's own long-lived buffers (stdio, locale, dlopen, time zones, iostreams) and two
// leaks of the program's: one direct, one from a callback the C library calls.
TEST(ReportsChild, LibcBuffersAndLeaks) {
  if (!child()) GTEST_SKIP() << "run by Reports.* with the environment set";
  setlocale(LC_ALL, "C.UTF-8");
  setlocale(LC_ALL, "");
  printf("printf %d\n", 42);
  std::cout << "iostream " << std::string(100, 'x') << std::endl;
  if (void* h = dlopen("libm.so.6", RTLD_NOW)) dlsym(h, "cos");
  (void)dlopen("/nonexistent/libnothing.so", RTLD_NOW);
  (void)dlerror();
  time_t now = time(nullptr);
  char when[64];
  strftime(when, sizeof when, "%c", localtime(&now));
  if (FILE* f = fopen("/proc/self/status", "r")) {
    char line[128];
    (void)!fgets(line, sizeof line, f);
    fclose(f);
  }
  static void* volatile keep;
  keep = reports_allocating_site(777);
  int v[4] = {3, 1, 2, 0};
  qsort(v, 4, sizeof v[0], reports_leaking_comparator);
}

std::string leak_part(const std::string& out) {
  size_t b = out.find("uslub: leak report:");
  return b == std::string::npos ? std::string{} : out.substr(b);
}

TEST(Reports, LeakReportLeavesOutTheCLibrarysOwnBuffers) {
  if (child()) GTEST_SKIP();
  std::string out = run_child("USLUB_DEBUG=U", "LibcBuffersAndLeaks");
  ASSERT_NE(out.find("[  PASSED  ] 1 test"), std::string::npos) << out;
  std::string leaks = leak_part(out);
  size_t direct = at(leaks, "777 bytes in 1 objects of kmalloc-");
  ASSERT_NE(direct, std::string::npos) << out;
  EXPECT_NE(stack_after(leaks, direct).find("reports_allocating_site"), std::string::npos) << leaks;
  size_t callback = at(leaks, "333 bytes in 1 objects of kmalloc-");
  ASSERT_NE(callback, std::string::npos) << leaks;
  EXPECT_NE(stack_after(leaks, callback).find("reports_leaking_comparator"), std::string::npos)
      << leaks;
  for (const char* libc : {"_IO_file_doallocate", "setlocale", "_nl_", "_dl_", "dlopen", "dlerror",
                           "tzset", "__tzfile_read"})
    EXPECT_EQ(leaks.find(libc), std::string::npos) << libc << "\n" << leaks;
  // They were there, and are counted as suppressed.
  EXPECT_EQ(leaks.find("(suppressed: 0 objects"), std::string::npos) << leaks;
  EXPECT_NE(leaks.find("(suppressed: "), std::string::npos) << leaks;
}

TEST(Reports, LeakSuppressionFileNamesFunctionsLikeLeakSanitizer) {
  if (child()) GTEST_SKIP();
  std::string path = testing::TempDir() + "uslub-leak-supp-" + std::to_string(getpid());
  {
    std::ofstream f(path);
    f << "# the program's known leaks\n"
         "leak:reports_allocating_*\n"
         "race:reports_leaking_comparator   # another tool's line: ignored\n"
         "\n";
  }
  std::string out = run_child("USLUB_DEBUG=U USLUB_LEAK_SUPPRESS=" + path, "LibcBuffersAndLeaks");
  std::string leaks = leak_part(out);
  EXPECT_EQ(leaks.find("reports_allocating_site"), std::string::npos) << leaks;
  EXPECT_NE(leaks.find("reports_leaking_comparator"), std::string::npos) << leaks;
  // A pattern naming a module (or any substring of a frame) suppresses the rest.
  {
    std::ofstream f(path);
    f << "reports_leaking_comparator\nleak:reports_allocating_site\n";
  }
  out = run_child("USLUB_DEBUG=U USLUB_LEAK_SUPPRESS=" + path, "LibcBuffersAndLeaks");
  leaks = leak_part(out);
  EXPECT_EQ(leaks.find("reports_allocating_site"), std::string::npos) << leaks;
  EXPECT_EQ(leaks.find("reports_leaking_comparator"), std::string::npos) << leaks;
  unlink(path.c_str());
  out = run_child("USLUB_DEBUG=U USLUB_LEAK_SUPPRESS=/nonexistent/supp", "LibcBuffersAndLeaks");
  EXPECT_NE(out.find("uslub: USLUB_LEAK_SUPPRESS=/nonexistent/supp: cannot open it"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("reports_allocating_site"), std::string::npos) << out;
}

// A kfence object from malloc (every allocation sampled; the pool may already be full of the
// test framework's objects, so allocate until one comes from it).
char* kfence_block() {
  for (int i = 0; i < 100000; ++i) {
    auto* p = static_cast<char*>(reports_allocating_site(32));
    if (uslub::is_kfence_address(p)) return p;
    free(p);
  }
  return nullptr;
}

TEST(ReportsChild, KfenceUseAfterFree) {
  if (!child()) GTEST_SKIP() << "run by Reports.* with the environment set";
  char* p = kfence_block();
  ASSERT_NE(p, nullptr);
  reports_first_free_site(p);
  printf("returned %d\n", reports_reading_site(p));  // faults: the report, then abort
}

TEST(ReportsChild, KfenceDoubleFree) {
  if (!child()) GTEST_SKIP() << "run by Reports.* with the environment set";
  uslub::test::report_capture cap;  // this child provokes its report
  char* p = kfence_block();
  ASSERT_NE(p, nullptr);
  reports_first_free_site(p);
  reports_second_free_site(p);
}

// The report names the site of each event once, symbolised as slub_debug's are (function and
// file:line), and no frame is a bare module+offset.
void expect_symbolised(const std::string& report) {
  EXPECT_EQ(report.find("+0x"), std::string::npos) << report;
  EXPECT_NE(report.find("reports_test.cpp:"), std::string::npos) << report;
}

// A fault report is written by the async-signal-safe SIGSEGV handler: each frame is named by
// its function from the ELF symbol table, "function+0xoff (module+0xoff)" (no libdw, hence no
// file:line, in a signal handler); no frame is a bare module+offset.
void expect_named_signal_safe(const std::string& report) {
  size_t frames = 0;
  for (size_t at = report.find("    #"); at != std::string::npos;
       at = report.find("    #", at + 1)) {
    std::string line = report.substr(at, report.find('\n', at) - at);
    EXPECT_NE(line.find(" ("), std::string::npos) << "an unnamed frame: " << line << "\n" << report;
    ++frames;
  }
  EXPECT_GE(frames, 3u) << report;
}

size_t count(const std::string& s, const char* what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

// The KFENCE report of ReportsChild.<test> run with every allocation sampled: the child's
// output, where the line `what` (after the header), the allocation stack and the free stack
// start in it (npos when missing), and the report from its header to just past the free stack.
struct kfence_report {
  std::string out;
  size_t what, alloc, freed;
  std::string report;
};

kfence_report run_kfence_child(const char* test, const char* header, const char* what) {
  kfence_report k;
  k.out = run_child("USLUB_KFENCE_SAMPLE=1 USLUB_KFENCE_POOL_PAGES=1024", test);
  size_t bug = at(k.out, header);
  k.what = at(k.out, what, bug);
  k.alloc = at(k.out, "allocated by thread", k.what);
  k.freed = at(k.out, "freed by thread", k.alloc);
  if (k.freed != std::string::npos)
    k.report = k.out.substr(bug, k.freed + stack_after(k.out, k.freed).size() - bug + 40);
  return k;
}

TEST(Reports, KfenceUseAfterFreeNamesAccessAllocationAndFreeSymbolised) {
  if (child()) GTEST_SKIP();
  kfence_report k = run_kfence_child(
      "KfenceUseAfterFree", "uslub: BUG kfence: Use-after-free access", "Use-after-free read at ");
  const std::string& out = k.out;
  const std::string& report = k.report;
  size_t what = k.what, alloc = k.alloc, freed = k.freed;
  ASSERT_NE(freed, std::string::npos) << out;
  EXPECT_NE(stack_after(out, what).find("#0 reports_reading_site+0x"), std::string::npos) << out;
  EXPECT_NE(stack_after(out, alloc).find("#0 reports_allocating_site+0x"), std::string::npos)
      << out;
  EXPECT_NE(stack_after(out, freed).find("#0 reports_first_free_site+0x"), std::string::npos)
      << out;
  expect_named_signal_safe(report);
  EXPECT_EQ(count(report, "reports_reading_site"), 1u) << report;
  EXPECT_EQ(count(report, "reports_allocating_site"), 1u) << report;
  EXPECT_EQ(count(report, "reports_first_free_site"), 1u) << report;
  EXPECT_EQ(out.find("returned "), std::string::npos) << out;  // it never returned
}

TEST(Reports, KfenceDoubleFreeNamesAllocationFirstFreeAndCulprit) {
  if (child()) GTEST_SKIP();
  kfence_report k = run_kfence_child("KfenceDoubleFree", "uslub: BUG kfence: Invalid free",
                                     "the object is already free (double free)");
  const std::string& out = k.out;
  const std::string& report = k.report;
  size_t what = k.what, alloc = k.alloc, freed = k.freed;
  ASSERT_NE(freed, std::string::npos) << out;
  // The current stack is the culprit's, from the caller of free (no allocator frames).
  EXPECT_NE(stack_after(out, what).find("#0 reports_second_free_site (reports_test.cpp:"),
            std::string::npos)
      << out;
  EXPECT_NE(stack_after(out, alloc).find("#0 reports_allocating_site (reports_test.cpp:"),
            std::string::npos)
      << out;
  EXPECT_NE(stack_after(out, freed).find("#0 reports_first_free_site (reports_test.cpp:"),
            std::string::npos)
      << out;
  expect_symbolised(report);
  EXPECT_EQ(report.find("uslub::"), std::string::npos) << report;
  EXPECT_EQ(count(report, "reports_second_free_site"), 1u) << report;
  EXPECT_NE(out.find("[  PASSED  ] 1 test"), std::string::npos) << out;
}

struct reports_node {
  reports_node* next;
  char pad[56];
};
reports_node* g_reports_chain;  // .bss: the chain below stays reachable

// Five blocks reachable from a global through a chain (the head in .bss, each node pointing to
// the next), one reachable from a thread-local variable, and one whose only pointer was on the
// stack of a thread that has ended: unreachable.
TEST(ReportsChild, ReachableAndLost) {
  if (!child()) GTEST_SKIP() << "run by Reports.* with the environment set";
  for (int i = 0; i < 5; ++i) {
    auto* n = static_cast<reports_node*>(reports_allocating_site(sizeof(reports_node)));
    n->next = g_reports_chain;
    g_reports_chain = n;
  }
  static thread_local void* volatile tls_keep;
  tls_keep = reports_allocating_site(200);
  std::thread([] {
    void* volatile p = reports_allocating_site(555);
    p = nullptr;
    (void)p;
  }).join();
}

TEST(Reports, UnreachableModeReportsOnlyWhatNoPointerReaches) {
  if (child()) GTEST_SKIP();
  std::string all = leak_part(run_child("USLUB_DEBUG=U", "ReachableAndLost"));
  EXPECT_NE(all.find("320 bytes in 5 objects"), std::string::npos) << all;
  EXPECT_NE(all.find("200 bytes in 1 objects"), std::string::npos) << all;
  EXPECT_NE(all.find("555 bytes in 1 objects"), std::string::npos) << all;
  std::string out = run_child("USLUB_DEBUG=U USLUB_LEAKS=unreachable", "ReachableAndLost");
  std::string leaks = leak_part(out);
  EXPECT_NE(leaks.find("never freed and unreachable"), std::string::npos) << out;
  size_t lost = leaks.find("555 bytes in 1 objects");
  ASSERT_NE(lost, std::string::npos) << leaks;
  EXPECT_NE(stack_after(leaks, lost).find("reports_allocating_site"), std::string::npos) << leaks;
  EXPECT_EQ(leaks.find("320 bytes in 5 objects"), std::string::npos) << leaks;
  EXPECT_EQ(leaks.find("200 bytes in 1 objects"), std::string::npos) << leaks;
  EXPECT_NE(leaks.find("more objects never freed are still reachable"), std::string::npos) << leaks;
  EXPECT_EQ(out.find("unknown option"), std::string::npos) << out;
}

}  // namespace
