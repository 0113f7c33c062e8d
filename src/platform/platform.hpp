// The platform layer: the only code in uslub that talks to Linux.
//
// Everything above it asks this layer for address space, the current CPU, the NUMA topology,
// futexes, time, fork and thread-exit hooks.  OS failures come back as error values (an errno
// number), never as exceptions or aborts, so callers can turn them into NULL / ENOMEM.
//
// Virtual memory goes through an object (vm_ops) rather than free functions so that a test can
// hand the page allocator a failing implementation and reach the out-of-memory paths; every
// call through it is a system call, so the virtual dispatch costs nothing measurable.  The
// per-call paths (current_cpu) are inline and need no object.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "base/compiler.hpp"

namespace uslub {

inline constexpr std::size_t PAGE_SHIFT = 12;
inline constexpr std::size_t PAGE_SIZE = std::size_t{1} << PAGE_SHIFT;

namespace platform {

// How decommit returns physical memory.  DONTNEED drops it at once (the next touch reads
// zeros); FREE lets the kernel take it lazily under pressure (cheaper, contents undefined).
enum class decommit_mode { dontneed, free };

// Address-space operations.  Preconditions: addresses and sizes are PAGE_SIZE multiples;
// commit/decommit/hugepage act on ranges inside one earlier reservation.
class vm_ops {
 public:
  // Reserves size bytes of inaccessible (PROT_NONE) address space aligned to align
  // (a power of two >= PAGE_SIZE).  Returns 0 and sets *out, or an errno.
  virtual int reserve(std::size_t size, std::size_t align, void** out) = 0;
  // Makes [p, p+n) readable and writable.  Returns 0 or an errno (ENOMEM: commit limit).
  virtual int commit(void* p, std::size_t n) = 0;
  // Returns the physical pages of [p, p+n) to the OS; the range stays usable.
  virtual int decommit(void* p, std::size_t n, decommit_mode mode) = 0;
  // Asks for transparent huge pages on [p, p+n).  Failure is harmless.
  virtual int hugepage(void* p, std::size_t n) = 0;
  // Unmaps [p, p+n) (reserved or committed).
  virtual int release(void* p, std::size_t n) = 0;
  // Maps n bytes of zeroed read-write memory (metadata, large blocks).  0 or errno.
  virtual int map(std::size_t n, void** out) = 0;
  // Prefers NUMA node `node` for the pages of [p, p+n) (mbind MPOL_PREFERRED, on a range
  // inside one earlier reservation, before its pages are touched): each page faulted in later
  // comes from that node while it has free memory, from the nearest others after.  Returns 0
  // or an errno (EINVAL: no such node; EPERM: mbind refused, as a container's default seccomp
  // profile does without CAP_SYS_NICE).  Failure is harmless: the pages then follow the
  // thread's own policy (by default, the node of the CPU that first touches them).
  virtual int bind_node(void* p, std::size_t n, int node) = 0;

 protected:
  // Not virtual: implementations live in static storage and must need no destructor call
  // (an atexit registration could allocate inside malloc's own initialisation).
  ~vm_ops() = default;
};

// The production implementation (mmap, mprotect, madvise, munmap).
vm_ops& linux_vm();

// ---- CPUs and NUMA ----------------------------------------------------------------------

inline constexpr unsigned kMaxCpus = 4096;
inline constexpr unsigned kMaxNodes = 64;

// Possible CPUs (from /sys/devices/system/cpu/possible): every cpu id is below this.
unsigned nr_cpu_ids();
// Possible NUMA nodes; 1 on machines without NUMA.
unsigned nr_node_ids();
// NUMA node of a CPU (0 when unknown).
int cpu_to_node(unsigned cpu);
// True if glibc registered an rseq area for this process (it may be turned off with
// GLIBC_TUNABLES=glibc.pthread.rseq=0), so current_cpu() costs one TLS load.
bool rseq_available();

// True if the calling thread has a NUMA memory policy other than the default (set_mempolicy,
// numactl --interleave/--membind/--preferred, inherited across fork and exec).  The page
// allocator then leaves placement to that policy instead of binding sections to nodes.
bool task_has_mempolicy();

// True if this is a virtual machine whose balloon device reports free memory to the host
// (virtio free page reporting), which discards free 2 MiB blocks: huge-page faults then wait
// for the host to back the memory again (host_memory.cpp).  Reads sysfs; call once.
bool host_discards_free_huge_pages();

// Test hook: pretend the machine has nr_nodes nodes with CPU c on node map[c] (issue 4's fake
// two-node configuration).  nr_nodes == 0 restores the real topology.
void set_fake_topology(unsigned nr_nodes, const int* map, unsigned nr_map);

namespace detail {
extern USLUB_HIDDEN bool g_rseq_usable;
// glibc's __rseq_offset, copied at start-up into our own (hidden, PC-relative) variable: the
// fast paths load it with one instruction instead of two through the GOT.  Valid once
// g_rseq_usable is true.
// (Its assembler name: the rseq sequences load it by name, rseq.hpp.)
extern USLUB_HIDDEN std::ptrdiff_t g_rseq_offset asm("uslub_rseq_offset");
extern USLUB_HIDDEN unsigned g_nr_cpu_ids;
unsigned current_cpu_slow();
}  // namespace detail

}  // namespace platform
}  // namespace uslub

