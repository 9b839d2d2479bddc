//! The exporter: reads batches from the sidecar, publishes their frames (or
//! whole batches) and losses to JetStream within a bounded window, and
//! recovers from NATS and sidecar failures without duplicating or silently
//! dropping a sequence number.
//!
//! Flow control is the window: a batch read from the sidecar becomes pending
//! records, and the next batch is read only when all of them have been
//! published, which needs room in the window, which needs acknowledgements.
//! When NATS is slow or away, the exporter therefore stops reading; the
//! sidecar's HTTP/2 flow control stops sending; the ring laps the exporter;
//! and the loss comes back in-band when it reads again, to be published on
//! `<prefix>._loss` like any other.

use crate::budget::MemoryLimit;
use crate::coverage::Coverage;
use crate::metrics::ExportMetrics;
use crate::nats::{ClientTuning, NatsError, NatsOptions};
use crate::presence::{self, PrefixTaken, Presence};
use crate::record;
use crate::resume::{self, ResumeError};
use crate::sidecar::SidecarClient;
use crate::stream::{self, CreateLimits, Requirements, StreamError};
use crate::subject::{MAX_TOKEN_BYTES, Subjects};
use crate::window::{AckFuture, Entry, Kind, OutRecord, Window};
use async_nats::jetstream;
use ringside_proto::v1;
use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::{Notify, watch};

/// Everything the exporter is told (the flags of `ringside export`).
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// NATS connection.
    pub nats: NatsOptions,
    /// JetStream stream name.
    pub stream: String,
    /// Subjects under `--subject-prefix`.
    pub subjects: Subjects,
    /// Where to start a ring the stream holds nothing of (`--from`).
    pub from: v1::subscribe_request::Start,
    /// Publish whole batches to `<prefix>._batch` instead of one message per frame.
    pub batch: bool,
    /// Largest batch asked of the sidecar, in bytes (`--read-batch`).
    pub read_batch_bytes: u32,
    /// Most frames per batch asked of the sidecar.
    pub read_batch_frames: u32,
    /// Most records published and not yet acknowledged (`--max-inflight`).
    pub max_inflight_messages: usize,
    /// Most bytes published and not yet acknowledged (`--max-inflight-bytes`).
    pub max_inflight_bytes: u64,
    /// How long to wait for one acknowledgement before giving the connection up.
    pub ack_timeout: Duration,
    /// Create the stream with these limits when it does not exist.
    pub create_stream: Option<CreateLimits>,
    /// Least `max_bytes` accepted of the stream (`None`: the ring's capacity).
    pub min_stream_bytes: Option<u64>,
    /// Prometheus listen address.
    pub metrics_listen: Option<SocketAddr>,
    /// How often to print the progress line on stderr (`None`: never).
    pub progress_interval: Option<Duration>,
    /// On SIGTERM, how long to wait for acknowledgements of records in flight.
    pub drain_timeout: Duration,
    /// Longest pause between reconnect attempts.
    pub retry_max: Duration,
    /// At start, how long to wait for another exporter of the prefix (or its
    /// connection, when it died) to go away before refusing to start.
    pub takeover_wait: Duration,
    /// The HTTP/2 stream window of the sidecar connection (bytes it may
    /// buffer unread), for the budget.
    pub grpc_receive_window: u64,
    /// Tokio worker threads the caller runs the exporter on, for the budget.
    pub worker_threads: usize,
    /// `--memory-limit` or the cgroup limit, whichever is smaller.
    pub memory_limit: Option<MemoryLimit>,
}

impl ExportConfig {
    /// A configuration with the defaults of `ringside export`.
    pub fn new(nats: NatsOptions, stream: impl Into<String>, subjects: Subjects) -> ExportConfig {
        ExportConfig {
            nats,
            stream: stream.into(),
            subjects,
            from: v1::subscribe_request::Start::Earliest(true),
            batch: false,
            read_batch_bytes: 256 << 10,
            read_batch_frames: 1024,
            max_inflight_messages: 4096,
            max_inflight_bytes: 8 << 20,
            ack_timeout: Duration::from_secs(5),
            create_stream: None,
            min_stream_bytes: None,
            metrics_listen: None,
            progress_interval: Some(Duration::from_secs(1)),
            drain_timeout: Duration::from_secs(5),
            retry_max: Duration::from_secs(5),
            takeover_wait: Duration::from_secs(30),
            grpc_receive_window: 4 << 20,
            worker_threads: 1,
            memory_limit: None,
        }
    }

    /// The largest record this configuration publishes, for a ring whose
    /// frames carry at most `max_payload` bytes.
    pub fn max_record_bytes(&self, max_payload: u64) -> u64 {
        let subject = (self.subjects.prefix().len() + 1 + MAX_TOKEN_BYTES) as u64;
        let headers = 512;
        if self.batch {
            u64::from(self.read_batch_bytes) + subject + headers
        } else {
            max_payload + subject + headers
        }
    }
}

