// vm_ops on Linux: mmap/mprotect/madvise/munmap, and mbind for node placement.
//
// NUMA policy calls are raw system calls (libnuma's wrappers would add a library whose
// constructor allocates, and this runs inside malloc's first call).
#include <errno.h>
#include <linux/mempolicy.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>

#include "platform/platform.hpp"

namespace uslub::platform {
namespace {

class linux_vm_ops final : public vm_ops {
 public:
  int reserve(std::size_t size, std::size_t align, void** out) override {
    // Over-reserve, then trim both ends so the result is aligned.
    std::size_t len = size + (align > PAGE_SIZE ? align : 0);
    void* p = mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return errno;
    auto start = reinterpret_cast<std::uintptr_t>(p);
    auto aligned = (start + align - 1) & ~(std::uintptr_t{align} - 1);
    if (aligned > start) munmap(p, aligned - start);
    std::uintptr_t end = start + len, want_end = aligned + size;
    if (end > want_end) munmap(reinterpret_cast<void*>(want_end), end - want_end);
    *out = reinterpret_cast<void*>(aligned);
    return 0;
  }
  int commit(void* p, std::size_t n) override {
    return mprotect(p, n, PROT_READ | PROT_WRITE) == 0 ? 0 : errno;
  }
  int decommit(void* p, std::size_t n, decommit_mode mode) override {
    int advice = mode == decommit_mode::free ? MADV_FREE : MADV_DONTNEED;
    return madvise(p, n, advice) == 0 ? 0 : errno;
  }
  int hugepage(void* p, std::size_t n) override {
    return madvise(p, n, MADV_HUGEPAGE) == 0 ? 0 : errno;
  }
  int release(void* p, std::size_t n) override { return munmap(p, n) == 0 ? 0 : errno; }
  int map(std::size_t n, void** out) override {
    void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return errno;
    *out = p;
    return 0;
  }
  int bind_node(void* p, std::size_t n, int node) override {
    if (node < 0 || static_cast<unsigned>(node) >= kMaxNodes) return EINVAL;
    unsigned long mask[kMaxNodes / (8 * sizeof(unsigned long))] = {};
    mask[node / (8 * sizeof(unsigned long))] = 1ul << (node % (8 * sizeof(unsigned long)));
    // maxnode counts one bit more than the mask holds (the kernel's get_nodes() reads
    // maxnode - 1 bits, as libnuma's numa_tonode_memory passes it).
    long r = syscall(SYS_mbind, p, n, MPOL_PREFERRED, mask, kMaxNodes + 1ul, 0u);
    return r == 0 ? 0 : errno;
  }
};

}  // namespace

bool task_has_mempolicy() {
  int mode = MPOL_DEFAULT;
  if (syscall(SYS_get_mempolicy, &mode, nullptr, 0ul, nullptr, 0ul) != 0) return false;
  return mode != MPOL_DEFAULT;
}

vm_ops& linux_vm() {
  // Constant-initialised (no constructor runs), so it is usable from any initialiser.
  static constinit linux_vm_ops ops;
  return ops;
}

}  // namespace uslub::platform
