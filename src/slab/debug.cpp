// slub_debug: the USLUB_DEBUG grammar, the debug object layout, the checked allocation and free
// paths, reports, validation of objects, failslab and the exit-time leak report.  Design,
// layout and locking rules: debug.hpp.
#include "slab/debug.hpp"

#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdarg>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "base/bits.hpp"
#include "base/report.hpp"
#include "base/stackdepot.hpp"
#include "base/stacktrace.hpp"
#include "slab/leak_suppress.hpp"

namespace uslub {
namespace {

// ---- USLUB_DEBUG rules --------------------------------------------------------------------

constexpr slab_flags_t kSkipHigherOrder = SLAB_DEBUG_SKIP_HIGHER_ORDER;
constexpr slab_flags_t kDefaultDebug =
    SLAB_CONSISTENCY_CHECKS | SLAB_RED_ZONE | SLAB_POISON | SLAB_STORE_USER;
constexpr unsigned kMaxBlocks = 16;
constexpr unsigned kMaxNames = 64;

struct debug_block {
  slab_flags_t flags;  // debug letters of the block (kSkipHigherOrder included)
  bool disable;        // '-': no debugging for the listed (or all) caches
  unsigned first_name, nr_names;
};

struct debug_rules {
  char text[1024];  // the value, with ',' and ';' replaced by NULs
  debug_block blocks[kMaxBlocks];
  unsigned nr_blocks;
  const char* names[kMaxNames];
  unsigned nr_names;
  int global;  // index of the block without a cache list, or -1
};

debug_rules g_rules{};
std::atomic<int> g_rules_state{0};  // 0 unread, 1 parsing, 2 ready
bool g_from_env = false;            // USLUB_DEBUG was set: exit checks apply

bool name_matches(const char* pattern, const char* name) {
  std::size_t n = strlen(pattern);
  if (n > 0 && pattern[n - 1] == '*') return strncmp(pattern, name, n - 1) == 0;
  return strcmp(pattern, name) == 0;
}

void ensure_rules() {
  if (USLUB_LIKELY(g_rules_state.load(std::memory_order_acquire) == 2)) return;
  int expected = 0;
  if (g_rules_state.compare_exchange_strong(expected, 1)) {
    g_rules.global = -1;
    const char* v = getenv("USLUB_DEBUG");
    if (v && *v) {
      g_from_env = true;
      parse_slub_debug(v);
    }
    g_rules_state.store(2, std::memory_order_release);
    return;
  }
  while (g_rules_state.load(std::memory_order_acquire) != 2) cpu_relax();
}

// ---- failslab -----------------------------------------------------------------------------

struct fault_attr {
  unsigned probability = 100;   // percent
  unsigned long interval = 1;   // fail at most one call in `interval`
  std::atomic<long> times{-1};  // failures left (-1: unlimited)
  std::atomic<unsigned long> calls{0};
};
fault_attr g_failslab;

void parse_failslab() {
  const char* v = getenv("USLUB_FAILSLAB");
  if (!v || !*v) return;
  unsigned long p = 100, interval = 1;
  long times = -1;
  if (sscanf(v, "%lu,%lu,%ld", &p, &interval, &times) < 1) {
    report_info("USLUB_FAILSLAB=%s: expected probability,interval,times\n", v);
    return;
  }
  g_failslab.probability = p > 100 ? 100 : static_cast<unsigned>(p);
  g_failslab.interval = interval ? interval : 1;
  g_failslab.times.store(times, std::memory_order_relaxed);
}

// ---- tracking -----------------------------------------------------------------------------

struct track {
  depot_stack_handle_t handle;  // the stack (stack depot); null if it could not be stored
  std::uint64_t when_ns;        // monotonic
  int cpu;
  int tid;
  std::uint64_t internal;  // allocated by the report machinery itself: not a leak
};
static_assert(sizeof(track) == 32);
enum track_item { TRACK_ALLOC = 0, TRACK_FREE = 1 };

// Captured before any lock is taken (the depot may map memory).
USLUB_NOINLINE void fill_track(track* t) {
  void* pcs[kStackDepth];
  // Skip fill_track and debug_slab_alloc/free: the stack starts at the API entry (malloc,
  // kmem_cache_alloc, ...), as the kernel's starts at the caller of the slab hook.
  unsigned n = capture_stack(pcs, kStackDepth, 2);
  t->handle = stack_depot_save(pcs, n);
  t->when_ns = platform::monotonic_ns();
  t->cpu = static_cast<int>(platform::current_cpu());
  t->tid = static_cast<int>(platform::thread_id());
  t->internal = in_symbolizer();  // libdw's own caches while a report is printed
}

track* get_track(const kmem_cache* s, void* obj, track_item which) {
  return reinterpret_cast<track*>(static_cast<char*>(obj) + s->track_offset) + which;
}

bool poison_enabled(const kmem_cache* s) {
  return (s->flags & SLAB_POISON) && !s->ctor && !(s->flags & SLAB_TYPESAFE_BY_RCU);
}

unsigned char* obj_bytes(void* obj) {
  return static_cast<unsigned char*>(obj);
}

std::size_t get_orig_size(const kmem_cache* s, void* obj) {
  if (!s->orig_size_offset) return s->object_size;
  std::uint64_t v;
  memcpy(&v, obj_bytes(obj) + s->orig_size_offset, sizeof v);
  return v <= s->object_size ? v : s->object_size;
}

void set_orig_size(const kmem_cache* s, void* obj, std::size_t n) {
  if (!s->orig_size_offset) return;
  std::uint64_t v = n;
  memcpy(obj_bytes(obj) + s->orig_size_offset, &v, sizeof v);
}

// Bytes of the object slot after the metadata, up to the next object's left red zone.
std::size_t pad_offset(const kmem_cache* s) {
  if (s->orig_size_offset) return s->orig_size_offset + 8;
  if (s->track_offset) return s->track_offset + 2 * sizeof(track);
  return s->offset + sizeof(void*);
}
std::size_t pad_len(const kmem_cache* s) {
  return s->size - s->red_left_pad - pad_offset(s);
}

// ---- findings and their reports -----------------------------------------------------------
// Checks run under list_lock and only record what they found (with a hex dump taken there);
// the report, whose stacks are symbolised, is printed after the lock is dropped.

constexpr std::size_t kFindingText = 3072;
constexpr unsigned kMaxFindings = 3;

struct finding {
  const char* problem;
  void* obj;
  bool have_tracks;
  bool culprit;  // a double free: the current stack is the culprit's, printed after the tracks
  track tracks[2];
  std::size_t len;
  char text[kFindingText];
};

struct pending_reports {
  unsigned n = 0;
  unsigned dropped = 0;
  finding f[kMaxFindings];
};

USLUB_PRINTF(3, 4) std::size_t append(char* buf, std::size_t len, const char* fmt, ...) {
  if (len >= kFindingText - 1) return len;
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(buf + len, kFindingText - len, fmt, ap);
  va_end(ap);
  if (m > 0) len += static_cast<std::size_t>(m);
  return len < kFindingText - 1 ? len : kFindingText - 1;
}

// print_section: 16 bytes a line, hex and ASCII, at most `max` bytes.
std::size_t dump_section(char* buf, std::size_t len, const char* label, const unsigned char* p,
                         std::size_t n, std::size_t max = 128) {
  std::size_t shown = n < max ? n : max;
  for (std::size_t i = 0; i < shown; i += 16) {
    len = append(buf, len, "%-8s %p: ", label, static_cast<const void*>(p + i));
    char ascii[17];
    std::size_t k = 0;
    for (; k < 16 && i + k < shown; ++k) {
      len = append(buf, len, "%02x ", p[i + k]);
      ascii[k] = (p[i + k] >= 0x20 && p[i + k] < 0x7f) ? static_cast<char>(p[i + k]) : '.';
    }
    ascii[k] = '\0';
    for (; k < 16; ++k) len = append(buf, len, "   ");
    len = append(buf, len, " %s\n", ascii);
  }
  if (shown < n) len = append(buf, len, "%-8s ... %zu more bytes\n", label, n - shown);
  return len;
}

finding* new_finding(pending_reports& rep, kmem_cache* s, const char* problem, void* obj) {
  if (rep.n == kMaxFindings) {
    ++rep.dropped;
    return nullptr;
  }
  finding* f = &rep.f[rep.n++];
  f->problem = problem;
  f->obj = obj;
  f->len = 0;
  f->culprit = false;
  f->have_tracks = obj && s->track_offset;
  if (f->have_tracks) memcpy(f->tracks, get_track(s, obj, TRACK_ALLOC), sizeof f->tracks);
  return f;
}

// print_trailer: the slab, the object's regions as hex.
void dump_object(finding* f, kmem_cache* s, page* slab, void* obj) {
  unsigned char* p = obj_bytes(obj);
  slab_counters c = load_counters(slab);
  auto off = static_cast<std::size_t>(p - static_cast<unsigned char*>(slab_address(slab)));
  f->len = append(f->text, f->len,
                  "INFO: Object %p @offset=%zu size=%u (requested %zu), slab %p objects=%u "
                  "used=%u\n",
                  obj, off, s->object_size, get_orig_size(s, obj), slab_address(slab),
                  static_cast<unsigned>(c.objects), static_cast<unsigned>(c.inuse));
  if (s->red_left_pad)
    f->len = dump_section(f->text, f->len, "Redzone", p - s->red_left_pad, s->red_left_pad);
  f->len = dump_section(f->text, f->len, "Object", p, s->object_size);
  if (s->flags & SLAB_RED_ZONE)
    f->len =
        dump_section(f->text, f->len, "Redzone", p + s->object_size, s->inuse - s->object_size);
  if (std::size_t pl = pad_len(s); pl && (s->flags & (SLAB_RED_ZONE | SLAB_POISON)))
    f->len = dump_section(f->text, f->len, "Padding", p + pad_offset(s), pl);
}

const unsigned char* first_mismatch(const unsigned char* p, unsigned char v, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    if (p[i] != v) return p + i;
  return nullptr;
}

// check_bytes_and_report: reports a region not all `value` (what = "Left Redzone", ...),
// restores it.  Returns false if it was bad.
bool check_bytes(pending_reports& rep, kmem_cache* s, page* slab, void* obj, const char* problem,
                 const char* what, unsigned char* start, unsigned char value, std::size_t n) {
  const unsigned char* bad = first_mismatch(start, value, n);
  if (!bad) return true;
  const unsigned char* end = start + n;
  while (end > bad && end[-1] == value) --end;
  if (finding* f = new_finding(rep, s, problem, obj)) {
    f->len =
        append(f->text, f->len, "INFO: %s %p-%p @offset=%td. First byte 0x%02x instead of 0x%02x\n",
               what, static_cast<const void*>(bad), static_cast<const void*>(end - 1),
               bad - obj_bytes(obj), *bad, value);
    dump_object(f, s, slab, obj);
    f->len = append(f->text, f->len, "FIX %s: Restoring %s %p-%p=0x%02x\n", s->name, what,
                    static_cast<const void*>(bad), static_cast<const void*>(end - 1), value);
  }
  memset(start, value, n);
  return false;
}

std::size_t append_track(char* buf, std::size_t len, std::size_t cap, const char* what,
                         const track& t, std::uint64_t now) {
  int m = snprintf(buf + len, cap - len, "INFO: %s age=%llu ms cpu=%d tid=%d stack:\n", what,
                   static_cast<unsigned long long>((now - t.when_ns) / 1000000), t.cpu, t.tid);
  if (m > 0) len = std::min(len + static_cast<std::size_t>(m), cap - 1);
  void* const* pcs;
  unsigned n = stack_depot_fetch(t.handle, &pcs);
  return append_stack(buf, len, cap, pcs, n);
}

// Prints the findings.  `current` is the stack of the operation that found them (the second
// free of a double free: the culprit), shown after the object's own allocation and free.
void emit(kmem_cache* s, pending_reports& rep, const track* current = nullptr) {
  for (unsigned i = 0; i < rep.n; ++i) {
    finding* f = &rep.f[i];
    char tracks[6144];
    std::size_t tl = 0;
    tracks[0] = '\0';
    std::uint64_t now = platform::monotonic_ns();
    if (f->have_tracks) {
      for (int w = 0; w < 2; ++w) {
        const track& t = f->tracks[w];
        if (!t.when_ns) continue;
        tl = append_track(tracks, tl, sizeof tracks, w == TRACK_ALLOC ? "Allocated" : "Freed", t,
                          now);
      }
    }
    if (f->culprit && current && current->when_ns)
      tl = append_track(tracks, tl, sizeof tracks, "Freed again (this free)", *current, now);
    report_bug(s->name, f->problem, "%s%s", tracks, f->text);
  }
  if (rep.dropped)
    report_info("%s: %u more problems in the same operation not shown\n", s->name, rep.dropped);
  rep.n = rep.dropped = 0;
}

// ---- object checks ------------------------------------------------------------------------

bool check_valid_pointer(const kmem_cache* s, page* slab, const void* p) {
  auto base = reinterpret_cast<std::uintptr_t>(slab_address(slab));
  auto a = reinterpret_cast<std::uintptr_t>(p);
  slab_counters c = load_counters(slab);
  return a >= base + s->red_left_pad && a < base + std::size_t{c.objects} * s->size &&
         (a - base - s->red_left_pad) % s->size == 0;
}

// init_object: red zones to `val`, a free object's poison, a live kmalloc object's slack.
void init_object(kmem_cache* s, void* obj, unsigned char val, std::size_t orig) {
  unsigned char* p = obj_bytes(obj);
  if (s->flags & SLAB_RED_ZONE) {
    memset(p - s->red_left_pad, val, s->red_left_pad);
    memset(p + s->object_size, val, s->inuse - s->object_size);
    if (val == SLUB_RED_ACTIVE && s->orig_size_offset && orig < s->object_size)
      memset(p + orig, val, s->object_size - orig);
  }
  if (val == SLUB_RED_INACTIVE && poison_enabled(s)) {
    memset(p, POISON_FREE, s->object_size - 1);
    p[s->object_size - 1] = POISON_END;
  }
}

// check_object: red zones hold `val`; a free object's poison is intact; the padding too.
bool check_object(pending_reports& rep, kmem_cache* s, page* slab, void* obj, unsigned char val) {
  unsigned char* p = obj_bytes(obj);
  bool ok = true;
  if (s->flags & SLAB_RED_ZONE) {
    ok &= check_bytes(rep, s, slab, obj, "Redzone overwritten", "Left Redzone", p - s->red_left_pad,
                      val, s->red_left_pad);
    ok &= check_bytes(rep, s, slab, obj, "Redzone overwritten", "Right Redzone", p + s->object_size,
                      val, s->inuse - s->object_size);
    if (val == SLUB_RED_ACTIVE && s->orig_size_offset) {
      std::size_t orig = get_orig_size(s, obj);
      if (orig < s->object_size)
        ok &= check_bytes(rep, s, slab, obj, "Redzone overwritten", "kmalloc Redzone", p + orig,
                          val, s->object_size - orig);
    }
  }
  if (val == SLUB_RED_INACTIVE && poison_enabled(s)) {
    bool good = check_bytes(rep, s, slab, obj, "Poison overwritten", "Poison", p, POISON_FREE,
                            s->object_size - 1);
    good &= check_bytes(rep, s, slab, obj, "Poison overwritten", "End Poison",
                        p + s->object_size - 1, POISON_END, 1);
    ok &= good;
  }
  if ((s->flags & (SLAB_RED_ZONE | SLAB_POISON)) && pad_len(s))
    ok &= check_bytes(rep, s, slab, obj, "Object padding overwritten", "Object padding",
                      p + pad_offset(s), POISON_INUSE, pad_len(s));
  return ok;
}

void init_padding(kmem_cache* s, void* obj) {
  if ((s->flags & (SLAB_RED_ZONE | SLAB_POISON)) && pad_len(s))
    memset(obj_bytes(obj) + pad_offset(s), POISON_INUSE, pad_len(s));
}

// on_freelist: is search on the slab's free list?  Repairs a corrupt list (truncating it and
// counting the lost objects as in use: leaked, never handed out twice).  Context: list_lock.
bool on_freelist(pending_reports& rep, kmem_cache* s, page* slab, void* search) {
  slab_counters c = load_counters(slab);
  void* fp = load_ptr(&slab->freelist);
  void* object = nullptr;
  unsigned nr = 0;
  while (fp && nr <= c.objects) {
    if (fp == search) return true;
    if (!check_valid_pointer(s, slab, fp)) {
      if (finding* f = new_finding(rep, s, "Freepointer corrupt", object)) {
        f->len = append(f->text, f->len,
                        "INFO: free pointer %p in slab %p is not an object of the slab\n", fp,
                        slab_address(slab));
        if (object) dump_object(f, s, slab, object);
        f->len =
            append(f->text, f->len,
                   "FIX %s: Truncating the free list; its remaining objects are leaked\n", s->name);
      }
      if (object)
        set_freepointer(s, object, nullptr);
      else
        __atomic_store_n(&slab->freelist, static_cast<void*>(nullptr), __ATOMIC_RELAXED);
      c.inuse = c.objects - nr;
      __atomic_store_n(&slab->counters, c.v, __ATOMIC_RELAXED);
      return false;
    }
    object = fp;
    fp = get_freepointer(s, object);
    ++nr;
  }
  if (nr + c.inuse != c.objects) {
    if (finding* f = new_finding(rep, s, "Wrong object count", nullptr))
      f->len = append(f->text, f->len,
                      "INFO: slab %p: inuse %u + free %u != objects %u\nFIX %s: inuse = %u\n",
                      slab_address(slab), static_cast<unsigned>(c.inuse), nr,
                      static_cast<unsigned>(c.objects), s->name, c.objects - nr);
    c.inuse = c.objects - nr;
    __atomic_store_n(&slab->counters, c.v, __ATOMIC_RELAXED);
  }
  return search == nullptr;
}

// check_slab: the slab's own fields.  Context: list_lock.
bool check_slab(pending_reports& rep, kmem_cache* s, page* slab) {
  slab_counters c = load_counters(slab);
  const char* why = nullptr;
  if (__atomic_load_n(&slab->slab_cache, __ATOMIC_RELAXED) != s)
    why = "slab_cache is another cache";
  else if (c.objects != s->objects && c.objects != s->min_objects)
    why = "object count does not match the cache";
  else if (c.inuse > c.objects)
    why = "inuse > objects";
  if (!why) return true;
  if (finding* f = new_finding(rep, s, "Slab corrupt", nullptr))
    f->len =
        append(f->text, f->len, "INFO: slab %p: %s (objects %u inuse %u)\n", slab_address(slab),
               why, static_cast<unsigned>(c.objects), static_cast<unsigned>(c.inuse));
  return false;
}

void trace(kmem_cache* s, void* obj, bool alloc, page* slab) {
  void* pcs[6];
  unsigned n = capture_stack(pcs, 6, 2);
  char stack[2048];
  append_stack(stack, 0, sizeof stack, pcs, n);
  report_info("TRACE %s %s %p inuse=%u\n%s", s->name, alloc ? "alloc" : "free", obj,
              static_cast<unsigned>(load_counters(slab).inuse), stack);
}

// The first node to look at for an allocation.
kmem_cache_node* pick_node(kmem_cache* s, int node, int* nid) {
  *nid = node >= 0 ? node : platform::cpu_to_node(platform::current_cpu());
  *nid = static_cast<int>(static_cast<unsigned>(*nid) % s->nr_nodes);
  return get_node(s, *nid);
}

}  // namespace

// ---- rules --------------------------------------------------------------------------------

bool parse_slub_debug(const char* value) {
  debug_rules& r = g_rules;
  memset(&r, 0, sizeof r);
  r.global = -1;
  bool ok = true;
  snprintf(r.text, sizeof r.text, "%s", value ? value : "");
  char* block = r.text;
  while (block && *block && r.nr_blocks < kMaxBlocks) {
    char* next_block = strchr(block, ';');
    if (next_block) *next_block++ = '\0';
    debug_block& b = r.blocks[r.nr_blocks];
    b = debug_block{0, false, r.nr_names, 0};
    char* names = strchr(block, ',');
    if (names) *names++ = '\0';
    bool any = false;
    for (char* c = block; *c; ++c) {
      switch (*c | 0x20) {
        case 'f':
          b.flags |= SLAB_CONSISTENCY_CHECKS;
          break;
        case 'z':
          b.flags |= SLAB_RED_ZONE;
          break;
        case 'p':
          b.flags |= SLAB_POISON;
          break;
        case 'u':
          b.flags |= SLAB_STORE_USER;
          break;
        case 't':
          b.flags |= SLAB_TRACE;
          break;
        case 'a':
          b.flags |= SLAB_FAILSLAB;
          break;
        case 'o':
          b.flags |= kSkipHigherOrder;
          continue;
        default:
          if (*c == '-') {
            b.disable = true;
          } else if (*c != ' ' && *c != '\t') {
            report_info("USLUB_DEBUG: unknown option '%c' ignored\n", *c);
            ok = false;
          }
          continue;
      }
      any = true;
    }
    if (!any && !b.disable) b.flags |= kDefaultDebug;
    while (names && *names && r.nr_names < kMaxNames) {
      char* next = strchr(names, ',');
      if (next) *next++ = '\0';
      if (*names) {
        r.names[r.nr_names++] = names;
        ++b.nr_names;
      }
      names = next;
    }
    if (b.nr_names == 0) r.global = static_cast<int>(r.nr_blocks);
    ++r.nr_blocks;
    block = next_block;
  }
  g_rules_state.store(2, std::memory_order_release);
  return ok;
}

slab_flags_t kmem_cache_flags(const char* name, slab_flags_t flags) {
  ensure_rules();
  const debug_rules& r = g_rules;
  const debug_block* match = nullptr;
  for (unsigned i = 0; i < r.nr_blocks && !match; ++i) {
    const debug_block& b = r.blocks[i];
    for (unsigned k = 0; k < b.nr_names; ++k)
      if (name_matches(r.names[b.first_name + k], name)) {
        match = &b;
        break;
      }
  }
  if (!match && r.global >= 0) match = &r.blocks[r.global];
  if (!match) return flags;
  if (match->disable) return flags & ~(SLAB_DEBUG_PATH | kSkipHigherOrder);
  if (match->flags & SLAB_FAILSLAB) {
    static std::atomic<bool> parsed{false};
    if (!parsed.exchange(true)) parse_failslab();
  }
  return flags | match->flags;
}

void set_failslab(unsigned probability, unsigned long interval, long times) {
  g_failslab.probability = probability > 100 ? 100 : probability;
  g_failslab.interval = interval ? interval : 1;
  g_failslab.times.store(times, std::memory_order_relaxed);
  g_failslab.calls.store(0, std::memory_order_relaxed);
}

bool should_failslab(kmem_cache* s) {
  if (!(s->flags & SLAB_FAILSLAB)) return false;
  fault_attr& a = g_failslab;
  unsigned long call = a.calls.fetch_add(1, std::memory_order_relaxed) + 1;
  if (a.times.load(std::memory_order_relaxed) == 0) return false;
  if (a.interval > 1 && call % a.interval) return false;
  if (a.probability < 100 && platform::random_u64() % 100 >= a.probability) return false;
  long t = a.times.load(std::memory_order_relaxed);
  while (t != -1) {
    if (t == 0) return false;
    if (a.times.compare_exchange_weak(t, t - 1, std::memory_order_relaxed)) break;
  }
  return true;
}

// ---- geometry -----------------------------------------------------------------------------

std::size_t debug_calculate_sizes(kmem_cache* s, std::size_t size, std::size_t align) {
  const slab_flags_t f = s->flags;
  s->red_left_pad = (f & SLAB_RED_ZONE) ? static_cast<unsigned>(align_up(sizeof(void*), align)) : 0;
  std::size_t inuse = align_up(size, sizeof(void*));
  if ((f & SLAB_RED_ZONE) && inuse == size) inuse += sizeof(void*);
  s->inuse = static_cast<unsigned>(inuse);
  s->offset = static_cast<unsigned>(inuse);  // the free pointer, outside the object
  std::size_t meta = inuse + sizeof(void*);
  s->track_offset = 0;
  if (f & SLAB_STORE_USER) {
    s->track_offset = static_cast<unsigned>(meta);
    meta += 2 * sizeof(track);
  }
  s->orig_size_offset = 0;
  if ((f & SLAB_KMALLOC) && (f & (SLAB_RED_ZONE | SLAB_STORE_USER))) {
    s->orig_size_offset = static_cast<unsigned>(meta);
    meta += 8;
  }
  return s->red_left_pad + meta;
}

void debug_init_slab(kmem_cache* s, page* slab) {
  slab_counters c = load_counters(slab);
  char* base = static_cast<char*>(slab_address(slab));
  for (unsigned i = 0; i < c.objects; ++i) {
    void* obj = slab_object(s, base, i);
    init_object(s, obj, SLUB_RED_INACTIVE, 0);
    init_padding(s, obj);
    if (s->track_offset) memset(get_track(s, obj, TRACK_ALLOC), 0, 2 * sizeof(track));
    set_orig_size(s, obj, s->object_size);
  }
  // The slab's tail after the last object (slab_pad_check).
  std::size_t used = std::size_t{c.objects} * s->size;
  std::size_t total = PAGE_SIZE << slab->order;
  if (s->flags & (SLAB_RED_ZONE | SLAB_POISON)) memset(base + used, POISON_INUSE, total - used);
}

std::size_t debug_orig_size(const kmem_cache* s, const void* obj) {
  return get_orig_size(s, const_cast<void*>(obj));
}

// ---- the debug allocation and free paths ---------------------------------------------------

void* debug_slab_alloc(kmem_cache* s, gfp_t gfp, int node, std::size_t orig_size, bool may_fail) {
  if (may_fail && should_failslab(s)) {
    errno = ENOMEM;
    return nullptr;
  }
  if (orig_size == 0 || orig_size > s->object_size) orig_size = s->object_size;
  track tr{};
  if (s->track_offset) fill_track(&tr);
  pending_reports rep;
  int nid;
  kmem_cache_node* n = pick_node(s, node, &nid);
  void* obj = nullptr;
  page* slab = nullptr;
  for (;;) {
    n->list_lock.lock();
    slab = nullptr;
    if (n->partial.next != &n->partial) {
      slab = list_entry<page, &page::lru>(n->partial.next);
    } else if (node < 0) {
      for (unsigned i = 1; i < s->nr_nodes && !slab; ++i) {
        kmem_cache_node* other = get_node(s, static_cast<int>((nid + i) % s->nr_nodes));
        n->list_lock.unlock();
        n = other;
        n->list_lock.lock();
        if (n->partial.next != &n->partial) slab = list_entry<page, &page::lru>(n->partial.next);
      }
    }
    if (!slab) {  // new_slab: allocate with no lock held, then publish on the partial list
      n->list_lock.unlock();
      page* fresh = allocate_slab(s, gfp, node, this_cpu_index(s));
      if (!fresh) {
        emit(s, rep);
        errno = ENOMEM;
        return nullptr;
      }
      slab_counters c = load_counters(fresh);
      c.inuse = 0;
      c.frozen = 0;
      __atomic_store_n(&fresh->counters, c.v, __ATOMIC_RELAXED);
      debug_init_slab(s, fresh);
      n = get_node(s, slab_nid(fresh));
      n->list_lock.lock();
      add_partial(n, fresh, false);
      slab = fresh;
      stat(s, ALLOC_SLAB, this_cpu_index(s));
    }
    // alloc_debug_processing
    obj = load_ptr(&slab->freelist);
    bool usable = true;
    if (s->flags & SLAB_CONSISTENCY_CHECKS) usable = check_slab(rep, s, slab);
    if (usable && !check_valid_pointer(s, slab, obj)) {
      if (finding* f = new_finding(rep, s, "Freepointer corrupt", nullptr))
        f->len = append(f->text, f->len,
                        "INFO: slab %p: free list head %p is not an object of the slab\n"
                        "FIX %s: Marking all objects used\n",
                        slab_address(slab), obj, s->name);
      usable = false;
    }
    if (!usable) {  // leak the slab's free objects rather than hand out garbage
      slab_counters c = load_counters(slab);
      c.inuse = c.objects;
      __atomic_store_n(&slab->counters, c.v, __ATOMIC_RELAXED);
      __atomic_store_n(&slab->freelist, static_cast<void*>(nullptr), __ATOMIC_RELAXED);
      remove_partial(n, slab);
      n->list_lock.unlock();
      continue;
    }
    void* next = get_freepointer(s, obj);
    if (next && !check_valid_pointer(s, slab, next)) {
      if (finding* f = new_finding(rep, s, "Freepointer corrupt", obj)) {
        f->len = append(f->text, f->len,
                        "INFO: free object %p holds free pointer %p, not an object of slab %p\n",
                        obj, next, slab_address(slab));
        dump_object(f, s, slab, obj);
        f->len =
            append(f->text, f->len,
                   "FIX %s: Truncating the free list; its remaining objects are leaked\n", s->name);
      }
      slab_counters c = load_counters(slab);
      unsigned free_left = 1;
      c.inuse = c.objects - free_left;
      __atomic_store_n(&slab->counters, c.v, __ATOMIC_RELAXED);
      next = nullptr;
    }
    check_object(rep, s, slab, obj, SLUB_RED_INACTIVE);
    slab_counters c = load_counters(slab);
    c.inuse = c.inuse + 1;
    __atomic_store_n(&slab->freelist, next, __ATOMIC_RELAXED);
    __atomic_store_n(&slab->counters, c.v, __ATOMIC_RELAXED);
    if (!next) remove_partial(n, slab);  // now full: on no list
    if (s->track_offset) {
      *get_track(s, obj, TRACK_ALLOC) = tr;
    }
    set_orig_size(s, obj, orig_size);
    init_object(s, obj, SLUB_RED_ACTIVE, orig_size);
    n->list_lock.unlock();
    break;
  }
  stat(s, ALLOC_SLOWPATH, this_cpu_index(s));
  if (rep.n) emit(s, rep);
  if (gfp & __GFP_ZERO) memset(obj, 0, orig_size);
  if (s->flags & SLAB_TRACE) trace(s, obj, true, slab);
  return obj;
}

void debug_slab_free(kmem_cache* s, page* slab, void* head, unsigned cnt) {
  track tr{};
  if (s->track_offset) fill_track(&tr);
  pending_reports rep;
  kmem_cache_node* n = get_node(s, slab_nid(slab));
  page* discard = nullptr;
  n->list_lock.lock();
  void* prior = load_ptr(&slab->freelist);
  void* obj = head;
  for (unsigned i = 0; i < cnt && obj; ++i) {
    void* next_obj = i + 1 < cnt ? get_freepointer(s, obj) : nullptr;
    // free_consistency_checks
    bool already = false;
    if (s->flags & SLAB_CONSISTENCY_CHECKS) {
      check_slab(rep, s, slab);
      already = on_freelist(rep, s, slab, obj);
    } else {
      already = load_ptr(&slab->freelist) == obj;
    }
    if (already) {
      if (finding* f = new_finding(rep, s, "Object already free", obj)) {
        f->culprit = true;
        f->len = append(f->text, f->len, "INFO: Object %p freed twice (slab %p)\n", obj,
                        slab_address(slab));
        dump_object(f, s, slab, obj);
        f->len = append(f->text, f->len, "FIX %s: Object not freed again\n", s->name);
      }
      obj = next_obj;
      continue;
    }
    check_object(rep, s, slab, obj, SLUB_RED_ACTIVE);
    if (s->track_offset) *get_track(s, obj, TRACK_FREE) = tr;
    set_orig_size(s, obj, s->object_size);
    init_object(s, obj, SLUB_RED_INACTIVE, s->object_size);
    set_freepointer(s, obj, load_ptr(&slab->freelist));
    slab_counters c = load_counters(slab);
    c.inuse = c.inuse - 1;
    __atomic_store_n(&slab->freelist, obj, __ATOMIC_RELAXED);
    __atomic_store_n(&slab->counters, c.v, __ATOMIC_RELAXED);
    if (s->flags & SLAB_TRACE) {
      // printed after the lock is dropped, below (one line per object is enough)
    }
    obj = next_obj;
  }
  // free_to_partial_list: a full slab that got a free goes on the list; an empty one goes back
  // to the page allocator if the node keeps enough empty slabs.
  void* now = load_ptr(&slab->freelist);
  if (!prior && now) add_partial(n, slab, true);
  if (now && load_counters(slab).inuse == 0 && n->nr_partial > s->min_partial) {
    remove_partial(n, slab);
    discard = slab;
  }
  n->list_lock.unlock();
  stat(s, FREE_SLOWPATH, this_cpu_index(s), cnt);
  if (rep.n) {
    // The culprit of a double free is this call: without U its stack was not taken above
    // (taken now, after the lock: the depot may map memory).
    if (!s->track_offset) fill_track(&tr);
    emit(s, rep, &tr);
  }
  if (s->flags & SLAB_TRACE) trace(s, head, false, slab);
  if (discard) {
    stat(s, FREE_SLAB, this_cpu_index(s));
    discard_slab(s, discard);
  }
}

// ---- validation and listings ---------------------------------------------------------------

bool debug_validate_slab(kmem_cache* s, page* slab) {
  if (!(s->flags & SLAB_DEBUG_FLAGS) || !s->inuse) return true;
  pending_reports rep;
  kmem_cache_node* n = get_node(s, slab_nid(slab));
  n->list_lock.lock();
  bool ok = check_slab(rep, s, slab);
  if (ok) {
    slab_counters c = load_counters(slab);
    // The free objects, as a bitmap, from the free list.
    std::uint64_t is_free[kMaxObjsPerSlab / 64 + 1] = {};
    unsigned nr = 0;
    for (void* p = load_ptr(&slab->freelist); p && nr <= c.objects; p = get_freepointer(s, p)) {
      if (!check_valid_pointer(s, slab, p)) {
        on_freelist(rep, s, slab, nullptr);  // reports and repairs
        ok = false;
        break;
      }
      auto idx = static_cast<std::size_t>(static_cast<char*>(p) - static_cast<char*>(slab_object(
                                                                      s, slab_address(slab), 0))) /
                 s->size;
      is_free[idx / 64] |= std::uint64_t{1} << (idx % 64);
      ++nr;
    }
    char* base = static_cast<char*>(slab_address(slab));
    for (unsigned i = 0; ok && i < c.objects; ++i) {
      bool free_obj = is_free[i / 64] & (std::uint64_t{1} << (i % 64));
      ok = check_object(rep, s, slab, slab_object(s, base, i),
                        free_obj ? SLUB_RED_INACTIVE : SLUB_RED_ACTIVE);
    }
    if (ok && (s->flags & (SLAB_RED_ZONE | SLAB_POISON))) {  // slab_pad_check
      std::size_t used = std::size_t{c.objects} * s->size;
      std::size_t total = PAGE_SIZE << slab->order;
      unsigned char* tail = obj_bytes(base + used);
      if (const unsigned char* bad = first_mismatch(tail, POISON_INUSE, total - used)) {
        if (finding* f = new_finding(rep, s, "Padding overwritten", nullptr)) {
          f->len =
              append(f->text, f->len, "INFO: slab %p: tail padding at %p is 0x%02x, not 0x%02x\n",
                     base, static_cast<const void*>(bad), *bad, POISON_INUSE);
          f->len = dump_section(f->text, f->len, "Padding", tail, total - used, 64);
          f->len = append(f->text, f->len, "FIX %s: Restoring slab padding\n", s->name);
        }
        memset(tail, POISON_INUSE, total - used);
        ok = false;
      }
    }
  }
  n->list_lock.unlock();
  if (rep.n) emit(s, rep);
  return ok;
}

std::size_t debug_list_objects(kmem_cache* s, char* buf, std::size_t len, std::size_t cap) {
  if (!s->track_offset) return len;
  unsigned shown = 0;
  s->pa->for_each_section([&](mem_section* sec) {
    std::size_t top = sec->top.load(std::memory_order_acquire) / PAGE_SIZE;
    for (std::size_t pfn = FIRST_DATA_PFN; pfn < top && shown < 4;) {
      page* p = reinterpret_cast<page*>(sec->base) + pfn;
      std::uint32_t f = page_flags(p);
      unsigned order = __atomic_load_n(&p->order, __ATOMIC_RELAXED);
      if ((f & PG_head) && (f & PG_slab) &&
          __atomic_load_n(&p->slab_cache, __ATOMIC_RELAXED) == s) {
        slab_counters c = load_counters(p);
        char* base = static_cast<char*>(slab_address(p));
        for (unsigned i = 0; i < c.objects && shown < 4; ++i) {
          void* obj = slab_object(s, base, i);
          bool free_obj = false;
          for (void* q = load_ptr(&p->freelist); q; q = get_freepointer(s, q))
            if (q == obj) {
              free_obj = true;
              break;
            }
          if (free_obj) continue;
          ++shown;
          const track* t = get_track(s, obj, TRACK_ALLOC);
          int m = snprintf(buf + len, cap - len, "Object %p allocated by tid %d:\n", obj, t->tid);
          if (m > 0) len = std::min(len + static_cast<std::size_t>(m), cap - 1);
          void* const* pcs;
          unsigned nf = stack_depot_fetch(t->handle, &pcs);
          len = append_stack(buf, len, cap, pcs, nf);
        }
      }
      pfn += (f & (PG_head | PG_buddy | PG_pcp | PG_isolated)) && order <= MAX_ORDER
                 ? std::size_t{1} << order
                 : 1;
    }
  });
  return len;
}

// ---- leaks at exit ------------------------------------------------------------------------

namespace {

struct leak_group {
  depot_stack_handle_t handle;
  kmem_cache* cache;
  std::size_t objects, bytes;
};

struct leak_table {
  leak_group* g;
  std::size_t cap, used;
  // USLUB_LEAKS=unreachable: every live object, for the reachability scan (leak_scan below).
  struct object {
    std::uintptr_t addr;
    std::size_t size;
    depot_stack_handle_t handle;
    kmem_cache* cache;
    bool marked;
  };
  object* objs = nullptr;
  std::size_t nr_objs = 0, cap_objs = 0;
};

void leak_add(leak_table& t, kmem_cache* s, depot_stack_handle_t h, std::size_t bytes) {
  std::size_t i = (reinterpret_cast<std::uintptr_t>(h) >> 4) * 0x9e3779b97f4a7c15ull % t.cap;
  for (std::size_t probe = 0; probe < t.cap; ++probe, i = (i + 1) % t.cap) {
    leak_group& g = t.g[i];
    if (g.objects == 0) {
      g = leak_group{h, s, 1, bytes};
      ++t.used;
      return;
    }
    if (g.handle == h && g.cache == s) {
      ++g.objects;
      g.bytes += bytes;
      return;
    }
  }
}

void collect_leaks(kmem_cache* s, void* arg) {
  if (!s->track_offset) return;
  auto& t = *static_cast<leak_table*>(arg);
  flush_all(s);
  s->pa->for_each_section([&](mem_section* sec) {
    std::size_t top = sec->top.load(std::memory_order_acquire) / PAGE_SIZE;
    for (std::size_t pfn = FIRST_DATA_PFN; pfn < top;) {
      page* p = reinterpret_cast<page*>(sec->base) + pfn;
      std::uint32_t f = page_flags(p);
      unsigned order = __atomic_load_n(&p->order, __ATOMIC_RELAXED);
      if ((f & PG_head) && (f & PG_slab) &&
          __atomic_load_n(&p->slab_cache, __ATOMIC_RELAXED) == s) {
        kmem_cache_node* n = get_node(s, slab_nid(p));
        lock_guard<spinlock_t> g(n->list_lock);
        slab_counters c = load_counters(p);
        std::uint64_t is_free[kMaxObjsPerSlab / 64 + 1] = {};
        char* base = static_cast<char*>(slab_address(p));
        unsigned nr = 0;
        for (void* q = load_ptr(&p->freelist); q && nr <= c.objects; q = get_freepointer(s, q)) {
          if (!check_valid_pointer(s, p, q)) break;
          auto idx =
              static_cast<std::size_t>(static_cast<char*>(q) - slab_object(s, base, 0)) / s->size;
          is_free[idx / 64] |= std::uint64_t{1} << (idx % 64);
          ++nr;
        }
        for (unsigned i = 0; i < c.objects && t.used < t.cap; ++i) {
          if (is_free[i / 64] & (std::uint64_t{1} << (i % 64))) continue;
          void* obj = slab_object(s, base, i);
          const track* tr = get_track(s, obj, TRACK_ALLOC);
          if (tr->internal) continue;
          if (t.objs) {
            if (t.nr_objs < t.cap_objs)
              t.objs[t.nr_objs++] = {reinterpret_cast<std::uintptr_t>(obj), get_orig_size(s, obj),
                                     tr->handle, s, false};
          } else {
            leak_add(t, s, tr->handle, get_orig_size(s, obj));
          }
        }
      }
      pfn += (f & (PG_head | PG_buddy | PG_pcp | PG_isolated)) && order <= MAX_ORDER
                 ? std::size_t{1} << order
                 : 1;
    }
  });
}

// ---- USLUB_LEAKS=unreachable: a conservative reachability scan, as LeakSanitizer's --------
// Roots: the writable segments (data, bss) of every loaded module, the exiting thread's static
// TLS blocks and its stack (callee-saved registers spilled onto it first).  Every aligned word
// that points into a live tracked object (its start or inside it) marks that object, whose
// contents are scanned in turn.  What no chain of pointers reaches is reported.  Not scanned:
// other threads' stacks and registers (threads still running at exit), memory outside the
// tracked caches (huge blocks, caches without U, mmap'd by the program).

struct leak_scan {
  leak_table* t;
  std::size_t* stack;  // indices of marked objects whose contents are not scanned yet
  std::size_t depth = 0;
  std::uintptr_t lo = 0, hi = 0;

