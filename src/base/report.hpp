// Error reports: the kernel's "BUG <cache>: <problem>" lines, written without allocating.
//
// Every detected misuse (double free, invalid pointer, corruption) goes through report_bug(),
// which writes to stderr (or USLUB_LOG=path), passes the text to a test hook if one is set,
// and aborts if USLUB_DEBUG_ABORT=1 or set_abort_on_bug(true).  Callers then refuse the
// operation instead of corrupting state.
//
// Locking: none on the report path (the log is one write(2) per chunk).  The hook pair is
// published with one pointer; set_report_hook waits for reporters inside the old hook to leave
// (a counter, report.cpp), so it must not be called from a hook.
#pragma once

#include <cstdarg>
#include <cstddef>

#include "base/compiler.hpp"

namespace uslub {

// Receives every report (full text, NUL-terminated). Tests install one to assert on reports.
// set_report_hook publishes fn and arg together and returns only when no call of the hook it
// replaced is still running (arg may be destroyed then); never call it from inside a hook.
// Reports written from a signal handler (report_bug_signal_safe) do not reach the hook.
using report_hook_fn = void (*)(const char* text, void* arg);
void set_report_hook(report_hook_fn fn, void* arg);
void set_abort_on_bug(bool on);

// First line "uslub: BUG <who>: <problem>", then the caller's detail lines.
USLUB_SLOWPATH void report_bug(const char* who, const char* problem, const char* fmt, ...)
    USLUB_PRINTF(3, 4);
// A plain diagnostic line "uslub: <text>" (warnings, statistics).
USLUB_SLOWPATH void report_info(const char* fmt, ...) USLUB_PRINTF(1, 2);
// Unrecoverable internal error: report and abort.
[[noreturn]] USLUB_SLOWPATH void panic(const char* fmt, ...) USLUB_PRINTF(1, 2);

// The descriptor reports go to: USLUB_LOG ("%p" -> pid), else stderr, else (stderr closed)
// the duplicate of stderr taken at load (report_log.cpp).
int report_fd();
// write(2) until all of s[0..n) is out or the descriptor fails (async-signal-safe).
void write_all(int fd, const char* s, std::size_t n);
// The same for a signal handler: only a descriptor report_fd() has already opened.
int report_fd_signal_safe();

// For signal handlers (async-signal-safe): writes a report already formatted by the caller to
// the log (USLUB_LOG, else stderr) and counts it; no formatting, no hook, no lock, no abort.
// report_prepare_signal_safe() opens the log now (getenv/open are not for a handler); call it
// when the handler is installed.
void report_bug_signal_safe(const char* text, std::size_t len);
void report_prepare_signal_safe();

// Number of report_bug() calls since start (tests and fuzzers read it).
unsigned long bug_count();

}  // namespace uslub
