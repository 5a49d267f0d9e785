//! The merged result of a run: text in wrk's layout, and JSON with a versioned schema that
//! `loadgen merge` combines across runs (how load beyond one machine is generated).

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::config::{Config, PathsFile};
use crate::stats::{self, Errors, Stats};

/// Version of the JSON layout; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 2;

/// Percentiles every report gives.
pub const PERCENTILES: [f64; 7] = [50.0, 75.0, 90.0, 99.0, 99.9, 99.99, 100.0];

/// A latency distribution: summary and the full histogram as (microseconds, count) pairs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    /// What the values measure.
    pub measures: String,
    /// Samples.
    pub count: u64,
    /// Mean, microseconds.
    pub mean_us: f64,
    /// Standard deviation, microseconds.
    pub stdev_us: f64,
    /// (percentile, microseconds) for `PERCENTILES`.
    pub percentiles_us: Vec<(f64, u64)>,
    /// Every recorded value (bucket's highest equivalent value, microseconds) and its count.
    pub histogram: Vec<(u64, u64)>,
}

impl Latency {
    fn from_histogram(measures: &str, h: &Histogram<u64>) -> Latency {
        Latency {
            measures: measures.into(),
            count: h.len(),
            mean_us: if h.is_empty() { 0.0 } else { h.mean() },
            stdev_us: if h.is_empty() { 0.0 } else { h.stdev() },
            percentiles_us: PERCENTILES
                .iter()
                .map(|&p| (p, if h.is_empty() { 0 } else { h.value_at_percentile(p) }))
                .collect(),
            histogram: h
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        }
    }

    /// Rebuilds the histogram (for merging, `.hgrm` files and plots).
    pub fn to_histogram(&self) -> Histogram<u64> {
        let mut h = stats::new_histogram();
        for &(value, count) in &self.histogram {
            let _ = h.record_n(value.clamp(1, stats::LATENCY_MAX_US), count);
        }
        h
    }
}

/// Request accounting: `sent == completed + errors + in_flight_at_end`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Requests {
    /// Requests written during the measured period.
    pub sent: u64,
    /// Responses read completely.
    pub completed: u64,
    /// Requests lost to an error (see `errors`).
    pub errors: u64,
    /// Requests still unanswered when the run ended (neither completed nor failed).
    pub in_flight_at_end: u64,
}

/// CPU time loadgen itself used.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Cpu {
    /// User + system seconds.
    pub seconds: f64,
    /// Completed requests per loadgen CPU-second.
    pub requests_per_cpu_second: f64,
    /// Fraction of the threads' time loadgen was busy (near 1: loadgen was the bottleneck).
    pub busy_fraction: f64,
}