/// Why the exporter stopped.
#[derive(Debug, Error)]
pub enum ExportError {
    /// Flags that cannot work together.
    #[error("{0}")]
    Config(String),
    /// NATS is unusable at start.
    #[error(transparent)]
    Nats(#[from] NatsError),
    /// The stream is missing or unfit.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// Reading the stream's state at start failed.
    #[error("cannot find where the export stopped: {0}")]
    Resume(#[from] ResumeError),
    /// The sidecar refused or is unreachable at start.
    #[error("the sidecar at {endpoint} {what}: {code:?}: {message}")]
    Sidecar {
        /// Where.
        endpoint: String,
        /// What failed.
        what: &'static str,
        /// gRPC code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
    /// The Prometheus listener could not start.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// Another exporter (or its connection) still holds the subject prefix.
    #[error(transparent)]
    PrefixTaken(#[from] PrefixTaken),
    /// Asking who holds the prefix, or announcing this exporter, failed.
    #[error("{0}")]
    Presence(String),
}

impl ExportError {
    /// The process exit code: 2 for configuration that must change, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ExportError::Config(_) | ExportError::Stream(_) => 2,
            _ => 1,
        }
    }
}

/// Totals at exit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Records JetStream acknowledged (frames, batches, losses).
    pub records_acked: u64,
    /// Frames in those records.
    pub frames_acked: u64,
    /// Acknowledgements that said "duplicate".
    pub deduplicated: u64,
    /// Records found in the stream after a failure, without an acknowledgement.
    pub confirmed_by_reading_back: u64,
    /// Records published again after a failure.
    pub republished: u64,
    /// Frames reported lost (all reasons).
    pub frames_lost: u64,
    /// Sequence numbers of discarded reservations (not lost), published as `discarded`.
    pub frames_discarded: u64,
    /// Times the NATS connection was rebuilt.
    pub nats_reconnects: u64,
    /// Times the Subscribe stream was opened again.
    pub sidecar_resubscribes: u64,
    /// Records still unacknowledged at exit (they are published again at the next start).
    pub left_in_flight: u64,
}

/// Why a NATS connection is given up.
#[derive(Debug)]
enum Failure {
    Disconnected,
    Send(String),
    AckTimeout,
    Rejected(String),
    Unavailable(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Disconnected => write!(f, "the connection to NATS was lost"),
            Failure::Send(e) => write!(f, "publishing failed: {e}"),
            Failure::AckTimeout => write!(f, "no acknowledgement within --ack-timeout"),
            Failure::Rejected(e) => write!(f, "JetStream refused a record: {e}"),
            Failure::Unavailable(e) => write!(f, "JetStream did not answer: {e}"),
        }
    }
}

/// A live NATS connection.
struct Session {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    disconnected: Arc<Notify>,
    /// The subscription that answers for this exporter on the prefix's presence
    /// subject ([`crate::presence`]), once announced.
    presence: Option<Presence>,
}

impl Session {
    async fn open(cfg: &ExportConfig) -> Result<Session, ExportError> {
        let disconnected = Arc::new(Notify::new());
        let client = crate::nats::connect(
            &cfg.nats,
            &ClientTuning {
                client_capacity: 256,
                subscription_capacity: 1024,
                max_reconnects: Some(1),
                disconnected: Some(Arc::clone(&disconnected)),
            },
        )
        .await?;
        let js = jetstream::context::ContextBuilder::new()
            .timeout(cfg.ack_timeout)
            .max_ack_inflight(cfg.max_inflight_messages + 64)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let (stream, created) = stream::open(
            &js,
            &cfg.stream,
            cfg.subjects.all(),
            cfg.create_stream.as_ref(),
        )
        .await?;
        if created {
            tracing::info!(stream = %cfg.stream, subjects = %cfg.subjects.all(), "created the stream");
        }
        Ok(Session {
            client,
            js,
            stream,
            disconnected,
            presence: None,
        })
    }

    /// Subscribes to the prefix's presence subject, so that another exporter
    /// starting on the prefix waits for this one.
    async fn announce(&mut self, cfg: &ExportConfig) -> Result<(), ExportError> {
        self.presence = Some(
            Presence::announce(&self.client, cfg.subjects.prefix())
                .await
                .map_err(ExportError::Presence)?,
        );
        Ok(())
    }

    async fn publish(
        &self,
        rec: &OutRecord,
        resume: Option<(u64, u64)>,
    ) -> Result<AckFuture, Failure> {
        let fut = self
            .js
            .publish_with_headers(
                rec.subject.clone(),
                rec.headers(resume),
                rec.payload.clone(),
            )
            .await
            .map_err(|e| Failure::Send(crate::error_chain(&e)))?;
        Ok(Box::pin(fut.into_future()))
    }
}

/// Doubling pause between retries.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Backoff {
        Backoff {
            next: Duration::from_millis(100),
            max: max.max(Duration::from_millis(100)),
        }
    }

    fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
}

/// Sidecar state the lag task reads once a second.
#[derive(Debug, Default)]
struct SidecarPosition {
    ring_id: AtomicU64,
    next_seq: AtomicU64,
}

