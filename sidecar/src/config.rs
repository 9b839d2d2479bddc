//! Command-line flags (clap derive). Every flag can also be set from an
//! environment variable named `RINGSIDE_<FLAG>`; sizes take human units
//! (`64MiB`, `512KiB`, `1GB`) and durations take humantime (`100ms`, `30s`).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// ringside: serve telemetry from a shared-memory ring over gRPC, in bounded memory.
#[derive(Debug, Parser)]
#[command(name = "ringside", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sidecar: own the ring, admit producers, serve gRPC subscribers.
    ///
    /// Try `ringside serve --demo` to see telemetry flow end to end.
    Serve(Box<ServeArgs>),
    /// A synthetic producer for testing a host.
    Load(LoadArgs),
    /// Subscribe and print frames and losses.
    Tail(TailArgs),
    /// Show the sidecar's Info: ring, rates, retention, producers, subscribers.
    Stats(StatsArgs),
    /// Publish the ring into a NATS JetStream stream, exactly once, in bounded memory.
    ///
    /// Runs beside `serve` on each host; see docs/fleet.md.
    Export(Box<ExportArgs>),
}

/// Parses a byte size with units (`64MiB`, `65536`, `1 GB`).
///
/// # Errors
///
/// A text naming the value and the accepted forms.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("`{s}` is not a byte size ({e}); write e.g. 64MiB, 512KiB or 1048576"))
}

/// Parses a duration (`100ms`, `1s`, `2m`).
///
/// # Errors
///
/// A text naming the value and the accepted forms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. 100ms, 1s or 2m"))
}

/// A socket address or none (`off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalAddr(pub Option<SocketAddr>);

/// Parses a socket address, or `off` for none.
///
/// # Errors
///
/// A text naming the value when it is neither `off` nor a socket address.
pub fn parse_optional_addr(s: &str) -> Result<OptionalAddr, String> {
    match s.trim() {
        "" | "off" | "none" => Ok(OptionalAddr(None)),
        a => a.parse().map(|a| OptionalAddr(Some(a))).map_err(|e| {
            format!("`{s}` is not an address ({e}); write e.g. 127.0.0.1:9464 or `off`")
        }),
    }
}

