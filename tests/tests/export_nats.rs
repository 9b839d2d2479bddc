//! `ringside export` against a real nats-server (JetStream), with real
//! `ringside serve` and `ringside load` processes. Each test starts its own
//! server on a free loopback port with a temporary store and stops it.
//!
//! Needs the Debian package `nats-server`: without it a test skips, naming the
//! package, or fails when `RINGSIDE_REQUIRE_TOOLS` is set (as in `.ci/run`).

use async_nats::jetstream;
use ringside_tests::chaos_support::{Rng, seed_from_env};
use ringside_tests::memory::rss_anon;
use ringside_tests::nats::{
    Exporter, HoldingProxy, NatsServer, edit_stream, export_budget, export_once, load_sent, rt,
    scrape, server_or_skip, tail, wait_published_frames, wait_stream,
};
use ringside_tests::sidecar::{Sidecar, TempDir, free_port, spawn_load};
use std::time::{Duration, Instant};

const STREAM: &str = "TELEMETRY";

/// Sidecar flags of the tests that expect no loss: a ring that cannot lap, and a stall
/// bound far above any scheduling delay. With the default 100 ms, a producer descheduled
/// between claim and commit on a loaded machine has its frame skipped as `abandoned`,
/// a correctly reported loss but not what these tests are about (a CI run saw one).
const NO_LOSS: [&str; 4] = ["--ring-size", "64MiB", "--stall-timeout", "10s"];

/// Every sequence once, end to end, in frame mode and in batch mode; the
/// metrics are all there from the start; `tail --nats-url` prints what the
/// gRPC tail prints.
#[test]
fn known_count_end_to_end() {
    let Some(bin) = server_or_skip() else { return };
    for batch in [false, true] {
        let dir = TempDir::new("e2e");
        let nats = NatsServer::start(&bin, &dir, &[]);
        let sidecar = Sidecar::start(&dir, &NO_LOSS);
        let metrics_port = free_port();
        let metrics = format!("127.0.0.1:{metrics_port}");
        let prefix = "tel.host1";
        let mut extra = vec!["--create-stream", "--metrics-listen", &metrics];
        if batch {
            extra.push("--batch");
        }
        let mut exporter = Exporter::start(&dir, &sidecar, &nats, STREAM, prefix, &extra);
        // Every series is present before anything happened.
        let text = scrape(&metrics);
        for series in [
            "ringside_export_published_records_total 0",
            "ringside_export_acked_frames_total 0",
            "ringside_export_deduplicated_total 0",
            "ringside_export_lost_frames_total{reason=\"lapped\"} 0",
            "ringside_export_lost_frames_total{reason=\"abandoned\"} 0",
            "ringside_export_lost_frames_total{reason=\"corrupt\"} 0",
            "ringside_export_lost_frames_total{reason=\"rejected\"} 0",
            "ringside_export_lag_frames",
            "ringside_export_in_flight_bytes",
            "ringside_export_memory_budget_bytes",
        ] {
            assert!(
                text.contains(series),
                "`{series}` missing at start:\n{text}"
            );
        }
        let total = load_sent(spawn_load(
            &sidecar.socket,
            &[
                "--rate",
                "20000",
                "--count",
                "20000",
                "--size",
                "200",
                "--duration",
                "30s",
            ],
        ));
        assert_eq!(total, 20000);
        let raw = wait_stream(&nats.url(), STREAM, prefix, Duration::from_secs(60), |r| {
            r.frame_count() >= total
        });
        assert_eq!(
            raw.assert_exactly_once(0, total),
            0,
            "nothing may be lost with a 64 MiB ring: {:?}",
            raw.losses
        );
        let text = scrape(&metrics);
        assert!(
            text.contains("ringside_export_acked_frames_total 20000"),
            "{text}"
        );
        let status = exporter.stop();
        assert!(
            status.success(),
            "exporter exit {status}:\n{}",
            exporter.stderr()
        );
        assert!(
            exporter.stderr().contains("export memory budget"),
            "budget printed at start"
        );

        // Reading back: the same lines as the gRPC tail, every frame once.
        let url = nats.url();
        let (nats_out, nats_err) = tail(&[
            "--nats-url",
            &url,
            "--stream",
            STREAM,
            "--subject-prefix",
            prefix,
            "--from",
            "earliest",
            "--idle-exit",
            "2s",
        ]);
        let endpoint = sidecar.endpoint();
        let (grpc_out, _) = tail(&[
            "--endpoint",
            &endpoint,
            "--from",
            "earliest",
            "--idle-exit",
            "1s",
        ]);
        assert_eq!(nats_out.lines().count(), 20000, "{nats_err}");
        assert!(
            nats_out == grpc_out,
            "tail --nats-url and the gRPC tail differ (batch={batch})"
        );
        assert!(
            nats_err.contains("0 sequence numbers duplicated (dropped), 0 late, 0 unreported"),
            "{nats_err}"
        );
    }
}

