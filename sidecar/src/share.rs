//! Validating a frame once for many subscribers: shared chunks of encoded frames.
//!
//! Every subscriber used to copy and check its own copy of every frame. Skipping the check
//! for a frame "another subscriber already checked" would trust the ring (a producer can
//! rewrite a committed frame at any time), so what is shared is the *copy*: a subscriber
//! that reads a range of the ring into its batch as always (copy, then check the copy)
//! publishes the batch's frame entries, an immutable slice of the `Bytes` it sends itself,
//! as a [`SharedChunk`]; a subscriber that stands where the chunk starts, with the same
//! batch bounds, sends that slice behind its own head (gRPC prefix, `ring_id`, its own
//! `resume_seq`/`from_seq`/`filtered`/`discarded`) instead of reading the ring. h2 writes
//! the slice without copying it.
//!
//! # When a chunk is exact
//!
//! A subscriber takes a chunk only when its own read of the ring, at the moment the chunk
//! was built, would have produced exactly the chunk's frames and ended where the chunk
//! ends. That holds when all of these hold (checked in [`next_batch`]):
//!
//! - its topic filter passes everything ([`TopicFilter::is_all`]): a filter would change
//!   which frames are in the batch;
//! - its reader stands at the chunk's start [`Cursor`] (position and next sequence) and
//!   owes nothing (no loss waiting to be returned, no requested start still skipped to);
//! - its encoder is [clean](BatchEncoder::is_clean) (no loss waiting to open the batch) and
//!   has the chunk's `max_bytes` and `max_frames`: which frames fit a batch depends on
//!   nothing else;
//! - producers have not overwritten the chunk's start since ([`RingReader::adopt`]).
//!
//! and the chunk itself (checked when it is published) holds frames and discarded
//! reservations only: a batch whose read met a loss (lapped, abandoned, corrupt) is never
//! published, so every subscriber that reaches a loss reads it from the ring itself and
//! reports it in-band exactly as before. Everyone else (filters, other bounds, behind or
//! ahead of every chunk, lapped) reads the ring as before.
//!
//! The decoded `Batch` a subscriber gets from a chunk is then the one it would have built
//! itself had it been polled when the chunk was built: same frames, same `from_seq`,
//! `resume_seq`, `filtered` and `discarded` (the property test below drives both paths
//! over the same ring contents, with lapped, corrupt, discarded and pending frames, in
//! any order of polls). Only the field order differs: the head carries the trailer fields
//! before the frames.
//!
//! # Memory
//!
//! The cache holds at most [`SHARED_CHUNKS`] chunks, each a slice of one batch (at most
//! `--subscriber-buffer` bytes): the budget's "shared chunks" term. A new chunk replaces
//! the oldest. A chunk dropped from the cache lives on only while a subscriber's batch in
//! flight holds it, which that subscriber's own term already counts. No history, no queue.
//!
//! # Who builds
//!
//! Whoever needs a range first and finds no chunk for it reads it itself (in its own poll,
//! no thread hop) and publishes it. Two subscribers polled at the same time on two worker
//! threads may both read the same range; the second to finish does not replace the first's
//! chunk. Nobody waits for anyone.

use crate::batch::BatchEncoder;
use crate::filter::TopicFilter;
use crate::subscribe::{Fill, fill_batch};
use bytes::Bytes;
use ringside_ring::{Cursor, LossReason, RingReader};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Chunks kept for sharing, at most. A subscriber takes a chunk only while it is kept, so
/// this is how many batches apart subscribers reading the same stretch of the ring may be
/// and still share. 100 subscribers read in step spread over more than 8 batches: with 8,
/// half their batches were read from the ring again (e2e `--serving-only`, 64 B frames:
/// 51% shared, 106 ns of server CPU per frame, 0.86x the pre-encoded server); with 32,
/// 96% (62 ns, 0.99x). Each costs one `--subscriber-buffer` in the budget; the lookup is a
/// scan of these slots once per batch.
pub const SHARED_CHUNKS: usize = 32;

