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

USLUB_ALWAYS_INLINE void* cache_alloc(kmem_cache* s, gfp_t gfp, int node) {
  void* obj;
  if (USLUB_LIKELY(s->cpu_sheaves != nullptr) && node < 0) {
    obj = sheaf_alloc_fast(s);
    if (USLUB_UNLIKELY(!obj)) obj = sheaf_alloc_slow(s, gfp);
  } else {
    obj = slab_alloc_node(s, gfp, node);
  }
  if (USLUB_UNLIKELY(gfp & __GFP_ZERO) && obj) memset(obj, 0, s->object_size);
  return obj;
}

// slab must be obj's slab (slab_free_check or virt_to_slab).
USLUB_ALWAYS_INLINE void cache_free(kmem_cache* s, page* slab, void* obj) {
  if (USLUB_LIKELY(s->cpu_sheaves != nullptr)) {
    if (USLUB_LIKELY(s->nr_nodes == 1) && USLUB_LIKELY(sheaf_free_fast(s, obj))) return;
    return sheaf_free_slow(s, slab, obj);
  }
  do_slab_free(s, slab, obj, obj, 1);
}

}  // namespace uslub
