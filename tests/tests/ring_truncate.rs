//! A producer process that tries to truncate, grow or re-seal the ring is refused by the
//! memfd seals (EPERM), and the reader stays alive and keeps reading: no SIGBUS.

use std::sync::Arc;
use std::time::Duration;

use ringside_ring::{LossReason, ReaderOptions, RingReader, StartAt, VecSink};
use ringside_tests::ring_support::{Proc, Tally, field, start_host};

const PRODUCER: &str = env!("CARGO_BIN_EXE_ring_producer");
const HOSTILE: &str = env!("CARGO_BIN_EXE_ring_hostile");

fn produce(path: &std::path::Path, index: u32, count: u64, flags: u8) -> u64 {
    let mut p = Proc::spawn(
        PRODUCER,
        &[
            "--socket".into(),
            path.display().to_string(),
            "--index".into(),
            index.to_string(),
            "--count".into(),
            count.to_string(),
            "--max-extra".into(),
            "100".into(),
            "--flags".into(),
            flags.to_string(),
        ],
    );
    let line = p.expect_line("SENT", Duration::from_secs(20));
    p.wait_success(Duration::from_secs(10));
    field(&line, "sent").expect("sent=N")
}

#[test]
fn ftruncate_fallocate_and_reseal_are_refused_and_the_reader_survives() {
    let capacity: u64 = 64 * 1024;
    let (host, path) = start_host("truncate", capacity);
    let ring = host.ring();
    let mut reader = RingReader::new(
        Arc::clone(&ring),
        StartAt::Earliest,
        ReaderOptions::default(),
    )
    .expect("reader");
    let mut tally = Tally::default();
    let mut sink = VecSink::default();
    let before = produce(&path, 0, 200, 0);
    assert!(tally.drain(&mut reader, &mut sink, Duration::from_secs(10)));
    assert_eq!(tally.delivered, before);

    let mut hostile = Proc::spawn(
        HOSTILE,
        &[
            "truncate".to_owned(),
            "--socket".to_owned(),
            path.display().to_string(),
        ],
    );
    hostile.expect_line("DONE", Duration::from_secs(10));
    hostile.wait_success(Duration::from_secs(10));
    let ops: Vec<(String, String)> = hostile
        .seen
        .iter()
        .filter(|l| l.starts_with("OP "))
        .map(|l| {
            let name = l
                .split("name=")
                .nth(1)
                .and_then(|r| r.split_whitespace().next());
            let result = l.split("result=").nth(1);
            (
                name.unwrap_or_default().to_owned(),
                result.unwrap_or_default().to_owned(),
            )
        })
        .collect();
    eprintln!("hostile attempts: {ops:?}");
    let expect_eperm = [
        "ftruncate_zero",
        "ftruncate_shrink",
        "ftruncate_grow",
        "fallocate_grow",
        "fallocate_beyond",
        "pwrite_beyond",
        "add_seal_write",
    ];
    for name in expect_eperm {
        let result = ops
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.as_str())
            .unwrap_or("missing");
        assert!(
            result.starts_with("EPERM"),
            "{name} must be refused with EPERM by the seals, got {result}"
        );
    }
    let size_line = hostile
        .seen
        .iter()
        .find(|l| l.starts_with("SIZE"))
        .cloned()
        .expect("SIZE line");
    assert_eq!(field(&size_line, "before"), field(&size_line, "after"));
    assert_eq!(field(&size_line, "before"), Some(capacity + 4096));
    // The host's ring fd still passes the reader's own admission checks.
    ringside_ring::shm::inspect_ring_fd(ring.fd()).expect("seals and size intact");

    // The reader is alive and keeps reading; enough is written to wrap the ring several
    // times, so every page of the mapping is touched again (a truncation would SIGBUS here).
    let after = produce(&path, 1, 4000, 2);
    assert!(tally.drain(&mut reader, &mut sink, Duration::from_secs(10)));
    tally.assert_clean();
    let written = before + after;
    assert!(ring.tail().pos > 3 * capacity);
    assert_eq!(ring.tail().seq, written);
    assert_eq!(tally.delivered + tally.lost_total(), written);
    assert_eq!(tally.lost(LossReason::Corrupt), 0);
    let mut fresh = RingReader::new(
        Arc::clone(&ring),
        StartAt::Earliest,
        ReaderOptions::default(),
    )
    .expect("fresh reader");
    let mut fresh_tally = Tally {
        next_ring_seq: fresh.next_seq(),
        ..Tally::default()
    };
    assert!(fresh_tally.drain(&mut fresh, &mut sink, Duration::from_secs(10)));
    fresh_tally.assert_clean();
    assert_eq!(fresh_tally.lost_total(), 0);
    assert!(
        fresh_tally.delivered * 400 >= capacity,
        "a ring's worth read back"
    );
    assert_eq!(fresh_tally.next_ring_seq, written);
}
