//! # ringside-tracing
//!
//! A [`tracing_subscriber::Layer`] that writes each `tracing` event, and each span when it
//! closes (with how long it lived), into ringside's shared-memory ring: one frame per
//! record, on topic `tracing/<target>`, with a compact protobuf payload
//! (`TracingRecord` in `proto/ringside/v1/tracing.proto`) that any frontend can decode and
//! `ringside tail` prints readably.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let socket = dir.path().join("ringside.sock");
//! # // SAFETY: set before any other thread exists in this doctest.
//! # unsafe { std::env::set_var("RINGSIDE_SOCKET", &socket) };
//! # let _sidecar = ringside_ring::RingHost::start(ringside_ring::HostOptions {
//! #     socket_path: socket,
//! #     adopt_grace: std::time::Duration::ZERO,
//! #     ..Default::default()
//! # })?;
//! use tracing_subscriber::layer::SubscriberExt;
//! use tracing_subscriber::util::SubscriberInitExt;
//!
//! tracing_subscriber::registry().with(ringside_tracing::layer()?).init();
//!
//! tracing::info!(user = "ada", attempts = 3, "logged in");   // one frame on tracing/<module>
//! # Ok(())
//! # }
//! ```
//!
//! The layer never blocks and never waits for the sidecar: with no sidecar attached,
//! records are dropped and counted ([`RingsideLayer::stats`]), at the cost of a couple of
//! loads. No tokio. Writing a record does not allocate: its fields are encoded into a
//! bounded per-thread scratch buffer (allocated once per thread), its size is computed
//! before the frame is reserved, and the record is written straight into the reservation in
//! the ring. Records larger than the limit ([`Builder::max_record_bytes`], default 4 KiB)
//! are cut at a character boundary and marked `truncated`. Spans allocate when they open
//! (two small allocations: the span's encoded fields, and its state in the registry's
//! extensions, kept until it closes); events inside them do not.
//!
//! `log` records reach the layer through `tracing`'s log bridge (`tracing_log::LogTracer`,
//! installed by `tracing_subscriber`'s `init()`), with their own target, level and source
//! location.

#![deny(missing_docs)]
#![warn(clippy::missing_errors_doc, clippy::missing_panics_doc)]

mod encode;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ringside_client::{ConnectError, MAX_TOPIC_LEN, Producer, ProducerStats};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use encode::{Fields, Head, Kind, SliceWriter};

/// Topic prefix of the records by default: a record's topic is `tracing/<target>`.
pub const DEFAULT_TOPIC_PREFIX: &str = "tracing/";
/// Default largest record, in bytes.
pub const DEFAULT_MAX_RECORD: usize = 4096;
/// Smallest allowed [`Builder::max_record_bytes`].
pub const MIN_RECORD_LIMIT: usize = 512;
/// Largest allowed [`Builder::max_record_bytes`] (the per-thread scratch buffer's bound).
pub const MAX_RECORD_LIMIT: usize = 64 * 1024;

/// Connects a layer to the sidecar at `$RINGSIDE_SOCKET`, or `/tmp/ringside.sock`, with the
/// default settings: `RingsideLayer::builder().connect()`.
///
/// # Errors
///
/// As [`Builder::connect`].
pub fn layer() -> Result<RingsideLayer, LayerError> {
    RingsideLayer::builder().connect()
}

/// Why a layer could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The sidecar refused the producer, or the socket is not a ringside socket. (No
    /// sidecar at all is not an error: records are dropped and counted until one appears.)
    #[error("ringside-tracing cannot connect: {0}")]
    Connect(#[from] ConnectError),
    /// A fixed topic that is not 1 to 255 bytes.
    #[error(
        "topic {topic:?} is {len} bytes; a topic must be 1 to 255 bytes of UTF-8 (Builder::fixed_topic)"
    )]
    InvalidTopic {
        /// The topic given.
        topic: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A topic prefix that leaves no room for the target.
    #[error(
        "topic prefix {prefix:?} is {len} bytes; it must be shorter than 255 bytes to leave room for the target (Builder::topic_prefix)"
    )]
    PrefixTooLong {
        /// The prefix given.
        prefix: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A record size limit out of range.
    #[error(
        "max record size {0} bytes is outside {MIN_RECORD_LIMIT}..={MAX_RECORD_LIMIT} (Builder::max_record_bytes)"
    )]
    MaxRecord(usize),
}

/// How records are given topics.
#[derive(Clone, Debug)]
enum Topics {
    /// `prefix` followed by the record's target, cut to 255 bytes.
    Prefix(String),
    /// Always this topic.
    Fixed(String),
}

