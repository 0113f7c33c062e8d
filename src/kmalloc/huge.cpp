// Huge blocks (above MAX_ORDER_BYTES): one mmap each, remembered in an open-addressing hash
// table so that kfree/ksize can recognise them without touching memory that may not be ours.
// A block of at least the page allocator's thp_min (USLUB_THP_MIN) is advised MADV_HUGEPAGE.
//
// Retained mappings.  A freed page-aligned mapping is kept (still mapped, its pages resident)
// for a later huge allocation, which takes the cached mapping closest in size and mremaps it to
// the length it needs: a shrink gives the excess back, a growth faults in only the extension.
// Programs that replace multi-MiB blocks would otherwise pay mmap + a page fault per 4 KiB (or
// per 2 MiB) + munmap for every block (glibc avoids it by raising its mmap threshold).  How much
// is kept follows the program: at most a quarter of the live huge footprint (huge_live / 4,
// kRetainShift), so a program that frees every huge block keeps none of them; entries free for
// longer than the page allocator's decay_ms (USLUB_DECAY_MS) are unmapped by the next huge
// allocation or free; huge_trim (malloc_trim, memory pressure, the memory limit) unmaps all.
//
// Memory limit: every mapping, cached ones included, is charged to the page allocator's limit
// (page_allocator::charge); at the limit the cache is trimmed, then every cache shrunk
// (shrink_all_memory), before an allocation fails.
//
// Locking: huge_lock (a leaf) protects the table (huge_tab, huge_cap, huge_used), the cache
// and huge_live.  The mmap/mremap/munmap calls happen outside it (no lock across a system
// call); the table itself grows by mapping a new array outside the lock and swapping it in
// under the lock.
#include <errno.h>
#include <sys/mman.h>

#include <cstring>

#include "base/bits.hpp"
#include "kmalloc/kmalloc.hpp"
#include "page/pressure.hpp"

