// dlopens the libraries named on the command line (copies of tls_lib.cpp's, each a new TLS
// module, more than the DTV's surplus so that threads' DTVs are resized with malloc), from a
// process whose threads already exist, then has every thread touch every library's
// thread-locals.  Prints "ok <sum>" and exits 0 if everything ran.
#include <dlfcn.h>

#include <atomic>
#include <cstdio>
#include <thread>
#include <vector>

using touch_fn = long (*)(int);

int main(int argc, char** argv) {
  std::atomic<int> phase{0};
  std::vector<touch_fn> fns;
  std::atomic<long> total{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 6; ++t)
    ts.emplace_back([&, t] {
      void* early = malloc(64);  // this thread's TLS and DTV exist before the dlopens
      while (phase.load() == 0) std::this_thread::yield();
      long sum = 0;
      for (int round = 0; round < 20; ++round)
        for (std::size_t i = 0; i < fns.size(); ++i)
          sum += fns[i](t * 1000 + round * 37 + static_cast<int>(i));
      total += sum;
      free(early);
    });
  for (int i = 1; i < argc; ++i) {
    void* h = dlopen(argv[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      fprintf(stderr, "dlopen %s: %s\n", argv[i], dlerror());
      return 2;
    }
    auto f = reinterpret_cast<touch_fn>(dlsym(h, "uslub_tls_touch"));
    if (!f) return 3;
    fns.push_back(f);
    f(i);  // the main thread's block, allocated inside dlopen's caller
  }
  phase = 1;
  for (auto& th : ts) th.join();
  // Threads created after the dlopens allocate every module's block at first access.
  std::vector<std::thread> late;
  for (int t = 0; t < 4; ++t)
    late.emplace_back([&, t] {
      long sum = 0;
      for (std::size_t i = 0; i < fns.size(); ++i) sum += fns[i](t + static_cast<int>(i));
      total += sum;
    });
  for (auto& th : late) th.join();
  printf("ok %ld\n", total.load());
  return 0;
}
