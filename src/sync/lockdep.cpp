// lockdep: lock-order checking for uslub's locks (USLUB_LOCKDEP builds; kernel/locking/lockdep.c
// reduced to what an allocator needs).
//
// Every lock names a lock_class_key; a class gets a small id on first use.  Each thread keeps the
// stack of locks it holds.  Acquiring (not trying) a lock of class B while holding a lock of class
// A records the dependency A -> B.  A dependency seen for the first time is checked against the
// graph of all dependencies seen so far, in any thread: a path B -> ... -> A means the new one
// closes a cycle, so two threads taking the locks in the two orders can deadlock even if they
// never did in this run (seed 000's cpu_hotplug_lock / slab_mutex / flush_lock inversion is the
// model case).  The first cycle is reported through report_bug("lockdep", "possible circular
// locking dependency") with both class names, the path, the locks held, the stack of this
// acquisition and the stack recorded when each dependency of the opposite path was first seen.
//
// Gate locks (Bensalem and Havelund's refinement of the lock graph): each dependency also keeps
// the lock *instances* held whenever it was taken (up to 4, outermost first; the intersection
// over every time it was seen).  A cycle all of whose dependencies were taken while holding one
// same lock instance cannot deadlock - that lock lets only one of the threads in at a time - so
// it is not reported.  uslub needs this for fork: slab_fork_prepare() takes every cache's
// list_lock and CPU-slot locks, cache after cache, under slab_mutex, which at class level is
// kmem_cache_cpu->lock -> kmem_cache_node->list_lock, the opposite of the documented order; no
// other path can interleave with it.  A dependency seen once without the gate loses it and is
// checked again.  The kernel has no gates: there, such a path takes its locks class by class.
//
// Like the kernel: a trylock adds no dependency *to* the lock it takes (it cannot wait, so it
// cannot close a deadlock), but once held it is the source of dependencies like any other lock.
// The check runs before a blocking acquisition waits, so a deadlock about to happen (AA, or the
// second half of an ABBA) is reported before the thread hangs in it.
//
// Also reported, as the kernel does ("possible recursive locking detected"): acquiring a lock
// this thread already holds, and nesting two locks of one class (a blocking acquisition) unless
// annotated - with a subclass (lock_nested(n): class "name/n", ordered like any other class) or
// with a nest lock (lock_nest_lock(&outer): many locks of one class taken under one lock that
// serialises all such takers, as fork's prepare takes every cache's list_lock under slab_mutex;
// they share one held entry with a count, so fork's hundreds of locks fit the 48 entries).
// Releasing a lock this thread does not hold is "bad unlock balance detected".  More than 48
// entries is reported ("too many locks held") and the thread's extra locks go untracked until
// released: lockdep_is_held() never answers "held" for a lock it did not see taken.  Locks
// without a class (nullptr key) are tracked for lockdep_assert_held() only.  After the first
// report the checker keeps recording but reports no more (kernel: debug_locks_off()); tests
// re-arm it with lockdep_reset() or lockdep_rearm().
//
// Locking rules:
//   graph_lock  a bare test-and-set flag, deliberately not tracked (it would recurse).  Taken
//               only when a dependency is new or has gates: it serialises the check-then-add
//               of an edge, so two threads adding A -> B and B -> A at once cannot both miss
//               the cycle, and guards g_info and the search scratch arrays.  Never held across
//               report_bug().
//   g_edges     set under graph_lock, read lock-free on the acquire path (a bit once set stays
//   g_gated     set until lockdep_reset(), so a stale 0 only sends the caller to the slow path;
//               a g_gated bit is cleared when the edge's last gate goes).
//   g_classes   insert-only, by compare-exchange; lock-free reads.
//   t_held      thread-local (initial-exec TLS: no __tls_get_addr, which may call malloc).
//
// Allocation-free: static tables (256 classes, 256 x 256 adjacency bitmaps, 2048 edge records),
// stacks taken with _Unwind_Backtrace and symbolised with dladdr (base/stacktrace).  glibc's
// backtrace() is not used: its first call dlopen()s libgcc_s, which mallocs, and the acquire path
// runs inside the allocator with its locks held (that deadlocked the malloc tests).  Cost per
// acquire: a class lookup (one hashed probe) and one bitmap test per lock already held; the graph
// lock, the DFS and the unwinding run once per new dependency (and per acquisition along a gated
// one).
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "base/report.hpp"
#include "base/stacktrace.hpp"
#include "sync/lockdep.hpp"

