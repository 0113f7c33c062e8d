// Statistics: the summary and per-cache figures of <uslub/stats.h>, and the report that
// USLUB_STATS prints at exit, `uslub stat` reads and malloc_stats writes.
//
// Nothing here is on a fast path.  Figures come from what the layers keep anyway: slab and
// object counts of each node (atomics), the partial lists (walked under list_lock, as
// slab_fill_info does), the sheaves (below), the page allocator's zone and pcp counters and
// the per-cache statistics counters when a cache keeps them (SLAB_STATS).
//
// Locking: a snapshot walks the caches under slab_mutex (for_each_kmem_cache), and under it
// takes one list_lock or one barn lock at a time (slab_mutex -> list_lock, slab_mutex -> barn
// lock: both are the documented order).  The per-CPU sheaves are read without their lock:
// main / spare pointers and sheaf sizes are loaded relaxed and each size is clamped to its
// sheaf's capacity; a sheaf is never unmapped (sheaves are slab objects, and slab memory is
// only madvised), so a stale pointer reads a stale but harmless size (TSan builds, whose
// sheaves run without rseq, take the slot's lock word instead).  The figures are
// therefore approximate while other threads allocate, as /proc/slabinfo's are.
// Peaks (g_peak) are raised with a CAS loop by every snapshot.
#include "slab/stats.hpp"
#include "base/report.hpp"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "base/stackdepot.hpp"
#include "kfence/kfence.hpp"
#include "kmalloc/kmalloc.hpp"
#include "page/page.hpp"
#include "slab/percpu_area.hpp"
#include "slab/sheaf.hpp"
#include "slab/sheaf_fast.hpp"

extern char* program_invocation_short_name;

