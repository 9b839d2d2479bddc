//! The read-only reader: a cursor into the ring that yields validated frames or explicit
//! loss records. It never writes to the ring and never trusts it.

use bytes::BytesMut;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use crate::layout::{
    FRAME_ALIGN, FRAME_HEADER_LEN, FrameHeader, FrameMeta, HeaderCheck, MAX_TOPIC_LEN,
    check_header, frame_check_body, frame_header_from, frame_len, names_position,
    parse_frame_header,
};
use crate::view::{RingView, Tail};

/// The smallest possible frame: header, one topic byte, no payload, aligned.
const MIN_FRAME_LEN: u64 = frame_len(1, 0) as u64;
/// Discarded frames skipped per `read` call before returning, so a call stays short.
const MAX_SKIPS_PER_READ: usize = 256;
/// Positions (in bytes) examined per `read` call when looking past a stalled frame, so one
/// call stays in the microseconds even on a large ring full of garbage.
const STALL_SCAN_BUDGET: u64 = 64 * 1024;

/// Where a new reader starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest frame still in the ring.
    Earliest,
    /// The next frame to be written.
    Latest,
    /// The frame with this sequence number (resume: pass the last one received plus one).
    Sequence(u64),
    /// The first frame stamped at or after this time (ns since the Unix epoch).
    TimestampNs(u64),
}

/// Reader settings.
#[derive(Clone, Copy, Debug)]
pub struct ReaderOptions {
    /// How long the reader waits on a frame that is claimed but not committed before it
    /// counts it abandoned and moves on. Default 100 ms: a write takes well under a
    /// microsecond, so only a dead or descheduled producer holds a frame that long, and
    /// 100 ms is a few scheduler time slices on a loaded host.
    pub stall_timeout: Duration,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            stall_timeout: Duration::from_millis(100),
        }
    }
}

/// Why frames were lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LossReason {
    /// Overwritten by producers before this reader got to them.
    Lapped,
    /// Claimed by a producer that never committed them within the stall bound.
    Abandoned,
    /// Failed validation (garbage, forged or torn).
    Corrupt,
}

impl LossReason {
    /// Every reason, in the order of [`LossReason::index`].
    pub const ALL: [LossReason; 3] = [
        LossReason::Lapped,
        LossReason::Abandoned,
        LossReason::Corrupt,
    ];

    /// Lowercase name, as used in metrics, logs and JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            LossReason::Lapped => "lapped",
            LossReason::Abandoned => "abandoned",
            LossReason::Corrupt => "corrupt",
        }
    }

    /// Position in [`LossReason::ALL`] (and in a [`PerReason`]).
    pub fn index(self) -> usize {
        match self {
            LossReason::Lapped => 0,
            LossReason::Abandoned => 1,
            LossReason::Corrupt => 2,
        }
    }
}

impl std::fmt::Display for LossReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One value per [`LossReason`] (counters, totals), indexed by the reason itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerReason<T>([T; 3]);

impl<T> PerReason<T> {
    /// Builds the table from a function of each reason.
    pub fn from_fn(mut f: impl FnMut(LossReason) -> T) -> PerReason<T> {
        PerReason(LossReason::ALL.map(&mut f))
    }

    /// Each reason with its value.
    pub fn iter(&self) -> impl Iterator<Item = (LossReason, &T)> {
        LossReason::ALL.into_iter().zip(self.0.iter())
    }
}

impl<T> std::ops::Index<LossReason> for PerReason<T> {
    type Output = T;
    fn index(&self, reason: LossReason) -> &T {
        &self.0[reason.index()]
    }
}

impl<T> std::ops::IndexMut<LossReason> for PerReason<T> {
    fn index_mut(&mut self, reason: LossReason) -> &mut T {
        &mut self.0[reason.index()]
    }
}

/// Frames this reader will never see: `frames` consecutive sequence numbers from `first_seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loss {
    /// Why.
    pub reason: LossReason,
    /// How many.
    pub frames: u64,
    /// The first lost sequence number.
    pub first_seq: u64,
}

/// One step of reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadStep {
    /// One frame was validated and committed into the sink.
    Frame(FrameMeta),
    /// One frame was skipped by the sink's topic filter (not a loss).
    Filtered(FrameMeta),
    /// Frames lost, reported before anything that follows them.
    Loss(Loss),
    /// Caught up with the producers.
    Idle,
    /// The next frame is claimed but not committed yet; call again shortly.
    Pending,
}

