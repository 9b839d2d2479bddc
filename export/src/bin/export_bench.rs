//! `export-bench`: producer → ring → `ringside export` → JetStream, against
//! producers publishing straight to JetStream with async-nats (bounded async
//! publishing: at most 4096 acknowledgements outstanding, the exporter's own
//! default window). Same frames, same host, same run.
//!
//! ```sh
//! cargo build --release -p ringside -p ringside-export
//! target/release/export-bench            # prints a Markdown report
//! ```
//!
//! Scenarios (each path gets a fresh nats-server, sidecar and stream):
//! - burst: producers write `--frames` frames as fast as they can;
//! - slowdown: producers write at `--rate` for `--seconds`, and nats-server is
//!   SIGSTOPped for `--stop` seconds in the middle; RssAnon of every process
//!   is sampled every 50 ms.
//!
//! Measured per path: the producers' time per call (HDR histogram; calls over
//! 1 ms count as blocked), their CPU per frame (getrusage of the producer
//! processes, so the NATS client's own threads count for the direct path),
//! frames that reached the stream per second, frames reported lost, and peak
//! RssAnon of every process.

use async_nats::jetstream;
use hdrhistogram::Histogram;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const STREAM: &str = "BENCH";

fn usage() -> ! {
    eprintln!(
        "usage: export-bench [--frames N] [--size BYTES] [--producers P] [--rate FRAMES_PER_S] [--seconds S] [--stop S] [--quick]\n\
         \x20      export-bench produce-ring SOCKET COUNT SIZE RATE | produce-nats URL COUNT SIZE RATE INDEX"
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("produce-ring") => produce_ring(&args[1..]),
        Some("produce-nats") => produce_nats(&args[1..]),
        _ => orchestrate(&args),
    }
}

/// Flags of the orchestrator.
#[derive(Debug, Clone)]
struct Params {
    frames: u64,
    size: u64,
    producers: u64,
    rate: u64,
    seconds: u64,
    stop: u64,
    export_workers: u64,
}

fn parse_params(args: &[String]) -> Params {
    let mut p = Params {
        frames: 400_000,
        size: 256,
        producers: 2,
        rate: 20_000,
        seconds: 14,
        stop: 5,
        export_workers: 1,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = || -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage())
        };
        match a.as_str() {
            "--frames" => p.frames = num(),
            "--size" => p.size = num(),
            "--producers" => p.producers = num().max(1),
            "--rate" => p.rate = num(),
            "--seconds" => p.seconds = num(),
            "--stop" => p.stop = num(),
            "--export-workers" => p.export_workers = num().max(1),
            "--quick" => {
                p.frames = 60_000;
                p.seconds = 8;
                p.stop = 3;
            }
            _ => usage(),
        }
    }
    p
}

// ---------------------------------------------------------------- producers

/// What a producer process reports on stdout (one JSON line).
#[derive(Debug, Clone, Default)]
struct ProducerReport {
    frames: u64,
    errors: u64,
    cpu_s: f64,
    p50_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    max_ns: u64,
    over_1ms: u64,
}

fn cpu_seconds() -> f64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

fn report(h: &Histogram<u64>, frames: u64, errors: u64, wall: Duration, over_1ms: u64) {
    println!(
        "{}",
        serde_json::json!({
            "frames": frames, "errors": errors, "wall_s": wall.as_secs_f64(), "cpu_s": cpu_seconds(),
            "p50_ns": h.value_at_quantile(0.5), "p99_ns": h.value_at_quantile(0.99),
            "p999_ns": h.value_at_quantile(0.999), "max_ns": h.max(), "over_1ms": over_1ms,
        })
    );
}

