//! Hand-encoding of `ringside.v1.Batch` messages straight into the outgoing
//! buffer: one copy per payload byte.
//!
//! # Copies per payload byte: exactly one
//!
//! The ring reader appends a frame's topic and payload (contiguous in the ring)
//! in one `memcpy` to the batch buffer [`BatchEncoder::begin_frame`] returns,
//! whose length is set so that the payload lands exactly where the protobuf
//! `payload` field's bytes belong. The topic lands
//! just in front of it; [`BatchEncoder::commit_frame`] then moves the topic
//! (at most 255 bytes, never payload) a few bytes left to make room for the
//! payload field's key and length, and writes the frame's other fields. The
//! finished batch is frozen into a `Bytes` and handed to hyper/h2, which write
//! it to the socket without copying. Payload bytes are therefore copied once
//! (ring -> batch buffer), into the buffer's spare capacity without zero-filling
//! it first (`RingMapping::append_out` in the ring crate holds the `unsafe`; the
//! sidecar has none). The reader validates the appended copy (frame check, the
//! topic's UTF-8) before [`BatchEncoder::commit_frame`] keeps it.
//!
//! # Layout of one batch chunk
//!
//! ```text
//! [0][len: u32 BE]                      gRPC message prefix (uncompressed)
//! [ring_id: fixed64]                    Batch.ring_id
//! [Loss]*                               Batch.losses (all before any frame)
//! [Frame]*                              Batch.frames
//! [resume_seq, from_seq, filtered, discarded: varints]   the trailer
//! ```
//!
//! Every chunk is at most `max_bytes` long (the subscriber buffer): a frame is
//! taken only when it and the trailer still fit (the reader offers a declined
//! frame again to the next batch), so a batch holds as many frames as fit.
//!
//! # Accounting
//!
//! A batch covers the sequence numbers `[from_seq, resume_seq)`: each one is a
//! frame, a loss, filtered or discarded (see the proto). The encoder keeps the
//! counts between batches, so a batch sent later still accounts for frames
//! filtered or discarded before it; `resume_seq` never goes backwards.

use crate::wire::{self, GRPC_PREFIX_LEN, MAX_VARINT_LEN, WIRE_FIXED64, WIRE_VARINT};
use bytes::{Bytes, BytesMut};
use ringside_proto::v1;
use ringside_ring::{FrameMeta, LossReason};

/// The `ringside.v1.LossReason` number of a reason.
fn reason_code(reason: LossReason) -> u64 {
    v1::LossReason::from(reason) as i32 as u64
}

/// A run of consecutive lost sequence numbers with one reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LossRun {
    /// Why.
    pub reason: LossReason,
    /// How many frames.
    pub frames: u64,
    /// First lost sequence number.
    pub first_seq: u64,
}

impl LossRun {
    fn try_merge(&mut self, next: &LossRun) -> bool {
        if self.reason == next.reason
            && self.first_seq.checked_add(self.frames) == Some(next.first_seq)
        {
            self.frames = self.frames.saturating_add(next.frames);
            true
        } else {
            false
        }
    }

    fn body_len(&self) -> usize {
        wire::varint_field_len(reason_code(self.reason))
            + wire::varint_field_len(self.frames)
            + wire::varint_field_len(self.first_seq)
    }
}

/// Worst-case encoded size of one loss entry (key, length, three fields).
const MAX_LOSS_LEN: usize = 2 + 2 + 2 * (1 + MAX_VARINT_LEN);
/// Size of the trailer at most: `resume_seq`, `from_seq`, `filtered`, `discarded`.
const MAX_TRAILER_LEN: usize = 4 * (1 + MAX_VARINT_LEN);
/// Size of the batch header: gRPC prefix + `ring_id` fixed64 field.
const HEADER_LEN: usize = GRPC_PREFIX_LEN + 1 + 8;
/// Worst-case bytes a frame adds besides topic and payload: the frame's key and
/// length, seq, timestamp, producer id, topic and payload keys and lengths.
pub const MAX_FRAME_OVERHEAD: usize =
    2 + 5 + (1 + MAX_VARINT_LEN) * 2 + (1 + 5) + (1 + 2) + (1 + 5);

/// The smallest gRPC message (prefix included) the encoder makes: a smaller batch is padded
/// with a `filler` field up to this size (see the proto). Rust's h2 client charges each
/// DATA frame under 256 bytes that its application has not read yet `256 - len` bytes
/// against a budget of `max(connection window / 2, 25,600)`, and closes the connection
/// (GOAWAY ENHANCE_YOUR_CALM) when it runs out. A client that pauses on a quiet stream
/// holds at most a window of unread frames: at 192 bytes or more each, at most a window's
/// `64 / 192` (a third), inside the budget. Batches of a busy stream are far larger.
pub const MIN_MESSAGE_LEN: usize = 192;

/// A shared chunk smaller than this is copied behind its head into one DATA frame (see
/// [`BatchEncoder::shared_head`]); a larger one is sent as it is (no copy) behind a separate
/// head. The head alone (under 60 bytes) is charged about 200 bytes by an h2 client's
/// small-frame budget while unread (see [`MIN_MESSAGE_LEN`]); a DATA frame of this size or
/// more pays 768 or more back, so a head with its large chunk never draws on the budget.
/// The copy is at most this many bytes, inside the batch the subscriber's budget term
/// counts.
pub const SEPARATE_CHUNK_MIN: usize = 1024;

/// Appends a `filler` field to the message in `out` (gRPC prefix included) that
/// `to_come` more bytes will follow, when the whole would be under [`MIN_MESSAGE_LEN`]:
/// it then reaches that size (one byte more when the filler's length takes two varint
/// bytes). Returns the bytes appended.
fn append_filler(out: &mut BytesMut, to_come: usize) -> usize {
    let short = MIN_MESSAGE_LEN.saturating_sub(out.len() + to_come);
    if short == 0 {
        return 0;
    }
    let body = short.saturating_sub(2);
    let mut key = [0u8; 1 + MAX_VARINT_LEN];
    let n = wire::write_len_prefix(&mut key, wire::batch::FILLER, body);
    out.extend_from_slice(&key[..n]);
    out.resize(out.len() + body, 0);
    n + body
}

