//! The rings a producer has written, so a writer never reference-counts the current one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use ringside_ring::writer::WritableRing;

/// Most rings one producer can switch between in its life (each switch is a sidecar that
/// could not adopt the old ring: a resize or a restart with no producer to hand it back).
pub const MAX_RING_SWITCHES: usize = 64;

/// The rings a producer has mapped, append-only. A writer borrows the current one with two
/// loads and no reference counting: entries are never removed while the producer lives,
/// and a replaced ring is retired in place (see [`WritableRing::retire`]).
#[derive(Debug)]
pub(crate) struct RingSlots {
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
pub(crate) struct SlotsExhausted;
