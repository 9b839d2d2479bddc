//! The Subscribe stream: one ring cursor per subscriber, encoded by hand into
//! the HTTP/2 response body.
//!
//! The response body is a custom `http_body::Body`. hyper polls it only when
//! the stream may send (it holds at most one polled chunk while it waits for
//! flow-control capacity), so a batch is assembled only when the transport
//! wants bytes: that is the backpressure. A subscriber that does not read is
//! never polled, holds at most its batches in flight, and is lapped by the
//! producers; its next batch reports the exact loss.
//!
//! Why not a `tonic::codec::Encoder`: tonic's `EncodeBuf` only appends
//! (`BufMut`), so a frame whose copy fails validation could not be truncated
//! away, and handing the reader a `&mut [u8]` into it would need `unsafe`.
//! Owning the `BytesMut` gives the same single copy with safe truncation. The
//! gRPC framing (5-byte prefix, trailers with `grpc-status`) is written here.
//!
//! Every sequence number the cursor passes is accounted in a batch (frames,
//! losses, and the `filtered` / `discarded` counts). When only counts are new,
//! a progress batch goes out at most once per [`PROGRESS_INTERVAL`]. A stream
//! the server ends (shutdown, or the stall reaper) first sends a last batch for
//! anything not reported yet, then UNAVAILABLE naming the resume sequence.

use crate::batch::{BatchEncoder, LossRun};
use crate::filter::TopicFilter;
use crate::inflight::ChunkGate;
use crate::limits::{SlotGuard, SubscribeStreamGuard};
use crate::request::{GRPC_PREFIX_LEN, RequestError, Subscription};
use crate::share::{BatchOut, next_batch};
use crate::state::Shared;
use crate::wake::WakeState;
use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::Frame;
use http_body_util::BodyExt;
use ringside_ring::{FrameMeta, FrameSink, LossReason, ReadStep, ReaderOptions, RingReader};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio_stream::Stream;
use tokio_stream::wrappers::WatchStream;
use tonic::Status;

/// Read steps per poll at most, so one busy subscriber cannot starve the
/// runtime (filtered frames take no batch room).
const MAX_STEPS_PER_POLL: usize = 4096;
/// Quick retries (a yield to the scheduler, about a microsecond each) when the next frame
/// is claimed but not committed yet: a producer commits within nanoseconds of its claim
/// unless it was descheduled in between. After them the stream waits for the commit on
/// the wake task's ticks (see [`crate::wake`]): woken by the producer's doorbell ring
/// after its commit, or at the latest after [`crate::wake::PENDING_TICK`]. (It used to
/// sleep 500 µs on tokio's timer, which ticks in milliseconds: 1-2 ms of tail latency.)
const PENDING_YIELDS: u32 = 16;
/// Per-batch delay histogram: now minus the batch's first frame's timestamp, when the
/// batch is closed, by what led to the poll (label `after`).
pub const DELAY_HISTOGRAM: &str = "ringside_batch_delay_seconds";
/// How long a client may take to send its (tiny) request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Least time between two progress batches of a stream (batches carrying only
/// `filtered` and `discarded` counts).
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// Handles one Subscribe call: validates, admits, and returns the streaming response.
pub async fn handle(
    shared: Arc<Shared>,
    req: http::Request<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    match start(shared, req).await {
        Ok(body) => {
            let mut resp = http::Response::new(tonic::body::Body::new(body));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/grpc"),
            );
            resp
        }
        Err(status) => {
            tracing::debug!(code = ?status.code(), message = status.message(), "subscribe refused");
            status.into_http()
        }
    }
}

