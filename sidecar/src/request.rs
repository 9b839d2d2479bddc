//! What a subscriber asked for: the Subscribe request, from its gRPC framing to a
//! validated topic filter and start position.
//!
//! Pure and synchronous (no I/O, no tonic), so the same code serves the Subscribe handler,
//! the property tests below and the `subscribe_request` fuzz target
//! (`tests/fuzz/fuzz_targets/subscribe_request.rs` compiles this file and `filter.rs`
//! verbatim). The caller bounds the body to `max + GRPC_PREFIX_LEN` bytes before it is
//! collected, so nothing here allocates more than the request's own size.

use crate::filter::{FilterError, TopicFilter};
use prost::Message;
use ringside_proto::v1;
use ringside_ring::StartAt;
use thiserror::Error;

/// gRPC length-prefixed message header: 1 byte compressed flag, 4 bytes big-endian length.
pub const GRPC_PREFIX_LEN: usize = 5;

/// A Subscribe request the sidecar refuses, with the reason the client is told.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RequestError {
    /// The body held no complete gRPC message prefix.
    #[error("empty Subscribe request: send one SubscribeRequest message")]
    Empty,
    /// The message was compressed (the sidecar advertises no compression).
    #[error("compressed Subscribe requests are not supported; send the request uncompressed")]
    Compressed,
    /// The body is larger than `--max-request` allows.
    #[error(
        "Subscribe request larger than {max} bytes (--max-request): {len} bytes; send fewer or shorter filters"
    )]
    TooLarge {
        /// Bytes of the message (without the 5-byte prefix), as far as they were read.
        len: usize,
        /// `--max-request`.
        max: usize,
    },
    /// The prefix's length disagrees with the bytes that arrived.
    #[error(
        "Subscribe request framing says {declared} bytes but {arrived} arrived; send exactly one message"
    )]
    Framing {
        /// Length in the gRPC prefix.
        declared: usize,
        /// Bytes after the prefix.
        arrived: usize,
    },
    /// The message is not a valid `SubscribeRequest`.
    #[error("cannot decode SubscribeRequest: {0}")]
    Decode(String),
    /// `earliest` or `latest` was set to false, which names no start position.
    #[error(
        "`{field}: false` is not a start position; set `{field}: true`, or choose another start (earliest, latest, sequence, timestamp_ns), or leave `start` unset for earliest"
    )]
    FalseStart {
        /// `earliest` or `latest`.
        field: &'static str,
    },
    /// The topic filter was refused.
    #[error(transparent)]
    Filter(#[from] FilterError),
}

/// A validated subscription: which topics and where to start.
#[derive(Debug)]
pub struct Subscription {
    /// Topics to deliver.
    pub filter: TopicFilter,
    /// Where the cursor starts.
    pub start: StartAt,
    /// The client's `max_batch_bytes` (0: the sidecar's `--subscriber-buffer`).
    pub max_batch_bytes: u32,
    /// The client's `max_batch_frames` (0: no frame limit).
    pub max_batch_frames: u32,
}

/// Decodes one gRPC-framed `SubscribeRequest` of at most `max` message bytes.
///
/// # Errors
///
/// [`RequestError`]: empty body, broken gRPC framing, compressed message, over `max` bytes, or
/// protobuf that does not decode.
pub fn decode_framed(body: &[u8], max: usize) -> Result<v1::SubscribeRequest, RequestError> {
    let Some((prefix, message)) = body.split_first_chunk::<GRPC_PREFIX_LEN>() else {
        return Err(RequestError::Empty);
    };
    let [compressed, len @ ..] = *prefix;
    if compressed != 0 {
        return Err(RequestError::Compressed);
    }
    if message.len() > max {
        return Err(RequestError::TooLarge {
            len: message.len(),
            max,
        });
    }
    let declared = u32::from_be_bytes(len) as usize;
    if declared != message.len() {
        return Err(RequestError::Framing {
            declared,
            arrived: message.len(),
        });
    }
    v1::SubscribeRequest::decode(message).map_err(|e| RequestError::Decode(e.to_string()))
}

