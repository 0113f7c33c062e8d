// RCU for uslub and its users, on liburcu's membarrier flavour (urcu-memb).
//
// Why liburcu, and how it is made to fit a malloc library (docs/rcu.md has the long form):
//   - memb readers cost two TLS stores and compiler barriers (no fence: the writer's
//     membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) orders them), so read sections are cheap;
//   - initialisation is lazy and allocation-safe: nothing runs before the first RCU call
//     (rcu_init: the default call_rcu thread is created then, so no later call_rcu ever takes
//     liburcu's call_rcu_mutex), and liburcu's own mallocs may re-enter uslub's malloc because
//     no uslub lock is held around any liburcu call;
//   - threads that never register: every entry point registers the calling thread on first
//     use (urcu_memb_register_thread) and a thread-exit hook unregisters it.  liburcu's own
//     call_rcu threads are registered by liburcu: the callback trampoline marks them, so a
//     callback may call call_rcu / rcu_read_lock without registering twice;
//   - fork (docs/rcu.md "Fork"): a fork gate (g_gate) is held for read around every liburcu
//     call that takes its registry/grace-period locks or enqueues a callback (register,
//     unregister, synchronize_rcu, call_rcu).  The prepare handler, in this order: (1) liburcu's
//     call_rcu_before_fork (pauses the callback threads between batches; they may still run
//     callbacks that call call_rcu, the gate is open), (2) closes the gate: new entries wait,
//     except from threads inside a read section while the gate drains (a synchronize_rcu
//     holding the gate may be waiting for them), then everyone once it is closed, (3) the
//     subsystems' fork hooks (kfree_rcu's krc locks, the frag pools' locks).  Parent: hooks
//     released, gate opened, after_fork_parent.  Child: the same, plus every registered reader
//     of a thread that does not exist in the child is removed from liburcu's registry (its
//     read section, if it was in one, would block every grace period), after_fork_child (a new
//     callback thread) and the monitor is restarted.  The handlers are registered by malloc's
//     constructor right after slab_fork_*, so ours prepare first and release last
//     (pthread_atfork runs prepare handlers in reverse); without the malloc layer, on first use.
//     Forking from inside a read section is unsupported: reported, and the RCU part of the
//     protocol is skipped (the child's RCU may then hang).  A fork from a signal handler that
//     interrupted uslub on this thread (a gate holder, or any allocator lock: in_atomic(),
//     sync/preempt.hpp) skips every handler's work, RCU's included (fork_handler_enter).
//     A gate holder counts in preempt_count, and so does a caller of liburcu's functions that
//     take call_rcu_mutex (urcu_memb_get_default_call_rcu_data, urcu_memb_barrier).
//   - deferred work: one monitor thread (rcu_kick_monitor) runs the monitor hooks (kfree_rcu's
//     and the fragment pools' batch flushes) every kMonitorPeriodMs while any reports open
//     work, and sleeps on a futex otherwise.
// ThreadSanitizer cannot see liburcu's (uninstrumented) grace periods, so TSan builds tell it:
// every read-side section ends with a release on one sync object and every grace period ends
// with an acquire of it; call_rcu releases on the head and the callback acquires it.
//
// Locking: none of uslub's locks is held while calling into liburcu.  g_readers_lock (spinlock,
// class "rcu_readers_lock") protects the list of registered readers; taken inside the gate,
// nothing is called under it.  g_fork_lock (a pthread mutex) is held from RCU's prepare
// handler to its parent handler (re-initialised in the child): one fork at a time, outermost
// of every lock the fork handlers take.  rcu_barrier() first runs the barrier hooks (kfree_rcu and
// the frag pools queue their open batches), waits for the batches that were in transit when
// it flipped the transit phase (rcu_detach_batch; g_barrier_lock, a pthread mutex re-initialised
// in a fork's child, serialises the flip and wait), then liburcu's barrier, in rounds until no
// callback queued another one with call_rcu during a round (so a chain of callbacks is waited
// for; call_rcu16, the type-safe slabs' frees, is not counted as a chain).
#pragma once

#include <uslub/rcu.h>

#include <atomic>
#include <cstddef>

