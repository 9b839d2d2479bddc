//! The exporter's memory budget: its worst-case memory from its flags,
//! printed at start as a table in the sidecar's format and checked against
//! `--memory-limit` and the cgroup limit.
//!
//! Local version: the table layout and [`MemoryLimit`] mirror the sidecar's
//! `budget.rs` (`BudgetLine`, `Budget::table`, `MemoryLimit`), which this crate
//! cannot use because the `ringside` binary depends on it. The cgroup limit
//! itself is found by the sidecar's `cgroup::memory_limit` in `ringside
//! export` and passed in. Once the sidecar's budget table and limit move to a
//! crate below both, this module keeps only its lines.

use crate::exporter::ExportConfig;
use crate::human_bytes;
use std::fmt::Write as _;
use thiserror::Error;

/// Runtime, allocator arenas, tonic, the NATS client and TLS, the metrics
/// registry: measured idle RssAnon of `ringside export` is well below this.
pub const FIXED_BASE: u64 = 16 << 20;
/// Stack reserved per thread, counted as if fully touched.
pub const THREAD_STACK: u64 = 2 << 20;
/// Threads besides the tokio workers: main thread, blocking pool (at most 2).
pub const EXTRA_THREADS: u64 = 3;
/// Per record in flight besides its bytes: the record, its header map, the
/// acknowledgement future and the client's reply slot, the copy of the
/// headers queued in the client.
pub const IN_FLIGHT_RECORD_STATE: u64 = 2048;
/// Per frame of a batch read from the sidecar: the decoded frame (topic of
/// up to 255 bytes) and the record built from it before it is published.
pub const PENDING_FRAME_STATE: u64 = 2048;
/// The NATS client's read and write buffers and its command queue (256 commands).
pub const NATS_CLIENT: u64 = 1 << 20;
/// Entry of the set of stored records read back after a failure.
pub const SCAN_ENTRY: u64 = 96;

/// The limit the budget is checked against (mirrors the sidecar's `budget::MemoryLimit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimit {
    /// Bytes.
    pub bytes: u64,
    /// Where it came from, for messages (`--memory-limit`, a cgroup file).
    pub source: String,
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct BudgetLine {
    /// What it is.
    pub item: &'static str,
    /// How many.
    pub count: u64,
    /// Bytes each.
    pub each: u64,
    /// How it is bounded.
    pub note: String,
}

impl BudgetLine {
    /// count × each.
    pub fn total(&self) -> u64 {
        self.count.saturating_mul(self.each)
    }
}

/// The exporter's worst-case memory.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Lines, in print order.
    pub lines: Vec<BudgetLine>,
}

/// The budget exceeds the limit: the exporter must not start.
#[derive(Debug, Error)]
#[error(
    "the exporter's worst-case memory budget {need} exceeds the {source_name} of {limit}; lower --max-inflight-bytes, --max-inflight or --read-batch, or raise the limit",
    need = human_bytes(*total),
    limit = human_bytes(limit.bytes),
    source_name = limit.source,
)]
pub struct OverBudget {
    /// The budget total.
    pub total: u64,
    /// The limit.
    pub limit: MemoryLimit,
}

