//! The steady-rate scenario: end-to-end latency at a fixed frame rate, in an HDR
//! histogram, and its table.

use crate::*;

/// Result of one steady-rate latency run.
#[derive(Debug, Default)]
pub(crate) struct LatResult {
    pub(crate) system: String,
    pub(crate) rate: u64,
    pub(crate) written: u64,
    pub(crate) received: u64,
    pub(crate) reported_lost: u64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) max_us: f64,
    /// Frames received more than 500 µs after they were stamped (the issue-13 tail bound).
    pub(crate) over_500us: u64,
    pub(crate) peak_anon: u64,
    /// CPU time the hypervisor stole from this machine during the run, in percent (None
    /// where `/proc/stat` has no steal column).
    pub(crate) steal_pct: Option<f64>,
    /// p99.9 of each round (segment) of this row, in µs, in run order.
    pub(crate) round_p999_us: Vec<f64>,
    /// The reader's latency histogram (ns), merged over the row's rounds.
    pub(crate) hist: Option<hdrhistogram::Histogram<u64>>,
    pub(crate) note: String,
    /// ringside only: the sidecar's per-batch delay histogram by cause, scraped from its
    /// Prometheus endpoint at the end of the run.
    pub(crate) causes: Vec<Cause>,
}

/// One label of the sidecar's `ringside_batch_delay_seconds` histogram.
#[derive(Debug, Default, Clone)]
pub(crate) struct Cause {
    pub(crate) after: String,
    /// Batches with this cause.
    pub(crate) count: u64,
    /// Cumulative bucket counts: (upper bound in seconds, batches at or below it).
    pub(crate) buckets: Vec<(f64, u64)>,
}

impl Cause {
    /// Batches whose delay exceeded `secs` (a bucket bound).
    pub(crate) fn above(&self, secs: f64) -> u64 {
        let within = self
            .buckets
            .iter()
            .find(|(le, _)| (le - secs).abs() < 1e-12)
            .map_or(0, |&(_, n)| n);
        self.count.saturating_sub(within)
    }

    /// Adds another run's batches of the same label (the same bucket bounds).
    fn add(&mut self, other: &Cause) {
        self.count += other.count;
        for &(le, n) in &other.buckets {
            match self
                .buckets
                .iter_mut()
                .find(|(b, _)| (b - le).abs() < 1e-12)
            {
                Some((_, m)) => *m += n,
                None => self.buckets.push((le, n)),
            }
        }
    }
}

/// Reads the sidecar's `/metrics` and returns the delay histogram per `after` label.
fn scrape_causes(port: u16) -> Result<Vec<Cause>, String> {
    let text = scrape_metrics(port)?;
    let mut causes: Vec<Cause> = Vec::new();
    let label = |line: &str, key: &str| -> Option<String> {
        let start = line.find(&format!("{key}=\""))? + key.len() + 2;
        let end = line[start..].find('"')? + start;
        Some(line[start..end].to_owned())
    };
    for line in text.lines() {
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let Some(after) = label(line, "after") else {
            continue;
        };
        let idx = match causes.iter().position(|c| c.after == after) {
            Some(i) => i,
            None => {
                causes.push(Cause {
                    after: after.clone(),
                    ..Default::default()
                });
                causes.len() - 1
            }
        };
        let c = &mut causes[idx];
        if line.starts_with("ringside_batch_delay_seconds_bucket") {
            if let Some(le) = label(line, "le").and_then(|v| v.parse::<f64>().ok()) {
                c.buckets.push((le, value as u64));
            }
        } else if line.starts_with("ringside_batch_delay_seconds_count") {
            c.count = value as u64;
        }
    }
    causes.retain(|c| c.count > 0);
    Ok(causes)
}

/// The rows of the latency table at one rate, in table order.
#[derive(Debug, Clone, Copy)]
enum Row {
    Stream(System),
    OsFloor,
    Tonic,
}

const ROWS: [Row; 4] = [
    Row::Stream(System::Ringside),
    Row::Stream(System::Naive),
    Row::OsFloor,
    Row::Tonic,
];

