//! An SVG of a run: per workload, throughput and p99 latency against clients, one line
//! per system. Written by hand: two charts of a few points each need axes, ticks and
//! polylines, not a plotting library with font and image dependencies.
//!
//! Clients go on a log scale (1 to 1,000 are equally spaced steps of load); throughput
//! on a linear scale from zero, so that ratios read as heights; p99 on a log scale, since
//! it spans milliseconds to seconds.

use std::fmt::Write;

use super::report::Row;
use super::table::points;

const PANEL_WIDTH: f64 = 440.0;
const PANEL_HEIGHT: f64 = 250.0;
/// Room inside a panel for its title (top), tick labels (left, bottom).
const MARGIN_LEFT: f64 = 64.0;
const MARGIN_RIGHT: f64 = 20.0;
const MARGIN_TOP: f64 = 30.0;
const MARGIN_BOTTOM: f64 = 44.0;
const TITLE_HEIGHT: f64 = 56.0;
/// Systems get these colours in the order they first appear (Synod first).
const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#7f7f7f"];

/// One axis: from data to pixels.
#[derive(Clone, Copy, Debug)]
struct Scale {
    low: f64,
    high: f64,
    log: bool,
}

impl Scale {
    /// Where `value` falls between `low` and `high`, from 0 to 1.
    fn fraction(&self, value: f64) -> f64 {
        if self.log {
            (value.ln() - self.low.ln()) / (self.high.ln() - self.low.ln())
        } else {
            (value - self.low) / (self.high - self.low)
        }
    }
}

/// A linear axis from zero to a round number above `max`, and its ticks.
fn linear_axis(max: f64) -> (Scale, Vec<f64>) {
    let max = if max.is_finite() && max > 0.0 { max } else { 1.0 };
    let raw_step = max / 5.0;
    let magnitude = 10f64.powf(raw_step.log10().floor());
    let step =
        [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|&s| s >= raw_step).unwrap_or(raw_step);
    let high = step * (max / step).ceil();
    let ticks = (0..=((high / step).round() as usize)).map(|i| i as f64 * step).collect();
    (Scale { low: 0.0, high, log: false }, ticks)
}

/// A log axis over whole decades around `[min, max]`, ticks at the powers of ten.
fn log_axis(min: f64, max: f64) -> (Scale, Vec<f64>) {
    let (min, max) = if min > 0.0 && max >= min && max.is_finite() { (min, max) } else { (1.0, 10.0) };
    let low = min.log10().floor();
    let high = max.log10().ceil().max(low + 1.0);
    let ticks = (low as i32..=high as i32).map(|e| 10f64.powi(e)).collect();
    (Scale { low: 10f64.powf(low), high: 10f64.powf(high), log: true }, ticks)
}

/// The clients axis: log, from the fewest to the most clients of the run, with a tick
/// at every count that ran.
fn clients_axis(counts: &[usize]) -> Scale {
    let low = counts.iter().copied().min().unwrap_or(1).max(1) as f64;
    let high = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    if high > low {
        Scale { low, high, log: true }
    } else {
        Scale { low: low / 2.0, high: high * 2.0, log: true }
    }
}

/// `1000` → `1k`, `25000` → `25k`, `0.5` → `0.5`: short tick labels.
fn short(value: f64) -> String {
    if value >= 1e6 {
        format!("{}M", trim(value / 1e6))
    } else if value >= 1e3 {
        format!("{}k", trim(value / 1e3))
    } else {
        trim(value)
    }
}

fn trim(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// One system's line in a panel: its name, colour and (clients, value) points.
struct Series<'a> {
    system: &'a str,
    colour: &'a str,
    points: Vec<(usize, f64)>,
}

/// What one panel plots.
struct Panel<'a> {
    title: String,
    x: Scale,
    x_ticks: &'a [usize],
    y: Scale,
    y_ticks: Vec<f64>,
    series: Vec<Series<'a>>,
}

