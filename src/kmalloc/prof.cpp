// Sampled heap profiling: see prof.hpp for what and why.
//
// Locking: prof_lock (a leaf: nothing is taken under it, no system call, no allocation)
// protects both tables.  A sampled allocation takes its block and its stack first, then
// prof_lock to record it; prof_free takes prof_lock to forget it before the block is freed.
// fork: prof_lock is taken by a pthread_atfork prepare handler registered at load (after the
// malloc layer's, so it runs first: nothing waits for slab or page locks while holding it)
// and released in the parent and child.
//
// Tables (mmap'd once, fixed size, open addressing with linear probing and backward-shift
// deletion): live samples by address, and per-stack totals by stack depot handle.  A sample
// that finds its table full is not recorded (counted in g_dropped, reported at exit).
#include "kmalloc/prof.hpp"

#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "base/report.hpp"
#include "base/stackdepot.hpp"
#include "base/stacktrace.hpp"
#include "kmalloc/kmalloc.hpp"
#include "platform/platform.hpp"
#include "sync/spinlock.hpp"

namespace uslub {
namespace detail {
bool g_prof_on = false;
}

namespace {

constexpr unsigned kSampleSlots = 1u << 16, kStackSlots = 1u << 14, kDepth = 32;

struct sample_slot {
  std::uintptr_t addr;  // 0: empty
  std::size_t size;
  depot_stack_handle_t stack;
};
struct stack_slot {
  depot_stack_handle_t stack;  // nullptr: empty
  std::uint64_t alloc_objs, alloc_bytes, live_objs, live_bytes;
};

constinit lock_class_key prof_lock_key{"prof_lock"};
spinlock_t prof_lock{&prof_lock_key};
sample_slot* g_samples;  // kSampleSlots
stack_slot* g_stacks;    // kStackSlots
std::uint64_t g_rate = 512 * 1024;
std::uint64_t g_dropped;  // prof_lock
// The text of the object holding uslub when it is a shared library: its frames are dropped
// from the top of each stack (the profile names the program's call sites).
std::uintptr_t g_self_lo, g_self_hi;

__attribute__((tls_model("initial-exec"))) thread_local std::int64_t t_bytes_left = 0;
__attribute__((tls_model("initial-exec"))) thread_local bool t_drawn = false;

std::int64_t draw_interval() {
  // Exponential with mean g_rate: -ln(U) * rate, U uniform in (0, 1].
  double u = (static_cast<double>(platform::random_u64() >> 11) + 1.0) / 9007199254740992.0;
  double v = -std::log(u) * static_cast<double>(g_rate);
  return static_cast<std::int64_t>(v) + 1;
}

std::size_t hash_ptr(std::uintptr_t v, unsigned slots) {
  v ^= v >> 33;
  v *= 0xff51afd7ed558ccdull;
  v ^= v >> 33;
  return v & (slots - 1);
}

stack_slot* stack_entry(depot_stack_handle_t h) {  // prof_lock
  std::size_t i = hash_ptr(reinterpret_cast<std::uintptr_t>(h), kStackSlots);
  for (unsigned n = 0; n < kStackSlots; ++n, i = (i + 1) & (kStackSlots - 1)) {
    if (g_stacks[i].stack == h) return &g_stacks[i];
    if (!g_stacks[i].stack) {
      g_stacks[i].stack = h;
      return &g_stacks[i];
    }
  }
  return nullptr;
}

int find_self(dl_phdr_info* info, size_t, void* arg) {
  auto self = reinterpret_cast<std::uintptr_t>(arg);
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD || !(ph.p_flags & PF_X)) continue;
    std::uintptr_t lo = info->dlpi_addr + ph.p_vaddr, hi = lo + ph.p_memsz;
    if (self >= lo && self < hi) {
      // The main program (static link, name ""): its frames are the program's own.
      if (info->dlpi_name && info->dlpi_name[0]) {
        g_self_lo = lo;
        g_self_hi = hi;
      }
      return 1;
    }
  }
  return 0;
}

void prof_fork_prepare() {
  prof_lock.lock();
}
void prof_fork_release() {
  prof_lock.unlock();
}

__attribute__((constructor)) void prof_register_fork() {
  const char* v = getenv("USLUB_PROF_SAMPLE");
  if (v && *v && strcmp(v, "0") != 0)
    platform::register_atfork(prof_fork_prepare, prof_fork_release, prof_fork_release);
}

__attribute__((destructor)) void prof_at_exit() {
  if (!prof_enabled()) return;
  const char* path = getenv("USLUB_PROF");
  if (!path || !*path) return;
  char name[4096];
  std::size_t n = 0;
  for (const char* p = path; *p && n + 24 < sizeof name; ++p) {
    if (p[0] == '%' && p[1] == 'p') {
      n += static_cast<std::size_t>(snprintf(name + n, sizeof name - n, "%d", getpid()));
      ++p;
    } else {
      name[n++] = *p;
    }
  }
  name[n] = '\0';
  int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    report_info("USLUB_PROF=%s: cannot write the heap profile\n", name);
    return;
  }
  prof_write(fd);
  close(fd);
  if (g_dropped)
    report_info("heap profile: %llu samples not recorded (the sample table was full)\n",
                static_cast<unsigned long long>(g_dropped));
}

}  // namespace