fn payload(size: usize, i: u64) -> Vec<u8> {
    let mut p = vec![0u8; size];
    for (k, b) in p.iter_mut().enumerate() {
        *b = (k as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    p
}

/// Paces `count` calls at `rate` per second (0 = as fast as possible).
struct Pacer {
    start: Instant,
    rate: u64,
}

impl Pacer {
    /// How long to sleep before call `done`: only when more than 1 ms ahead,
    /// so that pacing costs one sleep per millisecond, not one per frame.
    fn due(&self, done: u64) -> Option<Duration> {
        if self.rate == 0 {
            return None;
        }
        let at = Duration::from_secs_f64(done as f64 / self.rate as f64);
        let el = self.start.elapsed();
        (at > el + Duration::from_millis(1)).then(|| at - el)
    }
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| usage())
}

fn produce_ring(args: &[String]) {
    let socket: PathBuf = arg(args, 0);
    let (count, size, rate): (u64, usize, u64) = (arg(args, 1), arg(args, 2), arg(args, 3));
    let p = ringside_client::Producer::connect(&socket).unwrap_or_else(|e| {
        eprintln!("produce-ring: {e}");
        std::process::exit(1)
    });
    if !p.wait_connected(Duration::from_secs(10)) {
        eprintln!("produce-ring: no sidecar");
        std::process::exit(1)
    }
    let topics = ["bench/0", "bench/1", "bench/2", "bench/3"];
    let mut data = payload(size, 0);
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram");
    let pacer = Pacer {
        start: Instant::now(),
        rate,
    };
    let (mut errors, mut over) = (0u64, 0u64);
    for i in 0..count {
        if let Some(d) = pacer.due(i) {
            std::thread::sleep(d);
        }
        data[..8].copy_from_slice(&i.to_le_bytes());
        let t = Instant::now();
        let r = p.send(topics[(i % 4) as usize], &data);
        let ns = t.elapsed().as_nanos() as u64;
        if r.is_err() {
            errors += 1;
        }
        over += u64::from(ns > 1_000_000);
        let _ = h.record(ns.max(1));
    }
    report(&h, count, errors, pacer.start.elapsed(), over);
}

fn produce_nats(args: &[String]) {
    let url: String = arg(args, 0);
    let (count, size, rate, index): (u64, usize, u64, u64) =
        (arg(args, 1), arg(args, 2), arg(args, 3), arg(args, 4));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let client = async_nats::connect(url.as_str()).await.unwrap_or_else(|e| {
            eprintln!("produce-nats: {e}");
            std::process::exit(1)
        });
        let js = jetstream::new(client);
        let topics = [
            "bench.direct.bench/0",
            "bench.direct.bench/1",
            "bench.direct.bench/2",
            "bench.direct.bench/3",
        ];
        let mut data = payload(size, 0);
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram");
        let pacer = Pacer {
            start: Instant::now(),
            rate,
        };
        let mut acks = VecDeque::with_capacity(4096);
        let (mut errors, mut over) = (0u64, 0u64);
        for i in 0..count {
            if let Some(d) = pacer.due(i) {
                tokio::time::sleep(d).await;
            }
            data[..8].copy_from_slice(&i.to_le_bytes());
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, format!("{index}:{i}"));
            headers.insert("Ringside-Timestamp", i.to_string());
            let t = Instant::now();
            match js
                .publish_with_headers(
                    topics[(i % 4) as usize],
                    headers,
                    bytes::Bytes::copy_from_slice(&data),
                )
                .await
            {
                Ok(ack) => acks.push_back(ack),
                Err(_) => errors += 1,
            }
            if acks.len() >= 4096
                && let Some(a) = acks.pop_front()
                && a.await.is_err()
            {
                errors += 1;
            }
            let ns = t.elapsed().as_nanos() as u64;
            over += u64::from(ns > 1_000_000);
            let _ = h.record(ns.max(1));
        }
        for a in acks {
            if a.await.is_err() {
                errors += 1;
            }
        }
        report(&h, count, errors, pacer.start.elapsed(), over);
    });
}

// ---------------------------------------------------------------- processes

fn ringside_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe.with_file_name("ringside");
    if !bin.exists() {
        eprintln!(
            "export-bench: {} is missing; run `cargo build --release -p ringside -p ringside-export` first",
            bin.display()
        );
        std::process::exit(2)
    }
    bin
}

