// Thread-locals and malloc re-entry (docs/malloc.md): a library loaded with dlopen keeps its
// thread-locals in blocks that glibc's __tls_get_addr allocates (and the DTV that indexes them
// grows) with malloc, so under LD_PRELOAD=libuslub.so malloc runs inside the TLS set-up.  If a
// thread-local that malloc touches were not initial-exec, malloc would call __tls_get_addr from
// there.  Every thread-local the library touches on a malloc path is initial-exec: checked in
// the disassembly, and with a program that dlopens libraries whose thread-locals allocate.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <regex>
#include <string>

#include "process.hpp"

namespace {

using result = uslub::test::sh_result;
using uslub::test::sh;

using uslub::test::read_file;

// Twenty copies of the helper library: twenty TLS modules, more than the 14 DTV slots glibc
// leaves spare, so the DTVs of running threads are resized (malloc) as well.
std::string library_copies() {
  std::string args;
  for (int i = 0; i < 20; ++i) {
    std::string copy = ::testing::TempDir() + "uslub_tls_lib_" + std::to_string(i) + ".so";
    EXPECT_EQ(sh("cp " USLUB_TLS_LIB " " + copy + " && echo done").out, "done\n");
    args += " " + copy;
  }
  return args;
}

void run_under_uslub(const std::string& env) {
  std::string args = library_copies();
  result base = sh(USLUB_TLS_PROG + args + " 2>&1");
  ASSERT_EQ(base.status, 0) << base.out;
  ASSERT_EQ(base.out.rfind("ok ", 0), 0u) << base.out;
  std::string log = ::testing::TempDir() + "uslub_tls.log";
  std::remove(log.c_str());
  for (int round = 0; round < 3; ++round) {
    result ours = sh("LD_PRELOAD=" USLUB_SO_PATH " USLUB_LOG=" + log + " " + env + " " +
                     USLUB_TLS_PROG + args + " 2>&1");
    EXPECT_EQ(ours.status, 0) << env << ": " << ours.out;
    EXPECT_EQ(ours.out, base.out) << env;
  }
  std::string text = read_file(log);
  EXPECT_EQ(text.find("uslub: BUG"), std::string::npos) << text.substr(0, 2000);
}

TEST(TlsPreload, DlopenedLibrariesWhoseThreadLocalsAllocate) {
  run_under_uslub("");
}

// With KFENCE every malloc runs the per-thread sample countdown (kfence.cpp's thread-locals).
TEST(TlsPreload, DlopenedLibrariesWhoseThreadLocalsAllocateWithKfenceSampling) {
  run_under_uslub("USLUB_KFENCE_SAMPLE=1");
  run_under_uslub("USLUB_KFENCE_SAMPLE=3");
}

// No code of the library calls __tls_get_addr (general- or local-dynamic TLS) outside the RCU
// layer: src/rcu (its own thread-locals, reached from malloc only through kfree_rcu and the
// type-safe caches' RCU paths, and mended in rcu.cpp) and liburcu's inline read-side helpers,
// whose thread-local lives in liburcu.  objdump -dl attributes each call to the source line it
// was inlined from.
TEST(TlsModel, NoTlsGetAddrCallOnAMallocPath) {
  result r = sh("command -v objdump >/dev/null && objdump -dl --no-show-raw-insn " USLUB_SO_PATH
                " 2>/dev/null");
  if (r.status != 0 || r.out.empty()) GTEST_SKIP() << "objdump missing: nothing checked";
  std::regex fn_re(R"(^[0-9a-f]+ <(.*)>:$)");
  std::regex file_re(R"(^(/[^:]+):[0-9]+)");
  std::string fn, file, bad;
  bool any_file = false;
  int calls = 0;
  std::size_t pos = 0;
  while (pos < r.out.size()) {
    std::size_t end = r.out.find('\n', pos);
    if (end == std::string::npos) end = r.out.size();
    std::string line = r.out.substr(pos, end - pos);
    pos = end + 1;
    std::smatch m;
    if (line.size() > 16 && std::regex_match(line, m, fn_re)) {
      fn = m[1];
      file.clear();
    } else if (!line.empty() && line[0] == '/' && std::regex_search(line, m, file_re)) {
      file = m[1];
      any_file = true;
    } else if (line.find("call") != std::string::npos &&
               line.find("__tls_get_addr") != std::string::npos && fn.find("@plt") == fn.npos) {
      ++calls;
      if (file.find("/src/rcu/") == std::string::npos && file.find("/urcu/") == std::string::npos)
        bad += fn + " (" + file + ")\n";
    }
  }
  if (!any_file) GTEST_SKIP() << "no line information in " USLUB_SO_PATH ": nothing checked";
  EXPECT_EQ(bad, "") << "thread-locals off the initial-exec model on these paths";
}

}  // namespace
