//! Writing an event does not allocate: a counting global allocator (this test binary's)
//! counts the allocations made by the test thread while it emits events through the layer
//! into a real ring, and while it emits them with no sidecar attached.
//!
//! The first events of each callsite are emitted before counting starts: `tracing`
//! registers a callsite once, and the layer's per-thread scratch buffer and the producer's
//! per-thread counter slot are set up on a thread's first record. After that, nothing.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use ringside_tracing::RingsideLayer;
use support::{read_all, start_host};
use tracing_subscriber::layer::SubscriberExt;

/// Counts the calls of the threads that turned counting on.
struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    // `try_with`: the allocator also runs while thread-locals are being torn down.
    let _ = COUNTING.try_with(|counting| {
        if counting.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every method forwards to the system allocator unchanged; the counting touches
// only const-initialised thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Allocations the calling thread makes while running `f`.
fn allocations_in(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

#[derive(Debug)]
#[allow(dead_code)] // read through Debug
struct Point {
    x: i32,
    y: i32,
}

/// The events of the test: each kind of field, a formatted message, inside a span.
fn emit(i: u64) {
    tracing::info!(a = 1, b = "two", "an event with two fields");
    tracing::warn!(
        i,
        neg = -3i64,
        ratio = 0.5,
        ok = true,
        point = ?Point { x: 1, y: 2 },
        "formatted message {} of {}",
        i,
        "many"
    );
}

#[test]
fn events_do_not_allocate() {
    const EVENTS: u64 = 5_000;
    let host = start_host(4096);
    let layer = RingsideLayer::connect(&host.socket).expect("layer");
    let stats = layer.stats_handle();
    assert!(stats.wait_connected(Duration::from_secs(10)));
    let span = tracing::info_span!("outer", k = 1);
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let _entered = tracing::info_span!("work").entered();
        emit(0); // registers the callsites, sizes the scratch buffer
        let n = allocations_in(|| {
            for i in 1..=EVENTS {
                emit(i);
            }
        });
        assert_eq!(n, 0, "{n} allocations for {} events", EVENTS * 2);
    });
    drop(span);
    let written = stats.stats().written;
    // 2 events per round, plus the span close of "work" (the "outer" span was created
    // before the layer's subscriber was the default, so it is not this layer's).
    assert_eq!(written, (EVENTS + 1) * 2 + 1, "{:?}", stats.stats());
    let frames = read_all(host.host.ring());
    assert_eq!(frames.len() as u64, written, "every record is in the ring");
}

#[test]
fn dropped_events_do_not_allocate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let layer = RingsideLayer::connect(dir.path().join("nobody.sock")).expect("layer");
    let stats = layer.stats_handle();
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        emit(0);
        let n = allocations_in(|| {
            for i in 1..=1000 {
                emit(i);
            }
        });
        assert_eq!(n, 0, "{n} allocations while dropping 2000 events");
    });
    assert_eq!(stats.stats().dropped_not_connected, 2002);
}
