// The sheaf fast paths (inlined into kmem_cache_alloc / kmem_cache_free).  See sheaf.hpp.
#pragma once

#include "platform/rseq.hpp"
#include "slab/sheaf.hpp"

namespace uslub {

USLUB_SLOWPATH void sheaf_stat_inc_slow(const kmem_cache* s, sheaf_stat_item si,
                                        std::uint64_t n = 1);

USLUB_ALWAYS_INLINE void sheaf_stat_inc(const kmem_cache* s, sheaf_stat_item si) {
  if (USLUB_UNLIKELY(s->sheaf_stat != nullptr)) sheaf_stat_inc_slow(s, si);
}

// The locked fallback: the same lock word, taken with a CAS.
// Every holder of a slot lock word counts in preempt_count (fork from a signal handler,
// sync/preempt.hpp): raised before the attempt, lowered on failure and by pcs_unlock.
USLUB_ALWAYS_INLINE bool pcs_trylock(slub_percpu_sheaves* pcs) {
  preempt_count_inc();
  std::uint32_t expected = 0;
  if (__atomic_compare_exchange_n(&pcs->lock, &expected, 1u, false, __ATOMIC_ACQUIRE,
                                  __ATOMIC_RELAXED))
    return true;
  preempt_count_dec();
  return false;
}
USLUB_ALWAYS_INLINE void pcs_unlock(slub_percpu_sheaves* pcs) {
  __atomic_store_n(&pcs->lock, 0u, __ATOMIC_RELEASE);
  preempt_count_dec();
}

// The slot of s in this CPU's area, for the sequences.
USLUB_ALWAYS_INLINE std::uintptr_t slot_off(const kmem_cache* s) {
  return s->slot_off;
}

// Out-of-line object paths (the slow paths' first try): the slot on rseq, else the lock word
// with a CAS.  Budget (rseq): 1 TLS load, 3 slot loads, 1 object load, 1 store (the commit),
// 1 branch, 0 locked instructions, 0 calls.
USLUB_ALWAYS_INLINE void* sheaf_alloc_fast(kmem_cache* s) {
#if USLUB_HAVE_RSEQ_ASM
  if (USLUB_LIKELY(s->sheaf_rseq))
    return platform::rseq_slot_pop<kPcpuShift, 0, false>(pcpu_area(), slot_off(s));
#endif
  slub_percpu_sheaves* pcs = &s->cpu_sheaves[this_cpu_index(s)];
  if (!pcs_trylock(pcs)) return nullptr;
  slab_sheaf* sh = pcs->main;
  void* obj = nullptr;
  if (sh->size) obj = sh->objects[--sh->size];
  pcs_unlock(pcs);
  if (obj) sheaf_stat_inc(s, SHEAF_ALLOC_HIT);
  return obj;
}

// The push without the free key (the caller's): ok, slow (full or busy) or in_a_row (obj is
// on top already: a double free, not pushed).
USLUB_ALWAYS_INLINE platform::slot_push sheaf_free_fast(kmem_cache* s, void* obj) {
#if USLUB_HAVE_RSEQ_ASM
  if (USLUB_LIKELY(s->sheaf_rseq))
    return platform::rseq_slot_push<kPcpuShift, 0, platform::push_kind::plain>(
        pcpu_area(), slot_off(s), obj, nullptr, 0);
#endif
  slub_percpu_sheaves* pcs = &s->cpu_sheaves[this_cpu_index(s)];
  if (!pcs_trylock(pcs)) return platform::slot_push::slow;
  slab_sheaf* sh = pcs->main;
  auto r = platform::slot_push::slow;
  if (sh->size && sh->objects[sh->size - 1] == obj)
    r = platform::slot_push::in_a_row;
  else if (sh->size < sh->capacity)
    sh->objects[sh->size++] = obj, r = platform::slot_push::ok;
  pcs_unlock(pcs);
  if (r == platform::slot_push::ok) sheaf_stat_inc(s, SHEAF_FREE_HIT);
  return r;
}

// The rseq halves alone, for the inline entry points (cache_alloc / cache_free): no call and
// no locked instruction, so the hit path needs no stack frame; the locked fallback runs from
// the out-of-line slow functions (which try sheaf_alloc_fast / sheaf_free_fast first).
// A cache whose fast paths are off has its slot at kZeroSlot (cap 0): these miss.
USLUB_ALWAYS_INLINE void* sheaf_alloc_rseq(kmem_cache* s) {
#if USLUB_HAVE_RSEQ_ASM
  return platform::rseq_slot_pop<kPcpuShift, 0, false>(pcpu_area(), slot_off(s));
#else
  (void)s;
  return nullptr;
#endif
}
USLUB_ALWAYS_INLINE platform::slot_push sheaf_free_rseq(kmem_cache* s, void* obj) {
#if USLUB_HAVE_RSEQ_ASM
  return platform::rseq_slot_push<kPcpuShift, 0, platform::push_kind::plain>(
      pcpu_area(), slot_off(s), obj, nullptr, 0);
#else
  (void)s, (void)obj;
  return platform::slot_push::slow;
#endif
}

}  // namespace uslub
