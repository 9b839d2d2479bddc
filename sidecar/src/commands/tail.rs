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

fn reason_name(r: i32) -> std::borrow::Cow<'static, str> {
    match r {
        0 => "unspecified".into(),
        // lapped, abandoned, corrupt; and the exporter's `rejected` and `unreported`.
        r => ringside_export::record::reason_name(r),
    }
}

/// Where `tail` reads from: the sidecar over gRPC, or the JetStream stream an
/// exporter fills (`--nats-url`), read with the same accounting.
enum Source {
    Grpc(Box<tonic::Streaming<v1::Batch>>),
    Nats(Box<ringside_export::reader::StreamReader>),
}

impl Source {
    async fn message(&mut self) -> Result<Option<v1::Batch>, tonic::Status> {
        match self {
            Source::Grpc(s) => s.message().await,
            Source::Nats(r) => r
                .next()
                .await
                .map(Some)
                .map_err(|e| tonic::Status::unavailable(e.to_string())),
        }
    }

    /// Gaps still unexplained at the end, and the stream accounting (NATS only).
    fn finish(&mut self, args: &TailArgs) -> Vec<String> {
        let Source::Nats(r) = self else {
            return Vec::new();
        };
        let lines = r
            .finish()
            .iter()
            .flat_map(|b| b.losses.iter().map(|l| loss_line(l, args.json)))
            .collect();
        let s = r.stats();
        eprintln!(
            "ringside tail: read {} stream messages: {} sequence numbers duplicated (dropped), {} late, {} unreported, {} foreign messages",
            s.messages, s.duplicates, s.late, s.unreported, s.foreign
        );
        lines
    }
}

async fn open_nats(
    args: &TailArgs,
    url: &str,
    start: v1::subscribe_request::Start,
) -> Result<Source, String> {
    use ringside_export::reader::{ReaderConfig, StreamReader};
    let (stream, subjects) = super::export::stream_and_subjects(&args.nats)?;
    let mut cfg = ReaderConfig::new(
        super::export::nats_options(&args.nats, url),
        stream,
        subjects,
    );
    cfg.start = start;
    cfg.topics.clone_from(&args.topics);
    cfg.prefixes.clone_from(&args.prefixes);
    let r = StreamReader::open(cfg).await.map_err(|e| e.to_string())?;
    Ok(Source::Nats(Box::new(r)))
}

fn loss_line(l: &v1::Loss, json: bool) -> String {
    let r = reason_name(l.reason);
    if json {
        serde_json::json!({"loss": {"reason": r, "frames": l.frames, "first_seq": l.first_seq}})
            .to_string()
    } else {
        format!(
            "-- lost {} frame(s) from seq {} ({r})",
            l.frames, l.first_seq
        )
    }
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

/// The frame's payload as a `ringside-tracing` record, when its topic is under `prefix`
/// (non-empty) and it decodes.
fn tracing_record(prefix: &str, f: &v1::Frame) -> Option<v1::TracingRecord> {
    use prost::Message as _;
    if prefix.is_empty() || !f.topic.starts_with(prefix) {
        return None;
    }
    v1::TracingRecord::decode(&f.payload[..]).ok()
}

fn level_name(level: i32) -> &'static str {
    use v1::tracing_record::Level;
    match Level::try_from(level) {
        Ok(Level::Trace) => "TRACE",
        Ok(Level::Debug) => "DEBUG",
        Ok(Level::Info) => "INFO",
        Ok(Level::Warn) => "WARN",
        Ok(Level::Error) => "ERROR",
        _ => "?",
    }
}

fn short_duration(ns: u64) -> String {
    let ns_f = ns as f64;
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}µs", ns_f / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}ms", ns_f / 1e6),
        _ => format!("{:.3}s", ns_f / 1e9),
    }
}

fn field_value(field: &v1::TracingField) -> serde_json::Value {
    use v1::tracing_field::Value;
    match &field.value {
        Some(Value::Str(s)) => s.as_str().into(),
        Some(Value::I64(v)) => (*v).into(),
        Some(Value::U64(v)) => (*v).into(),
        Some(Value::F64(v)) => (*v).into(),
        Some(Value::Bool(v)) => (*v).into(),
        None => serde_json::Value::Null,
    }
}

/// One readable line: `INFO target: message k=v ...`, or for a closed span
/// `INFO target: span NAME closed after 1.20ms (busy 0.80ms) k=v ...`.
fn tracing_text(r: &v1::TracingRecord) -> String {
    let mut line = format!("{:<5} {}:", level_name(r.level), r.target);
    if r.kind == v1::tracing_record::Kind::SpanClose as i32 {
        let _ = write!(
            line,
            " span {} closed after {} (busy {})",
            r.name,
            short_duration(r.duration_ns),
            short_duration(r.busy_ns)
        );
    } else if !r.message.is_empty() {
        let _ = write!(line, " {}", r.message);
    }
    for field in &r.fields {
        let _ = write!(line, " {}={}", field.name, field_value(field));
    }
    if r.kind != v1::tracing_record::Kind::SpanClose as i32 && r.span_id != 0 {
        let _ = write!(line, " [in span {}]", r.span_name);
    }
    if r.truncated {
        line.push_str(" (truncated)");
    }
    line
}

