//! A sink that takes every topic (`FrameSink::filters_topics` false) gets the reader's
//! single-copy path: topic and payload copied once, the frame check over that copy, then
//! the copied topic's UTF-8. These tests hold it to the same outcomes as the filtering path
//! on a ring with a hostile producer's frames in it: a frame whose check holds but whose
//! topic is not UTF-8, a frame whose payload changed after its commit, and a sink with no
//! room.

use ringside_ring::layout::RingHeader;
use ringside_ring::shm::create_ring_memfd;
use ringside_ring::writer::{FrameHeaderFields, WritableRing};
use ringside_ring::{
    BytesMut, FrameMeta, FrameSink, Loss, LossReason, ReadStep, ReaderOptions, RingConfig,
    RingReader, RingView, StartAt,
};
use std::sync::Arc;

const FIELDS: FrameHeaderFields = FrameHeaderFields {
    producer_id: 3,
    timestamp_ns: 99,
    flags: 0,
};

/// Keeps every committed frame's topic and payload; `filters` says which path it asks for.
struct KeepAll {
    filters: bool,
    room: bool,
    body: BytesMut,
    offered: usize,
    kept: Vec<(Vec<u8>, Vec<u8>)>,
}

impl KeepAll {
    fn new(filters: bool) -> Self {
        KeepAll {
            filters,
            room: true,
            body: BytesMut::new(),
            offered: 0,
            kept: Vec::new(),
        }
    }
}

impl FrameSink for KeepAll {
    fn accept_topic(&mut self, _topic: &[u8], utf8: bool) -> bool {
        self.offered += 1;
        // As the sidecar's subscriber sink: a topic that is not UTF-8 is declined.
        utf8
    }
    fn filters_topics(&self) -> bool {
        self.filters
    }
    fn begin(&mut self, _meta: &FrameMeta) -> Option<&mut BytesMut> {
        if !self.room {
            return None;
        }
        self.body.clear();
        Some(&mut self.body)
    }
    fn commit(&mut self, meta: &FrameMeta) {
        let (t, p) = self.body.split_at(usize::from(meta.topic_len));
        self.kept.push((t.to_vec(), p.to_vec()));
    }
    fn abort(&mut self) {
        self.body.clear();
    }
}

/// Frames 0..=4: fine, a non-UTF-8 topic with a valid check, fine, a payload overwritten
/// after its commit, fine.
fn hostile_ring() -> Arc<RingView> {
    let config = RingConfig {
        capacity: 64 * 1024,
        max_payload: 1024,
    };
    let header = RingHeader::new(&config, 7, 1);
    let fd = create_ring_memfd(&config, &header).expect("memfd ring");
    let view = Arc::new(RingView::open(fd.try_clone().expect("dup")).expect("view"));
    let ring = WritableRing::open(fd, 7, config).expect("writable ring");
    let frames: [(&[u8], &[u8]); 5] = [
        (b"a", b"zero"),
        (&[0xff, 0xfe], b"one"),
        (b"cpu/0", b"two"),
        (b"b", b"three"),
        (b"c", b"four"),
    ];
    for (i, (topic, payload)) in frames.iter().enumerate() {
        let claim = ring.claim(topic.len(), payload.len());
        let pos = claim.pos;
        ring.write_topic(&claim, topic);
        ring.write_payload(&claim, payload);
        ring.publish(claim, FIELDS, topic, payload);
        if i == 3 {
            // A producer writing over its committed frame: the check no longer holds.
            ring.overwrite(pos + 40 + topic.len() as u64, b"X");
        }
    }
    view
}

fn read_all(sink: &mut KeepAll) -> Vec<ReadStep> {
    let mut reader = RingReader::new(hostile_ring(), StartAt::Earliest, ReaderOptions::default())
        .expect("reader");
    let mut steps = Vec::new();
    loop {
        let step = reader.read(sink);
        if step == ReadStep::Idle {
            return steps;
        }
        steps.push(step);
        assert!(steps.len() < 20, "the reader keeps moving: {steps:?}");
    }
}

fn frame_seqs_and_losses(steps: &[ReadStep]) -> Vec<(char, u64, u64)> {
    steps
        .iter()
        .map(|s| match s {
            ReadStep::Frame(m) => ('f', m.seq, 1),
            ReadStep::Filtered(m) => ('x', m.seq, 1),
            ReadStep::Loss(Loss {
                reason,
                frames,
                first_seq,
            }) => {
                assert_eq!(*reason, LossReason::Corrupt, "{s:?}");
                ('c', *first_seq, *frames)
            }
            other => panic!("unexpected step {other:?}"),
        })
        .collect()
}

#[test]
fn single_copy_path_delivers_and_reports_exactly_what_the_filtering_path_does() {
    let mut one = KeepAll::new(false);
    let single = read_all(&mut one);
    assert_eq!(
        one.offered, 0,
        "a sink that takes every topic is never asked"
    );
    assert_eq!(
        frame_seqs_and_losses(&single),
        vec![
            ('f', 0, 1),
            ('c', 1, 1),
            ('f', 2, 1),
            ('c', 3, 1),
            ('f', 4, 1)
        ],
        "{single:?}"
    );

    let mut two = KeepAll::new(true);
    let filtering = read_all(&mut two);
    // The filtering path returns the non-UTF-8 frame as filtered out (the sidecar's sink
    // turns that into one corrupt frame); everything else is the same step for step.
    assert_eq!(
        frame_seqs_and_losses(&filtering),
        vec![
            ('f', 0, 1),
            ('x', 1, 1),
            ('f', 2, 1),
            ('c', 3, 1),
            ('f', 4, 1)
        ],
        "{filtering:?}"
    );
    assert_eq!(one.kept, two.kept);
    assert_eq!(
        one.kept,
        vec![
            (b"a".to_vec(), b"zero".to_vec()),
            (b"cpu/0".to_vec(), b"two".to_vec()),
            (b"c".to_vec(), b"four".to_vec()),
        ]
    );
}

#[test]
fn a_sink_without_room_leaves_the_frame_for_the_next_read() {
    let mut sink = KeepAll::new(false);
    sink.room = false;
    let mut reader = RingReader::new(hostile_ring(), StartAt::Earliest, ReaderOptions::default())
        .expect("reader");
    assert_eq!(reader.read(&mut sink), ReadStep::Pending);
    assert_eq!(reader.next_seq(), 0, "nothing passed");
    sink.room = true;
    assert!(matches!(reader.read(&mut sink), ReadStep::Frame(m) if m.seq == 0));
    assert_eq!(sink.kept, vec![(b"a".to_vec(), b"zero".to_vec())]);
}
