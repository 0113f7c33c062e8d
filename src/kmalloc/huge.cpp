// Huge blocks (above MAX_ORDER_BYTES): one mmap each, remembered in an open-addressing hash
// table so that kfree/ksize can recognise them without touching memory that may not be ours.
// A block of at least the page allocator's thp_min (USLUB_THP_MIN) is advised MADV_HUGEPAGE.
//
// Retained memory.  A freed block's mapping is kept (still mapped, its pages resident) as a
// *piece* of retained memory, for later huge allocations, which never fault on retained pages:
// - best fit with split: an allocation takes the smallest piece it fits in; the rest of the
//   piece stays retained (no system call at all; a remainder under kMinSplit goes with the
//   block).  Address-adjacent pieces are merged when one is retained.
// - assembly: when no piece is large enough, the block is mapped fresh and retained pieces
//   (largest first, each of at least kMinMove) are moved into it with
//   mremap(MREMAP_FIXED): the kernel moves page-table entries (whole 2 MiB entries when both
//   sides are 2 MiB aligned), no page is copied, zeroed or faulted.  Only the part no piece
//   covers faults in.  (A piece that spans several mappings moves only on kernels that move
//   several VMAs at once, 6.17 and later; where its move fails it is unmapped, since a failed
//   move of several VMAs may have left holes.  A piece of one mapping stays retained.)
// - growth by krealloc (huge_realloc) fills the grown part the same way.
// So the memory a program cycles through is faulted in once: a program that replaces blocks of
// random sizes faults only when its live huge footprint passes its recent maximum.  Moving pays
// only for resident pages: while the program is seen not to fill its blocks (fill_score, below)
// nothing is moved, and a block no piece holds is instead the largest piece grown by one mremap.
//
// How much is kept (cache_balance):
// - at most a quarter of the live huge footprint (huge_live >> kRetainShift; trimmed back to it
//   once a quarter over it): a program that frees every huge block keeps none of them, at its
//   last free;
// - decay by time: the retained bytes the program did not need during a whole period of the
//   page allocator's decay_ms (USLUB_DECAY_MS: the lowest level of the retained bytes in that
//   period) are unmapped, oldest first, by the first huge allocation or free after the period;
//   so a piece left unused is unmapped after one to two periods.  decay_ms 0 retains nothing;
// - pressure: huge_trim (malloc_trim, the pressure monitor, the memory limit) unmaps it all.
//
// Memory limit: every mapping, retained pieces included, is charged to the page allocator's
// limit (page_allocator::charge); at the limit the retained memory is unmapped, then every
// cache shrunk (shrink_all_memory), before an allocation fails.
//
// Locking: huge_lock (a leaf) protects the table (huge_tab, huge_cap, huge_used), the retained
// pieces (cache, nr_cached, cached_bytes, win_start_ms, win_low) and huge_live.  The
// mmap/mremap/munmap calls happen outside it (no lock across a system call): pieces being
// moved or unmapped are first taken out of the cache under the lock, so no other thread sees
// them; the table itself grows by mapping a new array outside the lock and swapping it in
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
  bool one_vma;  // inside a single kernel mapping (VMA): mremap can move or resize it
};

// A piece of retained memory: mapped, resident where it was touched, page-aligned.
struct cached_map {
  std::uintptr_t map;
  std::size_t len;
  std::uint64_t freed_ms;
  bool one_vma;  // as huge_entry's: false once merged with a neighbour or assembled
};

constinit lock_class_key huge_lock_key{"huge_lock"};
constinit spinlock_t huge_lock{&huge_lock_key};
huge_entry* huge_tab = nullptr;  // huge_lock
std::size_t huge_cap = 0;        // huge_lock (power of two)
std::size_t huge_used = 0;       // huge_lock: live + tombstones
std::atomic<std::size_t> huge_total{0};

constexpr std::size_t kHuge = std::size_t{2} << 20;
constexpr int kCacheBlocks = 64;
constexpr unsigned kRetainShift = 2;  // keep at most huge_live >> kRetainShift
constexpr std::size_t kMinSplit = std::size_t{256}
                                  << 10;                // a smaller remainder stays with its block
