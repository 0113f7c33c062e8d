/* drain_all_pages' generation protocol (src/page/pcp.cpp; seed 004's lru_add_drain_all).
 *
 * Three callers each free one page (a bit) into their CPU's pcp list under that list's lock,
 * then call drain_all_pages: read gen, take the drain mutex, piggyback if gen moved, otherwise
 * bump gen and empty every CPU's list under its lock.  Property: when a call returns, the page
 * its caller freed before calling is on no pcp list.
 *
 * Promela is sequentially consistent: this checks the protocol's logic.  The memory-ordering
 * half of the argument (the pcp lock's release/acquire hand-off makes the bump visible to a
 * caller whose free came later) is written next to the code.
 * Mutations (scripts/check-models.sh compiles each with spin -D<name> and expects an error):
 *   GEN_AFTER_DRAIN      gen is bumped after the drain loop instead of before (D): a caller
 *                        piggybacks on a drain that had already passed its CPU;
 *   CHECK_OUTSIDE_MUTEX  the generation check (C) is made before taking the drain mutex, so a
 *                        caller piggybacks on a drain that has started but not finished.
 * Each must make an assertion fail.
 */
#define NCPU 2
byte pcp[NCPU];
bool pcplock[NCPU];
bool mutex;
byte gen;

inline lock(l) { atomic { l == 0 -> l = 1 } }
inline unlock(l) { l = 0 }

proctype caller(byte me; byte cpu) {
  byte this_gen, c;
  lock(pcplock[cpu]);
  pcp[cpu] = pcp[cpu] | (1 << me);
  unlock(pcplock[cpu]);

  this_gen = gen;
#ifdef CHECK_OUTSIDE_MUTEX
  if
  :: this_gen != gen -> goto done
  :: else -> skip
  fi;
#endif
  lock(mutex);
  if
  :: this_gen != gen -> skip      /* (C) someone drained after we started: piggyback */
  :: else ->
#ifndef GEN_AFTER_DRAIN
     gen = gen + 1;               /* (D) before the loop */
#endif
     c = 0;
     do
     :: c < NCPU -> lock(pcplock[c]); pcp[c] = 0; unlock(pcplock[c]); c++
     :: else -> break
     od;
#ifdef GEN_AFTER_DRAIN
     gen = gen + 1;
#endif
  fi;
  unlock(mutex);
done:
  assert((pcp[cpu] & (1 << me)) == 0)
}

init {
  atomic { run caller(0, 0); run caller(1, 1); run caller(2, 0) }
}
