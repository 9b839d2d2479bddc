//! Prometheus metrics of the exporter. Every series is registered at start
//! with its value (0), so dashboards show 0 rather than "no data":
//!
//! | series | type | meaning |
//! |---|---|---|
//! | `ringside_export_published_records_total` | counter | records published (first attempts) |
//! | `ringside_export_published_frames_total` | counter | frames in them |
//! | `ringside_export_acked_records_total` | counter | records the stream holds (acknowledged, or found reading back after a failure) |
//! | `ringside_export_acked_frames_total` | counter | frames in them |
//! | `ringside_export_deduplicated_total` | counter | acknowledgements saying "duplicate" |
//! | `ringside_export_republished_total` | counter | records published again after a failure |
//! | `ringside_export_lost_frames_total{reason}` | counter | frames lost, by reason (`lapped`, `abandoned`, `corrupt`, `rejected`, ...) |
//! | `ringside_export_nats_reconnects_total` | counter | NATS connections rebuilt |
//! | `ringside_export_sidecar_resubscribes_total` | counter | Subscribe streams opened again |
//! | `ringside_export_in_flight_records`, `..._in_flight_bytes` | gauge | the window |
//! | `ringside_export_lag_frames` | gauge | frames written to the ring and not yet acknowledged by the stream |
//! | `ringside_export_memory_budget_bytes`, `..._memory_limit_bytes`, `..._rss_anon_bytes` | gauge | memory |

use metrics::{Counter, Gauge, counter, describe_counter, describe_gauge, gauge};
use ringside_proto::v1;
use std::net::SocketAddr;
use thiserror::Error;

/// The Prometheus listener could not start.
#[derive(Debug, Error)]
#[error(
    "cannot start the Prometheus exporter on {addr}: {reason}; pick another --metrics-listen address or `off`"
)]
pub struct MetricsError {
    addr: SocketAddr,
    reason: String,
}

/// Starts the HTTP listener on `addr` (inside the current tokio runtime).
pub fn install(addr: SocketAddr) -> Result<(), MetricsError> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| MetricsError {
            addr,
            reason: e.to_string(),
        })
}

/// Handles to every series (cheap to update on the hot path).
#[derive(Debug)]
pub struct ExportMetrics {
    published_records: Counter,
    published_frames: Counter,
    acked_records: Counter,
    acked_frames: Counter,
    deduplicated: Counter,
    republished: Counter,
    lost: Vec<(i32, Counter)>,
    nats_reconnects: Counter,
    sidecar_resubscribes: Counter,
    in_flight_records: Gauge,
    in_flight_bytes: Gauge,
    lag_frames: Gauge,
    budget: Gauge,
    limit: Gauge,
    rss_anon: Gauge,
}

/// Every loss reason the proto knows, plus `rejected`.
fn reasons() -> Vec<i32> {
    let mut r: Vec<i32> = (1..64)
        .filter(|c| v1::LossReason::try_from(*c).is_ok())
        .collect();
    r.push(crate::record::REASON_REJECTED);
    r
}

