//! Benchmark fixtures: a sidecar-side [`RingHost`] on a temporary socket, a connected
//! [`Producer`], a standalone writable ring, and the `memcpy` baseline.

use std::error::Error;
use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringside_client::{Producer, ProducerOptions};
use ringside_ring::layout::RingHeader;
use ringside_ring::shm::create_ring_memfd;
use ringside_ring::writer::{FrameHeaderFields, WritableRing};
use ringside_ring::{HostOptions, RingConfig, RingHost, frame_len};

/// Topic every benchmark frame is written under (9 bytes, a typical metric name length).
pub const TOPIC: &str = "telemetry";

/// Ring geometry used by the benchmarks: the sidecar's default (64 MiB data, 64 KiB max
/// payload), so the ring does not fit in any cache level and writes stream through memory
/// the way they do in production.
pub fn bench_ring_config() -> RingConfig {
    RingConfig::default()
}

/// A live ring: a [`RingHost`] serving a temporary socket (no adoption grace), and two
/// [`Producer`]s connected to it through the real handshake.
#[derive(Debug)]
pub struct Fixture {
    /// The connected producer (default options); share it by reference between threads.
    pub producer: Producer,
    /// A second producer on the same ring, connected with `payload_check: false`.
    pub unchecked: Producer,
    /// The sidecar's side: owns the ring and answers handshakes.
    pub host: RingHost,
    /// Keeps the socket's directory alive; dropped last.
    _dir: tempfile::TempDir,
    socket_path: PathBuf,
}

impl Fixture {
    /// Starts a host with `ring` on a fresh temporary socket, connects a producer, waits for
    /// the handshake, and writes the whole ring once so every page is faulted in before any
    /// measurement.
    pub fn start(ring: RingConfig) -> Result<Fixture, Box<dyn Error>> {
        let fixture = Fixture::start_cold(ring, true)?;
        fixture.prefault()?;
        Ok(fixture)
    }

    /// As [`Fixture::start`], without writing the ring first: the producers' first sends
    /// land on memory nobody wrote before, backed at creation or not (`populate_ring`,
    /// see [`HostOptions::populate_ring`]).
    pub fn start_cold(ring: RingConfig, populate_ring: bool) -> Result<Fixture, Box<dyn Error>> {
        let dir = tempfile::Builder::new()
            .prefix("ringside-bench-")
            .tempdir()?;
        let socket_path = dir.path().join("ringside.sock");
        let host = RingHost::start(HostOptions {
            socket_path: socket_path.clone(),
            ring,
            adopt_grace: Duration::ZERO,
            populate_ring,
            ..HostOptions::default()
        })?;
        let producer = connect(&socket_path, ProducerOptions::default())?;
        let unchecked = connect(
            &socket_path,
            ProducerOptions {
                payload_check: false,
            },
        )?;
        let fixture = Fixture {
            producer,
            unchecked,
            host,
            _dir: dir,
            socket_path,
        };
        Ok(fixture)
    }

    /// The socket the host listens on.
    pub fn socket_path(&self) -> &std::path::Path {
        &self.socket_path
    }

    /// Writes one lap of the ring (plus a margin) with max-size frames.
    fn prefault(&self) -> Result<(), Box<dyn Error>> {
        let config = self.host.ring().config().to_owned();
        let payload = vec![0x5au8; config.max_payload as usize];
        let frame = frame_len(TOPIC.len(), payload.len()) as u64;
        let frames = config.capacity / frame + 2;
        for _ in 0..frames {
            self.producer.send(TOPIC, &payload)?;
        }
        Ok(())
    }
}

/// Connects a producer and waits until the sidecar has admitted it.
fn connect(path: &std::path::Path, options: ProducerOptions) -> Result<Producer, Box<dyn Error>> {
    let producer = Producer::connect_with(path, options)?;
    if !producer.wait_connected(Duration::from_secs(5)) {
        return Err(format!(
            "producer did not connect to {}: {:?}",
            path.display(),
            producer.last_error()
        )
        .into());
    }
    Ok(producer)
}

