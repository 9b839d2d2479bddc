//! Zero-copy reservations: a frame filled in place inside the ring.
//!
//! Two types with one behaviour:
//! - [`BorrowedReservation`] borrows its [`Producer`](crate::Producer): no reference count
//!   to take or release, the ring held by reference. The fast path
//!   ([`Producer::reserve_borrowed`](crate::Producer::reserve_borrowed)).
//! - [`Reservation`] owns a reference to the producer's shared state, so it can outlive the
//!   `Producer` handle it came from, be stored anywhere and moved across threads: for
//!   bindings (C, Python) whose reservations are not tied to a Rust borrow. It costs one
//!   reference-count increment at reserve time and one decrement at commit.
//!
//! Neither copies the topic: it is written into the ring at reserve time, and the frame
//! check hashes topic and payload where they lie in the ring (ring format §3).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ringside_ring::writer::{Claim, ClaimedFrame, FrameHeaderFields, WritableRing};

use crate::producer::Shared;

/// A frame being filled in place, borrowed from its [`Producer`](crate::Producer). Derefs
/// to the payload bytes inside the ring. [`commit`](Self::commit) publishes it; dropping it
/// uncommitted publishes it as discarded (readers skip it; it never wedges the ring).
///
/// 80 bytes, `Send`; no allocation and no atomic read-modify-write besides the ring's claim.
/// It holds the payload slice itself, so filling it costs no lookup.
#[derive(Debug)]
pub struct BorrowedReservation<'p> {
    shared: &'p Shared,
    ring: &'p WritableRing,
    frame: Option<ClaimedFrame<'p>>,
    timestamp_ns: u64,
}

/// A frame being filled in place, holding a counted reference to its producer's shared
/// state, so it may outlive the [`Producer`](crate::Producer) handle and be stored anywhere
/// (56 bytes, `Send`; it can be moved by value into caller-provided storage). Derefs to the
/// payload bytes inside the ring. [`commit`](Self::commit) publishes it; dropping it
/// uncommitted publishes it as discarded.
#[derive(Debug)]
pub struct Reservation {
    shared: Arc<Shared>,
    ring_index: usize,
    claim: Option<Claim>,
    timestamp_ns: u64,
}

impl<'p> BorrowedReservation<'p> {
    #[inline(always)]
    pub(crate) fn new(
        shared: &'p Shared,
        ring: &'p WritableRing,
        frame: ClaimedFrame<'p>,
        timestamp_ns: u64,
    ) -> Self {
        BorrowedReservation {
            shared,
            ring,
            frame: Some(frame),
            timestamp_ns,
        }
    }

    /// Publishes the frame.
    // Always inlined, as `Producer::reserve_borrowed`: the reservation stays in registers.
    #[inline(always)]
    pub fn commit(mut self) {
        if let Some(frame) = self.frame.take() {
            let len = frame.payload_len();
            self.ring
                .publish_frame(frame, fields(self.shared, self.timestamp_ns));
            self.shared.doorbell.ring();
            self.shared.counters.count_sent(len);
        }
    }

    /// Publishes the frame as discarded (readers skip it; not counted as sent).
    pub fn discard(mut self) {
        self.discard_frame();
    }

    /// Sets the frame's timestamp (ns since the Unix epoch); default: reserve time.
    pub fn set_timestamp(&mut self, timestamp_ns: u64) {
        self.timestamp_ns = timestamp_ns;
    }

    /// Publishes the frame as discarded if it is still held. Inlined down to a test, with
    /// the work out of line ([`discard_borrowed`]) and the fields passed by value: so the
    /// drop glue (which unwinding paths call with the reservation's address) stays small
    /// enough to inline, the reservation's address never escapes, and the compiler keeps
    /// its fields in registers across the caller's fill instead of moving the struct
    /// through the stack.
    #[inline(always)]
    fn discard_frame(&mut self) {
        if let Some(frame) = self.frame.take() {
            discard_borrowed(self.shared, self.ring, frame, self.timestamp_ns);
        }
    }
}