extern "C" {
extern const ptrdiff_t __rseq_offset;
extern const unsigned int __rseq_size;
}

namespace uslub::platform {

// The CPU this thread runs on, for choosing a per-CPU slot.  It may be stale the moment it
// is returned (the thread can migrate), so correctness may never depend on it: callers lock
// the slot or run an rseq sequence that aborts on migration.
//
// glibc >= 2.35 keeps the kernel-updated struct rseq at thread pointer + __rseq_offset; its
// cpu_id field (offset 4) is negative when registration failed or is disabled.
USLUB_ALWAYS_INLINE unsigned current_cpu() {
  if (USLUB_LIKELY(__atomic_load_n(&detail::g_rseq_usable, __ATOMIC_RELAXED))) {
    const auto* area = static_cast<const char*>(__builtin_thread_pointer()) +
                       __atomic_load_n(&detail::g_rseq_offset, __ATOMIC_RELAXED);
    int cpu = __atomic_load_n(reinterpret_cast<const int*>(area + 4), __ATOMIC_RELAXED);
    if (USLUB_LIKELY(cpu >= 0)) return static_cast<unsigned>(cpu);
  }
  return detail::current_cpu_slow();
}

// ---- futex ------------------------------------------------------------------------------

// Sleeps while *addr == val (private futex).  Spurious wake-ups happen; callers loop.
void futex_wait(std::atomic<std::uint32_t>* addr, std::uint32_t val);
void futex_wake(std::atomic<std::uint32_t>* addr, int nr);

// ---- time -------------------------------------------------------------------------------

std::uint64_t monotonic_ns();
// Cheap millisecond clock (CLOCK_MONOTONIC_COARSE through the vDSO), for decay decisions.
std::uint64_t coarse_ms();

// ---- process and threads ----------------------------------------------------------------

// pthread_atfork; returns 0 or an errno.
int register_atfork(void (*prepare)(), void (*parent)(), void (*child)());

// Calls fn(value) when a thread that armed it exits.  One hook per use: construct it once
// (static storage), then arm() it in each thread that needs the call.
class thread_exit_hook {
 public:
  explicit thread_exit_hook(void (*fn)(void*));
  // Arms the hook for the calling thread with value (non-null).  Returns 0 or an errno.
  int arm(void* value);
  void* armed_value() const;

 private:
  unsigned key_;
  bool ok_;
};

// 64 random bits from getrandom() (a time/address mix if the kernel refuses).  For secrets
// such as the free-pointer hardening key.
std::uint64_t random_u64();

// Number of the calling thread (gettid).
pid_t thread_id();

// ---- environment ------------------------------------------------------------------------

// Reads a size from the environment: digits with an optional K/M/G/T suffix (powers of 1024).
// Returns def when unset or unparsable.  Never allocates (safe inside malloc initialisation).
std::uint64_t env_size(const char* name, std::uint64_t def);

}  // namespace uslub::platform
