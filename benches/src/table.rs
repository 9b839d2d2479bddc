//! Turns criterion's saved results into the markdown tables of
//! `docs/benchmarks-producer.md`.
//!
//! Criterion writes, for every benchmark, `<criterion dir>/<group>/<function>/<value>/new/`
//! holding `benchmark.json` (ids and throughput) and `estimates.json` (statistics of the
//! time per iteration, in nanoseconds). This module reads those two files for the
//! producer groups and renders medians, bandwidths and ratios to `memcpy`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

/// One thread calling `send`, next to one thread doing `memcpy`.
pub const GROUP_ONE_THREAD: &str = "producer_1t";
/// Two threads sharing one producer, next to two threads doing `memcpy`.
pub const GROUP_TWO_THREADS: &str = "producer_2t";
/// Other write paths: with a reader draining, caller timestamp, reserve and commit.
pub const GROUP_PATHS: &str = "producer_paths";
/// Pieces of the write path measured on their own.
pub const GROUP_PARTS: &str = "producer_parts";

/// Function id of a producer `send` benchmark.
pub const SEND: &str = "send";
/// Function id of the `memcpy` baseline.
pub const MEMCPY: &str = "memcpy";

/// Start marker of the generated block in the markdown document.
pub const BEGIN_MARKER: &str = "<!-- producer-table:begin -->";
/// End marker of the generated block in the markdown document.
pub const END_MARKER: &str = "<!-- producer-table:end -->";

/// The brief's goal for a 64 B send on one thread, ns.
pub const GOAL_SEND_64_NS: f64 = 40.0;
/// The brief's goal for a 64 B send while a reader drains the ring, ns.
pub const GOAL_DRAINING_64_NS: f64 = 150.0;
/// The brief's goal for a 4 KiB send, as a fraction of memcpy bandwidth.
pub const GOAL_BANDWIDTH_4K: f64 = 0.70;
/// The brief's bound on a 64 B send relative to a memcpy of the same bytes.
pub const GOAL_MEMCPY_FACTOR_64: f64 = 5.0;

/// One benchmark's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    /// Criterion group id.
    pub group: String,
    /// Function id within the group.
    pub function: String,
    /// Parameter (the payload size in bytes for most producer benchmarks).
    pub value: Option<String>,
    /// Bytes processed per iteration, when the benchmark declared a byte throughput.
    pub bytes_per_iter: Option<u64>,
    /// Median time per iteration, ns.
    pub median_ns: f64,
    /// Lower bound of the median's 95% confidence interval, ns.
    pub median_lo_ns: f64,
    /// Upper bound of the median's 95% confidence interval, ns.
    pub median_hi_ns: f64,
}

impl Measurement {
    /// Bytes per nanosecond, which is GB/s (10^9 bytes per second).
    pub fn gb_per_s(&self) -> Option<f64> {
        self.bytes_per_iter.map(|b| b as f64 / self.median_ns)
    }
}

/// Reads every `new/` result under `criterion_dir` whose group starts with `producer_`.
pub fn collect(criterion_dir: &Path) -> Result<Vec<Measurement>, String> {
    let mut out = Vec::new();
    let mut stack = vec![criterion_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
            if !path.is_dir() {
                continue;
            }
            if path.file_name().is_some_and(|n| n == "new") {
                if let Some(m) = read_result(&path)?
                    && m.group.starts_with("producer_")
                {
                    out.push(m);
                }
            } else if path
                .file_name()
                .is_none_or(|n| n != "base" && n != "report")
            {
                stack.push(path);
            }
        }
    }
    out.sort_by(|a, b| {
        (&a.group, &a.function, value_key(a)).cmp(&(&b.group, &b.function, value_key(b)))
    });
    Ok(out)
}

