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
//!   frames or exact [`Loss`] records (resync, stalls, lapping).
//! - [`doorbell`]: waking the sidecar without a syscall on a busy producer's path.
//! - [`handshake`]: the producer handshake on the Unix socket, both messages and the
//!   producer's [`connect`](handshake::connect).
//! - [`host`]: the sidecar's side of the socket: ring creation, adoption after a restart,
//!   admission by peer credentials.
//!
//! Producers normally use the `ringside-client` crate on top of this one; tests, fuzzers,
//! benchmarks and other implementations of the format use this crate directly.
//! Depends on neither tokio nor tonic.
//!
//! Both sides in one process: the sidecar's host, a producer admitted through the real
//! handshake writing one frame with a claim, a copy and a commit, and a reader that
//! validates it:
//!
//! ```
//! use std::sync::Arc;
//! use ringside_ring::handshake;
//! use ringside_ring::writer::{FrameHeaderFields, WritableRing};
//! use ringside_ring::{HostOptions, ReadStep, ReaderOptions, RingHost, RingReader, StartAt, VecSink};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let socket = dir.path().join("ringside.sock");
//! let host = RingHost::start(HostOptions { socket_path: socket.clone(), ..Default::default() })?;
//!
//! // The producer's side: handshake, map, claim, copy, commit.
//! let admission = handshake::connect(&socket, None)?;
//! let welcome = admission.welcome;
//! let ring = WritableRing::open(admission.ring, welcome.ring_id, welcome.ring_config())?;
//! let (topic, payload) = (b"cpu.load", b"0.42");
//! let claim = ring.claim(topic.len(), payload.len());
//! ring.write_topic(&claim, topic);
//! ring.write_payload(&claim, payload);
//! let fields = FrameHeaderFields { producer_id: welcome.producer_id, timestamp_ns: 1, flags: 0 };
//! ring.publish(claim, fields, topic, payload);
//!
//! // The sidecar's side: a read-only cursor that validates what it copies.
//! let mut reader = RingReader::new(host.ring(), StartAt::Earliest, ReaderOptions::default())?;
//! let mut sink = VecSink::default();
//! assert!(matches!(reader.read(&mut sink), ReadStep::Frame(meta) if meta.seq == 0));
//! assert_eq!((sink.topic(), sink.payload()), (&topic[..], &payload[..]));
//! assert_eq!(reader.read(&mut sink), ReadStep::Idle);
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]
#![warn(clippy::missing_errors_doc, clippy::missing_panics_doc)]
pub mod doorbell;
pub mod handshake;
pub mod host;
pub mod layout;
pub mod reader;
pub mod shm;
pub mod view;
pub mod writer;

/// The buffer type [`FrameSink::begin`] hands the reader (re-exported so that sinks use
/// the same `bytes` version).
pub use bytes::BytesMut;
pub use doorbell::{Armed, RingWaiter};
pub use handshake::{ConnectError, ConnectErrorKind, HANDSHAKE_VERSION, RefusalReason};
pub use host::{HostError, HostOptions, HostStats, ProducerInfo, RingHost};
pub use layout::{
    ConfigError, FORMAT_VERSION, FRAME_HEADER_LEN, FrameMeta, MAX_TOPIC_LEN, RingConfig,
    decode_frame, frame_len,
};
pub use reader::{
    Cursor, FrameSink, Loss, LossReason, PerReason, ReadError, ReadStep, ReaderOptions, RingBounds,
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
