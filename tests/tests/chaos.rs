//! Chaos harness, short mode: a real `ringside serve`, several producer processes and
//! several resuming gRPC subscribers, while faults are injected at random from a seeded RNG
//! for `RINGSIDE_CHAOS_SECS` seconds (default 60; seed from `RINGSIDE_CHAOS_SEED`, printed).
//!
//! Faults (dealt from a seeded deck: every kind once per round): SIGKILL of producers (some
//! parked between claim and commit), SIGSTOP/SIGCONT of producers and of the sidecar, SIGKILL
//! of the sidecar and a restart on the same socket and port (it adopts the ring from the
//! reconnecting producers), subscribers that drop their stream and resume from their last
//! `resume_seq`, subscribers that stop reading, Subscribe storms past `--max-subscribers`,
//! TCP storms past `--max-connections`, a hostile producer writing garbage over the ring,
//! trying to truncate it, or forging its claim word (six kinds), malformed gRPC requests,
//! clients with a missing or wrong bearer token (the sidecar runs with `--auth-token-file`;
//! the harness's own clients send the token), slowloris TCP clients, and a flood of streams
//! on one HTTP/2 connection past `--max-streams-per-connection`. Every third producer is the
//! C program `tests/c/chaos_producer.c` linked against libringside (skipped, with a `SKIP C
//! producers` line, without a C compiler). Where a cgroup v1 memory group can be created,
//! every sidecar runs under a hard limit equal to its budget (else `SKIP cgroup limit`).
//!
//! Subscribers: four tonic clients (HTTP/2) and one grpc-web client (HTTP/1.1,
//! `tests/src/grpc_web.rs`). The sidecar alternates between plaintext and TLS at every
//! restart (certificates from the `openssl` command; without it, `SKIP TLS` and plaintext
//! only), and every client of the harness (subscribers, storms, bad-token and hostile
//! requests, the slow reader and the stream flood) follows, so each kind runs against both.
//! The Rust producers discard one reservation in 97, which subscribers must see counted.
//!
//! Checked per subscriber, by the harness itself, over the ring sequence numbers it was
//! responsible for: received + reported lost (by reason) + discarded = span, so unaccounted
//! = 0; every batch's `[from_seq, resume_seq)` adds up to its frames, losses and counts, and
//! consecutive batches of a stream touch; `resume_seq` never goes backwards on a stream
//! (also after the "sequence backwards, position kept" forgery); no
//! sequence or payload seen twice; every payload passes its own checksum. Also: the sidecar
//! never exits unless killed, no producer call fails, the sidecar's peak RssAnon stays
//! below its printed budget and the cgroup never OOM-kills it, bad-token clients and
//! malformed requests are never served, flood streams past the limit are refused (none
//! queued), subscribers progress after every claim forgery, and slowloris clients are
//! reaped. The longest producer call and the worst p99.9 are recorded, not asserted (no
//! timing asserts). A summary table is printed at the end.
//!
//! The test reads like the fault deck: `FAULT_DECK` pairs every fault kind with the phase of
//! `Run` that injects it, and `chaos_short_mode_accounts_for_every_frame` prepares the run,
//! deals and injects faults for the run length, drains, and then calls one named check per
//! promise above.
//!
//! Rust producers are this test binary re-executed with `RINGSIDE_CHAOS_PRODUCER` set (see
//! `chaos_producer_child`), so they can park between claim and commit on command and time
//! each call.
//!
//! Run: `RINGSIDE_CHAOS_SECS=60 cargo test -p ringside-tests --test chaos -- --nocapture`.

use ringside_tests::chaos_h2;
use ringside_tests::sidecar as harness;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::{Sidecar, TempDir, budget_bytes, free_port};
use ringside_proto::v1;
use ringside_proto::v1::subscribe_request::Start;
use ringside_tests::chaos_support::{
    CgroupReport, Deck, Fault, ProducerStat, Rng, SubscriberTally, Summary, build_c_producer,
    run_length_from_env, run_producer, seed_from_env,
};
use ringside_tests::chaos_tls::{TestCerts, make_certs};
use ringside_tests::grpc_web;
use ringside_tests::memory::{MemCgroup, rss_anon};
use ringside_tests::ring_support::{MAGIC_C, decode_payload};

const HOSTILE: &str = env!("CARGO_BIN_EXE_ring_hostile");
/// Env var that turns this test binary into a chaos producer: `socket=PATH;index=N`.
const PRODUCER_ENV: &str = "RINGSIDE_CHAOS_PRODUCER";
/// Producers alive at any time.
const PRODUCERS: usize = 3;
/// Accounting subscribers: this many tonic (HTTP/2) ones, then one grpc-web (HTTP/1.1).
const SUBSCRIBERS: usize = 4;
/// Index of the grpc-web subscriber (after the tonic ones).
const WEB_SUBSCRIBER: usize = SUBSCRIBERS;
/// `--max-subscribers` of the sidecar under test.
const MAX_SUBSCRIBERS: u64 = 12;
/// `--max-connections` of the sidecar under test.
const MAX_CONNECTIONS: u64 = 16;
/// Sidecar flags (ring small enough that stalled subscribers get lapped).
const FLAGS: &[&str] = &[
    "--ring-size",
    "1MiB",
    "--max-payload",
    "1KiB",
    "--max-subscribers",
    "12",
    "--max-connections",
    "16",
    "--max-streams-per-connection",
    "8",
    "--subscriber-buffer",
    "64KiB",
    "--stall-timeout",
    "100ms",
    "--subscriber-stall-timeout",
    "4s",
    "--adopt-grace",
    "1s",
    // Short keepalive, so slowloris connections that stop answering are reaped in the run.
    "--keepalive-interval",
    "2s",
    "--keepalive-timeout",
    "2s",
    // Connections that never finish the HTTP/2 preface (slowloris) are closed after this.
    "--handshake-timeout",
    "3s",
];
/// `--max-streams-per-connection` of the sidecar under test.
const MAX_STREAMS_PER_CONNECTION: u64 = 8;
/// Streams a stream flood opens at once on its one connection.
const FLOOD_STREAMS: u32 = 40;
/// How long a slowloris client holds its connection at most.
const SLOWLORIS_HOLD: Duration = Duration::from_secs(15);

/// Not a test on its own: the body of a chaos producer process (see the module docs).
#[test]
fn chaos_producer_child() {
    let Ok(spec) = std::env::var(PRODUCER_ENV) else {
        return;
    };
    let mut socket = None;
    let mut index = 0u32;
    for kv in spec.split(';') {
        match kv.split_once('=') {
            Some(("socket", v)) => socket = Some(PathBuf::from(v)),
            Some(("index", v)) => index = v.parse().expect("index"),
            _ => {}
        }
    }
    let socket = socket.expect("socket= in RINGSIDE_CHAOS_PRODUCER");
    // ~25 frames per millisecond-ish pause: a few thousand frames/s per producer, enough to
    // lap a 1 MiB ring in well under a second of subscriber stall on this 2-core machine.
    run_producer(&socket, index, 25, Duration::from_millis(2));
}

/// One chaos producer process and what it reported.
struct ProducerProc {
    child: Child,
    stdin: Option<ChildStdin>,
    index: u32,
    /// The C producer (`tests/c/chaos_producer.c`), not the re-executed test binary.
    is_c: bool,
    last: Arc<Mutex<ProducerStat>>,
    parked: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
    stopped_ever: bool,
}

