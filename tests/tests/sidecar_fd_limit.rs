//! File descriptors in the admission check: `serve` raises RLIMIT_NOFILE's soft limit
//! to the hard limit and logs it, keeps descriptors for producers and itself, and
//! refuses connections past what the rest allows with RESOURCE_EXHAUSTED naming
//! RLIMIT_NOFILE (instead of failing `accept` with EMFILE and leaving clients hanging);
//! with no room for any connection it refuses to start.

use ringside_proto::v1::InfoRequest;
use ringside_proto::v1::subscribe_request::Start;
use ringside_sidecar::limits::connections_fds_allow;
use ringside_tests::sidecar::*;
use std::process::Command;
use std::time::Duration;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_descriptor_limit_are_refused_by_name() {
    let dir = TempDir::new("fdlimit");
    // Soft 100, hard 128: serve raises to 128; with 2 producers that leaves room for
    // connections_fds_allow(128, 2) connections, far below --max-connections 1000.
    let allow = connections_fds_allow(128, 2) as usize;
    assert!(allow >= 4, "the test needs a few connections: {allow}");
    let mut sidecar = Sidecar::start_with_nofile(
        &dir,
        free_port(),
        &[
            "--max-producers",
            "2",
            "--max-connections",
            "1000",
            "--max-subscribers",
            "1000",
        ],
        100,
        128,
    );
    let log = std::fs::read_to_string(&sidecar.log).expect("log");
    assert!(
        log.contains("RLIMIT_NOFILE 128 (raised from 100, hard 128)"),
        "the raise is logged: {log}"
    );
    assert!(
        log.contains(&format!("connections past {allow} are refused")),
        "the lowered connection limit is logged: {log}"
    );
    // `allow` connections, each holding a Subscribe stream.
    let mut held = Vec::new();
    for i in 0..allow {
        let mut c = client(&sidecar.endpoint()).await;
        let stream = c
            .subscribe(sub_req(Start::Latest(true)))
            .await
            .unwrap_or_else(|e| panic!("connection {i} of {allow} refused: {e:?}"));
        held.push((c, stream.into_inner()));
    }
    // One more: refused with a message that says why, not hanging on EMFILE.
    let mut extra = client(&sidecar.endpoint()).await;
    let err = tokio::time::timeout(Duration::from_secs(5), extra.info(InfoRequest {}))
        .await
        .expect("answered, not left hanging")
        .expect_err("over the descriptor limit");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("RLIMIT_NOFILE 128")
            && err.message().contains(&format!("at most {allow}")),
        "{}",
        err.message()
    );
    drop(extra);
    // Room again once one is closed.
    held.pop();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = client(&sidecar.endpoint()).await;
        match c.info(InfoRequest {}).await {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert!(
                    std::time::Instant::now() < deadline,
                    "no room after closing one: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    drop(held);
    sidecar.stop();
}

#[test]
fn no_room_for_any_connection_refuses_to_start() {
    let dir = TempDir::new("fdlimit-start");
    // 64 descriptors, 64 producers: nothing left for connections.
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg("ulimit -Sn 64 && ulimit -Hn 64 && exec \"$@\"")
        .arg("sh")
        .arg(ringside_bin())
        .args(["serve", "--max-producers", "64", "--listen", "127.0.0.1:0"])
        .arg("--socket")
        .arg(dir.join("r.sock"))
        .output()
        .expect("run serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("RLIMIT_NOFILE 64") && err.contains("leaves none for gRPC connections"),
        "{err}"
    );
    assert!(
        !dir.join("r.sock").exists(),
        "refused before the ring started"
    );
}
