//! A service that ships its `tracing` events (and its `log` records) to ringside by adding
//! one line to its subscriber setup.
//!
//! ```sh
//! ringside serve &                                    # or: cargo run -p ringside -- serve
//! cargo run -p ringside-tracing --example tracing_app
//! ringside tail --from earliest --prefix tracing/     # the records, decoded
//! ```
//!
//! Without a sidecar the app runs just the same: its records are dropped and counted
//! (`RingsideLayer::stats_handle`), and it never blocks.

use std::time::Duration;

use tracing::{info, info_span, warn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn handle(user: &str, attempt: u32) {
    let span = info_span!("handle_login", user, attempt);
    let _entered = span.enter();
    std::thread::sleep(Duration::from_millis(3));
    if attempt < 2 {
        warn!(reason = "bad password", "login refused");
    } else {
        info!(elapsed_ms = 3u64, "logged in");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::registry()
        .with(ringside_tracing::layer()?)
        .init(); // also bridges `log`

    info!(version = env!("CARGO_PKG_VERSION"), "starting");
    for attempt in 0..3 {
        handle("ada", attempt);
    }
    log::info!(target: "legacy::billing", "invoice {} sent", 1042);
    Ok(())
}
