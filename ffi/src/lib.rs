//! C ABI for the ringside producer (`libringside`, header `ringside.h`).
//!
//! This crate wraps [`ringside_client::Producer`] in a small, stable C API.
//! The header `ffi/include/ringside.h` is generated from this file by cbindgen
//! and checked in; `tests/header_fresh.rs` fails when it is stale. The
//! documentation below becomes the header's documentation, so it is written
//! for C programmers.
//!
//! # Overview (C)
//!
//! ```c
//! rs_producer *p = NULL;
//! if (rs_producer_connect(NULL, &p) != RS_OK) { /* rs_last_error(...) */ }
//! rs_send(p, "cpu/load", &sample, sizeof sample);      // copy in
//! rs_reservation *r; void *buf;                          // or zero-copy:
//! if (rs_reserve(p, "cpu/raw", 256, &r, &buf) == RS_OK) { fill(buf); rs_commit(r); }
//! rs_producer_close(p);
//! ```
//!
//! # Language
//!
//! The header is C99 and C++11 (or later) with `-pedantic`; it includes only
//! `<stdbool.h>`, `<stddef.h>` and `<stdint.h>`.
//!
//! # Return codes and errors
//!
//! Fallible functions return an `rs_status` (a plain `int32_t`): `RS_OK` (0)
//! or a distinct negative code. `rs_strerror()` maps a code to a static
//! description; `rs_last_error()` copies the detailed text of the most recent
//! failure *on the calling thread* into a caller-provided buffer. Successful
//! calls do not clear the last error (like `errno`).
//!
//! # Handles and misuse
//!
//! `rs_producer *` and `rs_reservation *` are opaque handles, not addresses:
//! never dereference them. Every call checks its handle first. A producer
//! used after `rs_producer_close`, a second close, a second `rs_commit` or
//! `rs_discard` of a reservation, or a value this library never returned, is
//! refused with `RS_ERR_BAD_HANDLE` and a text saying which; nothing is
//! touched. A process holds at most `RS_MAX_PRODUCERS` open producers and
//! `RS_MAX_RESERVATIONS` outstanding reservations (`RS_ERR_HANDLE_LIMIT`
//! past that): handles live in fixed tables, so reserving never allocates.
//! What cannot be detected is one thread closing a handle while another is
//! still inside a call with it (see Threads).
//!
//! # Memory ownership
//!
//! No allocation crosses the boundary in either direction: handles are
//! created and destroyed only by this library (`rs_producer_connect` /
//! `rs_producer_close`, `rs_reserve` / `rs_commit` / `rs_discard`), strings
//! returned by `rs_strerror` and `rs_version` are static, and error text is
//! copied into the caller's buffer.
//!
//! # Threads
//!
//! An `rs_producer *` may be shared by any number of threads, which may call
//! `rs_send`, `rs_send_at`, `rs_reserve` and `rs_producer_stats` on it
//! concurrently; the producer is lock-free on the write path. The only rule is
//! the usual one for handles: `rs_producer_close` must be called exactly once,
//! after every other thread has stopped using the handle.
//!
//! An `rs_reservation *` belongs to whoever holds it; it may be completed
//! (committed or discarded) on any thread, but exactly once. It holds its own
//! references to the ring mapping and the producer's counters, so it stays
//! valid (and commits normally) even if `rs_producer_close` runs first.
//!
//! # Blocking
//!
//! `rs_send`, `rs_send_at`, `rs_reserve`, `rs_commit`, `rs_discard` and
//! `rs_producer_stats` never block and never wait for the sidecar or its
//! subscribers. `rs_producer_connect` blocks at most 2 s (the handshake
//! timeout: a peer that accepts the connection and never answers, or a sidecar
//! whose listen backlog is full); with a healthy sidecar, or none, it returns
//! within about a millisecond. `rs_producer_close` blocks at most about 200 ms
//! (waiting for the background thread; normally about a millisecond).
//! `rs_producer_wait_connected` blocks up to the time it is given.
//!
//! # Signals and fork
//!
//! Only `rs_strerror` and `rs_version` are async-signal-safe (they return
//! static data and touch no state). The send path is not: not even `rs_send`,
//! because failures record thread-local error text (which may allocate), a
//! caught panic allocates, a thread's first send initialises thread-local
//! state in the producer (which may allocate), and connecting and closing take
//! locks and join a thread. From a signal handler, hand the data to a normal
//! thread (e.g. via a self-pipe) and send from there.
//!
//! After `fork()`, the child must not use a handle created in the parent:
//! every call with one returns `RS_ERR_FORKED` (its frames would carry the
//! parent's producer id, and its close would shut the parent's connection).
//! `rs_producer_close` on such a handle in the child releases the child's copy
//! without touching the parent's connection. Connect a new producer in the
//! child instead.
//!
//! # Versioned structs
//!
//! `rs_stats` starts with a `size` field: set it to `sizeof(rs_stats)` (or
//! initialise with `RS_STATS_INIT`) before `rs_producer_stats`. The library
//! fills only the fields that fit in `size` bytes and sets `size` to the bytes
//! it filled, so programs built against an older or newer header keep working
//! when fields are added at the end.
//!
//! # Panics
//!
//! Every entry point runs inside `catch_unwind`; a panic inside the library
//! becomes `RS_ERR_PANIC` and never unwinds into C. (The library is built with
//! `panic = "unwind"`, the default; do not rebuild it with `panic = "abort"`
//! unless you accept aborting the process instead.)

