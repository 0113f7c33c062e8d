// kmalloc size classes, large and huge blocks, kfree/ksize/krealloc.  See kmalloc.hpp.
#include "kmalloc/kmalloc.hpp"

#include "kmalloc/prof.hpp"

#include <errno.h>
#include <sched.h>

#include <cstdio>
#include <cstring>

#include "base/bits.hpp"
#include "base/check.hpp"
#include "slab/debug.hpp"

namespace uslub {

constinit kmalloc_state g_kmalloc{.fast_area = nullptr, .ready{0}};
kmem_cache* g_slab_map_classes[64];
std::int32_t g_double_free_rate = kDoubleFreeSampleRate;
static_assert((std::uint64_t{1} << 32) / kDoubleFreeSampleRate == std::uint32_t{1} << 26);

void kmalloc_set_double_free_rate(std::int32_t rate) {
  USLUB_CHECK(rate >= 1 && rate <= 0x8000 && (rate & (rate - 1)) == 0);
  g_double_free_rate = rate;
  // The tick is the word's high half: a step of 2^32 / rate carries once in rate pushes.
  // Strict: -1 in the high half keeps a tick of 0xffff there (0xffff + 0xffff carries), and
  // the ticked push leaves it alone.
  std::uint32_t keyed =
      rate == 1 ? 0xffff0001u : 1 + static_cast<std::uint32_t>((std::uint64_t{1} << 32) / rate);
  __atomic_store_n(&platform::detail::g_slot_tick_inc[0], keyed, __ATOMIC_RELAXED);
  __atomic_store_n(&platform::detail::g_slot_tick_inc[1], rate == 1 ? 1u : keyed, __ATOMIC_RELAXED);
  if (!pcpu_area()) return;
  std::uint16_t tick = rate == 1 ? 0xffff : 0;
  for (unsigned cpu = 0; cpu < platform::nr_cpu_ids(); ++cpu)
    for (unsigned c = 0; c < kNrKmallocClasses; ++c)
      __atomic_store_n(&pcpu_slot(cpu, (kKmallocSlot0 + c) * sizeof(sheaf_slot))->tick, tick,
                       __ATOMIC_RELAXED);
}

// Opens (on) or closes (off) the malloc fast path's gate; one release store.
static void kmalloc_set_fast(bool on) {
  bool usable = USLUB_HAVE_RSEQ_ASM && platform::rseq_sequences_usable();
  __atomic_store_n(&g_kmalloc.fast_area, on && usable ? pcpu_area() : nullptr, __ATOMIC_RELEASE);
}

static void build_classes(unsigned* sizes, unsigned* nr) {
  unsigned n = 0;
  sizes[n++] = 8;
  for (unsigned s = 16; s <= 128; s += 16) sizes[n++] = s;
  for (unsigned base = 128; base < KMALLOC_MAX_CACHE_SIZE; base *= 2)
    for (unsigned q = 1; q <= 4; ++q) sizes[n++] = base + base / 4 * q;
  *nr = n;
}

void kmalloc_init() {
  int expected = 0;
  if (!g_kmalloc.ready.compare_exchange_strong(expected, 1)) {
    while (g_kmalloc.ready.load(std::memory_order_acquire) < 2) sched_yield();
    return;
  }
  kmalloc_state& k = g_kmalloc;
  if (!sheaf_pcpu_area_init()) panic("cannot map the per-CPU slot area");
  if (const char* df = getenv("USLUB_DOUBLE_FREE"); df && strcmp(df, "strict") == 0)
    kmalloc_set_double_free_rate(1);
  build_classes(k.sizes, &k.nr);
  USLUB_CHECK(k.nr <= kNrKmallocClasses);
  for (unsigned i = 0; i < k.nr; ++i) {
    char name[32];
    snprintf(name, sizeof name, "kmalloc-%u", k.sizes[i]);
    // 16-byte alignment (malloc's) for every class above 8; free without debugging, where
    // the sizes are multiples of 16, and it keeps debug layouts (red zones) aligned.
    kmem_cache* s = kmem_cache_create(name, k.sizes[i], k.sizes[i] >= 16 ? 16 : 0,
                                      SLAB_NO_MERGE | SLAB_KMALLOC, nullptr);
    if (!s) panic("cannot create %s", name);
    k.caches[i] = s;
    g_slab_map_classes[i] = s;
    // The class path: the cache's slot at the class's fixed index, and its slabs tagged with
    // the class in the slab map (nothing allocated from it yet).  Debug and statistics
    // caches, several nodes (frees go back to their node) or the key off keep the cache
    // paths, their class slot never written (cap 0: every class-path pop misses).
    if (s->sheaf_rseq) {
      sheaf_use_slot(s, kKmallocSlot0 + i);
      if (s->nr_nodes == 1 && s->free_key && s->offset == 0) {
        k.cls[i] = {s->boundary_mul, s->random};
        s->map_tag = std::uintptr_t{i + 1} << 4;
      }
    }
  }
  kfence_init_from_env();
  prof_init_from_env();  // heap profiling: off unless USLUB_PROF_SAMPLE (prof.hpp)
  unsigned c = 0;
  for (std::size_t slot = 0; slot <= KMALLOC_MAX_CACHE_SIZE / 8; ++slot) {
    std::size_t size = slot * 8;
    while (k.sizes[c] < size) ++c;
    __atomic_store_n(&k.index[slot], static_cast<std::uint8_t>(c), __ATOMIC_RELAXED);
  }
  // Sampling (KFENCE, heap profiling) takes every allocation through kmalloc_slow.
  bool sampling = kfence_enabled() || prof_enabled();
  g_kmalloc.ready.store(sampling ? 3 : 2, std::memory_order_release);
  kmalloc_set_fast(!sampling);
  kmalloc_pressure_init();  // after `ready`: the monitor thread's start may allocate
}

bool kmalloc_kfence_init(std::uint32_t sample, unsigned pool_objects) {
  if (g_kmalloc.ready.load(std::memory_order_acquire) < 2) kmalloc_init();
  if (!kfence_init(sample, pool_objects)) return false;
  g_kmalloc.ready.store(sample || prof_enabled() ? 3 : 2, std::memory_order_release);
  kmalloc_set_fast(sample == 0 && !prof_enabled());
  return true;
}

void* kmalloc_class_miss(unsigned c, std::size_t size) {
  return cache_alloc_slow(g_kmalloc.caches[c], 0, NUMA_NO_NODE, size);
}

void kfree_class_slow(unsigned c, void* obj, platform::slot_push why) {
  kmem_cache* s = g_kmalloc.caches[c];
  if (why == platform::slot_push::in_a_row) return sheaf_report_double_free(s, obj);
  // Sampled, or the slot missed (full, held, no sheaf): the full check, ...
  if (USLUB_UNLIKELY(!free_key_set(s, obj))) return sheaf_report_double_free(s, obj);
#if USLUB_HAVE_RSEQ_ASM
  // ... then, sampled, the push that advances the tick (a keyed push would carry again);
  if (why == platform::slot_push::sample) {
    auto r = platform::rseq_slot_push<kPcpuShift, kKmallocSlot0 * sizeof(sheaf_slot),
                                      platform::push_kind::ticked>(
        pcpu_area(), c * sizeof(sheaf_slot), obj, nullptr, 0);
    if (r == platform::slot_push::ok) return;
    if (r == platform::slot_push::in_a_row) return sheaf_report_double_free(s, obj);
  }
#endif
  // ... or the cache's free past its key step.
  cache_free_keyed(s, nullptr, obj);
}

namespace {
// A sampled allocation, or nullptr: the caller goes on with its normal path.
USLUB_ALWAYS_INLINE void* kfence_sampled(std::size_t size, std::size_t align, gfp_t gfp) {
  if (kfence_enabled() && size <= PAGE_SIZE && align <= PAGE_SIZE && kfence_should_sample())
    return kfence_alloc(size, align, gfp & __GFP_ZERO);
  return nullptr;
}
}  // namespace

void* kmalloc_slow(std::size_t size, gfp_t gfp) {
  int ready = g_kmalloc.ready.load(std::memory_order_acquire);
  if (ready < 2) {
    kmalloc_init();
    ready = g_kmalloc.ready.load(std::memory_order_acquire);
  }
  if (ready == 3) {
    if (void* p = kfence_sampled(size, 16, gfp)) return p;
    if (prof_enabled())
      if (void* p = prof_maybe_sample(size, gfp)) return p;
  }
  if (size <= KMALLOC_MAX_CACHE_SIZE)
    return cache_alloc(kmalloc_slab(size), gfp, NUMA_NO_NODE, size);
  if (size > (std::size_t{1} << 47)) {
    errno = ENOMEM;
    return nullptr;
  }
  void* p = kmalloc_large(size, gfp, 0);
  // Huge blocks are fresh mappings: already zero.
  return p;
}

void* kmalloc_aligned(std::size_t size, std::size_t align, gfp_t gfp) {
  // Every class above 8 is a multiple of 16: a size of at least align is enough.
  if (align <= 16) return kmalloc_inline(size < align ? align : size, gfp);
  if (g_kmalloc.ready.load(std::memory_order_acquire) < 2) kmalloc_init();
  if (void* p = kfence_sampled(size, align, gfp)) return p;
  std::size_t need = roundup_pow_of_two(size > align ? size : align);
  if (need <= KMALLOC_MAX_CACHE_SIZE) {
    // A power-of-two class: objects sit at multiples of their size in size-aligned slabs.
    kmem_cache* s = kmalloc_slab(need);
    // Debug layouts (red zones, tracking) break the size alignment: use whole pages then.
    if (USLUB_LIKELY(s->size == need)) return cache_alloc(s, gfp, NUMA_NO_NODE, size);
  }
  if (size > (std::size_t{1} << 47) || align > (std::size_t{1} << 40)) {
    errno = ENOMEM;
    return nullptr;
  }
  return kmalloc_large(size, gfp, align);
}

// Context: p is not a slab object start.
void kfree_slow(const void* p, const char* caller) {
  if (prof_enabled()) prof_free(p);  // a sampled block (a large or huge one) is forgotten
  if (mem_section* sec = lookup_section(p)) {
    auto off = reinterpret_cast<std::uintptr_t>(p) - sec->base;
    if (off >= SECTION_DATA_START && off < sec->top.load(std::memory_order_acquire)) {
      page* head = compound_head(virt_to_page(p));
      std::uint32_t f = page_flags(head);
      if ((f & PG_head) && (f & PG_large) && page_address(head) == p) return large_free(head);
      if (f & PG_slab) {
        auto* s = static_cast<kmem_cache*>(head->slab_cache);
        report_bug(s ? s->name : "kmalloc", "Invalid pointer",
                   "%s(%p): not the start of an object\n", caller, p);
        return;
      }
      if ((f & PG_head) && (f & PG_large)) {
        report_bug("kmalloc", "Invalid pointer", "%s(%p): inside a large block at %p\n", caller, p,
                   page_address(head));
        return;
      }
      report_bug("kmalloc", (f & (PG_buddy | PG_pcp)) ? "Object already free" : "Invalid pointer",
                 "%s(%p): not an allocated block\n", caller, p);
      return;
    }
  }
  if (huge_free(p)) return;
  if (is_kfence_address(p)) return kfence_free(p);
  report_bug("kmalloc", "Invalid pointer", "%s(%p): not allocated by uslub\n", caller, p);
}

bool kmalloc_debug_object(const void* p) {
  page* slab = virt_to_slab(p);
  return slab && kmem_cache_debug(static_cast<kmem_cache*>(slab->slab_cache));
}

std::size_t ksize_slow(const void* p) {
  if (!p) return 0;
  if (page* slab = virt_to_slab(p)) {
    auto* s = static_cast<kmem_cache*>(slab->slab_cache);
    // A debug kmalloc cache red-zones the slack after the requested size: report that size.
    return USLUB_UNLIKELY(s->orig_size_offset) ? debug_orig_size(s, p) : s->object_size;
  }
  if (mem_section* sec = lookup_section(p)) {
    page* head = large_head(sec, p);
    return head ? large_usable(head) : 0;
  }
  if (std::size_t k = kfence_ksize(p)) return k;
  return huge_size(p);
}

bool kmalloc_owns(const void* p) {
  if (kfree_cache_check(p)) return true;
  if (mem_section* sec = lookup_section(p)) return large_head(sec, p) != nullptr;
  return huge_size(p) != 0 || kfence_ksize(p) != 0;
}

}  // namespace uslub