fn value_key(m: &Measurement) -> (u64, String) {
    let v = m.value.clone().unwrap_or_default();
    (v.parse().unwrap_or(u64::MAX), v)
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads one `new/` directory; `None` when it lacks either file (an interrupted run).
fn read_result(new_dir: &Path) -> Result<Option<Measurement>, String> {
    let (bench_path, est_path) = (
        new_dir.join("benchmark.json"),
        new_dir.join("estimates.json"),
    );
    if !bench_path.is_file() || !est_path.is_file() {
        return Ok(None);
    }
    let bench = read_json(&bench_path)?;
    let est = read_json(&est_path)?;
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let median = &est["median"];
    let number = |v: &Value, what: &str| {
        v.as_f64()
            .ok_or_else(|| format!("{}: no {what}", est_path.display()))
    };
    Ok(Some(Measurement {
        group: text(&bench["group_id"]).unwrap_or_default(),
        function: text(&bench["function_id"]).unwrap_or_default(),
        value: text(&bench["value_str"]),
        bytes_per_iter: bench["throughput"]["Bytes"]
            .as_u64()
            .or_else(|| bench["throughput"]["BytesDecimal"].as_u64()),
        median_ns: number(&median["point_estimate"], "median")?,
        median_lo_ns: number(
            &median["confidence_interval"]["lower_bound"],
            "median lower bound",
        )?,
        median_hi_ns: number(
            &median["confidence_interval"]["upper_bound"],
            "median upper bound",
        )?,
    }))
}

/// "64 B", "1 KiB", "16 KiB" for a byte count given as a string; other text unchanged.
pub fn size_label(value: &str) -> String {
    match value.parse::<u64>() {
        Ok(b) if b >= 1024 && b % 1024 == 0 => format!("{} KiB", b / 1024),
        Ok(b) => format!("{b} B"),
        Err(_) => value.to_owned(),
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 100.0 {
        format!("{ns:.0}")
    } else {
        format!("{ns:.1}")
    }
}

fn fmt_opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".to_owned())
}

/// Results indexed by (group, function, value).
struct Index<'a>(BTreeMap<(&'a str, &'a str, &'a str), &'a Measurement>);

impl<'a> Index<'a> {
    fn new(ms: &'a [Measurement]) -> Index<'a> {
        Index(
            ms.iter()
                .map(|m| {
                    (
                        (
                            m.group.as_str(),
                            m.function.as_str(),
                            m.value.as_deref().unwrap_or(""),
                        ),
                        m,
                    )
                })
                .collect(),
        )
    }

    fn get(&self, group: &str, function: &str, value: &str) -> Option<&'a Measurement> {
        self.0.get(&(group, function, value)).copied()
    }

    fn values(&self, group: &str, function: &str) -> Vec<&'a str> {
        let mut values: Vec<&'a str> = self
            .0
            .keys()
            .filter(|(g, f, _)| *g == group && *f == function)
            .map(|(_, _, v)| *v)
            .collect();
        values.sort_by_key(|v| v.parse::<u64>().unwrap_or(u64::MAX));
        values
    }
}

