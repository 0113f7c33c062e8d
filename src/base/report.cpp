#include "base/report.hpp"

#include "base/options.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace uslub {
namespace {

std::atomic<report_hook_fn> g_hook{nullptr};
std::atomic<void*> g_hook_arg{nullptr};
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

void write_all(int fd, const char* s, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, s, n);
    if (w <= 0) return;
    s += w;
    n -= static_cast<size_t>(w);
  }
}

void emit(char* buf, size_t len) {
  if (len > 0 && buf[len - 1] != '\n') buf[len++] = '\n';
  buf[len] = '\0';
  write_all(report_fd(), buf, len);
  if (auto hook = g_hook.load(std::memory_order_acquire))
    hook(buf, g_hook_arg.load(std::memory_order_relaxed));
}

constexpr size_t kBuf = 8192;

}  // namespace

void set_report_hook(report_hook_fn fn, void* arg) {
  g_hook_arg.store(arg, std::memory_order_relaxed);
  g_hook.store(fn, std::memory_order_release);
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
