// Statistics for other processes: /dev/shm/uslub.<pid> (layout and protocol: stats_shm.hpp),
// read by `uslub stat PID` and `uslub top PID`.  On with USLUB_STATS_SHM=1, which `uslub run`
// sets (unless the user set it): the library alone starts no thread, because a thread changes
// what a program may do (unshare(CLONE_NEWUSER) and setns refuse a multithreaded process, so
// `unshare -U` would fail under uslub).
//
// A publisher thread, started when the library is loaded (all signals blocked, so the
// program's signals never land on it), creates the segment and then sleeps on its `request`
// word (a shared futex) until a reader asks.  Each request costs one snapshot (stats.cpp:
// slab_mutex, one list_lock or barn lock at a time, the page allocator's zone locks), taken
// into the thread's own buffers and copied into the segment under the seqcount.  Nobody asks:
// no work at all.  The allocation and free paths never touch the segment.
//
// The segment is removed by a destructor at exit (only by the process that created it: a
// fork child inherits the mapping, not the publisher, and publishes nothing until it execs).
// A process killed by a signal, or ending with _exit, leaves its file: readers check that the
// pid is alive, and every publisher removes the files of dead processes when it starts.
#include "malloc/stats_shm.hpp"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <sched.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>

#include "base/compiler.hpp"
#include "kmalloc/prof.hpp"
#include "slab/stats.hpp"

namespace uslub {
namespace {

int g_owner = 0;  // pid that started the publisher (the one that removes the segment)
// 0 idle, 1 the publisher is creating the segment, 2 created, 3 exiting (no segment after).
// The exit destructor waits out state 1, so a segment is never created after it ran.
std::atomic<int> g_state{0};
char g_name[32];

// The publisher's private copy (the snapshot is taken outside the seqcount).
struct snapshot_buf {
  uslub_stats summary;
  uslub_cache_stats caches[kShmMaxCaches];
  std::uint32_t nr_caches;
  char text[kShmTextBytes];
  char json[kShmJsonBytes];
  std::size_t text_len, json_len;
};

struct text_dst {
  char* buf;
  std::size_t cap, len;
};

void buf_sink(const char* text, std::size_t len, void* arg) {
  auto* d = static_cast<text_dst*>(arg);
  std::size_t room = d->cap - d->len;
  if (len > room) len = room;
  memcpy(d->buf + d->len, text, len);
  d->len += len;
}

int collect_cache(const uslub_cache_stats* cs, void* arg) {
  auto* b = static_cast<snapshot_buf*>(arg);
  if (b->nr_caches == kShmMaxCaches) return 1;
  b->caches[b->nr_caches++] = *cs;
  return 0;
}

void take(snapshot_buf* b) {
  b->summary = uslub_stats{};
  b->summary.version = USLUB_STATS_VERSION;
  b->summary.size = sizeof b->summary;
  stats_snapshot(&b->summary);
  b->nr_caches = 0;
  uslub_cache_stats_for_each(&collect_cache, b);
  text_dst t{b->text, sizeof b->text, 0};
  stats_report(0, &buf_sink, &t);  // empty caches hidden, as USLUB_STATS=1
  b->text_len = t.len;
  text_dst j{b->json, sizeof b->json, 0};
  stats_report(USLUB_STATS_JSON | USLUB_STATS_ALL, &buf_sink, &j);
  b->json_len = j.len;
}

void publish(stats_shm* m, const snapshot_buf* b) {
  std::uint32_t s = m->seq.load(std::memory_order_relaxed);
  m->seq.store(s + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  m->summary = b->summary;
  m->nr_caches = b->nr_caches;
  memcpy(m->caches, b->caches, b->nr_caches * sizeof b->caches[0]);
  memcpy(m->text, b->text, b->text_len);
  memcpy(m->json, b->json, b->json_len);
  m->text_len = b->text_len;
  m->json_len = b->json_len;
  m->seq.store(s + 2, std::memory_order_release);
  m->generation.fetch_add(1, std::memory_order_release);
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&m->generation), FUTEX_WAKE, INT32_MAX,
          nullptr, nullptr, 0);
}

// `uslub profile PID`: the heap profile to the file the reader named.
void write_profile(stats_shm* m) {
  char path[sizeof m->prof_path];
  memcpy(path, m->prof_path, sizeof path);
  path[sizeof path - 1] = '\0';
  int result = 0;
  if (!prof_enabled()) {
    result = ENOTSUP;
  } else if (int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644); fd < 0) {
    result = errno;
  } else {
    prof_write(fd);
    close(fd);
  }
  m->prof_result = result;
  m->prof_done.fetch_add(1, std::memory_order_release);
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&m->prof_done), FUTEX_WAKE, INT32_MAX,
          nullptr, nullptr, 0);
}