/// Where a reader puts the bytes of a frame. The reader appends the frame's body straight
/// into the buffer `begin` returns (no zero-fill), validates the appended bytes, then calls
/// `commit` or `abort`.
pub trait FrameSink {
    /// Topic filter, called before the payload is copied, with the reader's own copy of the
    /// topic and whether it is UTF-8 (checked once, here, by the reader). Return false to
    /// skip the frame. A topic that is not UTF-8 never reaches `commit`: a sink that accepts
    /// one sees the frame fail validation. If the topic in the frame's final copy differs
    /// from this one (a producer rewrote it in between), the reader asks again with that
    /// copy before `commit`, so a committed frame's topic is always one the sink accepted.
    fn accept_topic(&mut self, _topic: &[u8], _utf8: bool) -> bool {
        true
    }
    /// False for a sink that takes every topic (no filter): the reader then copies the
    /// topic only once, with the payload, never calls [`accept_topic`](Self::accept_topic),
    /// and checks the topic's UTF-8 in that copy after the frame check. A frame whose check
    /// holds but whose topic is not UTF-8 is then aborted and returned as one
    /// [`LossReason::Corrupt`] frame under its own sequence number, and the reader moves
    /// past it. Default true: the topic is copied and offered before the payload is.
    fn filters_topics(&self) -> bool {
        true
    }
    /// The buffer the reader appends exactly `meta.body_len()` bytes to: the topic, then
    /// the payload. A sink that has no room for this frame now (a full batch) returns
    /// `None` instead: the reader then leaves the frame where it is and returns
    /// [`ReadStep::Pending`], and the next `read` offers the same frame again.
    fn begin(&mut self, meta: &FrameMeta) -> Option<&mut BytesMut>;
    /// The appended copy validated: keep it.
    fn commit(&mut self, meta: &FrameMeta);
    /// The copy failed validation (or the sink declined its final topic): drop everything
    /// appended since `begin`.
    fn abort(&mut self);
    /// The reader passed a reservation its producer discarded (sequence `meta.seq`): never
    /// published, not a loss (ring-format.md §5.5). Called once per discarded frame, in
    /// sequence order with the other steps, but not for frames before the requested start
    /// position. `read` does not return a step for it.
    fn discarded(&mut self, _meta: &FrameMeta) {}
}

/// A [`FrameSink`] that keeps the last frame's topic and payload in a buffer whose
/// capacity is bounded by the ring's max frame size.
#[derive(Debug, Default)]
pub struct VecSink {
    body: BytesMut,
    topic_len: usize,
}

impl VecSink {
    /// Topic of the last committed frame.
    pub fn topic(&self) -> &[u8] {
        &self.body[..self.topic_len]
    }
    /// Payload of the last committed frame.
    pub fn payload(&self) -> &[u8] {
        &self.body[self.topic_len..]
    }
}

impl FrameSink for VecSink {
    fn begin(&mut self, _meta: &FrameMeta) -> Option<&mut BytesMut> {
        // The reader appends body_len bytes, bounded by the validated header
        // (<= 255 + max payload); the buffer's capacity never grows beyond that.
        self.body.clear();
        self.topic_len = 0;
        Some(&mut self.body)
    }
    fn commit(&mut self, meta: &FrameMeta) {
        self.topic_len = usize::from(meta.topic_len);
    }
    fn abort(&mut self) {
        self.body.clear();
        self.topic_len = 0;
    }
}

/// Frames before the requested start, skipped silently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Skip {
    None,
    BelowSeq(u64),
    BeforeTime(u64),
}

/// Progress of the search for the next committed frame past a stalled one.
#[derive(Clone, Copy, Debug)]
struct StallScan {
    next: u64,
    tail_pos_at_start: u64,
    started: Instant,
}

/// A frame header found by scanning.
struct Found {
    pos: u64,
    header: FrameHeader,
}

/// Where a reader stands between two frames, with nothing owed to its caller: no loss
/// waiting to be returned and no requested start still being skipped to. Two readers of
/// the same ring at the same `Cursor` read the same steps from there. The sidecar uses it
/// to let one reader's validated copy of a range serve other readers that stand where the
/// range starts ([`RingReader::cursor`], [`RingReader::adopt`]). Only a reader makes one,
/// and a reader moved to a wrong one merely reads losses: the ring is never trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cursor {
    pos: u64,
    seq: u64,
}

