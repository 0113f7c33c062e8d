// Sampled heap profiling (prof.cpp): one allocation per USLUB_PROF_SAMPLE bytes on average
// (the distance to the next sample is drawn from an exponential distribution, as jemalloc's
// and tcmalloc's are, so every byte has the same chance), its stack kept in the stack depot,
// written at exit to USLUB_PROF=path ("%p": the pid) as a heap profile google-pprof reads
// (gperftools' legacy text format, heap_v2 with the sampling rate).
//
// Off by default and then free: kmalloc keeps its inline fast path; only the slow path tests
// prof_enabled().  On, allocations go through kmalloc_slow (like KFENCE), which counts bytes
// down per thread; a sampled allocation is served as a large block (its own pages, as
// jemalloc promotes sampled objects), so its free reaches kfree_slow, the only free path that
// looks samples up.  Sampled blocks cost a page each: at the default rate of one per 512 KiB
// that is under 1 % of the heap.
#pragma once

#include <cstddef>

#include "base/compiler.hpp"

namespace uslub {

namespace detail {
extern bool g_prof_on;  // written once at start-up (prof_init_from_env)
}
USLUB_ALWAYS_INLINE bool prof_enabled() {
  return __atomic_load_n(&detail::g_prof_on, __ATOMIC_RELAXED);
}
// Reads USLUB_PROF / USLUB_PROF_SAMPLE.  Called by kmalloc_init.
void prof_init_from_env();
// On the slow path with profiling on: a sampled allocation of size bytes (served as a large
// block and recorded), or nullptr (not sampled: the caller goes on).
void* prof_maybe_sample(std::size_t size, unsigned gfp);
// kfree_slow: forgets p if it was a sample (before the block is freed).
void prof_free(const void* p);
// Writes the profile to fd (tests; the exit hook writes to USLUB_PROF).
void prof_write(int fd);

}  // namespace uslub
