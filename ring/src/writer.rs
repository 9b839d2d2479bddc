//! A producer's writable mapping of a ring: the claim/commit protocol.
//!
//! `docs/ring-format.md` §4 is its contract.

use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::{Ordering, fence};

use crate::layout::{
    FRAME_HEADER_LEN, FrameHeader, LongCheckBlock, RingConfig, SHORT_CHECK_TOPIC, STATE_COMMITTED,
    STATE_DISCARDED, ShortCheckBlock, ShortTopicWords, frame_check, frame_check_hashed, frame_len,
    payload_hash, short_topic_words,
};
use crate::shm::{
    Access, RingError, RingMapping, STREAMING_COPY_MIN, copy_to_ring, inspect_ring_fd_geometry,
};
use crate::view::{Tail, read_tail};

/// A ring mapped writable by a producer.
#[derive(Debug)]
pub struct WritableRing {
    map: RingMapping,
    config: RingConfig,
    ring_id: u64,
    /// None once retired.
    fd: Mutex<Option<OwnedFd>>,
}

/// A frame claimed by [`WritableRing::claim`]: the range is this producer's until it is
/// published. Deliberately neither `Copy` nor `Clone`: owning the claim is what makes the
/// mutable view of its bytes ([`WritableRing::payload_mut`]) unique.
#[derive(Debug)]
pub struct Claim {
    /// Absolute byte position of the frame.
    pub pos: u64,
    /// The frame's sequence number.
    pub seq: u64,
    /// Topic length (at most 255), narrow so a claim stays 24 bytes.
    topic_len: u16,
    /// Payload length (at most 64 MiB, the format's limit).
    payload_len: u32,
}

impl Claim {
    /// Payload length this claim was made for.
    #[inline]
    pub fn payload_len(&self) -> usize {
        self.payload_len as usize
    }

    /// Topic length this claim was made for.
    #[inline]
    pub fn topic_len(&self) -> usize {
        usize::from(self.topic_len)
    }
}

/// A claimed frame whose topic is written and whose payload bytes are borrowed from the ring,
/// to be filled in place: what a zero-copy reservation holds. Made by
/// [`WritableRing::claim_frame`] (one bounds computation for the whole body), published with
/// [`WritableRing::publish_frame`] or [`WritableRing::discard_frame`], or turned back into its
/// [`Claim`].
///
/// It keeps a short topic as the check block's words ([`ShortTopicWords`], computed from the
/// caller's topic at claim time), not as bytes to re-read at commit: the commit then builds
/// the check block from registers, as `send` does, whether or not the compiler still knows
/// the topic there. 56 bytes: the claim's fields are held flat so the words fit in the
/// padding a nested [`Claim`] would leave.
#[derive(Debug)]
pub struct ClaimedFrame<'r> {
    /// Absolute byte position of the frame.
    pos: u64,
    /// The frame's sequence number.
    seq: u64,
    /// Topic length (at most 255).
    topic_len: u16,
    /// The topic's first [`SHORT_CHECK_TOPIC`] bytes, zero-padded (meaningful only when the
    /// topic is that short; a longer topic is hashed from the ring at commit).
    short_topic: ShortTopicWords,
    /// The payload bytes in the ring; its length is the claim's payload length.
    payload: &'r mut [u8],
}

impl ClaimedFrame<'_> {
    /// The frame's payload bytes in the ring.
    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        self.payload
    }

    /// The frame's payload bytes in the ring, to fill.
    #[inline(always)]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.payload
    }

    /// Payload length this frame was claimed for.
    #[inline]
    pub fn payload_len(&self) -> usize {
        self.payload.len()
    }

    /// Gives up the borrowed bytes, keeping the claim (to publish with
    /// [`WritableRing::publish`]).
    #[inline(always)]
    pub fn into_claim(self) -> Claim {
        Claim {
            pos: self.pos,
            seq: self.seq,
            topic_len: self.topic_len,
            // The payload is at most the ring's max payload, which the format caps at 64 MiB.
            payload_len: self.payload.len() as u32,
        }
    }
}

