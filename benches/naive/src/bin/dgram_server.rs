//! `dgram-server`: the reader side of the Unix-datagram baseline (DogStatsD
//! style). Binds a `SOCK_DGRAM` Unix socket with the requested `SO_RCVBUF`,
//! receives datagrams written by `dgram-load`, validates and counts them, and
//! records the latency from the send time stored in the payload into an HDR
//! histogram. Prints one JSON object when it ends: on SIGTERM/SIGINT, or on
//! the end marker (a datagram whose producer index is `u32::MAX`), which the
//! harness sends once the producers have exited so that everything queued
//! before it has been read.
//!
//! Datagram layout (the same as `dgram-load` writes):
//!
//! | bytes | content |
//! |---|---|
//! | 0..4 | producer index, u32 LE (`u32::MAX` = end marker) |
//! | 4 | topic length `t` |
//! | 5..5+t | topic (`load/N`) |
//! | 5+t.. | payload: seq (u64 LE, the producer's attempt counter), send time (u64 LE, ns since the UNIX epoch), then a fill pattern |
//!
//! The reader checks the topic and the payload length and compares every fill
//! byte (a full pass over the payload, as ringside's reader validates every
//! frame after its copy). Per producer it counts sequence gaps (frames the
//! producer dropped before a later one arrived) and sequence regressions
//! (which a Unix datagram socket should never produce).

use clap::Parser;
use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use ringside_naive::now_ns;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Most producers whose sequence numbers are tracked (bounded state).
const MAX_PRODUCERS: usize = 1024;
/// Receive buffer: larger than any datagram `dgram-load` sends (64 KiB payload max).
const BUF: usize = 128 << 10;

/// Set when SIGTERM or SIGINT arrives (taken by a waiting thread, see `main`).
static STOP: AtomicBool = AtomicBool::new(false);

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Unix-datagram telemetry reader (DogStatsD-style baseline)")]
struct Args {
    /// Socket path to bind (removed first if it exists).
    #[arg(long)]
    socket: PathBuf,
    /// SO_RCVBUF to request, bytes (0 = the OS default). As root, SO_RCVBUFFORCE
    /// is used so `net.core.rmem_max` does not cap it.
    #[arg(long, default_value_t = 4 << 20)]
    rcvbuf: usize,
    /// Expected payload bytes per frame (0 = any length of at least 16).
    #[arg(long, default_value_t = 0)]
    size: usize,
}

/// Per-producer sequence tracking.
#[derive(Debug, Clone, Copy, Default)]
struct Track {
    next: u64,
    seen: bool,
}

fn main() {
    let args = Args::parse();
    // SIGTERM/SIGINT are blocked in every thread and taken by one waiting thread, which
    // sets STOP; the receive loop's 100 ms read timeout notices it. No signal handler.
    let mut signals = nix::sys::signal::SigSet::empty();
    signals.add(nix::sys::signal::Signal::SIGTERM);
    signals.add(nix::sys::signal::Signal::SIGINT);
    if let Err(e) = signals.thread_block() {
        eprintln!("dgram-server: cannot block SIGTERM/SIGINT: {e}");
    }
    std::thread::spawn(move || {
        if signals.wait().is_ok() {
            STOP.store(true, Ordering::Relaxed);
        }
    });
    let _ = std::fs::remove_file(&args.socket);
    let sock = match UnixDatagram::bind(&args.socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dgram-server: bind {}: {e}", args.socket.display());
            std::process::exit(1);
        }
    };
    if args.rcvbuf > 0
        && setsockopt(&sock, sockopt::RcvBufForce, &args.rcvbuf).is_err()
        && let Err(e) = setsockopt(&sock, sockopt::RcvBuf, &args.rcvbuf)
    {
        eprintln!("dgram-server: SO_RCVBUF {}: {e}", args.rcvbuf);
    }
    let rcvbuf = getsockopt(&sock, sockopt::RcvBuf).unwrap_or(0);
    let qlen = std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    // Wake up now and then to notice STOP even if no signal interrupts recv.
    let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));

    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
        .expect("static histogram bounds are valid");
    let mut buf = vec![0u8; BUF];
    let mut tracks = vec![Track::default(); MAX_PRODUCERS];
    let (mut received, mut bytes, mut invalid, mut gaps, mut regressions) = (0u64, 0u64, 0, 0, 0);
    let (mut first_ns, mut last_ns) = (0u64, 0u64);
    let mut ended_by = "signal";
    while !STOP.load(Ordering::Relaxed) {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                eprintln!("dgram-server: recv: {e}");
                ended_by = "error";
                break;
            }
        };
        let now = now_ns();
        let d = &buf[..n];
        let Some(id) = d
            .get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("a 4-byte slice converts to [u8; 4]")))
        else {
            invalid += 1;
            continue;
        };
        if id == u32::MAX {
            ended_by = "end marker";
            break;
        }
        let t = d.get(4).copied().unwrap_or(u8::MAX) as usize;
        let (Some(topic), Some(payload)) = (d.get(5..5 + t), d.get(5 + t..)) else {
            invalid += 1;
            continue;
        };
        let topic_ok = topic.starts_with(b"load/");
        let len_ok = payload.len() >= 16 && (args.size == 0 || payload.len() == args.size);
        let fill_ok = payload
            .iter()
            .enumerate()
            .skip(16)
            .all(|(i, &b)| b == (i as u8).wrapping_mul(31).wrapping_add(id as u8));
        if !(topic_ok && len_ok && fill_ok) || id as usize >= MAX_PRODUCERS {
            invalid += 1;
            continue;
        }
        let word = |r: std::ops::Range<usize>| {
            u64::from_le_bytes(
                payload[r]
                    .try_into()
                    .expect("an 8-byte slice converts to [u8; 8]"),
            )
        };
        let (seq, sent) = (word(0..8), word(8..16));
        let tr = &mut tracks[id as usize];
        if tr.seen && seq < tr.next {
            regressions += 1;
        } else {
            gaps += seq - if tr.seen { tr.next } else { 0 };
            tr.next = seq + 1;
            tr.seen = true;
        }
        let _ = hist.record(now.saturating_sub(sent).max(1));
        received += 1;
        bytes += payload.len() as u64;
        if first_ns == 0 {
            first_ns = now;
        }
        last_ns = now;
    }
    let _ = std::fs::remove_file(&args.socket);
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let out = serde_json::json!({
        "received": received,
        "received_bytes": bytes,
        "invalid": invalid,
        "gaps": gaps,
        "regressions": regressions,
        "first_ns": first_ns,
        "last_ns": last_ns,
        "p50_us": us(0.5),
        "p99_us": us(0.99),
        "p999_us": us(0.999),
        "max_us": hist.max() as f64 / 1000.0,
        "rcvbuf": rcvbuf,
        "max_dgram_qlen": qlen,
        "ended_by": ended_by,
    });
    println!("{out}");
}
