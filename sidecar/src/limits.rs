//! Admission limits counted up front: subscriber slots and TCP connections.
//!
//! - Subscribers: a fixed table of `--max-subscribers` slots allocated at
//!   start. A Subscribe call takes a free slot or gets RESOURCE_EXHAUSTED.
//!   Each slot also carries that subscriber's live counters (lag, frames out)
//!   for metrics, so per-subscriber state never grows.
//! - Stalled subscribers ([`SubscriberSlots::reap_stalled`]): progress is
//!   measured where it happens, as bytes the subscriber's connection took
//!   ([`ConnHandle::bytes_written`]). Once the kernel's send buffer is full, a
//!   write completes only when the peer acknowledged earlier bytes, and h2
//!   writes DATA only within the HTTP/2 window the client grants as it reads;
//!   so a client that reads, however slowly, makes its connection take bytes,
//!   and one that stopped reading does not (a few keepalive PINGs aside, which
//!   [`StallPolicy::min_progress_bytes`] leaves out). The body being polled by
//!   hyper is progress too. A subscriber whose connection made no progress for
//!   `--subscriber-stall-timeout` while frames were waiting is *ended*: its
//!   stream closes with UNAVAILABLE naming the resume sequence (queued behind
//!   what it was already sent). If its connection then makes no progress for
//!   another timeout, the connection is closed.
//! - Subscribe streams per connection: at most `--max-streams-per-connection`
//!   ([`ConnHandle::open_subscribe`]); HTTP/2 advertises
//!   [`UNARY_STREAM_RESERVE`] more concurrent streams, so unary calls on the
//!   same connection never wait behind Subscribe streams.
//! - Connections: the TCP listener is wrapped; each accepted connection holds
//!   a semaphore permit for its lifetime. Past `--max-connections`, up to
//!   [`OVERFLOW_CONNECTIONS`] more are admitted as *refusal* connections: every
//!   call on them is answered RESOURCE_EXHAUSTED (see [`OverLimitLayer`]) and
//!   they are closed after [`OVERFLOW_LIFETIME`], so a gRPC client learns why.
//!   Past that too, a connection is accepted and closed at once; nothing is
//!   allocated for it.
//! - File descriptors: at start, `serve` raises its RLIMIT_NOFILE soft limit to the hard
//!   limit ([`raise_nofile`]) and keeps [`fd_reserve`] descriptors for producers and its
//!   own use; the rest bound the connections ([`connections_fds_allow`]). When that is
//!   below `--max-connections`, the connection limit is lowered to it and the refusal
//!   names RLIMIT_NOFILE, so the sidecar refuses with a clear error instead of failing
//!   `accept` with EMFILE (which leaves clients hanging in the backlog). Subscribers take
//!   no descriptor of their own (they are streams on connections).
//! - Handshakes: a connection must deliver the HTTP/2 client preface and the
//!   header of its first frame ([`HANDSHAKE_BYTES`]) within
//!   `--handshake-timeout`, or it is closed. Keepalive pings only start once
//!   the HTTP/2 handshake is done, so without this a client that connects and
//!   says nothing (or dribbles the preface) would hold a connection slot
//!   forever, and `--max-connections` of them would lock everyone out.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TlsConnectInfo};

/// Connections admitted past `--max-connections` only to be told
/// RESOURCE_EXHAUSTED (counted in the budget).
pub const OVERFLOW_CONNECTIONS: usize = 8;
/// How long such a refusal connection stays open.
pub const OVERFLOW_LIFETIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Bytes a client must send before its handshake deadline: the 24-byte HTTP/2
/// connection preface and the 9-byte header of the SETTINGS frame that follows
/// it. Counted on the TCP stream, so under TLS the deadline covers only the
/// first bytes of the TLS handshake.
pub const HANDSHAKE_BYTES: usize = 24 + 9;

/// HTTP/2 streams advertised per connection beyond the Subscribe streams it may carry
/// (`--max-streams-per-connection`): room for unary calls (Info, ListTopics, health,
/// reflection) on a connection full of Subscribe streams.
pub const UNARY_STREAM_RESERVE: u32 = 4;

