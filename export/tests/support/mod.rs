//! Test support for the exporter tests: a real nats-server per test (free
//! loopback port, temporary store directory), real `ringside serve`, `load`,
//! `export` and `tail` processes, and an independent reader of the raw
//! stream (plain async-nats, not the crate's reader) that checks every
//! sequence number is in the stream exactly once.
//!
//! Kept local to this crate for now; the shared harness in
//! `tests/src/sidecar_harness.rs` has the same process helpers for the sidecar.
#![allow(dead_code)]

use async_nats::jetstream::{self, consumer::pull};
use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt as _;

/// Path of the `ringside` binary, built once per test process into this
/// workspace's target directory (same profile as the test).
pub fn ringside_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in target/<profile>/deps")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "ringside",
            "--bin",
            "ringside",
            "--manifest-path",
        ])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build -p ringside");
        assert!(status.success(), "cargo build -p ringside failed");
        let bin = profile_dir.join("ringside");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
}

/// The nats-server binary, or a panic naming the package to install.
pub fn nats_server_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nats-server not found on PATH or in /usr/sbin: install the Debian package `nats-server` (apt-get install -y nats-server); these tests need a real server"
            )
        })
}

/// A unique temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `/tmp/rsx-<name>-<pid>-<n>`.
    pub fn new(name: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "rsx-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }

    /// A path inside.
    pub fn join(&self, s: &str) -> PathBuf {
        self.0.join(s)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Sends a signal to a process.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

fn wait_exit(child: &mut Child, within: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_port(addr: SocketAddr, child: &mut Child, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited early ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "{what} not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A nats-server with JetStream on a loopback port and its own store directory.
#[derive(Debug)]
pub struct NatsServer {
    pub child: Option<Child>,
    pub port: u16,
    pub store: PathBuf,
    pub log: PathBuf,
    extra: Vec<String>,
    jetstream: bool,
}

impl NatsServer {
    /// Starts `nats-server -js` with `extra` arguments.
    pub fn start(dir: &TempDir, extra: &[&str]) -> NatsServer {
        Self::start_with(dir, extra, true)
    }

    /// Starts nats-server, with or without JetStream.
    pub fn start_with(dir: &TempDir, extra: &[&str], jetstream: bool) -> NatsServer {
        let mut s = NatsServer {
            child: None,
            port: free_port(),
            store: dir.join("nats-store"),
            log: dir.join("nats.log"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            jetstream,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("nats log");
        let mut cmd = Command::new(nats_server_bin());
        cmd.args(["-a", "127.0.0.1", "-p", &self.port.to_string()]);
        if self.jetstream {
            cmd.arg("-js").arg("-sd").arg(&self.store);
        }
        let mut child = cmd
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn nats-server");
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().expect("addr");
        wait_port(addr, &mut child, "nats-server", &self.log);
        self.child = Some(child);
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL and wait.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `ringside serve`.
#[derive(Debug)]
pub struct Sidecar {
    pub child: Child,
    pub addr: SocketAddr,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Sidecar {
    /// Starts `serve` with `extra` flags on a fresh port, socket `dir/ringside.sock`.
    pub fn start(dir: &TempDir, extra: &[&str]) -> Sidecar {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        Self::start_at(
            addr,
            dir.join("ringside.sock"),
            dir.join("serve.log"),
            extra,
        )
    }

    fn start_at(addr: SocketAddr, socket: PathBuf, log: PathBuf, extra: &[&str]) -> Sidecar {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log");
        let mut cmd = Command::new(ringside_bin());
        cmd.arg("serve");
        if !extra.contains(&"--adopt-grace") {
            cmd.args(["--adopt-grace", "300ms"]);
        }
        let mut child = cmd
            .arg("--socket")
            .arg(&socket)
            .arg("--listen")
            .arg(addr.to_string())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn ringside serve");
        wait_port(addr, &mut child, "ringside serve", &log);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "no producer socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Sidecar {
            child,
            addr,
            socket,
            log,
        }
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A new `serve` on the same address and socket (after [`kill9`](Self::kill9)).
    pub fn restart(&mut self, extra: &[&str]) {
        self.kill9();
        let next = Self::start_at(self.addr, self.socket.clone(), self.log.clone(), extra);
        drop(std::mem::replace(self, next));
    }

    /// The gRPC endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `ringside load --json --quiet` with `args`.
pub fn spawn_load(socket: &Path, args: &[&str]) -> Child {
    Command::new(ringside_bin())
        .arg("load")
        .arg("--socket")
        .arg(socket)
        .args(["--json", "--quiet"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringside load")
}

/// Waits for `load` and returns the frames it wrote.
pub fn finish_load(mut child: Child) -> u64 {
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    let status = child.wait().expect("wait load");
    assert!(status.success(), "load failed ({status}): {out}");
    let json: serde_json::Value = serde_json::from_str(out.trim()).expect("load --json output");
    assert_eq!(json["dropped_not_connected"].as_u64(), Some(0), "{json}");
    json["sent"].as_u64().expect("sent")
}

/// A running `ringside export`.
#[derive(Debug)]
pub struct Exporter {
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Exporter {
    /// Starts `ringside export` against `sidecar` and `nats` with `extra` flags.
    pub fn start(
        dir: &TempDir,
        sidecar: &Sidecar,
        nats: &NatsServer,
        stream: &str,
        prefix: &str,
        extra: &[&str],
    ) -> Exporter {
        static N: AtomicU32 = AtomicU32::new(0);
        let log = dir.join(&format!("export-{}.log", N.fetch_add(1, Ordering::Relaxed)));
        let child = Command::new(ringside_bin())
            .arg("export")
            .args(["--endpoint", &sidecar.endpoint(), "--nats-url", &nats.url()])
            .args(["--stream", stream, "--subject-prefix", prefix])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn ringside export");
        Exporter {
            child: Some(child),
            log,
        }
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL and wait.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        signal(c.id(), nix::sys::signal::Signal::SIGTERM);
        wait_exit(&mut c, Duration::from_secs(30), "ringside export")
    }

    /// Waits for it to exit by itself.
    pub fn wait(&mut self, within: Duration) -> ExitStatus {
        let mut c = self.child.take().expect("running");
        wait_exit(&mut c, within, "ringside export")
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `ringside export` to completion (for start-up errors) and returns (status, stderr).
pub fn export_once(
    sidecar: &Sidecar,
    url: &str,
    stream: &str,
    prefix: &str,
    extra: &[&str],
) -> (ExitStatus, String) {
    let mut child = Command::new(ringside_bin())
        .arg("export")
        .args(["--endpoint", &sidecar.endpoint(), "--nats-url", url])
        .args(["--stream", stream, "--subject-prefix", prefix, "--quiet"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringside export");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = wait_exit(&mut child, Duration::from_secs(30), "ringside export");
    (status, err)
}

/// The total of `ringside export --print-budget` for these flags.
pub fn export_budget(args: &[&str]) -> u64 {
    let out = Command::new(ringside_bin())
        .args([
            "export",
            "--print-budget",
            "--nats-url",
            "nats://127.0.0.1:1",
            "--stream",
            "S",
            "--subject-prefix",
            "p",
        ])
        .args(args)
        .output()
        .expect("export --print-budget");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.trim_start().starts_with("total"))
        .and_then(|line| line.split('(').nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no budget total in {text}"))
}

/// The process's RssAnon in bytes.
pub fn rss_anon(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let l = s.lines().find(|l| l.starts_with("RssAnon:"))?;
    Some(l.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// A current-thread tokio runtime for the test's own NATS calls.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// What the raw stream holds for one prefix, read with plain async-nats
/// (headers parsed here, independently of the crate's reader).
#[derive(Debug, Default)]
pub struct RawStream {
    /// Per ring: seq → times a frame record (or a frame inside a batch record) carried it.
    pub frames: BTreeMap<u64, BTreeMap<u64, u32>>,
    /// Per ring: (first, frames, reason) of each loss record.
    pub losses: BTreeMap<u64, Vec<(u64, u64, String)>>,
    /// Subjects seen (distinct, at most 1000).
    pub subjects: std::collections::BTreeSet<String>,
    /// Messages read.
    pub messages: u64,
    /// Nats-Msg-Id values seen twice.
    pub duplicate_ids: u64,
}

impl RawStream {
    /// Reads every message under `<prefix>.>` of `stream`.
    pub fn read(url: &str, stream: &str, prefix: &str) -> RawStream {
        Self::read_ca(url, None, stream, prefix)
    }

    /// Like [`read`](Self::read), verifying the server's TLS certificate with `ca`.
    pub fn read_ca(url: &str, ca: Option<&str>, stream: &str, prefix: &str) -> RawStream {
        rt().block_on(async {
            let mut opts = async_nats::ConnectOptions::new();
            if let Some(ca) = ca {
                opts = opts.add_root_certificates(ca.into()).require_tls(true);
            }
            let client = opts.connect(url).await.expect("connect to nats");
            let js = jetstream::new(client);
            let Ok(s) = js.get_stream(stream).await else {
                // Not created yet (the exporter creates it): nothing stored.
                return RawStream::default();
            };
            let consumer = s
                .create_consumer(pull::Config {
                    filter_subject: format!("{prefix}.>"),
                    ack_policy: jetstream::consumer::AckPolicy::None,
                    ..Default::default()
                })
                .await
                .expect("consumer");
            let mut raw = RawStream::default();
            let mut ids = std::collections::HashSet::new();
            loop {
                let mut batch = consumer
                    .fetch()
                    .max_messages(1000)
                    .messages()
                    .await
                    .expect("fetch");
                let mut got = 0;
                while let Some(m) = batch.next().await {
                    let m = m.expect("message");
                    got += 1;
                    raw.absorb(&m, prefix, &mut ids);
                }
                if got == 0 {
                    break;
                }
            }
            raw
        })
    }

    fn absorb(
        &mut self,
        m: &jetstream::Message,
        prefix: &str,
        ids: &mut std::collections::HashSet<String>,
    ) {
        use prost::Message as _;
        self.messages += 1;
        if self.subjects.len() < 1000 {
            self.subjects.insert(m.subject.to_string());
        }
        let h = m.headers.as_ref().expect("every record has headers");
        let get = |n: &str| {
            h.get(
                n.parse::<async_nats::header::HeaderName>()
                    .expect("header name"),
            )
            .map(|v| v.as_str().to_string())
            .unwrap_or_else(|| panic!("{n} missing on {}", m.subject))
        };
        let num = |n: &str| {
            get(n)
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{n} not a number"))
        };
        if !ids.insert(get("Nats-Msg-Id")) {
            self.duplicate_ids += 1;
        }
        let ring = u64::from_str_radix(&get("Ringside-Ring"), 16).expect("ring hex");
        let last = m
            .subject
            .as_str()
            .strip_prefix(prefix)
            .and_then(|s| s.strip_prefix('.'))
            .expect("under the prefix");
        match last {
            "_loss" => self.losses.entry(ring).or_default().push((
                num("Ringside-Seq"),
                num("Ringside-Frames"),
                get("Ringside-Reason"),
            )),
            "_batch" => {
                let b =
                    ringside_proto::v1::Batch::decode(m.payload.clone()).expect("batch payload");
                for f in b.frames {
                    *self
                        .frames
                        .entry(ring)
                        .or_default()
                        .entry(f.seq)
                        .or_default() += 1;
                }
            }
            _ => {
                let seq = num("Ringside-Seq");
                assert_eq!(get("Nats-Msg-Id"), format!("{ring:016x}:{seq}"));
                *self.frames.entry(ring).or_default().entry(seq).or_default() += 1;
            }
        }
    }

    /// Frame records (frames inside batches counted one by one).
    pub fn frame_count(&self) -> u64 {
        self.frames
            .values()
            .flat_map(|m| m.values())
            .map(|&n| u64::from(n))
            .sum()
    }

    /// Frames reported lost.
    pub fn lost(&self) -> u64 {
        self.losses.values().flatten().map(|l| l.1).sum()
    }

    /// Checks that, for the one ring in the stream, frames and losses cover
    /// `[first, first + total)` exactly once each, and returns the lost count.
    pub fn assert_exactly_once(&self, first: u64, total: u64) -> u64 {
        assert_eq!(
            self.duplicate_ids, 0,
            "a Nats-Msg-Id is in the stream twice"
        );
        assert!(
            self.frames.len() + self.losses.len() <= 2,
            "more than one ring: {:?}",
            self.frames.keys()
        );
        let ring = *self
            .frames
            .keys()
            .next()
            .or(self.losses.keys().next())
            .expect("some record");
        let mut count: BTreeMap<u64, u32> = self.frames.get(&ring).cloned().unwrap_or_default();
        for (f, n, _) in self.losses.get(&ring).into_iter().flatten() {
            for s in *f..f + n {
                *count.entry(s).or_default() += 1;
            }
        }
        let dup: Vec<_> = count
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(s, n)| (*s, *n))
            .take(10)
            .collect();
        assert!(
            dup.is_empty(),
            "sequences accounted more than once (seq, times): {dup:?}"
        );
        let missing: Vec<u64> = (first..first + total)
            .filter(|s| !count.contains_key(s))
            .take(10)
            .collect();
        assert!(
            missing.is_empty(),
            "sequences in no record (first 10): {missing:?}; losses {:?}",
            self.losses.get(&ring)
        );
        let extra: Vec<u64> = count
            .keys()
            .filter(|s| **s < first || **s >= first + total)
            .copied()
            .take(10)
            .collect();
        assert!(
            extra.is_empty(),
            "sequences outside [{first}, {}): {extra:?}",
            first + total
        );
        self.lost()
    }
}

/// Waits until `done(raw)` holds for the stream (read every 500 ms), up to `within`.
pub fn wait_stream(
    url: &str,
    stream: &str,
    prefix: &str,
    within: Duration,
    done: impl Fn(&RawStream) -> bool,
) -> RawStream {
    wait_stream_ca(url, None, stream, prefix, within, done)
}

/// Like [`wait_stream`], over TLS verified with `ca`.
pub fn wait_stream_ca(
    url: &str,
    ca: Option<&str>,
    stream: &str,
    prefix: &str,
    within: Duration,
    done: impl Fn(&RawStream) -> bool,
) -> RawStream {
    let deadline = Instant::now() + within;
    loop {
        let raw = RawStream::read_ca(url, ca, stream, prefix);
        if done(&raw) || Instant::now() > deadline {
            return raw;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Runs `ringside tail` with `args` and returns its stdout and stderr.
pub fn tail(args: &[&str]) -> (String, String) {
    let out = Command::new(ringside_bin())
        .arg("tail")
        .args(args)
        .output()
        .expect("ringside tail");
    assert!(
        out.status.success(),
        "tail failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A small xorshift generator (seeded from the clock; the seed is printed).
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from the clock, or from `RINGSIDE_TEST_SEED`.
    pub fn new() -> Rng {
        let seed = std::env::var("RINGSIDE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1
            });
        println!("random seed {seed} (set RINGSIDE_TEST_SEED to repeat)");
        Rng(seed)
    }

    /// A number in `[lo, hi)`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo).max(1)
    }
}
