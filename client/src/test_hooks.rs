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
