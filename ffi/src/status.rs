//! Status codes returned across the C boundary, their static descriptions,
//! and the thread-local "last error" detail text.

use std::cell::RefCell;
use std::ffi::{CStr, c_char};
use std::fmt;

use ringside_client::{ConnectError, RefusalReason, RingError, SendError};

/// Status code returned by every fallible `rs_*` function.
///
/// `RS_OK` (0) means success; every failure is a distinct negative value.
/// The type is a plain `int32_t` in C, so bindings may treat it as an integer.
/// `rs_strerror()` gives a static description of each code and
/// `rs_last_error()` the detailed text of the last failure on this thread.
#[repr(i32)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum rs_status {
    /// Success.
    RS_OK = 0,
    /// A required pointer was NULL, a length does not fit in memory, a
    /// string was empty where it must not be, or similar caller mistakes.
    RS_ERR_INVALID_ARGUMENT = -1,
    /// The producer has no ring mapped (no sidecar yet, or it went away and
    /// the producer is reconnecting in the background). The frame was
    /// dropped and counted in `rs_stats.dropped_not_connected`.
    RS_ERR_NOT_CONNECTED = -2,
    /// The payload is larger than the ring's maximum payload. Nothing was
    /// published; counted in `rs_stats.dropped_too_large`.
    RS_ERR_TOO_LARGE = -3,
    /// The topic is empty, longer than `RS_MAX_TOPIC_LEN` bytes, or not valid
    /// UTF-8. Nothing was published; counted in `rs_stats.dropped_invalid_topic`
    /// when the producer saw it.
    RS_ERR_INVALID_TOPIC = -4,
    /// The sidecar refused this producer: its uid/gid is not on the allowlist.
    RS_ERR_REFUSED_UID = -5,
    /// The sidecar refused this producer: it already serves its maximum number
    /// of producers.
    RS_ERR_REFUSED_TOO_MANY_PRODUCERS = -6,
    /// The sidecar refused this producer: incompatible protocol version.
    RS_ERR_REFUSED_VERSION = -7,
    /// The sidecar refused the ring this producer tried to hand back.
    RS_ERR_REFUSED_RING = -8,
    /// The sidecar refused this producer because it is shutting down.
    RS_ERR_REFUSED_SHUTTING_DOWN = -9,
    /// The peer on the socket did not speak the ringside handshake protocol.
    RS_ERR_PROTOCOL = -10,
    /// An operating-system call failed (details in `rs_last_error()`).
    RS_ERR_IO = -11,
    /// The platform lacks something ringside needs (e.g. lock-free 128-bit
    /// compare-and-swap on this CPU).
    RS_ERR_UNSUPPORTED = -12,
    /// A bug inside the library panicked; the panic was caught at the C
    /// boundary and the call had no further effect. Please report it with the
    /// text from `rs_last_error()`.
    RS_ERR_PANIC = -13,
    /// The ring the sidecar handed over failed validation (bad header, missing
    /// seals, wrong size); the producer refuses to write into it.
    RS_ERR_BAD_RING = -14,
}

impl rs_status {
    /// All codes.
    pub(crate) const ALL: [rs_status; 15] = [
        rs_status::RS_OK,
        rs_status::RS_ERR_INVALID_ARGUMENT,
        rs_status::RS_ERR_NOT_CONNECTED,
        rs_status::RS_ERR_TOO_LARGE,
        rs_status::RS_ERR_INVALID_TOPIC,
        rs_status::RS_ERR_REFUSED_UID,
        rs_status::RS_ERR_REFUSED_TOO_MANY_PRODUCERS,
        rs_status::RS_ERR_REFUSED_VERSION,
        rs_status::RS_ERR_REFUSED_RING,
        rs_status::RS_ERR_REFUSED_SHUTTING_DOWN,
        rs_status::RS_ERR_PROTOCOL,
        rs_status::RS_ERR_IO,
        rs_status::RS_ERR_UNSUPPORTED,
        rs_status::RS_ERR_PANIC,
        rs_status::RS_ERR_BAD_RING,
    ];

    /// The code for an integer, if it is one of ours.
    pub(crate) fn from_code(code: i32) -> Option<rs_status> {
        rs_status::ALL.into_iter().find(|s| *s as i32 == code)
    }

