//! Instruction counts of the hot paths, measured with callgrind and guarded against a
//! committed baseline (issue 13). Timing on the shared 2-core machines moves ±50% between
//! runs; instruction counts under callgrind repeat to the instruction.
//!
//! ```text
//! cargo bench -p ringside-benches --bench instructions               # check (CI runs this)
//! cargo bench -p ringside-benches --bench instructions -- --update   # rewrite the baseline
//! cargo bench -p ringside-benches --bench instructions -- send/64    # only cases containing "send/64"
//! ```
//!
//! The check fails (exit 1) when a case costs more than the baseline's `tolerance` (10%)
//! above its baseline count per operation, and says which case and by how much. Cases that
//! got cheaper by more than the tolerance are reported too: update the baseline then, so the
//! guard keeps its teeth.
//!
//! How it works: this executable is the driver. For each case it re-runs itself under
//! `valgrind --tool=callgrind --collect-atstart=no --toggle-collect=*callgrind_region*` with
//! `--case NAME`; the case sets up its fixture (a real `RingHost` and connected `Producer`),
//! warms up, then runs `ITERS` operations inside [`callgrind_region`], the only function whose
//! instructions are counted (and everything it calls). The driver reads the total from the
//! callgrind output file and divides by `ITERS`.
//!
//! The baseline is `benches/callgrind-baseline.json`: `{"tolerance": 0.1, "cases": {NAME:
//! instructions per operation}}`. To add a case (the sidecar's per-frame encode, say), add a
//! [`Case`] to [`CASES`], run with `--update` (it rewrites every case's count from this run,
//! so run it on an unchanged tree first if you only want to add one), and commit the JSON.
//! Counts depend on the CPU features valgrind reports (AVX2 here) and the compiler version;
//! update the baseline when either changes on purpose.

use std::collections::BTreeMap;
use std::error::Error;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ringside_benches::fixture::{Fixture, TOPIC, payload};
use ringside_client::clock::{ClockSource, source};
use ringside_ring::RingConfig;
use ringside_ring::layout::{FrameHeader, STATE_COMMITTED, frame_check_body};

/// Operations counted per case.
const ITERS: u64 = 20_000;
/// Operations run before counting starts.
const WARM_UP: u64 = 2_000;
/// Baseline file, relative to this package.
const BASELINE: &str = "callgrind-baseline.json";
/// Default tolerance when the baseline file does not name one.
const DEFAULT_TOLERANCE: f64 = 0.10;

/// One measured operation: `run(iters)` sets up, warms up, and calls [`callgrind_region`].
struct Case {
    name: &'static str,
    run: fn(u64) -> Result<(), Box<dyn Error>>,
}

const CASES: &[Case] = &[
    Case {
        name: "producer/send/64",
        run: |n| send(n, 64),
    },
    Case {
        name: "producer/send/1024",
        run: |n| send(n, 1024),
    },
    Case {
        name: "producer/send/4096",
        run: |n| send(n, 4096),
    },
    Case {
        name: "producer/send_at/64",
        run: send_at_64,
    },
    Case {
        name: "producer/reserve_borrowed_commit/64",
        run: |n| reserve_commit(n, 64, true),
    },
    Case {
        name: "producer/reserve_commit/64",
        run: |n| reserve_commit(n, 64, false),
    },
    Case {
        name: "sidecar/encode/64",
        run: |n| encode(n, 64),
    },
    Case {
        name: "sidecar/encode/1024",
        run: |n| encode(n, 1024),
    },
    Case {
        name: "sidecar/encode_wallclock/64",
        run: |n| encode_with(n, 64, wallclock_fields),
    },
    Case {
        name: "sidecar/share100/64",
        run: |n| share(n, 64, 100),
    },
    Case {
        name: "sidecar/share100/1024",
        run: |n| share(n, 1024, 100),
    },
    Case {
        name: "ring/frame_check/64",
        run: |n| frame_check(n, 64),
    },
    Case {
        name: "ring/frame_check/4096",
        run: |n| frame_check(n, 4096),
    },
];

