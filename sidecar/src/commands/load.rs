//! `ringside load`: a synthetic producer for testing a host.
//!
//! One thread and one producer connection per `--producers`; frames are paced
//! to `--rate` in total, round-robin over `--topics` topics (`load/0` ...).
//! Each payload starts with the producer's frame counter (u64 LE) and the send
//! time (u64 LE, ns since the UNIX epoch), then a fill pattern. With
//! `--discard-every K`, every K-th frame is reserved and dropped instead
//! (published as discarded), for testing how subscribers account for discards.

use crate::config::{LoadArgs, human_bytes};
use ringside_client::{Producer, ProducerStats, SendError};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Wall-clock nanoseconds since the UNIX epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

struct Shared {
    attempted: AtomicU64,
    stop: AtomicBool,
    limit: u64,
}

/// Runs `ringside load`.
pub fn run(args: LoadArgs) -> ExitCode {
    if args.producers == 0 || args.topics == 0 {
        eprintln!("ringside load: --producers and --topics must be at least 1");
        return ExitCode::from(2);
    }
    let Ok(size) = usize::try_from(args.size) else {
        eprintln!("ringside load: --size {} is too large", args.size);
        return ExitCode::from(2);
    };
    let mut producers = Vec::with_capacity(args.producers as usize);
    for _ in 0..args.producers {
        match Producer::connect(&args.socket) {
            Ok(p) => producers.push(Arc::new(p)),
            Err(e) => {
                eprintln!(
                    "ringside load: cannot connect to {}: {e}",
                    args.socket.display()
                );
                return ExitCode::from(1);
            }
        }
    }
    for p in &producers {
        if !p.wait_connected(args.connect_timeout) {
            eprintln!(
                "ringside load: no sidecar on {} after {:?}; writing anyway (frames are dropped and counted until one appears)",
                args.socket.display(),
                args.connect_timeout
            );
            break;
        }
    }
    if let Some(max) = producers.first().and_then(|p| p.max_payload())
        && size > max as usize
    {
        eprintln!(
            "ringside load: --size {size} exceeds the ring's max payload {max} (sidecar --max-payload)"
        );
        return ExitCode::from(2);
    }
    let shared = Arc::new(Shared {
        attempted: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        limit: args.count,
    });
    let n = u64::from(args.producers);
    let started = Instant::now();
    let mut threads = Vec::with_capacity(producers.len());
    for (i, p) in producers.iter().enumerate() {
        let rate = if args.rate == 0 {
            0
        } else {
            args.rate / n + u64::from((i as u64) < args.rate % n)
        };
        let p = Arc::clone(p);
        let sh = Arc::clone(&shared);
        let pace = Pace {
            rate,
            size,
            topics: args.topics,
            duration: args.duration,
            discard_every: args.discard_every,
        };
        let t = std::thread::Builder::new()
            .name(format!("load-{i}"))
            .spawn(move || produce(&p, &sh, pace, i as u32));
        match t {
            Ok(t) => threads.push(t),
            Err(e) => {
                eprintln!("ringside load: cannot start a producer thread: {e}");
                shared.stop.store(true, Ordering::Release);
                break;
            }
        }
    }
    let mut last = (0u64, 0u64, Instant::now());
    let mut errors = Vec::new();
    while threads.iter().any(|t| !t.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        if !args.quiet && last.2.elapsed() >= Duration::from_secs(1) {
            let s = sum(&producers);
            let dt = last.2.elapsed().as_secs_f64();
            eprintln!(
                "load: {:>9.0} frames/s {:>12}/s  sent {} dropped {}",
                (s.sent - last.0) as f64 / dt,
                human_bytes(((s.sent_bytes - last.1) as f64 / dt) as u64),
                s.sent,
                s.dropped_not_connected + s.dropped_too_large + s.dropped_invalid_topic
            );
            last = (s.sent, s.sent_bytes, Instant::now());
        }
    }
    for t in threads {
        match t.join() {
            Ok(Err(e)) => errors.push(e),
            Ok(Ok(())) => {}
            Err(_) => errors.push("a producer thread panicked".into()),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let s = sum(&producers);
    if args.json {
        let per: Vec<_> = producers
            .iter()
            .map(|p| {
                let st = p.stats();
                serde_json::json!({"producer_id": p.producer_id(), "sent": st.sent, "sent_bytes": st.sent_bytes,
                    "dropped_not_connected": st.dropped_not_connected, "reconnects": st.reconnects})
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "sent": s.sent, "sent_bytes": s.sent_bytes,
                "dropped_not_connected": s.dropped_not_connected, "dropped_too_large": s.dropped_too_large,
                "dropped_invalid_topic": s.dropped_invalid_topic, "discarded": s.discarded,
                "reconnects": s.reconnects, "elapsed_s": elapsed, "producers": per,
            })
        );
    } else {
        println!(
            "load: sent {} frames ({} payload) in {elapsed:.1}s = {:.0} frames/s; dropped {} (sidecar away {}, too large {}, bad topic {}); reconnects {}",
            s.sent,
            human_bytes(s.sent_bytes),
            s.sent as f64 / elapsed.max(1e-9),
            s.dropped_not_connected + s.dropped_too_large + s.dropped_invalid_topic,
            s.dropped_not_connected,
            s.dropped_too_large,
            s.dropped_invalid_topic,
            s.reconnects
        );
        for p in &producers {
            let st = p.stats();
            println!(
                "  producer {}: sent {} dropped {} reconnects {}",
                p.producer_id()
                    .map_or_else(|| "-".into(), |i| i.to_string()),
                st.sent,
                st.dropped_not_connected,
                st.reconnects
            );
        }
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        for e in errors {
            eprintln!("ringside load: {e}");
        }
        ExitCode::from(1)
    }
}

fn sum(ps: &[Arc<Producer>]) -> ProducerStats {
    let mut t = ProducerStats::default();
    for p in ps {
        let s = p.stats();
        t.sent += s.sent;
        t.sent_bytes += s.sent_bytes;
        t.dropped_not_connected += s.dropped_not_connected;
        t.dropped_too_large += s.dropped_too_large;
        t.dropped_invalid_topic += s.dropped_invalid_topic;
        t.discarded += s.discarded;
        t.reconnects += s.reconnects;
        t.lost_ring_replaced += s.lost_ring_replaced;
    }
    t
}

/// What one producer thread writes.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// Frames per second (0 = as fast as possible).
    rate: u64,
    /// Payload bytes.
    size: usize,
    /// Topics, round-robin.
    topics: u32,
    /// How long.
    duration: Duration,
    /// Reserve and drop every this-many-th frame (0 = never).
    discard_every: u64,
}

