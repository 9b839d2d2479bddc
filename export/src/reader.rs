//! Reading an exporter's records back from JetStream as `ringside.v1.Batch`
//! messages, with the same accounting as a gRPC subscriber: every sequence
//! number arrives once, as a frame or inside a loss (`ringside tail --nats-url`).

use crate::accounting::{Accounting, Outcome};
use crate::nats::{ClientTuning, NatsError, NatsOptions};
use crate::record::{self, Record};
use crate::subject::Subjects;
use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, pull},
};
use ringside_proto::v1;
use std::collections::VecDeque;
use std::time::Duration;
use thiserror::Error;
use tokio_stream::StreamExt as _;

/// What to read.
#[derive(Debug, Clone)]
pub struct ReaderConfig {
    /// NATS connection.
    pub nats: NatsOptions,
    /// Stream name.
    pub stream: String,
    /// The exporter's subjects.
    pub subjects: Subjects,
    /// Where to start: earliest, latest, a ring sequence (records below it are
    /// skipped), or a time (the stream's arrival time of the records).
    pub start: v1::subscribe_request::Start,
    /// Deliver only frames of these topics (with `prefixes`; both empty: all).
    pub topics: Vec<String>,
    /// Deliver only frames whose topic starts with one of these.
    pub prefixes: Vec<String>,
    /// Stream messages after which an unexplained gap is reported.
    pub hole_horizon: u64,
}

impl ReaderConfig {
    /// Reads everything from the earliest record.
    pub fn new(nats: NatsOptions, stream: impl Into<String>, subjects: Subjects) -> ReaderConfig {
        ReaderConfig {
            nats,
            stream: stream.into(),
            subjects,
            start: v1::subscribe_request::Start::Earliest(true),
            topics: Vec::new(),
            prefixes: Vec::new(),
            hole_horizon: 100_000,
        }
    }
}

/// Reading failed.
#[derive(Debug, Error)]
pub enum ReaderError {
    /// Connecting failed.
    #[error(transparent)]
    Nats(#[from] NatsError),
    /// The stream is missing or does not capture the prefix.
    #[error(transparent)]
    Stream(#[from] crate::stream::StreamError),
    /// A JetStream request failed.
    #[error("{what}: {reason}")]
    Request {
        /// What.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// Counts kept while reading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Stream messages read.
    pub messages: u64,
    /// Sequence numbers seen again and dropped.
    pub duplicates: u64,
    /// Sequence numbers that arrived after later ones.
    pub late: u64,
    /// Sequence numbers no record accounted for (reported as `unreported` losses).
    pub unreported: u64,
    /// Messages under the prefix that are not ringside records (skipped).
    pub foreign: u64,
}

/// A reader of one exporter's records.
pub struct StreamReader {
    cfg: ReaderConfig,
    stream: jetstream::stream::Stream,
    messages: Option<pull::Stream>,
    max_batch_bytes: usize,
    last_stream_seq: u64,
    skip_below: Option<u64>,
    accounting: Accounting,
    outcome: Outcome,
    ready: VecDeque<v1::Batch>,
    stats: ReaderStats,
    _client: async_nats::Client,
}

impl std::fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamReader")
            .field("stream", &self.cfg.stream)
            .field("prefix", &self.cfg.subjects.prefix())
            .field("last_stream_seq", &self.last_stream_seq)
            .field("stats", &self.stats)
            .finish()
    }
}

fn req(what: &'static str) -> impl Fn(&dyn std::error::Error) -> ReaderError {
    move |e| ReaderError::Request {
        what,
        reason: crate::error_chain(e),
    }
}

impl StreamReader {
    /// Connects, checks that the stream captures the prefix, and starts a consumer.
    pub async fn open(cfg: ReaderConfig) -> Result<StreamReader, ReaderError> {
        let client = crate::nats::connect(
            &cfg.nats,
            &ClientTuning {
                client_capacity: 256,
                subscription_capacity: 1024,
                max_reconnects: None,
                disconnected: None,
            },
        )
        .await?;
        let js = jetstream::new(client.clone());
        let (mut stream, _) =
            crate::stream::open(&js, &cfg.stream, cfg.subjects.all(), None).await?;
        let info = stream
            .info()
            .await
            .map_err(|e| req("reading the stream's configuration")(&e))?;
        if !info
            .config
            .subjects
            .iter()
            .any(|f| crate::subject::filter_covers(f, cfg.subjects.all()))
        {
            return Err(crate::stream::StreamError::Subjects {
                stream: cfg.stream.clone(),
                have: info.config.subjects.join(", "),
                need: cfg.subjects.all().to_string(),
            }
            .into());
        }
        // A pull asks for at most this many bytes; it must fit the largest message.
        let server_max = client.server_info().max_payload.max(1 << 20);
        let skip_below = match cfg.start {
            v1::subscribe_request::Start::Sequence(s) => Some(s),
            _ => None,
        };
        let mut r = StreamReader {
            accounting: Accounting::new(cfg.hole_horizon),
            cfg,
            stream,
            messages: None,
            max_batch_bytes: server_max * 2,
            last_stream_seq: 0,
            skip_below,
            outcome: Outcome::default(),
            ready: VecDeque::with_capacity(4),
            stats: ReaderStats::default(),
            _client: client,
        };
        r.messages = Some(r.consumer(r.first_policy()).await?);
        Ok(r)
    }

