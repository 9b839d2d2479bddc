//! Support of the C library tests (`tests/tests/ffi_*.rs`): what the C programs say they
//! sent (their manifests), what a real reader saw, the comparison, running a C program with
//! a time limit, and the peers the C programs meet: an in-process `RingHost` (a real Unix
//! socket and sealed memfd), a listener that answers the handshake with garbage, one that
//! accepts and never answers, and a `SOCK_STREAM` socket.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringside_ring::{
    HostOptions, ReadStep, ReaderOptions, RingConfig, RingHost, RingReader, RingView, StartAt,
    VecSink,
};

/// Max payload of the in-process rings the C programs write to (ffi_test.c assumes it).
pub const MAX_PAYLOAD: u32 = 4096;

/// One frame as a reader saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Topic.
    pub topic: String,
    /// Timestamp from the frame header.
    pub timestamp_ns: u64,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// Producer id from the frame header.
    pub producer_id: u32,
}

/// One frame a C program says it sent. `timestamp_ns` is None when the library stamped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Topic.
    pub topic: String,
    /// The caller's timestamp, if it gave one.
    pub timestamp_ns: Option<u64>,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

/// A ring served by an in-process `RingHost` on a socket.
#[derive(Debug)]
pub struct Host {
    /// The host (a real sealed memfd ring behind a real Unix socket).
    pub host: RingHost,
    /// Its socket.
    pub socket: PathBuf,
}

/// Starts a `RingHost` with a 4 MiB ring and [`MAX_PAYLOAD`] at `dir/name`.
pub fn start_host(dir: &Path, name: &str, max_producers: usize) -> Host {
    let socket = dir.join(name);
    let host = RingHost::start(HostOptions {
        socket_path: socket.clone(),
        ring: RingConfig {
            capacity: 4 << 20,
            max_payload: MAX_PAYLOAD,
        },
        allow_uids: Vec::new(),
        allow_gids: Vec::new(),
        max_producers,
        adopt_grace: Duration::ZERO,
        populate_ring: true,
    })
    .unwrap_or_else(|e| panic!("RingHost::start({}): {e}", socket.display()));
    Host { host, socket }
}

/// Reads every frame from the start of the ring until the reader is idle.
/// Panics on any loss: nothing may be lost in these runs.
pub fn read_all(view: Arc<RingView>) -> Vec<Seen> {
    let mut reader = RingReader::new(view, StartAt::Earliest, ReaderOptions::default())
        .expect("reader at earliest");
    let mut sink = VecSink::default();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "reader did not become idle");
        match reader.read(&mut sink) {
            ReadStep::Frame(meta) => seen.push(Seen {
                topic: String::from_utf8(sink.topic().to_vec()).expect("topic is UTF-8"),
                timestamp_ns: meta.timestamp_ns,
                payload: sink.payload().to_vec(),
                producer_id: meta.producer_id,
            }),
            ReadStep::Filtered(meta) => panic!("no filter is set, yet {meta:?} was filtered"),
            ReadStep::Loss(loss) => panic!("reader reported a loss: {loss:?}"),
            ReadStep::Pending => std::thread::sleep(Duration::from_millis(1)),
            ReadStep::Idle => return seen,
        }
    }
}

