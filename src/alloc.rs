//! glibc malloc settings for libtorch's CPU tensors.
//!
//! libtorch allocates each large activation with malloc, and glibc serves blocks
//! over its mmap threshold with fresh mmaps that are unmapped again on free, so
//! every pass over the test set page-faults its whole working set in anew (on this
//! 2-core machine more time went to the kernel than to arithmetic). Keeping large
//! blocks on the heap and never trimming it lets freed blocks be reused.

/// Call once at start-up, before any tensor exists.
pub fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator parameters; it is called before other
    // threads allocate.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
