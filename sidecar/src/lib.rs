//! # ringside
//!
//! The sidecar as a library, and the `ringside` binary on top of it (see `ringside --help`):
//!
//! - `serve`: own the shared-memory ring, admit producers on a Unix socket, and serve gRPC
//!   subscribers straight from the ring in bounded memory.
//! - `load`, `tail`, `stats`: tools around it.
//!
//! The binary is [`run`] with the process's arguments. Tests and fuzz targets use the
//! modules directly: request decoding ([`request`], [`filter`]), the batch encoder
//! ([`batch`]), the memory budget ([`budget`]) and the cgroup limit ([`cgroup`]).

#![deny(missing_docs)]
#![warn(clippy::missing_errors_doc, clippy::missing_panics_doc)]
pub mod auth;
pub mod batch;
pub mod budget;
pub mod cgroup;
pub mod commands;
pub mod config;
pub mod console;
pub mod filter;
pub mod health;
pub mod inflight;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod observer;
pub mod reflection;
pub mod request;
pub mod service;
pub mod share;
pub mod state;
pub mod subscribe;
pub mod wake;
pub mod wire;

use clap::Parser;
use config::{Cli, Command};
use std::process::ExitCode;

/// Runs the `ringside` command line with the process's arguments: what the binary does.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => commands::serve::run(*args),
        Command::Load(args) => commands::load::run(args),
        Command::Tail(args) => commands::tail::run(args),
        Command::Stats(args) => commands::stats::run(args),
        Command::Export(args) => commands::export::run(*args),
    }
}
