// For the test programs whose fork children start threads (liburcu's new call_rcu thread, the
// pressure monitor).  TSan kills such a child unless told not to, and even then the child's
// pthread_create may trip over the parent's threads ("dup thread with used id", exit 66).  So
// under TSan the children's exit status is not checked (kCheckChildStatus): the tests check the
// parent side (no race, no hang) and that no child hangs.
//
// Include from one file per test program only: it defines TSan's options hook.
#pragma once

#include "base/compiler.hpp"

#if USLUB_TSAN
extern "C" const char* __tsan_default_options() {
  return "die_after_fork=0";
}
namespace uslub::test {
constexpr bool kCheckChildStatus = false;
}
#else
namespace uslub::test {
constexpr bool kCheckChildStatus = true;
}
#endif
