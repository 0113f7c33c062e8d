#include "base/stacktrace.hpp"

#include "base/compiler.hpp"

#include <dlfcn.h>
#include <unistd.h>
#include <unwind.h>

#include <cxxabi.h>
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
    auto off = static_cast<unsigned long>(at - reinterpret_cast<std::uintptr_t>(info.dli_fbase));
    if (info.dli_sname)
      snprintf(out, cap, "%s+0x%lx [%s+0x%lx]", info.dli_sname,
               static_cast<unsigned long>(at - reinterpret_cast<std::uintptr_t>(info.dli_saddr)),
               mod, off);
    else
      snprintf(out, cap, "%s+0x%lx", mod, off);
  } else {
    snprintf(out, cap, "%p", pc);
  }
}

}  // namespace

USLUB_NOINLINE unsigned capture_stack(void** pcs, unsigned max, unsigned skip) {
  unwind_state st{pcs, max, 0, skip + 1};
  if (max) _Unwind_Backtrace(unwind_one, &st);
  return st.n;
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
