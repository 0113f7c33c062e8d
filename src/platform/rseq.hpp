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
// The sequences here operate on the class slots ({objs, size, tick, cap} at area + (cpu <<
// Shift) + off, rseq_slot_layout below):
// pop:  if size - 1 < cap (unsigned): return objs[--size]        (commit: size, 16 bits)
// push: if size < cap (signed): objs[size++] = obj                (commit: size, 16 bits)
// kmalloc's keyed push also advances the tick, the high half of the 32-bit word {size, tick}
// (commit: the whole word), and leaves for the checked path when the add carries out of it
// (the double-free sampling, rseq_slot_push).
// cap 0 means the slot belongs to a slow path or a remote drain: the sequences leave it alone
// (return "slow").  Threads take it with rseq_slot_lock() (a locked cmpxchg of cap that is
// itself the commit of a sequence, so that at the instant it succeeds no sequence of that CPU
// is in flight) or, from another CPU, with a plain CAS of cap followed by rseq_fence_cpu()
// (membarrier MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ), which restarts any sequence in flight on
// that CPU so it re-reads cap.
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
// The {size, tick} steps of the keyed [0] and ticked [1] pushes (rseq_slot_push; set by
// kmalloc_set_double_free_rate).  Named in the sequences' text by its assembler name, so
// that they add it from memory RIP-relative, with no register for its address (an "m"
// operand gets one in PIC code).
extern USLUB_HIDDEN std::uint32_t g_slot_tick_inc[2] asm("uslub_slot_tick_inc");
}  // namespace detail
// Inline (no call on the abort path, so fast paths need no stack frame).
USLUB_ALWAYS_INLINE void rseq_note_abort() {
  __atomic_fetch_add(&detail::g_rseq_aborts, 1, __ATOMIC_RELAXED);
}

// What a slot push did (rseq_slot_push; the locked fallback returns ok, slow or in_a_row).
enum class slot_push { ok, slow, in_a_row, sample };

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

// The rseq_cs table entry and the abort stub of one sequence, then the store that arms it.
// %l[abort] is the C label to restart at; labels: 1 start, 2 post-commit, 3 descriptor, 4 abort
// ip.  The two prologues below add the sequence's first instructions.
#define USLUB_RSEQ_ARM(RS)                                                   \
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
  "movq %%rax, %%fs:8(" RS ")\n\t" /* rseq->rseq_cs = &descriptor */

// A sequence on the CPU the caller read (%[cpu]): it aborts if the thread is elsewhere.
#define USLUB_RSEQ_PROLOGUE_CPU                                   \
  USLUB_RSEQ_ARM("%[rs]")                                         \
  "1:\n\t"                                                        \
  "cmpl %[cpu], %%fs:4(%[rs])\n\t" /* still on the slot's CPU? */ \
  "jnz 4b\n\t"

// A sequence that reads cpu_id itself after it has started (a migration from then on aborts
// it) and leaves this CPU's area in %rax: no CPU number or area register is needed before the
// sequence, which keeps the fast paths within the caller-saved registers.  The rseq offset
// is loaded by its assembler name into %[n], an output operand the sequence's body only
// writes after this (no register of its own).
#define USLUB_RSEQ_PROLOGUE_AREA \
  "movq uslub_rseq_offset(%%rip), %[n]\n\t"                         \
  USLUB_RSEQ_ARM("%[n]")                                            \
  "1:\n\t"                                                          \
  "movl %%fs:4(%[n]), %%eax\n\t" /* cpu_id, inside the sequence */  \
  "shlq %[shift], %%rax\n\t"     /* areas are a power of two apart */ \
  "addq %[area], %%rax\n\t"      /* rax = this CPU's area */

