// Every USLUB_* environment variable: its kind, default and one line of meaning.  The library
// checks the environment against this table at load (options.cpp), `uslub options` prints it
// (tools/uslub_tool.cpp) and docs/guide.md carries the same table (a test compares them).
// A new option is added here first.
#pragma once

namespace uslub {

enum class opt_kind {
  boolean,  // yes/true/on/1, no/false/off/0
  size,     // bytes: digits with an optional K/M/G/T suffix (powers of 1024)
  number,   // digits
  choice,   // one of `choices` ('|'-separated)
  text,     // anything (checked by its reader: USLUB_DEBUG, USLUB_FAILSLAB, paths)
  tooling,  // read by the project's scripts and tests, not by the library: never listed
};

struct opt_desc {
  const char* name;
  opt_kind kind;
  const char* def;      // the default, as a user would write it
  const char* choices;  // choice: the accepted words; boolean: extra words accepted
  const char* meaning;
};

inline constexpr opt_desc kOptions[] = {
    {"USLUB_STATS", opt_kind::choice, "0", "0|1|all|json",
     "statistics at exit: summary + slabinfo (1), with empty caches (all), as JSON (json)"},
    {"USLUB_STATS_SHM", opt_kind::boolean, "0", "",
     "publish statistics in /dev/shm/uslub.<pid> for `uslub stat` / `uslub top` (a thread; "
     "`uslub run` sets 1)"},
    {"USLUB_LOG", opt_kind::text, "", "",
     "write reports (BUG, leaks, statistics) to this file instead of stderr; %p is the pid"},
    {"USLUB_VERBOSE", opt_kind::boolean, "0", "", "print the settings in effect at start-up"},
    {"USLUB_DEBUG", opt_kind::text, "", "",
     "slub_debug: F sanity checks, Z red zones, P poisoning, U owner tracking [,caches][;...]"},
    {"USLUB_DEBUG_ABORT", opt_kind::boolean, "0", "", "abort() after the first BUG report"},
    {"USLUB_LEAK_REPORT", opt_kind::boolean, "1", "",
     "with USLUB_DEBUG=U: report objects never freed at exit, grouped by allocation stack"},
    {"USLUB_LEAKS", opt_kind::choice, "all", "all|unreachable",
     "leak report: every object never freed (all), or only those no pointer in data, bss, the "
     "exiting thread's stack and TLS or a reachable object points to (unreachable)"},
    {"USLUB_LEAK_SUPPRESS", opt_kind::text, "", "",
     "leak report: a file of suppressions, one `leak:pattern` (function, file or library "
     "substring, * wildcard) a line"},
    {"USLUB_NUMA_BIND", opt_kind::boolean, "1", "",
     "bind each node's memory sections to their node (mbind MPOL_PREFERRED); 0 leaves placement "
     "to first touch"},
    {"USLUB_PRESSURE", opt_kind::boolean, "0", "",
     "a helper thread waits for memory pressure (PSI trigger, else cgroup v2 memory.events) and "
     "shrinks every cache, drains the per-CPU lists and returns free memory"},
    {"USLUB_LOCK_HOLD_STATS", opt_kind::boolean, "0", "cpu",
     "record how long each shared lock class is held (histogram and longest hold; lock "
     "statistics); cpu also in thread CPU time (preempted holds told apart)"},
    {"USLUB_DOUBLE_FREE", opt_kind::boolean, "1", "strict",
     "double-free check of free: 1 in a row + sampled 1/64 + at flush, strict every free, 0 "
     "in a row only"},
    {"USLUB_KFENCE_SAMPLE", opt_kind::number, "0", "",
     "KFENCE: one allocation in N (per thread) on a guard page; 0 off"},
    {"USLUB_KFENCE_POOL_PAGES", opt_kind::number, "255", "", "KFENCE pool size in objects"},
    {"USLUB_FAILSLAB", opt_kind::text, "", "",
     "fault injection: probability%,interval,times (caches with the A flag)"},
    {"USLUB_PROF_SAMPLE", opt_kind::size, "0", "",
     "heap profiling: one sampled allocation per this many bytes on average (512K is usual); "
     "0 off"},
    {"USLUB_PROF", opt_kind::text, "", "",
     "write the heap profile (google-pprof's heap format) to this file at exit; %p is the pid"},
    {"USLUB_MEMORY_LIMIT", opt_kind::size, "0", "",
     "fail allocations (NULL, ENOMEM) above this many committed bytes; 0 no limit"},
    {"USLUB_DECAY_MS", opt_kind::number, "500", "",
     "idle free memory goes back to the OS after this many milliseconds"},
    {"USLUB_RETAIN", opt_kind::size, "64M", "",
     "free memory kept resident per zone regardless of decay (0: no bound)"},
    {"USLUB_DECOMMIT", opt_kind::choice, "dontneed", "dontneed|free",
     "how memory goes back to the OS: MADV_DONTNEED or MADV_FREE"},
    {"USLUB_THP", opt_kind::choice, "2", "0|1|2",
     "transparent huge pages: 0 never, 1 always, 2 once the heap passes USLUB_THP_MIN "
     "(unset: 2, or 0 on a VM whose host discards free huge pages)"},
    {"USLUB_THP_MIN", opt_kind::size, "16M", "", "heap size from which new memory gets THP"},
    {"USLUB_PCP_BATCH", opt_kind::number, "0", "",
     "pages moved at once between per-CPU page lists and zones (0: automatic)"},
    {"USLUB_PCP_HIGH", opt_kind::number, "0", "",
     "pages a per-CPU page list holds before it drains (0: automatic)"},
    {"USLUB_NOMERGE", opt_kind::boolean, "0", "", "never merge caches of compatible geometry"},
    {"USLUB_FASTPATH", opt_kind::choice, "sheaf", "sheaf|cpuslab",
     "per-CPU fast path: sheaves (object arrays) or the classic per-CPU slab"},
    {"USLUB_RSEQ", opt_kind::boolean, "1", "",
     "restartable sequences on the fast paths (0: the locked fallback)"},
    // The project's scripts and tests (never read by the library).
    {"USLUB_TEST_QUICK", opt_kind::tooling, "", "", ""},
    {"USLUB_TEST_SIZE", opt_kind::tooling, "", "", ""},
    {"USLUB_STRESS_SCALE", opt_kind::tooling, "", "", ""},
    {"USLUB_DEBUG_TEST_CHILD", opt_kind::tooling, "", "", ""},
    {"USLUB_VALGRIND_CHILD", opt_kind::tooling, "", "", ""},
    {"USLUB_STATS_TEST_CHILD", opt_kind::tooling, "", "", ""},
    {"USLUB_PEERS", opt_kind::tooling, "", "", ""},
    {"USLUB_SANITIZE", opt_kind::tooling, "", "", ""},
    {"USLUB_TSAN", opt_kind::tooling, "", "", ""},
    {"USLUB_ASAN", opt_kind::tooling, "", "", ""},
    {"USLUB_FUZZ", opt_kind::tooling, "", "", ""},
    {"USLUB_BENCH_DEBUG_LETTERS", opt_kind::tooling, "", "", ""},
};

}  // namespace uslub
