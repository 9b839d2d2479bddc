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

/// Runtime, allocator arenas, tracing, tonic services, metrics registry, the
/// topic table: measured idle RssAnon is well below this.
pub const FIXED_BASE: u64 = 24 << 20;
/// Stack reserved per thread (tokio's and std's default), counted as if fully touched.
pub const THREAD_STACK: u64 = 2 << 20;
/// Threads besides the tokio workers: observer thread, ring host
/// thread(s), blocking pool (capped at 2), signal handling, one spare (the doorbell wait,
/// once a thread of its own, now runs on the runtime; the count was kept).
pub const EXTRA_THREADS: u64 = 6;
/// Per-subscriber state besides its batch buffers and filter: ring reader, batch encoder,
/// timers, the wake receiver, the h2 stream and hyper's task for it, the request's
/// headers and routing future. Measured: about 12 KiB of RssAnon per waiting subscriber
/// *with* its connection (`e2e --scale`, docs/benchmarks.md); this is that with room.
pub const SUBSCRIBER_STATE: u64 = 16 * 1024;
/// Per-connection state besides the buffers counted on their own: hyper/h2 connection,
/// stream table, flow control, the tokio task and socket registration, the connection's
/// handle. Measured together with one subscriber above.
pub const CONNECTION_STATE: u64 = 16 * 1024;
/// Extra per connection under TLS: rustls's record buffers (up to 16 KiB of plaintext
/// and of ciphertext each way) and session state.
pub const TLS_STATE: u64 = 80 * 1024;
/// Kernel receive buffer we set per connection (SO_RCVBUF; the kernel doubles it).
/// Clients only send small requests, and the sidecar reads all the time.
pub const SOCKET_RECV_BUFFER: u64 = 8 * 1024;
/// HTTP/2 connection-level receive window: the protocol's initial 65,535 bytes, which a
/// server cannot lower and which we never raise. Inbound DATA buffered in h2 per
/// connection is at most this, and at most the stream windows of its open streams.
pub const H2_CONN_WINDOW: u32 = 65_535;
/// HTTP/2 max frame size we accept (the protocol minimum). h2 reads one frame at a time
/// into a buffer of at most this (plus its 9-byte header), and writes through a buffer
/// of this size.
pub const H2_MAX_FRAME: u32 = 16 * 1024;
/// HTTP/2 header list size we accept (decoded request headers of one stream).
pub const H2_MAX_HEADER_LIST: u32 = 8 * 1024;
/// HPACK dynamic tables, both directions (SETTINGS_HEADER_TABLE_SIZE default 4096 each).
pub const HPACK_TABLES: u64 = 2 * 4096;

/// `n` rounded up to a whole number of 4 KiB pages.
fn page_up(n: u64) -> u64 {
    n.div_ceil(4096).saturating_mul(4096)
}

