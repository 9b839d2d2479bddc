//! The API at its edges (issue 11): one regression test per defect an independent client
//! found, each driven by a real tonic client (or raw HTTP/1.1 where the defect is at the
//! HTTP level) over loopback against a real `ringside serve` and real producer processes.
//! The same defects are driven by a second, independent client in Python (grpcio):
//! `tests/python/`.
//!
//! Every test here failed against the sidecar before its fix; to check that again, point
//! `RINGSIDE_BIN` at an older `ringside` binary (see `tests/src/sidecar.rs`).

use ringside_tests::sidecar as harness;

use harness::*;
use ringside_proto::v1;
use ringside_proto::v1::ringside_client::RingsideClient;
use ringside_proto::v1::subscribe_request::Start;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tonic::Code;
use tonic::transport::Channel;

const HOSTILE: &str = env!("CARGO_BIN_EXE_ring_hostile");

/// A tonic channel whose HTTP/2 receive windows are `window` bytes (stream and
/// connection): a client that stops reading fills them quickly.
async fn channel_with_window(endpoint: &str, window: u32) -> Channel {
    channel_with_windows(endpoint, window, window).await
}

/// A channel whose streams have a `stream` byte window each and whose connection has a
/// `connection` byte window.
async fn channel_with_windows(endpoint: &str, stream: u32, connection: u32) -> Channel {
    tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .initial_stream_window_size(stream)
        .initial_connection_window_size(connection)
        .connect()
        .await
        .expect("connect")
}

/// Subscribe, with the client's usual decode limit.
fn ringside(ch: Channel) -> RingsideClient<Channel> {
    RingsideClient::new(ch).max_decoding_message_size(64 << 20)
}

async fn info(c: &mut RingsideClient<Channel>) -> v1::InfoResponse {
    c.info(v1::InfoRequest {}).await.expect("info").into_inner()
}