/// The counted region: callgrind collects only while this function is on the stack.
#[inline(never)]
fn callgrind_region(iters: u64, op: &mut dyn FnMut()) {
    for _ in 0..iters {
        op();
    }
}

/// A small ring (1 MiB): counts do not depend on the ring's size, and faulting in 64 MiB
/// under valgrind would take most of the run.
fn fixture() -> Result<Fixture, Box<dyn Error>> {
    let fx = Fixture::start(RingConfig {
        capacity: 1 << 20,
        max_payload: 64 * 1024,
    })?;
    Ok(fx)
}

/// Runs `op` until the producer's clock has finished calibrating (bounded), then `WARM_UP`
/// more times, then `iters` times counted.
fn measure(iters: u64, op: &mut dyn FnMut()) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while source() == ClockSource::Calibrating && Instant::now() < deadline {
        op();
    }
    for _ in 0..WARM_UP {
        op();
    }
    callgrind_region(iters, op);
}

fn send(iters: u64, len: usize) -> Result<(), Box<dyn Error>> {
    let fx = fixture()?;
    let data = payload(len);
    measure(iters, &mut || {
        black_box(fx.producer.send(TOPIC, black_box(&data)).is_ok());
    });
    Ok(())
}

fn send_at_64(iters: u64) -> Result<(), Box<dyn Error>> {
    let fx = fixture()?;
    let data = payload(64);
    let mut ts = 1u64;
    measure(iters, &mut || {
        ts += 1;
        black_box(fx.producer.send_at(TOPIC, ts, black_box(&data)).is_ok());
    });
    Ok(())
}

fn reserve_commit(iters: u64, len: usize, borrowed: bool) -> Result<(), Box<dyn Error>> {
    let fx = fixture()?;
    let data = payload(len);
    if borrowed {
        measure(iters, &mut || {
            if let Ok(mut frame) = fx.producer.reserve_borrowed(TOPIC, data.len()) {
                frame.copy_from_slice(black_box(&data));
                frame.commit();
            }
        });
    } else {
        measure(iters, &mut || {
            if let Ok(mut frame) = fx.producer.reserve(TOPIC, data.len()) {
                frame.copy_from_slice(black_box(&data));
                frame.commit();
            }
        });
    }
    Ok(())
}

fn frame_check(iters: u64, len: usize) -> Result<(), Box<dyn Error>> {
    let body = payload(TOPIC.len() + len);
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
    measure(iters, &mut || {
        black_box(frame_check_body(black_box(&header), black_box(&body)));
    });
    Ok(())
}

/// The sidecar's per-frame serving path, per frame: one subscriber's read step from a real
/// memfd ring (copy out, re-check the claim counter, frame check, topic checks) into its
/// batch encoder, the batch closed into a `Bytes` whenever it is full (64 KiB batches, the
/// e2e `--subscriber-buffer`). The ring (4 MiB, 4 KiB max payload) holds frames of `len`
/// bytes under 4 topics, written once before counting and never lapped; the reader starts
/// over from the earliest frame when it has read them all.
fn encode(iters: u64, len: usize) -> Result<(), Box<dyn Error>> {
    encode_with(iters, len, |_| ringside_benches::fixture::bench_fields())
}

/// Header fields as a live producer stamps them: a wall-clock timestamp in nanoseconds
/// (9 varint bytes on the wire, where the other cases' timestamp 1 takes 1) and a
/// pid-sized producer id (3 bytes), so that the encoder's varints cost what they cost when
/// serving. Frame `i` is stamped 1 µs after frame `i - 1`.
fn wallclock_fields(i: u64) -> ringside_ring::writer::FrameHeaderFields {
    ringside_ring::writer::FrameHeaderFields {
        producer_id: 48_213,
        timestamp_ns: 1_764_770_000_000_000_000 + i * 1000,
        flags: 0,
    }
}

