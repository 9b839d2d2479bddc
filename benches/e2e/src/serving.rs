//! Serving throughput and idle CPU: ringside vs a plain tonic server that
//! streams pre-encoded bytes (`preencoded-server`), measured in the same run.
//!
//! **Throughput.** `ringside serve` gets a large ring, filled once by
//! `ringside load --rate 0` (which then exits, so no producer competes for the
//! cores while subscribers read). Subscribers (tonic `RingsideClient`s, each on
//! its own connection, decoding with prost) read from `earliest` until they
//! have a fixed number of frames, then cancel. The baseline serves prost-built
//! `Batch` messages with the same frame size, topics and frames per batch as
//! ringside sent in the same run (the largest batch of an uncounted warm-up
//! read), pre-encoded once, through a pass-through codec. Both servers run
//! side by side; each scenario is repeated with the two servers' repetitions
//! interleaved (so both see the same machine) and the median is reported.
//! Server CPU is the
//! on-CPU time summed over the server's threads (`/proc/<pid>/task/*/schedstat`,
//! nanoseconds) over all repetitions' read windows, divided by the frames
//! delivered in them; utime+stime from `/proc/<pid>/stat` is kept as a
//! cross-check (its 10 ms ticks are coarse for a quick run).
//!
//! **Idle.** The server with one connected but silent producer and one
//! subscriber waiting for data: CPU time (sum over the server's threads of
//! `/proc/<pid>/task/*/schedstat`, nanosecond resolution) and voluntary and
//! involuntary context switches (`/proc/<pid>/task/*/status`) per second.

use crate::*;
use ringside_proto::v1::InfoRequest;

/// Payload sizes of the throughput scenarios.
const FRAME_SIZES: [u64; 2] = [1024, 64];
/// The throughput scenarios per frame size, in the order they run: subscribers and how
/// they read. The raw reader reads one subscriber's rows only: it is there to show what
/// the servers send when the reader is not the bottleneck. Both one-subscriber scenarios
/// run before the 100 subscribers', whose shared chunks (kept after they leave) would
/// otherwise serve a lone subscriber's first batches.
const SCENARIOS: [(usize, ServeReader); 3] = [
    (1, ServeReader::Prost),
    (1, ServeReader::Raw),
    (100, ServeReader::Prost),
];
/// `--max-payload` of the serving scenarios (as the rest of the harness).
const MAX_FRAME: &str = "4KiB";
/// `--subscriber-buffer`: ringside's default, the largest batch it sends.
const SUBSCRIBER_BUFFER: &str = "256KiB";
/// Give up on one repetition after this long (a stuck server, not a timing check).
const REP_TIMEOUT: Duration = Duration::from_secs(120);
/// The readers' HTTP/2 stream window (as `ringside tail`).
const READER_STREAM_WINDOW: u32 = 4 << 20;
/// The readers' HTTP/2 connection window (as `ringside tail`).
const READER_CONN_WINDOW: u32 = 8 << 20;

/// Which server a serving row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServeSystem {
    /// `ringside serve`, read back from its ring.
    Ringside,
    /// `preencoded-server`.
    Preencoded,
}

impl ServeSystem {
    /// Name in tables.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Ringside => "ringside",
            Self::Preencoded => "pre-encoded tonic",
        }
    }
}

/// How a serving row's subscribers read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum ServeReader {
    /// tonic `RingsideClient`s decoding every `Batch` with prost, as a frontend does.
    #[default]
    Prost,
    /// Raw `h2` streams that count frames without decoding them (`rawread.rs`), with
    /// 1 MiB HTTP/2 frames: closer to raw TCP's reader, which only reads bytes.
    Raw,
}

impl ServeReader {
    /// Suffix of a row's server name in tables and plots.
    fn suffix(self) -> &'static str {
        match self {
            Self::Prost => "",
            Self::Raw => " (raw h2 reader)",
        }
    }
}

/// Sizes of the serving scenarios for one mode.
#[derive(Debug, Clone)]
pub(crate) struct ServingParams {
    /// Ring data bytes (`--ring-size`, and the baseline's pre-encoded bytes).
    pub(crate) ring: u64,
    /// Repetitions with one subscriber.
    pub(crate) reps_one: usize,
    /// Repetitions with 100 subscribers.
    pub(crate) reps_many: usize,
    /// Payload bytes each of the 100 subscribers reads per repetition.
    pub(crate) many_bytes_1k: u64,
    /// Frames each of the 100 subscribers reads per repetition (64 B frames).
    pub(crate) many_frames_64: u64,
    /// Length of the idle measurement.
    pub(crate) idle: Duration,
}

impl ServingParams {
    /// Quick (≤ 25 s on the dev machine) or full.
    pub(crate) fn new(full: bool) -> Self {
        if full {
            Self {
                ring: 256 << 20,
                reps_one: 5,
                reps_many: 5,
                many_bytes_1k: 24 << 20,
                many_frames_64: 160_000,
                idle: Duration::from_secs(10),
            }
        } else {
            Self {
                ring: 64 << 20,
                reps_one: 3,
                reps_many: 2,
                many_bytes_1k: 2 << 20,
                many_frames_64: 15_000,
                idle: Duration::from_secs(3),
            }
        }
    }
}

/// One repetition: what the subscribers received in the read window.
#[derive(Debug, Clone, Copy, Default)]
struct Rep {
    frames: u64,
    bytes: u64,
    secs: f64,
    /// Median and slowest per-subscriber rates (frames/s).
    per_sub_median: f64,
    per_sub_min: f64,
    cpu_ticks: u64,
    /// On-CPU nanoseconds summed over the server's threads (schedstat).
    cpu_ns: u64,
    max_batch: u64,
    /// ringside's batches with frames over the repetition, as (all, sent from another
    /// subscriber's shared chunk), from its metrics; `None` for the baseline. Counted
    /// where they are sent: a subscriber that has read its share stops reading while
    /// batches are still in flight to it.
    batches: Option<(u64, u64)>,
}

