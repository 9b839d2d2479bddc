//! Garbage written over the ring by a hostile producer process: the reader never panics,
//! never delivers an invalid frame, keeps its accounting exact, and reads the genuine frames
//! written after the garbage.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringside_ring::layout::frame_len;
use ringside_ring::{
    HostOptions, ReadStep, ReaderOptions, RingConfig, RingHost, RingReader, StartAt, VecSink,
};
use ringside_tests::ring_support::{
    MIN_PAYLOAD, Proc, TOPIC, Tally, field, prime_ring, socket_path, start_host,
};

const PRODUCER: &str = env!("CARGO_BIN_EXE_ring_producer");
const HOSTILE: &str = env!("CARGO_BIN_EXE_ring_hostile");
/// How long [`genuine_frames_are_read_again`] waits for its producer's `SENT` line.
const HELPER_SENT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`genuine_frames_are_read_again`] then waits for its producer to exit.
const HELPER_EXIT_TIMEOUT: Duration = Duration::from_secs(10);

fn args(path: &std::path::Path, pairs: &[(&str, &str)]) -> Vec<String> {
    let mut out = vec!["--socket".to_owned(), path.display().to_string()];
    for (k, v) in pairs {
        out.push(format!("--{k}"));
        out.push((*v).to_owned());
    }
    out
}

