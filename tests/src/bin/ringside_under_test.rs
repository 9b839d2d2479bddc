//! The `ringside` command line, built in this crate so that the tests get it from the same
//! `cargo test` run (a crate's integration tests can only name binaries of their own
//! package). Exactly `ringside_sidecar::run`, as `sidecar/src/main.rs` is.

fn main() -> std::process::ExitCode {
    ringside_sidecar::run()
}
