//! The producer handshake on the sidecar's Unix socket (SOCK_SEQPACKET).
//!
//! One `Hello` from the producer (optionally carrying the ring fd it already holds, so a
//! restarted sidecar can adopt it), one `Welcome` from the sidecar (carrying the ring,
//! doorbell and eventfd fds on success, or a refusal reason and text). The connection then
//! stays open: its end tells each side that the other went away. Both messages are fixed
//! size; anything else is a protocol error. Documented in `docs/ring-format.md`.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
    connect as connect_socket, recvmsg, sendmsg, socket,
};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::layout::{FORMAT_VERSION, RingConfig};
use crate::shm::{RingError, adopt_received_fds};

/// Version of the handshake messages.
pub const HANDSHAKE_VERSION: u32 = 1;
/// Magic of a Hello.
pub const HELLO_MAGIC: [u8; 8] = *b"RSHELLO\0";
/// Magic of a Welcome.
pub const WELCOME_MAGIC: [u8; 8] = *b"RSWELCM\0";
/// Hello flag: an SCM_RIGHTS ring fd accompanies this Hello.
pub const HELLO_OFFERS_RING: u32 = 1;
/// Longest refusal text.
pub const DETAIL_LEN: usize = 200;
/// File descriptors a successful Welcome carries: ring, doorbell, eventfd.
pub const WELCOME_FDS: usize = 3;
/// Longest a producer's [`connect`] waits for the sidecar's Welcome (and for its Hello to
/// be taken). The longest a producer ever blocks, and only while connecting.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Producer → sidecar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Hello {
    /// [`HELLO_MAGIC`].
    pub magic: [u8; 8],
    /// [`HANDSHAKE_VERSION`].
    pub version: u32,
    /// The ring format version the producer writes.
    pub ring_format: u32,
    /// `HELLO_OFFERS_RING` or 0.
    pub flags: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Id of the offered ring, or 0.
    pub offered_ring_id: u64,
}

/// Sidecar → producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Welcome {
    /// [`WELCOME_MAGIC`].
    pub magic: [u8; 8],
    /// [`HANDSHAKE_VERSION`].
    pub version: u32,
    /// 0 = admitted, else a [`RefusalReason`] code.
    pub status: u32,
    /// Id this producer writes into its frames.
    pub producer_id: u32,
    /// Length of `detail` in use.
    pub detail_len: u32,
    /// Id of the ring handed over.
    pub ring_id: u64,
    /// Data capacity of the ring handed over. Producers take the geometry from here, never
    /// from the ring header, which any producer could have overwritten.
    pub capacity: u64,
    /// Max payload of the ring handed over.
    pub max_payload: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Human-readable refusal text (UTF-8).
    pub detail: [u8; DETAIL_LEN],
}

/// Why the sidecar refused a producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    /// The producer's uid/gid is not on the allowlist.
    UidNotAllowed,
    /// The sidecar already has `--max-producers` producers.
    TooManyProducers,
    /// Handshake or ring format version differs.
    VersionMismatch,
    /// The sidecar could not provide a ring.
    RingRejected,
    /// The sidecar is shutting down.
    ShuttingDown,
}

impl RefusalReason {
    /// Wire code.
    pub fn code(self) -> u32 {
        match self {
            RefusalReason::UidNotAllowed => 1,
            RefusalReason::TooManyProducers => 2,
            RefusalReason::VersionMismatch => 3,
            RefusalReason::RingRejected => 4,
            RefusalReason::ShuttingDown => 5,
        }
    }

    /// From a wire code.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            1 => RefusalReason::UidNotAllowed,
            2 => RefusalReason::TooManyProducers,
            3 => RefusalReason::VersionMismatch,
            4 => RefusalReason::RingRejected,
            5 => RefusalReason::ShuttingDown,
            _ => return None,
        })
    }
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RefusalReason::UidNotAllowed => "uid not allowed",
            RefusalReason::TooManyProducers => "too many producers",
            RefusalReason::VersionMismatch => "version mismatch",
            RefusalReason::RingRejected => "ring rejected",
            RefusalReason::ShuttingDown => "shutting down",
        })
    }
}