namespace uslub {
namespace {

std::atomic<std::uint64_t> g_peak_allocated{0}, g_peak_active{0}, g_peak_resident{0},
    g_peak_metadata{0};

void raise_peak(std::atomic<std::uint64_t>& peak, std::uint64_t v) {
  std::uint64_t cur = peak.load(std::memory_order_relaxed);
  while (v > cur && !peak.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}

std::uint32_t clamp_size(const slab_sheaf* sh) {
  if (!sh) return 0;
  std::uint32_t n = __atomic_load_n(&sh->size, __ATOMIC_RELAXED);
  std::uint32_t cap = __atomic_load_n(&sh->capacity, __ATOMIC_RELAXED);
  return n < cap ? n : cap;
}

// Reads a small /proc file into buf (NUL-terminated); false if it cannot.
bool read_proc(const char* path, char* buf, std::size_t size) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  std::size_t len = 0;
  while (len + 1 < size) {
    ssize_t n = read(fd, buf + len, size - 1 - len);
    if (n <= 0) break;
    len += static_cast<std::size_t>(n);
  }
  close(fd);
  buf[len] = '\0';
  return len > 0;
}

std::uint64_t status_kib(const char* text, const char* key) {
  const char* p = strstr(text, key);
  if (!p) return 0;
  return strtoull(p + strlen(key), nullptr, 10) << 10;
}

struct cache_sums {
  std::uint64_t allocated = 0, slab_bytes = 0, active_slab_bytes = 0, sheaf_bytes = 0;
  std::uint64_t percpu_bytes = 0, internal_bytes = 0, allocations = 0, frees = 0;
  std::uint32_t nr_caches = 0;
  bool counted = true;
};

// The figures of one cache (version 1 layout).
void fill_cache_stats(kmem_cache* s, uslub_cache_stats* cs) {
  kmem_cache_info in;
  slab_fill_info(s, &in);
  memset(cs, 0, sizeof *cs);
  cs->version = USLUB_STATS_VERSION;
  cs->size = sizeof *cs;
  snprintf(cs->name, sizeof cs->name, "%s", s->name);
  cs->object_size = s->object_size;
  cs->size_class = s->size;
  cs->objects_per_slab = s->objects;
  cs->order = s->order;
  cs->active_objs = in.active_objs;
  cs->num_objs = in.num_objs;
  cs->sheaf_objs = in.sheaf_objs;
  cs->active_slabs = in.active_slabs;
  cs->num_slabs = in.num_slabs;
  cs->partial_slabs = in.partial_slabs;
  cs->sheaf_capacity = in.sheaf_capacity;
  if (s->cpu_sheaves && s->sheaf_stat) {
    cs->counted = 1;
    cs->allocations = in.sheaf_stat[SHEAF_ALLOC_HIT] + in.sheaf_stat[SHEAF_ALLOC_MISS];
    cs->frees = in.sheaf_stat[SHEAF_FREE_HIT] + in.sheaf_stat[SHEAF_FREE_MISS];
  } else if (!s->cpu_sheaves && s->cpu_stats) {
    cs->counted = 1;
    cs->allocations = in.stat[ALLOC_FASTPATH] + in.stat[ALLOC_SLOWPATH];
    cs->frees = in.stat[FREE_FASTPATH] + in.stat[FREE_SLOWPATH];
  }
}

// uslub's own caches: the cache descriptors (the bootstrap cache) and the sheaves.  Their
// objects are metadata, not the program's.
bool internal_cache(const kmem_cache* s) {
  return strcmp(s->name, "kmem_cache") == 0 || strncmp(s->name, "slab_sheaf-", 11) == 0;
}

void sum_one(kmem_cache* s, void* arg) {
  auto* sum = static_cast<cache_sums*>(arg);
  if (s->pa != &global_page_allocator()) return;  // a test's private page allocator
  uslub_cache_stats cs;
  fill_cache_stats(s, &cs);
  std::uint64_t slab_bytes = PAGE_SIZE << s->order;
  sum->nr_caches++;
  if (internal_cache(s))
    sum->internal_bytes += cs.active_objs * s->size;
  else
    sum->allocated += cs.active_objs * s->size;
  sum->sheaf_bytes += cs.sheaf_objs * s->size;
  sum->slab_bytes += cs.num_slabs * slab_bytes;
  sum->active_slab_bytes += cs.active_slabs * slab_bytes;
  sum->percpu_bytes += percpu_area_footprint(s->cpu_bytes);
  if (s->cpu_sheaves) sum->percpu_bytes += percpu_area_footprint(s->pcs_bytes);
  if (!internal_cache(s)) {
    sum->allocations += cs.allocations;
    sum->frees += cs.frees;
  }
  // The bootstrap cache never counts (it exists before any setting is read).
  if (!cs.counted && !internal_cache(s)) sum->counted = false;
}

}  // namespace

int stats_mode_from_env() {
  const char* v = getenv("USLUB_STATS");
  if (!v || !*v) return -1;
  if (!strcmp(v, "0") || !strcasecmp(v, "no") || !strcasecmp(v, "off") || !strcasecmp(v, "false"))
    return -1;
  if (!strcasecmp(v, "all")) return USLUB_STATS_ALL;
  if (!strcasecmp(v, "json")) return USLUB_STATS_JSON | USLUB_STATS_ALL;
  return 0;  // 1, yes, on, true (anything else was warned about by the option check)
}

std::uint64_t sheaf_parked_objects(kmem_cache* s) {
  if (!s->cpu_sheaves) return 0;
  std::uint64_t n = 0;
  for (unsigned c = 0; c < s->nr_cpus; ++c) {
    slub_percpu_sheaves* pcs = &s->cpu_sheaves[c];
#if USLUB_TSAN
    // TSan builds run the sheaves without rseq: every fast path takes the slot's lock word,
    // so holding it makes these reads ordered (TSan would flag the racy reads below).
    if (!pcs_trylock(pcs)) continue;
#endif
    if (s->sheaf_rseq) {
      // A published slot holds main's true count (main->size is stale until the slot is
      // taken); a held slot (cap 0) has put it back into main.
      const sheaf_slot* sl = pcpu_slot(c, s->slot_off);
      std::uint32_t cap = __atomic_load_n(&sl->cap, __ATOMIC_ACQUIRE);
      std::uint32_t size = __atomic_load_n(&sl->size, __ATOMIC_RELAXED);
      if (cap == 0)
        n += clamp_size(__atomic_load_n(&pcs->main, __ATOMIC_RELAXED));
      else if (cap != kSlotNoSheaf)
        n += size < cap ? size : cap;
    } else {
      n += clamp_size(__atomic_load_n(&pcs->main, __ATOMIC_RELAXED));
    }
    n += clamp_size(__atomic_load_n(&pcs->spare, __ATOMIC_RELAXED));
    unsigned alien = __atomic_load_n(&pcs->nr_alien, __ATOMIC_RELAXED);
    n += alien < kAlienBatch ? alien : kAlienBatch;
#if USLUB_TSAN
    pcs_unlock(pcs);
#endif
  }
  for (unsigned i = 0; s->barn && i < s->nr_nodes; ++i) {
    node_barn* b = &s->barn[i];
    lock_guard<spinlock_t> g(b->lock);
    for (slab_sheaf* sh = b->full; sh; sh = sh->next) n += clamp_size(sh);
  }
  return n;
}

std::uint64_t cpu_free_objects(kmem_cache* s) {
  std::uint64_t n = 0;
  for (unsigned c = 0; c < s->nr_cpus; ++c) {
    kmem_cache_cpu* cs = &s->cpu_slab[c];
    if (!__atomic_load_n(&cs->slab, __ATOMIC_RELAXED) &&
        !__atomic_load_n(&cs->partial, __ATOMIC_RELAXED))
      continue;
    if (!cs->lock.try_lock()) continue;  // a slow path of that CPU is busy: not counted
    if (page* slab = __atomic_load_n(&cs->slab, __ATOMIC_RELAXED)) {
      slab_counters k;
      k.v = load_u64(&slab->counters);
      n += k.objects - k.inuse;  // frees that reached the slab's own freelist
      n += static_cast<std::uint64_t>(cs->virgin_end - cs->virgin) / s->size;  // never handed out
      // The CPU freelist: inuse counts these objects as handed out.  A fast path may pop
      // concurrently: every step must stay inside this slab, on an object boundary, and the
      // walk is bounded by the slab's object count.
      auto base = reinterpret_cast<std::uintptr_t>(slab_address(slab)) + s->red_left_pad;
      std::uintptr_t end = base + std::uintptr_t{k.objects} * s->size;
      void* p = load_ptr(&cs->freelist);
      for (unsigned i = 0; p && i < k.objects; ++i) {
        auto a = reinterpret_cast<std::uintptr_t>(p);
        if (a < base || a >= end || (a - base) % s->size) break;
        ++n;
        p = get_freepointer(s, p);
      }
    }
    // The CPU partial list: frozen slabs chained by lru.next, their number in slab_private.
    page* p = __atomic_load_n(&cs->partial, __ATOMIC_RELAXED);
    std::uint64_t nr = p ? __atomic_load_n(&p->slab_private, __ATOMIC_RELAXED) : 0;
    for (std::uint64_t i = 0; p && i < nr && i < 4096; ++i) {
      slab_counters k;
      k.v = load_u64(&p->counters);
      n += k.objects - k.inuse;
      p = reinterpret_cast<page*>(__atomic_load_n(&p->lru.next, __ATOMIC_RELAXED));
    }
    cs->lock.unlock();
  }
  return n;
}

void stats_snapshot(uslub_stats* st) {
  std::uint32_t version = st->version, size = st->size;
  memset(st, 0, sizeof *st);
  st->version = version;
  st->size = size;
  st->pid = getpid();
  cache_sums sum;
  for_each_kmem_cache(&sum_one, &sum);
  page_alloc_stats ps = global_page_allocator().stats();
  std::uint64_t huge = huge_bytes();
  // Each growth step of the page allocator charges a MAX_ORDER block and its descriptors.
  constexpr std::uint64_t desc = MAX_ORDER_BYTES / PAGE_SIZE * sizeof(page);
  std::uint64_t blocks = ps.committed_bytes / (MAX_ORDER_BYTES + desc);
  std::uint64_t pool = blocks * MAX_ORDER_BYTES;
  // The rest of committed: descriptors and section headers.
  std::uint64_t descriptors = ps.committed_bytes - pool;
  std::uint64_t free_pages = ps.free_bytes + ps.pcp_bytes;
  std::uint64_t used = pool > free_pages ? pool - free_pages : 0;
  // Pages in use that are neither slabs nor per-CPU blocks: large kmalloc blocks.
  std::uint64_t other =
      used > sum.slab_bytes + sum.percpu_bytes ? used - sum.slab_bytes - sum.percpu_bytes : 0;
  st->nr_caches = sum.nr_caches;
  st->allocated = sum.allocated + other + huge;
  st->active = sum.active_slab_bytes + other + huge;
  st->committed = ps.committed_bytes + huge;
  st->returned = ps.returned_bytes;
  st->resident = st->committed > ps.returned_bytes ? st->committed - ps.returned_bytes : 0;
  st->metadata = descriptors + sum.percpu_bytes + sum.internal_bytes + stack_depot_bytes();
  st->returned_total = ps.reclaimed_bytes;
  st->free_pages = free_pages > ps.returned_bytes ? free_pages - ps.returned_bytes : 0;
  st->sheaf_bytes = sum.sheaf_bytes;
  st->huge_bytes = huge;
  st->limit = ps.limit_bytes;
  st->allocations = sum.allocations;
  st->frees = sum.frees;
  st->counted = sum.counted && sum.nr_caches > 0;
  kfence_stats ks = kfence_get_stats();
  st->kfence_allocs = ks.allocs;
  st->kfence_in_use = ks.objects_in_use;
  char buf[4096];
  if (read_proc("/proc/self/statm", buf, sizeof buf)) {
    unsigned long long vsz = 0, rss = 0;
    if (sscanf(buf, "%llu %llu", &vsz, &rss) == 2) st->rss = rss * PAGE_SIZE;
  }
  if (read_proc("/proc/self/status", buf, sizeof buf)) st->peak_rss = status_kib(buf, "VmHWM:");
  if (st->peak_rss < st->rss) st->peak_rss = st->rss;
  raise_peak(g_peak_allocated, st->allocated);
  raise_peak(g_peak_active, st->active);
  raise_peak(g_peak_resident, st->resident);
  raise_peak(g_peak_metadata, st->metadata);
  st->peak_allocated = g_peak_allocated.load(std::memory_order_relaxed);
  st->peak_active = g_peak_active.load(std::memory_order_relaxed);
  st->peak_resident = g_peak_resident.load(std::memory_order_relaxed);
  st->peak_metadata = g_peak_metadata.load(std::memory_order_relaxed);
  st->peak_committed = st->committed;  // committed never shrinks (memory is only madvised)
}

// ---- the report ------------------------------------------------------------------------

namespace {

// A fixed buffer that flushes to the sink when full: the report never allocates.
struct out_buf {
  stats_sink sink;
  void* arg;
  std::size_t len = 0;
  char buf[4096];
  void flush() {
    if (len) sink(buf, len, arg);
    len = 0;
  }
  USLUB_PRINTF(2, 3) void printf(const char* fmt, ...) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      va_list ap;
      va_start(ap, fmt);
      int n = vsnprintf(buf + len, sizeof buf - len, fmt, ap);
      va_end(ap);
      if (n < 0) return;
      if (static_cast<std::size_t>(n) < sizeof buf - len) {
        len += static_cast<std::size_t>(n);
        return;
      }
      flush();  // did not fit: flush and retry once (a line longer than buf is cut)
      if (attempt == 1) len = sizeof buf - 1;
    }
  }
};

