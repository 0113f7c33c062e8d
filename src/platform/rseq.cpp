// rseq availability and the membarrier fence (see rseq.hpp).
#include "platform/rseq.hpp"

#include <errno.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>

namespace uslub::platform {
namespace {
std::atomic<int> g_usable{-1};  // -1 unknown

bool probe() {
#if USLUB_HAVE_RSEQ_ASM
  if (!rseq_available()) return false;
  if (env_size("USLUB_RSEQ", 1) == 0) return false;
  // Remote drains need to restart sequences on another CPU.
  if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ, 0, 0) != 0)
    return false;
  return true;
#else
  return false;
#endif
}
}  // namespace

bool rseq_sequences_usable() {
  int u = g_usable.load(std::memory_order_acquire);
  if (USLUB_LIKELY(u >= 0)) return u != 0;
  u = probe() ? 1 : 0;
  g_usable.store(u, std::memory_order_release);
  return u != 0;
}

int rseq_fence_cpu(unsigned cpu) {
  long r = syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, MEMBARRIER_CMD_FLAG_CPU,
                   static_cast<int>(cpu));
  return r == 0 ? 0 : errno;
}

namespace detail {
std::uint64_t g_rseq_aborts = 0;
std::uint32_t g_slot_tick_inc[2] = {1 + (std::uint32_t{1} << 26), 1 + (std::uint32_t{1} << 26)};
}  // namespace detail
std::uint64_t rseq_abort_count() {
  return __atomic_load_n(&detail::g_rseq_aborts, __ATOMIC_RELAXED);
}

}  // namespace uslub::platform
