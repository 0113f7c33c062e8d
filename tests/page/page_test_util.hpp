// A private page allocator per test, with a configurable platform.
#pragma once

#include <gtest/gtest.h>

#include "page/page_alloc.hpp"
#include "test_support.hpp"

namespace uslub {

// Friend of page_allocator: reaches the internals the tests must drive.
struct page_alloc_test_peer {
  static spinlock_t& drain_mutex(page_allocator& pa) { return pa.drain_mutex_; }
  static std::atomic<std::uint64_t>& drain_gen(page_allocator& pa) { return pa.drain_gen_; }
};

namespace test {

class page_alloc_fixture : public ::testing::Test {
 protected:
  void make(page_alloc_config cfg = {}) {
    cfg.vm = &vm_;
    if (!cfg.nr_nodes) cfg.nr_nodes = 1;
    if (cfg.decay_ms < 0) cfg.decay_ms = 1000000;  // no decay unless a test asks
    ASSERT_EQ(pa_.init(cfg), 0);
    made_ = true;
  }
  void TearDown() override {
    if (made_) pa_.destroy();
  }
  per_cpu_pages& pcp(unsigned cpu) { return pa_.zone_of_node(0)->pcp[cpu]; }

  failing_vm vm_;
  page_allocator pa_;
  bool made_ = false;
};

// Pins the calling thread to one CPU; returns false if that CPU is not allowed.
inline bool pin_to_cpu(unsigned cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return sched_setaffinity(0, sizeof set, &set) == 0;
}
inline void unpin() {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (unsigned c = 0; c < platform::nr_cpu_ids(); ++c) CPU_SET(c, &set);
  sched_setaffinity(0, sizeof set, &set);
}

}  // namespace test
}  // namespace uslub
