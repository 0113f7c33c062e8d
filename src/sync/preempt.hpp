// The allocator's per-thread held-lock count: the kernel's preempt_count, which spin_lock()
// raises and spin_unlock() lowers, so that in_atomic() tells whether this thread is inside a
// locked section.  Here it answers one question, asked by the fork handlers: did the fork
// interrupt this very thread inside the allocator?
//
// A signal handler that calls fork() (POSIX lists fork as async-signal-safe; glibc's fork
// completes when it interrupted glibc's malloc) runs uslub's prepare handlers on the thread it
// interrupted.  If that thread held an allocator lock, or was waiting for one, prepare would
// wait for itself.  So every lock the fork handlers take counts here, raised *before* the
// acquisition (a thread spinning or sleeping for a lock counts as holding it) and lowered after
// the release: spinlock_t and local_trylock_t (every zone, pcp, list, slot, barn, huge, kfence,
// kfree_rcu and frag lock), the sheaf slot lock words (pcs_trylock / rseq_slot_lock /
// pcs_unlock), the page allocator's reclaim flag, the stack depot's mutex, RCU's fork gate and
// liburcu's call_rcu_mutex (rcu_init, rcu_barrier).  A count of zero means this thread holds
// none of them, so prepare may wait for the other threads, which are not waiting for it.
// Fork handling: fork_handler_enter / fork_handler_exit below.
//
// Cost: one add to an initial-exec TLS word per acquisition and per release (no locked
// instruction, no call); the rseq fast paths take no lock and do not count.
#pragma once

namespace uslub {

// Initial-exec: reachable from malloc, where __tls_get_addr may itself call malloc.
extern __thread unsigned uslub_preempt_count
    __attribute__((tls_model("initial-exec"), visibility("hidden")));

inline __attribute__((always_inline)) void preempt_count_inc() {
  uslub_preempt_count = uslub_preempt_count + 1;
}
inline __attribute__((always_inline)) void preempt_count_dec() {
  uslub_preempt_count = uslub_preempt_count - 1;
}
// This thread holds (or waits for) one of the allocator's locks.
inline bool in_atomic() {
  return uslub_preempt_count != 0;
}

// Every uslub fork prepare handler starts with fork_handler_enter(), and every parent / child
// handler ends with fork_handler_exit() (nested calls balance).  The first prepare handler of
// a fork decides for all of them: true if the fork interrupted this thread inside the
// allocator (in_atomic()).  Then no handler takes or releases anything (each returns at once):
// the prepare would wait for locks this thread holds, and the interrupted operation resumes
// when the signal handler returns, in the parent and in the child alike (the child's only
// thread is this one), and releases its locks itself.  Locks other threads held at that
// moment stay held in the child, so the child of a multi-threaded parent must keep to
// async-signal-safe functions until it execs (POSIX's rule for any child of a multi-threaded
// process); a single-threaded parent's child may allocate again once the handler returned.
bool fork_handler_enter();
bool fork_handler_exit();

}  // namespace uslub
