// Real programs under LD_PRELOAD=libuslub.so must print exactly what they print on glibc's
// malloc, and uslub must report nothing.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "process.hpp"

namespace {

using result = uslub::test::sh_result;
using uslub::test::sh;

// Runs cmd twice (glibc, then uslub) and compares stdout; uslub's stderr goes to a file that
// must not contain a report.
void same_output(const std::string& cmd) {
  result base = sh(cmd + " 2>/dev/null");
  ASSERT_EQ(base.status, 0) << "baseline failed: " << cmd;
  std::string log = ::testing::TempDir() + "uslub_preload.log";
  std::remove(log.c_str());
  result ours = sh("LD_PRELOAD=" USLUB_SO_PATH " USLUB_LOG=" + log + " " + cmd + " 2>/dev/null");
  EXPECT_EQ(ours.status, 0) << cmd;
  EXPECT_EQ(ours.out.size(), base.out.size()) << cmd;
  EXPECT_TRUE(ours.out == base.out) << cmd;
  std::ifstream in(log);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text.find("uslub: BUG"), std::string::npos) << text.substr(0, 2000);
}

bool have(const char* tool) {
  return sh(std::string("command -v ") + tool + " >/dev/null 2>&1 && echo yes").out == "yes\n";
}

}  // namespace

TEST(Preload, Python) {
  if (!have("python3")) GTEST_SKIP();
  std::string script = ::testing::TempDir() + "uslub_t.py";
  std::ofstream(script) << "import json, collections\n"
                           "d = {str(i): [i] * (i % 17) for i in range(200000)}\n"
                           "c = collections.Counter(len(v) for v in d.values())\n"
                           "s = json.dumps(sorted(c.items()))\n"
                           "print(s, len(json.loads(json.dumps(d))))\n";
  same_output("PYTHONMALLOC=malloc python3 " + script);
}

TEST(Preload, ClangSyntaxOnly) {
  if (!have("clang++")) GTEST_SKIP();
  std::string src = ::testing::TempDir() + "uslub_h.cpp";
  std::ofstream(src) << "#include <iostream>\n#include <map>\n#include <regex>\n#include <vector>\n"
                        "#include <unordered_map>\n#include <algorithm>\n"
                        "int main() { std::map<int, std::vector<std::string>> m; "
                        "std::regex r(\"a+b\"); return 0; }\n";
  same_output("clang++ -std=c++17 -fsyntax-only " + src + " && echo ok");
}

TEST(Preload, Sort) {
  std::string f = ::testing::TempDir() + "uslub_sort.txt";
  {
    std::ofstream out(f);
    unsigned x = 12345;
    for (int i = 0; i < 300000; ++i) {
      x = x * 1103515245u + 12345u;
      out << (x >> 8) % 1000003 << " line " << i % 977 << "\n";
    }
  }
  same_output("sort " + f);
  same_output("sort -n -k1,1 " + f + " | md5sum");
}

TEST(Preload, ShellPipelineAndThreads) {
  same_output("ls -la /usr/lib | sort | uniq -c | wc -l");
  if (have("python3"))
    same_output(
        "python3 -c \"import threading; r=[]; "
        "t=[threading.Thread(target=lambda: r.append(sum(range(100000)))) for _ in range(32)]; "
        "[x.start() for x in t]; [x.join() for x in t]; print(sorted(r)[0], len(r))\"");
}
