//! The cost of one `info!` event with two fields, through each subscriber, in one run:
//!
//! - `ringside`: `registry().with(RingsideLayer)` writing into a real ring (an in-process
//!   `RingHost` with the sidecar's default geometry: 64 MiB, 64 KiB max payload; no reader);
//! - `ringside_no_sidecar`: the same layer with no sidecar (each event a counted drop);
//! - `fmt_file`: `registry().with(fmt::layer())` writing to a file (`Mutex<File>`, the usual
//!   way; one `write` per event, truncated between samples so it stays small);
//! - `fmt_dev_null`: the same fmt layer writing to `/dev/null`.
//!
//! ```sh
//! cargo bench -p ringside-tracing --bench tracing_layer
//! ```
//!
//! Results and the machine they came from: `docs/benchmarks-tracing.md`.

use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::Seek;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use ringside_ring::{HostOptions, RingConfig, RingHost};
use ringside_tracing::RingsideLayer;
use tracing::Dispatch;
use tracing_subscriber::layer::SubscriberExt;

/// The event under test: `info!` with two fields and a static message.
#[inline(always)]
fn event(i: u64) {
    tracing::info!(a = black_box(i), b = "two", "an event with two fields");
}

/// Times `iters` events through `dispatch`, after `before` (untimed).
fn run(dispatch: &Dispatch, iters: u64, before: impl FnOnce()) -> Duration {
    before();
    tracing::dispatcher::with_default(dispatch, || {
        let start = Instant::now();
        for i in 0..iters {
            event(i);
        }
        start.elapsed()
    })
}

fn fmt_dispatch(file: File) -> Dispatch {
    Dispatch::new(
        tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(Mutex::new(file)),
        ),
    )
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("ringside.sock");
    let _host = RingHost::start(HostOptions {
        socket_path: socket.clone(),
        ring: RingConfig::default(),
        adopt_grace: Duration::ZERO,
        ..HostOptions::default()
    })
    .expect("ring host");
    let layer = RingsideLayer::connect(&socket).expect("layer");
    let stats = layer.stats_handle();
    assert!(stats.wait_connected(Duration::from_secs(10)));
    let ringside = Dispatch::new(tracing_subscriber::registry().with(layer));
    let no_sidecar_layer = RingsideLayer::connect(dir.path().join("nobody.sock")).expect("layer");
    let no_sidecar_stats = no_sidecar_layer.stats_handle();
    let no_sidecar = Dispatch::new(tracing_subscriber::registry().with(no_sidecar_layer));

    let log_path = dir.path().join("fmt.log");
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .expect("log file");
    let truncate = log.try_clone().expect("log fd");
    let fmt_file = fmt_dispatch(log);
    let dev_null = OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null");
    let fmt_dev_null = fmt_dispatch(dev_null);

    let mut group = c.benchmark_group("info_event_two_fields");
    group.bench_function("ringside", |b| {
        b.iter_custom(|iters| run(&ringside, iters, || {}));
    });
    group.bench_function("ringside_no_sidecar", |b| {
        b.iter_custom(|iters| run(&no_sidecar, iters, || {}));
    });
    group.bench_function("fmt_file", |b| {
        b.iter_custom(|iters| {
            run(&fmt_file, iters, || {
                // Keep the file small between samples (appends go to the new end).
                let _ = truncate.set_len(0);
                let _ = (&truncate).rewind();
            })
        });
    });
    group.bench_function("fmt_dev_null", |b| {
        b.iter_custom(|iters| run(&fmt_dev_null, iters, || {}));
    });
    group.finish();

    let s = stats.stats();
    assert!(
        s.written > 0 && s.truncated == 0 && s.encoding_errors == 0,
        "{s:?}"
    );
    assert_eq!(no_sidecar_stats.stats().written, 0);
}

criterion_group!(benches, bench);
criterion_main!(benches);
