// A library with dynamic TLS (loaded with dlopen, so its thread-locals live in blocks that
// __tls_get_addr allocates with malloc on a thread's first access) whose thread-local has a
// constructor that allocates: under LD_PRELOAD=libuslub.so, malloc runs inside the TLS set-up
// (tests/malloc/tls_preload_test.cpp).
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {
struct per_thread {
  std::vector<std::string> names;
  char* scratch;
  per_thread() : scratch(static_cast<char*>(malloc(300))) {
    for (int i = 0; i < 8; ++i) names.emplace_back(std::string(40 + i, 'a' + i));
    memset(scratch, 1, 300);
  }
  ~per_thread() { free(scratch); }
};
thread_local per_thread t_state;
__thread char t_block[16384];  // a large block: malloc'ed, not taken from the static surplus
}  // namespace

extern "C" __attribute__((visibility("default"))) long uslub_tls_touch(int seed) {
  long sum = 0;
  for (auto& s : t_state.names) sum += static_cast<long>(s.size());
  t_block[seed % sizeof t_block] = static_cast<char>(seed);
  sum += t_block[seed % sizeof t_block] + t_state.scratch[seed % 300];
  void* p = malloc(static_cast<std::size_t>(16 + seed % 2000));
  memset(p, seed, static_cast<std::size_t>(16 + seed % 2000));
  free(p);
  return sum;
}