fn draw_panel(out: &mut String, left: f64, top: f64, panel: &Panel) {
    let plot_left = left + MARGIN_LEFT;
    let plot_right = left + PANEL_WIDTH - MARGIN_RIGHT;
    let plot_top = top + MARGIN_TOP;
    let plot_bottom = top + PANEL_HEIGHT - MARGIN_BOTTOM;
    let px = |c: usize| plot_left + panel.x.fraction(c as f64) * (plot_right - plot_left);
    let py = |v: f64| plot_bottom - panel.y.fraction(v) * (plot_bottom - plot_top);
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="13" font-weight="bold">{}</text>"#,
        plot_left,
        top + 18.0,
        escape(&panel.title)
    );
    for &tick in &panel.y_ticks {
        let y = py(tick);
        let _ = writeln!(
            out,
            r##"<line x1="{plot_left:.1}" y1="{y:.1}" x2="{plot_right:.1}" y2="{y:.1}" stroke="#e0e0e0"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            plot_left - 6.0,
            y + 4.0,
            short(tick)
        );
    }
    for &count in panel.x_ticks {
        let x = px(count);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{plot_top:.1}" x2="{x:.1}" y2="{plot_bottom:.1}" stroke="#f0f0f0"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{count}</text>"##,
            plot_bottom + 16.0
        );
    }
    let _ = writeln!(
        out,
        r##"<rect x="{plot_left:.1}" y="{plot_top:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#555"/>"##,
        plot_right - plot_left,
        plot_bottom - plot_top
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">clients (log scale)</text>"#,
        (plot_left + plot_right) / 2.0,
        plot_bottom + 34.0
    );
    for Series { system, colour, points } in &panel.series {
        let drawable: Vec<(f64, f64, usize, f64)> = points
            .iter()
            .filter(|(_, v)| v.is_finite() && (!panel.y.log || *v > 0.0))
            .map(|&(c, v)| (px(c), py(v), c, v))
            .collect();
        if drawable.is_empty() {
            continue;
        }
        let coordinates: Vec<String> = drawable.iter().map(|(x, y, _, _)| format!("{x:.1},{y:.1}")).collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"><title>{}</title></polyline>"#,
            coordinates.join(" "),
            escape(system)
        );
        for (x, y, clients, value) in drawable {
            let _ = writeln!(
                out,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="3.5" fill="{colour}"><title>{} x{clients}: {}</title></circle>"#,
                escape(system),
                trim(value)
            );
        }
    }
}

