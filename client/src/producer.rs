//! The producer: writes frames into the ring with a claim, a copy and a commit. No lock, no
//! syscall on the hot path, never blocks. A background thread keeps the connection to the
//! sidecar and reconnects (rate-limited) when it goes away.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::socket::{MsgFlags, Shutdown, shutdown};
use ringside_ring::doorbell::DoorbellClient;
use ringside_ring::handshake::{self, ConnectError, ConnectErrorKind, RingOffer, recv_message};
use ringside_ring::layout::{FLAG_PAYLOAD_UNCHECKED, MAX_TOPIC_LEN};
use ringside_ring::writer::{FrameHeaderFields, WritableRing};

use crate::clock::now_ns;
use crate::error::SendError;
use crate::reservation::{BorrowedReservation, Reservation};
use crate::slots::{MAX_RING_SWITCHES, RingSlots};
use crate::stats::{Counters, ProducerStats};

/// Reconnect backoff: first retry, and the cap.
const BACKOFF_START: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Longest a dropped Producer waits for its background thread to finish.
const DROP_JOIN_WAIT: Duration = Duration::from_millis(200);

/// State shared by a producer's clones, its reservations and its background thread.
#[derive(Debug)]
pub(crate) struct Shared {
    socket_path: PathBuf,
    /// The rings written so far; writers borrow the current one without refcounting.
    pub(crate) rings: RingSlots,
    /// The sidecar's doorbell, re-pointed in place on every reconnect.
    pub(crate) doorbell: DoorbellClient,
    /// Id the sidecar assigned (the pid it saw); written into every frame.
    pub(crate) producer_id: AtomicU32,
    /// True while a sidecar connection is up.
    sidecar_connected: AtomicBool,
    pub(crate) counters: Counters,
    stop: AtomicBool,
    /// The live connection, so Drop can shut it down and wake the background thread.
    connection: Mutex<Option<Arc<OwnedFd>>>,
    wake: (Mutex<()>, Condvar),
    /// The last connection problem, cleared by a successful handshake.
    last_error: Mutex<Option<(ConnectErrorKind, String)>>,
    pub(crate) frame_flags: u16,
}

/// A handle producers write frames through. `Send + Sync`: share it between threads (in an
/// `Arc` or by reference). Cloning is cheap and shares the connection and counters.
#[derive(Debug, Clone)]
pub struct Producer {
    shared: Arc<Shared>,
    _worker: Arc<WorkerGuard>,
}

/// Stops the background thread when the last clone of a Producer drops.
#[derive(Debug)]
struct WorkerGuard {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Ok(slot) = self.shared.connection.lock()
            && let Some(fd) = slot.as_ref()
        {
            let _ = shutdown(fd.as_raw_fd(), Shutdown::Both);
        }
        self.shared.wake.1.notify_all();
        // Signalled, the thread exits within about a millisecond, and joining it keeps
        // process exit clean (no thread left running). It can only be slower inside a
        // handshake (2 s timeout): never block the application that long; after a bounded
        // wait, let it exit on its own (it owns a reference to the state it uses).
        if let Some(handle) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let deadline = std::time::Instant::now() + DROP_JOIN_WAIT;
            while !handle.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if handle.is_finished() {
                let _ = handle.join();
            }
        }
    }
}

/// How a producer writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerOptions {
    /// Hash the payload into each frame's check (default `true`). Turning it off makes large
    /// writes run at close to memcpy speed, at a documented risk: if this producer is ever
    /// descheduled between claim and commit for longer than the ring takes to lap, its
    /// late payload bytes can land in newer frames undetected (docs/ring-format.md §6).
    pub payload_check: bool,
}

impl Default for ProducerOptions {
    fn default() -> Self {
        ProducerOptions {
            payload_check: true,
        }
    }
}

impl Producer {
    /// Connects to the sidecar at `path` and maps its ring.
    ///
    /// When no sidecar listens yet, this still returns a producer: its writes are dropped
    /// and counted until a background thread connects. It fails only when a sidecar
    /// answers and refuses (uid not allowed, version mismatch, ...).
    ///
    /// # Errors
    ///
    /// [`ConnectError`] only when a sidecar answers and refuses for good (uid not allowed, too
    /// many producers, version mismatch), or the path can never work (not a ringside socket,
    /// too long). A missing or silent sidecar is not an error: see above.
    pub fn connect(path: impl AsRef<Path>) -> Result<Producer, ConnectError> {
        Producer::connect_with(path, ProducerOptions::default())
    }

