//! The burst and fan-out scenarios: producers write, fast, slow and stalled readers
//! subscribe from the earliest frame, and the server's memory is sampled; plus their
//! tables and the memory-over-time plot.

use crate::*;

/// Per-subscriber counters.
#[derive(Debug, Default)]
pub(crate) struct SubStats {
    pub(crate) frames: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) reported_lost: AtomicU64,
    pub(crate) resume: AtomicU64,
    pub(crate) done: AtomicBool,
    pub(crate) done_at: Mutex<Option<Instant>>,
    pub(crate) error: Mutex<Option<String>>,
}

/// Result of one system's run.
#[derive(Debug, Default)]
pub(crate) struct RunResult {
    pub(crate) system: String,
    pub(crate) skipped: Option<String>,
    pub(crate) limit: u64,
    pub(crate) written: u64,
    pub(crate) written_bytes: u64,
    pub(crate) load_s: f64,
    pub(crate) window_s: f64,
    pub(crate) delivered_frames: u64,
    pub(crate) delivered_bytes: u64,
    pub(crate) fast_frames: u64,
    pub(crate) fast_s: f64,
    pub(crate) reported_lost: u64,
    pub(crate) counted_lost: u64,
    pub(crate) subscribers_finished: usize,
    pub(crate) readers: usize,
    pub(crate) peak_anon: u64,
    pub(crate) peak_shmem: u64,
    pub(crate) cg_max_usage: u64,
    pub(crate) cg_failcnt: u64,
    pub(crate) oom_kills: u64,
    pub(crate) outcome: String,
    pub(crate) samples: Vec<Sample>,
}

/// Which server a subscriber talks to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum System {
    Ringside,
    Naive,
}

/// Reads until `stop`, the stream ends, or it has accounted for `target` frames.
pub(crate) async fn reader(
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
pub(crate) async fn stalled(
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

pub(crate) async fn run_system(
    system: System,
    bins: &Bins,
    p: &Params,
    budget: u64,
    tmp: &Path,
) -> RunResult {
    let name = match system {
        System::Ringside => "ringside",
        System::Naive => "naive",
    };
    let mut res = RunResult {
        system: name.into(),
        limit: budget,
        ..Default::default()
    };
    let cg = match Cgroup::create(&format!("ringside-bench-{name}"), budget) {
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
    let mut server = spawn_server(system, bins, p, port, &socket, cg.as_ref(), log);
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
            let rss = proc_memory(pid).map(|m| m.anon).unwrap_or(0);
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
        res.cg_max_usage = cg.read("memory.max_usage_in_bytes", None).unwrap_or(0);
        res.cg_failcnt = cg.read("memory.failcnt", None).unwrap_or(0);
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

pub(crate) fn table(results: &[RunResult], p: &Params) -> String {
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

pub(crate) fn fanout_table(results: &[(usize, RunResult)], p: &Params, budget: u64) -> String {
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

pub(crate) fn write_csv(path: &Path, samples: &[Sample]) -> std::io::Result<()> {
    let mut s = String::from("t_s,rss_anon_bytes,rss_shmem_bytes\n");
    for x in samples {
        let _ = writeln!(s, "{:.3},{},{}", x.t, x.anon, x.shmem);
    }
    std::fs::write(path, s)
}

pub(crate) fn plot(
    path: &Path,
    results: &[RunResult],
    limit: u64,
) -> Result<(), Box<dyn std::error::Error>> {
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
        if r.outcome.contains("OOM")
            && let Some(last) = r.samples.last()
        {
            chart.draw_series(std::iter::once(Text::new(
                format!("naive: OOM-killed after ~{} written", mib(r.written_bytes)),
                (last.t, last.anon as f64 / MIB * 1.03),
                ("sans-serif", 14).into_font().color(&color),
            )))?;
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
