#include "base/stacktrace.hpp"

#include "base/compiler.hpp"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <unwind.h>

#include <cxxabi.h>
#include <errno.h>
#include <cstdlib>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>

namespace uslub {
namespace {

struct unwind_state {
  void** pcs;
  unsigned max, n, skip;
};

_Unwind_Reason_Code unwind_one(struct _Unwind_Context* ctx, void* arg) {
  auto* st = static_cast<unwind_state*>(arg);
  auto ip = _Unwind_GetIP(ctx);
  if (!ip) return _URC_END_OF_STACK;
  if (st->skip > 0) {
    --st->skip;
    return _URC_NO_REASON;
  }
  st->pcs[st->n++] = reinterpret_cast<void*>(ip);
  return st->n == st->max ? _URC_END_OF_STACK : _URC_NO_REASON;
}

// From a signal handler: frames before the interrupted one (the handler, the sigreturn
// trampoline) are dropped.  The interrupted frame is the first the unwinder marks as a signal
// frame (ip_before_insn: its IP is the faulting instruction itself, not a return address).
struct signal_unwind_state {
  void** pcs;
  unsigned max, n;
  bool found;
};

_Unwind_Reason_Code unwind_from_signal(struct _Unwind_Context* ctx, void* arg) {
  auto* st = static_cast<signal_unwind_state*>(arg);
  int before_insn = 0;
  auto ip = _Unwind_GetIPInfo(ctx, &before_insn);
  if (!ip) return _URC_END_OF_STACK;
  if (!st->found) {
    if (!before_insn) return _URC_NO_REASON;
    st->found = true;
    ++ip;  // stored like a return address: symbolize_pc looks up ip - 1, the instruction itself
  }
  st->pcs[st->n++] = reinterpret_cast<void*>(ip);
  return st->n == st->max ? _URC_END_OF_STACK : _URC_NO_REASON;
}

// ---- ELF symbol tables, without allocating -------------------------------------------------
// What dladdr cannot name (static and hidden functions, a stripped library's internals): the
// module's own .symtab, or that of its separate debug file (/usr/lib/debug/.build-id/..), read
// from a read-only mapping.  Used where libdw may not run (signal handlers, nested reports).

struct elf_map {
  const unsigned char* p = nullptr;
  std::size_t len = 0;
  ~elf_map() {
    if (p) munmap(const_cast<unsigned char*>(p), len);
  }
  bool open_file(const char* path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(sizeof(ElfW(Ehdr)))) {
      close(fd);
      return false;
    }
    void* m = mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return false;
    p = static_cast<const unsigned char*>(m);
    len = static_cast<std::size_t>(st.st_size);
    const auto* eh = reinterpret_cast<const ElfW(Ehdr)*>(p);
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_shentsize != sizeof(ElfW(Shdr)) ||
        eh->e_shoff + std::size_t{eh->e_shnum} * sizeof(ElfW(Shdr)) > len)
      return false;
    return true;
  }
  const ElfW(Ehdr) * eh() const { return reinterpret_cast<const ElfW(Ehdr)*>(p); }
  const ElfW(Shdr) * sh(unsigned i) const {
    return reinterpret_cast<const ElfW(Shdr)*>(p + eh()->e_shoff) + i;
  }
};

// Looks `rel` (an address relative to the module's load base; absolute for ET_EXEC) up in the
// symbol table of type `type`.
bool elf_lookup(const elf_map& f, unsigned type, std::uintptr_t rel, char* out, std::size_t cap,
                std::uintptr_t* off) {
  const ElfW(Ehdr)* eh = f.eh();
  for (unsigned i = 0; i < eh->e_shnum; ++i) {
    const ElfW(Shdr)* s = f.sh(i);
    if (s->sh_type != type || s->sh_link >= eh->e_shnum || s->sh_entsize != sizeof(ElfW(Sym)) ||
        s->sh_offset + s->sh_size > f.len)
      continue;
    const ElfW(Shdr)* str = f.sh(s->sh_link);
    if (str->sh_offset + str->sh_size > f.len) continue;
    const auto* sym = reinterpret_cast<const ElfW(Sym)*>(f.p + s->sh_offset);
    std::size_t n = s->sh_size / sizeof(ElfW(Sym));
    const ElfW(Sym)* best = nullptr;
    for (std::size_t k = 0; k < n; ++k) {
      unsigned t = ELF64_ST_TYPE(sym[k].st_info);
      if ((t != STT_FUNC && t != STT_GNU_IFUNC) || !sym[k].st_shndx || !sym[k].st_size) continue;
      if (rel < sym[k].st_value || rel - sym[k].st_value >= sym[k].st_size) continue;
      if (sym[k].st_name >= str->sh_size) continue;
      // Aliases share an address: a global name over a local one (__libc_start_main, not
      // __libc_start_main_alias_2).
      if (best && ELF64_ST_BIND(best->st_info) != STB_LOCAL) continue;
      best = &sym[k];
    }
    if (!best) return false;
    const char* name = reinterpret_cast<const char*>(f.p + str->sh_offset + best->st_name);
    std::size_t m = 0;  // (no snprintf: this runs in the KFENCE fault handler)
    for (; cap && m + 1 < cap && name[m] && str->sh_offset + best->st_name + m < f.len; ++m)
      out[m] = name[m];
    if (cap) out[m] = '\0';
    *off = rel - best->st_value;
    return true;
  }
  return false;
}

