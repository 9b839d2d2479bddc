//! End-to-end tests of `ringside serve` with real producer processes
//! (`ringside load`) and real tonic clients over loopback.

use ringside_tests::sidecar as harness;

use harness::*;
use ringside_proto::v1;
use ringside_proto::v1::subscribe_request::Start;
use std::time::Duration;
use tonic::Code;

const IDLE: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_positions_filters_and_resume() {
    let dir = TempDir::new("start");
    let sidecar = Sidecar::start(&dir, &[]);
    let written = run_load(
        &sidecar.socket,
        &[
            "--rate", "0", "--count", "300", "--topics", "3", "--size", "64",
        ],
    );
    assert_eq!(written.sent, 300);
    let mut c = client(&sidecar.endpoint()).await;

    // Earliest: all 300, in order, no loss.
    let all = collect(&mut c, sub_req(Start::Earliest(true)), 300, IDLE)
        .await
        .expect("subscribe");
    assert_exact_accounting(&all, 0, 300);
    assert!(all.losses.is_empty());
    assert!(all.frames.iter().all(|f| f.2 == 64));

    // Sequence: starts exactly there.
    let from = collect(&mut c, sub_req(Start::Sequence(100)), 200, IDLE)
        .await
        .expect("subscribe");
    assert_exact_accounting(&from, 100, 200);

    // Timestamp: the first frame at or after frame 150's time.
    let mut one = c
        .subscribe(sub_req(Start::Sequence(150)))
        .await
        .expect("subscribe")
        .into_inner();
    let b = one.message().await.expect("batch").expect("one batch");
    let ts = b.frames[0].timestamp_ns;
    drop(one);
    let by_time = collect(&mut c, sub_req(Start::TimestampNs(ts)), 1, IDLE)
        .await
        .expect("subscribe");
    assert!(
        by_time.frames[0].0 <= 150,
        "first frame at/after ts: {:?}",
        by_time.frames[0]
    );

    // Latest: nothing old, then exactly the new frames.
    let mut latest = c
        .subscribe(sub_req(Start::Latest(true)))
        .await
        .expect("subscribe")
        .into_inner();
    let more = run_load(
        &sidecar.socket,
        &[
            "--rate", "0", "--count", "50", "--topics", "3", "--size", "8",
        ],
    );
    let mut got = Collected::default();
    while got.frames.len() < 50 {
        let b = tokio::time::timeout(IDLE, latest.message())
            .await
            .expect("frames")
            .expect("ok")
            .expect("batch");
        got.add(&b);
    }
    assert_exact_accounting(&got, 300, more.sent);

    // Filters: exact topic, prefix.
    let mut req = sub_req(Start::Earliest(true));
    req.topics = vec!["load/1".into()];
    let one_topic = collect(&mut c, req, 1000, IDLE).await.expect("subscribe");
    assert!(!one_topic.frames.is_empty());
    assert!(
        one_topic.frames.iter().all(|f| f.1 == "load/1"),
        "only load/1"
    );
    assert!(
        one_topic.losses.is_empty(),
        "filtered frames are not losses"
    );
    let mut req = sub_req(Start::Earliest(true));
    req.topic_prefixes = vec!["load/".into()];
    let prefixed = collect(&mut c, req, 350, IDLE).await.expect("subscribe");
    assert_eq!(prefixed.frames.len(), 350);

    // Resume: stop after some batches, resume from resume_seq: no duplicates, no gap.
    let mut req = sub_req(Start::Earliest(true));
    req.max_batch_frames = 16;
    let first = collect(&mut c, req, 100, IDLE).await.expect("subscribe");
    let resume = first.resume_seq.expect("resume seq");
    let mut req = sub_req(Start::Sequence(resume));
    req.max_batch_frames = 16;
    let rest = collect(&mut c, req, 1000, IDLE).await.expect("subscribe");
    let mut seqs: Vec<u64> = first.frames.iter().map(|f| f.0).collect();
    seqs.extend(rest.frames.iter().map(|f| f.0));
    assert_eq!(
        seqs,
        (0..350).collect::<Vec<_>>(),
        "resume gives every frame exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_statuses() {
    let dir = TempDir::new("bad");
    let sidecar = Sidecar::start(&dir, &["--max-subscribers", "2"]);
    run_load(&sidecar.socket, &["--rate", "0", "--count", "10"]);
    let mut c = client(&sidecar.endpoint()).await;

    let mut req = sub_req(Start::Earliest(true));
    req.topics = (0..65).map(|i| format!("t{i}")).collect();
    let err = c.subscribe(req).await.expect_err("too many topics");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("at most 64"), "{}", err.message());

    let mut req = sub_req(Start::Earliest(true));
    req.topic_prefixes = vec![String::new()];
    assert_eq!(
        c.subscribe(req).await.expect_err("empty prefix").code(),
        Code::InvalidArgument
    );

    let err = c
        .subscribe(sub_req(Start::Sequence(1_000_000)))
        .await
        .expect_err("future seq");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

    // A request over --max-request (16KiB).
    let mut req = sub_req(Start::Earliest(true));
    req.topics = (0..64).map(|i| format!("{i:0>255}")).collect();
    let err = c.subscribe(req).await.expect_err("huge request");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    // --max-subscribers 2: the third stream is refused while two are open.
    let s1 = c
        .subscribe(sub_req(Start::Latest(true)))
        .await
        .expect("first")
        .into_inner();
    let s2 = c
        .subscribe(sub_req(Start::Latest(true)))
        .await
        .expect("second")
        .into_inner();
    let err = c
        .subscribe(sub_req(Start::Latest(true)))
        .await
        .expect_err("third");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("--max-subscribers"),
        "{}",
        err.message()
    );
    drop((s1, s2));
    // Slots come back once the streams are gone.
    let mut ok = false;
    for _ in 0..100 {
        if c.subscribe(sub_req(Start::Latest(true))).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "slots are released when streams end");

    // A header flood (32 KiB of metadata, over the 16 KiB header list limit)
    // is refused without harm.
    let mut req = tonic::Request::new(v1::InfoRequest {});
    let big = "x".repeat(32 * 1024);
    req.metadata_mut()
        .insert("x-flood", big.parse().expect("header value"));
    let mut flood_client = client(&sidecar.endpoint()).await;
    assert!(
        flood_client.info(req).await.is_err(),
        "oversized headers are refused"
    );

    let info = c.info(v1::InfoRequest {}).await.expect("info").into_inner();
    assert_eq!(info.subscribers_max, 2);
    assert!(info.subscribers_refused >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_refused_with_resource_exhausted() {
    let dir = TempDir::new("conns");
    let sidecar = Sidecar::start(&dir, &["--max-connections", "1"]);
    // The harness's readiness probe held the only slot for a moment; wait
    // until it is free again.
    let mut first = None;
    for _ in 0..100 {
        let mut c = client(&sidecar.endpoint()).await;
        if c.info(v1::InfoRequest {}).await.is_ok() {
            first = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut first = first.expect("first connection works");
    // The second connection is answered RESOURCE_EXHAUSTED, then closed.
    let mut second = client(&sidecar.endpoint()).await;
    let err = second
        .info(v1::InfoRequest {})
        .await
        .expect_err("past --max-connections");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("--max-connections 1"),
        "{}",
        err.message()
    );
    let err = second
        .subscribe(sub_req(Start::Latest(true)))
        .await
        .expect_err("past --max-connections");
    assert!(
        matches!(
            err.code(),
            Code::ResourceExhausted | Code::Unavailable | Code::Unknown
        ),
        "{err:?}"
    );
    first
        .info(v1::InfoRequest {})
        .await
        .expect("the admitted connection still works");
}

#[test]
fn refuses_to_start_over_budget_and_prints_the_table() {
    let dir = TempDir::new("budget");
    let out = std::process::Command::new(ringside_bin())
        .args(["serve", "--memory-limit", "32MiB", "--socket"])
        .arg(dir.join("s.sock"))
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("run serve");
    assert_eq!(out.status.code(), Some(2), "exit code 2 over budget");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("memory budget") && err.contains("total"),
        "table printed: {err}"
    );
    assert!(err.contains("refusing to start"), "{err}");
    assert!(
        err.contains("--ring-size") || err.contains("--max-subscribers"),
        "says what to change: {err}"
    );
    assert!(!dir.join("s.sock").exists(), "nothing was started");

    let out = std::process::Command::new(ringside_bin())
        .args(["serve", "--print-budget", "--max-subscribers", "8"])
        .output()
        .expect("run serve --print-budget");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("subscribers") && text.contains("retention"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_token_is_required_when_configured() {
    let dir = TempDir::new("auth");
    let token = dir.join("token");
    std::fs::write(&token, "s3cret-token\n").expect("token file");
    let sidecar = Sidecar::start(&dir, &["--auth-token-file", token.to_str().expect("utf8")]);
    let mut c = client(&sidecar.endpoint()).await;
    let err = c.info(v1::InfoRequest {}).await.expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = c
        .subscribe(sub_req(Start::Latest(true)))
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut req = tonic::Request::new(v1::InfoRequest {});
    req.metadata_mut()
        .insert("authorization", "Bearer wrong".parse().expect("header"));
    assert_eq!(
        c.info(req).await.expect_err("bad token").code(),
        Code::Unauthenticated
    );
    let mut req = tonic::Request::new(v1::InfoRequest {});
    req.metadata_mut().insert(
        "authorization",
        "Bearer s3cret-token".parse().expect("header"),
    );
    c.info(req).await.expect("right token");
    let mut req = tonic::Request::new(sub_req(Start::Latest(true)));
    req.metadata_mut().insert(
        "authorization",
        "Bearer s3cret-token".parse().expect("header"),
    );
    c.subscribe(req).await.expect("subscribe with token");
    // Health stays open for probes.
    let ch = tonic::transport::Endpoint::from_shared(sidecar.endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
    h.check(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    })
    .await
    .expect("health without token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_grpc_web_answer() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let dir = TempDir::new("std");
    let sidecar = Sidecar::start(&dir, &[]);
    let ch = tonic::transport::Endpoint::from_shared(sidecar.endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");

    let mut h = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let resp = h
        .check(tonic_health::pb::HealthCheckRequest {
            service: ringside_proto::SERVICE_NAME.into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        resp.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let mut r = ServerReflectionClient::new(ch);
    let req = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = r
        .server_reflection_info(tonic::codegen::tokio_stream::once(req))
        .await
        .expect("reflection")
        .into_inner();
    let resp = stream.message().await.expect("ok").expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer {resp:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&ringside_proto::SERVICE_NAME), "{names:?}");

    // grpc-web over HTTP/1.1: Info with an empty InfoRequest.
    let body = [0u8, 0, 0, 0, 0];
    let request = format!(
        "POST /ringside.v1.Ringside/Info HTTP/1.1\r\nHost: {}\r\nContent-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        sidecar.addr,
        body.len()
    );
    let addr = sidecar.addr;
    let response = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(request.as_bytes()).expect("write");
        s.write_all(&body).expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    })
    .await
    .expect("grpc-web request");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: application/grpc-web"),
        "{text}"
    );
    assert!(
        text.contains("grpc-status:0") || text.contains("grpc-status: 0"),
        "trailers in body: {text}"
    );

    // grpc-web Subscribe (the hand-encoded stream body through tonic-web).
    run_load(
        &sidecar.socket,
        &["--rate", "0", "--count", "3", "--size", "5"],
    );
    let sub_body = [0u8, 0, 0, 0, 2, 0x08, 0x01]; // SubscribeRequest { earliest: true }
    let request = format!(
        "POST /ringside.v1.Ringside/Subscribe HTTP/1.1\r\nHost: {}\r\nContent-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nContent-Length: {}\r\n\r\n",
        sidecar.addr,
        sub_body.len()
    );
    let response = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        s.write_all(request.as_bytes()).expect("write");
        s.write_all(&sub_body).expect("write");
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // The stream stays open; read until the three frames are in or the timeout.
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&out).contains("load/2") {
                break;
            }
        }
        out
    })
    .await
    .expect("grpc-web subscribe");
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for t in ["load/0", "load/1", "load/2"] {
        assert!(text.contains(t), "frame {t} in the grpc-web stream: {text}");
    }
}