void prof_init_from_env() {
  std::uint64_t rate = platform::env_size("USLUB_PROF_SAMPLE", 0);
  if (!rate) return;
  g_rate = rate;
  void* a = mmap(nullptr, sizeof(sample_slot) * kSampleSlots + sizeof(stack_slot) * kStackSlots,
                 PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (a == MAP_FAILED) {
    report_info("USLUB_PROF_SAMPLE: cannot map the profile tables; profiling is off\n");
    return;
  }
  g_samples = static_cast<sample_slot*>(a);
  g_stacks = reinterpret_cast<stack_slot*>(g_samples + kSampleSlots);
  dl_iterate_phdr(&find_self, reinterpret_cast<void*>(&prof_init_from_env));
  __atomic_store_n(&detail::g_prof_on, true, __ATOMIC_RELEASE);
}

void* prof_maybe_sample(std::size_t size, unsigned gfp) {
  if (USLUB_UNLIKELY(!t_drawn)) {
    t_bytes_left = draw_interval();
    t_drawn = true;
  }
  t_bytes_left -= static_cast<std::int64_t>(size);
  if (t_bytes_left > 0) return nullptr;
  t_bytes_left = draw_interval();
  void* p = kmalloc_large(size ? size : 1, gfp, 0);
  if (!p) return nullptr;  // the normal path tries (and sets errno) itself
  void* pcs[kDepth + 8];
  unsigned nf = capture_stack(pcs, kDepth + 8, 1);
  unsigned first = 0;
  while (first < nf && reinterpret_cast<std::uintptr_t>(pcs[first]) >= g_self_lo &&
         reinterpret_cast<std::uintptr_t>(pcs[first]) < g_self_hi)
    ++first;
  unsigned depth = nf - first < kDepth ? nf - first : kDepth;
  depot_stack_handle_t h = stack_depot_save(pcs + first, depth);
  lock_guard<spinlock_t> g(prof_lock);
  stack_slot* st = stack_entry(h);
  std::size_t i = hash_ptr(reinterpret_cast<std::uintptr_t>(p), kSampleSlots);
  unsigned n = 0;
  for (; n < kSampleSlots && g_samples[i].addr; ++n) i = (i + 1) & (kSampleSlots - 1);
  if (!st || n == kSampleSlots) {
    g_dropped++;
    return p;
  }
  g_samples[i] = {reinterpret_cast<std::uintptr_t>(p), size, h};
  st->alloc_objs++;
  st->alloc_bytes += size;
  st->live_objs++;
  st->live_bytes += size;
  return p;
}

void prof_free(const void* p) {
  auto a = reinterpret_cast<std::uintptr_t>(p);
  lock_guard<spinlock_t> g(prof_lock);
  std::size_t i = hash_ptr(a, kSampleSlots);
  for (unsigned n = 0; n < kSampleSlots && g_samples[i].addr;
       ++n, i = (i + 1) & (kSampleSlots - 1)) {
    if (g_samples[i].addr != a) continue;
    if (stack_slot* st = stack_entry(g_samples[i].stack)) {
      st->live_objs--;
      st->live_bytes -= g_samples[i].size;
    }
    // Backward-shift deletion: later entries of the run move into the hole when their home
    // slot does not lie strictly between the hole and them.
    std::size_t hole = i;
    for (std::size_t j = (i + 1) & (kSampleSlots - 1); g_samples[j].addr;
         j = (j + 1) & (kSampleSlots - 1)) {
      std::size_t home = hash_ptr(g_samples[j].addr, kSampleSlots);
      bool between = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
      if (between) continue;
      g_samples[hole] = g_samples[j];
      hole = j;
    }
    g_samples[hole] = {};
    return;
  }
}

void prof_write(int fd) {
  if (!g_stacks) return;
  std::uint64_t lo = 0, lb = 0, ao = 0, ab = 0;
  {
    lock_guard<spinlock_t> g(prof_lock);
    for (unsigned i = 0; i < kStackSlots; ++i) {
      lo += g_stacks[i].live_objs;
      lb += g_stacks[i].live_bytes;
      ao += g_stacks[i].alloc_objs;
      ab += g_stacks[i].alloc_bytes;
    }
  }
  char line[64 + kDepth * 20];
  int len = snprintf(line, sizeof line, "heap profile: %llu: %llu [%llu: %llu] @ heap_v2/%llu\n",
                     static_cast<unsigned long long>(lo), static_cast<unsigned long long>(lb),
                     static_cast<unsigned long long>(ao), static_cast<unsigned long long>(ab),
                     static_cast<unsigned long long>(g_rate));
  write_all(fd, line, static_cast<std::size_t>(len));
  for (unsigned i = 0; i < kStackSlots; ++i) {
    stack_slot s;
    {
      lock_guard<spinlock_t> g(prof_lock);
      s = g_stacks[i];
    }
    if (!s.stack || s.alloc_objs == 0) continue;
    std::size_t n = static_cast<std::size_t>(snprintf(
        line, sizeof line, "%llu: %llu [%llu: %llu] @",
        static_cast<unsigned long long>(s.live_objs), static_cast<unsigned long long>(s.live_bytes),
        static_cast<unsigned long long>(s.alloc_objs),
        static_cast<unsigned long long>(s.alloc_bytes)));
    void* const* pcs;
    unsigned nf = stack_depot_fetch(s.stack, &pcs);
    for (unsigned f = 0; f < nf && n + 24 < sizeof line; ++f)
      n += static_cast<std::size_t>(snprintf(line + n, sizeof line - n, " %p", pcs[f]));
    line[n++] = '\n';
    write_all(fd, line, n);
  }
  // The memory map, so that the reader can symbolise the addresses.
  static const char maps_head[] = "\nMAPPED_LIBRARIES:\n";
  write_all(fd, maps_head, sizeof maps_head - 1);
  int m = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (m >= 0) {
    char buf[4096];
    for (ssize_t r; (r = read(m, buf, sizeof buf)) > 0;)
      write_all(fd, buf, static_cast<std::size_t>(r));
    close(m);
  }
}

}  // namespace uslub
