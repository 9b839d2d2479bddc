//! `ringside.Reservation`: a frame being filled in place, as a context manager whose target
//! is a writable `memoryview` straight into the ring.
//!
//! Soundness: Python code must never write into the ring after the frame was committed (it
//! would change a published frame under readers) nor after the producer unmapped the ring
//! (a crash). So:
//! - the object exports its buffer (the buffer protocol) only while the frame is open, and
//!   counts the exports it handed out;
//! - on exit it releases the `memoryview` it created, then commits only if no export is
//!   left. An export still alive (a slice of the view, a numpy array over it, ...) means
//!   someone can still write into the frame: the frame is discarded and `BufferError`
//!   raised, as `mmap.close()` refuses while views exist;
//! - the object holds a handle on the producer, so the ring stays mapped while any
//!   export lives, even past `Producer.close()`: a write through a leaked view can never
//!   touch unmapped memory.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use pyo3::exceptions::{PyBufferError, PyValueError};
use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyMemoryView;

use crate::errors;

/// The largest payload any ring accepts (ring format: 64 MiB). A reservation made while no
/// sidecar was ever reached gets a private scratch buffer of the asked size; this bounds it.
pub const MAX_PAYLOAD_LIMIT: usize = 64 * 1024 * 1024;

/// Where the reserved bytes are: inside the ring, or in a private scratch allocation.
#[derive(Debug)]
struct Bytes {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: `Bytes` is an address range, not a reference: it is only turned into memory
// access by Python through the buffer protocol while the interpreter is attached, and the
// memory it names (the shared ring mapping, or the scratch allocation owned by the same
// Reservation) outlives every export (see the module docs).
unsafe impl Send for Bytes {}
// SAFETY: as above; the struct itself is never mutated after creation.
unsafe impl Sync for Bytes {}

#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "stored once, inline in the Python object: boxing would add an allocation per reservation"
)]
enum State {
    /// The frame is claimed in the ring and not yet published.
    Open(ringside_client::Reservation),
    /// No sidecar was ever reached: the bytes go to a scratch buffer and are dropped (the
    /// drop was counted in the producer's `dropped_not_connected`).
    Scratch,
    /// Being committed or discarded: no new exports.
    Closing,
    /// Published (`True`) or discarded/dropped (`False`).
    Done(bool),
}

/// A frame reserved in the ring (`Producer.reserve(topic, size)`), filled in place.
///
/// Use it as a context manager: the target is a writable `memoryview` of exactly `size`
/// bytes inside the ring. Leaving the block normally publishes the frame; leaving it with
/// an exception publishes a discard record instead (readers skip it; counted in
/// `stats().discarded`). `commit()` and `discard()` do the same without a `with`.
///
/// After the frame is finished the `memoryview` is released: using it raises `ValueError`.
/// A view derived from it that is still alive at exit (a slice, a numpy array) makes the
/// commit fail with `BufferError` and the frame be discarded: nothing can write into a
/// published frame.
///
/// While no sidecar was ever reached, the memoryview is a private scratch buffer and the
/// frame is dropped (counted in `stats().dropped_not_connected`), so code runs the same way
/// connected or not; `published` then ends `False`.
#[pyclass(module = "ringside", name = "Reservation", frozen)]
#[derive(Debug)]
pub struct Reservation {
    state: Mutex<State>,
    bytes: Bytes,
    /// Owns the scratch allocation (`None` for a frame in the ring).
    scratch: Option<NonNull<[u8]>>,
    /// The memoryview handed out by `__enter__`.
    view: Mutex<Option<Py<PyMemoryView>>>,
    /// Buffer exports alive (the memoryview's, and any made with `memoryview(r)`).
    exports: AtomicUsize,
    /// Keeps the ring mapped while an export may still point into it.
    _producer: ringside_client::Producer,
}

// SAFETY: `scratch` is the allocation `bytes` points into, owned by this object and freed
// only in Drop; nothing else makes the struct thread-bound.
unsafe impl Send for Reservation {}
// SAFETY: every mutable part is behind a Mutex or an atomic; `scratch` is only read in Drop.
unsafe impl Sync for Reservation {}