    /// [`Producer::connect`] with options.
    ///
    /// # Errors
    ///
    /// As [`Producer::connect`].
    pub fn connect_with(
        path: impl AsRef<Path>,
        options: ProducerOptions,
    ) -> Result<Producer, ConnectError> {
        let shared = Arc::new(Shared {
            frame_flags: if options.payload_check {
                0
            } else {
                FLAG_PAYLOAD_UNCHECKED
            },
            socket_path: path.as_ref().to_owned(),
            rings: RingSlots::default(),
            doorbell: DoorbellClient::new()?,
            producer_id: AtomicU32::new(0),
            sidecar_connected: AtomicBool::new(false),
            counters: Counters::new(),
            stop: AtomicBool::new(false),
            connection: Mutex::new(None),
            wake: (Mutex::new(()), Condvar::new()),
            last_error: Mutex::new(None),
        });
        match handshake(&shared) {
            Ok(()) => {}
            Err(err) if err.is_permanent() => return Err(err),
            Err(err) => shared.set_error(&err),
        }
        let worker_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("ringside-producer".into())
            .spawn(move || maintain(worker_shared))
            .map_err(|source| ConnectError::Io {
                path: path.as_ref().to_owned(),
                source,
            })?;
        Ok(Producer {
            _worker: Arc::new(WorkerGuard {
                shared: Arc::clone(&shared),
                thread: Mutex::new(Some(thread)),
            }),
            shared,
        })
    }

    /// Connects to `$RINGSIDE_SOCKET`, or to [`crate::DEFAULT_SOCKET_PATH`].
    ///
    /// # Errors
    ///
    /// As [`Producer::connect`].
    pub fn connect_default() -> Result<Producer, ConnectError> {
        Producer::connect(crate::socket_path_from_env())
    }

    /// Publishes one frame stamped now.
    ///
    /// # Errors
    ///
    /// [`SendError::InvalidTopic`] for an empty or over-long topic, [`SendError::TooLarge`] for
    /// a payload over the ring's max payload, [`SendError::NotConnected`] before the first
    /// handshake. Nothing is published then; each refusal is counted in [`ProducerStats`].
    #[inline]
    pub fn send(&self, topic: &str, payload: &[u8]) -> Result<(), SendError> {
        self.send_at(topic, now_ns(), payload)
    }

    /// Publishes one frame with the caller's timestamp (ns since the Unix epoch).
    ///
    /// # Errors
    ///
    /// As [`Producer::send`].
    #[inline]
    pub fn send_at(&self, topic: &str, timestamp_ns: u64, payload: &[u8]) -> Result<(), SendError> {
        let topic = topic.as_bytes();
        let shared = &*self.shared;
        let ring = self.admit(topic, payload.len())?;
        let fields = FrameHeaderFields {
            producer_id: shared.producer_id.load(Ordering::Relaxed),
            timestamp_ns,
            flags: shared.frame_flags,
        };
        // Claim, hash the caller's payload, copy, publish: see `WritableRing::write_frame`.
        ring.write_frame(topic, payload, fields);
        shared.doorbell.ring();
        shared.counters.count_sent(payload.len());
        Ok(())
    }

    /// Checks a write against the ring's limits, counting refusals; returns the ring.
    #[inline]
    fn admit(&self, topic: &[u8], len: usize) -> Result<&WritableRing, SendError> {
        self.admit_indexed(topic, len).map(|(_, ring)| ring)
    }