struct Run {
    cfg: ExportConfig,
    sidecar: SidecarClient,
    session: Option<Session>,
    window: Window,
    pending: VecDeque<OutRecord>,
    sub: Option<tonic::Streaming<v1::Batch>>,
    resubscribe_at: Option<tokio::time::Instant>,
    sidecar_backoff: Backoff,
    /// (ring, next seq) after the last batch read from the sidecar.
    read: Option<(u64, u64)>,
    /// The ring the current subscription was opened for (checked on its first batch).
    expect_ring: Option<u64>,
    /// (ring, next seq) after the newest acknowledged record.
    acked: Option<(u64, u64)>,
    /// What the stream holds of the ring: the resume point written on every record.
    coverage: Coverage,
    /// Records of the prefix up to this stream sequence have been accounted for.
    scan_from: u64,
    max_message: usize,
    stop: watch::Receiver<bool>,
    metrics: ExportMetrics,
    summary: ExportSummary,
    position: Arc<SidecarPosition>,
    progress: Progress,
}

/// Runs the exporter until `shutdown` resolves (then drains the window for at
/// most `drain_timeout`) or a start-up check fails. Failures after start
/// (NATS or the sidecar away) are retried for as long as it runs.
pub async fn export(
    cfg: ExportConfig,
    sidecar: SidecarClient,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ExportSummary, ExportError> {
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut run = Run::start(cfg, sidecar, stop).await?;
    run.main_loop().await;
    run.drain().await;
    run.summary.left_in_flight = run.window.len() as u64;
    if run.cfg.progress_interval.is_some() {
        eprintln!("{}", run.final_line());
    }
    Ok(run.summary.clone())
}

impl Run {
    async fn start(
        cfg: ExportConfig,
        sidecar: SidecarClient,
        stop: watch::Receiver<bool>,
    ) -> Result<Run, ExportError> {
        if let Some(addr) = cfg.metrics_listen {
            crate::metrics::install(addr)?;
        }
        let metrics = ExportMetrics::register();
        let budget = crate::budget::Budget::compute(&cfg);
        metrics.budget(
            budget.total(),
            cfg.memory_limit.as_ref().map_or(0, |l| l.bytes),
        );
        let info = sidecar.info().await.map_err(|s| ExportError::Sidecar {
            endpoint: sidecar.endpoint().into(),
            what: "did not answer Info",
            code: s.code(),
            message: s.message().into(),
        })?;
        let max_record = cfg.max_record_bytes(u64::from(info.max_payload_bytes));
        if max_record > cfg.max_inflight_bytes {
            return Err(ExportError::Config(format!(
                "--max-inflight-bytes {} is smaller than the largest message the exporter may publish ({}: the ring's max payload {} or --read-batch with --batch, plus subject and headers); raise it",
                crate::human_bytes(cfg.max_inflight_bytes),
                crate::human_bytes(max_record),
                crate::human_bytes(u64::from(info.max_payload_bytes)),
            )));
        }
        let mut session = Session::open(&cfg).await?;
        // Nothing of an earlier exporter of this prefix may still be on its way into
        // the stream when this one reads where to resume (crate::presence).
        presence::wait_until_free(
            &session.client,
            cfg.subjects.prefix(),
            cfg.takeover_wait,
            |holder| {
                tracing::warn!(
                    "{} is still held, {holder}; waiting up to --takeover-wait {} for it to go",
                    presence::subject(cfg.subjects.prefix()),
                    humantime::format_duration(cfg.takeover_wait)
                );
            },
        )
        .await
        .map_err(|e| match e {
            presence::WaitError::Taken(t) => ExportError::PrefixTaken(t),
            presence::WaitError::Request(r) => ExportError::Presence(r),
        })?;
        session.announce(&cfg).await?;
        let server_max = session.client.server_info().max_payload as u64;
        if server_max > 0 && server_max < max_record {
            return Err(ExportError::Config(format!(
                "the NATS server accepts messages of at most {} (max_payload) but the exporter may publish {}; raise max_payload in the server's configuration{}",
                crate::human_bytes(server_max),
                crate::human_bytes(max_record),
                if cfg.batch {
                    " or lower --read-batch"
                } else {
                    " or lower the sidecar's --max-frame"
                }
            )));
        }
        let mut stream_handle = session.stream.clone();
        let stream_info = stream_handle
            .info()
            .await
            .map_err(|e| StreamError::Request {
                what: "reading the configuration",
                stream: cfg.stream.clone(),
                reason: crate::error_chain(&e),
            })?
            .clone();
        let req = Requirements {
            subjects: cfg.subjects.all().to_string(),
            max_message_bytes: max_record,
            min_bytes: cfg.min_stream_bytes.unwrap_or(info.ring_capacity_bytes),
            min_duplicate_window: cfg.ack_timeout * 2,
        };
        for w in stream::check(&stream_info.config, &req)? {
            tracing::warn!("{w}");
        }
        let last = resume::last_record(&session.stream, &cfg.subjects).await?;
        let scan_from = last.map_or(stream_info.state.last_sequence, |l| l.stream_seq);
        let mut coverage = Coverage::new(stream_info.state.last_sequence);
        let start = match last {
            Some(l) if l.ring_id == info.ring_id => {
                let how = match l.resume {
                    Some((w, after)) => {
                        // The last record is not necessarily the highest: read what was
                        // stored after its resume point and skip it (crate::coverage).
                        let cap = cfg.max_inflight_messages.saturating_mul(2) + 1024;
                        let tail = resume::tail_after(
                            &session.stream,
                            &cfg.subjects,
                            l.ring_id,
                            w,
                            after,
                            cap,
                        )
                        .await?;
                        coverage.saw_stream_seq(tail.last_stream_seq);
                        // Retention may have removed records stored after `after`.
                        let trimmed = stream_info.state.first_sequence > after.saturating_add(1);
                        if tail.truncated || trimmed {
                            let highest = tail
                                .stored
                                .iter()
                                .map(|r| r.1)
                                .max()
                                .unwrap_or(l.next)
                                .max(l.next);
                            let why = if trimmed {
                                format!(
                                    "the stream no longer holds every record stored after stream sequence {after} (its first is {}: retention removed some)",
                                    stream_info.state.first_sequence
                                )
                            } else {
                                format!(
                                    "more than {cap} records of the ring are stored after stream sequence {after} (was the previous exporter's --max-inflight larger?)"
                                )
                            };
                            tracing::warn!(
                                "{why}; resuming after the highest record seen, at {highest}: a sequence number an earlier exporter left unpublished below it stays a gap (readers report it as unreported)"
                            );
                            coverage.begin(l.ring_id, highest, &[]);
                        } else {
                            coverage.begin(l.ring_id, w, &tail.stored);
                        }
                        "its resume point"
                    }
                    None => {
                        coverage.begin(l.ring_id, l.next, &[]);
                        "its range (it has no resume point: an earlier exporter version wrote it)"
                    }
                };
                tracing::info!(
                    ring_id = %record::ring_hex(l.ring_id),
                    seq = coverage.settled(),
                    stream_seq = l.stream_seq,
                    stored_above = coverage.island_frames(),
                    "resuming after the last record of {} in stream {}, from {how}",
                    cfg.subjects.all(),
                    cfg.stream
                );
                v1::subscribe_request::Start::Sequence(coverage.settled())
            }
            Some(l) => {
                tracing::warn!(
                    old_ring = %record::ring_hex(l.ring_id),
                    new_ring = %record::ring_hex(info.ring_id),
                    old_next = l.next,
                    "the stream's last record belongs to another ring (the sidecar's ring was replaced); frames of the old ring after its last record are not in the stream. Starting the new ring from --from"
                );
                cfg.from
            }
            None => {
                tracing::info!(
                    "stream {} holds no record under {}; starting from --from",
                    cfg.stream,
                    cfg.subjects.all()
                );
                cfg.from
            }
        };
        let max_message = usize::try_from(cfg.read_batch_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(64 << 10);
        let position = Arc::new(SidecarPosition::default());
        spawn_position_poller(sidecar.clone(), Arc::clone(&position));
        let mut run = Run {
            window: Window::new(cfg.max_inflight_messages, cfg.max_inflight_bytes),
            pending: VecDeque::with_capacity(cfg.read_batch_frames.max(1) as usize + 16),
            sidecar_backoff: Backoff::new(cfg.retry_max),
            progress: Progress::new(),
            sidecar,
            session: Some(session),
            sub: None,
            resubscribe_at: None,
            read: None,
            expect_ring: None,
            acked: coverage.ring().map(|r| (r, coverage.settled())),
            coverage,
            scan_from,
            max_message,
            stop,
            metrics,
            summary: ExportSummary::default(),
            position,
            cfg,
        };
        let sub = run
            .sidecar
            .subscribe(run.subscribe_request(start), run.max_message)
            .await
            .map_err(|s| ExportError::Sidecar {
                endpoint: run.sidecar.endpoint().into(),
                what: "refused Subscribe",
                code: s.code(),
                message: s.message().into(),
            })?;
        run.sub = Some(sub);
        run.expect_ring = Some(info.ring_id);
        // Until the first batch, a new subscription starts where this one did.
        run.read = match start {
            v1::subscribe_request::Start::Sequence(s) => Some((info.ring_id, s)),
            _ => None,
        };
        tracing::info!(
            stream = %run.cfg.stream,
            subjects = %run.cfg.subjects.all(),
            mode = if run.cfg.batch { "batch" } else { "frame" },
            "exporting"
        );
        Ok(run)
    }

    fn subscribe_request(&self, start: v1::subscribe_request::Start) -> v1::SubscribeRequest {
        v1::SubscribeRequest {
            start: Some(start),
            topics: Vec::new(),
            topic_prefixes: Vec::new(),
            max_batch_frames: self.cfg.read_batch_frames,
            max_batch_bytes: self.cfg.read_batch_bytes,
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps `d`, or returns false at once when asked to stop.
    async fn pause(&mut self, d: Duration) -> bool {
        if self.stopping() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.stop.changed() => false,
        }
    }

    async fn main_loop(&mut self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut progress_every = self.cfg.progress_interval.map(|d| {
            let mut t = tokio::time::interval(d);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            t
        });
        loop {
            if self.stopping() {
                return;
            }
            if let Err(f) = self.publish_pending().await {
                if !self.recover(f).await {
                    return;
                }
                continue;
            }
            let can_read = self.pending.is_empty() && self.sub.is_some();
            let waiting = self.window.front_waiting();
            let mut failure = None;
            let disconnected = self.session.as_ref().map(|s| Arc::clone(&s.disconnected));
            tokio::select! {
                biased;
                _ = self.stop.changed() => return,
                _ = async { match &disconnected { Some(n) => n.notified().await, None => std::future::pending().await } } => {
                    failure = Some(Failure::Disconnected);
                }
                r = self.window.front_ack(), if waiting => {
                    failure = self.on_ack(r);
                }
                m = async { match self.sub.as_mut() { Some(s) => s.message().await, None => std::future::pending().await } }, if can_read => {
                    match m {
                        Ok(Some(b)) => self.take_batch(b),
                        Ok(None) => self.lost_sidecar("the Subscribe stream ended".into()),
                        Err(s) => self.lost_sidecar(format!("{:?}: {}", s.code(), s.message())),
                    }
                }
                _ = sleep_until_opt(self.resubscribe_at), if self.sub.is_none() => {
                    self.resubscribe().await;
                }
                _ = tick.tick() => self.update_gauges(),
                _ = async { match progress_every.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } } => {
                    let line = self.progress.line(&self.summary, &self.window, self.lag_frames(), self.session.is_some());
                    eprintln!("{line}");
                }
            }
            if let Some(f) = failure
                && !self.recover(f).await
            {
                return;
            }
        }
    }

    /// Publishes pending records while the window has room.
    async fn publish_pending(&mut self) -> Result<(), Failure> {
        while let Some(front) = self.pending.front() {
            if !self.window.has_room(front.size) {
                return Ok(());
            }
            let Some(rec) = self.pending.pop_front() else {
                return Ok(());
            };
            let bound = self.coverage.known_max();
            let Some(session) = self.session.as_ref() else {
                self.window.push(Entry {
                    rec,
                    ack: None,
                    rejections: 0,
                    bound,
                });
                return Err(Failure::Send("not connected".into()));
            };
            let resume = self.coverage.resume_point(
                rec.ring_id,
                Some(self.window.oldest_bound().unwrap_or(bound)),
            );
            let res = session.publish(&rec, resume).await;
            self.metrics.published(rec.frames);
            match res {
                Ok(ack) => self.window.push(Entry {
                    rec,
                    ack: Some(ack),
                    rejections: 0,
                    bound,
                }),
                Err(f) => {
                    self.window.push(Entry {
                        rec,
                        ack: None,
                        rejections: 0,
                        bound,
                    });
                    return Err(f);
                }
            }
        }
        Ok(())
    }

    fn on_ack(
        &mut self,
        r: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    ) -> Option<Failure> {
        use jetstream::context::PublishErrorKind as K;
        match r {
            Ok(ack) => {
                if let Some(e) = self.window.pop_front() {
                    self.stored(&e.rec, ack.duplicate);
                    self.coverage
                        .stored(e.rec.ring_id, e.rec.first, e.rec.next, ack.sequence);
                    self.scan_from = self.scan_from.max(ack.sequence);
                }
                None
            }
            Err(e) => Some(match e.kind() {
                K::TimedOut => Failure::AckTimeout,
                K::StreamNotFound => Failure::Unavailable(crate::error_chain(&e)),
                K::BrokenPipe => Failure::Disconnected,
                _ => {
                    if let Some(front) = self.window.iter_mut().next() {
                        front.rejections += 1;
                    }
                    Failure::Rejected(crate::error_chain(&e))
                }
            }),
        }
    }

    fn stored(&mut self, rec: &OutRecord, duplicate: bool) {
        self.summary.records_acked += 1;
        self.summary.frames_acked += rec.frames;
        if duplicate {
            self.summary.deduplicated += 1;
        }
        self.metrics.acked(rec.frames, duplicate);
        self.acked = Some((rec.ring_id, rec.next));
    }

    fn take_batch(&mut self, b: v1::Batch) {
        if let Some(expected) = self.expect_ring.take()
            && expected != b.ring_id
        {
            // The ring was replaced between Info and Subscribe: the start
            // sequence meant another ring. Subscribe again.
            return self.lost_sidecar("the ring changed while subscribing".into());
        }
        self.sidecar_backoff = Backoff::new(self.cfg.retry_max);
        if let Some((ring, _)) = self.read
            && ring != b.ring_id
        {
            tracing::warn!(
                old_ring = %record::ring_hex(ring),
                new_ring = %record::ring_hex(b.ring_id),
                "the sidecar's ring was replaced; sequences restart"
            );
        }
        let ring = b.ring_id;
        let next = b
            .frames
            .last()
            .map_or(b.resume_seq, |f| f.seq.saturating_add(1));
        let read_to = b.resume_seq.max(next);
        let from = b
            .frames
            .first()
            .map(|f| f.seq)
            .into_iter()
            .chain(b.losses.iter().map(|l| l.first_seq))
            .fold(b.from_seq, u64::min);
        // Parts of the batch the stream already holds (stored above where this exporter
        // resumed, by an exporter killed before it filled a hole below them) are cut
        // out instead of published again (crate::coverage).
        self.coverage.follow(ring, from);
        let cut = self.coverage.overlaps(ring, from, read_to);
        // Discarded reservations are not losses, and the sidecar only counts them; the
        // exporter subscribes without a filter, so they are exactly the sequence numbers of
        // [from_seq, resume_seq) that neither a frame nor a loss covers. Publish their
        // ranges on `_loss` with reason `discarded`, so that a reader of the stream alone
        // accounts for every sequence number.
        if b.discarded > 0 {
            for (first_seq, frames) in uncovered(&b) {
                self.push_loss(ring, record::REASON_DISCARDED, first_seq, frames, cut);
            }
        }
        for l in &b.losses {
            self.push_loss(ring, l.reason, l.first_seq, l.frames, cut);
        }
        if self.cfg.batch {
            let subject = self.cfg.subjects.batch().to_string();
            if cut {
                let mut frames = b.frames.into_iter().peekable();
                for (first, end) in self.coverage.pieces(from, read_to) {
                    let mut part = Vec::new();
                    while let Some(f) = frames.next_if(|f| f.seq < end) {
                        if f.seq >= first {
                            part.push(f);
                        }
                    }
                    if let Some(last) = part.last() {
                        let next = last.seq.saturating_add(1);
                        self.pending
                            .push_back(OutRecord::batch(ring, subject.clone(), part, next));
                    }
                }
            } else if !b.frames.is_empty() {
                self.pending
                    .push_back(OutRecord::batch(ring, subject, b.frames, next));
            }
        } else {
            for f in &b.frames {
                if cut && self.coverage.contains(ring, f.seq) {
                    continue;
                }
                self.pending.push_back(OutRecord::frame(
                    ring,
                    self.cfg.subjects.frame(&f.topic),
                    f,
                ));
            }
        }
        // Publish in sequence order (by the sequence after each record): losses and
        // discards may lie before, between or after the frames, and the stream's last
        // record should be the one that reaches furthest.
        self.pending.make_contiguous().sort_by_key(|r| r.next);
        self.read = Some((ring, read_to));
    }

    /// Queues a loss (or discard) record for `[first_seq, first_seq + frames)`, without
    /// the parts the stream already holds when `cut`.
    fn push_loss(&mut self, ring: u64, reason: i32, first_seq: u64, frames: u64, cut: bool) {
        if !cut {
            return self.push_loss_piece(ring, reason, first_seq, frames);
        }
        for (first, end) in self
            .coverage
            .pieces(first_seq, first_seq.saturating_add(frames))
        {
            self.push_loss_piece(ring, reason, first, end - first);
        }
    }

    fn push_loss_piece(&mut self, ring: u64, reason: i32, first_seq: u64, frames: u64) {
        if reason == record::REASON_DISCARDED {
            self.summary.frames_discarded += frames;
        } else {
            self.count_loss(reason, frames);
        }
        self.pending.push_back(OutRecord::loss(
            ring,
            self.cfg.subjects.loss().to_string(),
            &v1::Loss {
                reason,
                frames,
                first_seq,
            },
        ));
    }

    fn count_loss(&mut self, reason: i32, frames: u64) {
        self.summary.frames_lost += frames;
        self.metrics.lost(reason, frames);
        self.progress.count_loss(reason, frames);
    }

    fn lost_sidecar(&mut self, why: String) {
        let d = self.sidecar_backoff.step();
        tracing::warn!(
            endpoint = %self.sidecar.endpoint(),
            "lost the sidecar's Subscribe stream ({why}); subscribing again in {d:?}"
        );
        self.sub = None;
        self.resubscribe_at = Some(tokio::time::Instant::now() + d);
    }

    async fn resubscribe(&mut self) {
        self.resubscribe_at = None;
        self.summary.sidecar_resubscribes += 1;
        self.metrics.sidecar_resubscribe();
        let info = match self.sidecar.info().await {
            Ok(i) => i,
            Err(s) => return self.lost_sidecar(format!("Info: {:?}: {}", s.code(), s.message())),
        };
        let start = match self.read {
            Some((ring, next)) if ring == info.ring_id => {
                v1::subscribe_request::Start::Sequence(next)
            }
            Some((ring, _)) => {
                tracing::warn!(
                    old_ring = %record::ring_hex(ring),
                    new_ring = %record::ring_hex(info.ring_id),
                    "the sidecar came back with a new ring; frames of the old ring not yet read are lost with it. Starting the new ring from --from"
                );
                self.cfg.from
            }
            None => self.cfg.from,
        };
        match self
            .sidecar
            .subscribe(self.subscribe_request(start), self.max_message)
            .await
        {
            Ok(s) => {
                self.expect_ring = Some(info.ring_id);
                tracing::info!(endpoint = %self.sidecar.endpoint(), "subscribed to the sidecar again");
                self.sub = Some(s);
            }
            Err(s) => self.lost_sidecar(format!("Subscribe: {:?}: {}", s.code(), s.message())),
        }
    }

    /// Rebuilds the NATS connection after `why`, finds out which records in
    /// flight the stream holds, and publishes the others again, in order.
    /// Returns false when asked to stop meanwhile.
    async fn recover(&mut self, why: Failure) -> bool {
        tracing::warn!(
            in_flight = self.window.len(),
            "{why}; reconnecting to NATS, then checking the records in flight against the stream"
        );
        self.session = None;
        for e in self.window.iter_mut() {
            e.ack = None;
        }
        self.summary.nats_reconnects += 1;
        self.metrics.nats_reconnect();
        let mut backoff = Backoff::new(self.cfg.retry_max);
        let mut last_error = String::new();
        loop {
            if !self.pause(backoff.step()).await {
                return false;
            }
            match self.restore().await {
                Ok(()) => {
                    tracing::info!(republished_in_flight = self.window.len(), "NATS is back");
                    return true;
                }
                Err(e) => {
                    if e != last_error {
                        tracing::warn!("NATS is still unusable: {e}; retrying");
                        last_error = e;
                    }
                }
            }
        }
    }

    async fn restore(&mut self) -> Result<(), String> {
        let mut session = Session::open(&self.cfg).await.map_err(|e| e.to_string())?;
        session
            .announce(&self.cfg)
            .await
            .map_err(|e| e.to_string())?;
        if !self.window.is_empty() {
            let cap = self.cfg.max_inflight_messages.saturating_mul(2) + 1024;
            let found =
                resume::stored_after(&session.stream, &self.cfg.subjects, self.scan_from, cap)
                    .await
                    .map_err(|e| e.to_string())?;
            if found.truncated {
                tracing::warn!(
                    "more than {cap} records under {} were stored since the last acknowledgement; publishing every record in flight again and relying on JetStream's deduplication",
                    self.cfg.subjects.all()
                );
            } else {
                let mut confirmed = Vec::new();
                self.window.retain(|e| {
                    let key = (e.rec.kind, e.rec.ring_id, e.rec.first, e.rec.next);
                    let stored_at = found.records.get(&key).filter(|_| e.rejections == 0);
                    if let Some(&seq) = stored_at {
                        confirmed.push((e.rec.ring_id, e.rec.first, e.rec.next, e.rec.frames, seq));
                    }
                    stored_at.is_none()
                });
                for (ring, first, next, frames, seq) in confirmed {
                    self.summary.records_acked += 1;
                    self.summary.frames_acked += frames;
                    self.summary.confirmed_by_reading_back += 1;
                    self.metrics.acked(frames, false);
                    self.acked = Some((ring, next));
                    self.coverage.stored(ring, first, next, seq);
                }
                self.coverage.saw_stream_seq(found.last_stream_seq);
                self.scan_from = self.scan_from.max(found.last_stream_seq);
            }
        }
        // Records refused twice become losses with reason `rejected`.
        let mut newly_rejected = Vec::new();
        let loss_subject = self.cfg.subjects.loss().to_string();
        self.window.replace_where(
            |e| e.rejections >= 2 && e.rec.kind != Kind::Loss,
            |e| {
                let frames = e.rec.lost();
                newly_rejected.push(frames);
                OutRecord::loss(
                    e.rec.ring_id,
                    loss_subject.clone(),
                    &v1::Loss {
                        reason: record::REASON_REJECTED,
                        frames,
                        first_seq: e.rec.first,
                    },
                )
            },
        );
        for frames in newly_rejected {
            tracing::error!(
                frames,
                "JetStream refused a record twice; publishing it as a loss (reason rejected)"
            );
            self.count_loss(record::REASON_REJECTED, frames);
        }
        let oldest_bound = self.window.oldest_bound();
        for e in self.window.iter_mut() {
            let resume = self.coverage.resume_point(e.rec.ring_id, oldest_bound);
            e.ack = Some(
                session
                    .publish(&e.rec, resume)
                    .await
                    .map_err(|f| f.to_string())?,
            );
            self.summary.republished += 1;
            self.metrics.republished();
        }
        self.session = Some(session);
        Ok(())
    }

    /// After SIGTERM: waits for the records in flight, for at most `--drain-timeout`.
    async fn drain(&mut self) {
        let deadline = tokio::time::Instant::now() + self.cfg.drain_timeout;
        self.sub = None;
        while self.session.is_some() && self.window.front_waiting() {
            tokio::select! {
                r = self.window.front_ack() => {
                    if let Some(f) = self.on_ack(r) {
                        tracing::warn!("{f}; exiting with {} records unacknowledged (the next start checks them)", self.window.len());
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!("--drain-timeout passed with {} records unacknowledged (the next start checks them)", self.window.len());
                    return;
                }
            }
        }
    }

    fn lag_frames(&self) -> Option<u64> {
        let ring = self.position.ring_id.load(Ordering::Relaxed);
        let next = self.position.next_seq.load(Ordering::Relaxed);
        match self.acked.or(self.read) {
            Some((r, n)) if r == ring => Some(next.saturating_sub(n)),
            _ => None,
        }
    }

    fn update_gauges(&mut self) {
        self.metrics.in_flight(
            self.window.len() as u64,
            self.window.bytes(),
            self.lag_frames(),
        );
    }

    fn final_line(&self) -> String {
        let s = &self.summary;
        format!(
            "export: done: acked {} records ({} frames), deduplicated {}, confirmed by reading back {}, republished {}, lost {} frames, discarded reservations {}, NATS reconnects {}, sidecar resubscribes {}, left in flight {}",
            s.records_acked,
            s.frames_acked,
            s.deduplicated,
            s.confirmed_by_reading_back,
            s.republished,
            s.frames_lost,
            s.frames_discarded,
            s.nats_reconnects,
            s.sidecar_resubscribes,
            s.left_in_flight
        )
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn spawn_position_poller(sidecar: SidecarClient, position: Arc<SidecarPosition>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            if let Ok(info) = sidecar.info().await {
                position.ring_id.store(info.ring_id, Ordering::Relaxed);
                position.next_seq.store(info.next_seq, Ordering::Relaxed);
            }
        }
    });
}

/// The progress line on stderr.
struct Progress {
    since: Instant,
    frames_at: u64,
    lost_by_reason: Vec<(i32, u64)>,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            since: Instant::now(),
            frames_at: 0,
            lost_by_reason: Vec::new(),
        }
    }

    /// Adds to the per-reason totals (at most 16 reasons are listed).
    fn count_loss(&mut self, reason: i32, frames: u64) {
        if let Some((_, n)) = self.lost_by_reason.iter_mut().find(|(r, _)| *r == reason) {
            *n += frames;
        } else if self.lost_by_reason.len() < 16 {
            self.lost_by_reason.push((reason, frames));
        }
    }

    fn line(&mut self, s: &ExportSummary, w: &Window, lag: Option<u64>, nats_up: bool) -> String {
        let dt = self.since.elapsed().as_secs_f64().max(1e-9);
        let rate = (s.frames_acked - self.frames_at) as f64 / dt;
        self.since = Instant::now();
        self.frames_at = s.frames_acked;
        let reasons: Vec<String> = self
            .lost_by_reason
            .iter()
            .map(|(r, n)| format!("{} {n}", record::reason_name(*r)))
            .collect();
        format!(
            "export: {rate:>9.0} frames/s into the stream, acked {} frames in {} records (deduplicated {}), in flight {} records {}, lost {}{}, lag {}, NATS {}",
            s.frames_acked,
            s.records_acked,
            s.deduplicated,
            w.len(),
            crate::human_bytes(w.bytes()),
            s.frames_lost,
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", reasons.join(", "))
            },
            lag.map_or_else(|| "-".to_string(), |l| format!("{l} frames")),
            if nats_up { "up" } else { "away" }
        )
    }
}

