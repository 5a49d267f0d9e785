//! `loadgen plot`: one self-contained SVG of one or more runs. Top: the latency percentile
//! spectrum on a log "nines" axis (50%, 90%, 99%, 99.9%, 99.99%, max), one line per run. Bottom:
//! completed requests per second over each run's measured period, from its timeline.

use std::fmt::Write as _;

use crate::hgrm::{self, TICKS_PER_HALF_DISTANCE};
use crate::report::Report;
use crate::svg::{escape, num, tick_label};

/// Picture size in CSS pixels: fits a laptop screen and a README column.
const WIDTH_PX: f64 = 1040.0;
const HEIGHT_PX: f64 = 760.0;
/// Plot area, left and right edges; the legend takes the column on the right.
const PLOT_LEFT_PX: f64 = 80.0;
const PLOT_RIGHT_PX: f64 = 690.0;
const LEGEND_LEFT_PX: f64 = 710.0;
/// Latency panel top and bottom.
const LATENCY_TOP_PX: f64 = 60.0;
const LATENCY_BOTTOM_PX: f64 = 440.0;
/// Rate panel top and bottom.
const RATE_TOP_PX: f64 = 530.0;
const RATE_BOTTOM_PX: f64 = 700.0;
/// Fewest nines on the x axis, so 99.99% always shows; most, so a huge run stays readable.
const NINES_MIN: f64 = 4.0;
const NINES_MAX: f64 = 7.0;
/// Distance in nines from the last percentile point to the "max" point.
const MAX_GAP_NINES: f64 = 0.6;
/// A last timeline second shorter than this is left out: its rate would be mostly noise.
const PARTIAL_SECOND_MIN_SECS: f64 = 0.2;
/// Auto y scale: logarithmic when the largest latency is this many times the smallest.
const LOG_SCALE_RATIO: f64 = 20.0;
/// Line colours (Tableau 10): distinct for the usual handful of runs, then repeated.
const COLORS: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

/// How the latency axis is scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum YScale {
    /// Logarithmic when latencies span more than a factor of 20, else linear.
    Auto,
    /// Logarithmic (decades).
    Log,
    /// Linear from 0.
    Linear,
}

/// One run to draw.
pub struct Run<'a> {
    /// Legend text.
    pub label: String,
    /// The run's report.
    pub report: &'a Report,
}

/// x position (in nines) of a quantile below 1.
fn nines(q: f64) -> f64 {
    -(1.0 - q).max(1e-12).log10()
}

/// Requests per second in each timeline second: (start second, end second, rate).
fn rates(report: &Report) -> Vec<(f64, f64, f64)> {
    let duration = report.duration_secs;
    report
        .timeline
        .iter()
        .enumerate()
        .filter_map(|(i, &count)| {
            let start = i as f64;
            let end = (start + 1.0).min(duration.max(start));
            let width = end - start;
            (width >= PARTIAL_SECOND_MIN_SECS || (width > 0.0 && i == 0))
                .then(|| (start, end, count as f64 / width))
        })
        .collect()
}

/// "Nice" linear ticks from 0 to at least `max`: 1, 2 or 5 times a power of ten apart.
fn linear_ticks(max: f64) -> Vec<f64> {
    let max = if max > 0.0 { max } else { 1.0 };
    let raw = max / 5.0;
    let power = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * power).find(|s| *s >= raw).unwrap_or(power);
    let count = (max / step).ceil() as usize;
    (0..=count).map(|i| i as f64 * step).collect()
}

/// Decade ticks covering [min, max] (with 2 and 5 in between when there are few decades).
fn log_ticks(min: f64, max: f64) -> Vec<f64> {
    let low = min.max(1e-3).log10().floor() as i32;
    let high = (max.max(min * 10.0).log10().ceil() as i32).max(low + 1);
    let mut ticks = Vec::new();
    for e in low..=high {
        let decade = 10f64.powi(e);
        ticks.push(decade);
        if high - low <= 2 && e < high {
            ticks.push(2.0 * decade);
            ticks.push(5.0 * decade);
        }
    }
    ticks
}

