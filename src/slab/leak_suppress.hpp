// Leak-report suppressions: allocations the exit-time leak report (slub_debug U) leaves out.
//
// Two sets, both matched against the symbolised allocation stack:
//  - the C library's own buffers, built in: stdio stream buffers, locale and message-catalog
//    data, the dynamic linker's link maps and TLS blocks, dlerror's buffer, time-zone data,
//    iconv converters, NSS state, libstdc++'s emergency exception pool.  These live until the
//    process ends by design (glibc frees some of them only for valgrind, in __libc_freeres).
//    A built-in pattern matches only frames of a system library (/lib, /usr/lib) reached from
//    the allocation without passing through other code: a leak in a program's own callback
//    called from inside the C library (a dlopen'd constructor, a qsort comparator) is still
//    reported.
//  - the user's, from the file USLUB_LEAK_SUPPRESS=path: one pattern a line, `leak:pattern` as
//    in LeakSanitizer's files (a line without a `xxx:` prefix is a pattern too; other prefixes,
//    `#` comments and blank lines are ignored).  A pattern is a substring of a frame's function,
//    file name or module path, anywhere in the stack; `*` matches any run of characters.
//
// Not thread-safe: loaded and used by the leak report at exit, on one thread.  No allocation
// (the file is read into static storage; symbolising may allocate, as every report does).
#pragma once

#include <cstddef>

namespace uslub {

// Reads USLUB_LEAK_SUPPRESS (once); reports a file it cannot read.
void leak_suppressions_load();

// True if the allocation stack pcs[0..n) (innermost first) matches a suppression.
bool leak_suppressed(void* const* pcs, unsigned n);

// Number of patterns loaded from USLUB_LEAK_SUPPRESS.
unsigned leak_suppressions_user_count();

}  // namespace uslub
