// fault_cost: what one anonymous page fault costs on this machine.  Maps 64 MiB three times
// and faults it in page by page (a write to each page) or in steps of N pages with
// MADV_POPULATE_WRITE; prints ns per page and the slowest step.  bench/latency/faults.py
// builds and runs it: a fault taken inside malloc adds this to that call.
// usage: fault_cost PAGES_PER_STEP   (1: plain writes)
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char** argv) {
  const size_t size = (size_t)64 << 20;
  const size_t step = (size_t)(argc > 1 ? atoi(argv[1]) : 1) * 4096;
  if (step == 0 || size % step) return 2;
  for (int round = 0; round < 3; ++round) {
    char* p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 1;
    double start = now_ns(), worst = 0;
    for (size_t off = 0; off < size; off += step) {
      double t = now_ns();
      if (step == 4096)
        p[off] = 1;
      else if (madvise(p + off, step, MADV_POPULATE_WRITE) != 0)
        return 1;
      double d = now_ns() - t;
      if (d > worst) worst = d;
    }
    printf("step %zu KiB: %.0f ns per page, slowest step %.1f us\n", step / 1024,
           (now_ns() - start) / (size / 4096), worst / 1000);
    munmap(p, size);
  }
  return 0;
}
