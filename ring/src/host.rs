//! The sidecar's side of the producer socket: creates or adopts the ring, admits producers
//! by peer credentials, and hands them the ring over SCM_RIGHTS.
//!
//! Runs on one background thread with a bounded `poll` set; it never blocks on a single
//! producer, so a silent or hostile client cannot stall admissions.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::socket::{
    AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr, UnixCredentials, accept4, bind,
    connect, getsockopt, listen, socket, sockopt,
};
use zerocopy::IntoBytes;

use crate::doorbell::{Doorbell, RingWaiter};
use crate::handshake::{
    HELLO_OFFERS_RING, Hello, RefusalReason, Welcome, recv_message, send_message,
};
use crate::layout::ConfigError;
use crate::layout::{RingConfig, RingHeader};
use crate::shm::RingError;
use crate::shm::create_ring_memfd;
use crate::view::RingView;

/// How long an accepted connection may take to send its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections allowed to wait for their Hello on top of `max_producers`.
const PENDING_SLACK: usize = 16;

/// Settings of the producer socket and ring.
#[derive(Clone, Debug)]
pub struct HostOptions {
    /// Unix socket path producers connect to.
    pub socket_path: PathBuf,
    /// Geometry of a fresh ring (an adopted ring must match it).
    pub ring: RingConfig,
    /// Uids allowed to produce. With `allow_gids`, both empty = the sidecar's own uid and root.
    pub allow_uids: Vec<u32>,
    /// Gids allowed to produce.
    pub allow_gids: Vec<u32>,
    /// Most producers connected at once.
    pub max_producers: usize,
    /// How long `start` waits for a reconnecting producer to hand back an existing ring.
    pub adopt_grace: Duration,
    /// Back a fresh ring with memory when it is created (the default): its pages are
    /// allocated, zeroed and charged to the sidecar's memory cgroup at start, where a ring
    /// that does not fit fails with [`RingError::Populate`], and no producer takes a page
    /// fault that allocates memory in its `send`. Off, each page comes when a producer
    /// first writes it, charged to that producer's cgroup. An adopted ring already has
    /// its memory.
    pub populate_ring: bool,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            socket_path: PathBuf::from(crate::DEFAULT_SOCKET_PATH),
            ring: RingConfig::default(),
            allow_uids: Vec::new(),
            allow_gids: Vec::new(),
            max_producers: 64,
            adopt_grace: Duration::from_secs(1),
            populate_ring: true,
        }
    }
}

/// A connected producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerInfo {
    /// Process id (also its producer id).
    pub pid: u32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// When it was admitted, ns since the Unix epoch.
    pub admitted_unix_ns: u64,
}

/// Counters of the producer socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Producers connected now.
    pub producers_connected: u64,
    /// Producers admitted since start.
    pub producers_admitted: u64,
    /// Producers refused since start.
    pub producers_refused: u64,
}

#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    stop_event: OwnedFd,
    connected: AtomicU64,
    admitted: AtomicU64,
    refused: AtomicU64,
    producers: Mutex<Vec<ProducerInfo>>,
}

