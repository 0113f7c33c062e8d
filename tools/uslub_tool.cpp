// uslub-tool: the compiled half of the `uslub` command (tools/uslub.in calls it).
//   uslub-tool stat PID [--json]       a running process's summary and slabinfo table, once
//   uslub-tool top PID [--interval S] [--iterations N]
//                                       slabtop-like live view sorted by active size; q quits
//   uslub-tool profile PID [-o FILE]   the process's heap profile now (USLUB_PROF_SAMPLE on)
//   uslub-tool options [--markdown]    every USLUB_* option with its default and meaning
// stat and top read /dev/shm/uslub.<pid> (layout and protocol: src/malloc/stats_shm.hpp).
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "base/options_table.hpp"
#include "malloc/stats_shm.hpp"

using uslub::stats_shm;

namespace {

[[noreturn]] void die(const std::string& msg, int code = 1) {
  fprintf(stderr, "uslub: %s\n", msg.c_str());
  exit(code);
}

stats_shm* attach(int pid) {
  if (kill(pid, 0) != 0 && errno == ESRCH) die("no process " + std::to_string(pid));
  char name[32];
  uslub::stats_shm_name(name, sizeof name, pid);
  int fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
  if (fd < 0)
    die("process " + std::to_string(pid) + " publishes no statistics (/dev/shm" + name + ": " +
        strerror(errno) + "); is it running on uslub (uslub run), with USLUB_STATS_SHM not 0?");
  void* p = mmap(nullptr, sizeof(stats_shm), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) die(std::string("cannot map the statistics: ") + strerror(errno));
  auto* m = static_cast<stats_shm*>(p);
  if (memcmp(m->magic, uslub::kShmMagic, sizeof m->magic) != 0 ||
      m->version != uslub::kShmVersion || m->size != sizeof(stats_shm) || m->pid != pid)
    die("/dev/shm" + std::string(name) + " is not a uslub statistics segment of this version");
  return m;
}

// Asks the process for a fresh snapshot and waits up to 5 s for it.
void refresh(stats_shm* m) {
  std::uint64_t gen = m->generation.load(std::memory_order_acquire);
  m->request.fetch_add(1, std::memory_order_release);
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&m->request), FUTEX_WAKE, 1, nullptr, nullptr,
          0);
  for (int i = 0; i < 500; ++i) {
    std::uint64_t now = m->generation.load(std::memory_order_acquire);
    if (now != gen) return;
    timespec ts{0, 10 * 1000 * 1000};
    syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&m->generation), FUTEX_WAIT,
            static_cast<std::uint32_t>(now), &ts, nullptr, 0);
  }
  die("the process did not answer within 5 s");
}

struct copy {
  uslub_stats summary;
  std::vector<uslub_cache_stats> caches;
  std::string text, json;
};

// A seqcount read of the segment.
copy read_snapshot(stats_shm* m) {
  copy c;
  for (int attempt = 0; attempt < 1000; ++attempt) {
    std::uint32_t s1 = m->seq.load(std::memory_order_acquire);
    if (s1 & 1) {
      usleep(1000);
      continue;
    }
    c.summary = m->summary;
    std::uint32_t n = std::min<std::uint32_t>(m->nr_caches, uslub::kShmMaxCaches);
    c.caches.assign(m->caches, m->caches + n);
    std::size_t tl = std::min<std::size_t>(m->text_len, sizeof m->text);
    std::size_t jl = std::min<std::size_t>(m->json_len, sizeof m->json);
    c.text.assign(m->text, tl);
    c.json.assign(m->json, jl);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (m->seq.load(std::memory_order_relaxed) == s1) return c;
  }
  die("the statistics kept changing while being read");
}

std::string human(unsigned long long v) {
  static const char* const units[] = {"B", "K", "M", "G", "T"};
  double d = static_cast<double>(v);
  int u = 0;
  while (d >= 1024.0 && u < 4) {
    d /= 1024.0;
    ++u;
  }
  char buf[32];
  if (u == 0)
    snprintf(buf, sizeof buf, "%lluB", v);
  else
    snprintf(buf, sizeof buf, "%.1f%s", d, units[u]);
  return buf;
}