impl Reservation {
    /// Claims `size` bytes for `topic` (or a scratch buffer while not connected).
    pub fn new(
        producer: &ringside_client::Producer,
        topic: &str,
        size: usize,
        timestamp_ns: Option<u64>,
    ) -> PyResult<Reservation> {
        match producer.reserve(topic, size) {
            Ok(mut reservation) => {
                if let Some(ts) = timestamp_ns {
                    reservation.set_timestamp(ts);
                }
                let payload: &mut [u8] = &mut reservation;
                let bytes = Bytes {
                    ptr: NonNull::new(payload.as_mut_ptr()).unwrap_or(NonNull::dangling()),
                    len: payload.len(),
                };
                Ok(Reservation::with(
                    State::Open(reservation),
                    bytes,
                    None,
                    producer,
                ))
            }
            Err(err) => match errors::send_error(err) {
                Some(exc) => Err(exc),
                None => Reservation::scratch(producer, size),
            },
        }
    }

    fn scratch(producer: &ringside_client::Producer, size: usize) -> PyResult<Reservation> {
        if size > MAX_PAYLOAD_LIMIT {
            return Err(PyValueError::new_err(format!(
                "payload of {size} bytes exceeds the largest payload any ring allows ({MAX_PAYLOAD_LIMIT} bytes); nothing was published"
            )));
        }
        let raw = NonNull::from(Box::leak(vec![0u8; size].into_boxed_slice()));
        let bytes = Bytes {
            ptr: raw.cast::<u8>(),
            len: size,
        };
        Ok(Reservation::with(
            State::Scratch,
            bytes,
            Some(raw),
            producer,
        ))
    }