    fn first_policy(&self) -> DeliverPolicy {
        use v1::subscribe_request::Start;
        match self.cfg.start {
            Start::Latest(_) => DeliverPolicy::New,
            Start::TimestampNs(ns) => {
                let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
                DeliverPolicy::ByStartTime { start_time: t }
            }
            Start::Earliest(_) | Start::Sequence(_) => DeliverPolicy::All,
        }
    }

    async fn consumer(&self, policy: DeliverPolicy) -> Result<pull::Stream, ReaderError> {
        let consumer = self
            .stream
            .create_consumer(pull::Config {
                deliver_policy: policy,
                filter_subject: self.cfg.subjects.all().to_string(),
                ack_policy: AckPolicy::None,
                inactive_threshold: Duration::from_secs(60),
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(|e| req("creating a consumer")(&e))?;
        consumer
            .stream()
            .max_messages_per_batch(256)
            .max_bytes_per_batch(self.max_batch_bytes)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| req("starting to read")(&e))
    }

    /// Counts so far.
    pub fn stats(&self) -> ReaderStats {
        ReaderStats {
            duplicates: self.accounting.duplicates,
            late: self.accounting.late,
            unreported: self.accounting.unreported,
            ..self.stats.clone()
        }
    }

    /// The next batch: frames (filtered) and losses, in the order the stream
    /// holds them, each sequence number once. Waits for new records.
    pub async fn next(&mut self) -> Result<v1::Batch, ReaderError> {
        let mut failures = 0u32;
        loop {
            if let Some(b) = self.ready.pop_front() {
                return Ok(b);
            }
            let item = match self.messages.as_mut() {
                Some(m) => m.next().await,
                None => None,
            };
            match item {
                Some(Ok(msg)) => {
                    failures = 0;
                    self.absorb(&msg);
                }
                other => {
                    // The consumer is gone (server restart) or the pull
                    // failed: start a new one after the last message read.
                    failures += 1;
                    let why = match other {
                        Some(Err(e)) => crate::error_chain(&e),
                        _ => "the consumer's message stream ended".into(),
                    };
                    if failures > 30 {
                        return Err(ReaderError::Request {
                            what: "reading the stream",
                            reason: why,
                        });
                    }
                    self.messages = None;
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(failures.min(10))))
                        .await;
                    let policy = if self.last_stream_seq == 0 {
                        self.first_policy()
                    } else {
                        DeliverPolicy::ByStartSequence {
                            start_sequence: self.last_stream_seq + 1,
                        }
                    };
                    if let Ok(m) = self.consumer(policy).await {
                        self.messages = Some(m);
                    }
                }
            }
        }
    }

    /// Reports the gaps still open as `unreported` losses (call when done).
    pub fn finish(&mut self) -> Vec<v1::Batch> {
        let mut out = Outcome::default();
        self.accounting.finish_into(&mut out);
        self.missing_batches(&out, None);
        self.ready.drain(..).collect()
    }

