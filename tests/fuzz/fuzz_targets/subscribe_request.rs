//! `subscribe_request`: arbitrary bytes as a Subscribe request body, through the sidecar's
//! own request checks.
//!
//! The sidecar (`sidecar/`) is a binary with no library target, so its request handling
//! cannot be linked as a crate. What is reachable without editing it:
//! - `sidecar/src/filter.rs` (the topic-filter validation, depending only on `thiserror`) is
//!   compiled into this target verbatim with `#[path]`;
//! - the gRPC framing checks and the start-position mapping of `sidecar/src/subscribe.rs`
//!   (`read_request` and `start`) are mirrored here line for line (they are a few lines of
//!   glue around prost and `RingReader::new`);
//! - `RingReader::new` runs for real against a small ring holding a few frames.
//!
//! Input: `[mode u8][rest]`. Mode even: `rest` is a gRPC-framed body (5-byte prefix) as it
//! arrives on the wire; mode odd: `rest` is the bare protobuf message.
//!
//! Invariants: no panic; decoding allocates in proportion to the input (the decoded
//! message never holds more string bytes than the input had); an accepted filter is bounded
//! (≤ 64 names, ≤ 64 prefixes, each 1..=255 bytes) and matching against it is total; the
//! reader is positioned or refused with `SequenceInFuture` only for a future sequence.
#![no_main]

#[allow(dead_code, clippy::all)]
#[path = "../../../sidecar/src/filter.rs"]
mod filter;

use std::sync::{Arc, OnceLock};

use filter::{MAX_FILTER_LEN, MAX_FILTER_PREFIXES, MAX_FILTER_TOPICS, TopicFilter};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use ringside_client::raw::{FrameHeaderFields, RingHeader, WritableRing, create_ring_memfd};
use ringside_client::{ReadError, ReaderOptions, RingConfig, RingReader, RingView, StartAt};
use ringside_proto::v1;

/// The sidecar's default `--max-request` (16KiB: bytes of one Subscribe request).
const MAX_REQUEST: usize = 16 * 1024;
/// gRPC length-prefixed message header: 1 byte compressed flag, 4 bytes length.
const GRPC_PREFIX_LEN: usize = 5;
/// Frames written into the test ring.
const FRAMES: u64 = 40;

struct Rig {
    view: Arc<RingView>,
    _writer: WritableRing,
}

fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    RIG.get_or_init(|| {
        let config = RingConfig {
            capacity: 64 * 1024,
            max_payload: 1024,
        };
        let header = RingHeader::new(&config, 9, 1);
        let fd = create_ring_memfd(&config, &header).expect("ring");
        let view = Arc::new(RingView::open(fd.try_clone().expect("dup")).expect("view"));
        let writer = WritableRing::open(fd, 9, config).expect("writer");
        for i in 0..FRAMES {
            let topic = if i % 2 == 0 {
                "metrics/cpu"
            } else {
                "logs/app"
            };
            let payload = [i as u8; 16];
            let claim = writer.claim(topic.len(), payload.len());
            writer.write_topic(&claim, topic.as_bytes());
            writer.write_payload(&claim, &payload);
            writer.publish(
                claim,
                FrameHeaderFields {
                    producer_id: 1,
                    timestamp_ns: 1_000 + i,
                    flags: 0,
                },
                topic.as_bytes(),
                &payload,
            );
        }
        Rig {
            view,
            _writer: writer,
        }
    })
}

/// Mirror of `sidecar/src/subscribe.rs::read_request` after the body was collected (the
/// body is limited to `max + 5` bytes before this).
fn read_request(body: &[u8], max: usize) -> Option<v1::SubscribeRequest> {
    if body.len() > max + GRPC_PREFIX_LEN || body.len() < GRPC_PREFIX_LEN {
        return None;
    }
    let compressed = body[0];
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if compressed != 0 || len != body.len() - GRPC_PREFIX_LEN {
        return None;
    }
    v1::SubscribeRequest::decode(&body[GRPC_PREFIX_LEN..]).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let request = if mode & 1 == 0 {
        read_request(rest, MAX_REQUEST)
    } else {
        v1::SubscribeRequest::decode(rest).ok()
    };
    let Some(request) = request else {
        return;
    };

    // Bounded work: prost cannot materialise more string bytes than it was given.
    let held: usize = request
        .topics
        .iter()
        .chain(request.topic_prefixes.iter())
        .map(|s| s.len())
        .sum();
    assert!(held <= rest.len(), "decoded strings larger than the input");
    assert!(request.topics.len() + request.topic_prefixes.len() <= rest.len());

    // The sidecar's filter validation, verbatim.
    match TopicFilter::new(&request.topics, &request.topic_prefixes) {
        Ok(filter) => {
            assert!(request.topics.len() <= MAX_FILTER_TOPICS);
            assert!(request.topic_prefixes.len() <= MAX_FILTER_PREFIXES);
            for s in request.topics.iter().chain(request.topic_prefixes.iter()) {
                assert!(!s.is_empty() && s.len() <= MAX_FILTER_LEN);
                assert!(
                    filter.matches(s.as_bytes()),
                    "a listed name/prefix must match itself"
                );
            }
            let _ = filter.matches(b"metrics/cpu");
            let _ = filter.matches(b"");
            if filter.is_all() {
                assert!(request.topics.is_empty() && request.topic_prefixes.is_empty());
            }
        }
        Err(e) => {
            // Every refusal renders a message (it becomes the INVALID_ARGUMENT text).
            assert!(!e.to_string().is_empty());
            return;
        }
    }

    // Start position, as `subscribe.rs::start` maps it, then a real reader.
    let start = match request.start {
        None | Some(v1::subscribe_request::Start::Earliest(_)) => StartAt::Earliest,
        Some(v1::subscribe_request::Start::Latest(_)) => StartAt::Latest,
        Some(v1::subscribe_request::Start::Sequence(s)) => StartAt::Sequence(s),
        Some(v1::subscribe_request::Start::TimestampNs(t)) => StartAt::TimestampNs(t),
    };
    let rig = rig();
    match RingReader::new(Arc::clone(&rig.view), start, ReaderOptions::default()) {
        Ok(reader) => assert!(reader.next_seq() <= FRAMES),
        Err(ReadError::SequenceInFuture { requested, next }) => {
            assert!(matches!(start, StartAt::Sequence(s) if s == requested && s > next));
        }
    }
});