#![deny(missing_docs)]
#![warn(clippy::missing_errors_doc, clippy::missing_panics_doc)]
use std::ffi::{CStr, OsStr, c_char, c_void};
use std::mem::offset_of;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::Duration;

use ringside_client::{Producer, Reservation};

mod fork;
mod handles;
mod status;

use fork::Origin;
use handles::{HandleKind, HandleTable};
pub use status::rs_status;
use status::{Failure, UNKNOWN_STATUS};

/// Longest topic in bytes (a topic is 1 to 255 bytes of UTF-8).
pub const RS_MAX_TOPIC_LEN: usize = 255;

/// Most producers one process can have open at once (`RS_ERR_HANDLE_LIMIT`
/// past that). Each one is also a connection the sidecar counts against its
/// `--max-producers`.
pub const RS_MAX_PRODUCERS: usize = 1024;

/// Most reservations one process can have outstanding (reserved, neither
/// committed nor discarded) at once, over all its producers and threads
/// (`RS_ERR_HANDLE_LIMIT` past that).
pub const RS_MAX_RESERVATIONS: usize = 4096;

/// Major version of this header; compare with what `rs_version()` reports to
/// detect a library/header mismatch at run time.
pub const RS_VERSION_MAJOR: u32 = 0;
/// Minor version of this header.
pub const RS_VERSION_MINOR: u32 = 1;
/// Patch version of this header.
pub const RS_VERSION_PATCH: u32 = 0;

/// Opaque producer handle: a connection to the local ringside sidecar and
/// the shared-memory ring it maps.
///
/// Create with `rs_producer_connect`, destroy with `rs_producer_close`.
/// Safe to share between threads (see the thread rules in the file comment).
/// The pointer is a handle, not an address: never dereference it.
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct rs_producer {
    _handle_only: [u8; 0],
}

/// Opaque handle to a frame reserved in the ring and being filled in place.
///
/// Created by `rs_reserve`; completed by exactly one call to `rs_commit` or
/// `rs_discard`. Until then, readers wait on this frame for at most the
/// sidecar's stall timeout and then skip it as abandoned, so fill it promptly
/// and never leak it. The reservation owns references to the ring mapping and
/// the producer's counters, so it does not depend on the `rs_producer` it came
/// from staying open. The pointer is a handle, not an address.
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct rs_reservation {
    _handle_only: [u8; 0],
}

/// An open producer and the process it belongs to.
#[derive(Debug)]
struct ProducerEntry {
    producer: Producer,
    origin: Origin,
}

/// An outstanding reservation and the process it belongs to.
///
/// The reservation is kept as the `Result` `Producer::reserve` returned, so that the call
/// writes it straight into the pool slot (no copy of the reservation on the way in); a
/// live entry always holds `Ok`.
#[derive(Debug)]
struct ReservationEntry {
    reservation: Result<Reservation, ringside_client::SendError>,
    origin: Origin,
}

/// The open producers of this process.
static PRODUCERS: HandleTable<ProducerEntry, RS_MAX_PRODUCERS, { HandleKind::Producer as u8 }> =
    HandleTable::new();

/// The outstanding reservations of this process: the pool `rs_reserve` takes
/// a slot from instead of allocating.
static RESERVATIONS: HandleTable<
    ReservationEntry,
    RS_MAX_RESERVATIONS,
    { HandleKind::Reservation as u8 },
> = HandleTable::new();

// A reservation may be completed on another thread than the one that made it
// (documented for C), and producers are shared between C threads: the handle
// tables need both to be Send + Sync.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Reservation>();
    assert_send_sync::<Producer>();
};

