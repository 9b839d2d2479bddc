//! The memory test: `ringside serve` inside a cgroup v1 memory group whose
//! hard limit is the sidecar's own computed budget. Producers push more than
//! 100x the ring's capacity through it while subscribers read slowly or not at
//! all. It must not be OOM-killed, its RssAnon must stay below the budget and
//! flat (it does not grow with the data pushed).
//!
//! Skipped, with a message, where a memory cgroup cannot be created (not root,
//! cgroup v2 only, read-only cgroupfs).

use ringside_tests::sidecar as harness;

use harness::*;
use ringside_proto::v1::subscribe_request::Start;
use ringside_tests::memory::{MemCgroup, rss_anon};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const FLAGS: &[&str] = &[
    "--ring-size",
    "4MiB",
    "--max-payload",
    "4KiB",
    "--subscriber-buffer",
    "64KiB",
    "--max-subscribers",
    "12",
    "--max-connections",
    "12",
    "--worker-threads",
    "2",
];
const RING: u64 = 4 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_stays_flat_within_budget_under_100x_ring_with_slow_and_stalled_subscribers() {
    let budget = budget_bytes(FLAGS);
    // A cgroup limit below the budget: serve refuses to start, naming the cgroup.
    let cg = match MemCgroup::create("ringside-memtest", budget / 2) {
        Ok(c) => c,
        Err(why) => {
            println!("SKIP sidecar memory test: no writable cgroup v1 memory controller ({why})");
            return;
        }
    };
    let refused = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg("echo $$ > \"$0/cgroup.procs\" && exec \"$@\"")
        .arg(&cg.0)
        .arg(ringside_bin())
        .arg("serve")
        .args(FLAGS)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--socket",
            "/nonexistent/never-used.sock",
        ])
        .output()
        .expect("run serve in a small cgroup");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "refuses over the cgroup limit: {err}"
    );
    assert!(
        err.contains("cgroup memory limit"),
        "names the cgroup: {err}"
    );
    if let Err(why) = cg.set_limit(budget) {
        println!("SKIP sidecar memory test: {why}");
        return;
    }
    println!("cgroup {} limit = budget = {budget} bytes", cg.0.display());

    let dir = TempDir::new("mem");
    let mut sidecar = Sidecar::start_in(&dir, free_port(), FLAGS, Some(&cg.0));
    let pid = sidecar.child.id();
    assert!(
        cg.read_text("cgroup.procs").contains(&pid.to_string()),
        "serve runs in the cgroup"
    );

    // Subscribers: one fast, four slow, three stalled (never read), each on its own connection.
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..5 {
        let endpoint = sidecar.endpoint();
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            let mut c = client(&endpoint).await;
            let mut s = c
                .subscribe(sub_req(Start::Earliest(true)))
                .await
                .expect("subscribe")
                .into_inner();
            let mut got = Collected::default();
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(500), s.message()).await {
                    Ok(Ok(Some(b))) => got.add(&b),
                    Ok(_) => break,
                    Err(_) => continue,
                }
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            (got.frames.len(), got.lost())
        }));
    }
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut c = client(&sidecar.endpoint()).await;
        let s = c
            .subscribe(sub_req(Start::Earliest(true)))
            .await
            .expect("subscribe")
            .into_inner();
        stalled.push((c, s));
    }

    // Push > 100x the ring through it.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = Arc::clone(&sampling);
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                if let Some(r) = rss_anon(pid) {
                    samples.push(r);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            samples
        })
    };
    let frame = 4000u64;
    let count = 110 * RING / frame;
    let totals = run_load(
        &sidecar.socket,
        &[
            "--rate",
            "0",
            "--size",
            &frame.to_string(),
            "--count",
            &count.to_string(),
            "--topics",
            "4",
            "--duration",
            "600s",
        ],
    );
    assert!(
        totals.sent * frame >= 100 * RING,
        "pushed {} frames",
        totals.sent
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    sampling.store(false, Ordering::Relaxed);
    let samples = sampler.join().expect("sampler");

    assert!(
        matches!(sidecar.child.try_wait(), Ok(None)),
        "serve died (OOM-killed?):\n{}",
        sidecar.stderr()
    );
    let oom_kills: u64 = cg.read("memory.oom_control", Some("oom_kill")).unwrap_or(0);
    assert_eq!(oom_kills, 0, "no OOM kill in the cgroup");

    assert!(samples.len() >= 4, "too few RSS samples: {samples:?}");
    let max = samples.iter().copied().max().unwrap_or(0);
    let half = samples.len() / 2;
    let first_half = samples[..half].iter().copied().max().unwrap_or(0);
    let second_half = samples[half..].iter().copied().max().unwrap_or(0);
    println!(
        "RssAnon: {} samples, first half max {first_half}, second half max {second_half}, budget {budget}, peak cgroup usage {}",
        samples.len(),
        cg.read_text("memory.max_usage_in_bytes").trim()
    );
    assert!(max < budget, "RssAnon {max} exceeds the budget {budget}");
    assert!(
        second_half <= first_half + first_half / 10 + (2 << 20),
        "RssAnon grew with the data: first half max {first_half}, second half max {second_half}"
    );

    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let (frames, lost) = t.await.expect("subscriber task");
        assert!(frames as u64 + lost > 0);
    }
    drop(stalled);
    let status = sidecar.stop();
    assert!(
        status.success(),
        "clean exit: {status}\n{}",
        sidecar.stderr()
    );
}
