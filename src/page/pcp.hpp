// Per-CPU page list primitives shared by the fast paths in page_alloc.cpp and the refill,
// drain and bulk paths in pcp.cpp (internal to the page layer).
//
// Context: every function here requires pcp->lock (see the lock order in page_alloc.hpp).
// pcp->count is also read without the lock by page_allocator::stats() and by tests, so it
// is written with relaxed atomic stores (plain reads under the lock stay plain).
#pragma once

#include "page/page_alloc.hpp"

namespace uslub {

USLUB_ALWAYS_INLINE per_cpu_pages* pcp_of(zone* z, unsigned cpu, unsigned nr_cpus) {
  return &z->pcp[USLUB_LIKELY(cpu < nr_cpus) ? cpu : cpu % nr_cpus];
}

USLUB_ALWAYS_INLINE void pcp_set_count(per_cpu_pages* pcp, int count) {
  __atomic_store_n(&pcp->count, count, __ATOMIC_RELAXED);
}

// Takes the hottest block of `order`, or nullptr.  Leaves p->lru stale (callers overwrite it).
USLUB_ALWAYS_INLINE page* pcp_pop(per_cpu_pages* pcp, unsigned order) {
  list_head* l = &pcp->lists[order];
  list_head* first = l->next;
  if (first == l) return nullptr;
  list_head* next = first->next;
  l->next = next;
  next->prev = l;
  pcp_set_count(pcp, pcp->count - (1 << order));
  return list_entry<page, &page::lru>(first);
}

USLUB_ALWAYS_INLINE void pcp_push(per_cpu_pages* pcp, page* p, unsigned order) {
  set_page_flags(p, PG_pcp);
  set_page_order(p, order);
  list_add(&p->lru, &pcp->lists[order]);
  pcp_set_count(pcp, pcp->count + (1 << order));
}

}  // namespace uslub