impl ExportMetrics {
    /// Describes and registers every series at 0.
    pub fn register() -> ExportMetrics {
        describe_counter!(
            "ringside_export_published_records_total",
            "Records published to JetStream (first attempts)."
        );
        describe_counter!(
            "ringside_export_published_frames_total",
            "Frames in the records published."
        );
        describe_counter!(
            "ringside_export_acked_records_total",
            "Records the stream holds: acknowledged, or found when reading back after a failure."
        );
        describe_counter!(
            "ringside_export_acked_frames_total",
            "Frames in the records the stream holds."
        );
        describe_counter!(
            "ringside_export_deduplicated_total",
            "Acknowledgements that said duplicate (JetStream dropped a second copy)."
        );
        describe_counter!(
            "ringside_export_republished_total",
            "Records published again after a NATS failure."
        );
        describe_counter!(
            "ringside_export_lost_frames_total",
            "Frames lost, by reason, each published as a loss record."
        );
        describe_counter!(
            "ringside_export_nats_reconnects_total",
            "NATS connections given up and rebuilt."
        );
        describe_counter!(
            "ringside_export_sidecar_resubscribes_total",
            "Subscribe streams to the sidecar opened again."
        );
        describe_gauge!(
            "ringside_export_in_flight_records",
            "Records published and not yet acknowledged."
        );
        describe_gauge!(
            "ringside_export_in_flight_bytes",
            "Bytes published and not yet acknowledged."
        );
        describe_gauge!(
            "ringside_export_lag_frames",
            "Frames written to the ring and not yet acknowledged by the stream."
        );
        describe_gauge!(
            "ringside_export_memory_budget_bytes",
            "Worst-case memory computed at start."
        );
        describe_gauge!(
            "ringside_export_memory_limit_bytes",
            "Memory limit the budget was checked against (0 = none)."
        );
        describe_gauge!(
            "ringside_export_rss_anon_bytes",
            "Private anonymous resident memory (RssAnon)."
        );
        let zero = |c: Counter| {
            c.absolute(0);
            c
        };
        let lost = reasons()
            .into_iter()
            .map(|r| {
                let name = crate::record::reason_name(r).into_owned();
                (
                    r,
                    zero(counter!("ringside_export_lost_frames_total", "reason" => name)),
                )
            })
            .collect();
        let m = ExportMetrics {
            published_records: zero(counter!("ringside_export_published_records_total")),
            published_frames: zero(counter!("ringside_export_published_frames_total")),
            acked_records: zero(counter!("ringside_export_acked_records_total")),
            acked_frames: zero(counter!("ringside_export_acked_frames_total")),
            deduplicated: zero(counter!("ringside_export_deduplicated_total")),
            republished: zero(counter!("ringside_export_republished_total")),
            lost,
            nats_reconnects: zero(counter!("ringside_export_nats_reconnects_total")),
            sidecar_resubscribes: zero(counter!("ringside_export_sidecar_resubscribes_total")),
            in_flight_records: gauge!("ringside_export_in_flight_records"),
            in_flight_bytes: gauge!("ringside_export_in_flight_bytes"),
            lag_frames: gauge!("ringside_export_lag_frames"),
            budget: gauge!("ringside_export_memory_budget_bytes"),
            limit: gauge!("ringside_export_memory_limit_bytes"),
            rss_anon: gauge!("ringside_export_rss_anon_bytes"),
        };
        for g in [
            &m.in_flight_records,
            &m.in_flight_bytes,
            &m.lag_frames,
            &m.rss_anon,
        ] {
            g.set(0.0);
        }
        m
    }

    /// A record published for the first time.
    pub fn published(&self, frames: u64) {
        self.published_records.increment(1);
        self.published_frames.increment(frames);
    }

    /// A record the stream holds.
    pub fn acked(&self, frames: u64, duplicate: bool) {
        self.acked_records.increment(1);
        self.acked_frames.increment(frames);
        if duplicate {
            self.deduplicated.increment(1);
        }
    }

    /// A record published again.
    pub fn republished(&self) {
        self.republished.increment(1);
    }

    /// Frames lost.
    pub fn lost(&self, reason: i32, frames: u64) {
        match self.lost.iter().find(|(r, _)| *r == reason) {
            Some((_, c)) => c.increment(frames),
            None => counter!("ringside_export_lost_frames_total", "reason" => crate::record::reason_name(reason).into_owned())
                .increment(frames),
        }
    }

    /// The NATS connection was rebuilt.
    pub fn nats_reconnect(&self) {
        self.nats_reconnects.increment(1);
    }

    /// The Subscribe stream was opened again.
    pub fn sidecar_resubscribe(&self) {
        self.sidecar_resubscribes.increment(1);
    }

    /// Window, lag and RssAnon (once a second).
    pub fn in_flight(&self, records: u64, bytes: u64, lag: Option<u64>) {
        self.in_flight_records.set(records as f64);
        self.in_flight_bytes.set(bytes as f64);
        if let Some(l) = lag {
            self.lag_frames.set(l as f64);
        }
        if let Some(r) = rss_anon_bytes() {
            self.rss_anon.set(r as f64);
        }
    }

    /// The budget and its limit (at start).
    pub fn budget(&self, budget: u64, limit: u64) {
        self.budget.set(budget as f64);
        self.limit.set(limit as f64);
    }
}

/// RssAnon of this process, from /proc/self/status.
pub fn rss_anon_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