/// Producer counters, filled by `rs_producer_stats`.
///
/// Versioned by size: set `size` to `sizeof(rs_stats)` (or initialise with
/// `RS_STATS_INIT`) before the call; the library fills the fields that fit
/// and sets `size` to the bytes it filled. New fields are only ever appended,
/// 8 bytes each.
///
/// Every frame passed to `rs_send`/`rs_send_at`/`rs_reserve` is counted in
/// exactly one of `sent`, `discarded` or a `dropped_*` counter, except calls
/// refused at the boundary (`RS_ERR_INVALID_ARGUMENT`, `RS_ERR_BAD_HANDLE`,
/// `RS_ERR_FORKED`, `RS_ERR_HANDLE_LIMIT`, or a topic that is not UTF-8),
/// which never reach the producer.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct rs_stats {
    /// In: the caller's `sizeof(rs_stats)`. Out: the bytes the library filled.
    pub size: u32,
    /// True once a ring is mapped: sends land in it, even while the sidecar
    /// restarts (a restarted sidecar adopts the same ring).
    pub connected: bool,
    /// True while a sidecar is connected right now.
    pub sidecar_connected: bool,
    /// Always 0.
    pub reserved: [u8; 2],
    /// Frames published into the ring.
    pub sent: u64,
    /// Payload bytes of the frames in `sent`.
    pub sent_bytes: u64,
    /// Frames dropped because no ring was mapped (sidecar absent).
    pub dropped_not_connected: u64,
    /// Frames dropped because the payload exceeded the maximum.
    pub dropped_too_large: u64,
    /// Frames dropped because the topic was invalid.
    pub dropped_invalid_topic: u64,
    /// Reservations discarded (via `rs_discard`); not counted in `sent`.
    pub discarded: u64,
    /// Successful reconnections to a (restarted) sidecar.
    pub reconnects: u64,
    /// Producer id assigned by the sidecar (the producer's pid), or -1 before
    /// the first successful handshake.
    pub producer_id: i64,
    /// The ring's maximum payload in bytes, or -1 while no ring is mapped yet.
    pub max_payload: i64,
    /// Id of the mapped ring, or 0 while none is mapped.
    pub ring_id: u64,
    /// Frames counted in `sent` that no subscriber can ever receive: written
    /// after the sidecar went away, into a ring the restarted sidecar did not
    /// adopt (it was started with another `--ring-size` or `--max-payload`).
    /// Counted when the producer switches to the new ring.
    pub lost_ring_replaced: u64,
}

/// Bytes of `rs_stats` before its first counter: `size`, the two flags, `reserved`.
const STATS_MIN_SIZE: usize = offset_of!(rs_stats, sent);

// rs_stats has no padding (every byte of it is a field), so any prefix of it
// can be copied out as bytes.
const _: () = assert!(STATS_MIN_SIZE == 8 && size_of::<rs_stats>() == 8 + 11 * 8);

/// Runs `f` at the boundary: panics become `RS_ERR_PANIC`, failures are
/// recorded as the thread's last error, success is `RS_OK`.
#[inline(always)]
fn guard(f: impl FnOnce() -> Result<(), Failure>) -> rs_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => rs_status::RS_OK,
        Ok(Err(failure)) => status::record(failure),
        Err(payload) => {
            let msg = if let Some(s) = payload.downcast_ref::<&'static str>() {
                (*s).to_owned()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "non-string panic payload".to_owned()
            };
            // Dropping the payload could itself panic (a payload with a
            // panicking Drop); contain that too rather than unwind into C.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            status::record(Failure::Panic(msg))
        }
    }
}

/// The failure for a handle used in a child forked after it was made.
fn forked(kind: HandleKind, origin: &Origin, released: bool) -> Failure {
    Failure::Forked {
        kind,
        parent: origin.pid(),
        child: std::process::id(),
        released,
    }
}

/// Borrows the producer behind a C handle, checking the handle first.
///
/// # Safety
/// No other thread may close `p` while the returned reference is in use (the
/// C contract: close once, after every other use of the handle has returned).
unsafe fn producer_entry<'a>(p: *const rs_producer) -> Result<&'a ProducerEntry, Failure> {
    if p.is_null() {
        return Err(Failure::InvalidArgument("producer is NULL"));
    }
    // SAFETY: forwarded contract: nobody takes this handle while we use it.
    let entry = unsafe { PRODUCERS.get(p.addr()) }.map_err(|why| Failure::BadHandle {
        kind: HandleKind::Producer,
        why,
    })?;
    if entry.origin.forked() {
        return Err(forked(HandleKind::Producer, &entry.origin, false));
    }
    Ok(entry)
}

/// Borrows the producer behind a C handle (see [`producer_entry`]).
///
/// # Safety
/// As for [`producer_entry`].
unsafe fn producer_ref<'a>(p: *const rs_producer) -> Result<&'a Producer, Failure> {
    // SAFETY: forwarded contract.
    unsafe { producer_entry(p) }.map(|entry| &entry.producer)
}

/// Reads a NUL-terminated topic.
///
/// # Safety
/// `topic` must be NULL or point to a NUL-terminated string that stays valid
/// and unmodified for `'a`.
unsafe fn topic_str<'a>(topic: *const c_char) -> Result<&'a str, Failure> {
    if topic.is_null() {
        return Err(Failure::InvalidArgument("topic is NULL"));
    }
    // SAFETY: non-NULL and, by this function's contract, NUL-terminated and
    // valid for reads up to and including the NUL for `'a`.
    let bytes = unsafe { CStr::from_ptr(topic) }.to_bytes();
    // Topic length limits are the producer's to enforce (so they are counted
    // in its stats); here only what cannot be expressed as &str is rejected.
    std::str::from_utf8(bytes).map_err(|_| Failure::TopicNotUtf8)
}

