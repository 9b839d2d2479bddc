//! The C library as a C user meets it: compiles the C programs (`ffi/examples/producer.c`,
//! `ffi/tests/c/ffi_test.c`, `ffi/tests/c/defects_test.c`) with `-Wall -Wextra -Werror`
//! against `ffi/include/ringside.h` and the shared, the static and the installed
//! (`ffi/install.sh`, then `pkg-config`, shared and `--static`) library; runs them against a
//! real ring; and checks through a real reader that every frame arrived intact with the C
//! program's topics, timestamps and payloads.
//!
//! The sidecar side is `ringside_ring::RingHost` in this test process: a real Unix socket, a
//! real sealed memfd handed over with SCM_RIGHTS, and a real `RingReader` over the read-only
//! mapping. The same programs against a real `ringside serve` are in `ffi_sidecar.rs`.
//!
//! `defects_test.c` has one case per defect found when a new C user tried the library
//! (issue 12): misuse that crashed, allocation per reservation, connect blocking and its
//! error codes, out-parameters, fork, the versioned `rs_stats`, the handle limit.
//!
//! The C tests also run under valgrind, and the header is compiled as C99 to C2x and
//! C++11/C++17. Without valgrind or a C++ compiler those tests print why they skipped,
//! unless `RINGSIDE_REQUIRE_TOOLS` is set (as in CI), which makes a missing tool a failure.
//!
//! Requirements: a C compiler, pkg-config and readelf (binutils).

use std::path::{Path, PathBuf};
use std::process::Command;

use ringside_tests::c_build::{self, Link};
use ringside_tests::ffi_support::{
    FakeListener, Host, now_ns, parse_ffi_test_manifest, parse_producer_manifest, read_all,
    run_program, run_program_unchecked, start_host, valgrind, verify,
};
use ringside_tests::tools::skip_or_fail;

fn ffi_source(rel: &str) -> PathBuf {
    c_build::ffi_dir().join(rel)
}

fn compile(src: &Path, dir: &Path, link: Link, extra: &[&str]) -> PathBuf {
    c_build::compile(src, dir, link, extra).unwrap_or_else(|e| panic!("{e}"))
}

// ---------- ffi_test.c: every function and every error path C can provoke ----------

/// The peers ffi_test.c needs, alive for the whole run.
struct FfiTestPeers {
    main: Host,
    _busy: Host,
    _garbage: FakeListener,
    args: Vec<PathBuf>,
}

fn ffi_test_peers(dir: &Path) -> FfiTestPeers {
    let main = start_host(dir, "main.sock", 64);
    let busy = start_host(dir, "busy.sock", 1);
    let garbage_path = dir.join("garbage.sock");
    let garbage = FakeListener::garbage(&garbage_path);
    let args = vec![main.socket.clone(), busy.socket.clone(), garbage_path];
    FfiTestPeers {
        main,
        _busy: busy,
        _garbage: garbage,
        args,
    }
}

