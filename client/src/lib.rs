//! # ringside-client
//!
//! The producer side of ringside: write telemetry frames into the sidecar's fixed-size
//! shared-memory ring with a claim, a copy and a commit. No lock, no syscall, never
//! blocking, never waiting for the sidecar or its subscribers; a missing or restarting
//! sidecar costs a producer nothing but counted drops.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let socket = dir.path().join("ringside.sock");
//! # // SAFETY: set before any other thread exists in this doctest.
//! # unsafe { std::env::set_var(ringside_client::SOCKET_ENV, &socket) };
//! # let _sidecar = ringside_ring::RingHost::start(ringside_ring::HostOptions {
//! #     socket_path: socket,
//! #     adopt_grace: std::time::Duration::ZERO,
//! #     ..Default::default()
//! # })?;
//! # let (payload, bytes) = (b"0.42".to_vec(), vec![7u8; 4096]);
//! let producer = ringside_client::Producer::connect_default()?; // $RINGSIDE_SOCKET or /tmp/ringside.sock
//! producer.send("cpu.load", &payload)?;                          // claim, copy, commit
//!
//! let mut frame = producer.reserve("frames.raw", 4096)?;         // zero-copy: fill it in place
//! frame.copy_from_slice(&bytes);
//! frame.commit();                                                // dropped without commit = discarded
//! # assert_eq!(producer.stats().sent, 2);
//! # Ok(())
//! # }
//! ```
//!
//! (This example is the README's; `tests/readme.rs` keeps the two the same.)
//!
//! The ring itself (format, reader, the sidecar's socket host) lives in the
//! `ringside-ring` crate; `docs/ring-format.md` is the contract. This crate depends on
//! neither tokio nor tonic.

#![deny(missing_docs)]
#![warn(clippy::missing_errors_doc, clippy::missing_panics_doc)]
mod clock;
mod error;
mod producer;
mod reservation;
mod slots;
mod stats;

pub use error::SendError;
pub use producer::{Producer, ProducerOptions};
pub use reservation::Reservation;
pub use ringside_ring::handshake::{ConnectError, HANDSHAKE_TIMEOUT, RefusalReason};
pub use ringside_ring::layout::{FORMAT_VERSION, MAX_TOPIC_LEN};
pub use ringside_ring::shm::RingError;
pub use ringside_ring::{DEFAULT_SOCKET_PATH, SOCKET_ENV, socket_path_from_env};
pub use stats::ProducerStats;