impl Topics {
    /// The topic of a record with `target`, built in `buf` (no allocation).
    fn topic<'a>(&'a self, target: &str, buf: &'a mut [u8; MAX_TOPIC_LEN]) -> &'a str {
        match self {
            Topics::Fixed(topic) => topic,
            Topics::Prefix(prefix) => {
                let target = encode::cut(target, MAX_TOPIC_LEN - prefix.len());
                let (head, rest) = buf.split_at_mut(prefix.len());
                head.copy_from_slice(prefix.as_bytes());
                rest[..target.len()].copy_from_slice(target.as_bytes());
                // Both parts are whole UTF-8 strings (the target cut at a char boundary).
                std::str::from_utf8(&buf[..prefix.len() + target.len()]).unwrap_or(prefix)
            }
        }
    }
}

/// Settings of a [`RingsideLayer`]; start with [`RingsideLayer::builder`].
#[derive(Clone, Debug)]
pub struct Builder {
    socket: Option<PathBuf>,
    topics: Topics,
    max_record: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            socket: None,
            topics: Topics::Prefix(DEFAULT_TOPIC_PREFIX.to_owned()),
            max_record: DEFAULT_MAX_RECORD,
        }
    }
}

impl Builder {
    /// The sidecar's socket (default: `$RINGSIDE_SOCKET`, else `/tmp/ringside.sock`).
    pub fn socket(mut self, path: impl AsRef<Path>) -> Self {
        self.socket = Some(path.as_ref().to_owned());
        self
    }

    /// Topic of a record: `prefix` followed by its target (default prefix `tracing/`, so an
    /// event in module `my_app::db` goes to `tracing/my_app::db`). Cut to 255 bytes.
    pub fn topic_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.topics = Topics::Prefix(prefix.into());
        self
    }

    /// Every record on this one topic (the target is still in the payload).
    pub fn fixed_topic(mut self, topic: impl Into<String>) -> Self {
        self.topics = Topics::Fixed(topic.into());
        self
    }

    /// Largest record in bytes (default 4 KiB, at most the ring's max payload, which wins
    /// when smaller). Longer records are cut and marked truncated.
    pub fn max_record_bytes(mut self, bytes: usize) -> Self {
        self.max_record = bytes;
        self
    }

    /// Connects the layer's producer and returns the layer. Without a sidecar this succeeds:
    /// records are dropped and counted until one appears (the producer reconnects in the
    /// background). Blocks at most 2 s (a peer that accepts and does not answer).
    ///
    /// # Errors
    ///
    /// [`LayerError::Connect`] when a sidecar refuses the producer or the path is not a
    /// ringside socket; the other variants for settings out of range.
    pub fn connect(self) -> Result<RingsideLayer, LayerError> {
        match &self.topics {
            Topics::Fixed(topic) if topic.is_empty() || topic.len() > MAX_TOPIC_LEN => {
                return Err(LayerError::InvalidTopic {
                    topic: topic.clone(),
                    len: topic.len(),
                });
            }
            Topics::Prefix(prefix) if prefix.len() >= MAX_TOPIC_LEN => {
                return Err(LayerError::PrefixTooLong {
                    prefix: prefix.clone(),
                    len: prefix.len(),
                });
            }
            _ => {}
        }
        if !(MIN_RECORD_LIMIT..=MAX_RECORD_LIMIT).contains(&self.max_record) {
            return Err(LayerError::MaxRecord(self.max_record));
        }
        let producer = match &self.socket {
            Some(path) => Producer::connect(path)?,
            None => Producer::connect_default()?,
        };
        Ok(RingsideLayer {
            producer,
            topics: self.topics,
            max_record: self.max_record,
            counters: Arc::new(Counters::default()),
        })
    }
}

/// The layer's own counters; written only off the success path.
#[derive(Debug, Default)]
struct Counters {
    not_connected: AtomicU64,
    reentrant: AtomicU64,
    truncated: AtomicU64,
    encoding: AtomicU64,
}

/// Counters of a [`RingsideLayer`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracingStats {
    /// Records (events and span closes) published into the ring.
    pub written: u64,
    /// Records dropped because no sidecar was ever reached (no ring mapped).
    pub dropped_not_connected: u64,
    /// Records dropped because even their fixed part exceeds the ring's max payload.
    pub dropped_too_large: u64,
    /// Records dropped because their topic was invalid (an empty target with an empty
    /// prefix).
    pub dropped_invalid_topic: u64,
    /// Records dropped because they were emitted while this thread was already writing one
    /// (from a `Debug` impl of a field), or during thread teardown.
    pub dropped_reentrant: u64,
    /// Records written cut to the size limit (counted in `written` too).
    pub truncated: u64,
    /// Records discarded because their encoding did not fill the reserved size (a bug;
    /// always 0).
    pub encoding_errors: u64,
    /// The layer's producer's counters (`sent` = `written` plus nothing else: the layer's
    /// producer is its own).
    pub producer: ProducerStats,
}

