//! Faulty and hostile producers against the real sidecar: a producer killed
//! between claim and commit is reported as ABANDONED to subscribers; random
//! bytes written over the ring never crash the sidecar or reach a subscriber
//! as a frame with a non-UTF-8 topic, and service continues.

use ringside_tests::sidecar as harness;

use harness::*;
use ringside_proto::v1;
use ringside_proto::v1::subscribe_request::Start;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn wait_line(child: &mut std::process::Child, want: &str) {
    let out = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match lines.next() {
            Some(Ok(l)) if l.starts_with(want) => return,
            Some(Ok(_)) => continue,
            _ => break,
        }
    }
    panic!("producer never printed {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_killed_mid_frame_is_reported_abandoned() {
    let dir = TempDir::new("abandon");
    let sidecar = Sidecar::start(&dir, &["--stall-timeout", "100ms"]);
    let mut parked = Command::new(env!("CARGO_BIN_EXE_ring_producer"))
        .arg("--socket")
        .arg(&sidecar.socket)
        .args(["--index", "1", "--park-after", "10"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn ring_producer");
    wait_line(&mut parked, "PARKED");
    signal(&parked, libc::SIGKILL);
    let _ = parked.wait();
    let more = run_load(
        &sidecar.socket,
        &["--rate", "0", "--count", "20", "--size", "16"],
    );
    assert_eq!(more.sent, 20);

    let mut c = client(&sidecar.endpoint()).await;
    let got = collect(
        &mut c,
        sub_req(Start::Earliest(true)),
        30,
        Duration::from_secs(3),
    )
    .await
    .expect("subscribe");
    assert_exact_accounting(&got, 0, 31);
    assert_eq!(
        got.losses,
        vec![(v1::LossReason::Abandoned as i32, 1, 10)],
        "one abandoned frame at seq 10"
    );
    let info = c.info(v1::InfoRequest {}).await.expect("info").into_inner();
    assert!(info.lost_abandoned >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_over_the_ring_does_not_hurt_the_sidecar() {
    let dir = TempDir::new("garbage");
    let sidecar = Sidecar::start(&dir, &["--ring-size", "256KiB", "--max-payload", "4KiB"]);
    run_load(
        &sidecar.socket,
        &["--rate", "0", "--count", "2000", "--size", "32"],
    );
    let mut c = client(&sidecar.endpoint()).await;
    let mut live = c
        .subscribe(sub_req(Start::Earliest(true)))
        .await
        .expect("subscribe")
        .into_inner();

    for seed in 1..=3 {
        let out = Command::new(env!("CARGO_BIN_EXE_ring_hostile"))
            .arg("garbage")
            .arg("--socket")
            .arg(&sidecar.socket)
            .args(["--seed", &seed.to_string(), "--passes", "2"])
            .output()
            .expect("run ring_hostile");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Valid frames written after the garbage are still served.
    let after = run_load(
        &sidecar.socket,
        &[
            "--rate", "0", "--count", "100", "--size", "32", "--topics", "1",
        ],
    );
    assert_eq!(after.sent, 100);
    let mut got = Collected::default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !got.frames.iter().any(|f| f.0 >= 2000) {
        match tokio::time::timeout(Duration::from_secs(2), live.message()).await {
            Ok(Ok(Some(b))) => got.add(&b),
            _ => break,
        }
    }
    for f in &got.frames {
        assert!(
            f.1.starts_with("load/"),
            "no garbage frame delivered: {f:?}"
        );
        assert_eq!(f.2, 32);
    }
    // A fresh subscriber from the end gets the new frames; the sidecar is alive.
    let info = c
        .info(v1::InfoRequest {})
        .await
        .expect("sidecar still answers")
        .into_inner();
    assert!(info.next_seq >= 2100, "{info:?}");
    let tail = collect(
        &mut c,
        sub_req(Start::Sequence(info.next_seq - 100)),
        100,
        Duration::from_secs(3),
    )
    .await
    .expect("subscribe");
    assert_eq!(tail.frames.len(), 100, "{:?}", tail.losses);
}