/// kill -9 of the exporter at random moments under load, again and again;
/// after the last restart the stream holds every sequence exactly once.
///
/// Every other kill happens while nats-server is paused (SIGSTOP), and the next
/// exporter starts before it continues: the killed exporter's last records are
/// then still unread in the server's socket when its successor asks where to
/// resume, as on a loaded machine. Before the successor waited for the old
/// connection to be gone (`export/src/presence.rs`), it could resume from a
/// record that was no longer the last one and publish batches overlapping the
/// late ones (seen in CI: seqs 38966-38975 twice in batch mode).
#[test]
fn kill9_exporter_repeatedly_then_resume() {
    let Some(bin) = server_or_skip() else { return };
    for batch in [false, true] {
        let dir = TempDir::new("kill9");
        let nats = NatsServer::start(&bin, &dir, &[]);
        let sidecar = Sidecar::start(&dir, &NO_LOSS);
        let prefix = "tel.kill";
        let mut flags = vec!["--create-stream", "--quiet"];
        if batch {
            flags.push("--batch");
        }
        let seed = seed_from_env();
        println!("seed {seed} (RINGSIDE_CHAOS_SEED={seed} repeats the kill times)");
        let mut rng = Rng::new(seed);
        let load = spawn_load(
            &sidecar.socket,
            &["--rate", "15000", "--duration", "7s", "--size", "256"],
        );
        let (mut kills, mut paused_kills, mut resumed) = (0, 0, 0);
        let started = Instant::now();
        let mut ex = Exporter::start(&dir, &sidecar, &nats, STREAM, prefix, &flags);
        while started.elapsed() < Duration::from_secs(6) {
            std::thread::sleep(rng.millis(150, 900));
            let pause = kills % 2 == 1;
            if pause {
                nats.pause();
                std::thread::sleep(rng.millis(10, 100));
            }
            ex.kill9();
            kills += 1;
            let log = ex.stderr();
            if log.contains("resuming after the last record") {
                resumed += 1;
            }
            // Where each run started and what went wrong in it, printed if the test fails.
            for line in log
                .lines()
                .filter(|l| l.contains("resuming") || l.contains("WARN") || l.contains("ERROR"))
            {
                println!("run {kills}: {line}");
            }
            ex = Exporter::start(&dir, &sidecar, &nats, STREAM, prefix, &flags);
            if pause {
                paused_kills += 1;
                std::thread::sleep(rng.millis(50, 300));
                nats.resume();
            }
        }
        let total = load_sent(load);
        let raw = wait_stream(&nats.url(), STREAM, prefix, Duration::from_secs(90), |r| {
            r.frame_count() + r.lost() >= total
        });
        assert!(ex.running(), "final exporter died:\n{}", ex.stderr());
        let status = ex.stop();
        assert!(status.success(), "{}", ex.stderr());
        println!(
            "batch={batch}: {kills} kills ({paused_kills} with nats-server paused, {resumed} runs resumed), {} messages, {} frames, {} lost of {total}",
            raw.messages,
            raw.frame_count(),
            raw.lost()
        );
        assert!(kills >= 4, "only {kills} kills");
        assert!(resumed >= 1, "no run resumed from the stream");
        assert_eq!(
            raw.assert_exactly_once(0, total),
            0,
            "nothing may be lost with a 64 MiB ring: {:?}",
            raw.losses
        );
    }
}