// The GNU build-id of a module, as hex, for its debug file's path.
bool elf_build_id(const elf_map& f, char* hex, std::size_t cap) {
  const ElfW(Ehdr)* eh = f.eh();
  for (unsigned i = 0; i < eh->e_shnum; ++i) {
    const ElfW(Shdr)* s = f.sh(i);
    if (s->sh_type != SHT_NOTE || s->sh_offset + s->sh_size > f.len) continue;
    std::size_t at = 0;
    while (at + sizeof(ElfW(Nhdr)) <= s->sh_size) {
      const auto* nh = reinterpret_cast<const ElfW(Nhdr)*>(f.p + s->sh_offset + at);
      std::size_t name = (nh->n_namesz + 3) & ~std::size_t{3};
      std::size_t desc = (nh->n_descsz + 3) & ~std::size_t{3};
      const unsigned char* d = f.p + s->sh_offset + at + sizeof(ElfW(Nhdr)) + name;
      if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && nh->n_descsz >= 2 &&
          2 * nh->n_descsz + 1 <= cap && d + nh->n_descsz <= f.p + f.len) {
        for (unsigned b = 0; b < nh->n_descsz; ++b) {
          hex[2 * b] = "0123456789abcdef"[d[b] >> 4];
          hex[2 * b + 1] = "0123456789abcdef"[d[b] & 15];
        }
        hex[2 * nh->n_descsz] = '\0';
        return true;
      }
      at += sizeof(ElfW(Nhdr)) + name + desc;
    }
  }
  return false;
}

bool elf_symbolize(const char* path, std::uintptr_t base, std::uintptr_t pc, char* out,
                   std::size_t cap, std::uintptr_t* off) {
  elf_map f;
  if (!path || !*path || !f.open_file(path)) {
    if (!f.open_file("/proc/self/exe")) return false;  // the main program: dli_fname is argv[0]
  }
  std::uintptr_t rel = f.eh()->e_type == ET_DYN ? pc - base : pc;
  if (elf_lookup(f, SHT_SYMTAB, rel, out, cap, off)) return true;
  char id[128];
  if (elf_build_id(f, id, sizeof id)) {
    char dbg[256];  // /usr/lib/debug/.build-id/xx/rest.debug, without snprintf
    std::size_t m = 0;
    auto put = [&](const char* t, std::size_t most) {
      for (std::size_t k = 0; t[k] && k < most && m + 1 < sizeof dbg; ++k) dbg[m++] = t[k];
    };
    put("/usr/lib/debug/.build-id/", SIZE_MAX);
    put(id, 2);
    put("/", SIZE_MAX);
    put(id + 2, SIZE_MAX);
    put(".debug", SIZE_MAX);
    dbg[m] = '\0';
    elf_map d;
    if (d.open_file(dbg) && elf_lookup(d, SHT_SYMTAB, rel, out, cap, off)) return true;
  }
  return elf_lookup(f, SHT_DYNSYM, rel, out, cap, off);
}

}  // namespace

bool symbolize_in_file(const char* path, std::uintptr_t base, std::uintptr_t pc, char* out,
                       std::size_t cap, std::uintptr_t* off) {
  return elf_symbolize(path, base, pc, out, cap, off);
}

