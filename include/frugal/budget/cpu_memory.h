// How glibc's malloc treats the large blocks CPU tensors live in. By default it hands most freed
// blocks of more than 128 KiB back to the kernel, so the next training step maps them again and
// the kernel zeroes every page on first touch: on the project's 2-core machine 12% of a CPU
// training step was page faults, and two data-parallel ranks faulting at the same time slowed
// each other's forward pass by 15%. The Trainer keeps freed memory for reuse while it trains on
// the CPU (TrainerOptions::cpu_malloc_tuning) and gives it back when fit ends. See
// docs/performance.md ("CPU memory between steps").
#pragma once

namespace frugal {

/// Makes glibc's malloc keep freed memory for reuse: blocks up to 32 MiB come from the heap
/// (M_MMAP_THRESHOLD, glibc's maximum) and up to 1 GiB of free heap is kept rather than trimmed
/// (M_TRIM_THRESHOLD). Process-wide. Returns false and changes nothing when malloc is not
/// glibc's, or when the environment sets any of these already (MALLOC_MMAP_THRESHOLD_,
/// MALLOC_TRIM_THRESHOLD_, MALLOC_TOP_PAD_, MALLOC_MMAP_MAX_, or the same glibc.malloc.* in
/// GLIBC_TUNABLES): the user's settings win.
bool keep_freed_cpu_memory();

/// Returns the free memory malloc keeps to the kernel (malloc_trim). The settings stay.
void release_freed_cpu_memory();

}  // namespace frugal