// ---- class slots: {objs, size, tick, cap} at area + (cpu << Shift) + off ----------------
// The hot slot of one cache on one CPU (slab/sheaf.hpp): objs is the installed sheaf's object
// array, size its count (the commit target), cap its capacity, or 0 while a slow path or a
// drain holds the slot (the lock), or kSlotNoSheaf (signed negative) when no sheaf is
// installed.  A pop compares size - 1 < cap unsigned and a push size < cap signed, so one
// compare each makes both miss on a held slot and on a slot without a sheaf.  cap is loaded
// before size and objs: a holder publishes objs and size before its release store of cap.
// tick (the 16 bits above size) is kmalloc's double-free sampling counter: only the keyed
// and ticked pushes change it, with the same store that commits size; everyone else reads
// and writes size as a 16-bit word and leaves tick alone.
struct rseq_slot_layout {
  static constexpr unsigned kObjs = 0, kSize = 8, kTick = 10, kCap = 12;
};

// Pops from the slot at off (+ Disp, a constant part of the offset) in this CPU's area:
// the object, or nullptr if the slot is empty, held or without a sheaf.  With Prefetch, the
// object the next pop will return is prefetched for writing (its first word is stored by
// the allocation that takes it).
template <unsigned Shift, unsigned Disp, bool Prefetch>
USLUB_ALWAYS_INLINE void* rseq_slot_pop(char* area, std::uintptr_t off) {
  using L = rseq_slot_layout;
  void* obj;           // objs, then the object
  std::uint64_t n, w;  // n: cap, then the new size; w: {size, tick} - 1
restart:
  // The commit stores the whole 32-bit word {size, tick}, as the pushes do: a narrower store
  // would make the next push's 32-bit load miss store forwarding (a stall of ~10 cycles).
  // cap's low half is 0 when held (0) and without a sheaf (kSlotNoSheaf): a 16-bit compare.
  asm volatile goto(
      USLUB_RSEQ_PROLOGUE_AREA
      "movl %c[ocap](%%rax,%[off]), %k[n]\n\t"
      "movl %c[osize](%%rax,%[off]), %k[w]\n\t"
      "subl $1, %k[w]\n\t"
      "cmpw %w[n], %w[w]\n\t"  // size - 1 < cap (16 bits, unsigned)
      "jae %l[slow]\n\t"
      "movq %c[oobjs](%%rax,%[off]), %[obj]\n\t"
      "movzwl %w[w], %k[n]\n\t"
      "movq (%[obj],%[n],8), %[obj]\n\t"
      "movl %k[w], %c[osize](%%rax,%[off])\n\t"  // commit: size - 1, tick unchanged
      "2:\n\t"
      : [obj] "=&r"(obj), [n] "=&r"(n), [w] "=&r"(w)
      : [area] "r"(area), [off] "r"(off), [shift] "i"(Shift), [oobjs] "i"(Disp + L::kObjs),
        [osize] "i"(Disp + L::kSize), [ocap] "i"(Disp + L::kCap)
      : "rax", "memory", "cc"
      : abort, slow);
  {
    if constexpr (Prefetch) {
      // The object the next pop returns (n == 0: the sheaf header's word; a prefetch never
      // faults), for writing: the allocation that takes it stores its first word.  objs is
      // read again, outside the sequence (the sequence keeps no register for it): after a
      // migration it is another CPU's slot of the same cache, an array as long or the empty
      // sheaf's, and the word read only feeds the prefetch.
      void** objs = __atomic_load_n(
          reinterpret_cast<void***>(
              area +
              (std::uintptr_t{rseq_cpu_start(static_cast<std::uintptr_t>(detail::g_rseq_offset))}
               << Shift) +
              off + Disp + L::kObjs),
          __ATOMIC_RELAXED);
      __builtin_prefetch(objs[static_cast<std::ptrdiff_t>(n) - 1], 1, 3);
    }
    if (!obj) __builtin_unreachable();  // slots never hold null (the callers' tests fold)
    return obj;
  }
abort:
  rseq_note_abort();
  goto restart;
slow:
  return nullptr;
}