/// The sidecar's producer socket and ring.
#[derive(Debug)]
pub struct RingHost {
    shared: Arc<Shared>,
    view: Arc<RingView>,
    doorbell: Arc<Doorbell>,
    adopted: bool,
    socket_path: PathBuf,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl RingHost {
    /// Binds the socket; adopts a ring handed back by a reconnecting producer within
    /// `adopt_grace`, or creates a fresh sealed ring; then serves handshakes on a
    /// background thread.
    ///
    /// # Errors
    ///
    /// [`HostError`] for an invalid ring geometry, a ring that cannot be created, a socket path
    /// that cannot be bound (another sidecar running, a stale socket file), or a failed system
    /// call.
    pub fn start(options: HostOptions) -> Result<RingHost, HostError> {
        options.ring.validate()?;
        let listener = bind_listener(&options.socket_path)?;
        let doorbell = Arc::new(Doorbell::create()?);
        let stop_event = new_eventfd().map_err(|source| HostError::Sys {
            op: "eventfd",
            source,
        })?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            stop_event,
            connected: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            producers: Mutex::new(Vec::new()),
        });
        let mut server = Server {
            listener,
            conns: Vec::new(),
            view: None,
            doorbell: Arc::clone(&doorbell),
            shared: Arc::clone(&shared),
            own_uid: nix::unistd::geteuid().as_raw(),
            options: options.clone(),
        };
        let deadline = Instant::now() + options.adopt_grace;
        let adopted = loop {
            if server.view.is_some() {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            let until_grace_ends = deadline - now;
            let timeout = server
                .next_hello_timeout()
                .map_or(until_grace_ends, |t| t.min(until_grace_ends));
            server.poll_once(Some(timeout));
        };
        if !adopted {
            server.view = Some(Arc::new(create_ring(&options.ring, options.populate_ring)?));
        }
        server.admit_parked();
        let view = server.view.clone().ok_or(HostError::Ring(RingError::Sys {
            op: "create ring",
            source: nix::Error::EINVAL,
        }))?;
        let thread = std::thread::Builder::new()
            .name("ringside-host".into())
            .spawn(move || server.run())
            .map_err(|_| HostError::Sys {
                op: "spawn host thread",
                source: nix::Error::EAGAIN,
            })?;
        Ok(RingHost {
            shared,
            view,
            doorbell,
            adopted,
            socket_path: options.socket_path,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The ring, mapped read-only.
    pub fn ring(&self) -> Arc<RingView> {
        Arc::clone(&self.view)
    }

    /// True if the ring was handed back by a producer (a restart without loss).
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Producer socket counters.
    pub fn stats(&self) -> HostStats {
        HostStats {
            producers_connected: self.shared.connected.load(Ordering::Relaxed),
            producers_admitted: self.shared.admitted.load(Ordering::Relaxed),
            producers_refused: self.shared.refused.load(Ordering::Relaxed),
        }
    }

    /// The producers connected now.
    pub fn producers(&self) -> Vec<ProducerInfo> {
        self.shared
            .producers
            .lock()
            .map(|list| list.clone())
            .unwrap_or_default()
    }

    /// A waiter for the thread that watches the ring for new frames.
    pub fn waiter(&self) -> RingWaiter {
        RingWaiter::new(Arc::clone(&self.view), Arc::clone(&self.doorbell))
    }

    /// Closes the socket and every producer connection. Producers keep writing into the
    /// ring and hand it to the next sidecar.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = nix::unistd::write(&self.shared.stop_event, &1u64.to_ne_bytes());
        let handle = self.thread.lock().ok().and_then(|mut slot| slot.take());
        if let Some(handle) = handle {
            let _ = handle.join();
            let _ = std::fs::remove_file(&self.socket_path);
        }
    }
}

impl Drop for RingHost {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn create_ring(config: &RingConfig, populate: bool) -> Result<RingView, RingError> {
    let ring_id = loop {
        let mut bytes = [0u8; 8];
        let id = match std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        {
            Ok(()) => u64::from_ne_bytes(bytes),
            Err(_) => now_unix_ns() ^ u64::from(std::process::id()).rotate_left(32),
        };
        if id != 0 {
            break id;
        }
    };
    let header = RingHeader::new(config, ring_id, now_unix_ns());
    let fd = create_ring_memfd(config, &header)?;
    let view = RingView::open(fd)?;
    if populate {
        view.mapping().populate()?;
    }
    Ok(view)
}

fn bind_listener(path: &Path) -> Result<OwnedFd, HostError> {
    let bind_err = |source| HostError::Bind {
        path: path.to_owned(),
        source,
    };
    let addr = UnixAddr::new(path).map_err(bind_err)?;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(bind_err(nix::Error::EEXIST));
        }
        // A live sidecar answers; a stale socket file from a killed one does not.
        let probe = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(bind_err)?;
        if connect(probe.as_raw_fd(), &addr).is_ok() {
            return Err(bind_err(nix::Error::EADDRINUSE));
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(bind_err)?;
    bind(listener.as_raw_fd(), &addr).map_err(bind_err)?;
    listen(&listener, Backlog::new(64).unwrap_or(Backlog::MAXCONN)).map_err(bind_err)?;
    // Admission is by peer credentials, not file mode: let any local process reach us.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666));
    Ok(listener)
}

#[derive(Debug)]
enum ConnState {
    AwaitingHello { since: Instant },
    Parked,
    Admitted,
}

#[derive(Debug)]
struct Conn {
    fd: OwnedFd,
    creds: UnixCredentials,
    state: ConnState,
}

struct Server {
    listener: OwnedFd,
    conns: Vec<Conn>,
    view: Option<Arc<RingView>>,
    doorbell: Arc<Doorbell>,
    shared: Arc<Shared>,
    own_uid: u32,
    options: HostOptions,
}

impl Server {
    fn run(mut self) {
        while !self.shared.stop.load(Ordering::SeqCst) {
            // No tick: poll wakes for a connection, a message, the stop eventfd, or the next
            // Hello deadline, so an idle host thread never wakes.
            self.poll_once(self.next_hello_timeout());
        }
        for conn in self.conns.drain(..) {
            let refusal =
                Welcome::refuse(RefusalReason::ShuttingDown, "the sidecar is shutting down");
            if !matches!(conn.state, ConnState::Admitted) {
                let _ = send_message(conn.fd.as_fd(), refusal.as_bytes(), &[]);
            }
        }
        if let Ok(mut list) = self.shared.producers.lock() {
            list.clear();
        }
        self.shared.connected.store(0, Ordering::Relaxed);
    }

    /// Time until the oldest connection still waiting for its Hello times out, if any.
    fn next_hello_timeout(&self) -> Option<Duration> {
        self.conns
            .iter()
            .filter_map(|conn| match conn.state {
                ConnState::AwaitingHello { since } => {
                    Some(HELLO_TIMEOUT.saturating_sub(since.elapsed()))
                }
                _ => None,
            })
            .min()
    }

    /// Waits up to `timeout` (`None`: until something happens) and handles what is ready.
    fn poll_once(&mut self, timeout: Option<Duration>) {
        let readable = {
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(self.conns.len() + 2);
            fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
            fds.push(PollFd::new(
                self.shared.stop_event.as_fd(),
                PollFlags::POLLIN,
            ));
            for conn in &self.conns {
                fds.push(PollFd::new(conn.fd.as_fd(), PollFlags::POLLIN));
            }
            let timeout = match timeout {
                // Rounded up, so a deadline is never polled for with 0 ms over and over.
                Some(t) => PollTimeout::from((t.as_millis() + 1).min(u128::from(u16::MAX)) as u16),
                None => PollTimeout::NONE,
            };
            if poll(&mut fds, timeout).is_err() {
                return;
            }
            fds.iter()
                .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
                .collect::<Vec<bool>>()
        };
        // Connections, newest last: walk backwards so removals keep indices valid.
        for index in (0..self.conns.len()).rev() {
            if readable.get(index + 2).copied().unwrap_or(false) {
                self.on_readable(index);
            }
        }
        self.expire_silent();
        if readable.first().copied().unwrap_or(false) {
            self.accept_all();
        }
    }

    fn accept_all(&mut self) {
        let limit = self.options.max_producers + PENDING_SLACK;
        while let Ok(raw) = accept4(
            self.listener.as_raw_fd(),
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        ) {
            let fd = crate::shm::adopt_received_fds(&[raw]).pop();
            let Some(fd) = fd else { continue };
            let Ok(creds) = getsockopt(&fd, sockopt::PeerCredentials) else {
                continue;
            };
            // Credentials first: a process that may not produce never takes a slot, so it
            // cannot lock allowed producers out by holding silent connections.
            if !self.allowed(&creds) {
                self.refuse_uid(fd.as_fd(), &creds);
                continue;
            }
            if self.conns.len() >= limit {
                let admitted = self.admitted_count();
                self.refuse(
                    fd.as_fd(),
                    RefusalReason::TooManyProducers,
                    &format!(
                        "{admitted} producers connected and {} connections awaiting their handshake (max producers {}); raise --max-producers or find the idle connections",
                        self.conns.len() - admitted,
                        self.options.max_producers
                    ),
                );
                continue;
            }
            self.conns.push(Conn {
                fd,
                creds,
                state: ConnState::AwaitingHello {
                    since: Instant::now(),
                },
            });
        }
    }

    fn admitted_count(&self) -> usize {
        self.conns
            .iter()
            .filter(|c| matches!(c.state, ConnState::Admitted))
            .count()
    }

    fn refuse_uid(&self, fd: BorrowedFd<'_>, creds: &UnixCredentials) {
        let mut uids = if self.options.allow_uids.is_empty() && self.options.allow_gids.is_empty() {
            vec![self.own_uid, 0]
        } else {
            self.options.allow_uids.clone()
        };
        uids.sort_unstable();
        uids.dedup();
        self.refuse(
            fd,
            RefusalReason::UidNotAllowed,
            &format!(
                "uid {} gid {} is not allowed to produce; allowed uids {:?}, gids {:?} (add --allow-uid {} to ringside serve)",
                creds.uid(),
                creds.gid(),
                uids,
                self.options.allow_gids,
                creds.uid()
            ),
        );
    }

    fn expire_silent(&mut self) {
        self.conns.retain(|conn| match conn.state {
            ConnState::AwaitingHello { since } => since.elapsed() < HELLO_TIMEOUT,
            _ => true,
        });
    }

    fn refuse(&self, fd: BorrowedFd<'_>, reason: RefusalReason, detail: &str) {
        self.shared.refused.fetch_add(1, Ordering::Relaxed);
        let _ = send_message(fd, Welcome::refuse(reason, detail).as_bytes(), &[]);
        // Drain what the peer already sent (its Hello, with any fd): closing with unread
        // data would make the peer's first read fail with ECONNRESET instead of showing it
        // our refusal.
        let mut sink = [0u8; 64];
        for _ in 0..4 {
            match recv_message::<1>(fd, &mut sink, MsgFlags::MSG_DONTWAIT) {
                Ok(received) if received.len > 0 => continue,
                _ => break,
            }
        }
    }

    fn allowed(&self, creds: &UnixCredentials) -> bool {
        let (uids, gids) = (&self.options.allow_uids, &self.options.allow_gids);
        if uids.is_empty() && gids.is_empty() {
            return creds.uid() == self.own_uid || creds.uid() == 0;
        }
        uids.contains(&creds.uid()) || gids.contains(&creds.gid())
    }

    fn on_readable(&mut self, index: usize) {
        let mut buf = [0u8; size_of::<Hello>() + 1];
        let received = recv_message::<1>(
            self.conns[index].fd.as_fd(),
            &mut buf,
            MsgFlags::MSG_DONTWAIT,
        );
        let conn_state_admitted = matches!(self.conns[index].state, ConnState::Admitted);
        let received = match received {
            Ok(received) if received.len > 0 => received,
            Err(nix::Error::EAGAIN) => return,
            _ => {
                // EOF or error: the producer went away.
                self.drop_conn(index);
                return;
            }
        };
        if conn_state_admitted || matches!(self.conns[index].state, ConnState::Parked) {
            // Nothing may follow a Hello: a protocol violation ends the connection.
            self.drop_conn(index);
            return;
        }
        if received.truncated {
            let fd = self.conns.remove(index).fd;
            self.refuse(
                fd.as_fd(),
                RefusalReason::VersionMismatch,
                "oversized hello or too many fds",
            );
            return;
        }
        let hello = match Hello::decode(&buf[..received.len]) {
            Ok(hello) => hello,
            Err((reason, detail)) => {
                let fd = self.conns.remove(index).fd;
                self.refuse(fd.as_fd(), reason, &detail);
                return;
            }
        };
        if self.view.is_none()
            && hello.flags & HELLO_OFFERS_RING != 0
            && let Some(fd) = received.fds.into_iter().next()
        {
            self.try_adopt(fd);
        }
        if self.view.is_some() {
            self.admit(index);
        } else {
            self.conns[index].state = ConnState::Parked;
        }
    }

    fn try_adopt(&mut self, fd: OwnedFd) {
        // A ring with other geometry than configured is not adopted: ops resized it.
        if let Ok(view) = RingView::open(fd)
            && *view.config() == self.options.ring
        {
            self.view = Some(Arc::new(view));
        }
    }

    fn admit_parked(&mut self) {
        for index in (0..self.conns.len()).rev() {
            if matches!(self.conns[index].state, ConnState::Parked) {
                self.admit(index);
            }
        }
    }

    fn admit(&mut self, index: usize) {
        let Some(view) = self.view.clone() else {
            return;
        };
        let admitted = self.admitted_count();
        if admitted >= self.options.max_producers {
            let fd = self.conns.remove(index).fd;
            self.refuse(
                fd.as_fd(),
                RefusalReason::TooManyProducers,
                &format!(
                    "{admitted} producers already connected (max {}); raise --max-producers",
                    self.options.max_producers
                ),
            );
            return;
        }
        let creds = self.conns[index].creds;
        let pid = u32::try_from(creds.pid()).unwrap_or(0);
        let welcome = Welcome::admit(pid, view.ring_id(), view.config());
        let [page, event] = self.doorbell.fds();
        let ring_fd = view.fd();
        let sent = send_message(
            self.conns[index].fd.as_fd(),
            welcome.as_bytes(),
            &[ring_fd.as_fd(), page.as_fd(), event.as_fd()],
        );
        if sent.is_err() {
            self.conns.remove(index);
            return;
        }
        self.conns[index].state = ConnState::Admitted;
        self.shared.admitted.fetch_add(1, Ordering::Relaxed);
        self.shared.connected.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut list) = self.shared.producers.lock() {
            list.push(ProducerInfo {
                pid,
                uid: creds.uid(),
                gid: creds.gid(),
                admitted_unix_ns: now_unix_ns(),
            });
        }
    }

    fn drop_conn(&mut self, index: usize) {
        let conn = self.conns.remove(index);
        if matches!(conn.state, ConnState::Admitted) {
            self.shared.connected.fetch_sub(1, Ordering::Relaxed);
            let pid = u32::try_from(conn.creds.pid()).unwrap_or(0);
            if let Ok(mut list) = self.shared.producers.lock()
                && let Some(at) = list.iter().position(|p| p.pid == pid)
            {
                list.swap_remove(at);
            }
        }
    }
}

fn new_eventfd() -> nix::Result<OwnedFd> {
    EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map(OwnedFd::from)
}

/// Why the sidecar side could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// Bad ring geometry.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The ring could not be created.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// The socket could not be bound.
    #[error(
        "cannot listen on the producer socket {path}: {source} (is another ringside serve running? remove a stale socket file or pass --socket)"
    )]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: nix::Error,
    },
    /// Another system call failed.
    #[error("{op} failed: {source}")]
    Sys {
        /// What was attempted.
        op: &'static str,
        /// The OS error.
        source: nix::Error,
    },
}
