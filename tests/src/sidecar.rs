//! The sidecar harness: run a real `ringside serve` on an ephemeral port with a unique
//! socket, `ringside load` as a real producer process, and subscribe with a real tonic
//! client.

use ringside_proto::v1;
use ringside_proto::v1::ringside_client::RingsideClient;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// The directory of this crate's binaries: `target/<profile>`, whose `deps/` holds the
/// running test executable.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// Path of the `ringside` command line under test: `$RINGSIDE_BIN` when set (to run the
/// tests against another build, e.g. to check that a regression test fails on the build
/// before a fix), else this crate's `ringside-under-test` binary (`ringside_sidecar::run`),
/// which cargo builds with this crate's tests.
pub fn ringside_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("RINGSIDE_BIN") {
            return PathBuf::from(bin);
        }
        let bin = bin_dir().join("ringside-under-test");
        assert!(
            bin.exists(),
            "{} missing: run the tests with `cargo test -p ringside-tests`, which builds it",
            bin.display()
        );
        bin
    })
}

/// A unique temporary directory (`/tmp/rs-<name>-XXXXXX`), removed on drop. The name stays
/// short: Unix socket paths inside it must fit 108 bytes.
#[derive(Debug)]
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    /// Creates the directory.
    pub fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("rs-{name}-"))
            .tempdir()
            .expect("create a temporary directory");
        Self(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// A path inside.
    pub fn join(&self, s: &str) -> PathBuf {
        self.0.path().join(s)
    }
}

/// A free TCP port on loopback (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running `ringside serve`.
#[derive(Debug)]
pub struct Sidecar {
    /// The process.
    pub child: Child,
    /// gRPC address.
    pub addr: SocketAddr,
    /// Producer socket.
    pub socket: PathBuf,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Sidecar {
    /// Starts `serve` with `extra` flags, socket `dir/ringside.sock`, and a
    /// fresh port; waits until it accepts TCP connections.
    pub fn start(dir: &TempDir, extra: &[&str]) -> Sidecar {
        Self::start_on(dir, free_port(), extra)
    }

    /// Like [`start`](Self::start) on a given port.
    pub fn start_on(dir: &TempDir, port: u16, extra: &[&str]) -> Sidecar {
        Self::start_in(dir, port, extra, None)
    }

    /// Like [`start_on`](Self::start_on), but the process first moves itself
    /// into the cgroup v1 directory `cgroup` (so all its memory is charged there).
    pub fn start_in(dir: &TempDir, port: u16, extra: &[&str], cgroup: Option<&Path>) -> Sidecar {
        Self::start_wrapped(dir, port, extra, cgroup, None)
    }

    /// Like [`start_on`](Self::start_on), with RLIMIT_NOFILE set to `soft` and `hard`
    /// (by the shell's `ulimit`) before `serve` starts.
    pub fn start_with_nofile(
        dir: &TempDir,
        port: u16,
        extra: &[&str],
        soft: u64,
        hard: u64,
    ) -> Sidecar {
        Self::start_wrapped(dir, port, extra, None, Some((soft, hard)))
    }

    fn start_wrapped(
        dir: &TempDir,
        port: u16,
        extra: &[&str],
        cgroup: Option<&Path>,
        nofile: Option<(u64, u64)>,
    ) -> Sidecar {
        let socket = dir.join("ringside.sock");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let n = std::fs::read_dir(dir.path())
            .map(|d| d.count())
            .unwrap_or(0);
        let log = dir.join(&format!("serve-{n}.log"));
        let mut cmd = match (cgroup, nofile) {
            (_, Some((soft, hard))) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c")
                    .arg(format!(
                        "ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$@\""
                    ))
                    .arg("sh")
                    .arg(ringside_bin());
                c
            }
            (Some(cg), None) => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c")
                    .arg("echo $$ > \"$0/cgroup.procs\" && exec \"$@\"")
                    .arg(cg)
                    .arg(ringside_bin());
                c
            }
            (None, None) => Command::new(ringside_bin()),
        };
        cmd.arg("serve");
        if !extra.contains(&"--adopt-grace") {
            cmd.args(["--adopt-grace", "300ms"]);
        }
        let child = cmd
            .arg("--socket")
            .arg(&socket)
            .arg("--listen")
            .arg(addr.to_string())
            .args(extra)
            .env("RUST_LOG", "info,ringside_sidecar=debug,hyper=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn ringside serve");
        let mut s = Sidecar {
            child,
            addr,
            socket,
            log,
        };
        s.wait_ready();
        s
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("ringside serve exited early ({status}):\n{}", self.stderr());
            }
            if TcpStream::connect(self.addr).is_ok() && self.socket.exists() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "serve not ready:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The gRPC endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything it logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait (graceful shutdown).
    pub fn stop(&mut self) -> ExitStatus {
        signal(&self.child, libc::SIGTERM);
        self.wait_exit(Duration::from_secs(20))
    }

    /// SIGKILL and wait.
    pub fn kill(&mut self) -> ExitStatus {
        signal(&self.child, libc::SIGKILL);
        self.wait_exit(Duration::from_secs(20))
    }

    /// Waits up to `within` for the process to exit (kills it and panics after that).
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("ringside serve did not exit:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends a signal to a child process.
pub fn signal(child: &Child, sig: i32) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let sig = nix::sys::signal::Signal::try_from(sig).expect("signal");
    let _ = nix::sys::signal::kill(pid, sig);
}