// "12.3 MiB" style sizes.
const char* human(std::uint64_t v, char* out, std::size_t size) {
  static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double d = static_cast<double>(v);
  unsigned u = 0;
  while (d >= 1024.0 && u < 4) {
    d /= 1024.0;
    ++u;
  }
  if (u == 0)
    snprintf(out, size, "%llu B", static_cast<unsigned long long>(v));
  else
    snprintf(out, size, "%.1f %s", d, units[u]);
  return out;
}

void json_string(out_buf& o, const char* s) {
  o.printf("\"");
  for (; *s; ++s) {
    unsigned char c = static_cast<unsigned char>(*s);
    if (c == '"' || c == '\\')
      o.printf("\\%c", c);
    else if (c < 0x20)
      o.printf("\\u%04x", c);
    else
      o.printf("%c", c);
  }
  o.printf("\"");
}

struct table_ctx {
  out_buf* o;
  int flags;
  bool first;
};

void text_row(kmem_cache* s, void* arg) {
  auto* t = static_cast<table_ctx*>(arg);
  uslub_cache_stats cs;
  fill_cache_stats(s, &cs);
  if (!(t->flags & USLUB_STATS_ALL) && cs.num_objs == 0 && cs.sheaf_objs == 0) return;
  t->o->printf("%-24s %8llu %8llu %7u %5u %4u %8llu : slabdata %6llu %6llu %6llu", cs.name,
               static_cast<unsigned long long>(cs.active_objs),
               static_cast<unsigned long long>(cs.num_objs), cs.size_class, cs.objects_per_slab,
               1u << cs.order, static_cast<unsigned long long>(cs.sheaf_objs),
               static_cast<unsigned long long>(cs.active_slabs),
               static_cast<unsigned long long>(cs.num_slabs),
               static_cast<unsigned long long>(cs.partial_slabs));
  if (cs.counted)
    t->o->printf(" : counts %llu %llu", static_cast<unsigned long long>(cs.allocations),
                 static_cast<unsigned long long>(cs.frees));
  t->o->printf("\n");
}