/// Builds and runs ffi_test.c with `link`, optionally under a wrapper such as valgrind,
/// verifies the ring's contents, and returns the program's stderr.
fn ffi_test_case(link: Link, wrapper: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    let peers = ffi_test_peers(dir.path());
    let exe = compile(&ffi_source("tests/c/ffi_test.c"), dir.path(), link, &[]);
    let mut cmd = match wrapper.split_first() {
        Some((prog, rest)) => {
            let mut c = Command::new(prog);
            c.args(rest).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    // rs_selftest_panic runs the Rust panic hook; with RUST_BACKTRACE set it would
    // symbolize a backtrace and keep ~35 MB of parsed debug info reachable until exit,
    // which only slows valgrind down.
    cmd.args(&peers.args)
        .env("RINGSIDE_SOCKET", &peers.main.socket)
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
    let seen = read_all(peers.main.host.ring());
    verify(&seen, &expected, started, ended);
    eprintln!(
        "ffi_test ({link:?}{}): {} frames verified; {}",
        if wrapper.is_empty() { "" } else { ", wrapped" },
        seen.len(),
        stdout.lines().last().unwrap_or_default()
    );
    out.stderr
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
fn ffi_test_pkg_config_static() {
    ffi_test_case(Link::PkgConfigStatic, &[]);
}

/// The valgrind command line: no suppressions; the library joins its background thread on
/// close and frees everything it allocated, so even "possibly lost" counts as an error.
/// Still-reachable blocks (one-time runtime state) are not errors.
fn valgrind_command() -> Option<Vec<String>> {
    let Some(valgrind) = valgrind() else {
        skip_or_fail("valgrind not found (apt-get install valgrind)");
        return None;
    };
    Some(vec![
        valgrind.to_string_lossy().into_owned(),
        "--error-exitcode=1".into(),
        "--leak-check=full".into(),
        "--show-leak-kinds=definite,indirect,possible".into(),
        "--errors-for-leak-kinds=definite,indirect,possible".into(),
    ])
}

fn assert_valgrind_clean(stderr: &[u8], what: &str) {
    let stderr = String::from_utf8_lossy(stderr);
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
        "valgrind summary of {what} missing or not clean:\n{stderr}"
    );
    eprintln!("valgrind ({what}):\n{}", summary.join("\n"));
}

fn valgrind_case(link: Link) {
    let Some(command) = valgrind_command() else {
        return;
    };
    let wrapper: Vec<&str> = command.iter().map(String::as_str).collect();
    let stderr = ffi_test_case(link, &wrapper);
    assert_valgrind_clean(&stderr, &format!("ffi_test {link:?}"));
}

#[test]
fn ffi_test_valgrind_shared() {
    valgrind_case(Link::Shared);
}

#[test]
fn ffi_test_valgrind_static() {
    valgrind_case(Link::Static);
}

// ---------- the example ----------

fn producer_example_case(link: Link) {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = compile(&ffi_source("examples/producer.c"), dir.path(), link, &[]);
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
        &ffi_source("examples/producer.c"),
        dir.path(),
        Link::Shared,
        &[],
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

// ---------- defects_test.c: one case per defect of issue 12 ----------

/// Builds defects_test.c (with the counting allocator when `count_allocations`).
fn build_defects(dir: &Path, link: Link, count_allocations: bool) -> PathBuf {
    let extra: &[&str] = if count_allocations {
        &["-DRS_TEST_COUNT_ALLOCATIONS"]
    } else {
        &[]
    };
    let exe = compile(&ffi_source("tests/c/defects_test.c"), dir, link, extra);
    let renamed = dir.join(format!(
        "defects-{link:?}{}",
        if count_allocations { "-counting" } else { "" }
    ));
    std::fs::rename(&exe, &renamed).expect("rename the test program");
    renamed
}

/// Runs one case of defects_test.c (statically and dynamically linked) against `peer` and
/// asserts it printed `OK <case>`.
fn defect_case(case: &str, peer: Peer) {
    for link in [Link::Static, Link::Shared] {
        let dir = tempfile::tempdir().expect("temp dir");
        let exe = build_defects(dir.path(), link, case == "reserve-no-malloc");
        let (_host, _listener, socket) = peer.start(dir.path());
        let mut cmd = Command::new(&exe);
        cmd.arg(case).env_remove("RUST_BACKTRACE");
        if let Some(socket) = &socket {
            cmd.arg(socket);
        }
        let out = run_program_unchecked(cmd);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(&format!("OK {case}")),
            "defects_test {case} ({link:?}) failed with {}\nstdout:\n{stdout}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// What a defects_test case connects to.
#[derive(Clone, Copy, Debug)]
enum Peer {
    /// Nothing.
    None,
    /// An in-process RingHost.
    Host,
    /// A seqpacket listener that accepts and never answers.
    Silent,
    /// A SOCK_STREAM listener.
    Stream,
    /// A path nothing listens on.
    Missing,
    /// A path the case creates its own listener at.
    OwnListener,
}

impl Peer {
    fn start(self, dir: &Path) -> (Option<Host>, Option<FakeListener>, Option<PathBuf>) {
        match self {
            Peer::None => (None, None, None),
            Peer::Host => {
                let host = start_host(dir, "host.sock", 64);
                let socket = host.socket.clone();
                (Some(host), None, Some(socket))
            }
            Peer::Silent => {
                let socket = dir.join("silent.sock");
                (None, Some(FakeListener::silent(&socket)), Some(socket))
            }
            Peer::Stream => {
                let socket = dir.join("stream.sock");
                (None, Some(FakeListener::stream(&socket)), Some(socket))
            }
            Peer::Missing => (None, None, Some(dir.join("nobody.sock"))),
            Peer::OwnListener => (None, None, Some(dir.join("backlog.sock"))),
        }
    }
}

/// rs_send, rs_send_at, rs_producer_stats, rs_reserve, ... on a closed producer crashed
/// (SIGSEGV); now RS_ERR_BAD_HANDLE, also after a new producer reused the slot.
#[test]
fn misuse_use_after_close() {
    defect_case("use-after-close", Peer::Host);
}

/// A second rs_producer_close crashed (SIGSEGV); now RS_ERR_BAD_HANDLE.
#[test]
fn misuse_double_close() {
    defect_case("double-close", Peer::Host);
}

/// A second rs_commit aborted ("free(): double free"); now RS_ERR_BAD_HANDLE, and a stale
/// reservation handle cannot complete a newer reservation.
#[test]
fn misuse_double_commit() {
    defect_case("double-commit", Peer::Host);
}

/// Values the library never returned are refused without being dereferenced.
#[test]
fn misuse_bad_handles() {
    defect_case("bad-handles", Peer::None);
}

/// The misuse cases under valgrind: no invalid read or write anywhere.
#[test]
fn misuse_under_valgrind() {
    let Some(command) = valgrind_command() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = build_defects(dir.path(), Link::Static, false);
    for (case, peer) in [
        ("use-after-close", Peer::Host),
        ("double-close", Peer::Host),
        ("double-commit", Peer::Host),
        ("bad-handles", Peer::None),
    ] {
        let (_host, _listener, socket) = peer.start(dir.path());
        let mut cmd = Command::new(&command[0]);
        cmd.args(&command[1..])
            .arg(&exe)
            .arg(case)
            .env_remove("RUST_BACKTRACE");
        if let Some(socket) = &socket {
            cmd.arg(socket);
        }
        let out = run_program(cmd);
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("OK {case}")));
        assert_valgrind_clean(&out.stderr, case);
    }
}

/// rs_reserve allocated 320 bytes per call; now neither rs_reserve + rs_commit/rs_discard
/// nor rs_send allocates (a counting malloc interposed in the C program).
#[test]
fn reserve_does_not_allocate() {
    defect_case("reserve-no-malloc", Peer::Host);
}

/// rs_reserve(p, t, n, NULL, &buf) left *buf unchanged; now NULL.
#[test]
fn reserve_clears_buf_when_out_is_null() {
    defect_case("reserve-null-out", Peer::Host);
}

/// A peer that accepts and never answers: connect returns within the documented 2 s, and
/// rs_producer_wait_connected says RS_ERR_HANDSHAKE_TIMEOUT, "timed out after 2 s" (it said
/// "the frame was dropped and counted").
#[test]
fn connect_handshake_timeout() {
    defect_case("handshake-timeout", Peer::Silent);
}

/// A listener whose backlog is full: connect() itself waited forever; now the handshake's
/// 2 s deadline covers it.
#[test]
fn connect_backlog_full() {
    defect_case("backlog-full", Peer::OwnListener);
}

/// A SOCK_STREAM socket at the path: RS_ERR_NOT_RINGSIDE, "not a ringside socket (expected
/// SOCK_SEQPACKET)" (it was RS_ERR_PROTOCOL).
#[test]
fn connect_not_ringside() {
    defect_case("not-ringside", Peer::Stream);
}

/// rs_producer_wait_connected's text no longer talks about a dropped frame; it says how
/// long it waited and why the last attempt failed.
#[test]
fn wait_connected_text() {
    defect_case("wait-text", Peer::Missing);
}

/// A child using its parent's handle after fork(): RS_ERR_FORKED, and its close no longer
/// shuts the parent's connection.
#[test]
fn fork_child_is_refused_and_parent_untouched() {
    defect_case("fork", Peer::Host);
}

/// rs_stats carries its size: older and newer callers both work.
#[test]
fn stats_size_versioning() {
    defect_case("stats-size", Peer::Host);
}

/// The reservation pool is bounded and reusable.
#[test]
fn reservation_pool_limit() {
    defect_case("handle-limit", Peer::Host);
}

// ---------- packaging: install step, SONAME, pkg-config ----------

/// `ffi/install.sh --prefix` installs the versioned library with its SONAME links, the
/// static library, the header and a pkg-config file without placeholders.
#[test]
fn install_step_layout() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = dir.path().join("prefix");
    c_build::install(&prefix).unwrap_or_else(|e| panic!("{e}"));
    let lib = prefix.join("lib");
    let version = env!("CARGO_PKG_VERSION");
    let minor_patch = version.split_once('.').expect("x.y.z").1;
    let real = format!("libringside.so.0.{minor_patch}");
    assert!(lib.join(&real).is_file(), "{real} missing");
    assert_eq!(
        std::fs::read_link(lib.join("libringside.so.0")).expect("libringside.so.0 is a link"),
        PathBuf::from(&real)
    );
    assert_eq!(
        std::fs::read_link(lib.join("libringside.so")).expect("libringside.so is a link"),
        PathBuf::from("libringside.so.0")
    );
    assert_eq!(
        c_build::soname(&lib.join(&real)).expect("readelf"),
        Some("libringside.so.0".to_owned()),
        "the installed library's SONAME"
    );
    assert!(lib.join("libringside.a").is_file());
    assert_eq!(
        std::fs::read(prefix.join("include/ringside.h")).expect("installed header"),
        std::fs::read(c_build::include_dir().join("ringside.h")).expect("header")
    );
    for pc in ["ringside.pc", "ringside-shared.pc"] {
        let text = std::fs::read_to_string(lib.join("pkgconfig").join(pc)).expect("pc file");
        assert!(
            !text.contains("example") && !text.contains('@'),
            "{pc} has a placeholder:\n{text}"
        );
        assert!(
            text.contains(&format!("Version: {version}")),
            "{pc}:\n{text}"
        );
        assert!(
            text.contains(&format!("prefix={}", prefix.display())),
            "{pc}:\n{text}"
        );
    }
    let modversion = c_build::pkg_config(&prefix, &["--modversion"]).expect("pkg-config");
    assert_eq!(modversion, vec![version.to_owned()]);
}

/// A program built with `pkg-config --cflags --libs ringside` against the installed copy
/// needs `libringside.so.0` (the SONAME, not the link name) and runs.
#[test]
fn pkg_config_shared_links_the_soname() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = compile(
        &ffi_source("examples/producer.c"),
        dir.path(),
        Link::PkgConfig,
        &[],
    );
    let needed = c_build::needed_libraries(&exe).expect("readelf");
    assert!(
        needed.iter().any(|n| n == "libringside.so.0"),
        "NEEDED {needed:?}"
    );
    let host = start_host(dir.path(), "ringside.sock", 8);
    let mut cmd = Command::new(&exe);
    cmd.arg(&host.socket).arg("3");
    let out = run_program(cmd);
    assert_eq!(
        parse_producer_manifest(&String::from_utf8_lossy(&out.stdout)).len(),
        6
    );
}

/// `pkg-config --static` links libringside.a: the program has no dependency on the shared
/// library and runs with it removed from the prefix. (Before, both libraries sat in one
/// directory, `-lringside` picked the .so, and the program did not start.)
#[test]
fn pkg_config_static_links_statically() {
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = compile(
        &ffi_source("examples/producer.c"),
        dir.path(),
        Link::PkgConfigStatic,
        &[],
    );
    let needed = c_build::needed_libraries(&exe).expect("readelf");
    assert!(
        !needed.iter().any(|n| n.starts_with("libringside")),
        "a --static build needs the shared library: NEEDED {needed:?}"
    );
    for entry in std::fs::read_dir(dir.path().join("prefix/lib")).expect("lib dir") {
        let path = entry.expect("entry").path();
        if path.to_string_lossy().contains(".so") {
            std::fs::remove_file(&path).expect("remove the shared library");
        }
    }
    let host = start_host(dir.path(), "ringside.sock", 8);
    let mut cmd = Command::new(&exe);
    cmd.arg(&host.socket).arg("3");
    let started = now_ns();
    let out = run_program(cmd);
    let ended = now_ns();
    let expected = parse_producer_manifest(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(expected.len(), 6);
    verify(&read_all(host.host.ring()), &expected, started, ended);
}

/// The shared library of the build carries the SONAME, and only the cdylib does.
#[test]
fn shared_library_has_soname() {
    let lib = c_build::shared_lib().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c_build::soname(&lib).expect("readelf"),
        Some("libringside.so.0".to_owned())
    );
}

// ---------- the header ----------

/// The header stands alone and is warning-free as strict C99, C11, C2x, C++11 and C++17,
/// including the RS_STATS_INIT initialiser (which must list every field of rs_stats).
#[test]
fn header_compiles_standalone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("only_header.c");
    std::fs::write(
        &src,
        "#include \"ringside.h\"\n\
         int main(void) {\n\
             rs_stats s = RS_STATS_INIT;\n\
             rs_status rc = RS_OK;\n\
             return (int)s.sent + (int)rc + RS_MAX_TOPIC_LEN - 255 + (int)(s.size != sizeof s);\n\
         }\n",
    )
    .expect("write source");
    let include = c_build::include_dir();
    let cc = c_build::find_c_compiler().unwrap_or_else(|e| panic!("{e}"));
    let cxx = c_build::find_cxx_compiler();
    if let Err(why) = &cxx {
        skip_or_fail(&format!("no C++ compiler for -std=c++11/c++17: {why}"));
    }
    let mut compilers = vec![
        (cc.clone(), "-std=c99"),
        (cc.clone(), "-std=c11"),
        (cc, "-std=c2x"),
    ];
    if let Ok(cxx) = cxx {
        compilers.push((cxx.clone(), "-std=c++11"));
        compilers.push((cxx, "-std=c++17"));
    }
    for (compiler, std) in compilers {
        let mut cmd = Command::new(&compiler);
        if std.contains("++") {
            cmd.args(["-x", "c++"]);
        }
        c_build::run(
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
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
}