impl Cursor {
    /// The byte position.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next sequence number a reader here reads.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// A cursor into a ring. Each reader is independent; the ring never knows about it.
#[derive(Debug)]
pub struct RingReader {
    view: Arc<RingView>,
    capacity: u64,
    max_payload: u32,
    pos: u64,
    next_seq: u64,
    skip: Skip,
    pending_loss: Option<Loss>,
    stall_since: Option<Instant>,
    stall_scan: Option<StallScan>,
    options: ReaderOptions,
}

impl RingReader {
    /// Positions a reader.
    ///
    /// # Errors
    ///
    /// [`ReadError::SequenceInFuture`] when a resume asks for a sequence the ring has not
    /// written yet (the ring was replaced, or the client is confused).
    pub fn new(
        view: Arc<RingView>,
        start: StartAt,
        options: ReaderOptions,
    ) -> Result<RingReader, ReadError> {
        let mut reader = RingReader {
            capacity: view.capacity(),
            max_payload: view.max_payload(),
            view,
            pos: 0,
            next_seq: 0,
            skip: Skip::None,
            pending_loss: None,
            stall_since: None,
            stall_scan: None,
            options,
        };
        let tail = reader.view.tail();
        match start {
            StartAt::Latest => reader.set_cursor(tail.pos, tail.seq),
            StartAt::Earliest => reader.seek_earliest(tail),
            StartAt::Sequence(seq) => {
                if seq > tail.seq {
                    return Err(ReadError::SequenceInFuture {
                        requested: seq,
                        next: tail.seq,
                    });
                }
                if seq == tail.seq {
                    reader.set_cursor(tail.pos, tail.seq);
                    return Ok(reader);
                }
                reader.seek_earliest(tail);
                if seq < reader.next_seq {
                    reader.pending_loss = Some(Loss {
                        reason: LossReason::Lapped,
                        frames: reader.next_seq - seq,
                        first_seq: seq,
                    });
                } else {
                    reader.seek_by(tail, |header| header.seq <= seq);
                    reader.skip = Skip::BelowSeq(seq);
                }
            }
            StartAt::TimestampNs(ts) => {
                reader.seek_earliest(tail);
                reader.seek_by(tail, |header| header.timestamp_ns < ts);
                reader.skip = Skip::BeforeTime(ts);
            }
        }
        Ok(reader)
    }

    /// The next sequence number this reader expects.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The first sequence number this reader reports on: every frame it returns, and every
    /// loss but a stale one, lies at or after it. (A stale loss names a sequence a forged
    /// claim word made producers reuse, ring-format.md §5.1: it may lie anywhere below.)
    /// The requested start, when the reader skips to it or owes a loss from it; else the
    /// cursor's sequence.
    pub fn accounts_from(&self) -> u64 {
        match (&self.pending_loss, self.skip) {
            (Some(loss), _) => loss.first_seq,
            (None, Skip::BelowSeq(seq)) => seq,
            (None, _) => self.next_seq,
        }
    }

    /// The byte position of the cursor.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Bytes written by producers that this reader has not read yet.
    pub fn lag_bytes(&self) -> u64 {
        distance(self.pos, self.view.tail().pos)
    }

    /// Where this reader stands, if it owes nothing: `None` while a loss waits to be
    /// returned or frames before the requested start are still being skipped.
    pub fn cursor(&self) -> Option<Cursor> {
        (self.pending_loss.is_none() && self.skip == Skip::None).then_some(Cursor {
            pos: self.pos,
            seq: self.next_seq,
        })
    }

    /// Moves this reader from `from` to `to`, as if it had read what another reader of the
    /// same ring read between them (the caller has that reader's validated copy of the
    /// range). Refused (false, the reader unchanged) unless this reader stands at `from`
    /// ([`cursor`](Self::cursor)) and producers have not overwritten `from` since: a range
    /// that was lapped is read from the ring, and reported lost, as by any reader.
    pub fn adopt(&mut self, from: Cursor, to: Cursor) -> bool {
        if self.cursor() != Some(from) || distance(from.pos, to.pos) > self.capacity {
            return false;
        }
        let claim = self.claim_position();
        if distance(from.pos, claim) > self.capacity || distance(to.pos, claim) > BACKWARDS {
            return false;
        }
        self.set_cursor(to.pos, to.seq);
        true
    }

    /// The ring this reader reads.
    pub fn view(&self) -> &Arc<RingView> {
        &self.view
    }

