//! `e2e`: the end-to-end burst benchmark, ringside vs the naive baseline.
//!
//! Scenario **burst with slow and stalled subscribers**: producers write as
//! fast as they can, in total at least 100x ringside's ring capacity, while one
//! fast, several slow (they sleep after every message) and a few stalled
//! subscribers (they open the stream and never read) are connected. Both
//! servers run in a cgroup v1 memory group whose hard limit is ringside's
//! printed budget for the same flags. The server's RssAnon and RssShmem are
//! sampled from `/proc/<pid>/status` every 20 ms.
//!
//! Output: a markdown table on stdout and in `docs/benchmarks.md`, raw CSV
//! samples in `docs/bench-data/`, and `docs/bench-data/memory-burst.svg`,
//! `throughput.svg` and `latency.svg`. Exits non-zero if the harness fails or a
//! ringside invariant breaks (never because of a timing figure).
//!
//! ```sh
//! cargo build --release -p ringside-naive -p ringside -p ringside-e2e
//! target/release/e2e --quick      # about a minute
//! target/release/e2e --full
//! ```

use clap::Parser;
use ringside_naive::v1::naive_client::NaiveClient;
use ringside_proto::v1::ringside_client::RingsideClient;
use ringside_proto::v1::subscribe_request::Start;
use std::fmt::Write as _;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

mod burst;
mod dgram;
mod infra;
mod latency;
mod limits;
mod plots;
mod rawread;
mod report;
mod scale;
mod serving;

use burst::*;
use dgram::*;
use infra::*;
use latency::*;
use limits::*;
use plots::*;
use rawread::*;
use report::*;
use scale::*;
use serving::*;

/// Producer threads/streams in the burst.
const PRODUCERS: u64 = 2;
/// Producer rate in the fan-out scenario (frames/s of 1 KiB).
const FANOUT_RATE: u64 = 10_000;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "End-to-end burst benchmark: ringside vs the naive baseline")]
struct Args {
    /// Quick mode (4 MiB ring, 100x its capacity; about a minute). The default.
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// Full mode (16 MiB ring, 300x its capacity).
    #[arg(long)]
    full: bool,
    /// Directory holding `ringside`, `naive-server` and `naive-load`
    /// (default: the directory of this executable).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where `benchmarks.md` and `bench-data/` are written.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs"))]
    out: PathBuf,
    /// Do not write any file (print the table only).
    #[arg(long)]
    no_write: bool,
    /// Run only the limits and the serving and idle scenarios, print their
    /// tables, and write nothing.
    #[arg(long)]
    serving_only: bool,
    /// Run only the steady-rate latency scenario (with its OS floor), print its
    /// table, and write nothing.
    #[arg(long)]
    latency_only: bool,
    /// Internal: the reading side of the OS floor measurement (reads timestamps on stdin).
    #[arg(long, hide = true)]
    os_floor_child: bool,
    /// Internal: a steady-rate latency reader in its own process (see `ReaderChild`).
    #[arg(long, hide = true, requires_all = ["reader_endpoint", "reader_kind"])]
    latency_reader_child: bool,
    /// Internal: the latency reader's server.
    #[arg(long, hide = true)]
    reader_endpoint: Option<String>,
    /// Internal: the latency reader's stream.
    #[arg(long, hide = true, value_enum)]
    reader_kind: Option<ReaderKind>,
    /// Internal: frames the latency reader expects (it ends once it has them all).
    #[arg(long, hide = true, default_value_t = u64::MAX)]
    reader_frames: u64,
    /// Internal: frames the latency reader receives before it starts timing.
    #[arg(long, hide = true, default_value_t = 0)]
    reader_warmup: u64,
    /// Run only the scale scenario (scale.rs): 10,000 subscribers on separate
    /// connections against one sidecar in a cgroup at its budget; writes its section of
    /// `benchmarks.md` (unless --no-write).
    #[arg(long)]
    scale: bool,
    /// Subscribers in the scale scenario (1,000 is a quick run).
    #[arg(long, default_value_t = 10_000)]
    scale_subscribers: usize,
    /// Data frames per second in the scale scenario.
    #[arg(long, default_value_t = 200)]
    scale_rate: u64,
}

/// Scenario parameters.
#[derive(Debug, Clone)]
struct Params {
    mode: &'static str,
    ring: u64,
    laps: u64,
    frame: u64,
    producers: u64,
    fast: usize,
    slow: usize,
    stalled: usize,
    /// Bytes per second a slow reader takes (payload bytes, paced after each message).
    slow_bps: u64,
    /// Producer rate in frames/s over all producers (0 = as fast as possible).
    rate: u64,
    /// Frames in total (0 = `laps` x ring / frame).
    frames: u64,
    /// `--max-subscribers` and `--max-connections`.
    max_subs: u64,
    drain: Duration,
    lat_secs: u64,
}

