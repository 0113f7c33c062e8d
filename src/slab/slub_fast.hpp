// The core fast paths, inline for every caller (kmem_cache_*, kmalloc): the per-CPU slab with
// tid + 16-byte CAS.  Locking rules: slab.hpp.
#pragma once

#include "base/report.hpp"
#include "slab/slab.hpp"

namespace uslub {

USLUB_SLOWPATH void* __slab_alloc(kmem_cache* s, gfp_t gfp, int node, unsigned cpu);
USLUB_SLOWPATH void __slab_free(kmem_cache* s, page* slab, void* head, void* tail, unsigned cnt,
                                unsigned cpu);

USLUB_ALWAYS_INLINE std::uint64_t next_tid(const kmem_cache* s, std::uint64_t tid) {
  return tid + s->tid_step;
}

// slab_alloc_node fast path.  Budget: rseq cpu load, 3 loads of the slot, 1 object load,
// 1 lock cmpxchg16b, 0 calls.
USLUB_FASTPATH void* slab_alloc_node(kmem_cache* s, gfp_t gfp, int node) {
  for (;;) {
    unsigned cpu = this_cpu_index(s);
    kmem_cache_cpu* c = &s->cpu_slab[cpu];
    std::uint64_t tid = __atomic_load_n(&c->tid, __ATOMIC_ACQUIRE);  // tid before the rest
    void* obj = load_ptr(&c->freelist);
    page* slab = __atomic_load_n(&c->slab, __ATOMIC_RELAXED);
    // ThreadSanitizer builds allocate like PREEMPT_RT (always under the slot lock): the
    // lockless path's read of a free pointer that another thread may be overwriting (the CAS
    // then fails) is a deliberate race the C++ model, and so TSan, cannot express.
    if (USLUB_UNLIKELY(!obj || !slab || (node >= 0 && slab_nid(slab) != node)) || USLUB_TSAN)
      return __slab_alloc(s, gfp, node, cpu);
    void* next = get_freepointer(s, obj);  // may be stale: then the CAS fails
    if (USLUB_LIKELY(cmpxchg16(c, obj, tid, next, next_tid(s, tid)))) {
      stat(s, ALLOC_FASTPATH, cpu);
      return obj;
    }
    stat(s, CMPXCHG_DOUBLE_CPU_FAIL, cpu);
  }
}

// do_slab_free fast path.  Budget: rseq cpu load, 3 loads of the slot, 1 object store,
// 1 lock cmpxchg16b, 0 calls.
USLUB_FASTPATH void do_slab_free(kmem_cache* s, page* slab, void* head, void* tail, unsigned cnt) {
  for (;;) {
    unsigned cpu = this_cpu_index(s);
    kmem_cache_cpu* c = &s->cpu_slab[cpu];
    std::uint64_t tid = __atomic_load_n(&c->tid, __ATOMIC_ACQUIRE);
    if (USLUB_UNLIKELY(slab != __atomic_load_n(&c->slab, __ATOMIC_RELAXED)))
      return __slab_free(s, slab, head, tail, cnt, cpu);
    void* fl = load_ptr(&c->freelist);
    if (USLUB_UNLIKELY(fl == head)) {  // the cheap always-on double-free check
      report_bug(s->name, "Object already free", "object %p freed twice in a row\n", head);
      return;
    }
    set_freepointer(s, tail, fl);
    if (USLUB_LIKELY(cmpxchg16(c, fl, tid, head, next_tid(s, tid)))) {
      stat(s, FREE_FASTPATH, cpu, cnt);
      return;
    }
    stat(s, CMPXCHG_DOUBLE_CPU_FAIL, cpu);
  }
}

}  // namespace uslub