/// [`encode`] with the header fields `fields(i)` on the `i`th frame written.
fn encode_with(
    iters: u64,
    len: usize,
    fields: fn(u64) -> ringside_ring::writer::FrameHeaderFields,
) -> Result<(), Box<dyn Error>> {
    use ringside_ring::layout::RingHeader;
    use ringside_ring::shm::create_ring_memfd;
    use ringside_ring::writer::WritableRing;
    use ringside_ring::{ReaderOptions, RingReader, RingView, StartAt};
    use ringside_sidecar::batch::BatchEncoder;
    use ringside_sidecar::filter::TopicFilter;
    use ringside_sidecar::subscribe::{Fill, fill_batch};
    use std::sync::Arc;

    let config = RingConfig {
        capacity: 4 << 20,
        max_payload: 4096,
    };
    let header = RingHeader::new(&config, 0x5eed_0000_0000_0002, 1);
    let fd = create_ring_memfd(&config, &header)?;
    let view = Arc::new(RingView::open(fd.try_clone()?)?);
    let ring = WritableRing::open(fd, header.ring_id, config)?;
    let topics = ["load/0", "load/1", "load/2", "load/3"];
    let data = payload(len);
    let frame = ringside_ring::frame_len(topics[0].len(), len) as u64;
    // Three quarters of the ring: never lapped, so every read is a frame.
    for i in 0..(config.capacity * 3 / 4 / frame) {
        let topic = topics[i as usize % topics.len()].as_bytes();
        let claim = ring.claim(topic.len(), data.len());
        ring.write_topic(&claim, topic);
        ring.write_payload(&claim, &data);
        ring.publish(claim, fields(i), topic, &data);
    }
    let reader = || {
        RingReader::new(
            Arc::clone(&view),
            StartAt::Earliest,
            ReaderOptions::default(),
        )
    };
    let mut rd = reader()?;
    let mut enc = BatchEncoder::new(header.ring_id, 64 * 1024, 0, 255, 4096);
    let filter = TopicFilter::new(&[], &[])?;
    let mut restart = false;
    measure(iters, &mut || {
        if restart {
            restart = false;
            if let Ok(r) = reader() {
                rd = r;
            }
        }
        match fill_batch(&mut rd, &mut enc, &filter, 1, &mut |_, _| {}) {
            Fill::Full => {
                black_box(enc.finish(rd.next_seq(), false));
                // The step that found the batch full read nothing: read the frame now.
                fill_batch(&mut rd, &mut enc, &filter, 1, &mut |_, _| {});
            }
            Fill::Idle | Fill::Pending => {
                black_box(enc.finish(rd.next_seq(), false));
                restart = true;
            }
            Fill::Yield => {}
        }
    });
    Ok(())
}

/// A ring filled like [`encode`]'s: 4 MiB, 4 KiB max payload, three quarters written with
/// frames of `len` bytes under 4 topics. Returns the read-only view and the ring id.
fn filled_ring(
    len: usize,
) -> Result<(std::sync::Arc<ringside_ring::RingView>, u64), Box<dyn Error>> {
    use ringside_ring::layout::RingHeader;
    use ringside_ring::shm::create_ring_memfd;
    use ringside_ring::writer::WritableRing;
    let config = RingConfig {
        capacity: 4 << 20,
        max_payload: 4096,
    };
    let header = RingHeader::new(&config, 0x5eed_0000_0000_0003, 1);
    let fd = create_ring_memfd(&config, &header)?;
    let view = std::sync::Arc::new(ringside_ring::RingView::open(fd.try_clone()?)?);
    let ring = WritableRing::open(fd, header.ring_id, config)?;
    let topics = ["load/0", "load/1", "load/2", "load/3"];
    let data = payload(len);
    let frame = ringside_ring::frame_len(topics[0].len(), len) as u64;
    for i in 0..(config.capacity * 3 / 4 / frame) {
        let topic = topics[i as usize % topics.len()].as_bytes();
        let claim = ring.claim(topic.len(), data.len());
        ring.write_topic(&claim, topic);
        ring.write_payload(&claim, &data);
        ring.publish(
            claim,
            ringside_benches::fixture::bench_fields(),
            topic,
            &data,
        );
    }
    Ok((view, header.ring_id))
}