    #[inline]
    fn admit_indexed(&self, topic: &[u8], len: usize) -> Result<(usize, &WritableRing), SendError> {
        let counters = &self.shared.counters;
        if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
            counters.invalid_topic.fetch_add(1, Ordering::Relaxed);
            return Err(SendError::InvalidTopic { len: topic.len() });
        }
        let Some((index, ring)) = self.shared.rings.current() else {
            counters.not_connected.fetch_add(1, Ordering::Relaxed);
            return Err(SendError::NotConnected);
        };
        let max = ring.config().max_payload;
        if len > max as usize {
            counters.too_large.fetch_add(1, Ordering::Relaxed);
            return Err(SendError::TooLarge { len, max });
        }
        Ok((index, ring))
    }

    /// Reserves room for a `len`-byte payload inside the ring, to be filled in place and
    /// published with [`Reservation::commit`]. Dropping the reservation publishes it as a
    /// discarded frame, which readers skip; it never wedges the ring. Keep reservations
    /// short: a reservation held past the reader's stall bound (100 ms by default) is
    /// counted abandoned by readers.
    ///
    /// The [`Reservation`] holds a counted reference to the producer, so it may outlive this
    /// borrow (bindings, storage in a struct). Where a borrow is enough, prefer
    /// [`Producer::reserve_borrowed`]: the same frame without the reference count.
    ///
    /// # Errors
    ///
    /// As [`Producer::send`], for `len` as the payload length.
    pub fn reserve(&self, topic: &str, len: usize) -> Result<Reservation, SendError> {
        let topic = topic.as_bytes();
        let (ring_index, ring) = self.admit_indexed(topic, len)?;
        let claim = ring.claim_topic(topic, len);
        Ok(Reservation::new(
            Arc::clone(&self.shared),
            ring_index,
            claim,
            now_ns(),
        ))
    }

    /// Like [`Producer::reserve`], but the reservation borrows this producer: no reference
    /// count is taken or released, so `reserve_borrowed` + fill + `commit` costs less than
    /// [`Producer::send`] of the same bytes (the zero-copy fast path). Same rules: commit
    /// it, or drop it to publish a discarded frame; keep it short.
    ///
    /// # Errors
    ///
    /// As [`Producer::send`], for `len` as the payload length.
    // Always inlined, with the reservation's other methods: a caller that reserves in more
    // than one place would otherwise get it out of line, and the 80-byte reservation would
    // come back through memory and be moved again before `commit` (16-byte reloads over
    // 8-byte stores: failed store forwards, ~10 ns per frame in the producer bench).
    #[inline(always)]
    pub fn reserve_borrowed(
        &self,
        topic: &str,
        len: usize,
    ) -> Result<BorrowedReservation<'_>, SendError> {
        let topic = topic.as_bytes();
        let ring = self.admit(topic, len)?;
        // The clock first, as in `send`: `rdtsc` then overlaps the claim instead of
        // waiting behind its locked instruction.
        let timestamp_ns = now_ns();
        let frame = ring.claim_frame(topic, len);
        Ok(BorrowedReservation::new(
            &self.shared,
            ring,
            frame,
            timestamp_ns,
        ))
    }

    /// The producer's counters.
    pub fn stats(&self) -> ProducerStats {
        self.shared.counters.snapshot()
    }

    /// True once a ring is mapped: writes land in it, even while no sidecar is connected
    /// (a restarting sidecar adopts the ring and serves what was written in between).
    /// False only before the first successful handshake. See also
    /// [`Producer::sidecar_connected`].
    pub fn ring_mapped(&self) -> bool {
        self.shared.rings.current().is_some()
    }

    /// Old name of [`Producer::ring_mapped`]: it never meant "a sidecar is connected".
    #[deprecated(
        since = "0.2.0",
        note = "means \"a ring is mapped\"; use ring_mapped(), or sidecar_connected() for the sidecar connection"
    )]
    pub fn is_connected(&self) -> bool {
        self.ring_mapped()
    }

    /// True while a sidecar is connected right now (its socket connection is up). Writes
    /// do not depend on it: they land in the mapped ring either way.
    pub fn sidecar_connected(&self) -> bool {
        self.shared.sidecar_connected.load(Ordering::Relaxed)
    }

    /// The ring's max payload, once connected.
    pub fn max_payload(&self) -> Option<u32> {
        self.shared
            .rings
            .current()
            .map(|(_, ring)| ring.config().max_payload)
    }

    /// The id the sidecar assigned (the producer's pid), once connected.
    pub fn producer_id(&self) -> Option<u32> {
        self.ring_mapped()
            .then(|| self.shared.producer_id.load(Ordering::Relaxed))
    }

    /// The id of the mapped ring, once connected.
    pub fn ring_id(&self) -> Option<u64> {
        self.shared.rings.current().map(|(_, ring)| ring.ring_id())
    }

    /// Why the producer is not connected: the last connection attempt's error, cleared
    /// when a handshake succeeds. For diagnostics.
    pub fn last_error(&self) -> Option<String> {
        self.shared
            .last_error
            .lock()
            .ok()
            .and_then(|e| e.as_ref().map(|(_, text)| text.clone()))
    }

    /// The kind of [`Producer::last_error`] (e.g. a handshake that timed out), for code that
    /// maps it to its own error codes.
    pub fn last_error_kind(&self) -> Option<ConnectErrorKind> {
        self.shared
            .last_error
            .lock()
            .ok()
            .and_then(|e| e.as_ref().map(|(kind, _)| *kind))
    }

    /// Blocks until connected to a sidecar or `timeout` passes. For tools and tests; the
    /// write path never needs it.
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.sidecar_connected() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.sidecar_connected()
    }
}