/// Validates a decoded request: the filter's bounds and the start position.
///
/// # Errors
///
/// [`RequestError::Filter`] for a filter over its bounds, and the start-position errors listed
/// on [`RequestError`].
pub fn subscription(request: &v1::SubscribeRequest) -> Result<Subscription, RequestError> {
    let filter = TopicFilter::new(&request.topics, &request.topic_prefixes)?;
    let start = match request.start {
        None | Some(v1::subscribe_request::Start::Earliest(true)) => StartAt::Earliest,
        Some(v1::subscribe_request::Start::Latest(true)) => StartAt::Latest,
        Some(v1::subscribe_request::Start::Earliest(false)) => {
            return Err(RequestError::FalseStart { field: "earliest" });
        }
        Some(v1::subscribe_request::Start::Latest(false)) => {
            return Err(RequestError::FalseStart { field: "latest" });
        }
        Some(v1::subscribe_request::Start::Sequence(s)) => StartAt::Sequence(s),
        Some(v1::subscribe_request::Start::TimestampNs(t)) => StartAt::TimestampNs(t),
    };
    Ok(Subscription {
        filter,
        start,
        max_batch_bytes: request.max_batch_bytes,
        max_batch_frames: request.max_batch_frames,
    })
}

#[cfg(test)]
mod tests {
    //! Short form of the `subscribe_request` fuzz target, run by `cargo test`.
    use super::*;
    use crate::filter::{MAX_FILTER_BYTES, MAX_FILTER_LEN, MAX_FILTER_PREFIXES, MAX_FILTER_TOPICS};
    use proptest::prelude::*;