    fn set_cursor(&mut self, pos: u64, seq: u64) {
        self.pos = pos;
        self.next_seq = seq;
        self.stall_since = None;
        self.stall_scan = None;
    }

    fn seek_earliest(&mut self, tail: Tail) {
        if tail.pos <= self.capacity {
            // The ring never wrapped: everything from the very first frame is retained.
            self.set_cursor(0, 0);
            return;
        }
        match self.scan(tail.pos - self.capacity, tail.pos, tail, None) {
            Some(found) => self.set_cursor(found.pos, found.header.seq),
            None => self.set_cursor(tail.pos, tail.seq),
        }
    }

    /// Binary search over positions for the last frame whose header satisfies `before`
    /// (a predicate monotone in position, like "seq <= n"), starting from the cursor.
    fn seek_by(&mut self, tail: Tail, before: impl Fn(&FrameHeader) -> bool) {
        let mut lo = self.pos;
        let mut lo_seq = self.next_seq;
        let mut hi = tail.pos;
        let window = 4 * self.view.config().max_frame_len() as u64;
        while distance(lo, hi) > window {
            let mid = align_up(lo.wrapping_add(distance(lo, hi) / 2));
            match self.scan(mid, hi, tail, None) {
                Some(found)
                    if distance(lo, found.pos) < distance(lo, hi) && before(&found.header) =>
                {
                    lo = found.pos;
                    lo_seq = found.header.seq;
                }
                _ => hi = mid,
            }
        }
        self.set_cursor(lo, lo_seq);
    }

    /// Reads at most one frame into `sink`. Never blocks.
    pub fn read(&mut self, sink: &mut impl FrameSink) -> ReadStep {
        if let Some(loss) = self.pending_loss.take() {
            return ReadStep::Loss(loss);
        }
        for _ in 0..MAX_SKIPS_PER_READ {
            let step = self.read_one(sink);
            match step {
                // Only a loss can lie before the requested start (frames before it are
                // skipped in `read_one`): the other steps go straight out.
                Step::Deliver(ReadStep::Loss(loss)) => match self.filter_skipped(loss) {
                    Some(step) => return step,
                    None => continue,
                },
                Step::Deliver(step) => return step,
                Step::Skipped => continue,
            }
        }
        ReadStep::Pending
    }

    /// Applies the start-position skip to a loss record: losses entirely before the
    /// requested start are not this subscriber's business. None = suppressed.
    fn filter_skipped(&mut self, loss: Loss) -> Option<ReadStep> {
        match self.skip {
            Skip::BelowSeq(n) => {
                let end = loss.first_seq.saturating_add(loss.frames);
                if end <= n {
                    return None;
                }
                let first = loss.first_seq.max(n);
                Some(ReadStep::Loss(Loss {
                    first_seq: first,
                    frames: end - first,
                    ..loss
                }))
            }
            Skip::BeforeTime(_) => None,
            Skip::None => Some(ReadStep::Loss(loss)),
        }
    }

