// pair_min: the fastest of many short timed batches of malloc(SIZE) + free, per thread,
// averaged over the threads.  On a loaded machine the minimum filters out the preemptions
// that inflate a wall-time mean (pair.cpp); it measures the hit paths only.
//
// usage: wl_pair_min [--size N] [--threads T] [--batches B] [--pairs P]
// prints ns_per_pair=<fastest batch's ns per malloc+free, averaged over threads>
#include <pthread.h>
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace {

std::size_t g_size = 64;
int g_batches = 3000;
int g_pairs = 2000;

double now_ns() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

void* run(void* arg) {
  double best = 1e30;
  for (int r = 0; r < g_batches; r++) {
    double t0 = now_ns();
    for (int i = 0; i < g_pairs; i++) {
      void* p = malloc(g_size);
      __asm__ volatile("" : : "r"(p) : "memory");
      free(p);
    }
    double d = (now_ns() - t0) / g_pairs;
    if (d < best) best = d;
  }
  *static_cast<double*>(arg) = best;
  return nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--size"))
      g_size = strtoul(argv[i + 1], nullptr, 0);
    else if (!strcmp(argv[i], "--threads"))
      threads = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--batches"))
      g_batches = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--pairs"))
      g_pairs = atoi(argv[i + 1]);
    else {
      fprintf(stderr, "usage: %s [--size N] [--threads T] [--batches B] [--pairs P]\n", argv[0]);
      return 2;
    }
  }
  if (threads < 1 || g_batches < 1 || g_pairs < 1) return 2;
  std::vector<pthread_t> t(threads);
  std::vector<double> best(threads);
  for (int i = 0; i < threads; i++) pthread_create(&t[i], nullptr, run, &best[i]);
  double sum = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(t[i], nullptr);
    sum += best[i];
  }
  printf("ns_per_pair=%.3f\n", sum / threads);
  return 0;
}
