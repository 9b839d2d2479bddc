//! `dgram-load`: the producer side of the Unix-datagram baseline (DogStatsD
//! style): one thread per `--producers`, each with its own `SOCK_DGRAM` Unix
//! socket connected to `dgram-server`, one frame per datagram, round-robin over
//! `--topics` topics, paced to `--rate` in total like `ringside load`.
//!
//! Modes:
//! - `nonblocking` (default): `send(MSG_DONTWAIT)`; the producer never waits.
//!   An `EAGAIN` (the reader's queue is full) is a counted drop.
//! - `blocking`: a blocking `send` with `SO_SNDTIMEO = --send-timeout-ms`; a
//!   send that times out is a counted drop. This is what DogStatsD clients do
//!   by default on a Unix socket (datadog-go: a blocking write with a 100 ms
//!   deadline), so a slow agent slows the application down.
//!
//! Payload (`--size` bytes, at least 16): the producer's attempt counter (u64
//! LE), the send time (u64 LE, ns since the UNIX epoch, read just before the
//! send), then a fill pattern, as `ringside load` writes it. The datagram
//! layout is documented in `dgram_server.rs`.
//!
//! Prints one JSON object: `attempted`, `sent` (accepted by the kernel),
//! `dropped` (EAGAIN or send timeout), `dropped_no_reader`, `sent_bytes`
//! (payload bytes), `elapsed_s`, `ns_per_send` (each thread's wall time over
//! its send loop divided by its attempts, averaged over threads), `sndbuf`,
//! `mode`, `error`.

use clap::{Parser, ValueEnum};
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, getsockopt, send, setsockopt, sockopt};
use ringside_naive::now_ns;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How a producer sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// `send(MSG_DONTWAIT)`: never waits; EAGAIN is a drop.
    Nonblocking,
    /// Blocking `send` with a send timeout; a timeout is a drop.
    Blocking,
}

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Unix-datagram telemetry producer (DogStatsD-style baseline)")]
struct Args {
    /// Socket path of `dgram-server`.
    #[arg(long)]
    socket: PathBuf,
    /// Payload bytes per frame (16 ..= 65536).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Frames in total over all producers (0 = until --duration).
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Stop after this many seconds even if --count is not reached.
    #[arg(long, default_value_t = 600.0)]
    duration: f64,
    /// Frames per second over all producers (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Producer threads (one socket each).
    #[arg(long, default_value_t = 1)]
    producers: u64,
    /// Number of topics (`load/0` ... `load/K-1`), round-robin.
    #[arg(long, default_value_t = 4)]
    topics: u64,
    /// Send mode.
    #[arg(long, value_enum, default_value_t = Mode::Nonblocking)]
    mode: Mode,
    /// Send timeout in blocking mode, ms (0 = wait forever).
    #[arg(long, default_value_t = 100)]
    send_timeout_ms: u64,
    /// SO_SNDBUF to request, bytes (0 = the OS default). On a Unix datagram
    /// socket a datagram counts against the sender's buffer until it is read.
    #[arg(long, default_value_t = 0)]
    sndbuf: usize,
}

/// One producer thread's totals.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    attempted: u64,
    sent: u64,
    dropped: u64,
    no_reader: u64,
    loop_s: f64,
    sndbuf: usize,
}

