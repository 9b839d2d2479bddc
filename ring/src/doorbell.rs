//! Waking the sidecar without a syscall on the producer's hot path while it is busy.
//!
//! The sidecar owns a doorbell page (a memfd sealed with F_SEAL_FUTURE_WRITE, so producers
//! can map it only read-only) holding one word, `sleeping`, and an eventfd. Before it
//! blocks, the sidecar sets `sleeping` and re-checks the claim counter; after publishing, a
//! producer loads `sleeping` and writes the eventfd only if it is set. This is a Dekker
//! handshake: the producer's claim (a SeqCst RMW) and its SeqCst load of `sleeping`, against
//! the sidecar's SeqCst store of `sleeping` and its load of the claim counter after a SeqCst
//! fence. In the single total order of SeqCst operations, either the sidecar sees the
//! claim and does not sleep, or the producer sees `sleeping` set and rings.
//!
//! The sidecar may wait in two ways. [`RingWaiter::wait`] blocks the calling thread in
//! `ppoll`. An async waiter instead registers a duplicate of the eventfd
//! ([`RingWaiter::event_fd`]) with its reactor and runs the same handshake in steps:
//! [`arm`](RingWaiter::arm) (store `sleeping`, fence, re-read the claim counter), then, only
//! if that says [`Armed::Unchanged`], wait for the eventfd to become readable, then
//! [`drain`](RingWaiter::drain) and [`disarm`](RingWaiter::disarm). The argument above is
//! unchanged: it only needs the store, the fence and the re-read to happen in that order
//! before the waiter relies on a ring, which `arm` does in one call.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::time::TimeSpec;

use crate::shm::RingError;
use crate::shm::{DoorbellMapping, DoorbellSlot};
use crate::view::{RingView, Tail};

/// The sidecar's side of the doorbell.
#[derive(Debug)]
pub struct Doorbell {
    page: DoorbellMapping,
    page_fd: OwnedFd,
    event: OwnedFd,
}

impl Doorbell {
    /// Creates the doorbell page and eventfd.
    ///
    /// # Errors
    ///
    /// [`RingError::Sys`] when the memfd, its seals, its mapping or the eventfd cannot be
    /// created.
    pub fn create() -> Result<Doorbell, RingError> {
        let (page_fd, page) = DoorbellMapping::create()?;
        let event = new_eventfd().map_err(|source| RingError::Sys {
            op: "eventfd",
            source,
        })?;
        Ok(Doorbell {
            page,
            page_fd,
            event,
        })
    }

    /// The fds producers receive: doorbell page, eventfd.
    pub fn fds(&self) -> [impl AsFd + '_; 2] {
        [&self.page_fd, &self.event]
    }
}

/// What [`RingWaiter::arm`] saw when it re-read the claim counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Armed {
    /// The claim counter still equals the position the caller has seen: the doorbell is
    /// armed, and the next claim rings it (after its commit).
    Unchanged,
    /// A frame was claimed since: read the ring instead of waiting.
    Moved(Tail),
}

/// Blocks one sidecar thread until new frames may be readable. Use one waiter per ring.
#[derive(Debug, Clone)]
pub struct RingWaiter {
    view: Arc<RingView>,
    doorbell: Arc<Doorbell>,
}

impl RingWaiter {
    pub(crate) fn new(view: Arc<RingView>, doorbell: Arc<Doorbell>) -> RingWaiter {
        RingWaiter { view, doorbell }
    }

    /// Returns when the claim position moved past `seen_pos`, when a producer rang (after
    /// a commit), when [`nudge`](Self::nudge) was called, or after `timeout`, whichever
    /// comes first. The timeout has the kernel's timer precision (tens of microseconds),
    /// not milliseconds: a sidecar thread waiting for a claimed frame's commit uses a
    /// sub-millisecond bound.
    pub fn wait(&self, seen_pos: u64, timeout: Duration) -> Tail {
        let tail = self.view.tail();
        if tail.pos != seen_pos {
            return tail;
        }
        if self.arm(seen_pos) == Armed::Unchanged {
            let mut fds = [PollFd::new(self.doorbell.event.as_fd(), PollFlags::POLLIN)];
            // An interrupted or failed poll just means an early return; callers loop.
            let _ = ppoll(&mut fds, Some(TimeSpec::from_duration(timeout)), None);
            self.drain();
        }
        self.disarm();
        self.view.tail()
    }

    /// The ring's claim counter now (as [`wait`](Self::wait) returns it).
    pub fn tail(&self) -> Tail {
        self.view.tail()
    }