fn nats_server_bin() -> PathBuf {
    [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .unwrap_or_else(|| {
        eprintln!("export-bench: nats-server not found; install the Debian package `nats-server`");
        std::process::exit(2)
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A directory removed on drop (also when a run panics).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Children killed on drop.
struct Procs(Vec<(String, Child)>);

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// utime + stime of a process, in seconds (from `/proc/<pid>/stat`).
fn proc_cpu_s(pid: u32) -> f64 {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may contain spaces).
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let u: f64 = f.get(11)?.parse().ok()?;
            let st: f64 = f.get(12)?.parse().ok()?;
            Some((u + st) / ticks)
        })
        .unwrap_or(0.0)
}

fn rss_anon(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("RssAnon:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Peak RssAnon per named process, sampled every 50 ms on a thread.
struct Sampler {
    stop: Arc<AtomicBool>,
    peaks: Arc<Mutex<Vec<(String, u32, u64)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(pids: Vec<(String, u32)>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peaks = Arc::new(Mutex::new(
            pids.into_iter().map(|(n, p)| (n, p, 0)).collect::<Vec<_>>(),
        ));
        let (s, p) = (Arc::clone(&stop), Arc::clone(&peaks));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Ok(mut v) = p.lock() {
                    for e in v.iter_mut() {
                        e.2 = e.2.max(rss_anon(e.1));
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Sampler {
            stop,
            peaks,
            thread: Some(thread),
        }
    }

    /// CPU seconds (utime + stime) of every process but the producers.
    fn cpu(&self) -> Vec<(String, f64)> {
        self.peaks
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|e| e.0 != "producer")
                    .map(|e| (e.0.clone(), proc_cpu_s(e.1)))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn add(&self, name: String, pid: u32) {
        if let Ok(mut v) = self.peaks.lock() {
            v.push((name, pid, 0));
        }
    }

    fn finish(mut self) -> Vec<(String, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let v = self.peaks.lock().map(|v| v.clone()).unwrap_or_default();
        // Producers of one path share a name: report the largest.
        let mut out: Vec<(String, u64)> = Vec::new();
        for (n, _, peak) in v {
            match out.iter_mut().find(|(m, _)| *m == n) {
                Some(e) => e.1 = e.1.max(peak),
                None => out.push((n, peak)),
            }
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path_ {
    Ring,
    RingBatch,
    Direct,
}

impl Path_ {
    fn name(self) -> &'static str {
        match self {
            Path_::Ring => "ring → export (frames)",
            Path_::RingBatch => "ring → export --batch",
            Path_::Direct => "direct async-nats",
        }
    }
}

/// One path's run.
#[derive(Debug, Default)]
struct Outcome {
    producers: Vec<ProducerReport>,
    written: u64,
    in_stream: u64,
    lost_reported: u64,
    first_to_last_s: f64,
    peaks: Vec<(String, u64)>,
    cpu: Vec<(String, f64)>,
    note: String,
}

fn parse_report(line: &str) -> ProducerReport {
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or_default();
    let n = |k: &str| v[k].as_u64().unwrap_or(0);
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    ProducerReport {
        frames: n("frames"),
        errors: n("errors"),
        cpu_s: f("cpu_s"),
        p50_ns: n("p50_ns"),
        p99_ns: n("p99_ns"),
        p999_ns: n("p999_ns"),
        max_ns: n("max_ns"),
        over_1ms: n("over_1ms"),
    }
}

fn scrape(port: u16, series: &str) -> Option<u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .map(|v| v as u64)
}

fn stream_messages(rt: &tokio::runtime::Runtime, url: &str) -> u64 {
    rt.block_on(async {
        let Ok(c) = async_nats::connect(url).await else {
            return 0;
        };
        let js = jetstream::new(c);
        match js.get_stream(STREAM).await {
            Ok(mut s) => s.info().await.map_or(0, |i| i.state.messages),
            Err(_) => 0,
        }
    })
}

/// Runs one path. `slowdown`: producers paced at `p.rate` for `p.seconds`,
/// nats-server stopped for `p.stop` seconds from second 3; otherwise a burst.
fn run_path(path: Path_, p: &Params, slowdown: bool, rt: &tokio::runtime::Runtime) -> Outcome {
    let dir = std::env::temp_dir().join(format!(
        "export-bench-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::create_dir_all(&dir);
    let _cleanup = RemoveOnDrop(dir.clone());
    let mut procs = Procs(Vec::new());
    let nats_port = free_port();
    let url = format!("nats://127.0.0.1:{nats_port}");
    let nats = Command::new(nats_server_bin())
        .args([
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            &nats_port.to_string(),
            "-sd",
        ])
        .arg(dir.join("js"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server");
    let nats_pid = nats.id();
    procs.0.push(("nats-server".into(), nats));
    wait_port(nats_port);
    rt.block_on(async {
        let js = jetstream::new(async_nats::connect(url.as_str()).await.expect("connect"));
        js.create_stream(jetstream::stream::Config {
            name: STREAM.into(),
            subjects: vec!["bench.>".into()],
            max_bytes: 1 << 30,
            ..Default::default()
        })
        .await
        .expect("create stream");
    });
    let total = if slowdown {
        p.rate * p.seconds
    } else {
        p.frames
    };
    let per = total / p.producers;
    let rate = if slowdown { p.rate / p.producers } else { 0 };
    let size = p.size.to_string();
    let mut metrics_port = 0;
    let mut socket = PathBuf::new();
    if path != Path_::Direct {
        let grpc = free_port();
        socket = dir.join("ring.sock");
        let serve = Command::new(ringside_bin())
            .args([
                "serve",
                "--ring-size",
                if slowdown { "16MiB" } else { "64MiB" },
                "--max-frame",
                "4KiB",
                "--adopt-grace",
                "100ms",
                "--listen",
            ])
            .arg(format!("127.0.0.1:{grpc}"))
            .arg("--socket")
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ringside serve");
        procs.0.push(("ringside serve".into(), serve));
        wait_port(grpc);
        metrics_port = free_port();
        let mut cmd = Command::new(ringside_bin());
        cmd.args([
            "export",
            "--quiet",
            "--endpoint",
            &format!("http://127.0.0.1:{grpc}"),
            "--nats-url",
            &url,
        ])
        .args([
            "--stream",
            STREAM,
            "--subject-prefix",
            "bench.ring",
            "--metrics-listen",
        ])
        .arg(format!("127.0.0.1:{metrics_port}"))
        .args(["--worker-threads", &p.export_workers.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if path == Path_::RingBatch {
            cmd.arg("--batch");
        }
        procs.0.push((
            "ringside export".into(),
            cmd.spawn().expect("ringside export"),
        ));
        wait_port(metrics_port);
        while scrape(metrics_port, "ringside_export_published_records_total").is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let sampler = Sampler::start(procs.0.iter().map(|(n, c)| (n.clone(), c.id())).collect());
    let stored = |rt: &tokio::runtime::Runtime| -> u64 {
        match path {
            Path_::Direct => stream_messages(rt, &url),
            _ => scrape(metrics_port, "ringside_export_acked_frames_total").unwrap_or(0),
        }
    };
    let started = Instant::now();
    let mut producers = Vec::new();
    for i in 0..p.producers {
        let mut cmd = Command::new(std::env::current_exe().expect("exe"));
        match path {
            Path_::Direct => cmd.args(["produce-nats", &url]),
            _ => cmd.arg("produce-ring").arg(&socket),
        };
        cmd.args([per.to_string(), size.clone(), rate.to_string()]);
        if path == Path_::Direct {
            cmd.arg(i.to_string());
        }
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("producer");
        sampler.add("producer".into(), child.id());
        producers.push(child);
    }
    let mut note = String::new();
    if slowdown {
        std::thread::sleep(Duration::from_secs(3));
        let pid = nix::unistd::Pid::from_raw(nats_pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP);
        std::thread::sleep(Duration::from_secs(p.stop));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
        note = format!("nats-server SIGSTOPped from 3 s to {} s", 3 + p.stop);
    }
    let mut reports = Vec::new();
    for mut c in producers {
        let mut line = String::new();
        if let Some(out) = c.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let _ = c.wait();
        reports.push(parse_report(&line));
    }
    let written: u64 = reports
        .iter()
        .map(|r| r.frames - r.errors.min(r.frames))
        .sum();
    // Wait until the stream stops growing (2 s without change) or holds everything.
    let mut last = (stored(rt), Instant::now());
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let n = stored(rt);
        if n != last.0 {
            last = (n, Instant::now());
        }
        if n >= written || last.1.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let lost_reported = if path == Path_::Direct {
        0
    } else {
        ["lapped", "abandoned", "corrupt", "rejected"]
            .iter()
            .filter_map(|r| {
                scrape(
                    metrics_port,
                    &format!("ringside_export_lost_frames_total{{reason=\"{r}\"}}"),
                )
            })
            .sum()
    };
    let cpu = sampler.cpu();
    let peaks = sampler.finish();
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
    Outcome {
        producers: reports,
        written,
        in_stream: last.0,
        lost_reported,
        first_to_last_s: last.1.duration_since(started).as_secs_f64(),
        peaks,
        cpu,
        note,
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

fn us(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.1} ms", ns as f64 / 1e6)
    } else if ns >= 1000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{ns} ns")
    }
}

fn table(title: &str, rows: &[(Path_, Outcome)]) {
    println!("### {title}\n");
    println!(
        "| path | producer call p50 / p99 / p99.9 / max | calls over 1 ms | producer CPU per frame | frames written | frames in the stream | reported lost | unaccounted | into the stream | CPU per frame in the stream, other processes | peak RssAnon |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (path, o) in rows {
        let q = |f: fn(&ProducerReport) -> u64| o.producers.iter().map(f).max().unwrap_or(0);
        let p50 = {
            let mut v: Vec<u64> = o.producers.iter().map(|r| r.p50_ns).collect();
            v.sort_unstable();
            v.get(v.len() / 2).copied().unwrap_or(0)
        };
        let frames: u64 = o.producers.iter().map(|r| r.frames).sum();
        let cpu: f64 = o.producers.iter().map(|r| r.cpu_s).sum();
        let over: u64 = o.producers.iter().map(|r| r.over_1ms).sum();
        let errors: u64 = o.producers.iter().map(|r| r.errors).sum();
        let unaccounted = o.written.saturating_sub(o.in_stream + o.lost_reported);
        let peaks: Vec<String> = o
            .peaks
            .iter()
            .map(|(n, b)| format!("{n} {}", mib(*b)))
            .collect();
        let others: Vec<String> = o
            .cpu
            .iter()
            .map(|(n, c)| format!("{n} {}", us((c * 1e9 / o.in_stream.max(1) as f64) as u64)))
            .collect();
        println!(
            "| {} | {} / {} / {} / {} | {over} | {} | {}{} | {} | {} | {unaccounted} | {:.0} frames/s | {} | {} |",
            path.name(),
            us(p50),
            us(q(|r| r.p99_ns)),
            us(q(|r| r.p999_ns)),
            us(q(|r| r.max_ns)),
            us((cpu * 1e9 / frames.max(1) as f64) as u64),
            o.written,
            if errors > 0 {
                format!(" ({errors} publish errors)")
            } else {
                String::new()
            },
            o.in_stream,
            o.lost_reported,
            o.in_stream as f64 / o.first_to_last_s.max(1e-9),
            others.join(", "),
            peaks.join(", ")
        );
    }
    if let Some((_, o)) = rows.iter().find(|(_, o)| !o.note.is_empty()) {
        println!("\n{}.", o.note);
    }
    println!();
}

fn orchestrate(args: &[String]) {
    let p = parse_params(args);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "## Export to NATS JetStream: ringside export vs producers publishing directly\n\n\
         Reproduce: `cargo build --release -p ringside -p ringside-export && target/release/export-bench{}`\n\n\
         {} producer processes, {} B payloads, 4 topics; {} with JetStream (file store), one stream `bench.>`; \
         ringside: `serve --ring-size 64MiB --max-frame 4KiB` (16MiB in the slowdown), `export` with its defaults (4096 records / 8 MiB in flight, {} worker thread(s)). \
         Direct: async-nats 0.46 `publish_with_headers` (Nats-Msg-Id and a timestamp header), at most 4096 acknowledgements outstanding, then waiting for the oldest. \
         Load average at the start: {}\n",
        if args.is_empty() {
            String::new()
        } else {
            format!(" {}", args.join(" "))
        },
        p.producers,
        p.size,
        Command::new(nats_server_bin())
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default(),
        p.export_workers,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let paths = [Path_::Ring, Path_::RingBatch, Path_::Direct];
    let burst: Vec<_> = paths
        .iter()
        .map(|&x| (x, run_path(x, &p, false, &rt)))
        .collect();
    table(
        &format!(
            "Burst: {} frames, as fast as the producers can write",
            p.frames
        ),
        &burst,
    );
    let slow: Vec<_> = paths
        .iter()
        .map(|&x| (x, run_path(x, &p, true, &rt)))
        .collect();
    table(
        &format!(
            "Slowdown: {} frames/s for {} s, nats-server stopped for {} s",
            p.rate, p.seconds, p.stop
        ),
        &slow,
    );
}
