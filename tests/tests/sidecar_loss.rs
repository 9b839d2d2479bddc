//! Loss reports are exact, and a sidecar restart under load loses nothing
//! that a resuming subscriber is not told about.

use ringside_tests::sidecar as harness;

use harness::*;
use ringside_proto::v1;
use ringside_proto::v1::subscribe_request::Start;
use std::time::Duration;
use tonic::Code;

/// A slow subscriber on a tiny ring is lapped; every frame written is either
/// received or reported lost (with reason LAPPED), exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_gets_exact_loss_reports() {
    let dir = TempDir::new("loss");
    let sidecar = Sidecar::start(
        &dir,
        &[
            "--ring-size",
            "64KiB",
            "--max-payload",
            "1KiB",
            "--subscriber-buffer",
            "8KiB",
        ],
    );
    let mut c = client(&sidecar.endpoint()).await;
    let mut req = sub_req(Start::Earliest(true));
    req.max_batch_frames = 4;
    let mut stream = c.subscribe(req).await.expect("subscribe").into_inner();
    let load = spawn_load(
        &sidecar.socket,
        &[
            "--rate",
            "20000",
            "--duration",
            "2s",
            "--size",
            "512",
            "--topics",
            "2",
        ],
    );
    let mut got = Collected::default();
    let mut done: Option<LoadTotals> = None;
    let mut load = Some(load);
    loop {
        if done.is_none()
            && let Some(l) = load.as_mut()
            && l.try_wait().expect("load status").is_some()
        {
            done = Some(finish_load(load.take().expect("load")));
        }
        let idle = if done.is_some() {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(20)
        };
        match tokio::time::timeout(idle, stream.message()).await {
            Ok(Ok(Some(b))) => got.add(&b),
            Ok(other) => panic!("stream ended: {other:?}"),
            Err(_) if done.is_some() => break,
            Err(_) => panic!("no batch for 20s while producing"),
        }
        if done.is_none() {
            // Read slowly while the producer runs.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let written = done.expect("load finished").sent;
    assert!(
        got.lost() > 0,
        "a slow reader on a 64KiB ring must be lapped"
    );
    assert!(
        got.losses
            .iter()
            .all(|l| l.0 == v1::LossReason::Lapped as i32),
        "{:?}",
        got.losses
    );
    assert_exact_accounting(&got, 0, written);
    let info = c.info(v1::InfoRequest {}).await.expect("info").into_inner();
    assert!(info.lost_lapped >= got.lost());
}

/// SIGTERM the sidecar while a producer writes and a subscriber reads; start a
/// new one on the same socket; it adopts the ring from the producer and the
/// subscriber resumes by sequence: no duplicates, and every frame is received
/// or reported lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_under_load_resumes_without_duplicates_or_silent_gaps() {
    let dir = TempDir::new("restart");
    let port = free_port();
    let flags = ["--ring-size", "4MiB", "--adopt-grace", "3s"];
    let mut a = Sidecar::start_on(&dir, port, &flags);
    let load = spawn_load(
        &a.socket,
        &[
            "--rate",
            "5000",
            "--duration",
            "5s",
            "--size",
            "64",
            "--topics",
            "2",
        ],
    );

    let mut c = client(&a.endpoint()).await;
    let mut stream = c
        .subscribe(sub_req(Start::Earliest(true)))
        .await
        .expect("subscribe")
        .into_inner();
    let mut got = Collected::default();
    while got.frames.len() < 2000 {
        let b = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("batches flow")
            .expect("ok")
            .expect("batch");
        got.add(&b);
    }
    let ring_id = got.ring_id.expect("ring id");
    let status = a.stop();
    assert!(status.success(), "graceful exit: {status}\n{}", a.stderr());
    // The stream ends with UNAVAILABLE naming the resume point, or the
    // connection drops; either way we resume from the last resume_seq.
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
            Ok(Ok(Some(b))) => got.add(&b),
            Ok(Ok(None)) => break,
            Ok(Err(s)) => {
                assert_eq!(s.code(), Code::Unavailable, "{s:?}");
                break;
            }
            Err(_) => panic!("stream did not end after SIGTERM"),
        }
    }
    let resume = got.resume_seq.expect("resume seq");
    drop(c);

    // Producers keep writing while no sidecar runs; then a new one adopts the ring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = Sidecar::start_on(&dir, port, &flags);
    let mut c = client(&b.endpoint()).await;
    let info = c.info(v1::InfoRequest {}).await.expect("info").into_inner();
    assert!(
        info.ring_adopted,
        "the new sidecar adopts the producer's ring:\n{}",
        b.stderr()
    );
    assert_eq!(info.ring_id, ring_id);
    let mut stream = c
        .subscribe(sub_req(Start::Sequence(resume)))
        .await
        .expect("resume")
        .into_inner();
    let totals;
    let mut load = Some(load);
    loop {
        if let Some(l) = load.as_mut()
            && l.try_wait().expect("status").is_some()
        {
            totals = finish_load(load.take().expect("load"));
            // Drain what is left.
            while let Ok(Ok(Some(batch))) =
                tokio::time::timeout(Duration::from_secs(2), stream.message()).await
            {
                got.add(&batch);
            }
            break;
        }
        if let Ok(Ok(Some(batch))) =
            tokio::time::timeout(Duration::from_millis(200), stream.message()).await
        {
            got.add(&batch);
        }
    }
    assert_eq!(got.ring_id, Some(ring_id));
    // Frames dropped while no ring was mapped never got a sequence number.
    assert_exact_accounting(&got, 0, totals.sent);
}