/// Formats a byte count with IEC units, e.g. `64.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `ringside serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Data bytes of the shared-memory ring: a power of two that holds at least 4
    /// maximum-size frames, so at least 512KiB with the default --max-payload 64KiB
    /// (64KiB, the smallest ring, takes --max-payload 16089 or less).
    #[arg(long, env = "RINGSIDE_RING_SIZE", default_value = "64MiB", value_parser = parse_bytes)]
    pub ring_size: u64,
    /// Largest payload a producer may write in one frame (the topic comes on top).
    /// `--max-frame` is the old spelling.
    #[arg(
        long,
        visible_alias = "max-frame",
        env = "RINGSIDE_MAX_PAYLOAD",
        default_value = "64KiB",
        value_parser = parse_bytes
    )]
    pub max_payload: u64,
    /// Unix socket where producers connect.
    #[arg(long, env = "RINGSIDE_SOCKET", default_value = ringside_ring::DEFAULT_SOCKET_PATH)]
    pub socket: PathBuf,
    /// gRPC listen address.
    #[arg(long, env = "RINGSIDE_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Most concurrent Subscribe streams; more get RESOURCE_EXHAUSTED.
    #[arg(long, env = "RINGSIDE_MAX_SUBSCRIBERS", default_value_t = 64)]
    pub max_subscribers: usize,
    /// Most concurrent TCP connections; calls on more get RESOURCE_EXHAUSTED
    /// (8 such refusal connections at a time, closed after 2s; beyond that
    /// they are closed at once).
    #[arg(long, env = "RINGSIDE_MAX_CONNECTIONS", default_value_t = 64)]
    pub max_connections: usize,
    /// Most Subscribe streams on one connection; more get RESOURCE_EXHAUSTED. HTTP/2
    /// advertises 4 more concurrent streams (SETTINGS_MAX_CONCURRENT_STREAMS), so unary
    /// calls on that connection never wait behind Subscribe streams.
    #[arg(
        long,
        env = "RINGSIDE_MAX_STREAMS_PER_CONNECTION",
        default_value_t = 16
    )]
    pub max_streams_per_connection: u32,
    /// Largest batch a subscriber is sent at once (its buffer), in bytes.
    #[arg(long, env = "RINGSIDE_SUBSCRIBER_BUFFER", default_value = "256KiB", value_parser = parse_bytes)]
    pub subscriber_buffer: u64,
    /// Refuse to start when the computed worst-case memory exceeds this.
    #[arg(long, env = "RINGSIDE_MEMORY_LIMIT", value_parser = parse_bytes)]
    pub memory_limit: Option<u64>,
    /// Producer uids admitted on the socket (comma-separated). Empty with no
    /// --allow-gid: only the sidecar's own uid (and root).
    #[arg(long, env = "RINGSIDE_ALLOW_UID", value_delimiter = ',')]
    pub allow_uid: Vec<u32>,
    /// Producer gids admitted on the socket (comma-separated).
    #[arg(long, env = "RINGSIDE_ALLOW_GID", value_delimiter = ',')]
    pub allow_gid: Vec<u32>,
    /// Most producer connections at once. Each producer handle counts (a Rust
    /// `Producer`, an `rs_producer_connect`), so a process with two handles uses two.
    #[arg(long, env = "RINGSIDE_MAX_PRODUCERS", default_value_t = 64)]
    pub max_producers: usize,
    /// Prometheus metrics address (`off` to disable).
    #[arg(long, env = "RINGSIDE_METRICS_LISTEN", default_value = "off", value_parser = parse_optional_addr)]
    pub metrics_listen: OptionalAddr,
    /// Log format. The level comes from RUST_LOG (default `info`).
    #[arg(long, env = "RINGSIDE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// How long a reader waits on a claimed but uncommitted frame before
    /// skipping it as abandoned.
    #[arg(long, env = "RINGSIDE_STALL_TIMEOUT", default_value = "100ms", value_parser = parse_duration)]
    pub stall_timeout: Duration,
    /// How long start-up waits for a producer to hand back an existing ring.
    #[arg(long, env = "RINGSIDE_ADOPT_GRACE", default_value = "1s", value_parser = parse_duration)]
    pub adopt_grace: Duration,
    /// PEM certificate chain: serve gRPC over TLS (needs --tls-key).
    #[arg(long, env = "RINGSIDE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "RINGSIDE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: require client certificates signed by it (mTLS).
    #[arg(long, env = "RINGSIDE_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// File holding a bearer token; Ringside and reflection calls without
    /// `authorization: Bearer <token>` get UNAUTHENTICATED (health checks stay open).
    #[arg(long, env = "RINGSIDE_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// HTTP/2 keepalive ping interval (`0s` disables).
    #[arg(long, env = "RINGSIDE_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub keepalive_interval: Duration,
    /// Close a connection whose keepalive ping is not answered within this.
    #[arg(long, env = "RINGSIDE_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub keepalive_timeout: Duration,
    /// Close a new connection that has not sent the HTTP/2 preface within this
    /// (`0s` = never; under TLS it bounds only the first bytes of the TLS handshake).
    #[arg(long, env = "RINGSIDE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
    /// End the stream of a subscriber whose connection took no data for this long
    /// while frames were waiting (it stopped reading): UNAVAILABLE with its resume
    /// sequence, once it reads again; its connection is closed after twice this
    /// (`0s` = never).
    #[arg(long, env = "RINGSIDE_SUBSCRIBER_STALL_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub subscriber_stall_timeout: Duration,
    /// Let web pages from this origin call the API over grpc-web (CORS), e.g.
    /// `https://console.example.com`; repeatable or comma-separated; `*` allows any
    /// origin. Default: none (browsers refuse cross-origin calls).
    #[arg(long, env = "RINGSIDE_CORS_ALLOW_ORIGIN", value_delimiter = ',')]
    pub cors_allow_origin: Vec<String>,
    /// Close connections after this age, gracefully (`0s` = never).
    #[arg(long, env = "RINGSIDE_MAX_CONNECTION_AGE", default_value = "0s", value_parser = parse_duration)]
    pub max_connection_age: Duration,
    /// Largest gRPC request accepted (requests are small; bigger = RESOURCE_EXHAUSTED/OUT_OF_RANGE).
    #[arg(long, env = "RINGSIDE_MAX_REQUEST", default_value = "16KiB", value_parser = parse_bytes)]
    pub max_request: u64,
    /// Kernel send buffer (SO_SNDBUF) per connection.
    #[arg(long, env = "RINGSIDE_SOCKET_SEND_BUFFER", default_value = "256KiB", value_parser = parse_bytes)]
    pub socket_send_buffer: u64,
    /// Tokio worker threads (0 = number of CPUs, at most 8).
    #[arg(long, env = "RINGSIDE_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,
    /// Print the memory budget and ring retention estimate, then exit.
    #[arg(long, env = "RINGSIDE_PRINT_BUDGET")]
    pub print_budget: bool,
    /// Also run a demo producer and a demo subscriber in-process, printing
    /// one summary line per second.
    #[arg(long, env = "RINGSIDE_DEMO")]
    pub demo: bool,
    /// Frames per second the demo producer writes.
    #[arg(long, env = "RINGSIDE_DEMO_RATE", default_value_t = 1000)]
    pub demo_rate: u64,
    /// Serve the live console (a web page over grpc-web) at `/` on the gRPC
    /// address; `--console false` turns it off.
    #[arg(
        long,
        env = "RINGSIDE_CONSOLE",
        default_value = "true",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub console: bool,
}