/// A run's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// JSON layout version.
    pub schema_version: u32,
    /// The run's name (`--label`), for plots.
    pub label: Option<String>,
    /// Target URLs: all of them, unless they came from a paths file (then the first
    /// `TEXT_URLS_MAX`, unless `--json-urls`).
    pub urls: Vec<String>,
    /// How many URLs the run requested (round-robin).
    pub url_count: u64,
    /// The paths file the URLs came from, if any.
    pub paths_file: Option<PathsFile>,
    /// "closed-loop" or "constant-rate".
    pub mode: String,
    /// Requests/s asked for in constant-rate mode.
    pub target_rate: Option<u64>,
    /// Connections.
    pub connections: u32,
    /// Threads.
    pub threads: u32,
    /// Pipelining depth.
    pub pipeline: u32,
    /// Wall-clock start of the measured window, Unix time in milliseconds (sub-ms precision).
    pub start_unix_ms: f64,
    /// The start asked for with `--start-at`/`--start-in`, if any.
    pub start_requested_unix_ms: Option<f64>,
    /// Set by `loadgen merge`: how many runs, and how far apart their windows began.
    pub merged: Option<Merged>,
    /// Measured seconds (warm-up excluded).
    pub duration_secs: f64,
    /// Warm-up seconds (discarded).
    pub warmup_secs: f64,
    /// Request accounting.
    pub requests: Requests,
    /// Completed requests per second.
    pub requests_per_sec: f64,
    /// Bytes read for completed responses (heads, bodies, chunk framing).
    pub wire_bytes: u64,
    /// Body bytes of completed responses.
    pub body_bytes: u64,
    /// Responses by status class.
    pub status: StatusClasses,
    /// Errors by kind.
    pub errors: Errors,
    /// Connections made after the initial ones.
    pub reconnects: u64,
    /// Idle keep-alive connections closed by the server (not errors).
    pub idle_closes: u64,
    /// Connections open when the run ended.
    pub live_connections_at_end: u64,
    /// Connections established (the first ones and every reconnect).
    pub connections_made: u64,
    /// `-n` only: why the run stopped before sending every request (no connection).
    pub gave_up: Option<String>,
    /// The latency distribution (see its `measures`).
    pub latency: Latency,
    /// Constant-rate mode: service time (first byte written to last byte read).
    pub service_time: Option<Latency>,
    /// Constant-rate mode: how late requests were sent relative to their schedule.
    pub send_lag: Option<Latency>,
    /// loadgen's own CPU use.
    pub cpu: Cpu,
    /// Completed requests in each second of the measured period.
    pub timeline: Vec<u64>,
}

/// What `loadgen merge` combined.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Merged {
    /// Runs merged.
    pub runs: u32,
    /// Latest minus earliest start of the runs' measured windows, milliseconds.
    pub start_skew_ms: f64,
}

/// Responses per status class.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct StatusClasses {
    pub s1xx: u64,
    pub s2xx: u64,
    pub s3xx: u64,
    pub s4xx: u64,
    pub s5xx: u64,
    pub other: u64,
}

const CLOSED_LATENCY: &str = "first byte written to last byte read";
const RATE_LATENCY: &str = "intended send time to last byte read (coordinated omission corrected)";

impl Report {
    /// Builds the report of a finished run.
    pub fn build(
        config: &Config,
        s: &Stats,
        measured: Duration,
        cpu: Duration,
        live: u64,
    ) -> Report {
        let secs = measured.as_secs_f64().max(1e-9);
        let request_errors = s.errors.request_errors();
        let rate_mode = config.rate.is_some();
        let mut timeline = s.timeline.clone();
        while timeline.len() > 1
            && timeline.last() == Some(&0)
            && timeline.len() as f64 > secs.ceil()
        {
            timeline.pop();
        }
        let cpu_secs = cpu.as_secs_f64();
        let listed = if config.paths_file.is_none() || config.json_urls {
            config.paths.len()
        } else {
            TEXT_URLS_MAX
        };
        Report {
            schema_version: SCHEMA_VERSION,
            label: config.label.clone(),
            urls: config
                .paths
                .iter()
                .take(listed)
                .map(|p| format!("http://{}{p}", config.host))
                .collect(),
            url_count: config.paths.len() as u64,
            paths_file: config.paths_file.clone(),
            mode: if rate_mode { "constant-rate" } else { "closed-loop" }.into(),
            target_rate: config.rate,
            connections: config.connections,
            threads: config.threads,
            pipeline: config.pipeline,
            start_unix_ms: 0.0,
            start_requested_unix_ms: None,
            merged: None,
            duration_secs: secs,
            warmup_secs: config.warmup.as_secs_f64(),
            requests: Requests {
                sent: s.sent,
                completed: s.completed,
                errors: request_errors,
                in_flight_at_end: s.in_flight_at_end,
            },
            requests_per_sec: s.completed as f64 / secs,
            wire_bytes: s.wire_bytes,
            body_bytes: s.body_bytes,
            status: StatusClasses {
                other: s.status[0],
                s1xx: s.status[1],
                s2xx: s.status[2],
                s3xx: s.status[3],
                s4xx: s.status[4],
                s5xx: s.status[5],
            },
            errors: s.errors,
            reconnects: s.reconnects,
            idle_closes: s.idle_closes,
            live_connections_at_end: live,
            connections_made: s.connections_made,
            gave_up: None,
            latency: Latency::from_histogram(
                if rate_mode { RATE_LATENCY } else { CLOSED_LATENCY },
                &s.latency,
            ),
            service_time: rate_mode.then(|| Latency::from_histogram(CLOSED_LATENCY, &s.service)),
            send_lag: rate_mode
                .then(|| Latency::from_histogram("actual minus intended send time", &s.lag)),
            cpu: Cpu {
                seconds: cpu_secs,
                requests_per_cpu_second: if cpu_secs > 0.0 {
                    s.completed as f64 / cpu_secs
                } else {
                    0.0
                },
                busy_fraction: cpu_secs
                    / (secs + config.warmup.as_secs_f64())
                    / f64::from(config.threads.max(1)),
            },
            timeline,
        }
    }