/// The serving path with `subs` unfiltered subscribers at the same place, per frame
/// delivered to all of them: in turn, each builds its next batch with
/// `ringside_sidecar::share::next_batch` and one shared chunk cache (64 KiB batches), so the
/// first reads and validates each range from the ring and the others send its chunk. An
/// operation is one frame delivered to every subscriber (a round of one batch each counts
/// as many operations as the batch has frames); one subscriber reading alone costs
/// `sidecar/encode` per frame, so `subs` of them without sharing cost `subs` times that.
fn share(iters: u64, len: usize, subs: usize) -> Result<(), Box<dyn Error>> {
    use ringside_ring::{ReaderOptions, RingReader, StartAt};
    use ringside_sidecar::batch::BatchEncoder;
    use ringside_sidecar::filter::TopicFilter;
    use ringside_sidecar::share::{ChunkCache, next_batch};
    use std::sync::Arc;

    let (view, ring_id) = filled_ring(len)?;
    let start = || -> Result<Vec<(RingReader, BatchEncoder)>, Box<dyn Error>> {
        let mut v = Vec::with_capacity(subs);
        for _ in 0..subs {
            let rd = RingReader::new(
                Arc::clone(&view),
                StartAt::Earliest,
                ReaderOptions::default(),
            )?;
            v.push((rd, BatchEncoder::new(ring_id, 64 * 1024, 0, 255, 4096)));
        }
        Ok(v)
    };
    let mut all = start()?;
    let filter = TopicFilter::new(&[], &[])?;
    let cache = ChunkCache::default();
    for _ in 0..subs {
        cache.enter();
    }
    let mut credit = 0u64;
    measure(iters, &mut || {
        while credit == 0 {
            // One round: every subscriber's next batch.
            for (rd, enc) in &mut all {
                let (_, batch) =
                    next_batch(rd, enc, &filter, Some(&cache), 4096, false, &mut |_, _| {});
                credit = credit.max(batch.as_ref().map_or(0, |b| b.n_frames));
                black_box(batch);
            }
            if credit == 0 {
                // Everyone read everything: start over from the earliest frame.
                if let Ok(v) = start() {
                    all = v;
                }
            }
        }
        credit -= 1;
    });
    Ok(())
}

/// The baseline file.
struct Baseline {
    tolerance: f64,
    cases: BTreeMap<String, f64>,
}

fn baseline_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(BASELINE)
}

fn read_baseline(path: &Path) -> Result<Baseline, Box<dyn Error>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Baseline {
                tolerance: DEFAULT_TOLERANCE,
                cases: BTreeMap::new(),
            });
        }
        Err(err) => return Err(format!("cannot read {}: {err}", path.display()).into()),
    };
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|err| format!("{} is not valid JSON: {err}", path.display()))?;
    let tolerance = json["tolerance"].as_f64().unwrap_or(DEFAULT_TOLERANCE);
    let cases = json["cases"]
        .as_object()
        .map(|cases| {
            cases
                .iter()
                .filter_map(|(name, v)| v.as_f64().map(|v| (name.clone(), v)))
                .collect()
        })
        .unwrap_or_default();
    Ok(Baseline { tolerance, cases })
}

fn write_baseline(path: &Path, baseline: &Baseline) -> Result<(), Box<dyn Error>> {
    let cases: serde_json::Map<String, serde_json::Value> = baseline
        .cases
        .iter()
        .map(|(name, v)| (name.clone(), serde_json::json!((v * 10.0).round() / 10.0)))
        .collect();
    let json = serde_json::json!({
        "about": "Instructions per operation under callgrind (valgrind --tool=callgrind), written by `cargo bench -p ringside-benches --bench instructions -- --update`. The check fails when a case exceeds its count by more than `tolerance`.",
        "tolerance": baseline.tolerance,
        "cases": cases,
    });
    std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")?;
    Ok(())
}

