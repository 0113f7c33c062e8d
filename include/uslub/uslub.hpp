// uslub's C++ API: typed caches, an allocator for standard containers, and a
// std::pmr::memory_resource.  Allocation failures throw std::bad_alloc.
#pragma once

#include <uslub/slab.h>

#include <cstddef>
#include <memory_resource>
#include <new>
#include <span>
#include <utility>

#pragma GCC visibility push(default)  // the library is built with -fvisibility=hidden
namespace uslub {

// A kmem_cache of T with RAII: the cache is destroyed with the object (objects still alive
// are reported as "Objects remaining on destroy" and the cache is kept).  Objects are
// constructed and destroyed by create()/destroy(); alloc()/free() give raw storage.
template <class T>
class cache {
 public:
  explicit cache(const char* name, slab_flags_t flags = 0)
      : s_(kmem_cache_create(name, sizeof(T), alignof(T), flags, nullptr)) {
    if (!s_) throw std::bad_alloc();
  }
  ~cache() {
    if (s_) kmem_cache_destroy(s_);
  }
  cache(const cache&) = delete;
  cache& operator=(const cache&) = delete;
  cache(cache&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}

  T* alloc() {
    void* p = kmem_cache_alloc(s_, 0);
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void free(T* p) noexcept { kmem_cache_free(s_, p); }

  template <class... Args>
  T* create(Args&&... args) {
    T* p = alloc();
    try {
      return new (p) T(std::forward<Args>(args)...);
    } catch (...) {
      free(p);
      throw;
    }
  }
  void destroy(T* p) noexcept {
    if (!p) return;
    p->~T();
    free(p);
  }

  // All or nothing: fills out with raw storage for out.size() objects.
  void alloc_bulk(std::span<T*> out) {
    if (kmem_cache_alloc_bulk(s_, 0, out.size(), reinterpret_cast<void**>(out.data())) !=
        static_cast<int>(out.size()))
      throw std::bad_alloc();
  }
  void free_bulk(std::span<T*> objs) noexcept {
    kmem_cache_free_bulk(s_, objs.size(), reinterpret_cast<void**>(objs.data()));
  }

  kmem_cache* get() const noexcept { return s_; }
  const char* name() const noexcept { return kmem_cache_name(s_); }

 private:
  kmem_cache* s_;
};

// A std::allocator-compatible allocator on kmalloc.
template <class T>
struct allocator {
  using value_type = T;
  allocator() noexcept = default;
  template <class U>
  allocator(const allocator<U>&) noexcept {}
  T* allocate(std::size_t n) {
    std::size_t bytes;
    if (__builtin_mul_overflow(n, sizeof(T), &bytes)) throw std::bad_alloc();
    void* p =
        alignof(T) > 16 ? ::operator new (bytes, std::align_val_t{alignof(T)}) : kmalloc(bytes, 0);
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t) noexcept { kfree(p); }
  template <class U>
  bool operator==(const allocator<U>&) const noexcept {
    return true;
  }
};

// std::pmr::memory_resource on kmalloc (alignment honoured up to 4 MiB blocks).
class resource final : public std::pmr::memory_resource {
 private:
  void* do_allocate(std::size_t bytes, std::size_t align) override;
  void do_deallocate(void* p, std::size_t, std::size_t) override { kfree(p); }
  bool do_is_equal(const std::pmr::memory_resource& o) const noexcept override {
    return dynamic_cast<const resource*>(&o) != nullptr;
  }
};

// The process-wide instance.
resource* get_resource() noexcept;

}  // namespace uslub
#pragma GCC visibility pop
