#pragma once

// Memory for task blocks, recycled per thread (src/task_blocks.cpp).
//
// A block comes from the allocating thread's cache and, when freed, goes
// back to that cache: at once if freed on the same thread, else pushed onto
// the cache's list of blocks returned from other threads, which the owner
// takes whole when its own list runs dry. So a task submitted on one thread
// and finished on another costs no allocator lock and no heap trim, and a
// steady stream of tasks allocates nothing. Blocks above 512 bytes, and every
// block in AddressSanitizer builds (so that a use after free is still
// caught), go straight to operator new and delete.
//
// Thread safety: thread-safe.

#include <cstddef>

namespace quell::detail {

// A block of at least `size` bytes, aligned for any type of alignment 16 or
// less. Throws std::bad_alloc.
void* task_block_allocate(std::size_t size);
// Frees a block from task_block_allocate(size), from any thread.
void task_block_free(void* block, std::size_t size) noexcept;
// Returns the calling thread's cached blocks to the heap.
void task_blocks_trim() noexcept;
// False in AddressSanitizer builds, where every block comes from the heap.
bool task_blocks_recycled() noexcept;

}  // namespace quell::detail
