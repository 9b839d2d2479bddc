//! The producer's clock (what `send` stamps frames with): CLOCK_REALTIME-comparable nanoseconds from the CPU's time-stamp
//! counter, calibrated against `clock_gettime(CLOCK_REALTIME)` and recalibrated while it
//! runs.
//!
//! A frame's timestamp is read on every `send`. `clock_gettime` through the vDSO costs about
//! 21 ns on the development VM, most of it an *ordered* `rdtsc` (the vDSO fences it, so
//! nothing around it overlaps) plus a seqlock and a conversion. This clock issues a plain
//! `rdtsc`, which the CPU overlaps with the rest of the write, and converts ticks with one
//! multiply: `ns = base_ns + (ticks − base_tsc) × mult / 2³²`.
//!
//! **When it is used.** Only where the counter is trustworthy across CPUs and time: x86_64
//! with an invariant TSC (CPUID 0x8000_0007, EDX bit 8: constant rate, running in every
//! power state) *and* a kernel that keeps time with it (`tsc` is the current clocksource,
//! which the kernel only keeps after checking the counters of all CPUs are synchronised, and
//! leaves if its watchdog finds the TSC unstable). Otherwise, and on other architectures,
//! every read is `clock_gettime(CLOCK_REALTIME)`, as before.
//!
//! **Calibration.** The first reads of a process return `clock_gettime` while the clock
//! measures the tick rate over its first [`CALIBRATION_WINDOW`]; no read waits for it.
//! Each calibration point pairs one `clock_gettime` with the midpoint of the two `rdtsc`s
//! around it (the tightest of a few tries, so a preempted pair is not used).
//!
//! **Recalibration policy.** Every [`RECALIBRATION_INTERVAL`] of ticks, the first read past
//! the deadline takes a new calibration point (one thread does; the others keep using the
//! current parameters meanwhile), measures the rate over the interval just ended (this
//! follows NTP's frequency corrections of CLOCK_REALTIME), and compares the clock with
//! CLOCK_REALTIME at that instant:
//! - an offset within [`STEP_THRESHOLD`] is **slewed** out: the new line starts where the
//!   old one is at that instant (no jump, so timestamps from one thread never go backwards)
//!   and its slope is corrected so that it meets CLOCK_REALTIME one interval later;
//! - a larger offset means CLOCK_REALTIME itself was stepped (settimeofday, an NTP step, a
//!   VM resumed): the clock **steps** with it, as `clock_gettime` would have;
//! - two steps in a row mean the counter cannot be trusted after all: the clock falls back to
//!   `clock_gettime` for the rest of the process.
//!
//! **Error bound.** Between recalibrations the clock differs from CLOCK_REALTIME by the
//! calibration point's uncertainty (half the `rdtsc` pair's width, tens of ns) plus the rate
//! error over one interval, plus whatever CLOCK_REALTIME was slewed by NTP within that
//! interval (at most 500 ppm by the kernel's limit, in practice a few ppm). The benchmark
//! `cargo bench -p ringside-benches --bench clock` measures it (20 s on the loaded development
//! VM: p50 −13 ns, p99.9 38 ns); `docs/benchmarks-producer.md` reports it.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering, fence};
use std::time::Duration;

/// How long the first calibration measures the tick rate.
pub const CALIBRATION_WINDOW: Duration = Duration::from_millis(10);
/// How often (in ticks of the calibrated rate) the clock is recalibrated.
pub const RECALIBRATION_INTERVAL: Duration = Duration::from_secs(1);
/// An offset from CLOCK_REALTIME larger than this is stepped, not slewed.
pub const STEP_THRESHOLD: Duration = Duration::from_millis(1);

/// CLOCK_REALTIME in ns, from the calibrated TSC where it is trustworthy (module docs).
#[inline]
pub fn now_ns() -> u64 {
    CLOCK.now()
}

/// CLOCK_REALTIME in ns, read with `clock_gettime` (vDSO, no syscall).
#[inline]
pub fn realtime_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME) {
        Ok(ts) => (ts.tv_sec() as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(ts.tv_nsec() as u64),
        Err(_) => 0,
    }
}

/// Which source [`now_ns`] reads, for diagnostics and benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockSource {
    /// Not decided yet, or still measuring the tick rate: reads use `clock_gettime`.
    Calibrating,
    /// The calibrated time-stamp counter.
    Tsc,
    /// `clock_gettime(CLOCK_REALTIME)`: no trustworthy TSC here.
    Realtime,
}

