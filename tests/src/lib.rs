//! Shared code of the ringside end-to-end tests: helpers for the ring tests
//! (`ring_support`) and the sidecar tests.
pub mod chaos_support;
pub mod memory;
pub mod ring_support;