impl WritableRing {
    /// Checks and maps a ring fd received from the sidecar, whose Welcome gave its id and
    /// geometry (the header in the ring itself is not trusted).
    ///
    /// # Errors
    ///
    /// [`RingError`] when the fd's seals or size do not match the geometry, the CPU lacks
    /// lock-free 128-bit atomics ([`RingError::NoWideAtomics`]), or the mapping fails.
    pub fn open(fd: OwnedFd, ring_id: u64, config: RingConfig) -> Result<WritableRing, RingError> {
        inspect_ring_fd_geometry(&fd, &config)?;
        if !portable_atomic::AtomicU128::is_lock_free() {
            return Err(RingError::NoWideAtomics);
        }
        let map = RingMapping::map(&fd, &config, Access::ReadWrite)?;
        Ok(WritableRing {
            map,
            config,
            ring_id,
            fd: Mutex::new(Some(fd)),
        })
    }

    /// Makes this process's page table entries for the whole ring writable now, so that
    /// `send` does not take a page fault every 4 KiB of its first lap (and, on a ring the
    /// sidecar did not back with memory at creation, allocates the missing pages here).
    /// Meant for the connecting thread, before writers see the ring (populating only
    /// faults pages in and never changes their contents, so concurrent writes would be
    /// safe too). Best effort: where it fails, pages fault in on first write, as without
    /// it. About 1.5 µs per 4 KiB page on the development VM (25 ms for a 64 MiB ring).
    pub fn populate_page_tables(&self) {
        let _ = self.map.populate();
    }

    /// The ring's geometry.
    pub fn config(&self) -> &RingConfig {
        &self.config
    }

    /// The ring's identity.
    pub fn ring_id(&self) -> u64 {
        self.ring_id
    }

    /// A duplicate of the ring's fd, to hand back to a restarted sidecar (None once retired).
    pub fn fd(&self) -> Option<OwnedFd> {
        let guard = self.fd.lock().ok()?;
        guard.as_ref()?.try_clone().ok()
    }

    /// Lets go of the ring (the sidecar handed us another): the mapping is replaced by
    /// anonymous memory and the fd closed, so the ring's memory can be freed while any
    /// write still in flight lands harmlessly.
    pub fn retire(&self) {
        self.map.retire();
        if let Ok(mut fd) = self.fd.lock() {
            fd.take();
        }
    }

    /// The claim counter now.
    pub fn tail(&self) -> Tail {
        read_tail(&self.map)
    }

    /// Claims a whole frame for a topic and payload of the given lengths, and the next
    /// sequence number, in one atomic 128-bit add. Never blocks; lock-free (a CAS loop on
    /// x86_64). The caller has checked both lengths against the ring's limits (topic at most
    /// [`MAX_TOPIC_LEN`](crate::layout::MAX_TOPIC_LEN), payload at most the ring's max
    /// payload, which the format caps at 64 MiB).
    #[inline]
    pub fn claim(&self, topic_len: usize, payload_len: usize) -> Claim {
        let len = frame_len(topic_len, payload_len);
        let word = match self.map.claim_word() {
            Some(word) => word,
            // A WritableRing is always mapped ReadWrite (see open).
            None => unreachable!("writable ring mapped read-only"),
        };
        // SeqCst: the claim is one side of the doorbell's store-load handshake (see
        // `wake`); it is a locked instruction on x86_64 anyway.
        let old = word.fetch_add((1u128 << 64) | len as u128, Ordering::SeqCst);
        // Release fence: orders the claim before every byte we write next, so a reader that
        // sees any of our bytes and then re-reads the claim position sees this claim.
        fence(Ordering::Release);
        debug_assert!(topic_len <= usize::from(u16::MAX) && payload_len <= u32::MAX as usize);
        Claim {
            pos: old as u64,
            seq: (old >> 64) as u64,
            topic_len: topic_len as u16,
            payload_len: payload_len as u32,
        }
    }

