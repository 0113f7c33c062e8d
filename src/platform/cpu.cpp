// CPUs, NUMA topology, time, futexes, fork and thread-exit hooks, environment.
//
// Topology is read once from sysfs with raw open/read (no stdio, no malloc: this runs inside
// malloc's own initialisation).  libnuma is not used on this path because its constructor
// allocates; see docs/platform.md.
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <strings.h>
#include <cstdlib>
#include <cstring>

#include "platform/platform.hpp"

namespace uslub::platform {
long get_nprocs_conf_raw();

namespace detail {
bool g_rseq_usable = false;
std::ptrdiff_t g_rseq_offset = 0;
unsigned g_nr_cpu_ids = 0;
}  // namespace detail

namespace {

// Reads a small sysfs file into buf (NUL-terminated).  Returns length or -1.
int read_small_file(const char* path, char* buf, int cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  int len = 0;
  while (len < cap - 1) {
    ssize_t n = read(fd, buf + len, static_cast<size_t>(cap - 1 - len));
    if (n <= 0) break;
    len += static_cast<int>(n);
  }
  close(fd);
  buf[len] = '\0';
  return len;
}

// Parses a cpulist ("0-3,8,10-11") calling fn(id) for each id.
template <class Fn>
void parse_cpulist(const char* s, Fn fn) {
  while (*s) {
    if (*s < '0' || *s > '9') {
      ++s;
      continue;
    }
    char* end;
    unsigned long a = strtoul(s, &end, 10), b = a;
    s = end;
    if (*s == '-') b = strtoul(s + 1, &end, 10), s = end;
    for (unsigned long i = a; i <= b && i < kMaxCpus; ++i) fn(static_cast<unsigned>(i));
  }
}

struct topology {
  unsigned nr_cpus = 1;
  unsigned nr_nodes = 1;
  unsigned short cpu_node[kMaxCpus] = {};
};

constinit topology g_real;
constinit topology g_fake;
std::atomic<const topology*> g_topo{nullptr};

void read_topology(topology* t) {
  char buf[4096];
  unsigned max_cpu = 0;
  if (read_small_file("/sys/devices/system/cpu/possible", buf, sizeof buf) > 0)
    parse_cpulist(buf, [&](unsigned c) { max_cpu = c > max_cpu ? c : max_cpu; });
  else
    max_cpu = static_cast<unsigned>(get_nprocs_conf_raw());
  t->nr_cpus = max_cpu + 1;
  unsigned max_node = 0;
  if (read_small_file("/sys/devices/system/node/possible", buf, sizeof buf) > 0)
    parse_cpulist(buf, [&](unsigned n) { max_node = n > max_node ? n : max_node; });
  t->nr_nodes = max_node + 1 > kMaxNodes ? kMaxNodes : max_node + 1;
  for (unsigned n = 0; n < t->nr_nodes && t->nr_nodes > 1; ++n) {
    char path[64];
    memcpy(path, "/sys/devices/system/node/node", 29);
    int len = 29;
    char digits[8];
    int nd = 0;
    unsigned v = n;
    do digits[nd++] = static_cast<char>('0' + v % 10), v /= 10;
    while (v);
    while (nd) path[len++] = digits[--nd];
    memcpy(path + len, "/cpulist", 9);
    if (read_small_file(path, buf, sizeof buf) > 0)
      parse_cpulist(buf, [&](unsigned c) { t->cpu_node[c] = static_cast<unsigned short>(n); });
  }
}

const topology& topo() {
  const topology* t = g_topo.load(std::memory_order_acquire);
  if (USLUB_LIKELY(t)) return *t;
  // Racing first callers compute the same values; the writes are idempotent.
  static std::atomic<int> once{0};
  int expected = 0;
  if (once.compare_exchange_strong(expected, 1)) {
    read_topology(&g_real);
    __atomic_store_n(&detail::g_nr_cpu_ids, g_real.nr_cpus, __ATOMIC_RELAXED);
    __atomic_store_n(&detail::g_rseq_offset, __rseq_offset, __ATOMIC_RELAXED);
    __atomic_store_n(&detail::g_rseq_usable, __rseq_size > 0,
                     __ATOMIC_RELAXED);  // 20 or 32 depending on glibc; cpu_id is at 4
    g_topo.store(&g_real, std::memory_order_release);
  } else {
    while (!(t = g_topo.load(std::memory_order_acquire))) sched_yield();
  }
  return *g_topo.load(std::memory_order_acquire);
}

}  // namespace

// Used only if sysfs is unreadable (containers without /sys): the kernel's own count.
long get_nprocs_conf_raw() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int last = 0;
    for (int i = 0; i < CPU_SETSIZE; ++i)
      if (CPU_ISSET(i, &set)) last = i;
    return last;
  }
  return 0;
}