impl Hello {
    /// A Hello for this build, offering `ring_id` if non-zero.
    pub fn new(offered_ring_id: u64) -> Hello {
        Hello {
            magic: HELLO_MAGIC,
            version: HANDSHAKE_VERSION,
            ring_format: FORMAT_VERSION,
            flags: if offered_ring_id != 0 {
                HELLO_OFFERS_RING
            } else {
                0
            },
            reserved: 0,
            offered_ring_id,
        }
    }

    /// Decodes and checks a Hello; the error is the refusal to send back.
    ///
    /// # Errors
    ///
    /// The refusal to send back (always [`RefusalReason::VersionMismatch`]) with its text, for
    /// a message of the wrong size, magic or version.
    pub fn decode(bytes: &[u8]) -> Result<Hello, (RefusalReason, String)> {
        let hello = Hello::read_from_bytes(bytes).map_err(|_| {
            (
                RefusalReason::VersionMismatch,
                format!(
                    "hello of {} bytes, expected {}: not a ringside producer of this version",
                    bytes.len(),
                    size_of::<Hello>()
                ),
            )
        })?;
        if hello.magic != HELLO_MAGIC {
            return Err((
                RefusalReason::VersionMismatch,
                "bad hello magic: not a ringside producer".to_owned(),
            ));
        }
        if hello.version != HANDSHAKE_VERSION || hello.ring_format != FORMAT_VERSION {
            return Err((
                RefusalReason::VersionMismatch,
                format!(
                    "producer speaks handshake v{} / ring format v{}, this sidecar speaks v{} / v{}; upgrade the producer library or the sidecar",
                    hello.version, hello.ring_format, HANDSHAKE_VERSION, FORMAT_VERSION
                ),
            ));
        }
        Ok(hello)
    }
}

impl Welcome {
    /// An admission to a ring with this id and geometry.
    pub fn admit(producer_id: u32, ring_id: u64, config: &RingConfig) -> Welcome {
        Welcome {
            magic: WELCOME_MAGIC,
            version: HANDSHAKE_VERSION,
            status: 0,
            producer_id,
            detail_len: 0,
            ring_id,
            capacity: config.capacity,
            max_payload: config.max_payload,
            reserved: 0,
            detail: [0; DETAIL_LEN],
        }
    }

    /// The ring geometry of an admission.
    pub fn ring_config(&self) -> RingConfig {
        RingConfig {
            capacity: self.capacity,
            max_payload: self.max_payload,
        }
    }

    /// A refusal with a human-readable reason (truncated to 200 bytes on a char boundary).
    pub fn refuse(reason: RefusalReason, detail: &str) -> Welcome {
        let mut end = detail.len().min(DETAIL_LEN);
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        let mut text = [0u8; DETAIL_LEN];
        text[..end].copy_from_slice(&detail.as_bytes()[..end]);
        Welcome {
            magic: WELCOME_MAGIC,
            version: HANDSHAKE_VERSION,
            status: reason.code(),
            producer_id: 0,
            detail_len: end as u32,
            ring_id: 0,
            capacity: 0,
            max_payload: 0,
            reserved: 0,
            detail: text,
        }
    }

    /// Decodes and checks a Welcome.
    ///
    /// # Errors
    ///
    /// A text naming the problem for a message of the wrong size, magic or version.
    pub fn decode(bytes: &[u8]) -> Result<Welcome, String> {
        let welcome = Welcome::read_from_bytes(bytes).map_err(|_| {
            format!(
                "welcome of {} bytes, expected {}",
                bytes.len(),
                size_of::<Welcome>()
            )
        })?;
        if welcome.magic != WELCOME_MAGIC {
            return Err("bad welcome magic: is the socket a ringside sidecar?".to_owned());
        }
        if welcome.version != HANDSHAKE_VERSION {
            return Err(format!(
                "sidecar speaks handshake v{}, this producer v{HANDSHAKE_VERSION}",
                welcome.version
            ));
        }
        Ok(welcome)
    }

