//! The naive baseline for ringside's benchmarks, and helpers shared by its
//! binaries.
//!
//! - `naive-server`: a tonic telemetry server written the common way: producers
//!   push frames over a client stream, history lives in a growable `VecDeque`,
//!   and every subscriber gets its own **unbounded** channel of decoded frames
//!   that are cloned and re-encoded per subscriber.
//! - `naive-load`: pushes frames to it as fast as the client stream allows.
//! - `preencoded-server`: a plain tonic server streaming `Batch` messages encoded once.
//! - `dgram-server`, `dgram-load`: the Unix-datagram (DogStatsD-style) producer path.
//!
//! The harness that runs them next to ringside is the `e2e` binary of `benches/e2e`.

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
