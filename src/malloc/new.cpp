// C++ operator new/delete in every form over kmalloc.  new throws std::bad_alloc after the
// new_handler loop; nothrow forms return nullptr; aligned forms use kmalloc_aligned.
#include <new>

#include "kmalloc/kmalloc.hpp"

using namespace uslub;

namespace {

USLUB_NOINLINE void* new_slow(std::size_t size, std::size_t align, bool nothrow) {
  for (;;) {
    void* p = align > 16 ? kmalloc_aligned(size, align, 0) : kmalloc_inline(size, 0);
    if (p) return p;
    std::new_handler h = std::get_new_handler();
    if (!h) {
      if (nothrow) return nullptr;
      throw std::bad_alloc();
    }
    h();
  }
}

USLUB_ALWAYS_INLINE void* do_new(std::size_t size) {
  void* p = kmalloc_inline(size, 0);
  return USLUB_LIKELY(p) ? p : new_slow(size, 0, false);
}

USLUB_ALWAYS_INLINE void* do_new_nothrow(std::size_t size) noexcept {
  void* p = kmalloc_inline(size, 0);
  if (USLUB_LIKELY(p)) return p;
  try {
    return new_slow(size, 0, true);
  } catch (...) {
    return nullptr;
  }
}

void* do_new_aligned(std::size_t size, std::align_val_t al, bool nothrow) {
  auto a = static_cast<std::size_t>(al);
  void* p = kmalloc_aligned(size, a, 0);
  if (p) return p;
  if (nothrow) {
    try {
      return new_slow(size, a, true);
    } catch (...) {
      return nullptr;
    }
  }
  return new_slow(size, a, false);
}

}  // namespace

USLUB_EXPORT void* operator new(std::size_t n) {
  return do_new(n);
}
USLUB_EXPORT void* operator new[](std::size_t n) {
  return do_new(n);
}
USLUB_EXPORT void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  return do_new_nothrow(n);
}
USLUB_EXPORT void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return do_new_nothrow(n);
}
USLUB_EXPORT void* operator new(std::size_t n, std::align_val_t a) {
  return do_new_aligned(n, a, false);
}
USLUB_EXPORT void* operator new[](std::size_t n, std::align_val_t a) {
  return do_new_aligned(n, a, false);
}
USLUB_EXPORT void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return do_new_aligned(n, a, true);
}
USLUB_EXPORT void* operator new[](std::size_t n, std::align_val_t a,
                                  const std::nothrow_t&) noexcept {
  return do_new_aligned(n, a, true);
}

USLUB_EXPORT void operator delete(void* p) noexcept {
  kfree_inline(p, "operator delete");
}
USLUB_EXPORT void operator delete[](void* p) noexcept {
  kfree_inline(p, "operator delete[]");
}
USLUB_EXPORT void operator delete(void* p, std::size_t) noexcept {
  kfree_inline(p, "operator delete");
}
USLUB_EXPORT void operator delete[](void* p, std::size_t) noexcept {
  kfree_inline(p, "operator delete[]");
}
USLUB_EXPORT void operator delete(void* p, const std::nothrow_t&) noexcept {
  kfree_inline(p, "operator delete");
}
USLUB_EXPORT void operator delete[](void* p, const std::nothrow_t&) noexcept {
  kfree_inline(p, "operator delete[]");
}
USLUB_EXPORT void operator delete(void* p, std::align_val_t) noexcept {
  kfree_inline(p, "operator delete");
}
USLUB_EXPORT void operator delete[](void* p, std::align_val_t) noexcept {
  kfree_inline(p, "operator delete[]");
}
USLUB_EXPORT void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  kfree_inline(p, "operator delete");
}
USLUB_EXPORT void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  kfree_inline(p, "operator delete[]");
}
USLUB_EXPORT void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  kfree_inline(p, "operator delete");
}
USLUB_EXPORT void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  kfree_inline(p, "operator delete[]");
}
