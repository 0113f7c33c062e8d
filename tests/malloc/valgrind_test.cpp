// Valgrind's memcheck with uslub as the process malloc: this executable (linked with the whole
// of libuslub.a) re-runs its child test under memcheck, with --soname-synonyms=somalloc=
// nouserintercepts so that valgrind leaves uslub's malloc in place (by default it replaces the
// malloc of the main executable with its own).  memcheck must find no error in uslub (no read
// of undefined memory, no invalid access); uslub gives it no client requests (docs/debug.md).
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "process.hpp"

namespace {

using uslub::test::self_exe;
using uslub::test::sh;

TEST(ValgrindChild, MallocFamilyAndThreads) {
  if (!getenv("USLUB_VALGRIND_CHILD")) GTEST_SKIP() << "run by Valgrind.MemcheckIsClean";
  std::vector<void*> v;
  for (int i = 0; i < 3000; ++i) {
    void* p = malloc(static_cast<size_t>(i % 700) * 7 + 1);
    memset(p, i, static_cast<size_t>(i % 700) * 7 + 1);
    v.push_back(p);
  }
  for (size_t i = 0; i < v.size(); i += 2) free(v[i]);
  for (size_t i = 1; i < v.size(); i += 2) v[i] = realloc(v[i], i * 3 + 100000 * (i % 50 == 1));
  for (size_t i = 1; i < v.size(); i += 2) free(v[i]);
  auto* c = static_cast<unsigned char*>(calloc(100, 10));
  int sum = 0;
  for (int i = 0; i < 1000; ++i) sum += c[i];  // calloc'd: defined zeroes
  EXPECT_EQ(sum, 0);
  free(c);
  std::vector<std::thread> ts;
  for (int t = 0; t < 3; ++t)
    ts.emplace_back([] {
      for (int i = 0; i < 2000; ++i) delete[] new char[static_cast<size_t>(i % 300) + 1];
    });
  for (auto& t : ts) t.join();
}

TEST(Valgrind, MemcheckIsClean) {
  if (getenv("USLUB_VALGRIND_CHILD")) GTEST_SKIP();
  if (sh("command -v valgrind >/dev/null 2>&1 && echo yes").out != "yes\n")
    GTEST_SKIP() << "valgrind is not installed";
  auto [out, status] =
      sh("USLUB_VALGRIND_CHILD=1 valgrind --error-exitcode=9 "
         "--soname-synonyms=somalloc=nouserintercepts " +
         self_exe() + " --gtest_filter=ValgrindChild.MallocFamilyAndThreads 2>&1");
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("[  PASSED  ] 1 test"), std::string::npos) << out;
  EXPECT_NE(out.find("Memcheck, a memory error detector"), std::string::npos) << out;
  EXPECT_NE(out.find("ERROR SUMMARY: 0 errors from 0 contexts"), std::string::npos) << out;
  // uslub's malloc ran, not valgrind's replacement (which would count the blocks).
  EXPECT_NE(out.find("total heap usage: 0 allocs"), std::string::npos) << out;
}

}  // namespace