/// The source [`now_ns`] currently reads.
pub fn source() -> ClockSource {
    match CLOCK.mode.load(Ordering::Relaxed) {
        MODE_TSC => ClockSource::Tsc,
        MODE_REALTIME => ClockSource::Realtime,
        _ => ClockSource::Calibrating,
    }
}

const MODE_UNDECIDED: u8 = 0;
const MODE_CALIBRATING: u8 = 1;
const MODE_TSC: u8 = 2;
const MODE_REALTIME: u8 = 3;

/// The process-wide clock. The TSC is a property of the machine, so one calibration serves
/// every producer in the process.
static CLOCK: TscClock = TscClock::new();

/// Conversion parameters behind a seqlock (readers never block; a writer holds `writing`).
#[repr(align(64))]
struct TscClock {
    /// Even: parameters stable; odd: being rewritten.
    seq: AtomicU64,
    base_tsc: AtomicU64,
    base_ns: AtomicU64,
    /// ns per tick, 32.32 fixed point.
    mult: AtomicU64,
    /// First tick count at which a read recalibrates.
    next_tsc: AtomicU64,
    mode: AtomicU8,
    /// Held by the one thread that calibrates.
    writing: AtomicBool,
    /// The last calibration point (tick, ns) and how many steps in a row it made. Only the
    /// thread holding `writing` touches these.
    cal_tsc: AtomicU64,
    cal_ns: AtomicU64,
    steps_in_a_row: AtomicU8,
}

/// One snapshot of the conversion parameters.
#[derive(Clone, Copy)]
struct Params {
    base_tsc: u64,
    base_ns: u64,
    mult: u64,
    next_tsc: u64,
}

impl Params {
    #[inline]
    fn at(&self, tsc: u64) -> u64 {
        let ticks = tsc.wrapping_sub(self.base_tsc);
        self.base_ns
            .wrapping_add(((u128::from(ticks) * u128::from(self.mult)) >> 32) as u64)
    }
}

impl TscClock {
    const fn new() -> TscClock {
        TscClock {
            seq: AtomicU64::new(0),
            base_tsc: AtomicU64::new(0),
            base_ns: AtomicU64::new(0),
            mult: AtomicU64::new(0),
            next_tsc: AtomicU64::new(0),
            mode: AtomicU8::new(MODE_UNDECIDED),
            writing: AtomicBool::new(false),
            cal_tsc: AtomicU64::new(0),
            cal_ns: AtomicU64::new(0),
            steps_in_a_row: AtomicU8::new(0),
        }
    }

    #[inline]
    fn now(&self) -> u64 {
        if self.mode.load(Ordering::Relaxed) != MODE_TSC {
            return self.now_slow();
        }
        let params = self.params();
        let tsc = tsc::read();
        // Past the recalibration deadline, or before the base (a stale snapshot): slow path.
        if tsc.wrapping_sub(params.base_tsc) >= params.next_tsc.wrapping_sub(params.base_tsc) {
            return self.recalibrate_or_extrapolate(tsc, params);
        }
        params.at(tsc)
    }

    /// A consistent snapshot of the parameters (seqlock read).
    #[inline]
    fn params(&self) -> Params {
        loop {
            let seq = self.seq.load(Ordering::Acquire);
            let params = Params {
                base_tsc: self.base_tsc.load(Ordering::Relaxed),
                base_ns: self.base_ns.load(Ordering::Relaxed),
                mult: self.mult.load(Ordering::Relaxed),
                next_tsc: self.next_tsc.load(Ordering::Relaxed),
            };
            fence(Ordering::Acquire);
            if seq & 1 == 0 && self.seq.load(Ordering::Relaxed) == seq {
                return params;
            }
            std::hint::spin_loop();
        }
    }

