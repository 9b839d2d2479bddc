//! A sidecar stand-in: runs a `RingHost` on `--socket PATH` with a ring of `--capacity`
//! bytes (`--max-payload`, `--adopt-grace-ms`), prints
//! `RING id=.. adopted=0|1 tail_seq=..`, then serves until stdin reaches EOF or it is killed.
//! On the line `stats` it prints `STATS connected=.. admitted=.. refused=.. tail_seq=..`.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::time::Duration;

use ringside_ring::{HostOptions, RingConfig, RingHost};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts: HashMap<String, String> = args
        .chunks(2)
        .filter_map(|pair| match pair {
            [k, v] => Some((k.trim_start_matches("--").to_owned(), v.clone())),
            _ => None,
        })
        .collect();
    let num = |key: &str, default: u64| -> u64 {
        opts.get(key)
            .map(|v| v.parse().expect("number"))
            .unwrap_or(default)
    };
    let host = RingHost::start(HostOptions {
        socket_path: opts.get("socket").expect("--socket PATH").into(),
        ring: RingConfig {
            capacity: num("capacity", 1 << 20),
            max_payload: num("max-payload", 4096) as u32,
        },
        adopt_grace: Duration::from_millis(num("adopt-grace-ms", 0)),
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
