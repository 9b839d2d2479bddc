//! `RingReader::accounts_from`: the first sequence a reader reports on, for every way of
//! starting. Whatever the start, the first step read (a frame or a loss) lies at or after
//! it, so the sidecar's encoder may treat anything below it as already passed.

use ringside_ring::layout::RingHeader;
use ringside_ring::shm::create_ring_memfd;
use ringside_ring::writer::{FrameHeaderFields, WritableRing};
use ringside_ring::{ReadStep, ReaderOptions, RingConfig, RingReader, RingView, StartAt, VecSink};
use std::sync::Arc;

/// A 64 KiB ring that has wrapped: 2000 frames of 100 B, timestamps 1000 + seq.
fn wrapped_ring() -> Arc<RingView> {
    let config = RingConfig {
        capacity: 64 * 1024,
        max_payload: 1024,
    };
    let header = RingHeader::new(&config, 5, 1);
    let fd = create_ring_memfd(&config, &header).expect("memfd ring");
    let view = Arc::new(RingView::open(fd.try_clone().expect("dup")).expect("view"));
    let ring = WritableRing::open(fd, 5, config).expect("writable ring");
    let payload = [7u8; 100];
    for seq in 0..2000u64 {
        let claim = ring.claim(1, payload.len());
        ring.write_topic(&claim, b"t");
        ring.write_payload(&claim, &payload);
        let fields = FrameHeaderFields {
            producer_id: 1,
            timestamp_ns: 1000 + seq,
            flags: 0,
        };
        ring.publish(claim, fields, b"t", &payload);
    }
    view
}

/// The sequence of the first frame or loss a reader started at `start` returns.
fn first_step_seq(view: &Arc<RingView>, start: StartAt) -> (u64, u64) {
    let mut reader =
        RingReader::new(Arc::clone(view), start, ReaderOptions::default()).expect("reader");
    let from = reader.accounts_from();
    let mut sink = VecSink::default();
    loop {
        match reader.read(&mut sink) {
            ReadStep::Frame(meta) => return (from, meta.seq),
            ReadStep::Loss(loss) => return (from, loss.first_seq),
            ReadStep::Filtered(_) | ReadStep::Pending => {}
            ReadStep::Idle => panic!("{start:?}: nothing to read"),
        }
    }
}

#[test]
fn the_first_step_lies_at_or_after_accounts_from() {
    let view = wrapped_ring();
    let earliest = first_step_seq(&view, StartAt::Earliest).1;
    assert!(earliest > 0, "the ring wrapped");
    // Earliest: the first retained frame, which is where the reader accounts from.
    assert_eq!(
        first_step_seq(&view, StartAt::Earliest),
        (earliest, earliest)
    );
    // A retained sequence: skipped to, so accounted from it exactly.
    let mid = earliest + 100;
    assert_eq!(first_step_seq(&view, StartAt::Sequence(mid)), (mid, mid));
    // A sequence the ring overwrote: the loss from it comes first.
    assert_eq!(first_step_seq(&view, StartAt::Sequence(3)), (3, 3));
    // A timestamp: accounted from the cursor the search left, at or before the frame.
    let (from, first) = first_step_seq(&view, StartAt::TimestampNs(1000 + mid));
    assert_eq!(first, mid);
    assert!(from <= first, "accounts from {from}, first frame {first}");
    // Latest: nothing to read, accounted from the next sequence to be written.
    let reader = RingReader::new(Arc::clone(&view), StartAt::Latest, ReaderOptions::default())
        .expect("reader");
    assert_eq!(reader.accounts_from(), 2000);
}
