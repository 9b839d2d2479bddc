//! Producers are admitted by peer credentials: a producer whose uid is not allowed is
//! refused with a clear reason that names its uid.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ringside_ring::{HostOptions, RingConfig, RingHost};
use ringside_tests::ring_support::{Proc, socket_path};

const PRODUCER: &str = env!("CARGO_BIN_EXE_ring_producer");

fn start_host(name: &str, allow_uids: Vec<u32>) -> (RingHost, PathBuf) {
    let path = socket_path(name);
    let host = RingHost::start(HostOptions {
        socket_path: path.clone(),
        ring: RingConfig {
            capacity: 64 * 1024,
            max_payload: 1024,
        },
        adopt_grace: Duration::ZERO,
        allow_uids,
        ..HostOptions::default()
    })
    .expect("host starts");
    (host, path)
}

/// Runs `ring_producer --connect-only`, optionally dropping to `uid` first; returns its
/// first line (`CONNECTED ...`, `REFUSED reason=.. uid=.. detail=..`, or `NOTCONNECTED ..`
/// when it kept retrying for 10 s).
fn try_connect(path: &std::path::Path, setuid: Option<u32>) -> String {
    let mut args = vec![
        "--socket".to_owned(),
        path.display().to_string(),
        "--connect-only".to_owned(),
        "1".to_owned(),
    ];
    if let Some(uid) = setuid {
        args.push("--setuid".to_owned());
        args.push(uid.to_string());
    }
    let mut child = Proc::spawn(PRODUCER, &args);
    child.expect_line("", Duration::from_secs(20))
}

fn wait_refused(host: &RingHost, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while host.stats().producers_refused < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn uid_not_allowed_is_refused_with_a_reason_naming_the_uid() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: not root, cannot setuid(65534) to act as another user");
        return;
    }
    // Default options: only the host's own uid (root here) and root may produce.
    let (host, path) = start_host("uid-default", Vec::new());
    let line = try_connect(&path, Some(65534));
    eprintln!("{line}");
    assert!(
        line.starts_with("REFUSED reason=UidNotAllowed uid=65534 "),
        "{line}"
    );
    assert!(
        line.contains("uid 65534"),
        "the reason names the uid: {line}"
    );
    wait_refused(&host, 1);
    assert_eq!(host.stats().producers_refused, 1);
    assert_eq!(host.stats().producers_admitted, 0);
    // The same host still admits root.
    let line = try_connect(&path, None);
    assert!(line.starts_with("CONNECTED"), "{line}");

    // And allowing 65534 explicitly admits it.
    let (host, path) = start_host("uid-allowed", vec![65534]);
    let line = try_connect(&path, Some(65534));
    assert!(line.starts_with("CONNECTED"), "{line}");
    assert_eq!(host.stats().producers_refused, 0);
}

#[test]
fn root_is_refused_when_the_allowlist_names_another_uid() {
    let (host, path) = start_host("uid-list", vec![12345]);
    let own = nix::unistd::geteuid().as_raw();
    let line = try_connect(&path, None);
    eprintln!("{line}");
    assert!(line.starts_with("REFUSED reason=UidNotAllowed "), "{line}");
    assert!(
        line.contains(&format!("uid {own} ")),
        "the reason names the uid: {line}"
    );
    assert!(
        line.contains("12345"),
        "the reason names the allowlist: {line}"
    );
    wait_refused(&host, 1);
    assert_eq!(host.stats().producers_refused, 1);
    assert_eq!(host.stats().producers_connected, 0);
}

/// Regression: admission used to count a connection against the pending limit
/// (`max_producers` + 16) before checking the peer's uid, so any local user could hold 80
/// silent connections and lock every legitimate producer out. The host now checks peer
/// credentials at accept time and refuses a disallowed uid before it takes a slot.
#[test]
fn silent_connections_from_a_disallowed_uid_do_not_lock_out_producers() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: not root, cannot setuid(65534) to act as another user");
        return;
    }
    let (host, path) = start_host("hold", Vec::new());
    let mut holder = Proc::spawn(
        env!("CARGO_BIN_EXE_ring_hostile"),
        &[
            "hold".to_owned(),
            "--socket".to_owned(),
            path.display().to_string(),
            "--count".to_owned(),
            "100".to_owned(),
            "--setuid".to_owned(),
            "65534".to_owned(),
        ],
    );
    let held = holder.expect_line("HELD", Duration::from_secs(10));
    eprintln!("{held}; host {:?}", host.stats());
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let line = try_connect(&path, None);
    eprintln!(
        "after {:?}: {line}; host {:?}",
        started.elapsed(),
        host.stats()
    );
    holder.close_stdin();
    assert!(
        line.starts_with("CONNECTED"),
        "an allowed producer was locked out by a disallowed uid's silent connections: {line}"
    );
}
