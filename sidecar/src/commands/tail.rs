//! `ringside tail`: subscribe and print frames and losses.

use super::client::{connect, error_chain};
use crate::config::TailArgs;
use ringside_proto::v1;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses `--from`.
///
/// # Errors
///
/// A text listing the accepted forms when `s` is none of them.
pub fn parse_from(s: &str) -> Result<v1::subscribe_request::Start, String> {
    use v1::subscribe_request::Start;
    let s = s.trim();
    match s {
        "earliest" | "oldest" => return Ok(Start::Earliest(true)),
        "latest" | "now" | "end" => return Ok(Start::Latest(true)),
        _ => {}
    }
    if let Ok(seq) = s.parse::<u64>() {
        return Ok(Start::Sequence(seq));
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        let ns = t
            .duration_since(UNIX_EPOCH)
            .map_err(|_| format!("--from {s} is before 1970"))?
            .as_nanos();
        return Ok(Start::TimestampNs(u64::try_from(ns).unwrap_or(u64::MAX)));
    }
    let ago = s.strip_suffix(" ago").unwrap_or(s);
    if let Ok(d) = humantime::parse_duration(ago) {
        let t = SystemTime::now().checked_sub(d).unwrap_or(UNIX_EPOCH);
        let ns = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        return Ok(Start::TimestampNs(u64::try_from(ns).unwrap_or(u64::MAX)));
    }
    Err(format!(
        "--from `{s}` is not earliest, latest, a sequence number, an RFC 3339 time or a duration ago (e.g. 10s)"
    ))
}

fn reason_name(r: i32) -> &'static str {
    v1::LossReason::try_from(r)
        .ok()
        .and_then(|wire| ringside_ring::LossReason::try_from(wire).ok())
        .map_or("unspecified", |reason| reason.as_str())
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn text_preview(p: &[u8], max: usize) -> String {
    let shown = &p[..p.len().min(max)];
    let printable = shown.iter().all(|b| b.is_ascii_graphic() || *b == b' ');
    let mut s = if printable {
        format!("{:?}", String::from_utf8_lossy(shown))
    } else {
        hex(shown)
    };
    if p.len() > max {
        s.push('…');
    }
    s
}

/// Runs `ringside tail`.
pub fn run(args: TailArgs) -> ExitCode {
    let start = match parse_from(&args.from) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ringside tail: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ringside tail: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(tail(args, start))
}

async fn tail(args: TailArgs, start: v1::subscribe_request::Start) -> ExitCode {
    let mut conn = match connect(&args.client).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringside tail: {e}");
            return ExitCode::from(1);
        }
    };
    let req = v1::SubscribeRequest {
        start: Some(start),
        topics: args.topics.clone(),
        topic_prefixes: args.prefixes.clone(),
        max_batch_frames: args.max_batch_frames.unwrap_or(0),
        max_batch_bytes: args
            .max_batch_bytes
            .map_or(0, |b| u32::try_from(b).unwrap_or(u32::MAX)),
    };
    let request = conn.request(req);
    let mut stream = match conn.client.subscribe(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            eprintln!(
                "ringside tail: subscribe refused: {:?}: {}",
                status.code(),
                status.message()
            );
            return ExitCode::from(1);
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut frames_seen = 0u64;
    let mut ring_id: Option<u64> = None;
    let idle = args.idle_exit.unwrap_or(Duration::MAX / 4);
    let mut summary = Summary::new();
    loop {
        let msg = match tokio::time::timeout(idle, stream.message()).await {
            Err(_) | Ok(Ok(None)) => {
                if args.summary && (summary.batches > 0 || summary.total_frames == 0) {
                    summary.print();
                }
                let _ = out.flush();
                return ExitCode::SUCCESS;
            }
            Ok(Ok(Some(b))) => b,
            Ok(Err(status)) => {
                if args.summary && (summary.batches > 0 || summary.total_frames == 0) {
                    summary.print();
                }
                let _ = out.flush();
                if args.json {
                    let _ = writeln!(
                        out,
                        "{}",
                        serde_json::json!({"end": {"code": format!("{:?}", status.code()), "message": status.message()}})
                    );
                    let _ = out.flush();
                }
                eprintln!(
                    "ringside tail: stream ended: {:?}: {}",
                    status.code(),
                    status.message()
                );
                return ExitCode::from(1);
            }
        };
        if ring_id.is_some_and(|r| r != msg.ring_id) {
            eprintln!(
                "ringside tail: the ring was replaced (ring id {:016x}); sequences restarted",
                msg.ring_id
            );
        }
        ring_id = Some(msg.ring_id);
        if args.summary {
            frames_seen += msg.frames.len() as u64;
            summary.add(&msg);
            if args.count.is_some_and(|c| frames_seen >= c) {
                summary.print();
                return ExitCode::SUCCESS;
            }
            continue;
        }
        for l in &msg.losses {
            let r = reason_name(l.reason);
            let line = if args.json {
                serde_json::json!({"loss": {"reason": r, "frames": l.frames, "first_seq": l.first_seq}}).to_string()
            } else {
                format!(
                    "-- lost {} frame(s) from seq {} ({r})",
                    l.frames, l.first_seq
                )
            };
            if writeln!(out, "{line}").is_err() {
                return ExitCode::SUCCESS;
            }
        }
        if msg.discarded > 0 {
            // Reservations producers dropped: never published, not lost.
            let line = if args.json {
                serde_json::json!({"discarded": {"frames": msg.discarded, "resume_seq": msg.resume_seq}}).to_string()
            } else {
                format!(
                    "-- {} discarded reservation(s) before seq {} (not lost)",
                    msg.discarded, msg.resume_seq
                )
            };
            if writeln!(out, "{line}").is_err() {
                return ExitCode::SUCCESS;
            }
        }
        for f in &msg.frames {
            let line = if args.json {
                serde_json::json!({
                    "seq": f.seq,
                    "ts_ns": f.timestamp_ns,
                    "topic": f.topic,
                    "producer_id": f.producer_id,
                    "payload_len": f.payload.len(),
                    "payload_hex": hex(&f.payload),
                })
                .to_string()
            } else {
                let ts = humantime::format_rfc3339_nanos(
                    UNIX_EPOCH + Duration::from_nanos(f.timestamp_ns),
                );
                format!(
                    "{seq:>10} {ts} {topic} [{pid}] {len}B {preview}",
                    seq = f.seq,
                    topic = f.topic,
                    pid = f.producer_id,
                    len = f.payload.len(),
                    preview = text_preview(&f.payload, args.show_bytes)
                )
            };
            if writeln!(out, "{line}").is_err() {
                return ExitCode::SUCCESS;
            }
            frames_seen += 1;
            if args.count.is_some_and(|c| frames_seen >= c) {
                let _ = out.flush();
                return ExitCode::SUCCESS;
            }
        }
        if out.flush().is_err() {
            return ExitCode::SUCCESS;
        }
        if let Some(d) = args.slow {
            tokio::time::sleep(d).await;
        }
    }
}

