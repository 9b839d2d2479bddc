//! The producer's write path, next to a plain `memcpy` of the same bytes (issue 2, brief
//! "How good"). Run and tabulate with:
//!
//! ```text
//! cargo bench -p ringside-benches --bench producer -- --warm-up-time 1 --measurement-time 3 --noplot
//! cargo run -p ringside-benches --bin producer_table -- --write docs/benchmarks-producer.md
//! ```
//!
//! Groups (see `ringside_benches::table` for the names):
//! - `producer_1t`: `send` for 64 B, 1 KiB, 4 KiB, 16 KiB on one thread, and `memcpy`.
//! - `producer_2t`: the same with two threads sharing one `Producer` (and two `memcpy`
//!   threads, each into its half of a ring-sized buffer). Time is per send as each thread
//!   sees it; throughput counts both threads' bytes.
//! - `producer_paths`: `send` while a `RingReader` drains the ring on another thread,
//!   `send_at` with a caller timestamp, `send` by a producer connected with
//!   `payload_check: false` (`send_unchecked`), and `reserve` + fill + `commit`.
//! - `producer_parts`: the clock read (and the coarse clock), the xxh3 frame check, the 128-bit claim alone (one
//!   and two threads), a 64-bit `fetch_add` for comparison, and claim + copy + publish on a
//!   bare ring without the `Producer` around it.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use criterion::{BenchmarkId, Criterion, Throughput};
use ringside_benches::fixture::{
    CopyLane, Fixture, PairJob, PairWorker, TOPIC, bench_fields, bench_ring_config, payload,
    standalone_ring, timed_pair,
};
use ringside_benches::table::{
    GROUP_ONE_THREAD, GROUP_PARTS, GROUP_PATHS, GROUP_TWO_THREADS, MEMCPY, SEND,
};
use ringside_ring::layout::{FrameHeader, STATE_COMMITTED, frame_check};
use ringside_ring::{ReadStep, ReaderOptions, RingReader, RingView, StartAt, VecSink};

/// Payload sizes of the send-vs-memcpy tables.
const SIZES: [usize; 4] = [64, 1024, 4096, 16 * 1024];

fn ring_bytes() -> usize {
    bench_ring_config().capacity as usize
}

/// Sends and reports whether it succeeded; the result goes through `black_box`.
#[inline]
fn send(fx: &Fixture, payload: &[u8]) {
    black_box(fx.producer.send(TOPIC, black_box(payload)).is_ok());
}

fn one_thread(c: &mut Criterion, fx: &Fixture) {
    let mut group = c.benchmark_group(GROUP_ONE_THREAD);
    for len in SIZES {
        let data = payload(len);
        group.throughput(Throughput::Bytes(len as u64));
        let mut lane = CopyLane::new(ring_bytes(), len);
        group.bench_with_input(BenchmarkId::new(MEMCPY, len), &data, |b, data| {
            b.iter(|| lane.copy(black_box(data)))
        });
        drop(lane);
        group.bench_with_input(BenchmarkId::new(SEND, len), &data, |b, data| {
            b.iter(|| send(fx, data))
        });
    }
    group.finish();
}

/// The worker thread's half of a two-thread `memcpy` measurement.
struct CopyJob {
    lane: CopyLane,
    data: Vec<u8>,
}

impl PairJob for CopyJob {
    fn run(&mut self, iters: u64) {
        for _ in 0..iters {
            self.lane.copy(black_box(&self.data));
        }
    }
}

/// The worker thread's half of a two-thread `send` measurement.
struct SendJob<'a> {
    fx: &'a Fixture,
    data: Vec<u8>,
}

impl PairJob for SendJob<'_> {
    fn run(&mut self, iters: u64) {
        for _ in 0..iters {
            send(self.fx, &self.data);
        }
    }
}

fn two_threads(c: &mut Criterion, fx: &Fixture) {
    let mut group = c.benchmark_group(GROUP_TWO_THREADS);
    std::thread::scope(|scope| {
        let mut worker = PairWorker::spawn(scope);
        for len in SIZES {
            let data = payload(len);
            group.throughput(Throughput::Bytes(2 * len as u64));
            // Each thread copies into its own half of a ring-sized buffer.
            let mut lane = CopyLane::new(ring_bytes() / 2, len);
            worker.set_job(CopyJob {
                lane: CopyLane::new(ring_bytes() / 2, len),
                data: data.clone(),
            });
            group.bench_with_input(BenchmarkId::new(MEMCPY, len), &data, |b, data| {
                b.iter_custom(|iters| {
                    worker.run(iters, |n| (0..n).for_each(|_| lane.copy(black_box(data))))
                })
            });
            drop(lane);
            worker.set_job(SendJob {
                fx,
                data: data.clone(),
            });
            group.bench_with_input(BenchmarkId::new(SEND, len), &data, |b, data| {
                b.iter_custom(|iters| worker.run(iters, |n| (0..n).for_each(|_| send(fx, data))))
            });
        }
    });
    group.finish();
}

/// What the draining reader saw.
#[derive(Debug, Default)]
struct Drained {
    frames: u64,
    lost: u64,
}

/// Reads the ring as fast as it can until `stop`, like a subscriber's cursor in the sidecar.
fn drain(view: Arc<RingView>, ready: &Barrier, stop: &AtomicBool) -> Drained {
    let mut reader = RingReader::new(view, StartAt::Latest, ReaderOptions::default())
        .expect("reader positions at the tail");
    let mut sink = VecSink::default();
    let mut seen = Drained::default();
    ready.wait();
    while !stop.load(Ordering::Relaxed) {
        match reader.read(&mut sink) {
            ReadStep::Frame(_) => seen.frames += 1,
            ReadStep::Loss(loss) => seen.lost += loss.frames,
            ReadStep::Filtered(_) => {}
            ReadStep::Idle | ReadStep::Pending => std::hint::spin_loop(),
        }
    }
    black_box(sink.payload().len());
    seen
}

