//! `ringside.Producer`: the Rust producer of `ringside-client`, as a Python class.

use std::path::PathBuf;
use std::sync::{RwLock, RwLockReadGuard};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use ringside_client::ProducerOptions;

use crate::errors;
use crate::payload::with_payload;
use crate::reservation::Reservation;

/// Payloads at least this long are copied into the ring with the interpreter released, so
/// other Python threads run during the copy (and the hash). Releasing and re-taking the GIL
/// cost about as much as a whole small send; at 16 KiB it is a few percent of the send
/// (docs/benchmarks-python.md, "Releasing the GIL").
pub const DETACH_AT: usize = 16 * 1024;

/// A producer: writes frames into the sidecar's shared-memory ring. Never blocks on the
/// sidecar; while none is connected, frames are dropped and counted and `send` returns
/// `False`.
///
/// `Producer(socket=None, *, payload_check=True)`: `socket` defaults to
/// `$RINGSIDE_SOCKET`, then `/tmp/ringside.sock`. Safe to share between threads.
#[pyclass(module = "ringside", name = "Producer", frozen)]
#[derive(Debug)]
pub struct Producer {
    /// `None` once closed. Read-locked for the length of one call; `close` takes it.
    inner: RwLock<Option<ringside_client::Producer>>,
    socket: PathBuf,
}

impl Producer {
    fn inner(&self) -> RwLockReadGuard<'_, Option<ringside_client::Producer>> {
        // A poisoned lock means a panic inside a call; the producer itself is still sound
        // (it holds no invariant across the lock), so keep serving.
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on the open producer, or fails with the closed error.
    fn with_open<R>(&self, f: impl FnOnce(&ringside_client::Producer) -> R) -> PyResult<R> {
        let guard = self.inner();
        guard.as_ref().map(f).ok_or_else(errors::closed)
    }

    /// Publishes `payload` at `timestamp_ns` (now when `None`).
    fn publish(
        &self,
        py: Python<'_>,
        topic: &str,
        payload: &Bound<'_, PyAny>,
        timestamp_ns: Option<u64>,
    ) -> PyResult<bool> {
        // The payload is borrowed before the producer is locked: borrowing may run Python
        // code (a class's __buffer__), which must not happen under the lock.
        let sent = with_payload(payload, |bytes| {
            let write = |producer: &ringside_client::Producer| match timestamp_ns {
                Some(ts) => producer.send_at(topic, ts, bytes),
                None => producer.send(topic, bytes),
            };
            if bytes.len() >= DETACH_AT {
                // Lock inside the detached closure: a thread holding the read lock never
                // waits for the interpreter, so `close` (which takes the write lock while
                // attached) cannot deadlock against it.
                py.detach(|| self.with_open(write))
            } else {
                self.with_open(write)
            }
        })??;
        match sent {
            Ok(()) => Ok(true),
            Err(err) => match errors::send_error(err) {
                None => Ok(false),
                Some(exc) => Err(exc),
            },
        }
    }
}

#[pymethods]
impl Producer {
    /// Connects to the sidecar (or starts trying to, in the background).
    ///
    /// Blocks at most for one handshake with a sidecar that accepts and does not answer
    /// (2 s), with the GIL released. Raises `RefusedError` when a sidecar refuses this
    /// process and `ConnectError` when the socket can never work.
    #[new]
    #[pyo3(signature = (socket = None, *, payload_check = true))]
    fn new(py: Python<'_>, socket: Option<PathBuf>, payload_check: bool) -> PyResult<Producer> {
        let socket = socket.unwrap_or_else(ringside_client::socket_path_from_env);
        let options = ProducerOptions { payload_check };
        let producer = py
            .detach(|| ringside_client::Producer::connect_with(&socket, options))
            .map_err(|err| errors::connect_error(py, err))?;
        Ok(Producer {
            inner: RwLock::new(Some(producer)),
            socket,
        })
    }

    /// Publishes one frame stamped now. `payload` is any object with the buffer protocol
    /// (`bytes`, `bytearray`, `memoryview`, `array`, numpy arrays, ...); its bytes are read in
    /// place, never copied into a Python object.
    ///
    /// Returns `True` when the frame was published, `False` when it was dropped because no
    /// sidecar was ever reached (counted in `stats().dropped_not_connected`). Raises
    /// `ValueError` for an empty or over-long topic or a payload over the ring's maximum.
    fn send(&self, py: Python<'_>, topic: &str, payload: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.publish(py, topic, payload, None)
    }

    /// `send` with the caller's timestamp (nanoseconds since the Unix epoch).
    fn send_at(
        &self,
        py: Python<'_>,
        topic: &str,
        payload: &Bound<'_, PyAny>,
        timestamp_ns: u64,
    ) -> PyResult<bool> {
        self.publish(py, topic, payload, Some(timestamp_ns))
    }

    /// Reserves `size` payload bytes inside the ring, to be filled in place:
    ///
    /// ```python
    /// with producer.reserve("metrics", 16) as buf:   # buf: writable memoryview
    ///     struct.pack_into("<qq", buf, 0, a, b)
    /// ```
    ///
    /// Leaving the block commits the frame; an exception discards it. See `Reservation`.
    #[pyo3(signature = (topic, size, *, timestamp_ns = None))]
    fn reserve(
        &self,
        topic: &str,
        size: usize,
        timestamp_ns: Option<u64>,
    ) -> PyResult<Reservation> {
        self.with_open(|producer| Reservation::new(producer, topic, size, timestamp_ns))?
    }

