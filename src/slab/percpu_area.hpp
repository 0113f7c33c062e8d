// Per-cache per-CPU areas (the CPU slots of slub.cpp, the sheaves and barns of sheaf.cpp, their
// statistics), packed: the kernel's mm/percpu.c in miniature.
//
// A cache's area is nr_cpus times a small structure (256 bytes of CPU slots and a few hundred
// of sheaves on a 2-CPU machine), so one page per area per cache (two per cache) left most of
// each page empty and made 87 pages (348 KiB) resident at start-up for the 46 caches every
// process creates.  Areas up to kPercpuAreaMaxPacked bytes are now runs of 128-byte chunks
// (kDestructiveLine: no two areas share a line pair) in shared pages; larger ones are whole
// blocks of pages as before.
//
// Locking: percpu_area_lock (a leaf: the page allocator is called with it dropped) protects the
// list of shared pages and each page's chunk bitmap (page->slab_private).  Fork: taken by
// slab_fork_prepare.  The areas themselves belong to their cache (slab.hpp's rules).
#pragma once

#include <cstddef>

namespace uslub {

inline constexpr std::size_t kPercpuChunk = 128;
inline constexpr std::size_t kPercpuAreaMaxPacked = 2048;  // 16 chunks; more: whole pages

// A zeroed area of bytes (> 0), aligned to kPercpuChunk; nullptr if out of memory.
void* percpu_area_alloc(std::size_t bytes);
// Frees an area percpu_area_alloc(bytes) returned (the same bytes).
void percpu_area_free(void* area, std::size_t bytes);
// The memory an area of bytes occupies (chunks or pages), for the statistics.
std::size_t percpu_area_footprint(std::size_t bytes);
// Shared pages in use (tests).
std::size_t percpu_area_pages();

void percpu_area_fork_prepare();
void percpu_area_fork_release();

}  // namespace uslub
