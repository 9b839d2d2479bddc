//! The ring's memory is had up front: `ringside serve` backs a fresh ring with memory
//! when it creates it (its RssShmem covers the ring before any producer wrote), and a
//! connected producer's first lap over the ring takes no page faults (its page tables
//! were filled while it connected).
//!
//! Both need `MADV_POPULATE_READ`/`_WRITE` (Linux 5.14); on older kernels the tests say
//! so and skip.

use ringside_client::Producer;
use ringside_tests::memory::proc_memory;
use ringside_tests::sidecar::{Sidecar, TempDir};
use std::time::{Duration, Instant};

const RING: u64 = 16 << 20;

/// Whether this kernel has `MADV_POPULATE_READ` (5.14 and later).
fn kernel_populates() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']);
    let major: u32 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    (major, minor) >= (5, 14)
}

/// Minor page faults of the calling thread so far.
fn thread_minor_faults() -> u64 {
    // SAFETY: getrusage writes one rusage into the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_THREAD is Linux's per-thread counter.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    assert_eq!(rc, 0, "getrusage(RUSAGE_THREAD)");
    usage.ru_minflt as u64
}

#[test]
fn serve_backs_a_fresh_ring_with_memory_at_start() {
    if !kernel_populates() {
        println!("SKIP: this kernel has no MADV_POPULATE_READ (before 5.14)");
        return;
    }
    let dir = TempDir::new("prefault-serve");
    let sidecar = Sidecar::start(&dir, &["--ring-size", "16MiB"]);
    let shmem = proc_memory(sidecar.child.id())
        .expect("the sidecar's /proc status")
        .shmem;
    println!("sidecar RssShmem after start, no producer yet: {shmem} bytes (ring {RING})");
    assert!(
        shmem >= RING,
        "the sidecar maps only {shmem} bytes of shared memory after start, before any producer wrote: the {RING}-byte ring was not backed at creation"
    );
}

#[test]
fn a_connected_producer_takes_no_page_faults_on_its_first_lap() {
    if !kernel_populates() {
        println!("SKIP: this kernel has no MADV_POPULATE_WRITE (before 5.14)");
        return;
    }
    let dir = TempDir::new("prefault-lap");
    let sidecar = Sidecar::start(&dir, &["--ring-size", "16MiB", "--max-payload", "4KiB"]);
    let started = Instant::now();
    let producer = Producer::connect(&sidecar.socket).expect("connect");
    assert!(
        producer.wait_connected(Duration::from_secs(10)),
        "the producer did not connect: {:?}",
        producer.last_error()
    );
    let connect_ms = started.elapsed().as_secs_f64() * 1e3;
    let payload = vec![0x5a_u8; 1024];
    // More than one lap: every page of the ring is written at least once.
    let sends = RING as usize / payload.len() + 64;
    let before = thread_minor_faults();
    for _ in 0..sends {
        producer.send("prefault", &payload).expect("send");
    }
    let faults = thread_minor_faults() - before;
    let pages = RING / 4096;
    println!(
        "connect {connect_ms:.1} ms; {sends} sends of 1 KiB over a {RING}-byte ring ({pages} pages): {faults} minor page faults in the sending thread"
    );
    assert!(
        faults < 32,
        "the sending thread took {faults} minor page faults over its first lap of a {pages}-page ring: its page tables were not filled when it connected"
    );
}
