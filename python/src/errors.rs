//! The Python exceptions, and how each Rust error becomes one. Every message is the Rust
//! error's own text, so Python users read what Rust and C users read.

use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use ringside_client::{ConnectError as RustConnectError, SendError};

pyo3::create_exception!(
    ringside,
    RingsideError,
    PyException,
    "Base class of the errors this package raises (besides ValueError and TypeError for bad arguments)."
);
pyo3::create_exception!(
    ringside,
    ConnectError,
    RingsideError,
    "The producer cannot work with the socket it was given, and retrying will not help: a protocol mismatch, or a path that is not a ringside socket. A missing sidecar is not an error: the producer connects in the background."
);
pyo3::create_exception!(
    ringside,
    RefusedError,
    ConnectError,
    "The sidecar answered and refused this producer (uid not allowed, too many producers, version mismatch, ...). Attributes: `reason` (short text) and `detail` (the sidecar's explanation)."
);

/// A connect failure as a Python exception: [`RefusedError`] for a refusal (with `reason`
/// and `detail` attributes), [`ConnectError`] for the rest.
pub fn connect_error(py: Python<'_>, err: RustConnectError) -> PyErr {
    let text = err.to_string();
    match err {
        RustConnectError::Refused { reason, detail } => {
            let exc = RefusedError::new_err(text);
            let value = exc.value(py);
            // Attributes on a fresh exception instance; setting them cannot fail short of
            // memory exhaustion, and the exception is still right without them.
            let _ = value.setattr("reason", reason.to_string());
            let _ = value.setattr("detail", detail);
            exc
        }
        _ => ConnectError::new_err(text),
    }
}

/// A send or reserve refusal as `ValueError` (bad topic, payload too large), or `None` for
/// [`SendError::NotConnected`], which is not an error for a Python producer: the frame is
/// dropped and counted, and `send` returns `False`. A refusal this module does not know
/// yet becomes a [`RingsideError`] with the Rust text.
pub fn send_error(err: SendError) -> Option<PyErr> {
    match err {
        SendError::NotConnected => None,
        SendError::TooLarge { .. } | SendError::InvalidTopic { .. } => {
            Some(PyValueError::new_err(err.to_string()))
        }
        #[allow(unreachable_patterns)]
        _ => Some(RingsideError::new_err(err.to_string())),
    }
}

/// The error for a call on a closed producer (`ValueError`, like I/O on a closed file).
pub fn closed() -> PyErr {
    PyValueError::new_err("the producer is closed; create a new ringside.Producer")
}
