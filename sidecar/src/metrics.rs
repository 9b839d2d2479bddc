//! Prometheus metrics.
//!
//! Counters are incremented where things happen (frames and bytes out, losses
//! by reason, refusals). Every counter and gauge series is registered at zero
//! when the exporter starts, so dashboards show 0 rather than "no data" before
//! the first event. A 1-second task sets the gauges: subscribers, the lag
//! of each subscriber slot (label `slot`, bounded by `--max-subscribers`, so
//! the series count never grows with churn; a slot's series appears when the
//! slot is first used), ring retention and ingest, producers, budget and RssAnon.
//! Without an exporter (`--metrics-listen off`, the default) that task is not started:
//! the gauges would go nowhere, and it would wake an idle sidecar every second.

use crate::state::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use thiserror::Error;

/// The exporter could not start.
#[derive(Debug, Error)]
#[error(
    "cannot start the Prometheus exporter on {addr}: {reason}; pick another --metrics-listen address or `off`"
)]
pub struct MetricsError {
    addr: SocketAddr,
    reason: String,
}

/// Set once the exporter is installed: the gauge updater runs only then.
static EXPORTER_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Starts the HTTP exporter on `addr` (inside the current tokio runtime).
///
/// # Errors
///
/// [`MetricsError`] when the exporter cannot listen on `addr`.
pub fn install(addr: SocketAddr) -> Result<(), MetricsError> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(
                crate::subscribe::DELAY_HISTOGRAM.to_owned(),
            ),
            DELAY_BUCKETS,
        )
        .map_err(|e| MetricsError {
            addr,
            reason: e.to_string(),
        })?
        .install()
        .map_err(|e| MetricsError {
            addr,
            reason: e.to_string(),
        })?;
    describe();
    register_at_zero();
    // Relaxed: read by `spawn_updater` on the thread that called this (serve's start-up),
    // after this call returned; nothing else is published through it.
    EXPORTER_INSTALLED.store(true, Ordering::Relaxed);
    Ok(())
}

/// Upper bounds (seconds) of the per-batch delay histogram's buckets.
pub const DELAY_BUCKETS: &[f64] = &[
    25e-6, 50e-6, 100e-6, 200e-6, 300e-6, 500e-6, 1e-3, 1.5e-3, 2e-3, 5e-3, 10e-3, 100e-3, 1.0,
];

/// Every counter series, including each loss reason.
pub const COUNTERS: &[&str] = &[
    "ringside_frames_in_total",
    "ringside_ring_bytes_in_total",
    "ringside_frames_out_total",
    "ringside_payload_bytes_out_total",
    "ringside_batch_bytes_out_total",
    "ringside_shared_batches_total",
    "ringside_subscribers_refused_total",
    "ringside_subscribers_reaped_total",
    "ringside_subscriber_connections_closed_total",
    "ringside_connections_accepted_total",
    "ringside_connections_refused_total",
    "ringside_connections_handshake_timeout_total",
];

/// Every gauge series without labels.
pub const GAUGES: &[&str] = &[
    "ringside_subscribers",
    "ringside_subscriber_lag_bytes_max",
    "ringside_ring_retention_seconds",
    "ringside_ring_retained_span_seconds",
    "ringside_ingest_frames_per_second",
    "ringside_ingest_bytes_per_second",
    "ringside_producers_connected",
    "ringside_connections",
    "ringside_memory_budget_bytes",
    "ringside_memory_limit_bytes",
    "ringside_rss_anon_bytes",
];