/// A handle to a layer's counters that stays usable after the layer moved into a
/// subscriber. Holding it keeps the layer's producer (and its connection) alive.
#[derive(Clone, Debug)]
pub struct StatsHandle {
    producer: Producer,
    counters: Arc<Counters>,
}

impl StatsHandle {
    /// The counters now.
    pub fn stats(&self) -> TracingStats {
        let producer = self.producer.stats();
        let c = &self.counters;
        TracingStats {
            written: producer.sent,
            dropped_not_connected: c.not_connected.load(Ordering::Relaxed)
                + producer.dropped_not_connected,
            dropped_too_large: producer.dropped_too_large,
            dropped_invalid_topic: producer.dropped_invalid_topic,
            dropped_reentrant: c.reentrant.load(Ordering::Relaxed),
            truncated: c.truncated.load(Ordering::Relaxed),
            encoding_errors: c.encoding.load(Ordering::Relaxed),
            producer,
        }
    }

    /// True while a sidecar is connected.
    pub fn sidecar_connected(&self) -> bool {
        self.producer.sidecar_connected()
    }

    /// Waits up to `timeout` for a sidecar (for tools and tests; the layer never waits).
    pub fn wait_connected(&self, timeout: std::time::Duration) -> bool {
        self.producer.wait_connected(timeout)
    }
}

/// The layer: add it to a `tracing_subscriber::registry()`.
#[derive(Debug)]
pub struct RingsideLayer {
    producer: Producer,
    topics: Topics,
    max_record: usize,
    counters: Arc<Counters>,
}

/// What the layer keeps for an open span: its fields (encoded) and its timings. When
/// several ringside layers share a registry, the first one to see the span keeps its state
/// (`owner`) and the others read it when the span closes.
#[derive(Debug)]
struct SpanState {
    owner: usize,
    opened: Instant,
    busy_ns: u64,
    /// How many times the span is currently entered, and since when (the outermost enter).
    depth: u32,
    entered_at: Option<Instant>,
    fields: Vec<u8>,
    truncated: bool,
}

