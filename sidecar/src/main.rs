//! `ringside`: the sidecar binary. See `ringside --help`.
//!
//! - `serve`: own the shared-memory ring, admit producers on a Unix socket,
//!   and serve gRPC subscribers straight from the ring in bounded memory.
//! - `load`, `tail`, `stats`: tools around it.
//! - `export`: publish the ring into NATS JetStream (the `ringside-export` crate).

mod auth;
mod batch;
mod budget;
mod cgroup;
mod commands;
mod config;
mod filter;
mod limits;
mod logging;
mod metrics;
mod observer;
mod request;
mod service;
mod state;
mod subscribe;
mod wake;
mod wire;

use clap::Parser;
use config::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => commands::serve::run(*args),
        Command::Load(args) => commands::load::run(args),
        Command::Tail(args) => commands::tail::run(args),
        Command::Stats(args) => commands::stats::run(args),
        Command::Export(args) => commands::export::run(*args),
    }
}
