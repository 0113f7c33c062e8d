// Error reports: the kernel's "BUG <cache>: <problem>" lines, written without allocating.
//
// Every detected misuse (double free, invalid pointer, corruption) goes through report_bug(),
// which writes to stderr (or USLUB_LOG=path), passes the text to a test hook if one is set,
// and aborts if USLUB_DEBUG_ABORT=1 or set_abort_on_bug(true).  Callers then refuse the
// operation instead of corrupting state.
#pragma once

#include <cstdarg>
#include <cstddef>

#include "base/compiler.hpp"

namespace uslub {

// Receives every report (full text, NUL-terminated). Tests install one to assert on reports.
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

// Number of report_bug() calls since start (tests and fuzzers read it).
unsigned long bug_count();

}  // namespace uslub
