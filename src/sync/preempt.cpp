// The held-lock count and the fork handlers' shared decision.  Rules: preempt.hpp.
#include "sync/preempt.hpp"

namespace uslub {

__thread unsigned uslub_preempt_count __attribute__((tls_model("initial-exec")));

namespace {
// Depth of uslub's fork handlers under way on this thread (prepare raises it, parent/child
// lower it) and the decision of the first prepare.
__attribute__((tls_model("initial-exec"))) __thread unsigned t_fork_depth;
__attribute__((tls_model("initial-exec"))) __thread bool t_fork_atomic;
}  // namespace

bool fork_handler_enter() {
  if (t_fork_depth++ == 0) t_fork_atomic = in_atomic();
  return t_fork_atomic;
}

bool fork_handler_exit() {
  bool atomic = t_fork_atomic;
  if (t_fork_depth) --t_fork_depth;
  return atomic;
}

}  // namespace uslub
