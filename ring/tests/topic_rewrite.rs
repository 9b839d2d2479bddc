//! A producer that rewrites its committed frame (a new topic and a frame check that
//! matches it) between the reader's first copy of the topic (the one the filter and the
//! one UTF-8 check see) and its final copy of the body: the final copy is validated
//! against the header the reader copied first, so the rewrite is caught as corrupt and
//! nothing is committed. (Only a new topic whose check collides with the old 32-bit check
//! would pass that; for it the reader checks the final topic's UTF-8 and asks the sink's
//! filter again. That path is not reachable here without a collision search.) The
//! rewrite happens inside the sink's `accept_topic`, which makes the race deterministic.

use ringside_ring::layout::{FrameHeader, RingHeader, STATE_COMMITTED, frame_check};
use ringside_ring::shm::create_ring_memfd;
use ringside_ring::writer::{FrameHeaderFields, WritableRing};
use ringside_ring::{
    BytesMut, FrameMeta, FrameSink, LossReason, ReadStep, ReaderOptions, RingConfig, RingReader,
    RingView, StartAt,
};
use std::sync::Arc;
use zerocopy::IntoBytes;

const PAYLOAD: &[u8] = b"payload bytes";
const FIELDS: FrameHeaderFields = FrameHeaderFields {
    producer_id: 7,
    timestamp_ns: 1234,
    flags: 0,
};

/// The header `publish` writes for the ring's first frame with `topic`.
fn first_header(topic: &[u8]) -> FrameHeader {
    let mut header = FrameHeader {
        commit: STATE_COMMITTED,
        seq: 0,
        timestamp_ns: FIELDS.timestamp_ns,
        payload_len: PAYLOAD.len() as u32,
        producer_id: FIELDS.producer_id,
        topic_len: topic.len() as u16,
        flags: 0,
        check: 0,
    };
    header.check = frame_check(&header, topic, PAYLOAD);
    header
}

struct RewritingSink<'a> {
    ring: &'a WritableRing,
    rewrite_to: Option<Vec<u8>>,
    accept: fn(&[u8]) -> bool,
    asked: Vec<(Vec<u8>, bool)>,
    body: BytesMut,
    committed: Option<Vec<u8>>,
}

impl FrameSink for RewritingSink<'_> {
    fn accept_topic(&mut self, topic: &[u8], utf8: bool) -> bool {
        self.asked.push((topic.to_vec(), utf8));
        if let Some(new) = self.rewrite_to.take() {
            // A hostile producer: same lengths, new topic, a check that matches it.
            self.ring.overwrite(0, first_header(&new).as_bytes());
            self.ring.overwrite(40, &new);
        }
        (self.accept)(topic)
    }
    fn begin(&mut self, _meta: &FrameMeta) -> Option<&mut BytesMut> {
        self.body.clear();
        Some(&mut self.body)
    }
    fn commit(&mut self, meta: &FrameMeta) {
        self.committed = Some(self.body[..usize::from(meta.topic_len)].to_vec());
    }
    fn abort(&mut self) {
        self.body.clear();
    }
}

/// One frame with topic `aaaa`; reads it with a sink that rewrites the topic to `to`.
fn read_once(to: Option<&[u8]>, accept: fn(&[u8]) -> bool) -> (ReadStep, RewritingSink<'static>) {
    let config = RingConfig {
        capacity: 64 * 1024,
        max_payload: 1024,
    };
    let header = RingHeader::new(&config, 42, 1);
    let fd = create_ring_memfd(&config, &header).expect("memfd ring");
    let view = Arc::new(RingView::open(fd.try_clone().expect("dup")).expect("view"));
    let ring: &'static WritableRing = Box::leak(Box::new(
        WritableRing::open(fd, 42, config).expect("writable ring"),
    ));
    let claim = ring.claim(4, PAYLOAD.len());
    ring.write_topic(&claim, b"aaaa");
    ring.write_payload(&claim, PAYLOAD);
    ring.publish(claim, FIELDS, b"aaaa", PAYLOAD);
    let mut sink = RewritingSink {
        ring,
        rewrite_to: to.map(<[u8]>::to_vec),
        accept,
        asked: Vec::new(),
        body: BytesMut::new(),
        committed: None,
    };
    let mut reader =
        RingReader::new(view, StartAt::Earliest, ReaderOptions::default()).expect("reader");
    let step = reader.read(&mut sink);
    (step, sink)
}

#[test]
fn header_construction_matches_publish() {
    // Without a rewrite, rewriting the same topic changes nothing: the frame reads back.
    let (step, sink) = read_once(Some(b"aaaa"), |_| true);
    assert!(matches!(step, ReadStep::Frame(_)), "{step:?}");
    assert_eq!(sink.committed.as_deref(), Some(&b"aaaa"[..]));
}

#[test]
fn unchanged_topic_is_checked_and_offered_once() {
    let (step, sink) = read_once(None, |_| true);
    assert!(matches!(step, ReadStep::Frame(_)), "{step:?}");
    assert_eq!(sink.asked, vec![(b"aaaa".to_vec(), true)]);
}

#[test]
fn rewritten_topic_fails_the_frame_check_and_is_never_committed() {
    for new in [&b"bbbb"[..], &[0xff, 0xfe, b'a', b'a'][..]] {
        for accept in [(|_: &[u8]| true) as fn(&[u8]) -> bool, |t: &[u8]| {
            t == b"aaaa"
        }] {
            let (step, sink) = read_once(Some(new), accept);
            assert!(
                matches!(step, ReadStep::Loss(l) if l.reason == LossReason::Corrupt && l.first_seq == 0),
                "{step:?}"
            );
            assert_eq!(sink.asked, vec![(b"aaaa".to_vec(), true)]);
            assert_eq!(sink.committed, None);
        }
    }
}