    /// The refusal, if this Welcome is one.
    pub fn refusal(&self) -> Option<(RefusalReason, String)> {
        if self.status == 0 {
            return None;
        }
        let len = (self.detail_len as usize).min(DETAIL_LEN);
        let detail = String::from_utf8_lossy(&self.detail[..len]).into_owned();
        Some((
            RefusalReason::from_code(self.status).unwrap_or(RefusalReason::VersionMismatch),
            detail,
        ))
    }
}

/// Sends one fixed-size message with optional fds.
///
/// # Errors
///
/// The OS error of `sendmsg`; `EMSGSIZE` when the message was not sent whole.
pub fn send_message(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> nix::Result<()> {
    let raw: Vec<i32> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &cmsg };
    let sent = sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(bytes)],
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    if sent != bytes.len() {
        return Err(nix::Error::EMSGSIZE);
    }
    Ok(())
}

/// A received message: its bytes (bounded by the buffer) and up to `max_fds` fds.
#[derive(Debug)]
pub struct Received {
    /// Message length (0 = the peer closed the connection).
    pub len: usize,
    /// True if the message or its fds did not fit: a protocol error.
    pub truncated: bool,
    /// Received fds, owned.
    pub fds: Vec<OwnedFd>,
}

/// Receives one message into `buf`, accepting at most `MAX_FDS` fds.
///
/// # Errors
///
/// The OS error of `recvmsg` (a timeout set on the socket shows as `EAGAIN`).
pub fn recv_message<const MAX_FDS: usize>(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: MsgFlags,
) -> nix::Result<Received> {
    let mut cmsg_space = nix::cmsg_space!([i32; 4]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg_space),
        flags | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            fds.extend(adopt_received_fds(&raw));
        }
    }
    let truncated = msg
        .flags
        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC)
        || fds.len() > MAX_FDS;
    Ok(Received {
        len: msg.bytes,
        truncated,
        fds,
    })
}

/// What a successful handshake hands a producer: the Welcome and its file descriptors.
#[derive(Debug)]
pub struct Admission {
    /// The sidecar's Welcome: producer id, ring id and geometry (trusted; the ring header
    /// is not).
    pub welcome: Welcome,
    /// The ring memfd, to map writable (`WritableRing::open`) unless it is the ring offered.
    pub ring: OwnedFd,
    /// The doorbell page (a sealed memfd producers map read-only).
    pub doorbell_page: OwnedFd,
    /// The doorbell eventfd.
    pub doorbell_event: OwnedFd,
    /// The connection, kept open and silent: its end tells each side the other went away.
    pub connection: OwnedFd,
}

/// A ring a producer already holds and offers to a (restarted) sidecar for adoption
/// (`docs/ring-format.md` §9).
#[derive(Debug, Clone, Copy)]
pub struct RingOffer<'a> {
    /// The ring's id.
    pub ring_id: u64,
    /// The ring's memfd.
    pub fd: BorrowedFd<'a>,
}

/// The producer's side of the handshake (`docs/ring-format.md` §8): connects to the
/// sidecar's socket, sends a Hello (offering `offer` for adoption), and receives the
/// Welcome with the ring, doorbell page and eventfd. Blocks at most about twice
/// [`HANDSHAKE_TIMEOUT`] (once to send, once to receive) on a sidecar that accepts and
/// never answers.
///
/// # Errors
///
/// [`ConnectError::Refused`] when the sidecar refuses (uid, limit, version, shutdown);
/// [`ConnectError::NotRingside`] when the path is a socket of another kind;
/// [`ConnectError::HandshakeTimedOut`] when the sidecar does not answer in time;
/// [`ConnectError::Protocol`] for a malformed Welcome; [`ConnectError::Io`] when the socket
/// cannot be reached (no sidecar running is the common case, and worth retrying).
pub fn connect(
    socket_path: &Path,
    offer: Option<RingOffer<'_>>,
) -> Result<Admission, ConnectError> {
    let io_err = |source: nix::Error| ConnectError::from_os(socket_path, source);
    let sock = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io_err)?;
    let addr = UnixAddr::new(socket_path).map_err(io_err)?;
    connect_socket(sock.as_raw_fd(), &addr).map_err(io_err)?;
    // The handshake itself must not hang on a wedged sidecar.
    let stream = UnixStream::from(sock);
    let _ = stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT));
    let sock = OwnedFd::from(stream);

    let hello = Hello::new(offer.map_or(0, |o| o.ring_id));
    let offered: Vec<BorrowedFd<'_>> = offer.iter().map(|o| o.fd).collect();
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
    let (Some(ring), Some(doorbell_page), Some(doorbell_event)) =
        (fds.next(), fds.next(), fds.next())
    else {
        return Err(ConnectError::Protocol(
            "the welcome did not carry the ring, doorbell and eventfd".to_owned(),
        ));
    };
    // From here on the connection only signals its end: block on it without a timeout.
    let stream = UnixStream::from(sock);
    let _ = stream.set_read_timeout(None);
    Ok(Admission {
        welcome,
        ring,
        doorbell_page,
        doorbell_event,
        connection: OwnedFd::from(stream),
    })
}

