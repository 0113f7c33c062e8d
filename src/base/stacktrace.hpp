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
// its malloc may be uslub's), the frame is named without allocating: dladdr for the module,
// then the module's ELF symbol table (.symtab, or its debug file's under
// /usr/lib/debug/.build-id, then .dynsym) read from a read-only mapping for the function:
// "function+0xoff (module+0xoffset)" (mangled C++ names: demangling allocates).
//
// Locking: the libdw session is created once and used under its own mutex (symbolize_lock); it
// is taken only while printing a report, never on an allocation path, with no uslub lock held.
#pragma once

#include <cstddef>
#include <cstdint>

namespace uslub {

inline constexpr unsigned kStackDepth = 16;

// Fills pcs[0..max) with return addresses, innermost first, skipping capture_stack itself and
// `skip` more frames.  Returns the number of frames.
unsigned capture_stack(void** pcs, unsigned max, unsigned skip);

// Appends "    #i function (file:line)" lines for pcs[0..n) to buf[0..cap), NUL-terminated;
// returns the new length.
std::size_t append_stack(char* buf, std::size_t len, std::size_t cap, void* const* pcs, unsigned n,
                         const char* indent = "    ");

// From a signal handler: the stack of the interrupted code, from the faulting function outwards
// (the handler's own frames dropped).  0 if no signal frame is found.
unsigned capture_stack_from_signal(void** pcs, unsigned max);

// The index of the first frame of pcs[0..n) that is not an allocator entry point or uslub's
// own code (malloc, free, kmalloc, uslub::...): where a report's "called from" starts.
// 0 if every frame is one.
unsigned first_caller_frame(void* const* pcs, unsigned n);

// True if fn (a symbolised function name) is an allocator entry point or uslub's own code.
bool is_allocator_function(const char* fn);
// The function containing pc, from the ELF symbol table of the file at path (loaded at base;
// its separate debug file when it has one): name into out, pc's offset in it into *off.
// Async-signal-safe in practice (open, fstat, mmap, munmap, no allocation, no lock, no stdio):
// the KFENCE fault handler uses it.
bool symbolize_in_file(const char* path, std::uintptr_t base, std::uintptr_t pc, char* out,
                       std::size_t cap, std::uintptr_t* off);

// The function name of a symbolised frame (up to " (" or "+0x").
void function_of(const char* sym, char* out, std::size_t cap);

// Symbolise with dladdr only on this thread (no allocation: signal handlers), or again with libdw.
void symbolize_without_allocating(bool on);

// True while this thread is inside the symboliser (its allocations are the report's own).
bool in_symbolizer();

// Symbolises one code address into out (function and, if known, file:line).
void symbolize_pc(const void* pc, char* out, std::size_t cap);

}  // namespace uslub
