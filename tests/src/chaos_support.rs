//! Helpers of the chaos harness (`tests/tests/chaos.rs`) that need neither tokio nor tonic:
//! a seeded RNG, the chaos producer (run inside a re-executed test binary), its stats line
//! protocol, `/proc` sampling, and the summary table.
//!
//! The chaos producer writes the self-checking payloads of [`crate::ring_support`]
//! (producer index, per-producer sequence, xxh3 checksum), times every `send` call, and
//! discards one reservation in [`DISCARD_EVERY`] (subscribers must see it counted).
//! It reads commands on stdin, one per line:
//! - `park`: the next send stops between claim and commit and hangs (the harness then
//!   SIGKILLs it, leaving a claimed, never committed frame in the ring);
//! - `stop`: print the final stats and exit 0.
//!
//! It prints, on stdout, lines starting with `CHAOS `:
//! `CHAOS CONNECTED index=..`, `CHAOS STAT index=.. sent=.. max_ns=.. p999_ns=.. nc=..`
//! (every 200 ms and at the end), `CHAOS ERROR ..`; the park hook prints `PARKED`.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringside_client::Producer;

use crate::ring_support::{TOPIC, TestPayload, encode_payload, payload_len};

/// Largest extra payload bytes of a chaos frame (payloads are 32..=32+this bytes).
pub const MAX_EXTRA: usize = 200;
/// The Rust chaos producer discards one reservation per this many frames it sends.
pub const DISCARD_EVERY: u64 = 97;