/// A subscriber that stops reading (its HTTP/2 window full) while producers
/// write is reaped after --subscriber-stall-timeout: its connection is closed
/// and its slot freed. A subscriber on another connection is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscriber_is_reaped_and_others_continue() {
    let dir = TempDir::new("reap");
    let sidecar = Sidecar::start(
        &dir,
        &[
            "--ring-size",
            "1MiB",
            "--max-payload",
            "4KiB",
            "--subscriber-stall-timeout",
            "1s",
        ],
    );
    let mut stalled_client = client(&sidecar.endpoint()).await;
    let mut stalled = stalled_client
        .subscribe(sub_req(Start::Earliest(true)))
        .await
        .expect("subscribe")
        .into_inner();
    let mut healthy_client = client(&sidecar.endpoint()).await;
    let mut healthy = healthy_client
        .subscribe(sub_req(Start::Latest(true)))
        .await
        .expect("subscribe")
        .into_inner();
    let load = spawn_load(
        &sidecar.socket,
        &[
            "--rate",
            "4000",
            "--duration",
            "6s",
            "--size",
            "2048",
            "--topics",
            "1",
        ],
    );
    let mut info_client = client(&sidecar.endpoint()).await;
    let mut got = Collected::default();
    let mut reaped = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if let Ok(Ok(Some(b))) =
            tokio::time::timeout(Duration::from_millis(50), healthy.message()).await
        {
            got.add(&b);
        }
        let info = info_client
            .info(v1::InfoRequest {})
            .await
            .expect("info")
            .into_inner();
        reaped = info.subscribers_reaped;
        if reaped > 0 && got.frames.len() > 100 {
            break;
        }
    }
    assert_eq!(
        reaped,
        1,
        "exactly the stalled subscriber is reaped:\n{}",
        sidecar.stderr()
    );
    // The stalled stream ends (after what its window already held) instead of hanging.
    let mut ended = false;
    for _ in 0..10_000 {
        match tokio::time::timeout(Duration::from_secs(10), stalled.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(_) => {
                ended = true;
                break;
            }
            Err(_) => break,
        }
    }
    assert!(ended, "the reaped stream ends");
    // The healthy subscriber keeps receiving.
    let before = got.frames.len();
    let b = tokio::time::timeout(Duration::from_secs(10), healthy.message())
        .await
        .expect("healthy stream still flows")
        .expect("ok")
        .expect("batch");
    got.add(&b);
    assert!(got.frames.len() > before);
    let _ = finish_load(load);
}
