//! Compiles the C programs (`ffi/examples/producer.c`, `ffi/tests/c/ffi_test.c`)
//! with `gcc -Wall -Wextra -Werror` against `ffi/include/ringside.h` and the
//! shared, the static and the pkg-config-described library, runs them against
//! a real ring, and checks through a real reader that every frame arrived
//! intact with the C program's topics, timestamps and payloads.
//!
//! The sidecar side is `ringside_ring::RingHost` in this test process: a
//! real Unix socket, a real sealed memfd handed over with SCM_RIGHTS, and a
//! real `RingReader` over the read-only mapping. When the `ringside` binary is
//! built (`target/<profile>/ringside`, or `$RINGSIDE_BIN`), the
//! `sidecar_binary_*` tests run the same checks against a real `ringside
//! serve`, reading back through a real gRPC subscriber (`ringside tail --from
//! earliest --json`); without the binary they print why they skipped.
//!
//! The C test also runs under valgrind when `/usr/bin/valgrind` (or `valgrind`
//! on PATH) exists; otherwise that test prints why it skipped.
//!
//! Requirements: gcc and pkg-config on PATH. The libraries are the ones cargo
//! builds for this test run (`target/<profile>/libringside.{so,a}`).

use std::collections::BTreeMap;
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

/// Max payload of the rings the C programs write to (ffi_test.c assumes it).
const MAX_PAYLOAD: u32 = 4096;