impl ProducerProc {
    /// Starts producer `index`: the C program `c_bin` when given, else this test binary.
    fn spawn(socket: &Path, index: u32, c_bin: Option<&Path>) -> ProducerProc {
        let mut cmd = match c_bin {
            // Same rate as the Rust producer: bursts of 25, 2 ms apart.
            Some(bin) => {
                let mut c = Command::new(bin);
                c.arg(socket).arg(index.to_string()).args(["25", "2000"]);
                c
            }
            None => {
                let exe = std::env::current_exe().expect("current exe");
                let mut c = Command::new(exe);
                c.args([
                    "--exact",
                    "chaos_producer_child",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(
                    PRODUCER_ENV,
                    format!("socket={};index={index}", socket.display()),
                );
                c
            }
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chaos producer (test binary or C program)");
        let stdout = child.stdout.take().expect("stdout");
        let last = Arc::new(Mutex::new(ProducerStat {
            index,
            ..ProducerStat::default()
        }));
        let parked = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        {
            let (last, parked, errors) =
                (Arc::clone(&last), Arc::clone(&parked), Arc::clone(&errors));
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(st) = ProducerStat::parse(&line) {
                        if let Ok(mut l) = last.lock() {
                            *l = st;
                        }
                    } else if line.trim() == "PARKED" {
                        parked.store(true, Ordering::SeqCst);
                    } else if line.starts_with("CHAOS ERROR") {
                        eprintln!("producer {index}: {line}");
                        errors.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
        ProducerProc {
            stdin: child.stdin.take(),
            child,
            index,
            is_c: c_bin.is_some(),
            last,
            parked,
            errors,
            stopped_ever: false,
        }
    }

    fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(self.pid(), sig);
    }

    fn command(&mut self, cmd: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{cmd}");
            let _ = stdin.flush();
        }
    }

    fn kill(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// Asks it to claim a frame, write it and never commit it, and waits (bounded) until it
    /// says so; a producer SIGSTOPped meanwhile does not park in time.
    fn park_between_claim_and_commit(&mut self) {
        self.command("park");
        let deadline = Instant::now() + Duration::from_secs(3);
        while !self.parked.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !self.parked.load(Ordering::SeqCst) {
            eprintln!(
                "producer {} did not park (SIGSTOPped or slow); killing anyway",
                self.index
            );
        }
    }

    /// Asks it to stop and waits (bounded) for its final report.
    fn stop(&mut self) {
        self.command("stop");
        self.stdin.take();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                if !status.success() {
                    eprintln!("producer {} exited {status}", self.index);
                    self.errors.fetch_add(1, Ordering::SeqCst);
                }
                // Let the reader thread take the last line.
                std::thread::sleep(Duration::from_millis(50));
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("producer {} did not stop; killing it", self.index);
        self.errors.fetch_add(1, Ordering::SeqCst);
        self.kill();
    }

    fn stat(&self) -> ProducerStat {
        self.last.lock().map(|l| *l).unwrap_or_default()
    }
}

/// Shared state of one accounting subscriber.
#[derive(Default)]
struct SubState {
    tally: SubscriberTally,
    /// (ring id, next expected sequence) of the current segment.
    ring: Option<u64>,
    first: Option<u64>,
    next: Option<u64>,
    /// Per producer index: highest per-producer sequence received.
    last_payload: BTreeMap<u32, u64>,
    /// `resume_seq` of the last batch on the current stream (None at a stream's start).
    stream_resume: Option<u64>,
    /// Gaps the current batch's `filtered` + `discarded` counts may still explain.
    gap_budget: u64,
}

impl SubState {
    /// Accounts one event (a loss of `n` frames from `first`, or one frame) at `seq`. A gap
    /// before it is explained by the batch's discarded (and filtered) count as far as that
    /// goes; beyond, it is unaccounted.
    fn account(&mut self, seq: u64, n: u64) {
        let next = *self.next.get_or_insert(seq);
        self.first.get_or_insert(seq);
        if seq > next {
            let gap = seq - next;
            let explained = gap.min(self.gap_budget);
            self.gap_budget -= explained;
            if gap > explained {
                self.tally.unaccounted += gap - explained;
                eprintln!("GAP: expected seq {next}, got {seq} (+{n})");
            }
        } else if seq < next {
            self.tally.duplicates += (next - seq).min(n);
            eprintln!("OVERLAP: expected seq {next}, got {seq} (+{n})");
        }
        self.next = Some(next.max(seq.saturating_add(n)));
    }

    fn close_segment(&mut self) {
        if let (Some(first), Some(next)) = (self.first, self.next) {
            self.tally.span += next - first;
        }
        self.first = None;
        self.next = None;
        self.last_payload.clear();
    }

    /// A new stream of this subscriber starts.
    fn new_stream(&mut self, tls: bool) {
        self.tally.streams += 1;
        self.tally.tls_streams += u64::from(tls);
        self.stream_resume = None;
    }

    fn batch(&mut self, b: &v1::Batch) {
        if self.ring != Some(b.ring_id) {
            self.close_segment();
            self.ring = Some(b.ring_id);
            self.tally.rings += 1;
        }
        // The batch's own accounting: [from_seq, resume_seq) = frames + losses in range +
        // filtered + discarded; resume_seq never goes backwards on a stream.
        let in_range: u64 = b
            .losses
            .iter()
            .filter(|l| l.first_seq >= b.from_seq)
            .map(|l| l.frames)
            .sum();
        let counted = b.frames.len() as u64 + in_range + b.filtered + b.discarded;
        if b.resume_seq.checked_sub(b.from_seq) != Some(counted) {
            self.tally.accounting_errors += 1;
            eprintln!(
                "BATCH ACCOUNTING: [{}, {}) holds {} frames, {in_range} lost, {} filtered, {} discarded",
                b.from_seq,
                b.resume_seq,
                b.frames.len(),
                b.filtered,
                b.discarded
            );
        }
        if let Some(prev) = self.stream_resume {
            if b.resume_seq < prev {
                self.tally.resume_backwards += 1;
                eprintln!("RESUME BACKWARDS: {prev} -> {}", b.resume_seq);
            }
            if b.from_seq != prev {
                self.tally.accounting_errors += 1;
                eprintln!(
                    "BATCH RANGES: from_seq {} after resume_seq {prev}",
                    b.from_seq
                );
            }
        }
        self.stream_resume = Some(b.resume_seq);
        self.tally.discarded += b.discarded;
        self.tally.filtered += b.filtered;
        self.gap_budget = b.filtered + b.discarded;
        for l in &b.losses {
            let stale = l.reason == v1::LossReason::Corrupt as i32
                && self
                    .next
                    .is_some_and(|next| l.first_seq.saturating_add(l.frames) <= next);
            if stale {
                // Frames under sequences a forged claim word rewound (the "unaligned"
                // forgery's repair rewinds it): the reader reports each one as corrupt under
                // its own stale sequence (the sidecar merges neighbours into one run), wholly
                // below the span already accounted.
                self.tally.stale_reported += l.frames;
                continue;
            }
            let reason = v1::LossReason::try_from(l.reason)
                .map(|r| {
                    r.as_str_name()
                        .trim_start_matches("LOSS_REASON_")
                        .to_ascii_lowercase()
                })
                .unwrap_or_else(|_| format!("reason-{}", l.reason));
            *self.tally.lost.entry(reason).or_default() += l.frames;
            self.account(l.first_seq, l.frames);
        }
        for f in &b.frames {
            self.tally.received += 1;
            self.account(f.seq, 1);
            match decode_payload(&f.payload) {
                Ok(p) => {
                    if f.payload.starts_with(&MAGIC_C) {
                        self.tally.received_c += 1;
                    }
                    if let Some(&prev) = self.last_payload.get(&p.producer)
                        && p.seq <= prev
                    {
                        self.tally.duplicates += 1;
                        eprintln!(
                            "payload of producer {} seq {} again (after {prev})",
                            p.producer, p.seq
                        );
                    }
                    self.last_payload.insert(p.producer, p.seq);
                }
                Err(e) => {
                    self.tally.corrupt += 1;
                    eprintln!("CORRUPT delivery at seq {}: {e}", f.seq);
                }
            }
        }
        // Discarded (or filtered) sequence numbers after the last frame of the batch.
        if let Some(next) = self.next
            && b.resume_seq > next
            && self.gap_budget > 0
        {
            let explained = (b.resume_seq - next).min(self.gap_budget);
            self.gap_budget -= explained;
            self.next = Some(next + explained);
        }
        if self.gap_budget > 0 {
            // Counted as discarded or filtered, but no gap was left for them.
            self.tally.accounting_errors += 1;
            eprintln!(
                "BATCH COUNTS: {} discarded/filtered not in any gap",
                self.gap_budget
            );
            self.gap_budget = 0;
        }
    }
}

/// Commands to a subscriber, set by the fault loop.
#[derive(Default)]
struct SubControl {
    reconnect: AtomicBool,
    stall_ms: AtomicU64,
    stop: AtomicBool,
}

/// The bearer token of the sidecar under test (set once at start).
static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Where the harness's clients connect, and how: the sidecar runs TLS or plaintext, and
/// the mode changes at every restart (when certificates could be made), so every client
/// kind runs against both.
struct Target {
    addr: SocketAddr,
    tls_now: AtomicBool,
    certs: Option<TestCerts>,
    /// For tonic: the CA to trust.
    ca_pem: Option<Vec<u8>>,
    /// For the raw HTTP/2 clients (ALPN h2) and the grpc-web client (HTTP/1.1, no ALPN).
    h2_tls: Option<Arc<rustls::ClientConfig>>,
    web_tls: Option<Arc<rustls::ClientConfig>>,
}

impl Target {
    fn tls(&self) -> bool {
        self.tls_now.load(Ordering::SeqCst)
    }

    fn h2(&self) -> Option<&Arc<rustls::ClientConfig>> {
        self.h2_tls.as_ref().filter(|_| self.tls())
    }

    fn web(&self) -> Option<&Arc<rustls::ClientConfig>> {
        self.web_tls.as_ref().filter(|_| self.tls())
    }

    /// A tonic endpoint for the current mode.
    fn endpoint(&self) -> Option<tonic::transport::Endpoint> {
        let tls = self.tls();
        let scheme = if tls { "https" } else { "http" };
        let mut e = tonic::transport::Endpoint::from_shared(format!("{scheme}://{}", self.addr))
            .ok()?
            .connect_timeout(Duration::from_secs(2));
        if tls {
            let ca = tonic::transport::Certificate::from_pem(self.ca_pem.clone()?);
            e = e
                .tls_config(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(ca)
                        .domain_name(ringside_tests::chaos_tls::SERVER_NAME),
                )
                .ok()?;
        }
        Some(e)
    }

    /// The serve flags for a start in `tls` mode.
    fn flags(&self, base: &[&str], tls: bool) -> Vec<String> {
        let mut v: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        if let (true, Some(c)) = (tls, &self.certs) {
            v.push("--tls-cert".into());
            v.push(c.cert.display().to_string());
            v.push("--tls-key".into());
            v.push(c.key.display().to_string());
        }
        v
    }
}

/// A request carrying the harness's bearer token.
fn authed<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(token) = TOKEN.get() {
        let value = format!("Bearer {token}")
            .parse()
            .expect("a bearer token is a valid header value");
        req.metadata_mut().insert("authorization", value);
    }
    req
}

/// How a Subscribe is first answered: `Ok` = a batch was served, `Err(Some(code))` = a
/// status (on the call or the stream), `Err(None)` = no answer in time or the stream ended.
async fn first_answer(
    c: &mut v1::ringside_client::RingsideClient<tonic::transport::Channel>,
    req: impl tonic::IntoRequest<v1::SubscribeRequest>,
) -> Result<(), Option<tonic::Code>> {
    match tokio::time::timeout(Duration::from_secs(3), c.subscribe(req)).await {
        Ok(Ok(mut s)) => {
            match tokio::time::timeout(Duration::from_secs(1), s.get_mut().message()).await {
                Ok(Err(st)) => Err(Some(st.code())),
                Ok(Ok(Some(_))) => Ok(()),
                _ => Err(None),
            }
        }
        Ok(Err(st)) => Err(Some(st.code())),
        Err(_) => Err(None),
    }
}

/// Clients with a missing or wrong bearer token; returns (UNAUTHENTICATED, served a frame
/// (must be 0), no clear answer: a timeout or transport error during another fault, or a
/// different status; printed).
async fn bad_auth(target: Arc<Target>) -> [u64; 3] {
    let Some(mut c) = connect(&target).await else {
        return [0, 0, 0];
    };
    let token = TOKEN.get().cloned().unwrap_or_default();
    let short = token[..token.len().saturating_sub(1)].to_owned();
    let cases: Vec<Option<String>> = vec![
        None,
        Some("Bearer wrong".into()),
        Some(format!("Bearer {token}x")),
        Some(format!("Bearer {short}")),
        Some(format!("Basic {token}")),
        Some(token.clone()),
        Some("Bearer ".into()),
    ];
    let mut out = [0u64; 3];
    for (i, header) in cases.into_iter().enumerate() {
        let mut req = tonic::Request::new(v1::SubscribeRequest {
            start: Some(Start::Earliest(true)),
            ..Default::default()
        });
        if let Some(h) = &header
            && let Ok(v) = h.parse()
        {
            req.metadata_mut().insert("authorization", v);
        }
        let outcome = first_answer(&mut c, req).await;
        match outcome {
            Err(Some(tonic::Code::Unauthenticated)) => out[0] += 1,
            Ok(()) => {
                eprintln!("bad-auth case {i} ({header:?}) was served a batch");
                out[1] += 1;
            }
            Err(code) => {
                eprintln!("bad-auth case {i}: no UNAUTHENTICATED ({code:?})");
                out[2] += 1;
            }
        }
    }
    // A unary call without a token too.
    match tokio::time::timeout(Duration::from_secs(3), c.info(v1::InfoRequest {})).await {
        Ok(Err(st)) if st.code() == tonic::Code::Unauthenticated => out[0] += 1,
        Ok(Ok(_)) => {
            eprintln!("Info without a token was answered");
            out[1] += 1;
        }
        other => {
            eprintln!("Info without a token: no UNAUTHENTICATED ({other:?})");
            out[2] += 1;
        }
    }
    out
}

async fn connect(
    target: &Target,
) -> Option<v1::ringside_client::RingsideClient<tonic::transport::Channel>> {
    let ch = target.endpoint()?.connect().await.ok()?;
    Some(v1::ringside_client::RingsideClient::new(ch).max_decoding_message_size(16 << 20))
}

/// An accounting subscriber: resumes from its last `resume_seq` after every disconnect.
async fn subscriber(target: Arc<Target>, state: Arc<Mutex<SubState>>, ctl: Arc<SubControl>) {
    let mut resume: Option<(u64, u64)> = None; // (ring id, resume_seq)
    while !ctl.stop.load(Ordering::SeqCst) {
        let tls = target.tls();
        let Some(mut client) = connect(&target).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let start = match resume {
            Some((_, seq)) => Start::Sequence(seq),
            None => Start::Earliest(true),
        };
        let req = v1::SubscribeRequest {
            start: Some(start),
            ..Default::default()
        };
        let mut stream = match client.subscribe(authed(req)).await {
            Ok(s) => s.into_inner(),
            Err(status) => {
                if status.code() == tonic::Code::InvalidArgument && resume.is_some() {
                    // The resume point is not in this ring (a replaced ring): start over.
                    eprintln!(
                        "resume refused ({}); starting from earliest",
                        status.message()
                    );
                    resume = None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Ok(mut s) = state.lock() {
            s.new_stream(tls);
        }
        loop {
            if ctl.stop.load(Ordering::SeqCst) || ctl.reconnect.swap(false, Ordering::SeqCst) {
                break;
            }
            let stall = ctl.stall_ms.swap(0, Ordering::SeqCst);
            if stall > 0 {
                tokio::time::sleep(Duration::from_millis(stall)).await;
            }
            match tokio::time::timeout(Duration::from_millis(250), stream.message()).await {
                Err(_) => continue,
                Ok(Ok(Some(b))) => {
                    if let Some((ring, _)) = resume
                        && ring != b.ring_id
                    {
                        eprintln!("ring replaced: {ring:#x} -> {:#x}", b.ring_id);
                    }
                    resume = Some((b.ring_id, b.resume_seq));
                    if let Ok(mut s) = state.lock() {
                        s.batch(&b);
                    }
                }
                Ok(Ok(None)) | Ok(Err(_)) => break,
            }
        }
    }
}

/// The grpc-web accounting subscriber (HTTP/1.1, over TLS when the sidecar runs TLS):
/// like [`subscriber`], resuming from its last `resume_seq` after every disconnect.
fn web_subscriber(target: Arc<Target>, state: Arc<Mutex<SubState>>, ctl: Arc<SubControl>) {
    let mut resume: Option<(u64, u64)> = None; // (ring id, resume_seq)
    while !ctl.stop.load(Ordering::SeqCst) {
        let start = match resume {
            Some((_, seq)) => Start::Sequence(seq),
            None => Start::Earliest(true),
        };
        let req = prost::Message::encode_to_vec(&v1::SubscribeRequest {
            start: Some(start),
            ..Default::default()
        });
        let mut stream = match grpc_web::call(
            target.addr,
            target.web(),
            ringside_proto::SUBSCRIBE_PATH,
            TOKEN.get().map(String::as_str),
            &req,
        ) {
            Ok(s) => s,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if let Ok(mut s) = state.lock() {
            s.new_stream(stream.is_tls());
        }
        loop {
            if ctl.stop.load(Ordering::SeqCst) || ctl.reconnect.swap(false, Ordering::SeqCst) {
                break;
            }
            let stall = ctl.stall_ms.swap(0, Ordering::SeqCst);
            if stall > 0 {
                std::thread::sleep(Duration::from_millis(stall));
            }
            match stream.next(Duration::from_millis(250)) {
                Ok(grpc_web::Event::Timeout) => continue,
                Ok(grpc_web::Event::Message(bytes)) => {
                    let Ok(b) = <v1::Batch as prost::Message>::decode(bytes.as_slice()) else {
                        eprintln!("grpc-web: a message that is not a Batch");
                        if let Ok(mut s) = state.lock() {
                            s.tally.corrupt += 1;
                        }
                        break;
                    };
                    resume = Some((b.ring_id, b.resume_seq));
                    if let Ok(mut s) = state.lock() {
                        s.batch(&b);
                    }
                }
                Ok(grpc_web::Event::Trailers { status, message }) => {
                    if status == tonic::Code::InvalidArgument as i32 && resume.is_some() {
                        eprintln!("grpc-web resume refused ({message}); starting from earliest");
                        resume = None;
                    }
                    break;
                }
                Err(_) => break,
            }
        }
    }
}

/// Opens `n` Subscribe streams over a few connections, holds them, counts the answers.
async fn subscribe_storm(target: Arc<Target>, n: u64) -> [u64; 3] {
    let mut clients = Vec::new();
    for _ in 0..4 {
        if let Some(c) = connect(&target).await {
            clients.push(c);
        }
    }
    if clients.is_empty() {
        return [0, 0, 0];
    }
    let mut tasks = Vec::new();
    for i in 0..n {
        let mut c = clients[(i as usize) % clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            let req = v1::SubscribeRequest {
                start: Some(Start::Latest(true)),
                ..Default::default()
            };
            let r = tokio::time::timeout(Duration::from_secs(3), c.subscribe(authed(req))).await;
            match r {
                Ok(Ok(mut s)) => {
                    // A granted stream may still be refused on its first message.
                    let first =
                        tokio::time::timeout(Duration::from_millis(500), s.get_mut().message())
                            .await;
                    let code = match first {
                        Ok(Err(st)) => Some(st.code()),
                        _ => None,
                    };
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    match code {
                        None => 0,
                        Some(tonic::Code::ResourceExhausted) => 1,
                        Some(_) => 2,
                    }
                }
                Ok(Err(st)) if st.code() == tonic::Code::ResourceExhausted => 1,
                _ => 2,
            }
        }));
    }
    let mut out = [0u64; 3];
    for t in tasks {
        if let Ok(k) = t.await {
            out[k] += 1;
        }
    }
    out
}

/// Malformed requests; returns (refused with a clear status, accepted: a stream that
/// delivered a batch, no clear answer: timeouts or transport errors while a fault such as a
/// SIGSTOPped or restarting sidecar is in progress).
async fn hostile_requests(target: Arc<Target>) -> [u64; 3] {
    let Some(mut c) = connect(&target).await else {
        return [0, 0, 0];
    };
    let many: Vec<String> = (0..100).map(|i| format!("t{i}")).collect();
    let cases = vec![
        v1::SubscribeRequest {
            start: Some(Start::Sequence(u64::MAX)),
            ..Default::default()
        },
        v1::SubscribeRequest {
            topics: many,
            ..Default::default()
        },
        v1::SubscribeRequest {
            topic_prefixes: vec![String::new()],
            ..Default::default()
        },
        v1::SubscribeRequest {
            topics: vec!["x".repeat(300)],
            ..Default::default()
        },
    ];
    let mut out = [0u64; 3];
    for req in cases {
        let outcome = first_answer(&mut c, authed(req)).await;
        match outcome {
            // RESOURCE_EXHAUSTED is also a clear answer while a storm holds every slot.
            Err(Some(tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted)) => out[0] += 1,
            Ok(()) => {
                eprintln!("hostile request was served a batch");
                out[1] += 1;
            }
            Err(code) => {
                eprintln!("hostile request: no clear answer ({code:?})");
                out[2] += 1;
            }
        }
    }
    out
}

/// Runs a `ring_hostile` mode to completion (bounded).
fn hostile(socket: &Path, mode: &str, extra: &[String]) {
    let mut child = Command::new(HOSTILE)
        .arg(mode)
        .arg("--socket")
        .arg(socket)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ring_hostile");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.starts_with("OP ") && !l.contains("EPERM") && !l.contains("refused"))
            .collect::<Vec<String>>()
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Ok(lines) = reader.join() {
        for l in lines {
            eprintln!("ring_hostile {mode}: {l}");
        }
    }
}

/// Claim word forgeries (`ring_hostile forge --kind K`) and the sequence numbers each adds
/// without a frame (reported lost, never written).
const FORGERIES: [(&str, u64); 6] = [
    ("unaligned", 0),
    ("future", 1000),
    ("wrap", 100),
    ("backwards", 0),
    ("seq-ahead", 5000),
    // Sequence - 50, position kept: the next 50 frames reuse passed sequence numbers and are
    // reported as stale corrupt frames; resume_seq must not go backwards.
    ("seq-backwards", 0),
];

/// Starts (or restarts) the sidecar: plaintext on even generations, TLS on odd ones when
/// certificates exist, so the harness's clients meet both.
fn start_sidecar(
    dir: &TempDir,
    target: &Target,
    flags: &[String],
    cgroup: Option<&Path>,
    generation: u64,
    starts: &mut [u64; 2],
) -> Sidecar {
    let tls = target.certs.is_some() && generation % 2 == 1;
    target.tls_now.store(tls, Ordering::SeqCst);
    starts[usize::from(tls)] += 1;
    let base: Vec<&str> = flags.iter().map(String::as_str).collect();
    let owned = target.flags(&base, tls);
    let args: Vec<&str> = owned.iter().map(String::as_str).collect();
    Sidecar::start_in(dir, target.addr.port(), &args, cgroup)
}

/// SIGSTOPs every producer and waits (bounded) until each is stopped.
fn stop_all(producers: &mut [ProducerProc]) {
    for p in producers.iter_mut() {
        p.stopped_ever = true;
        p.signal(nix::sys::signal::Signal::SIGSTOP);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    for p in producers.iter() {
        while !is_stopped(p.child.id()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// SIGCONTs every producer.
fn cont_all(producers: &[ProducerProc]) {
    for p in producers {
        p.signal(nix::sys::signal::Signal::SIGCONT);
    }
}

/// True when `/proc/<pid>/stat` says stopped (or the process is gone).
fn is_stopped(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // The state follows the parenthesised command name.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_none_or(|st| matches!(st, "T" | "t" | "Z" | "X"))
}

/// True when this sidecar's startup log says it adopted the ring handed back by producers.
fn adopted(sidecar: &Sidecar) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = sidecar.stderr();
        if let Some(line) = log.lines().find(|l| l.contains("adopted=")) {
            return line.contains("adopted=true");
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A phase of the run that injects one fault.
type FaultPhase = fn(&mut Run);

/// The fault deck: every kind of fault and the phase of a [`Run`] that injects it, in the
/// order of [`Fault::ALL`]. The seeded [`Deck`] deals every kind once per round.
const FAULT_DECK: [(Fault, FaultPhase); 16] = [
    (Fault::KillProducer, Run::kill_producer),
    (
        Fault::KillProducerMidFrame,
        Run::kill_producer_parked_mid_frame,
    ),
    (Fault::StopProducer, Run::stop_and_continue_a_producer),
    (Fault::StopSidecar, Run::stop_and_continue_the_sidecar),
    (Fault::KillSidecar, Run::kill_and_restart_the_sidecar),
    (Fault::SubscriberReconnect, Run::drop_a_subscriber_stream),
    (Fault::SubscriberStall, Run::stall_a_subscriber),
    (Fault::SubscribeStorm, Run::storm_past_max_subscribers),
    (Fault::ConnectionStorm, Run::storm_past_max_connections),
    (Fault::HostileGarbage, Run::write_garbage_over_the_ring),
    (Fault::HostileTruncate, Run::try_to_truncate_the_ring),
    (Fault::HostileRequest, Run::send_malformed_requests),
    (Fault::BadAuth, Run::send_missing_and_wrong_tokens),
    (Fault::Slowloris, Run::open_slowloris_clients),
    (Fault::StreamFlood, Run::flood_streams_on_one_connection),
    (Fault::ClaimForgery, Run::forge_the_claim_word),
];

// The deck holds every kind once, in the order of `Fault::ALL`.
const _: () = {
    let mut i = 0;
    while i < Fault::ALL.len() {
        assert!(FAULT_DECK[i].0 as u8 == Fault::ALL[i] as u8);
        i += 1;
    }
};

/// Subscribe streams a subscribe storm opens at once.
const STORM_STREAMS: u64 = MAX_SUBSCRIBERS + 8;
/// TCP connections a connection storm opens at once.
const STORM_CONNECTIONS: u64 = MAX_CONNECTIONS + 16;

#[test]
fn chaos_short_mode_accounts_for_every_frame() {
    if std::env::var_os(PRODUCER_ENV).is_some() {
        return;
    }
    let mut run = Run::prepare(run_length_from_env(), seed_from_env());
    run.start_subscribers();
    run.start_producers();

    run.begin_fault_phase();
    while run.fault_phase_lasts() {
        run.pause_between_faults();
        let fault = run.deal();
        run.inject(fault);
    }
    run.end_fault_phase();

    run.drain();
    let end = run.finish();
    println!(
        "\nchaos summary (seed {}):\n{}",
        end.summary.seed,
        end.summary.render()
    );

    the_sidecar_never_exits_on_its_own(&end);
    every_frame_is_accounted_for(&end.summary);
    no_producer_call_fails(&end.summary);
    memory_stays_within_the_budget(&end.summary);
    every_subscriber_receives_frames(&end);
    subscribers_follow_the_sidecar_into_tls(&end.summary);
    hostile_and_unauthenticated_clients_are_never_served(&end.summary);
    stream_floods_are_refused_at_the_limit(&end.summary);
    claim_forgeries_never_stall_subscribers(&end.summary);
    if end.secs >= Duration::from_secs(60) {
        a_full_length_run_plays_the_whole_deck(&end);
    }
}

/// One accounting subscriber of the run: its state (written by its task) and its controls
/// (set by the faults).
type SubscriberHandle = (Arc<Mutex<SubState>>, Arc<SubControl>);

/// One chaos run: the sidecar under test, its producers and subscribers, the seeded fault
/// schedule, and the summary counted so far. Its methods are the phases of the test: setup,
/// one per fault kind (see [`FAULT_DECK`]), the drain, and the tally.
struct Run {
    /// Length of the fault phase.
    secs: Duration,
    rng: Rng,
    deck: Deck,
    /// Start of the fault phase.
    started: Instant,
    summary: Summary,
    /// The sidecar currently running (declared before `cgroup` and `dir`, so it is dropped,
    /// and killed, before them).
    sidecar: Sidecar,
    /// Where and how the harness's clients connect (plaintext or TLS, per start).
    target: Arc<Target>,
    /// `ringside serve` flags of every start, before the TLS ones.
    serve_flags: Vec<String>,
    /// The sidecar's producer socket (the same at every restart).
    socket: PathBuf,
    /// Incremented whenever the harness kills or restarts the sidecar (which closes every
    /// connection), so a slowloris client knows who closed it.
    generation: Arc<AtomicU64>,
    /// The C chaos producer, when it could be built.
    c_bin: Option<PathBuf>,
    /// Producers alive now.
    producers: Vec<ProducerProc>,
    /// Producers killed or stopped, with their last reports.
    finished: Vec<ProducerProc>,
    /// Index of the last producer started.
    next_index: u32,
    /// Accounting subscribers: the tonic ones, then the grpc-web one.
    subs: Vec<SubscriberHandle>,
    sub_tasks: Vec<tokio::task::JoinHandle<()>>,
    web_thread: Option<std::thread::JoinHandle<()>>,
    /// Subscribe storm answers: granted, RESOURCE_EXHAUSTED, other.
    storm_result: Arc<Mutex<[u64; 3]>>,
    /// Malformed requests: refused, served, no clear answer.
    hostile_result: Arc<Mutex<[u64; 3]>>,
    /// Bad-token clients: UNAUTHENTICATED, served, no clear answer.
    bad_auth_result: Arc<Mutex<[u64; 3]>>,
    /// Tells slowloris clients still holding that the fault phase is over.
    slow_stop: Arc<AtomicBool>,
    slow_results: Arc<Mutex<Vec<(chaos_h2::Slowloris, chaos_h2::SlowEnd)>>>,
    slow_threads: Vec<std::thread::JoinHandle<()>>,
    /// An encoded `SubscribeRequest` from the earliest frame (stream floods, slowloris).
    subscribe_earliest: Vec<u8>,
    /// The hard memory limit every sidecar of the run starts under, if any.
    cgroup: Option<MemCgroup>,
    rt: tokio::runtime::Runtime,
    dir: TempDir,
}

/// What a finished run leaves for the checks.
struct RunEnd {
    summary: Summary,
    /// The sidecar was still running when the harness stopped it.
    alive_at_end: bool,
    /// C producers took part.
    c_producers: bool,
    /// Length of the fault phase.
    secs: Duration,
}

/// Setup.
impl Run {
    /// Prints the seed, builds the C producer, writes the auth token, creates the cgroup and
    /// the TLS certificates (each with a `SKIP` line when it cannot), and starts the sidecar.
    fn prepare(secs: Duration, seed: u64) -> Run {
        eprintln!(
            "chaos: seed {seed} (RINGSIDE_CHAOS_SEED={seed} reproduces the fault schedule), {} s",
            secs.as_secs()
        );
        let mut summary = Summary {
            seed,
            secs: secs.as_secs(),
            ..Summary::default()
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let dir = TempDir::new("chaos");
        let c_bin = c_producer_or_skip(&dir, &mut summary);
        let port = free_port();
        let serve_flags = serve_flags_with_auth(&dir, seed);
        let target = Arc::new(target_or_skip_tls(&dir, port, &mut summary));
        // The sidecar alternates plaintext and TLS; TLS costs more per connection, so the
        // hard limit is the TLS budget whenever TLS is in the run.
        summary.budget = budget_bytes(
            &target
                .flags(FLAGS, true)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        let cgroup = memory_limit_or_skip(&mut summary);
        let sidecar = start_sidecar(
            &dir,
            &target,
            &serve_flags,
            cgroup.as_ref().map(|c| c.0.as_path()),
            0,
            &mut summary.sidecar_starts,
        );
        Run {
            secs,
            rng: Rng::new(seed),
            deck: Deck::default(),
            started: Instant::now(),
            summary,
            socket: sidecar.socket.clone(),
            sidecar,
            target,
            serve_flags,
            generation: Arc::new(AtomicU64::new(0)),
            c_bin,
            producers: Vec::new(),
            finished: Vec::new(),
            next_index: 0,
            subs: Vec::new(),
            sub_tasks: Vec::new(),
            web_thread: None,
            storm_result: Arc::default(),
            hostile_result: Arc::default(),
            bad_auth_result: Arc::default(),
            slow_stop: Arc::default(),
            slow_results: Arc::default(),
            slow_threads: Vec::new(),
            subscribe_earliest: prost::Message::encode_to_vec(&v1::SubscribeRequest {
                start: Some(Start::Earliest(true)),
                ..Default::default()
            }),
            cgroup,
            rt,
            dir,
        }
    }

    /// Starts the accounting subscribers: the tonic ones, then the grpc-web one. Before any
    /// producer, so they see the ring from sequence 0.
    fn start_subscribers(&mut self) {
        self.subs = (0..=WEB_SUBSCRIBER)
            .map(|i| {
                let mut st = SubState::default();
                st.tally.client = if i == WEB_SUBSCRIBER {
                    "grpc-web"
                } else {
                    "tonic"
                };
                (Arc::new(Mutex::new(st)), Arc::default())
            })
            .collect();
        self.sub_tasks = self.subs[..SUBSCRIBERS]
            .iter()
            .map(|(st, ctl)| {
                self.rt.spawn(subscriber(
                    Arc::clone(&self.target),
                    Arc::clone(st),
                    Arc::clone(ctl),
                ))
            })
            .collect();
        let (st, ctl) = &self.subs[WEB_SUBSCRIBER];
        let (target, st, ctl) = (Arc::clone(&self.target), Arc::clone(st), Arc::clone(ctl));
        self.web_thread = Some(std::thread::spawn(move || web_subscriber(target, st, ctl)));
    }

    /// Starts the producers: one of three is the C program (when there is one).
    fn start_producers(&mut self) {
        for i in 0..PRODUCERS {
            let producer = self.spawn_producer(i % 3 == 2);
            self.producers.push(producer);
        }
    }

    /// Starts the next producer: the C program when `want_c` and there is one.
    fn spawn_producer(&mut self, want_c: bool) -> ProducerProc {
        self.summary.producers_started += 1;
        self.next_index += 1;
        let c = self.c_bin.as_deref().filter(|_| want_c);
        if c.is_some() {
            self.summary.c_producers_started += 1;
        }
        ProducerProc::spawn(&self.socket, self.next_index, c)
    }
}

/// The fault phase.
impl Run {
    fn begin_fault_phase(&mut self) {
        self.started = Instant::now();
    }

    fn fault_phase_lasts(&self) -> bool {
        self.started.elapsed() < self.secs
    }

    /// Waits 300..1200 ms, sampling memory and liveness (restarting a sidecar that exited).
    fn pause_between_faults(&mut self) {
        let until = Instant::now() + self.rng.millis(300, 1200);
        while Instant::now() < until {
            self.sample_memory();
            self.keep_the_sidecar_running();
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The next fault kind from the seeded deck.
    fn deal(&mut self) -> Fault {
        self.deck.deal(&mut self.rng)
    }

    /// Counts and injects one fault (its phase in [`FAULT_DECK`]); afterwards the sidecar
    /// must be running unless the harness killed it.
    fn inject(&mut self, fault: Fault) {
        *self.summary.faults.entry(fault).or_default() += 1;
        if let Some((_, phase)) = FAULT_DECK.iter().find(|(kind, _)| *kind == fault) {
            phase(self);
        }
        self.keep_the_sidecar_running();
    }

    /// Ends the slowloris clients still holding (recorded as such).
    fn end_fault_phase(&mut self) {
        eprintln!(
            "chaos: fault phase over after {:.1} s",
            self.started.elapsed().as_secs_f64()
        );
        self.slow_stop.store(true, Ordering::SeqCst);
        for t in self.slow_threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Samples the sidecar's RssAnon into the summary's peak.
    fn sample_memory(&mut self) {
        if let Some(r) = rss_anon(self.sidecar.child.id()) {
            self.summary.peak_rss_anon = self.summary.peak_rss_anon.max(r);
        }
    }

    /// False (counted, with its log printed) when the sidecar exited without the harness
    /// killing it.
    fn sidecar_alive(&mut self) -> bool {
        if let Ok(Some(status)) = self.sidecar.child.try_wait() {
            self.summary.unexpected_sidecar_exits += 1;
            eprintln!(
                "sidecar exited on its own ({status}):\n{}",
                self.sidecar.stderr()
            );
            return false;
        }
        true
    }

    /// Restarts the sidecar when it exited on its own (counted by [`Run::sidecar_alive`]).
    fn keep_the_sidecar_running(&mut self) {
        if !self.sidecar_alive() {
            let generation = self.next_generation();
            self.restart_sidecar(generation);
        }
    }

    /// The generation of the next sidecar start (announced before the old one goes).
    fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Starts the sidecar of `generation` on the same socket and port (the old one is
    /// dropped, so killed if still running).
    fn restart_sidecar(&mut self, generation: u64) {
        self.sidecar = start_sidecar(
            &self.dir,
            &self.target,
            &self.serve_flags,
            self.cgroup.as_ref().map(|c| c.0.as_path()),
            generation,
            &mut self.summary.sidecar_starts,
        );
    }

    /// Which producer a producer fault hits: at random, except that the first fault of each
    /// kind hits a C producer when one is running (so C producers are killed, parked and
    /// stopped in every run that has them). Counts a hit on a C producer.
    fn pick_producer(&mut self, fault: Fault) -> usize {
        let any = self.rng.below(self.producers.len() as u64) as usize;
        let i = if self.summary.c_faults.get(&fault).copied().unwrap_or(0) == 0 {
            self.producers.iter().position(|p| p.is_c).unwrap_or(any)
        } else {
            any
        };
        if self.producers[i].is_c {
            *self.summary.c_faults.entry(fault).or_default() += 1;
        }
        i
    }

    /// SIGKILLs producer `i` and starts one of the same kind (Rust or C) in its place.
    fn kill_and_replace_producer(&mut self, i: usize) {
        let mut p = self.producers.swap_remove(i);
        p.kill();
        let was_c = p.is_c;
        self.finished.push(p);
        let replacement = self.spawn_producer(was_c);
        self.producers.push(replacement);
    }

    /// The receive count of every subscriber.
    fn received_per_subscriber(&self) -> Vec<u64> {
        self.subs
            .iter()
            .map(|(s, _)| s.lock().map(|s| s.tally.received).unwrap_or(0))
            .collect()
    }
}

/// One phase per fault kind, in the order of [`FAULT_DECK`].
impl Run {
    /// SIGKILL of a producer while it writes.
    fn kill_producer(&mut self) {
        let i = self.pick_producer(Fault::KillProducer);
        self.kill_and_replace_producer(i);
    }

    /// SIGKILL of a producer parked between claim and commit.
    fn kill_producer_parked_mid_frame(&mut self) {
        let i = self.pick_producer(Fault::KillProducerMidFrame);
        self.producers[i].park_between_claim_and_commit();
        self.kill_and_replace_producer(i);
    }

    /// SIGSTOP, 100..800 ms, SIGCONT of a producer.
    fn stop_and_continue_a_producer(&mut self) {
        let i = self.pick_producer(Fault::StopProducer);
        let p = &mut self.producers[i];
        p.stopped_ever = true;
        p.signal(nix::sys::signal::Signal::SIGSTOP);
        std::thread::sleep(self.rng.millis(100, 800));
        p.signal(nix::sys::signal::Signal::SIGCONT);
    }

    /// SIGSTOP, 100..1500 ms, SIGCONT of the sidecar.
    fn stop_and_continue_the_sidecar(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.sidecar.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP);
        std::thread::sleep(self.rng.millis(100, 1500));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
    }

    /// SIGKILL of the sidecar, 0..500 ms, a restart on the same socket and port (in the
    /// other transport mode); counts whether it adopted the producers' ring.
    fn kill_and_restart_the_sidecar(&mut self) {
        let generation = self.next_generation();
        let _ = self.sidecar.kill();
        std::thread::sleep(self.rng.millis(0, 500));
        self.restart_sidecar(generation);
        if adopted(&self.sidecar) {
            self.summary.adopted += 1;
        } else {
            self.summary.ring_replaced += 1;
        }
    }

    /// A subscriber drops its stream and resumes from its last `resume_seq`.
    fn drop_a_subscriber_stream(&mut self) {
        let i = self.rng.below(self.subs.len() as u64) as usize;
        self.subs[i].1.reconnect.store(true, Ordering::SeqCst);
    }

    /// A subscriber stops reading for 500..6500 ms.
    fn stall_a_subscriber(&mut self) {
        let i = self.rng.below(self.subs.len() as u64) as usize;
        self.subs[i]
            .1
            .stall_ms
            .store(self.rng.below(6000) + 500, Ordering::SeqCst);
    }

    /// More Subscribe streams than `--max-subscribers`, at once (in the background).
    fn storm_past_max_subscribers(&mut self) {
        let (ep, res) = (Arc::clone(&self.target), Arc::clone(&self.storm_result));
        self.rt.spawn(async move {
            add_counts(&res, subscribe_storm(ep, STORM_STREAMS).await);
        });
    }

    /// More TCP connections than `--max-connections`, held 300 ms.
    fn storm_past_max_connections(&mut self) {
        let conns: Vec<TcpStream> = (0..STORM_CONNECTIONS)
            .filter_map(|_| TcpStream::connect(self.sidecar.addr).ok())
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        drop(conns);
    }

    /// A hostile producer writes random bytes over the whole data region, once.
    fn write_garbage_over_the_ring(&mut self) {
        let seed = self.rng.next_u64().to_string();
        hostile(
            &self.socket,
            "garbage",
            &["--seed".into(), seed, "--passes".into(), "1".into()],
        );
    }

    /// A hostile producer tries ftruncate, fallocate and re-sealing.
    fn try_to_truncate_the_ring(&mut self) {
        hostile(&self.socket, "truncate", &[]);
    }

    /// Malformed gRPC requests (in the background).
    fn send_malformed_requests(&mut self) {
        let (ep, res) = (Arc::clone(&self.target), Arc::clone(&self.hostile_result));
        self.rt.spawn(async move {
            add_counts(&res, hostile_requests(ep).await);
        });
    }

    /// Clients with a missing or wrong bearer token (in the background).
    fn send_missing_and_wrong_tokens(&mut self) {
        let (ep, res) = (Arc::clone(&self.target), Arc::clone(&self.bad_auth_result));
        self.rt.spawn(async move {
            add_counts(&res, bad_auth(ep).await);
        });
    }

    /// One slowloris client of each kind, each on its own thread for up to its hold.
    fn open_slowloris_clients(&mut self) {
        for kind in chaos_h2::Slowloris::ALL {
            let (stop, res) = (Arc::clone(&self.slow_stop), Arc::clone(&self.slow_results));
            let generation = Arc::clone(&self.generation);
            let (addr, req) = (self.sidecar.addr, self.subscribe_earliest.clone());
            let tls = self.target.h2().cloned();
            self.slow_threads.push(std::thread::spawn(move || {
                let end = chaos_h2::slowloris(
                    kind,
                    addr,
                    SLOWLORIS_HOLD,
                    &stop,
                    &generation,
                    TOKEN.get().map(String::as_str),
                    &req,
                    tls.as_ref(),
                );
                if let Ok(mut r) = res.lock() {
                    r.push((kind, end));
                }
            }));
        }
    }

    /// One HTTP/2 connection opening more streams than `--max-streams-per-connection`.
    /// Synchronous (bounded by its 5 s answer timeouts): no harness kill or stop of the
    /// sidecar overlaps it, so every stream must get an answer.
    fn flood_streams_on_one_connection(&mut self) {
        let flood = chaos_h2::stream_flood(
            self.sidecar.addr,
            FLOOD_STREAMS,
            TOKEN.get().map(String::as_str),
            &self.subscribe_earliest,
            self.target.h2(),
        );
        let Some(t) = flood else {
            self.summary.flood_no_connection += 1;
            return;
        };
        if t.granted > MAX_STREAMS_PER_CONNECTION || t.no_answer > 0 {
            eprintln!("stream flood over the limit or queued: {t:?}");
        }
        let f = &mut self.summary.flood;
        f.opened += t.opened;
        f.granted += t.granted;
        f.refused_stream += t.refused_stream;
        f.resource_exhausted += t.resource_exhausted;
        f.conn_closed += t.conn_closed;
        f.other += t.other;
        f.no_answer += t.no_answer;
        self.summary.flood_max_granted = self.summary.flood_max_granted.max(t.granted);
    }

    /// Every claim word forgery once, in a seeded order, then no hang: every subscriber
    /// receives frames again.
    fn forge_the_claim_word(&mut self) {
        let mut kinds = FORGERIES.to_vec();
        for i in (1..kinds.len()).rev() {
            kinds.swap(i, self.rng.below(i as u64 + 1) as usize);
        }
        let before = self.received_per_subscriber();
        for (kind, phantom) in kinds {
            self.forge(kind);
            *self.summary.forgeries.entry(kind).or_default() += 1;
            self.summary.forged_phantom += phantom;
            std::thread::sleep(Duration::from_millis(200));
        }
        self.wait_for_subscribers_to_progress(&before);
    }

    /// One claim word forgery. Producers are SIGSTOPped around the read-modify-write of the
    /// claim word so that it races no claim.
    fn forge(&mut self, kind: &str) {
        stop_all(&mut self.producers);
        hostile(&self.socket, "forge", &["--kind".into(), kind.into()]);
        if kind == "unaligned" {
            // Let producers claim from the unaligned position for a while.
            cont_all(&self.producers);
            std::thread::sleep(Duration::from_millis(200));
            stop_all(&mut self.producers);
            hostile(&self.socket, "forge", &["--kind".into(), "repair".into()]);
        }
        cont_all(&self.producers);
    }

    /// Waits (bounded: a subscriber stall lasts at most 6.5 s) until every subscriber has
    /// received more than `before`; counts progressed or stuck.
    fn wait_for_subscribers_to_progress(&mut self, before: &[u64]) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let progressed = self
                .received_per_subscriber()
                .iter()
                .zip(before)
                .all(|(now, b)| now > b);
            if progressed {
                self.summary.forgery_progress[0] += 1;
                return;
            }
            if Instant::now() > deadline {
                eprintln!("subscribers made no progress 15 s after a claim forgery");
                self.summary.forgery_progress[1] += 1;
                return;
            }
            self.sample_memory();
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// After the fault phase: drain and tally.
impl Run {
    /// Resumes everything, stops the producers, lets the subscribers drain, then stops them.
    fn drain(&mut self) {
        for p in &mut self.producers {
            p.signal(nix::sys::signal::Signal::SIGCONT);
        }
        for p in &mut self.producers {
            p.stop();
        }
        self.finished.append(&mut self.producers);
        for (_, ctl) in &self.subs {
            ctl.stall_ms.store(0, Ordering::SeqCst);
        }
        self.wait_until_subscribers_drained();
        for (_, ctl) in &self.subs {
            ctl.stop.store(true, Ordering::SeqCst);
        }
        for t in std::mem::take(&mut self.sub_tasks) {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(5), t).await });
        }
        // The grpc-web subscriber checks `stop` at least every 250 ms (and after a stall).
        if let Some(t) = self.web_thread.take() {
            let _ = t.join();
        }
        // Let storm/hostile-request tasks finish.
        std::thread::sleep(Duration::from_secs(1));
        eprintln!(
            "chaos: drained, {:.1} s after the start",
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Drained = every subscriber's next sequence equal and unchanged for 2 s (bounded by
    /// 30 s).
    fn wait_until_subscribers_drained(&mut self) {
        let drain_deadline = Instant::now() + Duration::from_secs(30);
        let mut last: Vec<Option<u64>> = Vec::new();
        let mut stable_since = Instant::now();
        while Instant::now() < drain_deadline {
            self.sample_memory();
            let _ = self.sidecar_alive();
            let now: Vec<Option<u64>> = self
                .subs
                .iter()
                .map(|(s, _)| s.lock().ok().and_then(|s| s.next))
                .collect();
            if now != last {
                last = now;
                stable_since = Instant::now();
            } else if stable_since.elapsed() > Duration::from_secs(2)
                && last.iter().all(|n| n.is_some() && *n == last[0])
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the sidecar and counts everything into the summary.
    fn finish(mut self) -> RunEnd {
        let alive_at_end = self.sidecar.child.try_wait().ok().flatten().is_none();
        let _ = self.sidecar.stop();
        self.tally_memory_limit();
        self.tally_subscribers();
        self.tally_producers();
        self.tally_client_faults();
        RunEnd {
            summary: std::mem::take(&mut self.summary),
            alive_at_end,
            c_producers: self.c_bin.is_some(),
            secs: self.secs,
        }
    }

    /// What the hard memory limit saw (all sidecars of the run).
    fn tally_memory_limit(&mut self) {
        if let Some(cg) = &self.cgroup {
            self.summary.cgroup = Some(CgroupReport {
                limit: self.summary.budget,
                peak: cg.read("memory.max_usage_in_bytes", None).unwrap_or(0),
                oom_kills: cg.read("memory.oom_control", Some("oom_kill")).unwrap_or(0),
                failcnt: cg.read("memory.failcnt", None).unwrap_or(0),
            });
        }
    }

    /// Closes every subscriber's last segment and takes its tally.
    fn tally_subscribers(&mut self) {
        let mut written = 0u64;
        for (s, _) in &self.subs {
            let mut s = s.lock().expect("subscriber state");
            written = written.max(s.next.unwrap_or(0));
            s.close_segment();
            self.summary.subscribers.push(s.tally.clone());
        }
        self.summary.ring_written = written;
    }

    /// Sums the producers' last reports.
    fn tally_producers(&mut self) {
        let summary = &mut self.summary;
        for p in &self.finished {
            let st = p.stat();
            summary.producers_reported += st.sent;
            summary.producers_dropped_nc += st.dropped_not_connected;
            summary.calls += st.calls;
            // A SIGSTOP is itself a voluntary context switch: only producers the harness
            // never stopped can show whether a send blocked.
            if !p.stopped_ever {
                summary.blocked += st.blocked;
            }
            summary.preempted += st.preempted;
            summary.longest_call_ns = summary.longest_call_ns.max(st.max_ns);
            if !p.stopped_ever {
                summary.longest_call_unstopped_ns =
                    summary.longest_call_unstopped_ns.max(st.max_ns);
            }
            summary.worst_p999_ns = summary.worst_p999_ns.max(st.p999_ns);
            summary.producer_errors += p.errors.load(Ordering::SeqCst);
        }
    }

    /// Storms, malformed requests, bad tokens, and how the slowloris clients ended.
    fn tally_client_faults(&mut self) {
        let summary = &mut self.summary;
        summary.storm = *self.storm_result.lock().expect("storm");
        summary.hostile_requests = *self.hostile_result.lock().expect("hostile");
        summary.bad_auth = *self.bad_auth_result.lock().expect("bad auth");
        for (kind, end) in self.slow_results.lock().expect("slowloris results").iter() {
            let e = summary.slowloris.entry(format!("{kind:?}")).or_default();
            match end {
                chaos_h2::SlowEnd::Closed(after) => {
                    e.reaped += 1;
                    e.longest_ms = e.longest_ms.max(after.as_millis() as u64);
                }
                chaos_h2::SlowEnd::SidecarKilled => e.sidecar_killed += 1,
                chaos_h2::SlowEnd::Open => e.open += 1,
                chaos_h2::SlowEnd::Stopped => e.stopped += 1,
                chaos_h2::SlowEnd::NoConnect => e.no_connect += 1,
            }
        }
    }
}

/// Adds one background fault's three counts to its running total.
fn add_counts(total: &Mutex<[u64; 3]>, counts: [u64; 3]) {
    if let Ok(mut t) = total.lock() {
        for (t, c) in t.iter_mut().zip(counts) {
            *t += c;
        }
    }
}

/// Builds the C chaos producer, or says why not (`SKIP C producers`).
fn c_producer_or_skip(dir: &TempDir, summary: &mut Summary) -> Option<PathBuf> {
    match build_c_producer(dir.path()) {
        Ok(bin) => Some(bin),
        Err(why) => {
            println!("SKIP C producers: {why}");
            summary.c_skipped = Some(why);
            None
        }
    }
}

/// The serve flags of every start: [`FLAGS`] and `--auth-token-file` with a fresh token.
/// Every client of the harness sends the token (kept in [`TOKEN`]); bad-token clients do
/// not.
fn serve_flags_with_auth(dir: &TempDir, seed: u64) -> Vec<String> {
    let token = format!("chaos-{seed:x}");
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{token}\n")).expect("write the token file");
    TOKEN.set(token).expect("token set once");
    let token_path = token_file
        .to_str()
        .expect("temp dir path is UTF-8")
        .to_owned();
    FLAGS
        .iter()
        .map(|s| (*s).to_owned())
        .chain(["--auth-token-file".to_owned(), token_path])
        .collect()
}

/// Hard memory limit = the budget: every sidecar of the run starts inside one cgroup v1
/// memory group whose limit_in_bytes is its own --print-budget total (else
/// `SKIP cgroup limit`).
fn memory_limit_or_skip(summary: &mut Summary) -> Option<MemCgroup> {
    match MemCgroup::create("ringside-chaos", summary.budget) {
        Ok(cg) => Some(cg),
        Err(why) => {
            println!("SKIP cgroup limit: {why}");
            summary.cgroup_skipped = Some(why);
            None
        }
    }
}

/// Where the clients connect, with the TLS client configurations when certificates could
/// be made (else `SKIP TLS`, plaintext only): the sidecar alternates between plaintext and
/// TLS at every restart.
fn target_or_skip_tls(dir: &TempDir, port: u16, summary: &mut Summary) -> Target {
    let certs = match make_certs(dir.path()) {
        Ok(c) => Some(c),
        Err(why) => {
            println!("SKIP TLS: {why}");
            summary.tls_skipped = Some(why);
            None
        }
    };
    let rustls_config = |alpn: &[&[u8]]| {
        certs.as_ref().map(|c| {
            ringside_tests::chaos_tls::client_config(&c.ca, alpn).expect("TLS client config")
        })
    };
    Target {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        tls_now: AtomicBool::new(false),
        ca_pem: certs
            .as_ref()
            .map(|c| std::fs::read(&c.ca).expect("read the test CA")),
        h2_tls: rustls_config(&[b"h2"]),
        // No ALPN: the sidecar's TLS offers only h2 and would refuse a client that offers
        // only http/1.1; without ALPN, hyper takes the HTTP/1.1 request as it comes.
        web_tls: rustls_config(&[]),
        certs,
    }
}

/// The sidecar was running at the end, and never exited unless the harness killed it.
fn the_sidecar_never_exits_on_its_own(end: &RunEnd) {
    assert!(end.alive_at_end, "the sidecar was not running at the end");
    assert_eq!(
        end.summary.unexpected_sidecar_exits, 0,
        "the sidecar exited on its own"
    );
}

/// Per subscriber: received + lost + discarded = span; every batch adds up and touches the
/// previous one; `resume_seq` never goes backwards; discards are counted; nothing twice,
/// nothing corrupt.
fn every_frame_is_accounted_for(summary: &Summary) {
    let (unaccounted, duplicates, corrupt) = summary.violations();
    assert_eq!(unaccounted, 0, "frames neither received nor reported lost");
    let (accounting, backwards) = summary.accounting_violations();
    assert_eq!(
        accounting, 0,
        "batches whose [from_seq, resume_seq) did not add up"
    );
    assert_eq!(backwards, 0, "resume_seq went backwards on a stream");
    assert!(
        summary.subscribers.iter().all(|s| s.discarded > 0),
        "the Rust producers discard every {}th frame, but a subscriber saw no discards",
        ringside_tests::chaos_support::DISCARD_EVERY
    );
    assert_eq!(duplicates, 0, "frames received twice");
    assert_eq!(corrupt, 0, "deliveries that fail their checksum");
}

/// No producer call failed. Sends that blocked are reported, not asserted.
fn no_producer_call_fails(summary: &Summary) {
    assert_eq!(summary.producer_errors, 0, "producer calls failed");
    // Reported, not asserted yet: runs show a few voluntary context switches inside send
    // bursts around sidecar restarts (about 10 in 60 s). Suspected cause, not verified: on
    // reconnect the producer's background thread remaps the doorbell page (mmap MAP_FIXED,
    // holding mmap_lock), and a send that faults on that page waits for it. See
    // docs/reliability.md.
    println!(
        "producer sends with a voluntary context switch (never-stopped producers): {}",
        summary.blocked
    );
}

/// The sidecar's peak RssAnon stays below its budget, and the hard cgroup limit (= the
/// budget) never OOM-killed it.
fn memory_stays_within_the_budget(summary: &Summary) {
    assert!(
        summary.peak_rss_anon < summary.budget,
        "peak RssAnon {} over the budget {}",
        summary.peak_rss_anon,
        summary.budget
    );
    if let Some(cg) = &summary.cgroup {
        assert_eq!(
            cg.oom_kills, 0,
            "the sidecar was OOM-killed under its hard cgroup limit (= its budget)"
        );
    }
}

/// Every subscriber received frames, and frames of the C producers when they ran.
fn every_subscriber_receives_frames(end: &RunEnd) {
    let summary = &end.summary;
    assert!(
        summary.subscribers.iter().all(|s| s.received > 0),
        "a subscriber received nothing"
    );
    if end.c_producers {
        assert!(
            summary.subscribers.iter().all(|s| s.received_c > 0),
            "C producers ran, but a subscriber received none of their frames"
        );
    }
}

/// When the sidecar ran TLS, some subscriber stream used it.
fn subscribers_follow_the_sidecar_into_tls(summary: &Summary) {
    if summary.tls_skipped.is_none() && summary.sidecar_starts[1] > 0 {
        assert!(
            summary.subscribers.iter().any(|s| s.tls_streams > 0),
            "the sidecar ran TLS, but no subscriber stream used it"
        );
    }
}

/// Malformed requests and clients with a missing or wrong token are never served.
fn hostile_and_unauthenticated_clients_are_never_served(summary: &Summary) {
    assert_eq!(
        summary.hostile_requests[1], 0,
        "a malformed request was served frames"
    );
    assert_eq!(
        summary.bad_auth[1], 0,
        "a client with a missing or wrong token was served"
    );
}

/// Stream floods: never more granted on one connection than its stream limit, every excess
/// stream refused at once (none queued).
fn stream_floods_are_refused_at_the_limit(summary: &Summary) {
    assert!(
        summary.flood_max_granted <= MAX_STREAMS_PER_CONNECTION,
        "a flood got {} streams granted on one connection (limit {MAX_STREAMS_PER_CONNECTION})",
        summary.flood_max_granted
    );
    assert_eq!(
        summary.flood.no_answer, 0,
        "flood streams got no answer within 5 s (queued): {:?}",
        summary.flood
    );
}

/// Subscribers progress after every claim forgery.
fn claim_forgeries_never_stall_subscribers(summary: &Summary) {
    assert_eq!(
        summary.forgery_progress[1], 0,
        "subscribers stopped receiving after a claim forgery"
    );
}

/// A 60 s run plays every fault kind (and every forgery, slowloris and flood outcome that
/// proves a limit), runs both plaintext and TLS, and hits a C producer with every producer
/// fault.
fn a_full_length_run_plays_the_whole_deck(end: &RunEnd) {
    let summary = &end.summary;
    for kind in Fault::ALL {
        assert!(
            summary.faults.get(&kind).copied().unwrap_or(0) >= 1,
            "fault kind {:?} never occurred in a {} s run",
            kind,
            end.secs.as_secs()
        );
    }
    assert!(
        summary.bad_auth[0] >= 1,
        "no bad-auth client was answered UNAUTHENTICATED"
    );
    // A slow reader has data waiting and takes none: --subscriber-stall-timeout (4 s)
    // must reap it; silent and dribbling clients never finish the HTTP/2 preface:
    // --handshake-timeout (3 s) must close them (tests/tests/chaos_slowloris.rs).
    let slow = summary
        .slowloris
        .get("SlowReader")
        .copied()
        .unwrap_or_default();
    assert!(
        slow.reaped + slow.sidecar_killed >= 1,
        "no slow-reading Subscribe connection ran ({slow:?})"
    );
    assert!(
        summary.flood.refused_stream >= 1,
        "no flood stream was refused with REFUSED_STREAM: {:?}",
        summary.flood
    );
    if summary.tls_skipped.is_none() {
        assert!(
            summary.sidecar_starts[0] >= 1 && summary.sidecar_starts[1] >= 1,
            "a 60 s run restarts the sidecar, so it runs both plaintext and TLS: {:?}",
            summary.sidecar_starts
        );
    }
    for (kind, _) in FORGERIES {
        assert!(
            summary.forgeries.get(kind).copied().unwrap_or(0) >= 1,
            "claim forgery {kind} never ran"
        );
    }
    // Bound: its 15 s hold, several times the stall and handshake timeouts (a liveness
    // bound, not a timing measurement).
    for kind in ["SlowReader", "Silent", "Dribble"] {
        let t = summary.slowloris.get(kind).copied().unwrap_or_default();
        assert_eq!(
            t.open, 0,
            "a slowloris {kind} connection outlived its 15 s hold ({t:?})"
        );
    }
    if end.c_producers {
        for kind in [
            Fault::KillProducer,
            Fault::KillProducerMidFrame,
            Fault::StopProducer,
        ] {
            assert!(
                summary.c_faults.get(&kind).copied().unwrap_or(0) >= 1,
                "{kind:?} never hit a C producer"
            );
        }
    }
}
