//! The native part of the `ringside` Python package (`ringside._native`): the producer,
//! wrapping `ringside-client` with PyO3. The subscriber is pure Python (grpcio) in
//! `python/ringside/`. Built into a wheel by maturin: see `python/README.md`.

mod errors;
mod payload;
mod producer;
mod reservation;

use pyo3::prelude::*;

/// ringside's producer, written in Rust (`ringside-client`).
#[pymodule]
mod _native {
    #[pymodule_export]
    use super::errors::{ConnectError, RefusedError, RingsideError};
    #[pymodule_export]
    use super::producer::{Producer, ProducerStats};
    #[pymodule_export]
    use super::reservation::Reservation;

    use super::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("DEFAULT_SOCKET_PATH", ringside_client::DEFAULT_SOCKET_PATH)?;
        m.add("SOCKET_ENV", ringside_client::SOCKET_ENV)?;
        m.add("MAX_TOPIC_LEN", ringside_client::MAX_TOPIC_LEN)?;
        m.add("DETACH_AT", super::producer::DETACH_AT)?;
        m.add("__version__", env!("CARGO_PKG_VERSION"))?;
        Ok(())
    }

    /// The socket path a `Producer()` without arguments uses: `$RINGSIDE_SOCKET`, else
    /// `/tmp/ringside.sock`.
    #[pyfunction]
    fn default_socket_path() -> std::path::PathBuf {
        ringside_client::socket_path_from_env()
    }
}
