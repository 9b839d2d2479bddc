//! ringside's `send` next to iceoryx2 0.10 and a `memcpy` into a ring-sized buffer, in one
//! run, with the systems alternated within every repetition (issue 13).
//!
//! ```text
//! cargo bench -p ringside-benches --features iceoryx2 --bench peers   # print the table
//! cargo bench -p ringside-benches --features iceoryx2 --bench peers -- --write docs/benchmarks-producer.md
//! ```
//!
//! - **ringside**: `Producer::send(topic, payload)` (default options: payload check on)
//!   into a 64 MiB ring served by a real `RingHost`.
//! - **iceoryx2**: `publisher.loan_slice_uninit(len)`, `write_from_slice`, `send()` on a
//!   `publish_subscribe::<[u8]>` service with default settings (the publisher's
//!   `initial_max_slice_len` set to the largest payload, which a slice service needs).
//! - **memcpy**: `copy_from_slice` into a 64 MiB buffer at the ring's stride: what keeping
//!   every frame (retention) costs by itself.
//!
//! Two scenarios: no reader, and a reader draining on the other core **in another process**
//! (this executable re-run as `--drain-ringside SOCKET` or `--drain-iceoryx2 SERVICE`): a
//! `RingReader` that copies and validates every frame, or an iceoryx2 subscriber that
//! receives every sample and reads its length. A drainer spins only while its own system is
//! measured and blocks on its control pipe otherwise, so the two never share the other core.
//!
//! Each repetition runs every system once per size, in an order that rotates from one
//! repetition to the next; each run is a batch of sends timed as a whole (mean ns per send).
//! The table gives the median over repetitions and the spread (min–max).

use std::error::Error;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iceoryx2::prelude::*;
use ringside_benches::fixture::{CopyLane, Fixture, TOPIC, bench_ring_config, payload};
use ringside_ring::handshake;
use ringside_ring::{ReadStep, ReaderOptions, RingReader, RingView, StartAt, VecSink};

/// Payload sizes compared.
const SIZES: [usize; 3] = [64, 1024, 4096];
/// Repetitions of the whole rotation.
const REPS: usize = 15;
/// Wall time of one timed batch.
const BATCH_TIME: Duration = Duration::from_millis(25);
/// Largest payload, for the iceoryx2 publisher's slice length.
const MAX_SLICE: usize = 4096;
const BEGIN_MARKER: &str = "<!-- producer-peers:begin -->";
const END_MARKER: &str = "<!-- producer-peers:end -->";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    /// `Producer::send`.
    Ringside,
    /// `Producer::reserve_borrowed`, `copy_from_slice`, `commit`: the zero-copy path.
    RingsideZeroCopy,
    Iceoryx2,
    Memcpy,
}

const SYSTEMS: [System; 4] = [
    System::Ringside,
    System::RingsideZeroCopy,
    System::Iceoryx2,
    System::Memcpy,
];

type Ice = iceoryx2::port::publisher::Publisher<ipc::Service, [u8], ()>;

/// A drainer process and its control pipe.
struct Drainer {
    child: Child,
    control: ChildStdin,
    acks: BufReader<ChildStdout>,
}

impl Drainer {
    fn spawn(args: &[&str]) -> Result<Drainer, Box<dyn Error>> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let control = child.stdin.take().ok_or("drainer stdin")?;
        let mut acks = BufReader::new(child.stdout.take().ok_or("drainer stdout")?);
        let mut line = String::new();
        acks.read_line(&mut line)?;
        if line.trim() != "ready" {
            return Err(format!("drainer {args:?} said {line:?}").into());
        }
        Ok(Drainer {
            child,
            control,
            acks,
        })
    }

    /// Sends one command byte and waits for the drainer's acknowledgement line.
    fn command(&mut self, byte: u8) -> Result<String, Box<dyn Error>> {
        self.control.write_all(&[byte])?;
        self.control.flush()?;
        let mut line = String::new();
        self.acks.read_line(&mut line)?;
        Ok(line.trim().to_owned())
    }

    fn finish(mut self) -> Result<String, Box<dyn Error>> {
        let report = self.command(b'q')?;
        self.child.wait()?;
        Ok(report)
    }
}

/// What a drainer process reads with.
trait Drain {
    /// Starts reading at the newest data (called on every `g`).
    fn start(&mut self) -> Result<(), Box<dyn Error>>;
    /// Reads once; true if a frame or sample was consumed.
    fn poll(&mut self) -> bool;
    /// Stops reading (called on every `s`): a stopped drainer is not attached to anything.
    fn stop(&mut self);
}

