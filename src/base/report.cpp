#include "base/report.hpp"

#include "base/options.hpp"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace uslub {

void write_all(int fd, const char* s, std::size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, s, n);
    if (w <= 0) return;
    s += w;
    n -= static_cast<std::size_t>(w);
  }
}

namespace {

// The report hook: a function and its argument, published together as one pointer to a pair.
// Setters (serialised by g_hook_setting) fill the pair that is not current, publish it, then
// wait until no report is inside a hook (g_hook_users), so that when set_report_hook returns
// no call of the previous hook is running or can still start: its argument may be destroyed.
// The next setter reuses that pair, which no reporter can still hold.  The counter and the
// pointer are seq_cst on both sides (a reporter counts itself before it loads the pointer, a
// setter stores the pointer before it reads the count: one of them sees the other).
struct hook_pair {
  report_hook_fn fn;
  void* arg;
};
hook_pair g_hook_pairs[2];
std::atomic<hook_pair*> g_hook{nullptr};
std::atomic<unsigned long> g_hook_users{0};
std::atomic<bool> g_hook_setting{false};
std::atomic<int> g_abort{-1};  // -1: not yet read from the environment
std::atomic<unsigned long> g_bugs{0};

bool abort_on_bug() {
  int a = g_abort.load(std::memory_order_relaxed);
  if (a < 0) {
    const char* e = getenv("USLUB_DEBUG_ABORT");
    a = option_true(e) ? 1 : 0;
    g_abort.store(a, std::memory_order_relaxed);
  }
  return a == 1;
}

void emit(char* buf, size_t len) {
  if (len > 0 && buf[len - 1] != '\n') buf[len++] = '\n';
  buf[len] = '\0';
  write_all(report_fd(), buf, len);
  if (!g_hook.load(std::memory_order_relaxed)) return;  // (no hook: no shared write)
  g_hook_users.fetch_add(1, std::memory_order_seq_cst);
  if (hook_pair* h = g_hook.load(std::memory_order_seq_cst)) h->fn(buf, h->arg);
  g_hook_users.fetch_sub(1, std::memory_order_release);
}

constexpr size_t kBuf = 8192;

}  // namespace

void set_report_hook(report_hook_fn fn, void* arg) {
  while (g_hook_setting.exchange(true, std::memory_order_acquire)) sched_yield();
  hook_pair* cur = g_hook.load(std::memory_order_relaxed);
  hook_pair* next = nullptr;
  if (fn) {
    next = cur == &g_hook_pairs[0] ? &g_hook_pairs[1] : &g_hook_pairs[0];
    next->fn = fn;
    next->arg = arg;
  }
  g_hook.store(next, std::memory_order_seq_cst);
  while (g_hook_users.load(std::memory_order_seq_cst) != 0) sched_yield();
  g_hook_setting.store(false, std::memory_order_release);
}

void report_prepare_signal_safe() {
  report_fd();
}

void report_bug_signal_safe(const char* text, std::size_t len) {
  g_bugs.fetch_add(1, std::memory_order_relaxed);
  write_all(report_fd_signal_safe(), text, len);
}

void set_abort_on_bug(bool on) {
  g_abort.store(on ? 1 : 0, std::memory_order_relaxed);
}

unsigned long bug_count() {
  return g_bugs.load(std::memory_order_relaxed);
}

// Appends printf output to buf[0..len), never past kBuf; returns the new length.
static size_t vappend(char* buf, size_t len, const char* fmt, va_list ap) {
  int m = vsnprintf(buf + len, kBuf - len, fmt, ap);
  if (m <= 0) return len;
  size_t room = kBuf - len - 1;
  return len + (static_cast<size_t>(m) < room ? static_cast<size_t>(m) : room);
}

static size_t append(char* buf, size_t len, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  len = vappend(buf, len, fmt, ap);
  va_end(ap);
  return len;
}

void report_bug(const char* who, const char* problem, const char* fmt, ...) {
  char buf[kBuf + 2];
  size_t len = append(buf, 0, "uslub: BUG %s: %s\n", who, problem);
  va_list ap;
  va_start(ap, fmt);
  len = vappend(buf, len, fmt, ap);
  va_end(ap);
  g_bugs.fetch_add(1, std::memory_order_relaxed);
  emit(buf, len);
  if (abort_on_bug()) abort();
}

void report_info(const char* fmt, ...) {
  char buf[kBuf + 2];
  size_t len = append(buf, 0, "uslub: ");
  va_list ap;
  va_start(ap, fmt);
  len = vappend(buf, len, fmt, ap);
  va_end(ap);
  emit(buf, len);
}

void panic(const char* fmt, ...) {
  char buf[kBuf + 2];
  size_t len = append(buf, 0, "uslub: panic: ");
  va_list ap;
  va_start(ap, fmt);
  len = vappend(buf, len, fmt, ap);
  va_end(ap);
  emit(buf, len);
  abort();
}

}  // namespace uslub
