//! State shared by the gRPC handlers of one running sidecar.

use crate::auth::TokenCheck;
use crate::limits::SubscriberSlots;
use crate::observer::Observer;
use crate::wake::{WaitRegistry, WakeState};
use ringside_ring::{PerReason, RingHost, RingView};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Per-call limits from the flags.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// Largest batch, bytes (`--subscriber-buffer`).
    pub subscriber_buffer: usize,
    /// Largest request, bytes (`--max-request`).
    pub max_request: usize,
    /// Reader stall bound (`--stall-timeout`).
    pub stall_timeout: Duration,
    /// Subscribe streams one connection may carry (`--max-streams-per-connection`).
    pub subscribe_streams_per_connection: u32,
    /// `--subscriber-stall-timeout` (for the status of a stream it ends).
    pub subscriber_stall_timeout: Duration,
}

/// Counters summed over all subscribers since start.
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames sent.
    pub frames_out: AtomicU64,
    /// Payload bytes sent.
    pub bytes_out: AtomicU64,
    /// Frames lost, by reason.
    pub lost: PerReason<AtomicU64>,
}

/// Everything a handler needs.
#[derive(Debug)]
pub struct Shared {
    /// The ring, mapped read-only.
    pub ring: Arc<RingView>,
    /// The producer side (stats).
    pub host: Arc<RingHost>,
    /// Published by the wake task.
    pub wake_rx: watch::Receiver<WakeState>,
    /// Where caught-up subscribers say they wait.
    pub waiters: WaitRegistry,
    /// Set once on SIGTERM/SIGINT.
    pub shutdown: Arc<AtomicBool>,
    /// Subscriber admission.
    pub slots: Arc<SubscriberSlots>,
    /// Ingest measurements.
    pub observer: Arc<Observer>,
    /// Bearer token check.
    pub auth: TokenCheck,
    /// Per-call limits.
    pub limits: CallLimits,
    /// Totals.
    pub counters: Counters,
    /// Budget total, bytes.
    pub budget_bytes: u64,
    /// Limit checked against, bytes (0 = none).
    pub memory_limit_bytes: u64,
    /// Start time.
    pub started: Instant,
    /// Validated frame entries shared by subscribers that stand at the same place.
    pub chunks: crate::share::ChunkCache,
}