    fn read_one(&mut self, sink: &mut impl FrameSink) -> Step {
        let map = self.view.mapping();
        let tail = self.view.tail();
        if !tail.pos.is_multiple_of(FRAME_ALIGN) || distance(self.pos, tail.pos) > BACKWARDS {
            // Only a forged claim word is unaligned or moves backwards: nothing between the
            // cursor and it can be trusted, so follow it and count what was skipped.
            return Step::Deliver(self.jump_to_tail(tail, LossReason::Corrupt));
        }
        if self.pos == tail.pos {
            self.stall_since = None;
            self.stall_scan = None;
            return Step::Deliver(ReadStep::Idle);
        }
        if self.lapped(tail.pos) {
            return Step::Deliver(self.resync(tail, LossReason::Lapped));
        }
        // Relaxed load + acquire fence: if the commit word names our position, the fence
        // makes every byte the producer wrote before its release store visible to us.
        let commit = map.commit_word(self.pos).load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if !names_position(commit, self.pos) {
            return Step::Deliver(self.stalled(tail));
        }
        let mut header_bytes = [0u8; FRAME_HEADER_LEN];
        map.copy_out(self.pos, &mut header_bytes);
        let header = frame_header_from(header_bytes);
        let kind = check_header(&header, self.pos, self.max_payload);
        let frame_len =
            frame_len(usize::from(header.topic_len), header.payload_len as usize) as u64;
        let committed = matches!(kind, HeaderCheck::Committed | HeaderCheck::Discarded)
            && frame_len <= distance(self.pos, tail.pos);
        if committed && header.seq < self.next_seq {
            // Only a claim word forged to an older sequence makes producers reuse sequence
            // numbers. The frame cannot be delivered (its sequence was passed already) and is
            // not in any reported range, so it is skipped by its length and reported as one
            // corrupt frame under its own sequence: counted, never silent (ring-format §5.1).
            if self.lapped(self.claim_position()) {
                return Step::Deliver(self.resync(self.view.tail(), LossReason::Lapped));
            }
            self.step_over(frame_len);
            return Step::Deliver(ReadStep::Loss(Loss {
                reason: LossReason::Corrupt,
                frames: 1,
                first_seq: header.seq,
            }));
        }
        let structurally_valid = committed && header.seq == self.next_seq;
        if !structurally_valid {
            if self.lapped(self.claim_position()) {
                return Step::Deliver(self.resync(self.view.tail(), LossReason::Lapped));
            }
            if kind == HeaderCheck::NotCommitted {
                return Step::Deliver(self.stalled(tail));
            }
            return Step::Deliver(self.resync(tail, LossReason::Corrupt));
        }
        let meta = FrameMeta::from_header(&header);
        let before = before_start(&mut self.skip, &meta);
        if kind == HeaderCheck::Discarded || before {
            if self.lapped(self.claim_position()) {
                return Step::Deliver(self.resync(self.view.tail(), LossReason::Lapped));
            }
            self.advance(&meta);
            if kind == HeaderCheck::Discarded && !before {
                sink.discarded(&meta);
            }
            return Step::Skipped;
        }

        if !sink.filters_topics() {
            return Step::Deliver(self.copy_unfiltered(sink, &header, &meta, tail));
        }
        let topic_len = usize::from(header.topic_len);
        let mut topic = [0u8; MAX_TOPIC_LEN];
        map.copy_out(
            self.pos.wrapping_add(FRAME_HEADER_LEN as u64),
            &mut topic[..topic_len],
        );
        if self.lapped(self.claim_position()) {
            return Step::Deliver(self.resync(self.view.tail(), LossReason::Lapped));
        }
        // The one UTF-8 check of a frame (unless its topic changes before the final copy).
        let topic_utf8 = is_utf8(&topic[..topic_len]);
        if !sink.accept_topic(&topic[..topic_len], topic_utf8) {
            self.advance(&meta);
            return Step::Deliver(ReadStep::Filtered(meta));
        }

        let body_len = meta.body_len();
        let Some(buf) = sink.begin(&meta) else {
            // No room in the sink now: nothing is copied and the cursor stays on this frame.
            sink.abort();
            return Step::Deliver(ReadStep::Pending);
        };
        let start = buf.len();
        map.append_out(
            self.pos.wrapping_add(FRAME_HEADER_LEN as u64),
            body_len,
            buf,
        );
        // Copy first, then re-check the claim counter: if a producer claimed over our frame
        // while we copied, the copy may be torn and is dropped.
        if self.lapped(self.claim_position()) {
            sink.abort();
            return Step::Deliver(self.resync(self.view.tail(), LossReason::Lapped));
        }
        // Validate the copy, never the ring: the check covers the appended bytes only.
        let body = buf.get(start..).unwrap_or_default();
        if body.len() != body_len || frame_check_body(&header, body) != header.check {
            sink.abort();
            return Step::Deliver(self.resync(tail, LossReason::Corrupt));
        }
        let copied_topic = &body[..topic_len];
        if copied_topic != &topic[..topic_len] {
            // The topic changed between the two copies and still passed the frame check of
            // the header copied before (a producer writing over its committed frame, with a
            // check collision; ring/tests/topic_rewrite.rs): the final copy is what counts. Check it as
            // the first one was, and ask the sink again.
            let utf8 = is_utf8(copied_topic);
            topic[..topic_len].copy_from_slice(copied_topic);
            if !utf8 {
                sink.abort();
                return Step::Deliver(self.resync(tail, LossReason::Corrupt));
            }
            if !sink.accept_topic(&topic[..topic_len], true) {
                sink.abort();
                self.advance(&meta);
                return Step::Deliver(ReadStep::Filtered(meta));
            }
        } else if !topic_utf8 {
            sink.abort();
            return Step::Deliver(self.resync(tail, LossReason::Corrupt));
        }
        sink.commit(&meta);
        self.advance(&meta);
        Step::Deliver(ReadStep::Frame(meta))
    }

