//! `e2e`: the end-to-end burst benchmark, ringside vs the naive baseline.
//!
//! Scenario **burst with slow and stalled subscribers**: producers write as
//! fast as they can, in total at least 100x ringside's ring capacity, while one
//! fast, several slow (they sleep after every message) and a few stalled
//! subscribers (they open the stream and never read) are connected. Both
//! servers run in a cgroup v1 memory group whose hard limit is ringside's
//! printed budget for the same flags. The server's RssAnon and RssShmem are
//! sampled from `/proc/<pid>/status` every 20 ms.
//!
//! Output: a markdown table on stdout and in `docs/benchmarks.md`, raw CSV
//! samples in `docs/bench-data/`, and `docs/bench-data/memory-burst.svg`.
//!
//! ```sh
//! cargo build --release -p ringside-naive -p ringside
//! target/release/e2e --quick      # about a minute
//! target/release/e2e --full
//! ```

use clap::Parser;
use ringside_naive::v1::naive_client::NaiveClient;
use ringside_proto::v1::ringside_client::RingsideClient;
use ringside_proto::v1::subscribe_request::Start;
use std::fmt::Write as _;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "End-to-end burst benchmark: ringside vs the naive baseline")]
struct Args {
    /// Quick mode (4 MiB ring, 100x its capacity; about a minute). The default.
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// Full mode (16 MiB ring, 300x its capacity).
    #[arg(long)]
    full: bool,
    /// Directory holding `ringside`, `naive-server` and `naive-load`
    /// (default: the directory of this executable).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where `benchmarks.md` and `bench-data/` are written.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs"))]
    out: PathBuf,
    /// Do not write any file (print the table only).
    #[arg(long)]
    no_write: bool,
}

/// Scenario parameters.
#[derive(Debug, Clone)]
struct Params {
    mode: &'static str,
    ring: u64,
    ring_flag: String,
    laps: u64,
    frame: u64,
    producers: u64,
    fast: usize,
    slow: usize,
    stalled: usize,
    /// Bytes per second a slow reader takes (payload bytes, paced after each message).
    slow_bps: u64,
    /// Producer rate in frames/s over all producers (0 = as fast as possible).
    rate: u64,
    /// Frames in total (0 = `laps` x ring / frame).
    frames: u64,
    /// `--max-subscribers` and `--max-connections`.
    max_subs: u64,
    drain: Duration,
    lat_secs: u64,
}

impl Params {
    fn total_frames(&self) -> u64 {
        if self.frames > 0 {
            self.frames
        } else {
            self.laps * self.ring / self.frame
        }
    }