/// The drainer side: spins on [`Drain::poll`] while running, blocks on the control pipe
/// otherwise. Commands: `g` start, `s` stop, `q` report and exit; each is acknowledged with
/// one line. Returns the number of frames consumed.
fn drainer_loop(drain: &mut dyn Drain) -> Result<u64, Box<dyn Error>> {
    let stdin = std::io::stdin();
    let mut control = stdin.lock();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut frames = 0u64;
    writeln!(out, "ready")?;
    out.flush()?;
    let mut byte = [0u8; 1];
    control.read_exact(&mut byte)?;
    loop {
        match byte[0] {
            b'g' => {
                drain.start()?;
                set_nonblocking(true)?;
                writeln!(out, "go")?;
                out.flush()?;
                loop {
                    for _ in 0..4096 {
                        if drain.poll() {
                            frames += 1;
                        } else {
                            std::hint::spin_loop();
                        }
                    }
                    match control.read(&mut byte) {
                        Ok(1) => break,
                        Ok(_) => return Ok(frames),
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(err) => return Err(err.into()),
                    }
                }
                set_nonblocking(false)?;
                drain.stop();
                // The byte that stopped the spinning is the next command.
                continue;
            }
            b's' => {
                drain.stop();
                writeln!(out, "stopped")?;
                out.flush()?;
            }
            _ => {
                drain.stop();
                writeln!(out, "frames={frames}")?;
                out.flush()?;
                return Ok(frames);
            }
        }
        control.read_exact(&mut byte)?;
    }
}

fn set_nonblocking(on: bool) -> Result<(), Box<dyn Error>> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let stdin = std::io::stdin();
    let flags = OFlag::from_bits_truncate(fcntl(&stdin, FcntlArg::F_GETFL)?);
    let flags = if on {
        flags | OFlag::O_NONBLOCK
    } else {
        flags - OFlag::O_NONBLOCK
    };
    fcntl(&stdin, FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// `--drain-ringside SOCKET`: maps the ring the way a producer gets it (the handshake hands
/// out the ring fd), read-only, and reads it with the sidecar's `RingReader`, from the newest
/// frame on each start.
struct RingDrain {
    view: Arc<RingView>,
    reader: Option<RingReader>,
    sink: VecSink,
    lost: u64,
}

impl Drain for RingDrain {
    fn start(&mut self) -> Result<(), Box<dyn Error>> {
        self.reader = Some(RingReader::new(
            Arc::clone(&self.view),
            StartAt::Latest,
            ReaderOptions::default(),
        )?);
        Ok(())
    }
    fn poll(&mut self) -> bool {
        let Some(reader) = self.reader.as_mut() else {
            return false;
        };
        match reader.read(&mut self.sink) {
            ReadStep::Frame(_) => {
                black_box(self.sink.payload().len());
                true
            }
            ReadStep::Loss(loss) => {
                self.lost += loss.frames;
                false
            }
            _ => false,
        }
    }
    fn stop(&mut self) {
        self.reader = None;
    }
}

fn drain_ringside(socket: &str) -> Result<(), Box<dyn Error>> {
    let admission = handshake::connect(std::path::Path::new(socket), None)?;
    let mut drain = RingDrain {
        view: Arc::new(RingView::open(admission.ring)?),
        reader: None,
        sink: VecSink::default(),
        lost: 0,
    };
    drainer_loop(&mut drain)?;
    eprintln!("ringside drainer: {} frames reported lost", drain.lost);
    Ok(())
}

/// `--drain-iceoryx2 SERVICE`: a subscriber with default settings, created on each start
/// and dropped on each stop.
struct IceDrain {
    service:
        iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8], ()>,
    subscriber: Option<iceoryx2::port::subscriber::Subscriber<ipc::Service, [u8], ()>>,
}

impl Drain for IceDrain {
    fn start(&mut self) -> Result<(), Box<dyn Error>> {
        self.subscriber = Some(self.service.subscriber_builder().create()?);
        Ok(())
    }
    fn poll(&mut self) -> bool {
        match self.subscriber.as_ref().map(|s| s.receive()) {
            Some(Ok(Some(sample))) => {
                black_box(sample.payload().len());
                true
            }
            _ => false,
        }
    }
    fn stop(&mut self) {
        self.subscriber = None;
    }
}

fn drain_iceoryx2(service_name: &str) -> Result<(), Box<dyn Error>> {
    let node = NodeBuilder::new().create::<ipc::Service>()?;
    let service = node
        .service_builder(&service_name.try_into()?)
        .publish_subscribe::<[u8]>()
        .open_or_create()?;
    let mut drain = IceDrain {
        service,
        subscriber: None,
    };
    drainer_loop(&mut drain)?;
    Ok(())
}