/// A writable ring with no sidecar and no producer machinery around it: for measuring
/// [`WritableRing::claim`] and publish on their own.
pub fn standalone_ring(config: RingConfig) -> Result<WritableRing, Box<dyn Error>> {
    let header = RingHeader::new(&config, 0x5eed_0000_0000_0001, now_unix_ns());
    let fd = create_ring_memfd(&config, &header)?;
    let ring = WritableRing::open(fd, header.ring_id, config)?;
    // Fault every page of the data region in, as `Fixture::start` does.
    let payload = vec![0x5au8; config.max_payload as usize];
    let frame = frame_len(TOPIC.len(), payload.len()) as u64;
    for _ in 0..config.capacity / frame + 2 {
        let claim = ring.claim(TOPIC.len(), payload.len());
        ring.write_topic(&claim, TOPIC.as_bytes());
        ring.write_payload(&claim, &payload);
        ring.publish(claim, bench_fields(), TOPIC.as_bytes(), &payload);
    }
    Ok(ring)
}

/// Header fields for frames written straight into a [`standalone_ring`].
pub fn bench_fields() -> FrameHeaderFields {
    FrameHeaderFields {
        producer_id: 1,
        timestamp_ns: 1,
        flags: 0,
    }
}

fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The `memcpy` baseline: copies a payload into a buffer as large as its share of the ring,
/// at an offset that advances by the same stride the ring uses for that frame (header,
/// topic, payload, 8-byte alignment), wrapping at the end. Like the producer, it therefore
/// streams through memory instead of rewriting one L1-resident spot.
pub struct CopyLane {
    buf: Vec<u8>,
    off: usize,
    stride: usize,
}

impl std::fmt::Debug for CopyLane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyLane")
            .field("len", &self.buf.len())
            .field("off", &self.off)
            .field("stride", &self.stride)
            .finish()
    }
}

impl CopyLane {
    /// A lane of `bytes` bytes (pre-faulted) for payloads of `payload_len` bytes.
    pub fn new(bytes: usize, payload_len: usize) -> CopyLane {
        CopyLane {
            // Non-zero fill: a zeroed allocation would be lazily mapped and fault on first use.
            buf: vec![1u8; bytes],
            off: 0,
            stride: frame_len(TOPIC.len(), payload_len),
        }
    }

    /// Copies `src` to the next slot.
    #[inline]
    pub fn copy(&mut self, src: &[u8]) {
        if self.off + src.len() > self.buf.len() {
            self.off = 0;
        }
        self.buf[self.off..self.off + src.len()].copy_from_slice(src);
        self.off += self.stride;
        // The buffer escapes: the copy cannot be optimised away.
        black_box(self.buf.as_mut_ptr());
    }
}

