//! Settings of the process a server runs in, applied once at its start by the binary that
//! hosts the server (the `ff` command, the benchmark).
//!
//! Transparent huge pages are turned off for the process. mimalloc, the binaries' allocator,
//! asks the kernel for huge pages on its arenas and gives freed memory back in small ranges
//! after its purge delay; a huge page broken up that way and touched again is faulted back in
//! whole, 2 MiB zeroed at once. Request bodies of megabytes (a batch of 500 submissions of
//! 4 KiB is 2.7 MB of JSON) churn through such memory: in a profile of the benchmark's HTTP
//! ingress, zeroing huge pages was a fifth of the server and client's CPU, and with huge pages
//! off the process used about a quarter less CPU for the same work. A server's heap is small
//! enough that huge pages buy it nothing in TLB reach.

/// Turns transparent huge pages off for this process and the children it starts (an embedded
/// cluster's PostgreSQL processes among them; its shared buffers are unaffected: PostgreSQL
/// backs them with explicit huge pages when configured, never transparent ones). Call it first
/// thing in `main`: pages already backed by huge pages keep them until they are freed. An error
/// (a kernel without the setting) leaves the process as it was, which is only slower.
pub fn keep_small_pages() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes no pointers and only changes how the kernel backs
        // this process's future page faults.
        if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
