//! The C library against the real sidecar: this crate's `ringside-under-test` binary (the
//! `ringside` command line) serving `ringside serve`, read back through a real gRPC
//! subscriber (`ringside tail --json`). Runs on a fresh `cargo test --workspace`: cargo
//! builds the binary and the C libraries (`ringside-ffi` is a dev-dependency) with the tests.
//!
//! - `ffi_test.c` and `examples/producer.c` end to end, every frame checked;
//! - a sidecar restarted with another `--ring-size` replaces the ring: the frames the C
//!   producer wrote in between (each `RS_OK`) are lost, and `rs_stats.lost_ring_replaced`
//!   counts exactly them; restarted with the same flags, it adopts the ring, serves them
//!   and counts nothing lost.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use ringside_tests::c_build::{self, Link};
use ringside_tests::ffi_support::{
    FakeListener, Seen, now_ns, parse_ffi_test_manifest, parse_producer_manifest, run_program,
    start_host, tail_all, verify,
};
use ringside_tests::sidecar::{Sidecar, TempDir};

/// Flags of the sidecars here: ffi_test.c assumes a 4 KiB max payload.
const SERVE: &[&str] = &["--ring-size", "4MiB", "--max-payload", "4KiB"];

fn compile(rel: &str, dir: &Path, link: Link) -> PathBuf {
    c_build::compile(&c_build::ffi_dir().join(rel), dir, link, &[])
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn sidecar_binary_ffi_test() {
    let dir = TempDir::new("ffi-e2e");
    let serve = Sidecar::start(&dir, SERVE);
    // The refusal and protocol cases need peers the real sidecar cannot play.
    let busy = start_host(dir.path(), "busy.sock", 1);
    let garbage_path = dir.join("garbage.sock");
    let _garbage = FakeListener::garbage(&garbage_path);
    let exe = compile("tests/c/ffi_test.c", dir.path(), Link::Shared);
    let mut cmd = Command::new(&exe);
    cmd.arg(&serve.socket)
        .arg(&busy.socket)
        .arg(&garbage_path)
        .env("RINGSIDE_SOCKET", &serve.socket)
        .env_remove("RUST_BACKTRACE");
    let started = now_ns();
    let out = run_program(cmd);
    let ended = now_ns();
    let stdout = String::from_utf8(out.stdout).expect("stdout is UTF-8");
    let expected = parse_ffi_test_manifest(&stdout);
    assert!(expected.len() > 800, "manifest too short");
    let seen = tail_all(&serve.endpoint());
    verify(&seen, &expected, started, ended);
}

#[test]
fn sidecar_binary_producer_example() {
    let dir = TempDir::new("ffi-example");
    let serve = Sidecar::start(&dir, SERVE);
    let exe = compile("examples/producer.c", dir.path(), Link::Static);
    // NULL socket path: the example finds the sidecar through the environment.
    let mut cmd = Command::new(&exe);
    cmd.env("RINGSIDE_SOCKET", &serve.socket);
    let started = now_ns();
    let out = run_program(cmd);
    let ended = now_ns();
    let expected = parse_producer_manifest(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        expected.len(),
        20,
        "producer.c sends 10 samples twice by default"
    );
    verify(&tail_all(&serve.endpoint()), &expected, started, ended);
}

/// `ffi/tests/c/producer_ctl.c`, driven line by line.
struct Ctl {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Ctl {
    fn start(exe: &Path, socket: &Path) -> Ctl {
        let mut child = Command::new(exe)
            .arg(socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", exe.display()));
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Ctl {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one command and returns its answer line.
    fn cmd(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").expect("write a command");
        self.stdin.flush().expect("flush");
        let mut answer = String::new();
        let n = self.stdout.read_line(&mut answer).expect("read an answer");
        assert!(n > 0, "producer_ctl exited during `{line}`");
        answer.trim_end().to_owned()
    }

    /// One `key=value` of an answer line.
    fn field(answer: &str, key: &str) -> u64 {
        answer
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key}= in {answer:?}"))
    }

    fn quit(mut self) {
        writeln!(self.stdin, "quit").expect("write quit");
        let status = self.child.wait().expect("wait for producer_ctl");
        assert!(status.success(), "producer_ctl exited with {status}");
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn topics(seen: &[Seen]) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for frame in seen {
        let group = frame.topic.clone();
        *counts.entry(group).or_insert(0) += 1;
    }
    counts
}

/// Writes `before`, kills the sidecar, writes `between` (each RS_OK: the ring stays
/// mapped), restarts the sidecar with `restart_flags`, writes `after`. Returns the
/// producer's final stats line and what a subscriber of the new sidecar sees.
fn restart_run(name: &str, restart_flags: &[&str]) -> (String, Vec<Seen>, (u64, u64)) {
    let dir = TempDir::new(name);
    let mut first = Sidecar::start(&dir, SERVE);
    let exe = compile("tests/c/producer_ctl.c", dir.path(), Link::Shared);
    let mut ctl = Ctl::start(&exe, &first.socket);
    assert_eq!(ctl.cmd("wait-sidecar 10000"), "WAIT 0");
    assert_eq!(
        ctl.cmd("send 10 before"),
        "SENT ok=10 not_connected=0 other=0"
    );
    let before = ctl.cmd("stats");
    first.kill();
    assert_eq!(ctl.cmd("wait-detached 10000"), "DETACHED 1");
    // No sidecar: the ring is still mapped, so every send succeeds.
    assert_eq!(
        ctl.cmd("send 25 between"),
        "SENT ok=25 not_connected=0 other=0"
    );
    drop(first);
    let second = Sidecar::start(&dir, restart_flags);
    assert_eq!(ctl.cmd("wait-sidecar 15000"), "WAIT 0");
    let reconnected = ctl.cmd("stats");
    assert_eq!(Ctl::field(&reconnected, "reconnects"), 1, "{reconnected}");
    assert_eq!(ctl.cmd("send 5 after"), "SENT ok=5 not_connected=0 other=0");
    let stats = ctl.cmd("stats");
    ctl.quit();
    let seen = tail_all(&second.endpoint());
    let rings = (
        Ctl::field(&before, "ring_id"),
        Ctl::field(&stats, "ring_id"),
    );
    (stats, seen, rings)
}

/// Restarted with another `--ring-size`, the sidecar cannot adopt the ring: the 25 frames
/// written while it was away got RS_OK and are gone. They are counted, exactly.
#[test]
fn ring_replaced_by_a_resized_sidecar_counts_the_lost_frames() {
    let (stats, seen, (old_ring, new_ring)) = restart_run(
        "ffi-resize",
        &["--ring-size", "8MiB", "--max-payload", "4KiB"],
    );
    assert_ne!(old_ring, new_ring, "a resized sidecar makes a new ring");
    assert_eq!(Ctl::field(&stats, "sent"), 40, "{stats}");
    assert_eq!(Ctl::field(&stats, "lost_ring_replaced"), 25, "{stats}");
    let counts = topics(&seen);
    assert_eq!(
        counts,
        [("after".to_owned(), 5)].into_iter().collect(),
        "the new ring holds only what was written after the switch"
    );
}

/// Restarted with the same flags (and a grace period the producer's 500 ms backoff fits
/// in), the sidecar adopts the ring: everything written is served, nothing counted lost.
#[test]
fn ring_adopted_by_a_restarted_sidecar_loses_nothing() {
    let mut flags = SERVE.to_vec();
    flags.extend(["--adopt-grace", "3s"]);
    let (stats, seen, (old_ring, new_ring)) = restart_run("ffi-adopt", &flags);
    assert_eq!(old_ring, new_ring, "the restarted sidecar adopts the ring");
    assert_eq!(Ctl::field(&stats, "sent"), 40, "{stats}");
    assert_eq!(Ctl::field(&stats, "lost_ring_replaced"), 0, "{stats}");
    let counts = topics(&seen);
    let expected: std::collections::BTreeMap<String, usize> = [
        ("after".to_owned(), 5),
        ("before".to_owned(), 10),
        ("between".to_owned(), 25),
    ]
    .into_iter()
    .collect();
    assert_eq!(counts, expected);
}