impl Params {
    pub(crate) fn total_frames(&self) -> u64 {
        if self.frames > 0 {
            self.frames
        } else {
            self.laps * self.ring / self.frame
        }
    }

    pub(crate) fn serve_flags(&self) -> Vec<String> {
        let subs = self.max_subs.to_string();
        let ring_size = size_flag(self.ring);
        [
            "--ring-size",
            &ring_size,
            "--max-payload",
            "4KiB",
            "--subscriber-buffer",
            "64KiB",
            "--max-subscribers",
            &subs,
            "--max-connections",
            &subs,
            "--worker-threads",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

/// The `<!-- BEGIN ... -->` to `<!-- END ... -->` blocks of a previous benchmarks.md, each
/// followed by a newline.
fn kept_sections(old: &str) -> String {
    let mut kept = String::new();
    let mut rest = old;
    while let Some(start) = rest.find("<!-- BEGIN ") {
        let Some(end) = rest[start..].find("<!-- END ") else {
            break;
        };
        let end = start + end;
        let close = rest[end..].find("-->").map_or(rest.len(), |i| end + i + 3);
        kept.push('\n');
        kept.push_str(&rest[start..close]);
        kept.push('\n');
        rest = &rest[close..];
    }
    kept
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.os_floor_child {
        return os_floor_child();
    }
    if let (true, Some(endpoint), Some(kind)) = (
        args.latency_reader_child,
        &args.reader_endpoint,
        args.reader_kind,
    ) {
        return latency_reader_child(endpoint, kind, args.reader_frames, args.reader_warmup);
    }
    let full = args.full;
    let p = Params {
        mode: if full { "--full" } else { "--quick" },
        ring: if full { 16 << 20 } else { 4 << 20 },
        laps: if full { 300 } else { 100 },
        frame: 1024,
        producers: PRODUCERS,
        fast: 1,
        slow: 5,
        stalled: 2,
        slow_bps: 2 << 20,
        rate: 0,
        frames: 0,
        max_subs: 12,
        drain: Duration::from_secs(if full { 20 } else { 15 }),
        lat_secs: if full { 10 } else { 3 },
    };
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .ok_or("executable has no directory")?
            .to_path_buf(),
    };
    let bins = Bins {
        ringside: bin_dir.join("ringside"),
        naive_server: bin_dir.join("naive-server"),
        naive_load: bin_dir.join("naive-load"),
    };
    let needed: &[&PathBuf] = if args.scale {
        &[&bins.ringside]
    } else {
        &[&bins.ringside, &bins.naive_server, &bins.naive_load]
    };
    for b in needed {
        if !b.exists() {
            return Err(format!(
                "{} not found; build with `cargo build --release -p ringside-naive -p ringside -p ringside-e2e`",
                b.display()
            )
            .into());
        }
    }
    if args.scale {
        return run_scale_only(&args, &bins);
    }
    let budget = budget_bytes(&bins.ringside, &p)?;
    println!(
        "e2e {}: ringside budget for `serve {}` = {} ({budget} bytes); both servers get it as their cgroup hard limit",
        p.mode,
        p.serve_flags().join(" "),
        mib(budget)
    );
    // Fan-out: 1, 10, 100 subscribers at a steady rate; a tenth slow, a tenth stalled.
    let fanout: Vec<(usize, Params)> = [1usize, 10, 100]
        .iter()
        .map(|&n| {
            let mut f = p.clone();
            f.slow = n / 10;
            f.stalled = n / 10;
            f.fast = n - f.slow - f.stalled;
            f.rate = FANOUT_RATE;
            f.frames = FANOUT_RATE * p.lat_secs;
            f.max_subs = 128;
            // Long enough for a slow reader to read a ring's worth after the load.
            f.drain = Duration::from_secs(3 + 3 * p.ring / p.slow_bps / 2);
            (n, f)
        })
        .collect();
    let fan_budget = budget_bytes(&bins.ringside, &fanout[0].1)?;
    let tmp = std::env::temp_dir().join(format!("ringside-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let started = Instant::now();
    println!("limits: raw loopback TCP and memcpy bandwidth ...");
    let limits = measure_limits(if full { 8 << 30 } else { 2 << 30 });
    println!(
        "limits: loopback TCP {:.2} GiB/s, memcpy {:.2} GiB/s",
        limits.tcp_gib_s, limits.memcpy_gib_s
    );
    if args.latency_only {
        let lat = rt.block_on(run_latency_rows(&bins, &p, &tmp));
        rt.shutdown_timeout(Duration::from_secs(2));
        let _ = std::fs::remove_dir_all(&tmp);
        println!("\n{}", latency_table(&lat, p.lat_secs));
        println!("{}", causes_table(&lat));
        println!("total run time {:.1} s", started.elapsed().as_secs_f64());
        return Ok(());
    }
    if args.serving_only {
        let serv = rt.block_on(run_serving(&bins, full, limits.tcp_gib_s, &tmp));
        rt.shutdown_timeout(Duration::from_secs(2));
        let _ = std::fs::remove_dir_all(&tmp);
        println!("\n{}\n{}", serving_table(&serv), idle_table(&serv));
        println!("{}", serving_goals(&serv));
        println!("total run time {:.1} s", started.elapsed().as_secs_f64());
        return Ok(());
    }
    let (results, lat, fan, serv) = rt.block_on(async {
        let mut v = Vec::new();
        for sys in [System::Ringside, System::Naive] {
            v.push(run_system(sys, &bins, &p, budget, &tmp).await);
        }
        let l = run_latency_rows(&bins, &p, &tmp).await;
        let mut f = Vec::new();
        for (n, fp) in &fanout {
            for sys in [System::Ringside, System::Naive] {
                f.push((*n, run_system(sys, &bins, fp, fan_budget, &tmp).await));
            }
        }
        // Serving throughput and idle CPU (serving.rs), after the other scenarios.
        let s = run_serving(&bins, full, limits.tcp_gib_s, &tmp).await;
        (v, l, f, s)
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    // The Unix-datagram baseline (dgram.rs): burst and steady rate, synchronous.
    let dg = run_dgram(&bin_dir, &p, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    let tbl = table(&results, &p);
    println!("\n{tbl}");
    let ltbl = format!(
        "{}\n### Where the sidecar's share of the latency goes\n\n{}",
        latency_table(&lat, p.lat_secs),
        causes_table(&lat)
    );
    println!("{ltbl}");
    let ftbl = fanout_table(&fan, &fanout[0].1, fan_budget);
    println!("{ftbl}");
    let ltbl2 = limits_table(&limits, &results);
    println!("{ltbl2}");
    println!(
        "{}\n{}",
        dgram_table(&dg),
        producer_cost_table(&results, &dg, &p)
    );
    // Exit non-zero on a broken ringside invariant (never on a timing figure).
    let broken = broken_invariants(&results, &fan, &dg);
    let verdict: Result<(), Box<dyn std::error::Error>> = if broken.is_empty() {
        Ok(())
    } else {
        Err(format!("broken invariants:\n- {}", broken.join("\n- ")).into())
    };
    println!("{}\n{}", serving_table(&serv), idle_table(&serv));
    println!("total run time {:.1} s", started.elapsed().as_secs_f64());
    if args.no_write {
        return verdict;
    }
    let data = args.out.join("bench-data");
    std::fs::create_dir_all(&data)?;
    for r in &results {
        if r.skipped.is_none() {
            write_csv(&data.join(format!("burst-{}.csv", r.system)), &r.samples)?;
        }
    }
    plot(&data.join("memory-burst.svg"), &results, budget)?;
    write_plots(&data, &results, &lat, &fan, &dg, &serv)?;
    let m = Measured {
        burst: &results,
        lat: &lat,
        fan: &fan,
        dgram: &dg,
        serving: &serv,
    };
    let mut md = report(&p, &[&tbl, &ltbl, &ftbl, &ltbl2], budget, &m);
    // Sections written by hand or by other tools (`<!-- BEGIN name ... -->` to
    // `<!-- END name -->`, e.g. export-bench) are kept as they are.
    let old = std::fs::read_to_string(args.out.join("benchmarks.md")).unwrap_or_default();
    md.push_str(&kept_sections(&old));
    std::fs::write(args.out.join("benchmarks.md"), md)?;
    println!(
        "wrote {}, {}/burst-*.csv, {}/{{memory-burst,throughput,latency}}.svg",
        args.out.join("benchmarks.md").display(),
        data.display(),
        data.display()
    );
    verdict
}

/// `e2e --scale`: the scale scenario alone.
fn run_scale_only(args: &Args, bins: &Bins) -> Result<(), Box<dyn std::error::Error>> {
    let sp = ScaleParams::new(args.scale_subscribers, args.scale_rate);
    let tmp = std::env::temp_dir().join(format!("ringside-e2e-scale-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let r = rt.block_on(run_scale(bins, &sp, &tmp));
    rt.shutdown_timeout(Duration::from_secs(2));
    let _ = std::fs::remove_dir_all(&tmp);
    let mut command = String::from("target/release/e2e --scale");
    if args.scale_subscribers != 10_000 {
        let _ = write!(command, " --scale-subscribers {}", args.scale_subscribers);
    }
    if args.scale_rate != 200 {
        let _ = write!(command, " --scale-rate {}", args.scale_rate);
    }
    let section = scale_section(&r, &command);
    println!("\n{section}");
    if !args.no_write && r.skipped.is_none() {
        let path = args.out.join("benchmarks.md");
        let md = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, splice_section(&md, &section))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
