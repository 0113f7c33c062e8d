// Memory pressure: giving memory back when the system or the memory limit asks for it.
//
// Shrinkers (the kernel's register_shrinker): the layers above register what they can give
// back - the slab layer's empty slabs and per-CPU sheaves (every kmem_cache shrunk), the huge
// block cache - and shrink_all_memory() runs them, drains every per-CPU page list and returns
// every free page to the OS (page_allocator::reclaim(true)).
//
// Who calls it:
//   - the memory limit (USLUB_MEMORY_LIMIT): an allocation that would pass it shrinks and
//     retries before failing.  The page allocator, called by the slab layer, runs only the
//     alloc_safe shrinkers (leaf locks; the slab layer's own shrinking takes locks a caller of
//     the page allocator may hold); the large and huge block paths (large.cpp, huge.cpp), which
//     hold no lock, run all of them;
//   - the pressure monitor (USLUB_PRESSURE=1): a helper thread, started only when the user asks
//     (a malloc library must not start threads behind a program's back), that sleeps in poll()
//     on a PSI trigger (/proc/pressure/memory: "some 100000 1000000", 100 ms of stall in a 1 s
//     window) or, where PSI is not available, on the cgroup v2 memory.events file of the
//     process's cgroup (the kernel notifies a change with POLLPRI; a rise of its "high" or
//     "max" counters is a pressure event), and calls shrink_all_memory(pressure);
//   - malloc_trim (malloc.cpp) does the same work itself.
//
// The monitor thread is also the page allocator's background reclaim worker
// (page_allocator::set_reclaim_worker): a free path that finds a zone due for decay writes to
// its kick eventfd instead of madvising inline, and the thread runs reclaim_background().
//
// fork: the child has no monitor thread.  pressure_fork_child (called by the slab layer's
// child handler once every allocator lock is released, so the new thread's set-up may
// allocate) re-creates it in the child when the parent had one, with fds of its own: an
// inherited PSI trigger or eventfd is the same open file as the parent's, so parent and child
// would take each other's events.  It also frees shrink_mutex, which a pass of a parent's
// thread may have held at the fork (the handlers do not take it).
//
// Locking: the shrinker list is lock-free (push-only); running shrinkers is serialised by
// shrink_mutex, which is taken with no other lock held (outermost, before slab_mutex).  A
// thread that re-enters shrink_all_memory (a shrinker that allocates at the limit) returns 0
// (in_shrink, thread-local).  The monitor thread holds no lock while it sleeps.
#include "page/pressure.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

#include "page/page_alloc.hpp"
#include "sync/spinlock.hpp"