    /// The body of the validated-header frame at the cursor into a sink that takes every
    /// topic ([`FrameSink::filters_topics`] false): one copy of topic and payload, the claim
    /// counter re-checked, the frame check over the copy, then the copied topic's UTF-8.
    /// Inlined into `read`: the serving path's one call per frame fewer, and its step is
    /// returned in registers rather than through memory.
    #[inline(always)]
    fn copy_unfiltered(
        &mut self,
        sink: &mut impl FrameSink,
        header: &FrameHeader,
        meta: &FrameMeta,
        tail: Tail,
    ) -> ReadStep {
        let body_len = meta.body_len();
        let Some(buf) = sink.begin(meta) else {
            // No room in the sink now: nothing is copied and the cursor stays on this frame.
            sink.abort();
            return ReadStep::Pending;
        };
        let start = buf.len();
        self.view.mapping().append_out(
            self.pos.wrapping_add(FRAME_HEADER_LEN as u64),
            body_len,
            buf,
        );
        // Copy first, then re-check the claim counter: if a producer claimed over our frame
        // while we copied, the copy may be torn and is dropped.
        if self.lapped(self.claim_position()) {
            sink.abort();
            return self.resync(self.view.tail(), LossReason::Lapped);
        }
        // Validate the copy, never the ring: the check covers the appended bytes only.
        let body = buf.get(start..).unwrap_or_default();
        if body.len() != body_len || frame_check_body(header, body) != header.check {
            sink.abort();
            return self.resync(tail, LossReason::Corrupt);
        }
        // The one UTF-8 check of the frame, on the copy the sink keeps.
        if !body
            .get(..usize::from(header.topic_len))
            .is_some_and(is_utf8)
        {
            // The frame is whole (its check holds over the copy) but its topic is not a
            // string: one corrupt frame, skipped by its length.
            sink.abort();
            self.advance(meta);
            return ReadStep::Loss(Loss {
                reason: LossReason::Corrupt,
                frames: 1,
                first_seq: meta.seq,
            });
        }
        sink.commit(meta);
        self.advance(meta);
        ReadStep::Frame(*meta)
    }

    /// The claim position after an acquire fence: everything we copied before is ordered
    /// before this load.
    fn claim_position(&self) -> u64 {
        fence(Ordering::Acquire);
        self.view.mapping().claim_position().load(Ordering::Relaxed)
    }

    fn lapped(&self, tail_pos: u64) -> bool {
        distance(self.pos, tail_pos) > self.capacity
    }

    fn advance(&mut self, meta: &FrameMeta) {
        self.step_over(meta.frame_len() as u64);
        self.next_seq = meta.seq.wrapping_add(1);
    }

    /// Moves the cursor past a frame of `frame_len` bytes; the stall (if any) is over.
    fn step_over(&mut self, frame_len: u64) {
        self.pos = self.pos.wrapping_add(frame_len);
        self.stall_since = None;
        self.stall_scan = None;
    }

    /// The frame at the cursor is claimed but not committed.
    fn stalled(&mut self, tail: Tail) -> ReadStep {
        let now = Instant::now();
        let since = *self.stall_since.get_or_insert(now);
        if now.duration_since(since) < self.options.stall_timeout {
            return ReadStep::Pending;
        }
        // Past the stall bound: look for the next committed frame after this one, a bounded
        // slice of positions per call. If none is committed yet, keep waiting rather than
        // skip live frames, unless producers have been idle for a whole stall period.
        let restart = StallScan {
            next: self.pos.wrapping_add(FRAME_ALIGN),
            tail_pos_at_start: tail.pos,
            started: now,
        };
        let scan = *self.stall_scan.get_or_insert(restart);
        let remaining = distance(scan.next, tail.pos).min(self.capacity);
        let step = remaining.min(STALL_SCAN_BUDGET);
        let end = scan.next.wrapping_add(step);
        let min_seq = self.next_seq.saturating_add(1);
        if let Some(found) = self.scan(scan.next, end, tail, Some(min_seq)) {
            return self.jump(found, LossReason::Abandoned);
        }
        if step < remaining {
            self.stall_scan = Some(StallScan { next: end, ..scan });
            return ReadStep::Pending;
        }
        let idle = tail.pos == scan.tail_pos_at_start
            && now.duration_since(scan.started) >= self.options.stall_timeout;
        if idle {
            return self.jump_to_tail(tail, LossReason::Abandoned);
        }
        self.stall_scan = Some(restart);
        ReadStep::Pending
    }