/// Flags of `ringside load`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// The sidecar's producer socket.
    #[arg(long, env = "RINGSIDE_SOCKET", default_value = ringside_ring::DEFAULT_SOCKET_PATH)]
    pub socket: PathBuf,
    /// Frames per second over all producers (0 = as fast as possible).
    #[arg(long, env = "RINGSIDE_LOAD_RATE", default_value_t = 10_000)]
    pub rate: u64,
    /// Payload bytes per frame.
    #[arg(long, env = "RINGSIDE_LOAD_SIZE", default_value = "256", value_parser = parse_bytes)]
    pub size: u64,
    /// Number of topics (`load/0` ... `load/K-1`), written round-robin.
    #[arg(long, env = "RINGSIDE_LOAD_TOPICS", default_value_t = 4)]
    pub topics: u32,
    /// Producer processes simulated, one thread and one connection each.
    #[arg(long, env = "RINGSIDE_LOAD_PRODUCERS", default_value_t = 1)]
    pub producers: u32,
    /// How long to run.
    #[arg(long, env = "RINGSIDE_LOAD_DURATION", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Stop after this many frames in total (0 = no limit).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// Reserve every K-th frame and drop it without committing (published as a
    /// discarded frame; 0 = never). For testing subscribers' accounting.
    #[arg(long, default_value_t = 0)]
    pub discard_every: u64,
    /// Wait at most this long for the sidecar before giving up (frames are
    /// dropped and counted while it is away).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Print the final totals as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// No progress lines.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Connection flags shared by the gRPC client commands.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The sidecar's gRPC endpoint.
    #[arg(
        long,
        env = "RINGSIDE_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    pub endpoint: String,
    /// File holding the bearer token to send.
    #[arg(long, env = "RINGSIDE_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// PEM CA to verify an https:// endpoint with.
    #[arg(long, env = "RINGSIDE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate for mTLS (needs --tls-client-key).
    #[arg(long, env = "RINGSIDE_TLS_CLIENT_CERT", requires = "tls_client_key")]
    pub tls_client_cert: Option<PathBuf>,
    /// PEM client key for --tls-client-cert.
    #[arg(long, env = "RINGSIDE_TLS_CLIENT_KEY", requires = "tls_client_cert")]
    pub tls_client_key: Option<PathBuf>,
    /// Give up connecting after this long.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
}