    /// The producer's counters.
    fn stats(&self) -> PyResult<ProducerStats> {
        self.with_open(|producer| ProducerStats::from(producer.stats()))
    }

    /// True once a ring is mapped: frames land in it, even while the sidecar restarts.
    #[getter]
    fn ring_mapped(&self) -> PyResult<bool> {
        self.with_open(|producer| producer.ring_mapped())
    }

    /// True while a sidecar is connected right now.
    #[getter]
    fn sidecar_connected(&self) -> PyResult<bool> {
        self.with_open(|producer| producer.sidecar_connected())
    }

    /// The ring's largest payload in bytes, once connected (else `None`).
    #[getter]
    fn max_payload(&self) -> PyResult<Option<u32>> {
        self.with_open(|producer| producer.max_payload())
    }

    /// The id the sidecar gave this producer (its pid), once connected.
    #[getter]
    fn producer_id(&self) -> PyResult<Option<u32>> {
        self.with_open(|producer| producer.producer_id())
    }

    /// The id of the mapped ring, once connected.
    #[getter]
    fn ring_id(&self) -> PyResult<Option<u64>> {
        self.with_open(|producer| producer.ring_id())
    }

    /// The last connection problem, for diagnostics (`None` when there was none).
    #[getter]
    fn last_error(&self) -> PyResult<Option<String>> {
        self.with_open(|producer| producer.last_error())
    }

    /// The socket path this producer connects to.
    #[getter]
    fn socket(&self) -> PathBuf {
        self.socket.clone()
    }

    /// True once `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner().is_none()
    }

    /// Waits until a sidecar is connected or `timeout` seconds pass; returns whether it is.
    /// For tools and tests: the write path never needs it. The GIL is released meanwhile.
    #[pyo3(signature = (timeout))]
    fn wait_connected(&self, py: Python<'_>, timeout: f64) -> PyResult<bool> {
        let timeout = Duration::try_from_secs_f64(timeout.max(0.0)).map_err(|_| {
            pyo3::exceptions::PyValueError::new_err(format!(
                "timeout {timeout} is not a number of seconds"
            ))
        })?;
        let producer = self.with_open(Clone::clone)?;
        Ok(py.detach(|| producer.wait_connected(timeout)))
    }

    /// Disconnects from the sidecar and stops the background thread. Later calls raise
    /// `ValueError`. Reservations still open keep their frame and commit normally.
    fn close(&self, py: Python<'_>) {
        let taken = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        // Dropping the last handle joins the background thread (up to 200 ms).
        py.detach(move || drop(taken));
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self) -> String {
        let guard = self.inner();
        let state = match guard.as_ref() {
            None => "closed".to_owned(),
            Some(p) if p.sidecar_connected() => "connected".to_owned(),
            Some(p) if p.ring_mapped() => "sidecar away, writing into its ring".to_owned(),
            Some(_) => "not connected yet".to_owned(),
        };
        format!(
            "<ringside.Producer socket={:?} {state}>",
            self.socket.display().to_string()
        )
    }
}

/// A snapshot of a producer's counters (`Producer.stats()`).
#[pyclass(module = "ringside", name = "ProducerStats", frozen, get_all, eq)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStats {
    /// Frames published.
    sent: u64,
    /// Payload bytes published.
    sent_bytes: u64,
    /// Frames dropped because no sidecar was ever reached (`send` returned `False`).
    dropped_not_connected: u64,
    /// Frames refused for a payload over the ring's maximum (`ValueError`).
    dropped_too_large: u64,
    /// Frames refused for an empty or over-long topic (`ValueError`).
    dropped_invalid_topic: u64,
    /// Reservations discarded (an exception in the `with` block, or `discard()`).
    discarded: u64,
    /// Successful reconnects to a sidecar after the first connection.
    reconnects: u64,
}

impl From<ringside_client::ProducerStats> for ProducerStats {
    fn from(s: ringside_client::ProducerStats) -> Self {
        ProducerStats {
            sent: s.sent,
            sent_bytes: s.sent_bytes,
            dropped_not_connected: s.dropped_not_connected,
            dropped_too_large: s.dropped_too_large,
            dropped_invalid_topic: s.dropped_invalid_topic,
            discarded: s.discarded,
            reconnects: s.reconnects,
        }
    }
}

impl ProducerStats {
    fn fields(&self) -> [(&'static str, u64); 7] {
        [
            ("sent", self.sent),
            ("sent_bytes", self.sent_bytes),
            ("dropped_not_connected", self.dropped_not_connected),
            ("dropped_too_large", self.dropped_too_large),
            ("dropped_invalid_topic", self.dropped_invalid_topic),
            ("discarded", self.discarded),
            ("reconnects", self.reconnects),
        ]
    }
}

#[pymethods]
impl ProducerStats {
    /// The counters as a `dict`.
    fn as_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (name, value) in self.fields() {
            dict.set_item(name, value)?;
        }
        Ok(dict)
    }

    fn __repr__(&self) -> String {
        let fields: Vec<String> = self
            .fields()
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        format!("ProducerStats({})", fields.join(", "))
    }
}
