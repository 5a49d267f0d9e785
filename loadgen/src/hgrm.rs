//! HdrHistogram's percentile-distribution text (`.hgrm`), exactly as Java HdrHistogram's
//! `outputPercentileDistribution` prints it (and wrk2 with `--u_latency`), so the existing
//! plotters (HdrHistogram's plotFiles.html, vegeta's hdrplot readers) read loadgen's runs.
//!
//! The histograms hold microseconds; the file is in milliseconds, as wrk2 writes it (values
//! divided by 1000). Each histogram is its own file: latency in FILE, and in constant-rate
//! mode service time and send lag beside it (`out.hgrm` -> `out.service-time.hgrm`,
//! `out.send-lag.hgrm`), because the plotters take one distribution per file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;

use crate::report::Report;

/// Percentile reporting ticks per half distance to 100%: HdrHistogram's and wrk2's default.
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Recorded values are microseconds; the file shows milliseconds (wrk2's scaling ratio).
pub const US_PER_OUTPUT_UNIT: f64 = 1000.0;

/// One row of the percentile spectrum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Quantile iterated to, 0..=1 (1 for the last row, the maximum).
    pub quantile: f64,
    /// Highest value equivalent to the bucket reached, microseconds.
    pub value_us: u64,
    /// Samples at or below `value_us`.
    pub total_count: u64,
}

/// The percentile spectrum as HdrHistogram's percentile iterator walks it: `ticks` points per
/// halving of the distance to 100%, and a last point at 100% (the maximum).
pub fn spectrum(h: &Histogram<u64>, ticks: u32) -> Vec<Point> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut total = 0;
    h.iter_quantiles(ticks)
        .map(|v| {
            total += v.count_since_last_iteration();
            Point {
                quantile: v.quantile_iterated_to(),
                value_us: v.value_iterated_to(),
                total_count: total,
            }
        })
        .collect()
}

/// The `.hgrm` text of `h` (Java `outputPercentileDistribution(out, 5, 1000.0)`).
pub fn percentile_distribution(h: &Histogram<u64>) -> String {
    let digits = usize::from(h.sigfig());
    let scale = US_PER_OUTPUT_UNIT;
    let mut t = String::new();
    let _ = write!(
        t,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    for p in spectrum(h, TICKS_PER_HALF_DISTANCE) {
        let value = p.value_us as f64 / scale;
        if p.quantile < 1.0 {
            let _ = writeln!(
                t,
                "{value:12.digits$} {:2.12} {:10} {:14.2}",
                p.quantile,
                p.total_count,
                1.0 / (1.0 - p.quantile)
            );
        } else {
            let _ = writeln!(t, "{value:12.digits$} {:2.12} {:10}", p.quantile, p.total_count);
        }
    }
    let (mean, stdev, max) =
        if h.is_empty() { (0.0, 0.0, 0.0) } else { (h.mean(), h.stdev(), h.max() as f64) };
    let _ = writeln!(
        t,
        "#[Mean    = {:12.digits$}, StdDeviation   = {:12.digits$}]",
        mean / scale,
        stdev / scale
    );
    let _ = writeln!(t, "#[Max     = {:12.digits$}, Total count    = {:12}]", max / scale, h.len());
    // counts length = (buckets + 1) * sub_bucket_count / 2 (HdrHistogram's layout).
    let sub_buckets = 2 * h.distinct_values() / (usize::from(h.buckets()) + 1);
    let _ = writeln!(t, "#[Buckets = {:12}, SubBuckets     = {:12}]", h.buckets(), sub_buckets);
    t
}

/// `FILE` for latency; `stem.KIND.ext` beside it for the other histograms.
pub fn path_for(file: &Path, kind: &str) -> PathBuf {
    if kind == "latency" {
        return file.to_path_buf();
    }
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}.{kind}.{ext}"),
        _ => format!("{name}.{kind}"),
    };
    file.with_file_name(name)
}

/// The histograms a run keeps, by kind: latency, and with `-R` service time and send lag.
pub fn kinds(rate_mode: bool) -> &'static [&'static str] {
    if rate_mode {
        &["latency", "service-time", "send-lag"]
    } else {
        &["latency"]
    }
}