/// The HTTP/2 stream receive window we advertise for `--max-request`: one whole request
/// (and its 5-byte gRPC prefix) fits, at least 1 KiB, at most the connection window.
/// Requests are small; a larger one just waits for a WINDOW_UPDATE.
pub fn h2_stream_window(max_request: u64) -> u32 {
    let w = max_request
        .saturating_add(5)
        .clamp(1024, u64::from(H2_CONN_WINDOW));
    u32::try_from(w).unwrap_or(H2_CONN_WINDOW)
}

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
    /// TLS is on (`--tls-cert`).
    pub tls: bool,
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
    /// Bytes per connection (user space and kernel socket buffers).
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
        let batches = (crate::inflight::CHUNKS_IN_FLIGHT as u64 + 1) * i.subscriber_buffer;
        // Per-item terms are rounded up to whole pages, so the total is a whole number of
        // pages too (a cgroup limit is rounded down to pages by the kernel).
        let per_subscriber = page_up(batches + SUBSCRIBER_STATE + i.max_request);
        let streams = i.max_streams_per_connection;
        let h2_inbound =
            u64::from(H2_CONN_WINDOW).min(streams * u64::from(h2_stream_window(i.max_request)));
        let requests = streams * (i.max_request + u64::from(H2_MAX_HEADER_LIST));
        let tls = if i.tls { TLS_STATE } else { 0 };
        let per_connection = page_up(
            CONNECTION_STATE
                + tls
                + h2_inbound
                + 2 * u64::from(H2_MAX_FRAME)
                + HPACK_TABLES
                + requests,
        );
        let kernel_per_connection = page_up(2 * i.socket_send_buffer + 2 * SOCKET_RECV_BUFFER);
        let connections = i.max_connections + crate::limits::OVERFLOW_CONNECTIONS as u64;
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
                    "--max-subscribers x ({} batches x --subscriber-buffer {} (being filled + {} handed to HTTP/2) + state {} + filter <= --max-request {})",
                    crate::inflight::CHUNKS_IN_FLIGHT + 1,
                    human_bytes(i.subscriber_buffer),
                    crate::inflight::CHUNKS_IN_FLIGHT,
                    human_bytes(SUBSCRIBER_STATE),
                    human_bytes(i.max_request)
                ),
            },
            BudgetLine {
                item: "shared chunks",
                count: crate::share::SHARED_CHUNKS as u64,
                each: page_up(i.subscriber_buffer),
                note: format!(
                    "validated frames kept for subscribers at the same place: at most one batch of --subscriber-buffer {} each (crate::share)",
                    human_bytes(i.subscriber_buffer)
                ),
            },
            BudgetLine {
                item: "connections",
                count: connections,
                each: per_connection,
                note: format!(
                    "(--max-connections + {} refusal slots) x (state {}{} + HTTP/2 inbound {} + frame buffers {} + HPACK {} + {streams} streams x (--max-request {} + headers {}))",
                    crate::limits::OVERFLOW_CONNECTIONS,
                    human_bytes(CONNECTION_STATE),
                    if i.tls {
                        format!(" + TLS {}", human_bytes(TLS_STATE))
                    } else {
                        String::new()
                    },
                    human_bytes(h2_inbound),
                    human_bytes(2 * u64::from(H2_MAX_FRAME)),
                    human_bytes(HPACK_TABLES),
                    human_bytes(i.max_request),
                    human_bytes(u64::from(H2_MAX_HEADER_LIST)),
                ),
            },
            BudgetLine {
                item: "socket buffers (kernel)",
                count: connections,
                each: kernel_per_connection,
                note: format!(
                    "connections x 2 x (--socket-send-buffer {} + receive buffer {}); the kernel doubles both; not RssAnon, charged to a cgroup v2",
                    human_bytes(i.socket_send_buffer),
                    human_bytes(SOCKET_RECV_BUFFER)
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
            per_connection: per_connection + kernel_per_connection,
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
            tls: false,
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
            3 * (256 << 10) + SUBSCRIBER_STATE + (16 << 10)
        );
        let t = b.table(None);
        assert!(t.contains("subscribers") && t.contains("total"), "{t}");
    }

    #[test]
    fn ten_thousand_subscribers_fit_two_gib() {
        // The `e2e --scale` flags (docs/benchmarks.md), with the default 64 MiB ring.
        let i = BudgetInputs {
            ring_bytes: (64 << 20) + 4096,
            max_subscribers: 10_000,
            max_connections: 10_000,
            max_streams_per_connection: 1 + u64::from(crate::limits::UNARY_STREAM_RESERVE),
            subscriber_buffer: 8 << 10,
            max_request: 1 << 10,
            socket_send_buffer: 8 << 10,
            worker_threads: 2,
            tls: false,
            demo: false,
        };
        let b = Budget::compute(&i);
        assert!(b.total() <= 2 << 30, "{}", b.table(None));
        assert_eq!(b.total() % 4096, 0, "whole pages");
        // Explicit per-subscriber and per-connection terms, and they add up.
        let fixed: u64 = b
            .lines
            .iter()
            .filter(|l| l.count == 1 || l.item == "thread stacks" || l.item == "shared chunks")
            .map(BudgetLine::total)
            .sum();
        let conns = 10_000 + crate::limits::OVERFLOW_CONNECTIONS as u64;
        assert_eq!(
            b.total(),
            fixed + 10_000 * b.per_subscriber + conns * b.per_connection
        );
        // The inbound HTTP/2 term follows the stream window, not the 64 KiB connection window.
        assert_eq!(h2_stream_window(1 << 10), 1029);
        assert_eq!(h2_stream_window(1 << 20), H2_CONN_WINDOW);
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
