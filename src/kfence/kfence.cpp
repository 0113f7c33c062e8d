// KFENCE: sampled guard-page allocations.  Design, costs and locking: kfence.hpp.
#include "kfence/kfence.hpp"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
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

// Slot states.  Every transition out of UNUSED, ALLOCATED or FREED happens under kfence_lock
// (the one that claims the slot: alloc takes an UNUSED or FREED slot, free an ALLOCATED one, by
// setting BUSY); BUSY -> ALLOCATED is the allocating owner's release store, BUSY -> FREED the
// freeing owner's, under the lock when it queues the slot.  So of two frees of one object only
// one claims it; the other finds BUSY or FREED and reports a double free.
enum : std::uint8_t { SLOT_UNUSED, SLOT_ALLOCATED, SLOT_FREED, SLOT_BUSY };

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
// Initial-exec, as every thread-local on a malloc path (docs/malloc.md): a general-dynamic access
// calls __tls_get_addr, which may itself be allocating a dlopen'ed library's TLS block.
__attribute__((tls_model("initial-exec"))) thread_local long t_countdown = 0;
// false until the thread's first countdown is drawn
__attribute__((tls_model("initial-exec"))) thread_local bool t_counting = false;

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

// ---- the fault handler ----------------------------------------------------------------
//
// Async-signal-safe: it formats with its own integer printers into a static buffer, resolves
// frames to module+offset by reading /proc/self/maps with open/read (no dladdr: it takes the
// loader's lock, which the interrupted thread or a dlopen in another may hold), writes the
// report with report_bug_signal_safe (no hook, no stdio, no malloc, no lock) and aborts.  It
// reads the slot metadata without kfence_lock (the interrupted thread may hold it): a slot
// changing under a racing allocation can make the report name the wrong object, never hang.

// Appends to a fixed buffer, truncating (never overflowing).
struct sig_text {
  char* buf;
  std::size_t cap, len = 0;
  sig_text& str(const char* s) {
    while (*s && len + 1 < cap) buf[len++] = *s++;
    return *this;
  }
  sig_text& num(unsigned long long v, unsigned base = 10, unsigned min_digits = 1) {
    char d[24];
    unsigned n = 0;
    do {
      d[n++] = "0123456789abcdef"[v % base];
      v /= base;
    } while (v || n < min_digits);
    while (n && len + 1 < cap) buf[len++] = d[--n];
    return *this;
  }
  sig_text& sdec(long long v) {
    if (v < 0) str("-");
    return num(v < 0 ? 0ull - static_cast<unsigned long long>(v) : v);
  }
  sig_text& hex(unsigned long long v) { return str("0x").num(v, 16); }
};

// One mapping of /proc/self/maps per frame: module base name and offset.
struct frame_module {
  char name[64];
  char path[256];  // the whole path, for the symbol table
  unsigned long long off;
  bool found;
};

unsigned long long parse_hex(const char*& p) {
  unsigned long long v = 0;
  for (;; ++p) {
    char c = *p;
    unsigned d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : 16;
    if (d == 16) return v;
    v = v * 16 + d;
  }
}

// Resolves pcs[0..n) (return addresses: the call is at pc - 1) to module+offset in one pass.
void resolve_frames(void* const* pcs, unsigned n, frame_module* out) {
  for (unsigned i = 0; i < n; ++i) out[i].found = false;
  int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  char chunk[1024], line[512];
  std::size_t ll = 0;
  for (;;) {
    ssize_t got = read(fd, chunk, sizeof chunk);
    if (got <= 0) break;
    for (ssize_t k = 0; k < got; ++k) {
      char c = chunk[k];
      if (c != '\n') {
        if (ll + 1 < sizeof line) line[ll++] = c;
        continue;
      }
      line[ll] = '\0';
      ll = 0;
      // start-end perms offset dev inode path
      const char* p = line;
      unsigned long long start = parse_hex(p);
      if (*p++ != '-') continue;
      unsigned long long end = parse_hex(p);
      int field = 0;
      while (*p && field < 4) {  // skip " perms offset dev inode", keeping the offset
        while (*p == ' ') ++p;
        if (field == 1) {
          const char* q = p;
          unsigned long long off = parse_hex(q);
          p = q;
          for (unsigned i = 0; i < n; ++i) {
            auto pc = reinterpret_cast<std::uintptr_t>(pcs[i]) - 1;
            if (!out[i].found && pc >= start && pc < end) out[i].off = pc - start + off;
          }
        } else {
          while (*p && *p != ' ') ++p;
        }
        ++field;
      }
      while (*p == ' ') ++p;
      if (*p != '/') continue;  // anonymous or [special]: keep looking for a file mapping
      const char* base = p;
      for (const char* q = p; *q; ++q)
        if (*q == '/') base = q + 1;
      for (unsigned i = 0; i < n; ++i) {
        auto pc = reinterpret_cast<std::uintptr_t>(pcs[i]) - 1;
        if (out[i].found || pc < start || pc >= end) continue;
        std::size_t m = 0;
        while (base[m] && m + 1 < sizeof out[i].name) out[i].name[m] = base[m], ++m;
        out[i].name[m] = '\0';
        m = 0;
        while (p[m] && m + 1 < sizeof out[i].path) out[i].path[m] = p[m], ++m;
        out[i].path[m] = '\0';
        out[i].found = true;
      }
    }
  }
  close(fd);
}