stats_shm* create_segment() {
  int fd = shm_open(g_name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return nullptr;
  if (ftruncate(fd, sizeof(stats_shm)) != 0) {
    close(fd);
    shm_unlink(g_name);
    return nullptr;
  }
  void* p = mmap(nullptr, sizeof(stats_shm), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) {
    shm_unlink(g_name);
    return nullptr;
  }
  auto* m = static_cast<stats_shm*>(p);  // zero-filled by ftruncate
  m->version = kShmVersion;
  m->size = sizeof(stats_shm);
  m->pid = g_owner;
  std::atomic_thread_fence(std::memory_order_release);
  memcpy(m->magic, kShmMagic, sizeof m->magic);  // last: a reader checks it first
  return m;
}

// Segments of processes that are gone: a program that ends with _exit (dash does) runs no
// destructor, so its file stays; each publisher removes those it may (same owner) when it
// starts.
void sweep_dead_segments() {
  DIR* d = opendir("/dev/shm");
  if (!d) return;
  while (dirent* e = readdir(d)) {
    if (strncmp(e->d_name, "uslub.", 6) != 0) continue;
    char* end;
    long pid = strtol(e->d_name + 6, &end, 10);
    if (*end || pid <= 0 || pid == g_owner) continue;
    if (kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    char name[32];
    stats_shm_name(name, sizeof name, static_cast<int>(pid));
    shm_unlink(name);
  }
  closedir(d);
}

void* publisher(void*) {
  int idle = 0;
  if (!g_state.compare_exchange_strong(idle, 1)) return nullptr;  // exiting already
  stats_shm* m = create_segment();
  g_state.store(m ? 2 : 0);
  if (!m) return nullptr;
  sweep_dead_segments();
  void* mem = mmap(nullptr, sizeof(snapshot_buf), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return nullptr;
  auto* b = static_cast<snapshot_buf*>(mem);
  std::uint32_t seen = 0;
  for (;;) {
    std::uint32_t req = m->request.load(std::memory_order_acquire);
    if (req == seen) {
      syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&m->request), FUTEX_WAIT, req, nullptr,
              nullptr, 0);
      continue;
    }
    seen = req;
    take(b);
    publish(m, b);
    if (m->prof_wanted.exchange(0, std::memory_order_acq_rel)) write_profile(m);
  }
  return nullptr;
}

bool shm_enabled() {
  const char* v = getenv("USLUB_STATS_SHM");
  return v && (!strcmp(v, "1") || !strcasecmp(v, "yes") || !strcasecmp(v, "on") ||
               !strcasecmp(v, "true"));
}

__attribute__((constructor)) void stats_shm_start() {
  if (!shm_enabled()) return;
  g_owner = getpid();
  stats_shm_name(g_name, sizeof g_name, g_owner);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 256 << 10);
  pthread_t t;
  if (pthread_create(&t, &attr, &publisher, nullptr) == 0)
    pthread_setname_np(t, "uslub-stats");
  else
    g_owner = 0;
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

__attribute__((destructor)) void stats_shm_stop() {
  if (g_owner == 0 || g_owner != getpid()) return;
  int s = g_state.load();
  for (;;) {
    if (s == 1) {
      sched_yield();
      s = g_state.load();
      continue;
    }
    if (g_state.compare_exchange_weak(s, 3)) break;
  }
  if (s == 2) shm_unlink(g_name);
}

}  // namespace
}  // namespace uslub
