// The malloc family's statistics entry points, fed from <uslub/stats.h> (src/slab/stats.cpp):
// the USLUB_STATS report at exit, mallinfo2 / mallinfo, malloc_stats, malloc_info (glibc's
// XML shape) and mallopt.
//
// mallinfo2 in uslub's terms (glibc's field names, uslub's figures):
//   arena     committed bytes of the page allocator (huge blocks not included)
//   ordblks   free objects in slabs (the free "chunks")
//   smblks    free objects parked in per-CPU sheaves (glibc's fastbin chunks)
//   hblks     0 (huge blocks are not counted one by one)   hblkhd  bytes of huge mappings
//   usmblks   0 (as glibc)       fsmblks  bytes parked in sheaves
//   uordblks  allocated bytes outside huge blocks           fordblks  arena - uordblks
//   keepcost  free resident pages malloc_trim could return to the OS
// mallopt: glibc's parameters are accepted with glibc's value checks and return 1; only
// M_CHECK_ACTION changes anything (bit 1: abort on a BUG report, as glibc aborts on a
// detected corruption); an unknown parameter returns 0, as glibc's does.
#include <errno.h>
#include <malloc.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "base/report.hpp"
#include "kmalloc/kmalloc.hpp"
#include "slab/stats.hpp"

using namespace uslub;

namespace {

// USLUB_STATS=1|all|json: the report at exit, to USLUB_LOG or stderr (or the stderr duplicate
// taken at load when the program closed stderr).
__attribute__((destructor)) void uslub_exit_stats() {
  int mode = stats_mode_from_env();
  if (mode < 0) return;
  int fd = report_fd();
  stats_report(mode, &stats_fd_sink, &fd);
}

uslub_stats snapshot() {
  uslub_stats st{};
  st.version = USLUB_STATS_VERSION;
  st.size = sizeof st;
  stats_snapshot(&st);
  return st;
}

struct free_row {
  unsigned size;
  unsigned long long count;
};
struct free_rows {
  free_row rows[256];
  unsigned n;
  unsigned long long objs, sheaf_objs, sheaf_bytes, bytes;
};

int collect_free(const uslub_cache_stats* cs, void* arg) {
  auto* r = static_cast<free_rows*>(arg);
  unsigned long long used = cs->active_objs + cs->sheaf_objs;
  unsigned long long free = cs->num_objs > used ? cs->num_objs - used : 0;
  r->objs += free;
  r->bytes += free * cs->size_class;
  r->sheaf_objs += cs->sheaf_objs;
  r->sheaf_bytes += cs->sheaf_objs * cs->size_class;
  if (free + cs->sheaf_objs == 0 || r->n == 256) return 0;
  unsigned i = 0;
  while (i < r->n && r->rows[i].size != cs->size_class) ++i;
  if (i == r->n) r->rows[r->n++] = {cs->size_class, 0};
  r->rows[i].count += free + cs->sheaf_objs;
  return 0;
}

}  // namespace