/// The whole picture: a title and legend, then one row of two panels per workload.
pub(super) fn svg(rows: &[Row]) -> String {
    let mut systems: Vec<&str> = Vec::new();
    let mut workloads: Vec<&str> = Vec::new();
    let mut counts: Vec<usize> = Vec::new();
    for row in rows {
        if !systems.contains(&row.system) {
            systems.push(row.system);
        }
        if !workloads.contains(&row.workload) {
            workloads.push(row.workload);
        }
        if !counts.contains(&row.clients) {
            counts.push(row.clients);
        }
    }
    counts.sort_unstable();
    let x = clients_axis(&counts);
    let width = 2.0 * PANEL_WIDTH;
    let height = TITLE_HEIGHT + workloads.len().max(1) as f64 * PANEL_HEIGHT;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{MARGIN_LEFT:.1}" y="22" font-size="15" font-weight="bold">synod bench: throughput and p99 against clients</text>"#
    );
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="41" font-size="12" fill="#555">{} points; closed loop, 3 nodes on loopback, fsync before ack</text>"##,
        MARGIN_LEFT + systems.len() as f64 * 110.0,
        points(rows).len()
    );
    for (i, system) in systems.iter().enumerate() {
        let left = MARGIN_LEFT + i as f64 * 110.0;
        let colour = COLOURS[i.min(COLOURS.len() - 1)];
        let _ = writeln!(
            out,
            r#"<rect x="{left:.1}" y="34" width="14" height="4" fill="{colour}"/><text x="{:.1}" y="41" font-size="12">{}</text>"#,
            left + 20.0,
            escape(system)
        );
    }
    for (w, workload) in workloads.iter().enumerate() {
        let top = TITLE_HEIGHT + w as f64 * PANEL_HEIGHT;
        let series = |value: fn(&Row) -> f64| -> Vec<Series> {
            systems
                .iter()
                .enumerate()
                .map(|(i, &system)| {
                    let mut points: Vec<(usize, f64)> = rows
                        .iter()
                        .filter(|r| r.system == system && r.workload == *workload)
                        .map(|r| (r.clients, value(r)))
                        .collect();
                    points.sort_by_key(|p| p.0);
                    Series { system, colour: COLOURS[i.min(COLOURS.len() - 1)], points }
                })
                .collect()
        };
        let throughput = series(|r| r.throughput_ops_s);
        let p99 = series(|r| r.p99_ms);
        let values = |s: &[Series]| -> Vec<f64> {
            s.iter().flat_map(|s| s.points.iter().map(|&(_, v)| v)).filter(|v| v.is_finite()).collect()
        };
        let (y, y_ticks) = linear_axis(values(&throughput).into_iter().fold(0.0, f64::max));
        // A batch request carries many transfers: say how many, since ops/s counts requests.
        let per_request = rows
            .iter()
            .find(|r| r.workload == *workload && r.throughput_ops_s > 0.0)
            .and_then(|r| Some(r.transfers_s? / r.throughput_ops_s))
            .filter(|&n| n > 1.5);
        let unit = match per_request {
            Some(n) => format!("requests/s of {n:.0} transfers"),
            None => "ops/s".to_string(),
        };
        let panel = Panel {
            title: format!("{workload}: throughput ({unit})"),
            x,
            x_ticks: &counts,
            y,
            y_ticks,
            series: throughput,
        };
        draw_panel(&mut out, 0.0, top, &panel);
        let latencies: Vec<f64> = values(&p99).into_iter().filter(|&v| v > 0.0).collect();
        let (y, y_ticks) = log_axis(
            latencies.iter().copied().fold(f64::INFINITY, f64::min),
            latencies.iter().copied().fold(0.0, f64::max),
        );
        let panel = Panel {
            title: format!("{workload}: p99 latency (ms, log scale)"),
            x,
            x_ticks: &counts,
            y,
            y_ticks,
            series: p99,
        };
        draw_panel(&mut out, PANEL_WIDTH, top, &panel);
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::super::table::tests::row;
    use super::*;

    #[test]
    fn linear_axes_end_on_a_round_number_above_the_data() {
        let (scale, ticks) = linear_axis(4_100.0);
        assert_eq!(scale.high, 5_000.0);
        assert_eq!(ticks, [0.0, 1_000.0, 2_000.0, 3_000.0, 4_000.0, 5_000.0]);
        assert_eq!(linear_axis(0.0).0.high, 1.0, "an empty panel still has an axis");
    }

    #[test]
    fn log_axes_cover_whole_decades() {
        let (scale, ticks) = log_axis(0.8, 450.0);
        assert_eq!((scale.low, scale.high), (0.1, 1_000.0));
        assert_eq!(ticks.len(), 5);
        let (scale, _) = log_axis(f64::INFINITY, 0.0);
        assert!(scale.low < scale.high, "no latencies: still a valid axis");
    }

    #[test]
    fn clients_are_spaced_by_their_logarithm() {
        let x = clients_axis(&[1, 16, 64, 256, 1000]);
        assert_eq!(x.fraction(1.0), 0.0);
        assert!((x.fraction(1000.0) - 1.0).abs() < 1e-12);
        // 16 → 64 and 64 → 256 are the same step on a log axis.
        let step = |a: f64, b: f64| x.fraction(b) - x.fraction(a);
        assert!((step(16.0, 64.0) - step(64.0, 256.0)).abs() < 1e-12);
    }

    #[test]
    fn the_picture_has_two_panels_per_workload_and_a_line_per_system_in_each() {
        let mut rows = Vec::new();
        for clients in [1, 16, 64, 256, 1000] {
            let c = clients as f64;
            rows.push(row("synod", "write", clients, 1_000.0 * c.sqrt(), 1.0 + c / 10.0));
            rows.push(row("etcd", "write", clients, 300.0 * c.sqrt(), 2.0 + c / 3.0));
            rows.push(row("synod", "transfer-batch", clients, 50.0 * c.sqrt(), 5.0 + c));
        }
        let svg = svg(&rows);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.ends_with("</svg>\n"));
        // write: 2 panels x 2 systems; transfer-batch: 2 panels x synod only.
        assert_eq!(svg.matches("<polyline").count(), 6);
        assert_eq!(svg.matches("<circle").count(), 30);
        assert_eq!(svg.matches("clients (log scale)").count(), 4);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        for label in ["write: throughput", "write: p99", "transfer-batch: p99", ">1000<", ">synod<", ">etcd<"]
        {
            assert!(svg.contains(label), "{label}");
        }
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(short(25_000.0), "25k");
        assert_eq!(short(1_500_000.0), "1.5M");
        assert_eq!(short(0.1), "0.1");
        assert_eq!(short(100.0), "100");
    }
}
