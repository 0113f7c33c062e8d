// KFENCE: sampled guard-page allocations.  Design, costs and locking: kfence.hpp.
#include "kfence/kfence.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "base/report.hpp"
#include "base/stackdepot.hpp"
#include "base/stacktrace.hpp"
#include "platform/platform.hpp"
#include "sync/spinlock.hpp"

namespace uslub {
namespace detail {
std::uint32_t g_kfence_sample = 0;
}

namespace {

constexpr std::size_t kPage = 4096;
constexpr unsigned kNone = ~0u;

enum : std::uint8_t { SLOT_UNUSED, SLOT_ALLOCATED, SLOT_FREED };

struct kfence_track {
  depot_stack_handle_t stack;
  int tid, cpu;
  std::uint64_t when_ns;
};

struct kfence_meta {
  std::atomic<std::uint8_t> state;
  bool right;           // right-aligned against the following guard page
  std::uintptr_t addr;  // object start
  std::size_t size;     // requested
  kfence_track alloc, free;
  unsigned next;  // free FIFO link (kfence_lock)
};

constinit lock_class_key kfence_lock_key{"kfence_lock"};
constinit spinlock_t kfence_lock{&kfence_lock_key};
char* g_pool = nullptr;  // written once before g_kfence_sample
std::size_t g_pool_bytes = 0;
unsigned g_nr = 0;
kfence_meta* g_meta = nullptr;
unsigned g_fifo_head = kNone, g_fifo_tail = kNone;  // kfence_lock
unsigned g_never_used = 0;                          // kfence_lock
std::atomic<unsigned> g_flip{0};
std::atomic<unsigned long> g_allocs{0}, g_frees{0}, g_full{0}, g_in_use{0};
struct sigaction g_old_segv;
thread_local long t_countdown = 0;
thread_local bool t_counting = false;  // false until the thread's first countdown is drawn

char* object_page(unsigned i) {
  return g_pool + kPage * (2 * std::size_t{i} + 1);
}

unsigned char canary(std::uintptr_t a) {
  return static_cast<unsigned char>(0xaa ^ (a & 0xff));
}

void fill_track(kfence_track* t) {
  void* pcs[kStackDepth];
  unsigned n = capture_stack(pcs, kStackDepth, 2);
  t->stack = stack_depot_save(pcs, n);
  t->tid = static_cast<int>(platform::thread_id());
  t->cpu = static_cast<int>(platform::current_cpu());
  t->when_ns = platform::monotonic_ns();
}

std::size_t append_frames(char* buf, std::size_t len, std::size_t cap, void* const* pcs,
                          unsigned n) {
  unsigned from = first_caller_frame(pcs, n);  // from the caller of malloc/free
  return append_stack(buf, len, cap, pcs + from, n - from);
}

std::size_t append_track(char* buf, std::size_t len, std::size_t cap, const char* what,
                         const kfence_track& t, std::uint64_t now) {
  if (!t.when_ns) return len;
  int m = snprintf(buf + len, cap - len, "%s by thread %d on cpu %d %.3f s ago:\n", what, t.tid,
                   t.cpu, static_cast<double>(now - t.when_ns) / 1e9);
  if (m > 0) len += static_cast<std::size_t>(m);
  if (len >= cap) len = cap - 1;
  void* const* pcs;
  unsigned n = stack_depot_fetch(t.stack, &pcs);
  return append_frames(buf, len, cap, pcs, n);
}

// The report, in the kernel's KFENCE order: what happened and where (the faulting access from a
// signal handler, else the current call: the bad free), the object, its allocation, its free.
// Each site is printed once.  The slot is copied first: symbolising may allocate, and with a
// high sample rate that allocation may take this very slot again.
void report_object(const char* problem, const kfence_meta& live, const char* fmt, ...)
    USLUB_PRINTF(3, 4);
void report_object(const char* problem, const kfence_meta& live, const char* fmt, ...) {
  const std::uint8_t state = live.state.load(std::memory_order_acquire);
  const bool right = live.right;
  const std::uintptr_t addr = live.addr;
  const std::size_t size = live.size;
  const kfence_track alloc = live.alloc, freed = live.free;
  void* pcs[kStackDepth];
  // on_segv symbolises without allocating: that also says this is the fault handler.
  unsigned n = in_symbolizer() ? capture_stack_from_signal(pcs, kStackDepth) : 0;
  bool fault = n > 0;
  if (!fault) n = capture_stack(pcs, kStackDepth, 1);
  // A fault in the program's own code (not uslub's: kfence objects are touched only by their
  // users) interrupted nothing the symboliser needs, and the process ends after this report:
  // symbolise with libdw (file:line, demangled) as slub_debug's reports do.  A fault inside
  // uslub or inside another report keeps the allocation-free symboliser.
  bool lifted = false;
  if (fault) {
    char sym[512], fn[256];
    symbolize_pc(pcs[0], sym, sizeof sym);
    function_of(sym, fn, sizeof fn);
    if (!is_allocator_function(fn)) {
      symbolize_without_allocating(false);
      lifted = !in_symbolizer();
      if (!lifted) symbolize_without_allocating(true);
    }
  }
  std::uint64_t now = platform::monotonic_ns();
  char buf[8192];
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  std::size_t len = k > 0 ? static_cast<std::size_t>(k) : 0;
  if (len >= sizeof buf) len = sizeof buf - 1;
  len = fault ? append_stack(buf, len, sizeof buf, pcs, n)
              : append_frames(buf, len, sizeof buf, pcs, n);
  if (addr) {
    k = snprintf(buf + len, sizeof buf - len, "kfence object %#lx-%#lx, size %zu (%s-aligned)\n",
                 static_cast<unsigned long>(addr),
                 static_cast<unsigned long>(addr + (size ? size : 1) - 1), size,
                 right ? "right" : "left");
    if (k > 0) len += static_cast<std::size_t>(k);
    if (len >= sizeof buf) len = sizeof buf - 1;
  }
  len = append_track(buf, len, sizeof buf, "allocated", alloc, now);
  if (state == SLOT_FREED) len = append_track(buf, len, sizeof buf, "freed", freed, now);
  if (lifted) symbolize_without_allocating(true);
  report_bug("kfence", problem, "%s", buf);
}

// The fault handler.  Faults outside the pool go to the previous handler (or the default).
void on_segv(int sig, siginfo_t* info, void* uctx) {
  auto a = reinterpret_cast<std::uintptr_t>(info->si_addr);
  auto base = reinterpret_cast<std::uintptr_t>(g_pool);
  if (!g_pool || a < base || a >= base + g_pool_bytes) {
    if (g_old_segv.sa_flags & SA_SIGINFO) {
      g_old_segv.sa_sigaction(sig, info, uctx);
    } else if (g_old_segv.sa_handler == SIG_IGN || g_old_segv.sa_handler == SIG_DFL) {
      signal(SIGSEGV, SIG_DFL);  // the faulting instruction runs again and kills us
    } else {
      g_old_segv.sa_handler(sig);
    }
    return;
  }
  bool write = false;
#if defined(__x86_64__)
  write = static_cast<ucontext_t*>(uctx)->uc_mcontext.gregs[REG_ERR] & 2;
#endif
  const char* rw = write ? "write" : "read";
  symbolize_without_allocating(true);  // no libdw (malloc) inside a signal handler
  std::size_t page_idx = (a - base) / kPage;
  if (page_idx % 2) {  // an object page: the object was freed
    const kfence_meta& m = g_meta[(page_idx - 1) / 2];
    report_object("Use-after-free access", m,
                  "Use-after-free %s at %#lx (offset %ld in the object)\n", rw,
                  static_cast<unsigned long>(a), static_cast<long>(a - m.addr));
  } else {  // a guard page: the nearer of the objects on either side
    long best = -1;
    std::uintptr_t dist = ~std::uintptr_t{0};
    bool right_of = false;
    if (page_idx > 0) {
      const kfence_meta& l = g_meta[page_idx / 2 - 1];
      if (l.state.load(std::memory_order_relaxed) != SLOT_UNUSED) {
        best = static_cast<long>(page_idx / 2 - 1);
        dist = a - (l.addr + l.size);
        right_of = true;
      }
    }
    if (page_idx / 2 < g_nr) {
      const kfence_meta& r = g_meta[page_idx / 2];
      if (r.state.load(std::memory_order_relaxed) != SLOT_UNUSED && r.addr - a < dist) {
        best = static_cast<long>(page_idx / 2);
        right_of = false;
      }
    }
    if (best < 0) {
      kfence_meta none{};
      report_object("Out-of-bounds access", none, "Out-of-bounds %s at %#lx in a guard page\n", rw,
                    static_cast<unsigned long>(a));
    } else {
      const kfence_meta& m = g_meta[best];
      std::uintptr_t by = right_of ? a - (m.addr + m.size) + 1 : m.addr - a;
      report_object(
          "Out-of-bounds access", m, "Out-of-bounds %s at %#lx (%lu bytes %s of the %s)\n", rw,
          static_cast<unsigned long>(a), static_cast<unsigned long>(by),
          right_of ? "right" : "left",
          m.state.load(std::memory_order_relaxed) == SLOT_FREED ? "freed object" : "object");
    }
  }
  symbolize_without_allocating(false);
  signal(SIGABRT, SIG_DFL);
  abort();
}

}  // namespace

bool kfence_init(std::uint32_t sample, unsigned pool_objects) {
  if (g_pool) {
    __atomic_store_n(&detail::g_kfence_sample, sample, __ATOMIC_RELEASE);
    return true;
  }
  if (!sample || !pool_objects) return false;
  std::size_t bytes = kPage * (2 * std::size_t{pool_objects} + 1);
  void* pool = mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (pool == MAP_FAILED) return false;
  std::size_t meta_bytes = sizeof(kfence_meta) * pool_objects;
  void* meta =
      mmap(nullptr, meta_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (meta == MAP_FAILED) {
    munmap(pool, bytes);
    return false;
  }
  g_meta = static_cast<kfence_meta*>(meta);  // zero: SLOT_UNUSED
  g_nr = pool_objects;
  g_pool_bytes = bytes;
  g_pool = static_cast<char*>(pool);
  struct sigaction sa {};
  sa.sa_sigaction = &on_segv;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGSEGV, &sa, &g_old_segv);
  __atomic_store_n(&detail::g_kfence_sample, sample, __ATOMIC_RELEASE);
  return true;
}

void kfence_init_from_env() {
  std::uint64_t n = platform::env_size("USLUB_KFENCE_SAMPLE", 0);
  if (!n) return;
  std::uint64_t pages = platform::env_size("USLUB_KFENCE_POOL_PAGES", 255);
  if (!kfence_init(static_cast<std::uint32_t>(n > 0xffffffffu ? 0xffffffffu : n),
                   static_cast<unsigned>(pages ? pages : 255)))
    report_info("USLUB_KFENCE_SAMPLE=%llu: cannot map the pool; KFENCE is off\n",
                static_cast<unsigned long long>(n));
}

bool kfence_should_sample() {
  if (USLUB_LIKELY(--t_countdown > 0)) return false;
  std::uint32_t n = __atomic_load_n(&detail::g_kfence_sample, __ATOMIC_RELAXED);
  // The next sample in [1, 2n): one in n on average, not in lockstep across threads.
  t_countdown = 1 + static_cast<long>(platform::random_u64() % (2 * std::uint64_t{n} - 1 + !n));
  // A thread's first allocation is not special: its first countdown starts at random too (with
  // thousands of short-lived threads, sampling each one's first allocation would fill the pool).
  if (USLUB_UNLIKELY(!t_counting)) {
    t_counting = true;
    return n == 1;
  }
  return n != 0;
}

void* kfence_alloc(std::size_t size, std::size_t align, bool zero) {
  if (!g_pool || size > kPage || align > kPage || (align & (align - 1))) return nullptr;
  kfence_track tr;
  fill_track(&tr);
  unsigned i;
  kfence_lock.lock();
  if (g_never_used < g_nr) {
    i = g_never_used++;
  } else if (g_fifo_head != kNone) {  // the longest-freed slot: the longest UAF window
    i = g_fifo_head;
    g_fifo_head = g_meta[i].next;
    if (g_fifo_head == kNone) g_fifo_tail = kNone;
  } else {
    kfence_lock.unlock();
    g_full.fetch_add(1, std::memory_order_relaxed);
    return nullptr;
  }
  kfence_lock.unlock();
  kfence_meta& m = g_meta[i];
  char* pg = object_page(i);
  if (mprotect(pg, kPage, PROT_READ | PROT_WRITE) != 0) {  // give the slot back
    kfence_lock.lock();
    m.next = g_fifo_head;
    g_fifo_head = i;
    if (g_fifo_tail == kNone) g_fifo_tail = i;
    kfence_lock.unlock();
    return nullptr;
  }
  if (align < 16) align = 16;
  std::size_t span = (size + align - 1) & ~(align - 1);  // right-aligned end: still aligned
  if (!span) span = align;
  m.right = span <= kPage && (g_flip.fetch_add(1, std::memory_order_relaxed) & 1);
  m.addr = reinterpret_cast<std::uintptr_t>(m.right ? pg + kPage - span : pg);
  m.size = size;
  m.alloc = tr;
  m.free = kfence_track{};
  auto p = reinterpret_cast<unsigned char*>(pg);
  for (std::size_t k = 0; k < kPage; ++k) {  // canaries around the object
    std::uintptr_t at = reinterpret_cast<std::uintptr_t>(p + k);
    if (at < m.addr || at >= m.addr + size) p[k] = canary(at);
  }
  if (zero) memset(reinterpret_cast<void*>(m.addr), 0, size);
  m.state.store(SLOT_ALLOCATED, std::memory_order_release);
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  g_in_use.fetch_add(1, std::memory_order_relaxed);
  return reinterpret_cast<void*>(m.addr);
}

bool is_kfence_address(const void* p) {
  auto a = reinterpret_cast<std::uintptr_t>(p);
  auto base = reinterpret_cast<std::uintptr_t>(g_pool);
  return g_pool && a >= base && a < base + g_pool_bytes;
}

std::size_t kfence_ksize(const void* p) {
  if (!is_kfence_address(p)) return 0;
  std::size_t page_idx =
      (reinterpret_cast<std::uintptr_t>(p) - reinterpret_cast<std::uintptr_t>(g_pool)) / kPage;
  if (!(page_idx % 2)) return 0;
  const kfence_meta& m = g_meta[(page_idx - 1) / 2];
  return m.state.load(std::memory_order_acquire) == SLOT_ALLOCATED &&
                 m.addr == reinterpret_cast<std::uintptr_t>(p)
             ? m.size
             : 0;
}

void kfence_free(const void* p) {
  auto a = reinterpret_cast<std::uintptr_t>(p);
  std::size_t page_idx = (a - reinterpret_cast<std::uintptr_t>(g_pool)) / kPage;
  if (!(page_idx % 2)) {
    kfence_meta none{};
    report_object("Invalid free", none, "free(%p): a kfence guard page\n", p);
    return;
  }
  unsigned i = static_cast<unsigned>((page_idx - 1) / 2);
  kfence_meta& m = g_meta[i];
  std::uint8_t st = m.state.load(std::memory_order_acquire);
  if (st != SLOT_ALLOCATED) {
    report_object(
        "Invalid free", m, "free(%p): %s\n", p,
        st == SLOT_FREED ? "the object is already free (double free)" : "never allocated");
    return;
  }
  if (a != m.addr) {
    report_object("Invalid free", m, "free(%p): not the start of the object (offset %ld)\n", p,
                  static_cast<long>(a - m.addr));
    return;
  }
  auto pg = reinterpret_cast<unsigned char*>(object_page(i));
  for (std::size_t k = 0; k < kPage; ++k) {
    std::uintptr_t at = reinterpret_cast<std::uintptr_t>(pg + k);
    if ((at < m.addr || at >= m.addr + m.size) && pg[k] != canary(at)) {
      report_object("Out-of-bounds write", m,
                    "free(%p): byte %#lx (%ld from the object start) was overwritten: 0x%02x, "
                    "not 0x%02x\n",
                    p, static_cast<unsigned long>(at), static_cast<long>(at - m.addr), pg[k],
                    canary(at));
      break;
    }
  }
  fill_track(&m.free);
  m.state.store(SLOT_FREED, std::memory_order_release);
  mprotect(pg, kPage, PROT_NONE);
  kfence_lock.lock();
  m.next = kNone;
  if (g_fifo_tail != kNone)
    g_meta[g_fifo_tail].next = i;
  else
    g_fifo_head = i;
  g_fifo_tail = i;
  kfence_lock.unlock();
  g_frees.fetch_add(1, std::memory_order_relaxed);
  g_in_use.fetch_sub(1, std::memory_order_relaxed);
}

kfence_stats kfence_get_stats() {
  return {g_allocs.load(), g_frees.load(), g_full.load(), g_in_use.load()};
}

void kfence_fork_prepare() {
  kfence_lock.lock();
}
void kfence_fork_release() {
  kfence_lock.unlock();
}

}  // namespace uslub