/// splitmix64: small, seedable, good enough to pick faults.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// A seed from the environment variable `RINGSIDE_CHAOS_SEED`, else from the clock.
pub fn seed_from_env() -> u64 {
    std::env::var("RINGSIDE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// Run length from `RINGSIDE_CHAOS_SECS` (default 60 s).
pub fn run_length_from_env() -> Duration {
    Duration::from_secs(
        std::env::var("RINGSIDE_CHAOS_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    )
}

/// Stats a chaos producer reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerStat {
    /// Producer index (written into its payloads).
    pub index: u32,
    /// Frames published (send returned Ok).
    pub sent: u64,
    /// Longest single `send` call, ns.
    pub max_ns: u64,
    /// 99.9th percentile of `send` calls, ns.
    pub p999_ns: u64,
    /// Frames dropped while no sidecar was connected (counted by the producer crate).
    pub dropped_not_connected: u64,
    /// Number of send calls timed.
    pub calls: u64,
    /// Voluntary context switches of the writing thread inside send bursts: a send that
    /// slept or waited (a lock, a blocking syscall) counts here. Must stay 0.
    pub blocked: u64,
    /// Involuntary context switches inside send bursts: the scheduler preempted the writer
    /// (the machine is oversubscribed); this is what long wall-clock calls come from.
    pub preempted: u64,
}

impl ProducerStat {
    /// Parses a `CHAOS STAT ...` line.
    pub fn parse(line: &str) -> Option<ProducerStat> {
        let rest = line.strip_prefix("CHAOS STAT ")?;
        let mut st = ProducerStat::default();
        for kv in rest.split_whitespace() {
            let (k, v) = kv.split_once('=')?;
            let v: u64 = v.parse().ok()?;
            match k {
                "index" => st.index = u32::try_from(v).ok()?,
                "sent" => st.sent = v,
                "max_ns" => st.max_ns = v,
                "p999_ns" => st.p999_ns = v,
                "nc" => st.dropped_not_connected = v,
                "calls" => st.calls = v,
                "blocked" => st.blocked = v,
                "preempted" => st.preempted = v,
                _ => {}
            }
        }
        Some(st)
    }

    fn line(&self) -> String {
        format!(
            "CHAOS STAT index={} sent={} max_ns={} p999_ns={} nc={} calls={} blocked={} preempted={}",
            self.index,
            self.sent,
            self.max_ns,
            self.p999_ns,
            self.dropped_not_connected,
            self.calls,
            self.blocked,
            self.preempted
        )
    }
}

/// (voluntary, involuntary) context switches of the calling thread so far.
fn context_switches() -> (u64, u64) {
    use nix::sys::resource::{UsageWho, getrusage};
    match getrusage(UsageWho::RUSAGE_THREAD) {
        Ok(usage) => (
            u64::try_from(usage.voluntary_context_switches()).unwrap_or(0),
            u64::try_from(usage.involuntary_context_switches()).unwrap_or(0),
        ),
        Err(_) => (0, 0),
    }
}

/// Body of the chaos producer process: writes self-checking frames to the sidecar at
/// `socket`, `burst` frames then a `pause`, timing every send, until `stop` on stdin.
pub fn run_producer(socket: &Path, index: u32, burst: u64, pause: Duration) -> ! {
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let say = |line: &str| {
        if let Ok(mut o) = out.lock() {
            let _ = writeln!(o, "{line}");
            let _ = o.flush();
        }
    };
    let producer = match Producer::connect(socket) {
        Ok(p) => p,
        Err(e) => {
            say(&format!("CHAOS ERROR connect: {e}"));
            std::process::exit(1);
        }
    };
    let _ = producer.wait_connected(Duration::from_secs(5));
    say(&format!("CHAOS CONNECTED index={index}"));

    let stop = Arc::new(AtomicBool::new(false));
    let park = Arc::new(AtomicBool::new(false));
    {
        let (stop, park) = (Arc::clone(&stop), Arc::clone(&park));
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                match line.as_deref().map(str::trim) {
                    Ok("park") => park.store(true, Ordering::SeqCst),
                    Ok("stop") | Err(_) => break,
                    Ok(_) => {}
                }
            }
            stop.store(true, Ordering::SeqCst);
        });
    }

    let hist = Arc::new(Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds"),
    ));
    let sent = Arc::new(AtomicU64::new(0));
    let blocked = Arc::new(AtomicU64::new(0));
    let preempted = Arc::new(AtomicU64::new(0));
    let snapshot = {
        let (hist, sent) = (Arc::clone(&hist), Arc::clone(&sent));
        let (blocked, preempted) = (Arc::clone(&blocked), Arc::clone(&preempted));
        move |producer: &Producer| -> ProducerStat {
            let (max_ns, p999_ns, calls) = hist
                .lock()
                .map(|h| (h.max(), h.value_at_quantile(0.999), h.len()))
                .unwrap_or_default();
            ProducerStat {
                index,
                sent: sent.load(Ordering::Relaxed),
                max_ns,
                p999_ns,
                dropped_not_connected: producer.stats().dropped_not_connected,
                calls,
                blocked: blocked.load(Ordering::Relaxed),
                preempted: preempted.load(Ordering::Relaxed),
            }
        }
    };

    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
                say(&snapshot(&producer).line());
            }
        });
        let mut buf = vec![0u8; crate::ring_support::MIN_PAYLOAD + MAX_EXTRA];
        // Timings are collected locally and merged every burst (the lock is not timed).
        let mut local = Vec::with_capacity(burst as usize);
        let mut seq = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let (vol0, invol0) = context_switches();
            for _ in 0..burst {
                let len = payload_len(index, seq, MAX_EXTRA);
                let payload = &mut buf[..len];
                encode_payload(
                    payload,
                    TestPayload {
                        producer: index,
                        seq,
                        flags: 0,
                    },
                );
                if park.swap(false, Ordering::SeqCst) {
                    // Claim, write the whole frame, never commit: the state a producer
                    // killed between claim and commit leaves behind.
                    if let Ok(mut reservation) = producer.reserve(TOPIC, len) {
                        reservation.copy_from_slice(payload);
                        say("PARKED");
                        loop {
                            std::thread::park();
                        }
                    }
                }
                if seq % DISCARD_EVERY == DISCARD_EVERY - 1 {
                    // A reservation dropped without commit: a discarded frame, which
                    // subscribers must see counted in `Batch.discarded`. Not timed.
                    if let Ok(reservation) = producer.reserve(TOPIC, len) {
                        drop(reservation);
                    }
                }
                let t0 = Instant::now();
                let result = producer.send(TOPIC, payload);
                let ns = t0.elapsed().as_nanos() as u64;
                local.push(ns.max(1));
                if let Err(e) = result {
                    say(&format!("CHAOS ERROR send: {e}"));
                    std::process::exit(1);
                }
                seq += 1;
            }
            let (vol1, invol1) = context_switches();
            blocked.fetch_add(vol1.saturating_sub(vol0), Ordering::Relaxed);
            preempted.fetch_add(invol1.saturating_sub(invol0), Ordering::Relaxed);
            sent.store(seq, Ordering::Relaxed);
            if let Ok(mut h) = hist.lock() {
                for ns in local.drain(..) {
                    let _ = h.record(ns);
                }
            }
            std::thread::sleep(pause);
        }
    });
    say(&snapshot(&producer).line());
    std::process::exit(0);
}

