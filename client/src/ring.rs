//! A mapped ring: the producer's writable attachment and the sidecar's read-only view.
//!
//! The claim/commit protocol lives here; `docs/ring-format.md` is its contract.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{Ordering, fence};
use std::sync::{Mutex, OnceLock};

use zerocopy::IntoBytes;

use crate::error::RingError;
use crate::layout::{
    FRAME_HEADER_LEN, FrameHeader, RingConfig, RingHeader, STATE_COMMITTED, STATE_DISCARDED,
    frame_check, frame_len,
};
use crate::shm::{Access, RingMapping, inspect_ring_fd, inspect_ring_fd_geometry};

/// A snapshot of the claim word: where and with which sequence the next frame will start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Tail {
    /// Byte position of the next claim.
    pub pos: u64,
    /// Sequence number of the next claim.
    pub seq: u64,
}

/// Reads the two halves of the claim word consistently, from any mapping.
fn read_tail(map: &RingMapping) -> Tail {
    loop {
        // Relaxed loads plus acquire fences: the loads must not be reordered with each
        // other, and nothing stronger is needed because positions only grow (no ABA): if
        // the position is the same before and after, no claim happened in between, so the
        // sequence read in between belongs to it.
        let before = map.claim_position().load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        let seq = map.claim_sequence().load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        let after = map.claim_position().load(Ordering::Relaxed);
        if before == after {
            return Tail { pos: before, seq };
        }
        std::hint::spin_loop();
    }
}

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
    topic_len: usize,
    payload_len: usize,
}

impl Claim {
    /// Payload length this claim was made for.
    pub fn payload_len(&self) -> usize {
        self.payload_len
    }
}

impl WritableRing {
    /// Checks and maps a ring fd received from the sidecar, whose Welcome gave its id and
    /// geometry (the header in the ring itself is not trusted).
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
    /// x86_64). The caller has checked both lengths against the ring's limits.
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
        Claim {
            pos: old as u64,
            seq: (old >> 64) as u64,
            topic_len,
            payload_len,
        }
    }

    /// Copies the topic into a claimed frame.
    #[inline]
    pub fn write_topic(&self, claim: &Claim, topic: &[u8]) {
        debug_assert_eq!(topic.len(), claim.topic_len);
        self.map
            .copy_in(claim.pos.wrapping_add(FRAME_HEADER_LEN as u64), topic);
    }

    /// Copies the payload into a claimed frame.
    #[inline]
    pub fn write_payload(&self, claim: &Claim, payload: &[u8]) {
        debug_assert_eq!(payload.len(), claim.payload_len);
        let at = claim
            .pos
            .wrapping_add((FRAME_HEADER_LEN + claim.topic_len) as u64);
        self.map.copy_in(at, payload);
    }

    /// The ring bytes of a claimed frame's payload, for a zero-copy reservation.
    pub fn payload_mut<'a>(&'a self, claim: &'a mut Claim) -> &'a mut [u8] {
        let at = claim
            .pos
            .wrapping_add((FRAME_HEADER_LEN + claim.topic_len) as u64);
        // SAFETY: the claim protocol gives this claim's range to its owner alone; `claim` is
        // neither Copy nor Clone and is borrowed mutably for the view's lifetime, so this is
        // the only view of these bytes in the process. The view cannot outlive `self`.
        unsafe { self.map.slice_mut(at, claim.payload_len) }
    }

    /// The ring bytes of a claimed frame's payload, read-only.
    pub fn payload<'a>(&'a self, claim: &'a Claim) -> &'a [u8] {
        let at = claim
            .pos
            .wrapping_add((FRAME_HEADER_LEN + claim.topic_len) as u64);
        // SAFETY: the range belongs to this claim alone (see payload_mut); a shared borrow of
        // the claim excludes the mutable view for as long as this one lives.
        unsafe { self.map.slice(at, claim.payload_len) }
    }

    /// Fills in the header and publishes the frame: the commit word is stored last, with
    /// release ordering, so a reader that sees it sees everything written before. `topic`
    /// and `payload` are the bytes the frame holds (hashed from the caller's buffers).
    #[inline]
    pub fn publish(&self, claim: Claim, fields: FrameHeaderFields, topic: &[u8], payload: &[u8]) {
        let mut header = self.header_for(&claim, fields, STATE_COMMITTED);
        header.check = frame_check(&header, topic, payload);
        self.commit(claim, &header);
    }

    /// Publishes a frame whose payload was filled in place through [`Self::payload_mut`].
    pub fn publish_in_place(&self, mut claim: Claim, fields: FrameHeaderFields, topic: &[u8]) {
        let mut header = self.header_for(&claim, fields, STATE_COMMITTED);
        header.check = frame_check(&header, topic, self.payload_mut(&mut claim));
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
            payload_len: claim.payload_len as u32,
            producer_id: fields.producer_id,
            topic_len: claim.topic_len as u16,
            flags: fields.flags,
            check: 0,
        }
    }

    /// Writes everything but the commit word, then the commit word with Release.
    #[inline]
    fn commit(&self, claim: Claim, header: &FrameHeader) {
        self.map
            .copy_in(claim.pos.wrapping_add(8), &header.as_bytes()[8..]);
        self.map
            .commit_word(claim.pos)
            .store(header.commit, Ordering::Release);
    }

    /// Writes raw bytes at a position, bypassing the protocol (test hooks only).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn scribble(&self, position: u64, bytes: &[u8]) {
        self.map.copy_in(position, bytes);
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