/// The number after "resume with sequence " in a status message.
fn resume_in(message: &str) -> Option<u64> {
    let rest = message.split("resume with sequence ").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// `resume_seq - from_seq` must equal what the batch accounts for (losses below
/// `from_seq` are outside the range; only a forged claim word makes them).
fn assert_batch_accounts(b: &v1::Batch) {
    let lost: u64 = b
        .losses
        .iter()
        .filter(|l| l.first_seq >= b.from_seq)
        .map(|l| l.frames)
        .sum();
    assert_eq!(
        b.resume_seq - b.from_seq,
        b.frames.len() as u64 + lost + b.filtered + b.discarded,
        "batch [{}, {}) with {} frames, losses {:?}, {} filtered, {} discarded",
        b.from_seq,
        b.resume_seq,
        b.frames.len(),
        b.losses,
        b.filtered,
        b.discarded
    );
}

/// Defect 1: a subscriber that takes a batch every 50 ms is never reaped with
/// `--subscriber-stall-timeout 2s`. Before the fix, progress was measured only when h2
/// polled the stream body, and a batch of up to 256 KiB waiting in h2 for window took
/// the client's small window updates tens of seconds to drain: the reaper closed the
/// connection of a client that was reading all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_is_never_reaped() {
    let dir = TempDir::new("slow");
    let sidecar = Sidecar::start(
        &dir,
        &["--ring-size", "4MiB", "--subscriber-stall-timeout", "2s"],
    );
    let load = spawn_load(
        &sidecar.socket,
        &["--rate", "2000", "--size", "200", "--duration", "14s"],
    );
    let mut c = ringside(channel_with_window(&sidecar.endpoint(), 256 * 1024).await);
    let mut stream = c
        .subscribe(sub_req(Start::Latest(true)))
        .await
        .expect("subscribe")
        .into_inner();
    let started = Instant::now();
    let mut batches = 0u64;
    while started.elapsed() < Duration::from_secs(12) {
        match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
            Ok(Ok(Some(_))) => batches += 1,
            other => panic!(
                "a subscriber reading a batch every 50 ms lost its stream after {:.1} s and {batches} batches: {other:?}\n{}",
                started.elapsed().as_secs_f64(),
                sidecar.stderr()
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut c2 = client(&sidecar.endpoint()).await;
    assert_eq!(
        info(&mut c2).await.subscribers_reaped,
        0,
        "reaped while reading"
    );
    finish_load(load);
}

/// Defect 1, the other half: a subscriber that does stop reading is ended with
/// UNAVAILABLE naming its resume sequence (the `resume_seq` of the last batch it was
/// sent), which it reads once it reads again; one that never reads again has its
/// connection closed (slot freed). Before the fix, the connection was closed at once and
/// the client saw a transport error and no resume sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_reader_is_ended_with_its_resume_sequence() {
    let dir = TempDir::new("stall");
    let sidecar = Sidecar::start(
        &dir,
        &["--ring-size", "4MiB", "--subscriber-stall-timeout", "3s"],
    );
    let load = spawn_load(
        &sidecar.socket,
        &["--rate", "2000", "--size", "200", "--duration", "20s"],
    );
    // Two subscribers with small windows, on their own connections.
    let mut a = ringside(channel_with_window(&sidecar.endpoint(), 64 * 1024).await);
    let mut gone = ringside(channel_with_window(&sidecar.endpoint(), 64 * 1024).await);
    let mut sa = a
        .subscribe(sub_req(Start::Latest(true)))
        .await
        .expect("subscribe")
        .into_inner();
    let sb = gone
        .subscribe(sub_req(Start::Latest(true)))
        .await
        .expect("subscribe")
        .into_inner();
    // `a` reads for a second, then stops for 5 s (past the 3 s timeout, before 6 s).
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(1) {
        sa.message().await.expect("batch").expect("stream open");
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut last_resume = None;
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(10), sa.message()).await {
            Ok(Ok(Some(b))) => last_resume = Some(b.resume_seq),
            Ok(Ok(None)) => panic!("stream ended without a status"),
            Ok(Err(status)) => break status,
            Err(_) => panic!("the stalled stream was not ended"),
        }
    };
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    assert!(
        end.message().contains("--subscriber-stall-timeout"),
        "{}",
        end.message()
    );
    assert_eq!(
        resume_in(end.message()),
        last_resume,
        "the status names the resume_seq of the last batch: {}",
        end.message()
    );
    // `gone` never reads again: after twice the timeout its connection is closed and
    // both slots are free.
    let mut c = client(&sidecar.endpoint()).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let i = info(&mut c).await;
        if i.subscribers_active == 0 {
            if i.subscribers_reaped != 2 {
                // Which stream was not the reaper's: how `gone`'s ended tells.
                let mut sb = sb;
                let mut frames = 0;
                let gone_end = loop {
                    match tokio::time::timeout(Duration::from_secs(2), sb.message()).await {
                        Ok(Ok(Some(b))) => frames += b.frames.len(),
                        other => break format!("after {frames} frames: {other:?}"),
                    }
                };
                panic!(
                    "both slots are free, so both streams should have been ended by the reaper, but {} were: {i:?}\nthe never-read stream ended {gone_end}\n{}",
                    i.subscribers_reaped,
                    sidecar.stderr()
                );
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a subscriber that reads nothing still holds its slot: {i:?}\n{}",
            sidecar.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(sb);
    finish_load(load);
}

/// A Rust (h2) client that stops reading a quiet stream keeps its connection. h2 >= 0.4.20
/// charges each unread DATA frame under 256 bytes against a small budget and closes the
/// whole connection (GOAWAY ENHANCE_YOUR_CALM, "too_many_data_frames") when it runs out.
/// Before the sidecar padded small batches (and sent a small shared chunk in one DATA frame
/// with its head), one-frame batches of a quiet stream ran the budget out ~0.5 s into a
/// pause here: the paused stream and every other call on that connection failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_client_of_a_quiet_stream_keeps_its_connection() {
    let dir = TempDir::new("paused");
    let sidecar = Sidecar::start(
        &dir,
        &["--ring-size", "4MiB", "--subscriber-stall-timeout", "60s"],
    );
    let load = spawn_load(
        &sidecar.socket,
        &["--rate", "400", "--size", "16", "--duration", "10s"],
    );
    // The stream's window (32 KiB) fills well before the connection's (64 KiB, budget
    // 32 KiB), so a unary call still gets through while the stream is paused.
    let mut c = ringside(channel_with_windows(&sidecar.endpoint(), 32 * 1024, 64 * 1024).await);
    let mut s = c
        .subscribe(sub_req(Start::Latest(true)))
        .await
        .expect("subscribe")
        .into_inner();
    let t = Instant::now();
    let mut frames = 0;
    while t.elapsed() < Duration::from_secs(1) {
        frames += s
            .message()
            .await
            .expect("batch")
            .expect("open")
            .frames
            .len();
    }
    assert!(frames > 100, "the load runs: {frames} frames in 1 s");
    // The stream is not read for 4 s: ~1,600 one-frame batches are written for it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let i = tokio::time::timeout(Duration::from_secs(5), c.info(v1::InfoRequest {}))
        .await
        .expect("Info answered within 5 s")
        .unwrap_or_else(|e| {
            panic!(
                "a call on the paused client's connection failed: {e:?}\n{}",
                sidecar.stderr()
            )
        })
        .into_inner();
    // (tonic reconnects a closed channel for the call: a closed connection shows here.)
    assert_eq!(
        i.subscribers_active,
        1,
        "the paused subscription ended with its connection: {i:?}\n{}",
        sidecar.stderr()
    );
    // The stream reads on, without a gap.
    let mut next = None;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(1) {
        let b = match s.message().await {
            Ok(Some(b)) => b,
            other => panic!("the paused stream ended: {other:?}\n{}", sidecar.stderr()),
        };
        if let Some(n) = next {
            assert_eq!(b.from_seq, n, "batches touch");
        }
        next = Some(b.resume_seq);
    }
    drop(s);
    finish_load(load);
}

/// Defect 2: after SIGTERM, health answers NOT_SERVING for "" and the service name until
/// the process exits (here it lingers 5 s on a subscriber that stopped reading), Watch
/// streams for both names are told NOT_SERVING and end, and an open Watch stream does not
/// hold the exit back (nor is it called a stalled client in the log). Before the fix,
/// Check calls timed out, Watch("") never saw NOT_SERVING, and a Watch stream delayed the
/// exit by the full 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_tells_the_truth_until_exit() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let dir = TempDir::new("health");
    let mut sidecar = Sidecar::start(&dir, &["--ring-size", "4MiB"]);
    let load = spawn_load(
        &sidecar.socket,
        &["--rate", "2000", "--size", "200", "--duration", "3s"],
    );
    // A subscriber that never reads: the sidecar waits up to 5 s for it at shutdown.
    let mut stalled = ringside(channel_with_window(&sidecar.endpoint(), 64 * 1024).await);
    let _stalled_stream = stalled
        .subscribe(sub_req(Start::Earliest(true)))
        .await
        .expect("subscribe")
        .into_inner();
    let ch = channel_with_window(&sidecar.endpoint(), 64 * 1024).await;
    let mut watches = Vec::new();
    for name in ["", ringside_proto::SERVICE_NAME] {
        let mut h = HealthClient::new(ch.clone());
        let mut w = h
            .watch(HealthCheckRequest {
                service: name.into(),
            })
            .await
            .expect("watch")
            .into_inner();
        let first = w.message().await.expect("ok").expect("first status");
        assert_eq!(first.status, ServingStatus::Serving as i32);
        watches.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let end = loop {
                match w.message().await {
                    Ok(Some(m)) => seen.push(m.status),
                    Ok(None) => break None,
                    Err(s) => break Some(s.code()),
                }
            };
            (seen, end)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    signal(&sidecar.child, libc::SIGTERM);
    let signalled = Instant::now();
    // The signal is delivered and handled asynchronously: a Check in between may still
    // say SERVING. Once one says NOT_SERVING (within a second), every later one must.
    loop {
        let status = tokio::time::timeout(
            Duration::from_secs(1),
            HealthClient::new(ch.clone()).check(HealthCheckRequest {
                service: String::new(),
            }),
        )
        .await;
        if let Ok(Ok(resp)) = &status
            && resp.get_ref().status == ServingStatus::NotServing as i32
        {
            break;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(1),
            "still not NOT_SERVING 1 s after SIGTERM: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut answered = 0;
    while signalled.elapsed() < Duration::from_secs(3) {
        for name in ["", ringside_proto::SERVICE_NAME] {
            // A new connection each time, and the existing one.
            for fresh in [true, false] {
                let ch = if fresh {
                    match tokio::time::timeout(
                        Duration::from_secs(1),
                        tonic::transport::Endpoint::from_shared(sidecar.endpoint())
                            .expect("endpoint")
                            .connect(),
                    )
                    .await
                    {
                        Ok(Ok(ch)) => ch,
                        other => panic!("no connection during shutdown: {other:?}"),
                    }
                } else {
                    ch.clone()
                };
                let r = tokio::time::timeout(
                    Duration::from_secs(1),
                    HealthClient::new(ch).check(HealthCheckRequest {
                        service: name.into(),
                    }),
                )
                .await;
                match r {
                    Ok(Ok(resp)) => {
                        assert_eq!(
                            resp.into_inner().status,
                            ServingStatus::NotServing as i32,
                            "Check({name:?}) after SIGTERM"
                        );
                        answered += 1;
                    }
                    other => panic!(
                        "Check({name:?}) {:.1} s after SIGTERM did not answer: {other:?}",
                        signalled.elapsed().as_secs_f64()
                    ),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered > 0);
    for w in watches {
        let (seen, end) = w.await.expect("watch task");
        assert_eq!(
            seen,
            vec![ServingStatus::NotServing as i32],
            "Watch saw NOT_SERVING"
        );
        assert_eq!(end, Some(Code::Unavailable), "the Watch stream ended");
    }
    let status = sidecar.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    finish_load(load);

    // Without the stalled subscriber, Watch streams do not hold the exit back.
    let dir = TempDir::new("health2");
    let mut sidecar = Sidecar::start(&dir, &[]);
    let ch = tonic::transport::Endpoint::from_shared(sidecar.endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut w = HealthClient::new(ch)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    w.message().await.expect("ok").expect("first status");
    let t = Instant::now();
    let status = sidecar.stop();
    let took = t.elapsed();
    assert!(status.success(), "{status}");
    let log = sidecar.stderr();
    assert!(
        !log.contains("did not end") && !log.contains("stalled"),
        "an open Watch stream was treated as a stalled client:\n{log}"
    );
    assert!(
        took < Duration::from_secs(4),
        "an open Watch stream held the exit for {took:?} (the grace is 5 s):\n{log}"
    );
}

/// Defect 3: after one 20,000-frame burst into a fresh 4 MiB ring (every frame still
/// retained), ListTopics counts every frame. Before the fix the observer skipped ahead
/// when it fell a quarter ring behind and the table stayed empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_topics_counts_a_burst() {
    let dir = TempDir::new("topics");
    let sidecar = Sidecar::start(&dir, &["--ring-size", "4MiB"]);
    let sent = run_load(
        &sidecar.socket,
        &[
            "--rate", "0", "--count", "20000", "--topics", "4", "--size", "64",
        ],
    );
    assert_eq!(sent.sent, 20_000);
    let mut c = client(&sidecar.endpoint()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let topics = loop {
        let t = c
            .list_topics(v1::ListTopicsRequest {})
            .await
            .expect("list topics")
            .into_inner();
        let counted: u64 = t.topics.iter().map(|t| t.frames).sum();
        assert_eq!(
            counted + t.frames_not_counted,
            t.frames_seen,
            "every frame passed is in a topic or not counted: {t:?}"
        );
        if counted == 20_000 || Instant::now() > deadline {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let counts: Vec<(String, u64)> = topics
        .topics
        .iter()
        .map(|t| (t.name.clone(), t.frames))
        .collect();
    assert_eq!(
        counts,
        (0..4)
            .map(|i| (format!("load/{i}"), 5000))
            .collect::<Vec<_>>(),
        "{topics:?}"
    );
    assert_eq!((topics.frames_seen, topics.frames_not_counted), (20_000, 0));
}

/// Defect 4: discarded reservations are reported in-band (`Batch.discarded`), so frames +
/// losses + filtered + discarded add up from the client's side alone. Before the fix, a
/// client counting sequences saw gaps nothing explained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discards_are_reported_in_band() {
    let dir = TempDir::new("discard");
    let sidecar = Sidecar::start(&dir, &[]);
    // 2000 frames published, every third attempt reserved and dropped (discarded).
    // (It stops at EOF on stdin, so stdin stays open until it is done.)
    let mut producer = std::process::Command::new(env!("CARGO_BIN_EXE_ring_producer"))
        .arg("--socket")
        .arg(&sidecar.socket)
        .args(["--count", "2000", "--discard-every", "3"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ring_producer");
    let stdin = producer.stdin.take();
    let out = producer.wait_with_output().expect("ring_producer");
    drop(stdin);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("published=2000"),
        "{text}"
    );
    let mut c = client(&sidecar.endpoint()).await;
    let total = info(&mut c).await.next_seq;
    assert!(total > 2000, "discards take sequence numbers: {total}");
    // One subscriber for everything, one whose filter matches nothing.
    for topics in [vec![], vec!["other".to_owned()]] {
        let mut req = sub_req(Start::Earliest(true));
        req.topics = topics.clone();
        req.max_batch_frames = 100;
        let mut s = c.subscribe(req).await.expect("subscribe").into_inner();
        let (mut frames, mut discarded, mut filtered, mut lost) = (0u64, 0u64, 0u64, 0u64);
        let mut next = 0u64;
        while next < total {
            let b = tokio::time::timeout(Duration::from_secs(5), s.message())
                .await
                .unwrap_or_else(|_| {
                    panic!("topics {topics:?}: no batch accounts for seq {next} of {total} (frames {frames}, discarded {discarded}, filtered {filtered})")
                })
                .expect("ok")
                .expect("open");
            assert_eq!(b.from_seq, next, "consecutive batches touch");
            assert_batch_accounts(&b);
            next = b.resume_seq;
            frames += b.frames.len() as u64;
            discarded += b.discarded;
            filtered += b.filtered;
            lost += b.losses.iter().map(|l| l.frames).sum::<u64>();
        }
        assert_eq!(next, total);
        assert_eq!(discarded, total - 2000, "topics {topics:?}");
        assert_eq!(lost, 0);
        if topics.is_empty() {
            assert_eq!((frames, filtered), (2000, 0));
        } else {
            assert_eq!((frames, filtered), (0, 2000));
        }
    }
}

/// Defect 5: a filtered stream whose topics never appear gets progress batches (no
/// frames, the current `resume_seq`, a `filtered` count) at a bounded rate, so resuming
/// is exact. Before the fix it got no batch at all and could only resume from its start,
/// and a later resume reported the frames its filter skipped as LAPPED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_streams_get_progress_batches() {
    let dir = TempDir::new("progress");
    let sidecar = Sidecar::start(&dir, &["--ring-size", "512KiB", "--max-payload", "1KiB"]);
    let mut c = client(&sidecar.endpoint()).await;
    let mut req = sub_req(Start::Latest(true));
    req.topics = vec!["nobody/writes/this".into()];
    let mut s = c.subscribe(req).await.expect("subscribe").into_inner();
    // 3 s of frames on other topics.
    let load = spawn_load(
        &sidecar.socket,
        &["--rate", "2000", "--size", "100", "--duration", "3s"],
    );
    let started = Instant::now();
    let mut progress = Vec::new();
    let written = loop {
        match tokio::time::timeout(Duration::from_secs(3), s.message()).await {
            Ok(Ok(Some(b))) => {
                assert!(b.frames.is_empty() && b.losses.is_empty(), "{b:?}");
                assert!(
                    b.filtered > 0,
                    "a progress batch counts what it passed: {b:?}"
                );
                assert_batch_accounts(&b);
                progress.push((started.elapsed(), b.resume_seq));
            }
            Ok(other) => panic!("stream ended: {other:?}"),
            Err(_) => {
                // Quiet for 3 s: the load is done and the last progress batch is in.
                break finish_load(load);
            }
        }
    };
    assert!(
        !progress.is_empty(),
        "a filtered stream got no progress batch in 3 s of other topics"
    );
    let last = progress.last().map(|p| p.1);
    assert_eq!(
        last,
        Some(written.sent),
        "the last progress batch resumes at the end"
    );
    // Bounded rate: at most one per second (plus the first).
    let span = progress.last().map(|p| p.0).unwrap_or_default();
    assert!(
        progress.len() as f64 <= span.as_secs_f64() + 2.0,
        "{} progress batches in {span:?}",
        progress.len()
    );
    // Resuming from it after the ring was lapped many times reports no frame the filter
    // skipped before it as lost: only frames written after it (while away) can be.
    drop(s);
    let resume = written.sent;
    let more = run_load(
        &sidecar.socket,
        &["--rate", "0", "--count", "20000", "--size", "100"],
    );
    let mut req = sub_req(Start::Sequence(resume));
    req.topics = vec!["nobody/writes/this".into()];
    let mut s = c.subscribe(req).await.expect("resume").into_inner();
    let b = tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("a batch after resuming")
        .expect("ok")
        .expect("open");
    for l in &b.losses {
        assert!(
            l.first_seq >= resume,
            "a loss before the resume point: {l:?} (resumed at {resume})"
        );
    }
    assert!(b.resume_seq <= resume + more.sent);
}

/// Defect 6: `latest: false` (and `earliest: false`) is refused with INVALID_ARGUMENT.
/// Before the fix, `latest = follow` with `follow == false` silently started at latest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn false_start_positions_are_refused() {
    let dir = TempDir::new("false");
    let sidecar = Sidecar::start(&dir, &[]);
    let mut c = client(&sidecar.endpoint()).await;
    for (start, name) in [
        (Start::Latest(false), "latest"),
        (Start::Earliest(false), "earliest"),
    ] {
        let err = match c.subscribe(sub_req(start)).await {
            Err(e) => e,
            Ok(s) => {
                let mut s = s.into_inner();
                match tokio::time::timeout(Duration::from_secs(1), s.message()).await {
                    Ok(Err(e)) => e,
                    other => panic!("`{name}: false` was accepted: {other:?}"),
                }
            }
        };
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains(&format!("`{name}: false`")),
            "{}",
            err.message()
        );
    }
}

/// Defect 7: `max_batch_bytes` bounds a batch by the size of the frames in it. Before the
/// fix a batch only took another frame while a maximum-size frame (64 KiB) still fitted,
/// so anything up to about 66 KB gave one frame per batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_batch_bytes_means_what_it_says() {
    let dir = TempDir::new("batchbytes");
    let sidecar = Sidecar::start(&dir, &["--ring-size", "8MiB"]);
    run_load(
        &sidecar.socket,
        &["--rate", "0", "--count", "20000", "--size", "64"],
    );
    let mut c = client(&sidecar.endpoint()).await;
    let limit = 66_000u32;
    let mut req = sub_req(Start::Earliest(true));
    req.max_batch_bytes = limit;
    let mut s = c.subscribe(req).await.expect("subscribe").into_inner();
    let (mut frames, mut batches) = (0usize, 0usize);
    while frames < 20_000 {
        let b = tokio::time::timeout(Duration::from_secs(5), s.message())
            .await
            .expect("batch")
            .expect("ok")
            .expect("open");
        let wire = prost::Message::encoded_len(&b) + 5;
        assert!(wire <= limit as usize, "a {wire}-byte batch over {limit}");
        frames += b.frames.len();
        batches += 1;
    }
    // A 64-byte frame takes about 100 bytes: about 650 per batch.
    assert!(
        batches <= 20_000 / 500 + 2,
        "{batches} batches for 20,000 small frames with max_batch_bytes {limit}"
    );
}

/// Defect 8: the filter maximum the proto documents fits the default `--max-request`,
/// and a filter past it is refused as such (INVALID_ARGUMENT naming the limit). Before
/// the fix the proto allowed 64 names and 64 prefixes of 255 bytes, about twice what the
/// default 16 KiB request limit takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_filter_maximum_fits_the_default_request_limit() {
    use ringside_sidecar::filter::{MAX_FILTER_BYTES, MAX_FILTER_PREFIXES, MAX_FILTER_TOPICS};
    let dir = TempDir::new("filtermax");
    let sidecar = Sidecar::start(&dir, &[]);
    let mut c = client(&sidecar.endpoint()).await;
    let per = MAX_FILTER_BYTES / (MAX_FILTER_TOPICS + MAX_FILTER_PREFIXES);
    let mut req = sub_req(Start::TimestampNs(u64::MAX));
    req.topics = (0..MAX_FILTER_TOPICS)
        .map(|i| format!("{i:0>per$}"))
        .collect();
    req.topic_prefixes = (0..MAX_FILTER_PREFIXES)
        .map(|i| format!("{i:x>per$}"))
        .collect();
    req.max_batch_bytes = u32::MAX;
    req.max_batch_frames = u32::MAX;
    let mut s = c
        .subscribe(req)
        .await
        .expect("the largest documented filter is accepted")
        .into_inner();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), s.message())
            .await
            .is_err(),
        "the stream stays open (nothing matches yet)"
    );
    // 60 names of 255 bytes: within the request limit, past the filter maximum.
    let mut req = sub_req(Start::Latest(true));
    req.topics = (0..60).map(|i| format!("{i:0>255}")).collect();
    let err = c.subscribe(req).await.expect_err("past the filter maximum");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("8192"), "{}", err.message());
}