unsigned nr_cpu_ids() {
  return topo().nr_cpus;
}
unsigned nr_node_ids() {
  return topo().nr_nodes;
}
int cpu_to_node(unsigned cpu) {
  const topology& t = topo();
  return cpu < kMaxCpus ? t.cpu_node[cpu] : 0;
}
bool rseq_available() {
  topo();
  return __atomic_load_n(&detail::g_rseq_usable, __ATOMIC_RELAXED);
}

void set_fake_topology(unsigned nr_nodes, const int* map, unsigned nr_map) {
  topo();  // g_real read (topo() itself answers with the fake while one is installed)
  const topology& real = g_real;
  if (nr_nodes == 0) {
    g_topo.store(&real, std::memory_order_release);
    return;
  }
  g_fake.nr_cpus = real.nr_cpus;
  g_fake.nr_nodes = nr_nodes;
  for (unsigned c = 0; c < kMaxCpus; ++c)
    g_fake.cpu_node[c] = static_cast<unsigned short>(c < nr_map ? map[c] : 0);
  g_topo.store(&g_fake, std::memory_order_release);
}

namespace detail {
unsigned current_cpu_slow() {
  int cpu = sched_getcpu();
  unsigned n = nr_cpu_ids();
  if (cpu < 0) return 0;
  return static_cast<unsigned>(cpu) < n ? static_cast<unsigned>(cpu)
                                        : static_cast<unsigned>(cpu) % n;
}
}  // namespace detail

void futex_wait(std::atomic<std::uint32_t>* addr, std::uint32_t val) {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(addr), FUTEX_WAIT_PRIVATE, val, nullptr,
          nullptr, 0);
}

void futex_wake(std::atomic<std::uint32_t>* addr, int nr) {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(addr), FUTEX_WAKE_PRIVATE, nr, nullptr,
          nullptr, 0);
}

std::uint64_t monotonic_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ull +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

std::uint64_t coarse_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000ull +
         static_cast<std::uint64_t>(ts.tv_nsec) / 1000000ull;
}

int register_atfork(void (*prepare)(), void (*parent)(), void (*child)()) {
  return pthread_atfork(prepare, parent, child);
}

thread_exit_hook::thread_exit_hook(void (*fn)(void*)) {
  pthread_key_t k;
  ok_ = pthread_key_create(&k, fn) == 0;
  key_ = ok_ ? static_cast<unsigned>(k) : 0;
}

int thread_exit_hook::arm(void* value) {
  if (!ok_) return EAGAIN;
  return pthread_setspecific(static_cast<pthread_key_t>(key_), value);
}

void* thread_exit_hook::armed_value() const {
  return ok_ ? pthread_getspecific(static_cast<pthread_key_t>(key_)) : nullptr;
}

std::uint64_t random_u64() {
  std::uint64_t v = 0;
  if (syscall(SYS_getrandom, &v, sizeof v, 0x1 /* GRND_NONBLOCK */) == sizeof v) return v;
  v = monotonic_ns() ^ reinterpret_cast<std::uintptr_t>(&v);
  v ^= v >> 33;
  v *= 0xff51afd7ed558ccdull;
  return v ^ (v >> 29);
}

pid_t thread_id() {
  return static_cast<pid_t>(syscall(SYS_gettid));
}

std::uint64_t env_size(const char* name, std::uint64_t def) {
  const char* s = getenv(name);
  if (!s || !*s) return def;
  // Switches: yes/true/on and no/false/off as well as 1 and 0 (base/options.cpp warns about
  // anything else).
  if (!strcasecmp(s, "yes") || !strcasecmp(s, "true") || !strcasecmp(s, "on")) return 1;
  if (!strcasecmp(s, "no") || !strcasecmp(s, "false") || !strcasecmp(s, "off")) return 0;
  char* end;
  unsigned long long v = strtoull(s, &end, 10);
  if (end == s) return def;
  switch (*end) {
    case 'k':
    case 'K':
      v <<= 10;
      break;
    case 'm':
    case 'M':
      v <<= 20;
      break;
    case 'g':
    case 'G':
      v <<= 30;
      break;
    case 't':
    case 'T':
      v <<= 40;
      break;
    case '\0':
      break;
    default:
      return def;
  }
  return v;
}

}  // namespace uslub::platform
