//! The Unix-datagram baseline (DogStatsD style): `dgram-load` producers send one
//! frame per datagram to a `dgram-server` reader. Run through the scenarios that
//! apply to a single-reader transport: the burst (N producers as fast as they
//! can) and the steady rates (latency). Fan-out does not apply: a datagram is
//! read once, by one reader. Also the producer-cost table that puts ringside,
//! naive and datagram side by side from the same run.

use crate::*;

/// Socket settings for the reader and the producers (see [`dgram_notes`]).
const RCVBUF: u64 = 4 << 20;
/// SO_SNDBUF for each producer socket: on a Unix datagram socket a datagram is
/// charged to the sender's buffer until the reader takes it.
const SNDBUF: u64 = 4 << 20;
/// `net.unix.max_dgram_qlen` for the reader's network namespace: systemd's
/// default (`50-default.conf`); the kernel's default is 10.
const QLEN: u64 = 512;

/// Paths of the datagram binaries.
#[derive(Debug)]
pub(crate) struct DgramBins {
    pub(crate) server: PathBuf,
    pub(crate) load: PathBuf,
}

impl DgramBins {
    /// The binaries next to the others in `dir`; `None` (with a message) if missing.
    pub(crate) fn find(dir: &Path) -> Option<DgramBins> {
        let b = DgramBins {
            server: dir.join("dgram-server"),
            load: dir.join("dgram-load"),
        };
        for x in [&b.server, &b.load] {
            if !x.exists() {
                println!(
                    "SKIP datagram baseline: {} not found; build with `cargo build --release -p ringside-naive`",
                    x.display()
                );
                return None;
            }
        }
        Some(b)
    }
}

/// One datagram run: a reader and one `dgram-load` invocation.
#[derive(Debug, Default, Clone)]
pub(crate) struct DgramRun {
    /// `nonblocking` or `blocking`.
    pub(crate) mode: String,
    pub(crate) producers: u64,
    pub(crate) size: u64,
    /// Frames/s in total (0 = as fast as possible).
    pub(crate) rate: u64,
    pub(crate) attempted: u64,
    /// Accepted by the kernel.
    pub(crate) sent: u64,
    /// Counted by the producers: EAGAIN (nonblocking) or send timeout (blocking).
    pub(crate) dropped: u64,
    pub(crate) received: u64,
    pub(crate) received_bytes: u64,
    /// Sequence gaps the reader saw (drops before a later frame of the same producer).
    pub(crate) gaps: u64,
    pub(crate) invalid: u64,
    pub(crate) regressions: u64,
    /// The load process's wall time.
    pub(crate) load_s: f64,
    /// `dgram-load`'s own figure: each thread's send-loop time over its attempts.
    pub(crate) ns_per_send: f64,
    /// From the load's start to the last frame received.
    pub(crate) window_s: f64,
    pub(crate) peak_anon: u64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) max_us: f64,
    pub(crate) rcvbuf: u64,
    pub(crate) sndbuf: u64,
    pub(crate) qlen: u64,
    /// Why the run is incomplete, if it is.
    pub(crate) error: Option<String>,
}

impl DgramRun {
    /// Producer wall time per attempted send per producer thread, the formula
    /// the burst table uses for ringside and naive.
    pub(crate) fn wall_ns_per_frame(&self) -> f64 {
        self.load_s * 1e9 * self.producers as f64 / self.attempted.max(1) as f64
    }

    /// Frames delivered to the reader per second of the run.
    pub(crate) fn delivered_fps(&self) -> f64 {
        self.received as f64 / self.window_s.max(1e-9)
    }
}

/// Everything the datagram baseline measured.
#[derive(Debug, Default)]
pub(crate) struct Dgram {
    /// Burst runs: nonblocking, then blocking.
    pub(crate) burst: Vec<DgramRun>,
    /// Steady-rate runs: 10k and 100k frames/s.
    pub(crate) lat: Vec<DgramRun>,
    /// How `net.unix.max_dgram_qlen` was set.
    pub(crate) qlen_note: String,
    /// Set if the baseline did not run at all.
    pub(crate) skipped: Option<String>,
}