#if USLUB_LOCKDEP
namespace uslub {
namespace {

constexpr int kMaxClasses = 256;
constexpr int kWords = kMaxClasses / 64;
constexpr int kMaxHeld = 48;
constexpr int kFrames = 10;
constexpr int kEdgeInfo = 2048;
constexpr int kGates = 4;
constexpr int kReportBuf = 7680;  // report_bug's buffer is 8 KB including the first line

// A class is a key and a subclass: the entry is the key's address plus the subclass (keys are
// pointer-aligned, subclasses < kLockdepSubclasses).
std::atomic<std::uintptr_t> g_classes[kMaxClasses];
static_assert(alignof(lock_class_key) >= kLockdepSubclasses);
std::atomic<std::uint64_t> g_edges[kMaxClasses][kWords];  // bit b of g_edges[a]: a -> b
std::atomic<std::uint64_t> g_gated[kMaxClasses][kWords];  // a -> b has gates
std::atomic<bool> g_reported{false};
std::atomic<bool> g_table_full_reported{false};
std::atomic<bool> g_depth_reported{false};
std::atomic<bool> g_graph_lock{false};

struct stack_trace {
  int depth;
  void* frames[kFrames];
};

// What is known of one dependency a -> b beyond its bit (graph_lock).  A full table loses the
// stack and the gates (so the edge counts as ungated: more reports, never fewer).
struct edge_info {
  std::uint32_t key;  // (a << 16 | b) + 1; 0: empty
  int ngates;
  const void* gates[kGates];  // lock instances held every time a -> b was taken
  stack_trace trace;          // the first time
};
edge_info g_info[kEdgeInfo];

// Search scratch (graph_lock): states are (class, subset of the new edge's gates still common).
constexpr int kStates = kMaxClasses << kGates;
int g_queue[kStates];
int g_parent[kStates];
bool g_seen[kStates];

struct held_lock {
  const void* lock;
  const void* ip;             // where it was acquired
  int cls;                    // -1: no class
  const lock_class_key* key;  // the class's key (release does not know the subclass)
  const void* nest;           // the nest lock it was taken under, or nullptr
  int count;                  // instances of the class held under nest (1 without one)
  bool many;                  // has counted more than one: held by class (lock may be gone)
};
__attribute__((tls_model("initial-exec"))) thread_local held_lock t_held[kMaxHeld];
__attribute__((tls_model("initial-exec"))) thread_local int t_nheld;  // <= kMaxHeld
// Locks acquired while t_held was full (reported once as a bug): not tracked, so this thread's
// "held" answers and unlock checks are suspended until they are released.
__attribute__((tls_model("initial-exec"))) thread_local int t_untracked;
// Set while this thread is inside the checker's slow path: a lock taken meanwhile (report_bug's
// test hook may allocate) is tracked as held but not checked, so the checker never recurses.
__attribute__((tls_model("initial-exec"))) thread_local bool t_busy;

void graph_lock() {
  for (int spins = 0; g_graph_lock.exchange(true, std::memory_order_acquire); ++spins) {
    while (g_graph_lock.load(std::memory_order_relaxed)) {
      if (++spins < 100)
        cpu_relax();
      else
        sched_yield();  // the holder may be preempted (user space is PREEMPT_RT)
    }
  }
}
void graph_unlock() {
  g_graph_lock.store(false, std::memory_order_release);
}

// A forked child has one thread; a graph_lock held by another parent thread would never be
// released there.
void lockdep_atfork_child() {
  g_graph_lock.store(false, std::memory_order_relaxed);
}
__attribute__((constructor)) void lockdep_register_atfork() {
  pthread_atfork(nullptr, nullptr, lockdep_atfork_child);
}

USLUB_SLOWPATH void report_table_full(const lock_class_key* key) {
  if (!g_table_full_reported.exchange(true))
    report_info("lockdep: more than %d lock classes; %s and later ones are not order-checked",
                kMaxClasses, key->name ? key->name : "?");
}

int class_id(const lock_class_key* key, unsigned subclass = 0) {
  if (!key) return -1;
  if (subclass >= kLockdepSubclasses) subclass = kLockdepSubclasses - 1;
  std::uintptr_t want = reinterpret_cast<std::uintptr_t>(key) + subclass;
  std::uintptr_t h = (want >> 3) % kMaxClasses;
  for (int n = 0; n < kMaxClasses; ++n) {
    int i = static_cast<int>((h + static_cast<std::uintptr_t>(n)) % kMaxClasses);
    std::uintptr_t cur = g_classes[i].load(std::memory_order_acquire);
    if (USLUB_LIKELY(cur == want)) return i;
    if (!cur) {
      if (g_classes[i].compare_exchange_strong(cur, want, std::memory_order_acq_rel)) return i;
      if (cur == want) return i;
    }
  }
  report_table_full(key);
  return -1;
}

// "name" or "name/subclass".  The names of subclasses live in a static table (written once per
// class, under no lock: two writers write the same text).
char g_sub_names[kMaxClasses][48];
const char* class_name(int id) {
  std::uintptr_t v = g_classes[id].load(std::memory_order_acquire);
  const auto* k =
      reinterpret_cast<const lock_class_key*>(v & ~std::uintptr_t{kLockdepSubclasses - 1});
  const char* name = k && k->name ? k->name : "(unnamed class)";
  unsigned sub = static_cast<unsigned>(v & (kLockdepSubclasses - 1));
  if (!sub) return name;
  if (!g_sub_names[id][0]) snprintf(g_sub_names[id], sizeof g_sub_names[id], "%s/%u", name, sub);
  return g_sub_names[id];
}

bool has_edge(int a, int b) {
  return g_edges[a][b / 64].load(std::memory_order_relaxed) & (std::uint64_t{1} << (b % 64));
}

// ---- stacks ----------------------------------------------------------------------------------

// Stacks: base/stacktrace (the unwinder, and dladdr-only symbolisation here: a lockdep report
// is printed with the allocator's own locks held, so it must not allocate).
USLUB_NOINLINE void save_stack(stack_trace* t, int skip) {
  t->depth = static_cast<int>(capture_stack(t->frames, kFrames, static_cast<unsigned>(skip) + 1));
}

std::size_t append_pc(char* buf, std::size_t len, const void* return_address) {
  symbolize_without_allocating(true);
  symbolize_pc(return_address, buf + len, kReportBuf - len);
  symbolize_without_allocating(false);
  len += strlen(buf + len);
  return len < kReportBuf ? len : kReportBuf - 1;
}

std::size_t append_stack(char* buf, std::size_t len, const stack_trace* t) {
  symbolize_without_allocating(true);
  len = uslub::append_stack(buf, len, kReportBuf, t->frames, static_cast<unsigned>(t->depth), "  ");
  symbolize_without_allocating(false);
  return len;
}

std::uint32_t edge_key(int a, int b) {
  return static_cast<std::uint32_t>((a << 16 | b) + 1);
}

// Context: graph_lock.  create: claim a slot if a -> b has none (nullptr if the table is full).
edge_info* find_info(int a, int b, bool create) {
  std::uint32_t key = edge_key(a, b);
  std::uint32_t h = (key * 2654435761u) % kEdgeInfo;
  for (int n = 0; n < 16; ++n) {
    edge_info& e = g_info[(h + static_cast<std::uint32_t>(n)) % kEdgeInfo];
    if (e.key == key) return &e;
    if (e.key == 0) {
      if (!create) return nullptr;
      e.key = key;
      e.ngates = 0;
      e.trace.depth = 0;
      return &e;
    }
  }
  return nullptr;
}

void set_bit(std::atomic<std::uint64_t> (&m)[kMaxClasses][kWords], int a, int b, bool on) {
  std::uint64_t bit = std::uint64_t{1} << (b % 64);
  if (on)
    m[a][b / 64].fetch_or(bit, std::memory_order_relaxed);
  else
    m[a][b / 64].fetch_and(~bit, std::memory_order_relaxed);
}
bool test_bit(const std::atomic<std::uint64_t> (&m)[kMaxClasses][kWords], int a, int b) {
  return m[a][b / 64].load(std::memory_order_relaxed) & (std::uint64_t{1} << (b % 64));
}

// The gates of a dependency prev -> cur taken now: the locks this thread holds, outermost
// first, other than those of the two classes.
int current_gates(int prev, int cur, const void** gates) {
  int n = 0;
  for (int i = 0; i < t_nheld && n < kGates; ++i)
    if (t_held[i].cls != prev && t_held[i].cls != cur && t_held[i].lock)
      gates[n++] = t_held[i].lock;
  return n;
}

// Bit i set for each gates[i] that edge v -> w also has.  Context: graph_lock.
unsigned common_gates(int v, int w, const void* const* gates, int ngates) {
  if (!ngates || !test_bit(g_gated, v, w)) return 0;
  const edge_info* e = find_info(v, w, false);
  if (!e) return 0;
  unsigned m = 0;
  for (int i = 0; i < ngates; ++i)
    for (int j = 0; j < e->ngates; ++j)
      if (e->gates[j] == gates[i]) m |= 1u << i;
  return m;
}

// Is there a path from -> ... -> to whose dependencies share none of gates[] (the gates of the
// new dependency to -> from that would close the cycle)?  BFS over (class, gates still common
// to every edge so far); the shortest such path goes to path[0..len), from first.
// Context: graph_lock (the scratch arrays).
bool find_ungated_path(int from, int to, const void* const* gates, int ngates, int* path,
                       int* len) {
  memset(g_seen, 0, sizeof g_seen);
  int head = 0, tail = 0;
  int start = from << kGates | static_cast<int>((1u << ngates) - 1);
  g_queue[tail++] = start;
  g_seen[start] = true;
  g_parent[start] = -1;
  while (head < tail) {
    int st = g_queue[head++];
    int v = st >> kGates;
    unsigned mask = static_cast<unsigned>(st) & ((1u << kGates) - 1);
    if (v == to && mask == 0) {
      int n = 0;
      for (int x = st; x != -1; x = g_parent[x]) path[n++] = x >> kGates;
      for (int i = 0; i < n / 2; ++i) {  // reverse: from first
        int t = path[i];
        path[i] = path[n - 1 - i];
        path[n - 1 - i] = t;
      }
      *len = n;
      return true;
    }
    for (int w = 0; w < kWords; ++w) {
      std::uint64_t bits = g_edges[v][w].load(std::memory_order_relaxed);
      while (bits) {
        int b = w * 64 + __builtin_ctzll(bits);
        bits &= bits - 1;
        unsigned m = mask ? mask & common_gates(v, b, gates, ngates) : 0;
        int next = b << kGates | static_cast<int>(m);
        if (!g_seen[next]) {
          g_seen[next] = true;
          g_parent[next] = st;
          g_queue[tail++] = next;
        }
      }
    }
  }
  return false;
}

USLUB_PRINTF(3, 4) std::size_t appendf(char* buf, std::size_t l, const char* fmt, ...) {
  if (l + 1 >= kReportBuf) return l;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf + l, kReportBuf - l, fmt, ap);
  va_end(ap);
  if (n > 0) l += static_cast<std::size_t>(n);
  return l < kReportBuf ? l : kReportBuf - 1;
}

// Composes the report of "acquiring class `cur` (lock) while holding class `prev`, but a path
// cur -> ... -> prev exists".  Context: graph_lock.
std::size_t compose_report(char* buf, int prev, int cur, const void* lock, const int* path, int len,
                           const stack_trace* now) {
  std::size_t l = 0;
#define put(...) l = appendf(buf, l, __VA_ARGS__)
  put("thread %d is acquiring %s (%p) while holding %s,\n", static_cast<int>(gettid()),
      class_name(cur), lock, class_name(prev));
  put("but the opposite order %s -> %s was seen before:\n  ", class_name(cur), class_name(prev));
  for (int i = 0; i < len; ++i) put("%s%s", class_name(path[i]), i + 1 < len ? " -> " : "\n");
  put("so %s -> %s closes a cycle: threads taking these locks in the two orders can deadlock.\n",
      class_name(prev), class_name(cur));
  put("locks held by this thread:\n");
  for (int i = 0; i < t_nheld; ++i) {
    put("  #%d %s (%p) taken at ", i, t_held[i].cls >= 0 ? class_name(t_held[i].cls) : "-",
        t_held[i].lock);
    l = append_pc(buf, l, t_held[i].ip);
    put("\n");
  }
  put("stack of this acquisition (%s -> %s):\n", class_name(prev), class_name(cur));
  l = append_stack(buf, l, now);
  for (int i = 0; i + 1 < len; ++i) {
    put("stack of the first %s -> %s acquisition:\n", class_name(path[i]), class_name(path[i + 1]));
    const edge_info* e = find_info(path[i], path[i + 1], false);
    if (e && e->trace.depth)
      l = append_stack(buf, l, &e->trace);
    else
      put("  (not recorded: table full)\n");
  }
  return l;
#undef put
}

// Checks whether prev -> cur, taken now under gates[], closes an ungated cycle; if so and none
// was reported yet, composes the report into text.  Context: graph_lock.
bool check_cycle(int prev, int cur, const void* lock, const void* const* gates, int ngates,
                 const stack_trace* now, char* text) {
  int path[kMaxClasses], len = 0;
  if (g_reported.load(std::memory_order_relaxed) ||
      !find_ungated_path(cur, prev, gates, ngates, path, &len))
    return false;
  g_reported.store(true, std::memory_order_relaxed);
  text[compose_report(text, prev, cur, lock, path, len, now)] = '\0';
  return true;
}

// prev -> cur is new, or gated and maybe taken now without some of its gates.  Records it and
// its first stack, narrows its gates, and checks for a cycle whenever either changed.
USLUB_SLOWPATH USLUB_NOINLINE void add_dependency(int prev, int cur, const void* lock) {
  t_busy = true;
  const void* gates[kGates];
  int ngates = current_gates(prev, cur, gates);
  bool is_new = !test_bit(g_edges, prev, cur);
  stack_trace now;
  now.depth = 0;
  if (is_new) save_stack(&now, 2);  // drop add_dependency and lockdep_acquire
  char text[kReportBuf];            // composed under graph_lock, reported after it
  bool report = false;
  graph_lock();
  if (!test_bit(g_edges, prev, cur)) {
    report = check_cycle(prev, cur, lock, gates, ngates, &now, text);
    edge_info* e = find_info(prev, cur, true);
    if (e) {
      e->trace = now;
      e->ngates = ngates;
      for (int i = 0; i < ngates; ++i) e->gates[i] = gates[i];
    }
    set_bit(g_gated, prev, cur, e && ngates > 0);
    set_bit(g_edges, prev, cur, true);
  } else if (test_bit(g_gated, prev, cur)) {
    edge_info* e = find_info(prev, cur, false);
    int kept = 0;
    for (int j = 0; e && j < e->ngates; ++j)
      for (int i = 0; i < ngates; ++i)
        if (e->gates[j] == gates[i]) {
          e->gates[kept++] = e->gates[j];
          break;
        }
    if (e && kept < e->ngates) {  // taken without some gate: the cycle check changes
      e->ngates = kept;
      if (!kept) set_bit(g_gated, prev, cur, false);
      if (!now.depth) save_stack(&now, 2);
      report = check_cycle(prev, cur, lock, e->gates, kept, &now, text);
    }
  }
  graph_unlock();
  if (report) report_bug("lockdep", "possible circular locking dependency", "%s", text);
  t_busy = false;
}

// One-shot reports of the calling thread's own misuse (recursion, same-class nesting, an
// unlock of a lock it does not hold, too many locks): the text, this thread's held locks and
// its stack.  Shares the latch of the cycle report (the kernel's debug_locks_off).
USLUB_SLOWPATH USLUB_NOINLINE void report_misuse(const char* problem, const void* ip_lock,
                                                 const char* fmt, ...) USLUB_PRINTF(3, 4);
void report_misuse(const char* problem, const void* lock, const char* fmt, ...) {
  if (g_reported.exchange(true)) return;
  bool busy = t_busy;
  t_busy = true;
  stack_trace now;
  save_stack(&now, 2);  // drop report_misuse and the hook
  char text[kReportBuf];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(text, kReportBuf, fmt, ap);
  va_end(ap);
  std::size_t l = n > 0 ? static_cast<std::size_t>(n) : 0;
  if (l >= kReportBuf) l = kReportBuf - 1;
#define put(...) l = appendf(text, l, __VA_ARGS__)
  put("locks held by thread %d:\n", static_cast<int>(gettid()));
  for (int i = 0; i < t_nheld; ++i) {
    put("  #%d %s (%p)", i, t_held[i].cls >= 0 ? class_name(t_held[i].cls) : "-", t_held[i].lock);
    if (t_held[i].count > 1)
      put(" and %d more of its class under %p", t_held[i].count - 1, t_held[i].nest);
    put(" taken at ");
    l = append_pc(text, l, t_held[i].ip);
    put("\n");
  }
  put("stack (lock %p):\n", lock);
#undef put
  text[append_stack(text, l, &now)] = '\0';
  report_bug("lockdep", problem, "%s", text);
  t_busy = busy;
}

held_lock* find_held(const void* lock) {
  for (int i = t_nheld - 1; i >= 0; --i)
    if (t_held[i].lock == lock) return &t_held[i];
  return nullptr;
}

}  // namespace

