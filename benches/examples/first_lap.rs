//! The producer's first lap of a fresh ring: each `send` of 1 KiB timed until the 64 MiB
//! default ring has been written once, so every send lands on memory no one wrote
//! before. Prints the host's start time, the lap's total, the median, p99, p99.9 and max ns
//! per send, and the sends over 10 µs, for a ring backed with memory at creation (the
//! default, [`ringside_ring::HostOptions::populate_ring`]) and, with `--no-populate`, for
//! one whose pages come when the producer first writes them:
//!
//! ```text
//! cargo build --profile bench -p ringside-benches --example first_lap
//! target/release/examples/first_lap; target/release/examples/first_lap --no-populate
//! ```

use std::hint::black_box;
use std::time::Instant;

use ringside_benches::fixture::{Fixture, TOPIC, bench_ring_config, payload};

fn main() {
    let config = bench_ring_config();
    let started = Instant::now();
    let populate = !std::env::args().any(|a| a == "--no-populate");
    let fx = Fixture::start_cold(config, populate).expect("ring host and producer");
    let start_ms = started.elapsed().as_secs_f64() * 1e3;
    let data = payload(1024);
    // Frame header and alignment: well over a lap with this many sends.
    let sends = (config.capacity as usize / data.len()).max(1);
    let mut ns: Vec<u64> = Vec::with_capacity(sends);
    let lap = Instant::now();
    for _ in 0..sends {
        let t = Instant::now();
        black_box(fx.producer.send(TOPIC, black_box(&data)).is_ok());
        ns.push(t.elapsed().as_nanos() as u64);
    }
    let total_ms = lap.elapsed().as_secs_f64() * 1e3;
    let over_10us = ns.iter().filter(|&&v| v > 10_000).count();
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() - 1) as f64 * q) as usize];
    println!(
        "ring {} MiB ({}), host start {start_ms:.1} ms; first lap: {sends} sends of 1 KiB in {total_ms:.1} ms; per send p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns; {over_10us} over 10 µs",
        config.capacity >> 20,
        if populate {
            "populated"
        } else {
            "not populated"
        },
        at(0.5),
        at(0.99),
        at(0.999),
        ns[ns.len() - 1],
    );
}
