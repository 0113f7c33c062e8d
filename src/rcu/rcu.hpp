// RCU for uslub and its users, on liburcu's membarrier flavour (urcu-memb).
//
// Why liburcu, and how it is made to fit a malloc library (docs/rcu.md has the long form):
//   - memb readers cost two TLS stores and compiler barriers (no fence: the writer's
//     membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) orders them), so read sections are cheap;
//   - initialisation is lazy and allocation-safe: nothing runs before the first RCU call, and
//     liburcu's own mallocs (its call_rcu thread's queues) may re-enter uslub's malloc because
//     no uslub lock is held around any liburcu call;
//   - threads that never register: every entry point registers the calling thread on first
//     use (urcu_memb_register_thread) and a thread-exit hook unregisters it;
//   - fork: the atfork handlers call liburcu's call_rcu_before_fork / after_fork_parent /
//     after_fork_child, so the child gets a working callback thread.
// ThreadSanitizer cannot see liburcu's (uninstrumented) grace periods, so TSan builds tell it:
// every read-side section ends with a release on one sync object and every grace period ends
// with an acquire of it; call_rcu releases on the head and the callback acquires it.
//
// Locking: none of uslub's locks is held while calling into liburcu.  rcu_barrier() first
// runs the barrier hooks (kfree_rcu flushes its per-CPU batches), then liburcu's barrier.
#pragma once

#include <uslub/rcu.h>

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

// kfree_rcu's fallback (the kernel's kvfree_call_rcu with a head): func's slot holds the
// head's offset in the object (< kMaxKvfreeOffset); after a grace period the object start is
// passed to the function set by rcu_set_kvfree (kfree; the kmalloc layer sets it).
inline constexpr std::size_t kMaxKvfreeOffset = 4096;
void call_rcu_kvfree(rcu_head* head, std::size_t offset);
void rcu_set_kvfree(void (*fn)(void*));

// Hooks run at the start of rcu_barrier() (at most a few, registered once at start-up).
void rcu_add_barrier_hook(void (*fn)());

// Statistics: callbacks queued / run, grace periods waited for.
struct rcu_stats {
  unsigned long callbacks_queued, callbacks_run, synchronize_calls;
};
rcu_stats rcu_get_stats();

}  // namespace uslub
