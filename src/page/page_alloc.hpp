// The page allocator: buddy zones with per-CPU page lists (mm/page_alloc.c, seed 003).
//
// Lock order (outermost first):
//  -1. shrink_mutex                  serialises shrinkers (pressure.cpp); taken with no lock held
//   0. zone::reclaiming              a flag, not a lock: one reclaimer per zone, held with no
//                                    lock across madvise (reclaim.cpp); fork_prepare waits for it.
//                                    On free paths (maybe_reclaim) only one bounded step, or a
//                                    wake-up of the background worker, is done under it
//   1. page_allocator::drain_mutex   serialises drain_all_pages() (and fork_prepare)
//   2. per_cpu_pages::lock           one CPU's pcp lists, count, stats (local_trylock_t)
//   3. zone::lock                    the zone's free_area lists, nr_free, free/returned counts
//
// per_cpu_pages::lock is only ever *tried* on the allocation and free paths: when it is busy
// (another thread on this CPU slot, possibly preempted while holding it) the caller goes to the
// zone under zone->lock instead of waiting (seed 003: "If an IRQ is raised when a PCP
// allocation is in progress, the trylock will fail and fallback to using the buddy lists").
// Only drain_all_pages() (and fork_prepare) waits for a pcp lock, and a holder never blocks
// inside it.  The allocation path calls drain_all_pages() once before failing with ENOMEM,
// holding no lock (drain_before_enomem).
//
// zone::lock protects the free lists.  It is held for bounded work only: rmqueue_bulk takes at
// most max(batch, kFreeBatchLockBound) blocks, free_pcppages_bulk and free_pages_bulk drop and
// re-take it every kFreeBatchLockBound blocks, reclaim isolates (and puts back) at most
// kReclaimIsolate blocks per hold, every other hold is one block; each block is one list
// operation plus at most MAX_ORDER merges.  The holders count their blocks with
// zone->lock.hold_work() (lock hold statistics: the largest count per hold is the bound, as
// measured by bench/page/lock_hold.cpp).
//
// No lock is held across a system call.  Growth reserves address space and commits it with
// atomics on the section's `top` (mem_section), then takes zone->lock only to insert the new
// block.  Reclaim isolates idle blocks under zone->lock, drops it, madvises them, and re-takes
// it to put them back marked PG_returned.
//
// Lockless: virt_to_page/page_address (pure arithmetic), lookup_section (one acquire load of
// a pointer published once with release), growth of a section's `top` (CAS).
//
// Block states (page->flags of the head):
//   PG_head    allocated to a caller             -> free_pages -> PG_pcp or PG_buddy
//   PG_pcp     on a pcp list (orders < NR_PCP_ORDERS) -> alloc -> PG_head; drain -> PG_buddy
//   PG_buddy   on free_area[order] of its zone   -> alloc -> PG_head; merge -> interior (0)
//   PG_isolated reclaim is returning its memory  -> PG_buddy|PG_returned
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "base/list.hpp"
#include "page/page.hpp"
#include "platform/platform.hpp"
#include "sync/local_lock.hpp"
#include "sync/spinlock.hpp"