/// Views `(data, len)` as a byte slice.
///
/// # Safety
/// If `len > 0`, `data` must be NULL or valid for reads of `len` bytes for `'a`
/// and not written to during `'a`.
unsafe fn payload<'a>(data: *const c_void, len: usize) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if data.is_null() {
        return Err(Failure::InvalidArgument("data is NULL but len > 0"));
    }
    if len > isize::MAX as usize {
        return Err(Failure::InvalidArgument("len exceeds the address space"));
    }
    // SAFETY: `data` is non-NULL, and by this function's contract valid for
    // reads of `len` bytes and not mutated for `'a`; `len <= isize::MAX` as
    // `from_raw_parts` requires; u8 has alignment 1 so any pointer is aligned.
    Ok(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) })
}

/// Connects a producer to the ringside sidecar and maps its ring.
///
/// `socket_path` is the sidecar's Unix socket; NULL means `$RINGSIDE_SOCKET`
/// if set, else `/tmp/ringside.sock`. The path is used as raw bytes (it need
/// not be UTF-8) and must not be empty.
///
/// When no sidecar is listening yet, this still succeeds: the producer is
/// returned disconnected, keeps retrying in the background, and sends fail
/// with `RS_ERR_NOT_CONNECTED` (counted) until a sidecar appears. The same
/// holds for a peer that accepts the connection but does not answer the
/// handshake within 2 s (a wedged sidecar): this call then blocks for those
/// 2 s, the longest it ever blocks, and `rs_producer_wait_connected` reports
/// `RS_ERR_HANDSHAKE_TIMEOUT`. It fails only for definite refusals
/// (`RS_ERR_REFUSED_*`), a path that is not a ringside socket, protocol
/// errors, and unsupported platforms.
///
/// On success `*out` receives a new handle, to be released with
/// `rs_producer_close`. On failure `*out` is set to NULL (when `out` is not
/// NULL). Errors: `RS_ERR_INVALID_ARGUMENT` when `out` is NULL or the path is
/// empty or too long for a Unix socket (over 107 bytes);
/// `RS_ERR_REFUSED_*` when the sidecar refuses this producer;
/// `RS_ERR_NOT_RINGSIDE` when the path is a socket of another kind (not
/// SOCK_SEQPACKET) or not a socket; `RS_ERR_PROTOCOL` when the peer answers
/// with something that is not a ringside Welcome;
/// `RS_ERR_BAD_RING` / `RS_ERR_UNSUPPORTED` when the ring handed over cannot
/// be used; `RS_ERR_IO` when the producer's thread cannot be started;
/// `RS_ERR_HANDLE_LIMIT` when `RS_MAX_PRODUCERS` producers are open.
/// Use `rs_producer_connection_error` to see why a producer that connected
/// "successfully" has not reached a sidecar yet.
///
/// # Safety
/// `socket_path` must be NULL or a NUL-terminated string; `out` must be NULL
/// or valid for writing one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rs_producer_connect(
    socket_path: *const c_char,
    out: *mut *mut rs_producer,
) -> rs_status {
    guard(|| {
        if out.is_null() {
            return Err(Failure::InvalidArgument("out is NULL"));
        }
        // SAFETY: `out` is non-NULL and the caller guarantees it is valid for
        // writing one pointer; clear it first so every failure leaves NULL.
        unsafe { out.write(std::ptr::null_mut()) };
        // Take the handle slot before connecting: a full table must not cost
        // the sidecar a producer slot, even briefly.
        let slot = PRODUCERS.vacant().ok_or(Failure::HandleLimit {
            kind: HandleKind::Producer,
            max: PRODUCERS.capacity(),
        })?;
        let producer = if socket_path.is_null() {
            Producer::connect_default()?
        } else {
            // SAFETY: non-NULL, and the caller guarantees NUL termination and
            // validity for the duration of this call.
            let bytes = unsafe { CStr::from_ptr(socket_path) }.to_bytes();
            if bytes.is_empty() {
                return Err(Failure::InvalidArgument("socket_path is empty"));
            }
            let path = Path::new(OsStr::from_bytes(bytes));
            // A path the kernel can never bind or connect to (longer than
            // sun_path) is a caller error, not something to retry forever.
            if SocketAddr::from_pathname(path).is_err() {
                return Err(Failure::InvalidArgument(
                    "socket_path is too long for a Unix socket (at most 107 bytes)",
                ));
            }
            Producer::connect(path)?
        };
        let handle = slot.insert(ProducerEntry {
            producer,
            origin: Origin::current(),
        });
        // SAFETY: checked non-NULL above, caller guarantees writability.
        unsafe { out.write(std::ptr::without_provenance_mut(handle)) };
        Ok(())
    })
}