void lockdep_acquire(const lock_class_key* cls, const void* lock, bool trylock, unsigned subclass,
                     const void* nest) {
  int id = class_id(cls, subclass);
  int n = t_nheld;
  if (!t_busy) {
    for (int i = 0; i < n; ++i) {
      held_lock& h = t_held[i];
      if (USLUB_UNLIKELY(h.lock == lock)) {
        report_misuse("possible recursive locking detected", lock,
                      "thread %d is acquiring %s (%p), which it already holds: it would wait for "
                      "itself forever\n",
                      static_cast<int>(gettid()), id >= 0 ? class_name(id) : "a lock", lock);
        break;
      }
      if (USLUB_UNLIKELY(id >= 0 && h.cls == id)) {
        if (nest && h.nest == nest && find_held(nest)) {  // many of a class under one lock
          ++h.count;
          h.many = true;
          return;
        }
        if (!trylock)  // a trylock cannot wait, so cannot deadlock
          report_misuse("possible recursive locking detected", lock,
                        "thread %d is acquiring %s (%p) while holding %s (%p) of the same "
                        "class: two threads nesting two such locks in opposite orders deadlock "
                        "(annotate a fixed nesting with a subclass, lock_nested(), or many "
                        "locks taken under one serialising lock with lock_nest_lock())\n",
                        static_cast<int>(gettid()), class_name(id), lock, class_name(h.cls),
                        h.lock);
      }
    }
    if (!trylock && id >= 0) {
      for (int i = 0; i < n; ++i) {
        int a = t_held[i].cls;
        if (a < 0 || a == id) continue;
        if (USLUB_UNLIKELY(!has_edge(a, id) || test_bit(g_gated, a, id)))
          add_dependency(a, id, lock);
      }
    }
  }
  if (USLUB_UNLIKELY(n == kMaxHeld || t_untracked)) {
    ++t_untracked;
    if (!g_depth_reported.exchange(true))
      report_misuse("too many locks held", lock,
                    "thread %d holds %d locks (entries) and acquires %p: lockdep tracks %d per "
                    "thread; it stops checking this thread until they are released\n",
                    static_cast<int>(gettid()), n, lock, kMaxHeld);
    return;
  }
  t_held[n] = {lock, __builtin_return_address(0), id, cls, nest, 1, false};
  t_nheld = n + 1;
}