struct Peers<'a> {
    fx: &'a Fixture,
    ice: Ice,
    lanes: Vec<CopyLane>,
    data: Vec<Vec<u8>>,
}

impl Peers<'_> {
    /// One batch of `n` operations of `system` at size index `i`.
    fn batch(&mut self, system: System, i: usize, n: u64) {
        let data = &self.data[i];
        match system {
            System::Ringside => {
                for _ in 0..n {
                    black_box(self.fx.producer.send(TOPIC, black_box(data)).is_ok());
                }
            }
            System::RingsideZeroCopy => {
                for _ in 0..n {
                    if let Ok(mut frame) = self.fx.producer.reserve_borrowed(TOPIC, data.len()) {
                        frame.copy_from_slice(black_box(data));
                        frame.commit();
                    }
                }
            }
            System::Iceoryx2 => {
                for _ in 0..n {
                    if let Ok(sample) = self.ice.loan_slice_uninit(data.len()) {
                        black_box(sample.write_from_slice(black_box(data)).send().is_ok());
                    }
                }
            }
            System::Memcpy => {
                let lane = &mut self.lanes[i];
                for _ in 0..n {
                    lane.copy(black_box(data));
                }
            }
        }
    }

    /// Mean ns per operation over a batch sized to take about [`BATCH_TIME`].
    fn timed(&mut self, system: System, i: usize) -> f64 {
        // Size the batch from a short probe, then warm up and time.
        let probe = Instant::now();
        self.batch(system, i, 1000);
        let per_op = probe.elapsed().as_secs_f64() / 1000.0;
        let n = ((BATCH_TIME.as_secs_f64() / per_op.max(1e-9)) as u64).clamp(1000, 5_000_000);
        self.batch(system, i, n / 10);
        let start = Instant::now();
        self.batch(system, i, n);
        start.elapsed().as_nanos() as f64 / n as f64
    }
}

#[derive(Default)]
struct Samples {
    /// [scenario][size][system] -> ns per op, one per repetition.
    ns: [[[Vec<f64>; 4]; 3]; 2],
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[at.min(sorted.len() - 1)]
}

fn stats(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    (
        quantile(&sorted, 0.5),
        sorted.first().copied().unwrap_or(f64::NAN),
        sorted.last().copied().unwrap_or(f64::NAN),
    )
}

fn size_name(len: usize) -> String {
    if len >= 1024 {
        format!("{} KiB", len / 1024)
    } else {
        format!("{len} B")
    }
}

fn cell((median, lo, hi): (f64, f64, f64)) -> String {
    format!("{median:.1} ({lo:.1}–{hi:.1})")
}

fn render(samples: &Samples, drained: &[String], load: &str) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Median ns per operation over {REPS} repetitions (spread: min–max over the repetitions); the systems alternate within each repetition (rotating order); each value is one batch of ~{} ms. {load}\n\n",
        BATCH_TIME.as_millis()
    ));
    out.push_str("| reader | payload | ringside `send` | ringside `reserve_borrowed`+fill+`commit` | iceoryx2 `loan_slice_uninit`+`write_from_slice`+`send` | memcpy into 64 MiB | `send` ÷ iceoryx2 | zero-copy ÷ iceoryx2 |\n|---|---|---|---|---|---|---|---|\n");
    let mut goals = Vec::new();
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    for (scenario, reader) in ["none", "draining, other process"].iter().enumerate() {
        for (i, len) in SIZES.iter().enumerate() {
            let cells: Vec<(f64, f64, f64)> = (0..SYSTEMS.len())
                .map(|s| stats(&samples.ns[scenario][i][s]))
                .collect();
            let (send, zero_copy, ice) = (cells[0].0, cells[1].0, cells[2].0);
            out.push_str(&format!(
                "| {reader} | {} | {} | {} | {} | {} | {:.2}× | {:.2}× |\n",
                size_name(*len),
                cell(cells[0]),
                cell(cells[1]),
                cell(cells[2]),
                cell(cells[3]),
                send / ice,
                zero_copy / ice,
            ));
            goals.push(format!(
                "| `send` ≤ 1.0× iceoryx2, {} reader, {} | {:.2}× ({send:.1} vs {ice:.1} ns) | {} |",
                if scenario == 0 { "no" } else { "a draining" },
                size_name(*len),
                send / ice,
                verdict(send <= ice)
            ));
            if *len == 64 && scenario == 0 {
                goals.push(format!(
                    "| `send` 64 B, one thread, ≤ 40 ns | {send:.1} ns | {} |",
                    verdict(send <= 40.0)
                ));
                goals.push(format!(
                    "| `reserve_borrowed`+`commit` 64 B below `send` 64 B | {zero_copy:.1} vs {send:.1} ns | {} |",
                    verdict(zero_copy < send)
                ));
            }
        }
    }
    out.push_str("\nDrainers: ");
    out.push_str(&drained.join("; "));
    out.push_str("\n\n**The issue's producer rows, from this run.**\n\n| goal | measured | verdict |\n|---|---|---|\n");
    for goal in goals {
        out.push_str(&goal);
        out.push('\n');
    }
    out
}