/// Per-second totals for `--summary`.
struct Summary {
    since: std::time::Instant,
    frames: u64,
    bytes: u64,
    lost: u64,
    batches: u64,
    total_frames: u64,
    total_lost: u64,
}

impl Summary {
    fn new() -> Self {
        Self {
            since: std::time::Instant::now(),
            frames: 0,
            bytes: 0,
            lost: 0,
            batches: 0,
            total_frames: 0,
            total_lost: 0,
        }
    }

    fn add(&mut self, b: &v1::Batch) {
        self.batches += 1;
        self.frames += b.frames.len() as u64;
        self.bytes += b.frames.iter().map(|f| f.payload.len() as u64).sum::<u64>();
        self.lost += b.losses.iter().map(|l| l.frames).sum::<u64>();
        if self.since.elapsed() >= Duration::from_secs(1) {
            self.print();
        }
    }

    fn print(&mut self) {
        let dt = self.since.elapsed().as_secs_f64().max(1e-9);
        self.total_frames += self.frames;
        self.total_lost += self.lost;
        println!(
            "tail: {:>10.0} frames/s {:>12}/s payload, {:>6.1} frames/batch, lost {} (total: {} frames, {} lost)",
            self.frames as f64 / dt,
            crate::config::human_bytes((self.bytes as f64 / dt) as u64),
            self.frames as f64 / self.batches.max(1) as f64,
            self.lost,
            self.total_frames,
            self.total_lost
        );
        self.since = std::time::Instant::now();
        (self.frames, self.bytes, self.lost, self.batches) = (0, 0, 0, 0);
    }
}

/// Formats a status for messages.
#[allow(dead_code)]
pub fn describe(e: &tonic::Status) -> String {
    format!("{:?}: {}", e.code(), error_chain(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use v1::subscribe_request::Start;

    #[test]
    fn from_forms() {
        assert_eq!(parse_from("earliest"), Ok(Start::Earliest(true)));
        assert_eq!(parse_from("latest"), Ok(Start::Latest(true)));
        assert_eq!(parse_from("42"), Ok(Start::Sequence(42)));
        assert_eq!(
            parse_from("1970-01-01T00:00:01Z"),
            Ok(Start::TimestampNs(1_000_000_000))
        );
        assert!(matches!(parse_from("10s"), Ok(Start::TimestampNs(_))));
        assert!(parse_from("yesterday-ish").is_err());
    }
}
