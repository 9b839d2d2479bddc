//! The naive baseline for ringside's benchmarks, and helpers shared by its
//! binaries.
//!
//! - `naive-server`: a tonic telemetry server written the common way: producers
//!   push frames over a client stream, history lives in a growable `VecDeque`,
//!   and every subscriber gets its own **unbounded** channel of decoded frames
//!   that are cloned and re-encoded per subscriber.
//! - `naive-load`: pushes frames to it as fast as the client stream allows.
//! - `e2e`: runs ringside and the naive server through the same burst and
//!   writes `docs/benchmarks.md`, CSV samples and an SVG plot.

/// `naive.v1`: messages, client and server.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod v1 {
    tonic::include_proto!("naive.v1");
}

/// Nanoseconds since the UNIX epoch.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
