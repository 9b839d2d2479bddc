//! Waking subscribers when producers write, without busy polling.
//!
//! One tokio task watches the ring's doorbell (see `ringside_ring::doorbell`): a
//! duplicate of its eventfd is registered with tokio's reactor, so a producer's ring wakes
//! the worker parked in `epoll_wait` directly, and the task runs on that worker. It
//! publishes the claim counter in a `tokio::sync::watch`: one value, overwritten, never a
//! queue. Subscribers that caught up await a change of that value; their tasks are woken
//! from the same worker, so a batch costs one thread wake-up (the producer's eventfd
//! write), not a hand-off from a std thread through a futex to a parked worker.
//!
//! The task only arms the doorbell while some subscriber is caught up and waiting
//! ([`WaitRegistry`]); while every subscriber is busy reading, it awaits a
//! [`Notify`] with the doorbell disarmed, so a busy ring costs producers no syscall and
//! the sidecar no wake-ups. A subscriber registers *before* its final check of the ring
//! (`register`, then read again, then wait), and the task reads the tail after it was
//! notified and publishes whenever the tail differs from what it last published, then
//! arms the doorbell with the tail it read (`RingWaiter::arm`: a claim after that read
//! either shows in `arm`'s re-read or rings), so no change can slip between the two.
//!
//! A subscriber whose next frame is claimed but not committed yet (a producer between
//! its claim and its commit) waits on a second value, a tick counter. While any
//! subscriber waits so ([`WaitRegistry::register_pending`]), the task also waits on a
//! timerfd on the same reactor that expires every [`PENDING_TICK`] (tokio's own timer
//! wheel has 1 ms granularity) and bumps the counter after every wake-up: when a
//! producer rings after its commit, at once, and otherwise at the latest after one tick.
//! A producer descheduled mid-write therefore costs its subscribers a re-read every tick,
//! never a sleep of 1-2 ms after it commits. The timerfd is disarmed while nobody waits
//! for a commit.
//!
//! While armed, the task also looks at the tail without a ring, on the same timerfd set to
//! a longer period (a safety net: a frame whose producer died between its commit and its
//! ring, or wrote while it had no connection to the sidecar, is seen without one). The
//! period is [`RECHECK_MIN`] (250 ms) after the tail moved, and doubles after every re-check
//! that found nothing, up to [`RECHECK_MAX`] (1 s): a frame that is never rung waits at most
//! 1 s, at most 250 ms while frames keep arriving, and an idle sidecar with a waiting
//! subscriber wakes for it once a second. A timerfd, not tokio's timer: tokio's hierarchical
//! wheel wakes its worker once per wheel level on the way to a deadline of 250 ms or more
//! (two or three wake-ups per re-check), a timerfd once. The timer is left running when
//! the last waiter leaves (so a subscriber that waits for every frame costs no
//! `timerfd_settime` per frame) and stopped the first time it expires with nobody waiting,
//! so a sidecar without waiting subscribers is not woken by it.

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use ringside_ring::{Armed, RingWaiter, Tail};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// What subscribers watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WakeState {
    /// The ring's claim counter as last seen.
    pub tail: Tail,
    /// The server is shutting down: end streams with UNAVAILABLE.
    pub shutting_down: bool,
}

/// The re-check period after the tail moved: how long a frame that is never rung waits at
/// most while frames keep arriving.
pub const RECHECK_MIN: Duration = Duration::from_millis(250);
/// The longest re-check period, reached after quiet re-checks: how long a frame that is
/// never rung waits at most, and how often an idle sidecar with a waiting subscriber wakes.
pub const RECHECK_MAX: Duration = Duration::from_secs(1);
/// How long one wait lasts at most while a subscriber waits for a claimed frame's commit:
/// the bound on how late it re-reads when the commit came without a doorbell ring (the
/// producer committed while the doorbell was not armed).
pub const PENDING_TICK: Duration = Duration::from_micros(100);

/// The waker task and the value it publishes.
#[derive(Debug)]
pub struct Wake {
    tx: Arc<watch::Sender<WakeState>>,
    registry: WaitRegistry,
    task: Option<JoinHandle<()>>,
}

/// What the registry and the task share.
#[derive(Debug)]
struct Control {
    /// Subscribers caught up and waiting for a change of the tail.
    waiters: AtomicUsize,
    /// Subscribers waiting for a claimed frame's commit.
    pending: AtomicUsize,
    /// Set by [`Wake::signal_shutdown`]: the task ends.
    stop: AtomicBool,
    /// Wakes the task when the counters leave zero or on shutdown. Holds one permit, so a
    /// notification sent before the task awaits it is not lost.
    notify: Notify,
}

/// Counts subscribers that are caught up and waiting for a change, and those waiting
/// for a claimed frame's commit.
#[derive(Debug, Clone)]
pub struct WaitRegistry {
    control: Arc<Control>,
    ticks: watch::Receiver<u64>,
}