  void word(std::uintptr_t w) {
    if (w < lo || w >= hi) return;
    leak_table::object* o = t->objs;
    std::size_t l = 0, r = t->nr_objs;  // first object with addr > w
    while (l < r) {
      std::size_t m = (l + r) / 2;
      if (o[m].addr <= w)
        l = m + 1;
      else
        r = m;
    }
    if (l == 0) return;
    leak_table::object& hit = o[l - 1];
    if (hit.marked || w >= hit.addr + (hit.size ? hit.size : 1)) return;
    hit.marked = true;
    stack[depth++] = l - 1;
  }
  void range(const void* from, const void* to) {
    auto a = (reinterpret_cast<std::uintptr_t>(from) + 7) & ~std::uintptr_t{7};
    auto e = reinterpret_cast<std::uintptr_t>(to);
    for (; a + 8 <= e; a += 8) word(*reinterpret_cast<const std::uintptr_t*>(a));
  }
  void drain() {
    while (depth) {
      const leak_table::object& o = t->objs[stack[--depth]];
      range(reinterpret_cast<const void*>(o.addr), reinterpret_cast<const void*>(o.addr + o.size));
    }
  }
};

int scan_module(struct dl_phdr_info* info, std::size_t, void* arg) {
  auto* sc = static_cast<leak_scan*>(arg);
  for (unsigned i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type == PT_LOAD && (ph.p_flags & PF_W)) {
      auto* b = reinterpret_cast<const char*>(info->dlpi_addr + ph.p_vaddr);
      sc->range(b, b + ph.p_memsz);
    } else if (ph.p_type == PT_TLS && info->dlpi_tls_data) {
      auto* b = static_cast<const char*>(info->dlpi_tls_data);
      sc->range(b, b + ph.p_memsz);
    }
  }
  sc->drain();
  return 0;
}

USLUB_NOINLINE void mark_reachable(leak_table& t, std::size_t* stack) {
  std::sort(
      t.objs, t.objs + t.nr_objs,
      [](const leak_table::object& a, const leak_table::object& b) { return a.addr < b.addr; });
  if (!t.nr_objs) return;
  leak_scan sc{&t, stack};
  sc.lo = t.objs[0].addr;
  sc.hi = t.objs[t.nr_objs - 1].addr + t.objs[t.nr_objs - 1].size + 1;
  __builtin_unwind_init();  // callee-saved registers onto this frame: scanned with the stack
  dl_iterate_phdr(&scan_module, &sc);
  pthread_attr_t attr;
  void* stack_lo = nullptr;
  std::size_t stack_size = 0;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    pthread_attr_getstack(&attr, &stack_lo, &stack_size);
    pthread_attr_destroy(&attr);
  }
  const char* sp = static_cast<const char*>(__builtin_frame_address(0)) - 256;
  const char* top = static_cast<const char*>(stack_lo) + stack_size;
  if (stack_lo && sp >= stack_lo && sp < top) sc.range(sp, top);
  sc.drain();
}