/// The records a killed exporter sent but the server had not read yet (held back by
/// a proxy, as a loaded server's socket buffer would) reach the stream only after its
/// successor started. The successor must not read where to resume before they are in:
/// it waits until the dead exporter's connection is gone. Resuming at once, it
/// published batches overlapping the late ones (other boundaries, other message ids).
#[test]
fn killed_exporter_records_arriving_late() {
    let Some(bin) = server_or_skip() else { return };
    let dir = TempDir::new("late");
    let nats = NatsServer::start(&bin, &dir, &[]);
    let proxy = HoldingProxy::start(nats.port);
    let sidecar = Sidecar::start(&dir, &NO_LOSS);
    let prefix = "tel.late";
    let flags = ["--create-stream", "--quiet", "--batch"];
    let load = spawn_load(
        &sidecar.socket,
        &["--rate", "4000", "--duration", "6s", "--size", "256"],
    );
    let mut first = Exporter::start_url(&dir, &sidecar, &proxy.url(), STREAM, prefix, &flags);
    first.wait_log("exporting");
    std::thread::sleep(Duration::from_millis(1000));
    proxy.hold();
    let deadline = Instant::now() + Duration::from_secs(10);
    while proxy.held_bytes() < 8192 {
        assert!(Instant::now() < deadline, "the exporter published nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill9();
    let mut second = Exporter::start(&dir, &sidecar, &nats, STREAM, prefix, &flags);
    // Time to read the stream's state and publish, had it not waited.
    std::thread::sleep(Duration::from_millis(1500));
    proxy.release();
    let total = load_sent(load);
    let raw = wait_stream(&nats.url(), STREAM, prefix, Duration::from_secs(60), |r| {
        r.frame_count() + r.lost() >= total
    });
    assert!(second.stop().success(), "{}", second.stderr());
    assert_eq!(raw.assert_exactly_once(0, total), 0);
    assert!(
        second.stderr().contains("is still held"),
        "the second exporter did not wait for the first one's connection:\n{}",
        second.stderr()
    );
}

/// What [`refused_record_then_restart`] leaves the first exporter to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterRefusal {
    /// It reads back, publishes the refused record again after the later ones (a late
    /// fill: refused again, it becomes a `rejected` loss) and is then killed.
    LateFill,
    /// It is killed before it learns of the refusal: the later records are stored,
    /// the refused one is not (a hole below stored records).
    Hole,
}

/// A record JetStream refuses while the records after it are stored, the exporter
/// killed, and a new one started after the stream's duplicate window: the stream's
/// last record is then not the one reaching furthest (late fill), or records are
/// stored above a sequence no record accounts for (hole). The new exporter must
/// resume from the resume point written on the records, not after the last one:
/// resuming after the last record published the later frames a second time (late
/// fill), or left the refused frame an unreported gap (hole).
///
/// Deterministic: nats-server is paused while the exporter publishes the big frame
/// (refused: the stream's max_msg_size was lowered) and the small ones after it, so
/// that all reach the server before any acknowledgement; for the hole, the exporter
/// is frozen before the server continues.
fn refused_record_then_restart(batch: bool, after: AfterRefusal) {
    use async_nats::jetstream::stream;
    let Some(bin) = server_or_skip() else { return };
    let dir = TempDir::new("refused");
    let nats = NatsServer::start(&bin, &dir, &[]);
    let sidecar = Sidecar::start(&dir, &NO_LOSS);
    let prefix = "tel.refused";
    let url = nats.url();
    rt().block_on(async {
        let js = jetstream::new(async_nats::connect(&url).await.expect("connect"));
        js.create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec![format!("{prefix}.>")],
            // Short, so that a copy published again after it would be stored again.
            duplicate_window: Duration::from_secs(4),
            ..Default::default()
        })
        .await
        .expect("create the stream");
    });
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut flags = vec![
        "--quiet",
        "--ack-timeout",
        "2s",
        "--read-batch",
        "4KiB",
        "--metrics-listen",
        &metrics,
    ];
    if batch {
        flags.push("--batch");
    }
    let producer = ringside_client::Producer::connect(&sidecar.socket).expect("producer");
    assert!(
        producer.wait_connected(Duration::from_secs(10)),
        "producer not admitted"
    );
    let send = |n: usize, size: usize| {
        for _ in 0..n {
            producer.send("t", &vec![7u8; size]).expect("send");
        }
    };
    let mut first = Exporter::start(&dir, &sidecar, &nats, STREAM, prefix, &flags);
    first.wait_log("exporting");
    send(10, 16);
    let raw = wait_stream(&url, STREAM, prefix, Duration::from_secs(30), |r| {
        r.frame_count() >= 10
    });
    assert_eq!(raw.frame_count(), 10);
    edit_stream(&url, STREAM, |c| c.max_message_size = 2048);
    nats.pause();
    send(1, 3000); // seq 10: refused, larger than max_msg_size
    wait_published_frames(&metrics, 11).unwrap_or_else(|e| panic!("{e}:\n{}", first.stderr()));
    send(5, 16); // seqs 11..16: stored
    wait_published_frames(&metrics, 16).unwrap_or_else(|e| panic!("{e}:\n{}", first.stderr()));
    // Let the client's connection task write them to the (paused) server's socket.
    std::thread::sleep(Duration::from_millis(500));
    if after == AfterRefusal::Hole {
        first.pause();
    }
    nats.resume();
    let raw = wait_stream(&url, STREAM, prefix, Duration::from_secs(30), |r| {
        let later = r
            .frames
            .values()
            .flat_map(|m| m.keys())
            .filter(|&&s| s > 10)
            .count();
        match after {
            AfterRefusal::LateFill => later >= 5 && r.lost_for("rejected") == 1,
            AfterRefusal::Hole => later >= 5,
        }
    });
    first.kill9();
    let later: Vec<u64> = raw
        .frames
        .values()
        .flat_map(|m| m.keys())
        .copied()
        .collect();
    assert_eq!(
        later,
        (0..16).filter(|&s| s != 10).collect::<Vec<_>>(),
        "the frames after the refused one are stored, the refused one is not:\n{}",
        first.stderr()
    );
    match after {
        AfterRefusal::LateFill => {
            let last = raw.records.last().expect("records");
            assert_eq!(
                (last.kind.as_str(), last.range),
                ("_loss", (10, 11)),
                "the refused frame, published again as a loss, is the last record"
            );
        }
        AfterRefusal::Hole => {
            assert_eq!(raw.lost(), 0, "the exporter never learned of the refusal");
        }
    }
    // The stream takes big frames again (an exporter refuses to start on a stream whose
    // max_msg_size is below its largest record); for the hole, the new exporter fills it.
    edit_stream(&url, STREAM, |c| c.max_message_size = -1);
    // Past the duplicate window, a record published again is stored again.
    std::thread::sleep(Duration::from_millis(4500));
    let mut second = Exporter::start(&dir, &sidecar, &nats, STREAM, prefix, &flags);
    second.wait_log("exporting");
    send(5, 16); // seqs 16..21
    let total = 21;
    let raw = wait_stream(&url, STREAM, prefix, Duration::from_secs(30), |r| {
        r.frame_count() + r.lost() >= total
    });
    assert!(second.stop().success(), "{}", second.stderr());
    let lost = raw.assert_exactly_once(0, total);
    let expect_lost = match after {
        AfterRefusal::LateFill => 1,
        AfterRefusal::Hole => 0,
    };
    assert_eq!(lost, expect_lost, "{:?}", raw.losses);
    assert!(
        second.stderr().contains("from its resume point"),
        "{}",
        second.stderr()
    );
}

