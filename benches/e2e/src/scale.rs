//! Scenario **10,000 subscribers** (`e2e --scale`, reduced: `--scale-subscribers 1000`):
//! one sidecar in a cgroup v1 memory group whose hard limit is its own printed budget,
//! and N subscribers, each on its own TCP connection (its own HTTP/2 connection):
//!
//! - 90% *waiting* at `latest`, filtered to a topic (`scale/idle`) the producer writes
//!   once (the roll call), so they are caught up and waiting the whole run;
//! - 9% *attentive*, reading everything on `scale/data` as it comes;
//! - 1% *slow*: they read for a while, then stop reading entirely (their HTTP/2 window
//!   fills, the server's writes stop), then read again and drain.
//!
//! The harness is the client: one raw `h2` connection per subscriber (64 KiB windows,
//! no tonic channel, no buffer task), so the client's own memory stays small. It checks
//! that every waiting subscriber got the roll call frame, that every attentive one got
//! every data frame, and, for every slow one, that frames received + losses reported
//! equal the data frames produced, or that its stream ended with UNAVAILABLE naming a
//! resume sequence and received + reported == resume - first data sequence. It also
//! checks, for every subscriber, that the batches account for every sequence number
//! between the first batch's `from_seq` and the last batch's `resume_seq`.

use crate::*;
use bytes::{Buf, Bytes, BytesMut};
use prost::Message;
use ringside_proto::v1;
use std::sync::atomic::AtomicUsize;

/// The topic the waiting subscribers filter on (written once: the roll call).
const IDLE_TOPIC: &str = "scale/idle";
/// The topic of the data frames.
const DATA_TOPIC: &str = "scale/data";
/// The HTTP/2 windows each client connection grants (stream and connection).
const CLIENT_WINDOW: u32 = 64 << 10;
/// Connects in flight at once.
const CONNECT_CONCURRENCY: usize = 64;
/// Largest gRPC message the client accepts.
const MAX_MESSAGE: usize = 1 << 20;

/// The scenario's size and pace.
#[derive(Debug, Clone)]
pub(crate) struct ScaleParams {
    /// Subscribers (and connections) in total.
    pub(crate) subscribers: usize,
    /// Data frames per second.
    pub(crate) rate: u64,
    /// Payload bytes per data frame.
    pub(crate) payload: usize,
    /// How long the producer writes.
    pub(crate) data: Duration,
    /// Slow subscribers read this long after the data starts, then stop.
    pub(crate) slow_read: Duration,
    /// And stop reading for this long.
    pub(crate) slow_pause: Duration,
    /// `--ring-size`.
    pub(crate) ring: u64,
}

impl ScaleParams {
    pub(crate) fn new(subscribers: usize, rate: u64) -> ScaleParams {
        ScaleParams {
            subscribers,
            rate,
            payload: 1024,
            data: Duration::from_secs(45),
            slow_read: Duration::from_secs(3),
            slow_pause: Duration::from_secs(30),
            ring: 4 << 20,
        }
    }

    /// (waiting, attentive, slow).
    pub(crate) fn split(&self) -> (usize, usize, usize) {
        let slow = (self.subscribers / 100).max(1);
        let attentive = (self.subscribers * 9 / 100).max(1);
        (
            self.subscribers.saturating_sub(slow + attentive),
            attentive,
            slow,
        )
    }