    fn with(
        state: State,
        bytes: Bytes,
        scratch: Option<NonNull<[u8]>>,
        producer: &ringside_client::Producer,
    ) -> Reservation {
        Reservation {
            state: Mutex::new(state),
            bytes,
            scratch,
            view: Mutex::new(None),
            exports: AtomicUsize::new(0),
            _producer: producer.clone(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing here panics while holding the lock; if it did, the state is still valid.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take_view(&self) -> Option<Py<PyMemoryView>> {
        self.view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// Finishes the frame: publishes it when `publish` and no export outlives the block,
    /// else discards it. Returns `Err(BufferError)` when an export was still alive and a
    /// publish was asked for.
    fn finish(&self, py: Python<'_>, publish: bool) -> PyResult<()> {
        let previous = std::mem::replace(&mut *self.state(), State::Closing);
        let reservation = match previous {
            State::Open(reservation) => Some(reservation),
            State::Scratch => None,
            done @ (State::Done(_) | State::Closing) => {
                *self.state() = done;
                return Ok(());
            }
        };
        // Release our memoryview (its `release` fails if something holds a buffer of the
        // view itself), then count what is left: slices and arrays made from the view hold
        // exports of ours until they die.
        let mut view_held = false;
        if let Some(view) = self.take_view() {
            view_held = view.bind(py).call_method0(intern!(py, "release")).is_err();
        }
        let leaked = view_held || self.exports.load(Ordering::Acquire) > 0;
        let published = match reservation {
            Some(reservation) if publish && !leaked => {
                reservation.commit();
                true
            }
            Some(reservation) => {
                reservation.discard();
                false
            }
            None => false,
        };
        *self.state() = State::Done(published);
        if leaked && publish {
            return Err(PyBufferError::new_err(
                "a view of the reservation's memory is still alive (a slice of the memoryview, or an array or memoryview made from it); the frame was discarded, since the view could still change it. Release such views (del, or .release()) before leaving the with block",
            ));
        }
        Ok(())
    }
}

#[pymethods]
impl Reservation {
    /// Returns the writable `memoryview` of the reserved bytes.
    fn __enter__(slf: &Bound<'_, Self>) -> PyResult<Py<PyMemoryView>> {
        let this = slf.get();
        let mut slot = this
            .view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(view) = slot.as_ref() {
            return Ok(view.clone_ref(slf.py()));
        }
        let view = PyMemoryView::from(slf.as_any())?.unbind();
        *slot = Some(view.clone_ref(slf.py()));
        Ok(view)
    }

    /// Commits the frame, or discards it when the block raised. Never suppresses the
    /// exception.
    #[pyo3(signature = (exc_type, _exc = None, _tb = None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyAny>>,
        _exc: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let failed = exc_type.is_some_and(|t| !t.is_none());
        self.finish(py, !failed)?;
        Ok(false)
    }

    /// Publishes the frame. Raises `BufferError` (and discards the frame) if a view of its
    /// memory is still alive. Does nothing if the frame was already finished.
    fn commit(&self, py: Python<'_>) -> PyResult<()> {
        self.finish(py, true)
    }

    /// Publishes a discard record instead of the frame (readers skip it).
    fn discard(&self, py: Python<'_>) -> PyResult<()> {
        self.finish(py, false)
    }

    /// `None` while open; then `True` if the frame was published, `False` if it was
    /// discarded or dropped (no sidecar was ever reached).
    #[getter]
    fn published(&self) -> Option<bool> {
        match *self.state() {
            State::Done(published) => Some(published),
            State::Open(_) | State::Scratch | State::Closing => None,
        }
    }

    /// True when the bytes go into the ring (False: no sidecar was ever reached, and the
    /// frame will be dropped).
    #[getter]
    fn in_ring(&self) -> bool {
        self.scratch.is_none()
    }

    fn __len__(&self) -> usize {
        self.bytes.len
    }

    fn __repr__(&self) -> String {
        let state = match *self.state() {
            State::Open(_) => "open",
            State::Scratch => "open (not connected: will be dropped)",
            State::Closing => "closing",
            State::Done(true) => "published",
            State::Done(false) => "discarded",
        };
        format!("<ringside.Reservation {} bytes, {state}>", self.bytes.len)
    }

    /// The buffer protocol: the reserved bytes, writable, while the frame is open.
    ///
    /// # Safety
    /// Called by the interpreter with a valid `view` to fill.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: std::os::raw::c_int,
    ) -> PyResult<()> {
        let this = slf.get();
        let state = this.state();
        if !matches!(*state, State::Open(_) | State::Scratch) {
            return Err(PyBufferError::new_err(
                "the reservation is finished (committed or discarded): its memory belongs to the ring now",
            ));
        }
        let len = isize::try_from(this.bytes.len)
            .map_err(|_| PyBufferError::new_err("reservation too large for a buffer"))?;
        // SAFETY: `view` is the interpreter's buffer to fill; `bytes` names `len` writable
        // bytes that stay valid while the export lives (the export holds a reference to
        // `slf`, which keeps the ring mapped through `_producer`, or owns the scratch
        // allocation). FillInfo takes its own reference to `slf` for `view.obj`.
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                this.bytes.ptr.as_ptr().cast(),
                len,
                0,
                flags,
            )
        };
        if rc != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        this.exports.fetch_add(1, Ordering::AcqRel);
        drop(state);
        Ok(())
    }

    /// # Safety
    /// Called by the interpreter once per successful `__getbuffer__`.
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        self.exports.fetch_sub(1, Ordering::AcqRel);
    }

    /// The memoryview refers back to this object (its export): let the cycle collector see
    /// the cycle, for a reservation entered and then abandoned without `__exit__`.
    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        if let Ok(slot) = self.view.try_lock()
            && let Some(view) = slot.as_ref()
        {
            visit.call(view)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        drop(self.take_view());
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(raw) = self.scratch.take() {
            // SAFETY: `raw` came from Box::leak in `scratch` and is freed only here; no
            // export is alive (each holds a reference to this object, which is being
            // dropped).
            drop(unsafe { Box::from_raw(raw.as_ptr()) });
        }
    }
}
