// The stack depot (the kernel's lib/stackdepot.c): every distinct call stack stored once, named
// by a handle that fits in a slab object's tracking data (8 bytes instead of 16 frames).
//
// Lockless lookups and inserts: a fixed hash table of singly linked chains whose records are
// immutable once published (release CAS on the bucket head; readers load it with acquire).
// Records come from 1 MiB chunks mapped with mmap (not from the allocator being debugged) by a
// lock-free bump pointer; depot_lock only serialises mapping a new chunk.  Nothing is freed.
// A failed mmap returns a null handle: the stack is not recorded, the caller goes on.
#pragma once

#include <cstddef>
#include <cstdint>

namespace uslub {

struct stack_record;
using depot_stack_handle_t = const stack_record*;

depot_stack_handle_t stack_depot_save(void* const* pcs, unsigned n);
// The frames of a handle (nullptr / 0 for a null handle).
unsigned stack_depot_fetch(depot_stack_handle_t h, void* const** pcs);
// Bytes mapped by the depot (statistics).
std::size_t stack_depot_bytes();
// fork: prepare takes depot_lock (a leaf: nothing is taken under it), parent and child release
// it, so a child never inherits it held by a thread that does not exist there.
void stack_depot_fork_prepare();
void stack_depot_fork_release();

}  // namespace uslub