/// The validated frame entries of one ring range, as one subscriber's read encoded them.
#[derive(Debug)]
pub struct SharedChunk {
    /// Where the range starts.
    start: Cursor,
    /// Where the reader stood after it.
    end: Cursor,
    /// The batch bounds the range was read with.
    max_bytes: usize,
    max_frames: u32,
    /// The `frames` entries of the batch, encoded (a slice of the builder's batch).
    frames: Bytes,
    n_frames: u32,
    payload_bytes: u64,
    first_ts: u64,
    /// One past the last frame's sequence number.
    frames_end: u64,
    /// Discarded reservations in the range.
    discarded: u64,
}

/// The chunks kept for sharing: a fixed number of slots, the oldest replaced.
#[derive(Debug, Default)]
pub struct ChunkCache {
    slots: Mutex<Slots>,
    /// Subscribers that could take a chunk (unfiltered), see [`enter`](Self::enter).
    candidates: AtomicUsize,
}

#[derive(Debug, Default)]
struct Slots {
    /// The start position of the chunk in the same slot (meaningless where that slot is
    /// empty): a lookup scans these few cache lines instead of following every chunk's
    /// pointer.
    starts: [u64; SHARED_CHUNKS],
    chunks: [Option<Arc<SharedChunk>>; SHARED_CHUNKS],
    /// The slot the next chunk goes to (the oldest).
    next: usize,
}

impl Slots {
    /// The kept chunk that starts at `start` and was read with these batch bounds.
    fn matching(
        &self,
        start: Cursor,
        max_bytes: usize,
        max_frames: u32,
    ) -> Option<&Arc<SharedChunk>> {
        self.starts
            .iter()
            .zip(&self.chunks)
            .filter(|(pos, _)| **pos == start.position())
            .find_map(|(_, chunk)| {
                chunk.as_ref().filter(|c| {
                    c.start == start && c.max_bytes == max_bytes && c.max_frames == max_frames
                })
            })
    }
}

impl ChunkCache {
    /// Counts a subscriber that could take chunks (its filter passes everything) until
    /// [`leave`](Self::leave). Chunks are published only while there are two or more: a
    /// kept chunk holds its builder's batch buffer, so a lone subscriber would allocate a
    /// fresh buffer for every batch instead of reusing the one h2 released, for nothing.
    pub fn enter(&self) {
        // Relaxed: a hint for whether publishing can pay off, never for correctness.
        self.candidates.fetch_add(1, Ordering::Relaxed);
    }

    /// Stops counting a subscriber counted by [`enter`](Self::enter).
    pub fn leave(&self) {
        // Relaxed: see `enter`.
        let _ = self
            .candidates
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// True when another subscriber could take a chunk this one publishes.
    fn worth_publishing(&self) -> bool {
        // Relaxed: see `enter`.
        self.candidates.load(Ordering::Relaxed) >= 2
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The chunk that starts at `start` and was read with these batch bounds, if kept.
    fn find(&self, start: Cursor, max_bytes: usize, max_frames: u32) -> Option<Arc<SharedChunk>> {
        self.lock().matching(start, max_bytes, max_frames).cloned()
    }

    /// Keeps `chunk` in place of the oldest, unless one for the same range and bounds is
    /// kept already.
    fn publish(&self, chunk: SharedChunk) {
        let mut slots = self.lock();
        if slots
            .matching(chunk.start, chunk.max_bytes, chunk.max_frames)
            .is_some()
        {
            return;
        }
        let at = slots.next;
        slots.starts[at] = chunk.start.position();
        slots.chunks[at] = Some(Arc::new(chunk));
        slots.next = (at + 1) % SHARED_CHUNKS;
    }

    /// Bytes of frame entries the kept chunks hold (for tests and metrics).
    pub fn bytes(&self) -> usize {
        self.lock()
            .chunks
            .iter()
            .flatten()
            .map(|c| c.frames.len())
            .sum()
    }
}

/// One batch, ready for HTTP/2: `head`, then `frames` (a shared chunk) when present. The two
/// are one gRPC message.
#[derive(Debug)]
pub struct BatchOut {
    /// The whole batch, or its head when `frames` is set.
    pub head: Bytes,
    /// The shared frame entries that follow the head.
    pub frames: Option<Bytes>,
    /// The frames come from a shared chunk (in `frames`, or copied into `head` when the
    /// chunk is small: see [`crate::batch::SEPARATE_CHUNK_MIN`]).
    pub shared: bool,
    /// Frames in the batch.
    pub n_frames: u64,
    /// Payload bytes in the batch.
    pub payload_bytes: u64,
    /// Timestamp of the batch's first frame (meaningful when `n_frames > 0`).
    pub first_ts: u64,
}

impl BatchOut {
    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        self.head.len() + self.frames.as_ref().map_or(0, Bytes::len)
    }

    /// Never: a batch has at least its header.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The batch as one contiguous message chunk (copies a shared chunk: tests only).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = self.head.to_vec();
        if let Some(f) = &self.frames {
            v.extend_from_slice(f);
        }
        v
    }
}