async fn start(
    shared: Arc<Shared>,
    req: http::Request<tonic::body::Body>,
) -> Result<SubscribeBody, Status> {
    shared.auth.check(req.headers())?;
    if shared.shutdown.load(Ordering::Acquire) {
        return Err(Status::unavailable(
            "ringside is shutting down; reconnect (to the restarted sidecar) and resume with the resume_seq of your last batch",
        ));
    }
    let peer = crate::limits::peer_addr(&req);
    let conn = crate::limits::connect_info(&req).map(|i| Arc::clone(&i.conn));
    let per_conn = shared.limits.subscribe_streams_per_connection;
    let stream_guard = match &conn {
        Some(c) => Some(c.open_subscribe(per_conn).ok_or_else(|| {
            Status::resource_exhausted(format!(
                "too many Subscribe streams on this connection: {per_conn} already open (--max-streams-per-connection {per_conn}); open another channel (connection) for more streams"
            ))
        })?),
        None => None,
    };
    if let Some(enc) = req.headers().get("grpc-encoding")
        && enc.as_bytes() != b"identity"
    {
        return Err(Status::unimplemented(
            "compressed Subscribe requests are not supported; send the request uncompressed",
        ));
    }
    let body = read_body(req.into_body(), shared.limits.max_request).await?;
    let request = crate::request::decode_framed(&body, shared.limits.max_request)
        .and_then(|request| crate::request::subscription(&request))
        .map_err(refusal)?;
    let Subscription {
        filter,
        start,
        max_batch_bytes,
        max_batch_frames,
    } = request;
    let Some(slot) = shared.slots.acquire() else {
        metrics::counter!("ringside_subscribers_refused_total").increment(1);
        let max = shared.slots.capacity();
        return Err(Status::resource_exhausted(format!(
            "too many subscribers: {max} already connected (--max-subscribers {max}); retry later, or raise --max-subscribers on the sidecar"
        )));
    };
    slot.set_connection(conn);
    let reader = RingReader::new(
        Arc::clone(&shared.ring),
        start,
        ReaderOptions {
            stall_timeout: shared.limits.stall_timeout,
        },
    )
    .map_err(|e| match e {
        ringside_ring::ReadError::SequenceInFuture { requested, next } => {
            Status::invalid_argument(format!(
                "sequence {requested} has not been written yet on ring {:016x} (its next frame will be {next}); resume from a sequence this ring gave you, or start from `earliest` if you resumed on another ring (a different ring_id)",
                shared.ring.ring_id()
            ))
        }
    })?;
    let max_bytes = match max_batch_bytes {
        0 => shared.limits.subscriber_buffer,
        n => (n as usize).min(shared.limits.subscriber_buffer),
    };
    let mut enc = BatchEncoder::new(
        shared.ring.ring_id(),
        max_bytes,
        max_batch_frames,
        ringside_ring::MAX_TOPIC_LEN,
        shared.ring.max_payload() as usize,
    );
    enc.stream_starts_at(reader.accounts_from());
    tracing::debug!(
        slot = slot.index(),
        ?peer,
        ?start,
        next_seq = reader.next_seq(),
        max_batch_bytes = enc.max_bytes(),
        "subscriber started"
    );
    metrics::gauge!("ringside_subscribers").increment(1.0);
    let sharing = filter.is_all();
    if sharing {
        shared.chunks.enter();
    }
    Ok(SubscribeBody {
        sharing,
        wake: WatchStream::from_changes(shared.wake_rx.clone()),
        shared,
        reader,
        enc,
        filter,
        slot,
        _stream: stream_guard,
        state: State::Reading,
        ticks: None,
        pending_registered: false,
        pending_yields: 0,
        after: After::Backlog,
        last_sent: Instant::now(),
        progress_timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        progress_armed: false,
        ending: None,
        done: false,
        registered: false,
        gate: ChunkGate::default(),
        queued: None,
    })
}

/// Collects the request body, bounded by `max` message bytes and a deadline.
async fn read_body(body: tonic::body::Body, max: usize) -> Result<Bytes, Status> {
    let limit = max + GRPC_PREFIX_LEN;
    let collected = tokio::time::timeout(REQUEST_TIMEOUT, http_body_util::Limited::new(body, limit).collect())
        .await
        .map_err(|_| Status::deadline_exceeded("the Subscribe request did not arrive within 10s"))?
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                Status::resource_exhausted(format!(
                    "Subscribe request larger than {max} bytes (--max-request); send fewer or shorter filters"
                ))
            } else {
                Status::invalid_argument(format!("cannot read the Subscribe request: {e}"))
            }
        })?;
    Ok(collected.to_bytes())
}