/// Closes a producer handle. NULL is a no-op (returns `RS_OK`).
///
/// Frames already committed stay in the ring and are served normally.
/// Outstanding reservations stay valid (they keep the ring mapped) and must
/// still be committed or discarded. Blocks at most about 200 ms (normally
/// about a millisecond) while the producer's background thread stops.
///
/// Errors: `RS_ERR_BAD_HANDLE` when `p` was already closed or is not a
/// producer handle (nothing is done); `RS_ERR_FORKED` in a child process on a
/// handle its parent created: the child's copy is released without shutting
/// down the parent's connection.
///
/// # Safety
/// No other thread may be using `p` (close once, after every other use of the
/// handle has returned).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rs_producer_close(p: *mut rs_producer) -> rs_status {
    guard(|| {
        if p.is_null() {
            return Ok(());
        }
        let entry = PRODUCERS.take(p.addr()).map_err(|why| Failure::BadHandle {
            kind: HandleKind::Producer,
            why,
        })?;
        if entry.origin.forked() {
            // Dropping the parent's producer here would shut down the socket it
            // shares with the parent and wait for a thread that does not exist
            // in this process. Leave the copy alone: the child's duplicates of
            // the descriptors close at exit or exec.
            let origin = entry.origin;
            std::mem::forget(entry);
            return Err(forked(HandleKind::Producer, &origin, true));
        }
        drop(entry);
        Ok(())
    })
}

/// Publishes one frame: copies `len` bytes at `data` into the ring under
/// `topic`, stamped with the current `CLOCK_REALTIME` time in nanoseconds.
///
/// Never blocks and never waits for readers. `data` may be NULL when `len` is
/// 0. Errors: `RS_ERR_INVALID_ARGUMENT` (NULL `p` or `topic`, NULL `data` with
/// `len > 0`, `len > PTRDIFF_MAX`), `RS_ERR_BAD_HANDLE`, `RS_ERR_FORKED`,
/// `RS_ERR_INVALID_TOPIC`, `RS_ERR_TOO_LARGE`, `RS_ERR_NOT_CONNECTED`,
/// `RS_ERR_PANIC`.
///
/// # Safety
/// `p` must not be closed by another thread during the call; `topic` NULL or
/// NUL-terminated; `data` valid for reads of `len` bytes when `len > 0`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rs_send(
    p: *const rs_producer,
    topic: *const c_char,
    data: *const c_void,
    len: usize,
) -> rs_status {
    guard(|| {
        // SAFETY: forwarded caller contracts (see each helper's # Safety).
        let args = unsafe { (producer_ref(p)?, topic_str(topic)?, payload(data, len)?) };
        let (producer, topic, payload) = args;
        producer.send(topic, payload)?;
        Ok(())
    })
}

/// Like `rs_send`, with an explicit timestamp in nanoseconds (any clock the
/// subscribers agree on; `CLOCK_REALTIME` is what `rs_send` uses).
///
/// # Safety
/// As for `rs_send`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rs_send_at(
    p: *const rs_producer,
    topic: *const c_char,
    timestamp_ns: u64,
    data: *const c_void,
    len: usize,
) -> rs_status {
    guard(|| {
        // SAFETY: forwarded caller contracts (see each helper's # Safety).
        let args = unsafe { (producer_ref(p)?, topic_str(topic)?, payload(data, len)?) };
        let (producer, topic, payload) = args;
        producer.send_at(topic, timestamp_ns, payload)?;
        Ok(())
    })
}

/// Reserves a frame of exactly `len` payload bytes in the ring for zero-copy
/// filling.
///
/// On success `*out` receives the reservation and `*buf` a pointer to its
/// `len` writable payload bytes (when `len` is 0 the pointer is non-NULL but
/// must not be dereferenced). The buffer is in shared memory that readers may
/// inspect: write only payload bytes into it, and never read it back expecting
/// your own data to be intact if a hostile producer shares the ring. Complete
/// the reservation with exactly one `rs_commit` (publish) or `rs_discard`
/// (readers skip it); after that the buffer must not be touched.
///
/// Does not allocate: the reservation takes a slot of a fixed per-process
/// pool of `RS_MAX_RESERVATIONS`. Readers cannot pass an uncommitted frame
/// for longer than the sidecar's stall timeout (about 100 ms); after that they
/// skip it as abandoned, so keep the window between reserve and commit short.
///
/// On failure `*out` and `*buf` are set to NULL (each one that is not NULL
/// itself). Errors: as for `rs_send`, plus `RS_ERR_INVALID_ARGUMENT` when
/// `out` or `buf` is NULL, and `RS_ERR_HANDLE_LIMIT` when
/// `RS_MAX_RESERVATIONS` reservations are outstanding (nothing is reserved).
///
/// # Safety
/// `p` must not be closed by another thread during the call; `topic` NULL or
/// NUL-terminated; `out` and `buf` NULL or valid for writing one pointer each.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rs_reserve(
    p: *const rs_producer,
    topic: *const c_char,
    len: usize,
    out: *mut *mut rs_reservation,
    buf: *mut *mut c_void,
) -> rs_status {
    guard(|| {
        // Clear both out-parameters first, so every failure leaves NULL behind.
        if !out.is_null() {
            // SAFETY: non-NULL; the caller guarantees it is writable.
            unsafe { out.write(std::ptr::null_mut()) };
        }
        if !buf.is_null() {
            // SAFETY: as for `out`.
            unsafe { buf.write(std::ptr::null_mut()) };
        }
        if out.is_null() {
            return Err(Failure::InvalidArgument("out is NULL"));
        }
        if buf.is_null() {
            return Err(Failure::InvalidArgument("buf is NULL"));
        }
        // SAFETY: forwarded caller contracts (see each helper's # Safety);
        // the topic is only used inside `reserve`, which copies it.
        let (entry, topic) = unsafe { (producer_entry(p)?, topic_str(topic)?) };
        // The pool slot first: when it is exhausted, nothing is claimed in the
        // ring (a claim would have to be published as a discard).
        let mut slot = RESERVATIONS.vacant().ok_or(Failure::HandleLimit {
            kind: HandleKind::Reservation,
            max: RESERVATIONS.capacity(),
        })?;
        let place = slot.as_mut_ptr();
        // SAFETY: `place` is the vacant slot's memory, owned by this thread until
        // it is published or given back; both fields are written before the
        // entry is read or published, and `&raw mut` creates no reference to
        // the uninitialised entry.
        let result = unsafe {
            (&raw mut (*place).origin).write(entry.origin);
            let result = &raw mut (*place).reservation;
            result.write(entry.producer.reserve(topic, len));
            &mut *result
        };
        // The payload bytes live in the ring mapping, which the reservation
        // keeps mapped (it holds an Arc of the producer's state) until it is
        // committed or discarded; they do not move with the reservation.
        let data = match result {
            Ok(reservation) => reservation.as_mut_ptr().cast::<c_void>(),
            Err(e) => {
                let failure = Failure::from(e.clone());
                // SAFETY: both fields were initialised above; the entry is
                // dropped in place once, and the slot then goes back (dropping
                // `slot`) without ever having been published.
                unsafe { std::ptr::drop_in_place(place) };
                return Err(failure);
            }
        };
        // SAFETY: both fields were initialised above.
        let handle = unsafe { slot.publish() };
        // SAFETY: both checked non-NULL above and writable per the contract.
        unsafe {
            out.write(std::ptr::without_provenance_mut(handle));
            buf.write(data);
        }
        Ok(())
    })
}