int cmd_stat(int pid, bool json) {
  stats_shm* m = attach(pid);
  refresh(m);
  copy c = read_snapshot(m);
  const std::string& out = json ? c.json : c.text;
  fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

// Asks the process to write its heap profile to path (made absolute: the process has its own
// working directory).
int cmd_profile(int pid, std::string path) {
  if (path.empty()) path = "uslub-heap." + std::to_string(pid);
  if (path[0] != '/') {
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd)) die("cannot get the working directory");
    path = std::string(cwd) + "/" + path;
  }
  stats_shm* m = attach(pid);
  if (path.size() >= sizeof m->prof_path) die("profile path too long", 2);
  std::uint64_t done = m->prof_done.load(std::memory_order_acquire);
  memcpy(m->prof_path, path.c_str(), path.size() + 1);
  m->prof_wanted.store(1, std::memory_order_release);
  refresh(m);
  for (int i = 0; i < 500 && m->prof_done.load(std::memory_order_acquire) == done; ++i) {
    timespec ts{0, 10 * 1000 * 1000};
    syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&m->prof_done), FUTEX_WAIT,
            static_cast<std::uint32_t>(done), &ts, nullptr, 0);
  }
  if (m->prof_done.load(std::memory_order_acquire) == done)
    die("the process did not write its profile within 5 s");
  if (m->prof_result == ENOTSUP)
    die("process " + std::to_string(pid) +
        " does not profile: start it with USLUB_PROF_SAMPLE=512K (uslub run --prof=512K)");
  if (m->prof_result != 0) die(path + ": " + strerror(m->prof_result));
  printf("%s\n", path.c_str());
  return 0;
}

termios g_saved_tty;
bool g_raw = false;
void restore_tty() {
  if (g_raw) tcsetattr(0, TCSANOW, &g_saved_tty);
}

int cmd_top(int pid, double interval, long iterations) {
  stats_shm* m = attach(pid);
  bool tty_out = isatty(1);
  if (isatty(0) && tcgetattr(0, &g_saved_tty) == 0) {
    termios raw = g_saved_tty;
    raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
    raw.c_cc[VMIN] = 0;
    raw.c_cc[VTIME] = 0;
    if (tcsetattr(0, TCSANOW, &raw) == 0) {
      g_raw = true;
      atexit(restore_tty);
    }
  }
  bool stdin_open = true;
  for (long it = 0; iterations <= 0 || it < iterations; ++it) {
    if (kill(pid, 0) != 0 && errno == ESRCH) {
      printf("uslub: process %d exited\n", pid);
      return 0;
    }
    refresh(m);
    copy c = read_snapshot(m);
    std::sort(c.caches.begin(), c.caches.end(), [](const auto& a, const auto& b) {
      unsigned long long x = a.active_objs * a.size_class, y = b.active_objs * b.size_class;
      return x != y ? x > y : strcmp(a.name, b.name) < 0;
    });
    std::string out;
    if (tty_out) out += "\033[H\033[2J";
    const uslub_stats& s = c.summary;
    char line[512];
    snprintf(line, sizeof line,
             "uslub top - pid %d   allocated %s (peak %s)   active %s   resident %s   committed "
             "%s   rss %s\n",
             pid, human(s.allocated).c_str(), human(s.peak_allocated).c_str(),
             human(s.active).c_str(), human(s.resident).c_str(), human(s.committed).c_str(),
             human(s.rss).c_str());
    out += line;
    snprintf(line, sizeof line, " metadata %s   returned to the OS %s   sheaves %s   huge %s%s\n\n",
             human(s.metadata).c_str(), human(s.returned).c_str(), human(s.sheaf_bytes).c_str(),
             human(s.huge_bytes).c_str(), g_raw ? "   (q quits)" : "");
    out += line;
    snprintf(line, sizeof line, "%9s %9s %5s %8s %7s %6s %9s %9s  %s\n", "OBJS", "ACTIVE", "USE",
             "OBJ SIZE", "SLABS", "OBJ/SL", "SHEAF", "ACT SIZE", "NAME");
    out += line;
    int rows = 0;
    for (const auto& cs : c.caches) {
      if (cs.num_objs == 0 && cs.sheaf_objs == 0) continue;
      unsigned use = cs.num_objs ? static_cast<unsigned>(cs.active_objs * 100 / cs.num_objs) : 0;
      snprintf(line, sizeof line, "%9llu %9llu %4u%% %8u %7llu %6u %9llu %9s  %s\n",
               static_cast<unsigned long long>(cs.num_objs),
               static_cast<unsigned long long>(cs.active_objs), use, cs.size_class,
               static_cast<unsigned long long>(cs.num_slabs), cs.objects_per_slab,
               static_cast<unsigned long long>(cs.sheaf_objs),
               human(cs.active_objs * cs.size_class).c_str(), cs.name);
      out += line;
      if (tty_out && ++rows >= 40) break;
    }
    if (!tty_out) out += "\n";
    fwrite(out.data(), 1, out.size(), stdout);
    fflush(stdout);
    if (iterations > 0 && it + 1 >= iterations) break;
    // Wait for the interval or a key: q quits.
    timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
      timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      double left = interval - (now.tv_sec - start.tv_sec) - (now.tv_nsec - start.tv_nsec) / 1e9;
      if (left <= 0) break;
      pollfd p{0, POLLIN, 0};
      int r = poll(&p, stdin_open ? 1 : 0, static_cast<int>(left * 1000) + 1);
      if (r > 0) {
        char ch;
        ssize_t n = read(0, &ch, 1);
        if (n <= 0) {
          stdin_open = false;  // stdin at its end: only the interval or --iterations stop us
          continue;
        }
        if (ch == 'q' || ch == 'Q') return 0;
      }
    }
  }
  return 0;
}