namespace uslub {

inline constexpr unsigned NR_PCP_ORDERS = 4;  // orders 0..3 are cached per CPU
inline constexpr unsigned kFreeBatchLockBound = 32;
inline constexpr unsigned kReclaimIsolate = 32;
// What one free may do of reclaim when no background worker runs (reclaim.cpp): isolate and
// madvise at most this many pages (a larger block alone), and a zone with idle blocks left is
// due again this many milliseconds later (at once while over its retain bound).
inline constexpr std::size_t kReclaimInlinePages = 256;
inline constexpr std::uint64_t kReclaimStepMs = 1;
// The smallest USLUB_MEMORY_LIMIT uslub starts with: the first section's header page and one
// growth step (a 4 MiB block and its 64 KiB of descriptors).  A smaller limit is raised to it.
inline constexpr std::size_t kMinMemoryLimit =
    PAGE_SIZE + MAX_ORDER_BYTES + MAX_ORDER_BYTES / PAGE_SIZE * sizeof(page);

// Counter that is written only under one lock (or by one owner) and read racily: a relaxed
// load+store instead of a locked increment.
struct stat_counter {
  std::atomic<std::uint64_t> v{0};
  USLUB_ALWAYS_INLINE void add(std::uint64_t n = 1) {
    v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  std::uint64_t get() const { return v.load(std::memory_order_relaxed); }
};

struct free_area {
  list_head free_list;      // resident blocks, newest first (reclaim scans from the tail)
  list_head returned_list;  // blocks whose memory went back to the OS (read as zeros)
  std::size_t nr_free;
};

// One CPU's cache of small blocks for one zone (struct per_cpu_pages).
struct alignas(kDestructiveLine) per_cpu_pages {
  local_trylock_t lock;
  // All fields below: written under lock.  Read without it: count (relaxed atomic stores,
  // pcp_set_count; relaxed loads in drain_before_enomem's "anything cached?" and stats()) and
  // the stat_counters (racy statistics by design).
  int count;                       // pages (not blocks) on all lists
  int high;                        // above this, free drains `batch` pages to the zone
  int batch;                       // pages moved per refill or drain
  list_head lists[NR_PCP_ORDERS];  // hot at the head; drains take the cold tail
  stat_counter alloc_hit, alloc_refill, free_hit, free_drain;
  // Failed try_lock() calls are counted by the lock itself (lock.trylock_failures()).
};

struct zone {
  spinlock_t lock;
  int node;
  page_allocator* owner;
  // lock: (written under it; read without it: free_pages and returned_pages, stored with
  // relaxed atomics in buddy.cpp and loaded so by maybe_reclaim's retain check, a heuristic
  // that may see a stale pair; and the stat_counters, racy statistics by design)
  free_area area[NR_ORDERS];
  std::size_t free_pages;      // pages in free_area (resident + returned)
  std::size_t returned_pages;  // pages in free blocks whose memory was returned to the OS
  stat_counter zone_alloc, zone_free, bulk_refill, bulk_drain;
  // lockless:
  std::atomic<mem_section*> grow_section{nullptr};  // section new blocks come from
  std::atomic<std::uint64_t> next_reclaim_ms{0};
  std::atomic<std::uint64_t> next_kick_ms{0};  // no kick of the reclaim worker before this
  // Went over the retain bound: free paths return free blocks (fresh ones too) a bounded step
  // at a time until none is left (reclaim.cpp).  Written under `reclaiming`.
  std::atomic<bool> draining{false};
  // lock: where the last exact block ended (alloc_pages_exact packs blocks one after another
  // from here, so that neither a tail nor a partly used huge page is left between them).  A
  // hint: checked like any other range before use.
  page* exact_next = nullptr;
  std::atomic<bool> reclaiming{false};
  per_cpu_pages* pcp;  // nr_cpu_ids entries, fixed after init
};

struct page_alloc_config {
  platform::vm_ops* vm = nullptr;  // nullptr: linux_vm()
  std::size_t memory_limit = 0;    // committed bytes; 0: no limit (USLUB_MEMORY_LIMIT)
  int pcp_batch = 0;               // 0: default (USLUB_PCP_BATCH)
  int pcp_high = 0;                // 0: default (USLUB_PCP_HIGH)
  long decay_ms = -1;              // < 0: default (USLUB_DECAY_MS); 0: return at once
  platform::decommit_mode decommit = platform::decommit_mode::dontneed;
  unsigned nr_nodes = 0;  // 0: the platform's node count
  // Bind each zone's sections to its node (mbind MPOL_PREFERRED through vm->bind_node) when
  // the zones are the machine's nodes (init() turns it off unless the zone count equals
  // platform::nr_node_ids() at that moment; config() shows the outcome).  The
  // environment's default is on unless USLUB_NUMA_BIND=0 or the process runs under a memory
  // policy of its own (numactl: platform::task_has_mempolicy()), which then decides alone.
  bool numa_bind = true;
  // MADV_HUGEPAGE (transparent huge pages) on each new 4 MiB block once the committed heap
  // has reached thp_min bytes.  Small programs keep 4 KiB pages (every huge page they touched
  // would add up to 2 MiB to their RSS); large heaps take 512 times fewer page faults and TLB
  // misses.  The environment's default is 16 MiB (USLUB_THP=0: never, USLUB_THP=1: from the
  // first block, USLUB_THP_MIN=bytes); SIZE_MAX: never (allocators made by tests).
  std::size_t thp_min = SIZE_MAX;
  bool no_pcp = false;  // bypass the per-CPU lists (benchmarks: "zone only")
  // Free memory kept resident per zone regardless of decay (at least this, at most 1/8 of the
  // committed heap when that is more): beyond it, a zone-level free
  // returns idle and fresh free blocks at once (USLUB_RETAIN; 0: no bound).  Without a
  // background thread this is what bounds the RSS of a program that frees a lot and then
  // goes quiet.
  std::size_t retain_bytes = std::size_t{64} << 20;

