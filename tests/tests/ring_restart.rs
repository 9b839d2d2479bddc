//! Sidecar restart: producer processes keep writing while the host process is SIGKILLed;
//! a new host adopts the same ring (handed back by a reconnecting producer), and a reader
//! sees every frame, including those written while no host ran.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringside_ring::{
    HostOptions, ReaderOptions, RingConfig, RingHost, RingReader, StartAt, VecSink,
};
use ringside_tests::ring_support::{Proc, Tally, field, socket_path};

const PRODUCER: &str = env!("CARGO_BIN_EXE_ring_producer");
const HOST: &str = env!("CARGO_BIN_EXE_ring_host");
const CAPACITY: u64 = 8 << 20;

fn host_args(path: &std::path::Path, grace_ms: u64) -> Vec<String> {
    vec![
        "--socket".into(),
        path.display().to_string(),
        "--capacity".into(),
        CAPACITY.to_string(),
        "--max-payload".into(),
        "4096".into(),
        "--adopt-grace-ms".into(),
        grace_ms.to_string(),
    ]
}

fn start_producers(path: &std::path::Path, n: u32) -> Vec<Proc> {
    (0..n)
        .map(|index| {
            let mut p = Proc::spawn(
                PRODUCER,
                &[
                    "--socket".into(),
                    path.display().to_string(),
                    "--index".into(),
                    index.to_string(),
                    "--throttle-every".into(),
                    "2".into(),
                    "--throttle-us".into(),
                    "1000".into(),
                    "--max-extra".into(),
                    "100".into(),
                ],
            );
            p.expect_line("CONNECTED", Duration::from_secs(10));
            p
        })
        .collect()
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Stops the producers and returns their `SENT` lines.
fn stop(producers: &mut [Proc]) -> Vec<String> {
    producers
        .iter_mut()
        .map(|p| {
            p.close_stdin();
            let line = p.expect_line("SENT", Duration::from_secs(10));
            p.wait_success(Duration::from_secs(10));
            line
        })
        .collect()
}

#[test]
fn host_killed_frames_written_meanwhile_are_read_after_adoption() {
    let path = socket_path("restart");
    let mut first = Proc::spawn(HOST, &host_args(&path, 0));
    let ring_line = first.expect_line("RING", Duration::from_secs(10));
    let ring_id = field(&ring_line, "id").expect("id=N");
    assert_eq!(field(&ring_line, "adopted"), Some(0));

    let mut producers = start_producers(&path, 2);
    std::thread::sleep(Duration::from_millis(200));
    first.send_line("stats");
    let stats = first.expect_line("STATS", Duration::from_secs(10));
    assert_eq!(field(&stats, "connected"), Some(2), "{stats}");
    assert!(field(&stats, "tail_seq").unwrap_or(0) > 0, "{stats}");
    first.kill9();
    // No host runs now; the producers keep writing into the ring they hold.
    std::thread::sleep(Duration::from_millis(500));

    let host = RingHost::start(HostOptions {
        socket_path: path.clone(),
        ring: RingConfig {
            capacity: CAPACITY,
            max_payload: 4096,
        },
        adopt_grace: Duration::from_secs(3),
        ..HostOptions::default()
    })
    .expect("second host starts");
    assert!(
        host.adopted(),
        "the new host adopted the ring a producer handed back"
    );
    let ring = host.ring();
    assert_eq!(ring.ring_id(), ring_id, "same ring");
    // Both producers reconnect to the new host.
    wait_until(
        "both producers to reconnect",
        Duration::from_secs(10),
        || host.stats().producers_connected == 2,
    );
    let mut reader = RingReader::new(
        Arc::clone(&ring),
        StartAt::Earliest,
        ReaderOptions::default(),
    )
    .expect("reader");
    std::thread::sleep(Duration::from_millis(100));
    let lines = stop(&mut producers);

    let mut tally = Tally::default();
    let mut sink = VecSink::default();
    assert!(tally.drain(&mut reader, &mut sink, Duration::from_secs(10)));
    eprintln!(
        "{lines:?}; delivered {}, lost {:?}",
        tally.delivered, tally.lost
    );
    tally.assert_clean();
    let mut written = 0;
    for (index, line) in lines.iter().enumerate() {
        let sent = field(line, "sent").expect("sent=N");
        let disconnected = field(line, "disconnected").expect("disconnected=N");
        let seen = tally
            .producers
            .get(&(index as u32))
            .copied()
            .unwrap_or_default();
        assert!(field(line, "reconnects").unwrap_or(0) >= 1, "{line}");
        assert!(
            disconnected > 0,
            "producer {index} wrote while no host ran: {line}"
        );
        assert_eq!(
            seen.delivered, sent,
            "producer {index}: every frame delivered"
        );
        assert_eq!(
            seen.written_while_disconnected, disconnected,
            "producer {index}: every frame written during the outage was read"
        );
        assert_eq!(seen.last_seq, Some(sent - 1));
        written += sent;
    }
    assert!(
        ring.tail().pos < CAPACITY,
        "the test wrote less than one lap"
    );
    assert_eq!(tally.lost_total(), 0, "nothing lost across the restart");
    assert_eq!(ring.tail().seq, written);
}

/// Two restarts in a row, the second host also a separate process: the ring survives both
/// and a resume by sequence number gets no duplicates and no unreported gap.
#[test]
fn two_restarts_and_resume_by_sequence() {
    let path = socket_path("restart2");
    let mut first = Proc::spawn(HOST, &host_args(&path, 0));
    let ring_id = field(&first.expect_line("RING", Duration::from_secs(10)), "id");
    let mut producers = start_producers(&path, 1);
    std::thread::sleep(Duration::from_millis(100));
    first.kill9();
    std::thread::sleep(Duration::from_millis(200));
    let mut second = Proc::spawn(HOST, &host_args(&path, 3000));
    let line = second.expect_line("RING", Duration::from_secs(10));
    assert_eq!(field(&line, "id"), ring_id);
    assert_eq!(field(&line, "adopted"), Some(1));
    let resume_from = field(&line, "tail_seq").expect("tail_seq");
    std::thread::sleep(Duration::from_millis(200));
    second.kill9();
    std::thread::sleep(Duration::from_millis(200));

    let host = RingHost::start(HostOptions {
        socket_path: path.clone(),
        ring: RingConfig {
            capacity: CAPACITY,
            max_payload: 4096,
        },
        adopt_grace: Duration::from_secs(3),
        ..HostOptions::default()
    })
    .expect("third host starts");
    assert!(host.adopted());
    assert_eq!(Some(host.ring().ring_id()), ring_id);
    wait_until("the producer to reconnect", Duration::from_secs(10), || {
        host.stats().producers_connected == 1
    });
    let lines = stop(&mut producers);
    let sent = field(&lines[0], "sent").expect("sent=N");
    assert!(
        field(&lines[0], "reconnects").unwrap_or(0) >= 2,
        "{lines:?}"
    );

    // A subscriber that had received everything before `resume_from` resumes there.
    let mut reader = RingReader::new(
        host.ring(),
        StartAt::Sequence(resume_from),
        ReaderOptions::default(),
    )
    .expect("reader");
    let mut tally = Tally {
        next_ring_seq: resume_from,
        ..Tally::default()
    };
    let mut sink = VecSink::default();
    assert!(tally.drain(&mut reader, &mut sink, Duration::from_secs(10)));
    tally.assert_clean();
    assert_eq!(tally.lost_total(), 0);
    assert_eq!(tally.delivered, sent - resume_from, "no duplicates, no gap");
    let seen = tally.producers.get(&0).copied().unwrap_or_default();
    assert_eq!(seen.last_seq, Some(sent - 1));
    assert!(seen.written_while_disconnected > 0);
}

/// A restart where the new host does not wait for a ring (adopt grace 0) creates a fresh
/// ring; the producers notice the new ring id on reconnect and move to it.
#[test]
fn restart_without_adoption_producers_move_to_the_new_ring() {
    let path = socket_path("restart-fresh");
    let mut first = Proc::spawn(HOST, &host_args(&path, 0));
    let old_id = field(&first.expect_line("RING", Duration::from_secs(10)), "id");
    let mut producers = start_producers(&path, 1);
    std::thread::sleep(Duration::from_millis(100));
    first.kill9();

    let host = RingHost::start(HostOptions {
        socket_path: path.clone(),
        ring: RingConfig {
            capacity: CAPACITY,
            max_payload: 4096,
        },
        adopt_grace: Duration::ZERO,
        ..HostOptions::default()
    })
    .expect("second host starts");
    assert!(!host.adopted());
    assert_ne!(Some(host.ring().ring_id()), old_id, "a fresh ring");
    wait_until("the producer to reconnect", Duration::from_secs(10), || {
        host.stats().producers_connected == 1
    });
    wait_until("frames in the new ring", Duration::from_secs(10), || {
        host.ring().tail().seq >= 50
    });
    let lines = stop(&mut producers);
    let sent = field(&lines[0], "sent").expect("sent=N");
    let mut reader =
        RingReader::new(host.ring(), StartAt::Earliest, ReaderOptions::default()).expect("reader");
    let mut tally = Tally::default();
    let mut sink = VecSink::default();
    assert!(tally.drain(&mut reader, &mut sink, Duration::from_secs(10)));
    tally.assert_clean();
    assert_eq!(tally.lost_total(), 0);
    let seen = tally.producers.get(&0).copied().unwrap_or_default();
    assert_eq!(
        seen.last_seq,
        Some(sent - 1),
        "the producer's last frames are in the new ring"
    );
    assert_eq!(
        host.ring().tail().seq,
        seen.delivered,
        "only this producer wrote the new ring"
    );
    assert!(
        seen.delivered < sent,
        "frames before the switch stayed in the old ring"
    );
}
