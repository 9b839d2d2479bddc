//! Fork detection: which process a handle belongs to, checked on every call.
//!
//! `fork()` copies a parent's handles into the child, where they still look valid: the ring
//! is shared memory, so a child could write frames that carry the parent's producer id, and
//! closing the copy would shut down the parent's sidecar connection (the socket is shared).
//! Every handle records the fork epoch of the process that made it; a `pthread_atfork`
//! child handler bumps the epoch in every child, so a handle used in a child is refused
//! with one relaxed load and a compare, without a `getpid` system call per send.
//!
//! Limits: the handler runs for `fork()` (and everything built on it, such as `system` or
//! `popen`) but not for a raw `clone`/`vfork` system call without fork handlers; a child
//! created that way must not use its parent's handles (and normally only calls `exec`).

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bumped in the child of every fork().
static FORK_EPOCH: AtomicU64 = AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    // Async-signal-safe (a lock-free atomic add), as a fork handler must be.
    FORK_EPOCH.fetch_add(1, Ordering::Relaxed);
}

/// Installs the fork handler (once per process; the child inherits it).
fn watch_forks() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        // SAFETY: registers a plain `extern "C"` function with no captured state as the
        // child-side fork handler; it stays valid for the life of the program (a Rust
        // cdylib is never unloaded while its handles exist, and glibc unregisters the
        // handlers of an unloaded object).
        let rc = unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        // Only ENOMEM can fail it; without the handler, forks go undetected, nothing worse.
        let _ = rc;
    });
}

/// The process a handle was created in.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Origin {
    epoch: u64,
    pid: u32,
}

impl Origin {
    /// The calling process (installs the fork handler on first use).
    pub(crate) fn current() -> Origin {
        watch_forks();
        Origin {
            epoch: FORK_EPOCH.load(Ordering::Relaxed),
            pid: std::process::id(),
        }
    }

    /// True when this is a child forked since the handle was made.
    #[inline]
    pub(crate) fn forked(&self) -> bool {
        FORK_EPOCH.load(Ordering::Relaxed) != self.epoch
    }

    /// The pid of the process that made the handle.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }
}
