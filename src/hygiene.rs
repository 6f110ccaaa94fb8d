//! Process hardening and memory hygiene: the one module allowed `unsafe`.
//!
//! - [`ZeroizingAllocator`] wraps the system allocator and wipes every block
//!   when it is freed (and the old block when a reallocation moves), so the
//!   copies that SDKs, JSON parsers and gRPC buffers make of a secret do not
//!   linger in freed memory after the secret types have wiped their own.
//! - [`harden`] runs at start: `mlockall` (a warning, not a failure, where
//!   the kernel refuses), no core dumps (`RLIMIT_CORE = 0`), not dumpable
//!   (`PR_SET_DUMPABLE = 0`, which also keeps other same-uid processes from
//!   ptrace-attaching or reading `/proc/PID/mem`).
//! - [`take_env`] takes a secret out of the environment (`VAULT_TOKEN`):
//!   its bytes are wiped where the environment block holds them, so neither
//!   /proc/PID/environ nor a memory scan finds it, and it is unset.

use std::alloc::{GlobalAlloc, Layout, System};

/// The system allocator, wiping every block it frees.
pub struct ZeroizingAllocator;

/// Overwrites `len` bytes at `ptr` with zeroes in a way the optimiser may
/// not remove, even though the memory is freed right after (LLVM knows that
/// writes before `free` are dead, and volatile writes are never dead).
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
unsafe fn wipe(ptr: *mut u8, len: usize) {
    let mut i = 0;
    // Word-sized volatile writes where aligned: ~8× fewer than byte writes.
    let head = ptr.align_offset(std::mem::align_of::<u64>()).min(len);
    while i < head {
        // SAFETY: i < len, within the block the caller vouches for.
        unsafe { ptr.add(i).write_volatile(0) };
        i += 1;
    }
    while i + 8 <= len {
        // SAFETY: ptr+i is 8-aligned (after the head) and i+8 <= len.
        unsafe { (ptr.add(i) as *mut u64).write_volatile(0) };
        i += 8;
    }
    while i < len {
        // SAFETY: i < len.
        unsafe { ptr.add(i).write_volatile(0) };
        i += 1;
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

// SAFETY: every method forwards to `System` with the caller's own layout;
// the only additions are writes of zeroes into blocks the caller owns and
// is giving up, before they are handed back.
unsafe impl GlobalAlloc for ZeroizingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` is a live block of `layout.size()` bytes that the
        // caller owns and frees here; nobody reads it afterwards.
        unsafe {
            wipe(ptr, layout.size());
            System.dealloc(ptr, layout);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Never let the system allocator move (or shrink) the block behind
        // our back: allocate, copy, wipe and free the old one ourselves.
        // SAFETY: `layout` with `new_size` is valid per `realloc`'s contract.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: `realloc`'s contract makes new_size non-zero.
        let new = unsafe { System.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live and distinct; the copy is as long
            // as the shorter of them; the old one is then wiped and freed.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                wipe(ptr, layout.size());
                System.dealloc(ptr, layout);
            }
        }
        new
    }
}

/// What [`harden`] managed to do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Hardening {
    /// Memory locked (no secret is ever swapped out).
    pub locked: bool,
    /// Why locking was refused, when it was.
    pub lock_error: Option<String>,
    /// The descriptors the process may open (soft `RLIMIT_NOFILE`, raised
    /// to the hard limit).
    pub max_fds: Option<u64>,
}

/// Gives the allocator's free memory back to the kernel (glibc's
/// `malloc_trim`). Start-up leaves behind what the config parse and the
/// first loads freed (for 10,000 credentials, tens of megabytes), which the
/// allocator would otherwise keep resident for the life of the process.
/// Freed blocks were already wiped by [`ZeroizingAllocator`].
pub fn release_free_memory() {
    // SAFETY: malloc_trim takes no pointer and only returns free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Drops this process's mappings of read-only file pages that it has
/// never written (the executable's code and constants, and the shared
/// libraries'): they stay in the page cache, and the code that serving
/// uses faults back in at once, so what remains resident is the working
/// set rather than everything start-up touched (config parsing, the CLI,
/// store set-up). Pages the process wrote (relocated constants, which are
/// anonymous copies) are never dropped: only mappings whose `Anonymous`
/// size in `/proc/self/smaps` is 0. Locked memory (`lock_memory`) refuses
/// it, which is fine: then everything stays resident on purpose. Returns
/// the bytes dropped.
pub fn drop_start_up_pages() -> u64 {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut dropped = 0;
    let mut candidate: Option<(usize, usize)> = None;
    let mut finish = |candidate: Option<(usize, usize)>, anonymous: Option<u64>| {
        if let (Some((start, end)), Some(0)) = (candidate, anonymous) {
            // SAFETY: the range is a whole mapping of this process, read-only
            // and backed by a file, none of whose pages the process has
            // written (no anonymous copy): dropping the page-table entries
            // loses nothing, since the next access maps the same file page.
            if unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED)
            } == 0
            {
                dropped += (end - start) as u64;
            }
        }
    };
    let mut anonymous = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            finish(candidate.take(), anonymous.take());
            let perms = fields.next().unwrap_or("");
            let inode = fields.nth(2).unwrap_or("0");
            let path = fields.next().unwrap_or("");
            let read_only = perms.starts_with("r-");
            if read_only && inode != "0" && path.starts_with('/') {
                candidate = Some((start, end));
            }
        } else if first == "Anonymous:" {
            anonymous = fields.next().and_then(|v| v.parse().ok());
        }
    }
    finish(candidate, anonymous);
    dropped
}

/// The bytes the allocator has handed out and not been given back (glibc's
/// `mallinfo2`: small blocks plus mmapped ones), headers included: the
/// heap the process really uses, unlike its resident size, which also
/// counts freed memory the allocator keeps. `None` off glibc.
pub fn heap_in_use() -> Option<u64> {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallinfo2 takes nothing and returns a plain struct.
        let info = unsafe { libc::mallinfo2() };
        Some((info.uordblks + info.hblkhd) as u64)
    }
    #[cfg(not(target_env = "gnu"))]
    None
}

/// At most two malloc arenas (glibc's default is eight per core): each
/// arena keeps its own free memory, and a daemon whose threads mostly
/// wait holds megabytes of it for nothing. Call before any thread starts.
pub fn few_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt takes two integers; before threads start nothing
    // else is in the allocator.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    }
}

/// See [`few_malloc_arenas`].
const MALLOC_ARENAS: libc::c_int = 2;

/// Start-of-process hardening: no core dumps, not dumpable, and memory
/// locked when `lock_memory` (a refusal is logged as a warning: an
/// unprivileged container without `IPC_LOCK` still runs).
pub fn harden(lock_memory: bool) -> Hardening {
    use rustix::process::{DumpableBehavior, Resource, Rlimit, set_dumpable_behavior, setrlimit};
    if let Err(e) = setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    ) {
        tracing::warn!(error = %e, "cannot set RLIMIT_CORE to 0");
    }
    if let Err(e) = set_dumpable_behavior(DumpableBehavior::NotDumpable) {
        tracing::warn!(error = %e, "cannot clear PR_SET_DUMPABLE");
    }
    let mut result = Hardening {
        max_fds: raise_nofile(),
        ..Hardening::default()
    };
    if lock_memory {
        use rustix::mm::{MlockAllFlags, mlockall};
        // Pages are locked as they are touched (MCL_ONFAULT, Linux 4.4):
        // every page a secret is written to is locked, but the daemon does
        // not make its whole binary and every thread's whole stack resident
        // (55 MB instead of 9 for 100 credentials). Older kernels refuse
        // the flag; then everything is locked up front.
        let flags = MlockAllFlags::CURRENT | MlockAllFlags::FUTURE;
        let locked = mlockall(flags | MlockAllFlags::ONFAULT).or_else(|e| {
            if e == rustix::io::Errno::INVAL {
                mlockall(flags)
            } else {
                Err(e)
            }
        });
        match locked {
            Ok(()) => result.locked = true,
            Err(e) => {
                let why = format!(
                    "{e} (needs CAP_IPC_LOCK or a large enough RLIMIT_MEMLOCK; set `lock_memory = false` to silence this)"
                );
                tracing::warn!(error = %why, "cannot lock memory: secrets could be swapped out");
                result.lock_error = Some(why);
            }
        }
    }
    result
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, so connections run
/// into the daemon's own caps before they run out of descriptors; returns
/// the limit now in force.
fn raise_nofile() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "cannot raise RLIMIT_NOFILE to its hard limit");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// Takes `name` out of the environment: returns its value, overwrites the
/// value's bytes where the environment holds them (for the environment the
/// process started with, the block /proc/PID/environ shows), and unsets it.
///
/// Call it only while the process has one thread: `main` does, before it
/// starts the runtime. (Nothing may read or write the environment meanwhile,
/// which is why `remove_var` is `unsafe`.)
pub fn take_env(name: &str) -> Option<String> {
    let value = std::env::var(name).ok();
    let c_name = std::ffi::CString::new(name).ok()?;
    // SAFETY: the process has one thread (the caller's promise), so nothing
    // reads or changes the environment while this runs. `getenv` returns
    // null or a pointer to the NUL-terminated value inside the environment,
    // which is writable; exactly its `strlen` bytes are overwritten, and the
    // entry is then removed.
    unsafe {
        let found = libc::getenv(c_name.as_ptr());
        if !found.is_null() {
            wipe(found.cast::<u8>(), libc::strlen(found));
        }
        std::env::remove_var(name);
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wipe_clears_every_byte_at_any_alignment() {
        let mut buf = [0xAAu8; 67];
        for start in 0..8 {
            for len in [0, 1, 7, 8, 9, 31, 50] {
                buf.fill(0xAA);
                // SAFETY: start + len <= 67.
                unsafe { wipe(buf.as_mut_ptr().add(start), len) };
                assert!(buf[start..start + len].iter().all(|&b| b == 0));
                assert!(buf[..start].iter().all(|&b| b == 0xAA));
                assert!(buf[start + len..].iter().all(|&b| b == 0xAA));
            }
        }
    }

    #[test]
    fn realloc_keeps_contents_and_zeroes_what_it_gives_up() {
        let a = ZeroizingAllocator;
        let layout = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: a 64-byte block, grown to 4096, shrunk to 16, then freed.
        unsafe {
            let p = a.alloc(layout);
            for i in 0..64 {
                *p.add(i) = i as u8;
            }
            let q = a.realloc(p, layout, 4096);
            assert!((0..64).all(|i| *q.add(i) == i as u8));
            let big = Layout::from_size_align(4096, 8).unwrap();
            let r = a.realloc(q, big, 16);
            assert!((0..16).all(|i| *r.add(i) == i as u8));
            a.dealloc(r, Layout::from_size_align(16, 8).unwrap());
        }
    }
}