/// Whether the reader can run in its own network namespace with
/// `net.unix.max_dgram_qlen = QLEN` (needs root and `unshare`); the sysctl is
/// per network namespace, so this leaves the machine's setting alone.
fn netns_qlen() -> Result<(), String> {
    let st = Command::new("unshare")
        .args(["--net", "--", "sh", "-c"])
        .arg(format!("echo {QLEN} > /proc/sys/net/unix/max_dgram_qlen"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("unshare: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("`unshare --net` failed ({st}); not root?"))
    }
}

/// One reader plus one `dgram-load` run; everything bounded in time.
#[allow(clippy::too_many_arguments)]
fn run_one(
    b: &DgramBins,
    tmp: &Path,
    netns: bool,
    mode: &str,
    producers: u64,
    size: u64,
    rate: u64,
    count: u64,
    max_secs: u64,
) -> DgramRun {
    let mut r = DgramRun {
        mode: mode.into(),
        producers,
        size,
        rate,
        ..Default::default()
    };
    let tag = format!("dgram-{mode}-{rate}-{producers}");
    let socket = tmp.join(format!("{tag}.sock"));
    let out = tmp.join(format!("{tag}.json"));
    let log = tmp.join(format!("{tag}.log"));
    let server_args = [
        "--socket".to_string(),
        socket.display().to_string(),
        "--rcvbuf".into(),
        RCVBUF.to_string(),
        "--size".into(),
        size.to_string(),
    ];
    let mut cmd = if netns {
        let mut c = Command::new("unshare");
        c.args(["--net", "--", "sh", "-c"])
            .arg(format!(
                "echo {QLEN} > /proc/sys/net/unix/max_dgram_qlen && exec \"$0\" \"$@\""
            ))
            .arg(&b.server);
        c
    } else {
        Command::new(&b.server)
    };
    let (Ok(stdout), Ok(stderr)) = (std::fs::File::create(&out), std::fs::File::create(&log))
    else {
        r.error = Some(format!("cannot create files in {}", tmp.display()));
        return r;
    };
    let child = cmd
        .args(&server_args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn();
    let mut server = match child {
        Ok(child) => Server { child, log },
        Err(e) => {
            r.error = Some(format!("dgram-server did not start: {e}"));
            return r;
        }
    };
    let ready = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        if Instant::now() > ready || !matches!(server.child.try_wait(), Ok(None)) {
            r.error = Some(format!("dgram-server not ready: {}", server.stderr()));
            return r;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let t0 = Instant::now();
    let sampling = Arc::new(AtomicBool::new(false));
    let sampler = spawn_sampler(server.pid(), t0, Arc::clone(&sampling));
    let load_start_ns = ringside_naive::now_ns();
    let load = Command::new(&b.load)
        .arg("--socket")
        .arg(&socket)
        .args(["--size", &size.to_string(), "--count", &count.to_string()])
        .args(["--rate", &rate.to_string()])
        .args(["--producers", &producers.to_string(), "--topics", "4"])
        .args(["--duration", &max_secs.to_string(), "--mode", mode])
        .args(["--sndbuf", &SNDBUF.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let (json, wall) = match load {
        Ok(child) => run_to_json(child),
        Err(e) => {
            r.error = Some(format!("dgram-load did not start: {e}"));
            return r;
        }
    };
    r.attempted = json["attempted"].as_u64().unwrap_or(0);
    r.sent = json["sent"].as_u64().unwrap_or(0);
    r.dropped =
        json["dropped"].as_u64().unwrap_or(0) + json["dropped_no_reader"].as_u64().unwrap_or(0);
    r.load_s = json["elapsed_s"].as_f64().unwrap_or(wall);
    r.ns_per_send = json["ns_per_send"].as_f64().unwrap_or(0.0);
    r.sndbuf = json["sndbuf"].as_u64().unwrap_or(0);
    if let Some(e) = json["error"].as_str() {
        r.error = Some(format!("dgram-load: {e}"));
    } else if json.is_null() {
        r.error = Some("dgram-load printed no JSON".into());
    }
    // The end marker queues behind everything the producers sent; the reader
    // exits when it reads it (bounded: SIGTERM after 10 s).
    let marker = std::os::unix::net::UnixDatagram::unbound().and_then(|s| {
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        s.send_to(&u32::MAX.to_le_bytes(), &socket)
    });
    if let Err(e) = marker {
        println!("[datagram] end marker not sent ({e}); stopping the reader with SIGTERM");
    }
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end && matches!(server.child.try_wait(), Ok(None)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = server.stop(Duration::from_secs(5));
    sampling.store(true, Ordering::Relaxed);
    r.peak_anon = sampler
        .join()
        .unwrap_or_default()
        .iter()
        .map(|s| s.anon)
        .max()
        .unwrap_or(0);
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_default();
    if v.is_null() {
        r.error = Some(format!("dgram-server printed no JSON: {}", server.stderr()));
        return r;
    }
    let u = |k: &str| v[k].as_u64().unwrap_or(0);
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    r.received = u("received");
    r.received_bytes = u("received_bytes");
    r.gaps = u("gaps");
    r.invalid = u("invalid");
    r.regressions = u("regressions");
    r.window_s = u("last_ns").saturating_sub(load_start_ns) as f64 / 1e9;
    r.p50_us = f("p50_us");
    r.p99_us = f("p99_us");
    r.p999_us = f("p999_us");
    r.max_us = f("max_us");
    r.rcvbuf = u("rcvbuf");
    r.qlen = u("max_dgram_qlen");
    println!(
        "[datagram {mode}, {producers} producer(s), {} frames/s] attempted {}, accepted {}, dropped {} (producers' count), received {} ({} gaps seen, {} invalid); producer {}; p50 {:.0} us, p99 {:.0} us; reader peak RssAnon {}",
        if rate == 0 {
            "max".to_string()
        } else {
            rate.to_string()
        },
        r.attempted,
        r.sent,
        r.dropped,
        r.received,
        r.gaps,
        r.invalid,
        if rate == 0 {
            format!("{:.0} ns/send per thread", r.wall_ns_per_frame())
        } else {
            "paced".to_string()
        },
        r.p50_us,
        r.p99_us,
        mib(r.peak_anon)
    );
    r
}

/// Runs the datagram baseline: the burst (`p.producers` producers, `p.frame`
/// bytes, `p.total_frames()` frames, nonblocking then blocking) and the steady
/// rates 10k and 100k frames/s (64 B, one producer, `p.lat_secs` each).
pub(crate) fn run_dgram(bin_dir: &Path, p: &Params, tmp: &Path) -> Dgram {
    let mut d = Dgram::default();
    let Some(b) = DgramBins::find(bin_dir) else {
        d.skipped = Some("dgram-server / dgram-load not built".into());
        return d;
    };
    let netns = match netns_qlen() {
        Ok(()) => {
            d.qlen_note = format!(
                "the reader runs in its own network namespace (`unshare --net`) with `net.unix.max_dgram_qlen = {QLEN}` (systemd's default; the kernel's is 10, and the sysctl is per namespace, so the machine's setting is untouched)"
            );
            true
        }
        Err(why) => {
            let q = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
                .unwrap_or_default()
                .trim()
                .to_string();
            println!(
                "SKIP datagram netns ({why}): the reader uses the machine's net.unix.max_dgram_qlen = {q}"
            );
            d.qlen_note = format!(
                "no network namespace could be made ({why}), so the reader uses the machine's `net.unix.max_dgram_qlen = {q}`"
            );
            false
        }
    };
    // The burst's time cap: the quick run must stay short even if the reader is slow.
    let started = Instant::now();
    let cap = if p.lat_secs >= 10 { 20 } else { 6 };
    let frames = p.total_frames();
    for mode in ["nonblocking", "blocking"] {
        d.burst.push(run_one(
            &b,
            tmp,
            netns,
            mode,
            p.producers,
            p.frame,
            0,
            frames,
            cap,
        ));
    }
    for rate in [10_000u64, 100_000] {
        d.lat.push(run_one(
            &b,
            tmp,
            netns,
            "nonblocking",
            1,
            64,
            rate,
            rate * p.lat_secs,
            p.lat_secs + 5,
        ));
    }
    println!(
        "datagram baseline took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    d
}

/// The socket setup, for the notes under the tables.
fn dgram_notes(d: &Dgram) -> String {
    let r = d.burst.first().or(d.lat.first());
    format!(
        "Socket setup: reader `SO_RCVBUF` {} requested ({} reported by the kernel, which doubles it), producers `SO_SNDBUF` {} requested ({} reported); {}. On a Unix datagram socket a send fails with EAGAIN (or blocks) when the reader's queue holds `max_dgram_qlen` datagrams or the sender's unread datagrams fill its `SO_SNDBUF`; these are the knobs a careful deployment raises. The reader validates every frame (topic, length, every fill byte) and records latency from the send time in payload bytes 8..16, like the steady-rate scenario above.",
        mib(RCVBUF),
        mib(r.map_or(0, |r| r.rcvbuf)),
        mib(SNDBUF),
        mib(r.map_or(0, |r| r.sndbuf)),
        d.qlen_note
    )
}

/// The datagram tables: burst and steady rate.
pub(crate) fn dgram_table(d: &Dgram) -> String {
    let mut t = String::new();
    if let Some(why) = &d.skipped {
        let _ = writeln!(t, "Skipped: {why}.");
        return t;
    }
    t.push_str("| send mode | producers × payload | attempted | accepted by the kernel | dropped (producers' count) | received | attempted − received | gaps seen by the reader | invalid | producer wall time per send (per thread) | delivered | reader peak RssAnon |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in &d.burst {
        let _ = writeln!(
            t,
            "| {} | {} × {} B | {} | {} | {} | {} | {} | {} | {} | {:.0} ns | {:.0} frames/s, {:.0} MiB/s | {} |{}",
            r.mode,
            r.producers,
            r.size,
            r.attempted,
            r.sent,
            r.dropped,
            r.received,
            r.attempted.saturating_sub(r.received),
            r.gaps,
            r.invalid,
            r.wall_ns_per_frame(),
            r.delivered_fps(),
            r.received_bytes as f64 / MIB / r.window_s.max(1e-9),
            mib(r.peak_anon),
            r.error
                .as_ref()
                .map(|e| format!(" {e}"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(
        t,
        "\nBurst: the same frame count, payload size and producer count as the burst above, as fast as the producers can (`dgram-load --rate 0`), one frame per datagram. *nonblocking* is `send(MSG_DONTWAIT)`: the producer never waits and an EAGAIN is a counted drop. *blocking* is a blocking `send` with a 100 ms send timeout, which is what DogStatsD clients do by default on a Unix socket (datadog-go: a blocking write with a 100 ms deadline): there the reader's pace becomes the producers' pace, as with NATS in the brief. *delivered* is frames received over the time from the load's start to the last frame received. Drops are invisible to the reader unless a later frame of the same producer arrives (the gaps column); the producers' count is the only complete one, and it should equal attempted − received.\n"
    );
    t.push_str("| rate (frames/s) | attempted | received | dropped | p50 | p99 | p99.9 | max | reader peak RssAnon |\n|---|---|---|---|---|---|---|---|---|\n");
    for r in &d.lat {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs | {} |{}",
            r.rate,
            r.attempted,
            r.received,
            r.dropped,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            r.max_us,
            mib(r.peak_anon),
            r.error
                .as_ref()
                .map(|e| format!(" {e}"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(
        t,
        "\nSteady rate: one nonblocking producer (`dgram-load --rate R --size 64 --producers 1`) to one reader. This latency is producer → local reader only; ringside's and the naive server's figures above also include serving to a gRPC subscriber over loopback, so this is a lower bound for a DogStatsD-style agent that would forward the data afterwards, not a like-for-like figure.\n\nFan-out does not apply: a datagram is read once, by the one process bound to the socket; serving many subscribers would be the reader's job, with its own queues.\n\n{}",
        dgram_notes(d)
    );
    t
}

/// Producer cost per frame for the three systems, from the same run.
pub(crate) fn producer_cost_table(burst: &[RunResult], d: &Dgram, p: &Params) -> String {
    let mut rows: Vec<(String, String, f64, String)> = Vec::new();
    for r in burst
        .iter()
        .filter(|r| r.skipped.is_none() && r.written > 0)
    {
        let (how, note) = match r.system.as_str() {
            "ringside" => (
                "`ringside load`: shared-memory write (`Producer::send`)",
                "overwrites the oldest frames; no drop at the producer".to_string(),
            ),
            _ => (
                "`naive-load`: gRPC client stream (tonic)",
                if r.outcome == "survived" {
                    "waits for HTTP/2 flow control".to_string()
                } else {
                    "waits for HTTP/2 flow control; the server was OOM-killed, so this covers the time until then".to_string()
                },
            ),
        };
        rows.push((
            r.system.clone(),
            how.to_string(),
            r.load_s * 1e9 * PRODUCERS as f64 / r.written as f64,
            note,
        ));
    }
    for r in d.burst.iter().filter(|r| r.attempted > 0) {
        rows.push((
            format!("datagram ({})", r.mode),
            format!(
                "`dgram-load --mode {}`: one `send` syscall per frame",
                r.mode
            ),
            r.wall_ns_per_frame(),
            format!(
                "{} sends ({:.1}%) dropped ({}); `dgram-load`'s own figure, each thread's send loop over its sends: {:.0} ns",
                r.dropped,
                100.0 * r.dropped as f64 / r.attempted as f64,
                if r.mode == "blocking" {
                    "send timed out after 100 ms"
                } else {
                    "EAGAIN"
                },
                r.ns_per_send
            ),
        ));
    }
    let base = rows
        .iter()
        .find(|r| r.0 == "ringside")
        .map(|r| r.2)
        .unwrap_or(0.0);
    let mut t = String::from(
        "| system | producer path | wall time per frame per producer thread | ÷ ringside | notes |\n|---|---|---|---|---|\n",
    );
    for (sys, how, ns, note) in &rows {
        let ratio = if base > 0.0 {
            format!("{:.2}×", ns / base)
        } else {
            "-".into()
        };
        let _ = writeln!(t, "| {sys} | {how} | {ns:.0} ns | {ratio} | {note} |");
    }
    let _ = writeln!(
        t,
        "\nSame run, same payload ({} B), same number of producer threads ({}), as fast as each can, while the burst's readers run on the same 2 cores. Wall time per frame = the load process's elapsed time × producer threads ÷ frames attempted, so it includes each tool's loop: `ringside load` and `dgram-load` both read the clock for the payload timestamp per frame, and `ringside load` also bumps one frame counter shared by its threads (a contended atomic per frame), which `dgram-load` does not. These are end-to-end producer figures under load, not the isolated per-call cost; for that see benchmarks-producer.md (criterion).",
        p.frame, p.producers
    );
    t
}

/// The producer write-cost goal line, read from the issue-13 table of
/// `benchmarks-producer.md` (`<!-- producer-peers:begin -->` block) when it is there.
pub(crate) fn producer_goal_discussion(docs: &Path) -> String {
    let md = std::fs::read_to_string(docs.join("benchmarks-producer.md")).unwrap_or_default();
    let block = md
        .split_once("<!-- producer-peers:begin -->")
        .and_then(|(_, rest)| rest.split_once("<!-- producer-peers:end -->"))
        .map(|(block, _)| block)
        .unwrap_or_default();
    // "| `send` 64 B, one thread, ≤ 40 ns | 62.3 ns | **missed** |"
    let row = block.lines().find_map(|l| {
        let c: Vec<&str> = l.split('|').map(str::trim).collect();
        (c.len() > 3 && c[1].starts_with("`send` 64 B, one thread"))
            .then(|| (c[2].to_owned(), c[3].to_owned()))
    });
    match row {
        Some((measured, verdict)) => format!(
            "- Producer write cost, 64 B, one thread, goal ≤ 40 ns median: {measured}, {verdict} (criterion, side by side with iceoryx2 in one run; the figures, the spread and the reasons are in benchmarks-producer.md).\n"
        ),
        None => "- Producer write cost vs the goal (≤ 40 ns median, 64 B, one thread): see benchmarks-producer.md; its figures could not be read here.\n".into(),
    }
}

/// The datagram comparison line for the goals section.
pub(crate) fn dgram_goals(burst: &[RunResult], d: &Dgram) -> String {
    let ring = burst
        .iter()
        .find(|r| r.system == "ringside" && r.skipped.is_none() && r.written > 0);
    let (Some(ring), Some(nb)) = (ring, d.burst.iter().find(|r| r.mode == "nonblocking")) else {
        return String::new();
    };
    if nb.attempted == 0 {
        return String::new();
    }
    let ring_ns = ring.load_s * 1e9 * PRODUCERS as f64 / ring.written as f64;
    let mut s = format!(
        "- Producers never block, against a nonblocking Unix-datagram producer in the same run: ringside {ring_ns:.0} ns per frame per producer thread, every frame written (old ones overwritten, losses reported to readers); datagram {:.0} ns per attempted send ({:.2}× ringside), {:.0}% of the sends dropped with EAGAIN: the one reader process did not keep up with {} producers on the shared 2 cores.",
        nb.wall_ns_per_frame(),
        nb.wall_ns_per_frame() / ring_ns.max(1e-9),
        100.0 * nb.dropped as f64 / nb.attempted as f64,
        nb.producers
    );
    if let Some(b) = d
        .burst
        .iter()
        .find(|r| r.mode == "blocking" && r.attempted > 0)
    {
        let _ = write!(
            s,
            " With a blocking send (DogStatsD's default) the datagram producers slow to the reader's pace: {:.0} ns per send ({:.2}× ringside).",
            b.wall_ns_per_frame(),
            b.wall_ns_per_frame() / ring_ns.max(1e-9)
        );
    }
    s.push('\n');
    s
}