/// Reads until `done` says so, recording everything.
fn read_while(
    reader: &mut RingReader,
    tally: &mut Tally,
    sink: &mut VecSink,
    mut done: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "timed out");
        let step = reader.read(sink);
        tally.record(&step, sink);
        if matches!(step, ReadStep::Idle | ReadStep::Pending) {
            if done() {
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Writes `count` frames flagged "after" with producer index `index` and checks that the
/// reader delivers every one of them.
fn genuine_frames_are_read_again(
    path: &std::path::Path,
    reader: &mut RingReader,
    tally: &mut Tally,
    sink: &mut VecSink,
    index: u32,
    count: u64,
) -> u64 {
    let mut after = Proc::spawn(
        PRODUCER,
        &args(
            path,
            &[
                ("index", &index.to_string()),
                ("count", &count.to_string()),
                ("max-extra", "60"),
                ("flags", "2"),
            ],
        ),
    );
    let line = after.expect_line("SENT", HELPER_SENT_TIMEOUT);
    after.wait_success(HELPER_EXIT_TIMEOUT);
    assert!(tally.drain(reader, sink, Duration::from_secs(10)));
    let seen = tally.producers.get(&index).copied().unwrap_or_default();
    assert_eq!(field(&line, "sent"), Some(count));
    assert_eq!(
        seen.after, count,
        "every genuine frame written after the garbage was read"
    );
    assert_eq!(seen.delivered, count);
    count
}

#[test]
fn garbage_over_the_whole_data_region_no_panic_no_invalid_frame() {
    let capacity: u64 = 256 * 1024;
    let (host, path) = start_host("garbage", capacity);
    let ring = host.ring();
    let primed = prime_ring(&path);
    let mut reader = RingReader::new(
        Arc::clone(&ring),
        StartAt::Earliest,
        ReaderOptions::default(),
    )
    .expect("reader");
    let mut tally = Tally::default();
    let mut sink = VecSink::default();

    // Phase 1, deterministic: garbage over frames nobody has read yet. Every one of them
    // is reported lost (none delivered), and frames written afterwards are read.
    let unread = produce_frames(&path, 2, 1000);
    hostile_garbage(&path, 99, 1);
    let fresh = genuine_frames_are_read_again(&path, &mut reader, &mut tally, &mut sink, 3, 10);
    eprintln!("garbage over unread frames: lost {:?}", tally.losses);
    tally.assert_clean();
    assert_eq!(
        tally.delivered, fresh,
        "none of the overwritten frames was delivered"
    );
    assert_eq!(
        tally.lost_total(),
        primed + unread,
        "all overwritten frames reported lost"
    );

    // Phase 2: a genuine producer writes throughout while hostile processes write garbage.
    let mut genuine = Proc::spawn(
        PRODUCER,
        &args(
            &path,
            &[
                ("index", "0"),
                ("throttle-every", "10"),
                ("throttle-us", "200"),
            ],
        ),
    );
    genuine.expect_line("CONNECTED", Duration::from_secs(10));
    // Several hostile processes in a row, each writing random bytes over the whole data
    // region many times, at random offsets, while the reader reads.
    for seed in 1..=3u64 {
        let mut hostile = Proc::spawn(
            HOSTILE,
            &[
                "garbage".to_owned(),
                "--socket".to_owned(),
                path.display().to_string(),
                "--seed".to_owned(),
                seed.to_string(),
                "--passes".to_owned(),
                "300".to_owned(),
            ],
        );
        read_while(&mut reader, &mut tally, &mut sink, || {
            hostile.poll_line("DONE").is_some()
        });
        hostile.wait_success(Duration::from_secs(10));
    }
    genuine.close_stdin();
    let line = genuine.expect_line("SENT", Duration::from_secs(10));
    genuine.wait_success(Duration::from_secs(10));
    let genuine_sent = field(&line, "sent").expect("sent=N");
    assert!(tally.drain(&mut reader, &mut sink, Duration::from_secs(10)));
    let during = tally.delivered;
    eprintln!(
        "during garbage: genuine sent {genuine_sent}, delivered {during}, lost {:?} in {} records",
        tally.lost,
        tally.losses.len()
    );
    tally.assert_clean();

    let after = genuine_frames_are_read_again(&path, &mut reader, &mut tally, &mut sink, 1, 1000);
    let written = primed + unread + fresh + genuine_sent + after;
    tally.assert_clean();
    assert_eq!(ring.tail().seq, written);
    assert_eq!(tally.next_ring_seq, written);
    assert_eq!(
        tally.delivered + tally.lost_total(),
        written,
        "every genuine frame is delivered or reported lost, even under garbage"
    );

    // A fresh reader over the garbage-strewn ring: no panic, nothing invalid.
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
    assert!(
        fresh_tally
            .producers
            .get(&1)
            .is_some_and(|p| p.delivered == 1000)
    );
}

/// Hostile writes over the header page: the reader survives and keeps reading the frames of
/// a producer that was already connected.
#[test]
fn garbage_over_the_header_page_and_claim_word_no_panic_no_invalid_frame() {
    let capacity: u64 = 256 * 1024;
    let (host, path) = start_host("garbage-header", capacity);
    let ring = host.ring();
    prime_ring(&path);
    let mut reader = RingReader::new(
        Arc::clone(&ring),
        StartAt::Earliest,
        ReaderOptions::default(),
    )
    .expect("reader");
    let mut tally = Tally::default();
    let mut sink = VecSink::default();
    let mut genuine = Proc::spawn(
        PRODUCER,
        &args(
            &path,
            &[
                ("index", "0"),
                ("throttle-every", "10"),
                ("throttle-us", "500"),
                ("max-extra", "60"),
            ],
        ),
    );
    genuine.expect_line("CONNECTED", Duration::from_secs(10));
    read_while(&mut reader, &mut tally, &mut sink, || {
        tally_has_frames(&ring, 200)
    });
    // One pass: after it, the ring header is garbage and no new producer can connect
    // (see new_producer_connects_after_header_page_garbage).
    {
        let seed = 7u64;
        let mut hostile = Proc::spawn(
            HOSTILE,
            &[
                "header".to_owned(),
                "--socket".to_owned(),
                path.display().to_string(),
                "--seed".to_owned(),
                seed.to_string(),
            ],
        );
        read_while(&mut reader, &mut tally, &mut sink, || {
            hostile.poll_line("DONE").is_some()
        });
        hostile.wait_success(Duration::from_secs(10));
    }
    eprintln!("claim word after garbage: {:?}", ring.tail());
    assert!(tally.drain(&mut reader, &mut sink, Duration::from_secs(10)));
    tally.assert_clean();
    // Resynchronised at the garbage claim position: the loss count is garbage too (forged
    // sequence numbers distort loss counts, docs/ring-format.md §6), but frames flow again.
    let mark = tally
        .producers
        .get(&0)
        .copied()
        .unwrap_or_default()
        .delivered;
    let mut after = Tally {
        next_ring_seq: reader.next_seq(),
        ..Tally::default()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while after.producers.get(&0).map_or(0, |p| p.delivered) < 200 {
        assert!(
            Instant::now() < deadline,
            "frames stopped flowing after the garbage"
        );
        let step = reader.read(&mut sink);
        after.record(&step, &sink);
        if matches!(step, ReadStep::Idle | ReadStep::Pending) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    genuine.close_stdin();
    let line = genuine.expect_line("SENT", Duration::from_secs(10));
    genuine.wait_success(Duration::from_secs(10));
    assert!(after.drain(&mut reader, &mut sink, Duration::from_secs(10)));
    eprintln!(
        "before garbage: {mark} frames; after: delivered {}, lost {:?}",
        after.delivered, after.losses
    );
    after.assert_clean();
    let sent = field(&line, "sent").expect("sent=N");
    assert_eq!(
        after.producers.get(&0).and_then(|p| p.last_seq),
        Some(sent - 1),
        "the producer's last frame was delivered"
    );
}

fn tally_has_frames(ring: &ringside_ring::RingView, frames: u64) -> bool {
    ring.tail().seq >= frames
}

/// Regression: the ring header sits in the page producers map writable. One producer that
/// overwrote it used to lock every *new* producer out ("ring refused: not a ringside ring").
/// Producers now take the geometry from the sidecar's Welcome and check only seals and size.
/// (A restarted sidecar still cannot adopt such a ring: it creates a fresh one, see
/// `restart_recovers_from_a_damaged_ring_header`.)
#[test]
fn new_producer_connects_after_header_page_garbage() {
    let (_host, path) = start_host("header-lockout", 64 * 1024);
    prime_ring(&path);
    let mut hostile = Proc::spawn(
        HOSTILE,
        &[
            "header".to_owned(),
            "--socket".to_owned(),
            path.display().to_string(),
        ],
    );
    hostile.expect_line("DONE", Duration::from_secs(10));
    hostile.wait_success(Duration::from_secs(10));
    let mut late = Proc::spawn(PRODUCER, &args(&path, &[("index", "1"), ("count", "10")]));
    let line = late.expect_line("", Duration::from_secs(20));
    assert!(
        line.starts_with("CONNECTED"),
        "a new producer is locked out: {line}"
    );
}

/// Regression: a hostile producer sets the claim position just below 2^64. Genuine claims
/// wrap around to small positions; the reader used to stay Idle forever (`pos >= tail`). It
/// now follows positions in wrapping arithmetic and reads every genuine frame.
#[test]
fn forged_claim_word_near_the_end_of_the_position_space() {
    let capacity: u64 = 256 * 1024;
    let (host, path) = start_host("forged-claim", capacity);
    let ring = host.ring();
    prime_ring(&path);
    let mut reader = RingReader::new(
        Arc::clone(&ring),
        StartAt::Earliest,
        ReaderOptions::default(),
    )
    .expect("reader");
    let mut tally = Tally::default();
    let mut sink = VecSink::default();
    assert!(tally.drain(&mut reader, &mut sink, Duration::from_secs(10)));
    let forged_pos = (u64::MAX - 4095) & !7;
    forge_claim(&path, forged_pos, 1000);
    assert!(tally.drain(&mut reader, &mut sink, Duration::from_secs(10)));
    tally.assert_clean();
    let mut after = Tally {
        next_ring_seq: reader.next_seq(),
        ..Tally::default()
    };
    // Genuine frames after the forgery cross 2^64. The 128-bit claim add carries into the
    // sequence half there, leaving a phantom sequence number; the frame at the wrap is
    // reported (Corrupt) rather than delivered. Everything is accounted for, nothing is
    // delivered twice or invalid, and all but the frames at the wrap arrive.
    let mut producer = Proc::spawn(
        PRODUCER,
        &args(
            &path,
            &[
                ("index", "1"),
                ("count", "1000"),
                ("max-extra", "60"),
                ("flags", "2"),
            ],
        ),
    );
    producer.expect_line("SENT", Duration::from_secs(20));
    producer.wait_success(Duration::from_secs(10));
    assert!(after.drain(&mut reader, &mut sink, Duration::from_secs(10)));
    after.assert_clean();
    let seen = after.producers.get(&1).copied().unwrap_or_default();
    assert!(
        seen.delivered >= 998,
        "{} of 1000 delivered",
        seen.delivered
    );
    assert!(
        seen.delivered + after.lost_total() >= 1000,
        "every frame delivered or reported: {} + {}",
        seen.delivered,
        after.lost_total()
    );
}

/// Regression: a forged *unaligned* claim position used to trip a debug assertion in
/// `RingMapping::commit_word`, panicking the reader and every genuine producer. Now nobody
/// panics; the reader reports what it cannot read as corrupt.
#[test]
fn forged_unaligned_claim_word_panics_nobody() {
    let capacity: u64 = 256 * 1024;
    let (host, path) = start_host("unaligned-claim", capacity);
    let ring = host.ring();
    prime_ring(&path);
    let mut reader = RingReader::new(
        Arc::clone(&ring),
        StartAt::Earliest,
        ReaderOptions::default(),
    )
    .expect("reader");
    let mut tally = Tally::default();
    let mut sink = VecSink::default();
    assert!(tally.drain(&mut reader, &mut sink, Duration::from_secs(10)));
    forge_claim(&path, 1_000_003, 1000);
    assert!(tally.drain(&mut reader, &mut sink, Duration::from_secs(10)));
    let mut producer = Proc::spawn(PRODUCER, &args(&path, &[("index", "1"), ("count", "1000")]));
    producer.expect_line("SENT", Duration::from_secs(20));
    producer.wait_success(Duration::from_secs(10));
    let reading = std::thread::spawn(move || {
        let mut after = Tally {
            next_ring_seq: reader.next_seq(),
            ..Tally::default()
        };
        let mut sink = VecSink::default();
        after.drain(&mut reader, &mut sink, Duration::from_secs(10));
        after
    });
    let after = reading.join().expect("the reader did not panic");
    after.assert_clean();
}

fn forge_claim(path: &std::path::Path, pos: u64, seq: u64) {
    let mut hostile = Proc::spawn(
        HOSTILE,
        &[
            "claim".to_owned(),
            "--socket".to_owned(),
            path.display().to_string(),
            "--pos".to_owned(),
            pos.to_string(),
            "--seq".to_owned(),
            seq.to_string(),
        ],
    );
    hostile.expect_line("DONE", Duration::from_secs(10));
    hostile.wait_success(Duration::from_secs(10));
}

/// Ring capacity of both hosts in `restart_recovers_from_a_damaged_ring_header`.
const RESTART_CAPACITY: u64 = 1 << 20;
/// Its genuine producer sleeps this long after every frame: at most 100 frames a second.
const RESTART_PAUSE: Duration = Duration::from_millis(10);
/// Payload bytes beyond [`MIN_PAYLOAD`] of its frames, at most.
const RESTART_MAX_EXTRA: usize = 60;
/// Frames the helper of [`genuine_frames_are_read_again`] writes in it.
const RESTART_AFTER_FRAMES: u64 = 100;
/// How long it waits for the producer to move to the fresh ring.
const RESTART_MOVE_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest the fresh ring goes unread within the test's timeouts: the reader is made
/// once the producer has moved, and first reads after the helper producer has exited.
const RESTART_LONGEST_UNREAD: Duration = RESTART_MOVE_TIMEOUT
    .saturating_add(HELPER_SENT_TIMEOUT)
    .saturating_add(HELPER_EXIT_TIMEOUT);
// No lap is possible within those timeouts: everything both producers can write meanwhile
// fits in the ring (the test asserts that nothing is lost, so a lap would fail it).
const _: () = assert!(
    (RESTART_LONGEST_UNREAD.as_millis() as u64 / RESTART_PAUSE.as_millis() as u64
        + RESTART_AFTER_FRAMES)
        * frame_len(TOPIC.len(), MIN_PAYLOAD + RESTART_MAX_EXTRA) as u64
        <= RESTART_CAPACITY
);

/// Recovery from the header lock-out above: a restarted host refuses to adopt the damaged
/// ring (its header no longer validates), creates a fresh one, and the producers that held
/// the damaged ring move to it; new producers connect again.
///
/// The genuine producer is throttled and the ring sized so that it cannot lap the reader
/// within the test's timeouts (see `RESTART_LONGEST_UNREAD`): the test asserts that no frame
/// of the fresh ring is lost. (It used to write about 13 frames a millisecond into a 64 KiB
/// ring that nobody read until the helper producer had exited, so on a loaded machine a
/// helper slower than about 30 ms made the reader report lapped frames.)
#[test]
fn restart_recovers_from_a_damaged_ring_header() {
    let path = socket_path("header-restart");
    let capacity = RESTART_CAPACITY.to_string();
    let host_args = |grace: &str| -> Vec<String> {
        [
            "--socket",
            &path.display().to_string(),
            "--capacity",
            &capacity,
            "--max-payload",
            "4096",
            "--adopt-grace-ms",
            grace,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    };
    let mut first = Proc::spawn(env!("CARGO_BIN_EXE_ring_host"), &host_args("0"));
    let old_id = field(&first.expect_line("RING", Duration::from_secs(10)), "id");
    let mut genuine = Proc::spawn(
        PRODUCER,
        &args(
            &path,
            &[
                ("index", "0"),
                ("throttle-every", "1"),
                ("throttle-us", &RESTART_PAUSE.as_micros().to_string()),
                ("max-extra", &RESTART_MAX_EXTRA.to_string()),
            ],
        ),
    );
    genuine.expect_line("CONNECTED", Duration::from_secs(10));
    let mut hostile = Proc::spawn(
        HOSTILE,
        &[
            "header".to_owned(),
            "--socket".to_owned(),
            path.display().to_string(),
        ],
    );
    hostile.expect_line("DONE", Duration::from_secs(10));
    hostile.wait_success(Duration::from_secs(10));
    first.kill9();

    let host = RingHost::start(HostOptions {
        socket_path: path.clone(),
        ring: RingConfig {
            capacity: RESTART_CAPACITY,
            max_payload: 4096,
        },
        adopt_grace: Duration::from_millis(1500),
        ..HostOptions::default()
    })
    .expect("second host starts");
    assert!(
        !host.adopted(),
        "a ring whose header fails validation is not adopted"
    );
    assert_ne!(Some(host.ring().ring_id()), old_id);
    let ring = host.ring();
    let deadline = Instant::now() + RESTART_MOVE_TIMEOUT;
    while host.stats().producers_connected < 1 || ring.tail().seq < 20 {
        assert!(
            Instant::now() < deadline,
            "the producer did not move to the fresh ring"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut reader = RingReader::new(
        Arc::clone(&ring),
        StartAt::Earliest,
        ReaderOptions::default(),
    )
    .expect("reader");
    let mut tally = Tally::default();
    let mut sink = VecSink::default();
    let after = genuine_frames_are_read_again(
        &path,
        &mut reader,
        &mut tally,
        &mut sink,
        1,
        RESTART_AFTER_FRAMES,
    );
    assert_eq!(after, RESTART_AFTER_FRAMES);
    genuine.close_stdin();
    let line = genuine.expect_line("SENT", Duration::from_secs(10));
    genuine.wait_success(Duration::from_secs(10));
    assert!(tally.drain(&mut reader, &mut sink, Duration::from_secs(10)));
    tally.assert_clean();
    assert_eq!(tally.lost_total(), 0, "losses: {:?}", tally.losses);
    let moved = tally.producers.get(&0).copied().unwrap_or_default();
    assert_eq!(
        moved.last_seq,
        field(&line, "sent").map(|n| n - 1),
        "the old producer writes into the fresh ring"
    );
    // Once moved, it wrote every frame into the fresh ring: its sequence numbers there have
    // no gap (a frame still written into the old ring after the move would leave one).
    assert_eq!(
        moved
            .last_seq
            .zip(moved.first_seq)
            .map(|(last, first)| last - first + 1),
        Some(moved.delivered),
        "the old producer's frames in the fresh ring are contiguous: {moved:?}"
    );
}

fn produce_frames(path: &std::path::Path, index: u32, count: u64) -> u64 {
    let mut p = Proc::spawn(
        PRODUCER,
        &args(
            path,
            &[
                ("index", &index.to_string()),
                ("count", &count.to_string()),
                ("max-extra", "60"),
            ],
        ),
    );
    let line = p.expect_line("SENT", Duration::from_secs(20));
    p.wait_success(Duration::from_secs(10));
    field(&line, "sent").expect("sent=N")
}

fn hostile_garbage(path: &std::path::Path, seed: u64, passes: u64) {
    let mut hostile = Proc::spawn(
        HOSTILE,
        &[
            "garbage".to_owned(),
            "--socket".to_owned(),
            path.display().to_string(),
            "--seed".to_owned(),
            seed.to_string(),
            "--passes".to_owned(),
            passes.to_string(),
        ],
    );
    hostile.expect_line("DONE", Duration::from_secs(20));
    hostile.wait_success(Duration::from_secs(10));
}