/// Flags of `ringside tail`.
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    #[command(flatten)]
    /// Where and how to connect.
    pub client: ClientArgs,
    /// Start position: `earliest`, `latest`, a sequence number, an RFC 3339
    /// time (`2026-01-02T03:04:05Z`) or a duration ago (`10s`).
    #[arg(long, default_value = "latest")]
    pub from: String,
    /// Only this topic (repeatable).
    #[arg(long = "topic")]
    pub topics: Vec<String>,
    /// Only topics starting with this prefix (repeatable).
    #[arg(long = "prefix")]
    pub prefixes: Vec<String>,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Exit after this many frames.
    #[arg(long)]
    pub count: Option<u64>,
    /// Exit after no message for this long.
    #[arg(long, value_parser = parse_duration)]
    pub idle_exit: Option<Duration>,
    /// Ask for batches of at most this many bytes.
    #[arg(long, value_parser = parse_bytes)]
    pub max_batch_bytes: Option<u64>,
    /// Ask for batches of at most this many frames.
    #[arg(long)]
    pub max_batch_frames: Option<u32>,
    /// Payload bytes shown per frame in text mode.
    #[arg(long, default_value_t = 32)]
    pub show_bytes: usize,
    /// Frames whose topic starts with this prefix are `ringside-tracing` records
    /// (`TracingRecord`, proto/ringside/v1/tracing.proto) and are printed decoded:
    /// level, target, message, fields, span durations. Empty: print them as bytes.
    #[arg(long, default_value = ringside_proto::TRACING_TOPIC_PREFIX)]
    pub tracing_prefix: String,
    /// Print only a summary line per second (frames/s, bytes/s, losses)
    /// instead of the frames.
    #[arg(long, conflicts_with = "json")]
    pub summary: bool,
    /// Pause this long after each batch (simulates a slow subscriber).
    #[arg(long, value_parser = parse_duration)]
    pub slow: Option<Duration>,
    #[command(flatten)]
    /// Read an exporter's records from JetStream instead (--nats-url, --stream, --subject-prefix).
    pub nats: Box<NatsArgs>,
}

/// NATS flags of `ringside export` and `ringside tail --nats-url`.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated (`nats://host:4222`, `tls://host:4222`).
    /// With `tail`: read an exporter's records from JetStream instead of the sidecar.
    #[arg(long = "nats-url", env = "RINGSIDE_NATS_URL", requires_all = ["stream", "subject_prefix"])]
    pub url: Option<String>,
    /// JetStream stream name.
    #[arg(long, env = "RINGSIDE_STREAM")]
    pub stream: Option<String>,
    /// Subject prefix of this host's records: frames go to `<prefix>.<topic>`,
    /// losses to `<prefix>._loss` (e.g. `telemetry.host1`).
    #[arg(long, env = "RINGSIDE_SUBJECT_PREFIX")]
    pub subject_prefix: Option<String>,
    /// NATS credentials file (`.creds`: JWT and NKey seed).
    #[arg(long, env = "RINGSIDE_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// File whose first line is the NATS token.
    #[arg(long, env = "RINGSIDE_NATS_TOKEN_FILE")]
    pub nats_token_file: Option<PathBuf>,
    /// PEM CA that signed the NATS server's certificate (turns TLS on).
    #[arg(long, env = "RINGSIDE_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// PEM client certificate for NATS (needs --nats-tls-key).
    #[arg(long, env = "RINGSIDE_NATS_TLS_CERT", requires = "nats_tls_key")]
    pub nats_tls_cert: Option<PathBuf>,
    /// PEM client key for --nats-tls-cert.
    #[arg(long, env = "RINGSIDE_NATS_TLS_KEY", requires = "nats_tls_cert")]
    pub nats_tls_key: Option<PathBuf>,
    /// Refuse a NATS connection without TLS.
    #[arg(long, env = "RINGSIDE_NATS_TLS")]
    pub nats_tls: bool,
}

