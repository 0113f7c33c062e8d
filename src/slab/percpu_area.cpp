// Packed per-cache per-CPU areas.  See percpu_area.hpp (and its locking rules).
//
// A shared page is an order-0 block of the global page allocator split into 32 chunks of 128
// bytes; page->slab_private holds the bitmap of chunks in use and page->lru links the page on
// g_area_pages while it has one.  An area takes the first run of free chunks long enough in
// any page (pages are few: one per ~8 caches), or a new page; a page whose last area is freed
// goes back to the page allocator.
#include "slab/percpu_area.hpp"

#include <cstdint>
#include <cstring>

#include "base/bits.hpp"
#include "base/list.hpp"
#include "page/page_alloc.hpp"
#include "sync/spinlock.hpp"

namespace uslub {

namespace {
constexpr unsigned kChunksPerPage = PAGE_SIZE / kPercpuChunk;
static_assert(kChunksPerPage <= 64 && kPercpuAreaMaxPacked <= PAGE_SIZE / 2);

constinit lock_class_key percpu_area_lock_key{"percpu_area_lock"};
constinit spinlock_t percpu_area_lock{&percpu_area_lock_key};
constinit list_head g_area_pages{&g_area_pages, &g_area_pages};  // percpu_area_lock
constinit std::size_t g_nr_area_pages = 0;                       // percpu_area_lock

std::size_t chunks_for(std::size_t bytes) {
  return (bytes + kPercpuChunk - 1) / kPercpuChunk;
}
std::uint64_t run_mask(std::size_t n, unsigned at) {
  return ((n == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << n) - 1)) << at;
}

// Context: percpu_area_lock.  Takes n free chunks of p; the first chunk's index or -1.
int take_run(page* p, std::size_t n) {
  std::uint64_t used = p->slab_private;
  for (unsigned at = 0; at + n <= kChunksPerPage; ++at)
    if (!(used & run_mask(n, at))) {
      p->slab_private = used | run_mask(n, at);
      return static_cast<int>(at);
    }
  return -1;
}

void* chunk_address(page* p, int at) {
  return static_cast<char*>(page_address(p)) + static_cast<std::size_t>(at) * kPercpuChunk;
}
}  // namespace

void* percpu_area_alloc(std::size_t bytes) {
  if (bytes > kPercpuAreaMaxPacked)
    return global_page_allocator().alloc_pages_addr(
        order_base_2((bytes + PAGE_SIZE - 1) / PAGE_SIZE), __GFP_ZERO);
  const std::size_t n = chunks_for(bytes);
  void* area = nullptr;
  {
    lock_guard<spinlock_t> g(percpu_area_lock);
    for (list_head* l = g_area_pages.next; l != &g_area_pages && !area; l = l->next) {
      page* p = list_entry<page, &page::lru>(l);
      if (int at = take_run(p, n); at >= 0) area = chunk_address(p, at);
    }
  }
  if (!area) {
    // A new shared page, allocated with the lock dropped (the lock is a leaf).
    void* mem = global_page_allocator().alloc_pages_addr(0, 0);
    if (!mem) return nullptr;
    page* p = virt_to_page(mem);
    p->slab_private = 0;
    lock_guard<spinlock_t> g(percpu_area_lock);
    area = chunk_address(p, take_run(p, n));
    list_add_tail(&p->lru, &g_area_pages);
    ++g_nr_area_pages;
  }
  memset(area, 0, bytes);
  return area;
}

void percpu_area_free(void* area, std::size_t bytes) {
  if (!area) return;
  if (bytes > kPercpuAreaMaxPacked)
    return global_page_allocator().free_pages_addr(
        area, order_base_2((bytes + PAGE_SIZE - 1) / PAGE_SIZE));
  page* p = virt_to_page(area);
  auto at = static_cast<unsigned>((reinterpret_cast<std::uintptr_t>(area) & (PAGE_SIZE - 1)) /
                                  kPercpuChunk);
  bool empty;
  {
    lock_guard<spinlock_t> g(percpu_area_lock);
    p->slab_private &= ~run_mask(chunks_for(bytes), at);
    empty = p->slab_private == 0;
    if (empty) {
      list_del(&p->lru);
      --g_nr_area_pages;
    }
  }
  if (empty) {
    p->lru.next = p->lru.prev = nullptr;
    global_page_allocator().free_pages_addr(page_address(p), 0);
  }
}

std::size_t percpu_area_footprint(std::size_t bytes) {
  if (bytes > kPercpuAreaMaxPacked)
    return PAGE_SIZE << order_base_2((bytes + PAGE_SIZE - 1) / PAGE_SIZE);
  return chunks_for(bytes) * kPercpuChunk;
}

std::size_t percpu_area_pages() {
  lock_guard<spinlock_t> g(percpu_area_lock);
  return g_nr_area_pages;
}

void percpu_area_fork_prepare() {
  percpu_area_lock.lock();
}
void percpu_area_fork_release() {
  percpu_area_lock.unlock();  // the child's only thread is the one that locked it
}

}  // namespace uslub