/// Totals printed by `ringside load --json`.
#[derive(Debug, Clone)]
pub struct LoadTotals {
    /// Frames written.
    pub sent: u64,
    /// Frames dropped while no sidecar was there.
    pub dropped_not_connected: u64,
    /// The whole JSON object.
    pub json: serde_json::Value,
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

/// Waits for a `load` process and parses its totals.
pub fn finish_load(mut child: Child) -> LoadTotals {
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait().expect("wait load");
    assert!(status.success(), "load failed ({status}): {out}\n{err}");
    let json: serde_json::Value = serde_json::from_str(out.trim()).expect("load --json output");
    let get = |k: &str| {
        json[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} missing in {json}"))
    };
    LoadTotals {
        sent: get("sent"),
        dropped_not_connected: get("dropped_not_connected"),
        json,
    }
}

/// Runs `load` to completion.
pub fn run_load(socket: &Path, args: &[&str]) -> LoadTotals {
    finish_load(spawn_load(socket, args))
}

/// Connects a tonic client.
pub async fn client(endpoint: &str) -> RingsideClient<Channel> {
    let ch = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to sidecar");
    RingsideClient::new(ch).max_decoding_message_size(64 << 20)
}

/// A request starting at `start` with optional filters.
pub fn sub_req(start: v1::subscribe_request::Start) -> v1::SubscribeRequest {
    v1::SubscribeRequest {
        start: Some(start),
        ..Default::default()
    }
}

/// What a subscription delivered.
#[derive(Debug, Default, Clone)]
pub struct Collected {
    /// (seq, topic, payload length) of each frame, in order.
    pub frames: Vec<(u64, String, usize)>,
    /// (reason, frames, first_seq) of each loss, in order.
    pub losses: Vec<(i32, u64, u64)>,
    /// Last batch's resume_seq.
    pub resume_seq: Option<u64>,
    /// ring_id seen.
    pub ring_id: Option<u64>,
    /// How the stream ended, if it did.
    pub end: Option<tonic::Status>,
    /// Batches received.
    pub batches: u64,
}

impl Collected {
    /// Sum of lost frames.
    pub fn lost(&self) -> u64 {
        self.losses.iter().map(|l| l.1).sum()
    }

    /// Absorbs one batch.
    pub fn add(&mut self, b: &v1::Batch) {
        self.batches += 1;
        self.ring_id = Some(b.ring_id);
        for l in &b.losses {
            self.losses.push((l.reason, l.frames, l.first_seq));
        }
        for f in &b.frames {
            self.frames.push((f.seq, f.topic.clone(), f.payload.len()));
        }
        self.resume_seq = Some(b.resume_seq);
    }
}

/// Subscribes and collects until `max_frames` frames arrived, no message for
/// `idle`, or the stream ended.
pub async fn collect(
    client: &mut RingsideClient<Channel>,
    req: v1::SubscribeRequest,
    max_frames: usize,
    idle: Duration,
) -> Result<Collected, tonic::Status> {
    let mut stream = client.subscribe(req).await?.into_inner();
    let mut c = Collected::default();
    while c.frames.len() < max_frames {
        match tokio::time::timeout(idle, stream.message()).await {
            Err(_) => break,
            Ok(Ok(Some(b))) => c.add(&b),
            Ok(Ok(None)) => break,
            Ok(Err(s)) => {
                c.end = Some(s);
                break;
            }
        }
    }
    Ok(c)
}

/// Checks that frames and losses account for every sequence in
/// `[first, first + total)` exactly once, in order.
pub fn assert_exact_accounting(c: &Collected, first: u64, total: u64) {
    let mut events: Vec<(u64, u64)> = c.frames.iter().map(|f| (f.0, 1)).collect();
    events.extend(c.losses.iter().map(|l| (l.2, l.1)));
    events.sort_unstable();
    let mut next = first;
    for (seq, n) in events {
        assert_eq!(
            seq, next,
            "gap or overlap at seq {seq} (expected {next}); losses {:?}",
            c.losses
        );
        next = seq + n;
    }
    assert_eq!(next, first + total, "accounted {} of {total}", next - first);
    assert_eq!(c.frames.len() as u64 + c.lost(), total);
}

/// The total of `ringside serve --print-budget` for these serve flags, in bytes.
pub fn budget_bytes(flags: &[&str]) -> u64 {
    budget_bytes_of(ringside_bin(), flags).unwrap_or_else(|e| panic!("{e}"))
}

/// The total of the memory budget `bin serve --print-budget <flags>` prints, in bytes.
pub fn budget_bytes_of(bin: &Path, flags: &[&str]) -> Result<u64, String> {
    let out = Command::new(bin)
        .args(["serve", "--print-budget"])
        .args(flags)
        .output()
        .map_err(|e| format!("cannot run {} serve --print-budget: {e}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.trim_start().starts_with("total"))
        .and_then(|line| line.split('(').nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no budget total in: {text}"))
}