void lockdep_release(const lock_class_key* cls, const void* lock) {
  if (USLUB_UNLIKELY(t_untracked)) {  // locks of the overflow go first (last in, first out)
    --t_untracked;
    return;
  }
  held_lock* h = find_held(lock);
  if (!h && cls)  // one of many of a class held under a nest lock
    for (int i = t_nheld - 1; i >= 0 && !h; --i)
      if (t_held[i].key == cls && t_held[i].many) h = &t_held[i];
  if (USLUB_UNLIKELY(!h)) {
    if (!t_busy)
      report_misuse("bad unlock balance detected", lock,
                    "thread %d is releasing %s (%p), which it does not hold\n",
                    static_cast<int>(gettid()), cls && cls->name ? cls->name : "a lock", lock);
    return;
  }
  if (--h->count > 0) {
    if (h->lock == lock) h->lock = nullptr;  // the others are still held, by class
    return;
  }
  for (held_lock* p = h; p + 1 < t_held + t_nheld; ++p) *p = p[1];
  --t_nheld;
}

bool lockdep_is_held(const void* lock, const lock_class_key* cls, bool locked) {
  if (find_held(lock)) return true;
  if (cls && locked)
    for (int i = 0; i < t_nheld; ++i)
      if (t_held[i].key == cls && t_held[i].many) return true;
  return false;
}

