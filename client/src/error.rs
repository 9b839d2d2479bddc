//! Error types shared by the producer, the reader and the host.

use std::path::PathBuf;

use crate::handshake::RefusalReason;
use crate::layout::HeaderError;

/// A ring geometry that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Capacity not a power of two or out of range.
    #[error(
        "ring capacity {capacity} bytes is invalid: it must be a power of two from 64 KiB to 1 TiB (for example 64MiB)"
    )]
    Capacity {
        /// The capacity asked for.
        capacity: u64,
    },
    /// Max payload zero, over the limit, or too large for the ring.
    #[error(
        "max payload {max_payload} bytes does not fit a ring of {capacity} bytes: a whole frame must stay within a quarter of the ring and the payload within 64 MiB; lower the max frame size or grow the ring"
    )]
    MaxPayload {
        /// The max payload asked for.
        max_payload: u32,
        /// The ring capacity.
        capacity: u64,
    },
}

/// Why a ring's shared memory object was refused.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// The header failed validation.
    #[error("ring refused: {0}")]
    Header(#[from] HeaderError),
    /// Seals missing: the ring could be truncated under a reader (SIGBUS).
    #[error(
        "ring refused: the memfd seals are {found:#x}, but shrink, grow and seal must all be sealed ({required:#x}); only rings created by ringside serve are accepted"
    )]
    Seals {
        /// Seals present.
        found: i32,
        /// Seals required.
        required: i32,
    },
    /// Object size differs from what the header implies.
    #[error("ring refused: the memfd is {found} bytes but its header implies {expected} bytes")]
    Size {
        /// Size from fstat.
        found: u64,
        /// Size the header implies.
        expected: u64,
    },
    /// This CPU cannot do the lock-free 128-bit atomics the claim needs.
    #[error(
        "this CPU has no lock-free 128-bit compare-and-swap (x86_64 cmpxchg16b / aarch64 LSE); ringside producers cannot run here"
    )]
    NoWideAtomics,
    /// A system call failed.
    #[error("ring {op} failed: {source}")]
    Sys {
        /// What was attempted.
        op: &'static str,
        /// The OS error.
        source: nix::Error,
    },
}

/// Why [`crate::Producer::connect`] failed for good.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The sidecar answered and said no.
    #[error("the sidecar refused this producer ({reason}): {detail}")]
    Refused {
        /// Machine-readable reason.
        reason: RefusalReason,
        /// The sidecar's explanation.
        detail: String,
    },
    /// The sidecar sent something that is not the ringside handshake.
    #[error("handshake with the sidecar failed: {0}")]
    Protocol(String),
    /// The socket could not be used.
    #[error("cannot use the ringside socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The ring the sidecar handed over cannot be used here.
    #[error("the ring from the sidecar cannot be used: {0}")]
    Ring(#[from] RingError),
}

impl ConnectError {
    /// True when retrying cannot help: a refusal, a protocol mismatch, or a socket path
    /// that can never work (too long for a Unix socket, or not a ringside SOCK_SEQPACKET
    /// socket). A missing or silent sidecar is not permanent: producers retry it.
    pub fn is_permanent(&self) -> bool {
        match self {
            ConnectError::Refused { .. } | ConnectError::Protocol(_) => true,
            ConnectError::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENAMETOOLONG | libc::EPROTOTYPE | libc::ENOTSOCK)
            ),
            ConnectError::Ring(_) => false,
        }
    }
}

/// Why one send or reserve did not write a frame. Each one is also counted in
/// [`crate::ProducerStats`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No ring is mapped yet: the sidecar was never reached. The producer retries in the background.
    #[error(
        "not connected to a ringside sidecar yet; the frame was dropped (the producer keeps retrying in the background)"
    )]
    NotConnected,
    /// Payload larger than the ring's max payload.
    #[error(
        "payload of {len} bytes exceeds the ring's max payload of {max} bytes; nothing was published (split the payload or raise --max-frame on the sidecar)"
    )]
    TooLarge {
        /// Payload length asked for.
        len: usize,
        /// The ring's max payload.
        max: u32,
    },
    /// Topic empty or longer than 255 bytes.
    #[error("topic of {len} bytes is invalid: a topic must be 1 to 255 bytes of UTF-8")]
    InvalidTopic {
        /// Topic length.
        len: usize,
    },
}

/// Why the sidecar side could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Bad ring geometry.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The ring could not be created.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// The socket could not be bound.
    #[error(
        "cannot listen on the producer socket {path}: {source} (is another ringside serve running? remove a stale socket file or pass --socket)"
    )]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: nix::Error,
    },
    /// Another system call failed.
    #[error("{op} failed: {source}")]
    Sys {
        /// What was attempted.
        op: &'static str,
        /// The OS error.
        source: nix::Error,
    },
}

/// Why a reader could not be positioned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// A resume asked for a sequence the ring has not written yet.
    #[error(
        "sequence {requested} has not been written yet (the next frame will be {next}); resume from a sequence you received, or the ring was replaced"
    )]
    SequenceInFuture {
        /// The sequence asked for.
        requested: u64,
        /// The next sequence the ring will write.
        next: u64,
    },
}
