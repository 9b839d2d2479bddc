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
    pub(crate) peak_anon: u64,
    pub(crate) note: String,
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
    let mut server = spawn_server(system, bins, p, port, &socket, None, log);
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
        "\nOne producer process (`ringside load --rate R --size 64` / `naive-load --rate R --size 64`) for {secs} s, one reader from the newest frame in the harness process; latency is the reader's receive time minus the producer's clock stored in payload bytes 8..16 (same host, same clock), recorded in an HDR histogram. No cgroup limit in this scenario."
    );
    t
}