    /// The sidecar's half of the handshake, for a waiter that blocks elsewhere (an async
    /// reactor polling [`event_fd`](Self::event_fd)): sets `sleeping`, then re-reads the
    /// claim counter. [`Armed::Unchanged`] means it still equals `seen_pos`, and from now
    /// until [`disarm`](Self::disarm) any producer that claims and commits a frame writes
    /// the eventfd: the caller may wait for it to become readable. [`Armed::Moved`] means a
    /// frame was claimed since `seen_pos`: do not wait, read the ring (then disarm).
    pub fn arm(&self, seen_pos: u64) -> Armed {
        // SeqCst store: the sidecar's half of the Dekker handshake at the top of this
        // module, paired with the producer's SeqCst claim and SeqCst load of `sleeping`.
        self.doorbell.page.sleeping().store(1, Ordering::SeqCst);
        // SeqCst fence between our store of `sleeping` and the load of the claim counter:
        // the load may not be satisfied before the store is globally visible.
        fence(Ordering::SeqCst);
        let tail = self.view.tail();
        if tail.pos == seen_pos {
            Armed::Unchanged
        } else {
            Armed::Moved(tail)
        }
    }

    /// Stops producers ringing (after [`arm`](Self::arm) and the wait). Relaxed: a producer
    /// that still sees the old 1 only writes the eventfd once more, which costs it a syscall
    /// and the waiter a spurious wake-up, never a lost frame; the next `arm` orders itself
    /// with its own SeqCst store and fence.
    pub fn disarm(&self) {
        self.doorbell.page.sleeping().store(0, Ordering::Relaxed);
    }

    /// Resets the eventfd's counter without blocking, so that it is readable again only
    /// after the next ring. Returns whether it had been rung (or nudged) since the last
    /// drain; `false` also covers a failed read, which only means a spurious wake-up later.
    pub fn drain(&self) -> bool {
        let mut buf = [0u8; 8];
        matches!(nix::unistd::read(&self.doorbell.event, &mut buf), Ok(8))
    }

    /// A duplicate of the doorbell's eventfd (the same counter: a producer's ring makes
    /// both readable), non-blocking, for registering with an async reactor. Read it
    /// through [`drain`](Self::drain) or directly; rings are counted, not queued.
    ///
    /// # Errors
    ///
    /// The OS error of `fcntl(F_DUPFD_CLOEXEC)` (out of file descriptors).
    pub fn event_fd(&self) -> std::io::Result<OwnedFd> {
        self.doorbell.event.try_clone()
    }

    /// Wakes a thread blocked in [`wait`](Self::wait) now (a write to the doorbell's
    /// eventfd, as a producer's ring does). For the sidecar's own use: a subscriber that
    /// starts waiting for a commit asks the waiting thread to shorten its timeout.
    pub fn nudge(&self) {
        // Non-blocking eventfd; EAGAIN (counter saturated) means it is already rung.
        let _ = nix::unistd::write(&self.doorbell.event, &1u64.to_ne_bytes());
    }
}

/// A producer's side of the doorbell. Lives as long as the producer; reconnects re-point it.
#[derive(Debug)]
pub struct DoorbellClient {
    slot: DoorbellSlot,
}

impl DoorbellClient {
    /// A detached doorbell (rings nobody until attached).
    ///
    /// # Errors
    ///
    /// [`RingError::Sys`] when the placeholder eventfd or page cannot be created.
    pub fn new() -> Result<DoorbellClient, RingError> {
        let placeholder = new_eventfd().map_err(|source| RingError::Sys {
            op: "eventfd",
            source,
        })?;
        Ok(DoorbellClient {
            slot: DoorbellSlot::new(placeholder)?,
        })
    }

    /// Points at the doorbell page and eventfd received from a sidecar.
    ///
    /// # Errors
    ///
    /// [`RingError`] when the page is not a sealed one-page memfd or the mapping fails; the
    /// doorbell then stays detached (producers keep writing, the sidecar polls).
    pub fn attach(&self, page_fd: &OwnedFd, event: &OwnedFd) -> Result<(), RingError> {
        self.slot.attach(page_fd, event)
    }

    /// Stops ringing a sidecar that went away.
    pub fn detach(&self) {
        self.slot.detach();
    }

    /// After a publish: wakes the sidecar if it is asleep. One load when it is awake.
    #[inline]
    pub fn ring(&self) {
        // SeqCst load: the other half of the handshake described at the top of this module
        // (a plain load instruction on x86_64 and aarch64, sound on the read-only page).
        if self.slot.sleeping().load(Ordering::SeqCst) != 0 {
            // Non-blocking eventfd; EAGAIN (counter saturated) means it is already rung.
            let _ = nix::unistd::write(self.slot.event(), &1u64.to_ne_bytes());
        }
    }
}

fn new_eventfd() -> nix::Result<OwnedFd> {
    EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map(OwnedFd::from)
}
