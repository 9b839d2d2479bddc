//! `subscribe_request`: arbitrary bytes as a Subscribe request body, through the sidecar's
//! own request checks.
//!
//! The sidecar library's request handling: `ringside_sidecar::request` (gRPC framing,
//! decoding, filter validation, start position; pure, no I/O) and
//! `ringside_sidecar::filter`. The Subscribe handler calls exactly these functions after collecting the body (bounded to
//! `--max-request` + 5 bytes). `RingReader::new` then runs for real against a small ring
//! holding a few frames.
//!
//! Input: `[mode u8][rest]`. Mode even: `rest` is a gRPC-framed body (5-byte prefix) as it
//! arrives on the wire; mode odd: `rest` is the bare protobuf message.
//!
//! Invariants: no panic; decoding allocates in proportion to the input (the decoded
//! message never holds more string bytes than the input had); an accepted filter is bounded
//! (≤ 64 names, ≤ 64 prefixes, each 1..=255 bytes) and matching against it is total; the
//! reader is positioned or refused with `SequenceInFuture` only for a future sequence.
#![no_main]

use std::sync::{Arc, OnceLock};

use ringside_sidecar::filter::{MAX_FILTER_LEN, MAX_FILTER_PREFIXES, MAX_FILTER_TOPICS};
use ringside_sidecar::request;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use ringside_ring::layout::RingHeader;
use ringside_ring::shm::create_ring_memfd;
use ringside_ring::writer::{FrameHeaderFields, WritableRing};
use ringside_ring::{ReadError, ReaderOptions, RingConfig, RingReader, RingView, StartAt};
use ringside_proto::v1;

/// The sidecar's default `--max-request` (16KiB: bytes of one Subscribe request).
const MAX_REQUEST: usize = 16 * 1024;
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

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let request = if mode & 1 == 0 {
        // The handler's body limit, then its decoding.
        if rest.len() > MAX_REQUEST + request::GRPC_PREFIX_LEN {
            return;
        }
        request::decode_framed(rest, MAX_REQUEST).ok()
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

    // The sidecar's validation: filter bounds and start position.
    let subscription = match request::subscription(&request) {
        Ok(subscription) => subscription,
        Err(e) => {
            // Every refusal renders a message (it becomes the INVALID_ARGUMENT text).
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let filter = &subscription.filter;
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
    let start = subscription.start;
    let rig = rig();
    match RingReader::new(Arc::clone(&rig.view), start, ReaderOptions::default()) {
        Ok(reader) => assert!(reader.next_seq() <= FRAMES),
        Err(ReadError::SequenceInFuture { requested, next }) => {
            assert!(matches!(start, StartAt::Sequence(s) if s == requested && s > next));
        }
    }
});