/// Descriptors the sidecar keeps for itself besides connections and producers: stdio,
/// the gRPC and producer listeners, the ring's memfd, eventfds, epoll and signal
/// descriptors of the runtime, the metrics listener and its scrapes, files it opens.
pub const BASE_FDS: u64 = 64;
/// Producer connections the ring host holds beyond `--max-producers`: 16 waiting for
/// their handshake and one being refused.
pub const PRODUCER_FD_SLACK: u64 = 17;

/// Descriptors kept for everything but gRPC connections, with `max_producers`.
pub fn fd_reserve(max_producers: u64) -> u64 {
    BASE_FDS + max_producers + PRODUCER_FD_SLACK
}

/// gRPC connections a descriptor limit of `nofile` leaves room for, refusal slots
/// ([`OVERFLOW_CONNECTIONS`]) included in the reserve.
pub fn connections_fds_allow(nofile: u64, max_producers: u64) -> u64 {
    nofile.saturating_sub(fd_reserve(max_producers) + OVERFLOW_CONNECTIONS as u64)
}

/// The descriptor limit after [`raise_nofile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// Soft limit before.
    pub was: u64,
    /// Soft limit now (the one that counts).
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// Raises this process's RLIMIT_NOFILE soft limit to its hard limit.
///
/// # Errors
///
/// The OS error of `getrlimit` (a failed raise is not an error: the limit stays as it was).
pub fn raise_nofile() -> Result<NofileLimit, nix::Error> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let mut out = NofileLimit {
        was: soft,
        soft,
        hard,
    };
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => out.soft = hard,
            Err(e) => {
                tracing::warn!(error = %e, soft, hard, "cannot raise RLIMIT_NOFILE to its hard limit")
            }
        }
    }
    Ok(out)
}

/// Live counters of one subscriber slot.
#[derive(Debug, Default)]
pub struct SlotStats {
    /// In use.
    pub active: AtomicBool,
    /// Ring bytes written that this subscriber has not read yet.
    pub lag_bytes: AtomicU64,
    /// Frames sent.
    pub frames_out: AtomicU64,
    /// Ring position of its cursor when its stream was last polled.
    pub position: AtomicU64,
    /// When its stream was last polled for data ([`now_ms`]).
    pub last_poll_ms: AtomicU64,
    /// The stall reaper's progress mark: the connection's bytes written, and when.
    mark_bytes: AtomicU64,
    mark_ms: AtomicU64,
    /// The reaper asked the stream to end (it stopped reading).
    reap_requested: AtomicBool,
    /// The connection it runs on (progress, and closing it).
    conn: Mutex<Option<Arc<ConnHandle>>>,
}

/// Milliseconds since the first call in this process (a monotonic clock).
pub fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(std::time::Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One connection, as the requests on it see it: bytes it took, Subscribe streams on it,
/// and a switch that closes it from outside hyper (its IO then reports an error on the
/// next poll, and hyper tears the connection and its streams down).
#[derive(Debug, Default)]
pub struct ConnHandle {
    killed: AtomicBool,
    waker: Mutex<Option<std::task::Waker>>,
    /// Bytes written to the socket (the kernel took them).
    bytes_written: AtomicU64,
    /// Subscribe streams open on this connection.
    subscribe_streams: AtomicU32,
}

/// A Subscribe stream counted on its connection; uncounted on drop.
#[derive(Debug)]
pub struct SubscribeStreamGuard(Arc<ConnHandle>);

impl Drop for SubscribeStreamGuard {
    fn drop(&mut self) {
        self.0.subscribe_streams.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnHandle {
    /// Bytes written to this connection's socket so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::Relaxed)
    }

    /// Counts one more Subscribe stream on this connection, or `None` when it already
    /// carries `limit`.
    pub fn open_subscribe(self: &Arc<Self>, limit: u32) -> Option<SubscribeStreamGuard> {
        self.subscribe_streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| SubscribeStreamGuard(Arc::clone(self)))
    }

    /// Closes the connection.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// True once killed; otherwise remembers the waker to wake on kill.
    fn killed(&self, cx: &Context<'_>) -> bool {
        if self.killed.load(Ordering::Acquire) {
            return true;
        }
        let mut w = self.waker.lock().unwrap_or_else(|e| e.into_inner());
        if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *w = Some(cx.waker().clone());
        }
        drop(w);
        self.killed.load(Ordering::Acquire)
    }
}

