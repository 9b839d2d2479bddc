//! The doorbell wakes a caught-up subscriber for every frame, with nothing else to
//! wake it: a real sidecar process, a producer in this process (another process than
//! the sidecar), a tonic subscriber over loopback, in lock-step.
//!
//! While a subscriber waits, the sidecar's wake task waits on the doorbell's eventfd on
//! tokio's reactor; without a ring it looks at the ring again only every 250 ms to 1 s
//! (the bound for a producer that died between commit and ring; 250 ms while frames keep
//! arriving, as here). A wake-up lost anywhere (the registry's "register, re-check, wait"
//! rule, the doorbell's arm/re-read handshake, the reactor readiness after a drain)
//! therefore shows as a round of 250 ms or more, where a rung round takes well under a
//! millisecond. A few slow rounds are what a loaded machine does; a race that loses
//! wake-ups shows in many rounds (or, without the re-check, in a round that never ends).
//!
//! The second test checks that re-check: a frame written with no ring at all, after the
//! sidecar sat idle long enough to stretch the re-check to its longest period, is still
//! delivered within that period.

use ringside_client::Producer;
use ringside_proto::v1::Batch;
use ringside_proto::v1::subscribe_request::Start;
use ringside_ring::writer::FrameHeaderFields;
use ringside_tests::ring_support::HostileProducer;
use ringside_tests::sidecar::*;
use std::time::Duration;

/// Rounds: each commits one frame after the subscriber received the previous one.
const ROUNDS: u64 = 3000;
/// How long one frame may take: far above any scheduling delay, far below "never".
const DELIVERY: Duration = Duration::from_secs(5);
/// A round this slow waited for the wake task's re-check (250 ms while frames arrive)
/// instead of a ring.
const SLOW_ROUND: Duration = Duration::from_millis(240);
/// Slow rounds allowed: scheduling spikes of a shared machine, not a systematic loss.
const SLOW_ROUNDS_ALLOWED: u64 = ROUNDS / 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_committed_after_the_subscriber_caught_up_is_delivered() {
    let dir = TempDir::new("wake");
    let sidecar = Sidecar::start(&dir, &[]);
    let producer = Producer::connect(&sidecar.socket).expect("connect the producer");
    assert!(
        producer.wait_connected(Duration::from_secs(5)),
        "the producer did not get a ring: {:?}",
        producer.last_error()
    );
    let mut c = client(&sidecar.endpoint()).await;
    let mut stream = c
        .subscribe(sub_req(Start::Latest(true)))
        .await
        .expect("subscribe")
        .into_inner();

    // The stream starts at the tail when the server takes the request: send until the
    // first frame arrives, so that every later frame is certainly after its start.
    let mut next_seq = None;
    for _ in 0..50 {
        producer.send("wake/sync", b"sync").expect("send");
        if let Ok(Ok(Some(b))) =
            tokio::time::timeout(Duration::from_millis(200), stream.message()).await
            && let Some(f) = b.frames.last()
        {
            next_seq = Some(f.seq + 1);
            break;
        }
    }
    let mut next_seq = next_seq.expect("the subscription never saw a frame");
    // Frames sent in the sync loop after the one that arrived are still coming.
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(Ok(Some(b))) =
        tokio::time::timeout(Duration::from_millis(100), stream.message()).await
    {
        if let Some(f) = b.frames.last() {
            next_seq = f.seq + 1;
        }
    }

    let mut slow = Vec::new();
    for round in 0..ROUNDS {
        // Vary where the commit lands relative to the subscriber and the wake task:
        // right after the last delivery (the subscriber may not have registered yet),
        // after a yield, after both are surely asleep, and as a reservation committed
        // after a pause (claim without a ring, then the commit's ring).
        match round % 4 {
            0 => {}
            1 => tokio::task::yield_now().await,
            2 => tokio::time::sleep(Duration::from_millis(1)).await,
            _ => {}
        }
        let sent = std::time::Instant::now();
        if round % 4 == 3 {
            let mut r = producer.reserve("wake/r", 8).expect("reserve");
            r.copy_from_slice(&round.to_le_bytes());
            std::thread::sleep(Duration::from_micros(200));
            r.commit();
        } else {
            producer.send("wake/s", &round.to_le_bytes()).expect("send");
        }
        let b = next_data_batch(&mut stream, DELIVERY, || {
            format!(
                "round {round}: frame seq {next_seq}, committed after the subscriber had caught up"
            )
        })
        .await;
        let f = &b.frames[0];
        assert_eq!(b.frames.len(), 1, "round {round}: one frame per round");
        assert_eq!(f.seq, next_seq, "round {round}: the frame just sent");
        assert_eq!(
            f.payload[..],
            round.to_le_bytes(),
            "round {round}: its payload"
        );
        next_seq += 1;
        let took = sent.elapsed();
        if took >= SLOW_ROUND {
            slow.push((round, took));
        }
    }
    assert!(
        slow.len() as u64 <= SLOW_ROUNDS_ALLOWED,
        "{} of {ROUNDS} rounds took {SLOW_ROUND:?} or more (a ring not seen, left to the re-check): {slow:?}",
        slow.len()
    );
}