void json_row(kmem_cache* s, void* arg) {
  auto* t = static_cast<table_ctx*>(arg);
  uslub_cache_stats cs;
  fill_cache_stats(s, &cs);
  if (!(t->flags & USLUB_STATS_ALL) && cs.num_objs == 0 && cs.sheaf_objs == 0) return;
  out_buf& o = *t->o;
  o.printf("%s\n    {\"name\": ", t->first ? "" : ",");
  t->first = false;
  json_string(o, cs.name);
  o.printf(
      ", \"active_objs\": %llu, \"num_objs\": %llu, \"sheaf_objs\": %llu, \"object_size\": %u, "
      "\"objsize\": %u, \"objperslab\": %u, \"pagesperslab\": %u, \"active_slabs\": %llu, "
      "\"num_slabs\": %llu, \"partial_slabs\": %llu, \"sheaf_capacity\": %u",
      static_cast<unsigned long long>(cs.active_objs), static_cast<unsigned long long>(cs.num_objs),
      static_cast<unsigned long long>(cs.sheaf_objs), cs.object_size, cs.size_class,
      cs.objects_per_slab, 1u << cs.order, static_cast<unsigned long long>(cs.active_slabs),
      static_cast<unsigned long long>(cs.num_slabs),
      static_cast<unsigned long long>(cs.partial_slabs), cs.sheaf_capacity);
  if (cs.counted)
    o.printf(", \"allocations\": %llu, \"frees\": %llu",
             static_cast<unsigned long long>(cs.allocations),
             static_cast<unsigned long long>(cs.frees));
  o.printf("}");
}

}  // namespace