constexpr std::size_t kMinMove = std::size_t{1} << 20;  // smaller pieces are not moved
// The number of pieces dropped at once: a retained one evicted, one per piece trimmed, one cut.
constexpr int kMaxDrop = kCacheBlocks + 2;
cached_map cache[kCacheBlocks];  // huge_lock
int nr_cached = 0;               // huge_lock
std::size_t cached_bytes = 0;    // huge_lock
std::size_t huge_live = 0;       // huge_lock: mapped bytes of live huge blocks
std::uint64_t win_start_ms = 0;  // huge_lock: the current decay period began then
std::size_t win_low = 0;         // huge_lock: the fewest cached_bytes during that period
std::atomic<std::uint64_t> cache_hits{0}, cache_misses{0}, cache_released{0};
std::atomic<std::uint64_t> cache_assembled{0}, cache_moved_bytes{0};

// Do the program's huge blocks get filled?  Huge pages pay off for a block written in full
// (a 16 MiB block: 8 faults instead of 4096) and cost up to 2 MiB of RSS per touch for one that
// is only touched here and there.  huge_free samples how much of a freed block is resident
// (mincore) and keeps a moving score (0..256; 256: every recent block was >= 7/8 resident);
// while it is above half, new huge blocks of at least kThpFillMin are advised MADV_HUGEPAGE
// whatever USLUB_THP_MIN says.  After the first 16 samples, while the score is settled (near
// 0 or 256), one free in eight is sampled.  Relaxed: a hint.
constexpr std::size_t kThpFillMin = std::size_t{4} << 20;
constinit std::atomic<unsigned> fill_score{0};
constinit std::atomic<unsigned> fill_tick{0};