/// When the stall reaper calls a subscriber stalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StallPolicy {
    /// `--subscriber-stall-timeout`, ms.
    pub timeout_ms: u64,
    /// Fewer bytes than this written to a connection within the timeout is no progress:
    /// keepalive PINGs (17 bytes each, more under TLS) are written to a connection whose
    /// client reads nothing.
    pub min_progress_bytes: u64,
}

impl StallPolicy {
    /// The policy for `--subscriber-stall-timeout` `timeout` with keepalive PINGs every
    /// `keepalive` (zero = none): at least 1 KiB, and more than 64 bytes for every PING
    /// the timeout can hold.
    pub fn new(timeout: std::time::Duration, keepalive: std::time::Duration) -> StallPolicy {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let keepalive_ms = u64::try_from(keepalive.as_millis()).unwrap_or(u64::MAX);
        let pings = timeout_ms
            .checked_div(keepalive_ms)
            .map_or(0, |n| n.saturating_add(2));
        StallPolicy {
            timeout_ms,
            min_progress_bytes: pings.saturating_mul(64).max(1024),
        }
    }
}

/// What one pass of the stall reaper did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Subscribers asked to end their stream (stopped reading for the timeout).
    pub ended: u64,
    /// Connections closed (no progress for another timeout after that).
    pub closed: u64,
}

/// The fixed table of subscriber slots.
#[derive(Debug)]
pub struct SubscriberSlots {
    stats: Box<[SlotStats]>,
    free: Mutex<Vec<u32>>,
    refused: AtomicU64,
    reaped: AtomicU64,
}

/// A held subscriber slot; released on drop.
#[derive(Debug)]
pub struct SlotGuard {
    slots: Arc<SubscriberSlots>,
    index: u32,
}

impl SubscriberSlots {
    /// A table of `max` slots.
    pub fn new(max: usize) -> Arc<Self> {
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        let stats: Box<[SlotStats]> = (0..max).map(|_| SlotStats::default()).collect();
        // Free list pops the lowest index first.
        let free: Vec<u32> = (0..max).rev().collect();
        Arc::new(Self {
            stats,
            free: Mutex::new(free),
            refused: AtomicU64::new(0),
            reaped: AtomicU64::new(0),
        })
    }