/// The gRPC status for a refused request.
fn refusal(e: RequestError) -> Status {
    match e {
        RequestError::TooLarge { .. } => Status::resource_exhausted(e.to_string()),
        RequestError::Compressed => Status::unimplemented(e.to_string()),
        RequestError::Empty
        | RequestError::Framing { .. }
        | RequestError::Decode(_)
        | RequestError::FalseStart { .. }
        | RequestError::Filter(_) => Status::invalid_argument(e.to_string()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Read the ring and send what is there.
    Reading,
    /// Caught up: wait for producers to write.
    Waiting,
    /// The next frame is claimed, not committed: wait for the wake task's next tick.
    PendingWait,
}

/// How the poll that read a batch's first frame came about: the label of the
/// per-batch delay histogram (`ringside_batch_delay_seconds`), which attributes the
/// latency tail to its cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// Caught up, woken by the wake task (a doorbell ring or a new claim).
    Doorbell,
    /// Reading on after a full batch or a spent step budget.
    Backlog,
    /// A quick retry of a claimed-but-uncommitted frame.
    PendingYield,
    /// A wait for a claimed frame's commit (the wake task's ticks).
    PendingWait,
    /// The progress timer.
    Progress,
}

impl After {
    fn as_str(self) -> &'static str {
        match self {
            After::Doorbell => "doorbell",
            After::Backlog => "backlog",
            After::PendingYield => "pending_yield",
            After::PendingWait => "pending_wait",
            After::Progress => "progress",
        }
    }
}

/// Why filling a batch stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// The batch is full (or the next frame opens the next one).
    Full,
    /// Caught up with the producers.
    Idle,
    /// The next frame is claimed, not committed yet.
    Pending,
    /// The step budget is spent.
    Yield,
}

/// The response body of one Subscribe call.
pub struct SubscribeBody {
    shared: Arc<Shared>,
    reader: RingReader,
    enc: BatchEncoder,
    filter: TopicFilter,
    slot: SlotGuard,
    /// Counts this stream on its connection.
    _stream: Option<SubscribeStreamGuard>,
    wake: WatchStream<WakeState>,
    state: State,
    /// The wake task's tick counter, while waiting for a commit (made on first use).
    ticks: Option<WatchStream<u64>>,
    /// Counted in the wait registry as waiting for a commit.
    pending_registered: bool,
    /// Consecutive quick retries of a claimed-but-uncommitted frame.
    pending_yields: u32,
    /// How the current poll came about (for the delay histogram).
    after: After,
    /// When the last batch went out (progress batches wait [`PROGRESS_INTERVAL`]).
    last_sent: Instant,
    /// Wakes a waiting stream to send a progress batch.
    progress_timer: Pin<Box<tokio::time::Sleep>>,
    progress_armed: bool,
    /// The status to end with once the last batch (sent just before) is out.
    ending: Option<Status>,
    done: bool,
    /// Counted in the wait registry (caught up, waiting for producers).
    registered: bool,
    /// Batches handed to HTTP/2 and not yet written (bounded, see [`crate::inflight`]).
    gate: ChunkGate,
    /// The shared frame entries of a batch whose head went out last poll: the rest of
    /// the same gRPC message, sent before anything else.
    queued: Option<Bytes>,
    /// Counted in the chunk cache as a subscriber that could take chunks (no filter).
    sharing: bool,
}

impl std::fmt::Debug for SubscribeBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscribeBody")
            .field("slot", &self.slot.index())
            .field("next_seq", &self.reader.next_seq())
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// The reader's sink: copies into the batch, filters by topic, counts discarded
/// frames, and notes frames dropped at commit.
struct Sink<'a> {
    enc: &'a mut BatchEncoder,
    filter: &'a TopicFilter,
    /// The topic was not UTF-8 (a corrupt frame, reported as such).
    bad_topic: bool,
    /// The frame did not fit in the batch (the reader keeps it for the next one).
    full: bool,
    /// The encoder dropped the committed frame (a body of the wrong length: never, with
    /// the ring crate's reader).
    dropped: bool,
}

