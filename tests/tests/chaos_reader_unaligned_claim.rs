//! Regression tests (fixed) for a hang found by the `ring_reader` fuzz target
//! (reproducer: `tests/fuzz/artifacts/ring_reader/hang-unaligned-claim-seek`).
//!
//! A producer (any process with the ring mapped writable) forges the claim word with a
//! position that is not 8-aligned. `RingReader::new` then positions the cursor with
//! `seek_earliest` / `seek_by`, which call `scan(from, tail.pos, ..)`: `scan` walks aligned
//! positions `pos += 8` until `pos == pos0 + span`, but with an unaligned tail the end is
//! unaligned, so the loop never meets it and walks the whole 2^64 space (~2^61 commit-word
//! loads): the constructor never returns. In the sidecar this is one Subscribe (earliest,
//! or any resume by sequence) pinning a worker thread forever after one hostile write.
//! `ReadStep` handling of an unaligned tail (docs/ring-format.md §5.1 step 0) exists in
//! `read`, but the start-position searches do not go through it.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::mpsc::channel;
use std::time::Duration;

use ringside_ring::layout::{CLAIM_OFFSET, RingHeader};
use ringside_ring::shm::create_ring_memfd;
use ringside_ring::{ReaderOptions, RingConfig, RingReader, RingView, StartAt};

/// Generous bound: the constructor does at most one 64 KiB scan per probe here, microseconds
/// of work; 30 s only separates "returned" from "never returns".
const HANG: Duration = Duration::from_secs(30);

/// A 64 KiB ring with no frames whose claim word says position 0x10005 (unaligned, just
/// past one lap) and sequence 3.
fn ring_with_unaligned_claim() -> Arc<RingView> {
    let config = RingConfig {
        capacity: 64 * 1024,
        max_payload: 1024,
    };
    let fd = create_ring_memfd(&config, &RingHeader::new(&config, 1, 1)).expect("ring");
    let mut word = [0u8; 16];
    word[..8].copy_from_slice(&0x1_0005u64.to_le_bytes());
    word[8..].copy_from_slice(&3u64.to_le_bytes());
    let n = nix::sys::uio::pwrite(fd.as_fd(), &word, CLAIM_OFFSET as i64).expect("pwrite");
    assert_eq!(n, 16);
    Arc::new(RingView::open(fd).expect("view"))
}

fn new_reader_returns(start: StartAt) -> bool {
    let view = ring_with_unaligned_claim();
    let (tx, rx) = channel();
    // The thread is left spinning if the bug is present; the test process ends anyway.
    std::thread::spawn(move || {
        let r = RingReader::new(view, start, ReaderOptions::default());
        let _ = tx.send(r.is_ok());
    });
    rx.recv_timeout(HANG).is_ok()
}

#[test]
fn reader_start_earliest_with_unaligned_claim_returns() {
    assert!(
        new_reader_returns(StartAt::Earliest),
        "RingReader::new(Earliest) did not return within {HANG:?}"
    );
}

#[test]
fn reader_resume_by_sequence_with_unaligned_claim_returns() {
    assert!(
        new_reader_returns(StartAt::Sequence(1)),
        "RingReader::new(Sequence(1)) did not return within {HANG:?}"
    );
}

#[test]
fn reader_start_latest_with_unaligned_claim_returns() {
    // Latest takes the claim word as is and scans nothing: this one works (control).
    assert!(new_reader_returns(StartAt::Latest));
}

/// The same bug through the real sidecar: a hostile producer forges an unaligned claim
/// position, then one `Subscribe` from earliest never gets an answer (the request's
/// `RingReader::new` spins on a tokio worker thread; with as many such requests as worker
/// threads, the whole gRPC server stops answering).
use ringside_tests::sidecar as harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_answers_subscribe_after_unaligned_claim_forgery() {
    use ringside_proto::v1;
    let dir = harness::TempDir::new("unaligned-claim");
    let mut sidecar =
        harness::Sidecar::start(&dir, &["--ring-size", "64KiB", "--max-payload", "1KiB"]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ring_hostile"))
        .arg("claim")
        .arg("--socket")
        .arg(&sidecar.socket)
        .args(["--pos", "65541", "--seq", "3"])
        .output()
        .expect("run ring_hostile claim");
    assert!(out.status.success(), "ring_hostile claim failed: {out:?}");
    let mut client = harness::client(&sidecar.endpoint()).await;
    let req = harness::sub_req(v1::subscribe_request::Start::Earliest(true));
    // The bug pinned the request inside RingReader::new, before any response. Now the
    // response (headers) comes back at once; no batch is due, the forged ring has no data.
    let answered = tokio::time::timeout(HANG, client.subscribe(req)).await;
    let alive = sidecar.child.try_wait().ok().flatten().is_none();
    let _ = sidecar.kill();
    assert!(alive, "the sidecar exited");
    assert!(
        answered.is_ok(),
        "Subscribe(earliest) got no answer within {HANG:?} after an unaligned claim forgery"
    );
}