/// `cargo bench` runs benchmarks in the package directory: a relative path is taken from the
/// workspace root, where the command is typed.
fn write_block(path: &str, block: &str) -> Result<(), Box<dyn Error>> {
    let path = Path::new(path);
    let path = if path.is_relative() {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
    } else {
        path.to_owned()
    };
    let path = path.as_path();
    let doc = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let (Some(begin), Some(end)) = (doc.find(BEGIN_MARKER), doc.find(END_MARKER)) else {
        return Err(format!(
            "{} has no {BEGIN_MARKER} … {END_MARKER} block",
            path.display()
        )
        .into());
    };
    let updated = format!("{}{BEGIN_MARKER}\n{block}{}", &doc[..begin], &doc[end..]);
    std::fs::write(path, updated)?;
    Ok(())
}

fn run(write: Option<&str>) -> Result<(), Box<dyn Error>> {
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fx = Fixture::start(bench_ring_config())?;
    let service_name = format!("ringside/bench/peers-{}", std::process::id());
    let node = NodeBuilder::new().create::<ipc::Service>()?;
    let service = node
        .service_builder(&service_name.as_str().try_into()?)
        .publish_subscribe::<[u8]>()
        .open_or_create()?;
    let ice = service
        .publisher_builder()
        .initial_max_slice_len(MAX_SLICE)
        .create()?;
    let ring_bytes = bench_ring_config().capacity as usize;
    let mut peers = Peers {
        fx: &fx,
        ice,
        lanes: SIZES
            .iter()
            .map(|len| CopyLane::new(ring_bytes, *len))
            .collect(),
        data: SIZES.iter().map(|len| payload(*len)).collect(),
    };
    let socket = fx.socket_path().display().to_string();
    let mut ring_drainer = Drainer::spawn(&["--drain-ringside", &socket])?;
    let mut ice_drainer = Drainer::spawn(&["--drain-iceoryx2", &service_name])?;
    let mut samples = Samples::default();
    let started = Instant::now();
    for rep in 0..REPS {
        for scenario in 0..2 {
            for i in 0..SIZES.len() {
                for k in 0..SYSTEMS.len() {
                    let s = (k + rep + i) % SYSTEMS.len();
                    let system = SYSTEMS[s];
                    let drainer = match (scenario, system) {
                        (1, System::Ringside | System::RingsideZeroCopy) => Some(&mut ring_drainer),
                        (1, System::Iceoryx2) => Some(&mut ice_drainer),
                        _ => None,
                    };
                    let running = match drainer {
                        Some(d) => {
                            d.command(b'g')?;
                            Some(d)
                        }
                        None => None,
                    };
                    let ns = peers.timed(system, i);
                    if let Some(d) = running {
                        d.command(b's')?;
                    }
                    samples.ns[scenario][i][s].push(ns);
                }
            }
        }
        eprintln!(
            "repetition {}/{REPS} done ({:.0} s)",
            rep + 1,
            started.elapsed().as_secs_f64()
        );
    }
    let drained = vec![
        format!("ringside reader validated {}", ring_drainer.finish()?),
        format!("iceoryx2 subscriber received {}", ice_drainer.finish()?),
    ];
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = format!(
        "Load average (1/5/15 min) before: {}, after: {} (a shared 2-vCPU VM).",
        load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        load_after
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let table = render(&samples, &drained, &load);
    println!("{table}");
    if let Some(path) = write {
        write_block(path, &table)?;
        eprintln!("wrote the table into {path}");
    }
    let stats = fx.producer.stats();
    if stats.dropped_not_connected + stats.dropped_too_large + stats.dropped_invalid_topic != 0 {
        return Err(format!("ringside refused sends during the run: {stats:?}").into());
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--drain-ringside") => return drain_ringside(args.get(1).ok_or("socket")?),
        Some("--drain-iceoryx2") => return drain_iceoryx2(args.get(1).ok_or("service")?),
        _ => {}
    }
    // `cargo bench` passes `--bench` (and a filter, if any); only `--write FILE` matters.
    let write = args
        .iter()
        .position(|a| a == "--write")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str);
    run(write)
}