const CFLAGS: &[&str] = &[
    "-Wall", "-Wextra", "-Werror", "-std=c11", "-pthread", "-g", "-O1",
];
/// Extra libraries a static libringside needs.
const STATIC_LIBS: &[&str] = &["-lpthread", "-ldl", "-lm"];

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>`: this test binary lives in `target/<profile>/deps`.
fn profile_dir() -> PathBuf {
    lib_dir()
        .parent()
        .expect("deps dir has a parent")
        .to_path_buf()
}

/// `target/<profile>/deps`: where cargo puts the C libraries it builds for this test run
/// (every crate type of the library, this test binary's own directory).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .expect("test binary has a parent dir")
        .to_path_buf()
}

fn built_lib(name: &str) -> PathBuf {
    let lib = lib_dir().join(name);
    assert!(
        lib.exists(),
        "{} not found: cargo builds it with this test (`cargo test -p ringside-ffi`)",
        lib.display()
    );
    lib
}

fn shared_lib() -> PathBuf {
    built_lib("libringside.so")
}

fn static_lib() -> PathBuf {
    built_lib("libringside.a")
}

/// How a C program is linked.
#[derive(Clone, Copy, Debug)]
enum Link {
    /// `-L target/<profile> -lringside` plus an rpath.
    Shared,
    /// `target/<profile>/libringside.a -lpthread -ldl -lm`.
    Static,
    /// `$(pkg-config --cflags --libs ringside)` with a generated `ringside.pc`.
    PkgConfig,
}

fn run_checked(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Writes `ringside.pc` for the build tree into `dir` with `ffi/gen-pc.sh`.
fn write_pc(dir: &Path) {
    let lib_dir = lib_dir();
    let out = run_checked(
        Command::new("sh")
            .arg(crate_dir().join("gen-pc.sh"))
            .arg(lib_dir.parent().expect("target dir"))
            .arg(&lib_dir)
            .arg(crate_dir().join("include")),
    );
    std::fs::write(dir.join("ringside.pc"), &out.stdout).expect("write ringside.pc");
}

fn pkg_config(pc_dir: &Path, args: &[&str]) -> Vec<String> {
    let out = run_checked(
        Command::new("pkg-config")
            .env("PKG_CONFIG_PATH", pc_dir)
            .args(args)
            .arg("ringside"),
    );
    String::from_utf8(out.stdout)
        .expect("pkg-config output is UTF-8")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Compiles `src` into `dir` and returns the executable.
fn compile(src: &Path, dir: &Path, link: Link) -> PathBuf {
    let name = format!(
        "{}-{link:?}",
        src.file_stem().expect("file stem").to_string_lossy()
    );
    let exe = dir.join(name);
    let mut cmd = Command::new("gcc");
    cmd.args(CFLAGS).arg(src).arg("-o").arg(&exe);
    match link {
        Link::Shared => {
            let lib = shared_lib();
            let lib_dir = lib.parent().expect("lib dir");
            cmd.arg("-I")
                .arg(crate_dir().join("include"))
                .arg("-L")
                .arg(lib_dir)
                .arg("-lringside")
                .arg(format!("-Wl,-rpath,{}", lib_dir.display()));
        }
        Link::Static => {
            cmd.arg("-I")
                .arg(crate_dir().join("include"))
                .arg(static_lib())
                .args(STATIC_LIBS);
        }
        Link::PkgConfig => {
            shared_lib();
            write_pc(dir);
            let flags = pkg_config(dir, &["--cflags", "--libs"]);
            assert!(
                flags.iter().any(|f| f.starts_with("-I"))
                    && flags.iter().any(|f| f == "-lringside"),
                "unexpected pkg-config flags {flags:?}"
            );
            let static_flags = pkg_config(dir, &["--libs", "--static"]);
            for lib in STATIC_LIBS {
                assert!(
                    static_flags.iter().any(|f| f == lib),
                    "pkg-config --static lacks {lib}: {static_flags:?}"
                );
            }
            cmd.args(&flags)
                .arg(format!("-Wl,-rpath,{}", lib_dir().display()));
        }
    }
    run_checked(&mut cmd);
    exe
}

/// A ring served by `RingHost` on a socket in a temp dir.
struct Sidecar {
    host: RingHost,
    socket: PathBuf,
}

fn start_host(dir: &Path, name: &str, max_producers: usize) -> Sidecar {
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
    })
    .unwrap_or_else(|e| panic!("RingHost::start({}): {e}", socket.display()));
    Sidecar { host, socket }
}

/// A Unix seqpacket listener (the socket type the sidecar uses) that answers
/// every Hello with bytes that are not a ringside Welcome, to provoke
/// `RS_ERR_PROTOCOL`.
struct GarbageListener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl GarbageListener {
    fn start(path: &Path) -> GarbageListener {
        use nix::sys::socket::{
            AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr, accept, bind, listen,
            recv, send, socket,
        };
        let listener = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .expect("seqpacket socket");
        bind(
            listener.as_raw_fd(),
            &UnixAddr::new(path).expect("socket address"),
        )
        .expect("bind garbage listener");
        listen(&listener, Backlog::new(16).expect("backlog")).expect("listen");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let raw = match accept(listener.as_raw_fd()) {
                    Ok(raw) => raw,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                // SAFETY: `accept` just returned this descriptor; nothing else
                // owns it, so wrapping it in an OwnedFd (closed on drop) is the
                // only ownership there is.
                let conn = unsafe { OwnedFd::from_raw_fd(raw) };
                // accept() does not inherit O_NONBLOCK on Linux: this blocks
                // until the producer's Hello arrives (it sends it at once).
                let mut hello = [0u8; 512];
                let _ = recv(conn.as_raw_fd(), &mut hello, MsgFlags::empty());
                let _ = send(conn.as_raw_fd(), &[0x5a; 64], MsgFlags::empty());
            }
        });
        GarbageListener {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for GarbageListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One frame as a reader saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    topic: String,
    timestamp_ns: u64,
    payload: Vec<u8>,
    producer_id: u32,
}

/// One frame the C program says it sent. `timestamp_ns` is None when the
/// library stamped it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    topic: String,
    timestamp_ns: Option<u64>,
    payload: Vec<u8>,
}

/// Reads every frame from the start of the ring until the reader is idle.
/// Panics on any loss: nothing may be lost in these runs.
fn read_all(view: Arc<RingView>) -> Vec<Seen> {
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

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length in {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Parses ffi_test.c's `FRAME <topic> <ts|-> <hex>` lines.
fn parse_ffi_test_manifest(stdout: &str) -> Vec<Expected> {
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
fn parse_producer_manifest(stdout: &str) -> Vec<Expected> {
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

fn now_ns() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos(),
    )
    .expect("time fits u64")
}

/// Every expected frame arrived intact, in per-topic order, and nothing else
/// arrived. Library-stamped timestamps fall within the run.
fn verify(seen: &[Seen], expected: &[Expected], started_ns: u64, ended_ns: u64) {
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
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs a C program, killing it after [`PROGRAM_TIMEOUT`], and returns its
/// output (asserting success).
fn run_program(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
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
        if let Some(status) = child.try_wait().expect("wait for C program") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} hung for {PROGRAM_TIMEOUT:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    };
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout (tail):\n{}\nstderr:\n{}",
        out.status,
        tail(&String::from_utf8_lossy(&out.stdout), 20),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<_> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The command that runs ffi_test against fresh sidecars in `dir`, and the
/// sidecar whose ring the frames land in (the others must outlive the run).
struct FfiTestSetup {
    main: MainSidecar,
    _busy: Sidecar,
    _garbage: GarbageListener,
    args: Vec<PathBuf>,
}

fn ffi_test_setup(dir: &Path) -> FfiTestSetup {
    ffi_test_setup_with(dir, start_host(dir, "main.sock", 64).into())
}

/// Where ffi_test's frames land: an in-process host or a `ringside serve`.
enum MainSidecar {
    InProcess(Sidecar),
    Binary(Serve),
}

impl From<Sidecar> for MainSidecar {
    fn from(s: Sidecar) -> Self {
        MainSidecar::InProcess(s)
    }
}

impl MainSidecar {
    fn socket(&self) -> &Path {
        match self {
            MainSidecar::InProcess(s) => &s.socket,
            MainSidecar::Binary(s) => &s.socket,
        }
    }

    /// Everything the ring holds, through this sidecar's kind of subscriber.
    fn read_all(&self) -> Vec<Seen> {
        match self {
            MainSidecar::InProcess(s) => read_all(s.host.ring()),
            MainSidecar::Binary(s) => s.tail_all(),
        }
    }
}

fn ffi_test_setup_with(dir: &Path, main: MainSidecar) -> FfiTestSetup {
    let busy = start_host(dir, "busy.sock", 1);
    let garbage_path = dir.join("garbage.sock");
    let garbage = GarbageListener::start(&garbage_path);
    let args = vec![main.socket().to_owned(), busy.socket.clone(), garbage_path];
    FfiTestSetup {
        main,
        _busy: busy,
        _garbage: garbage,
        args,
    }
}

/// Builds and runs ffi_test.c with `link`, optionally under a wrapper such as
/// valgrind, and verifies the ring's contents.
fn ffi_test_case(link: Link, wrapper: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let setup = ffi_test_setup(dir.path());
    run_ffi_test(dir.path(), link, wrapper, setup)
}

fn run_ffi_test(dir: &Path, link: Link, wrapper: &[&str], setup: FfiTestSetup) -> Vec<u8> {
    let exe = compile(&crate_dir().join("tests/c/ffi_test.c"), dir, link);
    let mut cmd = match wrapper.split_first() {
        Some((prog, rest)) => {
            let mut c = Command::new(prog);
            c.args(rest).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    // rs_selftest_panic runs the Rust panic hook; with RUST_BACKTRACE set it
    // would symbolize a backtrace and keep ~35 MB of parsed debug info
    // reachable until exit, which only slows valgrind down.
    cmd.args(&setup.args)
        .env("RINGSIDE_SOCKET", setup.main.socket())
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    let started = now_ns();
    let out = run_program(cmd);
    let ended = now_ns();
    let stdout = String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8");
    let expected = parse_ffi_test_manifest(&stdout);
    assert!(
        expected.len() > 800,
        "manifest too short: {}",
        expected.len()
    );
    let seen = setup.main.read_all();
    verify(&seen, &expected, started, ended);
    eprintln!(
        "ffi_test ({link:?}{}): {} frames verified; {}",
        if wrapper.is_empty() { "" } else { ", wrapped" },
        seen.len(),
        stdout.lines().last().unwrap_or_default()
    );
    out.stderr
}

fn producer_example_case(link: Link) {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = compile(&crate_dir().join("examples/producer.c"), dir.path(), link);
    let sidecar = start_host(dir.path(), "ringside.sock", 8);
    let mut cmd = Command::new(&exe);
    cmd.arg(&sidecar.socket).arg("25");
    let started = now_ns();
    let out = run_program(cmd);
    let ended = now_ns();
    let expected = parse_producer_manifest(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        expected.len(),
        50,
        "producer.c should send 25 samples twice"
    );
    let seen = read_all(sidecar.host.ring());
    verify(&seen, &expected, started, ended);
    let ids: std::collections::BTreeSet<_> = seen.iter().map(|s| s.producer_id).collect();
    assert_eq!(ids.len(), 1, "one producer wrote all frames: {ids:?}");
}

#[test]
fn ffi_test_shared() {
    ffi_test_case(Link::Shared, &[]);
}

#[test]
fn ffi_test_static() {
    ffi_test_case(Link::Static, &[]);
}

#[test]
fn ffi_test_pkg_config() {
    ffi_test_case(Link::PkgConfig, &[]);
}

#[test]
fn producer_example_shared() {
    producer_example_case(Link::Shared);
}

#[test]
fn producer_example_static() {
    producer_example_case(Link::Static);
}

#[test]
fn producer_example_pkg_config() {
    producer_example_case(Link::PkgConfig);
}

/// Without a sidecar the example still runs: every frame is a counted drop.
#[test]
fn producer_example_without_sidecar() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = compile(
        &crate_dir().join("examples/producer.c"),
        dir.path(),
        Link::Shared,
    );
    let mut cmd = Command::new(&exe);
    cmd.arg(dir.path().join("nobody-listens.sock")).arg("5");
    let out = run_program(cmd);
    assert!(out.stdout.is_empty(), "nothing can have been sent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("dropped 5 not connected"),
        "stderr: {stderr}"
    );
}

fn valgrind() -> Option<PathBuf> {
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

fn valgrind_case(link: Link) {
    let Some(valgrind) = valgrind() else {
        eprintln!("SKIPPED: valgrind not found; the C test did not run under valgrind");
        return;
    };
    let valgrind = valgrind.to_string_lossy().into_owned();
    // No suppressions: the library joins its background thread on close and
    // frees everything it allocated, so even "possibly lost" counts as an
    // error. Still-reachable blocks (one-time runtime state such as the
    // thread-slot counter) are not errors.
    let stderr = ffi_test_case(
        link,
        &[
            &valgrind,
            "--error-exitcode=1",
            "--leak-check=full",
            "--show-leak-kinds=definite,indirect,possible",
            "--errors-for-leak-kinds=definite,indirect,possible",
        ],
    );
    let stderr = String::from_utf8_lossy(&stderr);
    let summary: Vec<_> = stderr
        .lines()
        .filter(|l| {
            l.contains("ERROR SUMMARY")
                || l.contains("in use at exit")
                || l.contains("lost:")
                || l.contains("no leaks are possible")
        })
        .collect();
    assert!(
        summary
            .iter()
            .any(|l| l.contains("ERROR SUMMARY: 0 errors")),
        "valgrind summary missing or not clean:\n{stderr}"
    );
    eprintln!("valgrind ({link:?}):\n{}", summary.join("\n"));
}

#[test]
fn ffi_test_valgrind_shared() {
    valgrind_case(Link::Shared);
}

#[test]
fn ffi_test_valgrind_static() {
    valgrind_case(Link::Static);
}

// ---------- against the real sidecar binary ----------

/// The `ringside` binary, if built.
fn ringside_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RINGSIDE_BIN") {
        return Some(PathBuf::from(p));
    }
    let p = profile_dir().join("ringside");
    p.exists().then_some(p)
}

/// A `ringside serve` child process, killed on drop.
struct Serve {
    child: std::process::Child,
    bin: PathBuf,
    socket: PathBuf,
    endpoint: String,
    log: PathBuf,
}

impl Serve {
    fn start(bin: &Path, dir: &Path) -> Serve {
        let socket = dir.join("serve.sock");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = dir.join("serve.log");
        let log_file = std::fs::File::create(&log).expect("serve log");
        let child = Command::new(bin)
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args([
                "--ring-size",
                "4MiB",
                "--max-payload",
                "4KiB",
                "--adopt-grace",
                "0s",
            ])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log fd"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut serve = Serve {
            child,
            bin: bin.to_owned(),
            socket,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = serve.child.try_wait() {
                panic!("ringside serve exited with {status}:\n{}", serve.log_text());
            }
            if serve.socket.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return serve;
            }
            assert!(
                Instant::now() < deadline,
                "ringside serve did not come up:\n{}",
                serve.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Subscribes from the earliest frame with `ringside tail --json` until
    /// it has been idle for 2 s, and returns the frames. Panics on a loss.
    fn tail_all(&self) -> Vec<Seen> {
        let out = run_checked(
            Command::new(&self.bin)
                .arg("tail")
                .arg("--endpoint")
                .arg(&self.endpoint)
                .args(["--from", "earliest", "--json", "--idle-exit", "2s"]),
        );
        String::from_utf8(out.stdout)
            .expect("tail output is UTF-8")
            .lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("bad tail line {line:?}: {e}"));
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
                Seen {
                    topic: v["topic"].as_str().expect("topic").to_owned(),
                    timestamp_ns: v["ts_ns"].as_u64().expect("ts_ns"),
                    payload,
                    producer_id: u32::try_from(v["producer_id"].as_u64().expect("producer_id"))
                        .expect("producer_id fits u32"),
                }
            })
            .collect()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sidecar_binary_ffi_test() {
    let Some(bin) = ringside_bin() else {
        eprintln!("SKIPPED: no ringside binary (cargo build -p ringside, or set RINGSIDE_BIN)");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let serve = Serve::start(&bin, dir.path());
    let setup = ffi_test_setup_with(dir.path(), MainSidecar::Binary(serve));
    run_ffi_test(dir.path(), Link::Shared, &[], setup);
}

#[test]
fn sidecar_binary_producer_example() {
    let Some(bin) = ringside_bin() else {
        eprintln!("SKIPPED: no ringside binary (cargo build -p ringside, or set RINGSIDE_BIN)");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let serve = Serve::start(&bin, dir.path());
    let exe = compile(
        &crate_dir().join("examples/producer.c"),
        dir.path(),
        Link::Static,
    );
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
    let seen = serve.tail_all();
    verify(&seen, &expected, started, ended);
}

/// The header stands alone and is warning-free as strict C99, C11, C2x and C++.
#[test]
fn header_compiles_standalone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("only_header.c");
    std::fs::write(
        &src,
        "#include \"ringside.h\"\n\
         int main(void) {\n\
             rs_stats s;\n\
             rs_status rc = RS_OK;\n\
             s.sent = 0;\n\
             return (int)s.sent + (int)rc + RS_MAX_TOPIC_LEN - 255;\n\
         }\n",
    )
    .expect("write source");
    let include = crate_dir().join("include");
    for (compiler, std) in [
        ("gcc", "-std=c99"),
        ("gcc", "-std=c11"),
        ("gcc", "-std=c2x"),
        ("g++", "-std=c++11"),
        ("g++", "-std=c++17"),
    ] {
        if compiler == "g++" && Command::new("g++").arg("--version").output().is_err() {
            eprintln!("SKIPPED: no g++ for {std}");
            continue;
        }
        let mut cmd = Command::new(compiler);
        if compiler == "g++" {
            cmd.args(["-x", "c++"]);
        }
        run_checked(
            cmd.args([
                std,
                "-pedantic",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-fsyntax-only",
                "-I",
            ])
            .arg(&include)
            .arg(&src),
        );
    }
}