/// Registers every series at zero (the updater sets the gauges' real values).
fn register_at_zero() {
    for &name in COUNTERS {
        metrics::counter!(name).increment(0);
    }
    for reason in ringside_ring::LossReason::ALL {
        metrics::counter!("ringside_frames_lost_total", "reason" => reason.as_str()).increment(0);
    }
    for &name in GAUGES {
        metrics::gauge!(name).increment(0.0);
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        "ringside_frames_in_total",
        "Frames written to the ring by producers."
    );
    describe_counter!(
        "ringside_ring_bytes_in_total",
        "Ring bytes (frame headers, topics, payloads) written by producers."
    );
    describe_counter!("ringside_frames_out_total", "Frames sent to subscribers.");
    metrics::describe_histogram!(
        crate::subscribe::DELAY_HISTOGRAM,
        metrics::Unit::Seconds,
        "Per batch sent: time from its first frame's producer timestamp to the batch being closed, by what led to the read (after: doorbell, backlog, pending_yield, pending_wait, progress)."
    );
    describe_counter!(
        "ringside_payload_bytes_out_total",
        "Payload bytes sent to subscribers."
    );
    describe_counter!(
        "ringside_batch_bytes_out_total",
        "Encoded batch bytes sent to subscribers."
    );
    describe_counter!(
        "ringside_shared_batches_total",
        "Batches sent from a shared chunk (frames another subscriber copied and validated), not read from the ring."
    );
    describe_counter!(
        "ringside_frames_lost_total",
        "Frames subscribers lost, by reason."
    );
    describe_counter!(
        "ringside_subscribers_refused_total",
        "Subscribe calls refused at --max-subscribers."
    );
    describe_counter!(
        "ringside_connections_accepted_total",
        "TCP connections admitted."
    );
    describe_counter!(
        "ringside_connections_refused_total",
        "TCP connections closed at --max-connections."
    );
    describe_gauge!("ringside_subscribers", "Active Subscribe streams.");
    describe_counter!(
        "ringside_subscribers_reaped_total",
        "Subscribe streams ended because their connection took no data while frames waited (--subscriber-stall-timeout)."
    );
    describe_counter!(
        "ringside_subscriber_connections_closed_total",
        "Connections closed because an ended subscriber still read nothing (twice --subscriber-stall-timeout)."
    );
    describe_counter!(
        "ringside_connections_handshake_timeout_total",
        "Connections closed for not sending the HTTP/2 preface in time (--handshake-timeout)."
    );
    describe_gauge!(
        "ringside_subscriber_lag_bytes",
        "Ring bytes a subscriber has not read yet, by slot."
    );
    describe_gauge!(
        "ringside_subscriber_lag_bytes_max",
        "Largest subscriber lag."
    );
    describe_gauge!(
        "ringside_ring_retention_seconds",
        "How long a frame stays in the ring at the ingest rate of the last 5 seconds (0 when nothing is written)."
    );
    describe_gauge!(
        "ringside_ring_retained_span_seconds",
        "Time span the ring holds: newest frame timestamp minus the oldest retained frame's."
    );
    describe_gauge!(
        "ringside_ingest_frames_per_second",
        "Frames written per second."
    );
    describe_gauge!(
        "ringside_ingest_bytes_per_second",
        "Ring bytes written per second (frames with headers)."
    );
    describe_gauge!(
        "ringside_producers_connected",
        "Producer processes connected."
    );
    describe_gauge!(
        "ringside_memory_budget_bytes",
        "Worst-case memory computed at start."
    );
    describe_gauge!(
        "ringside_memory_limit_bytes",
        "Memory limit the budget was checked against (0 = none)."
    );
    describe_gauge!(
        "ringside_rss_anon_bytes",
        "Private anonymous resident memory (RssAnon)."
    );
    describe_gauge!("ringside_connections", "TCP connections held.");
}

/// RssAnon of this process, from /proc/self/status.
pub fn rss_anon_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Updates the gauges every second until the process ends, if [`install`] started the
/// exporter before; without one it starts nothing.
pub fn spawn_updater(
    shared: Arc<Shared>,
    connections: Arc<tokio::sync::Semaphore>,
    max_connections: usize,
) {
    // Relaxed: see `install`.
    if !EXPORTER_INSTALLED.load(Ordering::Relaxed) {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let (mut last_frames, mut last_bytes) = (0u64, 0u64);
        metrics::gauge!("ringside_memory_budget_bytes").set(shared.budget_bytes as f64);
        metrics::gauge!("ringside_memory_limit_bytes").set(shared.memory_limit_bytes as f64);
        loop {
            tick.tick().await;
            let mut max_lag = 0u64;
            for (i, s) in shared.slots.stats().iter().enumerate() {
                let lag = if s.active.load(Ordering::Relaxed) {
                    s.lag_bytes.load(Ordering::Relaxed)
                } else {
                    0
                };
                max_lag = max_lag.max(lag);
                // Only touch series of slots that were ever used.
                if lag > 0 || s.frames_out.load(Ordering::Relaxed) > 0 {
                    metrics::gauge!("ringside_subscriber_lag_bytes", "slot" => i.to_string())
                        .set(lag as f64);
                }
            }
            metrics::gauge!("ringside_subscriber_lag_bytes_max").set(max_lag as f64);
            let (frames, bytes, fps, bps, retention, span) = shared.observer.with(|o| {
                (
                    o.frames_in,
                    o.ring_bytes_in,
                    o.frames_per_sec,
                    o.ring_bytes_per_sec,
                    o.retention_seconds,
                    o.retained_span_seconds,
                )
            });
            metrics::counter!("ringside_frames_in_total")
                .increment(frames.saturating_sub(last_frames));
            metrics::counter!("ringside_ring_bytes_in_total")
                .increment(bytes.saturating_sub(last_bytes));
            (last_frames, last_bytes) = (frames, bytes);
            metrics::gauge!("ringside_ingest_frames_per_second").set(fps);
            metrics::gauge!("ringside_ingest_bytes_per_second").set(bps);
            metrics::gauge!("ringside_ring_retention_seconds").set(retention);
            metrics::gauge!("ringside_ring_retained_span_seconds").set(span);
            metrics::gauge!("ringside_producers_connected")
                .set(shared.host.stats().producers_connected as f64);
            metrics::gauge!("ringside_connections")
                .set(max_connections.saturating_sub(connections.available_permits()) as f64);
            if let Some(rss) = rss_anon_bytes() {
                metrics::gauge!("ringside_rss_anon_bytes").set(rss as f64);
            }
        }
    });
}