/// A ring mapped read-only: what the sidecar and readers use. Share it with `Arc`.
#[derive(Debug)]
pub struct RingView {
    map: RingMapping,
    config: RingConfig,
    header: RingHeader,
    fd: OwnedFd,
}

impl RingView {
    /// Checks (seals, size, header) and maps a ring fd read-only.
    pub fn open(fd: OwnedFd) -> Result<RingView, RingError> {
        let (header, config) = inspect_ring_fd(&fd)?;
        let map = RingMapping::map(&fd, &config, Access::ReadOnly)?;
        Ok(RingView {
            map,
            config,
            header,
            fd,
        })
    }

    /// The ring's identity: a new ring restarts sequence numbers.
    pub fn ring_id(&self) -> u64 {
        self.header.ring_id
    }

    /// Data capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.config.capacity
    }

    /// Largest payload in bytes.
    pub fn max_payload(&self) -> u32 {
        self.config.max_payload
    }

    /// The ring's geometry.
    pub fn config(&self) -> &RingConfig {
        &self.config
    }

    /// When the ring was created, ns since the Unix epoch.
    pub fn created_unix_ns(&self) -> u64 {
        self.header.created_unix_ns
    }

    /// The claim counter now.
    pub fn tail(&self) -> Tail {
        read_tail(&self.map)
    }

    /// The fd, to pass on to producers.
    pub fn fd(&self) -> impl AsFd + '_ {
        &self.fd
    }

    pub(crate) fn mapping(&self) -> &RingMapping {
        &self.map
    }
}

/// Most rings one producer can switch between in its life (each switch is a sidecar that
/// could not adopt the old ring: a resize or a restart with no producer to hand it back).
pub const MAX_RING_SWITCHES: usize = 64;

/// The rings a producer has mapped, append-only. A writer borrows the current one with two
/// loads and no reference counting: entries are never removed while the producer lives,
/// and a replaced ring is retired in place (see [`WritableRing::retire`]).
#[derive(Debug)]
pub struct RingSlots {
    slots: Box<[OnceLock<WritableRing>]>,
    /// Index of the current ring plus one; 0 = none yet.
    current: AtomicUsize,
    install: Mutex<()>,
}

impl Default for RingSlots {
    fn default() -> Self {
        RingSlots {
            slots: (0..MAX_RING_SWITCHES).map(|_| OnceLock::new()).collect(),
            current: AtomicUsize::new(0),
            install: Mutex::new(()),
        }
    }
}

impl RingSlots {
    /// The current ring and its slot index.
    #[inline]
    pub fn current(&self) -> Option<(usize, &WritableRing)> {
        // Acquire pairs with the Release in `install`: the ring was fully built before.
        let index = self.current.load(Ordering::Acquire).checked_sub(1)?;
        self.slots.get(index)?.get().map(|ring| (index, ring))
    }

    /// The ring in slot `index` (possibly retired).
    #[inline]
    pub fn get(&self, index: usize) -> Option<&WritableRing> {
        self.slots.get(index)?.get()
    }

    /// Makes `ring` current and retires the previous one. Fails (dropping `ring`) when
    /// every slot is used.
    pub fn install(&self, ring: WritableRing) -> Result<(), SlotsExhausted> {
        let Ok(_guard) = self.install.lock() else {
            return Err(SlotsExhausted);
        };
        let next = self.current.load(Ordering::Acquire);
        let Some(slot) = self.slots.get(next) else {
            return Err(SlotsExhausted);
        };
        slot.set(ring).map_err(|_| SlotsExhausted)?;
        self.current.store(next + 1, Ordering::Release);
        if let Some(previous) = next.checked_sub(1).and_then(|i| self.get(i)) {
            previous.retire();
        }
        Ok(())
    }
}

/// Every ring slot of a producer is used ([`MAX_RING_SWITCHES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotsExhausted;