/// The runs of sequence numbers in `[from_seq, resume_seq)` of a batch that none of its
/// frames or losses cover, as `(first_seq, count)`, in order.
fn uncovered(b: &v1::Batch) -> Vec<(u64, u64)> {
    let mut covered: Vec<(u64, u64)> = b
        .frames
        .iter()
        .map(|f| (f.seq, f.seq.saturating_add(1)))
        .chain(
            b.losses
                .iter()
                .map(|l| (l.first_seq, l.first_seq.saturating_add(l.frames))),
        )
        .collect();
    covered.sort_unstable();
    let mut gaps = Vec::new();
    let mut at = b.from_seq;
    for (first, next) in covered {
        if first > at {
            gaps.push((at, first.min(b.resume_seq) - at));
        }
        at = at.max(next);
    }
    if b.resume_seq > at {
        gaps.push((at, b.resume_seq - at));
    }
    gaps.retain(|&(_, n)| n > 0);
    gaps
}

#[cfg(test)]
mod uncovered_tests {
    use super::*;

    fn frame(seq: u64) -> v1::Frame {
        v1::Frame {
            seq,
            ..Default::default()
        }
    }

    #[test]
    fn discards_are_the_runs_no_frame_or_loss_covers() {
        let b = v1::Batch {
            from_seq: 10,
            resume_seq: 20,
            frames: vec![frame(10), frame(12), frame(13), frame(19)],
            losses: vec![v1::Loss {
                reason: 1,
                frames: 3,
                first_seq: 15,
            }],
            discarded: 3,
            ..Default::default()
        };
        assert_eq!(uncovered(&b), vec![(11, 1), (14, 1), (18, 1)]);
        let tail_gap = v1::Batch {
            from_seq: 5,
            resume_seq: 9,
            frames: vec![frame(5)],
            discarded: 3,
            ..Default::default()
        };
        assert_eq!(uncovered(&tail_gap), vec![(6, 3)]);
    }
}