/// Frames at the start of each stream round that are received but not timed: the first
/// 50 ms (the new subscription's, the new producer's and the new server's first frames;
/// a steady stream's latency is what the table reports).
pub(crate) fn warmup_frames(rate: u64) -> u64 {
    rate / 20
}

/// Rounds per rate: the table's `secs` split into rounds of 2 s (1 s in `--quick`).
pub(crate) fn latency_rounds(secs: u64) -> u64 {
    if secs >= 10 { secs / 2 } else { secs.max(1) }
}

/// The latency table: at each rate, [`latency_rounds`] rounds, each running every row for
/// `secs / rounds` s, one row after the other in an order rotated by one every round (so
/// a stretch of host noise, such as a burst of hypervisor steal, falls on every row
/// alike, not on whichever row ran then); each row's rounds merged into one row
/// ([`LatResult::merge_rounds`]).
pub(crate) async fn run_latency_rows(bins: &Bins, p: &Params, tmp: &Path) -> Vec<LatResult> {
    let rounds = latency_rounds(p.lat_secs);
    let secs = (p.lat_secs / rounds).max(1);
    let mut table = Vec::new();
    for rate in [10_000u64, 100_000] {
        let mut parts: Vec<Vec<LatResult>> = ROWS.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds as usize {
            for i in 0..ROWS.len() {
                let at = (i + round) % ROWS.len();
                let r = match ROWS[at] {
                    Row::Stream(sys) => run_latency(sys, bins, p, rate, secs, round, tmp).await,
                    Row::OsFloor => tokio::task::spawn_blocking(move || run_os_floor(rate, secs))
                        .await
                        .unwrap_or_default(),
                    Row::Tonic => run_tonic_floor(bins, rate, secs, round, tmp).await,
                };
                parts[at].push(r);
            }
        }
        table.extend(parts.into_iter().map(LatResult::merge_rounds));
    }
    table
}