    /// Reads a JSON report written by this version of loadgen; `name` is for messages. Reports
    /// of another schema version, or from a loadgen before schema versions, are refused.
    pub fn from_json(text: &str, name: &str) -> Result<Report, String> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| format!("{name} is not JSON (a loadgen --json report?): {e}"))?;
        match value.get("schema_version").and_then(serde_json::Value::as_u64) {
            None => {
                return Err(format!(
                    "{name} has no schema_version: not a loadgen report, or from an older \
                     loadgen; rerun it with this one (schema {SCHEMA_VERSION})"
                ))
            }
            Some(v) if v != u64::from(SCHEMA_VERSION) => {
                return Err(format!(
                    "{name} has schema version {v}; this loadgen reads version {SCHEMA_VERSION} \
                     only: rerun it with this loadgen"
                ))
            }
            Some(_) => {}
        }
        serde_json::from_value(value)
            .map_err(|e| format!("{name} is not a loadgen report of schema {SCHEMA_VERSION}: {e}"))
    }

    /// Combines reports of runs made at the same time (e.g. on several machines).
    pub fn merge(reports: &[Report]) -> Result<Report, String> {
        let first = reports.first().ok_or("nothing to merge")?;
        if let Some(r) = reports.iter().find(|r| r.schema_version != SCHEMA_VERSION) {
            return Err(format!("schema version {} is not {SCHEMA_VERSION}", r.schema_version));
        }
        let name = |i: usize| match &reports[i].label {
            Some(label) => format!("run {} ({label})", i + 1),
            None => format!("run {}", i + 1),
        };
        if let Some(i) = reports.iter().position(|r| r.mode != first.mode) {
            return Err(format!(
                "{} is {} and {} is {}: their latencies measure different things",
                name(0),
                first.mode,
                name(i),
                reports[i].mode
            ));
        }
        // The measured windows, in Unix ms; merging adds runs that covered the same time.
        let window = |r: &Report| (r.start_unix_ms, r.start_unix_ms + r.duration_secs * 1000.0);
        let extreme = |key: fn((f64, f64)) -> f64, max: bool| {
            let keyed = reports.iter().enumerate().map(|(i, r)| (i, key(window(r))));
            let pick = if max {
                keyed.max_by(|a, b| a.1.total_cmp(&b.1))
            } else {
                keyed.min_by(|a, b| a.1.total_cmp(&b.1))
            };
            pick.map_or(0, |(i, _)| i)
        };
        let (latest_start, earliest_start) = (extreme(|w| w.0, true), extreme(|w| w.0, false));
        let (earliest_end, latest_end) = (extreme(|w| w.1, false), extreme(|w| w.1, true));
        let start_of = |i: usize| window(&reports[i]).0;
        let end_of = |i: usize| window(&reports[i]).1;
        if start_of(latest_start) >= end_of(earliest_end) {
            return Err(format!(
                "the measured windows do not overlap: {} began {:.3} s after {} ended; merge \
                 adds runs made at the same time (start them with one --start-at)",
                name(latest_start),
                (start_of(latest_start) - end_of(earliest_end)) / 1000.0,
                name(earliest_end)
            ));
        }
        let origin = start_of(earliest_start);
        let mut out = first.clone();
        out.timeline.clear();
        let mut latency = first.latency.to_histogram();
        let mut service = first.service_time.as_ref().map(Latency::to_histogram);
        let mut lag = first.send_lag.as_ref().map(Latency::to_histogram);
        for r in &reports[1..] {
            let _ = latency.add(r.latency.to_histogram());
            if let (Some(h), Some(l)) = (service.as_mut(), r.service_time.as_ref()) {
                let _ = h.add(l.to_histogram());
            }
            if let (Some(h), Some(l)) = (lag.as_mut(), r.send_lag.as_ref()) {
                let _ = h.add(l.to_histogram());
            }
            out.connections += r.connections;
            out.threads += r.threads;
            out.target_rate = match (out.target_rate, r.target_rate) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
            for url in &r.urls {
                if !out.urls.contains(url) {
                    out.urls.push(url.clone());
                }
            }
            out.url_count = out.url_count.max(r.url_count).max(out.urls.len() as u64);
            let (a, b) = (&mut out.requests, &r.requests);
            a.sent += b.sent;
            a.completed += b.completed;
            a.errors += b.errors;
            a.in_flight_at_end += b.in_flight_at_end;
            out.wire_bytes += r.wire_bytes;
            out.body_bytes += r.body_bytes;
            let (a, b) = (&mut out.status, &r.status);
            a.s1xx += b.s1xx;
            a.s2xx += b.s2xx;
            a.s3xx += b.s3xx;
            a.s4xx += b.s4xx;
            a.s5xx += b.s5xx;
            a.other += b.other;
            out.errors.add(&r.errors);
            out.reconnects += r.reconnects;
            out.idle_closes += r.idle_closes;
            out.live_connections_at_end += r.live_connections_at_end;
            out.connections_made += r.connections_made;
            if out.gave_up.is_none() {
                out.gave_up.clone_from(&r.gave_up);
            }
            out.cpu.seconds += r.cpu.seconds;
            out.cpu.busy_fraction = out.cpu.busy_fraction.max(r.cpu.busy_fraction);
        }
        // Timelines summed second by second on the wall clock, from the earliest start.
        for r in reports {
            let offset = ((r.start_unix_ms - origin) / 1000.0).round().max(0.0) as usize;
            if out.timeline.len() < offset + r.timeline.len() {
                out.timeline.resize(offset + r.timeline.len(), 0);
            }
            for (a, b) in out.timeline[offset..].iter_mut().zip(&r.timeline) {
                *a += b;
            }
        }
        out.label = None;
        out.start_unix_ms = origin;
        out.duration_secs = (end_of(latest_end) - origin) / 1000.0;
        out.start_requested_unix_ms = first
            .start_requested_unix_ms
            .filter(|&at| reports.iter().all(|r| r.start_requested_unix_ms == Some(at)));
        out.merged = Some(Merged {
            runs: reports.iter().map(|r| r.merged.map_or(1, |m| m.runs)).sum(),
            start_skew_ms: start_of(latest_start) - origin,
        });
        out.requests_per_sec = out.requests.completed as f64 / out.duration_secs.max(1e-9);
        out.cpu.requests_per_cpu_second = if out.cpu.seconds > 0.0 {
            out.requests.completed as f64 / out.cpu.seconds
        } else {
            0.0
        };
        out.latency = Latency::from_histogram(&first.latency.measures, &latency);
        out.service_time = service.map(|h| Latency::from_histogram(CLOSED_LATENCY, &h));
        out.send_lag = lag.map(|h| Latency::from_histogram("actual minus intended send time", &h));
        Ok(out)
    }

    /// Why the run failed as a measurement, if it did: no connection could be made, nothing
    /// completed and connections failed, or `-n` gave up. The binary exits non-zero then.
    pub fn failure(&self) -> Option<String> {
        let e = &self.errors;
        let connect = format!(
            "{} connect errors (refused {}, timed out {}, address exhausted {}, other {})",
            e.connect_errors(),
            e.connect_refused,
            e.connect_timeout,
            e.address_exhausted,
            e.connect_other
        );
        let target = self.urls.first().map_or("the server", String::as_str);
        let headline = if self.connections_made == 0 {
            format!("no connection could be made to {target}")
        } else if self.requests.completed == 0 && e.connect_errors() > 0 {
            format!("no request completed against {target}")
        } else if self.gave_up.is_some() {
            format!("the connections to {target} were lost")
        } else {
            return None;
        };
        Some(match &self.gave_up {
            Some(why) => format!("{headline}; {why}; {connect}"),
            None => format!("{headline}; {connect}"),
        })
    }

    /// The report as wrk-like text; `spectrum` adds the full percentile table.
    pub fn to_text(&self, spectrum: bool) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "Running {:.2}s test @ {}", self.duration_secs, self.url_summary());
        let mode = match self.target_rate {
            Some(rate) => format!("constant rate {rate} req/s"),
            None => "closed loop".into(),
        };
        let _ = writeln!(
            t,
            "  {} threads and {} connections ({mode}, pipeline {})",
            self.threads, self.connections, self.pipeline
        );
        if let Some(m) = &self.merged {
            let _ = writeln!(
                t,
                "  merged {} runs; their measured windows began within {:.3} ms (start skew)",
                m.runs, m.start_skew_ms
            );
        }
        write_latency(&mut t, "Latency", &self.latency, spectrum);
        if let Some(service) = &self.service_time {
            write_latency(&mut t, "Service time", service, spectrum);
        }
        if let Some(lag) = &self.send_lag {
            write_latency(&mut t, "Send lag", lag, false);
        }
        let r = &self.requests;
        let _ = writeln!(
            t,
            "  {} requests in {:.2}s, {} read ({} body)",
            r.completed,
            self.duration_secs,
            bytes(self.wire_bytes as f64),
            bytes(self.body_bytes as f64)
        );
        let _ = writeln!(
            t,
            "  Requests: {} sent = {} completed + {} errors + {} in flight at the end",
            r.sent, r.completed, r.errors, r.in_flight_at_end
        );
        let s = &self.status;
        let _ = writeln!(
            t,
            "  Status: 1xx {}, 2xx {}, 3xx {}, 4xx {}, 5xx {}, other {}",
            s.s1xx, s.s2xx, s.s3xx, s.s4xx, s.s5xx, s.other
        );
        let e = &self.errors;
        let _ = writeln!(
            t,
            "  Errors: connect refused {}, connect timeout {}, address exhausted {}, connect other {}; \
             reset {}, broken pipe {}, closed mid-response {}, parse {}, timeout {}, other {}; \
             verification {}",
            e.connect_refused, e.connect_timeout, e.address_exhausted, e.connect_other, e.reset,
            e.broken_pipe, e.closed_mid_response, e.parse, e.timeout, e.other, e.verification
        );
        let _ = writeln!(
            t,
            "  Connections: {} reconnects, {} idle keep-alive closes by the server, {} live at the end",
            self.reconnects, self.idle_closes, self.live_connections_at_end
        );
        if let Some(why) = &self.gave_up {
            let _ = writeln!(t, "  {why}");
        }
        let _ = writeln!(t, "Requests/sec: {:>12.2}", self.requests_per_sec);
        let _ = writeln!(
            t,
            "Transfer/sec: {:>12} wire, {} body",
            bytes(self.wire_bytes as f64 / self.duration_secs),
            bytes(self.body_bytes as f64 / self.duration_secs)
        );
        let _ = writeln!(
            t,
            "loadgen CPU:  {:.2}s, {:.0} requests per loadgen CPU-second",
            self.cpu.seconds, self.cpu.requests_per_cpu_second
        );
        if self.cpu.busy_fraction > 0.9 {
            let _ = writeln!(
                t,
                "warning: loadgen was busy {:.0}% of its threads' time: it may be the bottleneck, \
                 not the server (add threads or machines, or use -R)",
                self.cpu.busy_fraction * 100.0
            );
        }
        t
    }
}

