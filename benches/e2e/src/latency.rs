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

/// Steady rate: one producer process at `rate` frames/s of 64 B payloads for
/// `secs`, one reader from the newest frame; latency = receive time minus the
/// producer's clock written into payload bytes 8..16.
pub(crate) async fn run_latency(
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
                System::Ringside => read_ringside(ch, &stop, &record, &lost).await?,
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
                    read_until_stopped(&mut s, &stop, |b| {
                        record(&mut b.frames.iter().map(|f| &f.payload[..]));
                    })
                    .await;
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
    if system == System::Ringside {
        match scrape_causes(metrics_port) {
            Ok(c) => res.causes = c,
            Err(e) => res.note = format!("{} metrics: {e}", res.note).trim().to_owned(),
        }
    }
    let _ = server.stop(Duration::from_secs(10));
    res.received = received.load(Ordering::Relaxed);
    res.reported_lost = lost.load(Ordering::Relaxed);
    let h = hist.lock().expect("lock");
    summarize(&mut res, &h);
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

/// Fills `res`'s quantiles, maximum and frames over 500 µs from a histogram of
/// nanoseconds.
fn summarize(res: &mut LatResult, h: &hdrhistogram::Histogram<u64>) {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    res.p50_us = us(0.5);
    res.p99_us = us(0.99);
    res.p999_us = us(0.999);
    res.max_us = h.max() as f64 / 1000.0;
    res.over_500us = if h.max() > 500_000 {
        h.count_between(500_001, h.max())
    } else {
        0
    };
}

/// Reads a `ringside.v1.Ringside/Subscribe` stream from `latest` until `stop` or the
/// stream's end, handing every batch's payloads to `record` (their bytes 8..16 are the
/// producer's clock) and counting reported losses.
async fn read_ringside(
    ch: tonic::transport::Channel,
    stop: &AtomicBool,
    record: &(impl Fn(&mut dyn Iterator<Item = &[u8]>) + Sync),
    lost: &AtomicU64,
) -> Result<(), String> {
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
    read_until_stopped(&mut s, stop, |b| {
        record(&mut b.frames.iter().map(|f| &f.payload[..]));
        let l: u64 = b.losses.iter().map(|l| l.frames).sum();
        lost.fetch_add(l, Ordering::Relaxed);
    })
    .await;
    Ok(())
}

/// Hands each message of `s` to `on` until `stop` (checked at least every 200 ms), an
/// error or the stream's end.
async fn read_until_stopped<M>(
    s: &mut tonic::Streaming<M>,
    stop: &AtomicBool,
    mut on: impl FnMut(M),
) {
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(Duration::from_millis(200), s.message()).await {
            Ok(Ok(Some(m))) => on(m),
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
pub(crate) async fn run_tonic_floor(bins: &Bins, rate: u64, secs: u64, tmp: &Path) -> LatResult {
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
        tmp.join(format!("tonic-floor-{rate}.log")),
    );
    if let Err(e) = server.wait_ready(port, None) {
        res.note = format!("server did not start: {e}");
        return res;
    }
    let hist = Arc::new(Mutex::new(
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram"),
    ));
    let received = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (hist, received, lost, stop) = (
            Arc::clone(&hist),
            Arc::clone(&received),
            Arc::clone(&lost),
            Arc::clone(&stop),
        );
        let endpoint = format!("http://127.0.0.1:{port}");
        tokio::spawn(async move {
            let ch = connect(&endpoint).await?;
            let record = move |payloads: &mut dyn Iterator<Item = &[u8]>| {
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
            read_ringside(ch, &stop, &record, &lost).await
        })
    };
    // The stream ends after `count` frames; bounded by the run's length plus slack.
    let deadline = Instant::now() + Duration::from_secs(secs + 5);
    while Instant::now() < deadline && !reader.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    match tokio::time::timeout(Duration::from_secs(2), reader).await {
        Ok(Ok(Err(e))) => res.note = format!("reader: {e}"),
        Ok(Err(e)) => res.note = format!("reader: {e}"),
        _ => {}
    }
    let _ = server.stop(Duration::from_secs(5));
    res.written = count;
    res.received = received.load(Ordering::Relaxed);
    res.reported_lost = lost.load(Ordering::Relaxed);
    let h = hist.lock().expect("lock");
    summarize(&mut res, &h);
    println!(
        "[{TONIC_FLOOR} {rate}/s] received {} of {}: p50 {:.0} us, p99 {:.0} us, p999 {:.0} us, max {:.0} us",
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
    res.received = json["received"].as_u64().unwrap_or(0);
    res.p50_us = json["p50_ns"].as_f64().unwrap_or(0.0) / 1000.0;
    res.p99_us = json["p99_ns"].as_f64().unwrap_or(0.0) / 1000.0;
    res.p999_us = json["p999_ns"].as_f64().unwrap_or(0.0) / 1000.0;
    res.max_us = json["max_ns"].as_f64().unwrap_or(0.0) / 1000.0;
    println!(
        "[OS floor {rate}/s] received {} of {}: p50 {:.0} us, p99 {:.0} us, p999 {:.0} us, max {:.0} us",
        res.received, res.written, res.p50_us, res.p99_us, res.p999_us, res.max_us
    );
    res
}

/// The child of [`run_os_floor`]: reads 8-byte timestamps from stdin until EOF, then
/// prints its latency quantiles as JSON.
pub(crate) fn os_floor_child() -> Result<(), Box<dyn std::error::Error>> {
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 8];
    let mut received = 0u64;
    while stdin.read_exact(&mut buf).is_ok() {
        let now = ringside_naive::now_ns();
        let _ = h.record(now.saturating_sub(u64::from_le_bytes(buf)).max(1));
        received += 1;
    }
    println!(
        "{}",
        serde_json::json!({
            "received": received,
            "p50_ns": h.value_at_quantile(0.5),
            "p99_ns": h.value_at_quantile(0.99),
            "p999_ns": h.value_at_quantile(0.999),
            "max_ns": h.max(),
        })
    );
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
        "\nOne producer process (`ringside load --rate R --size 64` / `naive-load --rate R --size 64`) for {secs} s, one reader from the newest frame in the harness process; latency is the reader's receive time minus the producer's clock stored in payload bytes 8..16 (same host, same clock), recorded in an HDR histogram. No cgroup limit in this scenario. *OS floor (pipe)*: in the same run, the harness writes a timestamp into a pipe at the same rate and pacing as `ringside load`, and a second process blocked in `read` records its receive time minus it: one wake-up of a blocked process, the least one cross-process hop costs here (ringside's path has at least two: producer to the sidecar's tokio worker, woken in `epoll_wait` by the doorbell eventfd, over loopback TCP to the reader; the naive server's at least two). *plain tonic (paced, no ring)*: in the same run, `preencoded-server --paced-rate R` (`benches/naive/`), a plain tonic server (2 workers) in which a thread paces and stamps 64 B frames as `ringside load` does and hands each burst as one `Batch` through a bounded tokio channel to the `Subscribe` stream, read by the same client as ringside's row: a thread-to-worker wake-up, then tonic, HTTP/2, loopback TCP and the client as on ringside's path, without the ring, the doorbell or the batch encoder. It is not a floor: how its channel wakes the runtime differs from ringside's doorbell on the reactor. It shows what the same stack gives a straightforward server on this machine in the same minute."
    );
    t
}
