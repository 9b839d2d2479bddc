//! A ring lapped many times by a slow reader: every loss is reported, with exact counts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringside_ring::{LossReason, ReadStep, ReaderOptions, RingReader, StartAt, VecSink};
use ringside_tests::ring_support::{Proc, Tally, field, prime_ring, start_host};

const PRODUCER: &str = env!("CARGO_BIN_EXE_ring_producer");

#[test]
fn slow_reader_lapped_many_times_counts_exactly() {
    const PER_PRODUCER: u64 = 100_000;
    let capacity = 64 * 1024;
    let (host, path) = start_host("lapped", capacity);
    let ring = host.ring();
    let primed = prime_ring(&path);
    let mut reader = RingReader::new(
        Arc::clone(&ring),
        StartAt::Earliest,
        ReaderOptions::default(),
    )
    .expect("reader");
    let mut children: Vec<Proc> = (0..2u32)
        .map(|index| {
            Proc::spawn(
                PRODUCER,
                &[
                    "--socket".into(),
                    path.display().to_string(),
                    "--index".into(),
                    index.to_string(),
                    "--count".into(),
                    PER_PRODUCER.to_string(),
                    "--max-extra".into(),
                    "300".into(),
                ],
            )
        })
        .collect();

    // The slow reader: one frame, then a nap.
    let mut tally = Tally::default();
    let mut sink = VecSink::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lapped_records_while_running = 0u32;
    let mut sent = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "producers did not finish");
        let step = reader.read(&mut sink);
        tally.record(&step, &sink);
        match step {
            ReadStep::Loss(loss) if loss.reason == LossReason::Lapped => {
                lapped_records_while_running += 1;
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_micros(300));
        if children.iter_mut().all(|c| c.poll_line("SENT").is_some()) {
            for child in &mut children {
                let line = child.poll_line("SENT").expect("SENT line");
                sent.push(field(&line, "sent").expect("sent=N"));
                child.wait_success(Duration::from_secs(10));
            }
            break;
        }
    }
    assert!(tally.drain(&mut reader, &mut sink, Duration::from_secs(10)));
    let written = sent.iter().sum::<u64>() + primed;
    let total_bytes = ring.tail().pos;
    eprintln!(
        "written {written} frames ({} laps of the ring), delivered {}, lost {:?} in {} records ({lapped_records_while_running} lapped records while producing)",
        total_bytes / capacity,
        tally.delivered,
        tally.lost,
        tally.losses.len()
    );
    tally.assert_clean();
    assert_eq!(sent, vec![PER_PRODUCER; 2]);
    assert!(
        total_bytes / capacity >= 100,
        "the ring was lapped many times"
    );
    assert!(
        lapped_records_while_running >= 2,
        "lapped more than once while reading"
    );
    assert_eq!(ring.tail().seq, written);
    assert_eq!(tally.next_ring_seq, written);
    assert_eq!(
        tally.delivered + tally.lost_total(),
        written,
        "written = delivered + lost"
    );
    assert!(
        tally.lost(LossReason::Lapped) > written / 2,
        "most frames were lapped"
    );
    // Corrupt losses would only come from a producer preempted for longer than a lap (the
    // documented slow-writer limit); they are counted all the same. Nothing was abandoned
    // for good: every producer committed every claim.

    // A late reader resuming from sequence 0 of a ring lapped many times is told, first,
    // exactly how many frames are gone, then reads the rest.
    let mut late = RingReader::new(
        Arc::clone(&ring),
        StartAt::Sequence(0),
        ReaderOptions::default(),
    )
    .expect("late reader");
    let mut late_tally = Tally::default();
    assert!(late_tally.drain(&mut late, &mut sink, Duration::from_secs(10)));
    late_tally.assert_clean();
    let first = late_tally
        .losses
        .first()
        .copied()
        .expect("a loss record first");
    assert_eq!(first.reason, LossReason::Lapped);
    assert_eq!(first.first_seq, 0);
    assert!(first.frames > 0);
    assert_eq!(late_tally.delivered + late_tally.lost_total(), written);
    assert!(
        late_tally.delivered * 48 <= capacity,
        "no more frames delivered than one ring holds"
    );

    // Resuming at any retained sequence number gives exactly that frame first (or a loss
    // record starting there), then everything after it, with nothing unreported.
    let bounds = ring.bounds();
    let oldest = bounds.oldest.expect("an oldest frame").seq;
    let tail_seq = ring.tail().seq;
    assert!(oldest < tail_seq);
    for k in 0..16u64 {
        let n = oldest + (tail_seq - oldest) * k / 16;
        let mut resumed = RingReader::new(
            Arc::clone(&ring),
            StartAt::Sequence(n),
            ReaderOptions::default(),
        )
        .expect("resume");
        let mut resumed_tally = Tally {
            next_ring_seq: n,
            ..Tally::default()
        };
        assert!(resumed_tally.drain(&mut resumed, &mut sink, Duration::from_secs(10)));
        resumed_tally.assert_clean();
        assert_eq!(resumed_tally.next_ring_seq, tail_seq);
        assert_eq!(
            resumed_tally.delivered + resumed_tally.lost_total(),
            tail_seq - n
        );
        // (A corrupt loss is possible only from the documented slow-writer case.)
        assert_eq!(
            resumed_tally.lost(LossReason::Lapped) + resumed_tally.lost(LossReason::Abandoned),
            0,
            "resume from {n}: everything retained"
        );
    }
}
