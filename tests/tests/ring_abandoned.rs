//! Producers SIGKILLed between claim and commit: the reader passes the stuck frame after
//! the stall bound, reports it abandoned (exactly one frame per kill), and another
//! producer's frames keep flowing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringside_ring::{LossReason, ReadStep, ReaderOptions, RingReader, StartAt, VecSink};
use ringside_tests::ring_support::{Proc, Tally, field, prime_ring, start_host};

const PRODUCER: &str = env!("CARGO_BIN_EXE_ring_producer");

fn producer_args(path: &std::path::Path, index: u32, extra: &[(&str, &str)]) -> Vec<String> {
    let mut args = vec![
        "--socket".to_owned(),
        path.display().to_string(),
        "--index".to_owned(),
        index.to_string(),
    ];
    for (k, v) in extra {
        args.push(format!("--{k}"));
        args.push((*v).to_owned());
    }
    args
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn producers_killed_between_claim_and_commit_are_passed_and_counted() {
    kills_are_passed_and_counted("abandoned", 20, false);
}

#[test]
fn zero_copy_reservations_held_by_killed_producers_are_passed_and_counted() {
    // The victim holds a `reserve` reservation, half filled in place, when it is killed.
    kills_are_passed_and_counted("abandoned-reserve", 8, true);
}

fn kills_are_passed_and_counted(name: &str, kills: u32, reserve: bool) {
    const STEADY: u32 = 0;
    // 16 MiB at under 0.3 MB/s from the steady producer (2 frames per ms at most): a lap
    // takes a minute, so nothing is lapped and every loss must be an abandoned claim.
    let (host, path) = start_host(name, 16 << 20);
    let ring = host.ring();
    let primed = prime_ring(&path);
    let options = ReaderOptions {
        stall_timeout: Duration::from_millis(50),
    };
    let mut reader =
        RingReader::new(Arc::clone(&ring), StartAt::Earliest, options).expect("reader");

    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let reader_thread = {
        let tally = Arc::clone(&tally);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut sink = VecSink::default();
            // How long each stuck frame held the reader: from the first Pending at its
            // sequence number to the abandoned loss that passed it.
            let mut stalls = Vec::new();
            let mut pending_since: Option<(u64, Instant)> = None;
            while !stop.load(Ordering::SeqCst) {
                let at_seq = reader.next_seq();
                // Taken before the read: the reader's own stall clock starts inside it, so
                // this measure never overstates how long the reader waited.
                let before = Instant::now();
                let step = reader.read(&mut sink);
                match step {
                    ReadStep::Pending => {
                        if pending_since.is_none_or(|(seq, _)| seq != at_seq) {
                            pending_since = Some((at_seq, before));
                        }
                    }
                    ReadStep::Loss(loss) if loss.reason == LossReason::Abandoned => {
                        let held = pending_since
                            .filter(|(seq, _)| *seq == loss.first_seq)
                            .map(|(_, since)| since.elapsed());
                        stalls.push(held);
                        pending_since = None;
                    }
                    _ => pending_since = None,
                }
                let idle = matches!(step, ReadStep::Idle | ReadStep::Pending);
                tally.lock().expect("tally").record(&step, &sink);
                if idle {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            (reader, stalls)
        })
    };

    let mut steady = Proc::spawn(
        PRODUCER,
        &producer_args(
            &path,
            STEADY,
            &[
                ("throttle-every", "2"),
                ("throttle-us", "1000"),
                ("max-extra", "100"),
            ],
        ),
    );
    steady.expect_line("CONNECTED", Duration::from_secs(10));
    let steady_delivered = |t: &Tally| t.producers.get(&STEADY).map_or(0, |p| p.delivered);

    let mut published_by_killed = 0u64;
    for i in 0..kills {
        let park_after = u64::from(i % 4) * 3;
        let index = 100 + i;
        let park = park_after.to_string();
        let mut victim_args = vec![("park-after", park.as_str())];
        if reserve {
            victim_args.push(("reserve-hang", "1"));
        }
        let mut victim = Proc::spawn(PRODUCER, &producer_args(&path, index, &victim_args));
        victim.expect_line("CONNECTED", Duration::from_secs(10));
        victim.expect_line("PARKED", Duration::from_secs(10));
        let before = steady_delivered(&tally.lock().expect("tally"));
        victim.kill9();
        published_by_killed += park_after;
        // The reader moves on: one more abandoned frame, then the steady producer's frames
        // keep coming (generous timeouts: this guards against a hang, it is not a timing test).
        wait_until("the abandoned loss", Duration::from_secs(10), || {
            tally.lock().expect("tally").lost(LossReason::Abandoned) == u64::from(i + 1)
        });
        wait_until(
            "steady frames after the kill",
            Duration::from_secs(10),
            || steady_delivered(&tally.lock().expect("tally")) > before,
        );
    }

    steady.close_stdin();
    let sent_line = steady.expect_line("SENT", Duration::from_secs(10));
    steady.wait_success(Duration::from_secs(10));
    let steady_sent = field(&sent_line, "sent").expect("sent=N");
    let written_claims = primed + steady_sent + published_by_killed + u64::from(kills);
    wait_until("the reader to catch up", Duration::from_secs(10), || {
        tally.lock().expect("tally").next_ring_seq == written_claims
    });
    stop.store(true, Ordering::SeqCst);
    let (_reader, stalls) = reader_thread.join().expect("reader thread");

    let tally = tally.lock().expect("tally");
    eprintln!(
        "claims {written_claims}, delivered {}, lost {:?}, losses {:?}",
        tally.delivered, tally.lost, tally.losses
    );
    eprintln!("stuck frame held the reader for (stall bound 50 ms): {stalls:?}");
    // The reader never gives up on a frame before the stall bound (a lower bound only:
    // being late is not a failure here, skipping a live frame early would be).
    assert_eq!(stalls.len(), kills as usize);
    for held in &stalls {
        let held = held.expect("the reader saw Pending at the stuck frame before passing it");
        assert!(
            held >= Duration::from_millis(50),
            "passed after only {held:?}"
        );
    }
    tally.assert_clean();
    assert_eq!(
        ring.tail().seq,
        written_claims,
        "each kill left exactly one claim"
    );
    assert_eq!(tally.lost(LossReason::Abandoned), u64::from(kills));
    assert_eq!(
        tally.lost(LossReason::Lapped),
        0,
        "the ring is far too big to lap here"
    );
    assert_eq!(tally.lost(LossReason::Corrupt), 0);
    let abandoned: Vec<_> = tally
        .losses
        .iter()
        .filter(|l| l.reason == LossReason::Abandoned)
        .collect();
    assert!(
        abandoned.iter().all(|l| l.frames == 1),
        "one frame per kill: {abandoned:?}"
    );
    assert_eq!(tally.delivered + tally.lost_total(), written_claims);
    // Everything the victims committed before parking, and everything the steady producer
    // wrote, was delivered.
    assert_eq!(steady_delivered(&tally), steady_sent);
    for i in 0..kills {
        let expected = u64::from(i % 4) * 3;
        let got = tally.producers.get(&(100 + i)).map_or(0, |p| p.delivered);
        assert_eq!(
            got, expected,
            "victim {i} committed {expected} frames before parking"
        );
    }
}

/// Regression test (found by this suite, fixed in 7e24f2c): the frame at position 0 of a
/// fresh ring, claimed but not yet committed, has a commit word of 0, which reads as
/// "position 0, state 0". The reader took it for a committed-but-malformed frame and
/// reported it **corrupt** at once, instead of waiting (`Pending`) and, after the stall
/// bound, reporting it abandoned; a producer merely slow on a ring's first frame lost it.
/// Killed after parking: the frame is then reported abandoned, exactly one.
#[test]
fn uncommitted_first_frame_is_pending_not_corrupt() {
    let (host, path) = start_host("first-frame", 1 << 16);
    let mut victim = Proc::spawn(PRODUCER, &producer_args(&path, 1, &[("park-after", "0")]));
    victim.expect_line("PARKED", Duration::from_secs(10));
    let options = ReaderOptions {
        stall_timeout: Duration::from_secs(3600),
    };
    let mut reader = RingReader::new(host.ring(), StartAt::Earliest, options).expect("reader");
    let mut sink = VecSink::default();
    let step = reader.read(&mut sink);
    victim.kill9();
    assert_eq!(
        step,
        ReadStep::Pending,
        "a claimed, uncommitted frame within the stall bound must read as Pending"
    );
    drop(reader);

    // The same with a short stall bound and a frame committed behind it: abandoned, one.
    let options = ReaderOptions {
        stall_timeout: Duration::from_millis(50),
    };
    let mut reader = RingReader::new(host.ring(), StartAt::Earliest, options).expect("reader");
    let mut after = Proc::spawn(PRODUCER, &producer_args(&path, 2, &[("count", "10")]));
    after.expect_line("SENT", Duration::from_secs(10));
    after.wait_success(Duration::from_secs(10));
    let mut tally = Tally::default();
    assert!(tally.drain(&mut reader, &mut sink, Duration::from_secs(10)));
    tally.assert_clean();
    assert_eq!(tally.lost(LossReason::Abandoned), 1);
    assert_eq!(tally.lost_total(), 1);
    assert_eq!(tally.producers.get(&2).map(|p| p.delivered), Some(10));
}