// Prints frames as "function+0xoff (module+0xoff)": the function from the module's ELF symbol
// table (symbolize_in_file: no allocation, no lock, no stdio), module+offset for
// addr2line; frames inside the allocator's entry points are left out at the top when
// skip_allocator (the stack starts at the caller of malloc/free, as slub_debug's does).
void sig_frames(sig_text& t, void* const* pcs, unsigned n, bool skip_allocator) {
  frame_module mods[kStackDepth];
  resolve_frames(pcs, n, mods);
  unsigned shown = 0;
  bool top = skip_allocator;
  for (unsigned i = 0; i < n; ++i) {
    char fn[256];
    std::uintptr_t fn_off = 0;
    auto pc = reinterpret_cast<std::uintptr_t>(pcs[i]) - 1;
    bool named = mods[i].found &&
                 symbolize_in_file(mods[i].path, pc - mods[i].off, pc, fn, sizeof fn, &fn_off);
    if (top && named && is_allocator_function(fn) && i + 1 < n) continue;
    top = false;
    t.str("    #").num(shown++).str(" ");
    if (named) t.str(fn).str("+").hex(fn_off).str(" (");
    if (mods[i].found)
      t.str(mods[i].name).str("+").hex(mods[i].off);
    else
      t.hex(pc);
    if (named) t.str(")");
    t.str("\n");
  }
}

void sig_track(sig_text& t, const char* what, const kfence_track& tr) {
  if (!tr.when_ns) return;
  std::uint64_t now = platform::monotonic_ns();
  std::uint64_t ms = now > tr.when_ns ? (now - tr.when_ns) / 1000000 : 0;
  t.str(what).str(" by thread ").sdec(tr.tid).str(" on cpu ").sdec(tr.cpu).str(" ");
  t.num(ms / 1000).str(".").num(ms % 1000, 10, 3).str(" s ago:\n");
  void* const* pcs;
  unsigned n = stack_depot_fetch(tr.stack, &pcs);
  if (n > kStackDepth) n = kStackDepth;
  sig_frames(t, pcs, n, true);
}

char g_sig_buf[8192];  // owned by the thread that won g_sig_reporting
std::atomic<bool> g_sig_reporting{false};

// Sends a fault that is not KFENCE's where it would have gone without uslub: the handler that
// was installed before kfence_init (with its mask and flags), or the default action.
void chain_segv(int sig, siginfo_t* info, void* uctx) {
  struct sigaction old = g_old_segv;
  bool dfl = !(old.sa_flags & SA_SIGINFO) &&
             (old.sa_handler == SIG_DFL || old.sa_handler == SIG_IGN);  // IGN: the kernel
                                                                        // kills on a fault too
  if (dfl) {
    struct sigaction sa {};
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, nullptr);
    // A fault re-executes the instruction and dies by the default action; a SIGSEGV sent by
    // kill/raise/sigqueue (si_code <= 0) would be lost by returning: send it again (pending
    // until this handler returns, since sig is blocked here).
    if (info->si_code <= 0) raise(sig);
    return;
  }
  if (old.sa_flags & SA_RESETHAND) {  // one-shot: the next one gets the default
    g_old_segv.sa_handler = SIG_DFL;
    g_old_segv.sa_flags &= ~SA_SIGINFO;
  }
  sigset_t mask, saved;
  mask = old.sa_mask;
  pthread_sigmask(SIG_BLOCK, &mask, &saved);
  if (old.sa_flags & SA_NODEFER) {
    sigemptyset(&mask);
    sigaddset(&mask, sig);
    pthread_sigmask(SIG_UNBLOCK, &mask, nullptr);
  }
  if (old.sa_flags & SA_SIGINFO)
    old.sa_sigaction(sig, info, uctx);
  else
    old.sa_handler(sig);
  pthread_sigmask(SIG_SETMASK, &saved, nullptr);
}

