//! Version rules (ring-format §10): a producer of another ring format is refused at connect
//! time, with a refusal that names both versions, and never gets a ring to write into.

use std::os::fd::AsFd;
use std::time::Duration;

use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, connect, socket};
use ringside_ring::handshake::{Hello, RefusalReason, Welcome, recv_message, send_message};
use ringside_ring::{FORMAT_VERSION, HostOptions, RingConfig, RingHost};
use ringside_tests::ring_support::socket_path;
use zerocopy::IntoBytes;

/// Sends `hello` over a raw connection, as a producer library of another release would,
/// and returns the sidecar's answer and how many fds came with it.
fn exchange(path: &std::path::Path, hello: &Hello) -> (Welcome, usize) {
    let sock = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    connect(
        std::os::fd::AsRawFd::as_raw_fd(&sock),
        &UnixAddr::new(path).expect("path"),
    )
    .expect("connect to the host");
    send_message(sock.as_fd(), hello.as_bytes(), &[]).expect("send hello");
    let mut buf = [0u8; size_of::<Welcome>()];
    let received = recv_message::<4>(sock.as_fd(), &mut buf, MsgFlags::empty()).expect("recv");
    let welcome = Welcome::decode(&buf[..received.len]).expect("a welcome of this handshake");
    (welcome, received.fds.len())
}

#[test]
fn a_ring_format_1_producer_is_refused_naming_both_versions() {
    assert_eq!(FORMAT_VERSION, 2, "this test pins the v1 -> v2 transition");
    let path = socket_path("version");
    let host = RingHost::start(HostOptions {
        socket_path: path.clone(),
        ring: RingConfig {
            capacity: 64 * 1024,
            max_payload: 1024,
        },
        adopt_grace: Duration::ZERO,
        ..HostOptions::default()
    })
    .expect("host starts");

    // What a producer library of format 1 sends: handshake v1, ring format 1.
    let old = Hello {
        ring_format: 1,
        ..Hello::new(0)
    };
    let (welcome, fds) = exchange(&path, &old);
    let (reason, detail) = welcome.refusal().expect("a v1 producer is refused");
    eprintln!("refusal: {reason}: {detail}");
    assert_eq!(reason, RefusalReason::VersionMismatch);
    assert!(
        detail.contains("ring format v1") && detail.contains("ring format v2"),
        "the refusal names both versions: {detail}"
    );
    assert_eq!(fds, 0, "a refused producer gets no ring");

    // The same host admits a producer of this release.
    let (welcome, fds) = exchange(&path, &Hello::new(0));
    assert!(welcome.refusal().is_none(), "{:?}", welcome.refusal());
    assert_eq!(fds, 3, "ring, doorbell page, eventfd");
    assert_eq!(host.stats().producers_refused, 1);
}