#[test]
fn late_fill_then_restart_frames() {
    refused_record_then_restart(false, AfterRefusal::LateFill);
}

#[test]
fn late_fill_then_restart_batches() {
    refused_record_then_restart(true, AfterRefusal::LateFill);
}

#[test]
fn hole_then_restart_frames() {
    refused_record_then_restart(false, AfterRefusal::Hole);
}

#[test]
fn hole_then_restart_batches() {
    refused_record_then_restart(true, AfterRefusal::Hole);
}

/// A second exporter on a prefix that one already exports waits for it
/// (`--takeover-wait`), then refuses to start, naming it; once the first is
/// gone, it starts.
#[test]
fn second_exporter_on_a_prefix_is_refused() {
    let Some(bin) = server_or_skip() else { return };
    let dir = TempDir::new("twice");
    let nats = NatsServer::start(&bin, &dir, &[]);
    let sidecar = Sidecar::start(&dir, &["--ring-size", "1MiB"]);
    let mut first = Exporter::start(
        &dir,
        &sidecar,
        &nats,
        STREAM,
        "tel.twice",
        &["--create-stream", "--quiet"],
    );
    first.wait_log("exporting");
    let (status, err) = export_once(
        &sidecar,
        &nats.url(),
        STREAM,
        "tel.twice",
        &["--takeover-wait", "1s"],
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("another `ringside export` is publishing under --subject-prefix tel.twice")
            && err.contains(&format!("\"pid\":{}", first.pid())),
        "{err}"
    );
    // Another prefix is fine meanwhile.
    let mut other = Exporter::start(
        &dir,
        &sidecar,
        &nats,
        "OTHER",
        "tel.other",
        &["--create-stream", "--quiet"],
    );
    other.wait_log("exporting");
    assert!(other.stop().success(), "{}", other.stderr());
    assert!(first.stop().success(), "{}", first.stderr());
    let mut again = Exporter::start(&dir, &sidecar, &nats, STREAM, "tel.twice", &["--quiet"]);
    again.wait_log("exporting");
    assert!(again.stop().success(), "{}", again.stderr());
}