void sample_fill(std::uintptr_t map, std::size_t len) {
  if (len < kThpFillMin) return;
  unsigned s = fill_score.load(std::memory_order_relaxed);
  unsigned tick = fill_tick.fetch_add(1, std::memory_order_relaxed);
  if (tick >= 16 && (s < 8 || s > 248) && (tick & 7) != 0) return;
  unsigned char vec[4096];
  std::size_t resident = 0, pages = len / PAGE_SIZE;
  for (std::size_t off = 0; off < len; off += sizeof vec * PAGE_SIZE) {
    std::size_t chunk = len - off < sizeof vec * PAGE_SIZE ? len - off : sizeof vec * PAGE_SIZE;
    if (mincore(reinterpret_cast<void*>(map + off), chunk, vec) != 0) return;
    for (std::size_t i = 0; i < chunk / PAGE_SIZE; ++i) resident += vec[i] & 1;
  }
  unsigned full = resident * 8 >= pages * 7 ? 256 : 0;
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

void release_dropped(const cached_map* drop, int n) {
  for (int i = 0; i < n; ++i) {
    release_map(drop[i].map, drop[i].len);
    cache_released.fetch_add(1, std::memory_order_relaxed);
  }
}

// The cut granule of a piece: whole huge pages when it is made of them (a cut inside one
// would split it).
std::size_t granule(std::uintptr_t map, std::size_t len) {
  return (map | len) % kHuge == 0 ? kHuge : PAGE_SIZE;
}

void cache_remove(int i) {
  cached_bytes -= cache[i].len;
  cache[i] = cache[--nr_cached];
}

int oldest_piece() {
  int o = 0;
  for (int i = 1; i < nr_cached; ++i)
    if (cache[i].freed_ms < cache[o].freed_ms) o = i;
  return o;
}

// Retains [map, map+len), merged with the pieces it touches; when every slot is taken the
// oldest piece goes to drop[].  Returns how many pieces it dropped.  Context: huge_lock.
int cache_insert(std::uintptr_t map, std::size_t len, std::uint64_t now, bool one_vma,
                 cached_map* drop) {
  lockdep_assert_held(&huge_lock);
  for (int i = 0; i < nr_cached;) {
    if (cache[i].map + cache[i].len == map || map + len == cache[i].map) {
      if (cache[i].map < map) map = cache[i].map;
      len += cache[i].len;
      if (cache[i].freed_ms > now) now = cache[i].freed_ms;
      one_vma = false;  // two mappings, or one the kernel may not have merged
      cache_remove(i);
      continue;
    }
    ++i;
  }
  int n = 0;
  if (nr_cached == kCacheBlocks) {
    int o = oldest_piece();
    drop[n++] = cache[o];
    cache_remove(o);
  }
  cache[nr_cached++] = {map, len, now, one_vma};
  cached_bytes += len;
  return n;
}

// Unmaps retained memory, oldest first, until at most target bytes are retained; a piece
// larger than what must go is cut (its tail goes).  Returns how many ranges went to drop[]
// (at most nr_cached + 1).  Context: huge_lock.
int cache_trim(std::size_t target, cached_map* drop) {
  int n = 0;
  while (cached_bytes > target) {
    int o = oldest_piece();
    std::size_t excess = cached_bytes - target;
    cached_map& c = cache[o];
    std::size_t cut = align_up(excess, granule(c.map, c.len));
    if (cut < c.len) {
      drop[n++] = {c.map + c.len - cut, cut, c.freed_ms, c.one_vma};
      c.len -= cut;
      cached_bytes -= cut;
      break;
    }
    drop[n++] = c;
    cache_remove(o);
  }
  return n;
}

// Applies the retention rules (top of file) at time now; returns how many ranges went to
// drop[] (at most nr_cached + 1).  Context: huge_lock.
int cache_balance(std::uint64_t now, cached_map* drop) {
  lockdep_assert_held(&huge_lock);
  auto decay = static_cast<std::uint64_t>(global_page_allocator().config().decay_ms);
  // Over the cap by a quarter before trimming back to it: one munmap for several frees, not a
  // cut at each.
  std::size_t cap = huge_live >> kRetainShift, target = SIZE_MAX;
  if (decay == 0)
    target = 0;
  else if (cached_bytes > cap + cap / 4)
    target = cap;
  if (now - win_start_ms >= decay) {
    // What stayed retained through the whole period was not needed: it goes.
    std::size_t unused = win_low < cached_bytes ? win_low : cached_bytes;
    if (cached_bytes - unused < target) target = cached_bytes - unused;
    win_start_ms = now;
    win_low = SIZE_MAX;
  }
  int n = cache_trim(target, drop);
  if (cached_bytes < win_low) win_low = cached_bytes;
  return n;
}

// Best fit: takes the smallest piece that holds len bytes at an align-aligned address, splits
// it, and returns the block's start, with *map_len the bytes the block takes (len, or more
// when the remainder is too small to keep) and *one_vma the piece's.  0 if no piece fits; the
// pieces split off may drop others, into drop[*nd...].  Context: huge_lock.
std::uintptr_t cache_take(std::size_t len, std::size_t align, std::size_t* map_len, bool* one_vma,
                          cached_map* drop, int* nd) {
  lockdep_assert_held(&huge_lock);
  int best = -1;
  for (int i = 0; i < nr_cached; ++i) {
    const cached_map& c = cache[i];
    std::uintptr_t a = (c.map + align - 1) & ~(std::uintptr_t{align} - 1);
    if (a + len > c.map + c.len || a + len < a) continue;
    // A head left before an aligned block needs a slot of its own.
    if (a != c.map && nr_cached == kCacheBlocks) continue;
    if (best < 0 || c.len < cache[best].len) best = i;
  }
  if (best < 0) return 0;
  cached_map c = cache[best];
  cache_remove(best);
  std::uintptr_t a = (c.map + align - 1) & ~(std::uintptr_t{align} - 1);
  std::size_t tail = c.map + c.len - (a + len);
  *map_len = len;
  *one_vma = c.one_vma;
  if (tail >= kMinSplit)
    *nd += cache_insert(a + len, tail, c.freed_ms, c.one_vma, drop + *nd);
  else
    *map_len += tail;
  if (a != c.map) *nd += cache_insert(c.map, a - c.map, c.freed_ms, c.one_vma, drop + *nd);
  return a;
}

// Moves retained pieces into [dst, dst+len), a fresh mapping of ours, largest first, so that
// their pages (resident) replace fresh ones (to be faulted).  Returns the bytes moved; their
// old ranges are unmapped (the caller uncharges them).  zero: the moved ranges are cleared.
std::size_t cache_fill(std::uintptr_t dst, std::size_t len, bool zero) {
  struct move {
    std::uintptr_t from;
    std::size_t len;
    std::uint64_t freed_ms;
    bool one_vma;
  } mv[kCacheBlocks];
  int nm = 0;
  std::size_t got = 0;
  huge_lock.lock();
  while (got < len && nr_cached) {
    int big = 0;
    for (int i = 1; i < nr_cached; ++i)
      if (cache[i].len > cache[big].len) big = i;
    cached_map& c = cache[big];
    std::size_t want = len - got;
    if (c.len < kMinMove && c.len < want) break;
    std::size_t n = c.len < want ? c.len : want;
    // Into a block of huge pages, every piece but the last moves whole huge pages, so that the
    // next one and the part left to fault in start on a huge page boundary.
    if (dst % kHuge == 0 && n < want) n &= ~(kHuge - 1);
    if (n == 0) break;
    mv[nm++] = {c.map, n, c.freed_ms, c.one_vma};
    got += n;
    if (n == c.len) {
      cache_remove(big);
    } else {  // the piece's head moves, its tail stays retained
      c.map += n;
      c.len -= n;
      cached_bytes -= n;
    }
  }
  if (cached_bytes < win_low) win_low = cached_bytes;
  huge_lock.unlock();
  std::size_t moved = 0, off = 0;
  cached_map drop[kMaxDrop];
  int nd = 0;
  for (int i = 0; i < nm; ++i) {
    void* to = reinterpret_cast<void*>(dst + off);
    void* q = mremap(reinterpret_cast<void*>(mv[i].from), mv[i].len, mv[i].len,
                     MREMAP_MAYMOVE | MREMAP_FIXED, to);
    if (q == MAP_FAILED) {
      // This part of the block faults in.  A piece inside one mapping is left as it was (a
      // failed move of one VMA changes nothing): it stays retained.  One that spans several
      // (a kernel before 6.17 moves one VMA at a time; a later one may stop half way) may
      // have holes now: it is unmapped, never handed out.
      if (mv[i].one_vma) {
        huge_lock.lock();
        nd += cache_insert(mv[i].from, mv[i].len, mv[i].freed_ms, true, drop + nd);
        huge_lock.unlock();
      } else {
        drop[nd++] = {mv[i].from, mv[i].len, mv[i].freed_ms, false};
      }
      if (nd > kMaxDrop - 2) release_dropped(drop, nd), nd = 0;
      off += mv[i].len;
      continue;
    }
    if (zero) memset(to, 0, mv[i].len);
    moved += mv[i].len;
    off += mv[i].len;
  }
  release_dropped(drop, nd);
  if (moved) {
    cache_assembled.fetch_add(1, std::memory_order_relaxed);
    cache_moved_bytes.fetch_add(moved, std::memory_order_relaxed);
  }
  return moved;
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

// Maps len fresh bytes, on a 2 MiB boundary and advised MADV_HUGEPAGE when thp (its first and
// last partial huge pages would otherwise be faulted 4 KiB at a time: up to 1024 faults more
// per block).  0 or an errno.  Not charged here.
int map_fresh(std::size_t len, bool thp, std::uintptr_t* out) {
  void* m;
  if (int err = platform::linux_vm().map(len + (thp ? kHuge : 0), &m)) return err;
  auto b = reinterpret_cast<std::uintptr_t>(m);
  if (thp) {
    std::uintptr_t start = (b + kHuge - 1) & ~(kHuge - 1);
    if (start > b) munmap(m, start - b);
    if (start + len < b + len + kHuge)
      munmap(reinterpret_cast<void*>(start + len), b + kHuge - start);
    b = start;
    platform::linux_vm().hugepage(reinterpret_cast<void*>(b), len);
  }
  *out = b;
  return 0;
}

// Takes a retained piece for len bytes at align (best fit, split); nullptr if none fits.
void* huge_alloc_cached(std::size_t len, std::size_t align, bool zero, std::size_t size) {
  cached_map drop[2 * kMaxDrop];
  int nd = 0;
  std::size_t map_len = 0;
  bool one_vma = false;
  huge_lock.lock();
  nd = cache_balance(platform::coarse_ms(), drop);
  std::uintptr_t a = nr_cached ? cache_take(len, align, &map_len, &one_vma, drop, &nd) : 0;
  if (a && cached_bytes < win_low) win_low = cached_bytes;
  huge_lock.unlock();
  release_dropped(drop, nd);
  if (!a) return nullptr;
  if (!insert({a, len, a, map_len, one_vma})) {
    release_map(a, map_len);
    return nullptr;
  }
  cache_hits.fetch_add(1, std::memory_order_relaxed);
  // The reused pages hold old contents.
  if (zero) memset(reinterpret_cast<void*>(a), 0, size);
  return reinterpret_cast<void*>(a);
}

// Do retained pieces hold pages worth moving (the program fills its blocks, or too few blocks
// were freed yet to tell)?  Otherwise they are mostly untouched address space: a system call
// per piece would buy nothing.
bool pieces_filled() {
  return fill_score.load(std::memory_order_relaxed) > 128 ||
         fill_tick.load(std::memory_order_relaxed) < 4;
}

// For a program that does not fill its blocks: grows the largest retained piece (one mapping)
// to len with mremap, in place or moved by the kernel (1 system call, the extension unfaulted
// as a fresh mapping's would be); nullptr if there is none or the remap fails.
void* huge_alloc_grown(std::size_t len, bool zero, std::size_t size) {
  huge_lock.lock();
  int big = -1;
  for (int i = 0; i < nr_cached; ++i)
    if (cache[i].one_vma && cache[i].len < len && (big < 0 || cache[i].len > cache[big].len))
      big = i;
  if (big < 0) {
    huge_lock.unlock();
    return nullptr;
  }
  cached_map c = cache[big];
  cache_remove(big);
  if (cached_bytes < win_low) win_low = cached_bytes;
  huge_lock.unlock();
  page_allocator& pa = global_page_allocator();
  void* q = MAP_FAILED;
  if (pa.charge(len - c.len)) {
    q = mremap(reinterpret_cast<void*>(c.map), c.len, len, MREMAP_MAYMOVE);
    if (q == MAP_FAILED) pa.uncharge(len - c.len);
  }
  if (q == MAP_FAILED) {
    cached_map drop[1];
    huge_lock.lock();
    int nd = cache_insert(c.map, c.len, c.freed_ms, true, drop);
    huge_lock.unlock();
    release_dropped(drop, nd);
    return nullptr;
  }
  huge_total.fetch_add(len - c.len, std::memory_order_relaxed);
  if (want_hugepages(len)) platform::linux_vm().hugepage(q, len);
  auto a = reinterpret_cast<std::uintptr_t>(q);
  if (!insert({a, len, a, len, true})) {
    release_map(a, len);
    return nullptr;
  }
  cache_hits.fetch_add(1, std::memory_order_relaxed);
  if (zero) memset(q, 0, size < c.len ? size : c.len);  // the extension reads as zeros
  return q;
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
  if (len >= kThpFillMin && fill_score.load(std::memory_order_relaxed) > 128 && want_hugepages(len))
    len = align_up(len, kHuge);
  if (void* p = huge_alloc_cached(len, align, zero, size)) return p;
  const bool filled = pieces_filled();
  if (!filled && align == PAGE_SIZE)
    if (void* p = huge_alloc_grown(len, zero, size)) return p;
  std::size_t map_len = len + (align > PAGE_SIZE ? align : 0);
  if (map_len < len) {
    errno = ENOMEM;
    return nullptr;
  }
  page_allocator& pa = global_page_allocator();
  // At the memory limit: the retained memory goes first, then every cache is shrunk.
  if (!pa.charge(map_len) && (huge_trim(), !pa.charge(map_len)) &&
      (shrink_all_memory(shrink_reason::limit), !pa.charge(map_len))) {
    errno = ENOMEM;
    return nullptr;
  }
  // Huge pages for a block of at least USLUB_THP_MIN bytes by itself (a 32 MiB array then takes
  // 16 page faults, not 8192).  Not for smaller huge blocks even in a large heap: a program
  // that touches a few pages of many 4-8 MiB blocks would have 2 MiB resident per touch (the
  // large workload: 220 MiB peak instead of 142).  (Unless the program's blocks are seen to be
  // filled: want_hugepages.)
  std::uintptr_t base;
  if (map_fresh(map_len, want_hugepages(map_len), &base) != 0) {
    pa.uncharge(map_len);
    errno = ENOMEM;
    return nullptr;
  }
  huge_total.fetch_add(map_len, std::memory_order_relaxed);
  cache_misses.fetch_add(1, std::memory_order_relaxed);
  std::uintptr_t a = (base + align - 1) & ~(std::uintptr_t{align} - 1);
  // No retained piece holds the block: retained pieces make up what they can of it.
  std::size_t moved = filled ? cache_fill(a, len, zero) : 0;
  if (moved) {
    huge_total.fetch_sub(moved, std::memory_order_relaxed);
    pa.uncharge(moved);
  }
  if (!insert({a, len, base, map_len, moved == 0})) {
    release_map(base, map_len);
    errno = ENOMEM;
    return nullptr;
  }
  return reinterpret_cast<void*>(a);
}

// Resizes a huge block in place or by moving its pages (no copy), keeping it huge.  nullptr if
// p is not a whole-mapping huge block or the move fails: the caller then allocates and copies.
// Shrinking retains the tail (no system call); growing is mremap, and the grown part is made
// of retained pieces where there are some (cache_fill).  The entry leaves the table while the
// mapping changes (a concurrent free of p would be the program's bug).
void* huge_realloc(const void* p, std::size_t new_size) {
  if (new_size <= MAX_ORDER_BYTES) return nullptr;
  std::size_t new_len = align_up(new_size, PAGE_SIZE);
  if (new_len < new_size) return nullptr;
  page_allocator& pa = global_page_allocator();
  cached_map drop[kMaxDrop];
  int nd = 0;
  huge_lock.lock();
  huge_entry* e = find(reinterpret_cast<std::uintptr_t>(p));
  if (!e || e->addr != e->map) {
    huge_lock.unlock();
    return nullptr;
  }
  if (new_len <= e->map_len) {
    // Shrinking (or within the block's pages): a tail worth keeping is retained, cut on a
    // huge page boundary in a block made of them.
    std::size_t keep = align_up(new_len, granule(e->map, e->map_len));
    std::size_t tail = e->map_len - (keep < e->map_len ? keep : e->map_len);
    if (tail >= kMinSplit) {
      e->map_len -= tail;
      huge_live -= tail;
      std::uint64_t now = platform::coarse_ms();
      nd = cache_insert(e->map + e->map_len, tail, now, e->one_vma, drop);
      nd += cache_balance(now, drop + nd);
    }
    e->size = new_len;
    huge_lock.unlock();
    release_dropped(drop, nd);
    return const_cast<void*>(p);
  }
  huge_entry old = *e;
  e->addr = 1;  // tombstone while remapping
  huge_live -= old.map_len;
  huge_lock.unlock();
  std::size_t grow = new_len - old.map_len;
  if (!pa.charge(grow)) {
    insert(old);
    return nullptr;  // the caller's allocate-and-copy fails at the limit too (after reclaim)
  }
  void* q = MAP_FAILED;
  if (old.one_vma)
    q = mremap(reinterpret_cast<void*>(old.map), old.map_len, new_len, MREMAP_MAYMOVE);
  bool one_vma = old.one_vma;
  if (q == MAP_FAILED) {
    // Several mappings (mremap resizes only one): move them all into a fresh mapping of the
    // new length, which the kernel does from 6.17 on.
    std::uintptr_t to;
    if (map_fresh(new_len, want_hugepages(new_len), &to) == 0) {
      q = mremap(reinterpret_cast<void*>(old.map), old.map_len, old.map_len,
                 MREMAP_MAYMOVE | MREMAP_FIXED, reinterpret_cast<void*>(to));
      if (q == MAP_FAILED) platform::linux_vm().release(reinterpret_cast<void*>(to), new_len);
      one_vma = false;
    }
  }
  if (q == MAP_FAILED) {
    pa.uncharge(grow);
    insert(old);  // unchanged mapping: put it back
    return nullptr;
  }
  huge_total.fetch_add(grow, std::memory_order_relaxed);
  auto a = reinterpret_cast<std::uintptr_t>(q);
  if (std::size_t moved = pieces_filled() ? cache_fill(a + old.map_len, grow, false) : 0) {
    huge_total.fetch_sub(moved, std::memory_order_relaxed);
    pa.uncharge(moved);
    one_vma = false;
  }
  if (!insert({a, new_len, a, new_len, one_vma})) {
    release_map(a, new_len);  // cannot record it: give it back
    return nullptr;
  }
  return q;
}

bool huge_free(const void* p) {
  cached_map drop[2 * kMaxDrop];
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
  n = cache_insert(copy.map, copy.map_len, now, copy.one_vma, drop);
  n += cache_balance(now, drop + n);
  huge_lock.unlock();
  // Still mapped unless dropped (unmapped below); a retained one may meanwhile be taken (and
  // moved) by another thread's allocation, which at worst skews this hint.
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
  cached_map drop[kMaxDrop];
  huge_lock.lock();
  int n = cache_trim(0, drop);
  win_low = 0;
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
  st.assembled = cache_assembled.load(std::memory_order_relaxed);
  st.moved_bytes = cache_moved_bytes.load(std::memory_order_relaxed);
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
