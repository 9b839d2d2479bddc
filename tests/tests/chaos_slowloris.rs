//! Found by the chaos harness's slowloris clients (`tests/src/chaos_h2.rs`): a TCP
//! connection that never completed the HTTP/2 connection preface (sent nothing, or dribbled
//! it a byte at a time) was never closed by `ringside serve`, whatever
//! `--keepalive-interval`/`--keepalive-timeout`/`--subscriber-stall-timeout` said (keepalive
//! pings only start once the HTTP/2 handshake is done; nothing bounded the handshake). Each
//! such connection held one `--max-connections` slot for as long as the client liked, so
//! `--max-connections` silent clients (plus 8 for the overflow answers) locked every real
//! subscriber out. In the chaos run (seed 1795973961542773338) every silent and dribbling
//! client was still open after its 15 s hold unless a sidecar kill closed it.
//!
//! Fixed by `--handshake-timeout` (default 10s, `sidecar/src/limits.rs`): a connection that
//! has not sent the preface and its first frame header by then is closed. Both tests failed
//! before the fix (they were committed `#[ignore]`d).

use ringside_tests::chaos_h2;
use ringside_tests::sidecar as harness;

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use harness::{Sidecar, TempDir};

/// Flags with short keepalive and stall limits: anything idle for a few seconds should go.
const FLAGS: &[&str] = &[
    "--ring-size",
    "1MiB",
    "--max-connections",
    "2",
    "--keepalive-interval",
    "1s",
    "--keepalive-timeout",
    "1s",
    "--subscriber-stall-timeout",
    "2s",
];

/// How long a connection that never completes the handshake may live (generous: 10x the
/// keepalive interval plus timeout).
const BOUND: Duration = Duration::from_secs(20);

fn closed_within(kind: chaos_h2::Slowloris) -> chaos_h2::SlowEnd {
    let dir = TempDir::new("slowloris");
    let sidecar = Sidecar::start(&dir, FLAGS);
    let stop = AtomicBool::new(false);
    let generation = AtomicU64::new(0);
    chaos_h2::slowloris(
        kind,
        sidecar.addr,
        BOUND,
        &stop,
        &generation,
        None,
        &[],
        None,
    )
}

#[test]
fn silent_connection_is_closed() {
    let end = closed_within(chaos_h2::Slowloris::Silent);
    assert!(
        matches!(end, chaos_h2::SlowEnd::Closed(_)),
        "a connection that sent nothing was still open after {BOUND:?} ({end:?})"
    );
}

#[test]
fn silent_connections_do_not_lock_out_subscribers() {
    let dir = TempDir::new("slowloris-lockout");
    let sidecar = Sidecar::start(&dir, FLAGS);
    // 2 slots + 8 overflow answers (limits.rs OVERFLOW_CONNECTIONS), all held silently.
    let held: Vec<TcpStream> = (0..10)
        .filter_map(|_| TcpStream::connect(sidecar.addr).ok())
        .collect();
    assert_eq!(held.len(), 10, "connect");
    std::thread::sleep(BOUND);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let answered = rt.block_on(async {
        let ch = tonic::transport::Endpoint::from_shared(sidecar.endpoint())
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await;
        let Ok(ch) = ch else { return false };
        let mut c = ringside_proto::v1::ringside_client::RingsideClient::new(ch);
        matches!(
            tokio::time::timeout(
                Duration::from_secs(5),
                c.info(ringside_proto::v1::InfoRequest {})
            )
            .await,
            Ok(Ok(_))
        )
    });
    drop(held);
    assert!(
        answered,
        "Info was not answered while silent clients held every connection slot for {BOUND:?}"
    );
}