bool unreachable_only() {
  const char* v = getenv("USLUB_LEAKS");
  return v && strcmp(v, "unreachable") == 0;
}

void validate_checked(kmem_cache* s, void*) {
  if (s->flags & SLAB_CONSISTENCY_CHECKS) validate_slab_cache(s);
}

}  // namespace

std::size_t slub_debug_leak_report(int fd) {
  leak_table t{};
  t.cap = 1u << 14;
  std::size_t bytes = t.cap * sizeof(leak_group);
  void* m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return 0;
  t.g = static_cast<leak_group*>(m);
  bool unreachable = unreachable_only();
  void* objs = MAP_FAILED;
  std::size_t objs_bytes = 0;
  if (unreachable) {
    // Every live object, then the scan's work stack (NORESERVE: only what is used is touched).
    constexpr std::size_t kMaxObjects = std::size_t{1} << 24;
    objs_bytes = kMaxObjects * (sizeof(leak_table::object) + sizeof(std::size_t));
    objs = mmap(nullptr, objs_bytes, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (objs == MAP_FAILED) {
      report_info(
          "USLUB_LEAKS=unreachable: cannot map the scan's tables; reporting every "
          "object never freed\n");
      unreachable = false;
    } else {
      t.objs = static_cast<leak_table::object*>(objs);
      t.cap_objs = kMaxObjects;
    }
  }
  for_each_kmem_cache(&collect_leaks, &t);
  std::size_t reachable = 0;
  if (unreachable) {
    auto* stack = reinterpret_cast<std::size_t*>(t.objs + t.cap_objs);
    mark_reachable(t, stack);
    for (std::size_t i = 0; i < t.nr_objs; ++i) {
      const leak_table::object& o = t.objs[i];
      if (o.marked)
        ++reachable;
      else
        leak_add(t, o.cache, o.handle, o.size);
    }
  }
  // Compact (leaving out what is suppressed) and sort, largest first.
  leak_suppressions_load();
  std::size_t k = 0, supp_objs = 0, supp_bytes = 0;
  for (std::size_t i = 0; i < t.cap; ++i) {
    if (!t.g[i].objects) continue;
    void* const* pcs;
    unsigned nf = stack_depot_fetch(t.g[i].handle, &pcs);
    if (leak_suppressed(pcs, nf)) {
      supp_objs += t.g[i].objects;
      supp_bytes += t.g[i].bytes;
      continue;
    }
    t.g[k++] = t.g[i];
  }
  std::sort(t.g, t.g + k,
            [](const leak_group& a, const leak_group& b) { return a.bytes > b.bytes; });
  std::size_t total_objs = 0, total_bytes = 0;
  for (std::size_t i = 0; i < k; ++i) {
    total_objs += t.g[i].objects;
    total_bytes += t.g[i].bytes;
  }
  if (k) {
    char buf[8192];
    int n = snprintf(buf, sizeof buf,
                     "uslub: leak report: %zu objects (%zu bytes) never freed%s, from %zu "
                     "allocation stacks; largest first (suppressed: %zu objects, %zu bytes)\n",
                     total_objs, total_bytes, unreachable ? " and unreachable" : "", k, supp_objs,
                     supp_bytes);
    if (n > 0) (void)!write(fd, buf, static_cast<std::size_t>(n));
    for (std::size_t i = 0; i < k && i < 20; ++i) {
      const leak_group& g = t.g[i];
      std::size_t len = static_cast<std::size_t>(
          snprintf(buf, sizeof buf, "uslub: %zu bytes in %zu objects of %s allocated from:\n",
                   g.bytes, g.objects, g.cache->name));
      void* const* pcs;
      unsigned nf = stack_depot_fetch(g.handle, &pcs);
      len = append_stack(buf, len, sizeof buf, pcs, nf);
      (void)!write(fd, buf, len);
    }
  }
  if (unreachable) {
    if (k)
      report_info(
          "leak report: %zu more objects never freed are still reachable "
          "(USLUB_LEAKS=unreachable)\n",
          reachable);
    munmap(objs, objs_bytes);
  }
  munmap(m, bytes);
  return total_objs;
}

void slub_debug_exit_checks() {
  if (!g_from_env) return;
  for_each_kmem_cache(&validate_checked, nullptr);
  const debug_rules& r = g_rules;
  bool track = false;
  for (unsigned i = 0; i < r.nr_blocks; ++i)
    if (!r.blocks[i].disable && (r.blocks[i].flags & SLAB_STORE_USER)) track = true;
  if (track && platform::env_size("USLUB_LEAK_REPORT", 1)) slub_debug_leak_report(report_fd());
}

namespace {
__attribute__((destructor)) void slub_debug_at_exit() {
  if (g_rules_state.load(std::memory_order_acquire) == 2) slub_debug_exit_checks();
}
}  // namespace

}  // namespace uslub