/// Defect 9: ingest rates are measured over a real window and reach exactly 0 once
/// ingest stops; retention (the forecast at that rate) is 0 then, and the retained span
/// still says what the ring holds. Before the fix the rate halved every second and never
/// reached 0, and retention climbed to millions of seconds before snapping to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_rates_reach_zero_when_ingest_stops() {
    let dir = TempDir::new("rates");
    let sidecar = Sidecar::start(&dir, &["--ring-size", "4MiB"]);
    run_load(
        &sidecar.socket,
        &["--rate", "2000", "--size", "100", "--duration", "2s"],
    );
    let mut c = client(&sidecar.endpoint()).await;
    let i = info(&mut c).await;
    assert!(i.ingest_frames_per_sec > 0.0, "{i:?}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let i = loop {
        let i = info(&mut c).await;
        if i.ingest_frames_per_sec == 0.0 || Instant::now() > deadline {
            break i;
        }
        // While the window still holds writes, retention is the forecast at its rate.
        let forecast = i.ring_capacity_bytes as f64 / i.ingest_bytes_per_sec;
        assert!(
            (i.retention_seconds - forecast).abs() <= forecast * 1e-9,
            "{i:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(i.ingest_frames_per_sec, 0.0, "{i:?}");
    assert_eq!(i.ingest_bytes_per_sec, 0.0, "{i:?}");
    assert_eq!(i.retention_seconds, 0.0, "{i:?}");
    assert!(
        (1.0..10.0).contains(&i.retained_span_seconds),
        "2 s of frames retained: {i:?}"
    );
}

/// A raw HTTP/1.1 exchange: `request` (headers and body), the whole response back.
fn http1(addr: SocketAddr, request: &[u8]) -> String {
    try_http1(addr, request).expect("HTTP/1.1 exchange")
}

/// [`http1`], with a connection that could not be made (or written) as an error.
fn try_http1(addr: SocketAddr, request: &[u8]) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(request)?;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The value of a response header (case-insensitive name), if present.
fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

fn preflight(addr: SocketAddr, origin: &str) -> String {
    http1(
        addr,
        format!(
            "OPTIONS /ringside.v1.Ringside/Subscribe HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type,x-grpc-web,x-user-agent,grpc-timeout,authorization\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
}

fn grpc_web_info(addr: SocketAddr, origin: &str) -> String {
    let mut req = format!(
        "POST /ringside.v1.Ringside/Info HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\nContent-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    req.extend_from_slice(&[0, 0, 0, 0, 0]);
    http1(addr, &req)
}

/// Defect 10: with `--cors-allow-origin` (repeatable), a browser preflight from an
/// allowed origin is answered with the headers grpc-web clients need, and responses
/// expose the gRPC status headers; other origins, and every origin without the flag, get
/// no `Access-Control-Allow-Origin`. Before the fix a preflight got HTTP 400 and no CORS
/// header at all (and the flag did not exist).
#[test]
fn grpc_web_cors_for_allowed_origins() {
    let dir = TempDir::new("cors");
    let sidecar = Sidecar::start(
        &dir,
        &[
            "--cors-allow-origin",
            "https://console.example",
            "--cors-allow-origin",
            "http://localhost:8080",
        ],
    );
    for origin in ["https://console.example", "http://localhost:8080"] {
        let r = preflight(sidecar.addr, origin);
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert_eq!(
            header(&r, "access-control-allow-origin"),
            Some(origin),
            "{r}"
        );
        let allowed = header(&r, "access-control-allow-headers")
            .unwrap_or_default()
            .to_ascii_lowercase();
        for h in [
            "x-grpc-web",
            "grpc-timeout",
            "authorization",
            "content-type",
        ] {
            assert!(allowed.contains(h), "{h} not allowed: {r}");
        }
        assert!(
            header(&r, "access-control-allow-methods")
                .unwrap_or_default()
                .contains("POST"),
            "{r}"
        );
        let r = grpc_web_info(sidecar.addr, origin);
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert_eq!(
            header(&r, "access-control-allow-origin"),
            Some(origin),
            "{r}"
        );
        let exposed = header(&r, "access-control-expose-headers")
            .unwrap_or_default()
            .to_ascii_lowercase();
        for h in ["grpc-status", "grpc-message"] {
            assert!(exposed.contains(h), "{h} not exposed: {r}");
        }
    }
    let r = preflight(sidecar.addr, "https://evil.example");
    assert_eq!(header(&r, "access-control-allow-origin"), None, "{r}");
    // Default: no origin allowed.
    let dir = TempDir::new("nocors");
    let plain = Sidecar::start(&dir, &[]);
    let r = preflight(plain.addr, "https://console.example");
    assert_eq!(header(&r, "access-control-allow-origin"), None, "{r}");
    let r = grpc_web_info(plain.addr, "https://console.example");
    assert_eq!(header(&r, "access-control-allow-origin"), None, "{r}");
}

/// Defect 11: every Prometheus series is there from the start, at 0: lost frames per
/// reason, refusals, reaps, connection counters. Before the fix they appeared only once
/// non-zero, and dashboards showed "no data".
#[test]
fn metrics_series_are_registered_at_start() {
    let dir = TempDir::new("metrics");
    // The exporter's port is picked free here and bound by the sidecar a moment later;
    // another test taking it in between makes the sidecar exit with "cannot start the
    // Prometheus exporter": then pick another, up to three times.
    let mut attempt = 0;
    let (mut sidecar, addr) = loop {
        attempt += 1;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut sidecar = Sidecar::start(&dir, &["--metrics-listen", &addr.to_string()]);
        std::thread::sleep(Duration::from_millis(200));
        match sidecar.child.try_wait() {
            Ok(Some(_))
                if attempt < 3
                    && sidecar
                        .stderr()
                        .contains("cannot start the Prometheus exporter") => {}
            _ => break (sidecar, addr),
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let r = try_http1(
            addr,
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        match r {
            Ok(r) if r.starts_with("HTTP/1.1 200") => break r,
            _ if Instant::now() > deadline => panic!(
                "no metrics on {addr} after 10 s ({r:?}); sidecar alive: {:?}\n{}",
                sidecar.child.try_wait(),
                sidecar.stderr()
            ),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let mut missing = Vec::new();
    for name in ringside_sidecar::metrics::COUNTERS {
        // (The harness's readiness probe has made a connection already.)
        if !body.lines().any(|l| l.starts_with(&format!("{name} "))) {
            missing.push(name.to_string());
        }
    }
    for reason in ["lapped", "abandoned", "corrupt"] {
        let series = format!("ringside_frames_lost_total{{reason=\"{reason}\"}} 0");
        if !body.contains(&series) {
            missing.push(series);
        }
    }
    for name in ringside_sidecar::metrics::GAUGES {
        if !body.lines().any(|l| l.starts_with(&format!("{name} "))) {
            missing.push(name.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "series missing at start: {missing:?}\n{body}"
    );
}

/// Defect 12: reflection answers an unknown symbol with an in-stream error response and
/// keeps the stream open (v1 and v1alpha), and it requires the bearer token when one is
/// set while health does not. Before the fix an unknown symbol ended the whole stream
/// with NOT_FOUND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_errors_stay_in_stream() {
    use tonic_reflection::pb::{v1 as r1, v1alpha as ra};
    let dir = TempDir::new("refl");
    let token = dir.join("token");
    std::fs::write(&token, "tok\n").expect("token");
    let sidecar = Sidecar::start(&dir, &["--auth-token-file", token.to_str().expect("utf8")]);
    let ch = tonic::transport::Endpoint::from_shared(sidecar.endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    fn authed<T>(mut req: tonic::Request<T>) -> tonic::Request<T> {
        req.metadata_mut()
            .insert("authorization", "Bearer tok".parse().expect("header"));
        req
    }

    let requests = vec![
        r1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                r1::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "no.such.Symbol".into(),
                ),
            ),
        },
        r1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                r1::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "ringside.v1.Ringside".into(),
                ),
            ),
        },
    ];
    let mut client = r1::server_reflection_client::ServerReflectionClient::new(ch.clone());
    let err = client
        .server_reflection_info(tonic::codegen::tokio_stream::iter(requests.clone()))
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let mut s = client
        .server_reflection_info(authed(tonic::Request::new(
            tonic::codegen::tokio_stream::iter(requests),
        )))
        .await
        .expect("reflection")
        .into_inner();
    let first = s
        .message()
        .await
        .expect("in-stream answer")
        .expect("a response");
    let Some(r1::server_reflection_response::MessageResponse::ErrorResponse(e)) =
        first.message_response
    else {
        panic!("unknown symbol: {first:?}");
    };
    assert_eq!(e.error_code, Code::NotFound as i32);
    let second = s
        .message()
        .await
        .expect("the stream goes on")
        .expect("a response");
    assert!(
        matches!(
            second.message_response,
            Some(r1::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
        ),
        "{second:?}"
    );
    assert!(s.message().await.expect("clean end").is_none());

    let mut alpha = ra::server_reflection_client::ServerReflectionClient::new(ch.clone());
    let mut s = alpha
        .server_reflection_info(authed(tonic::Request::new(
            tonic::codegen::tokio_stream::iter(vec![ra::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(
                    ra::server_reflection_request::MessageRequest::FileByFilename(
                        "nope.proto".into(),
                    ),
                ),
            }]),
        )))
        .await
        .expect("v1alpha")
        .into_inner();
    let r = s
        .message()
        .await
        .expect("in-stream answer")
        .expect("a response");
    assert!(
        matches!(
            r.message_response,
            Some(ra::server_reflection_response::MessageResponse::ErrorResponse(_))
        ),
        "{r:?}"
    );
    // Health needs no token.
    tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health without a token");
}

/// Defect 13: with `--max-streams-per-connection` (16) Subscribe streams open on one
/// channel, unary calls on that channel still answer, and a 17th Subscribe is refused at
/// once (RESOURCE_EXHAUSTED) instead of queueing. Before the fix even Info hung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_calls_are_not_starved_by_subscribe_streams() {
    let dir = TempDir::new("unary");
    let sidecar = Sidecar::start(&dir, &[]);
    let mut c = client(&sidecar.endpoint()).await;
    let mut streams = Vec::new();
    for _ in 0..16 {
        streams.push(
            c.subscribe(sub_req(Start::Latest(true)))
                .await
                .expect("subscribe")
                .into_inner(),
        );
    }
    let r = tokio::time::timeout(Duration::from_secs(3), c.info(v1::InfoRequest {})).await;
    let i = r
        .expect("Info answered next to 16 Subscribe streams")
        .expect("info");
    assert_eq!(i.into_inner().subscribers_active, 16);
    let r = tokio::time::timeout(
        Duration::from_secs(3),
        c.subscribe(sub_req(Start::Latest(true))),
    )
    .await
    .expect("the 17th Subscribe is answered at once");
    let err = match r {
        Err(e) => e,
        Ok(s) => {
            let mut s = s.into_inner();
            s.message().await.expect_err("refused")
        }
    };
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("--max-streams-per-connection"),
        "{}",
        err.message()
    );
    drop(streams);
}

/// Defect 14: the "sequence in the future" message gives its hint once, and `--help`
/// does not promise a ring size the default flags refuse (the smallest ring that starts
/// with the default max payload is 512 KiB, and the refusal says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_say_it_once_and_right() {
    let dir = TempDir::new("msgs");
    let sidecar = Sidecar::start(&dir, &[]);
    let mut c = client(&sidecar.endpoint()).await;
    let err = c
        .subscribe(sub_req(Start::Sequence(1_000_000)))
        .await
        .expect_err("future");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message().matches("resume from").count(),
        1,
        "{}",
        err.message()
    );
    let help = std::process::Command::new(ringside_bin())
        .args(["serve", "--help"])
        .output()
        .expect("serve --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("512KiB"), "{help}");
    let out = std::process::Command::new(ringside_bin())
        .args(["serve", "--ring-size", "256KiB", "--socket"])
        .arg(dir.join("x.sock"))
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("serve");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ring-size 512KiB"), "{err}");
}

/// Forges the ring's claim word with `ring_hostile`: its sequence 50 back, its position
/// kept, so producers reuse passed sequence numbers.
fn forge_seq_backwards(sidecar: &Sidecar) {
    let out = std::process::Command::new(HOSTILE)
        .args(["forge", "--kind", "seq-backwards", "--socket"])
        .arg(&sidecar.socket)
        .output()
        .expect("ring_hostile forge");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FORGED kind=seq-backwards"), "{text}");
}

/// Issue 11, chaos: after a forged claim word moved the sequence backwards (position
/// kept), `resume_seq` never goes backwards and never names a frame already delivered.
/// Before the fix a batch whose frames were followed by such a stale frame got a
/// `resume_seq` below its own frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_seq_never_goes_backwards_after_a_sequence_rewind() {
    let dir = TempDir::new("rewind");
    let sidecar = Sidecar::start(&dir, &[]);
    run_load(
        &sidecar.socket,
        &["--rate", "0", "--count", "98", "--topics", "1"],
    );
    forge_seq_backwards(&sidecar);
    run_load(
        &sidecar.socket,
        &["--rate", "0", "--count", "100", "--topics", "1"],
    );
    let mut c = client(&sidecar.endpoint()).await;
    let mut req = sub_req(Start::Earliest(true));
    req.max_batch_frames = 4;
    let mut s = c.subscribe(req).await.expect("subscribe").into_inner();
    let (mut last_resume, mut last_frame) = (0u64, None::<u64>);
    let (mut frames, mut lost) = (0u64, 0u64);
    while let Ok(b) = tokio::time::timeout(Duration::from_secs(2), s.message()).await {
        let b = b.expect("ok").expect("open");
        assert!(
            b.resume_seq >= last_resume,
            "resume_seq went back: {last_resume} -> {} ({b:?})",
            b.resume_seq
        );
        for f in &b.frames {
            assert!(
                last_frame.is_none_or(|l| f.seq > l),
                "frame {} after {last_frame:?}",
                f.seq
            );
            last_frame = Some(f.seq);
        }
        if let Some(l) = last_frame {
            assert!(
                b.resume_seq > l,
                "resume_seq {} names a delivered frame ({l})",
                b.resume_seq
            );
        }
        last_resume = b.resume_seq;
        frames += b.frames.len() as u64;
        lost += b.losses.iter().map(|l| l.frames).sum::<u64>();
    }
    // 98 + the 50 fresh frames after the rewind delivered; the 50 rewritten under passed
    // sequence numbers reported lost (corrupt, under their stale sequences).
    assert_eq!((frames, lost), (148, 50));
    assert_eq!(last_resume, 148);
}