/// One serving scenario (system, frame size, subscribers), over its repetitions.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServeRow {
    pub(crate) system: &'static str,
    pub(crate) reader: ServeReader,
    pub(crate) frame: u64,
    pub(crate) subs: usize,
    /// Frames each subscriber read per repetition.
    pub(crate) frames_per_sub: u64,
    pub(crate) reps: usize,
    /// Median over repetitions of the aggregate rate.
    pub(crate) frames_s: f64,
    pub(crate) bytes_s: f64,
    /// Median over repetitions of the median and the slowest subscriber's rate.
    pub(crate) per_sub_median: f64,
    pub(crate) per_sub_min: f64,
    /// Server CPU over all read windows per frame delivered, and in cores.
    pub(crate) cpu_ns_per_frame: f64,
    /// The same from utime+stime in `/proc/<pid>/stat` (clock ticks; a cross-check).
    pub(crate) cpu_ns_per_frame_stat: f64,
    pub(crate) cpu_cores: f64,
    /// Frames per batch (ringside: the largest batch received; baseline: as built).
    pub(crate) frames_per_batch: u64,
    /// ringside: batches with frames sent over all repetitions, and how many of them
    /// came from a shared chunk (`None` when not scraped).
    pub(crate) batches: Option<(u64, u64)>,
    pub(crate) note: String,
}

/// Idle CPU of one server.
#[derive(Debug, Clone, Default)]
pub(crate) struct IdleRow {
    pub(crate) system: &'static str,
    pub(crate) setup: String,
    pub(crate) secs: f64,
    pub(crate) cpu_ns: u64,
    pub(crate) voluntary: u64,
    pub(crate) involuntary: u64,
    pub(crate) note: String,
}

impl IdleRow {
    /// CPU in percent of one core.
    pub(crate) fn cpu_pct(&self) -> f64 {
        100.0 * self.cpu_ns as f64 / 1e9 / self.secs.max(1e-9)
    }
}

/// Everything the serving scenarios measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Serving {
    pub(crate) params_ring: String,
    pub(crate) rows: Vec<ServeRow>,
    pub(crate) idle: Vec<IdleRow>,
    /// Raw loopback TCP of the same run (GiB/s), for the ratios.
    pub(crate) tcp_gib_s: f64,
    pub(crate) wall_s: f64,
    pub(crate) reps_one: usize,
    pub(crate) reps_many: usize,
    pub(crate) many_bytes_1k: u64,
    pub(crate) many_frames_64: u64,
    pub(crate) idle_secs: f64,
}

impl ServeRow {
    /// The server's name, and the reader when it is not the decoding one.
    pub(crate) fn label(&self) -> String {
        format!("{}{}", self.system, self.reader.suffix())
    }
}

impl Serving {
    /// The row of one scenario read by the decoding reader.
    pub(crate) fn row(&self, system: ServeSystem, frame: u64, subs: usize) -> Option<&ServeRow> {
        self.row_read_by(system, frame, subs, ServeReader::Prost)
    }

    /// The row of one scenario read by `reader`.
    pub(crate) fn row_read_by(
        &self,
        system: ServeSystem,
        frame: u64,
        subs: usize,
        reader: ServeReader,
    ) -> Option<&ServeRow> {
        self.rows.iter().find(|r| {
            r.system == system.name() && r.frame == frame && r.subs == subs && r.reader == reader
        })
    }

    /// ringside's rate over the baseline's, same scenario, decoding reader.
    pub(crate) fn vs_baseline(&self, frame: u64, subs: usize) -> Option<f64> {
        self.vs_baseline_read_by(frame, subs, ServeReader::Prost)
    }

    /// ringside's rate over the baseline's, same scenario and reader.
    pub(crate) fn vs_baseline_read_by(
        &self,
        frame: u64,
        subs: usize,
        reader: ServeReader,
    ) -> Option<f64> {
        let a = self.row_read_by(ServeSystem::Ringside, frame, subs, reader)?;
        let b = self.row_read_by(ServeSystem::Preencoded, frame, subs, reader)?;
        (a.frames_s > 0.0 && b.frames_s > 0.0).then(|| a.frames_s / b.frames_s)
    }

    /// A row's payload rate over raw loopback TCP.
    pub(crate) fn vs_tcp(&self, r: &ServeRow) -> f64 {
        r.bytes_s / (self.tcp_gib_s * (1u64 << 30) as f64).max(1.0)
    }
}

