// Huge blocks (above MAX_ORDER_BYTES): one mmap each, remembered in an open-addressing hash
// table so that kfree/ksize can recognise them without touching memory that may not be ours.
// A block of at least the page allocator's thp_min (USLUB_THP_MIN) is advised MADV_HUGEPAGE.
//
// Freed page-aligned mappings are kept in a small cache (at most kCacheBlocks blocks and
// kCacheBytes bytes) and reused by later huge allocations of a similar size: programs that
// cycle multi-MiB buffers would otherwise pay mmap + page faults + munmap every time (glibc
// gets the same effect from its dynamic mmap threshold).
//
// Locking: huge_lock protects the table (huge_tab, huge_cap, huge_used) and the cache.  The
// mmap/munmap calls happen outside it (no lock across a system call); the table itself grows by
// mapping a new array outside the lock and swapping it in under the lock.
#include <errno.h>
#include <sys/mman.h>

#include <cstring>

#include "base/bits.hpp"
#include "kmalloc/kmalloc.hpp"

namespace uslub {
namespace {

struct huge_entry {
  std::uintptr_t addr;  // 0 empty, 1 tombstone
  std::size_t size;     // bytes usable at addr
  std::uintptr_t map;   // mapping start and length (for munmap)
  std::size_t map_len;
};

constinit lock_class_key huge_lock_key{"huge_lock"};
constinit spinlock_t huge_lock{&huge_lock_key};
huge_entry* huge_tab = nullptr;  // huge_lock
std::size_t huge_cap = 0;        // huge_lock (power of two)
std::size_t huge_used = 0;       // huge_lock: live + tombstones
std::atomic<std::size_t> huge_total{0};

constexpr int kCacheBlocks = 8;
constexpr std::size_t kCacheBytes = std::size_t{64} << 20;
huge_entry cache[kCacheBlocks];  // huge_lock
int nr_cached = 0;               // huge_lock
std::size_t cached_bytes = 0;    // huge_lock

// Takes a cached mapping of at least len bytes (and not more than twice it).
// Context: huge_lock.
bool take_cached(std::size_t len, huge_entry* out) {
  lockdep_assert_held(&huge_lock);
  for (int i = 0; i < nr_cached; ++i) {
    if (cache[i].map_len >= len && cache[i].map_len <= 2 * len) {
      *out = cache[i];
      cache[i] = cache[--nr_cached];
      cached_bytes -= out->map_len;
      return true;
    }
  }
  return false;
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

}  // namespace

void* huge_alloc(std::size_t size, std::size_t align, bool zero) {
  if (align < PAGE_SIZE) align = PAGE_SIZE;
  std::size_t len = align_up(size, PAGE_SIZE);
  if (align == PAGE_SIZE && len >= size) {
    huge_entry e;
    huge_lock.lock();
    bool hit = take_cached(len, &e);
    huge_lock.unlock();
    if (hit) {
      e.size = e.map_len;
      if (insert(e)) {
        if (zero) memset(reinterpret_cast<void*>(e.addr), 0, size);
        return reinterpret_cast<void*>(e.addr);
      }
      platform::linux_vm().release(reinterpret_cast<void*>(e.map), e.map_len);
      huge_total.fetch_sub(e.map_len, std::memory_order_relaxed);
    }
  }
  std::size_t map_len = len + (align > PAGE_SIZE ? align : 0);
  if (map_len < len) {
    errno = ENOMEM;
    return nullptr;
  }
  void* m;
  if (platform::linux_vm().map(map_len, &m) != 0) {
    errno = ENOMEM;
    return nullptr;
  }
  // Huge pages for a block of at least USLUB_THP_MIN bytes by itself (a 32 MiB array then takes
  // 16 page faults, not 8192).  Not for smaller huge blocks even in a large heap: a program
  // that touches a few pages of many 4-8 MiB blocks would have 2 MiB resident per touch (the
  // large workload: 220 MiB peak instead of 142).
  if (map_len >= global_page_allocator().config().thp_min)
    platform::linux_vm().hugepage(m, map_len);
  auto base = reinterpret_cast<std::uintptr_t>(m);
  std::uintptr_t a = (base + align - 1) & ~(std::uintptr_t{align} - 1);
  if (!insert({a, len, base, map_len})) {
    platform::linux_vm().release(m, map_len);
    errno = ENOMEM;
    return nullptr;
  }
  huge_total.fetch_add(map_len, std::memory_order_relaxed);
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
  huge_lock.lock();
  huge_entry* e = find(reinterpret_cast<std::uintptr_t>(p));
  if (!e || e->addr != e->map) {
    huge_lock.unlock();
    return nullptr;
  }
  huge_entry old = *e;
  e->addr = 1;  // tombstone while remapping
  huge_lock.unlock();
  void* q = mremap(reinterpret_cast<void*>(old.map), old.map_len, new_len, MREMAP_MAYMOVE);
  if (q == MAP_FAILED || !insert({reinterpret_cast<std::uintptr_t>(q), new_len,
                                  reinterpret_cast<std::uintptr_t>(q), new_len})) {
    if (q != MAP_FAILED) {  // cannot record the new mapping: give it back, keep nothing
      munmap(q, new_len);
      huge_total.fetch_sub(old.map_len, std::memory_order_relaxed);
      return nullptr;
    }
    insert(old);  // unchanged mapping: put it back
    return nullptr;
  }
  huge_total.fetch_add(new_len, std::memory_order_relaxed);
  huge_total.fetch_sub(old.map_len, std::memory_order_relaxed);
  return q;
}

bool huge_free(const void* p) {
  huge_lock.lock();
  huge_entry* e = find(reinterpret_cast<std::uintptr_t>(p));
  if (!e) {
    huge_lock.unlock();
    return false;
  }
  huge_entry copy = *e;
  e->addr = 1;  // tombstone
  if (copy.addr == copy.map && nr_cached < kCacheBlocks &&
      cached_bytes + copy.map_len <= kCacheBytes) {
    cache[nr_cached++] = copy;
    cached_bytes += copy.map_len;
    huge_lock.unlock();
    return true;
  }
  huge_lock.unlock();
  platform::linux_vm().release(reinterpret_cast<void*>(copy.map), copy.map_len);
  huge_total.fetch_sub(copy.map_len, std::memory_order_relaxed);
  return true;
}

std::size_t huge_size(const void* p) {
  lock_guard<spinlock_t> g(huge_lock);
  huge_entry* e = find(reinterpret_cast<std::uintptr_t>(p));
  return e ? e->size : 0;
}

std::size_t huge_trim() {
  huge_entry drop[kCacheBlocks];
  huge_lock.lock();
  int n = nr_cached;
  for (int i = 0; i < n; ++i) drop[i] = cache[i];
  nr_cached = 0;
  cached_bytes = 0;
  huge_lock.unlock();
  std::size_t bytes = 0;
  for (int i = 0; i < n; ++i) {
    platform::linux_vm().release(reinterpret_cast<void*>(drop[i].map), drop[i].map_len);
    bytes += drop[i].map_len;
  }
  huge_total.fetch_sub(bytes, std::memory_order_relaxed);
  return bytes;
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