namespace uslub {
namespace {

struct huge_entry {
  std::uintptr_t addr;  // 0 empty, 1 tombstone
  std::size_t size;     // bytes usable at addr
  std::uintptr_t map;   // mapping start and length (for munmap)
  std::size_t map_len;
};

struct cached_map {
  std::uintptr_t map;
  std::size_t len;
  std::uint64_t freed_ms;
};

constinit lock_class_key huge_lock_key{"huge_lock"};
constinit spinlock_t huge_lock{&huge_lock_key};
huge_entry* huge_tab = nullptr;  // huge_lock
std::size_t huge_cap = 0;        // huge_lock (power of two)
std::size_t huge_used = 0;       // huge_lock: live + tombstones
std::atomic<std::size_t> huge_total{0};

constexpr int kCacheBlocks = 16;
constexpr unsigned kRetainShift = 2;  // keep at most huge_live >> kRetainShift bytes
cached_map cache[kCacheBlocks];       // huge_lock
int nr_cached = 0;                    // huge_lock
std::size_t cached_bytes = 0;         // huge_lock
std::size_t huge_live = 0;            // huge_lock: mapped bytes of live huge blocks
std::atomic<std::uint64_t> cache_hits{0}, cache_misses{0}, cache_released{0};

// Do the program's huge blocks get filled?  Huge pages pay off for a block written in full
// (a 16 MiB block: 8 faults instead of 4096) and cost up to 2 MiB of RSS per touch for one that
// is only touched here and there.  huge_free samples how much of a freed block is resident
// (mincore) and keeps a moving score (0..256; 256: every recent block was >= 7/8 resident);
// while it is above half, new huge blocks of at least kThpFillMin are advised MADV_HUGEPAGE
// whatever USLUB_THP_MIN says.  Relaxed: a hint.
constexpr std::size_t kThpFillMin = std::size_t{4} << 20;
constinit std::atomic<unsigned> fill_score{0};

void sample_fill(std::uintptr_t map, std::size_t len) {
  if (len < kThpFillMin) return;
  unsigned char vec[4096];
  std::size_t resident = 0, pages = len / PAGE_SIZE;
  for (std::size_t off = 0; off < len; off += sizeof vec * PAGE_SIZE) {
    std::size_t chunk = len - off < sizeof vec * PAGE_SIZE ? len - off : sizeof vec * PAGE_SIZE;
    if (mincore(reinterpret_cast<void*>(map + off), chunk, vec) != 0) return;
    for (std::size_t i = 0; i < chunk / PAGE_SIZE; ++i) resident += vec[i] & 1;
  }
  unsigned full = resident * 8 >= pages * 7 ? 256 : 0;
  unsigned s = fill_score.load(std::memory_order_relaxed);
  fill_score.store((s * 3 + full) / 4, std::memory_order_relaxed);
}

bool want_hugepages(std::size_t len) {
  return len >= global_page_allocator().config().thp_min ||
         (len >= kThpFillMin && fill_score.load(std::memory_order_relaxed) > 128 &&
          global_page_allocator().config().thp_min != SIZE_MAX);
}

// Unmaps (outside the lock) and uncharges a mapping.
void release_map(std::uintptr_t map, std::size_t len) {
  platform::linux_vm().release(reinterpret_cast<void*>(map), len);
  huge_total.fetch_sub(len, std::memory_order_relaxed);
  global_page_allocator().uncharge(len);
}

void cache_remove(int i, cached_map* out) {
  *out = cache[i];
  cached_bytes -= cache[i].len;
  cache[i] = cache[--nr_cached];
}

// Takes the cached mappings that are over the budget or idle for longer than decay_ms into
// drop[] (the oldest first); returns how many.  Context: huge_lock.
int cache_evict(std::uint64_t now, cached_map* drop) {
  std::uint64_t decay = static_cast<std::uint64_t>(global_page_allocator().config().decay_ms);
  std::size_t budget = huge_live >> kRetainShift;
  int n = 0;
  for (int i = 0; i < nr_cached;) {
    if (cache[i].freed_ms + decay <= now) {
      cache_remove(i, &drop[n++]);
      continue;
    }
    ++i;
  }
  while (nr_cached && cached_bytes > budget) {
    int oldest = 0;
    for (int i = 1; i < nr_cached; ++i)
      if (cache[i].freed_ms < cache[oldest].freed_ms) oldest = i;
    cache_remove(oldest, &drop[n++]);
  }
  return n;
}

void release_dropped(const cached_map* drop, int n) {
  for (int i = 0; i < n; ++i) {
    release_map(drop[i].map, drop[i].len);
    cache_released.fetch_add(1, std::memory_order_relaxed);
  }
}

// The cached mapping to reuse for len bytes: the smallest of at least len, else the largest.
// Context: huge_lock.
bool take_cached(std::size_t len, cached_map* out) {
  lockdep_assert_held(&huge_lock);
  int best = -1;
  for (int i = 0; i < nr_cached; ++i) {
    if (best < 0) {
      best = i;
      continue;
    }
    bool fits = cache[i].len >= len, best_fits = cache[best].len >= len;
    if (fits ? !best_fits || cache[i].len < cache[best].len
             : !best_fits && cache[i].len > cache[best].len)
      best = i;
  }
  if (best < 0) return false;
  cache_remove(best, out);
  return true;
}

std::size_t hash(std::uintptr_t a) {
  return (a >> 12) * 0x9e3779b97f4a7c15ull;
}

// Context: huge_lock.  Returns the slot of addr or nullptr.
huge_entry* find(std::uintptr_t a) {
  lockdep_assert_held(&huge_lock);
  if (!huge_cap) return nullptr;
  for (std::size_t i = hash(a) & (huge_cap - 1), n = 0; n < huge_cap;
       ++n, i = (i + 1) & (huge_cap - 1)) {
    if (huge_tab[i].addr == a) return &huge_tab[i];
    if (huge_tab[i].addr == 0) return nullptr;
  }
  return nullptr;
}

void insert_locked(huge_entry* tab, std::size_t cap, const huge_entry& e) {
  for (std::size_t i = hash(e.addr) & (cap - 1);; i = (i + 1) & (cap - 1))
    if (tab[i].addr <= 1) {
      tab[i] = e;
      return;
    }
}

bool insert(const huge_entry& e) {
  for (;;) {
    huge_lock.lock();
    if ((huge_used + 1) * 2 <= huge_cap) {
      insert_locked(huge_tab, huge_cap, e);
      ++huge_used;
      huge_live += e.map_len;
      huge_lock.unlock();
      return true;
    }
    std::size_t want = huge_cap ? huge_cap * 2 : 256;
    huge_lock.unlock();
    void* mem;
    if (platform::linux_vm().map(want * sizeof(huge_entry), &mem) != 0) return false;
    auto* tab = static_cast<huge_entry*>(mem);
    huge_lock.lock();
    if (huge_cap >= want) {  // someone grew it meanwhile
      huge_lock.unlock();
      platform::linux_vm().release(mem, want * sizeof(huge_entry));
      continue;
    }
    std::size_t live = 0;
    for (std::size_t i = 0; i < huge_cap; ++i)
      if (huge_tab[i].addr > 1) insert_locked(tab, want, huge_tab[i]), ++live;
    huge_entry* old = huge_tab;
    std::size_t old_cap = huge_cap;
    huge_tab = tab;
    huge_cap = want;
    huge_used = live;
    huge_lock.unlock();
    if (old) platform::linux_vm().release(old, old_cap * sizeof(huge_entry));
  }
}

// Reuses a cached mapping for len bytes (mremap to that length); nullptr if none.
void* huge_alloc_cached(std::size_t len, bool zero, std::size_t size) {
  cached_map c;
  huge_lock.lock();
  bool hit = take_cached(len, &c);
  huge_lock.unlock();
  if (!hit) return nullptr;
  std::uintptr_t a = c.map;
  if (c.len != len) {
    // A growth is charged first (the shrink's excess is uncharged after it).
    if (len > c.len && !global_page_allocator().charge(len - c.len)) {
      release_map(c.map, c.len);
      return nullptr;
    }
    // In place only: a moved mapping would lose its 2 MiB alignment (its huge pages split).
    void* q = mremap(reinterpret_cast<void*>(c.map), c.len, len, 0);
    if (q == MAP_FAILED) {
      if (len > c.len) global_page_allocator().uncharge(len - c.len);
      // The address space after it is taken: keep the mapping for a smaller block, and let
      // the caller map a fresh one.
      huge_lock.lock();
      bool kept = nr_cached < kCacheBlocks;
      if (kept) {
        cache[nr_cached++] = c;
        cached_bytes += c.len;
      }
      huge_lock.unlock();
      if (!kept) release_map(c.map, c.len);
      return nullptr;
    }
    if (len < c.len) global_page_allocator().uncharge(c.len - len);
    huge_total.fetch_add(len, std::memory_order_relaxed);
    huge_total.fetch_sub(c.len, std::memory_order_relaxed);
    a = reinterpret_cast<std::uintptr_t>(q);
    if (len > c.len && want_hugepages(len)) platform::linux_vm().hugepage(q, len);
  }
  if (!insert({a, len, a, len})) {
    release_map(a, len);
    return nullptr;
  }
  cache_hits.fetch_add(1, std::memory_order_relaxed);
  // The reused pages hold old contents (the grown extension reads as zeros).
  if (zero) memset(reinterpret_cast<void*>(a), 0, size < c.len ? size : c.len);
  return reinterpret_cast<void*>(a);
}

}  // namespace

void* huge_alloc(std::size_t size, std::size_t align, bool zero) {
  if (align < PAGE_SIZE) align = PAGE_SIZE;
  std::size_t len = align_up(size, PAGE_SIZE);
  if (len < size) {
    errno = ENOMEM;
    return nullptr;
  }
  // A block that gets huge pages is a whole number of them when the program fills its blocks:
  // a partial last huge page would be faulted 4 KiB at a time (256 faults for 1 MiB).
  constexpr std::size_t kHuge = std::size_t{2} << 20;
  if (align == PAGE_SIZE && len >= kThpFillMin &&
      fill_score.load(std::memory_order_relaxed) > 128 && want_hugepages(len))
    len = align_up(len, kHuge);
  if (align == PAGE_SIZE)
    if (void* p = huge_alloc_cached(len, zero, size)) return p;
  std::size_t map_len = len + (align > PAGE_SIZE ? align : 0);
  if (map_len < len) {
    errno = ENOMEM;
    return nullptr;
  }
  page_allocator& pa = global_page_allocator();
  // At the memory limit: the retained mappings go first, then every cache is shrunk.
  if (!pa.charge(map_len) && (huge_trim(), !pa.charge(map_len)) &&
      (shrink_all_memory(shrink_reason::limit), !pa.charge(map_len))) {
    errno = ENOMEM;
    return nullptr;
  }
  void* m;
  // A block that gets huge pages starts on a 2 MiB boundary, or its first and last partial
  // huge pages would be faulted 4 KiB at a time (up to 1024 faults more per block).
  const bool thp = want_hugepages(map_len);
  if (platform::linux_vm().map(map_len + (thp ? kHuge : 0), &m) != 0) {
    pa.uncharge(map_len);
    errno = ENOMEM;
    return nullptr;
  }
  if (thp) {
    auto b = reinterpret_cast<std::uintptr_t>(m);
    std::uintptr_t start = (b + kHuge - 1) & ~(kHuge - 1);
    if (start > b) munmap(m, start - b);
    if (start + map_len < b + map_len + kHuge)
      munmap(reinterpret_cast<void*>(start + map_len), b + kHuge - start);
    m = reinterpret_cast<void*>(start);
  }
  cache_misses.fetch_add(1, std::memory_order_relaxed);
  // Huge pages for a block of at least USLUB_THP_MIN bytes by itself (a 32 MiB array then takes
  // 16 page faults, not 8192).  Not for smaller huge blocks even in a large heap: a program
  // that touches a few pages of many 4-8 MiB blocks would have 2 MiB resident per touch (the
  // large workload: 220 MiB peak instead of 142).
  // (Unless the program's blocks are seen to be filled: want_hugepages.)
  if (thp) platform::linux_vm().hugepage(m, map_len);
  huge_total.fetch_add(map_len, std::memory_order_relaxed);
  auto base = reinterpret_cast<std::uintptr_t>(m);
  std::uintptr_t a = (base + align - 1) & ~(std::uintptr_t{align} - 1);
  if (!insert({a, len, base, map_len})) {
    release_map(base, map_len);
    errno = ENOMEM;
    return nullptr;
  }
  return reinterpret_cast<void*>(a);
}

// Resizes a huge block with mremap (no copy; the kernel moves page-table entries), keeping it
// huge.  nullptr if p is not a whole-mapping huge block or the remap fails: the caller then
// allocates and copies.  The entry leaves the table while the mapping changes (a concurrent
// free of p would be the program's bug).
void* huge_realloc(const void* p, std::size_t new_size) {
  if (new_size <= MAX_ORDER_BYTES) return nullptr;
  std::size_t new_len = align_up(new_size, PAGE_SIZE);
  if (new_len < new_size) return nullptr;
  page_allocator& pa = global_page_allocator();
  huge_lock.lock();
  huge_entry* e = find(reinterpret_cast<std::uintptr_t>(p));
  if (!e || e->addr != e->map) {
    huge_lock.unlock();
    return nullptr;
  }
  huge_entry old = *e;
  e->addr = 1;  // tombstone while remapping
  huge_live -= old.map_len;
  huge_lock.unlock();
  if (new_len > old.map_len && !pa.charge(new_len - old.map_len)) {
    insert(old);
    return nullptr;  // the caller's allocate-and-copy fails at the limit too (after reclaim)
  }
  void* q = mremap(reinterpret_cast<void*>(old.map), old.map_len, new_len, MREMAP_MAYMOVE);
  if (q == MAP_FAILED) {
    if (new_len > old.map_len) pa.uncharge(new_len - old.map_len);
    insert(old);  // unchanged mapping: put it back
    return nullptr;
  }
  if (new_len < old.map_len) pa.uncharge(old.map_len - new_len);
  huge_total.fetch_add(new_len, std::memory_order_relaxed);
  huge_total.fetch_sub(old.map_len, std::memory_order_relaxed);
  if (!insert({reinterpret_cast<std::uintptr_t>(q), new_len, reinterpret_cast<std::uintptr_t>(q),
               new_len})) {
    release_map(reinterpret_cast<std::uintptr_t>(q), new_len);  // cannot record it: give it back
    return nullptr;
  }
  return q;
}

bool huge_free(const void* p) {
  cached_map drop[kCacheBlocks + 1];
  int n = 0;
  huge_lock.lock();
  huge_entry* e = find(reinterpret_cast<std::uintptr_t>(p));
  if (!e) {
    huge_lock.unlock();
    return false;
  }
  huge_entry copy = *e;
  e->addr = 1;  // tombstone
  huge_live -= copy.map_len;
  std::uint64_t now = platform::coarse_ms();
  if (copy.addr == copy.map && copy.map_len <= huge_live >> kRetainShift) {
    if (nr_cached == kCacheBlocks) {
      cache_remove(0, &drop[n++]);
    }
    cache[nr_cached++] = {copy.map, copy.map_len, now};
    cached_bytes += copy.map_len;
  } else {
    drop[n++] = {copy.map, copy.map_len, now};
  }
  n += cache_evict(now, drop + n);
  huge_lock.unlock();
  // Still mapped: dropped mappings are unmapped below; a cached one may meanwhile be taken
  // (and moved) by another thread's allocation, which at worst skews this hint.
  sample_fill(copy.map, copy.map_len);
  release_dropped(drop, n);
  return true;
}

std::size_t huge_size(const void* p) {
  lock_guard<spinlock_t> g(huge_lock);
  huge_entry* e = find(reinterpret_cast<std::uintptr_t>(p));
  return e ? e->size : 0;
}

std::size_t huge_trim() {
  cached_map drop[kCacheBlocks];
  huge_lock.lock();
  int n = nr_cached;
  for (int i = 0; i < n; ++i) drop[i] = cache[i];
  nr_cached = 0;
  cached_bytes = 0;
  huge_lock.unlock();
  std::size_t bytes = 0;
  for (int i = 0; i < n; ++i) bytes += drop[i].len;
  release_dropped(drop, n);
  return bytes;
}

huge_cache_stats huge_get_stats() {
  huge_cache_stats st{};
  huge_lock.lock();
  st.live_bytes = huge_live;
  st.cached_bytes = cached_bytes;
  st.cached_blocks = static_cast<std::size_t>(nr_cached);
  huge_lock.unlock();
  st.hits = cache_hits.load(std::memory_order_relaxed);
  st.misses = cache_misses.load(std::memory_order_relaxed);
  st.released = cache_released.load(std::memory_order_relaxed);
  return st;
}

std::size_t huge_bytes() {
  return huge_total.load(std::memory_order_relaxed);
}

// Fork (malloc.cpp's handlers): huge_lock is a leaf, held by prepare across the fork so that
// the child never inherits it taken by a thread that does not exist there.
void huge_fork_prepare() {
  huge_lock.lock();
}
void huge_fork_release() {
  huge_lock.unlock();
}

}  // namespace uslub
