// xmalloc: producer/consumer.  Producers malloc blocks (16..512 B) and push them, in batches,
// through a bounded queue; consumers pop the batches and free every block.  So every free is a
// remote free, and the memory flows one way between threads.
//   --threads T (2: T/2 producers, T/2 consumers)  --scale S
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "common.h"

namespace {

constexpr size_t kBatch = 256;  // blocks per queue item, so the queue's own cost stays small
constexpr size_t kDepth = 64;   // batches in flight at most

struct Batch {
  void* blocks[kBatch];
};

struct Queue {
  std::mutex m;
  std::condition_variable not_empty, not_full;
  std::deque<Batch*> items;
  int producers_left;

  void push(Batch* b) {
    std::unique_lock lk(m);
    not_full.wait(lk, [&] { return items.size() < kDepth; });
    items.push_back(b);
    not_empty.notify_one();
  }
  Batch* pop() {  // nullptr once every producer is done and the queue is drained
    std::unique_lock lk(m);
    not_empty.wait(lk, [&] { return !items.empty() || producers_left == 0; });
    if (items.empty()) return nullptr;
    Batch* b = items.front();
    items.pop_front();
    not_full.notify_one();
    return b;
  }
  void producer_done() {
    std::lock_guard lk(m);
    if (--producers_left == 0) not_empty.notify_all();
  }
};

}  // namespace

int main(int argc, char** argv) {
  wl::Args args{argc, argv};
  const int threads = args.threads(2);
  const int producers = threads > 1 ? threads / 2 : 1;
  const int consumers = threads > 1 ? threads - producers : 1;
  const uint64_t batches = args.scaled(60000);  // per producer
  Queue q;
  q.producers_left = producers;

  auto produce = [&](int id) {
    wl::Rng rng(id + 1);
    for (uint64_t i = 0; i < batches; i++) {
      auto* b = static_cast<Batch*>(std::malloc(sizeof(Batch)));
      for (auto& p : b->blocks) {
        size_t sz = rng.range(16, 512);
        p = std::malloc(sz);
        if (!p) wl::die("out of memory");
        wl::touch(p, sz);
      }
      q.push(b);
    }
    q.producer_done();
  };
  auto consume = [&] {
    while (Batch* b = q.pop()) {
      for (void* p : b->blocks) std::free(p);
      std::free(b);
    }
  };

  double t0 = wl::now();
  std::vector<std::thread> pool;
  for (int i = 0; i < producers; i++) pool.emplace_back(produce, i);
  for (int i = 0; i < consumers; i++) pool.emplace_back(consume);
  for (auto& th : pool) th.join();
  double secs = wl::now() - t0;

  uint64_t total = batches * producers * kBatch;
  wl::result("xmalloc", producers + consumers, total, secs,
             wl::kv("mops_per_s", total / secs / 1e6));
}
