//! Subscriber and connection churn: thousands of Subscribe calls open and
//! close, many past `--max-subscribers`. Limits hold (RESOURCE_EXHAUSTED, never
//! a queue) and the sidecar's RssAnon does not grow with the churn.

use ringside_tests::sidecar as harness;

use harness::*;
use ringside_proto::v1::subscribe_request::Start;
use std::time::Duration;
use tonic::Code;

fn rss_anon(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let l = s
        .lines()
        .find(|l| l.starts_with("RssAnon:"))
        .expect("RssAnon");
    l.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse::<u64>().ok())
        .expect("kB")
        * 1024
}

/// Polls `Info` until no subscriber is active; panics after 10 s (a slot leaked).
async fn wait_all_slots_free(
    c: &mut ringside_proto::v1::ringside_client::RingsideClient<tonic::transport::Channel>,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = c
            .info(ringside_proto::v1::InfoRequest {})
            .await
            .expect("info")
            .into_inner();
        if info.subscribers_active == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} subscriber slot(s) still held 10 s after their streams were dropped",
            info.subscribers_active
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_keeps_limits_and_memory_flat() {
    let dir = TempDir::new("churn");
    let sidecar = Sidecar::start(
        &dir,
        &["--max-subscribers", "4", "--metrics-listen", "127.0.0.1:0"],
    );
    let pid = sidecar.child.id();
    run_load(
        &sidecar.socket,
        &["--rate", "0", "--count", "1000", "--size", "100"],
    );

    let round = |n: usize| {
        let endpoint = sidecar.endpoint();
        async move {
            let (mut ok, mut refused) = (0u64, 0u64);
            for i in 0..n {
                // A new connection every 8 calls, so connections churn too.
                let mut c = client(&endpoint).await;
                let mut held = Vec::new();
                for _ in 0..8 {
                    match c.subscribe(sub_req(Start::Earliest(true))).await {
                        Ok(r) => {
                            let mut s = r.into_inner();
                            if i % 2 == 0 {
                                let _ =
                                    tokio::time::timeout(Duration::from_secs(2), s.message()).await;
                            }
                            ok += 1;
                            held.push(s);
                        }
                        Err(e) => {
                            assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                            refused += 1;
                        }
                    }
                }
                drop(held);
                // The server frees a slot when it sees the stream's reset, which races
                // with the next connection's first call: wait for the slots to come back
                // so that each connection gets exactly `--max-subscribers` streams.
                wait_all_slots_free(&mut c).await;
            }
            (ok, refused)
        }
    };
    let (ok1, refused1) = round(100).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_warmup = rss_anon(pid);
    let (ok2, refused2) = round(400).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_churn = rss_anon(pid);
    println!(
        "churn: {} streams served, {} refused; RssAnon {after_warmup} -> {after_churn}",
        ok1 + ok2,
        refused1 + refused2
    );
    assert!(
        refused1 + refused2 > 0,
        "the 5th concurrent stream must be refused"
    );
    assert_eq!(ok1 + ok2, 2000, "4 streams per connection are served");
    assert_eq!(
        refused1 + refused2,
        2000,
        "4 streams per connection are refused"
    );
    assert!(
        after_churn <= after_warmup + after_warmup / 10 + (1 << 20),
        "RssAnon grew with churn: {after_warmup} -> {after_churn}"
    );
    let mut c = client(&sidecar.endpoint()).await;
    let info = c
        .info(ringside_proto::v1::InfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.subscribers_active, 0, "every slot came back");
}