    /// Seqlock write; the caller holds `writing`.
    fn publish(&self, params: Params) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.base_tsc.store(params.base_tsc, Ordering::Relaxed);
        self.base_ns.store(params.base_ns, Ordering::Relaxed);
        self.mult.store(params.mult, Ordering::Relaxed);
        self.next_tsc.store(params.next_tsc, Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    fn try_lock(&self) -> bool {
        self.writing
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    fn unlock(&self) {
        self.writing.store(false, Ordering::Release);
    }

    /// Undecided, calibrating, or falling back: decides, calibrates, or reads the OS clock.
    #[cold]
    #[inline(never)]
    fn now_slow(&self) -> u64 {
        match self.mode.load(Ordering::Acquire) {
            MODE_TSC => return self.now(),
            MODE_REALTIME => return realtime_ns(),
            MODE_CALIBRATING => {
                let ns = realtime_ns();
                let since = ns.wrapping_sub(self.cal_ns.load(Ordering::Relaxed));
                if since < CALIBRATION_WINDOW.as_nanos() as u64 || !self.try_lock() {
                    return ns;
                }
            }
            _ => {
                if !self.try_lock() {
                    return realtime_ns();
                }
            }
        }
        // Holding the lock: decide, or finish the first calibration.
        let now = match self.mode.load(Ordering::Acquire) {
            MODE_UNDECIDED if tsc::trustworthy() => {
                let (tsc, ns) = calibration_point();
                self.cal_tsc.store(tsc, Ordering::Relaxed);
                self.cal_ns.store(ns, Ordering::Relaxed);
                self.mode.store(MODE_CALIBRATING, Ordering::Release);
                ns
            }
            MODE_UNDECIDED => {
                self.mode.store(MODE_REALTIME, Ordering::Release);
                realtime_ns()
            }
            MODE_CALIBRATING => {
                let (tsc, ns) = calibration_point();
                let (tsc0, ns0) = (
                    self.cal_tsc.load(Ordering::Relaxed),
                    self.cal_ns.load(Ordering::Relaxed),
                );
                match rate(tsc.wrapping_sub(tsc0), ns.wrapping_sub(ns0)) {
                    Some(mult) => {
                        self.cal_tsc.store(tsc, Ordering::Relaxed);
                        self.cal_ns.store(ns, Ordering::Relaxed);
                        self.publish(Params {
                            base_tsc: tsc,
                            base_ns: ns,
                            mult,
                            next_tsc: tsc.wrapping_add(interval_ticks(mult)),
                        });
                        self.mode.store(MODE_TSC, Ordering::Release);
                    }
                    None => self.mode.store(MODE_REALTIME, Ordering::Release),
                }
                ns
            }
            // Another thread finished deciding first.
            _ => realtime_ns(),
        };
        self.unlock();
        now
    }

    /// Past the deadline: one thread recalibrates, the others extrapolate the current line.
    #[cold]
    #[inline(never)]
    fn recalibrate_or_extrapolate(&self, tsc: u64, params: Params) -> u64 {
        if !self.try_lock() {
            return params.at(tsc);
        }
        let current = self.params();
        let tsc = tsc::read();
        let now = if tsc.wrapping_sub(current.base_tsc)
            < current.next_tsc.wrapping_sub(current.base_tsc)
        {
            // Another thread recalibrated between our snapshot and the lock.
            current.at(tsc)
        } else {
            self.recalibrate(current)
        };
        self.unlock();
        now
    }

    /// Takes a calibration point and publishes the corrected line (module docs, policy).
    fn recalibrate(&self, current: Params) -> u64 {
        let (tsc, ns) = calibration_point();
        let (tsc0, ns0) = (
            self.cal_tsc.load(Ordering::Relaxed),
            self.cal_ns.load(Ordering::Relaxed),
        );
        self.cal_tsc.store(tsc, Ordering::Relaxed);
        self.cal_ns.store(ns, Ordering::Relaxed);
        let ours = current.at(tsc);
        let offset = ns as i128 - ours as i128;
        let measured = rate(tsc.wrapping_sub(tsc0), ns.wrapping_sub(ns0));
        let (Some(mult), true) = (measured, offset.unsigned_abs() <= STEP_THRESHOLD.as_nanos())
        else {
            // CLOCK_REALTIME stepped, or the counter misbehaved: step with it; twice in a
            // row, stop trusting the counter.
            let steps = self
                .steps_in_a_row
                .load(Ordering::Relaxed)
                .saturating_add(1);
            self.steps_in_a_row.store(steps, Ordering::Relaxed);
            if steps >= 2 || measured.is_none() {
                self.mode.store(MODE_REALTIME, Ordering::Release);
                return realtime_ns();
            }
            let mult = current.mult;
            self.publish(Params {
                base_tsc: tsc,
                base_ns: ns,
                mult,
                next_tsc: tsc.wrapping_add(interval_ticks(mult)),
            });
            return ns;
        };
        self.steps_in_a_row.store(0, Ordering::Relaxed);
        // Slew: start at our own value (continuity), aim at CLOCK_REALTIME one interval on.
        let ticks = interval_ticks(mult);
        let correction = (offset << 32) / i128::from(ticks.max(1));
        let slewed = (i128::from(mult) + correction).max(i128::from(mult) / 2) as u64;
        self.publish(Params {
            base_tsc: tsc,
            base_ns: ours,
            mult: slewed,
            next_tsc: tsc.wrapping_add(ticks),
        });
        ours
    }
}

/// ns per tick in 32.32 fixed point, if the measurement is plausible (a counter between
/// 1 MHz and 100 GHz).
fn rate(ticks: u64, ns: u64) -> Option<u64> {
    if ticks == 0 || ns == 0 || ticks > (1 << 62) {
        return None;
    }
    let mult = (u128::from(ns) << 32) / u128::from(ticks);
    let fastest = (1u128 << 32) / 100; // 100 GHz: 0.01 ns per tick
    let slowest = 1000u128 << 32; // 1 MHz: 1000 ns per tick
    (fastest..=slowest).contains(&mult).then_some(mult as u64)
}

/// Ticks in one recalibration interval at `mult`.
fn interval_ticks(mult: u64) -> u64 {
    ((RECALIBRATION_INTERVAL.as_nanos() << 32) / u128::from(mult.max(1)))
        .min(u128::from(u64::MAX >> 2)) as u64
}

/// One (tick, CLOCK_REALTIME ns) pair: the tightest of a few `rdtsc` / `clock_gettime` /
/// `rdtsc` sandwiches, the tick taken at the midpoint.
fn calibration_point() -> (u64, u64) {
    let mut best = (u64::MAX, 0, 0);
    for _ in 0..5 {
        let before = tsc::read_ordered();
        let ns = realtime_ns();
        let after = tsc::read_ordered();
        let width = after.wrapping_sub(before);
        if width < best.0 {
            best = (width, before.wrapping_add(width / 2), ns);
        }
    }
    (best.1, best.2)
}

#[cfg(target_arch = "x86_64")]
mod tsc {
    use std::arch::x86_64::{__cpuid, _mm_lfence, _rdtsc};

    /// The time-stamp counter, unordered: the CPU may execute it a few dozen cycles early or
    /// late relative to the instructions around it, which is what makes it cheap.
    #[inline(always)]
    pub fn read() -> u64 {
        // SAFETY: rdtsc is available on every x86_64 CPU and has no memory effects.
        unsafe { _rdtsc() }
    }

    /// The counter after every earlier instruction has completed (for calibration points).
    pub fn read_ordered() -> u64 {
        // SAFETY: lfence (SSE2, baseline on x86_64) and rdtsc have no memory effects.
        unsafe {
            _mm_lfence();
            _rdtsc()
        }
    }

    /// Invariant TSC (CPUID) and the kernel's clocksource is `tsc`.
    pub fn trustworthy() -> bool {
        // Leaf 0x8000_0000 reports the highest extended leaf; 0x8000_0007 is read only if it
        // exists.
        let invariant =
            __cpuid(0x8000_0000).eax >= 0x8000_0007 && __cpuid(0x8000_0007).edx & (1 << 8) != 0;
        invariant
            && std::fs::read_to_string(
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            )
            .is_ok_and(|source| source.trim() == "tsc")
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod tsc {
    pub fn read() -> u64 {
        0
    }
    pub fn read_ordered() -> u64 {
        0
    }
    /// Only x86_64's TSC is used; elsewhere the clock reads `clock_gettime`.
    pub fn trustworthy() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_bounds() {
        assert_eq!(rate(0, 5), None);
        assert_eq!(rate(3_000_000_000, 1_000_000_000), Some((1u64 << 32) / 3));
        assert_eq!(rate(1, 1_000_000), None);
    }

    #[test]
    fn the_clock_follows_realtime_and_never_goes_backwards_on_one_thread() {
        let start = std::time::Instant::now();
        let mut last = 0;
        let (mut worst, mut samples) = (0u64, 0u64);
        while start.elapsed() < Duration::from_millis(2500) {
            // Our reading must fall between two CLOCK_REALTIME readings around it; pairs
            // further apart than 20 µs (the thread was preempted) say nothing and are skipped.
            let before = realtime_ns();
            let ours = now_ns();
            let after = realtime_ns();
            assert!(ours >= last, "went backwards: {last} -> {ours}");
            last = ours;
            if after.wrapping_sub(before) < 20_000 {
                samples += 1;
                worst = worst.max(before.saturating_sub(ours).max(ours.saturating_sub(after)));
            }
        }
        eprintln!(
            "source {:?}, {samples} samples, worst distance outside the realtime pair {worst} ns",
            source()
        );
        assert_ne!(source(), ClockSource::Calibrating);
        assert!(samples > 1000);
        // The documented bound is microseconds; allow for a loaded, shared machine.
        assert!(worst < 100_000, "{worst} ns off CLOCK_REALTIME");
    }
}