  // The defaults, overridden by USLUB_* environment variables.
  static page_alloc_config from_env();
};

struct page_alloc_stats {
  std::uint64_t committed_bytes, free_bytes, returned_bytes, pcp_bytes, limit_bytes;
  std::uint64_t charged_bytes;  // outside the sections, counted against the limit (huge blocks)
  std::uint64_t pcp_alloc_hit, pcp_alloc_refill, pcp_free_hit, pcp_free_drain, pcp_trylock_fail;
  std::uint64_t zone_alloc, zone_free, zone_lock_acquired, zone_lock_contended;
  std::uint64_t grow, grow_fail, reclaim_runs, reclaimed_bytes, bad_free;
  std::uint64_t drain_all_calls, drain_all_runs;
  std::uint64_t reclaim_inline_steps;  // bounded reclaim steps run on free paths (reclaim.cpp)
};

class page_allocator {
 public:
  // A constant-initialised, uninitialised allocator; call init() before use.
  constexpr page_allocator() = default;
  page_allocator(const page_allocator&) = delete;
  page_allocator& operator=(const page_allocator&) = delete;

  // Sets up zones and per-CPU lists.  Returns 0 or an errno (metadata mapping failed).
  int init(const page_alloc_config& cfg);
  // Returns every section to the OS.  Only for allocators whose blocks are all free (tests);
  // the global allocator is never torn down.
  void destroy();

  // Allocates 2^order contiguous pages (order <= MAX_ORDER).  node < 0: the current CPU's node.
  // Returns the head descriptor, or nullptr with errno = ENOMEM (limit or OS refusal) or
  // EINVAL (order too large).
  page* alloc_pages(unsigned order, gfp_t gfp = GFP_KERNEL, int node = NUMA_NO_NODE);
  // Frees a block from alloc_pages with the same order.  A wrong order, a double free or a
  // pointer that is not an allocated block head is reported (report_bug) and ignored.
  void free_pages(page* p, unsigned order);
  // Convenience forms on addresses.
  void* alloc_pages_addr(unsigned order, gfp_t gfp = GFP_KERNEL, int node = NUMA_NO_NODE);
  void free_pages_addr(void* addr, unsigned order);

  // alloc_pages_exact: a block of exactly nr pages (1 <= nr <= 2^MAX_ORDER), not rounded up to
  // a power of two: the rest of the power-of-two block stays free in the buddy lists (the
  // kernel's alloc_pages_exact, which splits the block and frees the tail).  The head has
  // PG_head | PG_exact and ->nr_pages = nr; the block is page aligned only.  A power-of-two nr
  // is an ordinary alloc_pages block (pcp lists).  nullptr with errno = ENOMEM or EINVAL.
  page* alloc_pages_exact(std::size_t nr, gfp_t gfp = GFP_KERNEL);
  // Frees a block of alloc_pages_exact; nr must be its ->nr_pages (checked and reported).
  void free_pages_exact(page* p, std::size_t nr);
  // Resizes an exact block in place: a smaller nr gives the tail pages back to the buddy
  // lists; a larger one takes the pages after the block if they are all free.  False (the
  // block unchanged) if they are not or nr is out of range.  __GFP_ZERO is the caller's.
  bool resize_pages_exact(page* p, std::size_t nr);

  // Fills out[0..nr) with blocks of one order; returns how many it got (< nr on ENOMEM).
  int alloc_pages_bulk(unsigned order, int nr, page** out, gfp_t gfp = GFP_KERNEL,
                       int node = NUMA_NO_NODE);
  // Frees nr blocks of one order, re-taking locks every kFreeBatchLockBound blocks.
  void free_pages_bulk(page** pages, int nr, unsigned order);

  // Memory outside the sections counted against memory_limit (huge blocks, huge.cpp): false
  // (nothing charged) if `bytes` more would pass the limit.
  bool charge(std::size_t bytes);
  void uncharge(std::size_t bytes);

  // Empties every CPU's pcp lists into the zones.  Concurrent callers piggyback.
  void drain_all_pages();
  // Returns idle free memory to the OS: blocks free for >= decay_ms (all if force).
  // Returns the bytes returned by this call.
  std::size_t reclaim(bool force);
  // The background worker: kick() is called (instead of running a bounded reclaim step) by a
  // free path that finds a zone due for reclaim; the worker then calls reclaim_background(),
  // which runs each due zone's whole pass (idle blocks, or every free block of a zone over
  // its retain bound).  nullptr: no worker.  kick must not block nor allocate.
  void set_reclaim_worker(void (*kick)());
  std::size_t reclaim_background();

