//! Test-only hooks (feature `test-hooks`): let a test park a producer between claim and
//! commit, so it can be SIGKILLed mid-frame. Never enabled in release builds of the sidecar.

use std::sync::atomic::{AtomicBool, Ordering};

static PARK_NEXT: AtomicBool = AtomicBool::new(false);

/// Makes the next send on any thread stop between claim and commit, forever (until killed).
pub fn park_next_send() {
    PARK_NEXT.store(true, Ordering::SeqCst);
}

pub(crate) fn between_claim_and_commit() {
    if PARK_NEXT.swap(false, Ordering::SeqCst) {
        // Announce on stdout so the test knows the claim is held, then hang.
        println!("PARKED");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        loop {
            std::thread::park();
        }
    }
}

/// Writes raw bytes over the producer's ring at a data-region byte offset (wrapping), as a
/// buggy or hostile producer would. Returns false when no ring is mapped.
pub fn overwrite_ring(producer: &crate::Producer, data_offset: u64, bytes: &[u8]) -> bool {
    match producer.ring_for_hooks() {
        Some(ring) => {
            let capacity = ring.config().capacity;
            for chunk_start in (0..bytes.len()).step_by(4096) {
                let end = (chunk_start + 4096).min(bytes.len());
                ring.scribble(
                    (data_offset + chunk_start as u64) % capacity,
                    &bytes[chunk_start..end],
                );
            }
            true
        }
        None => false,
    }
}

/// A duplicate of the producer's ring fd (for ftruncate/fallocate attempts), if mapped.
pub fn ring_fd(producer: &crate::Producer) -> Option<std::os::fd::OwnedFd> {
    producer.ring_for_hooks()?.fd()
}