/// Runs `a` and `b` on two threads (the caller's and one spawned), released together by a
/// spinning barrier, and returns the wall time from the first thread's start to the last
/// one's end. Each closure is handed `iters` and must do that many operations: the returned
/// duration divided by `iters` is the time per operation as each thread sees it while the
/// other one runs too, and `2 * iters` operations were done in that time.
///
/// The barrier spins rather than sleeping, so neither thread pays a futex wake-up (tens of
/// microseconds on a loaded machine) inside the timed region. If the scheduler does not run
/// both threads at once, that shows up as a longer time: the measurement is of two threads
/// sharing the producer on this machine, not of an ideal overlap.
pub fn timed_pair<A, B>(iters: u64, a: A, b: B) -> Duration
where
    A: FnOnce(u64),
    B: FnOnce(u64) + Send,
{
    let arrived = AtomicU32::new(0);
    let rendezvous = || {
        arrived.fetch_add(1, Ordering::AcqRel);
        while arrived.load(Ordering::Acquire) < 2 {
            std::hint::spin_loop();
        }
        Instant::now()
    };
    std::thread::scope(|scope| {
        let other = scope.spawn(|| {
            let start = rendezvous();
            b(iters);
            (start, Instant::now())
        });
        let start = rendezvous();
        a(iters);
        let end = Instant::now();
        match other.join() {
            Ok((other_start, other_end)) => end.max(other_end) - start.min(other_start),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Work for the second thread of a [`PairWorker`]: built on the caller's thread, then run
/// on the worker, `iters` operations per call.
pub trait PairJob: Send {
    /// Does `iters` operations.
    fn run(&mut self, iters: u64);
}

enum PairMsg<'scope> {
    Job(Box<dyn PairJob + 'scope>),
    Run(u64),
}

/// A second thread that lives for a whole benchmark group, so that two-thread measurements
/// run on the same two threads sample after sample (as an application's threads would)
/// instead of on a fresh thread per sample. This matters to the producer, which numbers
/// threads on first use for its per-thread counters.
///
/// [`PairWorker::run`] releases both threads through a spinning barrier and returns the wall
/// time from the first thread's start to the last one's end: divided by `iters`, the time per
/// operation as each thread sees it while the other runs too. If the scheduler does not run
/// both threads at once, that counts against the result.
pub struct PairWorker<'scope> {
    tx: std::sync::mpsc::Sender<PairMsg<'scope>>,
    done: std::sync::mpsc::Receiver<(Instant, Instant)>,
    arrived: std::sync::Arc<AtomicU64>,
    round: u64,
}

impl std::fmt::Debug for PairWorker<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairWorker")
            .field("round", &self.round)
            .finish()
    }
}

/// Both threads call this once per round: returns once both have arrived.
fn rendezvous(arrived: &AtomicU64, round: u64) -> Instant {
    arrived.fetch_add(1, Ordering::AcqRel);
    while arrived.load(Ordering::Acquire) < 2 * round {
        std::hint::spin_loop();
    }
    Instant::now()
}

impl<'scope> PairWorker<'scope> {
    /// Spawns the worker thread in `scope`.
    pub fn spawn<'env>(scope: &'scope std::thread::Scope<'scope, 'env>) -> PairWorker<'scope> {
        let (tx, rx) = std::sync::mpsc::channel::<PairMsg<'scope>>();
        let (done_tx, done) = std::sync::mpsc::channel();
        let arrived = std::sync::Arc::new(AtomicU64::new(0));
        let theirs = std::sync::Arc::clone(&arrived);
        scope.spawn(move || {
            let mut job: Option<Box<dyn PairJob + 'scope>> = None;
            let mut round = 0;
            while let Ok(msg) = rx.recv() {
                match msg {
                    PairMsg::Job(next) => job = Some(next),
                    PairMsg::Run(iters) => {
                        round += 1;
                        let start = rendezvous(&theirs, round);
                        if let Some(job) = job.as_mut() {
                            job.run(iters);
                        }
                        if done_tx.send((start, Instant::now())).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        PairWorker {
            tx,
            done,
            arrived,
            round: 0,
        }
    }

    /// Hands the worker the job that later [`PairWorker::run`] calls execute.
    pub fn set_job(&self, job: impl PairJob + 'scope) {
        self.tx
            .send(PairMsg::Job(Box::new(job)))
            .expect("pair worker thread alive");
    }

    /// Runs the worker's job and `mine` concurrently, `iters` operations each.
    pub fn run(&mut self, iters: u64, mine: impl FnOnce(u64)) -> Duration {
        self.round += 1;
        self.tx
            .send(PairMsg::Run(iters))
            .expect("pair worker thread alive");
        let start = rendezvous(&self.arrived, self.round);
        mine(iters);
        let end = Instant::now();
        let (their_start, their_end) = self.done.recv().expect("pair worker thread alive");
        end.max(their_end) - start.min(their_start)
    }
}

/// A deterministic, incompressible-looking payload of `len` bytes.
pub fn payload(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
