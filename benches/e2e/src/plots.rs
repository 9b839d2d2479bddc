//! Bar charts of throughput and latency per scenario and system
//! (`docs/bench-data/throughput.svg`, `docs/bench-data/latency.svg`), and the
//! check of ringside's invariants (and of harness errors) that decides the
//! harness's exit status.

use crate::*;

/// One bar: system, value (`None` = not run), a note after the value (e.g. " OOM").
pub(crate) type Bar = (String, Option<f64>, &'static str);
/// One group of bars: its label and its bars.
pub(crate) type Group = (String, Vec<Bar>);

/// A colour per system name (by prefix).
fn color(system: &str) -> plotters::style::RGBColor {
    use plotters::style::RGBColor;
    if system.starts_with("ringside") {
        RGBColor(0, 110, 200)
    } else if system.starts_with("naive") {
        RGBColor(210, 40, 40)
    } else if system.starts_with("pre-encoded") || system.starts_with("plain tonic") {
        RGBColor(130, 130, 130)
    } else if system.contains("blocking") && !system.contains("nonblocking") {
        RGBColor(20, 90, 40)
    } else {
        RGBColor(60, 170, 80)
    }
}

/// Short number for a bar label: 448k, 1.2M, 46.
fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Grouped bars on a log-scale y axis, written as SVG to `path`.
pub(crate) fn grouped_bars(
    path: &Path,
    title: &str,
    y_desc: &str,
    groups: &[Group],
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let values = groups
        .iter()
        .flat_map(|g| g.1.iter().filter_map(|b| b.1))
        .filter(|v| *v > 0.0);
    let (lo, hi) = values.fold((f64::MAX, 0f64), |(l, h), v| (l.min(v), h.max(v)));
    let (lo, hi) = if hi > 0.0 {
        // Room above the tallest bar for the legend.
        (lo / 3.0, hi * 40.0)
    } else {
        (1.0, 10.0)
    };
    let mut systems: Vec<String> = Vec::new();
    for g in groups {
        for (s, _, _) in &g.1 {
            if !systems.contains(s) {
                systems.push(s.clone());
            }
        }
    }
    let root = SVGBackend::new(path, (1000, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = groups.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..n, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .disable_x_axis()
        .y_desc(y_desc)
        .y_label_formatter(&|v| short(*v))
        .draw()?;
    for (gi, (label, bars)) in groups.iter().enumerate() {
        let w = 0.8 / bars.len().max(1) as f64;
        for (bi, (sys, v, note)) in bars.iter().enumerate() {
            let x0 = gi as f64 + 0.1 + bi as f64 * w;
            let c = color(sys);
            match v {
                Some(v) if *v > 0.0 => {
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [(x0 + w * 0.05, lo), (x0 + w * 0.95, *v)],
                        c.filled(),
                    )))?;
                    chart.draw_series(std::iter::once(Text::new(
                        format!("{}{note}", short(*v)),
                        (x0 + w * 0.1, v * 1.15),
                        ("sans-serif", 11).into_font().color(&BLACK),
                    )))?;
                }
                _ => {
                    chart.draw_series(std::iter::once(Text::new(
                        "n/a",
                        (x0 + w * 0.1, lo * 1.3),
                        ("sans-serif", 11).into_font().color(&c),
                    )))?;
                }
            }
        }
        let (px, py) = chart.plotting_area().map_coordinate(&(gi as f64 + 0.5, lo));
        root.draw(&Text::new(
            label.clone(),
            (px, py + 8),
            ("sans-serif", 13).into_font().color(&BLACK).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Top,
                ),
            ),
        ))?;
    }
    for s in &systems {
        let c = color(s);
        chart
            .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())?
            .label(s.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Delivered frames/s per scenario and system.
pub(crate) fn throughput_groups(
    burst: &[RunResult],
    fan: &[(usize, RunResult)],
    d: &Dgram,
    serving: &Serving,
) -> Vec<Group> {
    let bar = |r: &RunResult| -> Bar {
        let v = (r.skipped.is_none() && r.window_s > 0.0)
            .then(|| r.delivered_frames as f64 / r.window_s);
        let note = if r.outcome.contains("OOM") {
            " OOM"
        } else {
            ""
        };
        (r.system.clone(), v, note)
    };
    let mut burst_bars: Vec<Bar> = burst.iter().map(bar).collect();
    for r in &d.burst {
        burst_bars.push((
            format!("datagram ({})", r.mode),
            (r.received > 0).then(|| r.delivered_fps()),
            "",
        ));
    }
    let mut g: Vec<Group> = vec![("burst, all readers".into(), burst_bars)];
    let mut ns: Vec<usize> = fan.iter().map(|(n, _)| *n).collect();
    ns.dedup();
    for n in ns {
        g.push((
            format!("fan-out {n}, all readers"),
            fan.iter()
                .filter(|(m, _)| *m == n)
                .map(|(_, r)| bar(r))
                .collect(),
        ));
    }
    // Serving: readers draining a full ring as fast as they can (median of repetitions).
    let mut combos: Vec<(u64, usize)> = serving.rows.iter().map(|r| (r.frame, r.subs)).collect();
    combos.sort_unstable();
    combos.dedup();
    for (frame, subs) in combos {
        let bars = serving
            .rows
            .iter()
            .filter(|r| r.frame == frame && r.subs == subs)
            .map(|r| (r.label(), (r.reps > 0).then_some(r.frames_s), ""))
            .collect();
        let readers = if subs == 1 { "1 sub" } else { "subs" };
        let label = if subs == 1 {
            format!("serving {frame} B, {readers}")
        } else {
            format!("serving {frame} B, {subs} {readers}")
        };
        g.push((label, bars));
    }
    g
}

/// p50, p99 and p99.9 per rate and system.
pub(crate) fn latency_groups(lat: &[LatResult], d: &Dgram) -> Vec<Group> {
    let mut g = Vec::new();
    for rate in [10_000u64, 100_000] {
        for (q, name) in [(0usize, "p50"), (1, "p99"), (2, "p99.9")] {
            let pick = |p50: f64, p99: f64, p999: f64| [p50, p99, p999][q];
            let mut bars: Vec<Bar> = lat
                .iter()
                .filter(|r| r.rate == rate)
                .map(|r| {
                    let v = (r.received > 0).then(|| pick(r.p50_us, r.p99_us, r.p999_us));
                    (r.system.clone(), v, "")
                })
                .collect();
            if let Some(r) = d.lat.iter().find(|r| r.rate == rate) {
                bars.push((
                    "datagram (nonblocking, local reader only)".into(),
                    (r.received > 0).then(|| pick(r.p50_us, r.p99_us, r.p999_us)),
                    "",
                ));
            }
            g.push((format!("{}k/s {name}", rate / 1000), bars));
        }
    }
    g
}

/// Writes both plots into `dir`.
pub(crate) fn write_plots(
    dir: &Path,
    burst: &[RunResult],
    lat: &[LatResult],
    fan: &[(usize, RunResult)],
    d: &Dgram,
    serving: &Serving,
) -> Result<(), Box<dyn std::error::Error>> {
    grouped_bars(
        &dir.join("throughput.svg"),
        "Frames delivered per second, all readers together (log scale)",
        "frames/s",
        &throughput_groups(burst, fan, d, serving),
    )?;
    grouped_bars(
        &dir.join("latency.svg"),
        "Producer-to-reader latency at a steady rate, 64 B frames (log scale)",
        "µs",
        &latency_groups(lat, d),
    )?;
    Ok(())
}

/// ringside's invariants, independent of timing: a run must not fail to start,
/// ringside must survive inside its own budget, and the losses it reports must
/// never exceed, and once every reader is complete must equal, the harness's
/// own count. Returns what is broken (empty = all held). An incomplete reader
/// (it ran out of drain time) is a timing matter and only printed.
pub(crate) fn broken_invariants(
    burst: &[RunResult],
    fan: &[(usize, RunResult)],
    d: &Dgram,
) -> Vec<String> {
    let mut v = Vec::new();
    // A datagram run that errored is a harness error (its figures are not timing).
    for r in d.burst.iter().chain(&d.lat) {
        if let Some(e) = &r.error {
            v.push(format!("datagram {} at rate {}: {e}", r.mode, r.rate));
        }
    }
    let runs = burst
        .iter()
        .map(|r| ("burst".to_string(), r))
        .chain(fan.iter().map(|(n, r)| (format!("fan-out {n}"), r)));
    for (name, r) in runs.filter(|(_, r)| r.system == "ringside") {
        if let Some(why) = &r.skipped {
            if !why.starts_with("no memory cgroup") {
                v.push(format!("{name}: ringside did not run: {why}"));
            }
            continue;
        }
        if r.outcome != "survived" {
            v.push(format!("{name}: ringside did not survive: {}", r.outcome));
        }
        if r.reported_lost > r.counted_lost {
            v.push(format!(
                "{name}: ringside reported {} lost frames but only {} are missing",
                r.reported_lost, r.counted_lost
            ));
        } else if r.subscribers_finished == r.readers && r.reported_lost != r.counted_lost {
            v.push(format!(
                "{name}: every reader complete, but reported losses {} ≠ counted {}",
                r.reported_lost, r.counted_lost
            ));
        } else if r.subscribers_finished < r.readers {
            println!(
                "note: {name}: {} of {} ringside readers incomplete when the drain time ran out (timing, not checked)",
                r.readers - r.subscribers_finished,
                r.readers
            );
        }
    }
    v
}

/// What the two bar charts show, for the report (under the images).
pub(crate) fn plots_caption() -> &'static str {
    "Throughput: frames received per second by all readers together over each run (burst: until every reader is done or the drain time ends; \"OOM\" marks a server that was OOM-killed, counted until it died). In the burst, ringside's readers are lapped and told their losses, so this is delivered, not written; the datagram bars have one reader and no slow or stalled ones. The serving groups are readers draining a full ring as fast as they can, ringside next to the pre-encoded tonic server (median of repetitions; see \"Serving throughput\"). Latency: p50, p99 and p99.9 at 10k and 100k frames/s of 64 B; the datagram bars are producer → local reader only, without the gRPC hop that ringside's and naive's include."
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(reported: u64, counted: u64, finished: usize) -> RunResult {
        RunResult {
            system: "ringside".into(),
            outcome: "survived".into(),
            reported_lost: reported,
            counted_lost: counted,
            subscribers_finished: finished,
            readers: 6,
            ..Default::default()
        }
    }

    #[test]
    fn invariants_fail_only_on_broken_accounting_not_on_timing() {
        let d = Dgram::default();
        assert!(broken_invariants(&[run(10, 10, 6)], &[], &d).is_empty());
        // Out of drain time: a timing matter, not a failure.
        assert!(broken_invariants(&[run(5, 10, 5)], &[], &d).is_empty());
        assert_eq!(broken_invariants(&[run(9, 10, 6)], &[], &d).len(), 1);
        assert_eq!(broken_invariants(&[run(11, 10, 5)], &[], &d).len(), 1);
        let mut dead = run(10, 10, 6);
        dead.outcome = "exited: signal 9".into();
        assert_eq!(broken_invariants(&[], &[(10, dead)], &d).len(), 1);
        let naive = RunResult {
            system: "naive".into(),
            skipped: Some("no memory cgroup (x)".into()),
            ..Default::default()
        };
        assert!(broken_invariants(&[naive], &[], &d).is_empty());
    }
}