void stats_fd_sink(const char* text, std::size_t len, void* fd) {
  write_all(*static_cast<int*>(fd), text, len);
}

void stats_report(int flags, stats_sink sink, void* arg) {
  out_buf o{sink, arg};
  uslub_stats st{};
  st.version = USLUB_STATS_VERSION;
  st.size = sizeof st;
  stats_snapshot(&st);
  const char* prog = program_invocation_short_name ? program_invocation_short_name : "?";
  using ull = unsigned long long;
  if (flags & USLUB_STATS_JSON) {
    o.printf("{\"program\": ");
    json_string(o, prog);
    o.printf(", \"pid\": %d, \"version\": %u,\n  \"summary\": {", st.pid, USLUB_STATS_VERSION);
    o.printf(
        "\"allocated\": %llu, \"active\": %llu, \"resident\": %llu, \"committed\": %llu, "
        "\"metadata\": %llu, \"peak_allocated\": %llu, \"peak_active\": %llu, "
        "\"peak_resident\": %llu, \"peak_committed\": %llu, \"peak_metadata\": %llu, "
        "\"rss\": %llu, \"peak_rss\": %llu, \"returned\": %llu, \"returned_total\": %llu, "
        "\"free_pages\": %llu, \"sheaf_bytes\": %llu, \"huge_bytes\": %llu, \"limit\": %llu, "
        "\"counted\": %s",
        (ull)st.allocated, (ull)st.active, (ull)st.resident, (ull)st.committed, (ull)st.metadata,
        (ull)st.peak_allocated, (ull)st.peak_active, (ull)st.peak_resident, (ull)st.peak_committed,
        (ull)st.peak_metadata, (ull)st.rss, (ull)st.peak_rss, (ull)st.returned,
        (ull)st.returned_total, (ull)st.free_pages, (ull)st.sheaf_bytes, (ull)st.huge_bytes,
        (ull)st.limit, st.counted ? "true" : "false");
    if (st.counted)
      o.printf(", \"allocations\": %llu, \"frees\": %llu", (ull)st.allocations, (ull)st.frees);
    o.printf("},\n  \"caches\": [");
    table_ctx t{&o, flags, true};
    for_each_kmem_cache(&json_row, &t);
    o.printf("\n  ]\n}\n");
    o.flush();
    return;
  }
  char a[32], b[32];
  o.printf("uslub: statistics of %s (pid %d)\n", prog, st.pid);
  o.printf("  allocated  %12s   peak %s\n", human(st.allocated, a, sizeof a),
           human(st.peak_allocated, b, sizeof b));
  o.printf("  active     %12s   peak %s\n", human(st.active, a, sizeof a),
           human(st.peak_active, b, sizeof b));
  o.printf("  resident   %12s   peak %s\n", human(st.resident, a, sizeof a),
           human(st.peak_resident, b, sizeof b));
  o.printf("  committed  %12s   peak %s", human(st.committed, a, sizeof a),
           human(st.peak_committed, b, sizeof b));
  if (st.limit) o.printf("   limit %s", human(st.limit, a, sizeof a));
  o.printf("\n  metadata   %12s   peak %s\n", human(st.metadata, a, sizeof a),
           human(st.peak_metadata, b, sizeof b));
  o.printf("  rss        %12s   peak %s   (the whole process)\n", human(st.rss, a, sizeof a),
           human(st.peak_rss, b, sizeof b));
  o.printf("  returned to the OS  %s now, %s in all\n", human(st.returned, a, sizeof a),
           human(st.returned_total, b, sizeof b));
  o.printf("  free in uslub       %s in pages, %s parked in per-CPU sheaves\n",
           human(st.free_pages, a, sizeof a), human(st.sheaf_bytes, b, sizeof b));
  if (st.counted)
    o.printf("  allocations %llu, frees %llu\n", (ull)st.allocations, (ull)st.frees);
  else
    o.printf("  allocations and frees: not counted (USLUB_STATS at start counts them)\n");
  if (st.kfence_allocs)
    o.printf("  kfence: %llu allocations, %llu in use\n", (ull)st.kfence_allocs,
             (ull)st.kfence_in_use);
  o.printf(
      "slabinfo - version: 2.1 (uslub: sheaf_objs are free objects in per-CPU sheaves)\n"
      "# name                 <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> "
      "<sheaf_objs> : slabdata <active_slabs> <num_slabs> <partial_slabs>%s\n",
      st.counted ? " : counts <allocations> <frees>" : "");
  table_ctx t{&o, flags, true};
  for_each_kmem_cache(&text_row, &t);
  o.flush();
}

}  // namespace uslub

