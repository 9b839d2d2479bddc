//! # ringside-client
//!
//! The producer side of ringside, and the ring itself: a fixed-size shared-memory frame
//! ring that producers write with a claim, a copy and a commit (no lock, no syscall, never
//! blocking), and that the sidecar reads through a read-only mapping, trusting nothing.
//!
//! - [`Producer`]: connect to the sidecar's Unix socket, then [`Producer::send`] or
//!   [`Producer::reserve`] frames.
//! - [`RingReader`]: a cursor that yields validated frames or explicit [`Loss`] records.
//! - [`RingHost`]: the sidecar's side of the socket: ring creation, adoption after a
//!   restart, admission by peer credentials.
//!
//! The byte layout and protocols are specified in `docs/ring-format.md`.
//! This crate depends on neither tokio nor tonic.

mod error;
mod handshake;
mod host;
mod layout;
mod producer;
mod reader;
mod ring;
mod shm;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;
mod wake;

pub use error::{ConfigError, ConnectError, HostError, ReadError, RingError, SendError};
pub use handshake::{HANDSHAKE_VERSION, RefusalReason};
pub use host::{HostOptions, HostStats, ProducerInfo, RingHost};
pub use layout::{
    FORMAT_VERSION, FRAME_HEADER_LEN, FrameMeta, MAX_TOPIC_LEN, RingConfig, decode_frame, frame_len,
};
pub use producer::{Producer, ProducerOptions, ProducerStats, Reservation};
pub use reader::{
    FrameSink, Loss, LossReason, ReadStep, ReaderOptions, RingBounds, RingReader, StartAt, VecSink,
};
pub use ring::{RingView, Tail};
pub use wake::RingWaiter;

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

/// Low-level access for tests, fuzzers and benchmarks: the raw ring and its layout.
pub mod raw {
    pub use crate::layout::{
        CLAIM_OFFSET, FLAG_PAYLOAD_UNCHECKED, FRAME_ALIGN, FrameHeader, HEADER_REGION_LEN,
        HeaderCheck, RingHeader, STATE_COMMITTED, STATE_DISCARDED, check_header, frame_check,
    };
    pub use crate::ring::{Claim, FrameHeaderFields, WritableRing};
    pub use crate::shm::{
        RING_SEALS, create_ring_memfd, inspect_ring_fd, inspect_ring_fd_geometry,
    };
}
