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

// Budget (rseq): 2 TLS loads, 4 loads of slot and sheaf, 1 store (the commit), 3 branches,
// 0 locked instructions, 0 calls.
USLUB_ALWAYS_INLINE void* sheaf_alloc_fast(kmem_cache* s) {
#if USLUB_HAVE_RSEQ_ASM
  if (USLUB_LIKELY(s->sheaf_rseq)) {
    void* obj =
        platform::rseq_percpu_pop<offsetof(slub_percpu_sheaves, lock),
                                  offsetof(slub_percpu_sheaves, main), offsetof(slab_sheaf, size),
                                  offsetof(slab_sheaf, objects), sizeof(slub_percpu_sheaves)>(
            reinterpret_cast<char*>(s->cpu_sheaves));
    if (USLUB_LIKELY(obj)) sheaf_stat_inc(s, SHEAF_ALLOC_HIT);
    return obj;
  }
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

USLUB_ALWAYS_INLINE bool sheaf_free_fast(kmem_cache* s, void* obj) {
#if USLUB_HAVE_RSEQ_ASM
  if (USLUB_LIKELY(s->sheaf_rseq)) {
    bool ok =
        platform::rseq_percpu_push<offsetof(slub_percpu_sheaves, lock),
                                   offsetof(slub_percpu_sheaves, main), offsetof(slab_sheaf, size),
                                   offsetof(slab_sheaf, capacity), offsetof(slab_sheaf, objects),
                                   sizeof(slub_percpu_sheaves)>(
            reinterpret_cast<char*>(s->cpu_sheaves), obj);
    if (USLUB_LIKELY(ok)) sheaf_stat_inc(s, SHEAF_FREE_HIT);
    return ok;
  }
#endif
  slub_percpu_sheaves* pcs = &s->cpu_sheaves[this_cpu_index(s)];
  if (!pcs_trylock(pcs)) return false;
  slab_sheaf* sh = pcs->main;
  bool ok = sh->size < sh->capacity;  // (a double free: the free key, sheaf.hpp)
  if (ok) sh->objects[sh->size++] = obj;
  pcs_unlock(pcs);
  if (ok) sheaf_stat_inc(s, SHEAF_FREE_HIT);
  return ok;
}

// The rseq halves alone, for the inline entry points (cache_alloc / cache_free): no call and
// no locked instruction, so the hit path needs no stack frame; the locked fallback runs from
// the out-of-line slow functions (which try sheaf_alloc_fast / sheaf_free_fast first).
// Only for caches with sheaf_fast_alloc / sheaf_fast_free (the caller checks): sheaves on rseq
// and no statistics (caches with SLAB_STATS take the out-of-line path, which counts), so the hit
// path needs nothing of s after the sequence.
USLUB_ALWAYS_INLINE void* sheaf_alloc_rseq(kmem_cache* s) {
#if USLUB_HAVE_RSEQ_ASM
  return platform::rseq_percpu_pop<offsetof(slub_percpu_sheaves, lock),
                                   offsetof(slub_percpu_sheaves, main), offsetof(slab_sheaf, size),
                                   offsetof(slab_sheaf, objects), sizeof(slub_percpu_sheaves)>(
      reinterpret_cast<char*>(s->cpu_sheaves));
#else
  (void)s;
  return nullptr;
#endif
}
USLUB_ALWAYS_INLINE bool sheaf_free_rseq(kmem_cache* s, void* obj) {
#if USLUB_HAVE_RSEQ_ASM
  return platform::rseq_percpu_push<offsetof(slub_percpu_sheaves, lock),
                                    offsetof(slub_percpu_sheaves, main), offsetof(slab_sheaf, size),
                                    offsetof(slab_sheaf, capacity), offsetof(slab_sheaf, objects),
                                    sizeof(slub_percpu_sheaves)>(
      reinterpret_cast<char*>(s->cpu_sheaves), obj);
#else
  (void)s, (void)obj;
  return false;
#endif
}

}  // namespace uslub
