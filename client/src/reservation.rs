//! Zero-copy reservations: a frame filled in place inside the ring.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ringside_ring::layout::MAX_TOPIC_LEN;
use ringside_ring::writer::{Claim, FrameHeaderFields, WritableRing};

use crate::producer::Shared;

/// A frame being filled in place. Derefs to the payload bytes inside the ring.
#[derive(Debug)]
pub struct Reservation {
    shared: Arc<Shared>,
    ring_index: usize,
    claim: Option<Claim>,
    topic: [u8; MAX_TOPIC_LEN],
    topic_len: u8,
    timestamp_ns: u64,
}

impl Reservation {
    pub(crate) fn new(
        shared: Arc<Shared>,
        ring_index: usize,
        claim: Claim,
        topic: &[u8],
        timestamp_ns: u64,
    ) -> Reservation {
        let mut topic_copy = [0u8; MAX_TOPIC_LEN];
        topic_copy[..topic.len()].copy_from_slice(topic);
        Reservation {
            shared,
            ring_index,
            claim: Some(claim),
            topic: topic_copy,
            topic_len: topic.len() as u8,
            timestamp_ns,
        }
    }

    fn ring(&self) -> Option<&WritableRing> {
        self.shared.rings.get(self.ring_index)
    }

    /// Publishes the frame.
    pub fn commit(mut self) {
        let Some(claim) = self.claim.take() else {
            return;
        };
        let fields = self.fields();
        let len = claim.payload_len();
        if let Some(ring) = self.ring() {
            ring.publish_in_place(claim, fields, &self.topic[..usize::from(self.topic_len)]);
        }
        self.shared.doorbell.ring();
        self.shared.counters.count_sent(len);
    }

    /// Publishes the frame as discarded (readers skip it; not counted as sent).
    pub fn discard(mut self) {
        self.discard_claim();
    }

    /// Sets the frame's timestamp (ns since the Unix epoch); default: reserve time.
    pub fn set_timestamp(&mut self, timestamp_ns: u64) {
        self.timestamp_ns = timestamp_ns;
    }

    fn fields(&self) -> FrameHeaderFields {
        FrameHeaderFields {
            producer_id: self.shared.producer_id.load(Ordering::Relaxed),
            timestamp_ns: self.timestamp_ns,
            flags: self.shared.frame_flags,
        }
    }

    fn discard_claim(&mut self) {
        if let Some(claim) = self.claim.take() {
            let fields = self.fields();
            if let Some(ring) = self.ring() {
                ring.discard(claim, fields);
            }
            self.shared
                .counters
                .discarded
                .fetch_add(1, Ordering::Relaxed);
        }
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
        self.discard_claim();
    }
}
