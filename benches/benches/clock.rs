//! How far the producer's calibrated TSC clock (`ringside_client::clock::now_ns`, what
//! `send` stamps frames with) is from `clock_gettime(CLOCK_REALTIME)`, over time and across
//! its recalibrations (issue 13).
//!
//! ```text
//! cargo bench -p ringside-benches --bench clock                 # 20 s
//! cargo bench -p ringside-benches --bench clock -- --seconds 60
//! ```
//!
//! Each sample reads CLOCK_REALTIME, the TSC clock, and CLOCK_REALTIME again; the offset is
//! the TSC reading minus the midpoint of the two realtime readings. Samples whose realtime
//! pair is more than 2 µs apart (the thread was preempted or interrupted between them) are
//! not used. Reported per second of the run, so drift between recalibrations (every second)
//! would show as a growing offset, and over the whole run.

use std::time::{Duration, Instant};

use ringside_client::clock::{
    ClockSource, RECALIBRATION_INTERVAL, STEP_THRESHOLD, now_ns, realtime_ns, source,
};

/// Widest realtime pair a sample may have.
const MAX_PAIR_NS: u64 = 2_000;
/// Samples kept per second (the rest are skipped: the distribution does not need more).
const PER_SECOND: usize = 200_000;

fn percentile(sorted: &[i64], q: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(20);
    // Let the first calibration finish (10 ms).
    let start = Instant::now();
    while source() == ClockSource::Calibrating && start.elapsed() < Duration::from_secs(1) {
        now_ns();
    }
    println!(
        "clock source: {:?}; recalibration every {:?}, steps beyond {:?}",
        source(),
        RECALIBRATION_INTERVAL,
        STEP_THRESHOLD
    );
    println!("| second | samples | p50 ns | p99 ns | min ns | max ns |");
    println!("|---|---|---|---|---|---|");
    let mut all: Vec<i64> = Vec::with_capacity(PER_SECOND * seconds as usize);
    let mut last_ours = 0u64;
    let mut backwards = 0u64;
    for second in 0..seconds {
        let mut offsets: Vec<i64> = Vec::with_capacity(PER_SECOND);
        let until = Instant::now() + Duration::from_secs(1);
        let mut rejected = 0u64;
        while Instant::now() < until {
            let before = realtime_ns();
            let ours = now_ns();
            let after = realtime_ns();
            if ours < last_ours {
                backwards += 1;
            }
            last_ours = ours;
            if after.wrapping_sub(before) > MAX_PAIR_NS {
                rejected += 1;
                continue;
            }
            if offsets.len() < PER_SECOND {
                let mid = before + (after - before) / 2;
                offsets.push(ours as i64 - mid as i64);
            }
        }
        offsets.sort_unstable();
        println!(
            "| {} | {} ({rejected} preempted) | {} | {} | {} | {} |",
            second + 1,
            offsets.len(),
            percentile(&offsets, 0.5),
            percentile(&offsets, 0.99),
            offsets.first().copied().unwrap_or(0),
            offsets.last().copied().unwrap_or(0),
        );
        all.extend_from_slice(&offsets);
    }
    all.sort_unstable();
    let worst = all
        .first()
        .map(|v| v.unsigned_abs())
        .unwrap_or(0)
        .max(all.last().map(|v| v.unsigned_abs()).unwrap_or(0));
    println!(
        "\nwhole run: {} samples, offset p50 {} ns, p99 {} ns, p99.9 {} ns, |max| {worst} ns; \
         readings that went backwards on this thread: {backwards}; source at the end: {:?}",
        all.len(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        percentile(&all, 0.999),
        source()
    );
}