// The kinds of push.  plain: the object alone (kmem_cache; size only, tick untouched).
// keyed: kmalloc's free: the free key stored into the object and {size, tick} advanced by
// detail::g_slot_tick_inc[0] (1 + the tick's step); when that add carries out of the 32-bit word
// the push leaves with `sample` before storing anything, and the caller's checked path verifies the
// key and then pushes ticked.  ticked: the object alone, {size, tick} advanced by
// g_slot_tick_inc[1], no carry test (the push after a sample, so that the next keyed push counts
// from there).
enum class push_kind { plain, keyed, ticked };

// Pushes obj onto the slot at off (+ Disp) in this CPU's area.  Before the commit it compares
// obj with the slot's top object (in_a_row: a double free, nothing stored) and, keyed,
// stores key at key_word (the object's free-key word; repeated if the sequence restarts,
// which is harmless: obj is the caller's until the commit).  slow: the slot is full, held
// or without a sheaf.
// The parts every push shares (inside the sequence, rax = this CPU's area): tmp = cap,
// w = {size, tick}, n = size; then tmp = objs and `dup` if obj is on top (n == 0 compares the
// sheaf header, never an object).
#define USLUB_SLOT_PUSH_LOAD                 \
  "movl %c[ocap](%%rax,%[off]), %k[tmp]\n\t" \
  "movl %c[osize](%%rax,%[off]), %k[w]\n\t"  \
  "movzwl %w[w], %k[n]\n\t"
#define USLUB_SLOT_PUSH_IN_A_ROW             \
  "movq %c[oobjs](%%rax,%[off]), %[tmp]\n\t" \
  "cmpq %[obj], -8(%[tmp],%[n],8)\n\t"       \
  "je %l[dup]\n\t"

template <unsigned Shift, unsigned Disp, push_kind Kind>
USLUB_ALWAYS_INLINE slot_push rseq_slot_push(char* area, std::uintptr_t off, void* obj,
                                             std::uintptr_t* key_word, std::uintptr_t key) {
  using L = rseq_slot_layout;
  std::uint64_t n, tmp, w;  // tmp: cap, then objs; w: {size, tick} + the step
restart:
  if constexpr (Kind == push_kind::keyed) {
    asm volatile goto(USLUB_RSEQ_PROLOGUE_AREA USLUB_SLOT_PUSH_LOAD
                      "addl uslub_slot_tick_inc(%%rip), %k[w]\n\t"  // size + 1, tick + step
                      "jc %l[sample]\n\t"  // the tick wrapped: this free is checked
                      "cmpl %k[tmp], %k[n]\n\t"
                      "jge %l[slow]\n\t" USLUB_SLOT_PUSH_IN_A_ROW
                      "movq %[key], (%[kw])\n\t"
                      "movq %[obj], (%[tmp],%[n],8)\n\t"
                      "movl %k[w], %c[osize](%%rax,%[off])\n\t"  // commit: size and tick
                      "2:\n\t"
                      : [n] "=&r"(n), [tmp] "=&r"(tmp), [w] "=&r"(w)
                      : [area] "r"(area), [off] "r"(off), [shift] "i"(Shift), [obj] "r"(obj),
                        [kw] "r"(key_word), [key] "r"(key), [oobjs] "i"(Disp + L::kObjs),
                        [osize] "i"(Disp + L::kSize), [ocap] "i"(Disp + L::kCap)
                      : "rax", "memory", "cc"
                      : abort, slow, dup, sample);
  } else if constexpr (Kind == push_kind::ticked) {
    (void)key_word, (void)key;
    asm volatile goto(
        USLUB_RSEQ_PROLOGUE_AREA USLUB_SLOT_PUSH_LOAD
        "addl uslub_slot_tick_inc+4(%%rip), %k[w]\n\t"  // size + 1, tick + step (a carry is
                                                        // dropped)
        "cmpl %k[tmp], %k[n]\n\t"
        "jge %l[slow]\n\t" USLUB_SLOT_PUSH_IN_A_ROW
        "movq %[obj], (%[tmp],%[n],8)\n\t"
        "movl %k[w], %c[osize](%%rax,%[off])\n\t"  // commit: size and tick
        "2:\n\t"
        : [n] "=&r"(n), [tmp] "=&r"(tmp), [w] "=&r"(w)
        : [area] "r"(area), [off] "r"(off), [shift] "i"(Shift), [obj] "r"(obj),
          [oobjs] "i"(Disp + L::kObjs), [osize] "i"(Disp + L::kSize), [ocap] "i"(Disp + L::kCap)
        : "rax", "memory", "cc"
        : abort, slow, dup, sample);
  } else {
    (void)key_word, (void)key;
    asm volatile goto(
        USLUB_RSEQ_PROLOGUE_AREA USLUB_SLOT_PUSH_LOAD
        "cmpl %k[tmp], %k[n]\n\t"
        "jge %l[slow]\n\t" USLUB_SLOT_PUSH_IN_A_ROW
        "movq %[obj], (%[tmp],%[n],8)\n\t"
        "addl $1, %k[w]\n\t"
        "movl %k[w], %c[osize](%%rax,%[off])\n\t"  // commit: size + 1, tick unchanged
        "2:\n\t"
        : [n] "=&r"(n), [tmp] "=&r"(tmp), [w] "=&r"(w)
        : [area] "r"(area), [off] "r"(off), [shift] "i"(Shift), [obj] "r"(obj),
          [oobjs] "i"(Disp + L::kObjs), [osize] "i"(Disp + L::kSize), [ocap] "i"(Disp + L::kCap)
        : "rax", "memory", "cc"
        : abort, slow, dup, sample);
  }
  return slot_push::ok;
abort:
  // Keyed: the sequence may have stored the key before it was aborted, and the restart may
  // end on the checked path (sample, or slow on another CPU's full slot), which would take
  // the key for an earlier free of obj.  obj is still the caller's: clear the word.
  if constexpr (Kind == push_kind::keyed)
    __atomic_store_n(key_word, std::uintptr_t{0}, __ATOMIC_RELAXED);
  rseq_note_abort();
  goto restart;
slow:
  return slot_push::slow;
dup:
  return slot_push::in_a_row;
sample:
  return slot_push::sample;
}

