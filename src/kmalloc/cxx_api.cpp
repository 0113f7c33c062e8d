// uslub::resource (include/uslub/uslub.hpp).
#include <uslub/uslub.hpp>

#include "kmalloc/kmalloc.hpp"

namespace uslub {

void* resource::do_allocate(std::size_t bytes, std::size_t align) {
  void* p = kmalloc_aligned(bytes, align, 0);
  if (!p) throw std::bad_alloc();
  return p;
}

resource* get_resource() noexcept {
  static resource r;
  return &r;
}

}  // namespace uslub
