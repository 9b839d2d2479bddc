//! # ringside-client
//!
//! The producer side of ringside: write telemetry frames into the sidecar's fixed-size
//! shared-memory ring with a claim, a copy and a commit. No lock, no syscall, never
//! blocking, never waiting for the sidecar or its subscribers; a missing or restarting
//! sidecar costs a producer nothing but counted drops.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let producer = ringside_client::Producer::connect_default()?; // $RINGSIDE_SOCKET or /tmp/ringside.sock
//! producer.send("cpu.load", b"0.42")?;                           // claim, copy, commit
//!
//! let mut frame = producer.reserve_borrowed("frames.raw", 4096)?; // zero-copy: fill it in place
//! frame.fill(7);
//! frame.commit();                                                 // dropped without commit = discarded
//!
//! let owned = producer.reserve("frames.raw", 16)?;                // the same, outliving the borrow
//! owned.commit();
//! # Ok(())
//! # }
//! ```
//!
//! The ring itself (format, reader, the sidecar's socket host) lives in the
//! `ringside-ring` crate; `docs/ring-format.md` is the contract. This crate depends on
//! neither tokio nor tonic.

pub mod clock;
mod error;
mod producer;
mod reservation;
mod slots;
mod stats;

pub use error::SendError;
pub use producer::{Producer, ProducerOptions};
pub use reservation::{BorrowedReservation, Reservation};
pub use ringside_ring::handshake::{ConnectError, HANDSHAKE_TIMEOUT, RefusalReason};
pub use ringside_ring::layout::{FORMAT_VERSION, MAX_TOPIC_LEN};
pub use ringside_ring::shm::RingError;
pub use ringside_ring::{DEFAULT_SOCKET_PATH, SOCKET_ENV, socket_path_from_env};
pub use stats::ProducerStats;
