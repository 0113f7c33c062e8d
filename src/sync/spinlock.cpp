#include "sync/spinlock.hpp"

#include <sched.h>

namespace uslub {

// Adaptive part: spin while the holder is likely still running.  On this project's 2-CPU
// machines a preempted holder is common, so the spin is short and then we sleep.
static constexpr int kSpinIterations = 100;

void spinlock_t::lock_slow() {
  lock_wait();
  bump(contended_);  // we hold the lock now
}

void spinlock_t::lock_wait() {
  for (int i = 0; i < kSpinIterations; ++i) {
    cpu_relax();
    std::uint32_t s = state_.load(std::memory_order_relaxed);
    if (s == 0) {
      std::uint32_t expected = 0;
      if (state_.compare_exchange_weak(expected, 1, std::memory_order_acquire,
                                       std::memory_order_relaxed))
        return;
    } else if (s == 2) {
      break;  // sleepers already queued: join them
    }
  }
  // Mark "locked, maybe sleepers" and sleep until we take it in that state.
  while (state_.exchange(2, std::memory_order_acquire) != 0) platform::futex_wait(&state_, 2);
}

void spinlock_t::unlock_slow() {
  state_.store(0, std::memory_order_release);
  platform::futex_wake(&state_, 1);
}

}  // namespace uslub