    /// Takes a free slot, or `None` when all are in use.
    pub fn acquire(self: &Arc<Self>) -> Option<SlotGuard> {
        let index = {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            free.pop()
        };
        match index {
            Some(index) => {
                let s = &self.stats[index as usize];
                s.active.store(true, Ordering::Relaxed);
                s.lag_bytes.store(0, Ordering::Relaxed);
                s.frames_out.store(0, Ordering::Relaxed);
                let now = now_ms();
                s.last_poll_ms.store(now, Ordering::Relaxed);
                s.mark_ms.store(now, Ordering::Relaxed);
                s.mark_bytes.store(0, Ordering::Relaxed);
                s.reap_requested.store(false, Ordering::Relaxed);
                // "Not behind" until its first read.
                s.position.store(u64::MAX, Ordering::Relaxed);
                Some(SlotGuard {
                    slots: Arc::clone(self),
                    index,
                })
            }
            None => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.stats.len()
    }

    /// Slots in use.
    pub fn active(&self) -> usize {
        self.stats
            .iter()
            .filter(|s| s.active.load(Ordering::Relaxed))
            .count()
    }

    /// Subscribe calls refused for lack of a slot.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Subscribers whose stream the stall reaper ended.
    pub fn reaped(&self) -> u64 {
        self.reaped.load(Ordering::Relaxed)
    }

    /// One pass of the stall reaper (see the module docs), with the ring's claim
    /// position at `tail_pos`. A subscriber has data waiting when the ring moved past
    /// where its stream was last polled; it progresses when its stream is polled or its
    /// connection takes `policy.min_progress_bytes`. With data waiting and no progress
    /// for the timeout, its stream is asked to end; after twice the timeout, its
    /// connection is closed.
    pub fn reap_stalled(&self, tail_pos: u64, policy: StallPolicy) -> Reaped {
        let now = now_ms();
        let mut out = Reaped::default();
        for (i, s) in self.stats.iter().enumerate() {
            if !s.active.load(Ordering::Relaxed) {
                continue;
            }
            let Some(conn) = s.conn.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
                continue;
            };
            let written = conn.bytes_written();
            let mark_ms = s.mark_ms.load(Ordering::Relaxed);
            let took = written.saturating_sub(s.mark_bytes.load(Ordering::Relaxed));
            let polled = s.last_poll_ms.load(Ordering::Relaxed) > mark_ms;
            let behind = tail_pos.saturating_sub(s.position.load(Ordering::Relaxed));
            if took >= policy.min_progress_bytes || polled || behind == 0 {
                // Progress, or nothing waiting (not reading then is no stall).
                s.mark_bytes.store(written, Ordering::Relaxed);
                s.mark_ms.store(now, Ordering::Relaxed);
                continue;
            }
            let idle_ms = now.saturating_sub(mark_ms);
            if !s.reap_requested.load(Ordering::Relaxed) {
                if idle_ms >= policy.timeout_ms {
                    // Counted before the flag is raised: the stream can end (and a client
                    // can ask Info) as soon as it sees the flag, and the count must not
                    // lag what the client saw. The Release store publishes the count with
                    // the flag to the stream task's Acquire load.
                    self.reaped.fetch_add(1, Ordering::Relaxed);
                    s.reap_requested.store(true, Ordering::Release);
                    out.ended += 1;
                    tracing::warn!(
                        slot = i,
                        behind_bytes = behind,
                        stalled_ms = idle_ms,
                        "ending the stream of a subscriber that stopped reading (--subscriber-stall-timeout): it gets UNAVAILABLE with its resume sequence once it reads again"
                    );
                }
            } else if idle_ms >= policy.timeout_ms.saturating_mul(2) {
                let taken = s.conn.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(conn) = taken {
                    tracing::warn!(
                        slot = i,
                        behind_bytes = behind,
                        stalled_ms = idle_ms,
                        "closing the connection of a subscriber that still reads nothing (twice --subscriber-stall-timeout)"
                    );
                    conn.kill();
                    out.closed += 1;
                }
            }
        }
        out
    }

    /// All slots' counters (index = slot number).
    pub fn stats(&self) -> &[SlotStats] {
        &self.stats
    }
}

impl SlotGuard {
    /// This slot's counters.
    pub fn stats(&self) -> &SlotStats {
        &self.slots.stats[self.index as usize]
    }

    /// The slot number (stable label for metrics, bounded by --max-subscribers).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Records the connection this subscriber runs on.
    pub fn set_connection(&self, conn: Option<Arc<ConnHandle>>) {
        let s = self.stats();
        s.mark_bytes.store(
            conn.as_ref().map_or(0, |c| c.bytes_written()),
            Ordering::Relaxed,
        );
        *s.conn.lock().unwrap_or_else(|e| e.into_inner()) = conn;
    }

