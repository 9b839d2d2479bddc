//! ringside exporter: streams a sidecar's ring into a NATS JetStream stream,
//! exactly once across restarts, in bounded memory; and reads it back.
//!
//! - [`export`] runs the exporter: a gRPC subscriber of `ringside serve`
//!   that publishes every frame (or whole batches) and every loss to
//!   JetStream. `ringside export` is a thin command around it.
//! - [`reader::StreamReader`] reads an exporter's records back from the
//!   stream with the same accounting as a gRPC subscriber (`ringside tail --nats-url`).
//! - [`subject`] maps topics to subjects (reversibly) and [`record`] defines
//!   the records: the wire contract documented in `docs/fleet.md`.
//!
//! Exactly once, in short: every record carries a `Nats-Msg-Id` derived from
//! the ring id and its sequence range, and a resume point ([`coverage`]); at
//! start the exporter waits until no earlier exporter of its prefix is
//! connected ([`presence`]), then resumes from the resume point of the last
//! record of its prefix, skipping what the stream holds above it; after a
//! NATS failure it reads back which of the records in flight the stream holds
//! and publishes the others again; JetStream's duplicate window covers the
//! rest. See `docs/fleet.md` for where the guarantee stops.

#![deny(missing_docs)]

pub mod accounting;
pub mod budget;
pub mod coverage;
mod exporter;
pub mod metrics;
pub mod nats;
pub mod presence;
pub mod reader;
pub mod record;
pub mod resume;
mod sidecar;
pub mod stream;
pub mod subject;
mod window;

pub use budget::{Budget, MemoryLimit};
pub use exporter::{ExportConfig, ExportError, ExportSummary, export};
pub use sidecar::SidecarClient;

/// The error and its sources, joined with `: `.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// A byte count with IEC units, e.g. `64.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