/// Steady rate: one producer process at `rate` frames/s of 64 B payloads for
/// `secs`, one reader from the newest frame; latency = receive time minus the
/// producer's clock written into payload bytes 8..16.
pub(crate) async fn run_latency(
    system: System,
    bins: &Bins,
    p: &Params,
    rate: u64,
    secs: u64,
    round: usize,
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
    let socket = tmp.join(format!("lat-{name}-{rate}-{round}.sock"));
    let log = tmp.join(format!("lat-{name}-{rate}-{round}.log"));
    let metrics_port = free_port();
    let mut server = match system {
        System::Ringside => {
            // As spawn_server, plus the Prometheus endpoint for the delay histogram.
            let mut args: Vec<String> = vec!["serve".into()];
            args.extend(p.serve_flags());
            args.extend([
                "--listen".into(),
                format!("127.0.0.1:{port}"),
                "--socket".into(),
                socket.display().to_string(),
                "--adopt-grace".into(),
                "100ms".into(),
                "--metrics-listen".into(),
                format!("127.0.0.1:{metrics_port}"),
            ]);
            Server::spawn(None, &bins.ringside, &args, log)
        }
        System::Naive => spawn_server(system, bins, p, port, &socket, None, log),
    };
    let sock = (system == System::Ringside).then_some(socket.as_path());
    if let Err(e) = server.wait_ready(port, sock) {
        res.note = format!("server did not start: {e}");
        return res;
    }
    let pid = server.pid();
    let sampling = Arc::new(AtomicBool::new(false));
    let sampler = spawn_sampler(pid, Instant::now(), Arc::clone(&sampling));
    let kind = match system {
        System::Ringside => ReaderKind::Ringside,
        System::Naive => ReaderKind::Naive,
    };
    let reader = match ReaderChild::spawn(&endpoint, kind, rate * secs, warmup_frames(rate)).await {
        Ok(r) => r,
        Err(e) => {
            res.note = format!("reader: {e}");
            let _ = server.stop(Duration::from_secs(10));
            return res;
        }
    };
    let cpu0 = CpuTimes::now();
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
    // Let the reader take the last frames (bounded): it ends by itself once it has
    // received or seen reported as lost every frame the load was asked for.
    let readings = reader.finish(Duration::from_secs(3)).await;
    res.steal_pct = cpu0.and_then(CpuTimes::steal_pct_since);
    sampling.store(true, Ordering::Relaxed);
    res.peak_anon = sampler
        .join()
        .unwrap_or_default()
        .iter()
        .map(|s| s.anon)
        .max()
        .unwrap_or(0);
    if system == System::Ringside {
        match scrape_causes(metrics_port) {
            Ok(c) => res.causes = c,
            Err(e) => res.note = format!("{} metrics: {e}", res.note).trim().to_owned(),
        }
    }
    let _ = server.stop(Duration::from_secs(10));
    readings.fill(&mut res);
    println!(
        "[{name} {rate}/s, round {round}] received {} of {} frames (lost reported {}): p50 {:.0} us, p99 {:.0} us, p999 {:.0} us, max {:.0} us; peak RssAnon {}",
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

/// What a latency reader measured: frames received, losses reported, and its
/// histogram of receive time minus stamp (ns). Printed as JSON by the reader processes
/// ([`latency_reader_child`], [`os_floor_child`]), with the histogram's recorded values
/// and counts, and parsed back by the harness, which merges a row's rounds.
#[derive(Debug, Default)]
pub(crate) struct Readings {
    received: u64,
    lost: u64,
    hist: Option<hdrhistogram::Histogram<u64>>,
    /// Why the reader stopped early, if it did.
    error: String,
}

/// A fresh histogram of nanoseconds, 1 ns to 60 s, 3 significant digits.
fn new_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
        .expect("valid histogram bounds")
}

impl Readings {
    fn of(h: hdrhistogram::Histogram<u64>, received: u64, lost: u64, error: String) -> Readings {
        Readings {
            received,
            lost,
            hist: Some(h),
            error,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        let buckets: Vec<[u64; 2]> = self.hist.as_ref().map_or_else(Vec::new, |h| {
            h.iter_recorded()
                .map(|v| [v.value_iterated_to(), v.count_at_value()])
                .collect()
        });
        serde_json::json!({
            "received": self.received,
            "lost": self.lost,
            "buckets": buckets,
            "error": self.error,
        })
    }

    fn from_json(v: &serde_json::Value) -> Readings {
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        let mut h = new_histogram();
        for b in v["buckets"].as_array().into_iter().flatten() {
            if let (Some(value), Some(count)) = (b[0].as_u64(), b[1].as_u64()) {
                let _ = h.record_n(value.max(1), count);
            }
        }
        Readings {
            received: n("received"),
            lost: n("lost"),
            hist: Some(h),
            error: if v.is_null() {
                "the reader printed no result".into()
            } else {
                v["error"].as_str().unwrap_or_default().to_owned()
            },
        }
    }

    /// Copies the counts and the histogram into a table row (and a reader error into its
    /// note).
    fn fill(self, res: &mut LatResult) {
        res.received = self.received;
        res.reported_lost = self.lost;
        res.hist = self.hist;
        res.set_quantiles();
        if !self.error.is_empty() {
            res.note = format!("{} reader: {}", res.note, self.error)
                .trim()
                .to_owned();
        }
    }
}

impl LatResult {
    /// Sets the quantiles and the count over 500 µs from the histogram.
    fn set_quantiles(&mut self) {
        let Some(h) = &self.hist else { return };
        let us = |ns: u64| ns as f64 / 1000.0;
        self.p50_us = us(h.value_at_quantile(0.5));
        self.p99_us = us(h.value_at_quantile(0.99));
        self.p999_us = us(h.value_at_quantile(0.999));
        self.max_us = us(h.max());
        self.over_500us = if h.max() > 500_000 {
            h.count_between(500_001, h.max())
        } else {
            0
        };
    }

    /// One row from the rounds of the same system at the same rate: counts summed,
    /// histograms and the sidecar's delay histograms merged, the mean steal, the highest
    /// peak RssAnon, and each round's p99.9 kept.
    pub(crate) fn merge_rounds(rounds: Vec<LatResult>) -> LatResult {
        let mut out = LatResult::default();
        let steals: Vec<f64> = rounds.iter().filter_map(|r| r.steal_pct).collect();
        out.steal_pct =
            (!steals.is_empty()).then(|| steals.iter().sum::<f64>() / steals.len() as f64);
        for r in rounds {
            out.system = r.system;
            out.rate = r.rate;
            out.written += r.written;
            out.received += r.received;
            out.reported_lost += r.reported_lost;
            out.peak_anon = out.peak_anon.max(r.peak_anon);
            out.round_p999_us.push(r.p999_us);
            if let Some(h) = r.hist {
                match &mut out.hist {
                    Some(m) => {
                        let _ = m.add(&h);
                    }
                    None => out.hist = Some(h),
                }
            }
            if !r.note.is_empty() && !out.note.contains(&r.note) {
                out.note = format!("{} {}", out.note, r.note).trim().to_owned();
            }
            for c in r.causes {
                match out.causes.iter_mut().find(|m| m.after == c.after) {
                    Some(m) => m.add(&c),
                    None => out.causes.push(c),
                }
            }
        }
        out.set_quantiles();
        out
    }
}

/// Which stream a latency reader subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ReaderKind {
    /// `ringside.v1.Ringside/Subscribe` from `latest` (ringside and the plain tonic server).
    Ringside,
    /// The naive server's `Subscribe` without history.
    Naive,
}

/// A latency reader in its own process (`e2e --latency-reader-child`), as a remote
/// frontend is: its own tonic client on a current-thread runtime, so the harness's
/// runtime, threads and allocations are not on its path.
pub(crate) struct ReaderChild {
    child: Child,
    /// Closed to tell the reader to stop.
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl ReaderChild {
    /// Starts a reader of `endpoint` that expects `frames` frames, and returns once it has
    /// subscribed (so the load can start), or with why it could not.
    pub(crate) async fn spawn(
        endpoint: &str,
        kind: ReaderKind,
        frames: u64,
        warmup: u64,
    ) -> Result<ReaderChild, String> {
        let exe = std::env::current_exe().map_err(|e| format!("no executable path: {e}"))?;
        let kind = match kind {
            ReaderKind::Ringside => "ringside",
            ReaderKind::Naive => "naive",
        };
        let mut child = Command::new(exe)
            .args(["--latency-reader-child", "--reader-endpoint", endpoint])
            .args([
                "--reader-kind",
                kind,
                "--reader-frames",
                &frames.to_string(),
                "--reader-warmup",
                &warmup.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("the reader did not start: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("the reader has no stdout")?;
        let mut stdout = std::io::BufReader::new(stdout);
        // Its first line says it subscribed (or why not); blocking, so off the runtime.
        let (line, stdout) = tokio::task::spawn_blocking(move || {
            use std::io::BufRead as _;
            let mut line = String::new();
            let _ = stdout.read_line(&mut line);
            (line, stdout)
        })
        .await
        .map_err(|e| e.to_string())?;
        let mut reader = ReaderChild {
            child,
            stdin,
            stdout,
        };
        if line.trim() != READER_SUBSCRIBED {
            let _ = reader.child.kill();
            let _ = reader.child.wait();
            return Err(format!("the reader did not subscribe: {}", line.trim()));
        }
        Ok(reader)
    }

    /// Waits up to `grace` for the reader to end by itself (every frame received or
    /// reported lost, or its stream ended), then tells it to stop, and returns what it
    /// measured.
    pub(crate) async fn finish(mut self, grace: Duration) -> Readings {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Closing stdin stops it within its 200 ms stop check.
        drop(self.stdin.take());
        tokio::task::spawn_blocking(move || {
            let mut out = String::new();
            let _ = self.stdout.read_to_string(&mut out);
            let _ = self.child.wait();
            Readings::from_json(&serde_json::from_str(out.trim()).unwrap_or_default())
        })
        .await
        .unwrap_or_default()
    }
}

/// The line a latency reader prints once subscribed.
const READER_SUBSCRIBED: &str = "subscribed";

/// The reader process of [`ReaderChild`]: subscribes to `endpoint`, prints
/// [`READER_SUBSCRIBED`], records each frame's receive time minus the producer's clock in
/// its payload bytes 8..16 (all but the first `warmup` frames, counted as received but not
/// timed: the new connection's and the new producer's start) until `frames` frames were received or reported lost, the
/// stream ends or stdin closes, then prints its [`Readings`] as JSON.
pub(crate) fn latency_reader_child(
    endpoint: &str,
    kind: ReaderKind,
    frames: u64,
    warmup: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            stop.store(true, Ordering::Relaxed);
        });
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut h = new_histogram();
    let (mut received, mut lost) = (0u64, 0u64);
    let result = rt.block_on(async {
        let ch = connect(endpoint).await?;
        let mut record = |payloads: &mut dyn Iterator<Item = &[u8]>, losses: u64| {
            let now = ringside_naive::now_ns();
            for pl in payloads {
                received += 1;
                if received <= warmup {
                    continue;
                }
                if let Some(b) = pl.get(8..16) {
                    let sent = u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
                    let _ = h.record(now.saturating_sub(sent).max(1));
                }
            }
            lost += losses;
            received + lost >= frames
        };
        match kind {
            ReaderKind::Ringside => {
                let mut s = subscribe_latest(ch).await?;
                println!("{READER_SUBSCRIBED}");
                read_until_stopped(&mut s, &stop, |b| {
                    let l: u64 = b.losses.iter().map(|l| l.frames).sum();
                    record(&mut b.frames.iter().map(|f| &f.payload[..]), l)
                })
                .await;
            }
            ReaderKind::Naive => {
                let req = ringside_naive::v1::SubscribeRequest {
                    from_history: false,
                };
                let mut s = NaiveClient::new(ch)
                    .subscribe(req)
                    .await
                    .map_err(|e| e.to_string())?
                    .into_inner();
                println!("{READER_SUBSCRIBED}");
                read_until_stopped(&mut s, &stop, |b| {
                    record(&mut b.frames.iter().map(|f| &f.payload[..]), 0)
                })
                .await;
            }
        }
        Ok::<(), String>(())
    });
    let error = match result {
        Ok(()) => String::new(),
        Err(e) => {
            // Not subscribed: the harness reads this line as the reason.
            println!("{e}");
            e
        }
    };
    println!("{}", Readings::of(h, received, lost, error).to_json());
    Ok(())
}

/// Hands each message of `s` to `on` until `on` returns true (done), `stop` (checked at
/// least every 200 ms), an error or the stream's end.
async fn read_until_stopped<M>(
    s: &mut tonic::Streaming<M>,
    stop: &AtomicBool,
    mut on: impl FnMut(M) -> bool,
) {
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(200), s.message()).await {
            Ok(Ok(Some(m))) => {
                if on(m) {
                    break;
                }
            }
            Ok(_) => break,
            Err(_) => {}
        }
    }
}

/// The same stack without a ring: `preencoded-server --paced-rate R` (a plain tonic
/// server whose own thread paces and stamps frames as `ringside load` does and hands each
/// burst to the stream as one `Batch` through a tokio channel), read by the same client as
/// ringside's row: tonic, HTTP/2, loopback TCP and the client as on ringside's path,
/// without the ring, the doorbell or the batch encoder.
pub(crate) async fn run_tonic_floor(
    bins: &Bins,
    rate: u64,
    secs: u64,
    round: usize,
    tmp: &Path,
) -> LatResult {
    let mut res = LatResult {
        system: TONIC_FLOOR.into(),
        rate,
        ..Default::default()
    };
    let count = rate * secs;
    let port = free_port();
    let bin = bins
        .ringside
        .parent()
        .map(|d| d.join("preencoded-server"))
        .unwrap_or_default();
    let args: Vec<String> = [
        "--listen".to_owned(),
        format!("127.0.0.1:{port}"),
        "--size".into(),
        "64".into(),
        "--paced-rate".into(),
        rate.to_string(),
        "--paced-count".into(),
        count.to_string(),
        "--worker-threads".into(),
        "2".into(),
    ]
    .into();
    let mut server = Server::spawn(
        None,
        &bin,
        &args,
        tmp.join(format!("tonic-floor-{rate}-{round}.log")),
    );
    if let Err(e) = server.wait_ready(port, None) {
        res.note = format!("server did not start: {e}");
        return res;
    }
    let endpoint = format!("http://127.0.0.1:{port}");
    let cpu0 = CpuTimes::now();
    match ReaderChild::spawn(&endpoint, ReaderKind::Ringside, count, warmup_frames(rate)).await {
        // The stream ends after `count` frames; bounded by the run's length plus slack.
        Ok(reader) => reader
            .finish(Duration::from_secs(secs + 5))
            .await
            .fill(&mut res),
        Err(e) => res.note = format!("reader: {e}"),
    }
    res.steal_pct = cpu0.and_then(CpuTimes::steal_pct_since);
    let _ = server.stop(Duration::from_secs(5));
    res.written = count;
    println!(
        "[{TONIC_FLOOR} {rate}/s, round {round}] received {} of {}: p50 {:.0} us, p99 {:.0} us, p999 {:.0} us, max {:.0} us",
        res.received, res.written, res.p50_us, res.p99_us, res.p999_us, res.max_us
    );
    res
}

/// The name of the plain paced tonic server's row.
pub(crate) const TONIC_FLOOR: &str = "plain tonic (paced, no ring)";

/// The OS floor: the same pacing as `ringside load --rate R` (a 200 µs sleep whenever it
/// is ahead, then every frame due, each stamped just before it is written), but each
/// frame is one 8-byte `write` of the timestamp into a pipe to another process, which
/// blocks in `read` and records its receive time minus the timestamp. One wake-up of a
/// blocked process through the kernel: the least any cross-process path pays per hop.
pub(crate) fn run_os_floor(rate: u64, secs: u64) -> LatResult {
    use std::io::Write as _;
    let mut res = LatResult {
        system: "OS floor (pipe)".into(),
        rate,
        ..Default::default()
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            res.note = format!("no executable path: {e}");
            return res;
        }
    };
    let mut child = match Command::new(exe)
        .arg("--os-floor-child")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            res.note = format!("child did not start: {e}");
            return res;
        }
    };
    let Some(mut pipe) = child.stdin.take() else {
        res.note = "no pipe to the child".into();
        return res;
    };
    let count = rate * secs;
    let cpu0 = CpuTimes::now();
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < count {
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(count);
        if sent >= due {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        while sent < due {
            if pipe
                .write_all(&ringside_naive::now_ns().to_le_bytes())
                .is_err()
            {
                res.note = "the child closed the pipe".into();
                break;
            }
            sent += 1;
        }
        if !res.note.is_empty() {
            break;
        }
    }
    drop(pipe);
    res.written = sent;
    let (json, _) = run_to_json(child);
    res.steal_pct = cpu0.and_then(CpuTimes::steal_pct_since);
    Readings::from_json(&json).fill(&mut res);
    println!(
        "[OS floor {rate}/s] received {} of {}: p50 {:.0} us, p99 {:.0} us, p999 {:.0} us, max {:.0} us",
        res.received, res.written, res.p50_us, res.p99_us, res.p999_us, res.max_us
    );
    res
}

