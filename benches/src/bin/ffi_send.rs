//! The C `rs_send` next to the Rust `Producer::send`, same ring, same payload, same batch
//! method, alternating in one run (issue 4's FFI overhead figure).
//!
//! ```sh
//! cargo build --release -p ringside-ffi
//! cargo run --release -p ringside-benches --bin ffi_send
//! ```
//!
//! Builds `benches/c/send_bench.c` with gcc against `libringside.a`, starts a ring host with
//! the sidecar's default geometry, then runs three rounds of: the C program (a child
//! process), then the same loop in this process. Each round reports the median over batches
//! of the mean time per send. Prints a markdown table.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ringside_client::Producer;
use ringside_ring::{HostOptions, RingConfig, RingHost};

const PAYLOAD: usize = 64;
const BATCHES: usize = 31;
const BATCH_SIZE: usize = 100_000;
const ROUNDS: usize = 4;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

fn build_c_bench(root: &Path, out: &Path) -> Result<(), Box<dyn Error>> {
    let lib = target_dir(root).join("release").join("libringside.a");
    if !lib.exists() {
        return Err(format!(
            "{} is missing: run `cargo build --release -p ringside-ffi` first",
            lib.display()
        )
        .into());
    }
    let status = Command::new("gcc")
        .args(["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(root.join("ffi/include"))
        .arg(root.join("benches/c/send_bench.c"))
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(out)
        .status()?;
    if !status.success() {
        return Err("gcc failed to build benches/c/send_bench.c".into());
    }
    Ok(())
}

fn run_c(binary: &Path, socket: &Path) -> Result<f64, Box<dyn Error>> {
    let output = Command::new(binary)
        .arg(socket)
        .arg(PAYLOAD.to_string())
        .arg(BATCHES.to_string())
        .arg(BATCH_SIZE.to_string())
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "send_bench failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("unexpected send_bench output: {text}").into())
}

fn run_rust(socket: &Path) -> Result<f64, Box<dyn Error>> {
    let producer = Producer::connect(socket)?;
    if !producer.wait_connected(Duration::from_secs(5)) {
        return Err("the Rust producer did not connect".into());
    }
    let payload = [0x5au8; PAYLOAD];
    for _ in 0..BATCH_SIZE {
        producer.send("telemetry", &payload)?;
    }
    let mut per_send = Vec::with_capacity(BATCHES);
    for _ in 0..BATCHES {
        let start = Instant::now();
        for _ in 0..BATCH_SIZE {
            let _ = producer.send("telemetry", &payload);
        }
        per_send.push(start.elapsed().as_nanos() as f64 / BATCH_SIZE as f64);
    }
    per_send.sort_by(f64::total_cmp);
    Ok(per_send[BATCHES / 2])
}

fn main() -> Result<(), Box<dyn Error>> {
    let root = workspace_root();
    let dir = std::env::temp_dir().join(format!("ringside-ffi-send-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let binary = dir.join("send_bench");
    build_c_bench(&root, &binary)?;
    let socket = dir.join("ring.sock");
    let _host = RingHost::start(HostOptions {
        socket_path: socket.clone(),
        ring: RingConfig::default(),
        adopt_grace: Duration::ZERO,
        ..HostOptions::default()
    })?;
    println!("| round | C rs_send ns (median) | Rust send ns (median) | C − Rust ns |");
    println!("|---|---|---|---|");
    for round in 1..=ROUNDS {
        // Alternate which side goes first, so drift on a shared machine hits both alike.
        let (c, rust) = if round % 2 == 1 {
            let c = run_c(&binary, &socket)?;
            (c, run_rust(&socket)?)
        } else {
            let rust = run_rust(&socket)?;
            (run_c(&binary, &socket)?, rust)
        };
        println!("| {round} | {c:.1} | {rust:.1} | {:+.1} |", c - rust);
    }
    println!(
        "\n{PAYLOAD} B payload, topic `telemetry`, {BATCHES} batches of {BATCH_SIZE} sends per side per round; 64 MiB ring, payload check on."
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
