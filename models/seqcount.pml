/* The seqcount read/write protocol (include/uslub/seqlock.hpp) with the associated-lock
 * fallback of its readers.
 *
 * A writer updates two words under its lock between an odd and an even count.  Readers retry
 * until they read the same even count around their copy; a reader that finds the count odd
 * spins (kSeqcountReaderSpins, here SPINS) and then takes and drops the writer's lock, which
 * sleeps until the writer has left its section.
 *
 * Two readers:
 *  - `remote` runs on another CPU and interleaves freely with the writer;
 *  - `rt` shares the writer's CPU at a higher priority (SCHED_FIFO, or simply the writer's
 *    time slice ending mid-section): once it wakes, the writer runs only while `rt` sleeps on
 *    the lock's futex.  This is the case the lock fallback exists for.
 * Properties: no reader ever accepts a torn pair (assert), and both readers finish (the LTL
 * formula `done`, checked with pan -a -f: weak fairness, so a reader spinning on another CPU
 * while the writer could run is not counted as a violation).
 *
 * Sequentially consistent model: the C++ fences' role is argued in seqlock.hpp.
 * Mutations (scripts/check-models.sh compiles each with spin -D<name> and expects an error):
 *   NO_READER_LOCK_WAIT  readers never wait on the lock, they spin (and yield) only: the rt
 *                        reader spins forever on the odd count of the writer it preempted
 *                        (acceptance cycle of `done`);
 *   NO_ODD_PHASE         the writer bumps the count once, by 2, after its stores: a torn pair
 *                        is accepted (assertion).
 */
#define SPINS 2

byte seq;
byte d1, d2;
bool wlock;
bool rt_awake;    /* the rt reader has preempted the writer's CPU */
bool rt_sleeping; /* ... and sleeps on the writer's lock */
bool rt_done, remote_done;

/* The writer's CPU is free for it unless the rt reader is awake and not sleeping. */
#define WRITER_MAY_RUN (!rt_awake || rt_sleeping || rt_done)

inline lock(l) { atomic { l == 0 -> l = 1 } }
inline unlock(l) { l = 0 }

active proctype writer() {
  byte i = 1;
  do
  :: i < 3 ->
     atomic { WRITER_MAY_RUN && wlock == 0 -> wlock = 1 };
#ifndef NO_ODD_PHASE
     atomic { WRITER_MAY_RUN -> seq = seq + 1 };
#endif
     atomic { WRITER_MAY_RUN -> d1 = i };
     atomic { WRITER_MAY_RUN -> d2 = i };
#ifndef NO_ODD_PHASE
     atomic { WRITER_MAY_RUN -> seq = seq + 1 };
#else
     atomic { WRITER_MAY_RUN -> seq = seq + 2 };
#endif
     atomic { WRITER_MAY_RUN -> unlock(wlock) };
     i++
  :: else -> break
  od
}

/* read_seqcount_begin + copy + read_seqcount_retry.  `rt` marks the rt reader, whose futex
 * sleep on the lock lets the writer run. */
inline read_section(rt) {
  byte s1, s2, a, b, spins;
again:
  spins = 0;
begin:
  s1 = seq;
  if
  :: (s1 % 2) == 1 && spins < SPINS -> spins++; goto begin
  :: (s1 % 2) == 1 && spins >= SPINS ->
#ifndef NO_READER_LOCK_WAIT
     /* reader_wait(): lock and unlock the writer's lock (a futex sleep while it is held) */
     atomic {
       if
       :: wlock == 0 -> wlock = 1
       :: else -> rt_sleeping = (rt_sleeping || rt); wlock == 0 -> wlock = 1   /* futex sleep */
       fi
     };
     atomic { rt_sleeping = (rt_sleeping && !rt); wlock = 0 };
     goto again
#else
     goto again   /* sched_yield() and spin again: no help against a higher priority */
#endif
  :: else -> skip
  fi;
  a = d1;
  b = d2;
  s2 = seq;
  if
  :: s1 == s2 -> assert(a == b)
  :: else -> goto again
  fi
}

active proctype rt() {
  rt_awake = 1;
  read_section(1);
  rt_done = 1
}

active proctype remote() {
  read_section(0);
  remote_done = 1
}

ltl done { <> (rt_done && remote_done) }
