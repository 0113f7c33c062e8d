/* The hot slot's hand-off (src/slab/sheaf.hpp, src/platform/rseq.hpp: rseq_slot_pop/push/lock).
 *
 * One CPU (CPU 0) runs two threads, one at a time: a fast-path thread that pops and pushes
 * objects on the slot {size, cap} (objs is fixed here: one sheaf of capacity C) inside rseq
 * sequences, and a local slow path that takes the slot with the rseq-committed cmpxchg
 * cap -> 0, flushes or refills the sheaf, and releases it (size, then cap).  The scheduler
 * may switch CPU 0 to another thread at any step; the thread it preempts is marked aborted,
 * and a sequence whose thread was aborted since it started restarts instead of committing
 * (the kernel's rseq restart).  A drainer on CPU 1 runs truly in parallel: it takes the slot
 * with a CAS cap -> 0, then fences CPU 0 (membarrier EXPEDITED_RSEQ: the running thread's
 * sequence is aborted), moves the sheaf's objects to the slab and releases the slot.
 *
 * Property (monitor): every object is in exactly one place at every step: the sheaf below
 * size, a fast thread's hand, or the slab.  Fast paths never write the slot while cap is 0
 * (checked by the same invariant: a commit under a holder loses or duplicates an object).
 *
 * `size` stands for the 32-bit word {size, tick} every sequence commits in one store (tick,
 * kmalloc's double-free sampling count, decides only whether a push leaves for the checked
 * path before storing anything, which the model's "slot full" miss already covers); holders
 * write the 16-bit size alone, only while cap is 0.
 *
 * Promela is sequentially consistent: this checks the protocol's logic; the ordering half
 * (cap loaded before size and objs, released after them) is argued next to the code.
 * -DBUG drops the drainer's fence: a sequence that read size before the drainer's CAS commits
 * after the drainer emptied the sheaf, and spin must find the duplicate.
 */
#define C 2      /* sheaf capacity */
#define N 2      /* objects 1..N */
#define FREE_CAP C

byte cap = FREE_CAP; /* 0: held */
byte size = 0;
byte sh[C];          /* the sheaf: sh[0..size-1] */
byte hand;           /* the fast thread's object (0: none) */
byte inslab[N + 1];  /* copies in the slab */
byte running = 0;    /* the thread on CPU 0: 0 fast, 1 slow */
bool aborted[2];
bool started;         /* init has placed the objects */

/* Copies of object o anywhere (the sheaf slots above size are leftovers, not copies). */
#define insheaf(o) ((size > 0 && sh[0] == o) + (size > 1 && sh[1] == o))
#define copies(o) (insheaf(o) + (hand == o) + inslab[o])

active proctype monitor() {
  atomic { started && !(copies(1) == 1 && copies(2) == 1) -> assert(false) }
}

/* The scheduler of CPU 0: switching aborts the sequence of the thread it takes the CPU from. */
active proctype sched() {
  do
  :: atomic { aborted[running] = 1; running = 1 - running }
  od
}

/* One step of a sequence: only while on the CPU, and only if not aborted since it started. */
#define STEP(me) (running == me && !aborted[me])

proctype fast(byte me) {
  byte c, n, o;
  do
  :: /* pop (hand empty) or push (hand full); start: clear the abort flag */
     atomic { running == me -> aborted[me] = 0 };
     if
     :: hand == 0 ->
        atomic { STEP(me) -> c = cap };
        atomic { STEP(me) -> n = size };
        if
        :: n == 0 || c == 0 -> skip /* miss */
        :: else ->
           atomic { STEP(me) -> o = sh[n - 1] };
           atomic { STEP(me) -> size = n - 1; hand = o } /* commit */
        fi;
        o = 0
     :: hand != 0 ->
        atomic { STEP(me) -> c = cap };
        atomic { STEP(me) -> n = size };
        if
        :: n >= c -> skip /* full or held: miss */
        :: else ->
           atomic { STEP(me) -> sh[n] = hand }; /* above size: nobody reads it */
           atomic { STEP(me) -> size = n + 1; hand = 0 } /* commit */
        fi
     fi;
     c = 0; n = 0
  od
}

/* The local slow path: rseq_slot_lock, then a flush or a refill, then the release. */
proctype slow() {
  byte seen, o;
  do
  :: atomic { running == 1 -> aborted[1] = 0 };
     atomic { STEP(1) -> seen = cap };
     if
     :: seen == 0 -> skip /* held: the caller goes to the slabs */
     :: else ->
        atomic { STEP(1) && cap == seen -> cap = 0 }; /* commit: the locked cmpxchg */
        /* held: no sequence of CPU 0 can commit on the slot now; the holder may migrate */
        if
        :: do /* flush */
           :: size > 0 -> atomic { size--; inslab[sh[size]]++ }
           :: size == 0 -> break
           od
        :: do /* refill from the slab */
           :: size < C && inslab[1] > 0 -> atomic { inslab[1]--; sh[size] = 1; size++ }
           :: size < C && inslab[2] > 0 -> atomic { inslab[2]--; sh[size] = 2; size++ }
           :: else -> break
           od
        fi;
        cap = FREE_CAP /* release: after size (and objs) */
     fi;
     seen = 0
  od
}

/* The drainer on CPU 1: CAS, fence, flush, release. */
proctype drainer() {
  byte seen;
  do
  :: seen = cap;
     if
     :: seen == 0 -> skip /* held: retry */
     :: else ->
        atomic { cap == seen -> cap = 0 };
#ifndef BUG
        aborted[running] = 1; /* rseq_fence_cpu(0) */
#endif
        do
        :: size > 0 -> atomic { size--; inslab[sh[size]]++ }
        :: size == 0 -> break
        od;
        cap = FREE_CAP
     fi;
     seen = 0
  od
}

init {
  atomic {
    inslab[1] = 1; hand = 2; started = 1;
    run fast(0); run slow(); run drainer()
  }
}
