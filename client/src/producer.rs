//! The producer: writes frames into the ring with a claim, a copy and a commit. No lock, no
//! syscall on the hot path, never blocks. A background thread keeps the connection to the
//! sidecar and reconnects (rate-limited) when it goes away.

use std::cell::Cell;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, MsgFlags, Shutdown, SockFlag, SockType, UnixAddr, connect, shutdown, socket,
};
use zerocopy::IntoBytes;

use crate::error::{ConnectError, SendError};
use crate::handshake::{Hello, WELCOME_FDS, Welcome, recv_message, send_message};
use crate::layout::MAX_TOPIC_LEN;
use crate::ring::{Claim, FrameHeaderFields, MAX_RING_SWITCHES, RingSlots, WritableRing};
use crate::wake::DoorbellClient;

/// Reconnect backoff: first retry, and the cap.
const BACKOFF_START: Duration = Duration::from_millis(20);
const BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Longest a dropped Producer waits for its background thread to finish.
const DROP_JOIN_WAIT: Duration = Duration::from_millis(200);

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
struct Slot {
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
struct Counters {
    slots: Box<[Slot]>,
    shared_slot: Slot,
    not_connected: AtomicU64,
    too_large: AtomicU64,
    invalid_topic: AtomicU64,
    discarded: AtomicU64,
    reconnects: AtomicU64,
}

impl Counters {
    fn new() -> Counters {
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
    fn count_sent(&self, bytes: usize) {
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

    fn snapshot(&self) -> ProducerStats {
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

#[derive(Debug)]
struct Shared {
    socket_path: PathBuf,
    /// The rings written so far; writers borrow the current one without refcounting.
    rings: RingSlots,
    /// The sidecar's doorbell, re-pointed in place on every reconnect.
    doorbell: DoorbellClient,
    /// Id the sidecar assigned (the pid it saw); written into every frame.
    producer_id: AtomicU32,
    /// True while a sidecar connection is up.
    sidecar_connected: AtomicBool,
    counters: Counters,
    stop: AtomicBool,
    /// The live connection, so Drop can shut it down and wake the background thread.
    connection: Mutex<Option<Arc<OwnedFd>>>,
    wake: (Mutex<()>, Condvar),
    last_error: Mutex<Option<String>>,
    frame_flags: u16,
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
            let _ = shutdown(std::os::fd::AsRawFd::as_raw_fd(&**fd), Shutdown::Both);
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

/// CLOCK_REALTIME in ns. Read with clock_gettime directly (vDSO, no syscall): measured
/// ~12 ns cheaper per call than `SystemTime::now()` on the development machine.
#[inline]
fn now_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME) {
        Ok(ts) => (ts.tv_sec() as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(ts.tv_nsec() as u64),
        Err(_) => 0,
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
    pub fn connect(path: impl AsRef<Path>) -> Result<Producer, ConnectError> {
        Producer::connect_with(path, ProducerOptions::default())
    }

    /// [`Producer::connect`] with options.
    pub fn connect_with(
        path: impl AsRef<Path>,
        options: ProducerOptions,
    ) -> Result<Producer, ConnectError> {
        let shared = Arc::new(Shared {
            frame_flags: if options.payload_check {
                0
            } else {
                crate::layout::FLAG_PAYLOAD_UNCHECKED
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
            Err(err) => shared.set_error(err.to_string()),
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
    pub fn connect_default() -> Result<Producer, ConnectError> {
        Producer::connect(crate::socket_path_from_env())
    }

    /// Publishes one frame stamped now.
    #[inline]
    pub fn send(&self, topic: &str, payload: &[u8]) -> Result<(), SendError> {
        self.send_at(topic, now_ns(), payload)
    }

    /// Publishes one frame with the caller's timestamp (ns since the Unix epoch).
    #[inline]
    pub fn send_at(&self, topic: &str, timestamp_ns: u64, payload: &[u8]) -> Result<(), SendError> {
        let topic = topic.as_bytes();
        let shared = &*self.shared;
        let ring = self.admit(topic, payload.len())?;
        let claim = ring.claim(topic.len(), payload.len());
        ring.write_topic(&claim, topic);
        ring.write_payload(&claim, payload);
        #[cfg(feature = "test-hooks")]
        crate::test_hooks::between_claim_and_commit();
        ring.publish(
            claim,
            FrameHeaderFields {
                producer_id: shared.producer_id.load(Ordering::Relaxed),
                timestamp_ns,
                flags: shared.frame_flags,
            },
            topic,
            payload,
        );
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
    pub fn reserve(&self, topic: &str, len: usize) -> Result<Reservation, SendError> {
        let topic = topic.as_bytes();
        let (ring_index, ring) = self.admit_indexed(topic, len)?;
        let claim = ring.claim(topic.len(), len);
        ring.write_topic(&claim, topic);
        let mut topic_copy = [0u8; MAX_TOPIC_LEN];
        topic_copy[..topic.len()].copy_from_slice(topic);
        Ok(Reservation {
            shared: Arc::clone(&self.shared),
            ring_index,
            claim: Some(claim),
            topic: topic_copy,
            topic_len: topic.len() as u8,
            timestamp_ns: now_ns(),
        })
    }

    /// The producer's counters.
    pub fn stats(&self) -> ProducerStats {
        self.shared.counters.snapshot()
    }

    /// True once a ring is mapped: writes land in it (even while the sidecar restarts).
    pub fn is_connected(&self) -> bool {
        self.shared.rings.current().is_some()
    }

    /// True while a sidecar is connected right now.
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
        self.is_connected()
            .then(|| self.shared.producer_id.load(Ordering::Relaxed))
    }

    /// The id of the mapped ring, once connected.
    pub fn ring_id(&self) -> Option<u64> {
        self.shared.rings.current().map(|(_, ring)| ring.ring_id())
    }

    #[cfg(feature = "test-hooks")]
    pub(crate) fn ring_for_hooks(&self) -> Option<&WritableRing> {
        self.shared.rings.current().map(|(_, ring)| ring)
    }

    /// The last connection problem, for diagnostics.
    pub fn last_error(&self) -> Option<String> {
        self.shared.last_error.lock().ok().and_then(|e| e.clone())
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

impl Shared {
    fn set_error(&self, text: String) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = Some(text);
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
    let io_err = |source: nix::Error| ConnectError::Io {
        path: shared.socket_path.clone(),
        source: std::io::Error::from(source),
    };
    let sock = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io_err)?;
    let addr = UnixAddr::new(shared.socket_path.as_path()).map_err(io_err)?;
    connect(std::os::fd::AsRawFd::as_raw_fd(&sock), &addr).map_err(io_err)?;
    // The handshake itself must not hang on a wedged sidecar.
    let stream = UnixStream::from(sock);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let sock = OwnedFd::from(stream);

    let current = shared.rings.current().map(|(_, ring)| ring);
    let hello = Hello::new(current.map_or(0, |ring| ring.ring_id()));
    let offered_fd = current.and_then(|ring| ring.fd());
    let offered: Vec<_> = offered_fd.iter().map(|fd| fd.as_fd()).collect();
    // The sidecar refuses a disallowed uid as soon as it accepts, before our Hello: if the
    // send fails because it already hung up, its refusal is still queued for us to read.
    let sent = send_message(sock.as_fd(), hello.as_bytes(), &offered);
    if let Err(err) = sent
        && !matches!(err, nix::Error::EPIPE | nix::Error::ECONNRESET)
    {
        return Err(io_err(err));
    }

    let mut buf = [0u8; size_of::<Welcome>() + 1];
    // A sidecar that refused us at accept and closed while our Hello sat unread makes the
    // kernel report ECONNRESET once; the refusal is still queued behind it.
    let received = match recv_message::<WELCOME_FDS>(sock.as_fd(), &mut buf, MsgFlags::empty()) {
        Err(nix::Error::ECONNRESET) => {
            recv_message::<WELCOME_FDS>(sock.as_fd(), &mut buf, MsgFlags::MSG_DONTWAIT)
        }
        other => other,
    }
    .map_err(io_err)?;
    if received.len == 0 {
        return Err(ConnectError::Protocol(
            "the sidecar closed the connection during the handshake".to_owned(),
        ));
    }
    if received.truncated {
        return Err(ConnectError::Protocol("oversized welcome".to_owned()));
    }
    let welcome = Welcome::decode(&buf[..received.len]).map_err(ConnectError::Protocol)?;
    if let Some((reason, detail)) = welcome.refusal() {
        return Err(ConnectError::Refused { reason, detail });
    }
    let mut fds = received.fds.into_iter();
    let (Some(ring_fd), Some(page_fd), Some(event_fd)) = (fds.next(), fds.next(), fds.next())
    else {
        return Err(ConnectError::Protocol(
            "the welcome did not carry the ring, doorbell and eventfd".to_owned(),
        ));
    };
    let same_ring = current.is_some_and(|ring| ring.ring_id() == welcome.ring_id);
    if !same_ring {
        let ring = WritableRing::open(ring_fd, welcome.ring_id, welcome.ring_config())?;
        if shared.rings.install(ring).is_err() {
            return Err(ConnectError::Protocol(format!(
                "this producer already switched rings {MAX_RING_SWITCHES} times; restart it"
            )));
        }
    }
    shared.doorbell.attach(&page_fd, &event_fd)?;
    shared
        .producer_id
        .store(welcome.producer_id, Ordering::Relaxed);
    if current.is_some() {
        shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
    }
    shared.sidecar_connected.store(true, Ordering::Relaxed);
    let _ = stream_clear_timeouts(&sock);
    if let Ok(mut slot) = shared.connection.lock() {
        *slot = Some(Arc::new(sock));
    }
    Ok(())
}

fn stream_clear_timeouts(sock: &OwnedFd) -> std::io::Result<()> {
    let stream = UnixStream::from(sock.try_clone()?);
    stream.set_read_timeout(None)
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
                shared.set_error(err.to_string());
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}
