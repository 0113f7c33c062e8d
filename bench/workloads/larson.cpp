// larson: the server pattern of Larson & Krishnan.  Each of T lanes owns an array of live
// blocks of random sizes (16..1024 B); a thread replaces random slots (free the old block,
// malloc a new one), and after a fixed number of replacements hands its array to a new thread
// and exits.  So most frees are of blocks another (often dead) thread allocated.
//   --threads T (2)  --slots N (8192 per lane)  --scale S
#include <thread>
#include <vector>

#include "common.h"

namespace {

struct Lane {
  std::vector<void*> slots;
  int lane;
  int generation = 0;
};

constexpr size_t kMin = 16, kMax = 1024;

void run_generation(Lane* l, uint64_t ops, int generations) {
  wl::Rng rng(static_cast<uint64_t>(l->lane) * 1000003 + l->generation);
  const size_t n = l->slots.size();
  for (uint64_t i = 0; i < ops; i++) {
    size_t k = rng.below(n);
    std::free(l->slots[k]);
    size_t sz = rng.range(kMin, kMax);
    void* p = std::malloc(sz);
    if (!p) wl::die("out of memory");
    wl::touch(p, sz);
    l->slots[k] = p;
  }
  // Hand the live array over to a fresh thread, then exit; the last generation stops here.
  if (++l->generation < generations) {
    std::thread next(run_generation, l, ops, generations);
    next.detach();
  } else {
    __atomic_store_n(&l->lane, -1, __ATOMIC_RELEASE);  // done marker
  }
}

}  // namespace

int main(int argc, char** argv) {
  wl::Args args{argc, argv};
  const int threads = args.threads(2);
  const size_t nslots = static_cast<size_t>(args.num("slots", 8192));
  const int generations = 1000;
  const uint64_t ops = args.scaled(20000);  // replacements per generation: ~90% of the slots

  // The main thread allocates the first contents, so generation 0 already frees remotely.
  std::vector<Lane> lanes(threads);
  wl::Rng rng(42);
  for (int t = 0; t < threads; t++) {
    lanes[t].lane = t;
    for (size_t k = 0; k < nslots; k++) {
      size_t sz = rng.range(kMin, kMax);
      lanes[t].slots.push_back(std::malloc(sz));
    }
  }

  double t0 = wl::now();
  for (int t = 0; t < threads; t++)
    std::thread(run_generation, &lanes[t], ops, generations).detach();
  for (int t = 0; t < threads; t++)
    while (__atomic_load_n(&lanes[t].lane, __ATOMIC_ACQUIRE) != -1) usleep(200);
  double secs = wl::now() - t0;

  for (auto& l : lanes)
    for (void* p : l.slots) std::free(p);
  uint64_t total = ops * generations * threads;
  wl::result("larson", threads, total, secs, wl::kv("mops_per_s", total / secs / 1e6));
}
