//! The memory budget: the sidecar's worst-case memory, computed from its flags
//! before it accepts anyone, printed as a table, and checked against
//! `--memory-limit` and the cgroup memory limit.
//!
//! Every term is an upper bound in bytes for something that is itself bounded
//! in bytes by construction (see the per-line notes). Nothing in the sidecar
//! grows with the volume of data or the number of frames.

use crate::cgroup::CgroupLimit;
use crate::config::human_bytes;
use std::fmt::Write as _;
use thiserror::Error;

/// hyper's per-stream HTTP/2 send buffer cap (`max_send_buf_size`, 400 KiB by
/// default; tonic does not expose it). Data a stream may have queued in h2.
pub const H2_SEND_BUFFER: u64 = 400 * 1024;
/// Runtime, allocator arenas, tracing, tonic services, metrics registry, the
/// topic table: measured idle RssAnon is well below this.
pub const FIXED_BASE: u64 = 24 << 20;
/// Stack reserved per thread (tokio's and std's default), counted as if fully touched.
pub const THREAD_STACK: u64 = 2 << 20;
/// Threads besides the tokio workers: wake thread, stats thread, ring host
/// thread(s), blocking pool (capped at 2), signal handling.
pub const EXTRA_THREADS: u64 = 6;
/// Per-subscriber state besides buffers: ring reader, batch encoder struct,
/// topic filter (at most 128 entries of 255 bytes), task and h2 stream state.
pub const SUBSCRIBER_STATE: u64 = 64 * 1024;
/// Per-connection state besides buffers: hyper/h2 connection, HPACK tables,
/// task, TLS session.
pub const CONNECTION_STATE: u64 = 64 * 1024;
/// Kernel receive buffer we set per connection (SO_RCVBUF; requests are tiny).
pub const SOCKET_RECV_BUFFER: u64 = 64 * 1024;
/// HTTP/2 receive windows we advertise (stream and connection): inbound data
/// is bounded by them. Requests are tiny.
pub const H2_RECV_WINDOW: u32 = 64 * 1024;
/// HTTP/2 max frame size we accept (the protocol minimum).
pub const H2_MAX_FRAME: u32 = 16 * 1024;
/// HTTP/2 header list size we accept.
pub const H2_MAX_HEADER_LIST: u32 = 16 * 1024;
/// Memory the in-process demo producer and subscriber may use.
pub const DEMO_OVERHEAD: u64 = 8 << 20;

/// Numbers the budget is computed from.
#[derive(Debug, Clone)]
pub struct BudgetInputs {
    /// Bytes of the ring's shared memory object (header + data).
    pub ring_bytes: u64,
    /// `--max-subscribers`.
    pub max_subscribers: u64,
    /// `--max-connections`.
    pub max_connections: u64,
    /// `--max-streams-per-connection`.
    pub max_streams_per_connection: u64,
    /// `--subscriber-buffer` (after clamping up to one maximum frame).
    pub subscriber_buffer: u64,
    /// `--max-request`.
    pub max_request: u64,
    /// `--socket-send-buffer`.
    pub socket_send_buffer: u64,
    /// Tokio worker threads.
    pub worker_threads: u64,
    /// `--demo`.
    pub demo: bool,
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

/// The computed budget.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Lines, in print order.
    pub lines: Vec<BudgetLine>,
    /// Bytes per subscriber.
    pub per_subscriber: u64,
    /// Bytes per connection.
    pub per_connection: u64,
}

/// The limit the budget is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimit {
    /// Bytes.
    pub bytes: u64,
    /// Where it came from, for messages.
    pub source: String,
}

