//! The `tracing` layer end to end: events and a span close written by `ringside-tracing` in
//! this process into a real `ringside serve` (the binary under test), read back over gRPC by
//! `ringside tail`, which prints them decoded.

use std::process::Command;
use std::time::Duration;

use ringside_tests::sidecar::{Sidecar, TempDir, ringside_bin};
use tracing_subscriber::layer::SubscriberExt;

fn tail(serve: &Sidecar, json: bool) -> String {
    let mut cmd = Command::new(ringside_bin());
    cmd.arg("tail")
        .arg("--endpoint")
        .arg(serve.endpoint())
        .args(["--from", "earliest", "--idle-exit", "2s"]);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().expect("run ringside tail");
    assert!(
        out.status.success(),
        "ringside tail failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn tail_prints_tracing_records_readably() {
    let dir = TempDir::new("tracing-tail");
    let serve = Sidecar::start(&dir, &[]);
    let layer = ringside_tracing::RingsideLayer::connect(&serve.socket).expect("layer");
    let stats = layer.stats_handle();
    assert!(stats.wait_connected(Duration::from_secs(10)));
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        let span = tracing::info_span!("checkout", cart = 17u64);
        span.in_scope(|| tracing::warn!(items = 3u64, "stock low for {}", "widgets"));
    });
    assert_eq!(stats.stats().written, 2);

    let text = tail(&serve, false);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("tracing/tracing_tail [")
            && lines[0]
                .ends_with("WARN  tracing_tail: stock low for widgets items=3 [in span checkout]"),
        "{text}"
    );
    assert!(
        lines[1].contains("INFO  tracing_tail: span checkout closed after ")
            && lines[1].ends_with(" cart=17"),
        "{text}"
    );

    let json = tail(&serve, true);
    let first: serde_json::Value =
        serde_json::from_str(json.lines().next().expect("a line")).expect("JSON");
    assert_eq!(first["tracing"]["level"], "WARN");
    assert_eq!(first["tracing"]["message"], "stock low for widgets");
    assert_eq!(first["tracing"]["fields"]["items"], 3);
}