    fn missing_batches(&mut self, out: &Outcome, resume_seq: Option<u64>) {
        let mut cur: Option<v1::Batch> = None;
        for &(ring, first, frames) in &out.missing {
            if cur.as_ref().is_some_and(|b| b.ring_id != ring) {
                self.ready.extend(cur.take());
            }
            let b = cur.get_or_insert_with(|| v1::Batch {
                ring_id: ring,
                resume_seq: resume_seq.unwrap_or(0),
                ..Default::default()
            });
            b.losses.push(v1::Loss {
                reason: record::REASON_UNREPORTED,
                frames,
                first_seq: first,
            });
            b.resume_seq = b.resume_seq.max(first + frames);
        }
        self.ready.extend(cur);
    }

    fn wanted(&self, topic: &str) -> bool {
        (self.cfg.topics.is_empty() && self.cfg.prefixes.is_empty())
            || self.cfg.topics.iter().any(|t| t == topic)
            || self
                .cfg
                .prefixes
                .iter()
                .any(|p| topic.starts_with(p.as_str()))
    }

    fn absorb(&mut self, msg: &jetstream::Message) {
        self.stats.messages += 1;
        let at = msg
            .info()
            .map_or(self.last_stream_seq + 1, |i| i.stream_sequence);
        self.last_stream_seq = self.last_stream_seq.max(at);
        let subject = msg.subject.as_str();
        let parsed = match self.cfg.subjects.classify(subject) {
            Some(Ok(kind)) => {
                record::parse(subject, kind, msg.headers.as_ref(), msg.payload.clone())
                    .map_err(|e| e.to_string())
            }
            Some(Err(e)) => Err(e.to_string()),
            None => Err(format!("{subject} is not a record subject")),
        };
        let rec = match parsed {
            Ok(r) => r,
            Err(e) => {
                if self.stats.foreign == 0 {
                    eprintln!("ringside: skipping a message that is not a ringside record: {e}");
                }
                self.stats.foreign += 1;
                return;
            }
        };
        let (mut first, next) = rec.range();
        if let Some(s) = self.skip_below {
            if next <= s {
                return;
            }
            first = first.max(s);
        }
        let ring = rec.ring_id();
        let mut out = std::mem::take(&mut self.outcome);
        self.accounting.take(ring, first, next, at, &mut out);
        let resume = self.accounting.position().map_or(next, |(_, n)| n);
        let (earlier, same): (Vec<_>, Vec<_>) = out.missing.iter().partition(|m| m.0 != ring);
        if !earlier.is_empty() {
            let o = Outcome {
                fresh: Vec::new(),
                missing: earlier,
            };
            self.missing_batches(&o, None);
        }
        let mut batch = v1::Batch {
            ring_id: ring,
            frames: Vec::new(),
            losses: same
                .iter()
                .map(|&(_, f, n)| v1::Loss {
                    reason: record::REASON_UNREPORTED,
                    frames: n,
                    first_seq: f,
                })
                .collect(),
            resume_seq: resume,
            from_seq: first,
            filtered: 0,
            discarded: 0,
            filler: Default::default(),
        };
        match rec {
            Record::Frame { frame, .. } => {
                if out.is_fresh(frame.seq) && self.wanted(&frame.topic) {
                    batch.frames.push(frame);
                }
            }
            Record::Loss { loss, .. } if loss.reason == record::REASON_DISCARDED => {
                // Not a loss: counted as the batch's discards, as the sidecar reports them.
                batch.discarded += out.fresh.iter().map(|&(a, b)| b - a).sum::<u64>();
            }
            Record::Loss { loss, .. } => {
                for &(a, b) in &out.fresh {
                    batch.losses.push(v1::Loss {
                        reason: loss.reason,
                        frames: b - a,
                        first_seq: a,
                    });
                }
            }
            Record::Batch { batch: b, .. } => {
                for f in b.frames {
                    if out.is_fresh(f.seq) && self.wanted(&f.topic) {
                        batch.frames.push(f);
                    }
                }
            }
        }
        out.clear();
        self.outcome = out;
        if !batch.frames.is_empty() || !batch.losses.is_empty() || batch.discarded > 0 {
            self.ready.push_back(batch);
        }
    }
}