/// nats-server killed for 10 s under load, then started again on the same
/// store: the ring laps the exporter, the loss is in the stream, every
/// sequence is accounted once, and the exporter's memory stays flat.
#[test]
fn nats_down_10s_under_load() {
    let Some(bin) = server_or_skip() else { return };
    let dir = TempDir::new("natsdown");
    let mut nats = NatsServer::start(&bin, &dir, &[]);
    let sidecar = Sidecar::start(&dir, &["--ring-size", "1MiB", "--max-frame", "4KiB"]);
    let prefix = "tel.down";
    let flags = [
        "--create-stream",
        "--quiet",
        "--max-inflight-bytes",
        "2MiB",
        "--max-inflight",
        "1024",
        "--ack-timeout",
        "2s",
    ];
    let budget = export_budget(&flags[2..]);
    let mut ex = Exporter::start(&dir, &sidecar, &nats, STREAM, prefix, &flags);
    let load = spawn_load(
        &sidecar.socket,
        &["--rate", "8000", "--duration", "18s", "--size", "1000"],
    );
    let pid = ex.pid();
    let sample = |ms: u64| -> u64 {
        let mut peak = 0;
        let end = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < end {
            peak = peak.max(rss_anon(pid).unwrap_or(0));
            std::thread::sleep(Duration::from_millis(50));
        }
        peak
    };
    let before = sample(3000);
    nats.kill();
    let first_half = sample(5000);
    let second_half = sample(5000);
    nats.restart();
    let after = sample(3000);
    let total = load_sent(load);
    let raw = wait_stream(&nats.url(), STREAM, prefix, Duration::from_secs(60), |r| {
        r.frame_count() + r.lost() >= total
    });
    assert!(ex.running(), "exporter died:\n{}", ex.stderr());
    let status = ex.stop();
    assert!(status.success(), "{}", ex.stderr());
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "RssAnon peaks (MiB): before {:.1}, outage first 5 s {:.1}, outage last 5 s {:.1}, after {:.1}; budget {:.1}",
        mib(before),
        mib(first_half),
        mib(second_half),
        mib(after),
        mib(budget)
    );
    let lost = raw.assert_exactly_once(0, total);
    println!(
        "{total} frames written, {} in the stream, {lost} reported lost",
        raw.frame_count()
    );
    assert!(
        lost > 0,
        "a 1 MiB ring at 8 MB/s must lap the exporter during a 10 s outage"
    );
    let reasons: Vec<&str> = raw
        .losses
        .values()
        .flatten()
        .map(|l| l.2.as_str())
        .collect();
    assert!(reasons.iter().all(|r| *r == "lapped"), "{reasons:?}");
    assert!(
        second_half <= first_half + (1 << 20),
        "RssAnon grew during the outage: {first_half} -> {second_half}"
    );
    assert!(
        first_half.max(second_half).max(after) <= budget,
        "RssAnon above the printed budget {budget}"
    );
    let log = ex.stderr();
    assert!(log.contains("reconnecting to NATS"), "{log}");
    assert!(log.contains("NATS is back"), "{log}");
}

