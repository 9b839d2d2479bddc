//! Interleaved A/B of `send` against `reserve_borrowed` + fill + `commit` (64 B), in one
//! process: short blocks alternate between the two paths, so load drift on a shared machine
//! hits both alike. Prints the median ns per operation of each path over all blocks and the
//! median of the per-block ratio zero-copy ÷ send.
//!
//! ```text
//! cargo build --profile bench -p ringside-benches --example zc_ab && target/release/examples/zc_ab
//! ```

use std::hint::black_box;
use std::time::Instant;

use ringside_benches::fixture::{Fixture, TOPIC, bench_ring_config, payload};
use ringside_client::Producer;

/// Operations per block.
const BLOCK: u64 = 20_000;
/// Blocks per path.
const BLOCKS: usize = 300;

#[inline(never)]
fn sends(producer: &Producer, data: &[u8], n: u64) {
    for _ in 0..n {
        black_box(producer.send(TOPIC, black_box(data)).is_ok());
    }
}

#[inline(never)]
fn zero_copy(producer: &Producer, data: &[u8], n: u64) {
    for _ in 0..n {
        if let Ok(mut frame) = producer.reserve_borrowed(TOPIC, data.len()) {
            frame.copy_from_slice(black_box(data));
            frame.commit();
        }
    }
}

fn time(f: impl Fn(&Producer, &[u8], u64), producer: &Producer, data: &[u8]) -> f64 {
    let start = Instant::now();
    f(producer, data, BLOCK);
    start.elapsed().as_nanos() as f64 / BLOCK as f64
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    (values[(n - 1) / 2] + values[n / 2]) / 2.0
}

fn quartiles(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    (at(0.25), at(0.5), at(0.75))
}

fn main() {
    let fx = Fixture::start(bench_ring_config()).expect("ring host and producer");
    let data = payload(64);
    for (name, producer) in [("checked", &fx.producer), ("unchecked", &fx.unchecked)] {
        // Warm up both paths (and lap the ring once, so every line has been written).
        for _ in 0..30 {
            time(sends, producer, &data);
            time(zero_copy, producer, &data);
        }
        let (mut send_ns, mut zc_ns, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
        for block in 0..BLOCKS {
            let (s, z) = if block % 2 == 0 {
                let s = time(sends, producer, &data);
                (s, time(zero_copy, producer, &data))
            } else {
                let z = time(zero_copy, producer, &data);
                (time(sends, producer, &data), z)
            };
            send_ns.push(s);
            zc_ns.push(z);
            ratio.push(z / s);
        }
        let (s25, s50, s75) = quartiles(&mut send_ns);
        let (z25, z50, z75) = quartiles(&mut zc_ns);
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "{name}: send/64 {s50:.1} ns [{s25:.1}, {s75:.1}]  reserve_borrowed_commit/64 {z50:.1} ns [{z25:.1}, {z75:.1}]  zc/send per block: median {:.3}  ({BLOCKS} blocks of {BLOCK}; load {})",
            median(&mut ratio),
            load.split_whitespace().next().unwrap_or("?"),
        );
    }
}