// Takes the slot at off in the current CPU's area: a sequence whose commit is a locked
// cmpxchg of cap from its value (non-zero) to 0, so no sequence of that CPU is mid-flight
// when it succeeds.  Returns the CPU (and the old cap in *old_cap), or -1 if the slot is
// already held (cap 0).
template <unsigned Shift>
USLUB_ALWAYS_INLINE int rseq_slot_lock(char* area, std::uintptr_t off, std::uint32_t* old_cap) {
  using L = rseq_slot_layout;
  std::uintptr_t rs = static_cast<std::uintptr_t>(detail::g_rseq_offset);
  unsigned cpu;
  char* slot;
  std::uint32_t seen;
restart:
  cpu = rseq_cpu_start(rs);
  slot = area + (std::uintptr_t{cpu} << Shift) + off;
  seen = __atomic_load_n(reinterpret_cast<std::uint32_t*>(slot + L::kCap), __ATOMIC_RELAXED);
  if (seen == 0) return -1;
  asm volatile goto(
      USLUB_RSEQ_PROLOGUE_CPU
      "movl %[seen], %%eax\n\t"
      "xorl %%ecx, %%ecx\n\t"
      "lock cmpxchgl %%ecx, %c[cap](%[slot])\n\t"  // commit: seen -> 0
      "2:\n\t"
      "jnz %l[busy]\n\t"
      :
      : [rs] "r"(rs), [cpu] "r"(cpu), [slot] "r"(slot), [seen] "r"(seen), [cap] "i"(L::kCap)
      : "rax", "rcx", "memory", "cc"
      : abort, busy);
  *old_cap = seen;
  return static_cast<int>(cpu);
abort:
  rseq_note_abort();
  goto restart;
busy:
  // Another holder (a drain) took it, or cap changed under us (a holder's unlock from
  // another CPU): look again.
  goto restart;
}

#else
#define USLUB_HAVE_RSEQ_ASM 0
#endif

}  // namespace uslub::platform
