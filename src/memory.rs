//! The agent's use of the C allocator (glibc's malloc): a long-running process that re-plans
//! tens of MB of remote state now and then, from a few threads.
//!
//! Left alone, glibc gives each busy thread its own arena (up to 8 per core), raises its mmap
//! threshold after the first large free (so later large transient buffers, such as a rendered
//! nftables table or a hash table being resized, stay in an arena) and keeps freed memory.
//! Measured with bench/kube_snapshot.sh (1,000 nodes, 10,000 services x 5 endpoints, DNS and
//! the nftables proxy on): RSS 117 MB with the defaults, 96 MB with the settings below.

/// Call once, before any thread is started.
pub fn tune_for_agent() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets glibc allocator parameters; called before threads exist.
    unsafe {
        // Two arenas: the planner and the async workers mostly allocate, the packet threads
        // reuse their buffers.
        libc::mallopt(libc::M_ARENA_MAX, 2);
        // Fixed (setting them turns off the dynamic adjustment): blocks of 128 KiB and more
        // are mapped and returned to the kernel when freed; free tops above it are trimmed.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

/// After a re-plan, which frees the previous plan's transient data: returns free arena
/// memory to the kernel.
pub fn release_freed() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks and trims glibc's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
