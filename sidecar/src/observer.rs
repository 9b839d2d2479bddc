//! The ring observer: a helper thread that wakes a few times a second to
//! measure ingest and learn the topics in use.
//!
//! Ingest (frames, ring bytes, rates, retention) comes from the claim counter
//! alone, so it is exact and costs nothing per frame. Topics are learned by
//! following the ring with a reader whose sink declines every frame at the
//! topic check (no payload is copied), at most [`MAX_STEPS`] frames per
//! period: under heavy ingest the per-topic counts are a sample, and the
//! observer skips ahead rather than spend a core keeping up.

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
    /// Frames per second, recent.
    pub frames_per_sec: f64,
    /// Ring bytes claimed per second, recent.
    pub ring_bytes_per_sec: f64,
    /// Seconds a frame stays in the ring at the recent rate (0 when idle).
    pub retention_seconds: f64,
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
    fn accept_topic(&mut self, topic: &[u8]) -> bool {
        let n = topic.len().min(self.topic.len());
        self.topic[..n].copy_from_slice(&topic[..n]);
        self.topic_len = n;
        false
    }

    fn begin(&mut self, _meta: &FrameMeta) -> &mut [u8] {
        // Never called with a non-empty frame: accept_topic always declines.
        &mut self.topic[..0]
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
    let new_reader =
        || RingReader::new(Arc::clone(&ring), StartAt::Latest, ReaderOptions::default()).ok();
    let Some(mut reader) = new_reader() else {
        return;
    };
    let start = ring.tail();
    let mut local = Observed::default();
    let mut sink = TopicSink {
        topic: [0; 256],
        topic_len: 0,
    };
    let mut last = Instant::now();
    let (mut last_frames, mut last_bytes) = (0u64, 0u64);
    let mut period = PERIOD;
    while !stop.load(Ordering::Acquire) {
        // Parked, not slept: `stop` unparks the thread so shutdown does not wait a period.
        std::thread::park_timeout(period);
        let tail = ring.tail();
        let idle = local.frames_in == tail.seq.saturating_sub(start.seq);
        period = if idle { IDLE_PERIOD } else { PERIOD };
        local.frames_in = tail.seq.saturating_sub(start.seq);
        local.ring_bytes_in = tail.pos.saturating_sub(start.pos);
        // Topic sampling: skip ahead instead of chasing a fast ring.
        if reader.lag_bytes() > capacity / 4
            && let Some(r) = new_reader()
        {
            reader = r;
        }
        for _ in 0..MAX_STEPS {
            match reader.read(&mut sink) {
                ReadStep::Filtered(meta) | ReadStep::Frame(meta) => {
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
                    }
                }
                ReadStep::Loss(l) => {
                    if l.reason != LossReason::Lapped {
                        local.ring_losses[l.reason] += l.frames;
                    }
                }
                ReadStep::Idle | ReadStep::Pending => break,
            }
        }
        let now = Instant::now();
        let dt = now.duration_since(last).as_secs_f64();
        if dt >= 1.0 {
            let alpha = 0.5;
            let frame_rate = local.frames_in.saturating_sub(last_frames) as f64 / dt;
            let byte_rate = local.ring_bytes_in.saturating_sub(last_bytes) as f64 / dt;
            local.frames_per_sec = alpha * frame_rate + (1.0 - alpha) * local.frames_per_sec;
            local.ring_bytes_per_sec = alpha * byte_rate + (1.0 - alpha) * local.ring_bytes_per_sec;
            local.retention_seconds = if local.ring_bytes_per_sec > 1.0 {
                capacity as f64 / local.ring_bytes_per_sec
            } else {
                0.0
            };
            last = now;
            (last_frames, last_bytes) = (local.frames_in, local.ring_bytes_in);
        }
        local.bounds = Some(ring.bounds());
        let mut shared = state.lock().unwrap_or_else(|e| e.into_inner());
        shared.clone_from(&local);
    }
}