/// How a reservation is completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Completion {
    Commit,
    Discard,
}

/// Ends a reservation handle (checking it) and publishes or discards its frame.
fn complete_reservation(r: *mut rs_reservation, how: Completion) -> Result<(), Failure> {
    if r.is_null() {
        return Err(Failure::InvalidArgument("reservation is NULL"));
    }
    let kind = HandleKind::Reservation;
    if let Ok(entry) = check_reservation(r)
        && entry.origin.forked()
    {
        // The parent still owns this claim: a child must neither publish it
        // nor end the handle.
        return Err(forked(kind, &entry.origin, false));
    }
    let entry = RESERVATIONS
        .take(r.addr())
        .map_err(|why| Failure::BadHandle { kind, why })?;
    // Completed where it lies: matching by value moves nothing further.
    match entry.reservation {
        Ok(reservation) if how == Completion::Commit => reservation.commit(),
        Ok(reservation) => reservation.discard(),
        // Only an Ok entry is ever published (rs_reserve gives failed slots back).
        Err(_) => {
            return Err(Failure::BadHandle {
                kind,
                why: handles::HandleError::NotAHandle,
            });
        }
    }
    Ok(())
}

/// Checks a reservation handle without ending it.
fn check_reservation<'a>(r: *mut rs_reservation) -> Result<&'a ReservationEntry, Failure> {
    // SAFETY: a reservation handle is used by one thread at a time (the C
    // contract: complete it exactly once, not concurrently with other calls on
    // it), so nothing takes it while this shared borrow lives.
    unsafe { RESERVATIONS.get(r.addr()) }.map_err(|why| Failure::BadHandle {
        kind: HandleKind::Reservation,
        why,
    })
}

/// Publishes a reserved frame and ends the reservation handle.
///
/// Errors: `RS_ERR_INVALID_ARGUMENT` when `r` is NULL; `RS_ERR_BAD_HANDLE`
/// when it was already committed or discarded, or is not a reservation
/// handle (nothing is published); `RS_ERR_FORKED` in a child on its parent's
/// reservation. After this call `r` and the buffer from `rs_reserve` must not
/// be used.
///
/// # Safety
/// No other thread may use `r` during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rs_commit(r: *mut rs_reservation) -> rs_status {
    guard(|| complete_reservation(r, Completion::Commit))
}

/// Abandons a reserved frame (readers skip it; counted in
/// `rs_stats.discarded`) and ends the reservation handle.
///
/// Errors: as for `rs_commit`. After this call `r` and the buffer from
/// `rs_reserve` must not be used.
///
/// # Safety
/// As for `rs_commit`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rs_discard(r: *mut rs_reservation) -> rs_status {
    guard(|| complete_reservation(r, Completion::Discard))
}