void on_segv(int sig, siginfo_t* info, void* uctx) {
  int saved_errno = errno;
  auto a = reinterpret_cast<std::uintptr_t>(info->si_addr);
  auto base = reinterpret_cast<std::uintptr_t>(g_pool);
  if (!g_pool || a < base || a >= base + g_pool_bytes || info->si_code <= 0) {
    chain_segv(sig, info, uctx);
    errno = saved_errno;
    return;
  }
  // One report: a second thread faulting in the pool meanwhile waits for the abort.
  if (g_sig_reporting.exchange(true, std::memory_order_acquire))
    for (;;) pause();
  bool write = false;
#if defined(__x86_64__)
  write = static_cast<ucontext_t*>(uctx)->uc_mcontext.gregs[REG_ERR] & 2;
#endif
  const char* rw = write ? "write" : "read";
  std::size_t page_idx = (a - base) / kPage;
  const kfence_meta* m = nullptr;
  sig_text t{g_sig_buf, sizeof g_sig_buf};
  if (page_idx % 2) {  // an object page: the object was freed
    m = &g_meta[(page_idx - 1) / 2];
    t.str("uslub: BUG kfence: Use-after-free access\nUse-after-free ").str(rw).str(" at ");
    t.hex(a).str(" (offset ").sdec(static_cast<long long>(a - m->addr)).str(" in the object)\n");
  } else {  // a guard page: the nearer of the objects on either side
    std::uintptr_t dist = ~std::uintptr_t{0};
    bool right_of = false;
    if (page_idx > 0) {
      const kfence_meta& l = g_meta[page_idx / 2 - 1];
      if (l.state.load(std::memory_order_relaxed) != SLOT_UNUSED) {
        m = &l;
        dist = a - (l.addr + l.size);
        right_of = true;
      }
    }
    if (page_idx / 2 < g_nr) {
      const kfence_meta& r = g_meta[page_idx / 2];
      if (r.state.load(std::memory_order_relaxed) != SLOT_UNUSED && r.addr - a < dist) {
        m = &r;
        right_of = false;
      }
    }
    t.str("uslub: BUG kfence: Out-of-bounds access\nOut-of-bounds ").str(rw).str(" at ").hex(a);
    if (!m) {
      t.str(" in a guard page\n");
    } else {
      std::uintptr_t by = right_of ? a - (m->addr + m->size) + 1 : m->addr - a;
      t.str(" (").num(by).str(" bytes ").str(right_of ? "right" : "left").str(" of the ");
      t.str(m->state.load(std::memory_order_relaxed) == SLOT_FREED ? "freed object" : "object")
          .str(")\n");
    }
  }
#if defined(__x86_64__)
  {  // the faulting access: the interrupted instruction (+1: sig_frames takes return addresses)
    void* at =
        reinterpret_cast<void*>(static_cast<ucontext_t*>(uctx)->uc_mcontext.gregs[REG_RIP] + 1);
    sig_frames(t, &at, 1, false);
  }
#endif
  if (m) {
    t.str("kfence object ").hex(m->addr).str("-").hex(m->addr + (m->size ? m->size : 1) - 1);
    t.str(", size ").num(m->size).str(" (").str(m->right ? "right" : "left").str("-aligned)\n");
    sig_track(t, "allocated", m->alloc);
    if (m->state.load(std::memory_order_relaxed) == SLOT_FREED) sig_track(t, "freed", m->free);
  }
  if (t.len + 1 < t.cap && (t.len == 0 || t.buf[t.len - 1] != '\n')) t.buf[t.len++] = '\n';
  report_bug_signal_safe(t.buf, t.len);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  sigaction(SIGABRT, &dfl, nullptr);
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
  report_prepare_signal_safe();  // the handler only write()s
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
  kfence_meta& m = g_meta[i];
  std::uint8_t was = m.state.load(std::memory_order_relaxed);
  m.state.store(SLOT_BUSY, std::memory_order_relaxed);  // ours until the release store below
  kfence_lock.unlock();
  char* pg = object_page(i);
  if (mprotect(pg, kPage, PROT_READ | PROT_WRITE) != 0) {  // give the slot back
    kfence_lock.lock();
    m.state.store(was, std::memory_order_relaxed);
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
  // Claim the slot under kfence_lock (ALLOCATED -> BUSY).  A refused free reports from a copy
  // taken under the lock: the slot may be reallocated as soon as the lock is dropped.
  kfence_lock.lock();
  std::uint8_t st = m.state.load(std::memory_order_acquire);  // alloc's fields: release store
  if (st != SLOT_ALLOCATED || a != m.addr) {
    kfence_meta copy{};
    if (st != SLOT_BUSY) {  // BUSY: its owner is writing the metadata
      copy.state.store(st, std::memory_order_relaxed);
      copy.right = m.right;
      copy.addr = m.addr;
      copy.size = m.size;
      copy.alloc = m.alloc;
      copy.free = m.free;
    }
    kfence_lock.unlock();
    if (st == SLOT_ALLOCATED)
      report_object("Invalid free", copy, "free(%p): not the start of the object (offset %ld)\n", p,
                    static_cast<long>(a - copy.addr));
    else
      report_object(
          "Invalid free", copy, "free(%p): %s\n", p,
          st == SLOT_UNUSED ? "never allocated" : "the object is already free (double free)");
    return;
  }
  m.state.store(SLOT_BUSY, std::memory_order_relaxed);
  kfence_lock.unlock();
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
  mprotect(pg, kPage, PROT_NONE);
  kfence_lock.lock();
  m.state.store(SLOT_FREED, std::memory_order_release);
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
