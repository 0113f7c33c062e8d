// RCU over liburcu's urcu-memb flavour.  Design and rules: rcu.hpp.
#include "base/compiler.hpp"
// liburcu's read side inline (its static headers), except under TSan: the inlined code uses
// volatile accesses TSan would instrument and flag; the library's own copy is not instrumented.
#if !USLUB_TSAN
#define _LGPL_SOURCE 1
#endif
#include "rcu/rcu.hpp"

#include <urcu/urcu-memb.h>

#include <atomic>
#include <cstddef>

#include "base/compiler.hpp"
#include "base/report.hpp"
#include "platform/platform.hpp"

#if USLUB_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace uslub {
namespace {

static_assert(sizeof(::rcu_head) == 2 * sizeof(void*), "liburcu's rcu_head");
static_assert(offsetof(uslub_rcu_head, next_) == 0 && sizeof(uslub_rcu_head) == 24);

thread_local bool t_registered = false;
thread_local int t_nesting = 0;

std::atomic<unsigned long> g_queued{0}, g_run{0}, g_sync{0};
std::atomic<int> g_atfork{0};
constexpr int kMaxHooks = 4;
std::atomic<void (*)()> g_hooks[kMaxHooks];
std::atomic<void (*)(void*)> g_kvfree{nullptr};

#if USLUB_TSAN
char g_tsan_gp;  // the sync object of read sections and grace periods
#endif

void unregister_at_exit(void*) {
  if (t_registered) {
    urcu_memb_unregister_thread();
    t_registered = false;
  }
}

platform::thread_exit_hook& exit_hook() {
  static platform::thread_exit_hook hook(&unregister_at_exit);
  return hook;
}

void fork_prepare() {
  urcu_memb_call_rcu_before_fork();
}
void fork_parent() {
  urcu_memb_call_rcu_after_fork_parent();
}
void fork_child() {
  urcu_memb_call_rcu_after_fork_child();
}

USLUB_NOINLINE void register_slow() {
  int expected = 0;
  if (g_atfork.compare_exchange_strong(expected, 1))
    platform::register_atfork(fork_prepare, fork_parent, fork_child);
  urcu_memb_register_thread();
  t_registered = true;
  exit_hook().arm(reinterpret_cast<void*>(1));
}

USLUB_ALWAYS_INLINE void ensure_registered() {
  if (USLUB_UNLIKELY(!t_registered)) register_slow();
}

// liburcu's callback: ours, which calls the caller's.
void trampoline(::rcu_head* h) {
  auto* head = reinterpret_cast<uslub_rcu_head*>(h);
#if USLUB_TSAN
  __tsan_acquire(head);
  __tsan_acquire(&g_tsan_gp);
#endif
  g_run.fetch_add(1, std::memory_order_relaxed);
  auto f = reinterpret_cast<std::uintptr_t>(head->func);
  if (f < kMaxKvfreeOffset)
    g_kvfree.load(std::memory_order_acquire)(reinterpret_cast<char*>(head) - f);
  else
    head->func(head);
#if USLUB_TSAN
  __tsan_release(&g_tsan_gp);  // rcu_barrier() acquires it: the callback's effects are visible
#endif
}

}  // namespace

void rcu_register_thread() {
  ensure_registered();
}

void rcu_read_lock() {
  ensure_registered();
  ++t_nesting;
  urcu_memb_read_lock();
}

void rcu_read_unlock() {
  if (USLUB_UNLIKELY(t_nesting <= 0)) {
    report_bug("rcu", "Unbalanced rcu_read_unlock", "rcu_read_unlock() outside a read section\n");
    return;
  }
#if USLUB_TSAN
  __tsan_release(&g_tsan_gp);
#endif
  urcu_memb_read_unlock();
  --t_nesting;
}

bool rcu_read_lock_held() {
  return t_nesting > 0;
}

void call_rcu(rcu_head* head, rcu_callback_t func) {
  ensure_registered();
  head->func = func;
  g_queued.fetch_add(1, std::memory_order_relaxed);
#if USLUB_TSAN
  __tsan_release(head);
#endif
  urcu_memb_call_rcu(reinterpret_cast<::rcu_head*>(head), &trampoline);
}

void call_rcu_kvfree(rcu_head* head, std::size_t offset) {
  call_rcu(head, reinterpret_cast<rcu_callback_t>(offset));
}

void rcu_set_kvfree(void (*fn)(void*)) {
  g_kvfree.store(fn, std::memory_order_release);
}

void synchronize_rcu() {
  if (USLUB_UNLIKELY(t_nesting > 0)) {
    report_bug("rcu", "synchronize_rcu in a read-side section",
               "synchronize_rcu() would wait for itself\n");
    return;
  }
  ensure_registered();
  g_sync.fetch_add(1, std::memory_order_relaxed);
  urcu_memb_synchronize_rcu();
#if USLUB_TSAN
  __tsan_acquire(&g_tsan_gp);
#endif
}

void rcu_barrier() {
  ensure_registered();
  for (auto& h : g_hooks)
    if (auto fn = h.load(std::memory_order_acquire)) fn();
  urcu_memb_barrier();
#if USLUB_TSAN
  __tsan_acquire(&g_tsan_gp);
#endif
}

void rcu_add_barrier_hook(void (*fn)()) {
  for (auto& h : g_hooks) {
    void (*expected)() = nullptr;
    if (h.load() == fn) return;
    if (h.compare_exchange_strong(expected, fn)) return;
  }
  panic("rcu_add_barrier_hook: more than %d hooks", kMaxHooks);
}

rcu_stats rcu_get_stats() {
  return {g_queued.load(), g_run.load(), g_sync.load()};
}

}  // namespace uslub

using namespace uslub;

extern "C" {

void uslub_rcu_read_lock(void) {
  rcu_read_lock();
}
void uslub_rcu_read_unlock(void) {
  rcu_read_unlock();
}
void uslub_call_rcu(struct uslub_rcu_head* head, void (*func)(struct uslub_rcu_head*)) {
  call_rcu(head, func);
}
void uslub_synchronize_rcu(void) {
  synchronize_rcu();
}
void uslub_rcu_barrier(void) {
  rcu_barrier();
}

}  // extern "C"