namespace uslub {

using rcu_head = ::uslub_rcu_head;
using rcu_callback_t = void (*)(rcu_head*);

void rcu_read_lock();
void rcu_read_unlock();
bool rcu_read_lock_held();  // for assertions (this thread is inside a read-side section)
void call_rcu(rcu_head* head, rcu_callback_t func);
void synchronize_rcu();
void rcu_barrier();
// Registers the calling thread now (the entry points above do it on first use).
void rcu_register_thread();
// Sets RCU up (fork handlers, the default callback thread) without registering the thread.
void rcu_init();
// Registers the fork handlers (no other set-up); malloc's constructor calls it after its own.
void rcu_register_fork_handlers();
// Is the calling thread one of liburcu's callback threads?
bool rcu_in_callback();

// A 16-byte head (liburcu's own layout) for descriptors with no room for rcu_head: func is
// called directly by liburcu, and must start with rcu_callback16_enter(head).
struct rcu_head16 {
  rcu_head16* next;
  void (*func)(rcu_head16*);
};
void call_rcu16(rcu_head16* head, void (*func)(rcu_head16*));
void rcu_callback16_enter(rcu_head16* head);

// The deferred-work monitor: fn is called every kMonitorPeriodMs by the monitor thread while
// one of the hooks returns true (open work remains); rcu_kick_monitor wakes it (starting it
// on first use) after work was opened.
inline constexpr unsigned kMonitorPeriodMs = 5;
void rcu_add_monitor_hook(bool (*fn)());
void rcu_kick_monitor();

// Fork hooks of the subsystems built on RCU (take their locks / release them), run by RCU's
// atfork handlers after the gate is closed (prepare) and before it opens (parent, child).
void rcu_add_fork_hooks(void (*prepare)(), void (*parent)(), void (*child)());

// kfree_rcu's fallback (the kernel's kvfree_call_rcu with a head): func's slot holds the
// head's offset in the object (< kMaxKvfreeOffset); after a grace period the object start is
// passed to the function set by rcu_set_kvfree (kfree_rcu's, which frees it and uncounts it
// from kfree_rcu's pending objects: only kfree_rcu, which counted it, calls this).
inline constexpr std::size_t kMaxKvfreeOffset = 4096;
void call_rcu_kvfree(rcu_head* head, std::size_t offset);
void rcu_set_kvfree(void (*fn)(void*));

// kvfree_rcu_barrier (defined by kfree_rcu.cpp): every object passed to kfree_rcu before the
// call has been freed (the open batches are queued, then rcu_barrier).  Returns at once if
// none is pending.  kmem_cache_destroy calls it.
void kvfree_rcu_barrier();

// Hooks run at the start of rcu_barrier() (at most a few, registered once at start-up).
void rcu_add_barrier_hook(void (*fn)());

// Batches in transit.  A client detaches an open batch under its own lock and queues it with
// call_rcu after dropping the lock; in between, no barrier hook can see it (it is neither open
// nor queued), and a concurrent rcu_barrier would return before the objects that a finished
// kfree_rcu / frag_free_defer put into it were freed.  So a detach is announced: under the
// client's lock, rcu_detach_batch(head) counts it (in the current phase, kept in head->func
// until the queue); call_rcu_detached() queues it and then uncounts it.  rcu_barrier(), after
// its hooks, flips the phase and waits until the old phase's count is zero: a hook that finds
// no batch under the lock sees the count of whoever took it, made before the flip; batches
// detached after the flip are not waited for (no starvation under steady traffic).  The child
// of a fork starts with nothing in transit (a batch another thread of the parent held is lost
// to the child, as that thread is).
void rcu_detach_batch(rcu_head* head);
void call_rcu_detached(rcu_head* head, rcu_callback_t func);

// g_fork_lock, held around the fork hooks: lockdep's nest lock for a hook that takes many
// locks of one class (lock_nest_lock).
const void* rcu_fork_nest_lock();

// A subsystem that defers work to grace periods (kfree_rcu, the frag pools) and its hooks.
struct rcu_client_ops {
  void (*barrier)();                          // rcu_add_barrier_hook
  bool (*monitor)();                          // rcu_add_monitor_hook
  void (*fork_prepare)(), (*fork_release)();  // rcu_add_fork_hooks (parent and child alike)
  void (*kvfree)(void*);                      // rcu_set_kvfree, or nullptr
};
// Sets RCU up and registers ops once per state word (0: not yet, 1: in progress, 2: done);
// concurrent first callers wait until it is done.  Returns at once after that.
void rcu_client_set_up(std::atomic<int>* state, const rcu_client_ops& ops);

// Statistics: callbacks queued / run, grace periods waited for.
struct rcu_stats {
  unsigned long callbacks_queued, callbacks_run, synchronize_calls;
};
rcu_stats rcu_get_stats();

}  // namespace uslub
