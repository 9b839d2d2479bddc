//! # ringside-ring
//!
//! The ring at the heart of ringside, and everything both of its sides share: a fixed-size
//! shared-memory frame ring that producers write with a claim, a copy and a commit (no
//! lock, no syscall, never blocking), and that the sidecar reads through a read-only
//! mapping, trusting nothing it finds there.
//!
//! `docs/ring-format.md` is the contract this crate implements; each module names the
//! section it owns:
//!
//! - [`layout`]: the bytes (ring header, frame header, frame check, limits). Pure data.
//! - [`shm`]: the operating-system boundary: sealed memfds, the double mapping, raw copies
//!   in and out of shared memory. The only module with `unsafe`.
//! - [`writer`]: a producer's writable mapping and the claim/commit protocol.
//! - [`view`] and [`reader`]: the read-only mapping, and the cursor that yields validated
//!   frames or exact [`Loss`](reader::Loss) records (resync, stalls, lapping).
//! - [`doorbell`]: waking the sidecar without a syscall on a busy producer's path.
//! - [`handshake`]: the producer handshake on the Unix socket, both messages and the
//!   producer's [`connect`](handshake::connect).
//! - [`host`]: the sidecar's side of the socket: ring creation, adoption after a restart,
//!   admission by peer credentials.
//!
//! Producers normally use the `ringside-client` crate on top of this one; tests, fuzzers,
//! benchmarks and other implementations of the format use this crate directly.
//! Depends on neither tokio nor tonic.

pub mod doorbell;
pub mod handshake;
pub mod host;
pub mod layout;
pub mod reader;
pub mod shm;
pub mod view;
pub mod writer;

pub use doorbell::RingWaiter;
pub use handshake::{ConnectError, ConnectErrorKind, HANDSHAKE_VERSION, RefusalReason};
pub use host::{HostError, HostOptions, HostStats, ProducerInfo, RingHost};
pub use layout::{
    ConfigError, FORMAT_VERSION, FRAME_HEADER_LEN, FrameMeta, MAX_TOPIC_LEN, RingConfig,
    decode_frame, frame_len,
};
pub use reader::{
    FrameSink, Loss, LossReason, PerReason, ReadError, ReadStep, ReaderOptions, RingBounds,
    RingReader, StartAt, VecSink,
};
pub use shm::RingError;
pub use view::{RingView, Tail};
pub use writer::WritableRing;

/// Socket path used when neither an explicit path nor `$RINGSIDE_SOCKET` is given.
pub const DEFAULT_SOCKET_PATH: &str = "/tmp/ringside.sock";
/// Environment variable naming the sidecar's socket.
pub const SOCKET_ENV: &str = "RINGSIDE_SOCKET";

/// The socket path from `$RINGSIDE_SOCKET`, or [`DEFAULT_SOCKET_PATH`].
pub fn socket_path_from_env() -> std::path::PathBuf {
    std::env::var_os(SOCKET_ENV)
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(DEFAULT_SOCKET_PATH))
}