using namespace uslub;

extern "C" {

int uslub_stats_get(struct uslub_stats* st) {
  if (!st || st->version < 1 || st->size < offsetof(uslub_stats, allocations)) {
    errno = EINVAL;
    return -1;
  }
  uslub_stats full{};
  full.version = USLUB_STATS_VERSION;
  full.size = sizeof full;
  stats_snapshot(&full);
  std::size_t n = st->size < sizeof full ? st->size : sizeof full;
  full.size = static_cast<std::uint32_t>(n);
  memcpy(st, &full, n);
  return 0;
}

namespace {
struct iter_ctx {
  int (*fn)(const uslub_cache_stats*, void*);
  void* arg;
  int visited;
  bool stop;
};
void iter_one(kmem_cache* s, void* arg) {
  auto* c = static_cast<iter_ctx*>(arg);
  if (c->stop) return;
  uslub_cache_stats cs;
  fill_cache_stats(s, &cs);
  c->visited++;
  if (c->fn(&cs, c->arg)) c->stop = true;
}
}  // namespace

int uslub_cache_stats_for_each(int (*fn)(const struct uslub_cache_stats*, void*), void* arg) {
  if (!fn) {
    errno = EINVAL;
    return -1;
  }
  iter_ctx c{fn, arg, 0, false};
  for_each_kmem_cache(&iter_one, &c);
  return c.visited;
}

int uslub_stats_print(int fd, int flags) {
  if (fd < 0) {
    errno = EBADF;
    return -1;
  }
  stats_report(flags, &stats_fd_sink, &fd);
  return 0;
}

}  // extern "C"