/// Subscribes to the `ringside serve` at `endpoint` from the earliest frame with
/// `ringside tail --json` (the binary under test) until it has been idle for 2 s, and
/// returns the frames. Skips announcements of discarded reservations (not frames, not
/// loss); panics on a reported loss.
pub fn tail_all(endpoint: &str) -> Vec<Seen> {
    let out = Command::new(crate::sidecar::ringside_bin())
        .arg("tail")
        .arg("--endpoint")
        .arg(endpoint)
        .args(["--from", "earliest", "--json", "--idle-exit", "2s"])
        .output()
        .expect("run ringside tail");
    assert!(
        out.status.success(),
        "ringside tail failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("tail output is UTF-8")
        .lines()
        .filter_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("bad tail line {line:?}: {e}"));
            if v.get("discarded").is_some() {
                // Reservations a producer dropped: announced, never published, not lost.
                return None;
            }
            assert!(
                v.get("loss").is_none() && v.get("end").is_none(),
                "subscriber reported {line}"
            );
            let payload = unhex(v["payload_hex"].as_str().expect("payload_hex"));
            assert_eq!(
                v["payload_len"].as_u64(),
                Some(payload.len() as u64),
                "payload_len in {line}"
            );
            Some(Seen {
                topic: v["topic"].as_str().expect("topic").to_owned(),
                timestamp_ns: v["ts_ns"].as_u64().expect("ts_ns"),
                payload,
                producer_id: u32::try_from(v["producer_id"].as_u64().expect("producer_id"))
                    .expect("producer_id fits u32"),
            })
        })
        .collect()
}

/// Decodes lowercase or uppercase hex.
pub fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length in {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Parses ffi_test.c's `FRAME <topic> <ts|-> <hex>` lines (the last line must be `OK ...`).
pub fn parse_ffi_test_manifest(stdout: &str) -> Vec<Expected> {
    let mut lines = stdout.lines().collect::<Vec<_>>();
    let last = lines.pop().unwrap_or_default();
    assert!(
        last.starts_with("OK "),
        "ffi_test did not finish: last line {last:?}"
    );
    lines
        .into_iter()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            assert_eq!(parts.next(), Some("FRAME"), "unexpected line {line:?}");
            let topic = parts.next().expect("topic").to_owned();
            let ts = parts.next().expect("timestamp");
            let hex = parts.next().expect("payload");
            Expected {
                topic,
                timestamp_ns: (ts != "-").then(|| ts.parse().expect("timestamp")),
                payload: unhex(hex),
            }
        })
        .collect()
}

/// Parses producer.c's `sent <topic> <payload text>` lines.
pub fn parse_producer_manifest(stdout: &str) -> Vec<Expected> {
    stdout
        .lines()
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            assert_eq!(parts.next(), Some("sent"), "unexpected line {line:?}");
            Expected {
                topic: parts.next().expect("topic").to_owned(),
                timestamp_ns: None,
                payload: parts.next().expect("payload").as_bytes().to_vec(),
            }
        })
        .collect()
}

/// Now, in ns since the Unix epoch.
pub fn now_ns() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos(),
    )
    .expect("time fits u64")
}

/// Every expected frame arrived intact, in per-topic order, and nothing else arrived.
/// Library-stamped timestamps fall within the run.
pub fn verify(seen: &[Seen], expected: &[Expected], started_ns: u64, ended_ns: u64) {
    let mut by_topic_seen: BTreeMap<&str, Vec<&Seen>> = BTreeMap::new();
    for s in seen {
        by_topic_seen.entry(&s.topic).or_default().push(s);
    }
    let mut by_topic_expected: BTreeMap<&str, Vec<&Expected>> = BTreeMap::new();
    for e in expected {
        by_topic_expected.entry(&e.topic).or_default().push(e);
    }
    let seen_topics: Vec<_> = by_topic_seen.keys().collect();
    let expected_topics: Vec<_> = by_topic_expected.keys().collect();
    assert_eq!(seen_topics, expected_topics, "topics differ");
    for (topic, exp) in &by_topic_expected {
        let got = &by_topic_seen[topic];
        assert_eq!(
            got.len(),
            exp.len(),
            "topic {topic:?}: {} frames arrived, {} expected",
            got.len(),
            exp.len()
        );
        for (i, (g, e)) in got.iter().zip(exp.iter()).enumerate() {
            assert!(
                g.payload == e.payload,
                "topic {topic:?} frame {i}: payload differs ({} bytes arrived, {} expected)",
                g.payload.len(),
                e.payload.len()
            );
            match e.timestamp_ns {
                Some(ts) => assert_eq!(g.timestamp_ns, ts, "topic {topic:?} frame {i}: timestamp"),
                None => assert!(
                    (started_ns..=ended_ns).contains(&g.timestamp_ns),
                    "topic {topic:?} frame {i}: timestamp {} outside the run [{started_ns}, {ended_ns}]",
                    g.timestamp_ns
                ),
            }
        }
    }
    assert_eq!(seen.len(), expected.len());
}

