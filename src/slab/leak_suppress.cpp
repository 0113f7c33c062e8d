// Leak-report suppressions.  What is suppressed and why: leak_suppress.hpp.
#include "slab/leak_suppress.hpp"

#include <dlfcn.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "base/report.hpp"
#include "base/stacktrace.hpp"

namespace uslub {
namespace {

// The C library's allocations that live as long as the process (function names, substrings).
constexpr const char* kBuiltin[] = {
    "_IO_file_doallocate",   // stdio: a stream's buffer, allocated at its first use
    "_IO_wfile_doallocate",  // ... wide streams
    "setlocale",             // locale data, names and aliases (kept while the locale is in use)
    "_nl_",                  // locale loading and gettext catalogs (_nl_find_locale, ...)
    "textdomain",            // gettext domain names
    "_dl_",                  // ld.so: link maps, search paths, TLS blocks and DTVs
    "dlopen",                // dlopen's and dlmopen's bookkeeping
    "dlerror",               // dlerror's per-thread message buffer
    "tzset",                 // time-zone rules (localtime, mktime, strftime)
    "__tzfile_read",
    "__gconv",  // iconv converters loaded by wide stdio and iconv_open
    "__nss_",   // NSS (getpwnam, getaddrinfo) module state
    "nss_",
    "__cxa_get_globals",  // libstdc++: per-thread exception globals
    "pool::pool",         // libstdc++: the emergency exception-allocation pool
    "std::locale",        // libstdc++: the global locale's facets
    "__libc_early_init",
};

constexpr std::size_t kFileMax = 64 * 1024;
constexpr unsigned kMaxUser = 512;
char g_file[kFileMax + 1];
const char* g_user[kMaxUser];
unsigned g_nr_user = 0;
bool g_loaded = false;

// `pattern` (with `*` wildcards) occurs in text.
bool glob_in(const char* pattern, std::size_t plen, const char* text) {
  const char* t = text;
  std::size_t i = 0;
  while (i < plen) {
    while (i < plen && pattern[i] == '*') ++i;
    std::size_t j = i;
    while (j < plen && pattern[j] != '*') ++j;
    if (j == i) break;
    const char* hit = nullptr;
    for (const char* c = t; *c; ++c)
      if (strncmp(c, pattern + i, j - i) == 0) {
        hit = c;
        break;
      }
    if (!hit) return false;
    t = hit + (j - i);
    i = j;
  }
  return true;
}

bool matches(const char* pattern, const char* name, const char* module) {
  std::size_t n = strlen(pattern);
  return glob_in(pattern, n, name) || (module && glob_in(pattern, n, module));
}

bool is_system_library(const char* module) {
  return module &&
         (strncmp(module, "/lib/", 5) == 0 || strncmp(module, "/lib64/", 7) == 0 ||
          strncmp(module, "/usr/lib/", 9) == 0 || strncmp(module, "/usr/lib64/", 11) == 0);
}

const char* module_of(const void* pc) {
  Dl_info info{};
  if (!dladdr(reinterpret_cast<const void*>(reinterpret_cast<std::uintptr_t>(pc) - 1), &info))
    return nullptr;
  return info.dli_fname;
}

void parse_file(std::size_t len) {
  char* p = g_file;
  char* end = g_file + len;
  while (p < end) {
    char* eol = static_cast<char*>(memchr(p, '\n', static_cast<std::size_t>(end - p)));
    if (!eol) eol = end;
    *eol = '\0';
    if (char* hash = strchr(p, '#')) *hash = '\0';
    while (*p == ' ' || *p == '\t') ++p;
    char* e = p + strlen(p);
    while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) *--e = '\0';
    // "leak:pattern"; another "word:" prefix (race:, thread:, ...) is for another tool.
    char* colon = strchr(p, ':');
    bool other_tool = false;
    if (colon && colon[1] != ':' && (colon == p || colon[-1] != ':')) {
      bool word = colon > p;
      for (char* c = p; c < colon; ++c)
        if (!((*c >= 'a' && *c <= 'z') || *c == '_')) word = false;
      if (word) {
        if (strncmp(p, "leak:", 5) == 0)
          p = colon + 1;
        else
          other_tool = true;
      }
    }
    if (*p && !other_tool && g_nr_user < kMaxUser) g_user[g_nr_user++] = p;
    p = eol + 1;
  }
}

}  // namespace

void leak_suppressions_load() {
  if (g_loaded) return;
  g_loaded = true;
  const char* path = getenv("USLUB_LEAK_SUPPRESS");
  if (!path || !*path) return;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    report_info("USLUB_LEAK_SUPPRESS=%s: cannot open it (%s); no user suppressions\n", path,
                strerror(errno));
    return;
  }
  std::size_t len = 0;
  while (len < kFileMax) {
    ssize_t r = read(fd, g_file + len, kFileMax - len);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    len += static_cast<std::size_t>(r);
  }
  close(fd);
  if (len == kFileMax)
    report_info("USLUB_LEAK_SUPPRESS=%s: only its first %zu bytes are read\n", path, kFileMax);
  g_file[len] = '\0';
  parse_file(len);
}

unsigned leak_suppressions_user_count() {
  return g_nr_user;
}

bool leak_suppressed(void* const* pcs, unsigned n) {
  bool in_system = true;  // still in the run of allocator and system-library frames
  bool past_allocator = false;
  for (unsigned i = 0; i < n; ++i) {
    char sym[512], fn[256];
    symbolize_pc(pcs[i], sym, sizeof sym);
    function_of(sym, fn, sizeof fn);
    const char* module = module_of(pcs[i]);
    for (unsigned k = 0; k < g_nr_user; ++k)
      if (matches(g_user[k], sym, module)) return true;
    if (!in_system) continue;
    if (!past_allocator && is_allocator_function(fn)) continue;
    past_allocator = true;
    if (!is_system_library(module)) {
      in_system = false;
      if (!g_nr_user) return false;
      continue;
    }
    for (const char* b : kBuiltin)
      if (strstr(fn, b)) return true;
  }
  return false;
}

}  // namespace uslub