/// The sidecar SIGKILLed under load and started again (adopting the ring
/// the producer hands back): the exporter subscribes again from where it
/// read, and the stream still holds every sequence exactly once.
#[test]
fn sidecar_killed_and_restarted_under_load() {
    let Some(bin) = server_or_skip() else { return };
    let dir = TempDir::new("sidecar-kill");
    let nats = NatsServer::start(&bin, &dir, &[]);
    let mut sidecar = Sidecar::start(&dir, &NO_LOSS);
    let prefix = "tel.restart";
    let mut ex = Exporter::start(
        &dir,
        &sidecar,
        &nats,
        STREAM,
        prefix,
        &["--create-stream", "--quiet"],
    );
    let load = spawn_load(
        &sidecar.socket,
        &["--rate", "10000", "--duration", "8s", "--size", "200"],
    );
    std::thread::sleep(Duration::from_millis(2500));
    let port = sidecar.addr.port();
    sidecar.kill();
    std::thread::sleep(Duration::from_millis(1000));
    // Same port and producer socket: the producer hands its ring to the new sidecar.
    sidecar = Sidecar::start_on(
        &dir,
        port,
        &[&NO_LOSS[..], &["--adopt-grace", "5s"]].concat(),
    );
    let total = load_sent(load);
    let raw = wait_stream(&nats.url(), STREAM, prefix, Duration::from_secs(60), |r| {
        r.frame_count() + r.lost() >= total
    });
    assert!(ex.running(), "exporter died:\n{}", ex.stderr());
    assert!(ex.stop().success(), "{}", ex.stderr());
    let log = sidecar.stderr();
    assert!(
        log.contains("adopted=true"),
        "the new sidecar did not adopt the ring:\n{log}"
    );
    assert!(
        ex.stderr().contains("subscribed to the sidecar again"),
        "{}",
        ex.stderr()
    );
    assert_eq!(
        raw.assert_exactly_once(0, total),
        0,
        "the adopted ring kept every frame: {:?}",
        raw.losses
    );
}

/// Streams that cannot hold the export are refused at start with a message
/// that names the problem; so is a server without JetStream.
#[test]
fn unfit_streams_are_refused_at_start() {
    use async_nats::jetstream::{self, stream};
    let Some(bin) = server_or_skip() else { return };
    let dir = TempDir::new("unfit");
    let nats = NatsServer::start(&bin, &dir, &[]);
    let sidecar = Sidecar::start(&dir, &["--ring-size", "1MiB"]);
    let url = nats.url();
    rt().block_on(async {
        let js = jetstream::new(async_nats::connect(&url).await.expect("connect"));
        let mk = |name: &str, subjects: &str| stream::Config {
            name: name.into(),
            subjects: vec![subjects.into()],
            ..Default::default()
        };
        js.create_stream(mk("WRONG", "other.>"))
            .await
            .expect("create");
        js.create_stream(stream::Config {
            max_bytes: 64 << 10,
            ..mk("SMALL", "small.>")
        })
        .await
        .expect("create");
        js.create_stream(stream::Config {
            max_message_size: 1024,
            ..mk("TINYMSG", "tiny.>")
        })
        .await
        .expect("create");
        js.create_stream(stream::Config {
            max_bytes: 1 << 30,
            discard: stream::DiscardPolicy::New,
            ..mk("DISCARDNEW", "dn.>")
        })
        .await
        .expect("create");
        js.create_stream(stream::Config {
            duplicate_window: Duration::from_secs(1),
            ..mk("SHORTDUP", "sd.>")
        })
        .await
        .expect("create");
    });
    for (stream, prefix, needle) in [
        ("WRONG", "tel.h1", "none of them covers `tel.h1.>`"),
        (
            "SMALL",
            "small.h1",
            "max_bytes is 64.0 KiB, less than the 1.0 MiB required",
        ),
        ("TINYMSG", "tiny.h1", "max_msg_size is 1.0 KiB"),
        ("DISCARDNEW", "dn.h1", "discard: new"),
        ("SHORTDUP", "sd.h1", "duplicate_window is 1s"),
        (
            "MISSING",
            "m.h1",
            "stream MISSING does not exist; pass --create-stream",
        ),
    ] {
        let (status, err) = export_once(&sidecar, &url, stream, prefix, &[]);
        assert_eq!(status.code(), Some(2), "{stream}: {err}");
        assert!(
            err.contains(needle),
            "{stream}: expected `{needle}` in:\n{err}"
        );
    }
    // A wildcard above the prefix is fine.
    let mut ok = Exporter::start(&dir, &sidecar, &nats, "WRONG", "other.h1", &["--quiet"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok.stderr().contains("exporting") {
        assert!(ok.running() && Instant::now() < deadline, "{}", ok.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ok.stop().success(), "{}", ok.stderr());

    let plain = NatsServer::start_with(&bin, &dir, &[], false);
    let (status, err) = export_once(&sidecar, &plain.url(), STREAM, "tel.h1", &[]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("does not answer JetStream requests"), "{err}");
}