#[cold]
#[inline(never)]
fn discard_borrowed(
    shared: &Shared,
    ring: &WritableRing,
    frame: ClaimedFrame<'_>,
    timestamp_ns: u64,
) {
    ring.discard_frame(frame, fields(shared, timestamp_ns));
    shared.counters.discarded.fetch_add(1, Ordering::Relaxed);
}

impl Reservation {
    pub(crate) fn new(
        shared: Arc<Shared>,
        ring_index: usize,
        claim: Claim,
        timestamp_ns: u64,
    ) -> Reservation {
        Reservation {
            shared,
            ring_index,
            claim: Some(claim),
            timestamp_ns,
        }
    }

    fn ring(&self) -> Option<&WritableRing> {
        self.shared.rings.get(self.ring_index)
    }

    /// Publishes the frame.
    pub fn commit(mut self) {
        if let Some(claim) = self.claim.take() {
            publish(&self.shared, self.ring(), claim, self.timestamp_ns);
        }
    }

    /// Publishes the frame as discarded (readers skip it; not counted as sent).
    pub fn discard(mut self) {
        if let Some(claim) = self.claim.take() {
            discard(&self.shared, self.ring(), claim, self.timestamp_ns);
        }
    }

    /// Sets the frame's timestamp (ns since the Unix epoch); default: reserve time.
    pub fn set_timestamp(&mut self, timestamp_ns: u64) {
        self.timestamp_ns = timestamp_ns;
    }
}

#[inline]
fn fields(shared: &Shared, timestamp_ns: u64) -> FrameHeaderFields {
    FrameHeaderFields {
        producer_id: shared.producer_id.load(Ordering::Relaxed),
        timestamp_ns,
        flags: shared.frame_flags,
    }
}

/// Publishes a reserved frame (hashing its payload in place), rings the doorbell, counts it.
/// `ring` is None only if the producer's ring table lost the slot, which it never does.
#[inline]
fn publish(shared: &Shared, ring: Option<&WritableRing>, claim: Claim, timestamp_ns: u64) {
    let len = claim.payload_len();
    if let Some(ring) = ring {
        ring.publish_in_place(claim, fields(shared, timestamp_ns));
    }
    shared.doorbell.ring();
    shared.counters.count_sent(len);
}

fn discard(shared: &Shared, ring: Option<&WritableRing>, claim: Claim, timestamp_ns: u64) {
    if let Some(ring) = ring {
        ring.discard(claim, fields(shared, timestamp_ns));
    }
    shared.counters.discarded.fetch_add(1, Ordering::Relaxed);
}

impl std::ops::Deref for BorrowedReservation<'_> {
    type Target = [u8];
    #[inline(always)]
    fn deref(&self) -> &[u8] {
        self.frame.as_ref().map_or(&[], ClaimedFrame::payload)
    }
}

impl std::ops::DerefMut for BorrowedReservation<'_> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut [u8] {
        self.frame
            .as_mut()
            .map_or(&mut [], ClaimedFrame::payload_mut)
    }
}

impl Drop for BorrowedReservation<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.discard_frame();
    }
}

impl std::ops::Deref for Reservation {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match (self.ring(), &self.claim) {
            (Some(ring), Some(claim)) => ring.payload(claim),
            _ => &[],
        }
    }
}

impl std::ops::DerefMut for Reservation {
    fn deref_mut(&mut self) -> &mut [u8] {
        let ring = self.shared.rings.get(self.ring_index);
        match (ring, self.claim.as_mut()) {
            (Some(ring), Some(claim)) => ring.payload_mut(claim),
            _ => &mut [],
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take() {
            discard(&self.shared, self.ring(), claim, self.timestamp_ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stay_small_and_sendable() {
        fn assert_send<T: Send>() {}
        assert_send::<Reservation>();
        assert_send::<BorrowedReservation<'static>>();
        assert!(
            size_of::<Reservation>() <= 56,
            "{}",
            size_of::<Reservation>()
        );
        assert!(
            size_of::<BorrowedReservation<'static>>() <= 80,
            "{}",
            size_of::<BorrowedReservation<'static>>()
        );
    }
}