/// Flags of `ringside export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    /// The sidecar to read from.
    pub client: ClientArgs,
    #[command(flatten)]
    /// The NATS server and stream to publish to (--nats-url, --stream and --subject-prefix are required).
    pub nats: NatsArgs,
    /// Where to start a ring the stream holds nothing of: `earliest`, `latest`,
    /// a sequence number, an RFC 3339 time or a duration ago. A ring the stream
    /// already holds records of resumes after the last one.
    #[arg(long, env = "RINGSIDE_EXPORT_FROM", default_value = "earliest")]
    pub from: String,
    /// Publish whole batches to `<prefix>._batch` instead of one message per frame.
    #[arg(long, env = "RINGSIDE_EXPORT_BATCH")]
    pub batch: bool,
    /// Most records published and not yet acknowledged.
    #[arg(long, env = "RINGSIDE_EXPORT_MAX_INFLIGHT", default_value_t = 4096)]
    pub max_inflight: usize,
    /// Most bytes (subjects, headers, payloads) published and not yet acknowledged.
    #[arg(long, env = "RINGSIDE_EXPORT_MAX_INFLIGHT_BYTES", default_value = "8MiB", value_parser = parse_bytes)]
    pub max_inflight_bytes: u64,
    /// Largest batch read from the sidecar at once (and, with --batch, the largest message).
    #[arg(long, env = "RINGSIDE_EXPORT_READ_BATCH", default_value = "256KiB", value_parser = parse_bytes)]
    pub read_batch: u64,
    /// Give the NATS connection up when an acknowledgement takes longer.
    #[arg(long, env = "RINGSIDE_EXPORT_ACK_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub ack_timeout: Duration,
    /// Create the stream when it does not exist (subjects `<prefix>.>`, the limits below).
    #[arg(long, env = "RINGSIDE_EXPORT_CREATE_STREAM")]
    pub create_stream: bool,
    /// With --create-stream: max_bytes of the new stream (`0` = unlimited).
    #[arg(long, env = "RINGSIDE_EXPORT_STREAM_MAX_BYTES", default_value = "1GiB", value_parser = parse_bytes)]
    pub stream_max_bytes: u64,
    /// With --create-stream: max_age of the new stream (`0s` = unlimited).
    #[arg(long, env = "RINGSIDE_EXPORT_STREAM_MAX_AGE", default_value = "24h", value_parser = parse_duration)]
    pub stream_max_age: Duration,
    /// With --create-stream: duplicate_window of the new stream.
    #[arg(long, env = "RINGSIDE_EXPORT_STREAM_DUPLICATE_WINDOW", default_value = "2m", value_parser = parse_duration)]
    pub stream_duplicate_window: Duration,
    /// With --create-stream: replicas of the new stream.
    #[arg(long, env = "RINGSIDE_EXPORT_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
    /// With --create-stream: keep the new stream in memory instead of files.
    #[arg(long, env = "RINGSIDE_EXPORT_STREAM_MEMORY")]
    pub stream_memory: bool,
    /// Refuse a stream whose max_bytes is below this (default: the ring's capacity).
    #[arg(long, env = "RINGSIDE_EXPORT_MIN_STREAM_BYTES", value_parser = parse_bytes)]
    pub min_stream_bytes: Option<u64>,
    /// Refuse to start when the computed worst-case memory exceeds this.
    #[arg(long, env = "RINGSIDE_MEMORY_LIMIT", value_parser = parse_bytes)]
    pub memory_limit: Option<u64>,
    /// Prometheus metrics address (`off` to disable).
    #[arg(long, env = "RINGSIDE_METRICS_LISTEN", default_value = "off", value_parser = parse_optional_addr)]
    pub metrics_listen: OptionalAddr,
    /// Log format. The level comes from RUST_LOG (default `info`).
    #[arg(long, env = "RINGSIDE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// No progress line on stderr.
    #[arg(long, short, env = "RINGSIDE_EXPORT_QUIET")]
    pub quiet: bool,
    /// On SIGTERM, wait this long for acknowledgements of the records in flight.
    #[arg(long, env = "RINGSIDE_EXPORT_DRAIN_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// At start, wait this long for another exporter of the same --subject-prefix (or
    /// the NATS connection of one that died) to go away, then refuse to start.
    #[arg(long, env = "RINGSIDE_EXPORT_TAKEOVER_WAIT", default_value = "30s", value_parser = parse_duration)]
    pub takeover_wait: Duration,
    /// Tokio worker threads. One is the fastest: the exporter is one pipeline,
    /// and a second thread mostly adds cross-thread wake-ups.
    #[arg(long, env = "RINGSIDE_WORKER_THREADS", default_value_t = 1)]
    pub worker_threads: usize,
    /// Print the memory budget, then exit.
    #[arg(long, env = "RINGSIDE_PRINT_BUDGET")]
    pub print_budget: bool,
}

