//! The producer handshake on the sidecar's Unix socket (SOCK_SEQPACKET).
//!
//! One `Hello` from the producer (optionally carrying the ring fd it already holds, so a
//! restarted sidecar can adopt it), one `Welcome` from the sidecar (carrying the ring,
//! doorbell and eventfd fds on success, or a refusal reason and text). The connection then
//! stays open: its end tells each side that the other went away. Both messages are fixed
//! size; anything else is a protocol error. Documented in `docs/ring-format.md`.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::layout::{FORMAT_VERSION, RingConfig};
use crate::shm::adopt_received_fds;

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