impl FrameSink for Sink<'_> {
    fn accept_topic(&mut self, topic: &[u8], utf8: bool) -> bool {
        if !utf8 {
            self.bad_topic = true;
            return false;
        }
        self.filter.matches(topic)
    }

    fn filters_topics(&self) -> bool {
        // A subscriber without a filter has its topics checked in the copy it keeps (the
        // reader's single-copy path): a topic that is not UTF-8 comes back as one corrupt
        // frame, as `accept_topic` reports it here.
        !self.filter.is_all()
    }

    #[inline]
    fn begin(&mut self, meta: &FrameMeta) -> Option<&mut BytesMut> {
        let buf = self.enc.begin_frame(meta);
        self.full = buf.is_none();
        buf
    }

    #[inline]
    fn commit(&mut self, _meta: &FrameMeta) {
        self.dropped = !self.enc.commit_frame();
    }

    fn abort(&mut self) {
        self.enc.abort_frame();
    }

    fn discarded(&mut self, meta: &FrameMeta) {
        self.enc.count_discarded(meta.seq);
    }
}

/// Reads frames from `reader` into the open batch of `enc` until it is full, the
/// ring is idle or pending, or `max_steps` read steps are spent: the per-frame path
/// of every subscriber (and of the `instructions` benchmark). Frames the filter
/// skips and discarded reservations are counted in the encoder; every loss is
/// recorded in the encoder and passed to `lost` (reason, frames) for the totals.
pub fn fill_batch(
    reader: &mut RingReader,
    enc: &mut BatchEncoder,
    filter: &TopicFilter,
    max_steps: usize,
    lost: &mut impl FnMut(LossReason, u64),
) -> Fill {
    let mut loss = |enc: &mut BatchEncoder, reason: LossReason, frames: u64, first_seq: u64| {
        lost(reason, frames);
        enc.record_loss(LossRun {
            reason,
            frames,
            first_seq,
        });
    };
    for _ in 0..max_steps {
        if !enc.has_room() {
            return Fill::Full;
        }
        let mut sink = Sink {
            enc: &mut *enc,
            filter,
            bad_topic: false,
            full: false,
            dropped: false,
        };
        let step = reader.read(&mut sink);
        let (bad_topic, full, dropped) = (sink.bad_topic, sink.full, sink.dropped);
        match step {
            ReadStep::Frame(meta) => {
                if dropped {
                    loss(enc, LossReason::Corrupt, 1, meta.seq);
                }
            }
            ReadStep::Filtered(meta) => {
                if bad_topic {
                    loss(enc, LossReason::Corrupt, 1, meta.seq);
                } else {
                    enc.count_filtered(meta.seq);
                }
            }
            ReadStep::Loss(l) => loss(enc, l.reason, l.frames, l.first_seq),
            ReadStep::Idle => return Fill::Idle,
            // The next frame does not fit this batch: it opens the next one.
            ReadStep::Pending if full => return Fill::Full,
            ReadStep::Pending => return Fill::Pending,
        }
    }
    Fill::Yield
}

impl SubscribeBody {
    /// Builds the next batch (see [`next_batch`]: from a shared chunk when one is exact for
    /// this subscriber, else from the ring), counting losses in the sidecar's totals.
    /// Returns why reading stopped and the first piece of the batch to send.
    fn read_batch(&mut self, progress: bool) -> (Fill, Option<Bytes>) {
        let counters = &self.shared.counters;
        let (fill, out) = next_batch(
            &mut self.reader,
            &mut self.enc,
            &self.filter,
            Some(&self.shared.chunks),
            MAX_STEPS_PER_POLL,
            progress,
            &mut |reason, frames| {
                counters.lost[reason].fetch_add(frames, Ordering::Relaxed);
                metrics::counter!("ringside_frames_lost_total", "reason" => reason.as_str())
                    .increment(frames);
            },
        );
        (fill, out.map(|out| self.send_batch(out)))
    }