    /// The `ringside serve` flags (besides `--listen` and `--socket`).
    pub(crate) fn serve_flags(&self) -> Vec<String> {
        let n = self.subscribers.to_string();
        [
            "--ring-size",
            &size_flag(self.ring),
            "--max-payload",
            "4KiB",
            "--subscriber-buffer",
            "8KiB",
            "--socket-send-buffer",
            "8KiB",
            "--max-request",
            "1KiB",
            "--max-subscribers",
            &n,
            "--max-connections",
            &n,
            "--max-streams-per-connection",
            "1",
            "--worker-threads",
            "2",
            "--console",
            "false",
            "--adopt-grace",
            "100ms",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn frames(&self) -> u64 {
        self.rate * self.data.as_secs()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Waiting,
    Attentive,
    Slow,
}

/// What one subscriber saw.
#[derive(Debug, Default, Clone)]
struct SubOutcome {
    frames_data: u64,
    frames_idle: u64,
    /// Sequence of the roll call frame, as received.
    idle_seq: Option<u64>,
    lost: u64,
    /// Of `lost`, the frames lost because the subscriber fell a ring behind.
    lost_lapped: u64,
    filtered: u64,
    discarded: u64,
    first_from: Option<u64>,
    last_resume: Option<u64>,
    /// frames + lost + filtered + discarded over all batches.
    accounted: u64,
    /// Sequences of data frames received, out of order or duplicated.
    disorder: u64,
    last_data_seq: Option<u64>,
    batches: u64,
    /// grpc-status and message at the end, if the stream ended.
    end: Option<(i32, String)>,
    error: Option<String>,
}

/// Counters shared by all subscriber tasks.
#[derive(Debug, Default)]
struct Progress {
    started: AtomicUsize,
    failed: AtomicUsize,
    idle_called: AtomicUsize,
    attentive_frames: AtomicU64,
    /// Slow subscribers stop reading while this is set.
    slow_paused: AtomicBool,
    /// Everyone stops at this.
    stop: AtomicBool,
    /// The sequence of the last data frame, once known (u64::MAX until then).
    last_data_seq: AtomicU64,
    done: AtomicUsize,
}

/// The scenario's figures.
#[derive(Debug, Default)]
pub(crate) struct ScaleResult {
    pub(crate) skipped: Option<String>,
    pub(crate) params: Option<ScaleParams>,
    pub(crate) budget: u64,
    pub(crate) budget_table: String,
    pub(crate) flags: Vec<String>,
    pub(crate) nofile_line: String,
    pub(crate) connected: usize,
    pub(crate) connect_s: f64,
    pub(crate) connect_failed: usize,
    pub(crate) first_error: Option<String>,
    pub(crate) anon_before: u64,
    pub(crate) anon_connected: u64,
    pub(crate) anon_peak: u64,
    pub(crate) anon_paused: u64,
    pub(crate) cgroup_peak: u64,
    pub(crate) oom_kills: u64,
    pub(crate) survived: bool,
    pub(crate) produced: u64,
    pub(crate) roll_call: (usize, usize),
    pub(crate) attentive_complete: (usize, usize),
    pub(crate) attentive_frames: u64,
    pub(crate) attentive_lost: u64,
    pub(crate) attentive_lost_lapped: u64,
    pub(crate) slow_exact: (usize, usize),
    pub(crate) slow_received: u64,
    pub(crate) slow_lost: u64,
    pub(crate) slow_unavailable: usize,
    pub(crate) accounting_broken: Vec<String>,
    pub(crate) server_cpu_s: f64,
    pub(crate) client_anon_peak: u64,
    pub(crate) wall_s: f64,
}

/// Raises this process's RLIMIT_NOFILE soft limit to its hard limit; returns (soft, hard).
fn raise_nofile() -> (u64, u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return (0, 0);
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return (hard, hard);
    }
    (soft, hard)
}

fn ephemeral_ports() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse::<u64>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    Some(hi.saturating_sub(lo) + 1)
}

/// utime + stime of a process, seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The framed (gRPC prefix + protobuf) Subscribe request of one kind.
fn request(kind: Kind) -> Bytes {
    let topic = match kind {
        Kind::Waiting => IDLE_TOPIC,
        Kind::Attentive | Kind::Slow => DATA_TOPIC,
    };
    grpc_message(&v1::SubscribeRequest {
        start: Some(v1::subscribe_request::Start::Latest(true)),
        topics: vec![topic.to_string()],
        ..Default::default()
    })
}

/// A gRPC status (code, message) from response headers or trailers, if they carry one.
pub(crate) fn grpc_status(h: &http::HeaderMap) -> Option<(i32, String)> {
    let code = h.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let msg = h
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or("")
        .to_string();
    Some((code, msg))
}

/// Percent-decodes a grpc-message (enough for the digits of a resume sequence).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The resume sequence named in an UNAVAILABLE message ("... resume with sequence N").
fn resume_in(message: &str) -> Option<u64> {
    let m = percent_decode(message);
    let at = m.find("sequence ")? + "sequence ".len();
    m[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// One subscriber: connect, subscribe, read according to its kind until told to stop.
async fn subscriber(addr: SocketAddr, kind: Kind, p: Arc<Progress>) -> SubOutcome {
    let mut out = SubOutcome::default();
    if let Err(e) = run_subscriber(addr, kind, &p, &mut out).await {
        out.error = Some(e);
        if p.started.load(Ordering::Relaxed) == 0 || out.batches == 0 {
            p.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    p.done.fetch_add(1, Ordering::Relaxed);
    out
}

async fn run_subscriber(
    addr: SocketAddr,
    kind: Kind,
    p: &Progress,
    out: &mut SubOutcome,
) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(CLIENT_WINDOW)
        .initial_connection_window_size(CLIENT_WINDOW)
        .max_frame_size(16 << 10)
        .max_send_buffer_size(4 << 10)
        .max_concurrent_reset_streams(4)
        .handshake::<_, Bytes>(tcp)
        .await
        .map_err(|e| format!("h2 handshake: {e}"))?;
    let conn_task = tokio::spawn(async move {
        let _ = conn.await;
    });
    let _abort = AbortOnDrop(conn_task);
    let mut client = client.ready().await.map_err(|e| format!("h2 ready: {e}"))?;
    let req = http::Request::post(format!("http://{addr}/ringside.v1.Ringside/Subscribe"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .map_err(|e| e.to_string())?;
    let (resp, mut send) = client
        .send_request(req, false)
        .map_err(|e| format!("send_request: {e}"))?;
    send.send_data(request(kind), true)
        .map_err(|e| format!("send request body: {e}"))?;
    let resp = resp.await.map_err(|e| format!("response: {e}"))?;
    if let Some(st) = grpc_status(resp.headers()) {
        out.end = Some(st.clone());
        return Err(format!(
            "refused: grpc-status {} {}",
            st.0,
            percent_decode(&st.1)
        ));
    }
    p.started.fetch_add(1, Ordering::Relaxed);
    let mut body = resp.into_body();
    let mut buf = BytesMut::new();
    let mut slow_stopped_once = false;
    loop {
        if p.stop.load(Ordering::Relaxed) {
            break;
        }
        if kind == Kind::Slow && p.slow_paused.load(Ordering::Relaxed) {
            // Stop reading: nothing is taken from h2, no window is released.
            slow_stopped_once = true;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let chunk = match tokio::time::timeout(Duration::from_millis(200), body.data()).await {
            Err(_) => continue,
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(format!("stream: {e}")),
            Ok(Some(Ok(c))) => c,
        };
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
        while buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if len > MAX_MESSAGE {
                return Err(format!("message of {len} bytes"));
            }
            if buf.len() < 5 + len {
                break;
            }
            buf.advance(5);
            let msg = buf.split_to(len);
            let b = v1::Batch::decode(&msg[..]).map_err(|e| format!("decode: {e}"))?;
            absorb(out, &b, kind, p);
        }
        if buf.is_empty() {
            // Give the reassembly buffer back between messages.
            buf = BytesMut::new();
        }
        // A slow subscriber that drained after its pause stops once it is past the data.
        if kind == Kind::Slow
            && slow_stopped_once
            && out
                .last_resume
                .is_some_and(|r| r > p.last_data_seq.load(Ordering::Relaxed))
        {
            break;
        }
    }
    if (body.is_end_stream() || out.end.is_none())
        && let Ok(Ok(Some(t))) =
            tokio::time::timeout(Duration::from_millis(100), body.trailers()).await
    {
        out.end = grpc_status(&t);
    }
    Ok(())
}

/// Aborts the h2 connection task when the subscriber ends.
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn absorb(out: &mut SubOutcome, b: &v1::Batch, kind: Kind, p: &Progress) {
    out.batches += 1;
    out.first_from.get_or_insert(b.from_seq);
    out.last_resume = Some(b.resume_seq);
    let lost: u64 = b.losses.iter().map(|l| l.frames).sum();
    out.lost += lost;
    out.lost_lapped += b
        .losses
        .iter()
        .filter(|l| l.reason == v1::LossReason::Lapped as i32)
        .map(|l| l.frames)
        .sum::<u64>();
    out.filtered += b.filtered;
    out.discarded += b.discarded;
    out.accounted += b.frames.len() as u64 + lost + b.filtered + b.discarded;
    for f in &b.frames {
        if f.topic == IDLE_TOPIC {
            out.frames_idle += 1;
            out.idle_seq = Some(f.seq);
            if kind == Kind::Waiting && out.frames_idle == 1 {
                p.idle_called.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            out.frames_data += 1;
            if out.last_data_seq.is_some_and(|l| f.seq <= l) {
                out.disorder += 1;
            }
            out.last_data_seq = Some(f.seq);
        }
    }
    if kind == Kind::Attentive {
        p.attentive_frames
            .fetch_add(b.frames.len() as u64, Ordering::Relaxed);
    }
}

/// The in-harness producer: the roll call, then `frames` data frames at `rate`.
fn produce(
    socket: &Path,
    topic: &str,
    frames: u64,
    rate: u64,
    payload: usize,
) -> Result<u64, String> {
    let producer =
        ringside_client::Producer::connect(socket).map_err(|e| format!("producer connect: {e}"))?;
    let body = vec![0xA5u8; payload];
    let start = Instant::now();
    let mut sent = 0;
    for i in 0..frames {
        if rate > 0 {
            let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        producer
            .send(topic, &body)
            .map_err(|e| format!("send: {e}"))?;
        sent += 1;
    }
    Ok(sent)
}

/// Waits until `f` holds or `within` passed; true when it held.
async fn wait_until(within: Duration, f: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

/// Runs the scenario.
pub(crate) async fn run_scale(bins: &Bins, p: &ScaleParams, tmp: &Path) -> ScaleResult {
    let t0 = Instant::now();
    let mut r = ScaleResult {
        params: Some(p.clone()),
        flags: p.serve_flags(),
        ..Default::default()
    };
    let flags: Vec<&str> = r.flags.iter().map(String::as_str).collect();
    r.budget = match ringside_tests::sidecar::budget_bytes_of(&bins.ringside, &flags) {
        Ok(b) => b,
        Err(e) => {
            r.skipped = Some(format!("no budget: {e}"));
            return r;
        }
    };
    r.budget_table = Command::new(&bins.ringside)
        .args(["serve", "--print-budget"])
        .args(&flags)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .take_while(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    let (soft, hard) = raise_nofile();
    let need = p.subscribers as u64 + 256;
    if soft < need {
        r.skipped = Some(format!(
            "the harness needs {need} file descriptors for {} client connections; RLIMIT_NOFILE is {soft} (hard {hard}): raise it (ulimit -Hn) or use --scale-subscribers {}",
            p.subscribers,
            soft.saturating_sub(256)
        ));
        return r;
    }
    if let Some(ports) = ephemeral_ports()
        && ports < p.subscribers as u64 + 1000
    {
        r.skipped = Some(format!(
            "only {ports} ephemeral ports (net.ipv4.ip_local_port_range) for {} connections",
            p.subscribers
        ));
        return r;
    }
    // The kernel rounds the limit down to whole pages: round the budget up.
    let cg = match Cgroup::create("ringside-scale", r.budget.next_multiple_of(4096)) {
        Ok(c) => c,
        Err(e) => {
            r.skipped = Some(format!(
                "needs a cgroup v1 memory group (run as root with /sys/fs/cgroup/memory): {e}"
            ));
            return r;
        }
    };
    let port = free_port();
    let socket = tmp.join("scale.sock");
    let log = tmp.join("scale.log");
    let mut args: Vec<String> = vec!["serve".into()];
    args.extend(r.flags.iter().cloned());
    args.extend([
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--socket".into(),
        socket.display().to_string(),
    ]);
    let mut server = Server::spawn(Some(&cg), &bins.ringside, &args, log.clone());
    if let Err(e) = server.wait_ready(port, Some(&socket)) {
        r.skipped = Some(format!("sidecar did not start: {e}"));
        return r;
    }
    let pid = server.pid();
    tokio::time::sleep(Duration::from_millis(500)).await;
    r.nofile_line = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .find(|l| l.contains("RLIMIT_NOFILE"))
        .unwrap_or("")
        .to_string();
    r.anon_before = proc_memory(pid).map_or(0, |m| m.anon);
    let stop_sampler = Arc::new(AtomicBool::new(false));
    let sampler = spawn_sampler(pid, Instant::now(), Arc::clone(&stop_sampler));
    let cpu0 = cpu_seconds(pid).unwrap_or(0.0);

    // Connect everyone: slow first, then attentive, then waiting.
    let (waiting, attentive, slow) = p.split();
    let kinds: Vec<Kind> = std::iter::repeat_n(Kind::Slow, slow)
        .chain(std::iter::repeat_n(Kind::Attentive, attentive))
        .chain(std::iter::repeat_n(Kind::Waiting, waiting))
        .collect();
    let progress = Arc::new(Progress {
        last_data_seq: AtomicU64::new(u64::MAX),
        ..Default::default()
    });
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECT_CONCURRENCY));
    let tc = Instant::now();
    let mut tasks = Vec::with_capacity(kinds.len());
    for &kind in &kinds {
        let permit = Arc::clone(&gate).acquire_owned().await;
        let pr = Arc::clone(&progress);
        let before = pr.started.load(Ordering::Relaxed) + pr.failed.load(Ordering::Relaxed);
        tasks.push(tokio::spawn(async move {
            let pr2 = Arc::clone(&pr);
            let fut = subscriber(addr, kind, pr);
            // The permit is held until this subscriber started (or failed).
            let watch = async {
                let _ = wait_until(Duration::from_secs(30), || {
                    pr2.started.load(Ordering::Relaxed) + pr2.failed.load(Ordering::Relaxed)
                        > before
                })
                .await;
                drop(permit);
            };
            let (out, ()) = tokio::join!(fut, watch);
            out
        }));
    }
    let all = kinds.len();
    wait_until(Duration::from_secs(60), || {
        progress.started.load(Ordering::Relaxed) + progress.failed.load(Ordering::Relaxed) >= all
    })
    .await;
    r.connect_s = tc.elapsed().as_secs_f64();
    r.connected = progress.started.load(Ordering::Relaxed);
    r.connect_failed = progress.failed.load(Ordering::Relaxed);
    println!(
        "[scale] {} of {all} subscribers connected in {:.1} s ({} failed); sidecar RssAnon {}",
        r.connected,
        r.connect_s,
        r.connect_failed,
        mib(proc_memory(pid).map_or(0, |m| m.anon))
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    r.anon_connected = proc_memory(pid).map_or(0, |m| m.anon);

    // Roll call for the waiting ones.
    let sock = socket.clone();
    let roll = tokio::task::spawn_blocking(move || produce(&sock, IDLE_TOPIC, 1, 0, 16)).await;
    if let Ok(Err(e)) | Err(e) = roll.map_err(|e| e.to_string()) {
        println!("[scale] roll call failed: {e}");
    }
    wait_until(Duration::from_secs(30), || {
        progress.idle_called.load(Ordering::Relaxed) >= waiting
    })
    .await;
    println!(
        "[scale] roll call: {} of {waiting} waiting subscribers got it",
        progress.idle_called.load(Ordering::Relaxed)
    );

    // Data, with the slow subscribers stopping and resuming on a timer.
    let sock = socket.clone();
    let (frames, rate, payload) = (p.frames(), p.rate, p.payload);
    let producer =
        tokio::task::spawn_blocking(move || produce(&sock, DATA_TOPIC, frames, rate, payload));
    tokio::time::sleep(p.slow_read).await;
    progress.slow_paused.store(true, Ordering::Relaxed);
    println!(
        "[scale] slow subscribers stop reading for {:?}",
        p.slow_pause
    );
    tokio::time::sleep(p.slow_pause.saturating_sub(Duration::from_secs(1))).await;
    r.anon_paused = proc_memory(pid).map_or(0, |m| m.anon);
    tokio::time::sleep(Duration::from_secs(1)).await;
    progress.slow_paused.store(false, Ordering::Relaxed);
    r.produced = match producer.await.map_err(|e| e.to_string()) {
        Ok(Ok(n)) => n,
        Ok(Err(e)) | Err(e) => {
            println!("[scale] producer failed: {e}");
            0
        }
    };
    println!("[scale] producer wrote {} data frames", r.produced);
    // The data frames are the last ones written: their sequences end just before the tail.
    let expect_attentive = r.produced * attentive as u64;
    wait_until(Duration::from_secs(30), || {
        progress.attentive_frames.load(Ordering::Relaxed) >= expect_attentive
    })
    .await;
    // Slow ones drain: let them run until past the data (bounded).
    tokio::time::sleep(Duration::from_secs(5)).await;
    progress.stop.store(true, Ordering::Relaxed);
    let mut outs = Vec::with_capacity(tasks.len());
    for t in tasks {
        outs.push(t.await.unwrap_or_default());
    }
    r.server_cpu_s = cpu_seconds(pid).unwrap_or(0.0) - cpu0;
    r.client_anon_peak = proc_memory(std::process::id()).map_or(0, |m| m.anon);
    stop_sampler.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap_or_default();
    r.anon_peak = samples.iter().map(|s| s.anon).max().unwrap_or(0);
    r.cgroup_peak = cg.read("memory.max_usage_in_bytes", None).unwrap_or(0);
    r.oom_kills = cg.oom_kills();
    r.survived = matches!(server.child.try_wait(), Ok(None));
    let _ = server.stop(Duration::from_secs(10));
    drop(cg);

    // Checks.
    let idle_seq = outs
        .iter()
        .zip(&kinds)
        .find_map(|(o, k)| (*k == Kind::Waiting).then_some(o.idle_seq).flatten());
    let first_data = idle_seq.map(|s| s + 1);
    let mut roll_ok = 0;
    let mut att_ok = 0;
    let mut slow_ok = 0;
    for (i, (o, k)) in outs.iter().zip(&kinds).enumerate() {
        if let (Some(from), Some(resume)) = (o.first_from, o.last_resume)
            && resume - from != o.accounted
        {
            r.accounting_broken.push(format!(
                "subscriber {i} ({k:?}): batches cover [{from}, {resume}) = {} sequences but account for {}",
                resume - from,
                o.accounted
            ));
        }
        if o.disorder > 0 {
            r.accounting_broken.push(format!(
                "subscriber {i} ({k:?}): {} data frames out of order",
                o.disorder
            ));
        }
        if r.first_error.is_none()
            && let Some(e) = &o.error
        {
            r.first_error = Some(format!("subscriber {i} ({k:?}): {e}"));
        }
        match k {
            Kind::Waiting => roll_ok += usize::from(o.frames_idle == 1 && o.frames_data == 0),
            Kind::Attentive => {
                r.attentive_frames += o.frames_data;
                r.attentive_lost += o.lost;
                r.attentive_lost_lapped += o.lost_lapped;
                att_ok += usize::from(o.frames_data == r.produced && o.lost == 0);
            }
            Kind::Slow => {
                r.slow_received += o.frames_data;
                r.slow_lost += o.lost;
                let unavailable = o.end.as_ref().filter(|(c, _)| *c == 14);
                let exact = match (unavailable, first_data) {
                    (Some((_, msg)), Some(d0)) => {
                        r.slow_unavailable += 1;
                        resume_in(msg)
                            .is_some_and(|res| o.frames_data + o.lost == res.saturating_sub(d0))
                    }
                    _ => o.frames_data + o.lost == r.produced,
                };
                slow_ok += usize::from(exact);
            }
        }
    }
    r.roll_call = (roll_ok, waiting);
    r.attentive_complete = (att_ok, attentive);
    r.slow_exact = (slow_ok, slow);
    r.wall_s = t0.elapsed().as_secs_f64();
    r
}

/// The markdown section, between its BEGIN and END markers.
pub(crate) fn scale_section(r: &ScaleResult, command: &str) -> String {
    format!(
        "{SECTION_BEGIN}\n{}\n{SECTION_END}\n",
        scale_section_body(r, command).trim_end()
    )
}

fn scale_section_body(r: &ScaleResult, command: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## 10,000 subscribers\n");
    let _ = writeln!(
        s,
        "Reproduce:\n\n```sh\ncargo build --release -p ringside -p ringside-e2e\n{command}\n```\n"
    );
    if let Some(why) = &r.skipped {
        let _ = writeln!(s, "Skipped: {why}\n");
        return s;
    }
    let Some(p) = &r.params else {
        return s;
    };
    let (w, a, sl) = p.split();
    let n = p.subscribers as u64;
    let _ = writeln!(
        s,
        "Machine: {}. `ringside serve {}`, in a cgroup v1 memory group whose `memory.limit_in_bytes` is the printed budget, {} ({} bytes). {} subscribers, each on its own TCP and HTTP/2 connection (a raw `h2` client in the harness, 64 KiB windows): {w} waiting at `latest` on a topic written once (the roll call), {a} attentive, {sl} slow (they read for {:?}, stop reading for {:?}, then drain). One producer writes {} frames of {} B at {} frames/s.\n",
        machine(),
        r.flags.join(" "),
        mib(r.budget),
        r.budget,
        p.subscribers,
        p.slow_read,
        p.slow_pause,
        p.frames(),
        p.payload,
        p.rate
    );
    let _ = writeln!(
        s,
        "The budget `serve` printed:\n\n```text\n{}\n```\n",
        r.budget_table
    );
    if !r.nofile_line.is_empty() {
        let _ = writeln!(
            s,
            "File descriptors, from the sidecar's log: `{}`\n",
            r.nofile_line.trim()
        );
    }
    let per = |b: u64| b.saturating_sub(r.anon_before) / n.max(1);
    let _ = writeln!(s, "| measure | value |\n|---|---|");
    let rows = [
        (
            "subscribers connected",
            format!(
                "{} of {} in {:.1} s ({} failed)",
                r.connected, p.subscribers, r.connect_s, r.connect_failed
            ),
        ),
        (
            "sidecar RssAnon before anyone connected",
            mib(r.anon_before),
        ),
        (
            "sidecar RssAnon, all connected and waiting",
            format!(
                "{} ({} B per subscriber above the empty sidecar)",
                mib(r.anon_connected),
                per(r.anon_connected)
            ),
        ),
        (
            "sidecar RssAnon, slow ones stopped, data flowing",
            format!(
                "{} ({} B per subscriber)",
                mib(r.anon_paused),
                per(r.anon_paused)
            ),
        ),
        (
            "sidecar peak RssAnon (sampled every 20 ms)",
            format!(
                "{} ({} B per subscriber)",
                mib(r.anon_peak),
                per(r.anon_peak)
            ),
        ),
        (
            "cgroup peak usage (`memory.max_usage_in_bytes`, includes page cache and kernel memory)",
            mib(r.cgroup_peak),
        ),
        (
            "budget",
            format!(
                "{} ({:.0}% used at peak RssAnon)",
                mib(r.budget),
                r.anon_peak as f64 * 100.0 / r.budget.max(1) as f64
            ),
        ),
        (
            "OOM kills / sidecar alive at the end",
            format!(
                "{} / {}",
                r.oom_kills,
                if r.survived { "yes" } else { "**no**" }
            ),
        ),
        (
            "roll call: waiting subscribers that got exactly the one frame",
            format!("{} of {}", r.roll_call.0, r.roll_call.1),
        ),
        (
            "attentive subscribers with every data frame, no loss",
            format!(
                "{} of {} ({} frames in total, {} lost, {} of them lapped: their reader fell a ring behind)",
                r.attentive_complete.0,
                r.attentive_complete.1,
                r.attentive_frames,
                r.attentive_lost,
                r.attentive_lost_lapped
            ),
        ),
        (
            "slow subscribers with exact accounting",
            format!(
                "{} of {} (received {} + reported lost {}; {} ended with UNAVAILABLE and a resume sequence)",
                r.slow_exact.0, r.slow_exact.1, r.slow_received, r.slow_lost, r.slow_unavailable
            ),
        ),
        (
            "subscribers whose batches do not account for every sequence",
            r.accounting_broken.len().to_string(),
        ),
        (
            "sidecar CPU over the run",
            format!("{:.1} s", r.server_cpu_s),
        ),
        (
            "harness (client) RssAnon at the end",
            mib(r.client_anon_peak),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    let _ = writeln!(s);
    if let Some(e) = &r.first_error {
        let _ = writeln!(s, "First client error: `{e}`\n");
    }
    for b in r.accounting_broken.iter().take(5) {
        let _ = writeln!(s, "- broken: {b}");
    }
    let _ = writeln!(s, "Verdict: {}\n", verdict(r));
    s
}

fn verdict(r: &ScaleResult) -> String {
    let Some(p) = &r.params else {
        return "skipped".into();
    };
    let mut miss = Vec::new();
    if r.budget > 2 << 30 {
        miss.push(format!("budget {} is above 2 GiB", mib(r.budget)));
    }
    if r.connected < p.subscribers {
        miss.push(format!(
            "only {} of {} connected",
            r.connected, p.subscribers
        ));
    }
    if !r.survived || r.oom_kills > 0 {
        miss.push("the sidecar did not survive".into());
    }
    if r.anon_peak >= r.budget {
        miss.push("peak RssAnon reached the budget".into());
    }
    if r.roll_call.0 < r.roll_call.1 {
        miss.push("not every waiting subscriber got the roll call".into());
    }
    if r.attentive_complete.0 < r.attentive_complete.1 {
        miss.push("not every attentive subscriber got every frame".into());
    }
    if r.slow_exact.0 < r.slow_exact.1 {
        miss.push("slow subscribers' accounting is not exact".into());
    }
    if !r.accounting_broken.is_empty() {
        miss.push("batches with broken accounting".into());
    }
    if miss.is_empty() {
        format!(
            "**met** for {} subscribers: within a printed budget of {} (≤ 2 GiB), every delivery and loss accounted.",
            p.subscribers,
            mib(r.budget)
        )
    } else {
        format!("**not met**: {}.", miss.join("; "))
    }
}

/// First line of the scale section in `benchmarks.md`; a `--full` run keeps everything
/// from here to [`SECTION_END`] as it is.
const SECTION_BEGIN: &str =
    "<!-- BEGIN scale (issue 13; written by `target/release/e2e --scale`) -->";
/// Last line of the scale section.
const SECTION_END: &str = "<!-- END scale -->";

/// Replaces the scale section of `md` (from its BEGIN to its END marker) with
/// `section`, or appends it.
pub(crate) fn splice_section(md: &str, section: &str) -> String {
    let found = md.find("<!-- BEGIN scale").and_then(|start| {
        let end = md[start..].find(SECTION_END)? + start + SECTION_END.len();
        Some((start, end))
    });
    match found {
        Some((start, end)) => format!("{}{}{}", &md[..start], section.trim_end(), &md[end..]),
        None => format!("{}\n\n{}\n", md.trim_end(), section.trim_end()),
    }
}
