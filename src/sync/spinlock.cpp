#include "sync/spinlock.hpp"

#include <sched.h>
#include <time.h>

#include <cstdlib>
#include <cstring>

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

namespace detail {
constinit std::atomic<bool> g_lock_hold_on{false};
constinit std::atomic<bool> g_lock_hold_cpu{false};

std::uint64_t lock_hold_thread_cpu_ns() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

std::uint64_t lock_hold_now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

namespace {
// One slot per lock class, found by linear probing on the class pointer (claimed by CAS, never
// freed).  Classes beyond kHoldSlots are not recorded.
constexpr unsigned kHoldSlots = 64;
struct hold_slot {
  std::atomic<const lock_class_key*> cls;
  std::atomic<std::uint64_t> count, total_ns, max_ns;
  std::atomic<std::uint64_t> hist[kLockHoldBuckets];
  std::atomic<std::uint64_t> cpu_total_ns, cpu_max_ns;
  std::atomic<std::uint64_t> cpu_hist[kLockHoldBuckets];
  std::atomic<std::uint64_t> max_work, total_work, work_holds;
};

void atomic_max(std::atomic<std::uint64_t>& m, std::uint64_t v) {
  std::uint64_t cur = m.load(std::memory_order_relaxed);
  while (v > cur && !m.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}

unsigned bucket_of(std::uint64_t ns) {
  unsigned b = ns ? 63u - static_cast<unsigned>(__builtin_clzll(ns)) : 0;
  return b < kLockHoldBuckets ? b : kLockHoldBuckets - 1;
}
constinit hold_slot g_hold[kHoldSlots];
const lock_class_key g_unnamed{"(unnamed lock)"};
}  // namespace

void lock_hold_record(const lock_class_key* cls, const hold_sample& s) {
  const std::uint64_t ns = s.ns;
  if (!cls) cls = &g_unnamed;
  unsigned i = static_cast<unsigned>((reinterpret_cast<std::uintptr_t>(cls) >> 4) % kHoldSlots);
  for (unsigned n = 0; n < kHoldSlots; ++n, i = (i + 1) % kHoldSlots) {
    const lock_class_key* c = g_hold[i].cls.load(std::memory_order_acquire);
    if (!c && g_hold[i].cls.compare_exchange_strong(c, cls)) c = cls;
    if (c != cls) continue;
    hold_slot& h = g_hold[i];
    h.count.fetch_add(1, std::memory_order_relaxed);
    h.total_ns.fetch_add(ns, std::memory_order_relaxed);
    atomic_max(h.max_ns, ns);
    h.hist[bucket_of(ns)].fetch_add(1, std::memory_order_relaxed);
    if (s.has_cpu) {
      h.cpu_total_ns.fetch_add(s.cpu_ns, std::memory_order_relaxed);
      atomic_max(h.cpu_max_ns, s.cpu_ns);
      h.cpu_hist[bucket_of(s.cpu_ns)].fetch_add(1, std::memory_order_relaxed);
    }
    if (s.work) {
      h.total_work.fetch_add(s.work, std::memory_order_relaxed);
      h.work_holds.fetch_add(1, std::memory_order_relaxed);
      atomic_max(h.max_work, s.work);
    }
    return;
  }
}
}  // namespace detail

void spinlock_t::hold_begin() {
  // CPU clock first: the wall hold then includes one CPU clock read, not two.
  hold_cpu_start_ = detail::g_lock_hold_cpu.load(std::memory_order_relaxed)
                        ? detail::lock_hold_thread_cpu_ns()
                        : 0;
  hold_work_ = 0;
  hold_start_ = detail::lock_hold_now_ns();
}

void spinlock_t::record_hold() {
  std::uint64_t now = detail::lock_hold_now_ns();
  detail::hold_sample s{};
  s.ns = now > hold_start_ ? now - hold_start_ : 0;
  if (hold_cpu_start_) {
    std::uint64_t cpu = detail::lock_hold_thread_cpu_ns();
    s.cpu_ns = cpu > hold_cpu_start_ ? cpu - hold_cpu_start_ : 0;
    s.has_cpu = true;
  }
  s.work = hold_work_;
  hold_start_ = hold_cpu_start_ = hold_work_ = 0;
  detail::lock_hold_record(cls_, s);
}

void lock_hold_stats_enable(bool on, bool cpu) {
  detail::g_lock_hold_cpu.store(on && cpu, std::memory_order_relaxed);
  detail::g_lock_hold_on.store(on, std::memory_order_relaxed);
}

void lock_hold_stats_reset() {
  for (auto& h : detail::g_hold) {
    h.count.store(0, std::memory_order_relaxed);
    h.total_ns.store(0, std::memory_order_relaxed);
    h.max_ns.store(0, std::memory_order_relaxed);
    for (auto& b : h.hist) b.store(0, std::memory_order_relaxed);
    h.cpu_total_ns.store(0, std::memory_order_relaxed);
    h.cpu_max_ns.store(0, std::memory_order_relaxed);
    for (auto& b : h.cpu_hist) b.store(0, std::memory_order_relaxed);
    h.max_work.store(0, std::memory_order_relaxed);
    h.total_work.store(0, std::memory_order_relaxed);
    h.work_holds.store(0, std::memory_order_relaxed);
  }
}

int lock_hold_stats(lock_hold_class* out, int max) {
  int n = 0;
  for (auto& h : detail::g_hold) {
    const lock_class_key* c = h.cls.load(std::memory_order_acquire);
    if (!c || n >= max || !h.count.load(std::memory_order_relaxed)) continue;
    lock_hold_class& o = out[n++];
    o.name = c->name;
    o.count = h.count.load(std::memory_order_relaxed);
    o.total_ns = h.total_ns.load(std::memory_order_relaxed);
    o.max_ns = h.max_ns.load(std::memory_order_relaxed);
    for (unsigned b = 0; b < kLockHoldBuckets; ++b) {
      o.hist[b] = h.hist[b].load(std::memory_order_relaxed);
      o.cpu_hist[b] = h.cpu_hist[b].load(std::memory_order_relaxed);
    }
    o.cpu_total_ns = h.cpu_total_ns.load(std::memory_order_relaxed);
    o.cpu_max_ns = h.cpu_max_ns.load(std::memory_order_relaxed);
    o.max_work = h.max_work.load(std::memory_order_relaxed);
    o.total_work = h.total_work.load(std::memory_order_relaxed);
    o.work_holds = h.work_holds.load(std::memory_order_relaxed);
  }
  return n;
}

static std::uint64_t hist_quantile(const std::uint64_t* hist, std::uint64_t max, double q) {
  std::uint64_t total = 0;
  for (unsigned b = 0; b < kLockHoldBuckets; ++b) total += hist[b];
  std::uint64_t want = static_cast<std::uint64_t>(q * static_cast<double>(total) + 0.5), seen = 0;
  for (unsigned b = 0; b < kLockHoldBuckets; ++b) {
    seen += hist[b];
    if (seen >= want && seen) return std::uint64_t{2} << b;
  }
  return max;
}

std::uint64_t lock_hold_quantile(const lock_hold_class& c, double q) {
  return hist_quantile(c.hist, c.max_ns, q);
}
std::uint64_t lock_hold_cpu_quantile(const lock_hold_class& c, double q) {
  return hist_quantile(c.cpu_hist, c.cpu_max_ns, q);
}

// Hold statistics from the start (USLUB_LOCK_HOLD_STATS=1).
// USLUB_LOCK_HOLD_STATS=cpu: thread CPU time too.
__attribute__((constructor)) static void lock_hold_from_env() {
  const char* v = getenv("USLUB_LOCK_HOLD_STATS");
  if (v && !strcmp(v, "cpu"))
    lock_hold_stats_enable(true, true);
  else if (platform::env_size("USLUB_LOCK_HOLD_STATS", 0) == 1)
    lock_hold_stats_enable(true);
}

void spinlock_t::unlock_slow() {
  state_.store(0, std::memory_order_release);
  platform::futex_wake(&state_, 1);
}

}  // namespace uslub
