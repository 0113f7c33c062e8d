// Helpers for tests that run other processes: a shell command's output and exit status, this
// executable's path (to re-run one of its tests as a child with another environment), a file's
// contents, and the wait for a forked child that fails with the child's stacks when it hangs.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>

namespace uslub::test {

struct sh_result {
  std::string out;  // the command's stdout (and what it redirects there, e.g. 2>&1)
  int status;       // its exit code, 128 + the signal that killed it, or -1 if popen failed
};

// Runs cmd with /bin/sh and waits for it.
inline sh_result sh(const std::string& cmd) {
  sh_result r{"", -1};
  FILE* f = popen(cmd.c_str(), "r");
  if (!f) return r;
  std::array<char, 65536> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), f)) > 0) r.out.append(buf.data(), n);
  int st = pclose(f);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return r;
}

// The path of this executable ("/proc/self/exe" inside a shell command would be the shell).
inline std::string self_exe() {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  return std::string(buf, n > 0 ? static_cast<size_t>(n) : 0);
}

// Output (stdout and stderr) of this executable's test <suite>.<test> re-run with the
// environment `env` plus <marker>=1 (the child tests skip unless the marker is set), then of
// the shell command `after`.
inline std::string run_child_test(const std::string& env, const char* marker, const char* suite,
                                  const char* test, const char* after = "") {
  return sh(env + " " + marker + "=1 " + self_exe() + " --gtest_filter=" + suite + "." + test +
            " 2>&1" + after)
      .out;
}

// The whole file at path ("" when it cannot be read).
inline std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The stacks of every thread of pid (gdb attached in batch mode), or why there are none.
inline std::string stacks_of(pid_t pid) {
  std::string out = sh("gdb -q -p " + std::to_string(pid) +
                       " -batch -ex 'thread apply all bt 30' 2>&1 | grep -E '^(Thread|#)'")
                        .out;
  return out.empty() ? "(no stacks: gdb missing or not allowed to attach)" : out;
}

// Waits for the child pid until the deadline; a child still running then has hung: fails with
// its threads' stacks and kills it.  With check_status, expects it to have exited with 0.
inline void expect_child_exits_ok(pid_t pid, std::chrono::seconds deadline,
                                  bool check_status = true) {
  auto end = std::chrono::steady_clock::now() + deadline;
  int status = 0;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    ASSERT_EQ(r, 0);
    if (std::chrono::steady_clock::now() > end) {
      std::string where = stacks_of(pid);
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      FAIL() << "child " << pid << " hung; its threads:\n" << where;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (!check_status) return;
  ASSERT_TRUE(WIFEXITED(status)) << "child killed by signal "
                                 << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace uslub::test
