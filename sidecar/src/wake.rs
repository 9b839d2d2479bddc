//! Waking subscribers when producers write, without busy polling.
//!
//! One std thread blocks in [`RingWaiter::wait`] (the ring's doorbell: it
//! sleeps in the kernel while the ring is idle and costs producers no syscall
//! while the sidecar is busy) and publishes the claim counter in a
//! `tokio::sync::watch`: one value, overwritten, never a queue. Subscribers
//! that caught up await a change of that value.
//!
//! The thread only watches the ring while some subscriber is caught up and
//! waiting ([`WaitRegistry`]); while every subscriber is busy reading, it is
//! parked, so a busy ring costs no wake-ups at all. A subscriber registers
//! *before* its final check of the ring (`register`, then read again, then
//! wait), and the thread publishes whenever the tail differs from what it last
//! published, so no change can slip between the two.
//!
//! A subscriber whose next frame is claimed but not committed yet (a producer between
//! its claim and its commit) waits on a second value, a tick counter. While any
//! subscriber waits so ([`WaitRegistry::register_pending`]), the thread bounds each of
//! its waits to [`PENDING_TICK`] (a sub-millisecond `ppoll`, not tokio's 1 ms timer
//! wheel) and bumps the counter after every wait: when a producer rings after its
//! commit, at once, and otherwise at the latest after one tick. A producer descheduled
//! mid-write therefore costs its subscribers a re-read every tick, never a sleep of
//! 1-2 ms after it commits.

use ringside_ring::{RingWaiter, Tail};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;

/// What subscribers watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeState {
    /// The ring's claim counter as last seen.
    pub tail: Tail,
    /// The server is shutting down: end streams with UNAVAILABLE.
    pub shutting_down: bool,
}

/// How long one wait lasts at most, so the thread notices shutdown.
const WAIT_SLICE: Duration = Duration::from_millis(250);
/// How long one wait lasts at most while a subscriber waits for a claimed frame's commit:
/// the bound on how late it re-reads when the commit came without a doorbell ring (the
/// producer committed while this thread was awake).
pub const PENDING_TICK: Duration = Duration::from_micros(100);

/// The waker thread and the value it publishes.
#[derive(Debug)]
pub struct Wake {
    tx: Arc<watch::Sender<WakeState>>,
    stop: Arc<AtomicBool>,
    registry: WaitRegistry,
    thread: Option<JoinHandle<()>>,
}

/// Counts subscribers that are caught up and waiting for a change, and those waiting
/// for a claimed frame's commit.
#[derive(Debug, Clone)]
pub struct WaitRegistry {
    waiters: Arc<AtomicUsize>,
    pending: Arc<AtomicUsize>,
    ticks: watch::Receiver<u64>,
    waiter: RingWaiter,
    thread: std::thread::Thread,
}

impl WaitRegistry {
    /// Marks one subscriber as waiting. The caller must check the ring again
    /// afterwards before it waits on the watch.
    pub fn register(&self) {
        if self.waiters.fetch_add(1, Ordering::SeqCst) == 0 {
            self.thread.unpark();
        }
        // Our increment must be visible before our re-check of the ring loads
        // the claim counter (pairs with the fence in the wake thread).
        fence(Ordering::SeqCst);
    }

    /// Marks one subscriber as no longer waiting.
    pub fn unregister(&self) {
        self.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Marks one subscriber as waiting for a claimed frame's commit: from now on the
    /// thread ticks at least every [`PENDING_TICK`]. The caller must read the ring again
    /// afterwards before it waits on [`ticks`](Self::ticks).
    pub fn register_pending(&self) {
        // SeqCst like `register`; the counter is only a mode switch for the thread, so a
        // late view of it costs at most one longer wait, which the nudge below cuts short.
        if self.pending.fetch_add(1, Ordering::SeqCst) == 0 {
            self.thread.unpark();
            // The thread may sit in a 250 ms wait: cut it short so it starts ticking.
            self.waiter.nudge();
        }
    }

    /// Marks one subscriber as no longer waiting for a commit.
    pub fn unregister_pending(&self) {
        self.pending.fetch_sub(1, Ordering::SeqCst);
    }

    /// The tick counter pending subscribers wait on.
    pub fn ticks(&self) -> watch::Receiver<u64> {
        self.ticks.clone()
    }
}

impl Wake {
    /// Starts the waker thread.
    ///
    /// # Errors
    ///
    /// The OS error when the thread cannot be spawned.
    pub fn start(waiter: RingWaiter, initial: Tail) -> std::io::Result<Wake> {
        let (tx, _rx) = watch::channel(WakeState {
            tail: initial,
            shutting_down: false,
        });
        let tx = Arc::new(tx);
        let (ticks_tx, ticks_rx) = watch::channel(0u64);
        let stop = Arc::new(AtomicBool::new(false));
        let waiters = Arc::new(AtomicUsize::new(0));
        let pending = Arc::new(AtomicUsize::new(0));
        let thread = {
            let tx = Arc::clone(&tx);
            let stop = Arc::clone(&stop);
            let waiters = Arc::clone(&waiters);
            let pending = Arc::clone(&pending);
            let waiter = waiter.clone();
            std::thread::Builder::new()
                .name("ringside-wake".into())
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut seen = initial.pos;
                    let mut published = initial;
                    while !stop.load(Ordering::Acquire) {
                        let committing = pending.load(Ordering::SeqCst) > 0;
                        if !committing && waiters.load(Ordering::SeqCst) == 0 {
                            // Nobody waits: sleep until a subscriber registers.
                            std::thread::park_timeout(WAIT_SLICE);
                            continue;
                        }
                        let slice = if committing { PENDING_TICK } else { WAIT_SLICE };
                        let tail = waiter.wait(seen, slice);
                        seen = tail.pos;
                        if tail != published {
                            published = tail;
                            tx.send_modify(|s| s.tail = tail);
                        }
                        if pending.load(Ordering::SeqCst) > 0 {
                            ticks_tx.send_modify(|t| *t = t.wrapping_add(1));
                        }
                    }
                })?
        };
        let registry = WaitRegistry {
            waiters,
            pending,
            ticks: ticks_rx,
            waiter,
            thread: thread.thread().clone(),
        };
        Ok(Wake {
            tx,
            stop,
            registry,
            thread: Some(thread),
        })
    }

    /// The registry subscribers use to say they wait.
    pub fn registry(&self) -> WaitRegistry {
        self.registry.clone()
    }

    /// A receiver for a new subscriber.
    pub fn subscribe(&self) -> watch::Receiver<WakeState> {
        self.tx.subscribe()
    }

    /// Tells every subscriber the server is shutting down and asks the thread to stop.
    pub fn signal_shutdown(&self) {
        self.tx.send_modify(|s| s.shutting_down = true);
        self.stop.store(true, Ordering::Release);
        self.registry.thread.unpark();
    }

    /// Waits for the thread to end (at most one wait slice after
    /// [`signal_shutdown`](Self::signal_shutdown)).
    pub fn join(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}