fn produce(p: &Producer, shared: &Shared, pace: Pace, index: u32) -> Result<(), String> {
    let Pace {
        rate,
        size,
        topics,
        duration,
        discard_every,
    } = pace;
    let names: Vec<String> = (0..topics).map(|i| format!("load/{i}")).collect();
    let mut payload = vec![0u8; size];
    for (i, b) in payload.iter_mut().enumerate().skip(16) {
        *b = (i as u8).wrapping_mul(31).wrapping_add(index as u8);
    }
    let start = Instant::now();
    let mut sent = 0u64;
    let mut topic = index as usize % names.len();
    while !shared.stop.load(Ordering::Relaxed) {
        let elapsed = start.elapsed();
        if elapsed >= duration {
            break;
        }
        let due = if rate == 0 {
            sent + 256
        } else {
            (elapsed.as_secs_f64() * rate as f64) as u64 + 1
        };
        if sent >= due {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        for _ in 0..(due - sent).min(4096) {
            if shared.limit > 0 && shared.attempted.fetch_add(1, Ordering::Relaxed) >= shared.limit
            {
                shared.stop.store(true, Ordering::Relaxed);
                return Ok(());
            }
            if size >= 8 {
                payload[..8].copy_from_slice(&sent.to_le_bytes());
            }
            if size >= 16 {
                payload[8..16].copy_from_slice(&now_ns().to_le_bytes());
            }
            if discard_every > 0 && (sent + 1).is_multiple_of(discard_every) {
                match p.reserve(&names[topic], size) {
                    // Dropped without commit: published as discarded.
                    Ok(reservation) => drop(reservation),
                    Err(SendError::NotConnected) => {}
                    Err(e) => return Err(format!("reserve failed: {e}")),
                }
            } else {
                match p.send(&names[topic], &payload) {
                    Ok(()) | Err(SendError::NotConnected) => {}
                    Err(e) => return Err(format!("send failed: {e}")),
                }
            }
            sent += 1;
            topic = (topic + 1) % names.len();
        }
    }
    Ok(())
}