/// How long the sidecar sits idle with a waiting subscriber before the unrung frame: long
/// enough for the wake task's re-check to reach its longest period (250 ms doubled twice).
const IDLE_BEFORE_SILENT_FRAME: Duration = Duration::from_secs(3);
/// The documented bound for a frame that is never rung (`wake::RECHECK_MAX`, 1 s) plus
/// scheduling slack for a shared machine; far below "never".
const SILENT_FRAME_BOUND: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_committed_without_a_ring_is_delivered_by_the_recheck() {
    let dir = TempDir::new("wake-silent");
    let sidecar = Sidecar::start(&dir, &[]);
    // Admitted through the real handshake, but writes frames straight into the ring and
    // never touches the doorbell: a producer that died between its commit and its ring.
    let silent = HostileProducer::attach(&sidecar.socket).expect("attach the silent producer");
    let mut c = client(&sidecar.endpoint()).await;
    let mut stream = c
        .subscribe(sub_req(Start::Latest(true)))
        .await
        .expect("subscribe")
        .into_inner();
    let fields = FrameHeaderFields {
        producer_id: 0,
        timestamp_ns: 1,
        flags: 0,
    };
    // The stream starts at the tail when the server takes the request, which the client
    // does not see: write until a frame arrives (each found by the re-check, or not at
    // all without it), then drain what is still coming.
    let mut synced = false;
    for _ in 0..10 {
        silent.ring.write_frame(b"wake/sync", b"sync", fields);
        if let Ok(Ok(Some(b))) = tokio::time::timeout(SILENT_FRAME_BOUND, stream.message()).await
            && !b.frames.is_empty()
        {
            synced = true;
            break;
        }
    }
    assert!(synced, "no frame written without a ring was ever delivered");
    while let Ok(Ok(Some(_))) =
        tokio::time::timeout(Duration::from_millis(100), stream.message()).await
    {}

    // Idle with the subscriber waiting, then one more frame without a ring.
    tokio::time::sleep(IDLE_BEFORE_SILENT_FRAME).await;
    silent.ring.write_frame(b"wake/silent", b"silent", fields);
    let written = std::time::Instant::now();
    let b = next_data_batch(&mut stream, SILENT_FRAME_BOUND, || {
        "a frame committed without a ring (the wake task's re-check is bounded by 1 s)".into()
    })
    .await;
    let f = &b.frames[0];
    assert_eq!(
        f.topic, "wake/silent",
        "the frame written after the idle time"
    );
    assert_eq!(f.payload[..], b"silent"[..]);
    eprintln!(
        "the unrung frame arrived {:?} after it was written",
        written.elapsed()
    );
}

/// The next batch that holds frames (progress batches are skipped), each message awaited
/// at most `within`; it must report no loss. Panics naming `what` when none comes in time.
async fn next_data_batch(
    stream: &mut tonic::Streaming<Batch>,
    within: Duration,
    what: impl Fn() -> String,
) -> Batch {
    loop {
        let b = match tokio::time::timeout(within, stream.message()).await {
            Ok(Ok(Some(b))) => b,
            Ok(other) => panic!("{}: the stream ended: {other:?}", what()),
            Err(_) => panic!(
                "{} was not delivered within {within:?} (a lost wake-up)",
                what()
            ),
        };
        assert!(b.losses.is_empty(), "{}: losses {:?}", what(), b.losses);
        if !b.frames.is_empty() {
            return b;
        }
    }
}
