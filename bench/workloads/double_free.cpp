// double_free: one double free, `--distance D` frees apart (D - 1 other frees of the same size
// between the two), the second free on the same thread or `--other 1` another one, after
// `--warm W` blocks were allocated first (a program's cache at some fill level).  Prints
// "undetected" if the process gets past the second free and a flush-free exit; an allocator
// that detects the double free reports it (uslub: BUG on stderr) or aborts (glibc).
// bench/workloads/double_free_rates.sh runs it under several allocators and counts.
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "common.h"

int main(int argc, char** argv) {
  wl::Args args{argc, argv};
  const size_t size = static_cast<size_t>(args.num("size", 48));
  const int distance = static_cast<int>(args.num("distance", 1));
  const bool other = args.num("other", 0) != 0;
  const int warm = static_cast<int>(args.num("warm", 0));
  std::vector<void*> live, others;
  for (int i = 0; i < warm; i++) live.push_back(std::malloc(size));
  void* p = std::malloc(size);
  for (int i = 1; i < distance; i++) others.push_back(std::malloc(size));
  wl::escape(p);
  std::free(p);
  auto rest = [&] {
    for (void* o : others) std::free(o);
    std::free(p);
  };
  if (other) {
    std::thread t(rest);
    t.join();
  } else {
    rest();
  }
  std::printf("undetected\n");
  std::fflush(stdout);
  std::_Exit(0);  // no exit-time flush: what counts is the second free
}
