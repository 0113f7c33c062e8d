/* The seqcount read/write protocol (src/sync/seqcount.hpp) with the associated-lock fallback.
 * A writer updates two words under its lock between an odd and an even count; readers retry
 * until they read an even count twice around their copy, and after spinning on an odd count
 * they wait on the writer's lock.  Property: a reader never accepts a torn pair.
 * Sequentially consistent model: the C++ fences' role is argued in the header.
 * -DBUG drops the odd phase (the count is bumped once, after the data): spin must find a torn
 * read.
 */
byte seq;
byte d1, d2;
bool wlock;

inline lock(l) { atomic { l == 0 -> l = 1 } }
inline unlock(l) { l = 0 }

active proctype writer() {
  byte i = 1;
  do
  :: i < 4 ->
     lock(wlock);
#ifndef BUG
     seq = seq + 1;
#endif
     d1 = i;
     d2 = i;
#ifndef BUG
     seq = seq + 1;
#else
     seq = seq + 2;
#endif
     unlock(wlock);
     i++
  :: else -> break
  od
}

active [2] proctype reader() {
  byte s1, s2, a, b;
again:
  s1 = seq;
  if
  :: (s1 % 2) == 1 -> lock(wlock); unlock(wlock); goto again   /* wait on the writer's lock */
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