/// Why a producer could not connect to the sidecar.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The sidecar answered and said no.
    #[error("the sidecar refused this producer ({reason}): {detail}")]
    Refused {
        /// Machine-readable reason.
        reason: RefusalReason,
        /// The sidecar's explanation.
        detail: String,
    },
    /// The sidecar sent something that is not the ringside handshake.
    #[error("handshake with the sidecar failed: {0}")]
    Protocol(String),
    /// Something listens at the path, but it is not a ringside sidecar's socket.
    #[error(
        "{path} is not a ringside socket (expected SOCK_SEQPACKET); check --socket / $RINGSIDE_SOCKET"
    )]
    NotRingside {
        /// The socket path.
        path: PathBuf,
    },
    /// The peer accepted the connection but did not complete the handshake in time.
    #[error(
        "handshake with {path} timed out after {} s: the peer accepted but did not answer (is it a ringside sidecar, and is it overloaded?)",
        HANDSHAKE_TIMEOUT.as_secs()
    )]
    HandshakeTimedOut {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket could not be used.
    #[error("cannot use the ringside socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The ring the sidecar handed over cannot be used here.
    #[error("the ring from the sidecar cannot be used: {0}")]
    Ring(#[from] RingError),
}

impl ConnectError {
    /// Classifies an OS error from the socket calls of the handshake.
    fn from_os(path: &Path, source: nix::Error) -> ConnectError {
        let path = path.to_owned();
        match source {
            nix::Error::EPROTOTYPE | nix::Error::ENOTSOCK => ConnectError::NotRingside { path },
            nix::Error::EAGAIN => ConnectError::HandshakeTimedOut { path },
            other => ConnectError::Io {
                path,
                source: std::io::Error::from(other),
            },
        }
    }

    /// True when retrying cannot help: a refusal, a protocol mismatch, or a socket path
    /// that can never work (too long for a Unix socket, or not a ringside SOCK_SEQPACKET
    /// socket). A missing, slow or silent sidecar is not permanent: producers retry it.
    pub fn is_permanent(&self) -> bool {
        match self {
            ConnectError::Refused { .. }
            | ConnectError::Protocol(_)
            | ConnectError::NotRingside { .. } => true,
            ConnectError::Io { source, .. } => {
                matches!(source.raw_os_error(), Some(libc::ENAMETOOLONG))
            }
            ConnectError::HandshakeTimedOut { .. } | ConnectError::Ring(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hello_round_trip() {
        let hello = Hello::new(7);
        assert_eq!(Hello::decode(hello.as_bytes()), Ok(hello));
    }

    #[test]
    fn refusal_round_trip() {
        let welcome = Welcome::refuse(RefusalReason::UidNotAllowed, "uid 1234 is not allowed");
        let decoded = Welcome::decode(welcome.as_bytes()).expect("decodes");
        assert_eq!(
            decoded.refusal(),
            Some((
                RefusalReason::UidNotAllowed,
                "uid 1234 is not allowed".to_owned()
            ))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_hello_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = Hello::decode(&bytes);
        }
        #[test]
        fn arbitrary_welcome_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(w) = Welcome::decode(&bytes) { let _ = w.refusal(); }
        }
    }
}