    /// Records that the stream was polled for data with its cursor at `position`.
    pub fn polled(&self, position: u64) {
        let s = self.stats();
        s.position.store(position, Ordering::Relaxed);
        s.last_poll_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// True once the stall reaper asked this subscriber's stream to end.
    pub fn reap_requested(&self) -> bool {
        self.stats().reap_requested.load(Ordering::Acquire)
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let s = self.stats();
        s.active.store(false, Ordering::Relaxed);
        s.lag_bytes.store(0, Ordering::Relaxed);
        *s.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let mut free = self.slots.free.lock().unwrap_or_else(|e| e.into_inner());
        free.push(self.index);
    }
}

/// Socket options applied to each accepted connection.
#[derive(Debug, Clone, Copy)]
pub struct SocketOptions {
    /// SO_SNDBUF bytes.
    pub send_buffer: usize,
    /// SO_RCVBUF bytes.
    pub recv_buffer: usize,
    /// Time a new connection gets to send [`HANDSHAKE_BYTES`] (`--handshake-timeout`;
    /// zero = no deadline).
    pub handshake_timeout: std::time::Duration,
}

/// Counters of the connection limiter.
#[derive(Debug, Default)]
pub struct ConnCounters {
    /// Connections refused past the limit.
    pub refused: AtomicU64,
    /// Connections closed for not completing the handshake in time.
    pub handshake_timeouts: AtomicU64,
    /// Connections accepted.
    pub accepted: AtomicU64,
}

/// Accepts connections up to a limit; past it, closes them at once.
#[derive(Debug)]
pub struct LimitedListener {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    overflow: Arc<Semaphore>,
    options: SocketOptions,
    counters: Arc<ConnCounters>,
    limit: usize,
    /// What a refused client is told.
    refusal: Arc<str>,
}

/// Why connections past the limit are refused: the message a refused call gets.
pub fn connection_refusal(limit: usize, max_connections: usize, nofile: Option<u64>) -> String {
    match nofile {
        Some(n) if limit < max_connections => format!(
            "too many connections: the sidecar serves at most {limit} (--max-connections {max_connections}, but its file descriptor limit RLIMIT_NOFILE {n} leaves room for only {limit}); this connection closes now; retry later, or raise the sidecar's hard RLIMIT_NOFILE (ulimit -Hn, LimitNOFILE=)"
        ),
        _ => format!(
            "too many connections: the sidecar serves at most {limit} (--max-connections {limit}); this connection closes now; retry later"
        ),
    }
}

impl LimitedListener {
    /// Wraps a bound listener admitting `limit` connections; refused calls get `refusal`
    /// ([`connection_refusal`]).
    pub fn new(
        listener: TcpListener,
        limit: usize,
        options: SocketOptions,
        refusal: String,
    ) -> Self {
        Self {
            listener,
            permits: Arc::new(Semaphore::new(limit)),
            overflow: Arc::new(Semaphore::new(OVERFLOW_CONNECTIONS)),
            options,
            counters: Arc::new(ConnCounters::default()),
            limit,
            refusal: refusal.into(),
        }
    }

    /// Connections currently held.
    pub fn permits(&self) -> Arc<Semaphore> {
        Arc::clone(&self.permits)
    }

    /// The address bound.
    ///
    /// # Errors
    ///
    /// The OS error of `getsockname`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Next admitted connection. Connections past the limit are closed here.
    ///
    /// # Errors
    ///
    /// A fatal listener error; transient ones (EMFILE, ENOBUFS, aborted connections) are logged
    /// and retried.
    pub async fn accept(&self) -> io::Result<LimitedConn> {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(x) => x,
                Err(e) if is_transient(&e) => {
                    // EMFILE etc.: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed (EMFILE: out of file descriptors, RLIMIT_NOFILE; something besides connections and producers holds more than the reserve); retrying in 50ms");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let _ = stream.set_nodelay(true);
            set_buffers(&stream, self.options);
            if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
                self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("ringside_connections_accepted_total").increment(1);
                return Ok(LimitedConn {
                    stream,
                    over_limit: None,
                    handshake: self.handshake_deadline(),
                    counters: Arc::clone(&self.counters),
                    conn: Arc::default(),
                    _permit: permit,
                });
            }
            let n = self.counters.refused.fetch_add(1, Ordering::Relaxed) + 1;
            metrics::counter!("ringside_connections_refused_total").increment(1);
            if n.is_power_of_two() {
                tracing::warn!(%peer, limit = self.limit, refused_total = n,
                    "connection refused: --max-connections reached");
            }
            if let Ok(permit) = Arc::clone(&self.overflow).try_acquire_owned() {
                // Admitted only to answer RESOURCE_EXHAUSTED, then closed.
                return Ok(LimitedConn {
                    stream,
                    over_limit: Some((
                        Arc::clone(&self.refusal),
                        Box::pin(tokio::time::sleep(OVERFLOW_LIFETIME)),
                    )),
                    handshake: self.handshake_deadline(),
                    counters: Arc::clone(&self.counters),
                    conn: Arc::default(),
                    _permit: permit,
                });
            }
            drop(stream);
        }
    }

    /// The handshake deadline of a connection accepted now.
    fn handshake_deadline(&self) -> Option<Handshake> {
        let timeout = self.options.handshake_timeout;
        (!timeout.is_zero()).then(|| Handshake {
            missing: HANDSHAKE_BYTES,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
        })
    }

    /// The listener as a stream of admitted connections, for tonic.
    pub fn into_stream(self) -> impl tokio_stream::Stream<Item = io::Result<LimitedConn>> + Send {
        spawn_accept_task(Arc::new(self))
    }
}