namespace uslub {
namespace {

constinit std::atomic<shrinker*> g_shrinkers{nullptr};
constinit lock_class_key shrink_mutex_key{"shrink_mutex"};
constinit spinlock_t shrink_mutex{&shrink_mutex_key};
__attribute__((tls_model("initial-exec"))) thread_local bool in_shrink = false;
constinit std::atomic<std::uint64_t> g_shrinks[static_cast<unsigned>(shrink_reason::nr)]{};
constinit std::atomic<std::uint64_t> g_events{0}, g_reclaimed{0};
constinit std::atomic<int> g_monitor_state{0};  // 0 none, 1 starting, 2 running, 3 unavailable
// Written before the thread starts (and in a fork child, before it is re-created).
int g_psi_fd = -1, g_cg_fd = -1, g_inject_fd = -1, g_kick_fd = -1;
constinit std::atomic<std::uint64_t> g_background_reclaims{0};
const char* g_source = nullptr;

std::size_t run_shrinkers(shrink_reason why, bool alloc_safe_only) {
  if (in_shrink) return 0;
  in_shrink = true;
  shrink_mutex.lock();
  std::size_t bytes = 0;
  for (shrinker* s = g_shrinkers.load(std::memory_order_acquire); s; s = s->next)
    if (!alloc_safe_only || s->alloc_safe) bytes += s->scan(why);
  shrink_mutex.unlock();
  in_shrink = false;
  return bytes;
}

// Sum of the "high" and "max" counters of a cgroup v2 memory.events file.
std::uint64_t read_cgroup_events(int fd) {
  char buf[512];
  ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return 0;
  buf[n] = 0;
  std::uint64_t sum = 0;
  for (char* line = buf; line && *line;) {
    char* next = strchr(line, '\n');
    if (next) *next++ = 0;
    unsigned long long v;
    if (sscanf(line, "high %llu", &v) == 1 || sscanf(line, "max %llu", &v) == 1) sum += v;
    line = next;
  }
  return sum;
}

// The process's cgroup v2 memory.events, opened, or -1.
int open_cgroup_events() {
  int fd = open("/proc/self/cgroup", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[512];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  if (strncmp(buf, "0::", 3) != 0) return -1;  // not the unified hierarchy
  char* end = strchr(buf, '\n');
  if (end) *end = 0;
  char path[640];
  snprintf(path, sizeof path, "/sys/fs/cgroup%s/memory.events", buf + 3);
  return open(path, O_RDONLY | O_CLOEXEC);
}

// The page allocator's reclaim worker kick (from free paths: one write, no lock, no malloc).
void reclaim_kick() {
  std::uint64_t one = 1;
  (void)!write(g_kick_fd, &one, sizeof one);
}

void* monitor_main(void*) {
  // The thread runs: "running" is now true, and pressure_start may return (see there).
  g_monitor_state.store(2, std::memory_order_release);
  g_monitor_state.notify_all();
  std::uint64_t cg_last = g_cg_fd >= 0 ? read_cgroup_events(g_cg_fd) : 0;
  for (;;) {
    pollfd fds[3];
    int nfds = 0;
    fds[nfds++] = {g_inject_fd, POLLIN, 0};
    fds[nfds++] = {g_kick_fd, POLLIN, 0};
    if (g_psi_fd >= 0)
      fds[nfds++] = {g_psi_fd, POLLPRI, 0};
    else if (g_cg_fd >= 0)
      fds[nfds++] = {g_cg_fd, POLLPRI, 0};
    if (poll(fds, static_cast<nfds_t>(nfds), -1) < 0) continue;
    bool event = false;
    if (fds[0].revents & POLLIN) {
      std::uint64_t v;
      if (read(g_inject_fd, &v, sizeof v) == sizeof v) event = true;
    }
    if (fds[1].revents & POLLIN) {
      std::uint64_t v;
      if (read(g_kick_fd, &v, sizeof v) == sizeof v) {
        global_page_allocator().reclaim_background();
        g_background_reclaims.fetch_add(1, std::memory_order_release);
      }
    }
    if (nfds > 2 && (fds[2].revents & (POLLPRI | POLLERR))) {
      if (g_psi_fd >= 0) {
        event = true;
      } else {
        std::uint64_t now = read_cgroup_events(g_cg_fd);
        if (now != cg_last) event = true;
        cg_last = now;
      }
    }
    if (!event) continue;
    std::size_t got = shrink_all_memory(shrink_reason::pressure);
    g_reclaimed.fetch_add(got, std::memory_order_relaxed);
    g_events.fetch_add(1, std::memory_order_release);  // after the work (tests wait on it)
  }
  return nullptr;
}

}  // namespace

void register_shrinker(shrinker* s) {
  shrinker* head = g_shrinkers.load(std::memory_order_relaxed);
  do s->next = head;
  while (!g_shrinkers.compare_exchange_weak(head, s, std::memory_order_release));
}

std::size_t shrink_alloc_safe(shrink_reason why) {
  if (in_shrink) return 0;
  g_shrinks[static_cast<unsigned>(why)].fetch_add(1, std::memory_order_relaxed);
  return run_shrinkers(why, true);
}

std::size_t shrink_all_memory(shrink_reason why) {
  if (in_shrink) return 0;
  g_shrinks[static_cast<unsigned>(why)].fetch_add(1, std::memory_order_relaxed);
  std::size_t bytes = run_shrinkers(why, false);
  page_allocator& pa = global_page_allocator();
  pa.drain_all_pages();
  return bytes + pa.reclaim(/*force=*/true);
}

pressure_stats pressure_get_stats() {
  pressure_stats st{};
  for (unsigned i = 0; i < static_cast<unsigned>(shrink_reason::nr); ++i)
    st.shrinks[i] = g_shrinks[i].load(std::memory_order_relaxed);
  st.events = g_events.load(std::memory_order_relaxed);
  st.reclaimed = g_reclaimed.load(std::memory_order_relaxed);
  st.source = g_monitor_state.load(std::memory_order_acquire) == 2 ? g_source : nullptr;
  st.background_reclaims = g_background_reclaims.load(std::memory_order_acquire);
  return st;
}

bool pressure_start() {
  int expected = 0;
  if (!g_monitor_state.compare_exchange_strong(expected, 1)) {
    while (g_monitor_state.load(std::memory_order_acquire) == 1) sched_yield();
    return g_monitor_state.load(std::memory_order_acquire) == 2;
  }
  g_inject_fd = eventfd(0, EFD_CLOEXEC);
  g_kick_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);  // a full counter never blocks a free
  // PSI: a trigger fires POLLPRI when memory stalls pass 100 ms within a 1 s window.
  int psi = open("/proc/pressure/memory", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (psi >= 0) {
    static const char trig[] = "some 100000 1000000";
    if (write(psi, trig, sizeof trig) < 0) {
      close(psi);
      psi = -1;
    }
  }
  g_psi_fd = psi;
  g_source = "psi";
  if (psi < 0) {
    g_cg_fd = open_cgroup_events();
    g_source = g_cg_fd >= 0 ? "cgroup" : "injected only";
  }
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 << 10);
  // The helper must not take the program's signals.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  bool ok =
      g_inject_fd >= 0 && g_kick_fd >= 0 && pthread_create(&t, &attr, monitor_main, nullptr) == 0;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  pthread_attr_destroy(&attr);
  if (ok) {
    // Wait until the thread runs its own code: a thread still starting may be inside the
    // process's malloc (the C library's and a sanitizer runtime's thread set-up allocate), and
    // a fork then would give the child that malloc's lock held by a thread it does not have.
    g_monitor_state.wait(1, std::memory_order_acquire);
    pthread_setname_np(t, "uslub-pressure");
    global_page_allocator().set_reclaim_worker(&reclaim_kick);
  } else {
    g_monitor_state.store(3, std::memory_order_release);  // (a running thread stores 2 itself)
  }
  return ok;
}

void pressure_fork_child() {
  // shrink_mutex is not taken by the fork handlers (a pass may run for long, and it is
  // outermost): a thread of the parent may have been inside a pass (the monitor on an event,
  // malloc_trim, an allocation at the memory limit).  That thread does not exist here, and
  // what the shrinkers change is guarded by the locks the handlers did take, so the pass just
  // stops where it was: the mutex is free, as the slab layer's walker mutex is.
  new (&shrink_mutex) spinlock_t(&shrink_mutex_key);
  int state = g_monitor_state.load(std::memory_order_acquire);
  if (state != 1 && state != 2) return;  // no monitor (or none possible) in the parent
  // Only this thread exists: the parent's monitor (and a thread that was starting one) is gone.
  global_page_allocator().set_reclaim_worker(nullptr);
  for (int* fd : {&g_psi_fd, &g_cg_fd, &g_inject_fd, &g_kick_fd}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
  g_source = nullptr;
  g_monitor_state.store(0, std::memory_order_release);
  pressure_start();
}

void pressure_init_from_env() {
  if (g_monitor_state.load(std::memory_order_acquire) != 0) return;
  if (platform::env_size("USLUB_PRESSURE", 0) == 1) pressure_start();
}

bool pressure_inject() {
  if (g_monitor_state.load(std::memory_order_acquire) != 2) return false;
  std::uint64_t one = 1;
  return write(g_inject_fd, &one, sizeof one) == sizeof one;
}

}  // namespace uslub
