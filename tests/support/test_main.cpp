// The test main of every suite: GoogleTest's, plus a listener that fails a test during which a
// `uslub: BUG` report (slab debug, KFENCE, lockdep, ...) was made that the test did not expect.
//
// A test expects reports by holding a report_capture (test_support.hpp) while it provokes them:
// every report_bug() made while a capture is alive, on any thread, is the test's to check.  Any
// other one fails the test with its first line ("uslub: BUG <who>: <problem>"; the full text is
// on stderr).  The count is base/report's bug_count(), so a report is seen whether or not a hook
// is installed; a report in a forked child (death tests, fork tests) is the child's business.
//
// Lockdep reports its first cycle only (the kernel's debug_locks_off); after a test that made
// one, the listener re-arms the checker so the next test's cycle is reported too (the graph
// learned so far is kept).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstring>

#include "base/report.hpp"
#include "sync/lockdep.hpp"
#include "test_support.hpp"

namespace uslub::test {
namespace {

std::atomic<int> g_capture_depth{0};
std::atomic<unsigned long> g_capture_start{0};
std::atomic<unsigned long> g_expected{0};  // reports made while a capture was alive

// First line of the first report made while no capture was alive (no allocation: the hook can
// run with allocator locks held).
std::atomic<bool> g_have_line{false};   // claimed by the first reporter
std::atomic<bool> g_line_ready{false};  // g_line written (release), for the listener (acquire)
char g_line[256];

void default_hook(const char* text, void*) {
  if (strncmp(text, "uslub: BUG ", 11) != 0 || g_have_line.exchange(true)) return;
  size_t n = strcspn(text, "\n");
  if (n >= sizeof g_line) n = sizeof g_line - 1;
  memcpy(g_line, text, n);
  g_line[n] = '\0';
  g_line_ready.store(true, std::memory_order_release);
}

class unexpected_report_listener : public ::testing::EmptyTestEventListener {
 public:
  void OnTestStart(const ::testing::TestInfo&) override {
    g_line_ready = false;
    g_have_line = false;
    base_ = bug_count();
    expected_ = g_expected.load();
  }
  void OnTestEnd(const ::testing::TestInfo&) override {
    unsigned long made = bug_count() - base_;
    unsigned long expected = g_expected.load() - expected_;
    if (g_capture_depth.load() > 0) expected += bug_count() - g_capture_start.load();
    if (made > expected) {
      bool line = g_line_ready.load(std::memory_order_acquire);
      ADD_FAILURE() << made - expected << " unexpected uslub report(s) during this test"
                    << (line ? ", the first: " : "") << (line ? g_line : "")
                    << "\n(full text on stderr; a test that provokes reports holds a "
                       "report_capture and checks them)";
    }
#if USLUB_LOCKDEP
    if (made) lockdep_rearm();
#endif
  }

 private:
  unsigned long base_ = 0, expected_ = 0;
};

}  // namespace

void expect_reports_begin() {
  if (g_capture_depth.fetch_add(1) == 0) g_capture_start = bug_count();
}

void expect_reports_end() {
  unsigned long start = g_capture_start.load();
  if (g_capture_depth.fetch_sub(1) == 1) g_expected += bug_count() - start;
}

void install_default_report_hook() {
  set_report_hook(&default_hook, nullptr);
}

}  // namespace uslub::test

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  uslub::test::install_default_report_hook();
  // Appended after the result printer: OnTestEnd runs in reverse order, so the failure is
  // recorded before the printer reports the test.
  ::testing::UnitTest::GetInstance()->listeners().Append(
      new uslub::test::unexpected_report_listener);
  return RUN_ALL_TESTS();
}
