//! Bounds the batches one Subscribe stream has handed to HTTP/2 but not yet written to its
//! socket.
//!
//! hyper polls a response body whenever the HTTP/2 stream has at least one byte of send
//! capacity, and h2 queues the whole chunk it gets; what it queues per stream is bounded
//! only by its `max_send_buf_size` (400 KiB, not settable through tonic) plus one chunk.
//! With 10,000 subscribers that bound alone would be 4 GiB. So the stream bounds it itself:
//! each batch is handed over as a `Bytes` whose owner counts it, h2 drops the `Bytes` once
//! its last byte went into the socket (a chunk it splits into DATA frames is held until the
//! last one), and a stream with [`CHUNKS_IN_FLIGHT`] batches out builds no new one until one
//! of them is dropped; the drop wakes it. Per stream, batch memory is then at most
//! `CHUNKS_IN_FLIGHT + 1` batch buffers (those out, and the one being filled), each at most
//! `--subscriber-buffer`: the budget's per-subscriber term.

use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// Batches a stream may have handed to HTTP/2 and not yet written to its socket: one
/// being written, one queued behind it (so the socket never waits for the next batch to
/// be built).
pub const CHUNKS_IN_FLIGHT: usize = 2;

#[derive(Debug, Default)]
struct GateState {
    in_flight: usize,
    waker: Option<Waker>,
}

/// The counter of one stream's batches in flight.
#[derive(Debug, Clone, Default)]
pub struct ChunkGate(Arc<Mutex<GateState>>);

/// A batch in flight: counted until h2 drops it.
struct Tracked {
    chunk: Bytes,
    gate: ChunkGate,
}

impl AsRef<[u8]> for Tracked {
    fn as_ref(&self) -> &[u8] {
        &self.chunk
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.gate.lock();
            s.in_flight = s.in_flight.saturating_sub(1);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl ChunkGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands `chunk` out, counted until every clone of the returned `Bytes` is dropped.
    /// No copy: the returned `Bytes` points into `chunk`.
    pub fn track(&self, chunk: Bytes) -> Bytes {
        self.lock().in_flight += 1;
        Bytes::from_owner(Tracked {
            chunk,
            gate: self.clone(),
        })
    }

    /// Ready when fewer than [`CHUNKS_IN_FLIGHT`] batches are out; otherwise the task is
    /// woken when one is dropped.
    pub fn poll_room(&self, cx: &Context<'_>) -> Poll<()> {
        let mut s = self.lock();
        if s.in_flight < CHUNKS_IN_FLIGHT {
            return Poll::Ready(());
        }
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Batches out now.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn gates_at_the_bound_and_wakes_on_drop() {
        let gate = ChunkGate::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        let cx = Context::from_waker(&waker);
        let a = gate.track(Bytes::from_static(b"first batch"));
        assert_eq!(&a[..], b"first batch", "the same bytes, no copy needed");
        assert!(gate.poll_room(&cx).is_ready());
        let b = gate.track(Bytes::from_static(b"second"));
        assert_eq!(gate.in_flight(), CHUNKS_IN_FLIGHT);
        assert!(gate.poll_room(&cx).is_pending());
        // A clone (h2 splitting a chunk into frames) keeps it counted.
        let part = a.slice(0..5);
        drop(a);
        assert!(gate.poll_room(&cx).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        drop(part);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken by the drop");
        assert!(gate.poll_room(&cx).is_ready());
        drop(b);
        assert_eq!(gate.in_flight(), 0);
    }
}