/// Renders the markdown tables (without markers).
pub fn render(ms: &[Measurement]) -> String {
    let index = Index::new(ms);
    let mut out = String::new();

    let _ = writeln!(
        out,
        "**send vs memcpy.** Median time per `send` (for two threads: per send, as each \
         thread sees it; both threads send concurrently), the median's 95% confidence \
         interval, bandwidth of payload bytes (two threads: both together), and the \
         `memcpy` of the same bytes measured in the same run.\n"
    );
    let _ = writeln!(
        out,
        "| threads | payload | send ns (median) | send 95% CI | memcpy ns | send ÷ memcpy time | send GB/s | memcpy GB/s | send bandwidth vs memcpy |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for (group, threads) in [(GROUP_ONE_THREAD, 1), (GROUP_TWO_THREADS, 2)] {
        for value in index.values(group, SEND) {
            let Some(send) = index.get(group, SEND, value) else {
                continue;
            };
            let copy = index.get(group, MEMCPY, value);
            let _ = writeln!(
                out,
                "| {threads} | {} | {} | {}–{} | {} | {} | {} | {} | {} |",
                size_label(value),
                fmt_ns(send.median_ns),
                fmt_ns(send.median_lo_ns),
                fmt_ns(send.median_hi_ns),
                fmt_opt(copy.map(|c| c.median_ns), fmt_ns),
                fmt_opt(copy.map(|c| send.median_ns / c.median_ns), |r| format!(
                    "{r:.1}×"
                )),
                fmt_opt(send.gb_per_s(), |g| format!("{g:.2}")),
                fmt_opt(copy.and_then(Measurement::gb_per_s), |g| format!("{g:.2}")),
                fmt_opt(copy.map(|c| c.median_ns / send.median_ns), |r| format!(
                    "{:.0}%",
                    r * 100.0
                )),
            );
        }
    }

    let paths: Vec<&Measurement> = ms.iter().filter(|m| m.group == GROUP_PATHS).collect();
    if !paths.is_empty() {
        let _ = writeln!(
            out,
            "\n**Other write paths** (one producer thread). `send_draining`: a `RingReader` \
             drains the ring on another thread meanwhile. `send_at`: the caller supplies the \
             timestamp (no clock read). `send_unchecked`: a producer connected with \
             `ProducerOptions {{ payload_check: false }}` (the frame check skips the payload). \
             `reserve_commit`: `reserve`, fill the slice with \
             `copy_from_slice`, `commit`; `reserve_borrowed_commit`: the same through \
             `reserve_borrowed` (no reference count). Compared with the one-thread `memcpy` of \
             the same size.\n"
        );
        let _ = writeln!(
            out,
            "| case | payload | ns (median) | 95% CI | GB/s | ÷ memcpy time |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for m in paths {
            let value = m.value.as_deref().unwrap_or("");
            let copy = index.get(GROUP_ONE_THREAD, MEMCPY, value);
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {}–{} | {} | {} |",
                m.function,
                size_label(value),
                fmt_ns(m.median_ns),
                fmt_ns(m.median_lo_ns),
                fmt_ns(m.median_hi_ns),
                fmt_opt(m.gb_per_s(), |g| format!("{g:.2}")),
                fmt_opt(copy.map(|c| m.median_ns / c.median_ns), |r| format!(
                    "{r:.1}×"
                )),
            );
        }
    }

    let parts: Vec<&Measurement> = ms.iter().filter(|m| m.group == GROUP_PARTS).collect();
    if !parts.is_empty() {
        let _ = writeln!(
            out,
            "\n**Parts of the write path**, each measured alone (see the bench source for \
             exactly what each one does).\n"
        );
        let _ = writeln!(out, "| part | size | ns (median) | 95% CI |");
        let _ = writeln!(out, "|---|---|---|---|");
        for m in parts {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {}–{} |",
                m.function,
                m.value.as_deref().map(size_label).unwrap_or_default(),
                fmt_ns(m.median_ns),
                fmt_ns(m.median_lo_ns),
                fmt_ns(m.median_hi_ns),
            );
        }
    }

    let _ = writeln!(out, "\n**Against the brief's goals.**\n");
    let _ = writeln!(out, "| goal | measured | verdict |");
    let _ = writeln!(out, "|---|---|---|");
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    if let Some(send) = index.get(GROUP_ONE_THREAD, SEND, "64") {
        let _ = writeln!(
            out,
            "| 64 B send, 1 thread, ≤ {GOAL_SEND_64_NS:.0} ns median | {} ns | {} |",
            fmt_ns(send.median_ns),
            verdict(send.median_ns <= GOAL_SEND_64_NS)
        );
        if let Some(copy) = index.get(GROUP_ONE_THREAD, MEMCPY, "64") {
            let factor = send.median_ns / copy.median_ns;
            let _ = writeln!(
                out,
                "| 64 B send within {GOAL_MEMCPY_FACTOR_64:.0}× of memcpy | {factor:.1}× ({} vs {} ns) | {} |",
                fmt_ns(send.median_ns),
                fmt_ns(copy.median_ns),
                verdict(factor <= GOAL_MEMCPY_FACTOR_64)
            );
        }
    }
    for len in ["64", "4096"] {
        if let (Some(send), Some(zero_copy)) = (
            index.get(GROUP_ONE_THREAD, SEND, len),
            index.get(GROUP_PATHS, "reserve_borrowed_commit", len),
        ) {
            let _ = writeln!(
                out,
                "| {} `reserve_borrowed` + fill + `commit` below `send` of the same bytes | {} vs {} ns | {} |",
                size_label(len),
                fmt_ns(zero_copy.median_ns),
                fmt_ns(send.median_ns),
                verdict(zero_copy.median_ns < send.median_ns)
            );
        }
    }
    if let Some(m) = index.get(GROUP_PATHS, "send_draining", "64") {
        let _ = writeln!(
            out,
            "| 64 B send while a reader drains, ≤ {GOAL_DRAINING_64_NS:.0} ns median | {} ns | {} |",
            fmt_ns(m.median_ns),
            verdict(m.median_ns <= GOAL_DRAINING_64_NS)
        );
    }
    if let (Some(send), Some(copy)) = (
        index.get(GROUP_ONE_THREAD, SEND, "4096"),
        index.get(GROUP_ONE_THREAD, MEMCPY, "4096"),
    ) {
        let share = copy.median_ns / send.median_ns;
        let _ = writeln!(
            out,
            "| 4 KiB send ≥ {:.0}% of memcpy bandwidth | {:.0}% | {} |",
            GOAL_BANDWIDTH_4K * 100.0,
            share * 100.0,
            verdict(share >= GOAL_BANDWIDTH_4K)
        );
        if let Some(unchecked) = index.get(GROUP_PATHS, "send_unchecked", "4096") {
            let share = copy.median_ns / unchecked.median_ns;
            let _ = writeln!(
                out,
                "| the same with `payload_check: false` | {:.0}% | {} |",
                share * 100.0,
                verdict(share >= GOAL_BANDWIDTH_4K)
            );
        }
    }
    out
}