/// utime + stime of a process, in clock ticks (all its threads, live and exited).
fn proc_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second.
fn clk_tck() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// Sum over a process's live threads of on-CPU nanoseconds (schedstat) and
/// voluntary and involuntary context switches.
fn task_counters(pid: u32) -> (u64, u64, u64) {
    let (mut ns, mut vol, mut invol) = (0u64, 0u64, 0u64);
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return (0, 0, 0);
    };
    for e in dir.flatten() {
        let p = e.path();
        if let Ok(s) = std::fs::read_to_string(p.join("schedstat")) {
            ns += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        if let Ok(s) = std::fs::read_to_string(p.join("status")) {
            for l in s.lines() {
                let val = || {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                if l.starts_with("voluntary_ctxt_switches:") {
                    vol += val();
                } else if l.starts_with("nonvoluntary_ctxt_switches:") {
                    invol += val();
                }
            }
        }
    }
    (ns, vol, invol)
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// What one subscriber read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SubRead {
    /// Frames received.
    pub(crate) frames: u64,
    /// Their payload bytes.
    pub(crate) bytes: u64,
    /// When it subscribed.
    pub(crate) start: Instant,
    /// When its last frame arrived.
    pub(crate) end: Instant,
    /// Frames in its largest batch.
    pub(crate) max_batch: u64,
}

/// Connects a reader as `ringside tail` does (`sidecar/src/commands/client.rs`):
/// TCP_NODELAY, HTTP/2 windows of 4 MiB per stream and 8 MiB per connection.
async fn reader_connect(endpoint: &str) -> Result<Channel, String> {
    let ep = Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(READER_STREAM_WINDOW))
        .initial_connection_window_size(Some(READER_CONN_WINDOW));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ep.connect().await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => return Err(e.to_string()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Reads from `earliest` on `ch` until `target` frames (or losses) arrived.
async fn read_target(
    ch: Channel,
    target: u64,
    go: Arc<tokio::sync::Barrier>,
) -> Result<SubRead, String> {
    let mut c = RingsideClient::new(ch).max_decoding_message_size(16 << 20);
    go.wait().await;
    let start = Instant::now();
    let req = ringside_proto::v1::SubscribeRequest {
        start: Some(Start::Earliest(true)),
        ..Default::default()
    };
    let mut s = c
        .subscribe(req)
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let (mut frames, mut lost, mut bytes, mut max_batch) = (0u64, 0u64, 0u64, 0u64);
    while frames + lost < target {
        match s.message().await {
            Ok(Some(b)) => {
                let n = b.frames.len() as u64;
                frames += n;
                max_batch = max_batch.max(n);
                bytes += b.frames.iter().map(|f| f.payload.len() as u64).sum::<u64>();
                lost += b.losses.iter().map(|l| l.frames).sum::<u64>();
            }
            Ok(None) => return Err(format!("stream ended after {frames} frames")),
            Err(e) => return Err(format!("after {frames} frames: {e}")),
        }
    }
    let end = Instant::now();
    if lost > 0 {
        return Err(format!(
            "{lost} frames reported lost (nothing should lap here)"
        ));
    }
    Ok(SubRead {
        frames,
        bytes,
        start,
        end,
        max_batch,
    })
}

/// One repetition: `subs` subscribers on their own connections, started together.
async fn one_rep(t: &Target, subs: usize, target: u64, reader: ServeReader) -> Result<Rep, String> {
    let pid = t.pid;
    let go = Arc::new(tokio::sync::Barrier::new(subs + 1));
    let mut tasks = Vec::with_capacity(subs);
    for _ in 0..subs {
        let go = Arc::clone(&go);
        tasks.push(match reader {
            ServeReader::Prost => {
                let ch = reader_connect(&t.endpoint).await?;
                tokio::spawn(read_target(ch, target, go))
            }
            ServeReader::Raw => {
                let conn =
                    raw_connect(&t.endpoint, READER_STREAM_WINDOW, READER_CONN_WINDOW).await?;
                tokio::spawn(raw_read_target(conn, target, go))
            }
        });
    }
    // Outside the measured window: one GET before and after.
    let batches = |port: u16| {
        scrape_metrics(port).ok().map(|text| {
            (
                // Recorded for every batch with frames, under each cause label.
                metric_sum(&text, "ringside_batch_delay_seconds_count") as u64,
                metric_sum(&text, "ringside_shared_batches_total") as u64,
            )
        })
    };
    let batches0 = t.metrics_port.and_then(batches);
    let t0 = proc_ticks(pid).unwrap_or(0);
    let ns0 = task_counters(pid).0;
    go.wait().await;
    let mut reads = Vec::with_capacity(subs);
    let mut err = None;
    let deadline = tokio::time::Instant::now() + REP_TIMEOUT;
    for t in tasks {
        match tokio::time::timeout_at(deadline, t).await {
            Ok(Ok(Ok(r))) => reads.push(r),
            Ok(Ok(Err(e))) => err = Some(e),
            Ok(Err(e)) => err = Some(e.to_string()),
            Err(_) => err = Some(format!("not done after {REP_TIMEOUT:?}")),
        }
    }
    let t1 = proc_ticks(pid).unwrap_or(0);
    let ns1 = task_counters(pid).0;
    if let Some(e) = err {
        return Err(e);
    }
    let batches1 = t.metrics_port.and_then(batches);
    let first = reads.iter().map(|r| r.start).min().ok_or("no subscriber")?;
    let last = reads.iter().map(|r| r.end).max().ok_or("no subscriber")?;
    let mut per: Vec<f64> = reads
        .iter()
        .map(|r| r.frames as f64 / (r.end - r.start).as_secs_f64().max(1e-9))
        .collect();
    let per_sub_min = per.iter().copied().fold(f64::INFINITY, f64::min);
    Ok(Rep {
        frames: reads.iter().map(|r| r.frames).sum(),
        bytes: reads.iter().map(|r| r.bytes).sum(),
        secs: (last - first).as_secs_f64(),
        per_sub_median: median(&mut per),
        per_sub_min,
        cpu_ticks: t1.saturating_sub(t0),
        cpu_ns: ns1.saturating_sub(ns0),
        max_batch: reads.iter().map(|r| r.max_batch).max().unwrap_or(0),
        batches: batches0
            .zip(batches1)
            .map(|((all0, sh0), (all1, sh1))| (all1.saturating_sub(all0), sh1.saturating_sub(sh0))),
    })
}

/// Folds one system's repetitions into a row.
fn fold(
    system: ServeSystem,
    reader: ServeReader,
    frame: u64,
    subs: usize,
    target: u64,
    done: &[Rep],
    note: String,
) -> ServeRow {
    let mut row = ServeRow {
        system: system.name(),
        reader,
        frame,
        subs,
        frames_per_sub: target,
        reps: done.len(),
        note,
        ..Default::default()
    };
    let mut f: Vec<f64> = done.iter().map(|r| r.frames as f64 / r.secs).collect();
    let mut b: Vec<f64> = done.iter().map(|r| r.bytes as f64 / r.secs).collect();
    let mut pm: Vec<f64> = done.iter().map(|r| r.per_sub_median).collect();
    let mut pn: Vec<f64> = done.iter().map(|r| r.per_sub_min).collect();
    row.frames_s = median(&mut f);
    row.bytes_s = median(&mut b);
    row.per_sub_median = median(&mut pm);
    row.per_sub_min = median(&mut pn);
    let frames: u64 = done.iter().map(|r| r.frames).sum();
    let secs: f64 = done.iter().map(|r| r.secs).sum();
    let tick_s = done.iter().map(|r| r.cpu_ticks).sum::<u64>() as f64 / clk_tck();
    let cpu_s = done.iter().map(|r| r.cpu_ns).sum::<u64>() as f64 / 1e9;
    if frames > 0 && secs > 0.0 {
        row.cpu_ns_per_frame = cpu_s * 1e9 / frames as f64;
        row.cpu_ns_per_frame_stat = tick_s * 1e9 / frames as f64;
        row.cpu_cores = cpu_s / secs;
    }
    row.frames_per_batch = done.iter().map(|r| r.max_batch).max().unwrap_or(0);
    row.batches = done
        .iter()
        .map(|r| r.batches)
        .try_fold((0u64, 0u64), |(a, s), b| b.map(|(ba, bs)| (a + ba, s + bs)));
    println!(
        "[serving {} {} B x{}] {:.0} frames/s, {:.2} GiB/s payload (median of {}), per subscriber median {:.0} / min {:.0} frames/s; server CPU {:.0} ns/frame (utime+stime: {:.0}; {:.2} cores); up to {} frames/batch{}{}",
        row.label(),
        frame,
        subs,
        row.frames_s,
        row.bytes_s / (1u64 << 30) as f64,
        row.reps,
        row.per_sub_median,
        row.per_sub_min,
        row.cpu_ns_per_frame,
        row.cpu_ns_per_frame_stat,
        row.cpu_cores,
        row.frames_per_batch,
        row.batches
            .map_or_else(String::new, |(all, shared)| format!(
                "; {shared} of {all} batches sent from a shared chunk"
            )),
        if row.note.is_empty() {
            String::new()
        } else {
            format!("; {}", row.note)
        }
    );
    row
}

/// A server under test: which, where, its pid.
#[derive(Debug, Clone)]
struct Target {
    system: ServeSystem,
    endpoint: String,
    pid: u32,
    /// ringside's `--metrics-listen` port.
    metrics_port: Option<u16>,
}

/// Runs `reps` repetitions of one scenario on every target, interleaved
/// (ringside, baseline, ringside, ...) so that both see the same machine, and
/// folds each target's repetitions into a row.
async fn interleaved(
    targets: &[Target],
    reader: ServeReader,
    frame: u64,
    subs: usize,
    target: u64,
    reps: usize,
) -> Vec<ServeRow> {
    let mut done: Vec<Vec<Rep>> = vec![Vec::new(); targets.len()];
    let mut notes: Vec<String> = vec![String::new(); targets.len()];
    for _ in 0..reps {
        for (i, t) in targets.iter().enumerate() {
            if !notes[i].is_empty() {
                continue;
            }
            match one_rep(t, subs, target, reader).await {
                Ok(r) => done[i].push(r),
                Err(e) => notes[i] = e,
            }
            settle(t).await;
        }
    }
    targets
        .iter()
        .zip(done.iter().zip(notes))
        .map(|(t, (d, n))| fold(t.system, reader, frame, subs, target, d, n))
        .collect()
}

/// Lets a server see the cancelled streams and closed connections go.
async fn settle(t: &Target) {
    if t.system == ServeSystem::Ringside {
        wait_no_subscribers(&t.endpoint).await;
    } else {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until ringside reports no active subscriber.
async fn wait_no_subscribers(endpoint: &str) {
    let Ok(ch) = connect(endpoint).await else {
        return;
    };
    let mut c = RingsideClient::new(ch);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match c.info(InfoRequest {}).await {
            Ok(i) if i.get_ref().subscribers_active == 0 => return,
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(_) => return,
        }
    }
}

/// Starts `ringside serve` for the serving scenarios, with the Prometheus endpoint on
/// `metrics_port` when given (the throughput scenarios read the shared-chunk count from
/// it; the idle scenario runs without it, as a sidecar without `--metrics-listen` does).
fn spawn_ringside(
    bins: &Bins,
    sp: &ServingParams,
    port: u16,
    metrics_port: Option<u16>,
    socket: &Path,
    log: PathBuf,
) -> Server {
    let ring_size = size_flag(sp.ring);
    let args: Vec<String> = [
        "serve",
        "--ring-size",
        &ring_size,
        "--max-payload",
        MAX_FRAME,
        "--subscriber-buffer",
        SUBSCRIBER_BUFFER,
        "--max-subscribers",
        "128",
        "--max-connections",
        "128",
        "--worker-threads",
        "2",
        "--adopt-grace",
        "100ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--socket".into(),
        socket.display().to_string(),
    ])
    .chain(
        metrics_port
            .into_iter()
            .flat_map(|p| ["--metrics-listen".to_string(), format!("127.0.0.1:{p}")]),
    )
    .collect();
    Server::spawn(None, &bins.ringside, &args, log)
}

/// Fills the ring once with `frame`-byte payloads (more than it holds, so it is
/// full) and returns the number of frames retained.
async fn fill_ring(
    bins: &Bins,
    sp: &ServingParams,
    socket: &Path,
    endpoint: &str,
    frame: u64,
) -> Result<u64, String> {
    let count = (sp.ring / frame).to_string();
    let size = frame.to_string();
    let child = Command::new(&bins.ringside)
        .arg("load")
        .arg("--socket")
        .arg(socket)
        .args(["--rate", "0", "--size", &size, "--count", &count])
        .args(["--producers", "1", "--topics", "4", "--duration", "600s"])
        .args(["--json", "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("ringside load: {e}"))?;
    let (json, wall) = tokio::task::spawn_blocking(move || run_to_json(child))
        .await
        .map_err(|e| e.to_string())?;
    let sent = json["sent"].as_u64().unwrap_or(0);
    let ch = connect(endpoint).await?;
    let info = RingsideClient::new(ch)
        .info(InfoRequest {})
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let (Some(old), Some(new)) = (info.oldest_seq, info.newest_seq) else {
        return Err(format!("ring empty after load (sent {sent})"));
    };
    println!(
        "[serving fill] {sent} frames of {frame} B written in {wall:.2} s; ring retains {}",
        new - old + 1
    );
    Ok(new - old + 1)
}

/// Frames each subscriber reads: the whole ring with one subscriber, a fixed
/// share with 100.
fn target_for(sp: &ServingParams, retained: u64, frame: u64, subs: usize) -> u64 {
    if subs == 1 {
        retained
    } else if frame >= 1024 {
        (sp.many_bytes_1k / frame).min(retained)
    } else {
        sp.many_frames_64.min(retained)
    }
}

/// Starts `preencoded-server` with `frames_per_batch` frames of `frame` bytes per batch.
fn spawn_baseline(
    bin: &Path,
    sp: &ServingParams,
    port: u16,
    frame: u64,
    frames_per_batch: u64,
    log: PathBuf,
) -> Server {
    let args: Vec<String> = vec![
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--size".into(),
        frame.to_string(),
        "--frames-per-batch".into(),
        frames_per_batch.to_string(),
        "--bytes".into(),
        sp.ring.to_string(),
        "--worker-threads".into(),
        "2".into(),
    ];
    Server::spawn(None, bin, &args, log)
}

/// Rows saying why a frame size was not measured.
fn failed_rows(frame: u64, note: &str) -> Vec<ServeRow> {
    SCENARIOS
        .iter()
        .map(|&(subs, reader)| ServeRow {
            system: ServeSystem::Ringside.name(),
            reader,
            frame,
            subs,
            note: note.to_string(),
            ..Default::default()
        })
        .collect()
}

/// Throughput of ringside and the pre-encoded baseline for one frame size.
///
/// ringside is started and its ring filled; one uncounted warm-up read tells
/// how many frames ringside puts in a full batch; the baseline is started with
/// that many; then every scenario runs with the repetitions interleaved.
async fn frame_rows(
    bins: &Bins,
    baseline_bin: &Path,
    sp: &ServingParams,
    frame: u64,
    tmp: &Path,
) -> Vec<ServeRow> {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let socket = tmp.join(format!("serving-{frame}.sock"));
    let log = tmp.join(format!("serving-{frame}.log"));
    let metrics_port = free_port();
    let mut server = spawn_ringside(bins, sp, port, Some(metrics_port), &socket, log);
    if let Err(e) = server.wait_ready(port, Some(&socket)) {
        return failed_rows(frame, &format!("server did not start: {e}"));
    }
    let retained = match fill_ring(bins, sp, &socket, &endpoint, frame).await {
        Ok(n) => n,
        Err(e) => return failed_rows(frame, &format!("fill failed: {e}")),
    };
    let mut targets = vec![Target {
        system: ServeSystem::Ringside,
        endpoint: endpoint.clone(),
        pid: server.pid(),
        metrics_port: Some(metrics_port),
    }];
    let warm = one_rep(&targets[0], 1, retained, ServeReader::Prost).await;
    settle(&targets[0]).await;
    let mut rows = Vec::new();
    let mut baseline = None;
    match &warm {
        Ok(w) if baseline_bin.exists() => {
            let bport = free_port();
            let blog = tmp.join(format!("preencoded-{frame}.log"));
            let mut b = spawn_baseline(baseline_bin, sp, bport, frame, w.max_batch, blog);
            match b.wait_ready(bport, None) {
                Ok(()) => {
                    targets.push(Target {
                        system: ServeSystem::Preencoded,
                        endpoint: format!("http://127.0.0.1:{bport}"),
                        pid: b.pid(),
                        metrics_port: None,
                    });
                }
                Err(e) => rows.push(ServeRow {
                    system: ServeSystem::Preencoded.name(),
                    frame,
                    subs: 1,
                    note: format!("server did not start: {e}"),
                    ..Default::default()
                }),
            }
            baseline = Some(b);
        }
        Ok(_) => rows.push(ServeRow {
            system: ServeSystem::Preencoded.name(),
            frame,
            subs: 1,
            note: format!("{} not found", baseline_bin.display()),
            ..Default::default()
        }),
        Err(e) => rows.push(ServeRow {
            system: ServeSystem::Preencoded.name(),
            frame,
            subs: 1,
            note: format!("not run: ringside's warm-up read failed: {e}"),
            ..Default::default()
        }),
    }
    for (subs, reader) in SCENARIOS {
        let reps = if subs == 1 { sp.reps_one } else { sp.reps_many };
        let target = target_for(sp, retained, frame, subs);
        let mut r = interleaved(&targets, reader, frame, subs, target, reps).await;
        if let (Some(b), Ok(w)) = (r.get_mut(1), &warm) {
            // As built (the baseline's largest batch is its only size).
            b.frames_per_batch = w.max_batch;
        }
        rows.extend(r);
    }
    if let Some(mut b) = baseline {
        let _ = b.stop(Duration::from_secs(5));
    }
    let _ = server.stop(Duration::from_secs(10));
    rows
}

/// Measures one idle server for `secs` after a short settling time.
async fn idle_window(pid: u32, secs: Duration) -> (f64, u64, u64, u64) {
    tokio::time::sleep(IDLE_SETTLE).await;
    let (ns0, v0, i0) = task_counters(pid);
    let t = Instant::now();
    tokio::time::sleep(secs).await;
    let (ns1, v1, i1) = task_counters(pid);
    (
        t.elapsed().as_secs_f64(),
        ns1.saturating_sub(ns0),
        v1.saturating_sub(v0),
        i1.saturating_sub(i0),
    )
}

/// Idle ringside: a connected, silent producer (a `ringside_client::Producer`
/// in this process that never sends) and one subscriber waiting from `latest`.
async fn idle_ringside(bins: &Bins, sp: &ServingParams, tmp: &Path) -> IdleRow {
    let mut row = IdleRow {
        system: "ringside",
        setup: "one connected producer that sends nothing (`ringside_client::Producer` in the harness), one subscriber waiting from `latest`".into(),
        ..Default::default()
    };
    let small = ServingParams {
        ring: 4 << 20,
        ..sp.clone()
    };
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let socket = tmp.join("idle.sock");
    let mut server = spawn_ringside(bins, &small, port, None, &socket, tmp.join("idle.log"));
    if let Err(e) = server.wait_ready(port, Some(&socket)) {
        row.note = format!("server did not start: {e}");
        return row;
    }
    let producer = match ringside_client::Producer::connect(&socket) {
        Ok(p) if p.wait_connected(Duration::from_secs(5)) => p,
        Ok(_) => {
            row.note = "producer did not connect".into();
            return row;
        }
        Err(e) => {
            row.note = format!("producer: {e}");
            return row;
        }
    };
    let sub = tokio::spawn(async move {
        let ch = connect(&endpoint).await?;
        let mut s = subscribe_latest(ch).await?;
        let mut n = 0u64;
        while let Ok(Some(_)) = s.message().await {
            n += 1;
        }
        Ok::<u64, String>(n)
    });
    let (secs, ns, vol, invol) = idle_window(server.pid(), sp.idle).await;
    row.secs = secs;
    row.cpu_ns = ns;
    row.voluntary = vol;
    row.involuntary = invol;
    if sub.is_finished() {
        row.note = "the subscriber ended early".into();
    }
    sub.abort();
    drop(producer);
    let _ = server.stop(Duration::from_secs(10));
    row
}

/// Idle naive server: a producer with an open `Publish` stream that sends
/// nothing and one subscriber waiting for new frames.
async fn idle_naive(bins: &Bins, sp: &ServingParams, tmp: &Path) -> IdleRow {
    let mut row = IdleRow {
        system: "naive",
        setup: "one producer with an open `Publish` stream that sends nothing, one subscriber waiting for new frames".into(),
        ..Default::default()
    };
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let args = vec![
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--history".into(),
        "1000000".into(),
    ];
    let mut server = Server::spawn(None, &bins.naive_server, &args, tmp.join("idle-naive.log"));
    if let Err(e) = server.wait_ready(port, None) {
        row.note = format!("server did not start: {e}");
        return row;
    }
    let ep = endpoint.clone();
    let producer = tokio::spawn(async move {
        let ch = connect(&ep).await?;
        NaiveClient::new(ch)
            .publish(tokio_stream::pending::<ringside_naive::v1::Frame>())
            .await
            .map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    });
    let sub = tokio::spawn(async move {
        let ch = connect(&endpoint).await?;
        let mut s = NaiveClient::new(ch)
            .subscribe(ringside_naive::v1::SubscribeRequest {
                from_history: false,
            })
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        while let Ok(Some(_)) = s.message().await {}
        Ok::<(), String>(())
    });
    let (secs, ns, vol, invol) = idle_window(server.pid(), sp.idle).await;
    row.secs = secs;
    row.cpu_ns = ns;
    row.voluntary = vol;
    row.involuntary = invol;
    if sub.is_finished() || producer.is_finished() {
        row.note = "the subscriber or producer ended early".into();
    }
    sub.abort();
    producer.abort();
    let _ = server.stop(Duration::from_secs(5));
    row
}

/// Runs every serving and idle scenario.
pub(crate) async fn run_serving(bins: &Bins, full: bool, tcp_gib_s: f64, tmp: &Path) -> Serving {
    let sp = ServingParams::new(full);
    let started = Instant::now();
    let preencoded = bins
        .ringside
        .parent()
        .map(|d| d.join("preencoded-server"))
        .unwrap_or_default();
    let mut out = Serving {
        params_ring: size_flag(sp.ring),
        tcp_gib_s,
        reps_one: sp.reps_one,
        reps_many: sp.reps_many,
        many_bytes_1k: sp.many_bytes_1k,
        many_frames_64: sp.many_frames_64,
        idle_secs: sp.idle.as_secs_f64(),
        ..Default::default()
    };
    for frame in FRAME_SIZES {
        let t = Instant::now();
        out.rows
            .extend(frame_rows(bins, &preencoded, &sp, frame, tmp).await);
        println!(
            "[serving] {frame} B frames took {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    out.idle.push(idle_ringside(bins, &sp, tmp).await);
    out.idle.push(idle_naive(bins, &sp, tmp).await);
    for r in &out.idle {
        println!(
            "[idle {}] {:.2} s: CPU {:.3}% of a core ({} µs), {:.1} voluntary and {:.1} involuntary context switches/s{}",
            r.system,
            r.secs,
            r.cpu_pct(),
            r.cpu_ns / 1000,
            r.voluntary as f64 / r.secs.max(1e-9),
            r.involuntary as f64 / r.secs.max(1e-9),
            if r.note.is_empty() {
                String::new()
            } else {
                format!("; {}", r.note)
            }
        );
    }
    out.wall_s = started.elapsed().as_secs_f64();
    println!("serving + idle scenarios took {:.1} s", out.wall_s);
    out
}

fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else {
        format!("{:.0} k", v / 1e3)
    }
}

/// The serving and idle tables with their workload description.
pub(crate) fn serving_table(s: &Serving) -> String {
    let mut t = String::from(
        "| server | payload | subscribers × frames each | frames/s (all) | payload GiB/s (all) | vs raw loopback TCP | ringside vs baseline | per subscriber, median / slowest (frames/s) | server CPU per frame | server CPU (cores) | frames per batch |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &s.rows {
        if !r.note.is_empty() && r.reps == 0 {
            let _ = writeln!(
                t,
                "| {} | {} B | {} | – | – | – | – | – | – | – | – | {}",
                r.label(),
                r.frame,
                r.subs,
                r.note
            );
            continue;
        }
        let vs = if r.system == ServeSystem::Ringside.name() {
            s.vs_baseline_read_by(r.frame, r.subs, r.reader)
                .map_or("–".into(), |v| format!("{v:.2}×"))
        } else {
            "1×".into()
        };
        let _ = writeln!(
            t,
            "| {} | {} B | {} × {} | {} | {:.2} | {:.0}% | {} | {} / {} | {:.0} ns ({:.0}) | {:.2} | {} |{}",
            r.label(),
            r.frame,
            r.subs,
            r.frames_per_sub,
            rate(r.frames_s),
            r.bytes_s / (1u64 << 30) as f64,
            100.0 * s.vs_tcp(r),
            vs,
            rate(r.per_sub_median),
            rate(r.per_sub_min),
            r.cpu_ns_per_frame,
            r.cpu_ns_per_frame_stat,
            r.cpu_cores,
            r.frames_per_batch,
            if r.note.is_empty() {
                String::new()
            } else {
                format!(" {}", r.note)
            }
        );
    }
    let _ = writeln!(
        t,
        "\nringside: `serve --ring-size {} --max-payload {MAX_FRAME} --subscriber-buffer {SUBSCRIBER_BUFFER} --max-subscribers 128 --max-connections 128 --worker-threads 2`, with `--metrics-listen` (read before and after each repetition for the shared-chunk count; per batch, not per frame), filled once by `ringside load --rate 0 --size S --topics 4 --count <ring/S>` (the producer exits before anyone reads, so it does not compete for the 2 cores). Baseline: `preencoded-server` (`benches/naive/`), a plain tonic server (2 workers) that builds the same `Batch` messages once with prost (same payload size, 4 topics, and as many frames per batch as ringside's largest batch in an uncounted warm-up read in this run), keeps {} of them encoded in memory and streams them through a pass-through codec. Readers: tonic `RingsideClient`s in the harness process (same 2 cores), each on its own connection (configured as `ringside tail`: TCP_NODELAY, HTTP/2 windows 4 MiB per stream, 8 MiB per connection), decoding with prost, from `earliest`; with one subscriber it reads every frame the ring retains, with 100 each reads a fixed share ({} of 1 KiB, {} frames of 64 B), all started together. *(raw h2 reader)* rows: one subscriber read by a raw `h2` client instead (`benches/e2e/src/rawread.rs`; same TCP_NODELAY and windows, SETTINGS_MAX_FRAME_SIZE 1 MiB instead of the default 16 KiB so a batch comes as one DATA frame), which walks each `Batch`'s protobuf fields in place to count frames, payload bytes and losses instead of decoding it into messages: like raw TCP's reader, it allocates nothing per frame. Both servers run side by side and their repetitions alternate. Rates are payload bytes and frames over the window from the first Subscribe call to the last subscriber's last frame; the median of {} repetitions (1 subscriber) or {} (100). Server CPU is the on-CPU time of the server's threads (`/proc/<pid>/task/*/schedstat`, ns resolution) over all repetitions' windows, per frame delivered; in brackets the same from utime+stime in `/proc/<pid>/stat`, whose 10 ms ticks make it coarse at these sizes. Raw loopback TCP: {:.2} GiB/s (the physical limits table, same run).",
        s.params_ring,
        s.params_ring,
        mib(s.many_bytes_1k),
        s.many_frames_64,
        s.reps_one,
        s.reps_many,
        s.tcp_gib_s
    );
    t
}

/// The idle table.
pub(crate) fn idle_table(s: &Serving) -> String {
    let mut t = String::from(
        "| server | setup | window | CPU (% of one core) | voluntary context switches/s | involuntary context switches/s |\n|---|---|---|---|---|---|\n",
    );
    for r in &s.idle {
        let _ = writeln!(
            t,
            "| {} | {} | {:.1} s | {:.3}% | {:.1} | {:.1} |{}",
            r.system,
            r.setup,
            r.secs,
            r.cpu_pct(),
            r.voluntary as f64 / r.secs.max(1e-9),
            r.involuntary as f64 / r.secs.max(1e-9),
            if r.note.is_empty() {
                String::new()
            } else {
                format!(" {}", r.note)
            }
        );
    }
    let _ = writeln!(
        t,
        "\nNo frames are written during the window ({:.0} s, after {} ms of settling). CPU is the sum over the server's threads of `/proc/<pid>/task/*/schedstat` (time on CPU, ns resolution); context switches are summed over `/proc/<pid>/task/*/status`.",
        s.idle_secs,
        IDLE_SETTLE.as_millis()
    );
    t
}

/// Settling time before an idle window.
const IDLE_SETTLE: Duration = Duration::from_millis(300);

/// Idle CPU below this share of one core counts as "≈ 0" for the goal.
const IDLE_GOAL_PCT: f64 = 0.1;

/// The serving and idle goals of shared/BRIEF.md against this run (report lines).
/// ", N of M batches (P%) sent from a shared chunk" for a ringside row that has the count.
fn shared_share(r: &ServeRow) -> String {
    match r.batches {
        Some((all, shared)) if all > 0 => format!(
            "; {shared} of the {all} batches it sent ({:.0}%) came from another subscriber's shared chunk (`ringside_shared_batches_total` against the batch count of `ringside_batch_delay_seconds`)",
            100.0 * shared as f64 / all as f64
        ),
        _ => String::new(),
    }
}

/// The report line for one subscriber at `frame` bytes read by the raw h2 reader (empty
/// when that row was not measured): the same goals as the decoding reader's line, judged
/// on this reader, which like raw TCP's reader does not decode.
fn raw_reader_goal(s: &Serving, frame: u64) -> String {
    let raw = |sys| {
        s.row_read_by(sys, frame, 1, ServeReader::Raw)
            .filter(|r| r.reps > 0)
    };
    let Some(r) = raw(ServeSystem::Ringside) else {
        return String::new();
    };
    let yes = verdict;
    let base = match (
        raw(ServeSystem::Preencoded),
        s.vs_baseline_read_by(frame, 1, ServeReader::Raw),
    ) {
        (Some(b), Some(v)) => format!(
            "{v:.2}× the pre-encoded tonic server read the same way ({}; it reached {:.2} GiB/s = {:.0}% of TCP, {:.2} M frames/s, with {:.0} ns of its CPU per frame)",
            if frame >= 1024 {
                format!("goal ≥ 0.9×: {}", yes(v >= 0.9))
            } else {
                "no ratio goal at this size".to_string()
            },
            b.bytes_s / (1u64 << 30) as f64,
            100.0 * s.vs_tcp(b),
            b.frames_s / 1e6,
            b.cpu_ns_per_frame
        ),
        _ => "the pre-encoded server was not measured with this reader".to_string(),
    };
    let goal = if frame >= 1024 {
        let tcp = s.vs_tcp(r);
        format!(
            "{:.2} GiB/s of payload = {:.0}% of raw loopback TCP (goal ≥ 50%: {})",
            r.bytes_s / (1u64 << 30) as f64,
            100.0 * tcp,
            yes(tcp >= 0.5)
        )
    } else {
        format!(
            "{:.2} M frames/s (goal ≥ 4 M: {}), server CPU {:.0} ns per frame (goal ≤ 60 ns: {})",
            r.frames_s / 1e6,
            yes(r.frames_s >= 4e6),
            r.cpu_ns_per_frame,
            yes(r.cpu_ns_per_frame > 0.0 && r.cpu_ns_per_frame <= 60.0)
        )
    };
    // One subscriber's reads, checks and encoding run in one task: about a core.
    let bound = if r.cpu_cores >= 0.9 {
        format!(
            " With this reader ringside is the bottleneck: its server used {:.2} cores, {:.0} ns per frame, where the baseline copies and validates nothing per frame (one subscriber's reads, frame checks and encoding run in one task, so about one core is its ceiling; `sidecar/encode` in the instruction counts is that path). Next step: a smaller fixed cost per frame on that path (the reader's header checks, the frame check's two hashes, the encoder's prefix: 855 instructions at 64 B), or one stream's reading and encoding split over the two workers.",
            r.cpu_cores, r.cpu_ns_per_frame
        )
    } else {
        String::new()
    };
    format!(
        "- The same, {frame} B frames, read by the raw h2 reader (counts frames without decoding them, 1 MiB HTTP/2 frames; raw TCP's reader does not decode either): {goal}, and {base}.{bound}\n"
    )
}

pub(crate) fn serving_goals(s: &Serving) -> String {
    let mut out = String::new();
    let yes = verdict;
    let missing = |sys: ServeSystem, frame: u64| {
        s.rows
            .iter()
            .find(|r| r.system == sys.name() && r.frame == frame && r.subs == 1)
            .map_or_else(|| "not run".to_string(), |r| r.note.clone())
    };
    match s.row(ServeSystem::Ringside, 1024, 1).filter(|r| r.reps > 0) {
        Some(r) => {
            let tcp = s.vs_tcp(r);
            let base = match s.vs_baseline(1024, 1) {
                Some(v) => format!(
                    "{v:.2}× the pre-encoded tonic server's rate in the same run (goal ≥ 0.9×: {}; that baseline itself reached {:.0}% of raw loopback TCP with the same reader, and used {:.0} ns of server CPU per frame against ringside's {:.0} ns)",
                    yes(v >= 0.9),
                    s.row(ServeSystem::Preencoded, 1024, 1)
                        .map_or(0.0, |b| 100.0 * s.vs_tcp(b)),
                    s.row(ServeSystem::Preencoded, 1024, 1)
                        .map_or(0.0, |b| b.cpu_ns_per_frame),
                    r.cpu_ns_per_frame
                ),
                None => format!(
                    "the pre-encoded baseline was not measured ({})",
                    missing(ServeSystem::Preencoded, 1024)
                ),
            };
            let baseline_below_half = s
                .row(ServeSystem::Preencoded, 1024, 1)
                .is_some_and(|b| s.vs_tcp(b) < 0.5);
            let ceiling = if tcp < 0.5 && baseline_below_half {
                " The pre-encoded server, which does no work per frame, is below the 50% line too, so the ceiling here is tonic, HTTP/2 and the reader on the same cores rather than ringside's read path: the raw h2 reader's line below shows what the servers send to a reader that does not decode."
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "- Serving one subscriber, 1 KiB frames: {:.2} GiB/s of payload = {:.0}% of raw loopback TCP ({:.2} GiB/s; goal ≥ 50%: {}), and {base}. The reader decodes with prost in the harness process on the same 2 cores.{ceiling}",
                r.bytes_s / (1u64 << 30) as f64,
                100.0 * tcp,
                s.tcp_gib_s,
                yes(tcp >= 0.5)
            );
            out.push_str(&raw_reader_goal(s, 1024));
        }
        None => {
            let _ = writeln!(
                out,
                "- Serving one subscriber, 1 KiB frames: not measured ({}).",
                missing(ServeSystem::Ringside, 1024)
            );
        }
    }
    match s.row(ServeSystem::Ringside, 64, 1).filter(|r| r.reps > 0) {
        Some(r) => {
            let base = s
                .row(ServeSystem::Preencoded, 64, 1)
                .filter(|b| b.reps > 0)
                .map_or(String::new(), |b| {
                    format!(
                        " (the pre-encoded tonic server: {:.2} M frames/s, {:.0} ns of its CPU per frame)",
                        b.frames_s / 1e6,
                        b.cpu_ns_per_frame
                    )
                });
            let _ = writeln!(
                out,
                "- Serving one subscriber, 64 B frames, to a prost-decoding client: {:.2} M frames/s (goal ≥ 4 M: {}), server CPU {:.0} ns per frame (goal ≤ 60 ns: {}){base}.",
                r.frames_s / 1e6,
                yes(r.frames_s >= 4e6),
                r.cpu_ns_per_frame,
                yes(r.cpu_ns_per_frame > 0.0 && r.cpu_ns_per_frame <= 60.0)
            );
            out.push_str(&raw_reader_goal(s, 64));
        }
        None => {
            let _ = writeln!(
                out,
                "- Serving one subscriber, 64 B frames: not measured ({}).",
                missing(ServeSystem::Ringside, 64)
            );
        }
    }
    out.push_str(concat!(
        "- Where ringside's serving CPU goes: at 64 B frames a `perf record -g` profile taken during development (format v1, `ringside tail` as the client, not in this run) put about 56% of the sidecar's samples in its own code and 40% in the kernel, which alone costs about the baseline's whole per-frame budget. Since then the frame check is one pass over the body plus a header hash (format v2), and the sidecar's per-frame path appends the ring's bytes into the batch's spare capacity without zero-filling it first and checks a topic's UTF-8 once instead of three times: `cargo bench -p ringside-benches --bench instructions -- sidecar` counts one subscriber's read, validation and encode per frame from a real memfd ring: 855 instructions at 64 B and 1388 at 1 KiB in the committed baseline (`benches/callgrind-baseline.json`; 1581 and 2186 before those changes, 1285 and 1824 before the frame prefix was written once and unfiltered subscribers copied a frame once, 982 and 1521 before the header was copied as a fixed move, the unfiltered path inlined into the reader and short topics checked and moved as words), and 909 at 64 B with a live producer's header fields (`sidecar/encode_wallclock/64`: a nanosecond timestamp takes 9 varint bytes; 1096 before that last change). The pre-encoded baseline validates nothing and copies nothing per frame, so it bounds what a validating server can reach. With many subscribers, unfiltered subscribers at the same place share one validated copy (shared chunks, docs/architecture.md): `sidecar/share100` counts 937 instructions per 64 B frame delivered to all 100 of them (100 unshared readers: 100 × 855). Next step, not done: the kernel's share (fewer, larger writes per batch).",
        "\n"
    ));
    for frame in FRAME_SIZES {
        if let (Some(r), Some(v)) = (
            s.row(ServeSystem::Ringside, frame, 100)
                .filter(|r| r.reps > 0),
            s.vs_baseline(frame, 100),
        ) {
            let goal = if frame == 64 {
                format!(
                    " (issue 13: ≥ 0.9×: {})",
                    if v >= 0.9 {
                        "met"
                    } else {
                        "**not met**: unfiltered subscribers at the same place send one shared validated copy while they are within 32 batches of each other (docs/architecture.md), but each batch still costs its own HTTP/2 framing and socket write per subscriber, as in the baseline, plus the head and the chunk lookup; how many batches were shared follows (well below 90%: the readers spread wider than the kept chunks). Next step: a `perf` profile of this scenario on a quiet machine would show where the rest of the gap sits"
                    }
                )
            } else {
                " (no goal)".to_owned()
            };
            let _ = writeln!(
                out,
                "- 100 subscribers, {frame} B frames: {:.2} M frames/s in all, {v:.2}× the pre-encoded tonic server{goal}; server CPU {:.0} ns per frame{}.",
                r.frames_s / 1e6,
                r.cpu_ns_per_frame,
                shared_share(r)
            );
        }
    }
    match s.idle.iter().find(|r| r.system == "ringside") {
        Some(r) if r.note.is_empty() => {
            let _ = writeln!(
                out,
                "- Idle sidecar CPU ≈ 0 (no busy polling; judged here as below {IDLE_GOAL_PCT}% of one core): {:.3}% of a core, {:.1} voluntary and {:.1} involuntary context switches/s with a silent producer and a waiting subscriber connected, over {:.0} s: {}.",
                r.cpu_pct(),
                r.voluntary as f64 / r.secs.max(1e-9),
                r.involuntary as f64 / r.secs.max(1e-9),
                r.secs,
                yes(r.cpu_pct() < IDLE_GOAL_PCT)
            );
        }
        Some(r) => {
            let _ = writeln!(out, "- Idle sidecar CPU: not measured ({}).", r.note);
        }
        None => {}
    }
    out
}