/// Sets the timestamp (ns) a reservation will be published with; by default
/// it is the time of `rs_reserve`.
///
/// Errors: `RS_ERR_INVALID_ARGUMENT` when `r` is NULL; `RS_ERR_BAD_HANDLE`
/// when it was already committed or discarded, or is not a reservation
/// handle; `RS_ERR_FORKED` in a child on its parent's reservation.
///
/// # Safety
/// No other thread may use `r` during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rs_reservation_set_timestamp(
    r: *mut rs_reservation,
    timestamp_ns: u64,
) -> rs_status {
    guard(|| {
        if r.is_null() {
            return Err(Failure::InvalidArgument("reservation is NULL"));
        }
        // SAFETY: by the caller's contract this thread is the handle's only
        // user during the call, so the mutable borrow is unique.
        let found = unsafe { RESERVATIONS.get_mut(r.addr()) };
        let entry = found.map_err(|why| Failure::BadHandle {
            kind: HandleKind::Reservation,
            why,
        })?;
        if entry.origin.forked() {
            return Err(forked(HandleKind::Reservation, &entry.origin, false));
        }
        if let Ok(reservation) = &mut entry.reservation {
            reservation.set_timestamp(timestamp_ns);
        }
        Ok(())
    })
}

/// Copies the producer's counters and connection state into `*out`.
///
/// Set `out->size` to `sizeof(rs_stats)` first (`rs_stats s = RS_STATS_INIT;`).
/// The library writes only the first `out->size` bytes (whole fields) and sets
/// `out->size` to the number of bytes it filled, which is smaller than the
/// caller's size when the library is older than the caller's header.
///
/// Errors: `RS_ERR_INVALID_ARGUMENT` when `p` or `out` is NULL, or
/// `out->size` is smaller than 8; `RS_ERR_BAD_HANDLE`; `RS_ERR_FORKED`.
///
/// # Safety
/// `p` must not be closed by another thread during the call; `out` NULL or
/// valid for reading and writing `out->size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rs_producer_stats(p: *const rs_producer, out: *mut rs_stats) -> rs_status {
    guard(|| {
        // SAFETY: forwarded caller contract.
        let producer = unsafe { producer_ref(p)? };
        if out.is_null() {
            return Err(Failure::InvalidArgument("out is NULL"));
        }
        // SAFETY: non-NULL, and valid for reading its first field (at least
        // the 4-byte `size`) per the contract; read unaligned-safe as a plain
        // u32 through the field's raw pointer.
        let size = unsafe { std::ptr::addr_of!((*out).size).read() };
        if (size as usize) < STATS_MIN_SIZE {
            return Err(Failure::StatsSize { size });
        }
        let s = producer.stats();
        let filled = (size as usize).min(size_of::<rs_stats>());
        let stats = rs_stats {
            size: filled as u32,
            connected: producer.ring_mapped(),
            sidecar_connected: producer.sidecar_connected(),
            reserved: [0; 2],
            sent: s.sent,
            sent_bytes: s.sent_bytes,
            dropped_not_connected: s.dropped_not_connected,
            dropped_too_large: s.dropped_too_large,
            dropped_invalid_topic: s.dropped_invalid_topic,
            discarded: s.discarded,
            reconnects: s.reconnects,
            producer_id: producer.producer_id().map_or(-1, i64::from),
            max_payload: producer.max_payload().map_or(-1, i64::from),
            ring_id: producer.ring_id().unwrap_or(0),
            lost_ring_replaced: s.lost_ring_replaced,
        };
        // SAFETY: `rs_stats` has no padding (asserted at compile time), so its
        // first `filled` bytes are initialised; `out` is valid for `size >=
        // filled` bytes of writes per the contract, and a local cannot overlap
        // the caller's struct. Fields are 8-byte units past the first 8 bytes
        // and older structs end on a field boundary, so only whole fields of
        // the caller's struct are written.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&raw const stats).cast::<u8>(),
                out.cast::<u8>(),
                filled,
            );
        }
        Ok(())
    })
}

/// Waits up to `timeout_ms` milliseconds for a sidecar connection.
///
/// Returns `RS_OK` as soon as a sidecar is connected. Sending never needs
/// this (it never waits); it is for tools and tests that want to know their
/// first frames will land. When the time runs out, the code and the text
/// (`rs_last_error`) say why no sidecar is connected, from the producer's
/// last connection attempt: `RS_ERR_HANDSHAKE_TIMEOUT` (a peer accepted and
/// did not answer), `RS_ERR_NOT_RINGSIDE`, `RS_ERR_REFUSED_*` (e.g. the
/// sidecar is at `--max-producers`), or `RS_ERR_NOT_CONNECTED` (e.g. nothing
/// listens at the path). The producer keeps retrying either way.
/// Errors: also `RS_ERR_INVALID_ARGUMENT` when `p` is NULL,
/// `RS_ERR_BAD_HANDLE`, `RS_ERR_FORKED`.
///
/// # Safety
/// `p` must not be closed by another thread during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rs_producer_wait_connected(
    p: *const rs_producer,
    timeout_ms: u32,
) -> rs_status {
    guard(|| {
        // SAFETY: forwarded caller contract.
        let producer = unsafe { producer_ref(p)? };
        if producer.wait_connected(Duration::from_millis(u64::from(timeout_ms))) {
            return Ok(());
        }
        let last = producer.last_error_kind().zip(producer.last_error());
        Err(Failure::WaitTimedOut {
            ms: timeout_ms,
            last,
        })
    })
}