/// The child of [`run_os_floor`]: reads 8-byte timestamps from stdin until EOF, then
/// prints its latency quantiles as JSON.
pub(crate) fn os_floor_child() -> Result<(), Box<dyn std::error::Error>> {
    let mut h = new_histogram();
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 8];
    let mut received = 0u64;
    while stdin.read_exact(&mut buf).is_ok() {
        let now = ringside_naive::now_ns();
        let _ = h.record(now.saturating_sub(u64::from_le_bytes(buf)).max(1));
        received += 1;
    }
    println!("{}", Readings::of(h, received, 0, String::new()).to_json());
    Ok(())
}

/// The sidecar's per-batch delay by cause, for each ringside latency run.
pub(crate) fn causes_table(results: &[LatResult]) -> String {
    let mut t = String::from(
        "| rate (frames/s) | read after | batches | share | ≤ 100 µs | > 500 µs | > 1 ms | > 2 ms |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in results.iter().filter(|r| !r.causes.is_empty()) {
        let total: u64 = r.causes.iter().map(|c| c.count).sum::<u64>().max(1);
        for c in &r.causes {
            let fast = c.count - c.above(100e-6);
            let _ = writeln!(
                t,
                "| {} | {} | {} | {:.2}% | {:.2}% | {} | {} | {} |",
                r.rate,
                c.after,
                c.count,
                100.0 * c.count as f64 / total as f64,
                100.0 * fast as f64 / c.count.max(1) as f64,
                c.above(500e-6),
                c.above(1e-3),
                c.above(2e-3),
            );
        }
    }
    let _ = writeln!(
        t,
        "\nFrom the sidecar's `ringside_batch_delay_seconds` histogram (Prometheus, scraped at the end of each ringside run): for every batch sent, the time from its first frame's producer timestamp to the batch being closed, labelled by what led to the read: `doorbell` (caught up, woken by the wake task on the doorbell eventfd), `backlog` (reading on after a full batch), `pending_yield` / `pending_wait` (the next frame was claimed but not committed: a quick retry, or a wait for the commit on the wake task's sub-millisecond ticks), `progress` (the progress timer). At these rates a batch is one or a few frames, so the batches' tail is the frames' tail inside the sidecar; the rest of the end-to-end figure is h2, loopback TCP and the client."
    );
    t
}