/// The value of one counter on the sidecar's Prometheus endpoint.
fn counter(metrics: &str, name: &str) -> f64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(metrics).expect("metrics port");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing:\n{body}"))
}

/// Unfiltered subscribers reading the same frames from the same place on their own
/// connections share validated chunks (crate::share): each still gets every frame exactly
/// once, in order, with exact accounting, and the sidecar sent some batches from chunks.
/// A filtered subscriber alongside them gets exactly its topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_unfiltered_subscribers_share_validated_chunks() {
    let dir = TempDir::new("share");
    let metrics = format!("127.0.0.1:{}", free_port());
    let sidecar = Sidecar::start(&dir, &["--metrics-listen", &metrics]);
    let written = run_load(
        &sidecar.socket,
        &[
            "--rate", "0", "--count", "20000", "--topics", "3", "--size", "64",
        ],
    );
    assert_eq!(written.sent, 20000);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let ep = sidecar.endpoint();
        tasks.push(tokio::spawn(async move {
            let mut c = client(&ep).await;
            let mut req = sub_req(Start::Earliest(true));
            if i == 5 {
                req.topics = vec!["load/2".into()];
            }
            collect(&mut c, req, 20000, IDLE).await.expect("subscribe")
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.expect("subscriber task"));
    }
    for c in &got[..5] {
        assert_exact_accounting(c, 0, 20000);
        assert!(c.losses.is_empty());
        assert!(c.frames.iter().all(|f| f.2 == 64));
    }
    let filtered = &got[5];
    assert!(filtered.frames.iter().all(|f| f.1 == "load/2"));
    assert!(filtered.frames.len() > 6000, "{}", filtered.frames.len());
    let shared = counter(&metrics, "ringside_shared_batches_total");
    assert!(shared > 0.0, "no batch came from a shared chunk");
}