/// Runs the accept loop in its own task and hands admitted connections to tonic through a
/// one-slot channel: at most one accepted connection waits for tonic to take it.
fn spawn_accept_task(
    this: Arc<LimitedListener>,
) -> impl tokio_stream::Stream<Item = io::Result<LimitedConn>> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<LimitedConn>>(1);
    tokio::spawn(async move {
        loop {
            let conn = this.accept().await;
            let fatal = conn.is_err();
            if tx.send(conn).await.is_err() || fatal {
                break;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE
                | libc::ENFILE
                | libc::ENOBUFS
                | libc::ENOMEM
                | libc::ECONNABORTED
                | libc::EINTR
        )
    ) || e.kind() == io::ErrorKind::ConnectionAborted
}

fn set_buffers(stream: &TcpStream, o: SocketOptions) {
    use nix::sys::socket::{setsockopt, sockopt};
    if let Err(e) = setsockopt(stream, sockopt::SndBuf, &o.send_buffer) {
        tracing::debug!(error = %e, "SO_SNDBUF not set");
    }
    if let Err(e) = setsockopt(stream, sockopt::RcvBuf, &o.recv_buffer) {
        tracing::debug!(error = %e, "SO_RCVBUF not set");
    }
}

/// An admitted connection; frees its permit when closed.
#[derive(Debug)]
pub struct LimitedConn {
    stream: TcpStream,
    /// Set on a refusal connection: what its calls are told, and when to close it.
    over_limit: Option<(Arc<str>, Pin<Box<tokio::time::Sleep>>)>,
    /// Until the handshake bytes have arrived: how many are missing, and the deadline.
    handshake: Option<Handshake>,
    counters: Arc<ConnCounters>,
    conn: Arc<ConnHandle>,
    _permit: OwnedSemaphorePermit,
}

/// The handshake deadline of a new connection.
#[derive(Debug)]
struct Handshake {
    /// Bytes of [`HANDSHAKE_BYTES`] not received yet.
    missing: usize,
    timeout: std::time::Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

/// Connection info placed in each request's extensions.
#[derive(Debug, Clone)]
pub struct LimitedConnectInfo {
    /// The peer.
    pub remote_addr: Option<SocketAddr>,
    /// On a connection admitted past the connection limit: what its calls are told.
    pub over_limit: Option<Arc<str>>,
    /// The connection's shared state (progress, Subscribe streams, closing it).
    pub conn: Arc<ConnHandle>,
}

impl Connected for LimitedConn {
    type ConnectInfo = LimitedConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        LimitedConnectInfo {
            remote_addr: self.stream.peer_addr().ok(),
            over_limit: self.over_limit.as_ref().map(|(m, _)| Arc::clone(m)),
            conn: Arc::clone(&self.conn),
        }
    }
}

impl AsyncRead for LimitedConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.conn.killed(cx) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed by ringside: a subscriber on this connection stopped reading",
            )));
        }
        if let Some((_, close_at)) = &mut self.over_limit
            && close_at.as_mut().poll(cx).is_ready()
        {
            // End of stream: hyper closes the refusal connection.
            return Poll::Ready(Ok(()));
        }
        if let Some(handshake) = &mut self.handshake {
            // Polled before the read so that its timer wakes this task too.
            if handshake.deadline.as_mut().poll(cx).is_ready() {
                let timeout = handshake.timeout;
                self.handshake = None;
                self.counters
                    .handshake_timeouts
                    .fetch_add(1, Ordering::Relaxed);
                metrics::counter!("ringside_connections_handshake_timeout_total").increment(1);
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "closed by ringside: the client did not send the HTTP/2 preface within {timeout:?} (--handshake-timeout)"
                    ),
                )));
            }
        }
        let filled = buf.filled().len();
        let this = &mut *self;
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Some(handshake) = &mut this.handshake {
            let got = buf.filled().len() - filled;
            handshake.missing = handshake.missing.saturating_sub(got);
            if handshake.missing == 0 {
                this.handshake = None;
            }
        }
        read
    }
}

/// Answers every call on a connection admitted past `--max-connections` with
/// RESOURCE_EXHAUSTED.
#[derive(Debug, Clone, Copy, Default)]
pub struct OverLimitLayer;

