// Call stacks for reports: capture without allocating, symbolise when a report is printed.
//
// capture_stack() walks the stack with the unwinder (_Unwind_Backtrace from libgcc_s: it reads
// .eh_frame, so it works in code built without frame pointers, and it does not allocate; glibc's
// backtrace() may, on its first call, which a malloc must not do).
//
// append_stack() prints one line per frame.  Function names and file:line come from libdw
// (elfutils), opened with dlopen on the first report so that uslub does not link it (nor its
// zlib/lzma/bzip2 dependencies) into every process it is preloaded into; when libdw.so.1 is
// missing, or while a report is already being symbolised on this thread (libdw allocates, and
// its malloc may be uslub's), the frame is printed with dladdr: module+offset [symbol+offset],
// ready for `addr2line -Cfie module 0xoffset`.
//
// Locking: the libdw session is created once and used under its own mutex (symbolize_lock); it
// is taken only while printing a report, never on an allocation path, with no uslub lock held.
#pragma once

#include <cstddef>

namespace uslub {

inline constexpr unsigned kStackDepth = 16;

// Fills pcs[0..max) with return addresses, innermost first, skipping capture_stack itself and
// `skip` more frames.  Returns the number of frames.
unsigned capture_stack(void** pcs, unsigned max, unsigned skip);

// Appends "    #i function (file:line)" lines for pcs[0..n) to buf[0..cap), NUL-terminated;
// returns the new length.
std::size_t append_stack(char* buf, std::size_t len, std::size_t cap, void* const* pcs, unsigned n,
                         const char* indent = "    ");

// Symbolise with dladdr only on this thread (no allocation: signal handlers), or again with libdw.
void symbolize_without_allocating(bool on);

// True while this thread is inside the symboliser (its allocations are the report's own).
bool in_symbolizer();

// Symbolises one code address into out (function and, if known, file:line).
void symbolize_pc(const void* pc, char* out, std::size_t cap);

}  // namespace uslub