impl Shared {
    fn set_error(&self, err: &ConnectError) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some((err.kind(), err.to_string()));
        }
    }

    fn sleep(&self, duration: Duration) {
        let (lock, cvar) = &self.wake;
        if let Ok(guard) = lock.lock() {
            let _ = cvar.wait_timeout_while(guard, duration, |_| !self.stop.load(Ordering::SeqCst));
        }
    }
}

/// One connection attempt: Hello (offering the ring we hold), Welcome, map what it hands us.
fn handshake(shared: &Shared) -> Result<(), ConnectError> {
    let current = shared.rings.current().map(|(_, ring)| ring);
    let offered_fd = current.and_then(|ring| ring.fd());
    let offer = current
        .zip(offered_fd.as_ref())
        .map(|(ring, fd)| RingOffer {
            ring_id: ring.ring_id(),
            fd: fd.as_fd(),
        });
    let admission = handshake::connect(&shared.socket_path, offer)?;
    let welcome = admission.welcome;
    let same_ring = current.is_some_and(|ring| ring.ring_id() == welcome.ring_id);
    if !same_ring {
        let ring = WritableRing::open(admission.ring, welcome.ring_id, welcome.ring_config())?;
        // Before the ring is installed: once connected, no `send` takes a page fault on
        // it. Meanwhile sends go to the previous ring, or count as not connected.
        ring.populate_page_tables();
        if shared.rings.install(ring).is_err() {
            return Err(ConnectError::Protocol(format!(
                "this producer already switched rings {MAX_RING_SWITCHES} times; restart it"
            )));
        }
        if current.is_some() {
            // The sidecar did not adopt the ring written since the last one went away:
            // what this producer published into it since then is gone.
            shared.counters.count_ring_replaced();
        }
    }
    shared
        .doorbell
        .attach(&admission.doorbell_page, &admission.doorbell_event)?;
    shared
        .producer_id
        .store(welcome.producer_id, Ordering::Relaxed);
    if current.is_some() {
        shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
    }
    shared.sidecar_connected.store(true, Ordering::Relaxed);
    if let Ok(mut slot) = shared.connection.lock() {
        *slot = Some(Arc::new(admission.connection));
    }
    if let Ok(mut slot) = shared.last_error.lock() {
        *slot = None;
    }
    Ok(())
}

/// The background thread: waits for the connection to end, then reconnects with backoff.
fn maintain(shared: Arc<Shared>) {
    let mut backoff = BACKOFF_START;
    while !shared.stop.load(Ordering::SeqCst) {
        let connection = shared.connection.lock().ok().and_then(|slot| slot.clone());
        if let Some(fd) = connection {
            // Blocks until the sidecar goes away (EOF) or Drop shuts the socket down.
            let mut buf = [0u8; 64];
            while let Err(nix::Error::EINTR) =
                recv_message::<0>(fd.as_fd(), &mut buf, MsgFlags::empty())
            {}
            if let Ok(mut slot) = shared.connection.lock() {
                *slot = None;
            }
            // Keep writing into the ring (a restarted sidecar adopts it); stop ringing a
            // doorbell nobody listens to.
            shared.sidecar_connected.store(false, Ordering::Relaxed);
            shared.counters.mark_detached();
            shared.doorbell.detach();
            backoff = BACKOFF_START;
            continue;
        }
        shared.sleep(backoff);
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        match handshake(&shared) {
            Ok(()) => backoff = BACKOFF_START,
            Err(err) => {
                shared.set_error(&err);
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}