    /// Closes the batch without reading; a progress batch (counts only) is made when
    /// `progress`.
    fn finish_batch(&mut self, progress: bool) -> Option<Bytes> {
        let out = BatchOut {
            n_frames: u64::from(self.enc.frames()),
            payload_bytes: self.enc.payload_bytes(),
            first_ts: self.enc.first_timestamp_ns(),
            head: self.enc.finish(self.reader.next_seq(), progress)?,
            frames: None,
            shared: false,
        };
        Some(self.send_batch(out))
    }

    /// Counts a closed batch and hands it out: its first piece is returned, a shared chunk
    /// behind it is queued for the next poll. The batch is counted in flight until h2 drops
    /// its last piece.
    fn send_batch(&mut self, out: BatchOut) -> Bytes {
        let frames = out.n_frames;
        let payload = out.payload_bytes;
        if frames > 0 {
            // The batch's oldest frame: how long after its producer stamped it (the
            // producer's clock, comparable with CLOCK_REALTIME) it leaves the reader,
            // labelled by how this poll came about. One clock read per batch.
            let now = crate::commands::load::now_ns();
            let delay = now.saturating_sub(out.first_ts);
            metrics::histogram!(DELAY_HISTOGRAM, "after" => self.after.as_str())
                .record(delay as f64 * 1e-9);
        }
        self.last_sent = Instant::now();
        self.progress_armed = false;
        let c = &self.shared.counters;
        c.frames_out.fetch_add(frames, Ordering::Relaxed);
        c.bytes_out.fetch_add(payload, Ordering::Relaxed);
        metrics::counter!("ringside_frames_out_total").increment(frames);
        metrics::counter!("ringside_payload_bytes_out_total").increment(payload);
        metrics::counter!("ringside_batch_bytes_out_total").increment(out.len() as u64);
        let s = self.slot.stats();
        s.frames_out.fetch_add(frames, Ordering::Relaxed);
        s.lag_bytes
            .store(self.reader.lag_bytes(), Ordering::Relaxed);
        if out.shared {
            metrics::counter!("ringside_shared_batches_total").increment(1);
        }
        match out.frames {
            Some(shared) => {
                self.queued = Some(self.gate.track(shared));
                out.head
            }
            None => self.gate.track(out.head),
        }
    }

    fn end(&mut self, status: Status) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.done = true;
        let mut trailers = HeaderMap::new();
        if status.add_header(&mut trailers).is_err() {
            let _ = Status::internal("status could not be encoded").add_header(&mut trailers);
        }
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    /// Why the server ends this stream now, if it does: shutdown, or the stall reaper.
    fn server_end(&self) -> Option<End> {
        if self.shared.shutdown.load(Ordering::Acquire) {
            Some(End::Shutdown)
        } else if self.slot.reap_requested() {
            Some(End::Stalled)
        } else {
            None
        }
    }

    /// Ends the stream for `why`: a last batch with anything not reported yet (then
    /// the status on the next poll), or the status at once.
    fn end_by_server(&mut self, why: End) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let last = self.finish_batch(true);
        let resume = self.enc.resume_point(self.reader.next_seq());
        let status = match why {
            End::Shutdown => Status::unavailable(format!(
                "ringside is shutting down; reconnect and resume with sequence {resume}"
            )),
            End::Stalled => Status::unavailable(format!(
                "this subscriber's connection took no data for {:?} while frames were waiting (--subscriber-stall-timeout); reconnect and resume with sequence {resume}",
                self.shared.limits.subscriber_stall_timeout
            )),
        };
        match last {
            Some(chunk) => {
                self.ending = Some(status);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            None => self.end(status),
        }
    }

    /// Arms the progress timer when counts wait to be reported and none is due yet.
    fn arm_progress(&mut self) {
        if self.progress_armed || !self.enc.has_unreported() {
            return;
        }
        let due = tokio::time::Instant::from_std(self.last_sent + PROGRESS_INTERVAL);
        self.progress_timer.as_mut().reset(due);
        self.progress_armed = true;
    }
}

