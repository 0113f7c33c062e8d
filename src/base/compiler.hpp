// Compiler helpers shared by every layer.
#pragma once

#include <cstddef>

#define USLUB_LIKELY(x) __builtin_expect(!!(x), 1)
#define USLUB_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define USLUB_ALWAYS_INLINE inline __attribute__((always_inline))
#define USLUB_NOINLINE __attribute__((noinline))
// A fast path is one short inlined function; each miss tail-calls a cold twin.
#define USLUB_FASTPATH USLUB_ALWAYS_INLINE
#define USLUB_SLOWPATH __attribute__((noinline, cold))
#define USLUB_EXPORT __attribute__((visibility("default")))
// On extern declarations of internal globals: -fvisibility=hidden does not cover declarations,
// so without it GCC reaches such a variable through the GOT (two instructions, not one).
#define USLUB_HIDDEN __attribute__((visibility("hidden")))
#define USLUB_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))

// Starts fetching the cache line of p for writing (x86-64 PREFETCHW, which CPUs without it
// execute as a NOP); never faults, whatever p is.
#if defined(__x86_64__)
#define USLUB_PREFETCH_WRITE(p) asm volatile("prefetchw %0" : : "m"(*(const char*)(p)))
#else
#define USLUB_PREFETCH_WRITE(p) __builtin_prefetch((p), 1, 3)
#endif

#if defined(__SANITIZE_THREAD__)
#define USLUB_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define USLUB_TSAN 1
#endif
#endif
#ifndef USLUB_TSAN
#define USLUB_TSAN 0
#endif

#if defined(__SANITIZE_ADDRESS__)
#define USLUB_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define USLUB_ASAN 1
#endif
#endif
#ifndef USLUB_ASAN
#define USLUB_ASAN 0
#endif

namespace uslub {

inline constexpr std::size_t kCacheLine = 64;
// Two lines: the adjacent-line prefetcher pairs them, so per-CPU data is padded to 128.
inline constexpr std::size_t kDestructiveLine = 128;

USLUB_ALWAYS_INLINE void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

}  // namespace uslub