namespace {

// ---- libdw, by dlopen -----------------------------------------------------------------------
// The few entry points of elfutils' libdwfl that we use, declared by hand (libdw-dev is not a
// build dependency).  Dwfl_Callbacks is { find_elf, find_debuginfo, section_address,
// debuginfo_path } in every libdw since 0.1xx.
struct dwfl_callbacks {
  void* find_elf;
  void* find_debuginfo;
  void* section_address;
  char** debuginfo_path;
};
using dwfl_begin_fn = void* (*)(const dwfl_callbacks*);
using dwfl_report_begin_fn = void (*)(void*);
using dwfl_linux_proc_report_fn = int (*)(void*, int);
using dwfl_report_end_fn = int (*)(void*, void*, void*);
using dwfl_addrmodule_fn = void* (*)(void*, std::uint64_t);
using dwfl_module_addrname_fn = const char* (*)(void*, std::uint64_t);
using dwfl_module_getsrc_fn = void* (*)(void*, std::uint64_t);
using dwfl_lineinfo_fn = const char* (*)(void*, std::uint64_t*, int*, int*, std::uint64_t*,
                                         std::uint64_t*);

struct libdw {
  bool tried = false;
  void* dwfl = nullptr;
  dwfl_callbacks callbacks{};
  char* debuginfo_path = nullptr;
  dwfl_report_begin_fn report_begin;
  dwfl_linux_proc_report_fn proc_report;
  dwfl_report_end_fn report_end;
  dwfl_addrmodule_fn addrmodule;
  dwfl_module_addrname_fn addrname;
  dwfl_module_getsrc_fn getsrc;
  dwfl_lineinfo_fn lineinfo;
};

std::mutex symbolize_lock;
libdw g_dw;  // symbolize_lock
__attribute__((tls_model("initial-exec"))) thread_local int t_symbolizing =
    0;  // > 0 while this thread is inside libdw

template <class F>
bool sym(void* h, const char* name, F* out) {
  *out = reinterpret_cast<F>(dlsym(h, name));
  return *out != nullptr;
}

// Context: symbolize_lock.
bool libdw_open() {
  libdw& d = g_dw;
  if (d.tried) return d.dwfl != nullptr;
  d.tried = true;
  void* h = dlopen("libdw.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!h) return false;
  dwfl_begin_fn begin;
  if (!sym(h, "dwfl_begin", &begin) || !sym(h, "dwfl_report_begin", &d.report_begin) ||
      !sym(h, "dwfl_linux_proc_report", &d.proc_report) ||
      !sym(h, "dwfl_report_end", &d.report_end) || !sym(h, "dwfl_addrmodule", &d.addrmodule) ||
      !sym(h, "dwfl_module_addrname", &d.addrname) || !sym(h, "dwfl_module_getsrc", &d.getsrc) ||
      !sym(h, "dwfl_lineinfo", &d.lineinfo))
    return false;
  d.callbacks.find_elf = dlsym(h, "dwfl_linux_proc_find_elf");
  d.callbacks.find_debuginfo = dlsym(h, "dwfl_standard_find_debuginfo");
  d.callbacks.debuginfo_path = &d.debuginfo_path;
  if (!d.callbacks.find_elf || !d.callbacks.find_debuginfo) return false;
  d.dwfl = begin(&d.callbacks);
  if (!d.dwfl) return false;
  d.report_begin(d.dwfl);
  d.proc_report(d.dwfl, getpid());
  d.report_end(d.dwfl, nullptr, nullptr);
  return true;
}

// Context: symbolize_lock.  False if libdw knows nothing of pc.
bool libdw_symbolize(std::uintptr_t pc, char* out, std::size_t cap) {
  libdw& d = g_dw;
  if (!libdw_open()) return false;
  void* mod = d.addrmodule(d.dwfl, pc);
  if (!mod) {  // a module loaded since the session began: report the maps again
    d.report_begin(d.dwfl);
    d.proc_report(d.dwfl, getpid());
    d.report_end(d.dwfl, nullptr, nullptr);
    mod = d.addrmodule(d.dwfl, pc);
    if (!mod) return false;
  }
  const char* fn = d.addrname(mod, pc);
  char* demangled = nullptr;
  if (fn && fn[0] == '_' && fn[1] == 'Z') {
    int status = 0;
    demangled = abi::__cxa_demangle(fn, nullptr, nullptr, &status);
    if (status == 0 && demangled) fn = demangled;
  }
  const char* file = nullptr;
  int line = 0;
  if (void* l = d.getsrc(mod, pc)) file = d.lineinfo(l, nullptr, &line, nullptr, nullptr, nullptr);
  bool ok = fn || file;
  if (file) {
    const char* base = strrchr(file, '/');
    snprintf(out, cap, "%s (%s:%d)", fn ? fn : "??", base ? base + 1 : file, line);
  } else if (fn) {
    snprintf(out, cap, "%s", fn);
  }
  free(demangled);
  return ok;
}

void dladdr_symbolize(const void* pc, char* out, std::size_t cap) {
  Dl_info info{};
  auto at = reinterpret_cast<std::uintptr_t>(pc);
  if (pc && dladdr(pc, &info) && info.dli_fname) {
    const char* mod = strrchr(info.dli_fname, '/');
    mod = mod ? mod + 1 : info.dli_fname;
    if (!*mod) mod = program_invocation_short_name;
    auto base = reinterpret_cast<std::uintptr_t>(info.dli_fbase);
    auto off = static_cast<unsigned long>(at - base);
    char fn[256];
    std::uintptr_t fn_off = 0;
    if (elf_symbolize(info.dli_fname, base, at, fn, sizeof fn, &fn_off))
      snprintf(out, cap, "%s+0x%lx (%s+0x%lx)", fn, static_cast<unsigned long>(fn_off), mod, off);
    else if (info.dli_sname)
      snprintf(out, cap, "%s+0x%lx (%s+0x%lx)", info.dli_sname,
               static_cast<unsigned long>(at - reinterpret_cast<std::uintptr_t>(info.dli_saddr)),
               mod, off);
    else
      snprintf(out, cap, "%s+0x%lx", mod, off);
  } else {
    snprintf(out, cap, "%p", pc);
  }
}

// An allocator entry point or uslub's own code (a report's stack starts at its caller).
constexpr const char* kAllocatorNames[] = {
    "malloc",         "calloc",      "realloc",       "reallocarray",    "free",
    "posix_memalign", "memalign",    "aligned_alloc", "valloc",          "pvalloc",
    "krealloc",       "kmalloc",     "kzalloc",       "kcalloc",         "__kmalloc",
    "kfree",          "kmem_cache_", "operator new",  "operator delete", "uslub::",
    "cfree",          "_ZN5uslub",   "_Znwm",         "_Znam",           "_ZdlPv",
    "_ZdaPv",
};

}  // namespace

USLUB_NOINLINE unsigned capture_stack(void** pcs, unsigned max, unsigned skip) {
  unwind_state st{pcs, max, 0, skip + 1};
  if (max) _Unwind_Backtrace(unwind_one, &st);
  return st.n;
}

unsigned capture_stack_from_signal(void** pcs, unsigned max) {
  signal_unwind_state st{pcs, max, 0, false};
  if (max) _Unwind_Backtrace(unwind_from_signal, &st);
  return st.found ? st.n : 0;
}

bool is_allocator_function(const char* fn) {
  for (const char* a : kAllocatorNames)
    if (strncmp(fn, a, strlen(a)) == 0) return true;
  return false;
}

void function_of(const char* sym, char* out, std::size_t cap) {
  std::size_t n = 0;
  for (const char* p = sym; *p && n + 1 < cap; ++p) {
    if ((p[0] == ' ' && p[1] == '(') || (p[0] == '+' && p[1] == '0' && p[2] == 'x')) break;
    out[n++] = *p;
  }
  out[n] = '\0';
}

unsigned first_caller_frame(void* const* pcs, unsigned n) {
  unsigned i = 0;
  for (; i < n; ++i) {
    char sym[512], fn[256];
    symbolize_pc(pcs[i], sym, sizeof sym);
    function_of(sym, fn, sizeof fn);
    if (!is_allocator_function(fn)) break;
  }
  return i == n ? 0 : i;
}

void symbolize_without_allocating(bool on) {
  t_symbolizing += on ? 1 : -1;  // the libdw path is skipped while > 0
}

bool in_symbolizer() {
  return t_symbolizing > 0;
}

void symbolize_pc(const void* pc, char* out, std::size_t cap) {
  // Return addresses point after the call: look up the call instruction itself.
  auto at = reinterpret_cast<std::uintptr_t>(pc) - 1;
  if (t_symbolizing == 0) {
    ++t_symbolizing;
    bool ok;
    {
      std::lock_guard<std::mutex> g(symbolize_lock);
      ok = libdw_symbolize(at, out, cap);
    }
    --t_symbolizing;
    if (ok) return;
  }
  dladdr_symbolize(reinterpret_cast<const void*>(at), out, cap);
}

std::size_t append_stack(char* buf, std::size_t len, std::size_t cap, void* const* pcs, unsigned n,
                         const char* indent) {
  if (cap == 0) return 0;
  for (unsigned i = 0; i < n && len + 1 < cap; ++i) {
    char sym[512];
    symbolize_pc(pcs[i], sym, sizeof sym);
    int m = snprintf(buf + len, cap - len, "%s#%u %s\n", indent, i, sym);
    if (m <= 0) break;
    len += static_cast<std::size_t>(m);
    if (len >= cap) len = cap - 1;
  }
  buf[len] = '\0';
  return len;
}

}  // namespace uslub