/// Writes the gRPC message prefix (uncompressed, big-endian length) for a message whose
/// bytes, prefix included, are `total` long, into the first [`GRPC_PREFIX_LEN`] bytes of
/// `out`.
fn write_grpc_prefix(out: &mut [u8], total: usize) {
    let len = u32::try_from(total - GRPC_PREFIX_LEN).unwrap_or(u32::MAX);
    out[0] = 0;
    out[1..GRPC_PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
}

/// Smallest useful batch: header, one loss, one maximum frame, trailer.
pub fn min_batch_bytes(max_topic: usize, max_payload: usize) -> usize {
    (HEADER_LEN + MAX_LOSS_LEN + MAX_FRAME_OVERHEAD + max_topic + max_payload + MAX_TRAILER_LEN)
        .max(MIN_MESSAGE_LEN + 1)
}

/// Where the frame being copied sits in the buffer.
#[derive(Debug, Clone, Copy)]
struct OpenFrame {
    header: FrameMeta,
    /// Offset of the frame's key in the buffer.
    start: usize,
    /// Offset where the topic's bytes belong (after the topic field's key and length).
    topic_at: usize,
    /// Offset where the reader copies the topic (just before the payload): `topic_at` plus
    /// the payload field's key and length, which sit in front of it until the commit.
    copy_at: usize,
}

// The smallest entry (1-byte topic, empty payload) plus the trailer's room is longer than
// FRAME_PREFIX_ROOM: `begin_frame` may append that many bytes before cutting them back.
const _: () = assert!(FRAME_PREFIX_ROOM <= MAX_TRAILER_LEN + 12);
/// Room for a frame entry's bytes in front of its topic: the frame's key and length, `seq`,
/// `timestamp_ns` and `producer_id`, the topic's key and length, and the payload's key and
/// length (written in front of the topic until the commit moves the topic in front of it).
const FRAME_PREFIX_ROOM: usize = 1 + 5 + 3 * (1 + MAX_VARINT_LEN) + (1 + 2) + (1 + 5);
/// Where [`BatchEncoder::begin_frame`] starts the fields after the frame's key and length in
/// its scratch array: those two are written right-aligned in front, once the body's length
/// is known.
const FRAME_FIELDS_AT: usize = 1 + 5;

/// Moves the `t` topic bytes at `from` left to `to` (`to < from`, within `buf`). A topic of
/// under 16 bytes with 16 bytes of the buffer behind it (the payload follows it) moves as
/// one 16-byte word (under 8 bytes, one 8-byte word): its first `t` bytes replace the
/// destination's, whose other bytes are kept (they lie in the gap the payload's key and
/// length fill next, or in the topic's old place). No `memmove` call for the common short
/// topic. The two word sizes are spelled out rather than made generic: `u64` and `u128`
/// share no trait for the masks in std.
#[inline(always)]
fn move_topic(buf: &mut [u8], from: usize, to: usize, t: usize) {
    if t < 8
        && let Some(src) = buf.get(from..).and_then(<[u8]>::first_chunk::<8>)
    {
        let src = u64::from_le_bytes(*src);
        if let Some(dst) = buf.get_mut(to..).and_then(<[u8]>::first_chunk_mut::<8>) {
            let keep = u64::MAX << (8 * t);
            *dst = ((src & !keep) | (u64::from_le_bytes(*dst) & keep)).to_le_bytes();
            return;
        }
    }
    if t < 16
        && let Some(src) = buf.get(from..).and_then(<[u8]>::first_chunk::<16>)
    {
        let src = u128::from_le_bytes(*src);
        if let Some(dst) = buf.get_mut(to..).and_then(<[u8]>::first_chunk_mut::<16>) {
            let keep = u128::MAX << (8 * t);
            *dst = ((src & !keep) | (u128::from_le_bytes(*dst) & keep)).to_le_bytes();
            return;
        }
    }
    buf.copy_within(from..from + t, to);
}

/// Builds batches for one subscriber into a buffer of at most `max_bytes`, and
/// accounts for every sequence number between them.
#[derive(Debug)]
pub struct BatchEncoder {
    buf: BytesMut,
    ring_id: u64,
    max_bytes: usize,
    max_frames: u32,
    /// A batch is open (header written).
    open: bool,
    frames: u32,
    losses_written: u32,
    /// Losses seen but not yet written (merged while contiguous).
    pending_loss: Option<LossRun>,
    /// The pending loss is stale (see `passed_end`): it merges only with stale runs, so a
    /// run never straddles sequences passed and sequences not yet accounted.
    pending_stale: bool,
    /// The pending loss must start the next batch (it came after frames).
    loss_ends_batch: bool,
    cur: Option<OpenFrame>,
    /// Payload bytes committed in the open batch.
    payload_bytes: u64,
    /// Where the next batch's range starts: the last batch's `resume_seq`, or the
    /// stream's first event (None until then).
    from: Option<u64>,
    /// Frames skipped by the topic filter since the last batch.
    filtered: u64,
    /// Discarded reservations passed since the last batch.
    discarded: u64,
    /// One past the last frame in the open batch.
    frames_end: Option<u64>,
    /// One past the last sequence the current range accounts for so far with filtered and
    /// discarded counts and losses written (frames: `frames_end`, kept apart to keep the
    /// per-frame path short): the next `resume_seq` is never below either.
    range_end: Option<u64>,
    /// With `frames_end`: one past the last sequence of anything recorded on this stream
    /// (including a loss not written yet, and ranges taken from shared chunks), at least
    /// where the stream starts ([`stream_starts_at`](Self::stream_starts_at)). A loss that
    /// starts below it is stale: it names a sequence already passed (only after a forged
    /// claim word, ring-format.md §5.1).
    passed_end: u64,
    /// `resume_seq` of the last batch.
    last_resume: Option<u64>,
    /// Timestamp of the open batch's first frame.
    first_ts: u64,
}

impl BatchEncoder {
    /// An encoder for batches of at most `max_bytes` (clamped up to one
    /// maximum-size frame) and at most `max_frames` frames (0 = unbounded).
    pub fn new(
        ring_id: u64,
        max_bytes: usize,
        max_frames: u32,
        max_topic: usize,
        max_payload: usize,
    ) -> Self {
        let max_bytes = max_bytes.max(min_batch_bytes(max_topic, max_payload));
        Self {
            buf: BytesMut::new(),
            ring_id,
            max_bytes,
            max_frames,
            open: false,
            frames: 0,
            losses_written: 0,
            pending_loss: None,
            pending_stale: false,
            loss_ends_batch: false,
            cur: None,
            payload_bytes: 0,
            from: None,
            filtered: 0,
            discarded: 0,
            frames_end: None,
            range_end: None,
            passed_end: 0,
            last_resume: None,
            first_ts: 0,
        }
    }

    /// Tells the encoder where its stream starts: no sequence below `seq` is this stream's
    /// business, so a loss under it that comes before anything else is stale (reported
    /// below the first range, which starts at the stream's first event at or after `seq`).
    /// Call it once, before any event, with [`RingReader::accounts_from`].
    ///
    /// [`RingReader::accounts_from`]: ringside_ring::RingReader::accounts_from
    pub fn stream_starts_at(&mut self, seq: u64) {
        self.passed_end = self.passed_end.max(seq);
    }

    /// The byte cap of one batch chunk.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Frames in the open batch.
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Timestamp (ns since the Unix epoch, the producer's clock) of the open batch's first
    /// frame; meaningful while [`frames`](Self::frames) is above 0.
    pub fn first_timestamp_ns(&self) -> u64 {
        self.first_ts
    }

    /// Payload bytes in the open batch.
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }

    /// True when frames were filtered or discarded since the last batch, or a loss
    /// waits: a batch (a progress batch, if nothing else) would say something new.
    pub fn has_unreported(&self) -> bool {
        self.filtered > 0 || self.discarded > 0 || self.pending_loss.is_some()
    }

    /// Counts a frame the topic filter skipped.
    pub fn count_filtered(&mut self, seq: u64) {
        self.from.get_or_insert(seq);
        self.filtered += 1;
        self.accounted(seq.saturating_add(1));
    }

    /// Counts a discarded reservation the reader passed.
    pub fn count_discarded(&mut self, seq: u64) {
        self.from.get_or_insert(seq);
        self.discarded += 1;
        self.accounted(seq.saturating_add(1));
    }

    /// The current range accounts for every sequence below `end`.
    #[inline]
    fn accounted(&mut self, end: u64) {
        self.range_end = Some(self.range_end.map_or(end, |e| e.max(end)));
        self.passed_end = self.passed_end.max(end);
    }

    /// The sequence a client must resume from if the stream ended now, with the
    /// reader at `next_seq`: the `resume_seq` the next batch would carry, never
    /// behind the last batch's.
    pub fn resume_point(&self, next_seq: u64) -> u64 {
        let from = self.from.unwrap_or(next_seq);
        // What the range counted (frames in the open batch, filtered and discarded counts,
        // losses written) is delivered with it: never resume before it.
        let floor = from
            .max(self.range_end.unwrap_or(0))
            .max(self.frames_end.unwrap_or(0));
        // A loss not written yet must be reported again after a resume, so the resume
        // point stays at it, unless it names sequences already passed (only after a forged
        // claim word, ring-format.md §5.1 step 4): then it cannot be re-read anyway.
        let capped = match self.pending_loss {
            Some(l) => next_seq.min(l.first_seq),
            None => next_seq,
        };
        capped.max(floor).max(self.last_resume.unwrap_or(0))
    }

    /// Opens a batch unless one is open: the check inlined, the opening (once per batch)
    /// out of line.
    #[inline(always)]
    fn open_batch(&mut self) {
        if !self.open {
            self.start_batch();
        }
    }

    #[cold]
    #[inline(never)]
    fn start_batch(&mut self) {
        self.buf.clear();
        self.buf.reserve(self.max_bytes);
        self.buf.extend_from_slice(&[0u8; GRPC_PREFIX_LEN]);
        self.buf
            .extend_from_slice(&[wire::key(wire::batch::RING_ID, WIRE_FIXED64)]);
        self.buf.extend_from_slice(&self.ring_id.to_le_bytes());
        self.open = true;
        self.frames = 0;
        self.losses_written = 0;
        self.payload_bytes = 0;
    }

    /// True when another frame may be read into this batch: room for the
    /// smallest frame, the frame-count bound not reached, and no loss waiting
    /// to start the next batch. Whether the next frame itself fits is decided
    /// by [`fits`](Self::fits) once its size is known.
    pub fn has_room(&self) -> bool {
        if self.loss_ends_batch {
            return false;
        }
        if self.max_frames != 0 && self.frames >= self.max_frames {
            return false;
        }
        self.used() + MAX_LOSS_LEN + MAX_FRAME_OVERHEAD + 1 + MAX_TRAILER_LEN <= self.max_bytes
    }

    /// True when the frame `h` fits in this batch, with a pending loss before it
    /// and the trailer after it. Always true for an empty batch (`max_bytes`
    /// holds one maximum-size frame).
    pub fn fits(&self, h: &FrameMeta) -> bool {
        self.fits_total(frame_layout(h).0)
    }

    /// [`fits`](Self::fits) for a frame entry of `total` encoded bytes.
    fn fits_total(&self, total: usize) -> bool {
        let loss = if self.pending_loss.is_some() {
            MAX_LOSS_LEN
        } else {
            0
        };
        self.used() + loss + total + MAX_TRAILER_LEN <= self.max_bytes
    }

    /// Bytes the open batch uses (its header, when none is open yet).
    fn used(&self) -> usize {
        if self.open {
            self.buf.len()
        } else {
            HEADER_LEN
        }
    }

    /// Forgets the open batch (not the accounting between batches).
    fn reset_counts(&mut self) {
        self.open = false;
        self.loss_ends_batch = false;
        self.frames = 0;
        self.losses_written = 0;
        self.payload_bytes = 0;
        self.frames_end = None;
    }

    /// Records lost frames. Losses are written before the first frame of a
    /// batch; a loss arriving after frames closes the batch (see
    /// [`has_room`](Self::has_room)) and opens the next one.
    pub fn record_loss(&mut self, loss: LossRun) {
        if loss.frames == 0 {
            return;
        }
        // A stale loss (under sequences already passed) is reported below the range of the
        // batch it comes in, never inside a range that may count its sequences already: in
        // the current batch when its range starts at or after the loss's end, else in the
        // next one (the current batch then closes first, whatever it holds).
        let stale = loss.first_seq < self.passed_end.max(self.frames_end.unwrap_or(0));
        let end = loss.first_seq.saturating_add(loss.frames);
        let next_range = stale && self.from.is_some_and(|from| from < end);
        // The range starts at the stream's first event; a stale loss as that event lies
        // below where the stream starts, and so does not start the range.
        self.from.get_or_insert(if stale {
            self.passed_end
        } else {
            loss.first_seq
        });
        self.passed_end = self.passed_end.max(end);
        if let Some(p) = &mut self.pending_loss {
            if !next_range && self.pending_stale == stale && p.try_merge(&loss) {
                return;
            }
            // A different run while one is pending: write the older one now.
            // With frames already in the batch this puts a loss after frames;
            // the driving loop never gets here (it stops reading once a loss
            // closes the batch), and sequence numbers keep it unambiguous.
            self.flush_loss();
        }
        self.pending_loss = Some(loss);
        self.pending_stale = stale;
        if self.frames > 0 || next_range {
            self.loss_ends_batch = true;
        }
    }

    /// Writes the pending loss into the open batch (opening one if needed).
    #[inline]
    fn flush_loss(&mut self) {
        let Some(loss) = self.pending_loss.take() else {
            return;
        };
        self.open_batch();
        self.write_loss(&loss);
    }

    fn write_loss(&mut self, loss: &LossRun) {
        let body = loss.body_len();
        let mut tmp = [0u8; MAX_LOSS_LEN];
        let mut n = wire::write_len_prefix(&mut tmp, wire::batch::LOSSES, body);
        n += wire::write_varint_field(&mut tmp[n..], wire::loss::REASON, reason_code(loss.reason));
        n += wire::write_varint_field(&mut tmp[n..], wire::loss::FRAMES, loss.frames);
        n += wire::write_varint_field(&mut tmp[n..], wire::loss::FIRST_SEQ, loss.first_seq);
        self.buf.extend_from_slice(&tmp[..n]);
        self.losses_written += 1;
        self.accounted(loss.first_seq.saturating_add(loss.frames));
    }

    /// Starts a frame and returns the buffer the reader appends exactly
    /// `topic_len + payload_len` bytes (topic, then payload) to, or `None` when the
    /// frame does not [`fit`](Self::fits) (the reader then offers it again to the
    /// next batch). The buffer has room for them already: the append never
    /// allocates.
    ///
    /// Call only after [`has_room`](Self::has_room) returned true, for a frame
    /// no larger than the maximum this encoder was built for.
    pub fn begin_frame(&mut self, h: &FrameMeta) -> Option<&mut BytesMut> {
        // The entry's bytes in front of the topic are written once, here, into a scratch
        // array (the fields first, then the frame's key and length right-aligned in front
        // of them), and appended with one copy.
        let mut tmp = [0u8; FRAME_PREFIX_ROOM + FRAME_FIELDS_AT + 8];
        let t = usize::from(h.topic_len);
        let payload_len = h.payload_len as usize;
        // The fields go in order, each written at the offset the previous one returned, so
        // the run writer's bytes past a varint (overwritten by the next field, or past `i`,
        // cut off below) do no harm.
        let mut i = FRAME_FIELDS_AT;
        i = wire::put_varint_field(&mut tmp, i, wire::frame::SEQ, h.seq);
        // A wall-clock timestamp takes 9 varint bytes: written with the run writer (one
        // 8-byte store and a byte) rather than byte by byte.
        tmp[i] = wire::key(wire::frame::TIMESTAMP_NS, WIRE_VARINT);
        i = wire::put_varint_run(&mut tmp, i + 1, h.timestamp_ns);
        i = wire::put_varint_field(
            &mut tmp,
            i,
            wire::frame::PRODUCER_ID,
            u64::from(h.producer_id),
        );
        i = wire::put_len_prefix(&mut tmp, i, wire::frame::TOPIC, t);
        let topic_rel = i;
        i = wire::put_len_prefix(&mut tmp, i, wire::frame::PAYLOAD, payload_len);
        let body_len = (i - FRAME_FIELDS_AT) + t + payload_len;
        let first = FRAME_FIELDS_AT - 1 - wire::varint_len(body_len as u64);
        let total = (i - first) + t + payload_len;
        if !self.fits_total(total) {
            return None;
        }
        wire::put_len_prefix(&mut tmp, first, wire::batch::FRAMES, body_len);
        self.open_batch();
        self.flush_loss();
        let start = self.buf.len();
        // Append a fixed-size run of the scratch array from the entry's first byte (a few
        // moves, no `memcpy` call), then cut the buffer back to the entry's prefix. The
        // batch has room for the whole run: `fits_total` left `total + MAX_TRAILER_LEN`
        // bytes after `start`, and the run is no longer than the smallest entry plus that.
        debug_assert!(self.buf.capacity() >= start + FRAME_PREFIX_ROOM);
        self.buf
            .extend_from_slice(&tmp[first..first + FRAME_PREFIX_ROOM]);
        self.buf.truncate(start + (i - first));
        self.cur = Some(OpenFrame {
            header: *h,
            start,
            topic_at: start + (topic_rel - first),
            copy_at: start + (i - first),
        });
        debug_assert!(self.buf.capacity() >= start + total, "fits() left room");
        debug_assert_eq!(
            total,
            frame_layout(h).0,
            "the entry's size as fits() computes it"
        );
        Some(&mut self.buf)
    }

    /// Keeps the frame appended since [`begin_frame`](Self::begin_frame), which the
    /// reader validated (frame check, UTF-8 topic, and a topic the filter accepted).
    /// A frame whose appended length is not exactly its body's is dropped instead;
    /// returns whether the frame was kept.
    pub fn commit_frame(&mut self) -> bool {
        let Some(f) = self.cur.take() else {
            return false;
        };
        let h = f.header;
        let t = usize::from(h.topic_len);
        if self.buf.len() != f.copy_at + h.body_len() {
            self.buf.truncate(f.start);
            return false;
        }
        // Move the topic (not the payload) from its scratch spot to its field, and write the
        // payload's key and length between it and the payload, which already sits in place.
        move_topic(&mut self.buf, f.copy_at, f.topic_at, t);
        let gap = &mut self.buf[f.topic_at + t..f.copy_at + t];
        let n = wire::write_len_prefix(gap, wire::frame::PAYLOAD, h.payload_len as usize);
        debug_assert_eq!(n, gap.len(), "the payload's key and length fill the gap");
        if self.frames == 0 {
            self.first_ts = h.timestamp_ns;
        }
        self.frames += 1;
        self.payload_bytes += u64::from(h.payload_len);
        self.from.get_or_insert(h.seq);
        self.frames_end = Some(h.seq.saturating_add(1));
        true
    }

    /// Drops the frame copied since [`begin_frame`](Self::begin_frame).
    pub fn abort_frame(&mut self) {
        if let Some(f) = self.cur.take() {
            self.buf.truncate(f.start);
        }
    }

    /// Writes the trailer fields of the batch that ends with the reader at `next_seq`
    /// (`resume_seq`, then `from_seq`, `filtered` and `discarded` when not 0) into `out`,
    /// returns their length, and starts the next range there.
    fn close_range(&mut self, next_seq: u64, out: &mut [u8; MAX_TRAILER_LEN]) -> usize {
        let resume = self.resume_point(next_seq);
        let from = self.from.unwrap_or(resume);
        let mut n = wire::write_varint_field(out, wire::batch::RESUME_SEQ, resume);
        for (field, value) in [
            (wire::batch::FROM_SEQ, from),
            (wire::batch::FILTERED, self.filtered),
            (wire::batch::DISCARDED, self.discarded),
        ] {
            if value != 0 {
                n += wire::write_varint_field(&mut out[n..], field, value);
            }
        }
        self.last_resume = Some(resume);
        self.from = Some(resume);
        self.range_end = None;
        self.passed_end = self.passed_end.max(resume);
        self.filtered = 0;
        self.discarded = 0;
        n
    }

    /// The frame-count bound of one batch (0 = none).
    pub fn max_frames(&self) -> u32 {
        self.max_frames
    }

    /// Frames the topic filter skipped since the last batch.
    pub fn filtered(&self) -> u64 {
        self.filtered
    }

    /// Discarded reservations passed since the last batch.
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    /// True when nothing of the next batch is decided yet: no batch open, no loss waiting
    /// to be written. The frames the next batch holds then depend only on the ring, the
    /// reader's position and this encoder's bounds ([`max_bytes`](Self::max_bytes),
    /// [`max_frames`](Self::max_frames)), not on anything carried from earlier batches.
    pub fn is_clean(&self) -> bool {
        !self.open && self.cur.is_none() && self.pending_loss.is_none() && !self.loss_ends_batch
    }

    /// The open batch's frames, when they can serve as a shared chunk: at least one frame,
    /// and no loss written or waiting (so the frame entries follow the batch header
    /// directly, contiguous, and nothing else of the range is in them). Call before
    /// [`finish`](Self::finish); the section stays where it is in the finished chunk.
    pub fn frames_section(&self) -> Option<FramesSection> {
        if !self.open
            || self.frames == 0
            || self.losses_written > 0
            || self.pending_loss.is_some()
            || self.cur.is_some()
        {
            return None;
        }
        Some(FramesSection {
            offset: HEADER_LEN,
            len: self.buf.len() - HEADER_LEN,
            frames: self.frames,
            payload_bytes: self.payload_bytes,
            first_ts: self.first_ts,
            frames_end: self.frames_end?,
        })
    }

    /// Closes a batch whose frames come from a shared chunk (`frames`, its frame entries)
    /// instead of this encoder's buffer. Its head is the gRPC prefix, `ring_id`, and the
    /// trailer fields, written before the frames (protobuf fields may come in any order;
    /// the decoded `Batch` is the same). Returns the head and the chunk to send behind it
    /// when the chunk is at least [`SEPARATE_CHUNK_MIN`] bytes, else one message: head,
    /// [filler](MIN_MESSAGE_LEN) if needed, and a copy of the chunk. The range the chunk
    /// covers starts at `start_seq` with no loss in it, holds `discarded` discarded
    /// reservations, its last frame ends at `frames_end`, and the reader continues at
    /// `next_seq`. Accounting is as if this encoder had taken the frames itself. Call
    /// only when [`is_clean`](Self::is_clean).
    pub fn shared_head(
        &mut self,
        start_seq: u64,
        frames_end: u64,
        discarded: u64,
        next_seq: u64,
        frames: &Bytes,
    ) -> (Bytes, Option<Bytes>) {
        debug_assert!(self.is_clean(), "a shared batch needs a clean encoder");
        self.from.get_or_insert(start_seq);
        self.discarded = self.discarded.saturating_add(discarded);
        self.frames_end = Some(frames_end);
        let mut head = [0u8; HEADER_LEN + MAX_TRAILER_LEN];
        head[GRPC_PREFIX_LEN] = wire::key(wire::batch::RING_ID, WIRE_FIXED64);
        head[GRPC_PREFIX_LEN + 1..HEADER_LEN].copy_from_slice(&self.ring_id.to_le_bytes());
        let mut trailer = [0u8; MAX_TRAILER_LEN];
        let n = self.close_range(next_seq, &mut trailer);
        head[HEADER_LEN..HEADER_LEN + n].copy_from_slice(&trailer[..n]);
        let head_len = HEADER_LEN + n;
        self.reset_counts();
        if frames.len() >= SEPARATE_CHUNK_MIN {
            // Large enough to pay the head's small-frame charge back (and never padded).
            write_grpc_prefix(&mut head, head_len + frames.len());
            return (
                Bytes::copy_from_slice(&head[..head_len]),
                Some(frames.clone()),
            );
        }
        let mut one = BytesMut::with_capacity(MIN_MESSAGE_LEN.max(head_len + frames.len()) + 1);
        one.extend_from_slice(&head[..head_len]);
        append_filler(&mut one, frames.len());
        one.extend_from_slice(frames);
        let total = one.len();
        write_grpc_prefix(&mut one, total);
        (one.freeze(), None)
    }

    /// Closes the open batch and returns it as one gRPC message chunk, or
    /// `None` when there is nothing to send. `next_seq` is where the reader
    /// continues; the batch's `resume_seq` is [`resume_point`](Self::resume_point).
    /// A batch with neither frames nor losses (a progress batch: only filtered
    /// or discarded counts) is made only when `progress` is true; otherwise
    /// those counts wait for the next batch.
    pub fn finish(&mut self, next_seq: u64, progress: bool) -> Option<Bytes> {
        self.abort_frame();
        if !self.loss_ends_batch && self.frames == 0 {
            // Losses only: deliver them now.
            self.flush_loss();
        }
        let content = self.open && (self.frames > 0 || self.losses_written > 0);
        let counts = self.filtered > 0 || self.discarded > 0;
        // Counts a stale loss waits behind go out now: the loss needs a range of its own.
        let send = content || (counts && (progress || self.loss_ends_batch));
        if !send {
            self.reset_counts();
            return None;
        }
        self.open_batch();
        let mut tmp = [0u8; MAX_TRAILER_LEN];
        let n = self.close_range(next_seq, &mut tmp);
        self.buf.extend_from_slice(&tmp[..n]);
        append_filler(&mut self.buf, 0);
        let total = self.buf.len();
        write_grpc_prefix(&mut self.buf, total);
        self.reset_counts();
        Some(self.buf.split().freeze())
    }
}

/// The frames section of a batch just filled, for sharing it with other subscribers: see
/// [`BatchEncoder::frames_section`] and [`crate::share`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FramesSection {
    /// Offset of the first frame entry in the finished batch chunk.
    pub offset: usize,
    /// Bytes of the frame entries (all of them, contiguous, nothing else between).
    pub len: usize,
    /// Frames.
    pub frames: u32,
    /// Payload bytes.
    pub payload_bytes: u64,
    /// Timestamp of the first frame.
    pub first_ts: u64,
    /// One past the last frame's sequence number.
    pub frames_end: u64,
}