void lockdep_assert_held_fn(const void* lock, const char* what, const char* file, int line,
                            const lock_class_key* cls, bool locked) {
  // While this thread's locks overflowed the table (already reported) it cannot tell.
  if (USLUB_LIKELY(lockdep_is_held(lock, cls, locked)) || t_untracked) return;
  bool busy = t_busy;
  t_busy = true;
  stack_trace now;
  save_stack(&now, 1);  // drop lockdep_assert_held_fn
  char text[kReportBuf];
  std::size_t l = appendf(text, 0, "%s (%p) must be held at %s:%d\n", what, lock, file, line);
  text[append_stack(text, l, &now)] = '\0';
  report_bug("lockdep", "lock not held", "%s", text);
  t_busy = busy;
}

bool lockdep_depends(const lock_class_key* a, const lock_class_key* b) {
  int x = class_id(a), y = class_id(b);
  return x >= 0 && y >= 0 && has_edge(x, y);
}

bool lockdep_depends_by_name(const char* a, const char* b) {
  int x = -1, y = -1;
  for (int i = 0; i < kMaxClasses; ++i) {
    std::uintptr_t v = g_classes[i].load(std::memory_order_acquire);
    if (!v || (v & (kLockdepSubclasses - 1))) continue;
    const char* name = reinterpret_cast<const lock_class_key*>(v)->name;
    if (!name) continue;
    if (!strcmp(name, a)) x = i;
    if (!strcmp(name, b)) y = i;
  }
  return x >= 0 && y >= 0 && has_edge(x, y);
}

void lockdep_rearm() {
  g_reported.store(false, std::memory_order_relaxed);
}

void lockdep_reset() {
  graph_lock();
  for (auto& row : g_edges)
    for (auto& w : row) w.store(0, std::memory_order_relaxed);
  for (auto& row : g_gated)
    for (auto& w : row) w.store(0, std::memory_order_relaxed);
  for (auto& e : g_info) e.key = 0;
  g_reported.store(false, std::memory_order_relaxed);
  graph_unlock();
}

}  // namespace uslub
#endif
