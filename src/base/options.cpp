// The environment check: every USLUB_* variable is compared with the option table
// (options_table.hpp) when the library is loaded.  An unknown name or a value its kind does
// not accept gets one warning naming it and the nearest known name or word; the option then
// keeps its default (the readers of each option parse the same forms: platform::env_size
// accepts yes/true/on and no/false/off).  USLUB_VERBOSE=1 prints every option's value in
// effect.  Runs once, from a constructor, before other threads exist; writes with
// report_info (no allocation).
#include "base/options.hpp"

#include <unistd.h>

#include <strings.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "base/options_table.hpp"
#include "base/report.hpp"

extern char** environ;
extern char* program_invocation_short_name;

namespace uslub {
namespace {

// Edit distance of a and b (short strings only: option names and words).
unsigned distance(const char* a, std::size_t la, const char* b, std::size_t lb) {
  if (la > 63) la = 63;
  if (lb > 63) lb = 63;
  unsigned row[64];
  for (std::size_t j = 0; j <= lb; ++j) row[j] = static_cast<unsigned>(j);
  for (std::size_t i = 1; i <= la; ++i) {
    unsigned diag = row[0];
    row[0] = static_cast<unsigned>(i);
    for (std::size_t j = 1; j <= lb; ++j) {
      unsigned up = row[j];
      unsigned sub = diag + (a[i - 1] != b[j - 1]);
      unsigned best = sub < up + 1 ? sub : up + 1;
      row[j] = best < row[j - 1] + 1 ? best : row[j - 1] + 1;
      diag = up;
    }
  }
  return row[lb];
}

bool word_in(const char* v, const char* list, char* nearest, std::size_t nearest_size, bool icase) {
  unsigned best = ~0u;
  for (const char* p = list; *p;) {
    const char* end = strchr(p, '|');
    std::size_t len = end ? static_cast<std::size_t>(end - p) : strlen(p);
    if (strlen(v) == len && (icase ? strncasecmp(v, p, len) : strncmp(v, p, len)) == 0) return true;
    unsigned d = distance(v, strlen(v), p, len);
    if (d < best && len < nearest_size) {
      best = d;
      memcpy(nearest, p, len);
      nearest[len] = '\0';
    }
    p = end ? end + 1 : p + len;
  }
  return false;
}

bool digits_with(const char* v, const char* suffixes) {
  const char* p = v;
  while (*p >= '0' && *p <= '9') ++p;
  if (p == v) return false;
  if (*p == '\0') return true;
  return p[1] == '\0' && strchr(suffixes, *p) != nullptr;
}

const opt_desc* find_option(const char* name, std::size_t len) {
  for (const opt_desc& o : kOptions)
    if (strlen(o.name) == len && strncmp(o.name, name, len) == 0) return &o;
  return nullptr;
}

const opt_desc* nearest_option(const char* name, std::size_t len) {
  const opt_desc* best = nullptr;
  unsigned best_d = ~0u;
  for (const opt_desc& o : kOptions) {
    if (o.kind == opt_kind::tooling) continue;
    unsigned d = distance(name, len, o.name, strlen(o.name));
    if (d < best_d) {
      best_d = d;
      best = &o;
    }
  }
  return best;
}

constexpr const char kBoolWords[] = "1|yes|true|on|0|no|false|off";

// Checks one value; on failure writes what was expected and the nearest word.
bool value_ok(const opt_desc& o, const char* v, char* why, std::size_t size) {
  char nearest[32] = "";
  switch (o.kind) {
    case opt_kind::boolean:
      if (word_in(v, kBoolWords, nearest, sizeof nearest, true)) return true;
      snprintf(why, size, "not a yes/no value (1/yes/true/on, 0/no/false/off; nearest: %s)",
               nearest);
      return false;
    case opt_kind::size:
      if (digits_with(v, "kKmMgGtT")) return true;
      snprintf(why, size, "not a size (digits with an optional K, M, G or T)");
      return false;
    case opt_kind::number:
      if (digits_with(v, "")) return true;
      snprintf(why, size, "not a number");
      return false;
    case opt_kind::choice: {
      if (word_in(v, o.choices, nearest, sizeof nearest, false)) return true;
      // A choice whose words include 0 and 1 is a yes/no switch too.
      char ignored[32];
      if (strstr(o.choices, "0|1") && word_in(v, kBoolWords, ignored, sizeof ignored, true))
        return true;
      snprintf(why, size, "not one of %s (nearest: %s)", o.choices, nearest);
      return false;
    }
    case opt_kind::text:
    case opt_kind::tooling:
      return true;
  }
  return true;
}

__attribute__((constructor(102))) void check_environment() {
  bool verbose = false;
  for (char** e = environ; e && *e; ++e) {
    const char* var = *e;
    if (strncmp(var, "USLUB_", 6) != 0) continue;
    const char* eq = strchr(var, '=');
    if (!eq) continue;
    std::size_t len = static_cast<std::size_t>(eq - var);
    const char* value = eq + 1;
    const opt_desc* o = find_option(var, len);
    if (!o) {
      const opt_desc* near = nearest_option(var, len);
      report_info("unknown option %.*s (did you mean %s?); ignored\n", static_cast<int>(len), var,
                  near ? near->name : "?");
      continue;
    }
    char why[160];
    if (*value && !value_ok(*o, value, why, sizeof why)) {
      report_info("%s=%s: %s; the default %s applies\n", o->name, value, why,
                  *o->def ? o->def : "(unset)");
      continue;
    }
    if (!strcmp(o->name, "USLUB_VERBOSE")) verbose = option_true(value);
  }
  if (verbose) print_settings();
}

}  // namespace

bool option_true(const char* v) {
  return v && (!strcmp(v, "1") || !strcasecmp(v, "yes") || !strcasecmp(v, "true") ||
               !strcasecmp(v, "on"));
}

void print_settings() {
  char buf[6144];
  std::size_t n = 0;
  auto add = [&](const char* fmt, auto... args) {
    if (n >= sizeof buf) return;
    int k = snprintf(buf + n, sizeof buf - n, fmt, args...);
    if (k > 0) n += static_cast<std::size_t>(k);
  };
  add("settings of %s (pid %d):\n",
      program_invocation_short_name ? program_invocation_short_name : "?", getpid());
  for (const opt_desc& o : kOptions) {
    if (o.kind == opt_kind::tooling) continue;
    const char* v = getenv(o.name);
    char why[160];
    bool set = v && *v && value_ok(o, v, why, sizeof why);
    add("  %-24s %-12s %s\n", o.name, set ? v : (*o.def ? o.def : "(unset)"),
        set ? "(set)" : "(default)");
  }
  if (n >= sizeof buf) n = sizeof buf - 1;
  buf[n] = '\0';
  report_info("%s", buf);
}

}  // namespace uslub
