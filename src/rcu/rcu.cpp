// RCU over liburcu's urcu-memb flavour.  Design and rules: rcu.hpp.
#include "base/compiler.hpp"
// liburcu's read side inline (its static headers), except under TSan: the inlined code uses
// volatile accesses TSan would instrument and flag; the library's own copy is not instrumented.
#if !USLUB_TSAN
#define _LGPL_SOURCE 1
#endif
#include "rcu/rcu.hpp"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>
#include <urcu/static/urcu-memb.h>  // struct urcu_reader and its TLS (the child's registry clean-up)
#include <urcu/urcu-memb.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>

#include "base/compiler.hpp"
#include "base/report.hpp"
#include "platform/platform.hpp"
#include "sync/preempt.hpp"
#include "sync/spinlock.hpp"

#if USLUB_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace uslub {
namespace {

static_assert(sizeof(::rcu_head) == 2 * sizeof(void*), "liburcu's rcu_head");
static_assert(sizeof(rcu_head16) == sizeof(::rcu_head) &&
              offsetof(rcu_head16, func) == offsetof(::rcu_head, func));
static_assert(offsetof(uslub_rcu_head, next_) == 0 && sizeof(uslub_rcu_head) == 24);

// Initial-exec TLS: these are read on paths reachable from malloc (kfree_rcu, discard_slab's
// call_rcu16), where a general-dynamic access's __tls_get_addr may itself call malloc.
#define USLUB_TLS __attribute__((tls_model("initial-exec"))) thread_local
USLUB_TLS bool t_registered = false;
USLUB_TLS bool t_callback = false;  // one of liburcu's call_rcu threads
USLUB_TLS int t_nesting = 0;
USLUB_TLS int t_gate = 0;  // depth of gate_enter

std::atomic<unsigned long> g_queued{0}, g_run{0}, g_sync{0}, g_chained{0};
// Batches detached by a client, not yet queued (rcu_detach_batch), counted in two phases so
// that rcu_barrier waits only for those detached before it: bit 63 is the current phase,
// bits 0-31 count phase 0's batches, bits 32-62 phase 1's.  One word, so that a detach reads
// the phase and counts itself in it in one atomic step (a CAS), ordered against the flip.
constexpr std::uint64_t kTransitPhase = 1ull << 63;
std::atomic<std::uint64_t> g_transit{0};
// Serialises rcu_barrier's phase flip and wait (re-initialised in a fork's child).
pthread_mutex_t g_barrier_lock = PTHREAD_MUTEX_INITIALIZER;
constexpr std::uint64_t transit_unit(unsigned phase) {
  return phase ? 1ull << 32 : 1ull;
}
constexpr std::uint64_t transit_count(std::uint64_t v, unsigned phase) {
  return phase ? (v >> 32) & 0x7fffffffull : v & 0xffffffffull;
}
std::atomic<int> g_atfork{0}, g_init{0};
std::atomic<bool> g_used{false};  // RCU was used: the fork handlers have work
pthread_mutex_t g_fork_lock = PTHREAD_MUTEX_INITIALIZER;  // held from prepare to parent/child
// lockdep classes: g_fork_lock, and the gate (one class for entering and closing it: a thread
// that waits to enter while the forking thread waits, under the gate, for a lock the first one
// holds is a deadlock like any other).
constinit lock_class_key fork_lock_key{"rcu_fork_lock"};
constinit lock_class_key fork_gate_key{"rcu_fork_gate"};
bool g_fork_skipped =
    false;  // g_fork_lock; prepare saw a read section: parent/child skip RCU's part
constexpr int kMaxHooks = 4;
std::atomic<void (*)()> g_hooks[kMaxHooks];
std::atomic<bool (*)()> g_mon_hooks[kMaxHooks];
struct fork_hooks {
  void (*prepare)(), (*parent)(), (*child)();
};
fork_hooks g_fork_hooks[kMaxHooks];
std::atomic<int> g_nfork_hooks{0};
std::atomic<void (*)(void*)> g_kvfree{nullptr};

#if USLUB_TSAN
char g_tsan_gp;  // the sync object of read sections and grace periods
#endif

// ---- the fork gate ------------------------------------------------------------------------
// Low bits: holders.  kDraining: a fork waits for the holders to leave; only threads inside a
// read section may still enter.  kClosed: the forking thread owns it; nobody enters.
constexpr std::uint32_t kDraining = 1u << 30, kClosed = 1u << 31, kHolders = kDraining - 1;
std::atomic<std::uint32_t> g_gate{0};

// A gate holder counts in preempt_count: a fork's prepare waits for the gate's holders.
void gate_enter() {
  preempt_count_inc();
  if (t_gate++ > 0) return;
  lockdep_acquire(&fork_gate_key, &g_gate, false);
  for (;;) {
    std::uint32_t v = g_gate.load(std::memory_order_acquire);
    if ((v & kClosed) || ((v & kDraining) && t_nesting == 0)) {
      platform::futex_wait(&g_gate, v);
      continue;
    }
    if (g_gate.compare_exchange_weak(v, v + 1, std::memory_order_acquire)) return;
  }
}

void gate_exit() {
  if (--t_gate == 0) {
    lockdep_release(&fork_gate_key, &g_gate);
    std::uint32_t v = g_gate.fetch_sub(1, std::memory_order_release) - 1;
    if ((v & kDraining) && (v & kHolders) == 0) platform::futex_wake(&g_gate, INT32_MAX);
  }
  preempt_count_dec();
}

struct gate_guard {
  gate_guard() { gate_enter(); }
  ~gate_guard() { gate_exit(); }
  gate_guard(const gate_guard&) = delete;
  gate_guard& operator=(const gate_guard&) = delete;
};

void gate_close() {
  lockdep_acquire(&fork_gate_key, &g_gate, false);
  g_gate.fetch_or(kDraining, std::memory_order_acq_rel);
  for (;;) {
    std::uint32_t v = g_gate.load(std::memory_order_acquire);
    if ((v & kHolders) == 0) {
      if (g_gate.compare_exchange_weak(v, kClosed, std::memory_order_acq_rel)) return;
      continue;
    }
    platform::futex_wait(&g_gate, v);
  }
}

void gate_open() {
  lockdep_release(&fork_gate_key, &g_gate);
  g_gate.store(0, std::memory_order_release);
  platform::futex_wake(&g_gate, INT32_MAX);
}

// ---- registered readers -------------------------------------------------------------------
// Every thread registered through us, so that the child of a fork can remove the readers of
// the threads that did not survive it from liburcu's registry.
struct reader_rec {
  urcu_reader* reader;
  pid_t tid;
  reader_rec *prev, *next;
};
constinit lock_class_key readers_lock_key{"rcu_readers_lock"};
constinit spinlock_t g_readers_lock{&readers_lock_key};
reader_rec* g_readers = nullptr;  // g_readers_lock
USLUB_TLS reader_rec t_rec;

void readers_add() {
  t_rec.reader = &URCU_TLS(urcu_memb_reader);
  t_rec.tid = platform::thread_id();
  lock_guard<spinlock_t> g(g_readers_lock);
  t_rec.prev = nullptr;
  t_rec.next = g_readers;
  if (g_readers) g_readers->prev = &t_rec;
  g_readers = &t_rec;
}

void readers_del(reader_rec* r) {  // Context: g_readers_lock (or the single-threaded child)
  if (r->prev)
    r->prev->next = r->next;
  else
    g_readers = r->next;
  if (r->next) r->next->prev = r->prev;
}

// Child of a fork: the readers of every other thread leave liburcu's registry.  No lock of
// liburcu's is held (the gate was closed over the fork).
void readers_clean_child() {
  reader_rec* r = g_readers;
  while (r) {
    reader_rec* next = r->next;
    if (r != &t_rec) {
      urcu_reader* u = r->reader;
      u->ctr = 0;  // not in a read section
      if (u->registered) {
        cds_list_del(&u->node);
        u->registered = 0;
      }
      readers_del(r);
    }
    r = next;
  }
  new (&g_readers_lock) spinlock_t(&readers_lock_key);
}

void unregister_at_exit(void*) {
  if (t_registered && !t_callback) {
    gate_guard g;
    {
      lock_guard<spinlock_t> l(g_readers_lock);
      readers_del(&t_rec);
    }
    urcu_memb_unregister_thread();
    t_registered = false;
  }
}

platform::thread_exit_hook& exit_hook() {
  static platform::thread_exit_hook hook(&unregister_at_exit);
  return hook;
}

// ---- the monitor --------------------------------------------------------------------------
std::atomic<int> g_monitor{0};  // 0 none, 1 running
std::atomic<std::uint32_t> g_monitor_wake{0};

void* monitor(void*) {
  for (;;) {
    std::uint32_t v = g_monitor_wake.load(std::memory_order_acquire);
    bool busy = false;
    for (auto& h : g_mon_hooks)
      if (auto fn = h.load(std::memory_order_acquire)) busy |= fn();
    if (!busy)
      platform::futex_wait(&g_monitor_wake, v);  // until the next kick
    else
      usleep(kMonitorPeriodMs * 1000);
  }
  return nullptr;
}

void start_monitor() {
  int expected = 0;
  if (!g_monitor.compare_exchange_strong(expected, 1)) return;
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  if (pthread_create(&t, &attr, monitor, nullptr) != 0) g_monitor.store(0);
  pthread_attr_destroy(&attr);
}

// ---- fork ---------------------------------------------------------------------------------
int nfork_hooks() {
  return g_nfork_hooks.load(std::memory_order_acquire);
}

void fork_prepare() {
  if (fork_handler_enter()) return;  // fork from a signal handler inside uslub: preempt.hpp
  // Concurrent forks: glibc already runs one fork's handlers at a time; this makes it explicit
  // (and visible to TSan).  Released by the parent, re-initialised in the child.
  lockdep_acquire(&fork_lock_key, &g_fork_lock, false);
  pthread_mutex_lock(&g_fork_lock);
  g_fork_skipped = false;
  if (g_used.load(std::memory_order_acquire)) {
    if (USLUB_UNLIKELY(t_nesting > 0)) {
      report_bug("rcu", "fork in a read-side section",
                 "fork() inside rcu_read_lock(): RCU's fork protocol is skipped, RCU in the "
                 "child may hang\n");
      g_fork_skipped = true;
    } else {
      urcu_memb_call_rcu_before_fork();
      gate_close();
    }
  }
  for (int i = 0; i < nfork_hooks(); ++i)
    if (g_fork_hooks[i].prepare) g_fork_hooks[i].prepare();
}

void fork_parent() {
  if (fork_handler_exit()) return;
  for (int i = nfork_hooks(); i-- > 0;)
    if (g_fork_hooks[i].parent) g_fork_hooks[i].parent();
  if (g_used.load(std::memory_order_acquire) && !g_fork_skipped) {
    gate_open();
    urcu_memb_call_rcu_after_fork_parent();
  }
  lockdep_release(&fork_lock_key, &g_fork_lock);
  pthread_mutex_unlock(&g_fork_lock);
}

void fork_child() {
  if (fork_handler_exit()) return;
  for (int i = nfork_hooks(); i-- > 0;)
    if (g_fork_hooks[i].child) g_fork_hooks[i].child();
  if (g_used.load(std::memory_order_acquire) && !g_fork_skipped) {
    readers_clean_child();
    gate_open();
    urcu_memb_call_rcu_after_fork_child();
  }
  g_transit.store(0, std::memory_order_relaxed);  // their takers did not survive the fork
  pthread_mutex_init(&g_barrier_lock, nullptr);   // nor did a barrier another thread ran
  // The monitor did not survive the fork: a new one, if there was one.
  if (g_monitor.exchange(0, std::memory_order_relaxed)) start_monitor();
  lockdep_release(&fork_lock_key, &g_fork_lock);
  pthread_mutex_init(&g_fork_lock, nullptr);
}

USLUB_NOINLINE void register_slow() {
  rcu_init();
  gate_guard g;
  urcu_memb_register_thread();
  t_registered = true;
  readers_add();
  exit_hook().arm(reinterpret_cast<void*>(1));
}

USLUB_ALWAYS_INLINE void ensure_registered() {
  if (USLUB_UNLIKELY(!t_registered)) register_slow();
}

void mark_callback_thread() {
  // liburcu registered this thread itself: never again, and never unregister it.
  t_callback = true;
  t_registered = true;
}

// liburcu's callback: ours, which calls the caller's.
void trampoline(::rcu_head* h) {
  auto* head = reinterpret_cast<uslub_rcu_head*>(h);
#if USLUB_TSAN
  __tsan_acquire(head);
  __tsan_acquire(&g_tsan_gp);
#endif
  if (USLUB_UNLIKELY(!t_callback)) mark_callback_thread();
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

// chain: a callback that queues this one makes rcu_barrier run another round (rcu.hpp).
void queue(::rcu_head* head, void (*fn)(::rcu_head*), bool chain) {
  ensure_registered();
  if (t_callback && chain) g_chained.fetch_add(1, std::memory_order_relaxed);
  g_queued.fetch_add(1, std::memory_order_relaxed);
#if USLUB_TSAN
  __tsan_release(head);
#endif
  gate_guard g;
  urcu_memb_call_rcu(head, fn);
}

}  // namespace

const void* rcu_fork_nest_lock() {
  return &g_fork_lock;
}

void rcu_register_fork_handlers() {
  int expected = 0;
  if (g_atfork.compare_exchange_strong(expected, 1))
    platform::register_atfork(fork_prepare, fork_parent, fork_child);
}

void rcu_init() {
  if (USLUB_LIKELY(g_init.load(std::memory_order_acquire) == 2)) return;
  rcu_register_fork_handlers();
  int expected = 0;
  if (g_init.compare_exchange_strong(expected, 1)) {
    // The default callback thread now, outside the gate: a later call_rcu never takes
    // liburcu's call_rcu_mutex, which call_rcu_before_fork holds across a fork (and takes: so
    // a holder counts in preempt_count).
    preempt_count_inc();
    urcu_memb_get_default_call_rcu_data();
    preempt_count_dec();
    g_used.store(true, std::memory_order_release);
    g_init.store(2, std::memory_order_release);
    return;
  }
  while (g_init.load(std::memory_order_acquire) != 2) sched_yield();
}

void rcu_register_thread() {
  ensure_registered();
}

bool rcu_in_callback() {
  return t_callback;
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
  head->func = func;
  queue(reinterpret_cast<::rcu_head*>(head), &trampoline, true);
}

void rcu_detach_batch(rcu_head* head) {
  // Relaxed: published by the client's unlock to the barrier hook that takes its lock next.
  std::uint64_t v = g_transit.load(std::memory_order_relaxed);
  unsigned phase;
  do {
    phase = static_cast<unsigned>(v >> 63);
  } while (!g_transit.compare_exchange_weak(v, v + transit_unit(phase), std::memory_order_relaxed));
  // The head is the batch's own and idle until call_rcu_detached: its func slot keeps the phase.
  head->func = reinterpret_cast<rcu_callback_t>(std::uintptr_t{phase});
}

void call_rcu_detached(rcu_head* head, rcu_callback_t func) {
  auto phase = static_cast<unsigned>(reinterpret_cast<std::uintptr_t>(head->func));
  call_rcu(head, func);
  g_transit.fetch_sub(transit_unit(phase), std::memory_order_release);
}

void call_rcu16(rcu_head16* head, void (*func)(rcu_head16*)) {
  // Not a chain: a slab that a callback's free discards (kfree_rcu of a SLAB_TYPESAFE_BY_RCU
  // cache's objects) is waited for by kmem_cache_destroy's own rcu_barrier, which follows its
  // kvfree_rcu_barrier; counting it would make every barrier under steady kfree_rcu traffic on
  // such a cache run round after round.
  queue(reinterpret_cast<::rcu_head*>(head), reinterpret_cast<void (*)(::rcu_head*)>(func), false);
}

void rcu_callback16_enter(rcu_head16* head) {
#if USLUB_TSAN
  __tsan_acquire(head);
  __tsan_acquire(&g_tsan_gp);
#endif
  (void)head;
  if (USLUB_UNLIKELY(!t_callback)) mark_callback_thread();
  g_run.fetch_add(1, std::memory_order_relaxed);
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
  {
    gate_guard g;
    urcu_memb_synchronize_rcu();
  }
#if USLUB_TSAN
  __tsan_acquire(&g_tsan_gp);
#endif
}

void rcu_barrier() {
  if (USLUB_UNLIKELY(t_nesting > 0 || t_callback)) {
    report_bug("rcu", "rcu_barrier in a read-side section or a callback",
               "rcu_barrier() would wait for itself\n");
    return;
  }
  ensure_registered();
  for (auto& h : g_hooks)
    if (auto fn = h.load(std::memory_order_acquire)) fn();
  // A batch the hooks did not find under its client's lock was counted under that lock, before
  // the hook took it, so before the flip below: in the phase the flip ends.  Wait until that
  // phase is empty (its takers are a few instructions and a call_rcu away from queuing them);
  // batches detached after the flip count in the other phase and are not waited for, so steady
  // kfree_rcu traffic cannot keep a barrier waiting.  Barriers flip and wait one at a time: a
  // batch counted before an earlier barrier's flip was waited for by that barrier.
  pthread_mutex_lock(&g_barrier_lock);
  auto old =
      static_cast<unsigned>(g_transit.fetch_xor(kTransitPhase, std::memory_order_acq_rel) >> 63);
  while (transit_count(g_transit.load(std::memory_order_acquire), old) != 0) sched_yield();
  pthread_mutex_unlock(&g_barrier_lock);
  // Rounds until no callback queued another during one: a round waits for every callback
  // queued before it, so the last round leaves no callback queued by a callback behind.
  for (;;) {
    unsigned long chained = g_chained.load(std::memory_order_acquire);
    preempt_count_inc();  // takes call_rcu_mutex, which fork's prepare takes (preempt.hpp)
    urcu_memb_barrier();
    preempt_count_dec();
    if (g_chained.load(std::memory_order_acquire) == chained) break;
  }
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

void rcu_add_monitor_hook(bool (*fn)()) {
  for (auto& h : g_mon_hooks) {
    bool (*expected)() = nullptr;
    if (h.load() == fn) return;
    if (h.compare_exchange_strong(expected, fn)) return;
  }
  panic("rcu_add_monitor_hook: more than %d hooks", kMaxHooks);
}

void rcu_kick_monitor() {
  if (USLUB_UNLIKELY(g_monitor.load(std::memory_order_relaxed) == 0)) start_monitor();
  g_monitor_wake.fetch_add(1, std::memory_order_release);
  platform::futex_wake(&g_monitor_wake, 1);
}

void rcu_add_fork_hooks(void (*prepare)(), void (*parent)(), void (*child)()) {
  // Called once per subsystem at its set-up, under its own once-flag.
  static constinit lock_class_key key{"rcu_fork_hooks_lock"};
  static constinit spinlock_t lock{&key};
  lock_guard<spinlock_t> g(lock);
  int n = g_nfork_hooks.load(std::memory_order_relaxed);
  for (int i = 0; i < n; ++i)
    if (g_fork_hooks[i].prepare == prepare && g_fork_hooks[i].child == child) return;
  if (n == kMaxHooks) panic("rcu_add_fork_hooks: more than %d hooks", kMaxHooks);
  g_fork_hooks[n] = {prepare, parent, child};
  g_nfork_hooks.store(n + 1, std::memory_order_release);
}

rcu_stats rcu_get_stats() {
  return {g_queued.load(), g_run.load(), g_sync.load()};
}

void rcu_client_set_up(std::atomic<int>* state, const rcu_client_ops& ops) {
  int expected = 0;
  if (state->compare_exchange_strong(expected, 1)) {
    rcu_init();
    if (ops.barrier) rcu_add_barrier_hook(ops.barrier);
    if (ops.monitor) rcu_add_monitor_hook(ops.monitor);
    if (ops.fork_prepare) rcu_add_fork_hooks(ops.fork_prepare, ops.fork_release, ops.fork_release);
    if (ops.kvfree) rcu_set_kvfree(ops.kvfree);
    state->store(2, std::memory_order_release);
    return;
  }
  while (state->load(std::memory_order_acquire) != 2) sched_yield();
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