/// Builds `tests/c/chaos_producer.c` into `out_dir`, statically linked against the
/// `libringside.a` that cargo builds for this test run (see [`crate::c_build`]). `Err` says
/// why not (no compiler, build failure), for a SKIP line.
pub fn build_c_producer(out_dir: &Path) -> Result<std::path::PathBuf, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("c/chaos_producer.c");
    let exe = crate::c_build::compile(
        &src,
        out_dir,
        crate::c_build::Link::Static,
        &["-D_GNU_SOURCE", "-O2"],
    )?;
    let bin = out_dir.join("chaos_producer_c");
    std::fs::rename(&exe, &bin).map_err(|e| format!("rename {}: {e}", exe.display()))?;
    Ok(bin)
}

/// What the hard memory limit saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupReport {
    /// `memory.limit_in_bytes` (= the budget).
    pub limit: u64,
    /// `memory.max_usage_in_bytes` at the end (all sidecars of the run).
    pub peak: u64,
    /// `oom_kill` of `memory.oom_control` (must be 0).
    pub oom_kills: u64,
    /// `memory.failcnt`: times an allocation hit the limit (and reclaim had to run).
    pub failcnt: u64,
}

/// Kinds of faults the harness injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// SIGKILL of a producer while it writes.
    KillProducer,
    /// SIGKILL of a producer parked between claim and commit (test hook).
    KillProducerMidFrame,
    /// SIGSTOP, pause, SIGCONT of a producer.
    StopProducer,
    /// SIGSTOP, pause, SIGCONT of the sidecar.
    StopSidecar,
    /// SIGKILL of the sidecar, restart on the same socket and port.
    KillSidecar,
    /// A subscriber drops its stream and resumes from its last sequence.
    SubscriberReconnect,
    /// A subscriber stops reading for a while.
    SubscriberStall,
    /// More Subscribe streams than `--max-subscribers`, at once.
    SubscribeStorm,
    /// More TCP connections than `--max-connections`, at once.
    ConnectionStorm,
    /// A hostile producer writes random bytes over the whole data region.
    HostileGarbage,
    /// A hostile producer tries ftruncate, fallocate and re-sealing.
    HostileTruncate,
    /// Malformed gRPC requests: resume from the future, too many or empty filters.
    HostileRequest,
    /// Clients with a missing or wrong bearer token (the sidecar runs with
    /// `--auth-token-file`).
    BadAuth,
    /// A hostile producer forges the ring's claim word: unaligned, far in the future, near
    /// 2^64, backwards, sequence ahead of position, sequence backwards with the position
    /// kept (all six per fault).
    ClaimForgery,
    /// One HTTP/2 connection opening 40 Subscribe streams at once, more than
    /// `--max-streams-per-connection` (`tests/src/chaos_h2.rs`).
    StreamFlood,
    /// Raw-TCP slowloris clients: one silent, one dribbling the HTTP/2 preface, one reading
    /// its Subscribe stream at 16 bytes a second (`tests/src/chaos_h2.rs`).
    Slowloris,
}

impl Fault {
    /// Every kind, in table order.
    pub const ALL: [Fault; 16] = [
        Fault::KillProducer,
        Fault::KillProducerMidFrame,
        Fault::StopProducer,
        Fault::StopSidecar,
        Fault::KillSidecar,
        Fault::SubscriberReconnect,
        Fault::SubscriberStall,
        Fault::SubscribeStorm,
        Fault::ConnectionStorm,
        Fault::HostileGarbage,
        Fault::HostileTruncate,
        Fault::HostileRequest,
        Fault::BadAuth,
        Fault::Slowloris,
        Fault::StreamFlood,
        Fault::ClaimForgery,
    ];

