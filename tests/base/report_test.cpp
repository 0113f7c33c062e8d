// Reports (src/base/report.cpp): the test hook receives each report with the argument it was
// installed with, and once set_report_hook returns, the hook it replaced is no longer running
// and never runs again (its argument may be destroyed).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <thread>
#include <vector>

#include "base/report.hpp"
#include "test_support.hpp"

namespace uslub {
namespace {

struct token {
  std::atomic<bool> alive{false};
  const token* self = this;
};

std::atomic<unsigned long> g_calls{0}, g_wrong_arg{0}, g_after_removal{0};
token g_a, g_b;

void hook_a(const char*, void* arg) {
  g_calls.fetch_add(1, std::memory_order_relaxed);
  if (arg != &g_a) g_wrong_arg.fetch_add(1);
  // A hook that takes a while: its argument must stay valid for all of it.
  for (int i = 0; i < 200; ++i)
    if (!g_a.alive.load(std::memory_order_acquire)) {
      g_after_removal.fetch_add(1);
      break;
    }
}
void hook_b(const char*, void* arg) {
  g_calls.fetch_add(1, std::memory_order_relaxed);
  if (arg != &g_b) g_wrong_arg.fetch_add(1);
  for (int i = 0; i < 200; ++i)
    if (!g_b.alive.load(std::memory_order_acquire)) {
      g_after_removal.fetch_add(1);
      break;
    }
}

TEST(ReportHook, EachCallGetsItsOwnArgumentAndNoneOutlivesItsRemoval) {
  setenv("USLUB_LOG", "/dev/null", 1);  // the log is opened at the first report
  std::atomic<bool> stop{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < 2; ++t)
    ts.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) report_info("hook test line");
    });
  for (int round = 0; round < 2000; ++round) {
    token& t = round % 2 ? g_b : g_a;
    t.alive.store(true, std::memory_order_release);
    set_report_hook(round % 2 ? hook_b : hook_a, &t);
    unsigned long seen = g_calls.load();
    for (int i = 0; i < 1000000 && g_calls.load() < seen + 2; ++i) {  // it is being called
    }
    if (round % 3 == 0) (round % 2 ? g_a : g_b).alive.store(true, std::memory_order_release);
    set_report_hook(round % 3 ? nullptr : (round % 2 ? hook_a : hook_b),
                    round % 3 ? nullptr : (round % 2 ? &g_a : &g_b));
    // The replaced hook has returned and will not be called again: its argument "dies".
    t.alive.store(false, std::memory_order_release);
    if (round % 3 == 0) {
      set_report_hook(nullptr, nullptr);
      g_a.alive.store(false, std::memory_order_release);
      g_b.alive.store(false, std::memory_order_release);
    }
  }
  set_report_hook(nullptr, nullptr);
  stop = true;
  for (auto& th : ts) th.join();
  EXPECT_GT(g_calls.load(), 100u) << "the hooks ran";
  EXPECT_EQ(g_wrong_arg.load(), 0u) << "a hook called with another hook's argument";
  EXPECT_EQ(g_after_removal.load(), 0u) << "a hook ran after set_report_hook replaced it";
}

TEST(ReportHook, SignalSafeReportsAreCountedAndWrittenButNotHooked) {
  test::expect_reports_begin();  // both reports below are this test's own
  setenv("USLUB_LOG", "/dev/null", 1);
  report_prepare_signal_safe();
  static std::atomic<int> hooked{0};
  set_report_hook([](const char*, void*) { hooked++; }, nullptr);
  unsigned long before = bug_count();
  const char text[] = "uslub: BUG test: from a signal handler\n";
  report_bug_signal_safe(text, sizeof text - 1);
  EXPECT_EQ(bug_count(), before + 1);
  EXPECT_EQ(hooked.load(), 0);
  report_info("an ordinary report");
  EXPECT_EQ(hooked.load(), 1);
  test::install_default_report_hook();
  test::expect_reports_end();
}

}  // namespace
}  // namespace uslub