fn write_latency(t: &mut String, title: &str, l: &Latency, spectrum: bool) {
    let _ = writeln!(t, "  {title} ({}):", l.measures);
    let _ =
        writeln!(t, "    mean {}, stdev {}, {} samples", us(l.mean_us), us(l.stdev_us), l.count);
    let line: Vec<String> =
        l.percentiles_us.iter().map(|(p, v)| format!("p{p} {}", us(*v as f64))).collect();
    let _ = writeln!(t, "    {}", line.join(", "));
    if spectrum {
        let _ = writeln!(t, "    {:>12} {:>12} {:>12}", "value", "percentile", "count");
        let total: u64 = l.histogram.iter().map(|(_, c)| c).sum();
        let mut seen = 0;
        for (value, count) in &l.histogram {
            seen += count;
            let _ = writeln!(
                t,
                "    {:>12} {:>11.5}% {:>12}",
                us(*value as f64),
                seen as f64 * 100.0 / total as f64,
                seen
            );
        }
    }
}

fn us(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{:.2}s", v / 1_000_000.0)
    } else if v >= 1000.0 {
        format!("{:.2}ms", v / 1000.0)
    } else {
        format!("{v:.0}us")
    }
}

fn bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = v;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.2}{}", UNITS[unit])
}

/// URLs named in the text report's first line: a paths file can hold hundreds of thousands.
const TEXT_URLS_MAX: usize = 3;