    /// Moves the cursor to the claim word itself. Exact: the claim word's position and
    /// sequence belong together, so `tail.seq - next_seq` frames were skipped.
    fn jump_to_tail(&mut self, tail: Tail, reason: LossReason) -> ReadStep {
        let lost = tail.seq.saturating_sub(self.next_seq);
        let first_seq = self.next_seq;
        self.set_cursor(tail.pos, tail.seq);
        if lost == 0 {
            ReadStep::Idle
        } else {
            ReadStep::Loss(Loss {
                reason,
                frames: lost,
                first_seq,
            })
        }
    }

    /// Moves past lapped or corrupt data to the next valid frame, reporting what was lost.
    fn resync(&mut self, tail: Tail, reason: LossReason) -> ReadStep {
        let from = match reason {
            LossReason::Lapped => tail.pos.wrapping_sub(self.capacity),
            _ => self.pos.wrapping_add(FRAME_ALIGN),
        };
        match self.scan(from, tail.pos, tail, Some(self.next_seq.saturating_add(1))) {
            Some(found) => self.jump(found, reason),
            // Nothing valid between here and the tail: skip to the tail.
            None => self.jump_to_tail(tail, reason),
        }
    }

    fn jump(&mut self, found: Found, reason: LossReason) -> ReadStep {
        let first_seq = self.next_seq;
        let lost = found.header.seq - first_seq;
        self.set_cursor(found.pos, found.header.seq);
        ReadStep::Loss(Loss {
            reason,
            frames: lost,
            first_seq,
        })
    }

    /// Scans aligned positions in `[from, to)` (clamped to the retained window below the
    /// tail) for the first header that names its own position, is structurally valid, and
    /// has a plausible sequence number (at least `min_seq`, below the tail's, and no more
    /// frames than could fit in between).
    fn scan(&self, from: u64, to: u64, tail: Tail, min_seq: Option<u64>) -> Option<Found> {
        let map = self.view.mapping();
        // Work in distances back from the tail: positions wrap (a forged claim word can
        // push them past 2^64), offsets in the ring are taken modulo the capacity anyway.
        let window_start = tail.pos.wrapping_sub(self.capacity);
        let from = if distance(from, tail.pos) > self.capacity {
            window_start
        } else {
            from
        };
        let mut pos = align_up(from);
        let span = distance(pos, to).min(distance(pos, tail.pos));
        if span > self.capacity {
            return None;
        }
        // Whole frame slots only: a forged claim word can make `to` unaligned, and the walk
        // must still end exactly (it steps by 8 from an aligned start).
        let mut slots = span / FRAME_ALIGN;
        while slots > 0 {
            slots -= 1;
            let commit = map.commit_word(pos).load(Ordering::Relaxed);
            if names_position(commit, pos) {
                fence(Ordering::Acquire);
                let mut bytes = [0u8; FRAME_HEADER_LEN];
                map.copy_out(pos, &mut bytes);
                if let Some(header) = parse_frame_header(&bytes)
                    && self.plausible(&header, pos, tail, min_seq)
                    && !self.lapped_at(pos, self.claim_position())
                {
                    return Some(Found { pos, header });
                }
            }
            pos = pos.wrapping_add(FRAME_ALIGN);
        }
        None
    }

    fn lapped_at(&self, pos: u64, tail_pos: u64) -> bool {
        distance(pos, tail_pos) > self.capacity
    }