/// The files and their `.hgrm` texts for a report.
pub fn files(report: &Report, file: &Path) -> Vec<(PathBuf, String)> {
    let mut out =
        vec![(path_for(file, "latency"), percentile_distribution(&report.latency.to_histogram()))];
    if let Some(service) = &report.service_time {
        out.push((
            path_for(file, "service-time"),
            percentile_distribution(&service.to_histogram()),
        ));
    }
    if let Some(lag) = &report.send_lag {
        out.push((path_for(file, "send-lag"), percentile_distribution(&lag.to_histogram())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats;

    /// A fixed-seed spread of latencies: most near 1 ms, a tail to about 1 s.
    fn sample() -> Histogram<u64> {
        let mut h = stats::new_histogram();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let uniform = (x >> 11) as f64 / (1u64 << 53) as f64;
            stats::record(&mut h, (500.0 / (1.0 - uniform).powf(0.7)).min(1e6) as u64);
        }
        h
    }

    #[test]
    fn parses_back_to_the_histogram() {
        let h = sample();
        let text = percentile_distribution(&h);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("       Value     Percentile TotalCount 1/(1-Percentile)"));
        assert_eq!(lines.next(), Some(""));
        let mut rows = Vec::new();
        let mut footer = Vec::new();
        for line in lines {
            if line.starts_with("#[") {
                footer.push(line);
                continue;
            }
            let fields: Vec<f64> =
                line.split_whitespace().map(|f| f.parse().expect("a number")).collect();
            rows.push(fields);
        }
        let (last, body) = rows.split_last().expect("rows");
        assert!(body.len() > 50, "{} rows", body.len());
        let mut previous = (0.0, -1.0, 0.0);
        for row in body {
            assert_eq!(row.len(), 4, "{row:?}");
            let (value, p, count, inverse) = (row[0], row[1], row[2], row[3]);
            assert!(value >= previous.0 && p > previous.1 && count >= previous.2, "{row:?}");
            assert!((inverse - 1.0 / (1.0 - p)).abs() <= 0.005 * inverse.max(1.0), "{row:?}");
            // The count column is the samples at or below the value (ms back to us).
            let value_us = (value * US_PER_OUTPUT_UNIT).round() as u64;
            assert_eq!(count as u64, h.count_between(0, value_us), "{row:?}");
            // The value is the histogram's value at that percentile.
            if p > 0.0 {
                let expected = h.highest_equivalent(h.value_at_quantile(p)) as f64 / 1000.0;
                assert!((value - expected).abs() <= expected * 0.002, "{row:?} vs {expected}");
            }
            previous = (value, p, count);
        }
        assert_eq!(last.len(), 3, "the 100% row has no 4th column: {last:?}");
        assert_eq!((last[1], last[2] as u64), (1.0, h.len()));
        assert_eq!(last[0], h.max() as f64 / 1000.0);
        let number = |line: &str, key: &str| -> f64 {
            let rest = &line[line.find(key).expect("key") + key.len()..];
            rest.trim_start_matches([' ', '='])
                .split([',', ']'])
                .next()
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        assert_eq!(footer.len(), 3);
        assert!((number(footer[0], "Mean") - h.mean() / 1000.0).abs() < 0.001);
        assert!((number(footer[0], "StdDeviation") - h.stdev() / 1000.0).abs() < 0.001);
        assert_eq!(number(footer[1], "Max"), h.max() as f64 / 1000.0);
        assert_eq!(number(footer[1], "Total count") as u64, 100_000);
        assert_eq!(number(footer[2], "SubBuckets"), 2048.0);
        assert_eq!(number(footer[2], "Buckets"), f64::from(h.buckets()));
    }

    #[test]
    fn rows_are_formatted_as_java_prints_them() {
        // Java's percentile iterator with 5 ticks per half distance steps 10% up to 50%, then
        // 5% up to 75%, ... Values are highest equivalents (3000 us -> 3.001 ms at 3 digits),
        // the mean uses median equivalents, and the 100% row has three columns.
        let mut h = stats::new_histogram();
        for v in [1_000, 2_000, 3_000, 4_000] {
            stats::record(&mut h, v);
        }
        let expected = "       Value     Percentile TotalCount 1/(1-Percentile)

       1.000 0.000000000000          1           1.00
       1.000 0.100000000000          1           1.11
       1.000 0.200000000000          1           1.25
       2.000 0.300000000000          2           1.43
       2.000 0.400000000000          2           1.67
       2.000 0.500000000000          2           2.00
       3.001 0.550000000000          3           2.22
       3.001 0.600000000000          3           2.50
       3.001 0.650000000000          3           2.86
       3.001 0.700000000000          3           3.33
       4.001 0.750000000000          4           4.00
       4.001 1.000000000000          4
#[Mean    =        2.501, StdDeviation   =        1.118]
#[Max     =        4.001, Total count    =            4]
#[Buckets =           22, SubBuckets     =         2048]
";
        assert_eq!(percentile_distribution(&h), expected);
    }

    #[test]
    fn file_names_beside_the_latency_file() {
        let p = Path::new("/tmp/run.hgrm");
        assert_eq!(path_for(p, "latency"), Path::new("/tmp/run.hgrm"));
        assert_eq!(path_for(p, "send-lag"), Path::new("/tmp/run.send-lag.hgrm"));
        assert_eq!(path_for(Path::new("run"), "service-time"), Path::new("run.service-time"));
    }
}