/// How long a C program (even under valgrind) may run before it counts as hung.
pub const PROGRAM_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs a program with stdin closed, killing it after [`PROGRAM_TIMEOUT`]; returns its
/// output, whatever its exit status.
pub fn run_program_unchecked(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + PROGRAM_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the program") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} hung for {PROGRAM_TIMEOUT:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Like [`run_program_unchecked`], asserting that the program succeeded.
pub fn run_program(cmd: Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = run_program_unchecked(cmd);
    assert!(
        out.status.success(),
        "{shown} failed with {}\nstdout (tail):\n{}\nstderr:\n{}",
        out.status,
        last_lines(&String::from_utf8_lossy(&out.stdout), 20),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The last `n` lines of `s`.
pub fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<_> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// How a test listener treats a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    /// Reads the Hello and answers with bytes that are not a Welcome.
    Garbage,
    /// Accepts and never answers (held open until the listener stops).
    Silent,
}

/// A Unix listener that is not a ringside sidecar, served by a thread until dropped.
#[derive(Debug)]
pub struct FakeListener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeListener {
    /// A SOCK_SEQPACKET listener (the sidecar's socket type) that answers every Hello with
    /// bytes that are not a ringside Welcome (`RS_ERR_PROTOCOL`).
    pub fn garbage(path: &Path) -> FakeListener {
        Self::start(path, nix::sys::socket::SockType::SeqPacket, Peer::Garbage)
    }

    /// A SOCK_SEQPACKET listener that accepts and never answers (a wedged sidecar).
    pub fn silent(path: &Path) -> FakeListener {
        Self::start(path, nix::sys::socket::SockType::SeqPacket, Peer::Silent)
    }

    /// A SOCK_STREAM listener (not a ringside socket) that accepts and never answers.
    pub fn stream(path: &Path) -> FakeListener {
        Self::start(path, nix::sys::socket::SockType::Stream, Peer::Silent)
    }

    fn start(path: &Path, kind: nix::sys::socket::SockType, peer: Peer) -> FakeListener {
        use nix::sys::socket::{
            AddressFamily, Backlog, MsgFlags, SockFlag, UnixAddr, accept, bind, listen, recv, send,
            socket,
        };
        let listener = socket(
            AddressFamily::Unix,
            kind,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .expect("listener socket");
        bind(
            listener.as_raw_fd(),
            &UnixAddr::new(path).expect("socket address"),
        )
        .expect("bind listener");
        listen(&listener, Backlog::new(16).expect("backlog")).expect("listen");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stop2.load(Ordering::SeqCst) {
                let raw = match accept(listener.as_raw_fd()) {
                    Ok(raw) => raw,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                // SAFETY: `accept` just returned this descriptor; nothing else owns it, so
                // wrapping it in an OwnedFd (closed on drop) is the only ownership there is.
                let conn = unsafe { OwnedFd::from_raw_fd(raw) };
                match peer {
                    Peer::Garbage => {
                        // accept() does not inherit O_NONBLOCK on Linux: this blocks until
                        // the producer's Hello arrives (it sends it at once).
                        let mut hello = [0u8; 512];
                        let _ = recv(conn.as_raw_fd(), &mut hello, MsgFlags::empty());
                        let _ = send(conn.as_raw_fd(), &[0x5a; 64], MsgFlags::empty());
                    }
                    Peer::Silent => held.push(conn),
                }
            }
        });
        FakeListener {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `valgrind`, if installed (`/usr/bin/valgrind` or on PATH).
pub fn valgrind() -> Option<PathBuf> {
    let fixed = PathBuf::from("/usr/bin/valgrind");
    if fixed.exists() {
        return Some(fixed);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("valgrind"))
            .find(|p| p.exists())
    })
}