    /// Claims a frame for `topic` and a `payload_len`-byte payload (as [`Self::claim`]), writes
    /// the topic, and lends out the payload bytes. The caller has checked both lengths.
    #[inline(always)]
    pub fn claim_frame(&self, topic: &[u8], payload_len: usize) -> ClaimedFrame<'_> {
        let (claim, payload) = self.claim_body(topic, payload_len);
        ClaimedFrame {
            pos: claim.pos,
            seq: claim.seq,
            topic_len: claim.topic_len,
            short_topic: short_topic_words(topic),
            payload,
        }
    }

    /// Claims a frame for `topic` and a `payload_len`-byte payload (as [`Self::claim`]) and
    /// writes the topic; the payload is filled through [`Self::payload_mut`] and the frame
    /// published with [`Self::publish_in_place`]. For a claim held apart from a borrow of
    /// the ring (an owned reservation). The caller has checked both lengths.
    #[inline]
    pub fn claim_topic(&self, topic: &[u8], payload_len: usize) -> Claim {
        self.claim_body(topic, payload_len).0
    }

    /// The claim, the topic written, and the payload bytes.
    // The view is unique because the claim just made here is: each call claims a range no
    // one else holds (as in `RingMapping::slice_mut`), not because of `&self`.
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    fn claim_body(&self, topic: &[u8], payload_len: usize) -> (Claim, &mut [u8]) {
        let claim = self.claim(topic.len(), payload_len);
        self.map
            .prefetch(claim.pos, frame_len(topic.len(), payload_len));
        let at = claim.pos.wrapping_add(FRAME_HEADER_LEN as u64);
        // SAFETY: the claim protocol gives this claim's range to its owner alone, and the
        // claim just made moves to the caller together with the only view of its bytes; the
        // view borrows `self`, so it cannot outlive the mapping.
        let body = unsafe { self.map.slice_mut(at, topic.len() + payload_len) };
        let (topic_bytes, payload) = body.split_at_mut(topic.len());
        topic_bytes.copy_from_slice(topic);
        (claim, payload)
    }

    /// Claims, fills and publishes a whole frame from the caller's topic and payload (what a
    /// producer's `send` does). The caller has checked both lengths against the ring's
    /// limits, as for [`Self::claim`].
    ///
    /// The check hashes the caller's payload, not the ring's copy (ring format §3). The
    /// order is chosen for speed: claim (which starts loading the claimed lines into the
    /// cache), hash the payload while they arrive, build the check's input block, copy the
    /// payload (through [`copy_to_ring`]: streaming stores from
    /// [`STREAMING_COPY_MIN`] bytes, whose lines are then
    /// not loaded at all), hash the block, store the header words and the commit word.
    #[inline]
    pub fn write_frame(&self, topic: &[u8], payload: &[u8], fields: FrameHeaderFields) {
        let claim = self.claim(topic.len(), payload.len());
        let len = frame_len(topic.len(), payload.len());
        let prefetch = if payload.len() >= STREAMING_COPY_MIN {
            // Only the header and topic lines, and the first payload line: the whole
            // lines after it are streamed, and loading them would be wasted.
            len.min(FRAME_HEADER_LEN + topic.len() + 64)
        } else {
            len
        };
        self.map.prefetch(claim.pos, prefetch);
        let hash = payload_hash(fields.flags, payload);
        let mut header = self.header_for(&claim, fields, STATE_COMMITTED);
        let at = claim.pos.wrapping_add(FRAME_HEADER_LEN as u64);
        // SAFETY: the claim protocol gives this claim's range to its owner alone, and the
        // claim was just made here; the view ends before the commit below.
        let body = unsafe { self.map.slice_mut(at, topic.len() + payload.len()) };
        let (topic_bytes, payload_bytes) = body.split_at_mut(topic.len());
        topic_bytes.copy_from_slice(topic);
        header.check = if topic.len() <= SHORT_CHECK_TOPIC {
            let block = ShortCheckBlock::new(&header, hash, topic);
            copy_to_ring(payload_bytes, payload);
            block.hash()
        } else {
            let block = LongCheckBlock::new(&header, hash, topic);
            copy_to_ring(payload_bytes, payload);
            block.hash()
        };
        self.commit(claim, &header);
    }

    /// Publishes a frame filled in place: the check hashes its payload where it lies in the
    /// ring and its topic as claimed (a short topic from the words taken at claim time, a
    /// longer one from the ring), then the header is written and the commit word stored
    /// (Release).
    #[inline(always)]
    pub fn publish_frame(&self, frame: ClaimedFrame<'_>, fields: FrameHeaderFields) {
        let hash = payload_hash(fields.flags, frame.payload);
        let short_topic = frame.short_topic;
        let claim = frame.into_claim();
        let mut header = self.header_for(&claim, fields, STATE_COMMITTED);
        // As `write_frame`: the block from registers, inlined, so the header never goes
        // through the stack as a struct (frame_check_hashed out of line read it back with
        // 16-byte loads over piecewise stores: a failed store-to-load forward per frame).
        header.check = if claim.topic_len() <= SHORT_CHECK_TOPIC {
            ShortCheckBlock::from_topic_words(&header, hash, short_topic, claim.topic_len()).hash()
        } else {
            let (topic, _) = self.topic_and_payload(&claim);
            LongCheckBlock::new(&header, hash, topic).hash()
        };
        self.commit(claim, &header);
    }

    /// Publishes a frame claimed with [`Self::claim_frame`] as discarded.
    pub fn discard_frame(&self, frame: ClaimedFrame<'_>, fields: FrameHeaderFields) {
        self.discard(frame.into_claim(), fields);
    }

    /// Copies the topic into a claimed frame.
    #[inline]
    pub fn write_topic(&self, claim: &Claim, topic: &[u8]) {
        debug_assert_eq!(topic.len(), claim.topic_len());
        self.map
            .copy_in(claim.pos.wrapping_add(FRAME_HEADER_LEN as u64), topic);
    }

    /// Copies the payload into a claimed frame.
    #[inline]
    pub fn write_payload(&self, claim: &Claim, payload: &[u8]) {
        debug_assert_eq!(payload.len(), claim.payload_len());
        let at = claim
            .pos
            .wrapping_add((FRAME_HEADER_LEN + claim.topic_len()) as u64);
        self.map.copy_in(at, payload);
    }

    /// The ring bytes of a claimed frame's payload, for a zero-copy reservation.
    pub fn payload_mut<'a>(&'a self, claim: &'a mut Claim) -> &'a mut [u8] {
        let at = claim
            .pos
            .wrapping_add((FRAME_HEADER_LEN + claim.topic_len()) as u64);
        // SAFETY: the claim protocol gives this claim's range to its owner alone; `claim` is
        // neither Copy nor Clone and is borrowed mutably for the view's lifetime, so this is
        // the only view of these bytes in the process. The view cannot outlive `self`.
        unsafe { self.map.slice_mut(at, claim.payload_len()) }
    }

    /// The ring bytes of a claimed frame's payload, read-only.
    pub fn payload<'a>(&'a self, claim: &'a Claim) -> &'a [u8] {
        let at = claim
            .pos
            .wrapping_add((FRAME_HEADER_LEN + claim.topic_len()) as u64);
        // SAFETY: the range belongs to this claim alone (see payload_mut); a shared borrow of
        // the claim excludes the mutable view for as long as this one lives.
        unsafe { self.map.slice(at, claim.payload_len()) }
    }

    /// The frame's topic and payload in the ring, read-only.
    #[inline]
    fn topic_and_payload<'a>(&'a self, claim: &'a Claim) -> (&'a [u8], &'a [u8]) {
        let at = claim.pos.wrapping_add(FRAME_HEADER_LEN as u64);
        // SAFETY: the range belongs to this claim alone (see payload_mut); a shared borrow of
        // the claim excludes the mutable view for as long as this one lives.
        let body = unsafe { self.map.slice(at, claim.topic_len() + claim.payload_len()) };
        body.split_at(claim.topic_len())
    }

    /// Fills in the header and publishes the frame: the commit word is stored last, with
    /// release ordering, so a reader that sees it sees everything written before. `topic`
    /// and `payload` are the bytes the frame holds, hashed from the caller's buffers (not
    /// re-read from the ring).
    #[inline]
    pub fn publish(&self, claim: Claim, fields: FrameHeaderFields, topic: &[u8], payload: &[u8]) {
        let mut header = self.header_for(&claim, fields, STATE_COMMITTED);
        header.check = frame_check(&header, topic, payload);
        self.commit(claim, &header);
    }

    /// [`Self::publish`] with the payload's hash computed beforehand
    /// ([`payload_hash`] with these fields' flags):
    /// a `send` hashes its payload while the ring lines it claimed are still on their way
    /// into the cache, then copies.
    #[inline]
    pub fn publish_hashed(
        &self,
        claim: Claim,
        fields: FrameHeaderFields,
        topic: &[u8],
        payload_hash: u64,
    ) {
        let mut header = self.header_for(&claim, fields, STATE_COMMITTED);
        header.check = frame_check_hashed(&header, topic, payload_hash);
        self.commit(claim, &header);
    }

    /// Publishes a frame whose topic and payload were written into the ring (a zero-copy
    /// reservation filled through [`Self::payload_mut`]): the check hashes them in place.
    #[inline]
    pub fn publish_in_place(&self, claim: Claim, fields: FrameHeaderFields) {
        let mut header = self.header_for(&claim, fields, STATE_COMMITTED);
        let (topic, payload) = self.topic_and_payload(&claim);
        header.check = frame_check(&header, topic, payload);
        self.commit(claim, &header);
    }

    /// Publishes a claimed frame as discarded: readers skip it and count nothing lost.
    pub fn discard(&self, claim: Claim, fields: FrameHeaderFields) {
        let mut header = self.header_for(&claim, fields, STATE_DISCARDED);
        header.check = frame_check(&header, &[], &[]);
        self.commit(claim, &header);
    }

    #[inline]
    fn header_for(&self, claim: &Claim, fields: FrameHeaderFields, state: u64) -> FrameHeader {
        FrameHeader {
            commit: claim.pos | state,
            seq: claim.seq,
            timestamp_ns: fields.timestamp_ns,
            payload_len: claim.payload_len,
            producer_id: fields.producer_id,
            topic_len: claim.topic_len,
            flags: fields.flags,
            check: 0,
        }
    }

    /// Writes everything but the commit word, then the commit word with Release.
    #[inline]
    fn commit(&self, claim: Claim, header: &FrameHeader) {
        // Four 8-byte stores from registers (not a copy of the header's bytes from the
        // stack, which would read back piecewise stores).
        self.map
            .store_words(claim.pos.wrapping_add(8), header.tail_words());
        // Release: a reader's Acquire load that sees this word sees every byte of the frame
        // written above (header words, topic, payload; a streaming payload copy is fenced
        // inside `copy_to_ring` before returning).
        self.map
            .commit_word(claim.pos)
            .store(header.commit, Ordering::Release);
    }

    /// Writes raw bytes at a data-region position (taken modulo the capacity), bypassing
    /// the protocol: what a buggy or hostile producer can do anyway, since it holds a
    /// writable mapping. For fault injection in tests and chaos runs; readers must survive
    /// whatever this writes. Writes longer than the capacity wrap around.
    pub fn overwrite(&self, position: u64, bytes: &[u8]) {
        let capacity = self.config.capacity as usize;
        for (index, chunk) in bytes.chunks(capacity).enumerate() {
            let at = position.wrapping_add((index * capacity) as u64);
            self.map.copy_in(at, chunk);
        }
    }

    /// Largest whole frame this ring accepts.
    pub fn max_frame_len(&self) -> usize {
        self.config.max_frame_len()
    }
}

/// Header fields the producer supplies; the ring fills in position, sequence and lengths.
#[derive(Clone, Copy, Debug)]
pub struct FrameHeaderFields {
    /// Producer id from the handshake.
    pub producer_id: u32,
    /// Timestamp, ns since the Unix epoch.
    pub timestamp_ns: u64,
    /// Frame flags (`FLAG_PAYLOAD_UNCHECKED` or 0).
    pub flags: u16,
}
