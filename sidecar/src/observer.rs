//! The ring observer: a helper thread that wakes a few times a second to
//! measure ingest and learn the topics in use.
//!
//! Ingest (frames, ring bytes, rates, retention) comes from the claim counter
//! alone, so it is exact and costs nothing per frame. Rates are taken over a
//! sliding window of one-second samples ([`RATE_SAMPLES`]), so they reach 0
//! once ingest stops. Topics are learned by following the ring with a reader
//! whose sink declines every frame at the topic check (no payload is copied),
//! at most [`MAX_STEPS`] frames per period. The observer never skips ahead: a
//! burst is read over the next periods, and only frames the producers overwrote
//! before it got to them (its reader reports them lapped) go uncounted. Every
//! frame it passes is in a topic's count or in `frames_not_counted`.

use ringside_ring::{
    FrameMeta, FrameSink, LossReason, PerReason, ReadStep, ReaderOptions, RingBounds, RingReader,
    RingView, StartAt,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most distinct topics remembered; more are counted as overflow.
pub const MAX_TOPICS: usize = 1024;
/// Observation period while frames arrive.
const PERIOD: Duration = Duration::from_millis(250);
/// Observation period while the ring is idle: fewer wake-ups of an idle sidecar.
const IDLE_PERIOD: Duration = Duration::from_secs(1);
/// Most frames inspected per period (bounds the thread's work under any load).
pub const MAX_STEPS: usize = 16 * 1024;
/// One-second samples of the claim counter kept for the rates: the window spans
/// `RATE_SAMPLES - 1` seconds.
pub const RATE_SAMPLES: usize = 6;

/// Per-topic counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct TopicStats {
    /// Frames seen.
    pub frames: u64,
    /// Payload bytes seen.
    pub payload_bytes: u64,
    /// Newest timestamp seen.
    pub last_timestamp_ns: u64,
}

/// What the observer measured.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Frames written since the sidecar started (exact, from the claim counter).
    pub frames_in: u64,
    /// Ring bytes (headers, topics, payloads) written since start (exact).
    pub ring_bytes_in: u64,
    /// Frames per second over the sample window.
    pub frames_per_sec: f64,
    /// Ring bytes claimed per second over the sample window.
    pub ring_bytes_per_sec: f64,
    /// Seconds a frame stays in the ring at that rate (0 when nothing was written in the
    /// window: nothing is being overwritten).
    pub retention_seconds: f64,
    /// Newest frame timestamp minus the oldest retained frame's, seconds (0 when empty).
    pub retained_span_seconds: f64,
    /// Frames the topic reader passed since start.
    pub frames_seen: u64,
    /// Of those, frames counted in a topic.
    pub frames_counted: u64,
    /// Abandoned and corrupt frames the observer came across (sampled; its own lapping is
    /// not a loss of the ring's, so `Lapped` stays 0).
    pub ring_losses: PerReason<u64>,
    /// Topics, bounded by [`MAX_TOPICS`]; counts are sampled under heavy ingest.
    pub topics: HashMap<Box<str>, TopicStats>,
    /// More topics were seen than the table holds.
    pub topics_truncated: bool,
    /// Oldest retained and newest frame, refreshed every period (computing
    /// them scans the ring, so Info reads this cache instead).
    pub bounds: Option<RingBounds>,
}

/// The claim counter sampled once a second, for rates over a real window.
#[derive(Debug, Default)]
struct RateWindow {
    /// (when, frames, ring bytes), a ring buffer: the newest before `next`.
    samples: [Option<(Instant, u64, u64)>; RATE_SAMPLES],
    /// Where the next sample goes (the oldest, once full).
    next: usize,
}

impl RateWindow {
    /// Adds a sample, dropping the oldest when full.
    fn push(&mut self, at: Instant, frames: u64, bytes: u64) {
        self.samples[self.next] = Some((at, frames, bytes));
        self.next = (self.next + 1) % RATE_SAMPLES;
    }

    /// When the newest sample was taken.
    fn newest_at(&self) -> Option<Instant> {
        self.samples[(self.next + RATE_SAMPLES - 1) % RATE_SAMPLES].map(|s| s.0)
    }

    /// (frames/s, bytes/s) between the oldest and the newest sample: exactly 0 once
    /// every sample in the window was taken after the last write.
    fn rates(&self) -> (f64, f64) {
        let newest = self.samples[(self.next + RATE_SAMPLES - 1) % RATE_SAMPLES];
        let oldest = (0..RATE_SAMPLES)
            .map(|i| self.samples[(self.next + i) % RATE_SAMPLES])
            .find(Option::is_some)
            .flatten();
        match (oldest, newest) {
            (Some((t0, f0, b0)), Some((t1, f1, b1))) if t1 > t0 => {
                let dt = t1.duration_since(t0).as_secs_f64();
                (
                    f1.saturating_sub(f0) as f64 / dt,
                    b1.saturating_sub(b0) as f64 / dt,
                )
            }
            _ => (0.0, 0.0),
        }
    }
}

/// Runs the observer thread.
#[derive(Debug)]
pub struct Observer {
    state: Arc<Mutex<Observed>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Records the topic of each frame and declines it, so no payload is copied.
struct TopicSink {
    topic: [u8; 256],
    topic_len: usize,
}

impl FrameSink for TopicSink {
    fn accept_topic(&mut self, topic: &[u8], _utf8: bool) -> bool {
        let n = topic.len().min(self.topic.len());
        self.topic[..n].copy_from_slice(&topic[..n]);
        self.topic_len = n;
        false
    }

