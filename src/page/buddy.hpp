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

// Ranges of any page count (alloc_pages_exact).  A range never crosses its section's committed
// top; it may span several MAX_ORDER blocks.
// Is every page of [start, start + nr) inside a free block (PG_buddy) of zone z?
bool __range_is_free(zone* z, page* start, std::size_t nr);
// Takes [start, start + nr) off the free lists, giving back the parts of the free blocks
// around it that lie outside the range.  False (nothing changed) unless the range is all free;
// *zeroed: every page of it had been returned to the OS (reads as zeros).
bool __take_free_range(zone* z, page* start, std::size_t nr, bool* zeroed);
// Frees [start, start + nr) as the largest aligned blocks that tile it (merging as usual).
void __free_range(zone* z, page* start, std::size_t nr, bool returned, std::uint64_t freed_ms);

// Takes a free block off its list (reclaim isolation).
void __del_page_from_free_list(zone* z, page* p, unsigned order);

}  // namespace uslub