/// Why the server ends a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// SIGTERM/SIGINT.
    Shutdown,
    /// The stall reaper: the subscriber stopped reading.
    Stalled,
}

impl http_body::Body for SubscribeBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(rest) = this.queued.take() {
                return Poll::Ready(Some(Ok(Frame::data(rest))));
            }
            if let Some(status) = this.ending.take() {
                return this.end(status);
            }
            if let Some(why) = this.server_end() {
                // Nothing is open between polls: the last batch only says what was
                // passed since the previous one.
                return this.end_by_server(why);
            }
            match this.state {
                State::Waiting => {
                    if this.progress_armed && this.progress_timer.as_mut().poll(cx).is_ready() {
                        this.progress_armed = false;
                        this.state = State::Reading;
                        this.after = After::Progress;
                        continue;
                    }
                    match Pin::new(&mut this.wake).poll_next(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Some(_)) => {
                            this.state = State::Reading;
                            this.after = After::Doorbell;
                        }
                        Poll::Ready(None) => return this.end_by_server(End::Shutdown),
                    }
                }
                State::PendingWait => {
                    let ticks = this.ticks.get_or_insert_with(|| {
                        WatchStream::from_changes(this.shared.waiters.ticks())
                    });
                    match Pin::new(ticks).poll_next(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Some(_)) => {
                            this.state = State::Reading;
                            this.after = After::PendingWait;
                        }
                        Poll::Ready(None) => return this.end_by_server(End::Shutdown),
                    }
                }
                State::Reading => {
                    // At most CHUNKS_IN_FLIGHT batches out: woken when h2 drops one.
                    if this.gate.poll_room(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let progress_due = this.last_sent.elapsed() >= PROGRESS_INTERVAL;
                    let (fill, chunk) = this.read_batch(progress_due);
                    this.slot.polled(this.reader.position());
                    if fill != Fill::Idle && this.registered {
                        this.shared.waiters.unregister();
                        this.registered = false;
                    }
                    if fill != Fill::Pending {
                        this.pending_yields = 0;
                        if this.pending_registered {
                            this.shared.waiters.unregister_pending();
                            this.pending_registered = false;
                        }
                    }
                    if chunk.is_some() {
                        // What follows this batch is read on, whatever led to this one.
                        this.after = After::Backlog;
                    }
                    match fill {
                        Fill::Full => {}
                        Fill::Idle if !this.registered => {
                            // Say we wait, then look once more before waiting.
                            this.shared.waiters.register();
                            this.registered = true;
                        }
                        Fill::Idle => {
                            this.state = State::Waiting;
                            this.arm_progress();
                        }
                        Fill::Pending if this.pending_yields < PENDING_YIELDS => {
                            this.pending_yields += 1;
                            if chunk.is_none() {
                                this.after = After::PendingYield;
                                cx.waker().wake_by_ref();
                                return Poll::Pending;
                            }
                        }
                        Fill::Pending if !this.pending_registered => {
                            // Say we wait for a commit (the wake task starts ticking),
                            // then look once more before waiting.
                            this.shared.waiters.register_pending();
                            this.pending_registered = true;
                        }
                        Fill::Pending => this.state = State::PendingWait,
                        Fill::Yield => {
                            if chunk.is_none() {
                                cx.waker().wake_by_ref();
                                return Poll::Pending;
                            }
                        }
                    }
                    if let Some(chunk) = chunk {
                        return Poll::Ready(Some(Ok(Frame::data(chunk))));
                    }
                }
            }
        }
    }
}

impl Drop for SubscribeBody {
    fn drop(&mut self) {
        if self.registered {
            self.shared.waiters.unregister();
        }
        if self.pending_registered {
            self.shared.waiters.unregister_pending();
        }
        if self.sharing {
            self.shared.chunks.leave();
        }
        metrics::gauge!("ringside_subscribers").decrement(1.0);
        tracing::debug!(
            slot = self.slot.index(),
            next_seq = self.reader.next_seq(),
            "subscriber ended"
        );
    }
}