impl Report {
    /// The URLs of a run for one line: all of them when few, else the first few, how many
    /// there are and where they came from.
    fn url_summary(&self) -> String {
        let count = self.url_count.max(self.urls.len() as u64);
        let shown = &self.urls[..self.urls.len().min(TEXT_URLS_MAX)];
        if count as usize <= TEXT_URLS_MAX && shown.len() as u64 == count {
            return shown.join(", ");
        }
        let source = match &self.paths_file {
            Some(file) if file.paths == count => format!("{count} paths from {}", file.name),
            Some(file) => format!("{count} URLs, {} paths from {}", file.paths, file.name),
            None => format!("{count} URLs"),
        };
        format!("{}, ... ({source})", shown.join(", "))
    }
}

#[cfg(test)]
mod url_summary_tests {
    use super::*;

    fn report(urls: Vec<String>, url_count: u64, paths_file: Option<PathsFile>) -> Report {
        let config = Config::new("http://127.0.0.1:1/", 1).expect("a valid configuration");
        let stats = crate::stats::Stats::new(1);
        let mut r = Report::build(&config, &stats, Duration::from_secs(1), Duration::ZERO, 0);
        (r.urls, r.url_count, r.paths_file) = (urls, url_count, paths_file);
        r
    }

    #[test]
    fn many_urls_fit_on_one_short_line() {
        let few: Vec<String> = (0..3).map(|i| format!("http://h/{i}")).collect();
        assert_eq!(
            report(few.clone(), 3, None).url_summary(),
            "http://h/0, http://h/1, http://h/2"
        );
        let many: Vec<String> = (0..20_000).map(|i| format!("http://h/{i}")).collect();
        assert_eq!(
            report(many, 20_000, None).url_summary(),
            "http://h/0, http://h/1, http://h/2, ... (20000 URLs)"
        );
        let file = PathsFile { name: "paths.txt".into(), paths: 20_000 };
        assert_eq!(
            report(few, 20_000, Some(file)).url_summary(),
            "http://h/0, http://h/1, http://h/2, ... (20000 paths from paths.txt)"
        );
    }
}
