//! Why a write did not publish a frame.

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
        "payload of {len} bytes exceeds the ring's max payload of {max} bytes; nothing was published (split the payload or raise --max-payload on the sidecar)"
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