/// Builds a subscriber's next batch: from a shared chunk when one is exact for it (see the
/// module documentation), otherwise by reading the ring ([`fill_batch`], at most
/// `max_steps` steps) and closing the batch ([`BatchEncoder::finish`], a progress batch
/// when `progress`), publishing its frames in `cache` when they may serve others. Without
/// a cache this is exactly the per-subscriber path. Returns why the read stopped
/// ([`Fill::Full`] after a shared chunk: the taker reads on, since what stopped the
/// builder's read may no longer hold) and the batch, if any.
pub fn next_batch(
    reader: &mut RingReader,
    enc: &mut BatchEncoder,
    filter: &TopicFilter,
    cache: Option<&ChunkCache>,
    max_steps: usize,
    progress: bool,
    lost: &mut impl FnMut(LossReason, u64),
) -> (Fill, Option<BatchOut>) {
    let share = match cache {
        Some(cache) if filter.is_all() && enc.is_clean() => reader.cursor().map(|c| (cache, c)),
        _ => None,
    };
    if let Some((cache, start)) = share
        && let Some(chunk) = cache.find(start, enc.max_bytes(), enc.max_frames())
        && reader.adopt(start, chunk.end)
    {
        let (head, frames) = enc.shared_head(
            start.seq(),
            chunk.frames_end,
            chunk.discarded,
            chunk.end.seq(),
            &chunk.frames,
        );
        let out = BatchOut {
            head,
            frames,
            shared: true,
            n_frames: u64::from(chunk.n_frames),
            payload_bytes: chunk.payload_bytes,
            first_ts: chunk.first_ts,
        };
        // Read on after a chunk, whatever stopped its builder's read: "caught up" or "the
        // next frame is not committed" was true of the ring when the builder read it, not
        // now. A taker that believed a stale `Idle` would wait for a doorbell change it may
        // already have consumed, and stop short of frames committed since (the last frames
        // of a burst, never delivered).
        return (Fill::Full, Some(out));
    }
    let (filtered_before, discarded_before) = (enc.filtered(), enc.discarded());
    let fill = fill_batch(reader, enc, filter, max_steps, lost);
    let section = share
        .filter(|(cache, _)| enc.filtered() == filtered_before && cache.worth_publishing())
        .and_then(|_| enc.frames_section());
    let discarded = enc.discarded().saturating_sub(discarded_before);
    let (n_frames, payload_bytes, first_ts) = (
        u64::from(enc.frames()),
        enc.payload_bytes(),
        enc.first_timestamp_ns(),
    );
    let batch = enc.finish(reader.next_seq(), progress);
    if let (Some((cache, start)), Some(section), Some(batch), Some(end)) =
        (share, section, &batch, reader.cursor())
        && let Some(frames) = batch.get(section.offset..section.offset + section.len)
        && !frames.is_empty()
    {
        cache.publish(SharedChunk {
            start,
            end,
            max_bytes: enc.max_bytes(),
            max_frames: enc.max_frames(),
            frames: batch.slice_ref(frames),
            n_frames: section.frames,
            payload_bytes: section.payload_bytes,
            first_ts: section.first_ts,
            frames_end: section.frames_end,
            discarded,
        });
    }
    let out = batch.map(|head| BatchOut {
        head,
        frames: None,
        shared: false,
        n_frames,
        payload_bytes,
        first_ts,
    });
    (fill, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{MIN_MESSAGE_LEN, SEPARATE_CHUNK_MIN};
    use crate::wire::GRPC_PREFIX_LEN;
    use proptest::prelude::*;
    use prost::Message;
    use ringside_proto::v1;
    use ringside_ring::layout::RingHeader;
    use ringside_ring::shm::create_ring_memfd;
    use ringside_ring::writer::{Claim, FrameHeaderFields, WritableRing};
    use ringside_ring::{ReaderOptions, RingConfig, RingView, StartAt};
    use std::time::Duration;

    const MAX_PAYLOAD: usize = 1024;
    const TOPICS: [&str; 3] = ["a", "cpu/0", "mem"];

    /// A real ring (memfd, sealed, mapped twice) with its writer and a read-only view.
    struct Ring {
        view: Arc<RingView>,
        w: WritableRing,
        /// A claimed frame not committed yet (a producer between claim and commit).
        pending: Option<(Claim, Vec<u8>, Vec<u8>)>,
        /// Positions of the frames written, newest last (for corruption).
        written: Vec<u64>,
    }

    fn fields(seq_hint: u64) -> FrameHeaderFields {
        FrameHeaderFields {
            producer_id: (seq_hint % 7) as u32,
            timestamp_ns: 1_000_000 + seq_hint,
            flags: 0,
        }
    }

    impl Ring {
        fn new() -> Ring {
            let config = RingConfig {
                capacity: 64 * 1024,
                max_payload: MAX_PAYLOAD as u32,
            };
            let header = RingHeader::new(&config, 0x5ba4_ed00_0000_0001, 1);
            let fd = create_ring_memfd(&config, &header).expect("memfd ring");
            let view = Arc::new(RingView::open(fd.try_clone().expect("dup")).expect("view"));
            let w = WritableRing::open(fd, header.ring_id, config).expect("writer");
            Ring {
                view,
                w,
                pending: None,
                written: Vec::new(),
            }
        }

        fn apply(&mut self, op: &RingOp) {
            match op {
                RingOp::Write { topic, len } => {
                    let topic = TOPICS[*topic].as_bytes();
                    let payload: Vec<u8> = (0..*len).map(|i| (i * 31 + len) as u8).collect();
                    let claim = self.w.claim(topic.len(), payload.len());
                    self.written.push(claim_pos(&claim, &self.w));
                    self.w.write_topic(&claim, topic);
                    self.w.write_payload(&claim, &payload);
                    self.w.publish(claim, fields(*len as u64), topic, &payload);
                }
                RingOp::Discard { len } => {
                    let claim = self.w.claim(1, *len);
                    self.w.discard(claim, fields(0));
                }
                RingOp::Claim { topic, len } => {
                    if self.pending.is_none() {
                        let topic = TOPICS[*topic].as_bytes().to_vec();
                        let payload = vec![0x5a; *len];
                        let claim = self.w.claim(topic.len(), payload.len());
                        self.pending = Some((claim, topic, payload));
                    }
                }
                RingOp::Commit => {
                    if let Some((claim, topic, payload)) = self.pending.take() {
                        self.w.write_topic(&claim, &topic);
                        self.w.write_payload(&claim, &payload);
                        self.w.publish(claim, fields(3), &topic, &payload);
                    }
                }
                RingOp::Corrupt { back, at, byte } => {
                    if let Some(&pos) = self.written.iter().rev().nth(*back) {
                        // Anywhere in the frame's first 64 bytes: header, topic or payload.
                        self.w.overwrite(pos.wrapping_add(*at as u64), &[*byte]);
                    }
                }
            }
        }
    }

    /// The position of a claim (the writer's tail before it, read back from the claim's
    /// sequence: frames are claimed in order, so the tail just moved past it).
    fn claim_pos(claim: &Claim, w: &WritableRing) -> u64 {
        let tail = w.tail();
        tail.pos - ringside_ring::frame_len(claim.topic_len(), claim.payload_len()) as u64
    }

    #[derive(Debug, Clone)]
    enum RingOp {
        Write { topic: usize, len: usize },
        Discard { len: usize },
        Claim { topic: usize, len: usize },
        Commit,
        Corrupt { back: usize, at: usize, byte: u8 },
    }

    #[derive(Debug, Clone)]
    enum Op {
        Ring(Vec<RingOp>),
        /// Poll subscriber `n % subscribers` once; a progress batch when the bool is set.
        Poll(usize, bool),
    }

    fn ring_op() -> impl Strategy<Value = RingOp> {
        prop_oneof![
            12 => (0..TOPICS.len(), prop_oneof![0usize..64, 0..=MAX_PAYLOAD])
                .prop_map(|(topic, len)| RingOp::Write { topic, len }),
            1 => (0usize..200).prop_map(|len| RingOp::Discard { len }),
            1 => (0..TOPICS.len(), 0usize..100).prop_map(|(topic, len)| RingOp::Claim { topic, len }),
            1 => Just(RingOp::Commit),
            1 => (0usize..6, 0usize..64, any::<u8>())
                .prop_map(|(back, at, byte)| RingOp::Corrupt { back, at, byte }),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => ring_op().prop_map(|r| Op::Ring(vec![r])),
            // Bursts of writes make laps likely (64 KiB ring, frames up to 1 KiB).
            1 => proptest::collection::vec(ring_op(), 10..80).prop_map(Op::Ring),
            6 => (any::<usize>(), proptest::bool::weighted(0.2)).prop_map(|(n, p)| Op::Poll(n, p)),
        ]
    }

    #[derive(Debug, Clone)]
    struct Sub {
        /// Topics the filter passes (empty: all).
        topics: Vec<String>,
        start: StartAt,
        max_bytes: usize,
        max_frames: u32,
    }

    fn sub() -> impl Strategy<Value = Sub> {
        (
            prop_oneof![3 => Just(vec![]), 1 => Just(vec!["cpu/0".to_string()])],
            prop_oneof![
                3 => Just(StartAt::Earliest),
                1 => Just(StartAt::Latest),
                1 => (0u64..40).prop_map(StartAt::Sequence),
            ],
            // Few distinct bounds, so subscribers often share them.
            prop_oneof![Just(0usize), Just(3000), Just(8192)],
            prop_oneof![3 => Just(0u32), 1 => Just(3)],
        )
            .prop_map(|(topics, start, max_bytes, max_frames)| Sub {
                topics,
                start,
                max_bytes,
                max_frames,
            })
    }

    /// One subscriber's state on one path.
    struct Side {
        reader: RingReader,
        enc: BatchEncoder,
        filter: TopicFilter,
    }

    fn side(ring: &Ring, s: &Sub) -> Option<Side> {
        let reader = RingReader::new(
            Arc::clone(&ring.view),
            s.start,
            ReaderOptions {
                // Never abandon a pending frame: the two paths read at different instants.
                stall_timeout: Duration::from_secs(3600),
            },
        )
        .ok()?;
        let mut enc = BatchEncoder::new(
            ring.view.ring_id(),
            s.max_bytes,
            s.max_frames,
            255,
            MAX_PAYLOAD,
        );
        enc.stream_starts_at(reader.accounts_from());
        Some(Side {
            reader,
            enc,
            filter: TopicFilter::new(&s.topics, &[]).expect("filter"),
        })
    }

    fn decode(bytes: &[u8]) -> v1::Batch {
        assert_eq!(bytes[0], 0, "uncompressed");
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        assert_eq!(
            len + GRPC_PREFIX_LEN,
            bytes.len(),
            "the prefix covers head and frames"
        );
        v1::Batch::decode(&bytes[GRPC_PREFIX_LEN..]).expect("prost decodes it")
    }

    fn poll(
        side: &mut Side,
        cache: Option<&ChunkCache>,
        progress: bool,
    ) -> (Fill, Option<BatchOut>) {
        next_batch(
            &mut side.reader,
            &mut side.enc,
            &side.filter,
            cache,
            64,
            progress,
            &mut |_, _| {},
        )
    }

    /// Runs `ops` on one ring, each subscriber read on both paths: alone (`alone`) and
    /// with the shared cache (`shared`). The cache is emptied whenever the ring changes, so
    /// every chunk taken was built from the ring as it is when taken (the shared path's
    /// batch is then the one the alone path builds at the same instant).
    fn run(subs: &[Sub], ops: &[Op]) -> Result<(), TestCaseError> {
        let mut ring = Ring::new();
        // A first lap's worth of history, so `Sequence` and `Earliest` starts differ.
        for i in 0..20 {
            ring.apply(&RingOp::Write {
                topic: i % TOPICS.len(),
                len: i * 7,
            });
        }
        let mut alone = Vec::new();
        let mut shared = Vec::new();
        for s in subs {
            if let (Some(a), Some(b)) = (side(&ring, s), side(&ring, s)) {
                alone.push(a);
                shared.push(b);
            }
        }
        if alone.is_empty() {
            return Ok(());
        }
        let subs_n = alone.len();
        let fresh_cache = || {
            let cache = ChunkCache::default();
            for _ in subs.iter().filter(|s| s.topics.is_empty()) {
                cache.enter();
            }
            cache
        };
        let mut cache = fresh_cache();
        let mut check =
            |i: usize, progress: bool, cache: &ChunkCache| -> Result<(), TestCaseError> {
                let (fa, a) = poll(&mut alone[i], None, progress);
                let (fb, b) = poll(&mut shared[i], Some(cache), progress);
                if b.as_ref().is_some_and(|b| b.shared) {
                    // A taken chunk: the taker reads on (`next_batch`).
                    prop_assert_eq!(fb, Fill::Full, "after a taken chunk");
                } else {
                    prop_assert_eq!(fa, fb, "why reading stopped");
                }
                let a = a.map(|a| decode(&a.to_vec()));
                let b = b
                    .map(|b| {
                        prop_assert!(
                            b.len() <= shared[i].enc.max_bytes(),
                            "within the batch bound"
                        );
                        prop_assert!(b.len() >= MIN_MESSAGE_LEN, "no tiny message");
                        // A head goes alone only in front of a large chunk.
                        prop_assert!(
                            b.frames
                                .as_ref()
                                .is_none_or(|f| f.len() >= SEPARATE_CHUNK_MIN)
                        );
                        Ok(decode(&b.to_vec()))
                    })
                    .transpose()?;
                prop_assert_eq!(a, b, "subscriber {} decoded batches", i);
                prop_assert_eq!(alone[i].reader.cursor(), shared[i].reader.cursor());
                prop_assert_eq!(alone[i].reader.next_seq(), shared[i].reader.next_seq());
                prop_assert_eq!(
                    alone[i].enc.resume_point(alone[i].reader.next_seq()),
                    shared[i].enc.resume_point(shared[i].reader.next_seq())
                );
                Ok(())
            };
        for op in ops {
            match op {
                Op::Ring(r) => {
                    r.iter().for_each(|r| ring.apply(r));
                    cache = fresh_cache();
                }
                Op::Poll(n, progress) => check(n % subs_n, *progress, &cache)?,
            }
        }
        // Drain everyone, in order, until nobody gets a batch.
        for _ in 0..200 {
            for i in 0..subs_n {
                check(i, true, &cache)?;
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Any ring contents (frames, discarded reservations, a pending claim, corrupt bytes,
        /// laps), any subscribers (filters, starts, batch bounds) and any order of polls:
        /// every batch a subscriber gets with the shared cache decodes to exactly the batch it
        /// gets reading the ring alone, and both leave it at the same place.
        #[test]
        fn shared_batches_equal_own_batches(
            subs in proptest::collection::vec((sub(), 1usize..4), 1..4),
            ops in proptest::collection::vec(op(), 0..150),
        ) {
            // Each kind of subscriber one to three times: the same start and bounds.
            let subs: Vec<Sub> = subs.into_iter().flat_map(|(s, n)| std::iter::repeat_n(s, n)).collect();
            run(&subs, &ops)?;
        }
    }

    /// Subscribers at the same place with the same bounds share: the first reads the ring,
    /// the others send its chunk, and their batches decode to the same frames.
    #[test]
    fn subscribers_at_the_head_share_one_read() {
        let mut ring = Ring::new();
        for i in 0..30 {
            ring.apply(&RingOp::Write {
                topic: i % TOPICS.len(),
                len: 100,
            });
        }
        let all = Sub {
            topics: vec![],
            start: StartAt::Earliest,
            max_bytes: 64 * 1024,
            max_frames: 0,
        };
        let mut subs: Vec<Side> = (0..3).map(|_| side(&ring, &all).expect("reader")).collect();
        let mut filtered = side(
            &ring,
            &Sub {
                topics: vec!["mem".into()],
                ..all.clone()
            },
        )
        .expect("reader");
        let cache = ChunkCache::default();
        // A lone candidate does not publish (its batch buffer would be held for nobody).
        cache.enter();
        let mut alone = side(&ring, &all).expect("reader");
        assert!(poll(&mut alone, Some(&cache), false).1.is_some());
        assert_eq!(cache.bytes(), 0, "nothing published for a lone subscriber");
        cache.enter();
        cache.enter();
        let first = poll(&mut subs[0], Some(&cache), false).1.expect("a batch");
        assert!(!first.shared, "the first subscriber reads the ring");
        assert!(cache.bytes() > 0, "and publishes its frames");
        let want = decode(&first.to_vec());
        assert_eq!(want.frames.len(), 30);
        for s in &mut subs[1..] {
            let b = poll(s, Some(&cache), false).1.expect("a batch");
            assert!(b.shared, "the others send the shared chunk");
            assert_eq!(decode(&b.to_vec()), want);
        }
        let f = poll(&mut filtered, Some(&cache), false).1.expect("a batch");
        assert!(!f.shared, "a filtered subscriber reads the ring itself");
        assert_eq!(decode(&f.to_vec()).frames.len(), 10);
        // A loss in the range: nobody publishes it, everyone reports it from the ring.
        let mut late: Vec<Side> = (0..2)
            .map(|_| {
                side(
                    &ring,
                    &Sub {
                        start: StartAt::Sequence(0),
                        ..all.clone()
                    },
                )
                .expect("reader")
            })
            .collect();
        for _ in 0..200 {
            ring.apply(&RingOp::Write {
                topic: 0,
                len: 1000,
            });
        }
        let cache = ChunkCache::default();
        cache.enter();
        cache.enter();
        for s in &mut late {
            let b = poll(s, Some(&cache), false).1.expect("a batch");
            assert!(!b.shared);
            let b = decode(&b.to_vec());
            assert_eq!(b.losses.len(), 1, "lapped: {b:?}");
            assert_eq!(b.losses[0].first_seq, 0);
        }
        assert_eq!(cache.bytes(), 0, "a batch with a loss is not shared");
    }

    /// A chunk built by a read that caught up, taken after producers wrote on: the taker
    /// must read on, not believe the builder's "caught up" (it would wait for a doorbell
    /// change it may already have seen, and never deliver the new frames).
    #[test]
    fn a_chunk_taken_after_the_ring_moved_on_is_read_past() {
        let mut ring = Ring::new();
        for len in 10..15 {
            ring.apply(&RingOp::Write { topic: 0, len });
        }
        let cache = ChunkCache::default();
        cache.enter();
        cache.enter();
        let s = Sub {
            topics: vec![],
            start: StartAt::Earliest,
            max_bytes: 0,
            max_frames: 0,
        };
        let mut builder = side(&ring, &s).expect("builder");
        let mut taker = side(&ring, &s).expect("taker");
        let (fill, out) = poll(&mut builder, Some(&cache), false);
        assert_eq!(fill, Fill::Idle, "the builder caught up");
        assert_eq!(decode(&out.expect("a batch").to_vec()).frames.len(), 5);

        ring.apply(&RingOp::Write { topic: 1, len: 20 });
        let (fill, out) = poll(&mut taker, Some(&cache), false);
        let out = out.expect("a batch");
        assert!(out.shared, "the taker took the builder's chunk");
        assert_eq!(decode(&out.to_vec()).frames.len(), 5);
        assert_ne!(
            fill,
            Fill::Idle,
            "a taken chunk says nothing about the ring now"
        );

        let (_, out) = poll(&mut taker, Some(&cache), false);
        let frames = decode(&out.expect("a batch").to_vec()).frames;
        assert_eq!(
            frames.len(),
            1,
            "the frame written after the chunk was built"
        );
        assert_eq!(frames[0].topic, "cpu/0");
    }
}