impl WaitRegistry {
    /// Marks one subscriber as waiting. The caller must check the ring again
    /// afterwards before it waits on the watch.
    pub fn register(&self) {
        // SeqCst: the task's SeqCst load of the counter (after its notification or its
        // previous wait) either sees this increment, or it loaded zero before it and then
        // gets the permit stored by `notify_one` below.
        if self.control.waiters.fetch_add(1, Ordering::SeqCst) == 0 {
            self.control.notify.notify_one();
        }
        // Our increment must be visible before our re-check of the ring loads the claim
        // counter: the task's tail read that follows its load of the counter then sees
        // at least what our re-check saw.
        fence(Ordering::SeqCst);
    }

    /// Marks one subscriber as no longer waiting.
    pub fn unregister(&self) {
        // SeqCst like `register`; a stale non-zero only keeps the task armed for one more
        // ring, after which it looks again.
        self.control.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Marks one subscriber as waiting for a claimed frame's commit: from now on the
    /// task ticks at least every [`PENDING_TICK`]. The caller must read the ring again
    /// afterwards before it waits on [`ticks`](Self::ticks).
    pub fn register_pending(&self) {
        // SeqCst like `register`; the counter is only a mode switch for the task, and the
        // notification below cuts short a wait that started before it (without ticks).
        if self.control.pending.fetch_add(1, Ordering::SeqCst) == 0 {
            self.control.notify.notify_one();
        }
    }

    /// Marks one subscriber as no longer waiting for a commit.
    pub fn unregister_pending(&self) {
        self.control.pending.fetch_sub(1, Ordering::SeqCst);
    }

    /// The tick counter pending subscribers wait on.
    pub fn ticks(&self) -> watch::Receiver<u64> {
        self.ticks.clone()
    }
}

/// A timerfd that tokio's reactor can watch (nix's `TimerFd` has no `AsRawFd`).
struct Ticker(TimerFd);

impl AsRawFd for Ticker {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Wake {
    /// Starts the waker task on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// The OS error when the eventfd cannot be duplicated, the timerfd cannot be created,
    /// or either cannot be registered with the reactor.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime (as `tokio::spawn` does).
    pub fn start(waiter: RingWaiter, initial: Tail) -> std::io::Result<Wake> {
        let (tx, _rx) = watch::channel(WakeState {
            tail: initial,
            shutting_down: false,
        });
        let tx = Arc::new(tx);
        let (ticks_tx, ticks_rx) = watch::channel(0u64);
        let control = Arc::new(Control {
            waiters: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            notify: Notify::new(),
        });
        let ticker = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        // tokio 1.54 deprecated the safe `AsyncFd::new` in favour of an `unsafe fn
        // register` whose contract is that the fd stays open and the same while the
        // `AsyncFd` owns it; house rules keep `unsafe` out of this crate. Both values here
        // own their fd (an `OwnedFd`, a `TimerFd`), are moved into the `AsyncFd` and are
        // never replaced (no `get_mut`), so the contract holds.
        #[allow(deprecated)]
        let doorbell = AsyncFd::new(waiter.event_fd()?)?;
        #[allow(deprecated)]
        let ticker = AsyncFd::new(Ticker(ticker))?;
        let task = tokio::spawn(run(
            waiter,
            initial,
            doorbell,
            ticker,
            Arc::clone(&tx),
            ticks_tx,
            Arc::clone(&control),
        ));
        let registry = WaitRegistry {
            control,
            ticks: ticks_rx,
        };
        Ok(Wake {
            tx,
            registry,
            task: Some(task),
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

    /// Tells every subscriber the server is shutting down and asks the task to stop.
    pub fn signal_shutdown(&self) {
        self.tx.send_modify(|s| s.shutting_down = true);
        self.registry.control.stop.store(true, Ordering::Release);
        self.registry.control.notify.notify_one();
    }

    /// Stops the task and waits for it to end (at once: it wakes on the notification).
    pub async fn join(mut self) {
        self.registry.control.stop.store(true, Ordering::Release);
        self.registry.control.notify.notify_one();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// What the timerfd is set to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Stopped.
    Off,
    /// Expires every [`PENDING_TICK`]: some subscriber waits for a commit.
    Ticks,
    /// Expires every this long: the re-check while armed.
    Recheck(Duration),
}

/// The waker task: see the module documentation.
async fn run(
    waiter: RingWaiter,
    initial: Tail,
    doorbell: AsyncFd<OwnedFd>,
    ticker: AsyncFd<Ticker>,
    tx: Arc<watch::Sender<WakeState>>,
    ticks_tx: watch::Sender<u64>,
    control: Arc<Control>,
) {
    let mut published = initial;
    let mut timer = Timer::Off;
    // The re-check period: RECHECK_MIN after the tail moved, doubled after every re-check
    // that found nothing, at most RECHECK_MAX.
    let mut recheck = RECHECK_MIN;
    while !control.stop.load(Ordering::Acquire) {
        // SeqCst loads: see `WaitRegistry::register`.
        let committing = control.pending.load(Ordering::SeqCst) > 0;
        let waiting = control.waiters.load(Ordering::SeqCst) > 0;
        if !committing && !waiting {
            // Nobody waits: the doorbell stays disarmed (producers pay no syscall) until
            // a subscriber registers. Ticks stop at once; a re-check timer is left running
            // until it next expires, so a subscriber that waits for every frame does not
            // cost two `timerfd_settime` per frame.
            if timer == Timer::Ticks {
                timer = set_timer(&ticker, Timer::Off);
            }
            let expired = tokio::select! {
                biased;
                () = control.notify.notified() => false,
                r = ticker.readable(), if timer != Timer::Off => {
                    consume_expirations(&ticker, r);
                    true
                }
            };
            if expired {
                timer = set_timer(&ticker, Timer::Off);
            }
            continue;
        }
        let want = if committing {
            Timer::Ticks
        } else {
            Timer::Recheck(recheck)
        };
        if timer != want {
            timer = set_timer(&ticker, want);
        }
        // The tail after the registrations we just loaded (their fences order it after
        // each subscriber's own re-check).
        let mut tail = waiter.tail();
        let mut timer_expired = false;
        if tail == published {
            match waiter.arm(tail.pos) {
                Armed::Moved(moved) => tail = moved,
                Armed::Unchanged => {
                    // Whatever ends the wait (a ring, a tick, a re-check, a notification),
                    // the task looks at the tail again.
                    let woke: std::io::Result<bool> = tokio::select! {
                        biased;
                        r = doorbell.readable() => r.map(|mut guard| {
                            // The ring is consumed by this read; clearing readiness
                            // afterwards cannot hide a later ring: each eventfd write is
                            // a new edge the reactor reports again.
                            waiter.drain();
                            guard.clear_ready();
                            false
                        }),
                        r = ticker.readable(), if timer != Timer::Off => r.map(|guard| {
                            consume_expirations(&ticker, Ok(guard));
                            true
                        }),
                        () = control.notify.notified() => Ok(false),
                    };
                    match woke {
                        Ok(expired) => timer_expired = expired,
                        Err(e) => {
                            // Only when the reactor is gone (the runtime shuts down):
                            // waiting again would return the same error at once.
                            tracing::warn!(error = %e, "the doorbell wait failed; the wake task ends");
                            break;
                        }
                    }
                    tail = waiter.tail();
                }
            }
            waiter.disarm();
        }
        if tail != published {
            published = tail;
            tx.send_modify(|s| s.tail = tail);
            recheck = RECHECK_MIN;
        } else if timer_expired && matches!(timer, Timer::Recheck(_)) {
            recheck = (recheck * 2).min(RECHECK_MAX);
        }
        if control.pending.load(Ordering::SeqCst) > 0 {
            ticks_tx.send_modify(|t| *t = t.wrapping_add(1));
        }
    }
    waiter.disarm();
    let _ = ticker.get_ref().0.unset();
}

/// Reads the timerfd's expiration count (resetting it) and clears its readiness. The read
/// comes first, so an expiration after it is a new edge the reactor reports again.
fn consume_expirations(
    ticker: &AsyncFd<Ticker>,
    ready: std::io::Result<tokio::io::unix::AsyncFdReadyGuard<'_, Ticker>>,
) {
    let mut buf = [0u8; 8];
    // EAGAIN (no expiration since the last read) is fine: only the reset matters.
    let _ = nix::unistd::read(ticker.get_ref().0.as_fd(), &mut buf);
    if let Ok(mut guard) = ready {
        guard.clear_ready();
    }
}

/// Sets the timerfd; returns what it is set to. A timerfd that cannot be set is left as
/// it was and reported stopped (logged): pending subscribers are then woken by producers'
/// rings only, and frames that are never rung wait for the next ring.
fn set_timer(ticker: &AsyncFd<Ticker>, to: Timer) -> Timer {
    let timer = &ticker.get_ref().0;
    let res = match to {
        Timer::Off => timer.unset(),
        Timer::Ticks => timer.set(
            Expiration::Interval(TimeSpec::from_duration(PENDING_TICK)),
            TimerSetTimeFlags::empty(),
        ),
        Timer::Recheck(every) => timer.set(
            Expiration::Interval(TimeSpec::from_duration(every)),
            TimerSetTimeFlags::empty(),
        ),
    };
    match res {
        Ok(()) => to,
        Err(e) => {
            tracing::warn!(error = %e, ?to, "cannot set the wake task's timerfd");
            Timer::Off
        }
    }
}
