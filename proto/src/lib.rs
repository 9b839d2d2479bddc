//! The ringside gRPC API (`ringside.v1`), generated from
//! `proto/ringside/v1/ringside.proto`, and the payload format of the `ringside-tracing`
//! layer's frames (`proto/ringside/v1/tracing.proto`).
//!
//! - [`v1`] holds the messages, the `Ringside` client
//!   ([`v1::ringside_client::RingsideClient`]) and server
//!   ([`v1::ringside_server`]), and [`v1::TracingRecord`].
//! - [`FILE_DESCRIPTOR_SET`] is the encoded descriptor set, for gRPC server
//!   reflection.
//! - [`PROTO_SOURCE`] is the `.proto` text itself, for docs and tooling.

#![deny(missing_docs)]
#![warn(clippy::missing_errors_doc, clippy::missing_panics_doc)]
/// `ringside.v1`: messages, client and server.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod v1 {
    tonic::include_proto!("ringside.v1");
}

impl From<ringside_ring::LossReason> for v1::LossReason {
    fn from(reason: ringside_ring::LossReason) -> Self {
        match reason {
            ringside_ring::LossReason::Lapped => v1::LossReason::Lapped,
            ringside_ring::LossReason::Abandoned => v1::LossReason::Abandoned,
            ringside_ring::LossReason::Corrupt => v1::LossReason::Corrupt,
        }
    }
}

impl TryFrom<v1::LossReason> for ringside_ring::LossReason {
    type Error = v1::LossReason;
    /// The ring's reason for a wire reason; `Unspecified` (or any reason this build does
    /// not know) is returned as the error.
    fn try_from(reason: v1::LossReason) -> Result<Self, v1::LossReason> {
        match reason {
            v1::LossReason::Lapped => Ok(ringside_ring::LossReason::Lapped),
            v1::LossReason::Abandoned => Ok(ringside_ring::LossReason::Abandoned),
            v1::LossReason::Corrupt => Ok(ringside_ring::LossReason::Corrupt),
            other => Err(other),
        }
    }
}

/// Encoded `google.protobuf.FileDescriptorSet` of `ringside.v1`, for
/// `tonic_reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ringside_descriptor");

/// Source of `ringside/v1/ringside.proto`.
pub const PROTO_SOURCE: &str = include_str!("../ringside/v1/ringside.proto");

/// Source of `ringside/v1/tracing.proto` (the `ringside-tracing` layer's payloads).
pub const TRACING_PROTO_SOURCE: &str = include_str!("../ringside/v1/tracing.proto");

/// Topic prefix the `ringside-tracing` layer writes under by default (`tracing/<target>`).
pub const TRACING_TOPIC_PREFIX: &str = "tracing/";

/// Fully qualified service name, `ringside.v1.Ringside`.
pub const SERVICE_NAME: &str = "ringside.v1.Ringside";

/// HTTP/2 path of the `Subscribe` method.
pub const SUBSCRIBE_PATH: &str = "/ringside.v1.Ringside/Subscribe";

#[cfg(test)]
mod tests {
    use super::v1::{Batch, Frame};
    use prost::Message;

    #[test]
    fn descriptor_set_decodes_and_names_the_service() {
        let fds = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET)
            .expect("descriptor set decodes");
        let file = fds.file.first().expect("one file");
        assert_eq!(file.package.as_deref(), Some("ringside.v1"));
        assert!(
            file.service
                .iter()
                .any(|s| s.name.as_deref() == Some("Ringside"))
        );
    }

    #[test]
    fn batch_round_trips() {
        let b = Batch {
            ring_id: 7,
            frames: vec![Frame {
                seq: 1,
                timestamp_ns: 2,
                topic: "t".into(),
                producer_id: 3,
                payload: bytes::Bytes::from_static(b"x"),
            }],
            losses: vec![],
            resume_seq: 2,
            from_seq: 1,
            filtered: 3,
            discarded: 4,
            filler: vec![0; 3],
        };
        let enc = b.encode_to_vec();
        assert_eq!(Batch::decode(enc.as_slice()).expect("decodes"), b);
    }
}