    fn plausible(&self, header: &FrameHeader, pos: u64, tail: Tail, min_seq: Option<u64>) -> bool {
        if !matches!(
            check_header(header, pos, self.max_payload),
            HeaderCheck::Committed | HeaderCheck::Discarded
        ) {
            return false;
        }
        let len = frame_len(usize::from(header.topic_len), header.payload_len as usize) as u64;
        if header.seq >= tail.seq || len > distance(pos, tail.pos) {
            return false;
        }
        match min_seq {
            None => true,
            Some(min) => {
                // Frames between the cursor and `pos` are at least MIN_FRAME_LEN each, which
                // bounds how far the sequence can have moved.
                let room = distance(self.pos, pos) / MIN_FRAME_LEN;
                header.seq >= min && header.seq - self.next_seq <= room
            }
        }
    }
}

enum Step {
    Deliver(ReadStep),
    Skipped,
}

/// True while frames precede the requested start; the first frame at or after the start
/// ends skipping for good.
fn before_start(skip: &mut Skip, meta: &FrameMeta) -> bool {
    let before = match *skip {
        Skip::None => false,
        Skip::BelowSeq(n) => meta.seq < n,
        Skip::BeforeTime(ts) => meta.timestamp_ns < ts,
    };
    if !before {
        *skip = Skip::None;
    }
    before
}

/// True when `bytes` are UTF-8 (ASCII, the common case for topics, is checked first).
#[inline]
fn is_utf8(bytes: &[u8]) -> bool {
    is_ascii(bytes) || std::str::from_utf8(bytes).is_ok()
}

/// `bytes.is_ascii()`, with topics of up to 16 bytes (the common case) checked inline by
/// two overlapping loads instead of a call to the general loop.
#[inline(always)]
fn is_ascii(bytes: &[u8]) -> bool {
    let n = bytes.len();
    if n <= 3 {
        return bytes.iter().all(u8::is_ascii);
    }
    if n <= 8
        && let (Some(a), Some(b)) = (bytes.first_chunk::<4>(), bytes.last_chunk::<4>())
    {
        return (u32::from_ne_bytes(*a) | u32::from_ne_bytes(*b)) & 0x8080_8080 == 0;
    }
    if n <= 16
        && let (Some(a), Some(b)) = (bytes.first_chunk::<8>(), bytes.last_chunk::<8>())
    {
        return (u64::from_ne_bytes(*a) | u64::from_ne_bytes(*b)) & 0x8080_8080_8080_8080 == 0;
    }
    bytes.is_ascii()
}

fn align_up(pos: u64) -> u64 {
    pos.wrapping_add(FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1)
}

/// How far `to` is ahead of `from`, in the wrapping position space.
#[inline]
fn distance(from: u64, to: u64) -> u64 {
    to.wrapping_sub(from)
}

/// A distance this large means "behind", not "ahead": the claim word moved backwards.
const BACKWARDS: u64 = 1 << 63;

/// Oldest retained frame and the claim counter of a ring.
#[derive(Clone, Copy, Debug)]
pub struct RingBounds {
    /// The oldest frame still in the ring, if any.
    pub oldest: Option<FrameMeta>,
    /// Sequence of the newest claimed frame, if any.
    pub newest_seq: Option<u64>,
    /// The claim counter.
    pub tail: Tail,
}

impl RingView {
    /// Oldest retained frame and the claim counter. Scans a little; call it a few times a
    /// second at most.
    pub fn bounds(self: &Arc<Self>) -> RingBounds {
        let tail = self.tail();
        let newest_seq = tail.seq.checked_sub(1);
        let oldest = RingReader::new(
            Arc::clone(self),
            StartAt::Earliest,
            ReaderOptions::default(),
        )
        .ok()
        .and_then(|reader| {
            if reader.pos == tail.pos {
                return None;
            }
            let mut bytes = [0u8; FRAME_HEADER_LEN];
            self.mapping().copy_out(reader.pos, &mut bytes);
            let header = parse_frame_header(&bytes)?;
            matches!(
                check_header(&header, reader.pos, self.max_payload()),
                HeaderCheck::Committed | HeaderCheck::Discarded
            )
            .then(|| FrameMeta::from_header(&header))
        });
        RingBounds {
            oldest,
            newest_seq,
            tail,
        }
    }
}

/// Why a reader could not be positioned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// A resume asked for a sequence the ring has not written yet.
    #[error(
        "sequence {requested} has not been written yet (the next frame will be {next}); resume from a sequence you received, or the ring was replaced"
    )]
    SequenceInFuture {
        /// The sequence asked for.
        requested: u64,
        /// The next sequence the ring will write.
        next: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::is_ascii;

    #[test]
    fn short_ascii_check_agrees_with_std() {
        for n in 0..40 {
            let clean = vec![b'a'; n];
            assert!(is_ascii(&clean), "{n} ASCII bytes");
            for i in 0..n {
                let mut bad = clean.clone();
                bad[i] = 0x80 | (i as u8);
                assert_eq!(is_ascii(&bad), bad.is_ascii(), "non-ASCII byte {i} of {n}");
                assert!(!is_ascii(&bad), "non-ASCII byte {i} of {n}");
            }
        }
    }
}