[[noreturn]] void usage(int code) {
  fprintf(code ? stderr : stdout,
          "usage: uslub-tool stat PID [--json]\n"
          "       uslub-tool top PID [--interval SECONDS] [--iterations N]\n"
          "       uslub-tool profile PID [-o FILE]\n"
          "       uslub-tool options [--markdown]\n");
  exit(code);
}

const char* kind_name(uslub::opt_kind k) {
  switch (k) {
    case uslub::opt_kind::boolean:
      return "yes/no";
    case uslub::opt_kind::size:
      return "size";
    case uslub::opt_kind::number:
      return "number";
    case uslub::opt_kind::choice:
      return "choice";
    case uslub::opt_kind::text:
      return "text";
    case uslub::opt_kind::tooling:
      break;
  }
  return "";
}

// The option table; --markdown: the table of docs/guide.md, byte for byte.
int cmd_options(bool markdown) {
  if (markdown) printf("| option | values | default | meaning |\n| --- | --- | --- | --- |\n");
  for (const uslub::opt_desc& o : uslub::kOptions) {
    if (o.kind == uslub::opt_kind::tooling) continue;
    std::string values = o.kind == uslub::opt_kind::choice ? o.choices : kind_name(o.kind);
    const char* def = *o.def ? o.def : "unset";
    if (markdown) {
      std::string meaning;
      for (const char* p = o.meaning; *p; ++p)
        meaning += *p == '|' ? std::string("\\|") : std::string(1, *p);
      for (auto& c : values)
        if (c == '|') c = '/';
      printf("| `%s` | %s | `%s` | %s |\n", o.name, values.c_str(), def, meaning.c_str());
    } else {
      printf("%-24s %-14s default %-9s %s\n", o.name, values.c_str(), def, o.meaning);
    }
  }
  return 0;
}

int parse_pid(const char* s) {
  char* end;
  long v = strtol(s, &end, 10);
  if (*s == '\0' || *end != '\0' || v <= 0 || v > 0x3fffffff) die(std::string("bad pid: ") + s, 2);
  return static_cast<int>(v);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) usage(0);
  if (argc >= 2 && !strcmp(argv[1], "options")) {
    bool markdown = false;
    for (int i = 2; i < argc; ++i) {
      if (!strcmp(argv[i], "--markdown"))
        markdown = true;
      else
        die(std::string("options: unknown option ") + argv[i], 2);
    }
    return cmd_options(markdown);
  }
  if (argc < 3) usage(2);
  std::string cmd = argv[1];
  int pid = parse_pid(argv[2]);
  if (cmd == "stat") {
    bool json = false;
    for (int i = 3; i < argc; ++i) {
      if (!strcmp(argv[i], "--json"))
        json = true;
      else
        die(std::string("stat: unknown option ") + argv[i], 2);
    }
    return cmd_stat(pid, json);
  }
  if (cmd == "profile") {
    std::string out;
    for (int i = 3; i < argc; ++i) {
      std::string a = argv[i];
      if ((a == "-o" || a == "--output") && i + 1 < argc)
        out = argv[++i];
      else if (a.rfind("--output=", 0) == 0)
        out = a.substr(9);
      else
        die("profile: unknown option " + a, 2);
    }
    return cmd_profile(pid, out);
  }
  if (cmd == "top") {
    double interval = 1.0;
    long iterations = 0;
    for (int i = 3; i < argc; ++i) {
      std::string a = argv[i];
      auto value = [&](const std::string& flag) -> const char* {
        if (a.rfind(flag + "=", 0) == 0) return argv[i] + flag.size() + 1;
        if (a == flag && i + 1 < argc) return argv[++i];
        die("top: " + flag + " needs a value", 2);
      };
      if (a.rfind("--interval", 0) == 0) {
        interval = atof(value("--interval"));
        if (interval <= 0) die("top: the interval must be positive", 2);
      } else if (a.rfind("--iterations", 0) == 0 || a == "-n") {
        iterations = atol(value(a == "-n" ? "-n" : "--iterations"));
      } else {
        die("top: unknown option " + a, 2);
      }
    }
    return cmd_top(pid, interval, iterations);
  }
  usage(2);
}