fn write_paths(c: &mut Criterion, fx: &Fixture) {
    let mut group = c.benchmark_group(GROUP_PATHS);
    let small = payload(64);
    group.throughput(Throughput::Bytes(64));

    let ready = Barrier::new(2);
    let stop = AtomicBool::new(false);
    let drained = std::thread::scope(|scope| {
        let reader = scope.spawn(|| drain(fx.host.ring(), &ready, &stop));
        ready.wait();
        group.bench_with_input(BenchmarkId::new("send_draining", 64), &small, |b, data| {
            b.iter(|| send(fx, data))
        });
        stop.store(true, Ordering::Relaxed);
        reader.join().expect("reader thread")
    });
    eprintln!(
        "send_draining: the reader validated {} frames and was lapped over {} frames",
        drained.frames, drained.lost
    );

    let clock = AtomicU64::new(1);
    group.bench_with_input(BenchmarkId::new("send_at", 64), &small, |b, data| {
        b.iter(|| {
            let ts = clock.fetch_add(1, Ordering::Relaxed);
            black_box(fx.producer.send_at(TOPIC, ts, black_box(data)).is_ok());
        })
    });

    for len in [64, 4096, 16 * 1024] {
        let data = payload(len);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::new("send_unchecked", len), &data, |b, data| {
            b.iter(|| black_box(fx.unchecked.send(TOPIC, black_box(data)).is_ok()))
        });
    }

    for len in [64, 4096] {
        let data = payload(len);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::new("reserve_commit", len), &data, |b, data| {
            b.iter(|| {
                if let Ok(mut frame) = fx.producer.reserve(TOPIC, data.len()) {
                    frame.copy_from_slice(black_box(data));
                    frame.commit();
                }
            })
        });
    }
    group.finish();
}

/// Reads `clock` as ns, the way the producer stamps frames.
#[inline]
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass, which lives on our stack.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

fn parts(c: &mut Criterion) {
    let mut group = c.benchmark_group(GROUP_PARTS);
    let ring = standalone_ring(bench_ring_config()).expect("standalone ring");

    // The producer's clock: CLOCK_REALTIME through the vDSO (what `send` reads), and the
    // coarse variant (tick resolution) for comparison.
    for (name, clock) in [
        ("clock_realtime", libc::CLOCK_REALTIME),
        ("clock_realtime_coarse", libc::CLOCK_REALTIME_COARSE),
    ] {
        group.bench_function(name, |b| b.iter(|| black_box(clock_ns(clock))));
    }

    for len in [64, 4096] {
        let data = payload(len);
        let header = FrameHeader {
            commit: 4096 | STATE_COMMITTED,
            seq: 7,
            timestamp_ns: 1,
            payload_len: len as u32,
            producer_id: 1,
            topic_len: TOPIC.len() as u16,
            flags: 0,
            check: 0,
        };
        group.bench_with_input(BenchmarkId::new("frame_check", len), &data, |b, data| {
            b.iter(|| {
                black_box(frame_check(
                    black_box(&header),
                    TOPIC.as_bytes(),
                    black_box(data),
                ))
            })
        });
    }

    group.bench_function(BenchmarkId::new("claim_only", 64), |b| {
        b.iter(|| black_box(ring.claim(TOPIC.len(), 64).pos))
    });
    group.bench_function(BenchmarkId::new("claim_only_2t", 64), |b| {
        b.iter_custom(|iters| {
            let claim = |n: u64| {
                for _ in 0..n {
                    black_box(ring.claim(TOPIC.len(), 64).pos);
                }
            };
            timed_pair(iters, claim, claim)
        })
    });

    let counter = AtomicU64::new(0);
    group.bench_function("u64_fetch_add", |b| {
        b.iter(|| black_box(counter.fetch_add(120, Ordering::SeqCst)))
    });
    group.bench_function("u64_fetch_add_2t", |b| {
        b.iter_custom(|iters| {
            let add = |n: u64| {
                for _ in 0..n {
                    black_box(counter.fetch_add(120, Ordering::SeqCst));
                }
            };
            timed_pair(iters, add, add)
        })
    });

    let data = payload(64);
    group.throughput(Throughput::Bytes(64));
    group.bench_with_input(
        BenchmarkId::new("claim_copy_publish", 64),
        &data,
        |b, data| {
            b.iter(|| {
                let claim = ring.claim(TOPIC.len(), data.len());
                ring.write_topic(&claim, TOPIC.as_bytes());
                ring.write_payload(&claim, black_box(data));
                ring.publish(claim, bench_fields(), TOPIC.as_bytes(), data);
            })
        },
    );
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let fx = Fixture::start(bench_ring_config()).expect("ring host and producer");
    one_thread(&mut c, &fx);
    two_threads(&mut c, &fx);
    write_paths(&mut c, &fx);
    parts(&mut c);
    for producer in [&fx.producer, &fx.unchecked] {
        let stats = producer.stats();
        eprintln!("producer stats after the run: {stats:?}");
        assert_eq!(
            stats.dropped_not_connected + stats.dropped_too_large + stats.dropped_invalid_topic,
            0,
            "every measured send must have been published"
        );
    }
    c.final_summary();
}