/// The SVG of `runs` (at least one).
pub fn render(runs: &[Run], scale: YScale, title: &str) -> String {
    // Spectra in (nines, ms); the 100% point goes to the "max" position.
    let spectra: Vec<(Vec<(f64, f64)>, f64)> = runs
        .iter()
        .map(|run| {
            let points =
                hgrm::spectrum(&run.report.latency.to_histogram(), TICKS_PER_HALF_DISTANCE);
            let finite: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| p.quantile < 1.0)
                .map(|p| (nines(p.quantile), p.value_us as f64 / 1000.0))
                .collect();
            let max = points.last().map_or(0.0, |p| p.value_us as f64 / 1000.0);
            (finite, max)
        })
        .collect();
    let top_nines = spectra
        .iter()
        .flat_map(|(points, _)| points.iter().map(|p| p.0))
        .fold(NINES_MIN, f64::max)
        .min(NINES_MAX);
    let max_x = top_nines + MAX_GAP_NINES;
    let values = spectra.iter().flat_map(|(points, max)| points.iter().map(|p| p.1).chain([*max]));
    let (low, high) = values.fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(v.max(1e-3)), hi.max(v)));
    let (low, high) = if high > 0.0 { (low, high) } else { (1.0, 1.0) };
    let log = match scale {
        YScale::Log => true,
        YScale::Linear => false,
        YScale::Auto => high / low > LOG_SCALE_RATIO,
    };
    let y_ticks = if log { log_ticks(low, high) } else { linear_ticks(high) };
    let (y_lo, y_hi) = (y_ticks[0], *y_ticks.last().unwrap_or(&1.0));
    let x_of = |n: f64| PLOT_LEFT_PX + (PLOT_RIGHT_PX - PLOT_LEFT_PX) * n.min(max_x) / max_x;
    let y_of = |ms: f64| {
        let f = if log {
            (ms.max(y_lo).log10() - y_lo.log10()) / (y_hi.log10() - y_lo.log10())
        } else {
            (ms - y_lo) / (y_hi - y_lo)
        };
        LATENCY_BOTTOM_PX - (LATENCY_BOTTOM_PX - LATENCY_TOP_PX) * f.clamp(0.0, 1.0)
    };

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#,
        w = WIDTH_PX,
        h = HEIGHT_PX
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" font-size="16" font-weight="bold">{}</text>"#,
        num(PLOT_LEFT_PX),
        escape(title)
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" font-weight="bold">Latency by percentile ({} ms)</text>"#,
        num(PLOT_LEFT_PX),
        num(LATENCY_TOP_PX - 10.0),
        if log { "log" } else { "linear" }
    );

    // Latency grid: y ticks, then the nines ticks.
    let _ = writeln!(s, r##"<g class="grid" stroke="#ddd">"##);
    for &t in &y_ticks {
        let y = y_of(t);
        let _ = writeln!(
            s,
            r#"<line x1="{}" x2="{}" y1="{y}" y2="{y}"/>"#,
            num(PLOT_LEFT_PX),
            num(PLOT_RIGHT_PX),
            y = num(y)
        );
    }
    let mut x_ticks: Vec<(f64, String)> = [
        (std::f64::consts::LOG10_2, "50%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
    ]
    .iter()
    .map(|(n, l)| (*n, (*l).to_string()))
    .collect();
    let mut extra = 5.0;
    while extra <= top_nines {
        x_ticks.push((extra, format!("99.{}%", "9".repeat(extra as usize - 2))));
        extra += 1.0;
    }
    x_ticks.push((max_x, "max".to_string()));
    for (n, _) in &x_ticks {
        let x = x_of(*n);
        let _ = writeln!(
            s,
            r#"<line x1="{x}" x2="{x}" y1="{}" y2="{}"/>"#,
            num(LATENCY_TOP_PX),
            num(LATENCY_BOTTOM_PX),
            x = num(x)
        );
    }
    let _ = writeln!(s, "</g>");
    let _ = writeln!(s, r##"<g class="axis" fill="#333">"##);
    for &t in &y_ticks {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            num(PLOT_LEFT_PX - 6.0),
            num(y_of(t) + 4.0),
            tick_label(t)
        );
    }
    for (n, label) in &x_ticks {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            num(x_of(*n)),
            num(LATENCY_BOTTOM_PX + 16.0),
            escape(label)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        num((PLOT_LEFT_PX + PLOT_RIGHT_PX) / 2.0),
        num(LATENCY_BOTTOM_PX + 34.0)
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(22 {}) rotate(-90)" text-anchor="middle">latency (ms)</text>"#,
        num((LATENCY_TOP_PX + LATENCY_BOTTOM_PX) / 2.0)
    );
    let _ = writeln!(s, "</g>");
    let _ = writeln!(
        s,
        r##"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#999"/>"##,
        num(PLOT_LEFT_PX),
        num(LATENCY_TOP_PX),
        num(PLOT_RIGHT_PX - PLOT_LEFT_PX),
        num(LATENCY_BOTTOM_PX - LATENCY_TOP_PX)
    );
    for (i, (run, (points, max))) in runs.iter().zip(&spectra).enumerate() {
        let mut d = String::new();
        for (j, (n, ms)) in points.iter().chain([(max_x, *max)].iter()).enumerate() {
            let _ = write!(
                d,
                "{}{} {} ",
                if j == 0 { "M" } else { "L" },
                num(x_of(*n)),
                num(y_of(*ms))
            );
        }
        let _ = writeln!(
            s,
            r#"<path class="spectrum" d="{}" fill="none" stroke="{}" stroke-width="2"><title>{}</title></path>"#,
            d.trim_end(),
            COLORS[i % COLORS.len()],
            escape(&run.label)
        );
    }

    // Requests per second.
    let all_rates: Vec<Vec<(f64, f64, f64)>> = runs.iter().map(|r| rates(r.report)).collect();
    let t_max = all_rates.iter().flatten().map(|r| r.1).fold(1.0, f64::max).ceil();
    let r_ticks = linear_ticks(all_rates.iter().flatten().map(|r| r.2).fold(0.0, f64::max));
    let r_hi = *r_ticks.last().unwrap_or(&1.0);
    let tx = |t: f64| PLOT_LEFT_PX + (PLOT_RIGHT_PX - PLOT_LEFT_PX) * t / t_max;
    let ty = |r: f64| RATE_BOTTOM_PX - (RATE_BOTTOM_PX - RATE_TOP_PX) * (r / r_hi).clamp(0.0, 1.0);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" font-weight="bold">Requests per second (completed, per second of the run)</text>"#,
        num(PLOT_LEFT_PX),
        num(RATE_TOP_PX - 10.0)
    );
    let _ = writeln!(s, r##"<g class="grid" stroke="#ddd">"##);
    for &r in &r_ticks {
        let _ = writeln!(
            s,
            r#"<line x1="{}" x2="{}" y1="{y}" y2="{y}"/>"#,
            num(PLOT_LEFT_PX),
            num(PLOT_RIGHT_PX),
            y = num(ty(r))
        );
    }
    let _ = writeln!(s, "</g>");
    let _ = writeln!(s, r##"<g class="axis" fill="#333">"##);
    for &r in &r_ticks {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            num(PLOT_LEFT_PX - 6.0),
            num(ty(r) + 4.0),
            tick_label(r)
        );
    }
    for t in linear_ticks(t_max).into_iter().filter(|t| *t <= t_max) {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            num(tx(t)),
            num(RATE_BOTTOM_PX + 16.0),
            tick_label(t)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">seconds since the start of the measured period</text>"#,
        num((PLOT_LEFT_PX + PLOT_RIGHT_PX) / 2.0),
        num(RATE_BOTTOM_PX + 34.0)
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(22 {}) rotate(-90)" text-anchor="middle">req/s</text>"#,
        num((RATE_TOP_PX + RATE_BOTTOM_PX) / 2.0)
    );
    let _ = writeln!(s, "</g>");
    let _ = writeln!(
        s,
        r##"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#999"/>"##,
        num(PLOT_LEFT_PX),
        num(RATE_TOP_PX),
        num(PLOT_RIGHT_PX - PLOT_LEFT_PX),
        num(RATE_BOTTOM_PX - RATE_TOP_PX)
    );
    for (i, (run, rates)) in runs.iter().zip(&all_rates).enumerate() {
        let mut d = String::new();
        for (j, (start, end, rate)) in rates.iter().enumerate() {
            let _ = write!(
                d,
                "{}{} {} H{} ",
                if j == 0 { "M" } else { "L" },
                num(tx(*start)),
                num(ty(*rate)),
                num(tx(*end))
            );
        }
        let _ = writeln!(
            s,
            r#"<path class="rate" d="{}" fill="none" stroke="{}" stroke-width="2"><title>{}</title></path>"#,
            d.trim_end(),
            COLORS[i % COLORS.len()],
            escape(&run.label)
        );
    }

    // Legend: colour, label, and the run's headline numbers.
    for (i, run) in runs.iter().enumerate() {
        let y = LATENCY_TOP_PX + 10.0 + i as f64 * 44.0;
        let r = run.report;
        let p99 = r.latency.percentiles_us.iter().find(|(p, _)| *p == 99.0).map_or(0, |(_, v)| *v);
        let _ = writeln!(
            s,
            r#"<line x1="{x}" x2="{}" y1="{y}" y2="{y}" stroke="{}" stroke-width="3"/>"#,
            num(LEGEND_LEFT_PX + 24.0),
            COLORS[i % COLORS.len()],
            x = num(LEGEND_LEFT_PX),
            y = num(y)
        );
        let _ = writeln!(
            s,
            r#"<text class="legend" x="{}" y="{}">{}</text>"#,
            num(LEGEND_LEFT_PX + 30.0),
            num(y + 4.0),
            escape(&run.label)
        );
        let _ = writeln!(
            s,
            r##"<text class="legend-note" x="{}" y="{}" fill="#555" font-size="11">{} req/s, p99 {} ms, {} conns</text>"##,
            num(LEGEND_LEFT_PX + 30.0),
            num(y + 20.0),
            tick_label(r.requests_per_sec),
            tick_label(p99 as f64 / 1000.0),
            r.connections
        );
    }
    let _ = writeln!(s, "</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks() {
        assert_eq!(linear_ticks(23_000.0), [0.0, 5000.0, 10000.0, 15000.0, 20000.0, 25000.0]);
        assert_eq!(log_ticks(0.3, 40.0), [0.1, 1.0, 10.0, 100.0]);
        assert_eq!(log_ticks(0.3, 4.0), [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]);
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
    }
}
