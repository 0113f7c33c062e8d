// Lock hold-time statistics (spinlock_t): off by default, and when on each class records its
// holds in a log2 histogram with the longest hold.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "sync/spinlock.hpp"

namespace uslub::test {

static const lock_hold_class* find_class(lock_hold_class* v, int n, const char* name) {
  for (int i = 0; i < n; ++i)
    if (!strcmp(v[i].name, name)) return &v[i];
  return nullptr;
}

TEST(LockHold, RecordsEachClassLongestHoldOnlyWhileOn) {
  static constinit lock_class_key key{"lock_hold_test"};
  spinlock_t l(&key);
  lock_hold_stats_reset();
  l.lock();
  l.unlock();
  lock_hold_class v[64];
  EXPECT_EQ(find_class(v, lock_hold_stats(v, 64), "lock_hold_test"), nullptr) << "off by default";
  lock_hold_stats_enable(true);
  for (int i = 0; i < 10; ++i) {
    l.lock();
    l.unlock();
  }
  l.lock();
  std::this_thread::sleep_for(std::chrono::milliseconds(3));
  l.unlock();
  lock_hold_stats_enable(false);
  l.lock();
  l.unlock();
  int n = lock_hold_stats(v, 64);
  const lock_hold_class* c = find_class(v, n, "lock_hold_test");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->count, 11u);
  EXPECT_GE(c->max_ns, 3000000u);
  EXPECT_LT(lock_hold_quantile(*c, 0.5), 1000000u) << "most holds were short";
  EXPECT_GE(lock_hold_quantile(*c, 1.0), 2097152u);
  std::uint64_t in_hist = 0;
  for (std::uint64_t b : c->hist) in_hist += b;
  EXPECT_EQ(in_hist, 11u);
}

}  // namespace uslub::test