    /// Name in the summary table.
    pub fn name(self) -> &'static str {
        match self {
            Fault::KillProducer => "SIGKILL producer",
            Fault::KillProducerMidFrame => "SIGKILL producer parked mid-frame",
            Fault::StopProducer => "SIGSTOP/SIGCONT producer",
            Fault::StopSidecar => "SIGSTOP/SIGCONT sidecar",
            Fault::KillSidecar => "SIGKILL sidecar + restart",
            Fault::SubscriberReconnect => "subscriber drop + resume",
            Fault::SubscriberStall => "subscriber stall",
            Fault::SubscribeStorm => "subscribe storm past --max-subscribers",
            Fault::ConnectionStorm => "TCP storm past --max-connections",
            Fault::HostileGarbage => "hostile garbage over the ring",
            Fault::HostileTruncate => "hostile ftruncate/fallocate/reseal",
            Fault::HostileRequest => "hostile gRPC requests",
            Fault::BadAuth => "clients with a missing/wrong bearer token",
            Fault::Slowloris => "slowloris TCP clients (silent, dribble, slow reader)",
            Fault::StreamFlood => "stream flood on one HTTP/2 connection",
            Fault::ClaimForgery => "hostile claim word forgery (6 kinds each)",
        }
    }
}

/// Deals fault kinds like cards: every kind once per round, each round in a new seeded
/// order. So every kind occurs once the run has injected `Fault::ALL.len()` faults, and the
/// schedule still depends only on the seed.
#[derive(Debug, Clone, Default)]
pub struct Deck(Vec<Fault>);

impl Deck {
    /// The next fault kind.
    pub fn deal(&mut self, rng: &mut Rng) -> Fault {
        if self.0.is_empty() {
            self.0 = Fault::ALL.to_vec();
            // Fisher-Yates.
            for i in (1..self.0.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                self.0.swap(i, j);
            }
        }
        self.0.pop().unwrap_or(Fault::KillProducer)
    }
}

/// What one subscriber accounted for, over its whole life (all reconnects).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscriberTally {
    /// Ring sequence numbers this subscriber was responsible for (first seen to last).
    pub span: u64,
    /// Frames received.
    pub received: u64,
    /// Of those, frames written by C producers (payload magic `RSCF`).
    pub received_c: u64,
    /// Frames reported lost, by reason name.
    pub lost: BTreeMap<String, u64>,
    /// Sequence numbers neither received nor reported lost (gaps).
    pub unaccounted: u64,
    /// Sequence numbers received or reported twice, plus payloads seen twice.
    pub duplicates: u64,
    /// Frames whose payload failed its checksum.
    pub corrupt: u64,
    /// One-frame corrupt losses under a sequence already passed: frames written after a
    /// forged claim word rewound the sequence (ring-format.md §5.1 step 4). Outside the
    /// sequence span, so neither in `lost` nor a duplicate.
    pub stale_reported: u64,
    /// Streams it opened.
    pub streams: u64,
    /// Of those, streams over TLS.
    pub tls_streams: u64,
    /// Ring ids it saw (more than one = the ring was replaced).
    pub rings: u64,
    /// How it subscribes: `tonic` (HTTP/2) or `grpc-web` (HTTP/1.1).
    pub client: &'static str,
    /// Sequence numbers the batches counted as discarded reservations (`Batch.discarded`).
    pub discarded: u64,
    /// Sequence numbers the batches counted as filtered (`Batch.filtered`; none here).
    pub filtered: u64,
    /// Batches whose `[from_seq, resume_seq)` did not add up to their frames, losses and
    /// counts, or whose counts did not fill the gaps between them: must be 0.
    pub accounting_errors: u64,
    /// Batches whose `resume_seq` was below the previous batch's on the same stream: must
    /// be 0.
    pub resume_backwards: u64,
}

impl SubscriberTally {
    /// All frames reported lost.
    pub fn lost_total(&self) -> u64 {
        self.lost.values().sum()
    }
}

/// Stream flood answers, summed over all floods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FloodSum {
    /// Streams opened.
    pub opened: u64,
    /// Granted (headers, then data).
    pub granted: u64,
    /// Reset with REFUSED_STREAM by the HTTP/2 layer.
    pub refused_stream: u64,
    /// Answered RESOURCE_EXHAUSTED.
    pub resource_exhausted: u64,
    /// The connection failed under the stream.
    pub conn_closed: u64,
    /// Another answer.
    pub other: u64,
    /// No answer within 5 s (queued).
    pub no_answer: u64,
}

/// How the slowloris clients of one kind ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlowTally {
    /// The sidecar closed the connection by itself.
    pub reaped: u64,
    /// Closed because the harness killed the sidecar meanwhile (not a reap).
    pub sidecar_killed: u64,
    /// Still open after the client's whole hold (15 s).
    pub open: u64,
    /// Still open when the fault phase ended (the client was stopped before its hold ended).
    pub stopped: u64,
    /// Could not connect.
    pub no_connect: u64,
    /// Longest time from connect to the sidecar closing it, ms.
    pub longest_ms: u64,
}

