//! Keeping the long-lived sidecar's memory low: glibc keeps memory freed
//! by earlier work (WAL pushes, a backup's parts) in its heap, so the
//! process's resident size only grows; handing it back to the kernel
//! between operations keeps a Backup's peak at what the Backup itself needs.

/// Returns freed heap memory to the operating system (glibc only; a no-op
/// elsewhere).
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
