// Buddy free lists of one zone (internal to the page layer).
//
// Context: every function here requires zone->lock.
#pragma once

#include "page/page_alloc.hpp"

namespace uslub {

// Takes the smallest free block of at least `order`, splitting larger ones (expand).
// Sets *zeroed if the block's memory is known to read as zeros.  nullptr if none.
page* __rmqueue(zone* z, unsigned order, bool* zeroed);

// Puts a free block of `order` on the free lists, merging it with free buddies.
// returned: its memory is not resident (fresh or madvised).  freed_ms: when it became free.
void __free_one_page(zone* z, page* p, unsigned order, bool returned, std::uint64_t freed_ms);

// Takes a free block off its list (reclaim isolation).
void __del_page_from_free_list(zone* z, page* p, unsigned order);

}  // namespace uslub
