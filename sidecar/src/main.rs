//! The `ringside` binary: the sidecar and its tools. See `ringside --help` and the
//! library's documentation.

fn main() -> std::process::ExitCode {
    ringside_sidecar::run()
}
