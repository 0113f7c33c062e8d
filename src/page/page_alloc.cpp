// alloc_pages / free_pages: validation, zone selection and the zone paths.  The per-CPU
// lists are in pcp.cpp, growth in memmap.cpp, buddy lists in buddy.cpp, decay in reclaim.cpp;
// the lock order is in page_alloc.hpp.
#include "page/page_alloc.hpp"

#include <errno.h>

#include <sched.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include "base/bits.hpp"
#include "base/check.hpp"
#include "page/buddy.hpp"
#include "page/pcp.hpp"
#include "page/pressure.hpp"

namespace uslub {

static constinit lock_class_key zone_lock_key{"zone->lock"};
static constinit lock_class_key pcp_lock_key{"pcp->lock"};
static constinit lock_class_key drain_mutex_key{"pcp_drain_mutex"};

page_alloc_config page_alloc_config::from_env() {
  page_alloc_config c;
  c.memory_limit = platform::env_size("USLUB_MEMORY_LIMIT", 0);
  if (c.memory_limit && c.memory_limit < kMinMemoryLimit) {
    report_info(
        "USLUB_MEMORY_LIMIT=%llu bytes is below the minimum uslub needs to start, %zu "
        "bytes (%zu KiB: the first 4 MiB block, its page descriptors and the section header); "
        "using the minimum\n",
        static_cast<unsigned long long>(c.memory_limit), kMinMemoryLimit, kMinMemoryLimit >> 10);
    c.memory_limit = kMinMemoryLimit;
  }
  c.pcp_batch = static_cast<int>(platform::env_size("USLUB_PCP_BATCH", 0));
  c.pcp_high = static_cast<int>(platform::env_size("USLUB_PCP_HIGH", 0));
  c.decay_ms = static_cast<long>(platform::env_size("USLUB_DECAY_MS", ~0ull));
  if (const char* d = getenv("USLUB_DECOMMIT"); d && strcmp(d, "free") == 0)
    c.decommit = platform::decommit_mode::free;
  // USLUB_THP unset: huge pages from USLUB_THP_MIN on, unless the host discards free 2 MiB
  // blocks (a VM with free page reporting), where a huge-page fault costs more than the 512
  // small faults it saves (docs/page-allocator.md).
  std::uint64_t thp = platform::env_size(
      "USLUB_THP", getenv("USLUB_THP") || !platform::host_discards_free_huge_pages() ? 2 : 0);
  c.thp_min = thp == 0 ? SIZE_MAX : thp == 1 ? 0 : platform::env_size("USLUB_THP_MIN", 16ull << 20);
  c.retain_bytes = platform::env_size("USLUB_RETAIN", c.retain_bytes);
  c.numa_bind = platform::env_size("USLUB_NUMA_BIND", 1) != 0 && !platform::task_has_mempolicy();
  return c;
}

static std::size_t zone_metadata_bytes(unsigned nr_cpus) {
  return align_up(sizeof(zone), kDestructiveLine) + nr_cpus * sizeof(per_cpu_pages);
}

int page_allocator::init(const page_alloc_config& cfg) {
  cfg_ = cfg;
  vm_ = cfg.vm ? cfg.vm : &platform::linux_vm();
  if (cfg_.pcp_batch <= 0) cfg_.pcp_batch = 32;
  if (cfg_.pcp_high <= 0) cfg_.pcp_high = 4 * cfg_.pcp_batch;
  if (cfg_.pcp_high < cfg_.pcp_batch) cfg_.pcp_high = cfg_.pcp_batch;
  if (cfg_.decay_ms < 0) cfg_.decay_ms = 500;
  nr_cpus_ = platform::nr_cpu_ids();
  unsigned nodes = cfg.nr_nodes ? cfg.nr_nodes : platform::nr_node_ids();
  if (nodes > platform::kMaxNodes) nodes = platform::kMaxNodes;
  // Zones that are not the machine's nodes (one zone on a multi-node machine) are not bound.
  if (nodes != platform::nr_node_ids()) cfg_.numa_bind = false;
  drain_mutex_.set_class(&drain_mutex_key);
  for (unsigned n = 0; n < nodes; ++n) {
    void* mem;
    if (int err = vm_->map(zone_metadata_bytes(nr_cpus_), &mem)) {
      destroy();
      return err;
    }
    zone* z = new (mem) zone();
    z->lock.set_class(&zone_lock_key);
    z->node = static_cast<int>(n);
    z->owner = this;
    for (auto& a : z->area) {
      INIT_LIST_HEAD(&a.free_list);
      INIT_LIST_HEAD(&a.returned_list);
    }
    z->pcp = reinterpret_cast<per_cpu_pages*>(static_cast<char*>(mem) +
                                              align_up(sizeof(zone), kDestructiveLine));
    for (unsigned c = 0; c < nr_cpus_; ++c) {
      per_cpu_pages* pcp = new (&z->pcp[c]) per_cpu_pages();
      pcp->lock.set_class(&pcp_lock_key);
      pcp->batch = cfg_.pcp_batch;
      pcp->high = cfg_.pcp_high;
      for (auto& l : pcp->lists) INIT_LIST_HEAD(&l);
    }
    zones_[n] = z;
    nr_zones_ = n + 1;
  }
  return 0;
}

void page_allocator::vm_release_metadata(zone* z) {
  vm_->release(z, zone_metadata_bytes(nr_cpus_));
}

zone* page_allocator::pick_zone(int node) const {
  if (node < 0) node = platform::cpu_to_node(platform::current_cpu());
  return zones_[static_cast<unsigned>(node) % nr_zones_];
}

// Compound tails and zeroing: the rare part of prep_new_page.
static USLUB_SLOWPATH void prep_new_page_slow(page* p, unsigned order, gfp_t gfp, bool zeroed) {
  if ((gfp & __GFP_COMP) && order > 0) {
    set_page_flags(p, PG_head | PG_comp);
    for (std::size_t i = 1, n = std::size_t{1} << order; i < n; ++i) {
      set_page_flags(p + i, PG_tail);
      p[i].compound_head = p;
    }
  } else {
    set_page_flags(p, PG_head);
  }
  if ((gfp & __GFP_ZERO) && !zeroed) memset(page_address(p), 0, PAGE_SIZE << order);
}

// Turns a block just taken off a free list or pcp list into an allocated block head.
static USLUB_ALWAYS_INLINE void prep_new_page(page* p, unsigned order, gfp_t gfp, bool zeroed) {
  set_page_order(p, order);
  p->lru.next = p->lru.prev = nullptr;
  if (USLUB_UNLIKELY(gfp & (__GFP_COMP | __GFP_ZERO))) {
    prep_new_page_slow(p, order, gfp, zeroed);
    return;
  }
  set_page_flags(p, PG_head);
}

static USLUB_SLOWPATH void clear_compound_tails(page* p, unsigned order) {
  for (std::size_t i = 1, n = std::size_t{1} << order; i < n; ++i) set_page_flags(p + i, 0);
}

page* page_allocator::alloc_zone(zone* z, unsigned order, bool* zeroed) {
  for (;;) {
    z->lock.lock();
    page* p = __rmqueue(z, order, zeroed);
    if (p) z->zone_alloc.add();
    z->lock.hold_work(1);
    z->lock.unlock();
    if (p) return p;
    if (!grow_zone(z)) return nullptr;  // errno set
  }
}

// Everything but a pcp hit.  try_pcp: go through this CPU's pcp list (refilling it);
// grow_first: the caller found the pcp list and the zone empty, so grow before retrying.
// With try_pcp false (pcp lock busy, no_pcp, order >= NR_PCP_ORDERS) the block comes from
// the zone under zone->lock.
page* page_allocator::alloc_pages_slow(zone* z, unsigned order, gfp_t gfp, bool try_pcp,
                                       bool grow_first) {
  bool zeroed = false;
  page* p = nullptr;
  if (try_pcp) {
    bool busy = false;
    if (!grow_first) p = rmqueue_pcplist(z, order, &zeroed, &busy);
    // An empty zone: grow it (no lock held) and refill the pcp list from the new block.
    if (!p && !busy && grow_zone(z)) p = rmqueue_pcplist(z, order, &zeroed, &busy);
  }
  if (!p) p = alloc_zone(z, order, &zeroed);
  if (USLUB_UNLIKELY(!p) && drain_before_enomem()) p = alloc_zone(z, order, &zeroed);
  if (!p) return nullptr;
  prep_new_page(p, order, gfp, zeroed);
  return p;
}

// The zone cannot grow (memory limit or OS refusal).  Blocks cached on pcp lists may keep
// the memory split or out of reach of this CPU: drain them into the zones once before
// failing, as the kernel does after direct reclaim.  Returns true if anything was cached
// (worth a retry); errno stays the failure's.  Context: no lock held.
//
// At the memory limit the alloc_safe shrinkers (pressure.hpp: the huge block cache, whose
// mappings count against the limit) run too.  The slab layer's shrinking is not among them: a
// caller of the page allocator may hold a slab lock; the large and huge block paths, which
// hold none, shrink everything (shrink_all_memory) before they fail.
bool page_allocator::drain_before_enomem() {
  int err = errno;
  bool cached = false;
  for (unsigned n = 0; n < nr_zones_ && !cached; ++n)
    for (unsigned c = 0; c < nr_cpus_ && !cached; ++c)
      cached = __atomic_load_n(&zones_[n]->pcp[c].count, __ATOMIC_RELAXED) != 0;
  if (cached) drain_all_pages();
  if (cfg_.memory_limit && global_ && shrink_alloc_safe(shrink_reason::limit) > 0) cached = true;
  errno = err;
  return cached;
}

bool page_allocator::charge(std::size_t bytes) {
  std::size_t now = charged_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  if (cfg_.memory_limit && now + committed_.load(std::memory_order_relaxed) > cfg_.memory_limit) {
    charged_.fetch_sub(bytes, std::memory_order_relaxed);
    return false;
  }
  return true;
}

void page_allocator::uncharge(std::size_t bytes) {
  charged_.fetch_sub(bytes, std::memory_order_relaxed);
}

std::size_t page_allocator::section_limit() const {
  if (!cfg_.memory_limit) return 0;
  std::size_t c = charged_.load(std::memory_order_relaxed);
  return c < cfg_.memory_limit ? cfg_.memory_limit - c : 1;
}

// The fast path is a pcp hit (mm/page_alloc.c's rmqueue_pcplist) inlined here: one
// current_cpu() read picks both the zone and the pcp, and the only locked instruction is the
// exchange of pcp->lock.try_lock() (the unlock is a release store).
page* page_allocator::alloc_pages(unsigned order, gfp_t gfp, int node) {
  if (USLUB_LIKELY(order < NR_PCP_ORDERS && node < 0 && !cfg_.no_pcp)) {
    unsigned cpu = platform::current_cpu();
    zone* z = USLUB_LIKELY(nr_zones_ == 1)
                  ? zones_[0]
                  : zones_[static_cast<unsigned>(platform::cpu_to_node(cpu)) % nr_zones_];
    per_cpu_pages* pcp = pcp_of(z, cpu, nr_cpus_);
    if (USLUB_UNLIKELY(!pcp->lock.try_lock()))
      return alloc_pages_slow(z, order, gfp, /*try_pcp=*/false, false);
    page* p = pcp_pop(pcp, order);
    if (USLUB_LIKELY(p))
      pcp->alloc_hit.add();
    else
      p = pcp_refill(z, pcp, order);
    pcp->lock.unlock();
    if (USLUB_UNLIKELY(!p)) return alloc_pages_slow(z, order, gfp, true, /*grow_first=*/true);
    prep_new_page(p, order, gfp, page_flags(p) & PG_returned);
    return p;
  }
  if (USLUB_UNLIKELY(order > MAX_ORDER)) {
    errno = EINVAL;
    return nullptr;
  }
  return alloc_pages_slow(pick_zone(node), order, gfp, order < NR_PCP_ORDERS && !cfg_.no_pcp,
                          false);
}

void* page_allocator::alloc_pages_addr(unsigned order, gfp_t gfp, int node) {
  page* p = alloc_pages(order, gfp, node);
  return p ? page_address(p) : nullptr;
}

// Is p a descriptor of an allocated block head of this allocator with this order?  Reports
// the problem (and counts it) if not.  Descriptors outside committed memory are never read.
bool page_allocator::check_free(const void* addr, page* p, unsigned order, std::size_t exact_nr) {
  const char* problem = nullptr;
  char detail[160] = "";
  mem_section* sec = lookup_section(p);
  std::uintptr_t off = reinterpret_cast<std::uintptr_t>(p) - (sec ? sec->base : 0);
  if (!sec || sec->owner != this) {
    problem = "Invalid pointer";
    strcpy(detail, sec ? "it belongs to another page allocator" : "not from uslub's memory map");
  } else if (off >= MEMMAP_BYTES || off % sizeof(page) != 0 || page_pfn(p) < FIRST_DATA_PFN ||
             page_pfn(p) * PAGE_SIZE >= sec->top.load(std::memory_order_acquire)) {
    problem = "Invalid pointer";
    strcpy(detail, "not a page descriptor of committed memory");
  } else if (order > MAX_ORDER) {
    problem = "Wrong order";
    strcpy(detail, "order above MAX_ORDER");
  } else {
    std::uint32_t f = page_flags(p);
    if (f & PG_head) {
      bool exact = f & PG_exact;
      if (exact_nr ? exact && p->nr_pages == exact_nr : !exact && p->order == order) return true;
      problem = "Wrong order";
      if (exact)
        snprintf(detail, sizeof detail, "allocated by alloc_pages_exact as %u pages", p->nr_pages);
      else
        snprintf(detail, sizeof detail, "allocated as order %u", p->order);
    } else if (f & (PG_buddy | PG_pcp | PG_isolated)) {
      problem = "Object already free";
      strcpy(detail, "double free");
    } else {
      problem = "Invalid pointer";
      strcpy(detail, f & PG_tail ? "inside an allocated block (not its first page)"
                                 : "not the start of an allocated block");
    }
  }
  bad_free_.fetch_add(1, std::memory_order_relaxed);
  if (exact_nr)
    report_bug("page allocator", problem, "free_pages_exact(%p, %zu pages): %s\n", addr, exact_nr,
               detail);
  else
    report_bug("page allocator", problem, "free_pages(%p, order %u): %s\n", addr, order, detail);
  return false;
}

void page_allocator::free_one_page(zone* z, page* p, unsigned order) {
  std::uint64_t now = platform::coarse_ms();
  z->lock.lock();
  __free_one_page(z, p, order, /*returned=*/false, now);
  z->zone_free.add();
  z->lock.hold_work(1);
  z->lock.unlock();
  maybe_reclaim(z, now);
}

// The checks of check_free() run inline first (every condition it accepts, in the same
// loads: the section header line and the descriptor); anything else goes to
// free_pages_slow(), which reports.  A pcp free is then mm/page_alloc.c's free_unref_page:
// try pcp->lock, push, drain a batch at `high`; a busy lock frees to the zone.
void page_allocator::free_pages(page* p, unsigned order) {
  mem_section* sec = lookup_section(p);
  if (USLUB_UNLIKELY(!sec || sec->owner != this)) return free_pages_slow(p, order);
  std::uintptr_t off = reinterpret_cast<std::uintptr_t>(p) - reinterpret_cast<std::uintptr_t>(sec);
  std::size_t pfn = off / sizeof(page);
  // top is a multiple of PAGE_SIZE no larger than SECTION_SIZE, so pfn < top / PAGE_SIZE
  // also keeps p inside the descriptor area.
  if (USLUB_UNLIKELY(off % sizeof(page) != 0 || pfn < FIRST_DATA_PFN ||
                     pfn >= sec->top.load(std::memory_order_acquire) >> PAGE_SHIFT))
    return free_pages_slow(p, order);
  std::uint32_t f = page_flags(p);
  if (USLUB_UNLIKELY((f & (PG_head | PG_exact)) != PG_head || p->order != order))
    return free_pages_slow(p, order);
  if (USLUB_UNLIKELY(f & PG_comp)) clear_compound_tails(p, order);
  zone* z = sec->zone;
  if (USLUB_LIKELY(order < NR_PCP_ORDERS && !cfg_.no_pcp)) {
    per_cpu_pages* pcp = pcp_of(z, platform::current_cpu(), nr_cpus_);
    if (USLUB_LIKELY(pcp->lock.try_lock())) {
      pcp_push(pcp, p, order);
      pcp->free_hit.add();
      if (USLUB_LIKELY(pcp->count < pcp->high)) {
        pcp->lock.unlock();
        return;
      }
      free_pcppages_bulk(z, pcp->batch, pcp);
      pcp->free_drain.add();
      pcp->lock.unlock();
      maybe_reclaim(z, platform::coarse_ms());
      return;
    }
  }
  free_one_page(z, p, order);
}

// A pointer the inline checks refused: report it (check_free), or - if it is a valid block
// after all - free it the long way.
void page_allocator::free_pages_slow(page* p, unsigned order) {
  if (!check_free(page_address(p), p, order)) return;
  if (page_flags(p) & PG_comp) clear_compound_tails(p, order);
  zone* z = page_section(p)->zone;
  free_one_page(z, p, order);
}

void page_allocator::free_pages_addr(void* addr, unsigned order) {
  mem_section* sec = lookup_section(addr);
  if (!sec || (reinterpret_cast<std::uintptr_t>(addr) & (PAGE_SIZE - 1))) {
    bad_free_.fetch_add(1, std::memory_order_relaxed);
    report_bug("page allocator", "Invalid pointer", "free_pages(%p, order %u): %s\n", addr, order,
               sec ? "not page aligned" : "not from uslub's memory map");
    return;
  }
  std::uintptr_t off = reinterpret_cast<std::uintptr_t>(addr) - sec->base;
  if (off < SECTION_DATA_START || off >= sec->top.load(std::memory_order_acquire)) {
    bad_free_.fetch_add(1, std::memory_order_relaxed);
    report_bug("page allocator", "Invalid pointer", "free_pages(%p, order %u): %s\n", addr, order,
               "not in committed memory");
    return;
  }
  free_pages(virt_to_page(addr), order);
}

int page_allocator::alloc_pages_bulk(unsigned order, int nr, page** out, gfp_t gfp, int node) {
  if (order > MAX_ORDER || nr <= 0) {
    if (order > MAX_ORDER) errno = EINVAL;
    return 0;
  }
  zone* z = pick_zone(node);
  int got = 0;
  bool drained = false;
  // Zeroed-ness is tracked per block: the top bit of the out[] slot would be a hack, so
  // blocks from pcp carry PG_returned in their flags until prep, and zone blocks get it set.
  if (order < NR_PCP_ORDERS && !cfg_.no_pcp) got = rmqueue_pcplist_bulk(z, order, nr, out);
  while (got < nr) {
    z->lock.lock();
    int before = got;
    for (unsigned i = 0; got < nr && i < kFreeBatchLockBound; ++i) {
      bool zeroed;
      page* p = __rmqueue(z, order, &zeroed);
      if (!p) break;
      set_page_flags(p, zeroed ? PG_returned : 0);
      out[got++] = p;
    }
    z->zone_alloc.add(static_cast<std::uint64_t>(got - before));
    z->lock.hold_work(static_cast<std::uint64_t>(got - before));
    z->lock.unlock();
    if (got == before && !grow_zone(z) && (drained || !(drained = drain_before_enomem()))) break;
  }
  for (int i = 0; i < got; ++i) prep_new_page(out[i], order, gfp, page_flags(out[i]) & PG_returned);
  return got;
}

void page_allocator::free_pages_bulk(page** pages, int nr, unsigned order) {
  int i = 0;
  while (i < nr) {
    // One lock hold per kFreeBatchLockBound blocks.
    int end = i + static_cast<int>(kFreeBatchLockBound) < nr
                  ? i + static_cast<int>(kFreeBatchLockBound)
                  : nr;
    page* batch[kFreeBatchLockBound];
    int n = 0;
    zone* z = nullptr;
    for (; i < end; ++i) {
      page* p = pages[i];
      if (!check_free(page_address(p), p, order)) continue;
      zone* pz = page_section(p)->zone;
      if (z && pz != z) break;  // one zone per batch
      z = pz;
      if (page_flags(p) & PG_comp) clear_compound_tails(p, order);
      batch[n++] = p;
    }
    if (!n) continue;
    if (order < NR_PCP_ORDERS && !cfg_.no_pcp && free_unref_page_bulk(z, batch, n, order)) continue;
    std::uint64_t now = platform::coarse_ms();
    z->lock.lock();
    for (int k = 0; k < n; ++k) __free_one_page(z, batch[k], order, false, now);
    z->zone_free.add(static_cast<std::uint64_t>(n));
    z->lock.hold_work(static_cast<std::uint64_t>(n));
    z->lock.unlock();
    maybe_reclaim(z, now);
  }
}

// Takes, in the documented order, everything a thread may hold while the allocator's state is
// inconsistent: each zone's reclaim flag (held with no lock, across madvise: a child forked in
// the middle of a pass would find it set forever, and its reclaim() would spin for good), the
// drain mutex, every pcp lock of every zone, then every zone lock (pcp->lock before
// zone->lock across zones too, so the order is the same as everywhere else).
void page_allocator::fork_prepare() {
  for (unsigned n = 0; n < nr_zones_; ++n) {
    preempt_count_inc();
    while (zones_[n]->reclaiming.exchange(true, std::memory_order_acquire)) sched_yield();
  }
  drain_mutex_.lock();
  for (unsigned n = 0; n < nr_zones_; ++n)
    for (unsigned c = 0; c < nr_cpus_; ++c) zones_[n]->pcp[c].lock.lock_wait(&drain_mutex_);
  for (unsigned n = 0; n < nr_zones_; ++n) zones_[n]->lock.lock_nest_lock(&drain_mutex_);
}

void page_allocator::fork_release() {
  for (unsigned n = nr_zones_; n-- > 0;) zones_[n]->lock.unlock();
  for (unsigned n = nr_zones_; n-- > 0;)
    for (unsigned c = nr_cpus_; c-- > 0;) zones_[n]->pcp[c].lock.unlock();
  drain_mutex_.unlock();
  for (unsigned n = nr_zones_; n-- > 0;) {
    zones_[n]->reclaiming.store(false, std::memory_order_release);
    preempt_count_dec();
  }
}

std::size_t page_allocator::nr_free(unsigned order) const {
  std::size_t n = 0;
  for (unsigned z = 0; z < nr_zones_; ++z) {
    zones_[z]->lock.lock();
    n += zones_[z]->area[order].nr_free;
    zones_[z]->lock.unlock();
  }
  return n;
}

page_alloc_stats page_allocator::stats() const {
  page_alloc_stats s{};
  s.committed_bytes = committed_.load(std::memory_order_relaxed);
  s.limit_bytes = cfg_.memory_limit;
  s.charged_bytes = charged_.load(std::memory_order_relaxed);
  for (unsigned n = 0; n < nr_zones_; ++n) {
    zone* z = zones_[n];
    z->lock.lock();
    s.free_bytes += z->free_pages * PAGE_SIZE;
    s.returned_bytes += z->returned_pages * PAGE_SIZE;
    z->lock.unlock();
    s.zone_alloc += z->zone_alloc.get();
    s.zone_free += z->zone_free.get();
    s.zone_lock_acquired += z->lock.acquisitions();
    s.zone_lock_contended += z->lock.contentions();
    for (unsigned c = 0; c < nr_cpus_; ++c) {
      const per_cpu_pages& pcp = z->pcp[c];
      s.pcp_bytes +=
          static_cast<std::uint64_t>(__atomic_load_n(&pcp.count, __ATOMIC_RELAXED)) * PAGE_SIZE;
      s.pcp_alloc_hit += pcp.alloc_hit.get();
      s.pcp_alloc_refill += pcp.alloc_refill.get();
      s.pcp_free_hit += pcp.free_hit.get();
      s.pcp_free_drain += pcp.free_drain.get();
      s.pcp_trylock_fail += pcp.lock.trylock_failures();
    }
  }
  s.grow = grow_count_.load(std::memory_order_relaxed);
  s.grow_fail = grow_fail_.load(std::memory_order_relaxed);
  s.reclaim_runs = reclaim_runs_.load(std::memory_order_relaxed);
  s.reclaimed_bytes = reclaimed_bytes_.load(std::memory_order_relaxed);
  s.bad_free = bad_free_.load(std::memory_order_relaxed);
  s.drain_all_calls = drain_calls_.load(std::memory_order_relaxed);
  s.drain_all_runs = drain_runs_.load(std::memory_order_relaxed);
  s.reclaim_inline_steps = inline_steps_.load(std::memory_order_relaxed);
  return s;
}

bool page_allocator::validate() const {
  for (unsigned n = 0; n < nr_zones_; ++n) {
    zone* z = zones_[n];
    lock_guard<spinlock_t> g(z->lock);
    std::size_t pages = 0, returned = 0;
    for (unsigned o = 0; o < NR_ORDERS; ++o) {
      std::size_t count = 0;
      for (int which = 0; which < 2; ++which) {
        list_head* head = which ? &z->area[o].returned_list : &z->area[o].free_list;
        for (list_head* l = head->next; l != head; l = l->next) {
          page* p = list_entry<page, &page::lru>(l);
          std::uint32_t want = PG_buddy | (which ? PG_returned : 0);
          const char* bad = nullptr;
          if (page_flags(p) != want)
            bad = "free block with wrong flags";
          else if (p->order != o)
            bad = "free block on the list of another order";
          else if (page_pfn(p) & ((std::size_t{1} << o) - 1))
            bad = "misaligned free block";
          else if (page_pfn(p) < FIRST_DATA_PFN)
            bad = "free block in the descriptor area";
          else if (page_section(p)->zone != z)
            bad = "free block on another zone's list";
          if (bad) {
            report_bug("page allocator", "Free list corrupt",
                       "zone %d order %u block %p (flags %#x order %u): %s\n", z->node, o,
                       page_address(p), page_flags(p), p->order, bad);
            return false;
          }
          ++count;
          pages += std::size_t{1} << o;
          if (which) returned += std::size_t{1} << o;
        }
      }
      if (count != z->area[o].nr_free) {
        report_bug("page allocator", "Free list corrupt",
                   "zone %d order %u: nr_free %zu, %zu on lists\n", z->node, o, z->area[o].nr_free,
                   count);
        return false;
      }
    }
    if (pages != z->free_pages || returned != z->returned_pages) {
      report_bug("page allocator", "Free list corrupt",
                 "zone %d: free_pages %zu (lists %zu), returned_pages %zu (lists %zu)\n", z->node,
                 z->free_pages, pages, z->returned_pages, returned);
      return false;
    }
  }
  return true;
}

page_allocator& global_page_allocator() {
  static constinit page_allocator g_pa;
  static constinit std::atomic<int> g_state{0};  // 0 new, 1 initialising, 2 ready
  if (USLUB_LIKELY(g_state.load(std::memory_order_acquire) == 2)) return g_pa;
  int expected = 0;
  if (g_state.compare_exchange_strong(expected, 1)) {
    if (g_pa.init(page_alloc_config::from_env()) != 0)
      panic("cannot map the page allocator's metadata");
    g_pa.global_ = true;
    g_state.store(2, std::memory_order_release);
  } else {
    while (g_state.load(std::memory_order_acquire) != 2) sched_yield();
  }
  return g_pa;
}

}  // namespace uslub
