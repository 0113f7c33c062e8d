// Sections and growth: where the page allocator's memory comes from.
//
// Lockless by design (no lock may be held across mmap/mprotect):
//   - g_mem_section[] entries are written once (release) when a section is created and
//     cleared only by page_allocator::destroy() (tests), after all use has ended.
//   - A section grows by CAS on mem_section::top; the winner of [off, off+MAX_ORDER_BYTES)
//     commits it and only then takes zone->lock to insert the block.  A failed commit rolls
//     top back if nobody moved it since, otherwise the range is counted in `lost` (address
//     space only: nothing was committed).
//   - g_first_section (page.hpp) takes the first kept section's base by CAS, after its
//     g_mem_section[] entry, and is reset by destroy() before that entry is cleared.
//   - zone::grow_section is replaced by CAS when full; the loser of that race releases its
//     fresh reservation.
// NUMA: a new section is bound to its zone's node (vm_ops::bind_node, mbind MPOL_PREFERRED)
// right after its reservation, before any page of it is touched; see new_section.
#include <errno.h>

#include "base/check.hpp"
#include "page/buddy.hpp"
#include "page/page_alloc.hpp"

namespace uslub {
namespace detail {
constinit std::atomic<mem_section*> g_mem_section[std::size_t{1} << (ADDRESS_BITS - SECTION_SHIFT)];
constinit std::atomic<std::uintptr_t> g_first_section{kNoFirstSection};
}  // namespace detail

namespace {

// Committed bytes for one growth step: the block and its 64 KiB of descriptors.
constexpr std::size_t kGrowCharge = MAX_ORDER_BYTES + MAX_ORDER_BYTES / PAGE_SIZE * sizeof(page);

}  // namespace

// Creates, registers and returns a new section for z, or nullptr with errno set.
static mem_section* new_section(page_allocator* owner, zone* z, platform::vm_ops* vm,
                                std::atomic<std::size_t>* committed, std::size_t limit) {
  if (limit && committed->fetch_add(PAGE_SIZE) + PAGE_SIZE > limit) {
    committed->fetch_sub(PAGE_SIZE);
    errno = ENOMEM;
    return nullptr;
  }
  void* base;
  int err = vm->reserve(SECTION_SIZE, SECTION_SIZE, &base);
  // Node placement: the whole section - its descriptors too, as the kernel keeps a node's
  // memmap on that node - prefers the zone's node, set before any of its pages is touched
  // (the policy applies when a page is faulted in).  Only when the zones are the machine's
  // nodes (init() decided: a single zone on a multi-node machine spans them all and keeps
  // first-touch placement).  A refusal is recorded, not fatal (vm_ops::bind_node).
  int bind_err = -1;
  if (!err && owner->config().numa_bind) bind_err = vm->bind_node(base, SECTION_SIZE, z->node);
  if (!err) {
    // The whole descriptor area is made accessible at once (it stays non-resident until
    // grow_zone writes descriptors; only the header page is charged): then a free can read
    // the descriptor of any address of the section without comparing it with `top` first -
    // a descriptor never written reads as zeros, "not a slab" (virt_to_slab).
    err = vm->commit(base, MEMMAP_BYTES + SLAB_MAP_BYTES);
    if (err) vm->release(base, SECTION_SIZE);
  }
  if (err) {
    if (limit) committed->fetch_sub(PAGE_SIZE);
    errno = err;
    return nullptr;
  }
  if (!limit) committed->fetch_add(PAGE_SIZE);
  auto* sec = static_cast<mem_section*>(base);
  sec->base = reinterpret_cast<std::uintptr_t>(base);
  sec->owner = owner;
  sec->zone = z;
  sec->node = z->node;
  sec->bind_err = bind_err;
  sec->top.store(SECTION_DATA_START, std::memory_order_relaxed);
  sec->lost.store(0, std::memory_order_relaxed);
  return sec;
}

bool page_allocator::grow_zone(zone* z) {
  const std::size_t limit = section_limit();  // huge blocks count against it too
  for (;;) {
    mem_section* sec = z->grow_section.load(std::memory_order_acquire);
    if (sec) {
      std::size_t off = sec->top.load(std::memory_order_relaxed);
      while (off + MAX_ORDER_BYTES <= SECTION_SIZE) {
        if (committed_.fetch_add(kGrowCharge) + kGrowCharge > limit && limit) {
          committed_.fetch_sub(kGrowCharge);
          grow_fail_.fetch_add(1, std::memory_order_relaxed);
          errno = ENOMEM;
          return false;
        }
        if (!sec->top.compare_exchange_weak(off, off + MAX_ORDER_BYTES)) {
          committed_.fetch_sub(kGrowCharge);
          continue;  // off now holds the current top
        }
        auto* data = reinterpret_cast<char*>(sec->base + off);
        auto* desc = reinterpret_cast<char*>(sec->base + off / PAGE_SIZE * sizeof(page));
        int err = vm_->commit(desc, MAX_ORDER_BYTES / PAGE_SIZE * sizeof(page));
        if (!err) err = vm_->commit(data, MAX_ORDER_BYTES);
        if (err) {
          committed_.fetch_sub(kGrowCharge);
          std::size_t expect = off + MAX_ORDER_BYTES;
          if (!sec->top.compare_exchange_strong(expect, off))
            sec->lost.fetch_add(MAX_ORDER_BYTES, std::memory_order_relaxed);
          grow_fail_.fetch_add(1, std::memory_order_relaxed);
          errno = err;
          return false;
        }
        if (committed_.load(std::memory_order_relaxed) >= cfg_.thp_min)
          vm_->hugepage(data, MAX_ORDER_BYTES);
        grow_count_.fetch_add(1, std::memory_order_relaxed);
        page* head = virt_to_page(data);
        std::uint64_t now = platform::coarse_ms();
        z->lock.lock();
        // Fresh anonymous memory is not resident and reads as zeros: "returned".
        __free_one_page(z, head, MAX_ORDER, /*returned=*/true, now);
        z->lock.unlock();
        return true;
      }
    }
    mem_section* fresh = new_section(this, z, vm_, &committed_, limit);
    if (!fresh) {
      grow_fail_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    // Publish for lookup_section() before any block of it can be handed out.
    auto& slot = detail::g_mem_section[fresh->base >> SECTION_SHIFT];
    slot.store(fresh, std::memory_order_release);
    if (!z->grow_section.compare_exchange_strong(sec, fresh)) {
      // Another thread installed a section first: nothing of ours was handed out.
      slot.store(nullptr, std::memory_order_release);
      vm_->release(reinterpret_cast<void*>(fresh->base), SECTION_SIZE);
      committed_.fetch_sub(PAGE_SIZE);
      continue;
    }
    std::uintptr_t none = kNoFirstSection;
    detail::g_first_section.compare_exchange_strong(none, fresh->base, std::memory_order_release,
                                                    std::memory_order_relaxed);
    mem_section* head = sections_.load(std::memory_order_relaxed);
    do fresh->next_in_owner = head;
    while (!sections_.compare_exchange_weak(head, fresh, std::memory_order_release));
  }
}

void page_allocator::destroy() {
  mem_section* s = sections_.exchange(nullptr);
  while (s) {
    mem_section* next = s->next_in_owner;
    std::uintptr_t base = s->base;
    detail::g_first_section.compare_exchange_strong(base, kNoFirstSection);
    detail::g_mem_section[s->base >> SECTION_SHIFT].store(nullptr, std::memory_order_release);
    vm_->release(reinterpret_cast<void*>(s->base), SECTION_SIZE);
    s = next;
  }
  for (unsigned n = 0; n < nr_zones_; ++n) {
    vm_release_metadata(zones_[n]);
    zones_[n] = nullptr;
  }
  nr_zones_ = 0;
  committed_.store(0);
}

}  // namespace uslub
