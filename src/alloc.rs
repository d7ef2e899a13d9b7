//! glibc malloc settings for libtorch's CPU tensors.
//!
//! libtorch allocates each large activation with malloc, and glibc serves blocks
//! over its mmap threshold with fresh mmaps that are unmapped again on free, so
//! every pass over the test set page-faults its whole working set in anew (on this
//! 2-core machine more time went to the kernel than to arithmetic). Keeping large
//! blocks on the heap and never trimming it lets freed blocks be reused.
//!
//! Those settings hold for glibc's main arena only: a second thread (the explorer's
//! worker) gets an arena of its own whose heaps are capped at 64 MiB and shrink on
//! free, which brought the page faults back — the explorer's cache took 13.7 s to
//! build against 1.8 s in a command. One arena for every thread keeps them all on
//! the main heap.

/// Call once at start-up, before any tensor exists.
pub fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator parameters; it is called before other
    // threads allocate.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