pub(crate) fn latency_table(results: &[LatResult], secs: u64) -> String {
    let rounds = latency_rounds(secs);
    let per = (secs / rounds).max(1);
    let mut t = String::from(
        "| system | rate (frames/s) | written | received | losses reported | p50 | p99 | p99.9 | p99.9 per round | max | over 500 µs | host steal | peak RssAnon |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        let lo = r
            .round_p999_us
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let hi = r.round_p999_us.iter().copied().fold(0.0, f64::max);
        let rounds = if r.round_p999_us.len() > 1 {
            format!("{lo:.0}–{hi:.0} µs")
        } else {
            "–".to_owned()
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {:.0} µs | {:.0} µs | {:.0} µs | {rounds} | {:.0} µs | {} | {} | {} |{}",
            r.system,
            r.rate,
            r.written,
            r.received,
            r.reported_lost,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            r.max_us,
            r.over_500us,
            r.steal_pct.map_or("?".to_owned(), |p| format!("{p:.1}%")),
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
        "\nAt each rate, {rounds} rounds of {per} s; in each, every row runs in turn, in an order rotated by one every round, so a stretch of host noise falls on every row alike; a row's figures merge its rounds' histograms, and *p99.9 per round* gives the lowest and highest round. In each stream round: a fresh server, one producer process (`ringside load --rate R --size 64` / `naive-load --rate R --size 64`), one reader from the newest frame in its own process (`e2e --latency-reader-child`: a tonic client on a current-thread runtime, as a remote frontend runs, not the harness's runtime), the same reader for every stream row; latency is the reader's receive time minus the producer's clock stored in payload bytes 8..16 (same host, same clock), recorded in an HDR histogram, except the round's first 50 ms of frames (received, not timed: the new connection's, producer's and server's start). *over 500 µs*: frames received more than 500 µs after they were stamped. *host steal*: the share of the machine's CPU time the hypervisor took during the row (mean over its rounds) (the `steal` column of `/proc/stat`): time a virtual CPU had work and did not run, which no process here controls. No cgroup limit in this scenario. *OS floor (pipe)*: in the same run, the harness writes a timestamp into a pipe at the same rate and pacing as `ringside load`, and a second process blocked in `read` records its receive time minus it: one wake-up of a blocked process, the least one cross-process hop costs here (ringside's path has at least two: producer to the sidecar's tokio worker, woken in `epoll_wait` by the doorbell eventfd, over loopback TCP to the reader; the naive server's at least two). *plain tonic (paced, no ring)*: in the same run, `preencoded-server --paced-rate R` (`benches/naive/`), a plain tonic server (2 workers) in which a thread paces and stamps 64 B frames as `ringside load` does and hands each burst as one `Batch` through a bounded tokio channel to the `Subscribe` stream, read by the same client as ringside's row: a thread-to-worker wake-up, then tonic, HTTP/2, loopback TCP and the client as on ringside's path, without the ring, the doorbell or the batch encoder. It is not a floor: how its channel wakes the runtime differs from ringside's doorbell on the reactor. It shows what the same stack gives a straightforward server on this machine in the same minute."
    );
    t
}