/// Everything the summary table shows.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// RNG seed of the run.
    pub seed: u64,
    /// Fault phase length.
    pub secs: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<Fault, u64>,
    /// Frames claimed in the ring (its final sequence number) per ring id.
    pub ring_written: u64,
    /// Frames the producers said they published (last report of each; killed producers
    /// may have published up to 200 ms more).
    pub producers_reported: u64,
    /// Frames dropped by producers while no sidecar was connected.
    pub producers_dropped_nc: u64,
    /// Producer processes started.
    pub producers_started: u64,
    /// Of those, C producers (`tests/c/chaos_producer.c`).
    pub c_producers_started: u64,
    /// Why there are no C producers (no compiler, build failure), if so.
    pub c_skipped: Option<String>,
    /// Producer faults that hit a C producer, by kind.
    pub c_faults: BTreeMap<Fault, u64>,
    /// Per subscriber.
    pub subscribers: Vec<SubscriberTally>,
    /// Peak sidecar RssAnon seen, bytes.
    pub peak_rss_anon: u64,
    /// The sidecar's computed budget, bytes.
    pub budget: u64,
    /// Longest producer call over all producers, ns.
    pub longest_call_ns: u64,
    /// Longest producer call among producers never SIGSTOPped, ns.
    pub longest_call_unstopped_ns: u64,
    /// Highest per-producer p99.9, ns.
    pub worst_p999_ns: u64,
    /// Send calls timed.
    pub calls: u64,
    /// Voluntary context switches inside send bursts of producers never SIGSTOPped (sends
    /// that blocked; a SIGSTOP is itself a voluntary switch).
    pub blocked: u64,
    /// Involuntary context switches inside send bursts, all producers (preemptions).
    pub preempted: u64,
    /// Sidecar exits the harness did not cause.
    pub unexpected_sidecar_exits: u64,
    /// Times a restarted sidecar adopted the ring / started a fresh one.
    pub adopted: u64,
    /// Restarts that came up with a different ring.
    pub ring_replaced: u64,
    /// Storm answers: granted, RESOURCE_EXHAUSTED, other.
    pub storm: [u64; 3],
    /// Hostile requests: refused with a clear status / served frames / no clear answer
    /// (timeouts or transport errors during another fault).
    pub hostile_requests: [u64; 3],
    /// Bad-auth clients: UNAUTHENTICATED / served a frame / no clear answer.
    pub bad_auth: [u64; 3],
    /// Claim forgeries by kind.
    pub forgeries: BTreeMap<&'static str, u64>,
    /// Sequence numbers forged claims skipped without a frame (part of every span).
    pub forged_phantom: u64,
    /// After a forgery fault: every subscriber received frames again / not within 15 s.
    pub forgery_progress: [u64; 2],
    /// The sidecar's hard cgroup limit, when it ran under one.
    pub cgroup: Option<CgroupReport>,
    /// Why there was no cgroup limit, if so.
    pub cgroup_skipped: Option<String>,
    /// Stream floods, summed: (opened, granted, REFUSED_STREAM, RESOURCE_EXHAUSTED, other,
    /// no answer).
    pub flood: FloodSum,
    /// Most streams granted on one flood connection.
    pub flood_max_granted: u64,
    /// Floods that could not connect.
    pub flood_no_connection: u64,
    /// Slowloris clients by kind (`Silent`, `Dribble`, `SlowReader`).
    pub slowloris: BTreeMap<String, SlowTally>,
    /// Producer errors (a send that failed, a producer that could not connect).
    pub producer_errors: u64,
    /// Sidecar starts in plaintext / with TLS (the mode alternates at every restart).
    pub sidecar_starts: [u64; 2],
    /// Why there was no TLS (no openssl to make certificates), if so.
    pub tls_skipped: Option<String>,
}

impl Summary {
    /// Batch accounting errors and `resume_seq` going backwards, over all subscribers.
    pub fn accounting_violations(&self) -> (u64, u64) {
        self.subscribers.iter().fold((0, 0), |(a, r), s| {
            (a + s.accounting_errors, r + s.resume_backwards)
        })
    }

