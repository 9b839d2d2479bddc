//! The producer's counters: per-thread slots on the hot path, summed on demand.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Per-producer counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProducerStats {
    /// Frames published.
    pub sent: u64,
    /// Payload bytes published.
    pub sent_bytes: u64,
    /// Frames dropped because no ring was mapped yet.
    pub dropped_not_connected: u64,
    /// Frames refused for exceeding the max payload.
    pub dropped_too_large: u64,
    /// Frames refused for an empty or over-long topic.
    pub dropped_invalid_topic: u64,
    /// Reservations dropped or discarded without commit.
    pub discarded: u64,
    /// Successful handshakes after the first.
    pub reconnects: u64,
}

/// Exclusive per-thread counter slots: thread `i` (numbered on first use) owns slot `i`
/// and updates it with a plain load and store, so two threads sharing a producer never
/// contend on a counter line. Threads past the slot count share one atomic slot.
const EXCLUSIVE_SLOTS: usize = 32;

#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Slot {
    sent: AtomicU64,
    bytes: AtomicU64,
}

static NEXT_THREAD_SLOT: AtomicU64 = AtomicU64::new(0);
thread_local! {
    static THREAD_SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn thread_slot() -> usize {
    THREAD_SLOT.with(|slot| {
        if slot.get() == usize::MAX {
            slot.set(NEXT_THREAD_SLOT.fetch_add(1, Ordering::Relaxed) as usize);
        }
        slot.get()
    })
}

#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) slots: Box<[Slot]>,
    pub(crate) shared_slot: Slot,
    pub(crate) not_connected: AtomicU64,
    pub(crate) too_large: AtomicU64,
    pub(crate) invalid_topic: AtomicU64,
    pub(crate) discarded: AtomicU64,
    pub(crate) reconnects: AtomicU64,
}

impl Counters {
    pub(crate) fn new() -> Counters {
        Counters {
            slots: (0..EXCLUSIVE_SLOTS).map(|_| Slot::default()).collect(),
            shared_slot: Slot::default(),
            not_connected: AtomicU64::new(0),
            too_large: AtomicU64::new(0),
            invalid_topic: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
        }
    }

    #[inline]
    pub(crate) fn count_sent(&self, bytes: usize) {
        match self.slots.get(thread_slot()) {
            Some(slot) => {
                // Only this thread writes this slot: load+store cannot lose an update, and
                // Relaxed suffices because readers only want an eventually exact total.
                slot.sent
                    .store(slot.sent.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                slot.bytes.store(
                    slot.bytes.load(Ordering::Relaxed) + bytes as u64,
                    Ordering::Relaxed,
                );
            }
            None => {
                self.shared_slot.sent.fetch_add(1, Ordering::Relaxed);
                self.shared_slot
                    .bytes
                    .fetch_add(bytes as u64, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn snapshot(&self) -> ProducerStats {
        let (sent, sent_bytes) = self
            .slots
            .iter()
            .chain(std::iter::once(&self.shared_slot))
            .fold((0, 0), |(s, b), slot| {
                (
                    s + slot.sent.load(Ordering::Relaxed),
                    b + slot.bytes.load(Ordering::Relaxed),
                )
            });
        ProducerStats {
            sent,
            sent_bytes,
            dropped_not_connected: self.not_connected.load(Ordering::Relaxed),
            dropped_too_large: self.too_large.load(Ordering::Relaxed),
            dropped_invalid_topic: self.invalid_topic.load(Ordering::Relaxed),
            discarded: self.discarded.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
        }
    }
}