impl<S> tower::Layer<S> for OverLimitLayer {
    type Service = OverLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OverLimit { inner }
    }
}

/// The service of [`OverLimitLayer`].
#[derive(Debug, Clone)]
pub struct OverLimit<S> {
    inner: S,
}

/// The connection info of the connection a request came on.
pub fn connect_info<B>(req: &http::Request<B>) -> Option<&LimitedConnectInfo> {
    let e = req.extensions();
    e.get::<LimitedConnectInfo>().or_else(|| {
        e.get::<TlsConnectInfo<LimitedConnectInfo>>()
            .map(TlsConnectInfo::get_ref)
    })
}

fn over_limit<B>(req: &http::Request<B>) -> Option<Arc<str>> {
    connect_info(req).and_then(|i| i.over_limit.clone())
}

/// The peer address of the connection a request came on.
pub fn peer_addr<B>(req: &http::Request<B>) -> Option<SocketAddr> {
    connect_info(req).and_then(|i| i.remote_addr)
}

impl<S, B, R> tower::Service<http::Request<B>> for OverLimit<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if let Some(message) = over_limit(&req) {
            let status = tonic::Status::resource_exhausted(message.to_string());
            let resp = status.into_http::<R>();
            return Box::pin(std::future::ready(Ok(resp)));
        }
        Box::pin(self.inner.call(req))
    }
}

impl LimitedConn {
    /// Adds the bytes a write took to the connection's progress counter.
    fn count_written(&self, written: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = written {
            self.conn
                .bytes_written
                .fetch_add(*n as u64, Ordering::Relaxed);
        }
    }
}

impl AsyncWrite for LimitedConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.conn.killed.load(Ordering::Acquire) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed by ringside: a subscriber on this connection stopped reading",
            )));
        }
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.count_written(&written);
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.count_written(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_recycled() {
        let slots = SubscriberSlots::new(2);
        let a = slots.acquire().expect("first");
        let b = slots.acquire().expect("second");
        assert!(slots.acquire().is_none());
        assert_eq!(slots.refused(), 1);
        assert_eq!(slots.active(), 2);
        drop(a);
        let c = slots.acquire().expect("recycled");
        assert_eq!(c.index(), 0);
        drop((b, c));
        assert_eq!(slots.active(), 0);
    }

    #[test]
    fn subscribe_streams_per_connection_are_bounded() {
        let conn = Arc::new(ConnHandle::default());
        let a = conn.open_subscribe(2).expect("first");
        let _b = conn.open_subscribe(2).expect("second");
        assert!(conn.open_subscribe(2).is_none(), "third over the limit");
        drop(a);
        assert!(
            conn.open_subscribe(2).is_some(),
            "a slot freed by a finished stream"
        );
    }

    #[test]
    fn fds_bound_connections_and_the_refusal_says_so() {
        // 64 base + 2 producers + 17 slack + 8 refusal slots.
        assert_eq!(connections_fds_allow(128, 2), 128 - 64 - 2 - 17 - 8);
        assert_eq!(connections_fds_allow(64, 64), 0);
        let m = connection_refusal(37, 1000, Some(128));
        assert!(
            m.contains("RLIMIT_NOFILE 128") && m.contains("at most 37"),
            "{m}"
        );
        let m = connection_refusal(10, 10, Some(1 << 20));
        assert!(
            !m.contains("RLIMIT_NOFILE") && m.contains("--max-connections 10"),
            "{m}"
        );
        let l = raise_nofile().expect("getrlimit");
        assert!(l.soft >= l.was && l.soft <= l.hard);
    }

    #[test]
    fn stall_policy_leaves_keepalive_pings_out() {
        use std::time::Duration;
        let p = StallPolicy::new(Duration::from_secs(2), Duration::from_secs(30));
        assert_eq!((p.timeout_ms, p.min_progress_bytes), (2000, 1024));
        // A PING a second for a minute: 62 x 64 bytes.
        let p = StallPolicy::new(Duration::from_secs(60), Duration::from_secs(1));
        assert_eq!(p.min_progress_bytes, 62 * 64);
        let p = StallPolicy::new(Duration::from_secs(60), Duration::ZERO);
        assert_eq!(p.min_progress_bytes, 1024);
    }
}
