// Statistics (stats.cpp): the figures behind <uslub/stats.h>, USLUB_STATS, mallinfo2 and
// `uslub stat`.  Everything here runs on slow paths (reports, API calls, the shm publisher):
// it reads the counters the slab and page layers keep anyway and never adds work to an
// allocation or a free.
#pragma once

#include <uslub/stats.h>

#include <cstdint>

#include "slab/slab.hpp"

namespace uslub {

// USLUB_STATS: -1 off, else USLUB_STATS_* flags ("1"/yes/on: text, "all", "json").
int stats_mode_from_env();
// Free objects parked in s's per-CPU sheaves, alien buffers and barns (racy loads of the
// per-CPU sheaves, barn lists under their locks; each clamped to its capacity).
// Context: slab_mutex or a reference on s (sheaves are not freed under it).
std::uint64_t sheaf_parked_objects(kmem_cache* s);
// Free objects held by the CPU slots: the CPU slab's freelist and its slab->freelist, and
// the slabs on each CPU partial list (each slot under its lock, taken with try_lock: a busy
// slot is skipped; the CPU freelist walk is bounded and range-checked, as a fast path may pop
// from it meanwhile).
std::uint64_t cpu_free_objects(kmem_cache* s);
// Fills the summary (st->version / size as the caller set them; internal callers pass the
// current ones).
void stats_snapshot(uslub_stats* st);
// The report (uslub_stats_print) into a caller's buffer writer.
using stats_sink = void (*)(const char* text, std::size_t len, void* arg);
void stats_report(int flags, stats_sink sink, void* arg);
// A stats_sink writing to the descriptor *(int*)fd.
void stats_fd_sink(const char* text, std::size_t len, void* fd);

}  // namespace uslub