/// Replaces the text between [`BEGIN_MARKER`] and [`END_MARKER`] in `doc` with `block`.
/// `None` if the markers are missing or out of order.
pub fn splice(doc: &str, block: &str) -> Option<String> {
    let begin = doc.find(BEGIN_MARKER)? + BEGIN_MARKER.len();
    let end = begin + doc[begin..].find(END_MARKER)?;
    Some(format!("{}\n{}{}", &doc[..begin], block, &doc[end..]))
}

/// One line describing this machine: CPU model, CPU count, kernel, and today's UTC date.
pub fn machine_summary() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    format!(
        "{model}, nproc {cpus}, Linux {kernel}; tables generated {}",
        utc_date()
    )
}

/// Today's date in UTC as YYYY-MM-DD (proleptic Gregorian, from the Unix epoch).
pub fn utc_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Howard Hinnant's days-to-civil conversion.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(group: &str, function: &str, value: &str, bytes: u64, ns: f64) -> Measurement {
        Measurement {
            group: group.to_owned(),
            function: function.to_owned(),
            value: Some(value.to_owned()),
            bytes_per_iter: Some(bytes),
            median_ns: ns,
            median_lo_ns: ns - 1.0,
            median_hi_ns: ns + 1.0,
        }
    }

    #[test]
    fn renders_ratios_and_verdicts() {
        let ms = vec![
            m(GROUP_ONE_THREAD, SEND, "64", 64, 50.0),
            m(GROUP_ONE_THREAD, MEMCPY, "64", 64, 5.0),
            m(GROUP_ONE_THREAD, SEND, "4096", 4096, 200.0),
            m(GROUP_ONE_THREAD, MEMCPY, "4096", 4096, 160.0),
        ];
        let text = render(&ms);
        assert!(
            text.contains("| 1 | 64 B | 50.0 | 49.0–51.0 | 5.0 | 10.0× | 1.28 | 12.80 | 10% |")
        );
        assert!(text.contains("| 50.0 ns | **missed** |"));
        assert!(text.contains("| 80% | met |"));
    }

    #[test]
    fn splices_between_markers() {
        let doc = format!("a\n{BEGIN_MARKER}\nold\n{END_MARKER}\nb\n");
        let out = splice(&doc, "new\n").expect("markers present");
        assert_eq!(out, format!("a\n{BEGIN_MARKER}\nnew\n{END_MARKER}\nb\n"));
        assert!(splice("no markers", "x").is_none());
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_786), (2026, 11, 29));
        assert_eq!(size_label("16384"), "16 KiB");
        assert_eq!(size_label("64"), "64 B");
    }
}