impl Budget {
    /// The budget of `cfg`.
    pub fn compute(cfg: &ExportConfig) -> Budget {
        let read = u64::from(cfg.read_batch_bytes) + (64 << 10);
        let frames = u64::from(cfg.read_batch_frames.max(1));
        let inflight = cfg.max_inflight_messages as u64;
        let mut lines = vec![
            BudgetLine {
                item: "fixed overhead",
                count: 1,
                each: FIXED_BASE,
                note: "runtime, gRPC and NATS clients, TLS, metrics".into(),
            },
            BudgetLine {
                item: "thread stacks",
                count: cfg.worker_threads as u64 + EXTRA_THREADS,
                each: THREAD_STACK,
                note: format!(
                    "{} tokio workers + {EXTRA_THREADS} other threads",
                    cfg.worker_threads
                ),
            },
            BudgetLine {
                item: "sidecar stream",
                count: 1,
                each: cfg.grpc_receive_window + 4 * read,
                note: format!(
                    "HTTP/2 receive window {} + 4 x --read-batch {} (being decoded, pending, and buffers kept by payloads in flight)",
                    human_bytes(cfg.grpc_receive_window),
                    human_bytes(u64::from(cfg.read_batch_bytes))
                ),
            },
            BudgetLine {
                item: "pending frames",
                count: frames,
                each: PENDING_FRAME_STATE,
                note: "frames per read batch x decoded frame and its record".into(),
            },
            BudgetLine {
                item: "in flight: bytes",
                count: 1,
                each: cfg.max_inflight_bytes,
                note: "--max-inflight-bytes (subjects, headers, payloads until acknowledged)"
                    .into(),
            },
            BudgetLine {
                item: "in flight: records",
                count: inflight,
                each: IN_FLIGHT_RECORD_STATE,
                note: "--max-inflight x record, future and reply slot".into(),
            },
            BudgetLine {
                item: "NATS client",
                count: 2,
                each: NATS_CLIENT + inflight * 512,
                note: "buffers and queue, twice while a failed connection is torn down".into(),
            },
            BudgetLine {
                item: "reading back",
                count: inflight * 2 + 1024,
                each: SCAN_ENTRY,
                note: "records found in the stream after a failure or at start (capped)".into(),
            },
        ];
        if cfg.batch {
            lines.push(BudgetLine {
                item: "batch encoding",
                count: 1,
                each: read,
                note: "--batch: one batch re-encoded at a time".into(),
            });
        }
        Budget { lines }
    }

    /// Sum of all lines.
    pub fn total(&self) -> u64 {
        self.lines
            .iter()
            .map(BudgetLine::total)
            .fold(0, u64::saturating_add)
    }

    /// The table, ready to print.
    pub fn table(&self, limit: Option<&MemoryLimit>) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "export memory budget (worst case, bytes bounded by construction)"
        );
        let _ = writeln!(
            s,
            "  {:<28} {:>7} {:>12} {:>12}  bounded by",
            "item", "count", "each", "total"
        );
        for l in &self.lines {
            let _ = writeln!(
                s,
                "  {:<28} {:>7} {:>12} {:>12}  {}",
                l.item,
                l.count,
                human_bytes(l.each),
                human_bytes(l.total()),
                l.note
            );
        }
        let _ = writeln!(
            s,
            "  {:<28} {:>7} {:>12} {:>12}  ({} bytes)",
            "total",
            "",
            "",
            human_bytes(self.total()),
            self.total()
        );
        match limit {
            Some(l) => {
                let pct = self.total() as f64 * 100.0 / l.bytes.max(1) as f64;
                let _ = writeln!(
                    s,
                    "  limit: {} from {} (budget uses {pct:.0}%)",
                    human_bytes(l.bytes),
                    l.source
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "  limit: none (no --memory-limit, no cgroup memory limit)"
                );
            }
        }
        s
    }

    /// Checks the budget against a limit.
    pub fn check(&self, limit: Option<&MemoryLimit>) -> Result<(), OverBudget> {
        match limit {
            Some(l) if self.total() > l.bytes => Err(OverBudget {
                total: self.total(),
                limit: l.clone(),
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats::NatsOptions;
    use crate::subject::Subjects;

    fn cfg() -> ExportConfig {
        ExportConfig::new(
            NatsOptions::new("nats://127.0.0.1:4222"),
            "T",
            Subjects::new("t.h").expect("prefix"),
        )
    }

    #[test]
    fn total_is_the_sum_and_grows_with_the_window() {
        let mut c = cfg();
        let a = Budget::compute(&c);
        let sum: u64 = a.lines.iter().map(BudgetLine::total).sum();
        assert_eq!(a.total(), sum);
        c.max_inflight_bytes += 1 << 20;
        assert_eq!(Budget::compute(&c).total() - a.total(), 1 << 20);
        assert!(a.table(None).contains("in flight: bytes"));
    }

    #[test]
    fn refuses_over_the_limit() {
        let b = Budget::compute(&cfg());
        let limit = MemoryLimit {
            bytes: b.total() - 1,
            source: "--memory-limit".into(),
        };
        let e = b.check(Some(&limit)).expect_err("over").to_string();
        assert!(e.contains("--max-inflight-bytes"), "{e}");
        assert!(b.check(None).is_ok());
    }
}
