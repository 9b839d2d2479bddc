//! The C `rs_send` and `rs_reserve` + `rs_commit` next to the Rust `Producer::send` and
//! `Producer::reserve` + `commit`: same ring, same 64 B payload, same batch method, in one
//! run (issue 4's FFI overhead figure; issue 12's "zero-copy is the fast path in C").
//!
//! ```sh
//! cargo build --release -p ringside-ffi
//! cargo run --release -p ringside-benches --bin ffi_send
//! ```
//!
//! Builds `benches/c/send_bench.c` with gcc against `libringside.a`, starts a ring host with
//! the sidecar's default geometry, then runs rounds of the four loops (the C ones in a child
//! process, the Rust ones in this process), rotating which goes first. Each cell is the
//! median over batches of the mean time per frame. Zero-copy loops copy the same 64 bytes
//! into the reservation with `memcpy` / `copy_from_slice`. Prints a markdown table.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ringside_client::Producer;
use ringside_ring::{HostOptions, RingConfig, RingHost};

const PAYLOAD: usize = 64;
const BATCHES: usize = 31;
const BATCH_SIZE: usize = 100_000;
const ROUNDS: usize = 5;

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

/// How a loop writes a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Write {
    /// Copy in: `rs_send` / `Producer::send`.
    Send,
    /// Zero-copy: reserve, copy the payload in place, commit.
    Reserve,
}

fn run_c(binary: &Path, socket: &Path, write: Write) -> Result<f64, Box<dyn Error>> {
    let output = Command::new(binary)
        .arg(socket)
        .arg(PAYLOAD.to_string())
        .arg(BATCHES.to_string())
        .arg(BATCH_SIZE.to_string())
        .arg(match write {
            Write::Send => "send",
            Write::Reserve => "reserve",
        })
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

fn write_rust(producer: &Producer, payload: &[u8; PAYLOAD], write: Write) {
    match write {
        Write::Send => {
            let _ = producer.send("telemetry", payload);
        }
        Write::Reserve => {
            if let Ok(mut frame) = producer.reserve("telemetry", PAYLOAD) {
                frame.copy_from_slice(payload);
                frame.commit();
            }
        }
    }
}

fn run_rust(socket: &Path, write: Write) -> Result<f64, Box<dyn Error>> {
    let producer = Producer::connect(socket)?;
    if !producer.wait_connected(Duration::from_secs(5)) {
        return Err("the Rust producer did not connect".into());
    }
    let payload = [0x5au8; PAYLOAD];
    producer.send("telemetry", &payload)?;
    for _ in 0..BATCH_SIZE {
        write_rust(&producer, &payload, write);
    }
    let mut per_send = Vec::with_capacity(BATCHES);
    for _ in 0..BATCHES {
        let start = Instant::now();
        for _ in 0..BATCH_SIZE {
            write_rust(&producer, &payload, write);
        }
        per_send.push(start.elapsed().as_nanos() as f64 / BATCH_SIZE as f64);
    }
    per_send.sort_by(f64::total_cmp);
    Ok(per_send[BATCHES / 2])
}

/// Which library a loop calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// libringside.a from a C program.
    C,
    /// ringside-client in this process.
    Rust,
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
    println!(
        "| round | C rs_send | C rs_reserve+rs_commit | Rust send | Rust reserve+commit | C zero-copy / C send |"
    );
    println!("|---|---|---|---|---|---|");
    let loops = [
        (Side::C, Write::Send),
        (Side::C, Write::Reserve),
        (Side::Rust, Write::Send),
        (Side::Rust, Write::Reserve),
    ];
    let mut all = vec![Vec::new(); loops.len()];
    for round in 0..ROUNDS {
        // Rotate which loop goes first, so drift on a shared machine hits all alike.
        let mut ns = [0.0f64; 4];
        for k in 0..loops.len() {
            let i = (k + round) % loops.len();
            let (side, write) = loops[i];
            ns[i] = match side {
                Side::C => run_c(&binary, &socket, write)?,
                Side::Rust => run_rust(&socket, write)?,
            };
            all[i].push(ns[i]);
        }
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}× |",
            round + 1,
            ns[0],
            ns[1],
            ns[2],
            ns[3],
            ns[1] / ns[0]
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let m: Vec<f64> = all.iter_mut().map(median).collect();
    println!(
        "| median of rounds | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}× |",
        m[0],
        m[1],
        m[2],
        m[3],
        m[1] / m[0]
    );
    println!(
        "\nns per frame: {PAYLOAD} B payload, topic `telemetry`, {BATCHES} batches of {BATCH_SIZE} frames per loop per round; 64 MiB ring, payload check on."
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