    const MAX: usize = 16 * 1024;

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut body = vec![0u8];
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(message);
        body
    }

    fn topic() -> impl Strategy<Value = String> {
        "[a-z/]{0,12}|[a-z]{250,260}"
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Arbitrary bodies never panic, and an accepted request holds no more string
        /// bytes than the body had and a filter within its bounds.
        #[test]
        fn arbitrary_bodies_are_refused_or_bounded(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let Ok(request) = decode_framed(&body, MAX) else { return Ok(()) };
            let held: usize = request.topics.iter().chain(&request.topic_prefixes).map(String::len).sum();
            prop_assert!(held <= body.len());
            if let Ok(sub) = subscription(&request) {
                prop_assert!(request.topics.len() <= MAX_FILTER_TOPICS);
                prop_assert!(request.topic_prefixes.len() <= MAX_FILTER_PREFIXES);
                for name in request.topics.iter().chain(&request.topic_prefixes) {
                    prop_assert!(!name.is_empty() && name.len() <= MAX_FILTER_LEN);
                    prop_assert!(sub.filter.matches(name.as_bytes()));
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Well-formed requests round-trip; a filter is accepted exactly when every entry
        /// is within bounds; the start position maps one to one.
        #[test]
        fn encoded_requests_round_trip(
            topics in proptest::collection::vec(topic(), 0..70),
            prefixes in proptest::collection::vec(topic(), 0..4),
            start in prop_oneof![
                Just(None),
                any::<bool>().prop_map(|b| Some(v1::subscribe_request::Start::Earliest(b))),
                any::<bool>().prop_map(|b| Some(v1::subscribe_request::Start::Latest(b))),
                any::<u64>().prop_map(|s| Some(v1::subscribe_request::Start::Sequence(s))),
                any::<u64>().prop_map(|t| Some(v1::subscribe_request::Start::TimestampNs(t))),
            ],
            max_batch_bytes in any::<u32>(),
        ) {
            let request = v1::SubscribeRequest {
                topics,
                topic_prefixes: prefixes,
                start,
                max_batch_bytes,
                ..Default::default()
            };
            let body = framed(&request.encode_to_vec());
            let decoded = decode_framed(&body, MAX);
            prop_assert_eq!(decoded.as_ref(), Ok(&request));
            let in_bounds = request.topics.len() <= MAX_FILTER_TOPICS
                && request.topic_prefixes.len() <= MAX_FILTER_PREFIXES
                && request.topics.iter().chain(&request.topic_prefixes)
                    .all(|t| !t.is_empty() && t.len() <= MAX_FILTER_LEN)
                && request.topics.iter().chain(&request.topic_prefixes)
                    .map(String::len).sum::<usize>() <= MAX_FILTER_BYTES;
            let false_start = matches!(
                request.start,
                Some(v1::subscribe_request::Start::Earliest(false) | v1::subscribe_request::Start::Latest(false))
            );
            match subscription(&request) {
                Ok(sub) => {
                    prop_assert!(in_bounds && !false_start);
                    prop_assert_eq!(sub.max_batch_bytes, max_batch_bytes);
                    let expected = match request.start {
                        None | Some(v1::subscribe_request::Start::Earliest(_)) => StartAt::Earliest,
                        Some(v1::subscribe_request::Start::Latest(_)) => StartAt::Latest,
                        Some(v1::subscribe_request::Start::Sequence(s)) => StartAt::Sequence(s),
                        Some(v1::subscribe_request::Start::TimestampNs(t)) => StartAt::TimestampNs(t),
                    };
                    prop_assert_eq!(sub.start, expected);
                }
                Err(RequestError::Filter(_)) => prop_assert!(!in_bounds),
                Err(RequestError::FalseStart { .. }) => prop_assert!(false_start && in_bounds),
                Err(other) => prop_assert!(false, "unexpected refusal {other}"),
            }
        }
    }

    /// The largest request the filter rules allow (every name and prefix slot used, 8 KiB
    /// of filter text, every other field at its largest) fits the default --max-request.
    #[test]
    fn largest_valid_request_fits_the_default_request_limit() {
        let per = MAX_FILTER_BYTES / (MAX_FILTER_TOPICS + MAX_FILTER_PREFIXES);
        let request = v1::SubscribeRequest {
            topics: (0..MAX_FILTER_TOPICS)
                .map(|i| format!("{i:0>per$}"))
                .collect(),
            topic_prefixes: (0..MAX_FILTER_PREFIXES)
                .map(|i| format!("{i:x>per$}"))
                .collect(),
            start: Some(v1::subscribe_request::Start::TimestampNs(u64::MAX)),
            max_batch_frames: u32::MAX,
            max_batch_bytes: u32::MAX,
        };
        let body = framed(&request.encode_to_vec());
        assert!(subscription(&decode_framed(&body, MAX).expect("decodes")).is_ok());
        // Also with a few long entries instead of many short ones.
        let long = |c: char| c.to_string().repeat(MAX_FILTER_LEN);
        let n = MAX_FILTER_BYTES / MAX_FILTER_LEN;
        let request = v1::SubscribeRequest {
            topics: (0..n)
                .map(|i| long(char::from(b'a' + (i % 26) as u8)))
                .collect(),
            ..request
        };
        assert!(
            request.encoded_len() + GRPC_PREFIX_LEN <= MAX,
            "{}",
            request.encoded_len()
        );
    }

    #[test]
    fn false_start_positions_are_refused() {
        for (start, field) in [
            (v1::subscribe_request::Start::Latest(false), "latest"),
            (v1::subscribe_request::Start::Earliest(false), "earliest"),
        ] {
            let request = v1::SubscribeRequest {
                start: Some(start),
                ..Default::default()
            };
            let err = subscription(&request).expect_err("refused");
            assert_eq!(err, RequestError::FalseStart { field });
            assert!(
                err.to_string().contains(&format!("`{field}: false`")),
                "{err}"
            );
        }
    }

    #[test]
    fn framing_errors_name_the_problem() {
        assert_eq!(decode_framed(&[0, 0, 0], MAX), Err(RequestError::Empty));
        assert_eq!(
            decode_framed(&[1, 0, 0, 0, 0], MAX),
            Err(RequestError::Compressed)
        );
        assert_eq!(
            decode_framed(&[0, 0, 0, 0, 9, 1], MAX),
            Err(RequestError::Framing {
                declared: 9,
                arrived: 1
            })
        );
        let big = framed(&[0u8; 40]);
        assert_eq!(
            decode_framed(&big, 32),
            Err(RequestError::TooLarge { len: 40, max: 32 })
        );
    }
}
