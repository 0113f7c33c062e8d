// The symboliser KFENCE's fault handler uses (src/base/stacktrace.cpp): where libdw may not run
// (a signal handler, a report inside a report), frames are still named by their function, from
// the module's ELF symbol table read without allocating, never as a bare module+offset; and a
// stack taken in a signal handler starts at the interrupted function.
#include <gtest/gtest.h>

#include <signal.h>

#include <cstring>
#include <string>

#include "base/stacktrace.hpp"

namespace {

// Static: not in .dynsym, so dladdr alone cannot name it.
__attribute__((noinline)) static int local_function_for_symbolizer(int x) {
  asm volatile("" ::: "memory");
  return x * 3 + 1;
}

TEST(Symbolize, WithoutAllocatingNamesStaticFunctionsFromTheSymbolTable) {
  EXPECT_EQ(local_function_for_symbolizer(2), 7);
  auto pc = reinterpret_cast<const char*>(&local_function_for_symbolizer) + 5;  // "return addr"
  char out[512];
  uslub::symbolize_without_allocating(true);
  uslub::symbolize_pc(pc, out, sizeof out);
  uslub::symbolize_without_allocating(false);
  // (mangled: demangling allocates)
  EXPECT_NE(strstr(out, "local_function_for_symbolizer"), nullptr) << out;
  EXPECT_NE(strstr(out, "+0x4 "), nullptr) << out;
  EXPECT_NE(strstr(out, "(kfence_symbolize_test+0x"), nullptr) << out;
  // And with libdw: function and file:line, as slub_debug's reports print them.
  uslub::symbolize_pc(pc, out, sizeof out);
  EXPECT_NE(strstr(out, "local_function_for_symbolizer"), nullptr) << out;
}

void* g_pcs[uslub::kStackDepth];
unsigned g_n;

void on_usr1(int) {
  g_n = uslub::capture_stack_from_signal(g_pcs, uslub::kStackDepth);
}

__attribute__((noinline)) void raise_from_here() {
  raise(SIGUSR1);
  asm volatile("" ::: "memory");
}

TEST(Symbolize, StackFromASignalHandlerStartsAtTheInterruptedCode) {
  struct sigaction sa {
  }, old{};
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, &old);
  raise_from_here();
  sigaction(SIGUSR1, &old, nullptr);
  ASSERT_GT(g_n, 1u);
  std::string frames;
  char out[512];
  for (unsigned i = 0; i < g_n; ++i) {
    uslub::symbolize_pc(g_pcs[i], out, sizeof out);
    frames += std::string(out) + "\n";
  }
  EXPECT_EQ(frames.find("on_usr1"), std::string::npos) << frames;
  EXPECT_NE(frames.find("raise_from_here"), std::string::npos) << frames;
  // Outside a signal handler there is no interrupted frame.
  EXPECT_EQ(uslub::capture_stack_from_signal(g_pcs, uslub::kStackDepth), 0u);
}

}  // namespace
