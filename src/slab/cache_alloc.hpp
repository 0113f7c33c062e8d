// cache_alloc / cache_free: the inline object paths for every caller (kmem_cache_alloc/free,
// kmalloc/kfree).  Sheaf caches go through the per-CPU sheaves (sheaf_fast.hpp), the others
// through the per-CPU slab (slub_fast.hpp).  node >= 0 bypasses the sheaves (they hold objects
// of any node).  Context: no locks held.
#pragma once

#include <cstring>

#include "slab/sheaf.hpp"
#include "slab/sheaf_fast.hpp"
#include "slab/slub_fast.hpp"

namespace uslub {

// orig_size: what kmalloc was asked for (0: the object size); debug caches track it.
void* cache_alloc_slow(kmem_cache* s, gfp_t gfp, int node, std::size_t orig_size = 0);

void cache_free_slow(kmem_cache* s, page* slab, void* obj);
// A sheaf cache's free after its key step (the key stored by free_key_set, or the key off) and
// a miss of the inline push.
void cache_free_keyed(kmem_cache* s, page* slab, void* obj);

// The hit path of a cache with sheaf_fast_alloc: the sheaf pop and the free key's clear
// (sheaf.hpp); nullptr on a miss.
USLUB_ALWAYS_INLINE void* cache_alloc_hit(kmem_cache* s) {
  void* obj = sheaf_alloc_rseq(s);
  if (USLUB_LIKELY(obj)) free_key_clear(s, obj);
  return obj;
}

// The fast path is the sheaf pop alone; everything else (zeroing, node requests, the classic
// per-CPU slab, a miss) tail-calls cache_alloc_slow, so the hit path needs no stack frame.
USLUB_ALWAYS_INLINE void* cache_alloc(kmem_cache* s, gfp_t gfp, int node,
                                      std::size_t orig_size = 0) {
  if (USLUB_LIKELY(s->sheaf_fast_alloc) && USLUB_LIKELY((gfp | (node >= 0)) == 0))
    if (void* obj = cache_alloc_hit(s); USLUB_LIKELY(obj)) return obj;
  return cache_alloc_slow(s, gfp, node, orig_size);
}

// The inline push of a free past its key step, and its out-of-line rest on a miss.
USLUB_ALWAYS_INLINE void cache_free_push(kmem_cache* s, page* slab, void* obj) {
  platform::slot_push r = sheaf_free_rseq(s, obj);
  if (USLUB_LIKELY(r == platform::slot_push::ok)) return;
  if (r == platform::slot_push::in_a_row) return sheaf_report_double_free(s, obj);
  cache_free_keyed(s, slab, obj);
}

// slab: obj's slab (slab_free_check_inline or virt_to_slab), or nullptr when the caller found
// the cache in the slab map (kfree): the out-of-line halves then look it up if they need it.
// Keyed and plain caches have a flag each (not one flag and a test of s->free_key), so the
// default keyed path runs no extra instruction.
USLUB_ALWAYS_INLINE void cache_free(kmem_cache* s, page* slab, void* obj) {
  if (USLUB_LIKELY(s->sheaf_fast_free)) {
    // The free key (sheaf.hpp) is also the double-free check, in a row or not.
    if (USLUB_UNLIKELY(!free_key_set(s, obj))) return sheaf_report_double_free(s, obj);
    return cache_free_push(s, slab, obj);
  }
  // USLUB_DOUBLE_FREE=0: the push alone; the freed object is not touched.
  if (s->sheaf_fast_free_plain) return cache_free_push(s, slab, obj);
  cache_free_slow(s, slab, obj);
}

}  // namespace uslub
