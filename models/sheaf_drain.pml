/* The remote drain of a CPU's sheaves against that CPU's rseq fast paths (src/slab/sheaf.cpp
 * sheaf_drain_cpu / pcs_lock_remote, src/platform/rseq.hpp rseq_slot_pop / _push,
 * src/platform/rseq.cpp rseq_fence_cpu).
 *
 * Two threads A and B run on CPU 0: A frees an object it holds (push onto the slot's main
 * sheaf), allocates one (pop) and frees it; B allocates one and frees it.  A pop or push is a
 * restartable sequence: read the slot's lock word, load main, load size, load or store the
 * object, commit with one store of size.  Only one of A and B runs on CPU 0 at a time: a step
 * of one aborts the other's sequence if it was inside one (it was preempted), and the aborted
 * thread restarts its sequence from the top when it runs again.  A sequence that finds the
 * lock word set, an empty (pop) or full (push) sheaf, goes to the slabs instead.
 * A drainer on CPU 1 empties CPU 0's slot: it takes the lock word with a CAS, calls
 * membarrier(EXPEDITED_RSEQ, CPU 0) - which aborts the sequence running on CPU 0, if any -,
 * detaches main (the slot gets the static empty sheaf, capacity 0), drops the lock, returns
 * the sheaf's objects to the slabs and frees the sheaf.
 *
 * Properties: no fast path ever stores into a freed sheaf (assert at every store), and when
 * everyone has finished every object is in exactly one place, the slabs or the slot's live
 * sheaf (none lost, none handed out twice).
 *
 * Sequentially consistent model of the protocol's logic; the drain-all generation piggyback
 * in front of it is drain_gen.pml's.  Not modelled: the spare sheaf and alien buffer (detached
 * with main under the same lock), the barn, and the slow paths' own rseq_slot_lock (a sequence
 * whose commit is the cmpxchg of the same lock word: mutual exclusion with the drainer's CAS).
 * Mutations (scripts/check-models.sh compiles each with spin -D<name> and expects an error):
 *   NO_MEMBARRIER      the drainer does not fence: a sequence that read the lock word as free
 *                      before the CAS commits into the detached (or freed) sheaf;
 *   FENCE_BEFORE_LOCK  the fence runs before the CAS: a sequence that starts between the two
 *                      reads the lock word as free and is not aborted.
 */
#define CAP 2     /* capacity of the one real sheaf */
#define NOBJ 3    /* objects 1..3 */
#define EMPTY 0   /* the static empty sheaf: capacity 0, never freed */
#define SHEAF 1

bool lock;              /* slub_percpu_sheaves::lock of CPU 0 */
byte main = SHEAF;      /* slub_percpu_sheaves::main of CPU 0 */
byte size[2];           /* slab_sheaf::size (size[EMPTY] stays 0) */
byte objs[CAP];         /* slab_sheaf::objects of SHEAF */
bool dead[2];           /* the sheaf was freed (sheaf_delete) */
byte inslab[NOBJ + 1];  /* copies of each object on slab free lists */
bool in_cs[2];          /* thread inside a sequence (rseq_cs set, ip in range) */
bool restart[2];        /* its sequence was aborted: it restarts when it runs again */
byte hold[2];           /* object held by thread A, B (0: none) */
byte obj[2];            /* the object a pop has loaded, not yet committed */
bool drained;

#define CAPACITY(sh) ((sh) == EMPTY -> 0 : CAP)

/* A step of thread me on CPU 0: the other thread is not running, so a sequence it was in is
 * aborted (preemption). */
inline on_cpu0(me) {
  if
  :: in_cs[1 - me] -> restart[1 - me] = 1
  :: else -> skip
  fi
}
/* Every step inside a sequence: an aborted sequence continues at its start. */
inline check(me, start) {
  if
  :: restart[me] -> restart[me] = 0; in_cs[me] = 0; goto start
  :: else -> skip
  fi
}
/* membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, FLAG_CPU, 0) */
inline fence_cpu0() {
  atomic {
    if :: in_cs[0] -> restart[0] = 1 :: else -> skip fi;
    if :: in_cs[1] -> restart[1] = 1 :: else -> skip fi
  }
}