/// Copies the producer's most recent connection problem (why it is not
/// connected, e.g. "No such file or directory" for a missing socket, or a
/// handshake that timed out) into `buf`, with the same conventions as
/// `rs_last_error`. Returns the full length, or 0 (writing "") when there is
/// none (a successful handshake clears it) or `p` is not a live handle.
///
/// # Safety
/// `p` must not be closed by another thread during the call; `buf` NULL or
/// valid for writing `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rs_producer_connection_error(
    p: *const rs_producer,
    buf: *mut c_char,
    len: usize,
) -> usize {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: forwarded caller contract; a bad handle yields no text.
        let text = unsafe { producer_ref(p) }
            .ok()
            .and_then(Producer::last_error)
            .unwrap_or_default();
        // SAFETY: forwarded caller contract on `buf`/`len`.
        unsafe { status::copy_out(&text, buf, len) };
        text.len()
    }))
    .unwrap_or(0)
}

/// Copies the text of this thread's most recent failure into `buf`.
///
/// Writes at most `len` bytes including a terminating NUL, truncating at a
/// UTF-8 character boundary, and returns the length of the full message in
/// bytes (without the NUL), like `snprintf`: a return value `>= len` means the
/// text was truncated. Pass `buf = NULL` or `len = 0` to only query the length.
/// Returns 0 (and writes "") when no failure was recorded on this thread.
/// Never fails.
///
/// # Safety
/// `buf` must be NULL or valid for writing `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rs_last_error(buf: *mut c_char, len: usize) -> usize {
    catch_unwind(AssertUnwindSafe(|| {
        let text = status::last_text();
        // SAFETY: forwarded caller contract on `buf`/`len`.
        unsafe { status::copy_out(&text, buf, len) };
        text.len()
    }))
    .unwrap_or(0)
}

/// The code of this thread's most recent failure (`RS_OK` if none).
#[unsafe(no_mangle)]
pub extern "C" fn rs_last_error_code() -> rs_status {
    catch_unwind(status::last_code).unwrap_or(rs_status::RS_ERR_PANIC)
}

/// Static, NUL-terminated English description of a status code; unknown
/// codes get a generic text. Never NULL, never to be freed.
/// Async-signal-safe.
#[unsafe(no_mangle)]
pub extern "C" fn rs_strerror(code: i32) -> *const c_char {
    match rs_status::from_code(code) {
        Some(s) => s.description().as_ptr(),
        None => UNKNOWN_STATUS.as_ptr(),
    }
}

/// The library's version as a static string ("MAJOR.MINOR.PATCH"); also
/// stores the numeric parts into whichever of `major`, `minor`, `patch` are
/// not NULL. Compare with `RS_VERSION_MAJOR` to detect a header/library
/// mismatch. Async-signal-safe.
///
/// # Safety
/// Each pointer must be NULL or valid for writing one `uint32_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rs_version(
    major: *mut u32,
    minor: *mut u32,
    patch: *mut u32,
) -> *const c_char {
    const VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => panic!("version contains a NUL"),
        };
    for (ptr, value) in [
        (major, RS_VERSION_MAJOR),
        (minor, RS_VERSION_MINOR),
        (patch, RS_VERSION_PATCH),
    ] {
        if !ptr.is_null() {
            // SAFETY: non-NULL and, per the contract, valid for one u32 write.
            unsafe { ptr.write(value) };
        }
    }
    VERSION.as_ptr()
}

/// Panics inside the library on purpose, catches it at the boundary and
/// returns `RS_ERR_PANIC` with the panic text in `rs_last_error()`.
///
/// It has no other effect. It exists so that C programs and language bindings
/// can test their handling of `RS_ERR_PANIC`, which correct use of the other
/// functions should never produce. (The panic message is also printed to
/// stderr by the Rust runtime.)
///
/// # Panics
///
/// Always, on purpose, inside the library's panic guard: the test that a panic becomes
/// `RS_ERR_PANIC` instead of unwinding into C.
#[unsafe(no_mangle)]
pub extern "C" fn rs_selftest_panic() -> rs_status {
    guard(|| panic!("rs_selftest_panic: deliberate panic to exercise the C boundary guard"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_constants_match_cargo() {
        assert_eq!(
            env!("CARGO_PKG_VERSION"),
            format!("{RS_VERSION_MAJOR}.{RS_VERSION_MINOR}.{RS_VERSION_PATCH}")
        );
    }

    #[test]
    fn topic_limit_matches_client() {
        assert_eq!(RS_MAX_TOPIC_LEN, ringside_ring::MAX_TOPIC_LEN);
    }

    #[test]
    fn status_codes_are_distinct_and_described() {
        let mut seen = std::collections::HashSet::new();
        for s in rs_status::ALL {
            assert!(seen.insert(s as i32), "duplicate code {s:?}");
            assert!(s == rs_status::RS_OK || (s as i32) < 0);
            assert_eq!(rs_status::from_code(s as i32), Some(s));
            assert!(!s.description().to_bytes().is_empty());
        }
        assert_eq!(rs_status::from_code(1), None);
    }
}
