// Restartable sequences (rseq) on the per-CPU stacks of pointers behind uslub's sheaves.
//
// glibc (>= 2.35) registers a struct rseq for every thread at thread pointer + __rseq_offset
// with signature RSEQ_SIG.  A critical section publishes a struct rseq_cs (start, length,
// abort address) in rseq->rseq_cs; if the thread is preempted, migrated or signalled while its
// instruction pointer is inside [start, start + length), the kernel moves it to the abort
// address (which must be preceded by RSEQ_SIG) before it runs again.  A section that ends with
// one committing store is therefore atomic with respect to every other thread on the same CPU,
// with no locked instruction (the user-space equivalent of this_cpu_* operations).
//
// The sequences here operate on a per-CPU slot layout described by template parameters:
//     slot:  { u32 lock at LockOff; stack* at MainOff }
//     stack: { u32 size at SizeOff; u32 capacity at CapOff; void* objects[] at ObjsOff }
// pop:  if slot.lock == 0 and main->size > 0: return main->objects[--size]   (commit: size)
// push: if slot.lock == 0 and main->size < capacity: main->objects[size++] = obj (commit: size)
// A slot whose lock word is set belongs to a slow path or a remote drain: the sequences
// leave it alone (return "slow").  Threads take the lock word with rseq_lock_slot() (a locked
// cmpxchg that is itself the commit of a sequence, so that at the instant it succeeds no
// sequence of that CPU is in flight) or, from another CPU, with a plain CAS followed by
// rseq_fence_cpu() (membarrier MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ), which restarts any
// sequence in flight on that CPU so it re-reads the lock word.
//
// Available on x86-64 only (aarch64 would need its own sequences and a machine to test them);
// elsewhere, under ThreadSanitizer (which cannot see accesses inside asm) and when glibc's rseq
// is off (GLIBC_TUNABLES=glibc.pthread.rseq=0) or USLUB_RSEQ=0, rseq_sequences_usable() is
// false and callers use their locked fallback.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>

#include "base/compiler.hpp"
#include "platform/platform.hpp"