    fn serve_flags(&self) -> Vec<String> {
        let subs = self.max_subs.to_string();
        [
            "--ring-size",
            &self.ring_flag,
            "--max-frame",
            "4KiB",
            "--subscriber-buffer",
            "64KiB",
            "--max-subscribers",
            &subs,
            "--max-connections",
            &subs,
            "--worker-threads",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

/// One sample of the server's memory.
#[derive(Debug, Clone, Copy)]
struct Sample {
    t: f64,
    anon: u64,
    shmem: u64,
}

/// Per-subscriber counters.
#[derive(Debug, Default)]
struct SubStats {
    frames: AtomicU64,
    bytes: AtomicU64,
    reported_lost: AtomicU64,
    resume: AtomicU64,
    done: AtomicBool,
    done_at: Mutex<Option<Instant>>,
    error: Mutex<Option<String>>,
}

/// Result of one system's run.
#[derive(Debug, Default)]
struct RunResult {
    system: String,
    skipped: Option<String>,
    limit: u64,
    written: u64,
    written_bytes: u64,
    load_s: f64,
    window_s: f64,
    delivered_frames: u64,
    delivered_bytes: u64,
    fast_frames: u64,
    fast_s: f64,
    reported_lost: u64,
    counted_lost: u64,
    subscribers_finished: usize,
    readers: usize,
    peak_anon: u64,
    peak_shmem: u64,
    cg_max_usage: u64,
    cg_failcnt: u64,
    oom_kills: u64,
    outcome: String,
    samples: Vec<Sample>,
}

const MIB: f64 = 1024.0 * 1024.0;
/// Producer threads/streams in the burst.
const PRODUCERS: u64 = 2;
/// Producer rate in the fan-out scenario (frames/s of 1 KiB).
const FANOUT_RATE: u64 = 10_000;

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / MIB)
}

struct Cgroup(PathBuf);

impl Cgroup {
    fn create(name: &str, limit: u64) -> Result<Cgroup, String> {
        let root = Path::new("/sys/fs/cgroup/memory");
        if !root.join("memory.limit_in_bytes").exists() {
            return Err(format!(
                "{} is not a cgroup v1 memory hierarchy",
                root.display()
            ));
        }
        let dir = root.join(format!("ringside-bench-{}-{name}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let cg = Cgroup(dir);
        cg.write("memory.limit_in_bytes", &limit.to_string())?;
        // No swap here, but where there is, count it too.
        let _ = cg.write("memory.memsw.limit_in_bytes", &limit.to_string());
        Ok(cg)
    }

    fn write(&self, file: &str, value: &str) -> Result<(), String> {
        std::fs::write(self.0.join(file), value).map_err(|e| format!("cannot write {file}: {e}"))
    }

    fn read_u64(&self, file: &str) -> u64 {
        std::fs::read_to_string(self.0.join(file))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(self.0.join("memory.oom_control"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("warning: could not remove {}", self.0.display());
    }
}

/// A server process, killed (by its own pid) when dropped.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    fn spawn(cg: Option<&Cgroup>, bin: &Path, args: &[String], log: PathBuf) -> Server {
        let mut cmd = match cg {
            Some(cg) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c")
                    .arg("echo $$ > \"$0/cgroup.procs\" && exec \"$@\"")
                    .arg(&cg.0)
                    .arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("server log file"))
            .spawn()
            .expect("spawn server");
        Server { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(&mut self, port: u16, socket: Option<&Path>) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!("exited early ({st}): {}", self.stderr()));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() && socket.is_none_or(Path::exists) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after 30 s: {}", self.stderr()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = s.lines().rev().take(20).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// SIGTERM, then SIGKILL after `grace`. Returns the exit status.
    fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Ok(Some(st)) = self.child.try_wait() {
            return Some(st);
        }
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn proc_status(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let l = s.lines().find(|l| l.starts_with(name))?;
        Some(l.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
    };
    Some((field("RssAnon:")?, field("RssShmem:")?))
}

/// Samples `/proc/<pid>/status` every 20 ms until `stop` or the process is gone.
fn spawn_sampler(
    pid: u32,
    t0: Instant,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Sample>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match proc_status(pid) {
                Some((anon, shmem)) => v.push(Sample {
                    t: t0.elapsed().as_secs_f64(),
                    anon,
                    shmem,
                }),
                None => break,
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        v
    })
}

fn budget_bytes(ringside: &Path, p: &Params) -> Result<u64, String> {
    let out = Command::new(ringside)
        .args(["serve", "--print-budget"])
        .args(p.serve_flags())
        .output()
        .map_err(|e| format!("run {}: {e}", ringside.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.trim_start().starts_with("total"))
        .and_then(|l| l.split('(').nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no budget total in: {text}"))
}

async fn connect(endpoint: &str) -> Result<Channel, String> {
    let ep = Endpoint::from_shared(endpoint.to_string()).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ep.connect().await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => return Err(e.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Which server a subscriber talks to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum System {
    Ringside,
    Naive,
}

/// Reads until `stop`, the stream ends, or it has accounted for `target` frames.
async fn reader(
    system: System,
    endpoint: String,
    slow_bps: Option<u64>,
    stats: Arc<SubStats>,
    stop: Arc<AtomicBool>,
    target: Arc<AtomicU64>,
) {
    let ch = match connect(&endpoint).await {
        Ok(c) => c,
        Err(e) => {
            *stats.error.lock().expect("lock") = Some(e);
            return;
        }
    };
    let started = Instant::now();
    macro_rules! read_loop {
        ($stream:expr, $losses:expr) => {{
            let mut s = $stream;
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match tokio::time::timeout(Duration::from_millis(200), s.message()).await {
                    Ok(Ok(Some(b))) => {
                        stats
                            .frames
                            .fetch_add(b.frames.len() as u64, Ordering::Relaxed);
                        let bytes: u64 = b.frames.iter().map(|f| f.payload.len() as u64).sum();
                        stats.bytes.fetch_add(bytes, Ordering::Relaxed);
                        let lost: u64 = $losses(&b);
                        stats.reported_lost.fetch_add(lost, Ordering::Relaxed);
                        stats.resume.store(b.resume_seq, Ordering::Relaxed);
                    }
                    Ok(Ok(None)) => {
                        *stats.error.lock().expect("lock") = Some("stream ended".into());
                        break;
                    }
                    Ok(Err(e)) => {
                        *stats.error.lock().expect("lock") =
                            Some(format!("{:?}: {}", e.code(), e.message()));
                        break;
                    }
                    Err(_) => {}
                }
                if stats.resume.load(Ordering::Relaxed) >= target.load(Ordering::Relaxed) {
                    *stats.done_at.lock().expect("lock") = Some(Instant::now());
                    stats.done.store(true, Ordering::Relaxed);
                    break;
                }
                if let Some(bps) = slow_bps {
                    // Take payload bytes at no more than `bps` on average.
                    let due = started
                        + Duration::from_secs_f64(
                            stats.bytes.load(Ordering::Relaxed) as f64 / bps as f64,
                        );
                    tokio::time::sleep_until(due.into()).await;
                }
            }
        }};
    }
    match system {
        System::Ringside => {
            let mut c = RingsideClient::new(ch);
            let req = ringside_proto::v1::SubscribeRequest {
                start: Some(Start::Earliest(true)),
                ..Default::default()
            };
            match c.subscribe(req).await {
                Ok(r) => read_loop!(r.into_inner(), |b: &ringside_proto::v1::Batch| b
                    .losses
                    .iter()
                    .map(|l| l.frames)
                    .sum::<u64>()),
                Err(e) => *stats.error.lock().expect("lock") = Some(e.to_string()),
            }
        }
        System::Naive => {
            let mut c = NaiveClient::new(ch);
            let req = ringside_naive::v1::SubscribeRequest { from_history: true };
            match c.subscribe(req).await {
                Ok(r) => read_loop!(r.into_inner(), |b: &ringside_naive::v1::Batch| b
                    .losses
                    .iter()
                    .map(|l| l.frames)
                    .sum::<u64>()),
                Err(e) => *stats.error.lock().expect("lock") = Some(e.to_string()),
            }
        }
    }
}

/// Opens a stream and never reads it; kept alive until the returned sender is dropped.
async fn stalled(
    system: System,
    endpoint: String,
) -> Result<tokio::sync::oneshot::Sender<()>, String> {
    let ch = connect(&endpoint).await?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    match system {
        System::Ringside => {
            let mut c = RingsideClient::new(ch);
            let req = ringside_proto::v1::SubscribeRequest {
                start: Some(Start::Earliest(true)),
                ..Default::default()
            };
            let s = c.subscribe(req).await.map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                let _hold = (c, s);
                let _ = rx.await;
            });
        }
        System::Naive => {
            let mut c = NaiveClient::new(ch);
            let req = ringside_naive::v1::SubscribeRequest { from_history: true };
            let s = c.subscribe(req).await.map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                let _hold = (c, s);
                let _ = rx.await;
            });
        }
    }
    Ok(tx)
}

fn run_to_json(mut child: Child) -> (serde_json::Value, f64) {
    let t = Instant::now();
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    let _ = child.wait();
    let wall = t.elapsed().as_secs_f64();
    (
        serde_json::from_str(out.trim()).unwrap_or(serde_json::Value::Null),
        wall,
    )
}

async fn run_system(system: System, bins: &Bins, p: &Params, budget: u64, tmp: &Path) -> RunResult {
    let name = match system {
        System::Ringside => "ringside",
        System::Naive => "naive",
    };
    let mut res = RunResult {
        system: name.into(),
        limit: budget,
        ..Default::default()
    };
    let cg = match Cgroup::create(name, budget) {
        Ok(c) => Some(c),
        Err(why) => {
            println!("SKIP cgroup for {name}: {why}");
            if system == System::Naive {
                res.skipped = Some(format!(
                    "no memory cgroup ({why}); the naive server is not run without a hard limit"
                ));
                return res;
            }
            None
        }
    };
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let socket = tmp.join(format!("{name}.sock"));
    let log = tmp.join(format!("{name}.log"));
    let t0 = Instant::now();
    let mut server = match system {
        System::Ringside => {
            let mut args: Vec<String> = vec!["serve".into()];
            args.extend(p.serve_flags());
            args.extend([
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--socket".into(),
                socket.display().to_string(),
                "--adopt-grace".into(),
                "100ms".into(),
            ]);
            Server::spawn(cg.as_ref(), &bins.ringside, &args, log)
        }
        System::Naive => {
            let args = vec![
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--history".into(),
                "1000000".into(),
            ];
            Server::spawn(cg.as_ref(), &bins.naive_server, &args, log)
        }
    };
    let sock = (system == System::Ringside).then_some(socket.as_path());
    if let Err(e) = server.wait_ready(port, sock) {
        res.skipped = Some(format!("server did not start: {e}"));
        return res;
    }
    let pid = server.pid();
    let sampling = Arc::new(AtomicBool::new(false));
    let sampler = spawn_sampler(pid, t0, Arc::clone(&sampling));

    // Subscribers: 1 fast, `slow` slow, `stalled` stalled; one connection each.
    let stop = Arc::new(AtomicBool::new(false));
    let target = Arc::new(AtomicU64::new(u64::MAX));
    let mut readers = Vec::new();
    for i in 0..p.fast + p.slow {
        let stats = Arc::new(SubStats::default());
        let delay = (i >= p.fast).then_some(p.slow_bps);
        let h = tokio::spawn(reader(
            system,
            endpoint.clone(),
            delay,
            Arc::clone(&stats),
            Arc::clone(&stop),
            Arc::clone(&target),
        ));
        readers.push((stats, h));
    }
    let mut holds = Vec::new();
    for _ in 0..p.stalled {
        match stalled(system, endpoint.clone()).await {
            Ok(h) => holds.push(h),
            Err(e) => eprintln!("{name}: stalled subscriber failed: {e}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The burst.
    let total = p.total_frames();
    let size = p.frame.to_string();
    let count = total.to_string();
    let producers = p.producers.to_string();
    let rate = p.rate.to_string();
    println!(
        "[{name}] {} fast, {} slow, {} stalled readers; {total} frames of {} B from {} producers at {} ({} in total, {:.0}x the {} ring)",
        p.fast,
        p.slow,
        p.stalled,
        p.frame,
        p.producers,
        if p.rate == 0 {
            "full speed".to_string()
        } else {
            format!("{} frames/s", p.rate)
        },
        mib(total * p.frame),
        (total * p.frame) as f64 / p.ring as f64,
        mib(p.ring)
    );
    let load = match system {
        System::Ringside => Command::new(&bins.ringside)
            .arg("load")
            .arg("--socket")
            .arg(&socket)
            .args(["--rate", &rate, "--size", &size, "--count", &count])
            .args([
                "--producers",
                &producers,
                "--topics",
                "4",
                "--duration",
                "600s",
            ])
            .args(["--json", "--quiet"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn(),
        System::Naive => Command::new(&bins.naive_load)
            .args(["--endpoint", &endpoint, "--size", &size, "--count", &count])
            .args(["--producers", &producers, "--topics", "4", "--rate", &rate])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn(),
    };
    let t_load = Instant::now();
    let (json, wall) = match load {
        Ok(child) => tokio::task::spawn_blocking(move || run_to_json(child))
            .await
            .unwrap_or((serde_json::Value::Null, 0.0)),
        Err(e) => {
            res.skipped = Some(format!("load did not start: {e}"));
            return res;
        }
    };
    res.written = json["sent"].as_u64().unwrap_or(0);
    res.written_bytes = json["sent_bytes"].as_u64().unwrap_or(0);
    res.load_s = json["elapsed_s"].as_f64().unwrap_or(wall);
    if let Some(e) = json["error"].as_str() {
        println!("[{name}] load ended with an error: {e}");
    }
    println!(
        "[{name}] wrote {} frames ({}) in {:.2} s; draining (at most {:?})",
        res.written,
        mib(res.written_bytes),
        res.load_s,
        p.drain
    );

    // Let readers account for every frame written (bounded).
    target.store(res.written, Ordering::Relaxed);
    let drain_end = Instant::now() + p.drain;
    let mut last_print = Instant::now();
    while Instant::now() < drain_end {
        let alive = matches!(server.child.try_wait(), Ok(None));
        let all_done = readers
            .iter()
            .all(|(s, h)| s.done.load(Ordering::Relaxed) || h.is_finished());
        if all_done || !alive {
            break;
        }
        if last_print.elapsed() > Duration::from_secs(1) {
            let got: u64 = readers
                .iter()
                .map(|(s, _)| s.frames.load(Ordering::Relaxed))
                .sum();
            let rss = proc_status(pid).map(|x| x.0).unwrap_or(0);
            println!(
                "[{name}]   delivered {got} frames so far, RssAnon {}",
                mib(rss)
            );
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    res.window_s = t_load.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for (_, h) in &mut readers {
        let _ = tokio::time::timeout(Duration::from_secs(2), h).await;
    }
    drop(holds);
    tokio::time::sleep(Duration::from_millis(200)).await;
    sampling.store(true, Ordering::Relaxed);
    res.samples = sampler.join().unwrap_or_default();
    // Times relative to the start of the burst.
    let offset = t_load.duration_since(t0).as_secs_f64();
    for x in &mut res.samples {
        x.t -= offset;
    }

    let alive = matches!(server.child.try_wait(), Ok(None));
    let status = server.stop(Duration::from_secs(10));
    if let Some(cg) = &cg {
        res.cg_max_usage = cg.read_u64("memory.max_usage_in_bytes");
        res.cg_failcnt = cg.read_u64("memory.failcnt");
        res.oom_kills = cg.oom_kills();
    }
    let killed = !alive
        && status.is_some_and(|s| {
            use std::os::unix::process::ExitStatusExt;
            s.signal() == Some(9)
        });
    res.outcome = if killed || res.oom_kills > 0 {
        let at = res.samples.last().map(|s| s.t).unwrap_or(0.0);
        format!(
            "**OOM-killed** (SIGKILL, cgroup oom_kill {}) {at:.2} s into the load, after about {} had been written",
            res.oom_kills,
            mib(res.written_bytes)
        )
    } else if !alive {
        format!("exited: {status:?}: {}", server.stderr())
    } else {
        "survived".into()
    };
    res.readers = readers.len();
    for (i, (s, _)) in readers.iter().enumerate() {
        let frames = s.frames.load(Ordering::Relaxed);
        let lost = s.reported_lost.load(Ordering::Relaxed);
        res.delivered_frames += frames;
        res.delivered_bytes += s.bytes.load(Ordering::Relaxed);
        res.reported_lost += lost;
        res.counted_lost += res.written.saturating_sub(frames);
        if s.done.load(Ordering::Relaxed) {
            res.subscribers_finished += 1;
        }
        if i < p.fast {
            // Mean over the fast readers; time until the last one finished.
            res.fast_frames += frames / p.fast as u64;
            let t = s
                .done_at
                .lock()
                .expect("lock")
                .map(|t| t.duration_since(t_load).as_secs_f64())
                .unwrap_or(res.window_s);
            res.fast_s = res.fast_s.max(t);
        }
        if let Some(e) = s.error.lock().expect("lock").as_ref() {
            if i < 3 || i + 3 > p.fast + p.slow {
                println!("[{name}]   subscriber {i} ended: {e}");
            }
        } else if !s.done.load(Ordering::Relaxed) {
            println!(
                "[{name}]   subscriber {i} incomplete: {frames} frames + {lost} reported lost, at seq {} of {}",
                s.resume.load(Ordering::Relaxed),
                res.written
            );
        }
    }
    res.peak_anon = res.samples.iter().map(|s| s.anon).max().unwrap_or(0);
    res.peak_shmem = res.samples.iter().map(|s| s.shmem).max().unwrap_or(0);
    println!(
        "[{name}] {}; peak RssAnon {}; delivered {} frames; losses reported {} / counted {}",
        res.outcome,
        mib(res.peak_anon),
        res.delivered_frames,
        res.reported_lost,
        res.counted_lost
    );
    drop(cg);
    res
}

/// Paths of the binaries the harness runs.
#[derive(Debug)]
struct Bins {
    ringside: PathBuf,
    naive_server: PathBuf,
    naive_load: PathBuf,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:").map(|r| r.trim().to_string()))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "{cores} cores ({cpu}), {mem} RAM, Linux {kernel}; load average at the end of the run {load} (the machine is shared, so latency tails vary from run to run)"
    )
}

fn table(results: &[RunResult], p: &Params) -> String {
    let mut t = String::new();
    let _ = write!(t, "| measure |");
    for r in results {
        let _ = write!(t, " {} |", r.system);
    }
    let _ = write!(t, "\n|---|");
    for _ in results {
        let _ = write!(t, "---|");
    }
    t.push('\n');
    type Row = (&'static str, fn(&RunResult) -> String);
    let rows: [Row; 13] = [
        ("outcome", |r| r.outcome.clone()),
        ("memory limit (cgroup hard limit)", |r| mib(r.limit)),
        ("peak RssAnon (private memory)", |r| mib(r.peak_anon)),
        ("peak RssShmem (the ring)", |r| mib(r.peak_shmem)),
        ("cgroup peak usage / failcnt", |r| {
            format!("{} / {}", mib(r.cg_max_usage), r.cg_failcnt)
        }),
        ("written by producers", |r| {
            format!("{} frames, {}", r.written, mib(r.written_bytes))
        }),
        ("ingest rate", |r| {
            format!(
                "{:.0} MiB/s ({:.2} s)",
                r.written_bytes as f64 / MIB / r.load_s.max(1e-9),
                r.load_s
            )
        }),
        ("producer wall time per frame (per producer thread)", |r| {
            if r.written == 0 {
                "-".into()
            } else {
                format!(
                    "{:.0} ns",
                    r.load_s * 1e9 * PRODUCERS as f64 / r.written as f64
                )
            }
        }),
        ("fast reader: frames received, rate", |r| {
            format!(
                "{} frames, {:.0} frames/s over {:.2} s",
                r.fast_frames,
                r.fast_frames as f64 / r.fast_s.max(1e-9),
                r.fast_s
            )
        }),
        ("all fast and slow readers: frames received", |r| {
            format!("{} frames, {}", r.delivered_frames, mib(r.delivered_bytes))
        }),
        ("losses reported in-band (fast and slow readers)", |r| {
            r.reported_lost.to_string()
        }),
        (
            "losses counted: written − received (fast and slow readers)",
            |r| r.counted_lost.to_string(),
        ),
        ("readers that accounted for every written frame", |r| {
            format!("{}/{}", r.subscribers_finished, r.readers)
        }),
    ];
    for (name, f) in rows {
        let _ = write!(t, "| {name} |");
        for r in results {
            match &r.skipped {
                Some(why) if name == "outcome" => {
                    let _ = write!(t, " skipped: {why} |");
                }
                Some(_) => t.push_str(" |"),
                None => {
                    let _ = write!(t, " {} |", f(r));
                }
            }
        }
        t.push('\n');
    }
    let _ = writeln!(
        t,
        "\nWorkload: {} producers write {} frames of {} B payload as fast as they can ({}x the {} ring); subscribers: 1 fast, {} slow (each takes at most {} of payload per second), {} stalled (never read), each on its own connection, all from the earliest frame. The run ends when every reader has accounted for every written frame, {:?} after the burst, or when the server dies.",
        p.producers,
        p.total_frames(),
        p.frame,
        p.laps,
        mib(p.ring),
        p.slow,
        mib(p.slow_bps),
        p.stalled,
        p.drain
    );
    t
}

/// Result of one steady-rate latency run.
#[derive(Debug, Default)]
struct LatResult {
    system: String,
    rate: u64,
    written: u64,
    received: u64,
    reported_lost: u64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    peak_anon: u64,
    note: String,
}

/// Steady rate: one producer process at `rate` frames/s of 64 B payloads for
/// `secs`, one reader from the newest frame; latency = receive time minus the
/// producer's clock written into payload bytes 8..16.
async fn run_latency(
    system: System,
    bins: &Bins,
    p: &Params,
    rate: u64,
    secs: u64,
    tmp: &Path,
) -> LatResult {
    let name = match system {
        System::Ringside => "ringside",
        System::Naive => "naive",
    };
    let mut res = LatResult {
        system: name.into(),
        rate,
        ..Default::default()
    };
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let socket = tmp.join(format!("lat-{name}-{rate}.sock"));
    let log = tmp.join(format!("lat-{name}-{rate}.log"));
    let mut server = match system {
        System::Ringside => {
            let mut args: Vec<String> = vec!["serve".into()];
            args.extend(p.serve_flags());
            args.extend([
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--socket".into(),
                socket.display().to_string(),
                "--adopt-grace".into(),
                "100ms".into(),
            ]);
            Server::spawn(None, &bins.ringside, &args, log)
        }
        System::Naive => {
            let args = vec![
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--history".into(),
                "1000000".into(),
            ];
            Server::spawn(None, &bins.naive_server, &args, log)
        }
    };
    let sock = (system == System::Ringside).then_some(socket.as_path());
    if let Err(e) = server.wait_ready(port, sock) {
        res.note = format!("server did not start: {e}");
        return res;
    }
    let pid = server.pid();
    let sampling = Arc::new(AtomicBool::new(false));
    let sampler = spawn_sampler(pid, Instant::now(), Arc::clone(&sampling));
    let stop = Arc::new(AtomicBool::new(false));
    let hist = Arc::new(Mutex::new(
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram"),
    ));
    let received = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, hist, received, lost, endpoint) = (
            Arc::clone(&stop),
            Arc::clone(&hist),
            Arc::clone(&received),
            Arc::clone(&lost),
            endpoint.clone(),
        );
        tokio::spawn(async move {
            let ch = connect(&endpoint).await?;
            let record = |payloads: &mut dyn Iterator<Item = &[u8]>| {
                let now = ringside_naive::now_ns();
                let mut h = hist.lock().expect("lock");
                for pl in payloads {
                    received.fetch_add(1, Ordering::Relaxed);
                    if let Some(b) = pl.get(8..16) {
                        let sent = u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
                        let _ = h.record(now.saturating_sub(sent).max(1));
                    }
                }
            };
            match system {
                System::Ringside => {
                    let mut c = RingsideClient::new(ch);
                    let req = ringside_proto::v1::SubscribeRequest {
                        start: Some(Start::Latest(true)),
                        ..Default::default()
                    };
                    let mut s = c
                        .subscribe(req)
                        .await
                        .map_err(|e| e.to_string())?
                        .into_inner();
                    while !stop.load(Ordering::Relaxed) {
                        match tokio::time::timeout(Duration::from_millis(200), s.message()).await {
                            Ok(Ok(Some(b))) => {
                                record(&mut b.frames.iter().map(|f| &f.payload[..]));
                                let l: u64 = b.losses.iter().map(|l| l.frames).sum();
                                lost.fetch_add(l, Ordering::Relaxed);
                            }
                            Ok(_) => break,
                            Err(_) => {}
                        }
                    }
                }
                System::Naive => {
                    let mut c = NaiveClient::new(ch);
                    let req = ringside_naive::v1::SubscribeRequest {
                        from_history: false,
                    };
                    let mut s = c
                        .subscribe(req)
                        .await
                        .map_err(|e| e.to_string())?
                        .into_inner();
                    while !stop.load(Ordering::Relaxed) {
                        match tokio::time::timeout(Duration::from_millis(200), s.message()).await {
                            Ok(Ok(Some(b))) => {
                                record(&mut b.frames.iter().map(|f| &f.payload[..]));
                            }
                            Ok(_) => break,
                            Err(_) => {}
                        }
                    }
                }
            }
            Ok::<(), String>(())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let count = (rate * secs).to_string();
    let rate_s = rate.to_string();
    let load = match system {
        System::Ringside => Command::new(&bins.ringside)
            .arg("load")
            .arg("--socket")
            .arg(&socket)
            .args(["--rate", &rate_s, "--size", "64", "--count", &count])
            .args(["--producers", "1", "--topics", "4", "--duration", "600s"])
            .args(["--json", "--quiet"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn(),
        System::Naive => Command::new(&bins.naive_load)
            .args(["--endpoint", &endpoint, "--size", "64", "--count", &count])
            .args(["--producers", "1", "--topics", "4", "--rate", &rate_s])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn(),
    };
    let (json, _) = match load {
        Ok(child) => tokio::task::spawn_blocking(move || run_to_json(child))
            .await
            .unwrap_or((serde_json::Value::Null, 0.0)),
        Err(e) => {
            res.note = format!("load did not start: {e}");
            return res;
        }
    };
    res.written = json["sent"].as_u64().unwrap_or(0);
    // Let the reader take the last frames (bounded).
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline
        && received.load(Ordering::Relaxed) + lost.load(Ordering::Relaxed) < res.written
        && !reader.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    match tokio::time::timeout(Duration::from_secs(2), reader).await {
        Ok(Ok(Err(e))) => res.note = format!("reader: {e}"),
        Ok(Err(e)) => res.note = format!("reader: {e}"),
        _ => {}
    }
    sampling.store(true, Ordering::Relaxed);
    res.peak_anon = sampler
        .join()
        .unwrap_or_default()
        .iter()
        .map(|s| s.anon)
        .max()
        .unwrap_or(0);
    let _ = server.stop(Duration::from_secs(10));
    res.received = received.load(Ordering::Relaxed);
    res.reported_lost = lost.load(Ordering::Relaxed);
    let h = hist.lock().expect("lock");
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    res.p50_us = us(0.5);
    res.p99_us = us(0.99);
    res.p999_us = us(0.999);
    res.max_us = h.max() as f64 / 1000.0;
    println!(
        "[{name} {rate}/s] received {} of {} frames (lost reported {}): p50 {:.0} us, p99 {:.0} us, p999 {:.0} us, max {:.0} us; peak RssAnon {}",
        res.received,
        res.written,
        res.reported_lost,
        res.p50_us,
        res.p99_us,
        res.p999_us,
        res.max_us,
        mib(res.peak_anon)
    );
    res
}

fn latency_table(results: &[LatResult], secs: u64) -> String {
    let mut t = String::from(
        "| system | rate (frames/s) | written | received | losses reported | p50 | p99 | p99.9 | max | peak RssAnon |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {} |{}",
            r.system,
            r.rate,
            r.written,
            r.received,
            r.reported_lost,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            r.max_us,
            mib(r.peak_anon),
            if r.note.is_empty() {
                String::new()
            } else {
                format!(" {}", r.note)
            }
        );
    }
    let _ = writeln!(
        t,
        "\nOne producer process (`ringside load --rate R --size 64` / `naive-load --rate R --size 64`) for {secs} s, one reader from the newest frame in the harness process; latency is the reader's receive time minus the producer's clock stored in payload bytes 8..16 (same host, same clock), recorded in an HDR histogram. No cgroup limit in this scenario."
    );
    t
}

fn fanout_table(results: &[(usize, RunResult)], p: &Params, budget: u64) -> String {
    let mut t = String::from(
        "| system | subscribers (fast/slow/stalled) | outcome | written | delivered, all readers | mean per fast reader | losses reported | losses counted | readers complete | peak RssAnon |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (n, r) in results {
        let (slow, stalled) = (n / 10, n / 10);
        let fast = n - slow - stalled;
        if let Some(why) = &r.skipped {
            let _ = writeln!(
                t,
                "| {} | {n} ({fast}/{slow}/{stalled}) | skipped: {why} | | | | | | | |",
                r.system
            );
            continue;
        }
        let _ = writeln!(
            t,
            "| {} | {n} ({fast}/{slow}/{stalled}) | {} | {} frames | {:.0} frames/s, {:.0} MiB/s | {} frames | {} | {} | {}/{} | {} |",
            r.system,
            r.outcome,
            r.written,
            r.delivered_frames as f64 / r.window_s.max(1e-9),
            r.delivered_bytes as f64 / MIB / r.window_s.max(1e-9),
            r.fast_frames,
            r.reported_lost,
            r.counted_lost,
            r.subscribers_finished,
            r.readers,
            mib(r.peak_anon),
        );
    }
    let _ = writeln!(
        t,
        "\n{} producers at {} frames/s in total, {} B payloads, for {} s ({} frames); slow readers take at most {} of payload per second; stalled ones never read; every reader on its own connection from the earliest frame. ringside: `serve {}`; both servers in a cgroup limited to its budget, {}. Rates are over the whole run (burst start until every reader is complete, {:?} after the load ends, or the server dies).",
        p.producers,
        p.rate,
        p.frame,
        p.lat_secs,
        p.total_frames(),
        mib(p.slow_bps),
        p.serve_flags().join(" "),
        mib(budget),
        p.drain
    );
    t
}

/// Physical limits measured in the same run.
#[derive(Debug, Default)]
struct Limits {
    tcp_gib_s: f64,
    memcpy_gib_s: f64,
    bytes: u64,
}

/// Raw loopback TCP (one connection, 256 KiB writes and reads) and memcpy
/// (64 MiB buffers) bandwidth, `bytes` each.
fn measure_limits(bytes: u64) -> Limits {
    use std::io::Write;
    const CHUNK: usize = 256 << 10;
    let mut l = Limits {
        bytes,
        ..Default::default()
    };
    if let Ok(listener) = TcpListener::bind("127.0.0.1:0") {
        if let Ok(addr) = listener.local_addr() {
            let rx = std::thread::spawn(move || {
                let (mut s, _) = listener.accept().ok()?;
                let mut buf = vec![0u8; CHUNK];
                let mut got = 0u64;
                let t = Instant::now();
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n as u64,
                    }
                }
                Some((got, t.elapsed().as_secs_f64()))
            });
            if let Ok(mut s) = TcpStream::connect(addr) {
                let buf = vec![0x5Au8; CHUNK];
                let mut sent = 0u64;
                while sent < bytes {
                    if s.write_all(&buf).is_err() {
                        break;
                    }
                    sent += CHUNK as u64;
                }
                drop(s);
            }
            if let Ok(Some((got, secs))) = rx.join() {
                l.tcp_gib_s = got as f64 / (1u64 << 30) as f64 / secs.max(1e-9);
            }
        }
    }
    let src = vec![0xA5u8; 64 << 20];
    let mut dst = vec![0u8; 64 << 20];
    let rounds = (bytes / src.len() as u64).max(1);
    let t = Instant::now();
    for _ in 0..rounds {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    }
    l.memcpy_gib_s =
        (rounds * src.len() as u64) as f64 / (1u64 << 30) as f64 / t.elapsed().as_secs_f64();
    l
}

fn limits_table(l: &Limits, burst: &[RunResult]) -> String {
    let mut t = String::from("| limit | measured |\n|---|---|\n");
    let _ = writeln!(
        t,
        "| raw loopback TCP, one connection, 256 KiB writes | {:.2} GiB/s |",
        l.tcp_gib_s
    );
    let _ = writeln!(
        t,
        "| memcpy, 64 MiB buffers | {:.2} GiB/s |",
        l.memcpy_gib_s
    );
    for r in burst
        .iter()
        .filter(|r| r.skipped.is_none() && r.load_s > 0.0)
    {
        let gib_s = r.written_bytes as f64 / (1u64 << 30) as f64 / r.load_s;
        let _ = writeln!(
            t,
            "| {} burst ingest (producers' payload bytes) | {:.2} GiB/s = {:.0}% of memcpy |",
            r.system,
            gib_s,
            100.0 * gib_s / l.memcpy_gib_s.max(1e-9)
        );
    }
    let _ = writeln!(
        t,
        "\n{} MiB each, measured in the same run, before the scenarios, with nothing else of the harness running.",
        l.bytes >> 20
    );
    t
}

fn write_csv(path: &Path, samples: &[Sample]) -> std::io::Result<()> {
    let mut s = String::from("t_s,rss_anon_bytes,rss_shmem_bytes\n");
    for x in samples {
        let _ = writeln!(s, "{:.3},{},{}", x.t, x.anon, x.shmem);
    }
    std::fs::write(path, s)
}

fn plot(path: &Path, results: &[RunResult], limit: u64) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let t_min = results
        .iter()
        .flat_map(|r| r.samples.iter().map(|s| s.t))
        .fold(0.0f64, f64::min);
    let t_max = results
        .iter()
        .flat_map(|r| r.samples.iter().map(|s| s.t))
        .fold(1.0f64, f64::max);
    let y_max = results
        .iter()
        .flat_map(|r| r.samples.iter().map(|s| s.anon.max(s.shmem)))
        .fold(limit, u64::max) as f64
        / MIB
        * 1.1;
    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Server memory during a burst with slow and stalled subscribers",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(t_min..t_max * 1.02, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the burst started")
        .y_desc("MiB")
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            [
                (t_min, limit as f64 / MIB),
                (t_max * 1.02, limit as f64 / MIB),
            ],
            BLACK.stroke_width(1),
        ))?
        .label("cgroup hard limit = ringside budget")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    let styles = [
        ("ringside", RGBColor(0, 110, 200)),
        ("naive", RGBColor(210, 40, 40)),
    ];
    for r in results {
        let Some(&(_, color)) = styles.iter().find(|(n, _)| *n == r.system) else {
            continue;
        };
        chart
            .draw_series(LineSeries::new(
                r.samples.iter().map(|s| (s.t, s.anon as f64 / MIB)),
                color.stroke_width(2),
            ))?
            .label(format!("{} RssAnon", r.system))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        if r.system == "ringside" {
            chart
                .draw_series(LineSeries::new(
                    r.samples.iter().map(|s| (s.t, s.shmem as f64 / MIB)),
                    color.mix(0.4).stroke_width(1),
                ))?
                .label("ringside RssShmem (the ring)")
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.mix(0.4).stroke_width(1))
                });
        }
        if r.system == "ringside" && r.load_s > 0.0 {
            let y = r.samples.iter().map(|s| s.anon).max().unwrap_or(0) as f64 / MIB;
            chart.draw_series(std::iter::once(Text::new(
                format!(
                    "ringside: all {} written by t = {:.2} s",
                    mib(r.written_bytes),
                    r.load_s
                ),
                (r.load_s, y + y_max * 0.04),
                ("sans-serif", 14).into_font().color(&color),
            )))?;
        }
        if r.outcome.contains("OOM") {
            if let Some(last) = r.samples.last() {
                chart.draw_series(std::iter::once(Text::new(
                    format!("naive: OOM-killed after ~{} written", mib(r.written_bytes)),
                    (last.t, last.anon as f64 / MIB * 1.03),
                    ("sans-serif", 14).into_font().color(&color),
                )))?;
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let full = args.full;
    let p = if full {
        Params {
            mode: "--full",
            ring: 16 << 20,
            ring_flag: "16MiB".into(),
            laps: 300,
            frame: 1024,
            producers: PRODUCERS,
            fast: 1,
            slow: 5,
            stalled: 2,
            slow_bps: 2 << 20,
            rate: 0,
            frames: 0,
            max_subs: 12,
            drain: Duration::from_secs(20),
            lat_secs: 10,
        }
    } else {
        Params {
            mode: "--quick",
            ring: 4 << 20,
            ring_flag: "4MiB".into(),
            laps: 100,
            frame: 1024,
            producers: PRODUCERS,
            fast: 1,
            slow: 5,
            stalled: 2,
            slow_bps: 2 << 20,
            rate: 0,
            frames: 0,
            max_subs: 12,
            drain: Duration::from_secs(15),
            lat_secs: 3,
        }
    };
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .ok_or("executable has no directory")?
            .to_path_buf(),
    };
    let bins = Bins {
        ringside: bin_dir.join("ringside"),
        naive_server: bin_dir.join("naive-server"),
        naive_load: bin_dir.join("naive-load"),
    };
    for b in [&bins.ringside, &bins.naive_server, &bins.naive_load] {
        if !b.exists() {
            return Err(format!(
                "{} not found; build with `cargo build --release -p ringside-naive -p ringside`",
                b.display()
            )
            .into());
        }
    }
    let budget = budget_bytes(&bins.ringside, &p)?;
    println!(
        "e2e {}: ringside budget for `serve {}` = {} ({budget} bytes); both servers get it as their cgroup hard limit",
        p.mode,
        p.serve_flags().join(" "),
        mib(budget)
    );
    // Fan-out: 1, 10, 100 subscribers at a steady rate; a tenth slow, a tenth stalled.
    let fanout: Vec<(usize, Params)> = [1usize, 10, 100]
        .iter()
        .map(|&n| {
            let mut f = p.clone();
            f.slow = n / 10;
            f.stalled = n / 10;
            f.fast = n - f.slow - f.stalled;
            f.rate = FANOUT_RATE;
            f.frames = FANOUT_RATE * p.lat_secs;
            f.max_subs = 128;
            // Long enough for a slow reader to read a ring's worth after the load.
            f.drain = Duration::from_secs(3 + 3 * p.ring / p.slow_bps / 2);
            (n, f)
        })
        .collect();
    let fan_budget = budget_bytes(&bins.ringside, &fanout[0].1)?;
    let tmp = std::env::temp_dir().join(format!("ringside-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    println!("limits: raw loopback TCP and memcpy bandwidth ...");
    let limits = measure_limits(if full { 8 << 30 } else { 2 << 30 });
    println!(
        "limits: loopback TCP {:.2} GiB/s, memcpy {:.2} GiB/s",
        limits.tcp_gib_s, limits.memcpy_gib_s
    );
    let (results, lat, fan) = rt.block_on(async {
        let mut v = Vec::new();
        for sys in [System::Ringside, System::Naive] {
            v.push(run_system(sys, &bins, &p, budget, &tmp).await);
        }
        let mut l = Vec::new();
        for rate in [10_000u64, 100_000] {
            for sys in [System::Ringside, System::Naive] {
                l.push(run_latency(sys, &bins, &p, rate, p.lat_secs, &tmp).await);
            }
        }
        let mut f = Vec::new();
        for (n, fp) in &fanout {
            for sys in [System::Ringside, System::Naive] {
                f.push((*n, run_system(sys, &bins, fp, fan_budget, &tmp).await));
            }
        }
        (v, l, f)
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    let _ = std::fs::remove_dir_all(&tmp);
    let tbl = table(&results, &p);
    println!("\n{tbl}");
    let ltbl = latency_table(&lat, p.lat_secs);
    println!("{ltbl}");
    let ftbl = fanout_table(&fan, &fanout[0].1, fan_budget);
    println!("{ftbl}");
    let ltbl2 = limits_table(&limits, &results);
    println!("{ltbl2}");
    println!("total run time {:.1} s", started.elapsed().as_secs_f64());
    if args.no_write {
        return Ok(());
    }
    let data = args.out.join("bench-data");
    std::fs::create_dir_all(&data)?;
    for r in &results {
        if r.skipped.is_none() {
            write_csv(&data.join(format!("burst-{}.csv", r.system)), &r.samples)?;
        }
    }
    plot(&data.join("memory-burst.svg"), &results, budget)?;
    let m = Measured {
        burst: &results,
        lat: &lat,
        fan: &fan,
    };
    let md = report(&p, &[&tbl, &ltbl, &ftbl, &ltbl2], budget, &m);
    std::fs::write(args.out.join("benchmarks.md"), md)?;
    println!(
        "wrote {}, {}/burst-*.csv, {}/memory-burst.svg",
        args.out.join("benchmarks.md").display(),
        data.display(),
        data.display()
    );
    Ok(())
}

/// Everything measured in one run.
struct Measured<'a> {
    burst: &'a [RunResult],
    lat: &'a [LatResult],
    fan: &'a [(usize, RunResult)],
}

/// Goal checks from shared/BRIEF.md against this run's numbers.
fn goals(m: &Measured<'_>, budget: u64) -> String {
    let mut s = String::new();
    let yes = |b: bool| if b { "met" } else { "**not met**" };
    if let Some(r) = m
        .burst
        .iter()
        .find(|r| r.system == "ringside" && r.skipped.is_none())
    {
        let n = r.samples.len();
        let during: Vec<u64> = r
            .samples
            .iter()
            .filter(|x| x.t >= 0.0)
            .map(|x| x.anon)
            .collect();
        let half = during.len() / 2;
        let first = during[..half].iter().copied().max().unwrap_or(0);
        let second = during[half..].iter().copied().max().unwrap_or(0);
        let _ = writeln!(
            s,
            "- RssAnon bounded under the burst, below the budget: peak {} vs budget {} ({n} samples; max in the first half of the run {}, second half {}): {}. The brief's \"flat within 5%\" is not evaluated by the harness; the samples are in the CSV.",
            mib(r.peak_anon),
            mib(budget),
            mib(first),
            mib(second),
            yes(r.peak_anon < budget && r.outcome == "survived")
        );
    }
    let mut agree = true;
    let mut checked = 0;
    for r in m.burst.iter().chain(m.fan.iter().map(|(_, r)| r)) {
        if r.system == "ringside" && r.skipped.is_none() {
            checked += 1;
            agree &= r.reported_lost == r.counted_lost && r.subscribers_finished == r.readers;
        }
    }
    let _ = writeln!(
        s,
        "- No silent loss: ringside's reported losses equal the harness's count, with every reader complete, in {checked} of {checked} runs: {}.",
        yes(agree)
    );
    for r in m
        .lat
        .iter()
        .filter(|r| r.system == "ringside" && r.rate == 10_000)
    {
        let _ = writeln!(
            s,
            "- Latency at 10k frames/s, p50 ≤ 60 µs and p99 ≤ 300 µs: p50 {:.0} µs ({}), p99 {:.0} µs ({}). The reader here is a tonic client in the harness process, on a 2-core machine shared with the producer, the sidecar and other work.",
            r.p50_us,
            yes(r.p50_us <= 60.0),
            r.p99_us,
            yes(r.p99_us <= 300.0)
        );
    }
    for rate in [10_000u64, 100_000] {
        let find = |sys: &str| m.lat.iter().find(|r| r.system == sys && r.rate == rate);
        if let (Some(a), Some(b)) = (find("ringside"), find("naive")) {
            let _ = writeln!(
                s,
                "- Latency at {rate} frames/s, ringside vs naive: p50 {:.0} vs {:.0} µs, p99 {:.0} vs {:.0} µs, p99.9 {:.0} vs {:.0} µs{}",
                a.p50_us,
                b.p50_us,
                a.p99_us,
                b.p99_us,
                a.p999_us,
                b.p999_us,
                if a.p99_us > b.p99_us {
                    ": ringside's tail is **worse** than the naive server's in this run (not yet explained; a millisecond-scale timer on ringside's wake or retry path is a suspect, unverified)."
                } else {
                    "."
                }
            );
        }
    }
    if let Some(r) = m.burst.iter().find(|r| r.system == "naive") {
        let _ = writeln!(
            s,
            "- The naive design, same workload, same limit: {}.",
            r.skipped.clone().unwrap_or_else(|| r.outcome.clone())
        );
    }
    let _ = writeln!(
        s,
        "- Not shown by this harness yet: serving bandwidth to one subscriber as a fraction of raw loopback TCP, 64 B frames/s to one subscriber, producer write cost (see benchmarks-producer.md for the criterion numbers). The burst's \"fast reader\" rate is not a bandwidth figure: that reader shares 2 cores with producers writing at full speed and is lapped most of the time."
    );
    s
}

fn report(p: &Params, tables: &[&str; 4], budget: u64, m: &Measured<'_>) -> String {
    let [tbl, ltbl, ftbl, limits] = *tables;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Benchmarks: ringside vs a naive gRPC telemetry server\n"
    );
    let _ = writeln!(
        s,
        "Generated by `benches/naive/src/bin/e2e.rs`. Producer micro-benchmarks are in [benchmarks-producer.md](benchmarks-producer.md).\n"
    );
    let _ = writeln!(s, "![memory over time](bench-data/memory-burst.svg)\n");
    let _ = writeln!(s, "## Burst with slow and stalled subscribers\n");
    let _ = writeln!(
        s,
        "Reproduce:\n\n```sh\ncargo build --release -p ringside-naive -p ringside\ntarget/release/e2e {}\n```\n",
        p.mode
    );
    let _ = writeln!(
        s,
        "Machine: {}. Run as root (it creates cgroup v1 memory groups under `/sys/fs/cgroup/memory`).\n",
        machine()
    );
    let _ = writeln!(
        s,
        "ringside: `ringside serve {}` (budget {} = {budget} bytes, printed by `--print-budget`). Naive: `naive-server --history 1000000` (`benches/naive/`): producers push over a gRPC client stream, history in a `VecDeque`, one unbounded tokio channel per subscriber, frames cloned per subscriber and re-encoded into batches of up to 256 frames. Both run in a cgroup v1 memory group whose `memory.limit_in_bytes` is ringside's budget.\n",
        p.serve_flags().join(" "),
        mib(budget)
    );
    s.push_str(tbl);
    let _ = writeln!(
        s,
        "\nRaw samples (RssAnon and RssShmem from `/proc/<pid>/status` every 20 ms): `bench-data/burst-ringside.csv`, `bench-data/burst-naive.csv`.\n"
    );
    let _ = writeln!(s, "### Reading the table\n");
    let _ = writeln!(
        s,
        "- *losses reported* is what the server told its readers in-band (ringside's `Batch.losses`; the naive server has no loss reporting). *losses counted* is the harness's own count over the fast and slow readers: frames written minus frames received. For ringside they must be equal once every reader has caught up (the readers column). For the naive server the difference is frames that were queued for a reader when the run ended or the server died: nothing tells the reader."
    );
    let _ = writeln!(
        s,
        "- ringside's RssShmem is the ring itself (shared with the producers, counted in the budget). Its RssAnon is the private memory that the brief promises stays flat."
    );
    let _ = writeln!(
        s,
        "- *ingest* is the producers' rate (ringside: `ringside load --rate 0`, shared-memory writes; naive: `naive-load`, gRPC client streams), so it also differs by transport."
    );
    let _ = writeln!(s, "\n## Steady rate: end-to-end latency\n");
    s.push_str(ltbl);
    let _ = writeln!(s, "\n## Fan-out: 1, 10 and 100 subscribers\n");
    s.push_str(ftbl);
    let _ = writeln!(s, "\n## Physical limits (same run)\n");
    s.push_str(limits);
    let _ = writeln!(s, "\n## Against the goals in shared/BRIEF.md (this run)\n");
    s.push_str(&goals(m, budget));
    let _ = writeln!(s, "\n## Not measured yet\n");
    let _ = writeln!(
        s,
        "- the Unix-datagram producer baseline, and ratios of ringside's serving figures to the physical limits above (issue 5). Until then, the goals in shared/BRIEF.md for serving bandwidth are not shown here."
    );
    s
}