fn tracing_json(r: &v1::TracingRecord) -> serde_json::Value {
    let fields: serde_json::Map<String, serde_json::Value> = r
        .fields
        .iter()
        .map(|f| (f.name.clone(), field_value(f)))
        .collect();
    serde_json::json!({
        "kind": if r.kind == v1::tracing_record::Kind::SpanClose as i32 { "span_close" } else { "event" },
        "level": level_name(r.level),
        "target": r.target,
        "name": r.name,
        "message": r.message,
        "fields": fields,
        "file": r.file,
        "line": r.line,
        "span_id": r.span_id,
        "parent_span_id": r.parent_span_id,
        "duration_ns": r.duration_ns,
        "busy_ns": r.busy_ns,
        "span_name": r.span_name,
        "truncated": r.truncated,
    })
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
    let mut stream = match &args.nats.url {
        Some(url) => match open_nats(&args, url, start).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("ringside tail: {e}");
                return ExitCode::from(1);
            }
        },
        None => match subscribe(&args, start).await {
            Ok(s) => Source::Grpc(Box::new(s)),
            Err(code) => return code,
        },
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
                for line in stream.finish(&args) {
                    let _ = writeln!(out, "{line}");
                }
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
            let line = loss_line(l, args.json);
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
            let record = tracing_record(&args.tracing_prefix, f);
            let line = if args.json {
                let mut v = serde_json::json!({
                    "seq": f.seq,
                    "ts_ns": f.timestamp_ns,
                    "topic": f.topic,
                    "producer_id": f.producer_id,
                    "payload_len": f.payload.len(),
                    "payload_hex": hex(&f.payload),
                });
                if let Some(r) = &record {
                    v["tracing"] = tracing_json(r);
                }
                v.to_string()
            } else {
                let ts = humantime::format_rfc3339_nanos(
                    UNIX_EPOCH + Duration::from_nanos(f.timestamp_ns),
                );
                let body = match &record {
                    Some(r) => tracing_text(r),
                    None => format!(
                        "{len}B {preview}",
                        len = f.payload.len(),
                        preview = text_preview(&f.payload, args.show_bytes)
                    ),
                };
                format!(
                    "{seq:>10} {ts} {topic} [{pid}] {body}",
                    seq = f.seq,
                    topic = f.topic,
                    pid = f.producer_id,
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

/// Opens the gRPC Subscribe stream, or says why not.
async fn subscribe(
    args: &TailArgs,
    start: v1::subscribe_request::Start,
) -> Result<tonic::Streaming<v1::Batch>, ExitCode> {
    let mut conn = match connect(&args.client).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringside tail: {e}");
            return Err(ExitCode::from(1));
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
    match conn.client.subscribe(request).await {
        Ok(r) => Ok(r.into_inner()),
        Err(status) => {
            eprintln!(
                "ringside tail: subscribe refused: {:?}: {}",
                status.code(),
                status.message()
            );
            Err(ExitCode::from(1))
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
    fn tracing_records_print_readably() {
        use prost::Message as _;
        let record = v1::TracingRecord {
            level: v1::tracing_record::Level::Info as i32,
            target: "app::db".into(),
            message: "query done".into(),
            fields: vec![
                v1::TracingField {
                    name: "table".into(),
                    value: Some(v1::tracing_field::Value::Str("users".into())),
                },
                v1::TracingField {
                    name: "rows".into(),
                    value: Some(v1::tracing_field::Value::U64(3)),
                },
            ],
            ..Default::default()
        };
        let frame = v1::Frame {
            seq: 1,
            timestamp_ns: 0,
            topic: "tracing/app::db".into(),
            producer_id: 7,
            payload: record.encode_to_vec().into(),
        };
        let decoded = tracing_record("tracing/", &frame).expect("decodes");
        assert_eq!(
            tracing_text(&decoded),
            r#"INFO  app::db: query done table="users" rows=3"#
        );
        assert!(tracing_record("", &frame).is_none(), "empty prefix: off");
        assert!(tracing_record("other/", &frame).is_none());
        let span = v1::TracingRecord {
            kind: v1::tracing_record::Kind::SpanClose as i32,
            level: v1::tracing_record::Level::Debug as i32,
            target: "app".into(),
            name: "request".into(),
            duration_ns: 1_500_000,
            busy_ns: 800,
            ..Default::default()
        };
        assert_eq!(
            tracing_text(&span),
            "DEBUG app: span request closed after 1.50ms (busy 800ns)"
        );
    }

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