/// A stale loss as a stream's very first event: a subscriber waits at `latest` (seq 98)
/// when a forged claim word makes producers reuse sequences 48..=97 (a subscriber that
/// starts after the forgery sees 48 as the next sequence, and is right to). Those 50 frames are
/// reported lost below the first batch's range, which starts where the stream does.
/// Before the fix the first range started at the first stale sequence (48), so it
/// claimed to account for 48..98 while reporting only some of them: a hole no client
/// could explain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_loss_as_the_first_event_lies_below_the_first_range() {
    let dir = TempDir::new("rewind-first");
    let sidecar = Sidecar::start(&dir, &[]);
    run_load(
        &sidecar.socket,
        &["--rate", "0", "--count", "98", "--topics", "1"],
    );
    let mut c = client(&sidecar.endpoint()).await;
    let mut req = sub_req(Start::Latest(true));
    req.max_batch_frames = 4;
    // The reader is positioned (at seq 98) before the call returns, and reads nothing
    // before the load below.
    let mut s = c.subscribe(req).await.expect("subscribe").into_inner();
    forge_seq_backwards(&sidecar);
    run_load(
        &sidecar.socket,
        &["--rate", "0", "--count", "100", "--topics", "1"],
    );
    let (mut frames, mut stale, mut resume) = (0u64, 0u64, None::<u64>);
    while let Ok(b) = tokio::time::timeout(Duration::from_secs(2), s.message()).await {
        let b = b.expect("ok").expect("open");
        assert_eq!(
            b.from_seq,
            resume.unwrap_or(98),
            "the first range starts where the stream does, the next ones where the last ended: {b:?}"
        );
        assert_batch_accounts(&b);
        for l in &b.losses {
            assert!(
                l.first_seq + l.frames <= b.from_seq,
                "a loss under reused sequences lies below its batch's range: {b:?}"
            );
            stale += l.frames;
        }
        frames += b.frames.len() as u64;
        resume = Some(b.resume_seq);
    }
    // The 50 frames under reused sequences reported lost, the 50 fresh ones delivered.
    assert_eq!((frames, stale, resume), (50, 50, Some(148)));
}
