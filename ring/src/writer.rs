//! A producer's writable mapping of a ring: the claim/commit protocol.
//!
//! `docs/ring-format.md` §4 is its contract.

use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::{Ordering, fence};

use zerocopy::IntoBytes;

use crate::layout::{
    FRAME_HEADER_LEN, FrameHeader, RingConfig, STATE_COMMITTED, STATE_DISCARDED, frame_check,
    frame_len,
};
use crate::shm::{Access, RingError, RingMapping, inspect_ring_fd_geometry};
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