    /// Static, NUL-terminated description of the code.
    pub fn description(self) -> &'static CStr {
        match self {
            rs_status::RS_OK => c"success",
            rs_status::RS_ERR_INVALID_ARGUMENT => {
                c"invalid argument (NULL pointer, bad length or empty string)"
            }
            rs_status::RS_ERR_NOT_CONNECTED => {
                c"not connected to a ringside sidecar; frame dropped and counted"
            }
            rs_status::RS_ERR_TOO_LARGE => c"frame larger than the ring's maximum payload",
            rs_status::RS_ERR_INVALID_TOPIC => {
                c"invalid topic (empty, longer than 255 bytes, or not UTF-8)"
            }
            rs_status::RS_ERR_REFUSED_UID => {
                c"refused by the sidecar: this uid/gid is not allowed to produce"
            }
            rs_status::RS_ERR_REFUSED_TOO_MANY_PRODUCERS => {
                c"refused by the sidecar: too many producers connected"
            }
            rs_status::RS_ERR_REFUSED_VERSION => {
                c"refused by the sidecar: incompatible protocol version"
            }
            rs_status::RS_ERR_REFUSED_RING => c"refused by the sidecar: ring rejected",
            rs_status::RS_ERR_REFUSED_SHUTTING_DOWN => {
                c"refused by the sidecar: it is shutting down"
            }
            rs_status::RS_ERR_PROTOCOL => c"protocol error talking to the sidecar",
            rs_status::RS_ERR_IO => c"I/O error",
            rs_status::RS_ERR_UNSUPPORTED => c"unsupported on this platform",
            rs_status::RS_ERR_PANIC => c"internal error: a panic was caught at the C boundary",
            rs_status::RS_ERR_BAD_RING => c"the ring from the sidecar failed validation",
        }
    }
}

/// Description returned by `rs_strerror` for integers that are not a status.
pub(crate) const UNKNOWN_STATUS: &CStr = c"unknown ringside status code";

/// A failure on its way to C: the code plus what is needed to describe it.
///
/// The hot-path variants (send errors) are `Copy` and never allocate, so a
/// producer dropping frames while the sidecar is away pays no allocation per
/// frame; the text is only formatted when C asks for it via `rs_last_error`.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A send/reserve failure reported by the producer.
    Send(SendFailure),
    /// A caller mistake detected at the boundary; the text names the argument.
    InvalidArgument(&'static str),
    /// A topic the boundary itself rejected before the producer saw it.
    TopicNotUtf8,
    /// A connect failure (rare path; owns its text).
    Connect { code: rs_status, text: String },
    /// A panic caught at the boundary.
    Panic(String),
}

/// Copyable digest of `ringside_client::SendError`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SendFailure {
    NotConnected,
    TooLarge { len: usize, max: u32 },
    InvalidTopic { len: usize },
}

impl From<SendError> for Failure {
    fn from(e: SendError) -> Self {
        Failure::Send(match e {
            SendError::NotConnected => SendFailure::NotConnected,
            SendError::TooLarge { len, max } => SendFailure::TooLarge { len, max },
            SendError::InvalidTopic { len } => SendFailure::InvalidTopic { len },
        })
    }
}

impl From<ConnectError> for Failure {
    fn from(e: ConnectError) -> Self {
        let code = match &e {
            ConnectError::Refused { reason, .. } => match reason {
                RefusalReason::UidNotAllowed => rs_status::RS_ERR_REFUSED_UID,
                RefusalReason::TooManyProducers => rs_status::RS_ERR_REFUSED_TOO_MANY_PRODUCERS,
                RefusalReason::VersionMismatch => rs_status::RS_ERR_REFUSED_VERSION,
                RefusalReason::RingRejected => rs_status::RS_ERR_REFUSED_RING,
                RefusalReason::ShuttingDown => rs_status::RS_ERR_REFUSED_SHUTTING_DOWN,
            },
            ConnectError::Protocol(_) | ConnectError::NotRingside { .. } => {
                rs_status::RS_ERR_PROTOCOL
            }
            ConnectError::Io { .. } | ConnectError::HandshakeTimedOut { .. } => {
                rs_status::RS_ERR_IO
            }
            ConnectError::Ring(RingError::NoWideAtomics) => rs_status::RS_ERR_UNSUPPORTED,
            ConnectError::Ring(RingError::Sys { .. }) => rs_status::RS_ERR_IO,
            ConnectError::Ring(_) => rs_status::RS_ERR_BAD_RING,
        };
        Failure::Connect {
            code,
            text: e.to_string(),
        }
    }
}