using namespace uslub;

extern "C" {

void* kmalloc(size_t size, uslub_gfp_t gfp) {
  return kmalloc_inline(size, gfp);
}
void* kzalloc(size_t size, uslub_gfp_t gfp) {
  return kmalloc_inline(size, gfp | __GFP_ZERO);
}

void* kcalloc(size_t n, size_t size, uslub_gfp_t gfp) {
  size_t bytes;
  if (__builtin_mul_overflow(n, size, &bytes)) {
    errno = ENOMEM;
    return nullptr;
  }
  return kmalloc_inline(bytes, gfp | __GFP_ZERO);
}

void kfree(const void* p) {
  kfree_inline(p, "kfree");
}

size_t ksize(const void* p) {
  return ksize_slow(p);
}

void* krealloc(const void* p, size_t new_size, uslub_gfp_t gfp) {
  if (!p) return kmalloc_inline(new_size, gfp);
  if (new_size == 0) {
    kfree(p);
    return nullptr;
  }
  size_t have = ksize_slow(p);
  if (have == 0) {
    kfree_slow(p, "krealloc");  // reports what is wrong with p
    errno = EINVAL;
    return nullptr;
  }
  // Stay in place when it fits and does not waste more than half of the block (not in debug
  // caches: the red zone must follow the new size).
  if (new_size <= have && (new_size > have / 2 || have <= 16) && !kmalloc_debug_object(p))
    return const_cast<void*>(p);
  // A large block is resized in place when it can be (large.cpp; have is the request in pages).
  if (mem_section* sec = lookup_section(p);
      sec && have >= PAGE_SIZE && new_size > KMALLOC_MAX_CACHE_SIZE)
    if (page* head = large_head(sec, p); head && large_realloc_in_place(head, have, new_size, gfp))
      return const_cast<void*>(p);
  if (have > MAX_ORDER_BYTES && new_size > MAX_ORDER_BYTES) {  // huge to huge: mremap, no copy
    if (void* q = huge_realloc(p, new_size)) {
      if ((gfp & __GFP_ZERO) && new_size > have)
        memset(static_cast<char*>(q) + have, 0, new_size - have);
      return q;
    }
  }
  void* q = kmalloc_inline(new_size, gfp & ~__GFP_ZERO);
  if (!q) return nullptr;
  memcpy(q, p, new_size < have ? new_size : have);
  if ((gfp & __GFP_ZERO) && new_size > have)
    memset(static_cast<char*>(q) + have, 0, new_size - have);
  kfree(p);
  return q;
}

}  // extern "C"