impl MemoryLimit {
    /// The smaller of `--memory-limit` and the cgroup limit, if either is set.
    pub fn effective(flag: Option<u64>, cgroup: Option<CgroupLimit>) -> Option<MemoryLimit> {
        let a = flag.map(|bytes| MemoryLimit {
            bytes,
            source: "--memory-limit".into(),
        });
        let b = cgroup.map(|c| MemoryLimit {
            bytes: c.bytes,
            source: format!("cgroup memory limit ({})", c.source.display()),
        });
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.bytes < a.bytes { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// The budget exceeds the limit: the sidecar must not start.
#[derive(Debug, Error)]
#[error(
    "the worst-case memory budget {need} exceeds the {source_name} of {limit} by {over}. {advice}",
    need = human_bytes(*total),
    limit = human_bytes(limit.bytes),
    source_name = limit.source,
    over = human_bytes(total.saturating_sub(limit.bytes)),
)]
pub struct OverBudget {
    /// The budget total.
    pub total: u64,
    /// The limit.
    pub limit: MemoryLimit,
    /// What to change.
    pub advice: String,
}

impl Budget {
    /// Computes the budget.
    pub fn compute(i: &BudgetInputs) -> Budget {
        let per_subscriber =
            3 * i.subscriber_buffer + H2_SEND_BUFFER + SUBSCRIBER_STATE + i.max_request;
        let per_connection = CONNECTION_STATE
            + 2 * i.socket_send_buffer
            + 2 * SOCKET_RECV_BUFFER
            + u64::from(H2_RECV_WINDOW)
            + 2 * u64::from(H2_MAX_FRAME)
            + u64::from(H2_MAX_HEADER_LIST)
            + i.max_streams_per_connection * (i.max_request + 2048);
        let mut lines = vec![
            BudgetLine {
                item: "ring (shared memory)",
                count: 1,
                each: i.ring_bytes,
                note: "--ring-size plus the header page; shared with producers".into(),
            },
            BudgetLine {
                item: "fixed overhead",
                count: 1,
                each: FIXED_BASE,
                note: "runtime, allocator, services, metrics, topic table".into(),
            },
            BudgetLine {
                item: "thread stacks",
                count: i.worker_threads + EXTRA_THREADS,
                each: THREAD_STACK,
                note: format!(
                    "{} tokio workers + {EXTRA_THREADS} helper threads",
                    i.worker_threads
                ),
            },
            BudgetLine {
                item: "subscribers",
                count: i.max_subscribers,
                each: per_subscriber,
                note: format!(
                    "--max-subscribers x (3 x --subscriber-buffer {} + HTTP/2 send buffer {} + state {} + request {})",
                    human_bytes(i.subscriber_buffer),
                    human_bytes(H2_SEND_BUFFER),
                    human_bytes(SUBSCRIBER_STATE),
                    human_bytes(i.max_request)
                ),
            },
            BudgetLine {
                item: "connections",
                count: i.max_connections + crate::limits::OVERFLOW_CONNECTIONS as u64,
                each: per_connection,
                note: format!(
                    "(--max-connections + {} refusal slots) x (2 x --socket-send-buffer {} + receive window/buffers + {} streams x --max-request)",
                    crate::limits::OVERFLOW_CONNECTIONS,
                    human_bytes(i.socket_send_buffer),
                    i.max_streams_per_connection
                ),
            },
        ];
        if i.demo {
            lines.push(BudgetLine {
                item: "demo producer + subscriber",
                count: 1,
                each: DEMO_OVERHEAD,
                note: "--demo".into(),
            });
        }
        Budget {
            lines,
            per_subscriber,
            per_connection,
        }
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
            "memory budget (worst case, bytes bounded by construction)"
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
    ///
    /// # Errors
    ///
    /// [`OverBudget`] when the total exceeds the limit, with both figures and the limit's
    /// source.
    pub fn check(&self, limit: Option<&MemoryLimit>) -> Result<(), OverBudget> {
        let Some(limit) = limit else {
            return Ok(());
        };
        let total = self.total();
        if total <= limit.bytes {
            return Ok(());
        }
        let subs_line = self.lines.iter().find(|l| l.item == "subscribers");
        let subs_total = subs_line.map_or(0, BudgetLine::total);
        let rest = total - subs_total;
        let advice = if rest < limit.bytes && self.per_subscriber > 0 {
            let fit = (limit.bytes - rest) / self.per_subscriber;
            format!(
                "Lower --max-subscribers to at most {fit} (each costs {}), or lower --subscriber-buffer, --ring-size or --max-connections, or raise the limit.",
                human_bytes(self.per_subscriber)
            )
        } else {
            format!(
                "Even with no subscribers it needs {}: lower --ring-size or --max-connections (each costs {}), or raise the limit.",
                human_bytes(rest),
                human_bytes(self.per_connection)
            )
        };
        Err(OverBudget {
            total,
            limit: limit.clone(),
            advice,
        })
    }
}

/// Ring retention estimate: how long a frame stays in the ring at a few
/// ingest rates, and how many frames it holds at a few payload sizes.
pub fn retention_table(capacity: u64, typical_topic: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "ring retention estimate ({} of frames)",
        human_bytes(capacity)
    );
    let _ = writeln!(
        s,
        "  {:>10} {:>14} {:>14} {:>14}",
        "payload", "frames held", "at 10k/s", "at 100k/s"
    );
    for payload in [64u64, 256, 1024, 4096] {
        let frame = ringside_ring::frame_len(typical_topic, payload as usize) as u64;
        let held = capacity / frame;
        let _ = writeln!(
            s,
            "  {:>10} {:>14} {:>13.1}s {:>13.2}s",
            human_bytes(payload),
            held,
            held as f64 / 10_000.0,
            held as f64 / 100_000.0
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> BudgetInputs {
        BudgetInputs {
            ring_bytes: (64 << 20) + 4096,
            max_subscribers: 64,
            max_connections: 64,
            max_streams_per_connection: 16,
            subscriber_buffer: 256 << 10,
            max_request: 16 << 10,
            socket_send_buffer: 256 << 10,
            worker_threads: 2,
            demo: false,
        }
    }

    #[test]
    fn total_is_sum_of_parts() {
        let b = Budget::compute(&inputs());
        let sum: u64 = b.lines.iter().map(|l| l.count * l.each).sum();
        assert_eq!(b.total(), sum);
        assert_eq!(
            b.per_subscriber,
            3 * (256 << 10) + H2_SEND_BUFFER + SUBSCRIBER_STATE + (16 << 10)
        );
        let t = b.table(None);
        assert!(t.contains("subscribers") && t.contains("total"), "{t}");
    }

    #[test]
    fn scales_linearly_with_subscribers() {
        let mut i = inputs();
        let a = Budget::compute(&i);
        i.max_subscribers += 10;
        let b = Budget::compute(&i);
        assert_eq!(b.total() - a.total(), 10 * a.per_subscriber);
    }

    #[test]
    fn refuses_over_limit_and_says_what_to_change() {
        let b = Budget::compute(&inputs());
        let limit = MemoryLimit {
            bytes: b.total() - 1,
            source: "--memory-limit".into(),
        };
        let err = b.check(Some(&limit)).expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.contains("--max-subscribers to at most 63"), "{msg}");
        assert!(
            b.check(Some(&MemoryLimit {
                bytes: b.total(),
                source: "x".into()
            }))
            .is_ok()
        );
        assert!(b.check(None).is_ok());
        let tiny = MemoryLimit {
            bytes: 1 << 20,
            source: "--memory-limit".into(),
        };
        assert!(
            b.check(Some(&tiny))
                .expect_err("must fail")
                .to_string()
                .contains("lower --ring-size")
        );
    }

    #[test]
    fn effective_limit_is_the_smaller() {
        let cg = CgroupLimit {
            bytes: 100,
            source: "/x".into(),
        };
        assert_eq!(
            MemoryLimit::effective(Some(200), Some(cg.clone())).map(|l| l.bytes),
            Some(100)
        );
        assert_eq!(
            MemoryLimit::effective(Some(50), Some(cg)).map(|l| l.bytes),
            Some(50)
        );
        assert_eq!(MemoryLimit::effective(None, None), None);
    }

    #[test]
    fn retention_mentions_rates() {
        let t = retention_table(64 << 20, 16);
        assert!(t.contains("at 10k/s"));
    }
}