/// Runs one case under callgrind; returns instructions per operation.
fn count(case: &Case, out_dir: &Path) -> Result<f64, Box<dyn Error>> {
    let out_file = out_dir.join(format!("callgrind.{}.out", case.name.replace('/', "_")));
    let exe = std::env::current_exe()?;
    let output = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--collect-atstart=no")
        .arg("--toggle-collect=*callgrind_region*")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(&exe)
        .args(["--case", case.name])
        .output()
        .map_err(|err| {
            format!("cannot run valgrind ({err}); install it (Debian: apt-get install valgrind)")
        })?;
    if !output.status.success() {
        return Err(format!(
            "case {} under callgrind failed ({}):\n{}",
            case.name,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let text = std::fs::read_to_string(&out_file)?;
    let total = text
        .lines()
        .find_map(|line| {
            line.strip_prefix("totals:")
                .or_else(|| line.strip_prefix("summary:"))
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| format!("no totals in {}", out_file.display()))?;
    if total == 0 {
        return Err(format!(
            "case {}: callgrind counted nothing: was callgrind_region inlined or renamed?",
            case.name
        )
        .into());
    }
    Ok(total as f64 / ITERS as f64)
}

fn drive(update: bool, filter: Option<&str>) -> Result<bool, Box<dyn Error>> {
    let path = baseline_path();
    let mut baseline = read_baseline(&path)?;
    let out_dir = tempfile::Builder::new()
        .prefix("ringside-callgrind-")
        .tempdir()?;
    let started = Instant::now();
    let mut ok = true;
    println!(
        "{:<40} {:>12} {:>12} {:>8}",
        "case", "baseline", "now", "change"
    );
    for case in CASES
        .iter()
        .filter(|c| filter.is_none_or(|f| c.name.contains(f)))
    {
        let now = count(case, out_dir.path())?;
        let verdict = match baseline.cases.get(case.name) {
            Some(&base) => {
                let change = now / base - 1.0;
                let verdict = if change > baseline.tolerance {
                    ok = false;
                    "REGRESSED"
                } else if change < -baseline.tolerance {
                    "improved: update the baseline"
                } else {
                    "ok"
                };
                println!(
                    "{:<40} {base:>12.1} {now:>12.1} {:>+7.1}% {verdict}",
                    case.name,
                    change * 100.0
                );
                verdict
            }
            None => {
                println!("{:<40} {:>12} {now:>12.1}", case.name, "-");
                "new"
            }
        };
        if update || verdict == "new" {
            baseline.cases.insert(case.name.to_owned(), now);
        }
    }
    for name in baseline.cases.keys() {
        if !CASES.iter().any(|c| c.name == name) {
            println!("{name:<40} in the baseline but not measured by this binary");
        }
    }
    if update {
        write_baseline(&path, &baseline)?;
        println!("wrote {}", path.display());
    }
    println!(
        "{} in {:.0} s (valgrind --tool=callgrind, {ITERS} operations per case)",
        if ok {
            "instruction counts within tolerance"
        } else {
            "instruction counts REGRESSED"
        },
        started.elapsed().as_secs_f64()
    );
    Ok(ok || update)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        let name = args.get(i + 1).ok_or("--case needs a name")?;
        let case = CASES
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| format!("unknown case {name}"))?;
        return (case.run)(ITERS);
    }
    let update = args.iter().any(|a| a == "--update");
    // `cargo bench` passes `--bench`; any other free argument filters cases by name.
    let filter = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(String::as_str);
    if drive(update, filter)? {
        Ok(())
    } else {
        std::process::exit(1)
    }
}