fn produce(args: &Args, index: u32, n: u64, rate: u64) -> Result<Totals, String> {
    let sock = UnixDatagram::unbound().map_err(|e| format!("socket: {e}"))?;
    if args.sndbuf > 0 {
        setsockopt(&sock, sockopt::SndBuf, &args.sndbuf).map_err(|e| format!("SO_SNDBUF: {e}"))?;
    }
    sock.connect(&args.socket)
        .map_err(|e| format!("connect {}: {e}", args.socket.display()))?;
    if args.mode == Mode::Blocking && args.send_timeout_ms > 0 {
        sock.set_write_timeout(Some(Duration::from_millis(args.send_timeout_ms)))
            .map_err(|e| format!("SO_SNDTIMEO: {e}"))?;
    }
    let mut t = Totals {
        sndbuf: getsockopt(&sock, sockopt::SndBuf).unwrap_or(0),
        ..Default::default()
    };
    let topics: Vec<String> = (0..args.topics.max(1))
        .map(|i| format!("load/{i}"))
        .collect();
    let size = args.size.clamp(16, 65536);
    // One buffer per topic, header and fill written once; only seq and time change.
    let mut bufs: Vec<Vec<u8>> = topics
        .iter()
        .map(|topic| {
            let mut b = Vec::with_capacity(5 + topic.len() + size);
            b.extend_from_slice(&index.to_le_bytes());
            b.push(topic.len() as u8);
            b.extend_from_slice(topic.as_bytes());
            b.extend((0..size).map(|i| (i as u8).wrapping_mul(31).wrapping_add(index as u8)));
            b
        })
        .collect();
    let fd = sock.as_raw_fd();
    let deadline = Duration::from_secs_f64(args.duration.max(0.0));
    let start = Instant::now();
    let mut topic = index as usize % bufs.len();
    'run: while n == 0 || t.attempted < n {
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            break;
        }
        let due = if rate == 0 {
            t.attempted + 256
        } else {
            (elapsed.as_secs_f64() * rate as f64) as u64 + 1
        };
        if t.attempted >= due {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        let due = if n == 0 { due } else { due.min(n) };
        while t.attempted < due {
            let b = &mut bufs[topic];
            let off = b.len() - size;
            b[off..off + 8].copy_from_slice(&t.attempted.to_le_bytes());
            b[off + 8..off + 16].copy_from_slice(&now_ns().to_le_bytes());
            t.attempted += 1;
            topic = (topic + 1) % topics.len();
            let r = match args.mode {
                Mode::Nonblocking => send(fd, b, MsgFlags::MSG_DONTWAIT).map(|_| ()),
                Mode::Blocking => sock
                    .send(b)
                    .map(|_| ())
                    .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0))),
            };
            match r {
                Ok(()) => t.sent += 1,
                Err(Errno::EAGAIN | Errno::ETIMEDOUT | Errno::ENOBUFS) => t.dropped += 1,
                Err(Errno::ECONNREFUSED | Errno::ENOENT) => t.no_reader += 1,
                Err(Errno::EINTR) => t.dropped += 1,
                Err(e) => {
                    t.loop_s = start.elapsed().as_secs_f64();
                    return Err(format!("send: {e}; after {} attempts", t.attempted));
                }
            }
            if t.attempted.is_multiple_of(4096) && start.elapsed() >= deadline {
                break 'run;
            }
        }
    }
    t.loop_s = start.elapsed().as_secs_f64();
    Ok(t)
}

fn main() {
    let args = Args::parse();
    let producers = args.producers.max(1);
    let start = Instant::now();
    let per = args.count / producers;
    let results: Vec<Result<Totals, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..producers)
            .map(|i| {
                let n = if i == 0 {
                    args.count - per * (producers - 1)
                } else {
                    per
                };
                let rate = if args.rate == 0 {
                    0
                } else {
                    args.rate / producers + u64::from(i < args.rate % producers)
                };
                let args = &args;
                s.spawn(move || produce(args, i as u32, n, rate))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a producer thread panicked".into()))
            })
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut sum = Totals::default();
    let mut ns_per_send = 0.0;
    let mut error = None;
    let mut ok = 0u32;
    for r in &results {
        match r {
            Ok(t) => {
                sum.attempted += t.attempted;
                sum.sent += t.sent;
                sum.dropped += t.dropped;
                sum.no_reader += t.no_reader;
                sum.sndbuf = t.sndbuf;
                if t.attempted > 0 {
                    ns_per_send += t.loop_s * 1e9 / t.attempted as f64;
                    ok += 1;
                }
            }
            Err(e) => error = Some(e.clone()),
        }
    }
    let out = serde_json::json!({
        "attempted": sum.attempted,
        "sent": sum.sent,
        "dropped": sum.dropped,
        "dropped_no_reader": sum.no_reader,
        "sent_bytes": sum.sent * args.size as u64,
        "elapsed_s": elapsed,
        "ns_per_send": if ok > 0 { ns_per_send / f64::from(ok) } else { 0.0 },
        "sndbuf": sum.sndbuf,
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "error": error,
    });
    println!("{out}");
    if error.is_some() {
        std::process::exit(1);
    }
}