impl Failure {
    /// The status code C sees.
    pub(crate) fn code(&self) -> rs_status {
        match self {
            Failure::Send(SendFailure::NotConnected) => rs_status::RS_ERR_NOT_CONNECTED,
            Failure::Send(SendFailure::TooLarge { .. }) => rs_status::RS_ERR_TOO_LARGE,
            Failure::Send(SendFailure::InvalidTopic { .. }) | Failure::TopicNotUtf8 => {
                rs_status::RS_ERR_INVALID_TOPIC
            }
            Failure::InvalidArgument(_) => rs_status::RS_ERR_INVALID_ARGUMENT,
            Failure::Connect { code, .. } => *code,
            Failure::Panic(_) => rs_status::RS_ERR_PANIC,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Send(SendFailure::NotConnected) => f.write_str(
                "not connected to a ringside sidecar (none listening yet, or reconnecting); \
                 the frame was dropped and counted",
            ),
            Failure::Send(SendFailure::TooLarge { len, max }) => write!(
                f,
                "payload of {len} bytes is larger than the ring's maximum payload of {max} bytes"
            ),
            Failure::Send(SendFailure::InvalidTopic { len }) => write!(
                f,
                "invalid topic of {len} bytes: a topic must be 1 to 255 bytes of UTF-8"
            ),
            Failure::TopicNotUtf8 => f.write_str("invalid topic: not valid UTF-8"),
            Failure::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
            Failure::Connect { text, .. } => f.write_str(text),
            Failure::Panic(msg) => write!(
                f,
                "internal error: panic caught at the C boundary: {msg} (please report this)"
            ),
        }
    }
}

thread_local! {
    /// The last failure on this thread, kept un-formatted so that storing it
    /// does not allocate for the hot-path variants.
    static LAST_ERROR: RefCell<Option<Failure>> = const { RefCell::new(None) };
}

/// Records `failure` as this thread's last error and returns its code.
pub(crate) fn record(failure: Failure) -> rs_status {
    let code = failure.code();
    // `try_with` fails only during thread teardown (TLS already destroyed);
    // the code is still returned, the detail text is lost, which is the best
    // that can be done then. `try_borrow_mut` cannot fail because no borrow
    // is ever held across a call that could re-enter, but stay panic-free.
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut slot) = slot.try_borrow_mut() {
            *slot = Some(failure);
        }
    });
    code
}

/// The code of this thread's last failure, `RS_OK` if none was recorded.
pub(crate) fn last_code() -> rs_status {
    LAST_ERROR
        .try_with(|slot| {
            slot.try_borrow()
                .ok()
                .and_then(|s| s.as_ref().map(Failure::code))
        })
        .ok()
        .flatten()
        .unwrap_or(rs_status::RS_OK)
}

/// Formats this thread's last failure ("" when none).
pub(crate) fn last_text() -> String {
    LAST_ERROR
        .try_with(|slot| {
            slot.try_borrow()
                .ok()
                .and_then(|s| s.as_ref().map(ToString::to_string))
        })
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Copies `text` into a C buffer of `len` bytes as a NUL-terminated string,
/// truncated at a UTF-8 character boundary if it does not fit.
///
/// # Safety
/// `buf` must be NULL or valid for writes of `len` bytes.
pub(crate) unsafe fn copy_out(text: &str, buf: *mut c_char, len: usize) {
    if buf.is_null() || len == 0 {
        return;
    }
    let mut n = text.len().min(len - 1);
    while !text.is_char_boundary(n) {
        n -= 1;
    }
    // SAFETY: `buf` is non-NULL and, by this function's contract, valid for
    // `len` bytes of writes; we write `n + 1 <= len` bytes. `text` is a Rust
    // string that cannot overlap a buffer the caller owns and hands us for
    // writing (it is a fresh String or a static).
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
        *buf.add(n) = 0;
    }
}
