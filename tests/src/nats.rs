//! The exporter's harness (`tests/tests/export_*.rs`): a real nats-server per test (a free
//! loopback port, a temporary store directory), real `ringside export` and `ringside tail
//! --nats-url` processes next to the sidecar harness's `serve` and `load`
//! ([`crate::sidecar`]), and an independent reader of the raw stream (plain async-nats, not
//! the crate's reader) that checks every sequence number is in the stream exactly once.
//!
//! nats-server comes from the Debian package `nats-server` (`-js` for JetStream). Without
//! it, [`server_or_skip`] skips the test with a message naming the package, or fails it
//! when `RINGSIDE_REQUIRE_TOOLS` is set ([`crate::tools`]).

use crate::sidecar::{Sidecar, TempDir, finish_load, free_port, ringside_bin};
use async_nats::jetstream::{self, consumer::pull};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Read as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt as _;

/// The nats-server binary on `PATH` or in `/usr/sbin`, `/usr/bin`, `/usr/local/bin`, or why
/// not.
pub fn server_bin() -> Result<PathBuf, String> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "nats-server not found on PATH or in /usr/sbin: install the Debian package \
             `nats-server` (apt-get install -y nats-server); the exporter's tests need a real \
             server"
                .to_string()
        })
}

/// The nats-server binary, or `None` after [`crate::tools::skip_or_fail`] (which fails the
/// test instead when `RINGSIDE_REQUIRE_TOOLS` is set). A test starts with
/// `let Some(bin) = nats::server_or_skip() else { return };`.
pub fn server_or_skip() -> Option<PathBuf> {
    match server_bin() {
        Ok(bin) => Some(bin),
        Err(why) => {
            crate::tools::skip_or_fail(&why);
            None
        }
    }
}

