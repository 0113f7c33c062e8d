// Memory pressure: shrinkers, shrink_all_memory, the memory limit's reclaim, and the optional
// pressure monitor thread (USLUB_PRESSURE=1).  See pressure.cpp.
#pragma once

#include <cstddef>
#include <cstdint>

namespace uslub {

enum class shrink_reason : unsigned { limit, pressure, trim, nr };

// A cache of free memory that can give it back (the kernel's struct shrinker).  scan() frees
// what it can and returns the bytes it released to the page allocator or the OS.
// alloc_safe: scan() takes only leaf locks that no thread holds while it allocates pages, so
// the page allocator may call it from inside a failing allocation (the memory limit).
struct shrinker {
  const char* name;
  std::size_t (*scan)(shrink_reason why);
  bool alloc_safe;
  shrinker* next;  // registration list (written once, before publishing)
};

// Adds s to the shrinkers (lock-free; never removed: s must live for the process).
void register_shrinker(shrinker* s);

// Runs every shrinker, drains the per-CPU page lists and returns every free page of the global
// page allocator to the OS.  Returns the bytes given back.  Context: no lock held (shrinkers
// take the slab layer's locks).  A call made while one runs on this thread returns 0.
std::size_t shrink_all_memory(shrink_reason why);
// Only the alloc_safe shrinkers (from inside the page allocator's failing allocations).
std::size_t shrink_alloc_safe(shrink_reason why);

struct pressure_stats {
  std::uint64_t shrinks[static_cast<unsigned>(shrink_reason::nr)];  // shrink_all_memory runs
  std::uint64_t events;     // pressure events handled (counted once the shrink is done)
  std::uint64_t reclaimed;  // bytes given back by pressure-triggered shrinks
  const char* source;       // what the monitor watches ("psi", "cgroup", nullptr: no monitor)
  std::uint64_t background_reclaims;  // decay passes the monitor ran for the free paths
};
pressure_stats pressure_get_stats();

// Starts the monitor thread if USLUB_PRESSURE is 1 (once; later calls do nothing).
void pressure_init_from_env();
// Starts the monitor thread whatever the environment (tests); true if it runs.
bool pressure_start();
// Makes the monitor act as on a pressure event (tests); false if no monitor runs.
bool pressure_inject();
// fork child handler: re-creates the monitor thread (with fds of its own) if the parent had
// one.  Context: every allocator lock released (the thread's creation allocates).
void pressure_fork_child();

}  // namespace uslub
