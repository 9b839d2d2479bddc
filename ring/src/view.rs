//! The sidecar's read-only view of a ring, and the claim counter as readers see it.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{Ordering, fence};

use crate::layout::{RingConfig, RingHeader};
use crate::shm::{Access, RingError, RingMapping, inspect_ring_fd};

/// A snapshot of the claim word: where and with which sequence the next frame will start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Tail {
    /// Byte position of the next claim.
    pub pos: u64,
    /// Sequence number of the next claim.
    pub seq: u64,
}

/// Reads the two halves of the claim word consistently, from any mapping.
pub(crate) fn read_tail(map: &RingMapping) -> Tail {
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
    ///
    /// # Errors
    ///
    /// [`RingError`] when the fd fails the checks of [`crate::shm::inspect_ring_fd`] or cannot
    /// be mapped.
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
