#include "base/stackdepot.hpp"

#include <sys/mman.h>

#include <atomic>
#include <cstring>
#include <mutex>

#include "sync/lockdep.hpp"
#include "sync/preempt.hpp"

namespace uslub {

struct stack_record {
  const stack_record* next;  // immutable once published
  std::uint64_t hash;
  unsigned n;
  void* pcs[];
};

namespace {

constexpr std::size_t kBuckets = 1u << 14;
constexpr std::size_t kChunk = 1u << 20;

struct chunk {
  std::atomic<std::size_t> used;
  std::size_t cap;
  alignas(16) unsigned char data[];
};

std::atomic<const stack_record*> g_table[kBuckets];
std::atomic<chunk*> g_chunk{nullptr};
std::atomic<std::size_t> g_bytes{0};
std::mutex depot_lock;  // mapping a new chunk
constinit lock_class_key depot_lock_key{"stack_depot_lock"};

// depot_lock with its lockdep class: a leaf (only mmap under it), taken inside the allocator's
// locks by tracking (slub_debug 'U') and last by fork's prepare.
struct depot_guard {
  depot_guard() {
    preempt_count_inc();  // fork's prepare takes depot_lock (sync/preempt.hpp)
    lockdep_acquire(&depot_lock_key, &depot_lock, false);
    depot_lock.lock();
  }
  ~depot_guard() {
    lockdep_release(&depot_lock_key, &depot_lock);
    depot_lock.unlock();
    preempt_count_dec();
  }
  depot_guard(const depot_guard&) = delete;
  depot_guard& operator=(const depot_guard&) = delete;
};

std::uint64_t hash_stack(void* const* pcs, unsigned n) {
  std::uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
  for (unsigned i = 0; i < n; ++i) {
    h ^= reinterpret_cast<std::uintptr_t>(pcs[i]);
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 32;
  }
  return h;
}

void* depot_alloc(std::size_t size) {
  size = (size + 15) & ~std::size_t{15};
  for (;;) {
    chunk* c = g_chunk.load(std::memory_order_acquire);
    if (c) {
      std::size_t off = c->used.fetch_add(size, std::memory_order_relaxed);
      if (off + size <= c->cap) return c->data + off;
    }
    depot_guard g;
    if (g_chunk.load(std::memory_order_relaxed) != c) continue;  // someone mapped one
    void* m = mmap(nullptr, kChunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    auto* nc = static_cast<chunk*>(m);
    nc->used.store(0, std::memory_order_relaxed);
    nc->cap = kChunk - sizeof(chunk);
    g_bytes.fetch_add(kChunk, std::memory_order_relaxed);
    g_chunk.store(nc, std::memory_order_release);
  }
}

const stack_record* find(const stack_record* r, std::uint64_t h, void* const* pcs, unsigned n) {
  for (; r; r = r->next)
    if (r->hash == h && r->n == n && memcmp(r->pcs, pcs, n * sizeof(void*)) == 0) return r;
  return nullptr;
}

}  // namespace

depot_stack_handle_t stack_depot_save(void* const* pcs, unsigned n) {
  if (n == 0) return nullptr;
  std::uint64_t h = hash_stack(pcs, n);
  auto& bucket = g_table[h % kBuckets];
  const stack_record* head = bucket.load(std::memory_order_acquire);
  if (const stack_record* r = find(head, h, pcs, n)) return r;
  auto* rec = static_cast<stack_record*>(depot_alloc(sizeof(stack_record) + n * sizeof(void*)));
  if (!rec) return nullptr;
  rec->hash = h;
  rec->n = n;
  memcpy(rec->pcs, pcs, n * sizeof(void*));
  for (;;) {
    rec->next = head;
    if (bucket.compare_exchange_weak(head, rec, std::memory_order_release,
                                     std::memory_order_acquire))
      return rec;
    // Lost a race: the winner may have inserted the same stack (our record is then wasted).
    if (const stack_record* r = find(head, h, pcs, n)) return r;
  }
}

unsigned stack_depot_fetch(depot_stack_handle_t h, void* const** pcs) {
  if (!h) {
    *pcs = nullptr;
    return 0;
  }
  *pcs = h->pcs;
  return h->n;
}

std::size_t stack_depot_bytes() {
  return g_bytes.load(std::memory_order_relaxed);
}

void stack_depot_fork_prepare() {
  preempt_count_inc();
  lockdep_acquire(&depot_lock_key, &depot_lock, false);
  depot_lock.lock();
}
void stack_depot_fork_release() {
  lockdep_release(&depot_lock_key, &depot_lock);
  depot_lock.unlock();  // the child's only thread is the one that locked it
  preempt_count_dec();
}

}  // namespace uslub
