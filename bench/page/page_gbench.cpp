// Google Benchmark micro-benchmarks of the page allocator's entry points (the table-printing
// benchmark with peers is page_alloc_bench.cpp).  Run: build-release/bench/bench_page_page_gbench
#include <benchmark/benchmark.h>

#include "page/page_alloc.hpp"

namespace {

uslub::page_allocator& pa() {
  static uslub::page_allocator* a = [] {
    auto* p = new uslub::page_allocator();
    uslub::page_alloc_config c;
    c.nr_nodes = 1;
    p->init(c);
    return p;
  }();
  return *a;
}

void BM_AllocFreeOrder(benchmark::State& st) {
  unsigned order = static_cast<unsigned>(st.range(0));
  for (auto _ : st) {
    uslub::page* p = pa().alloc_pages(order);
    benchmark::DoNotOptimize(p);
    pa().free_pages(p, order);
  }
}
BENCHMARK(BM_AllocFreeOrder)->DenseRange(0, 4)->Arg(8)->Arg(10);

void BM_Bulk64(benchmark::State& st) {
  uslub::page* v[64];
  for (auto _ : st) {
    int n = pa().alloc_pages_bulk(0, 64, v);
    pa().free_pages_bulk(v, n, 0);
  }
  st.SetItemsProcessed(st.iterations() * 64);
}
BENCHMARK(BM_Bulk64);

void BM_VirtToPage(benchmark::State& st) {
  uslub::page* p = pa().alloc_pages(0);
  char* a = static_cast<char*>(uslub::page_address(p));
  for (auto _ : st) benchmark::DoNotOptimize(uslub::virt_to_page(a + 100));
  pa().free_pages(p, 0);
}
BENCHMARK(BM_VirtToPage);

}  // namespace

BENCHMARK_MAIN();
