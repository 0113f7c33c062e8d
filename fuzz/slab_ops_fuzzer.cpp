// libFuzzer target: random sequences of slab and kmalloc operations against a shadow model.
//
// The input is a byte stream decoded into operations: create a cache (sizes 1..8192,
// alignments, HWCACHE_ALIGN, sheaves on/off, statistics, slub_debug flags, a constructor),
// alloc / zalloc / bulk alloc, free / bulk free, a remote free (done by a second thread),
// shrink, sheaf capacity changes, destroy, kmalloc / krealloc / kfree, and deliberate misuse
// (a double free in a row, an interior pointer, the wrong cache) for which the model expects
// exactly one report with the right first line.  Every live object carries a fill pattern
// checked when it is freed (no overlap, no corruption); zalloc must return zeros; a
// constructor's mark must be there; alignment and ksize are checked; every 16 operations, and
// at the end of the input, kmem_cache_validate must pass for every cache.  At the end of an
// input everything is freed and every cache destroyed, which must report nothing.
// Any unexpected report aborts (a finding).  Caches are created with SLAB_NO_MERGE so that the
// model's cache is the allocator's cache.
#include <uslub/slab.h>

#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/report.hpp"
#include "slab/slab.hpp"

namespace {

struct live {
  void* p;
  int cache;  // -1: kmalloc
  std::size_t size;
  unsigned char pat;
};

struct model_cache {
  kmem_cache* s = nullptr;
  std::size_t size = 0, align = 0;
  bool ctor = false;
  bool fresh = true;
};

constexpr int kMaxCaches = 4;
model_cache g_caches[kMaxCaches];
std::vector<live> g_live;

// Reports: the model says how many it expects and with which first line.
std::string g_expect;  // first line expected for the next report ("" = none allowed)
int g_reports = 0;

void hook(const char* text, void*) {
  std::string t(text);
  std::string first = t.substr(0, t.find('\n'));
  if (first.rfind("uslub: BUG", 0) != 0) return;  // traces, info lines
  if (g_expect.empty() || first != g_expect) {
    fprintf(stderr, "fuzzer: unexpected report (expected '%s'):\n%s\n", g_expect.c_str(), text);
    abort();
  }
  ++g_reports;
}

void expect_one(const std::string& first, void (*op)(void*), void* arg) {
  g_expect = first;
  g_reports = 0;
  op(arg);
  g_expect.clear();
  if (g_reports != 1) {
    fprintf(stderr, "fuzzer: expected one '%s', got %d\n", first.c_str(), g_reports);
    abort();
  }
}

void ctor_mark(void* p) {
  static_cast<unsigned char*>(p)[0] = 0xc7;
}

// ---- the remote-free thread -------------------------------------------------------------
struct remote {
  std::mutex m;
  std::condition_variable cv;
  kmem_cache* s = nullptr;
  void* p = nullptr;
  bool busy = false;
  std::thread t;
  remote() {
    t = std::thread([this] {
      for (;;) {
        std::unique_lock<std::mutex> g(m);
        cv.wait(g, [this] { return busy; });
        if (s)
          kmem_cache_free(s, p);
        else
          kfree(p);
        busy = false;
        cv.notify_all();
      }
    });
    t.detach();
  }
  void free_on_other_thread(kmem_cache* cache, void* obj) {
    std::unique_lock<std::mutex> g(m);
    s = cache;
    p = obj;
    busy = true;
    cv.notify_all();
    cv.wait(g, [this] { return !busy; });
  }
};

remote& other_thread() {
  static remote* r = new remote();
  return *r;
}

// ---- the byte stream --------------------------------------------------------------------
struct input {
  const std::uint8_t* d;
  std::size_t n, i = 0;
  bool more() const { return i < n; }
  unsigned byte() { return i < n ? d[i++] : 0; }
  unsigned u16() { return byte() | (byte() << 8); }
};

void fill(const live& l) {
  memset(l.p, l.pat, l.size);
}

void check(const live& l) {
  auto* b = static_cast<unsigned char*>(l.p);
  for (std::size_t i = 0; i < l.size; ++i)
    if (b[i] != l.pat) {
      fprintf(stderr, "fuzzer: object %p (size %zu) byte %zu is %#x, not %#x\n", l.p, l.size, i,
              b[i], l.pat);
      abort();
    }
}

void validate_all() {
  for (auto& c : g_caches)
    if (c.s && kmem_cache_validate(c.s) != 0) {
      fprintf(stderr, "fuzzer: kmem_cache_validate(%s) failed\n", kmem_cache_name(c.s));
      abort();
    }
}

int live_of(int cache) {
  int n = 0;
  for (auto& l : g_live) n += l.cache == cache;
  return n;
}

void add_object(void* p, int cache, std::size_t size, unsigned pat, bool zeroed) {
  if (!p) {
    fprintf(stderr, "fuzzer: allocation of %zu bytes failed\n", size);
    abort();
  }
  model_cache* c = cache >= 0 ? &g_caches[cache] : nullptr;
  std::size_t align = c ? (c->align ? c->align : 8) : (size >= 16 ? 16 : 8);
  if (reinterpret_cast<std::uintptr_t>(p) % align) {
    fprintf(stderr, "fuzzer: %p not aligned to %zu\n", p, align);
    abort();
  }
  if (c && c->fresh) {  // the first object of a new cache comes from a new slab
    if (c->ctor && !zeroed && static_cast<unsigned char*>(p)[0] != 0xc7) {
      fprintf(stderr, "fuzzer: the constructor of %s did not run on %p\n", kmem_cache_name(c->s),
              p);
      abort();
    }
    c->fresh = false;
  }
  if (zeroed)
    for (std::size_t i = 0; i < size; ++i)
      if (static_cast<unsigned char*>(p)[i]) {
        fprintf(stderr, "fuzzer: zalloc'ed %p byte %zu not zero\n", p, i);
        abort();
      }
  if (cache < 0 && ksize(p) < size) {
    fprintf(stderr, "fuzzer: ksize(%p) = %zu < %zu\n", p, ksize(p), size);
    abort();
  }
  live l{p, cache, size, static_cast<unsigned char>(pat | 1)};
  fill(l);
  g_live.push_back(l);
}

void free_object(std::size_t k, bool on_other_thread) {
  live l = g_live[k];
  check(l);
  g_live[k] = g_live.back();
  g_live.pop_back();
  kmem_cache* s = l.cache >= 0 ? g_caches[l.cache].s : nullptr;
  if (on_other_thread)
    other_thread().free_on_other_thread(s, l.p);
  else if (s)
    kmem_cache_free(s, l.p);
  else
    kfree(l.p);
}

void reset() {
  for (auto& l : g_live) {
    check(l);
    if (l.cache >= 0)
      kmem_cache_free(g_caches[l.cache].s, l.p);
    else
      kfree(l.p);
  }
  g_live.clear();
  validate_all();
  for (auto& c : g_caches) {
    if (c.s) kmem_cache_destroy(c.s);  // empty: must not report
    c = model_cache{};
  }
}

int pick_cache(input& in) {
  int c = static_cast<int>(in.byte() % kMaxCaches);
  return g_caches[c].s ? c : -1;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  uslub::set_report_hook(&hook, nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  input in{data, size};
  int ops = 0;
  while (in.more() && ops < 4000) {
    ++ops;
    unsigned op = in.byte() % 16;
    switch (op) {
      case 0: {  // create
        int c = static_cast<int>(in.byte() % kMaxCaches);
        if (g_caches[c].s) break;
        unsigned f = in.byte();
        std::size_t sz = 1 + in.u16() % 8192;
        static const std::size_t aligns[] = {0, 8, 16, 32, 64, 128, 256, 4096};
        std::size_t al = aligns[f & 7];
        slab_flags_t flags = SLAB_NO_MERGE;
        if (f & 0x08) flags |= SLAB_HWCACHE_ALIGN;
        if (f & 0x10) flags |= (f & 0x20) ? SLAB_NO_SHEAVES : SLAB_SHEAVES;
        if (f & 0x40) flags |= SLAB_STATS;
        if (f & 0x80) {
          unsigned d = in.byte();
          if (d & 1) flags |= SLAB_RED_ZONE;
          if (d & 2) flags |= SLAB_POISON;
          if (d & 4) flags |= SLAB_STORE_USER;
          if (d & 8) flags |= SLAB_CONSISTENCY_CHECKS;
        }
        bool ctor = in.byte() & 1;
        char name[32];
        snprintf(name, sizeof name, "fuzz-%d", c);
        kmem_cache* s = kmem_cache_create(name, sz, al, flags, ctor ? &ctor_mark : nullptr);
        if (!s) abort();
        std::size_t eff = al;
        if ((flags & SLAB_HWCACHE_ALIGN) && !eff) eff = 8;
        g_caches[c] = model_cache{s, sz, eff, ctor, true};
        break;
      }
      case 1:
      case 2: {  // alloc, zalloc
        int c = pick_cache(in);
        if (c < 0) break;
        bool z = op == 2;
        void* p = z ? kmem_cache_zalloc(g_caches[c].s, 0) : kmem_cache_alloc(g_caches[c].s, 0);
        add_object(p, c, g_caches[c].size, in.byte(), z);
        break;
      }
      case 3: {  // bulk alloc
        int c = pick_cache(in);
        if (c < 0) break;
        unsigned n = 1 + in.byte() % 64;
        void* p[64];
        if (kmem_cache_alloc_bulk(g_caches[c].s, 0, n, p) != static_cast<int>(n)) abort();
        unsigned pat = in.byte();
        for (unsigned i = 0; i < n; ++i) add_object(p[i], c, g_caches[c].size, pat + i, false);
        break;
      }
      case 4:
      case 5: {  // free (5: on another thread)
        if (g_live.empty()) break;
        free_object(in.u16() % g_live.size(), op == 5);
        break;
      }
      case 6: {  // bulk free of one cache's objects
        int c = pick_cache(in);
        if (c < 0) break;
        std::vector<void*> v;
        unsigned want = 1 + in.byte() % 64;
        for (std::size_t k = 0; k < g_live.size() && v.size() < want;) {
          if (g_live[k].cache == c) {
            check(g_live[k]);
            v.push_back(g_live[k].p);
            g_live[k] = g_live.back();
            g_live.pop_back();
          } else {
            ++k;
          }
        }
        kmem_cache_free_bulk(g_caches[c].s, v.size(), v.data());
        break;
      }
      case 7: {
        int c = pick_cache(in);
        if (c >= 0) kmem_cache_shrink(g_caches[c].s);
        break;
      }
      case 8: {
        int c = pick_cache(in);
        if (c >= 0) kmem_cache_set_sheaf_capacity(g_caches[c].s, 1 + in.byte() % 128);
        break;
      }
      case 9: {  // destroy: clean if empty, else the report and the cache is kept
        int c = pick_cache(in);
        if (c < 0) break;
        if (live_of(c) == 0) {
          kmem_cache_destroy(g_caches[c].s);
          g_caches[c] = model_cache{};
        } else {
          char first[96];
          snprintf(first, sizeof first, "uslub: BUG %s: Objects remaining on destroy",
                   kmem_cache_name(g_caches[c].s));
          expect_one(
              first, [](void* s) { kmem_cache_destroy(static_cast<kmem_cache*>(s)); },
              g_caches[c].s);
        }
        break;
      }
      case 10: {  // kmalloc
        std::size_t sz = 1 + (in.u16() << (in.byte() % 6)) % (1 << 20);
        add_object(kmalloc(sz, 0), -1, sz, in.byte(), false);
        break;
      }
      case 11: {  // krealloc a kmalloc object
        for (std::size_t k = 0; k < g_live.size(); ++k) {
          if (g_live[k].cache != -1) continue;
          live l = g_live[k];
          check(l);
          std::size_t nsz = 1 + in.u16() % 70000;
          void* q = krealloc(l.p, nsz, 0);
          if (!q) abort();
          std::size_t keep = nsz < l.size ? nsz : l.size;
          for (std::size_t i = 0; i < keep; ++i)
            if (static_cast<unsigned char*>(q)[i] != l.pat) abort();
          g_live[k] = g_live.back();
          g_live.pop_back();
          add_object(q, -1, nsz, in.byte(), false);
          break;
        }
        break;
      }
      case 12: {  // misuse: the same object freed twice in a row
        int c = pick_cache(in);
        if (c < 0) break;
        // A second object of the same slab keeps the slab in the cache: the double free must
        // then be found as such (with its slab released, the free can only be called an invalid
        // pointer).  Two allocations in a row may come from two slabs (the first one's last
        // object, the next one's first): then the next pair.
        void* keep = kmem_cache_alloc(g_caches[c].s, 0);
        void* p = kmem_cache_alloc(g_caches[c].s, 0);
        for (int tries = 0; uslub::virt_to_slab(p) != uslub::virt_to_slab(keep); ++tries) {
          kmem_cache_free(g_caches[c].s, keep);
          if (tries == 8) {
            kmem_cache_free(g_caches[c].s, p);
            keep = nullptr;
            break;
          }
          keep = p;
          p = kmem_cache_alloc(g_caches[c].s, 0);
        }
        if (!keep) break;
        kmem_cache_free(g_caches[c].s, p);
        char first[96];
        snprintf(first, sizeof first, "uslub: BUG %s: Object already free",
                 kmem_cache_name(g_caches[c].s));
        static kmem_cache* s;
        static void* obj;
        s = g_caches[c].s;
        obj = p;
        // The second free is reported at once if it meets the first on top of its CPU's sheaf;
        // if the thread moved to another CPU in between, both copies sit in two CPUs' sheaves
        // and the report comes when the second copy leaves one (src/slab/sheaf.hpp): the
        // shrink flushes every CPU's sheaves, so exactly one report either way.
        expect_one(
            first,
            [](void*) {
              kmem_cache_free(s, obj);
              kmem_cache_shrink(s);
            },
            nullptr);
        kmem_cache_free(g_caches[c].s, keep);
        break;
      }
      case 13: {  // misuse: interior pointer, or the wrong cache
        if (g_live.empty()) break;
        live& l = g_live[in.u16() % g_live.size()];
        if (l.cache < 0 || l.size < 2) break;
        int other = pick_cache(in);
        static kmem_cache* s;
        static void* obj;
        char first[96];
        if (other >= 0 && other != l.cache) {
          s = g_caches[other].s;
          obj = l.p;
          snprintf(first, sizeof first, "uslub: BUG %s: Wrong cache", kmem_cache_name(s));
        } else {
          s = g_caches[l.cache].s;
          obj = static_cast<char*>(l.p) + 1;
          snprintf(first, sizeof first, "uslub: BUG %s: Invalid pointer", kmem_cache_name(s));
        }
        expect_one(
            first, [](void*) { kmem_cache_free(s, obj); }, nullptr);
        break;
      }
      default:
        validate_all();
        break;
    }
    if (ops % 16 == 0) validate_all();
  }
  reset();
  return 0;
}