namespace uslub::platform {

// True if rseq sequences and the membarrier fence can be used in this process.
bool rseq_sequences_usable();
// Restarts any rseq critical section running on cpu (membarrier).  0 or an errno.
int rseq_fence_cpu(unsigned cpu);
// Count of aborted sequences observed by the callers (statistics; relaxed, approximate).
std::uint64_t rseq_abort_count();
namespace detail {
extern USLUB_HIDDEN std::uint64_t g_rseq_aborts;
}
// Inline (no call on the abort path, so fast paths need no stack frame).
USLUB_ALWAYS_INLINE void rseq_note_abort() {
  __atomic_fetch_add(&detail::g_rseq_aborts, 1, __ATOMIC_RELAXED);
}

#if defined(__x86_64__) && !USLUB_TSAN
#define USLUB_HAVE_RSEQ_ASM 1

inline constexpr std::uint32_t kRseqSig = 0x53053053;

// The CPU rseq last saw this thread on (cpu_id_start: always a valid CPU number).
// rs: detail::g_rseq_offset (the sequences read it once; it never changes after start-up, and
// these sequences are not compiled under TSan, so a plain load suffices).
USLUB_ALWAYS_INLINE unsigned rseq_cpu_start(std::uintptr_t rs) {
  const auto* area = static_cast<const char*>(__builtin_thread_pointer()) + rs;
  return __atomic_load_n(reinterpret_cast<const std::uint32_t*>(area), __ATOMIC_RELAXED);
}

// The rseq_cs table entry and the abort stub of one sequence.  %l[abort] is the C label to
// restart at; labels: 1 start, 2 post-commit, 3 descriptor, 4 abort ip.
#define USLUB_RSEQ_PROLOGUE_CPU                                              \
  ".pushsection __rseq_cs, \"aw\"\n\t"                                       \
  ".balign 32\n\t"                                                           \
  "3:\n\t"                                                                   \
  ".long 0, 0\n\t"                                                           \
  ".quad 1f, (2f - 1f), 4f\n\t"                                              \
  ".popsection\n\t"                                                          \
  ".pushsection __rseq_failure, \"ax\"\n\t"                                  \
  ".byte 0x0f, 0xb9, 0x3d\n\t" /* ud1 <sig>(%%rip), %%edi: never executed */ \
  ".long 0x53053053\n\t"                                                     \
  "4:\n\t"                                                                   \
  "jmp %l[abort]\n\t"                                                        \
  ".popsection\n\t"                                                          \
  "leaq 3b(%%rip), %%rax\n\t"                                                \
  "movq %%rax, %%fs:8(%[rs])\n\t" /* rseq->rseq_cs = &descriptor */          \
  "1:\n\t"                                                                   \
  "cmpl %[cpu], %%fs:4(%[rs])\n\t" /* still on the slot's CPU? */            \
  "jnz 4b\n\t"

// The same, but the sequence itself reads cpu_id after it has started (a migration from then
// on aborts it) and leaves this CPU's slot in %rax: no CPU number or slot register is needed
// before the sequence, which keeps the fast paths within the caller-saved registers.
#define USLUB_RSEQ_PROLOGUE_SLOT                                             \
  ".pushsection __rseq_cs, \"aw\"\n\t"                                       \
  ".balign 32\n\t"                                                           \
  "3:\n\t"                                                                   \
  ".long 0, 0\n\t"                                                           \
  ".quad 1f, (2f - 1f), 4f\n\t"                                              \
  ".popsection\n\t"                                                          \
  ".pushsection __rseq_failure, \"ax\"\n\t"                                  \
  ".byte 0x0f, 0xb9, 0x3d\n\t" /* ud1 <sig>(%%rip), %%edi: never executed */ \
  ".long 0x53053053\n\t"                                                     \
  "4:\n\t"                                                                   \
  "jmp %l[abort]\n\t"                                                        \
  ".popsection\n\t"                                                          \
  "leaq 3b(%%rip), %%rax\n\t"                                                \
  "movq %%rax, %%fs:8(%[rs])\n\t" /* rseq->rseq_cs = &descriptor */          \
  "1:\n\t"                                                                   \
  "movl %%fs:4(%[rs]), %%eax\n\t" /* cpu_id, inside the sequence */          \
  "shlq %[shift], %%rax\n\t"      /* slots are a power of two apart */       \
  "addq %[slots], %%rax\n\t"      /* rax = this CPU's slot */

// Pops from the slot of `cpu`.  Returns the object, or nullptr if the slot is locked or its
// stack is empty (the caller's slow path).  Retries by itself when the sequence aborts.
template <unsigned LockOff, unsigned MainOff, unsigned SizeOff, unsigned ObjsOff,
          std::size_t Stride>
USLUB_ALWAYS_INLINE void* rseq_percpu_pop(char* slots) {
  static_assert(std::has_single_bit(Stride));
  std::uintptr_t rs = static_cast<std::uintptr_t>(detail::g_rseq_offset);
  void* obj;
  void* stack;
  std::uint64_t n;
restart:
  asm volatile goto(
      USLUB_RSEQ_PROLOGUE_SLOT
      "cmpl $0, %c[lock](%%rax)\n\t"
      "jnz %l[slow]\n\t"
      "movq %c[main](%%rax), %[stack]\n\t"
      "movl %c[size](%[stack]), %k[n]\n\t"
      "testl %k[n], %k[n]\n\t"
      "jz %l[slow]\n\t"
      "subl $1, %k[n]\n\t"
      "movq %c[objs](%[stack], %[n], 8), %[obj]\n\t"
      "movl %k[n], %c[size](%[stack])\n\t"  // commit
      "2:\n\t"
      : [obj] "=&r"(obj), [stack] "=&r"(stack), [n] "=&r"(n)
      : [rs] "r"(rs), [slots] "r"(slots), [shift] "i"(std::countr_zero(Stride)),
        [lock] "i"(LockOff), [main] "i"(MainOff), [size] "i"(SizeOff), [objs] "i"(ObjsOff)
      : "rax", "memory", "cc"
      : abort, slow);
  if (!obj) __builtin_unreachable();  // stacks never hold null (the callers' tests fold)
  return obj;
abort:
  rseq_note_abort();
  goto restart;
slow:
  return nullptr;
}

// Pushes obj onto the slot of the current CPU.  Returns false if the slot is locked or its
// stack is full.  (Double frees are the caller's: sheaves check the free key before.)
template <unsigned LockOff, unsigned MainOff, unsigned SizeOff, unsigned CapOff, unsigned ObjsOff,
          std::size_t Stride>
USLUB_ALWAYS_INLINE bool rseq_percpu_push(char* slots, void* obj) {
  static_assert(std::has_single_bit(Stride));
  std::uintptr_t rs = static_cast<std::uintptr_t>(detail::g_rseq_offset);
  void* stack;
  std::uint64_t n;
restart:
  asm volatile goto(USLUB_RSEQ_PROLOGUE_SLOT
                    "cmpl $0, %c[lock](%%rax)\n\t"
                    "jnz %l[slow]\n\t"
                    "movq %c[main](%%rax), %[stack]\n\t"
                    "movl %c[size](%[stack]), %k[n]\n\t"
                    "cmpl %c[cap](%[stack]), %k[n]\n\t"
                    "jae %l[slow]\n\t"
                    "movq %[obj], %c[objs](%[stack], %[n], 8)\n\t"
                    "addl $1, %k[n]\n\t"
                    "movl %k[n], %c[size](%[stack])\n\t"  // commit
                    "2:\n\t"
                    : [stack] "=&r"(stack), [n] "=&r"(n)
                    : [rs] "r"(rs), [slots] "r"(slots), [shift] "i"(std::countr_zero(Stride)),
                      [obj] "r"(obj), [lock] "i"(LockOff), [main] "i"(MainOff), [size] "i"(SizeOff),
                      [cap] "i"(CapOff), [objs] "i"(ObjsOff)
                    : "rax", "memory", "cc"
                    : abort, slow);
  return true;
abort:
  rseq_note_abort();
  goto restart;
slow:
  return false;
}

// Takes the lock word of the current CPU's slot: a sequence whose commit is a locked cmpxchg
// 0 -> 1, so no sequence of that CPU is mid-flight when it succeeds.  Returns the CPU whose
// slot was locked, or -1 if that slot's lock is already held.
template <unsigned LockOff>
USLUB_ALWAYS_INLINE int rseq_lock_slot(char* slots, std::size_t stride) {
  std::uintptr_t rs = static_cast<std::uintptr_t>(detail::g_rseq_offset);
  unsigned cpu;
  char* slot;
restart:
  cpu = rseq_cpu_start(rs);
  slot = slots + cpu * stride;
  asm volatile goto(USLUB_RSEQ_PROLOGUE_CPU
                    "xorl %%eax, %%eax\n\t"
                    "movl $1, %%ecx\n\t"
                    "lock cmpxchgl %%ecx, %c[lock](%[slot])\n\t"  // commit: 0 -> 1
                    "2:\n\t"
                    "jnz %l[busy]\n\t"
                    :
                    : [rs] "r"(rs), [cpu] "r"(cpu), [slot] "r"(slot), [lock] "i"(LockOff)
                    : "rax", "rcx", "memory", "cc"
                    : abort, busy);
  return static_cast<int>(cpu);
abort:
  rseq_note_abort();
  goto restart;
busy:
  return -1;
}

#else
#define USLUB_HAVE_RSEQ_ASM 0
#endif

}  // namespace uslub::platform