  // pthread_atfork support: prepare takes every lock of this allocator in the documented
  // order (each zone's reclaim flag, drain_mutex, every pcp lock, every zone lock);
  // parent/child release them.
  void fork_prepare();
  void fork_release();

  page_alloc_stats stats() const;
  // Walks every zone's free lists and checks each block; reports the first problem
  // (report_bug "page allocator") and returns false on it.
  bool validate() const;

  unsigned nr_zones() const { return nr_zones_; }
  zone* zone_of_node(int node) const { return zones_[node < 0 ? 0 : node % nr_zones_]; }
  const page_alloc_config& config() const { return cfg_; }
  // Calls fn(section) for each of this allocator's sections (validation walks the memmap).
  template <class Fn>
  void for_each_section(Fn fn) const {
    for (mem_section* s = sections_.load(std::memory_order_acquire); s; s = s->next_in_owner) fn(s);
  }
  // Blocks of each order currently free in all zones (tests: "only maximal blocks").
  std::size_t nr_free(unsigned order) const;

 private:
  friend struct page_alloc_test_peer;
  // page_alloc.cpp
  page* alloc_zone(zone* z, unsigned order, bool* zeroed);
  page* alloc_pages_slow(zone* z, unsigned order, gfp_t gfp, bool try_pcp, bool grow_first);
  bool drain_before_enomem();
  void free_one_page(zone* z, page* p, unsigned order);
  void free_pages_slow(page* p, unsigned order);
  // exact_nr: the block must be an alloc_pages_exact block of that many pages (0: an
  // alloc_pages block of `order`).
  bool check_free(const void* addr, page* p, unsigned order, std::size_t exact_nr = 0);
  page* rmqueue_exact(zone* z, std::size_t nr, bool* zeroed);
  zone* pick_zone(int node) const;
  void vm_release_metadata(zone* z);
  // pcp.cpp: nullptr / false when the pcp lock is busy or the zone is empty
  page* rmqueue_pcplist(zone* z, unsigned order, bool* zeroed, bool* busy);
  page* pcp_refill(zone* z, per_cpu_pages* pcp, unsigned order);
  int rmqueue_pcplist_bulk(zone* z, unsigned order, int nr, page** out);
  bool free_unref_page_bulk(zone* z, page** pages, int nr, unsigned order);
  void free_pcppages_bulk(zone* z, int count, per_cpu_pages* pcp);
  int rmqueue_bulk(zone* z, unsigned order, int count, per_cpu_pages* pcp);
  // memmap.cpp
  bool grow_zone(zone* z);
  // The limit left for the sections (memory_limit less what charge() holds); 0: no limit.
  std::size_t section_limit() const;
  // reclaim.cpp
  void maybe_reclaim(zone* z, std::uint64_t now_ms);
  USLUB_SLOWPATH void maybe_reclaim_due(zone* z, std::uint64_t now_ms);
  bool over_retain(zone* z, unsigned div = 1) const;
  std::size_t reclaim_zone(zone* z, std::uint64_t cutoff_ms, std::size_t page_limit = SIZE_MAX,
                           bool* more = nullptr);

  page_alloc_config cfg_{};
  platform::vm_ops* vm_ = nullptr;
  zone* zones_[platform::kMaxNodes] = {};
  unsigned nr_zones_ = 0;
  unsigned nr_cpus_ = 0;
  std::atomic<std::size_t> committed_{0};
  std::atomic<std::size_t> charged_{0};  // charge(): bytes outside the sections
  bool global_ = false;                  // global_page_allocator() (runs the shrinkers)
  friend page_allocator& global_page_allocator();
  std::atomic<mem_section*> sections_{nullptr};
  std::atomic<std::uint64_t> grow_count_{0}, grow_fail_{0}, reclaim_runs_{0};
  std::atomic<std::uint64_t> reclaimed_bytes_{0}, bad_free_{0};
  std::atomic<std::uint64_t> drain_calls_{0}, drain_runs_{0}, inline_steps_{0};
  std::atomic<void (*)()> reclaim_worker_{nullptr};
  // drain_all_pages generation (seed 004's lru_drain_gen); see pcp.cpp.
  std::atomic<std::uint64_t> drain_gen_{0};
  spinlock_t drain_mutex_{};
};

// The process-wide allocator, initialised on first use from the environment.
page_allocator& global_page_allocator();

}  // namespace uslub