thread_local! {
    /// Where a record's fields are encoded before its frame is reserved. Grows once per
    /// thread to the layer's limit (at most MAX_RECORD_LIMIT), then never again.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl RingsideLayer {
    /// Settings to start from.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Connects with the defaults to the sidecar at `path`.
    ///
    /// # Errors
    ///
    /// As [`Builder::connect`].
    pub fn connect(path: impl AsRef<Path>) -> Result<RingsideLayer, LayerError> {
        Builder::default().socket(path).connect()
    }

    /// A handle to this layer's counters, to keep before the layer moves into a subscriber.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle {
            producer: self.producer.clone(),
            counters: Arc::clone(&self.counters),
        }
    }

    /// The counters now.
    pub fn stats(&self) -> TracingStats {
        self.stats_handle().stats()
    }

    /// The most bytes a record may take now: the configured limit, or the ring's max
    /// payload when smaller. None while no ring is mapped (nothing can be written).
    fn record_limit(&self) -> Option<usize> {
        let max_payload = self.producer.max_payload()?;
        Some(self.max_record.min(max_payload as usize))
    }

    /// Encodes fields with `visit` into this thread's scratch buffer (bounded by `limit`)
    /// and hands the bytes to `then`. None when the scratch is in use (a record emitted
    /// while writing another) or gone (thread teardown).
    fn with_fields<R>(
        &self,
        limit: usize,
        skip_log_fields: bool,
        visit: impl FnOnce(&mut Fields<'_>),
        then: impl FnOnce(&[u8], bool) -> R,
    ) -> Option<R> {
        SCRATCH
            .try_with(|scratch| {
                let mut buf = scratch.try_borrow_mut().ok()?;
                buf.clear();
                if buf.capacity() < limit {
                    // Once per thread (or when a layer with a larger limit appears).
                    buf.reserve_exact(limit);
                }
                let truncated = {
                    let mut fields = Fields::new(&mut buf, limit, skip_log_fields);
                    visit(&mut fields);
                    fields.truncated
                };
                Some(then(&buf, truncated))
            })
            .ok()
            .flatten()
    }

    /// Reserves the record's frame and writes it in place.
    fn emit(&self, head: &Head<'_>, fields: &[u8], truncated: bool) {
        let truncated = truncated || head.cuts_metadata();
        let len = head.len(truncated) + fields.len();
        let mut topic_buf = [0u8; MAX_TOPIC_LEN];
        let topic = self.topics.topic(head.target, &mut topic_buf);
        // On failure (not connected, too large, invalid topic) the producer counts the
        // record; TracingStats reports its counters.
        if let Ok(mut frame) = self.producer.reserve(topic, len) {
            let mut out = SliceWriter::new(&mut frame);
            head.write(&mut out, fields, truncated);
            if out.complete() {
                frame.commit();
                if truncated {
                    self.counters.truncated.fetch_add(1, Ordering::Relaxed);
                }
            } else {
                frame.discard();
                self.counters.encoding.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn drop_reentrant(&self) {
        self.counters.reentrant.fetch_add(1, Ordering::Relaxed);
    }

    /// This layer's identity, to tell its span state from another ringside layer's.
    fn id(&self) -> usize {
        Arc::as_ptr(&self.counters) as usize
    }
}

impl<S> Layer<S> for RingsideLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(limit) = self.record_limit() else {
            self.counters.not_connected.fetch_add(1, Ordering::Relaxed);
            return;
        };
        // A `log` record through the bridge: its own target, level and location.
        let normalized = event.normalized_metadata();
        let is_log = normalized.is_some();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let span = ctx.event_span(event);
        let head = Head {
            kind: Kind::Event,
            level: meta.level(),
            target: meta.target(),
            name: "",
            file: meta.file(),
            line: meta.line(),
            span_id: span.as_ref().map_or(0, |span| span.id().into_u64()),
            parent_span_id: 0,
            duration_ns: 0,
            busy_ns: 0,
            span_name: span.as_ref().map_or("", |span| span.name()),
        };
        let budget = limit.saturating_sub(head.len(true));
        let written = self.with_fields(
            budget,
            is_log,
            |fields| event.record(fields),
            |fields, truncated| self.emit(&head, fields, truncated),
        );
        if written.is_none() {
            self.drop_reentrant();
        }
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        if span.extensions().get::<SpanState>().is_some() {
            return; // another ringside layer on this registry keeps it
        }
        let encoded = self.with_fields(
            self.max_record / 2,
            false,
            |fields| attrs.record(fields),
            |fields, truncated| (fields.to_vec(), truncated),
        );
        let (fields, truncated) = encoded.unwrap_or_else(|| (Vec::new(), true));
        span.extensions_mut().insert(SpanState {
            owner: self.id(),
            opened: Instant::now(),
            busy_ns: 0,
            depth: 0,
            entered_at: None,
            fields,
            truncated,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let mut extensions = span.extensions_mut();
        let Some(state) = extensions.get_mut::<SpanState>() else {
            return;
        };
        if state.owner != self.id() {
            return;
        }
        let room = (self.max_record / 2).saturating_sub(state.fields.len());
        let added = self.with_fields(
            room,
            false,
            |fields| values.record(fields),
            |fields, truncated| {
                state.fields.extend_from_slice(fields);
                truncated
            },
        );
        state.truncated |= added.unwrap_or(true);
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(state) = span.extensions_mut().get_mut::<SpanState>()
            && state.owner == self.id()
        {
            if state.depth == 0 {
                state.entered_at = Some(Instant::now());
            }
            state.depth += 1;
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(state) = span.extensions_mut().get_mut::<SpanState>()
            && state.owner == self.id()
        {
            state.depth = state.depth.saturating_sub(1);
            if state.depth == 0
                && let Some(since) = state.entered_at.take()
            {
                state.busy_ns = state.busy_ns.saturating_add(nanos(since.elapsed()));
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let Some(limit) = self.record_limit() else {
            self.counters.not_connected.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let extensions = span.extensions();
        let Some(state) = extensions.get::<SpanState>() else {
            return;
        };
        let meta = span.metadata();
        let head = Head {
            kind: Kind::SpanClose,
            level: meta.level(),
            target: meta.target(),
            name: meta.name(),
            file: meta.file(),
            line: meta.line(),
            span_id: id.into_u64(),
            parent_span_id: span.parent().map_or(0, |parent| parent.id().into_u64()),
            duration_ns: nanos(state.opened.elapsed()),
            busy_ns: state.busy_ns,
            span_name: "",
        };
        // The fields were bounded when recorded; the ring's max payload may be smaller.
        let budget = limit.saturating_sub(head.len(true));
        let (fields, cut) = if state.fields.len() <= budget {
            (&state.fields[..], false)
        } else {
            (whole_entries(&state.fields, budget), true)
        };
        self.emit(&head, fields, state.truncated || cut);
    }
}

/// The longest prefix of `entries` (complete length-delimited protobuf entries) that is at
/// most `max` bytes and ends on an entry boundary.
fn whole_entries(entries: &[u8], max: usize) -> &[u8] {
    let mut end = 0;
    let mut pos = 0;
    while pos < entries.len() {
        // key (1 byte), varint length, content
        let mut len: usize = 0;
        let mut shift = 0;
        let mut at = pos + 1;
        while let Some(&byte) = entries.get(at) {
            len |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            at += 1;
            if byte & 0x80 == 0 || shift > 28 {
                break;
            }
        }
        let next = at.saturating_add(len);
        if next > max || next > entries.len() {
            break;
        }
        end = next;
        pos = next;
    }
    &entries[..end]
}
