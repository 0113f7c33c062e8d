// Three assertion tiers (conventions.md #9):
//   USLUB_CHECK            always on: cheap checks that guard against corruption
//   USLUB_ASSERT           debug builds only (NDEBUG off)
//   USLUB_ASSERT_EXPENSIVE debug builds with USLUB_EXPENSIVE_CHECKS: structure walks
#pragma once

#include "base/compiler.hpp"
#include "base/report.hpp"

#define USLUB_CHECK(cond)                                                   \
  do {                                                                      \
    if (USLUB_UNLIKELY(!(cond)))                                            \
      ::uslub::panic("%s:%d: check failed: %s", __FILE__, __LINE__, #cond); \
  } while (0)

#ifndef NDEBUG
#define USLUB_ASSERT(cond) USLUB_CHECK(cond)
#else
#define USLUB_ASSERT(cond) \
  do {                     \
  } while (0 && (cond))
#endif

#if !defined(NDEBUG) && defined(USLUB_EXPENSIVE_CHECKS)
#define USLUB_ASSERT_EXPENSIVE(cond) USLUB_CHECK(cond)
#else
#define USLUB_ASSERT_EXPENSIVE(cond) \
  do {                               \
  } while (0 && (cond))
#endif