extern "C" {

USLUB_EXPORT struct mallinfo2 mallinfo2(void) {
  uslub_stats st = snapshot();
  free_rows r{};
  uslub_cache_stats_for_each(&collect_free, &r);
  struct mallinfo2 mi {};
  mi.arena = st.committed - st.huge_bytes;
  mi.ordblks = r.objs;
  mi.smblks = r.sheaf_objs;
  mi.hblks = 0;
  mi.hblkhd = st.huge_bytes;
  mi.usmblks = 0;
  mi.fsmblks = st.sheaf_bytes;
  mi.uordblks = st.allocated > st.huge_bytes ? st.allocated - st.huge_bytes : 0;
  mi.fordblks = mi.arena > mi.uordblks ? mi.arena - mi.uordblks : 0;
  mi.keepcost = st.free_pages;
  return mi;
}

// glibc still exports the int version (deprecated in its header): fields saturate.
USLUB_EXPORT struct mallinfo mallinfo(void) {
  struct mallinfo2 m = mallinfo2();
  auto sat = [](size_t v) { return v > 0x7fffffff ? 0x7fffffff : static_cast<int>(v); };
  struct mallinfo mi {};
  mi.arena = sat(m.arena);
  mi.ordblks = sat(m.ordblks);
  mi.smblks = sat(m.smblks);
  mi.hblks = sat(m.hblks);
  mi.hblkhd = sat(m.hblkhd);
  mi.usmblks = sat(m.usmblks);
  mi.fsmblks = sat(m.fsmblks);
  mi.uordblks = sat(m.uordblks);
  mi.fordblks = sat(m.fordblks);
  mi.keepcost = sat(m.keepcost);
  return mi;
}

// The summary and slabinfo table (USLUB_STATS=1's report) on stderr, as glibc's goes there.
USLUB_EXPORT void malloc_stats(void) {
  int fd = report_fd();
  stats_report(0, &stats_fd_sink, &fd);
}

// glibc's XML: one heap (uslub's caches), a <size> per size class with free objects.
USLUB_EXPORT int malloc_info(int options, FILE* fp) {
  if (options != 0) {
    errno = EINVAL;
    return -1;
  }
  uslub_stats st = snapshot();
  free_rows r{};
  uslub_cache_stats_for_each(&collect_free, &r);  // no stdio under slab_mutex
  fprintf(fp, "<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n");
  for (unsigned i = 0; i < r.n; ++i)
    fprintf(fp, "  <size from=\"%u\" to=\"%u\" total=\"%llu\" count=\"%llu\"/>\n", r.rows[i].size,
            r.rows[i].size, r.rows[i].count * r.rows[i].size, r.rows[i].count);
  unsigned long long rest = r.bytes + st.free_pages;
  unsigned long long sys = st.committed - st.huge_bytes;
  fprintf(fp, "</sizes>\n<total type=\"fast\" count=\"%llu\" size=\"%llu\"/>\n", r.sheaf_objs,
          r.sheaf_bytes);
  fprintf(fp, "<total type=\"rest\" count=\"%llu\" size=\"%llu\"/>\n", r.objs, rest);
  fprintf(fp, "<system type=\"current\" size=\"%llu\"/>\n", sys);
  fprintf(fp, "<system type=\"max\" size=\"%llu\"/>\n", sys);
  fprintf(fp, "<aspace type=\"total\" size=\"%llu\"/>\n", sys);
  fprintf(fp, "<aspace type=\"mprotect\" size=\"%llu\"/>\n</heap>\n", sys);
  fprintf(fp, "<total type=\"fast\" count=\"%llu\" size=\"%llu\"/>\n", r.sheaf_objs, r.sheaf_bytes);
  fprintf(fp, "<total type=\"rest\" count=\"%llu\" size=\"%llu\"/>\n", r.objs, rest);
  fprintf(fp, "<total type=\"mmap\" count=\"0\" size=\"%llu\"/>\n",
          static_cast<unsigned long long>(st.huge_bytes));
  fprintf(fp, "<system type=\"current\" size=\"%llu\"/>\n", sys);
  fprintf(fp, "<system type=\"max\" size=\"%llu\"/>\n", sys);
  fprintf(fp, "<aspace type=\"total\" size=\"%llu\"/>\n", sys);
  fprintf(fp, "<aspace type=\"mprotect\" size=\"%llu\"/>\n</malloc>\n", sys);
  return 0;
}

USLUB_EXPORT int mallopt(int param, int value) {
  switch (param) {
    case M_MXFAST:  // glibc: 0 .. 80 * sizeof(size_t) / 4
      return value >= 0 && static_cast<size_t>(value) <= 80 * sizeof(size_t) / 4 ? 1 : 0;
    case M_TRIM_THRESHOLD:
    case M_TOP_PAD:
    case M_MMAP_THRESHOLD:
    case M_MMAP_MAX:
    case M_PERTURB:
      return 1;  // uslub's own policies (USLUB_DECAY_MS, USLUB_RETAIN) decide
    case M_ARENA_TEST:
    case M_ARENA_MAX:
      return value > 0 ? 1 : 0;
    case M_CHECK_ACTION:
      set_abort_on_bug((value & 2) != 0);
      return 1;
    default:
      return 0;
  }
}

}  // extern "C"
