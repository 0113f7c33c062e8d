// Helpers shared by the test suites: report capture, a vm_ops that fails on demand,
// background traffic on a cache, stress scaling.
//
// Every suite runs with the test main of test_main.cpp, which fails a test during which a
// `uslub: BUG` report was made that no report_capture was alive to expect.
#pragma once

#include <gtest/gtest.h>
#include <sched.h>
#include <uslub/slab.h>

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/report.hpp"
#include "platform/platform.hpp"

#ifndef USLUB_STRESS_SCALE
#define USLUB_STRESS_SCALE 1
#endif

namespace uslub::test {

// test_main.cpp: the expected-report window and the hook that notes unexpected reports.
void expect_reports_begin();
void expect_reports_end();
void install_default_report_hook();

// Captures every report_bug()/report_info() text while alive; the reports made meanwhile are
// expected (the test checks them), any other one fails the test.  One capture at a time.
class report_capture {
 public:
  report_capture() {
    expect_reports_begin();
    set_report_hook(&hook, this);
  }
  ~report_capture() {
    install_default_report_hook();
    expect_reports_end();
  }
  std::vector<std::string> reports() {
    std::lock_guard<std::mutex> g(mu_);
    return texts_;
  }
  size_t count() {
    std::lock_guard<std::mutex> g(mu_);
    return texts_.size();
  }
  // First line of report i.
  std::string first_line(size_t i = 0) {
    auto r = reports();
    if (i >= r.size()) return "";
    return r[i].substr(0, r[i].find('\n'));
  }

 private:
  static void hook(const char* text, void* arg) {
    auto* self = static_cast<report_capture*>(arg);
    std::lock_guard<std::mutex> g(self->mu_);
    self->texts_.emplace_back(text);
  }
  std::mutex mu_;
  std::vector<std::string> texts_;
};

// Background traffic on a cache until destroyed (or stop()): each of `threads` threads
// allocates `batch` objects, shrinks the cache before or after freeing them, frees them and
// starts again.
class slab_churn {
 public:
  enum class shrink { before_free, after_free };
  slab_churn(kmem_cache* s, int threads, int batch, shrink when) {
    for (int t = 0; t < threads; ++t)
      ts_.emplace_back([this, s, batch, when] {
        std::vector<void*> v;
        while (!stop_.load()) {
          for (int i = 0; i < batch; ++i) v.push_back(kmem_cache_alloc(s, 0));
          if (when == shrink::before_free) kmem_cache_shrink(s);
          for (void* p : v) kmem_cache_free(s, p);
          v.clear();
          if (when == shrink::after_free) kmem_cache_shrink(s);
        }
      });
  }
  ~slab_churn() { stop(); }
  void stop() {
    stop_ = true;
    for (auto& t : ts_)
      if (t.joinable()) t.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::vector<std::thread> ts_;
};

// Delegates to the real OS but fails reserve/commit/map when told to (out-of-memory paths).
class failing_vm final : public platform::vm_ops {
 public:
  std::atomic<bool> fail_reserve{false}, fail_commit{false}, fail_map{false};
  std::atomic<int> commits{0}, decommits{0}, reserves{0}, hugepages{0};
  // Fail commits after this many successful ones (-1: never).
  std::atomic<int> commit_budget{-1};

  int reserve(std::size_t size, std::size_t align, void** out) override {
    if (fail_reserve) return ENOMEM;
    reserves++;
    return real().reserve(size, align, out);
  }
  int commit(void* p, std::size_t n) override {
    if (fail_commit) return ENOMEM;
    if (commit_budget >= 0 && commit_budget.fetch_sub(1) <= 0) return ENOMEM;
    commits++;
    return real().commit(p, n);
  }
  int decommit(void* p, std::size_t n, platform::decommit_mode m) override {
    decommits++;
    return real().decommit(p, n, m);
  }
  int hugepage(void* p, std::size_t n) override {
    hugepages++;
    return real().hugepage(p, n);
  }
  int release(void* p, std::size_t n) override { return real().release(p, n); }
  int map(std::size_t n, void** out) override {
    if (fail_map) return ENOMEM;
    return real().map(n, out);
  }
  int bind_node(void* p, std::size_t n, int node) override { return real().bind_node(p, n, node); }

 private:
  static platform::vm_ops& real() { return platform::linux_vm(); }
};

// Keeps the calling thread on the CPU it runs on for its lifetime: per-CPU counts (a CPU's sheaf
// slot, its CPU slab) stay in one CPU's state; a migration in the middle spreads them over two.
struct pin_to_this_cpu {
  cpu_set_t old;
  pin_to_this_cpu() {
    sched_getaffinity(0, sizeof old, &old);
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(sched_getcpu(), &one);
    sched_setaffinity(0, sizeof one, &one);
  }
  ~pin_to_this_cpu() { sched_setaffinity(0, sizeof old, &old); }
};

// True if huge pages follow USLUB_THP=2's threshold (ctest sets it for the kmalloc tests): the
// default elsewhere, but not on a VM whose host discards free huge pages.
inline bool thp_threshold_mode() {
  const char* t = getenv("USLUB_THP");
  return t && t[0] == '2' && t[1] == '\0';
}

inline int stress_scale() {
  return USLUB_STRESS_SCALE;
}

}  // namespace uslub::test