    fn begin(&mut self, _meta: &FrameMeta) -> Option<&mut ringside_ring::BytesMut> {
        // Never called: accept_topic always declines.
        None
    }

    fn commit(&mut self, _meta: &FrameMeta) {}

    fn abort(&mut self) {}
}

impl Observer {
    /// Starts following `ring` from its current end.
    ///
    /// # Errors
    ///
    /// The OS error when the thread cannot be spawned.
    pub fn start(ring: Arc<RingView>) -> std::io::Result<Observer> {
        let state = Arc::new(Mutex::new(Observed::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("ringside-observer".into())
                .stack_size(256 * 1024)
                .spawn(move || run(ring, state, stop))?
        };
        Ok(Observer {
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// A copy of the measurements (topics included).
    pub fn snapshot(&self) -> Observed {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reads a few numbers without copying the topic table.
    pub fn with<R>(&self, f: impl FnOnce(&Observed) -> R) -> R {
        f(&self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Stops the thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn run(ring: Arc<RingView>, state: Arc<Mutex<Observed>>, stop: Arc<AtomicBool>) {
    let capacity = ring.capacity();
    let Ok(mut reader) =
        RingReader::new(Arc::clone(&ring), StartAt::Latest, ReaderOptions::default())
    else {
        return;
    };
    let start = ring.tail();
    let mut local = Observed::default();
    let mut sink = TopicSink {
        topic: [0; 256],
        topic_len: 0,
    };
    let mut window = RateWindow::default();
    window.push(Instant::now(), 0, 0);
    let mut newest_timestamp_ns = 0u64;
    let mut period = PERIOD;
    while !stop.load(Ordering::Acquire) {
        // Parked, not slept: `stop` unparks the thread so shutdown does not wait a period.
        std::thread::park_timeout(period);
        let tail = ring.tail();
        let idle = local.frames_in == tail.seq.saturating_sub(start.seq);
        local.frames_in = tail.seq.saturating_sub(start.seq);
        local.ring_bytes_in = tail.pos.saturating_sub(start.pos);
        // Topics: every frame, at most MAX_STEPS per period; a burst is read over the
        // next periods. Frames lapped before the reader got to them are not counted.
        let mut caught_up = false;
        for _ in 0..MAX_STEPS {
            match reader.read(&mut sink) {
                ReadStep::Filtered(meta) | ReadStep::Frame(meta) => {
                    newest_timestamp_ns = newest_timestamp_ns.max(meta.timestamp_ns);
                    let Ok(name) = std::str::from_utf8(&sink.topic[..sink.topic_len]) else {
                        continue;
                    };
                    let known = local.topics.contains_key(name);
                    if !known && local.topics.len() < MAX_TOPICS {
                        local.topics.insert(Box::from(name), TopicStats::default());
                    } else if !known {
                        local.topics_truncated = true;
                    }
                    if let Some(t) = local.topics.get_mut(name) {
                        t.frames += 1;
                        t.payload_bytes += u64::from(meta.payload_len);
                        t.last_timestamp_ns = t.last_timestamp_ns.max(meta.timestamp_ns);
                        local.frames_counted += 1;
                    }
                }
                ReadStep::Loss(l) => {
                    if l.reason != LossReason::Lapped {
                        local.ring_losses[l.reason] += l.frames;
                    }
                }
                ReadStep::Idle => {
                    caught_up = true;
                    break;
                }
                ReadStep::Pending => break,
            }
        }
        local.frames_seen = reader.next_seq().saturating_sub(start.seq);
        // Read again soon while frames arrive or a backlog is left.
        period = if idle && caught_up {
            IDLE_PERIOD
        } else {
            PERIOD
        };
        let now = Instant::now();
        if window
            .newest_at()
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            window.push(now, local.frames_in, local.ring_bytes_in);
            (local.frames_per_sec, local.ring_bytes_per_sec) = window.rates();
            local.retention_seconds = if local.ring_bytes_per_sec > 0.0 {
                capacity as f64 / local.ring_bytes_per_sec
            } else {
                0.0
            };
        }
        let bounds = ring.bounds();
        local.retained_span_seconds = match bounds.oldest {
            Some(oldest) => newest_timestamp_ns.saturating_sub(oldest.timestamp_ns) as f64 / 1e9,
            None => 0.0,
        };
        local.bounds = Some(bounds);
        let mut shared = state.lock().unwrap_or_else(|e| e.into_inner());
        shared.clone_from(&local);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_reach_zero_once_the_window_has_no_writes() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut w = RateWindow::default();
        w.push(s(0), 0, 0);
        w.push(s(1), 1000, 100_000);
        w.push(s(2), 2000, 200_000);
        assert_eq!(w.rates(), (1000.0, 100_000.0));
        // Ingest stopped after second 2: the rate falls and is exactly 0 once the
        // oldest sample is from after the last write.
        for n in 3..=6 {
            w.push(s(n), 2000, 200_000);
            assert!(
                w.rates().0 > 0.0,
                "second {n}: the window still holds writes"
            );
        }
        w.push(s(7), 2000, 200_000);
        assert_eq!(w.rates(), (0.0, 0.0));
    }
}
