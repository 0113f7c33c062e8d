// Minimal held-lock tracking for lockdep_assert_held() (USLUB_LOCKDEP builds).  The full
// order checker replaces this file in the sync-layer work (issue 8).
#include "base/report.hpp"
#include "sync/lockdep.hpp"

#if USLUB_LOCKDEP
namespace uslub {
namespace {
constexpr int kMaxHeld = 48;
// initial-exec: no __tls_get_addr (which may call malloc) when uslub is the malloc.
__attribute__((tls_model("initial-exec"))) thread_local const void* t_held[kMaxHeld];
__attribute__((tls_model("initial-exec"))) thread_local int t_nheld;
}  // namespace

void lockdep_acquire(const lock_class_key*, const void* lock, bool) {
  if (t_nheld < kMaxHeld) t_held[t_nheld] = lock;
  ++t_nheld;
}

void lockdep_release(const lock_class_key*, const void* lock) {
  for (int i = (t_nheld < kMaxHeld ? t_nheld : kMaxHeld) - 1; i >= 0; --i) {
    if (t_held[i] == lock) {
      for (int j = i; j + 1 < t_nheld && j + 1 < kMaxHeld; ++j) t_held[j] = t_held[j + 1];
      --t_nheld;
      return;
    }
  }
  if (t_nheld > kMaxHeld) --t_nheld;  // an untracked one (more than kMaxHeld held)
}

bool lockdep_is_held(const void* lock) {
  for (int i = 0; i < t_nheld && i < kMaxHeld; ++i)
    if (t_held[i] == lock) return true;
  return t_nheld > kMaxHeld;  // overflowed (fork's prepare holds hundreds): cannot tell
}

void lockdep_assert_held_fn(const void* lock, const char* what, const char* file, int line) {
  if (!lockdep_is_held(lock))
    report_bug("lockdep", "lock not held", "%s (%p) must be held at %s:%d\n", what, lock, file,
               line);
}
}  // namespace uslub
#endif