/// Waits until `addr` accepts TCP connections, panicking with the log when `child` exits
/// first or after 30 s.
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
        assert!(Instant::now() < deadline, "{what} not ready on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits up to `within` for `child` to exit; kills it and panics after that.
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

/// SIGSTOP to `child`, then waits (at most 10 s) until `/proc` shows every one of its
/// threads stopped: the signal stops a running thread only when it next enters the
/// kernel.
fn stop(child: &Child) {
    crate::sidecar::signal(child, libc::SIGSTOP);
    let tasks = format!("/proc/{}/task", child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all_stopped = std::fs::read_dir(&tasks).is_ok_and(|d| {
            d.flatten().all(|t| {
                std::fs::read_to_string(t.path().join("stat"))
                    .ok()
                    .and_then(|st| {
                        // `pid (comm) S ...`: the state follows the last `)`.
                        let (_, rest) = st.rsplit_once(')')?;
                        rest.trim_start().chars().next()
                    })
                    .is_some_and(|state| state == 'T' || state == 't')
            })
        });
        if all_stopped {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "process {} did not stop after SIGSTOP",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A nats-server on a loopback port, with JetStream and its own store directory unless
/// started without it.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    bin: PathBuf,
    /// Its client port on 127.0.0.1.
    pub port: u16,
    /// JetStream's store directory.
    pub store: PathBuf,
    /// Where its stderr goes.
    pub log: PathBuf,
    extra: Vec<String>,
    jetstream: bool,
}

impl NatsServer {
    /// Starts `bin -js` with `extra` arguments.
    pub fn start(bin: &Path, dir: &TempDir, extra: &[&str]) -> NatsServer {
        Self::start_with(bin, dir, extra, true)
    }

    /// Starts nats-server, with or without JetStream.
    pub fn start_with(bin: &Path, dir: &TempDir, extra: &[&str], jetstream: bool) -> NatsServer {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let mut s = NatsServer {
            child: None,
            bin: bin.to_path_buf(),
            port: free_port(),
            store: dir.join(&format!("nats-store-{n}")),
            log: dir.join(&format!("nats-{n}.log")),
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
            .expect("nats-server log file");
        let mut cmd = Command::new(&self.bin);
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

    /// Starts again on the same port with the same store (killing it first if it runs).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The process id (0 when not running).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGSTOP, returning once every thread of it is stopped: the server stops reading
    /// its sockets (clients' writes pile up in the kernel's buffers), as a server
    /// stalled by a loaded machine would.
    pub fn pause(&self) {
        if let Some(c) = &self.child {
            stop(c);
        }
    }

    /// SIGCONT after [`pause`](Self::pause).
    pub fn resume(&self) {
        if let Some(c) = &self.child {
            crate::sidecar::signal(c, libc::SIGCONT);
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `ringside export`.
#[derive(Debug)]
pub struct Exporter {
    child: Option<Child>,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Exporter {
    /// Starts `ringside export` against `sidecar` and `nats` (stream `stream`, subject
    /// prefix `prefix`) with `extra` flags, logging at `info` into a file in `dir`.
    pub fn start(
        dir: &TempDir,
        sidecar: &Sidecar,
        nats: &NatsServer,
        stream: &str,
        prefix: &str,
        extra: &[&str],
    ) -> Exporter {
        Self::start_url(dir, sidecar, &nats.url(), stream, prefix, extra)
    }

    /// Like [`start`](Self::start), with the NATS URL given (a [`HoldingProxy`]'s, say).
    pub fn start_url(
        dir: &TempDir,
        sidecar: &Sidecar,
        url: &str,
        stream: &str,
        prefix: &str,
        extra: &[&str],
    ) -> Exporter {
        static N: AtomicU32 = AtomicU32::new(0);
        let log = dir.join(&format!("export-{}.log", N.fetch_add(1, Ordering::Relaxed)));
        let child = Command::new(ringside_bin())
            .arg("export")
            .args(["--endpoint", &sidecar.endpoint(), "--nats-url", url])
            .args(["--stream", stream, "--subject-prefix", prefix])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("exporter log file"))
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

    /// The process id (0 once it was stopped or killed).
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

    /// SIGTERM and wait (at most 30 s) for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("the exporter runs");
        crate::sidecar::signal(&c, libc::SIGTERM);
        wait_exit(&mut c, Duration::from_secs(30), "ringside export")
    }

    /// SIGSTOP, returning once every thread of it is stopped: the exporter is frozen (it
    /// sees no acknowledgement, publishes nothing).
    pub fn pause(&self) {
        if let Some(c) = &self.child {
            stop(c);
        }
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits (at most 30 s) until its stderr contains `needle`; panics with the log when it
    /// exits or the time is up.
    pub fn wait_log(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.stderr().contains(needle) {
            assert!(self.running(), "exporter exited:\n{}", self.stderr());
            assert!(
                Instant::now() < deadline,
                "no `{needle}` in:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A TCP proxy in front of nats-server that can hold back what clients send: the bytes
/// of a client that died, which a server under load had not read from its socket yet.
/// While holding, it reads from the client and keeps the bytes; on
/// [`release`](Self::release) it forwards them, and closes the server side of connections
/// whose client is gone, as a server reading its backlog and then the end of the stream
/// would see them. Bytes from the server are always forwarded.
#[derive(Debug)]
pub struct HoldingProxy {
    /// The port clients connect to (127.0.0.1).
    pub port: u16,
    state: std::sync::Arc<(std::sync::Mutex<ProxyState>, std::sync::Condvar)>,
}

#[derive(Debug, Default)]
struct ProxyState {
    holding: bool,
    /// Bytes held per connection (index = connection number).
    held: Vec<Vec<u8>>,
}

impl HoldingProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub fn start(upstream: u16) -> HoldingProxy {
        use std::sync::{Arc, Condvar, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy listens");
        let port = listener.local_addr().expect("proxy address").port();
        let state = Arc::new((Mutex::new(ProxyState::default()), Condvar::new()));
        let st = Arc::clone(&state);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let n = {
                    let mut s = st.0.lock().expect("proxy state");
                    s.held.push(Vec::new());
                    s.held.len() - 1
                };
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut &s2, &mut &c2);
                });
                let st = Arc::clone(&st);
                std::thread::spawn(move || Self::pump(n, client, server, &st));
            }
        });
        HoldingProxy { port, state }
    }

    fn pump(
        n: usize,
        mut client: TcpStream,
        mut server: TcpStream,
        st: &(std::sync::Mutex<ProxyState>, std::sync::Condvar),
    ) {
        use std::io::Write as _;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let got = client.read(&mut buf).unwrap_or(0);
            let mut s = st.0.lock().expect("proxy state");
            if got == 0 {
                // The client is gone: once nothing is held, the server reads the end.
                while s.holding {
                    s = st.1.wait(s).expect("proxy state");
                }
                let held = std::mem::take(&mut s.held[n]);
                drop(s);
                let _ = server.write_all(&held);
                let _ = server.shutdown(std::net::Shutdown::Both);
                return;
            }
            if s.holding {
                s.held[n].extend_from_slice(&buf[..got]);
                continue;
            }
            let held = std::mem::take(&mut s.held[n]);
            drop(s);
            if server.write_all(&held).is_err() || server.write_all(&buf[..got]).is_err() {
                return;
            }
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// From now on, keeps what clients send instead of forwarding it.
    pub fn hold(&self) {
        self.state.0.lock().expect("proxy state").holding = true;
    }

    /// Bytes held so far, over all connections.
    pub fn held_bytes(&self) -> usize {
        let s = self.state.0.lock().expect("proxy state");
        s.held.iter().map(Vec::len).sum()
    }

    /// Forwards what was held (connections whose client is gone then close) and stops
    /// holding.
    pub fn release(&self) {
        self.state.0.lock().expect("proxy state").holding = false;
        self.state.1.notify_all();
    }
}

/// Runs `ringside export --quiet` to completion (for start-up errors) and returns its exit
/// status and stderr.
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

/// Waits for a `ringside load` process ([`crate::sidecar::spawn_load`]) and returns the
/// frames it wrote, checking that it dropped none for want of a sidecar.
pub fn load_sent(child: Child) -> u64 {
    let totals = finish_load(child);
    assert_eq!(
        totals.dropped_not_connected, 0,
        "load dropped frames while not connected: {}",
        totals.json
    );
    totals.sent
}

/// The total of `ringside export --print-budget` for these flags, in bytes.
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

/// Runs `ringside tail` with `args`, checks that it succeeded, and returns its stdout and
/// stderr.
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

/// A body of `GET <path>` over HTTP/1.0 from `addr` (status line and headers included).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use std::io::Write as _;
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// The Prometheus text served on `addr` (`/metrics`), once it has the exporter's
/// series; panics after 20 s.
pub fn scrape(addr: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(body) = http_get(addr, "/metrics")
            && body.contains("ringside_export_published_records_total")
        {
            return body;
        }
        assert!(Instant::now() < deadline, "no exporter metrics on {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The value of the series `name` (exact name with labels) in a scrape.
pub fn metric(scrape: &str, name: &str) -> Option<u64> {
    scrape.lines().find_map(|l| {
        let (n, v) = l.rsplit_once(' ')?;
        (n == name).then(|| v.parse::<f64>().ok().map(|v| v as u64))?
    })
}

/// Waits (at most 30 s) until the exporter serving metrics on `addr` has published at
/// least `n` frames (first attempts: `ringside_export_published_frames_total`); `Err`
/// says how many it had.
pub fn wait_published_frames(addr: &str, n: u64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = metric(&scrape(addr), "ringside_export_published_frames_total").unwrap_or(0);
        if got >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the exporter published {got} frames, not {n}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Changes the configuration of `stream` (as `nats stream edit` would).
pub fn edit_stream(url: &str, stream: &str, change: impl FnOnce(&mut jetstream::stream::Config)) {
    rt().block_on(async {
        let js = jetstream::new(async_nats::connect(url).await.expect("connect to nats"));
        let mut s = js.get_stream(stream).await.expect("the stream exists");
        let mut config = s.info().await.expect("stream info").config.clone();
        change(&mut config);
        js.update_stream(config).await.expect("update the stream");
    });
}

/// A current-thread tokio runtime for the test's own NATS calls.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// One record of the raw stream, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    /// Its stream sequence.
    pub stream_seq: u64,
    /// Its subject's last token (`_loss`, `_batch`, or a topic token).
    pub kind: String,
    /// Its ring.
    pub ring: u64,
    /// `[first, next)`: the ring sequences it accounts for.
    pub range: (u64, u64),
}

/// What the raw stream holds for one prefix, read with plain async-nats (headers parsed
/// here, independently of the crate's reader).
#[derive(Debug, Default)]
pub struct RawStream {
    /// Per ring: seq → times a frame record (or a frame inside a batch record) carried it.
    pub frames: BTreeMap<u64, BTreeMap<u64, u32>>,
    /// Per ring: (first, frames, reason) of each loss record.
    pub losses: BTreeMap<u64, Vec<(u64, u64, String)>>,
    /// Subjects seen (distinct, at most 1000).
    pub subjects: BTreeSet<String>,
    /// Messages read.
    pub messages: u64,
    /// Nats-Msg-Id values seen twice.
    pub duplicate_ids: u64,
    /// Every record in stream order (at most 100,000), for diagnostics.
    pub records: Vec<RawRecord>,
}

impl RawStream {
    /// Reads every message under `<prefix>.>` of `stream`.
    pub fn read(url: &str, stream: &str, prefix: &str) -> RawStream {
        Self::read_ca(url, None, stream, prefix)
    }

    /// Like [`read`](Self::read), verifying the server's TLS certificate with `ca`.
    pub fn read_ca(url: &str, ca: Option<&Path>, stream: &str, prefix: &str) -> RawStream {
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
            let mut ids = HashSet::new();
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

    fn absorb(&mut self, m: &jetstream::Message, prefix: &str, ids: &mut HashSet<String>) {
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
        let range = match last {
            "_loss" => {
                let (first, n) = (num("Ringside-Seq"), num("Ringside-Frames"));
                self.losses
                    .entry(ring)
                    .or_default()
                    .push((first, n, get("Ringside-Reason")));
                (first, first + n)
            }
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
                (num("Ringside-Seq"), num("Ringside-Next"))
            }
            _ => {
                let seq = num("Ringside-Seq");
                assert_eq!(get("Nats-Msg-Id"), format!("{ring:016x}:{seq}"));
                *self.frames.entry(ring).or_default().entry(seq).or_default() += 1;
                (seq, seq + 1)
            }
        };
        if self.records.len() < 100_000 {
            self.records.push(RawRecord {
                stream_seq: m.info().map_or(0, |i| i.stream_sequence),
                kind: last.to_string(),
                ring,
                range,
            });
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

    /// Frames reported lost (every reason, including `discarded`, which is not a loss).
    pub fn lost(&self) -> u64 {
        self.losses.values().flatten().map(|l| l.1).sum()
    }

    /// Frames reported lost for reason `reason`.
    pub fn lost_for(&self, reason: &str) -> u64 {
        self.losses
            .values()
            .flatten()
            .filter(|l| l.2 == reason)
            .map(|l| l.1)
            .sum()
    }

    /// The records whose range covers `seq`, in stream order (for failure messages).
    pub fn records_covering(&self, seq: u64) -> Vec<&RawRecord> {
        self.records
            .iter()
            .filter(|r| r.range.0 <= seq && seq < r.range.1)
            .collect()
    }

    /// Checks that, for the one ring in the stream, frames and losses cover
    /// `[first, first + total)` exactly once each, and returns the count reported lost.
    pub fn assert_exactly_once(&self, first: u64, total: u64) -> u64 {
        assert_eq!(
            self.duplicate_ids, 0,
            "a Nats-Msg-Id is in the stream twice"
        );
        let rings: BTreeSet<u64> = self
            .frames
            .keys()
            .chain(self.losses.keys())
            .copied()
            .collect();
        assert!(rings.len() <= 1, "more than one ring: {rings:x?}");
        let ring = *rings.first().expect("some record");
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
            "sequences accounted more than once (seq, times): {dup:?}; the records covering the \
             first (stream order): {:?}",
            dup.first()
                .map(|(s, _)| self.records_covering(*s))
                .unwrap_or_default()
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

/// Waits until `done(raw)` holds for the stream (read every 500 ms), up to `within`, and
/// returns the last read.
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
    ca: Option<&Path>,
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
