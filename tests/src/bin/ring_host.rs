//! A sidecar stand-in: runs a `RingHost` on `--socket PATH` with a ring of `--capacity`
//! bytes (`--max-payload`, `--adopt-grace-ms`), prints
//! `RING id=.. adopted=0|1 tail_seq=..`, then serves until stdin reaches EOF or it is killed.
//! On the line `stats` it prints `STATS connected=.. admitted=.. refused=.. tail_seq=..`.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

use ringside_ring::{HostOptions, RingConfig, RingHost};

use clap::Parser;

/// Command line.
#[derive(Debug, Parser)]
struct Args {
    /// Socket producers connect to.
    #[arg(long)]
    socket: PathBuf,
    /// Ring data capacity in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    capacity: u64,
    /// Largest payload.
    #[arg(long, default_value_t = 4096)]
    max_payload: u32,
    /// How long to wait for a producer to offer its ring for adoption, in ms.
    #[arg(long, default_value_t = 0)]
    adopt_grace_ms: u64,
}

fn main() {
    let args = Args::parse();
    let host = RingHost::start(HostOptions {
        socket_path: args.socket,
        ring: RingConfig {
            capacity: args.capacity,
            max_payload: args.max_payload,
        },
        adopt_grace: Duration::from_millis(args.adopt_grace_ms),
        ..HostOptions::default()
    })
    .expect("host starts");
    let ring = host.ring();
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "RING id={} adopted={} tail_seq={}",
        ring.ring_id(),
        u8::from(host.adopted()),
        ring.tail().seq
    );
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() == "stats" {
            let stats = host.stats();
            let _ = writeln!(
                out,
                "STATS connected={} admitted={} refused={} tail_seq={}",
                stats.producers_connected,
                stats.producers_admitted,
                stats.producers_refused,
                ring.tail().seq
            );
            let _ = out.flush();
        }
    }
    host.shutdown();
}
