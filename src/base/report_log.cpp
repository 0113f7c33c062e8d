// Where reports go (BUG reports, leak reports, statistics): USLUB_LOG=path when set ("%p" in
// the path becomes the pid, so each process of a tree writes its own file), else stderr.
//
// A program may close stderr before uslub reports at exit (coreutils' close_stdout does), so
// a duplicate of descriptor 2 is taken when the library is loaded (close-on-exec, numbered
// high so that it does not take the descriptor a program expects from its first open) with
// the identity (device, inode) of what it refers to.  A report goes to descriptor 2 while it
// is open, else to the duplicate, if the duplicate still refers to the file it was taken
// from (a program that closed every descriptor and reopened others must not receive the
// report in one of its files).
//
// State: set once by the constructor (before other threads exist) and, for USLUB_LOG, by the
// first report of each process (an atomic published with a CAS: a loser closes its copy).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "base/report.hpp"

namespace uslub {
namespace {

int g_saved_stderr = -1;
dev_t g_saved_dev;
ino_t g_saved_ino;
// The USLUB_LOG descriptor of process g_log_pid (a fork child with "%p" opens its own).
std::atomic<int> g_log_fd{-1};
std::atomic<int> g_log_pid{0};

__attribute__((constructor(101))) void save_stderr() {
  if (const char* path = getenv("USLUB_LOG"); path && *path) return;
  struct stat st;
  if (fstat(2, &st) != 0) return;
  int fd = fcntl(2, F_DUPFD_CLOEXEC, 900);
  if (fd < 0) fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
  if (fd < 0) return;
  g_saved_dev = st.st_dev;
  g_saved_ino = st.st_ino;
  g_saved_stderr = fd;
}

bool same_file(int fd, dev_t dev, ino_t ino) {
  struct stat st;
  return fstat(fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

int open_log(const char* path) {
  char buf[4096];
  std::size_t n = 0;
  for (const char* p = path; *p && n + 24 < sizeof buf; ++p) {
    if (p[0] == '%' && p[1] == 'p') {
      n += static_cast<std::size_t>(snprintf(buf + n, sizeof buf - n, "%d", getpid()));
      ++p;
    } else {
      buf[n++] = *p;
    }
  }
  buf[n] = '\0';
  return open(buf, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

}  // namespace

int report_fd() {
  const char* path = getenv("USLUB_LOG");
  if (path && *path) {
    int pid = getpid();
    int fd = g_log_fd.load(std::memory_order_acquire);
    if (fd >= 0 && (g_log_pid.load(std::memory_order_relaxed) == pid || !strstr(path, "%p")))
      return fd;
    int f = open_log(path);
    if (f < 0) return 2;
    if (!g_log_fd.compare_exchange_strong(fd, f, std::memory_order_acq_rel)) {
      close(f);
      return fd;
    }
    g_log_pid.store(pid, std::memory_order_relaxed);
    return f;
  }
  if (fcntl(2, F_GETFD) != -1) return 2;
  if (g_saved_stderr >= 0 && same_file(g_saved_stderr, g_saved_dev, g_saved_ino))
    return g_saved_stderr;
  return 2;
}

int report_fd_signal_safe() {
  // Only what report_fd() already opened: no getenv, no open (async-signal-safe).
  int fd = g_log_fd.load(std::memory_order_acquire);
  if (fd >= 0) return fd;
  if (fcntl(2, F_GETFD) != -1) return 2;
  return g_saved_stderr >= 0 ? g_saved_stderr : 2;
}

}  // namespace uslub