/// Flags of `ringside stats`.
#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    /// Where and how to connect.
    pub client: ClientArgs,
    /// Print the Info response as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also list topics.
    #[arg(long)]
    pub topics: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_with_no_flags() {
        let cli = Cli::try_parse_from(["ringside", "serve"]).expect("defaults parse");
        let Command::Serve(s) = cli.command else {
            panic!("serve expected");
        };
        assert_eq!(s.ring_size, 64 << 20);
        assert_eq!(s.max_payload, 64 << 10);
        assert_eq!(s.metrics_listen, OptionalAddr(None));
        assert_eq!(s.stall_timeout, Duration::from_millis(100));
        assert!(s.console);
    }

    #[test]
    fn console_can_be_turned_off() {
        let serve = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).expect("parses");
            let Command::Serve(s) = cli.command else {
                panic!("serve expected");
            };
            s.console
        };
        assert!(!serve(&["ringside", "serve", "--console", "false"]));
        assert!(!serve(&["ringside", "serve", "--console=off"]));
        assert!(serve(&["ringside", "serve", "--console"]));
    }

    #[test]
    fn human_units() {
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(
            parse_bytes("lots")
                .expect_err("must fail")
                .contains("64MiB")
        );
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_optional_addr("off"), Ok(OptionalAddr(None)));
    }

    #[test]
    fn load_spelling() {
        let cli = Cli::try_parse_from([
            "ringside",
            "load",
            "--socket",
            "/tmp/x.sock",
            "--rate",
            "5",
            "--size",
            "100",
            "--topics",
            "3",
            "--producers",
            "2",
            "--duration",
            "10s",
        ])
        .expect("parses");
        assert!(matches!(cli.command, Command::Load(_)));
    }

    #[test]
    fn export_and_tail_nats_spelling() {
        let cli = Cli::try_parse_from([
            "ringside",
            "export",
            "--nats-url",
            "nats://127.0.0.1:4222",
            "--stream",
            "TELEMETRY",
            "--subject-prefix",
            "telemetry.host1",
            "--max-inflight-bytes",
            "4MiB",
            "--batch",
        ])
        .expect("parses");
        let Command::Export(e) = cli.command else {
            panic!("export expected");
        };
        assert_eq!(e.max_inflight_bytes, 4 << 20);
        assert_eq!(e.from, "earliest");
        assert!(e.batch);
        // --nats-url needs the stream and the prefix.
        assert!(Cli::try_parse_from(["ringside", "tail", "--nats-url", "nats://x:1"]).is_err());
        assert!(
            Cli::try_parse_from([
                "ringside",
                "tail",
                "--nats-url",
                "nats://x:1",
                "--stream",
                "S",
                "--subject-prefix",
                "p"
            ])
            .is_ok()
        );
    }
}