/// Encoded length of a frame's message body.
fn frame_body_len(h: &FrameMeta) -> usize {
    wire::varint_field_len(h.seq)
        + wire::varint_field_len(h.timestamp_ns)
        + wire::varint_field_len(u64::from(h.producer_id))
        + wire::len_field_len(usize::from(h.topic_len))
        + wire::len_field_len(h.payload_len as usize)
}

/// Total encoded length of a frame entry (key + length + body) and the offset
/// of its payload bytes from the entry's start.
fn frame_layout(h: &FrameMeta) -> (usize, usize) {
    let body = frame_body_len(h);
    let total = 1 + wire::varint_len(body as u64) + body;
    (total, total - h.payload_len as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message;

    fn meta(
        seq: u64,
        timestamp_ns: u64,
        producer_id: u32,
        topic_len: usize,
        payload_len: usize,
    ) -> FrameMeta {
        FrameMeta {
            seq,
            position: 0,
            timestamp_ns,
            producer_id,
            topic_len: topic_len as u16,
            payload_len: payload_len as u32,
        }
    }

    fn decode(chunk: &Bytes) -> v1::Batch {
        assert_eq!(chunk[0], 0, "uncompressed");
        let len = u32::from_be_bytes([chunk[1], chunk[2], chunk[3], chunk[4]]) as usize;
        assert_eq!(len + GRPC_PREFIX_LEN, chunk.len());
        v1::Batch::decode(&chunk[GRPC_PREFIX_LEN..]).expect("prost decodes our encoding")
    }

    /// Appends a body as the reader does.
    fn append(enc: &mut BatchEncoder, h: &FrameMeta, topic: &[u8], payload: &[u8]) {
        let buf = enc.begin_frame(h).expect("the frame fits");
        let cap = buf.capacity();
        buf.extend_from_slice(topic);
        buf.extend_from_slice(payload);
        assert_eq!(buf.capacity(), cap, "the append did not reallocate");
    }

    fn put(enc: &mut BatchEncoder, seq: u64, topic: &str, payload: &[u8]) -> bool {
        let h = meta(
            seq,
            seq * 1000 + 7,
            (seq % 5) as u32,
            topic.len(),
            payload.len(),
        );
        append(enc, &h, topic.as_bytes(), payload);
        enc.commit_frame()
    }

    /// `resume_seq - from_seq` = frames + losses in range + filtered + discarded.
    fn accounted(b: &v1::Batch) -> u64 {
        let lost: u64 = b
            .losses
            .iter()
            .filter(|l| l.first_seq >= b.from_seq)
            .map(|l| l.frames)
            .sum();
        b.frames.len() as u64 + lost + b.filtered + b.discarded
    }

    /// A discarded reservation after the last frame, then a loss under a sequence already
    /// passed (a frame a forged claim word made reuse an old sequence, reported as corrupt
    /// under it): the batch still resumes after the discard it counts, and the stale loss
    /// goes out in the next batch, outside its range. Before, the stale loss capped
    /// `resume_seq` at the last frame, so a batch counted a discard past its own range
    /// and the next batch covered that sequence with nothing (seen once in chaos).
    #[test]
    fn a_stale_loss_after_a_discard_keeps_the_discard_in_range() {
        let mut enc = BatchEncoder::new(1, 64 * 1024, 0, 255, 1024);
        for seq in 100..116 {
            assert!(put(&mut enc, seq, "t", b"x"));
        }
        enc.count_discarded(116);
        enc.record_loss(LossRun {
            reason: LossReason::Corrupt,
            frames: 1,
            first_seq: 110,
        });
        assert!(!enc.has_room(), "the stale loss ends the batch");
        let first = decode(&enc.finish(117, false).expect("frames"));
        assert_eq!((first.from_seq, first.resume_seq), (100, 117));
        assert_eq!((first.frames.len(), first.discarded), (16, 1));
        assert_eq!(accounted(&first), first.resume_seq - first.from_seq);
        let second = decode(&enc.finish(117, false).expect("the stale loss"));
        assert_eq!((second.from_seq, second.resume_seq), (117, 117));
        assert_eq!(second.losses.len(), 1);
        assert_eq!(second.losses[0].first_seq, 110);
        assert_eq!(accounted(&second), 0, "the stale loss is outside the range");
    }

    /// A stale loss after counts only (no frame in the range): the counts go out in a batch
    /// of their own first, so the stale loss never lands inside a range that counted its
    /// sequence already.
    #[test]
    fn a_stale_loss_after_counts_only_closes_their_range_first() {
        let mut enc = BatchEncoder::new(1, 64 * 1024, 0, 255, 1024);
        for seq in 100..110 {
            enc.count_discarded(seq);
        }
        enc.record_loss(LossRun {
            reason: LossReason::Corrupt,
            frames: 1,
            first_seq: 105,
        });
        let first = decode(&enc.finish(110, false).expect("the counts, without waiting"));
        assert_eq!(
            (first.from_seq, first.resume_seq, first.discarded),
            (100, 110, 10)
        );
        assert!(first.losses.is_empty());
        let second = decode(&enc.finish(110, false).expect("the stale loss"));
        assert_eq!((second.from_seq, second.resume_seq), (110, 110));
        assert_eq!(second.losses[0].first_seq, 105);
        assert_eq!(accounted(&second), 0);
    }

    /// A message of any length below [`MIN_MESSAGE_LEN`] is padded to it (or one byte
    /// more, when the filler's length takes two varint bytes) with a `filler` field of
    /// zeros that prost decodes; longer ones are left alone.
    #[test]
    fn filler_pads_short_messages_to_the_minimum() {
        for len in HEADER_LEN..MIN_MESSAGE_LEN + 4 {
            // The filler field alone: `len` bytes of message are still to come.
            let mut field = BytesMut::new();
            let pad = append_filler(&mut field, len);
            assert_eq!(pad, field.len(), "{len}");
            if len >= MIN_MESSAGE_LEN {
                assert_eq!(pad, 0, "{len}");
                continue;
            }
            assert!(
                (MIN_MESSAGE_LEN..=MIN_MESSAGE_LEN + 1).contains(&(len + pad)),
                "{len} + {pad}"
            );
            let b = v1::Batch::decode(&field[..pad]).expect("a filler field alone decodes");
            assert!(b.filler.iter().all(|&z| z == 0), "{len}");
            assert_eq!(
                b.filler.len() + 1 + wire::varint_len(b.filler.len() as u64),
                pad
            );
        }
    }

    /// A one-frame batch (what a quiet stream sends) is padded; the decoded batch is the
    /// same apart from the filler.
    #[test]
    fn a_small_batch_is_padded() {
        let mut enc = BatchEncoder::new(3, 64 * 1024, 0, 255, 1024);
        assert!(put(&mut enc, 5, "t", b"x"));
        let chunk = enc.finish(6, false).expect("a batch");
        assert!((MIN_MESSAGE_LEN..=MIN_MESSAGE_LEN + 1).contains(&chunk.len()));
        let b = decode(&chunk);
        assert_eq!((b.frames.len(), b.from_seq, b.resume_seq), (1, 5, 6));
        assert!(!b.filler.is_empty());
    }

    #[test]
    fn frames_and_losses_decode_with_prost() {
        let mut enc = BatchEncoder::new(42, 64 * 1024, 0, 255, 1024);
        enc.record_loss(LossRun {
            reason: LossReason::Lapped,
            frames: 3,
            first_seq: 0,
        });
        enc.record_loss(LossRun {
            reason: LossReason::Lapped,
            frames: 2,
            first_seq: 3,
        });
        assert!(put(&mut enc, 5, "cpu", b"hello"));
        assert!(put(&mut enc, 6, "", b""));
        let chunk = enc.finish(7, false).expect("non-empty");
        let b = decode(&chunk);
        assert_eq!(b.ring_id, 42);
        assert_eq!(b.resume_seq, 7);
        assert_eq!(b.losses.len(), 1);
        assert_eq!(b.losses[0].frames, 5);
        assert_eq!(b.losses[0].first_seq, 0);
        assert_eq!(b.losses[0].reason, v1::LossReason::Lapped as i32);
        assert_eq!(b.frames.len(), 2);
        assert_eq!(b.frames[0].topic, "cpu");
        assert_eq!(&b.frames[0].payload[..], b"hello");
        assert_eq!(b.frames[0].timestamp_ns, 5007);
        assert_eq!(b.frames[1].seq, 6);
    }

    #[test]
    fn loss_after_frames_starts_next_batch_and_caps_resume() {
        let mut enc = BatchEncoder::new(1, 64 * 1024, 0, 255, 1024);
        put(&mut enc, 0, "a", b"x");
        enc.record_loss(LossRun {
            reason: LossReason::Abandoned,
            frames: 1,
            first_seq: 1,
        });
        assert!(!enc.has_room(), "a loss after frames closes the batch");
        let b = decode(&enc.finish(2, false).expect("frames"));
        assert_eq!(b.frames.len(), 1);
        assert!(b.losses.is_empty());
        assert_eq!(b.resume_seq, 1, "resume must not skip the undelivered loss");
        put(&mut enc, 2, "a", b"y");
        let b = decode(&enc.finish(3, false).expect("frames"));
        assert_eq!(b.losses.len(), 1);
        assert_eq!(b.losses[0].first_seq, 1);
        assert_eq!(b.frames[0].seq, 2);
    }

    #[test]
    fn progress_batches_carry_counts_and_resume_never_goes_backwards() {
        let mut enc = BatchEncoder::new(1, 64 * 1024, 0, 255, 1024);
        put(&mut enc, 10, "a", b"x");
        let b = decode(&enc.finish(11, false).expect("frame"));
        assert_eq!((b.from_seq, b.resume_seq), (10, 11));
        // Filtered and discarded frames only: no batch unless progress is due.
        enc.count_filtered(11);
        enc.count_discarded(12);
        enc.count_filtered(13);
        assert!(enc.has_unreported());
        assert!(
            enc.finish(14, false).is_none(),
            "no progress batch unless due"
        );
        let b = decode(&enc.finish(14, true).expect("progress batch"));
        assert!(b.frames.is_empty() && b.losses.is_empty());
        assert_eq!(
            (b.from_seq, b.resume_seq, b.filtered, b.discarded),
            (11, 14, 2, 1)
        );
        assert_eq!(accounted(&b), b.resume_seq - b.from_seq);
        assert!(!enc.has_unreported());
        assert!(enc.finish(14, true).is_none(), "nothing new: no batch");
        // A stale loss (below what was delivered; only after a forged claim word) after
        // frames neither caps the resume point below them nor makes it go backwards.
        put(&mut enc, 14, "a", b"y");
        enc.record_loss(LossRun {
            reason: LossReason::Corrupt,
            frames: 1,
            first_seq: 5,
        });
        let b = decode(&enc.finish(15, false).expect("frame"));
        assert_eq!((b.from_seq, b.resume_seq), (14, 15));
        let b = decode(&enc.finish(15, false).expect("the stale loss"));
        assert_eq!(b.losses[0].first_seq, 5);
        assert_eq!(b.resume_seq, 15, "never backwards");
        assert_eq!(accounted(&b), b.resume_seq - b.from_seq);
        // The reader's position itself moving backwards (a forged claim word) does not
        // move the resume point back either.
        assert_eq!(enc.resume_point(3), 15);
    }

    #[test]
    fn abort_and_short_append_leave_no_trace() {
        let mut enc = BatchEncoder::new(1, 64 * 1024, 0, 255, 1024);
        let h = meta(0, 0, 0, 1, 3);
        append(&mut enc, &h, b"t", b"abc");
        enc.abort_frame();
        let h = FrameMeta { seq: 1, ..h };
        append(&mut enc, &h, b"t", b"ab");
        assert!(!enc.commit_frame(), "a body of the wrong length is dropped");
        assert!(enc.finish(2, false).is_none(), "nothing to send");
    }

    #[test]
    fn batches_respect_byte_and_frame_caps() {
        let max = 8 * 1024;
        let mut enc = BatchEncoder::new(1, max, 0, 16, 1000);
        let mut n = 0;
        while enc.has_room() && enc.fits(&meta(n, 0, 0, 1, 1000)) {
            put(&mut enc, n, "t", &[7u8; 1000]);
            n += 1;
        }
        let chunk = enc.finish(n, false).expect("frames");
        assert!(chunk.len() <= max, "{} > {max}", chunk.len());
        assert_eq!(decode(&chunk).frames.len() as u64, n);
        assert!(n >= 7, "8 KiB holds 7 frames of 1000 bytes, got {n}");

        // Small frames fill a batch sized for big ones (the bound is the frames' real size).
        let max = 70_000;
        let mut enc = BatchEncoder::new(1, max, 0, 255, 64 * 1024);
        let mut n = 0;
        while enc.has_room() && enc.fits(&meta(n, 0, 0, 1, 64)) {
            put(&mut enc, n, "t", &[7u8; 64]);
            n += 1;
        }
        let chunk = enc.finish(n, false).expect("frames");
        assert!(chunk.len() <= max, "{} > {max}", chunk.len());
        assert!(
            n > 500,
            "a 70,000-byte batch holds hundreds of 64-byte frames, got {n}"
        );

        let mut enc = BatchEncoder::new(1, max, 2, 16, 10);
        put(&mut enc, 0, "t", b"1");
        put(&mut enc, 1, "t", b"2");
        assert!(!enc.has_room());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Frame(String, Vec<u8>, u32, u64),
        Abort(usize),
        Loss(u8, u64),
        Filtered,
        Discarded,
        Progress,
        /// A corrupt frame under a sequence this many back (a reused sequence after a
        /// forged claim word): a loss below what was passed.
        Stale(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => ("[a-z/é]{0,40}", proptest::collection::vec(any::<u8>(), 0..600), any::<u32>(), any::<u64>())
                .prop_map(|(t, p, id, ts)| Op::Frame(t, p, id, ts)),
            1 => (0usize..600).prop_map(Op::Abort),
            1 => (1u8..=3, 1u64..1_000_000).prop_map(|(r, n)| Op::Loss(r, n)),
            1 => Just(Op::Filtered),
            1 => Just(Op::Discarded),
            1 => Just(Op::Progress),
            1 => (1u64..40).prop_map(Op::Stale),
        ]
    }

    /// What the chunks of one property-test run said.
    #[derive(Default)]
    struct Got {
        frames: Vec<v1::Frame>,
        lost: u64,
        filtered: u64,
        discarded: u64,
        /// `resume_seq` of the last chunk: the next chunk's `from_seq`.
        resume: Option<u64>,
        /// The highest `resume_seq` so far.
        passed: u64,
    }

    proptest! {
        /// Any sequence of frames, aborts, losses, filtered and discarded frames
        /// encodes into chunks that prost decodes back to exactly the committed
        /// frames, losses and counts, with every chunk within the byte cap, the
        /// ranges `[from_seq, resume_seq)` of consecutive chunks touching and each
        /// accounted exactly.
        #[test]
        fn encoding_round_trips(ops in proptest::collection::vec(op(), 0..80), cap in 2048usize..20_000) {
            let mut enc = BatchEncoder::new(9, cap, 0, 255, 600);
            let first = 1u64 << 40;
            enc.stream_starts_at(first);
            let mut seq = first;
            let mut want_frames = Vec::new();
            let (mut want_lost, mut want_filtered, mut want_discarded) = (0u64, 0u64, 0u64);
            // Sequences below the stream's start count as passed: a loss there is stale.
            let mut got = Got { passed: first, ..Got::default() };
            let drain = |enc: &mut BatchEncoder, seq: u64, progress: bool, got: &mut Got| {
                if let Some(chunk) = enc.finish(seq, progress) {
                    prop_assert!(chunk.len() <= enc.max_bytes());
                    prop_assert!(chunk.len() >= MIN_MESSAGE_LEN, "no tiny DATA frame: {}", chunk.len());
                    let b = decode(&chunk);
                    prop_assert_eq!(b.ring_id, 9);
                    // The first range starts where the stream starts, and the ranges touch.
                    prop_assert_eq!(b.from_seq, got.resume.unwrap_or(first), "ranges touch");
                    prop_assert!(b.resume_seq >= b.from_seq);
                    prop_assert_eq!(accounted(&b), b.resume_seq - b.from_seq);
                    // Every stale loss (under a sequence already passed) lies below the
                    // range of the batch it comes in: nothing is counted twice.
                    for l in &b.losses {
                        if l.first_seq < got.passed {
                            prop_assert!(l.first_seq + l.frames <= b.from_seq, "stale loss {l:?} outside [{}, {})", b.from_seq, b.resume_seq);
                        }
                    }
                    got.passed = got.passed.max(b.resume_seq);
                    got.resume = Some(b.resume_seq);
                    got.lost += b.losses.iter().map(|l| l.frames).sum::<u64>();
                    got.filtered += b.filtered;
                    got.discarded += b.discarded;
                    got.frames.extend(b.frames);
                }
                Ok(())
            };
            for op in ops {
                if !enc.has_room() {
                    drain(&mut enc, seq, false, &mut got)?;
                }
                match op {
                    Op::Frame(t, p, id, ts) => {
                        let h = meta(seq, ts, id, t.len(), p.len());
                        if !enc.fits(&h) {
                            prop_assert!(enc.begin_frame(&h).is_none(), "a frame that does not fit is declined");
                            drain(&mut enc, seq, false, &mut got)?;
                            if !enc.fits(&h) {
                                // A loss waiting after frames: one more batch.
                                drain(&mut enc, seq, false, &mut got)?;
                            }
                        }
                        append(&mut enc, &h, t.as_bytes(), &p);
                        prop_assert!(enc.commit_frame());
                        want_frames.push(v1::Frame { seq, timestamp_ns: ts, topic: t, producer_id: id, payload: p.into() });
                        seq += 1;
                    }
                    Op::Abort(n) => {
                        let h = meta(seq, 1, 1, 0, n);
                        if let Some(buf) = enc.begin_frame(&h) {
                            buf.extend_from_slice(&vec![0xAA; n]);
                        }
                        enc.abort_frame();
                    }
                    Op::Loss(r, n) => {
                        let reason = match r { 1 => LossReason::Lapped, 2 => LossReason::Abandoned, _ => LossReason::Corrupt };
                        enc.record_loss(LossRun { reason, frames: n, first_seq: seq });
                        want_lost += n;
                        seq += n;
                    }
                    Op::Filtered => {
                        enc.count_filtered(seq);
                        want_filtered += 1;
                        seq += 1;
                    }
                    Op::Discarded => {
                        enc.count_discarded(seq);
                        want_discarded += 1;
                        seq += 1;
                    }
                    Op::Progress => drain(&mut enc, seq, true, &mut got)?,
                    Op::Stale(back) => {
                        // Below the stream's start too: a stale loss may be its first event.
                        enc.record_loss(LossRun { reason: LossReason::Corrupt, frames: 1, first_seq: seq - back });
                        want_lost += 1;
                    }
                }
            }
            // Flush everything, including a loss that waits for the next batch.
            for _ in 0..3 {
                drain(&mut enc, seq, true, &mut got)?;
            }
            prop_assert_eq!(got.frames, want_frames);
            prop_assert_eq!(got.lost, want_lost);
            prop_assert_eq!(got.filtered, want_filtered);
            prop_assert_eq!(got.discarded, want_discarded);
            if seq > first {
                prop_assert_eq!(got.resume, Some(seq), "the last batch resumes after everything");
            }
        }
    }
}