/* Thread me: nops operations, each a free (rseq_slot_push, or the slabs' slab_free when the
 * sequence says "slow") if it holds an object, else an allocation (rseq_slot_pop, or the
 * slabs: hold[me] stays 0 if they have nothing). */
proctype fast(byte me; byte nops) {
  byte sh, n, done;
next:
  if
  :: done == nops -> goto finish
  :: done < nops && hold[me] != 0 -> goto push_start
  :: else -> goto pop_start
  fi;

push_start:
  atomic { on_cpu0(me); in_cs[me] = 1;
    if :: lock -> in_cs[me] = 0; goto push_slow :: else -> skip fi };
  atomic { on_cpu0(me); check(me, push_start); sh = main };
  atomic { on_cpu0(me); check(me, push_start); n = size[sh];
    if :: n >= CAPACITY(sh) -> in_cs[me] = 0; goto push_slow :: else -> skip fi };
  atomic { on_cpu0(me); check(me, push_start); assert(!dead[sh]); objs[n] = hold[me] };
  atomic { on_cpu0(me); check(me, push_start); assert(!dead[sh]); size[sh] = n + 1;
           in_cs[me] = 0; hold[me] = 0 };   /* commit */
  goto op_done;
push_slow:
  atomic { on_cpu0(me); inslab[hold[me]]++; hold[me] = 0 };
  goto op_done;

pop_start:
  atomic { on_cpu0(me); in_cs[me] = 1;
    if :: lock -> in_cs[me] = 0; goto pop_slow :: else -> skip fi };
  atomic { on_cpu0(me); check(me, pop_start); sh = main };
  atomic { on_cpu0(me); check(me, pop_start); n = size[sh];
    if :: n == 0 -> in_cs[me] = 0; goto pop_slow :: else -> skip fi };
  atomic { on_cpu0(me); check(me, pop_start); obj[me] = objs[n - 1] };
  atomic { on_cpu0(me); check(me, pop_start); assert(!dead[sh]); size[sh] = n - 1;
           in_cs[me] = 0; hold[me] = obj[me] };   /* commit */
  goto op_done;
pop_slow:
  atomic { on_cpu0(me);
    if
    :: inslab[1] > 0 -> inslab[1]--; hold[me] = 1
    :: inslab[2] > 0 -> inslab[2]--; hold[me] = 2
    :: inslab[3] > 0 -> inslab[3]--; hold[me] = 3
    :: else -> skip
    fi };

op_done:
  done++;
  goto next;
finish:
  skip
}

/* sheaf_drain_cpu(s, 0) from CPU 1 */
proctype drainer() {
  byte m, i;
#ifdef FENCE_BEFORE_LOCK
  fence_cpu0();
#endif
  atomic { lock == 0 -> lock = 1 };  /* pcs_lock_remote: pcs_trylock until it succeeds */
#if !defined(NO_MEMBARRIER) && !defined(FENCE_BEFORE_LOCK)
  fence_cpu0();                      /* rseq_fence_cpu(0) */
#endif
  atomic { m = main; main = EMPTY };
  lock = 0;                          /* pcs_unlock */
  i = 0;                             /* sheaf_flush */
  do
  :: i < size[m] -> inslab[objs[i]]++; i++
  :: else -> break
  od;
  size[m] = 0;
  if                                 /* sheaf_delete */
  :: m != EMPTY -> dead[m] = 1
  :: else -> skip
  fi;
  drained = 1
}

init {
  byte o, copies;
  atomic {
    size[SHEAF] = 1; objs[0] = 1;    /* object 1 in the sheaf, 2 on a slab, 3 held by A */
    inslab[2] = 1;
    hold[0] = 3;
    run fast(0, 3); run fast(1, 2); run drainer()
  };
  _nr_pr == 1;                       /* everyone finished */
  assert(drained && main == EMPTY);
  o = 1;
  do
  :: o <= NOBJ ->
     copies = inslab[o] + (hold[0] == o) + (hold[1] == o);
     if
     :: !dead[SHEAF] && size[SHEAF] > 0 && objs[0] == o -> copies++
     :: else -> skip
     fi;
     if
     :: !dead[SHEAF] && size[SHEAF] > 1 && objs[1] == o -> copies++
     :: else -> skip
     fi;
     assert(copies == 1);
     o++
  :: else -> break
  od
}
