//! A forged claim word whose **sequence** goes backwards (position kept): seen by reading
//! `client/src/reader.rs` while adding claim forgery to the chaos harness, pinned here.
//!
//! Observed before the fix: 10 frames delivered (seq 0..=9, next_seq 10); the claim word's
//! sequence is forged from 10 to 5 (position kept); 10 more frames are written, so they carry
//! seq 5..=14. The reader found seq 5 where it expected 10, resynced as corrupt, scanned for a
//! frame with `seq >= next_seq + 1` and landed on seq 11: it reported 1 frame lost (seq 10)
//! and delivered 11..=14. The five frames written with seq 5..=9 were neither delivered nor
//! reported: a silent loss (promise 4). This test failed then (committed `#[ignore]`d).
//!
//! Fixed in `client/src/reader.rs` (ring-format.md §5.1 step 4): a committed frame at the
//! cursor with `seq < next_seq` is skipped by its length and reported as one corrupt frame.
//! Now: 5 reported lost (seq 5..=9) and 10..=14 delivered.

use std::os::fd::AsFd;
use std::sync::Arc;

use ringside_ring::layout::{CLAIM_OFFSET, RingHeader};
use ringside_ring::shm::create_ring_memfd;
use ringside_ring::writer::{FrameHeaderFields, WritableRing};
use ringside_ring::{ReadStep, ReaderOptions, RingConfig, RingReader, RingView, StartAt, VecSink};

const TOPIC: &[u8] = b"t";

fn send(w: &WritableRing, n: u64, payload_base: u64) {
    for i in 0..n {
        let payload = (payload_base + i).to_le_bytes();
        let claim = w.claim(TOPIC.len(), payload.len());
        w.write_topic(&claim, TOPIC);
        w.write_payload(&claim, &payload);
        let fields = FrameHeaderFields {
            producer_id: 1,
            timestamp_ns: 1,
            flags: 0,
        };
        w.publish(claim, fields, TOPIC, &payload);
    }
}

/// Reads until idle; returns (delivered sequence numbers, frames reported lost).
fn drain(r: &mut RingReader, sink: &mut VecSink) -> (Vec<u64>, u64) {
    let (mut seqs, mut lost) = (Vec::new(), 0);
    for _ in 0..10_000 {
        match r.read(sink) {
            ReadStep::Frame(m) => seqs.push(m.seq),
            ReadStep::Loss(l) => lost += l.frames,
            ReadStep::Filtered(_) | ReadStep::Pending => {}
            ReadStep::Idle => break,
        }
    }
    (seqs, lost)
}

#[test]
fn frames_after_a_sequence_rewind_are_delivered_or_reported_lost() {
    let config = RingConfig {
        capacity: 64 * 1024,
        max_payload: 1024,
    };
    let fd = create_ring_memfd(&config, &RingHeader::new(&config, 1, 1)).expect("ring");
    let raw = fd.try_clone().expect("dup");
    let view = Arc::new(RingView::open(fd.try_clone().expect("dup")).expect("view"));
    let w = WritableRing::open(fd, 1, config).expect("writable ring");
    let mut reader =
        RingReader::new(view, StartAt::Earliest, ReaderOptions::default()).expect("reader");
    let mut sink = VecSink::default();

    send(&w, 10, 0);
    let (first, lost) = drain(&mut reader, &mut sink);
    assert_eq!((first.len(), lost), (10, 0), "10 honest frames delivered");

    // Forge: same position, sequence 10 -> 5.
    let mut word = [0u8; 16];
    let n = nix::sys::uio::pread(raw.as_fd(), &mut word, CLAIM_OFFSET as i64).expect("pread");
    assert_eq!(n, 16);
    word[8..].copy_from_slice(&5u64.to_le_bytes());
    let n = nix::sys::uio::pwrite(raw.as_fd(), &word, CLAIM_OFFSET as i64).expect("pwrite");
    assert_eq!(n, 16);

    send(&w, 10, 100);
    let (after, lost) = drain(&mut reader, &mut sink);
    assert!(
        after.len() as u64 + lost == 10,
        "10 frames written after the forgery: {} delivered ({after:?}) + {lost} reported lost",
        after.len()
    );
    assert!(
        after.iter().all(|s| *s > first[first.len() - 1]),
        "sequence numbers delivered again after the rewind: before {first:?}, after {after:?}"
    );
}