    /// Total unaccounted, duplicates, corrupt over all subscribers.
    pub fn violations(&self) -> (u64, u64, u64) {
        self.subscribers.iter().fold((0, 0, 0), |(u, d, c), s| {
            (u + s.unaccounted, d + s.duplicates, c + s.corrupt)
        })
    }

    /// The summary table, as Markdown.
    pub fn render(&self) -> String {
        let mut t = String::new();
        let mut row = |k: &str, v: String| t.push_str(&format!("| {k} | {v} |\n"));
        row("seed", self.seed.to_string());
        row("fault phase", format!("{} s", self.secs));
        let total: u64 = self.faults.values().sum();
        row("faults injected", total.to_string());
        for kind in Fault::ALL {
            row(
                &format!("  {}", kind.name()),
                self.faults.get(&kind).copied().unwrap_or(0).to_string(),
            );
        }
        row(
            "producer processes started",
            self.producers_started.to_string(),
        );
        row(
            "  of which C producers (libringside)",
            match &self.c_skipped {
                Some(why) => format!("0 (skipped: {})", why.lines().next().unwrap_or("")),
                None => self.c_producers_started.to_string(),
            },
        );
        let c = |k: Fault| self.c_faults.get(&k).copied().unwrap_or(0);
        row(
            "  faults on C producers: SIGKILL / parked mid-frame + SIGKILL / SIGSTOP",
            format!(
                "{} / {} / {}",
                c(Fault::KillProducer),
                c(Fault::KillProducerMidFrame),
                c(Fault::StopProducer)
            ),
        );
        row(
            "frames written (ring sequence)",
            self.ring_written.to_string(),
        );
        row(
            "frames published (producers' last reports)",
            self.producers_reported.to_string(),
        );
        row(
            "frames dropped by producers, no sidecar",
            self.producers_dropped_nc.to_string(),
        );
        for (i, s) in self.subscribers.iter().enumerate() {
            let lost: Vec<String> = s.lost.iter().map(|(k, v)| format!("{k} {v}")).collect();
            row(
                &format!("subscriber {i}"),
                format!(
                    "{}: span {} = received {} (from C {}) + lost {} ({}) + discarded {} + unaccounted {}; duplicates {}, corrupt {}, stale-sequence frames reported {}, batch accounting errors {}, resume_seq backwards {}, streams {} ({} over TLS), rings {}",
                    s.client,
                    s.span,
                    s.received,
                    s.received_c,
                    s.lost_total(),
                    if lost.is_empty() {
                        "none".to_owned()
                    } else {
                        lost.join(", ")
                    },
                    s.discarded,
                    s.unaccounted,
                    s.duplicates,
                    s.corrupt,
                    s.stale_reported,
                    s.accounting_errors,
                    s.resume_backwards,
                    s.streams,
                    s.tls_streams,
                    s.rings
                ),
            );
        }
        let (u, d, c) = self.violations();
        let (a, r) = self.accounting_violations();
        row(
            "sidecar starts: plaintext / TLS",
            match &self.tls_skipped {
                Some(why) => format!(
                    "{} / 0 (TLS skipped: {})",
                    self.sidecar_starts[0],
                    why.lines().next().unwrap_or("")
                ),
                None => format!("{} / {}", self.sidecar_starts[0], self.sidecar_starts[1]),
            },
        );
        row("unaccounted frames (must be 0)", u.to_string());
        row("batch accounting errors (must be 0)", a.to_string());
        row("resume_seq went backwards (must be 0)", r.to_string());
        row("duplicates (must be 0)", d.to_string());
        row("corrupt deliveries (must be 0)", c.to_string());
        row(
            "unexpected sidecar exits (must be 0)",
            self.unexpected_sidecar_exits.to_string(),
        );
        row(
            "sidecar restarts: ring adopted / replaced",
            format!("{} / {}", self.adopted, self.ring_replaced),
        );
        row(
            "peak sidecar RssAnon vs budget",
            format!(
                "{:.1} MiB of {:.1} MiB ({:.0}%)",
                self.peak_rss_anon as f64 / 1048576.0,
                self.budget as f64 / 1048576.0,
                100.0 * self.peak_rss_anon as f64 / (self.budget.max(1)) as f64
            ),
        );
        row(
            "hard cgroup v1 limit = budget: peak usage / limit; oom_kill (must be 0); failcnt",
            match (&self.cgroup, &self.cgroup_skipped) {
                (Some(c), _) => format!(
                    "{:.1} MiB / {:.1} MiB ({:.0}%); {}; {}",
                    c.peak as f64 / 1048576.0,
                    c.limit as f64 / 1048576.0,
                    100.0 * c.peak as f64 / c.limit.max(1) as f64,
                    c.oom_kills,
                    c.failcnt
                ),
                (None, Some(why)) => format!("skipped: {why}"),
                (None, None) => "not run".to_owned(),
            },
        );
        row(
            "longest producer call (all / never-stopped producers)",
            format!(
                "{:.1} µs / {:.1} µs over {} calls",
                self.longest_call_ns as f64 / 1e3,
                self.longest_call_unstopped_ns as f64 / 1e3,
                self.calls
            ),
        );
        row(
            "voluntary context switches in send bursts of producers never SIGSTOPped (reported; see docs/reliability.md)",
            self.blocked.to_string(),
        );
        row(
            "writer preemptions in send bursts (involuntary context switches)",
            self.preempted.to_string(),
        );
        row(
            "worst producer p99.9 call",
            format!("{:.2} µs", self.worst_p999_ns as f64 / 1e3),
        );
        row(
            "storm streams: granted / RESOURCE_EXHAUSTED / other",
            format!("{} / {} / {}", self.storm[0], self.storm[1], self.storm[2]),
        );
        row(
            "hostile requests: clear refusal / served frames (must be 0) / no answer during a fault",
            format!(
                "{} / {} / {}",
                self.hostile_requests[0], self.hostile_requests[1], self.hostile_requests[2]
            ),
        );
        row(
            "bad-token clients: UNAUTHENTICATED / served (must be 0) / no clear answer",
            format!(
                "{} / {} / {}",
                self.bad_auth[0], self.bad_auth[1], self.bad_auth[2]
            ),
        );
        row(
            "claim forgeries: unaligned / future / wrap / backwards / seq-ahead / seq-backwards",
            [
                "unaligned",
                "future",
                "wrap",
                "backwards",
                "seq-ahead",
                "seq-backwards",
            ]
            .iter()
            .map(|k| self.forgeries.get(k).copied().unwrap_or(0).to_string())
            .collect::<Vec<_>>()
            .join(" / "),
        );
        row(
            "sequence numbers skipped by forged claims (no frame; reported lost)",
            self.forged_phantom.to_string(),
        );
        row(
            "after a forgery, subscribers progressed / stuck 15 s (must be 0)",
            format!(
                "{} / {}",
                self.forgery_progress[0], self.forgery_progress[1]
            ),
        );
        row(
            "stream floods: opened / granted (max on one connection) / REFUSED_STREAM / RESOURCE_EXHAUSTED / connection closed / other / no answer (must be 0)",
            format!(
                "{} / {} ({}) / {} / {} / {} / {} / {}{}",
                self.flood.opened,
                self.flood.granted,
                self.flood_max_granted,
                self.flood.refused_stream,
                self.flood.resource_exhausted,
                self.flood.conn_closed,
                self.flood.other,
                self.flood.no_answer,
                if self.flood_no_connection > 0 {
                    format!("; {} floods could not connect", self.flood_no_connection)
                } else {
                    String::new()
                }
            ),
        );
        for (kind, t) in &self.slowloris {
            row(
                &format!(
                    "slowloris {kind}: reaped / closed by a sidecar kill / open after 15 s / open at phase end / no connect"
                ),
                format!(
                    "{} / {} / {} / {} / {} (slowest reap {:.1} s)",
                    t.reaped,
                    t.sidecar_killed,
                    t.open,
                    t.stopped,
                    t.no_connect,
                    t.longest_ms as f64 / 1e3
                ),
            );
        }
        row(
            "producer errors (must be 0)",
            self.producer_errors.to_string(),
        );
        format!("| measure | value |\n|---|---|\n{t}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_line_round_trips() {
        let st = ProducerStat {
            index: 3,
            sent: 10,
            max_ns: 5,
            p999_ns: 4,
            dropped_not_connected: 1,
            calls: 11,
            blocked: 0,
            preempted: 2,
        };
        assert_eq!(ProducerStat::parse(&st.line()), Some(st));
    }

    #[test]
    fn rng_is_deterministic() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        assert_eq!(a.next_u64(), b.next_u64());
        assert!(a.below(5) < 5);
    }
}
