//! The `/metrics` body: Prometheus text exposition format 0.0.4, written from summed counters.

use std::fmt::Write;

use super::stats::{
    Counters, CONNECTION_STATES, LATENCY_BUCKETS_MICROS, METHOD_LABELS, STATUS_CLASSES,
};

/// The Content-Type Prometheus expects for this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `# HELP` and `# TYPE` lines of one family.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Renders every metric. `uptime_secs` is the process's age.
pub fn render(c: &Counters, uptime_secs: f64) -> String {
    let mut out = String::with_capacity(4096);
    // Requests by method and status class.
    let name = "ringserve_http_requests_total";
    header(
        &mut out,
        name,
        "counter",
        "Responses finished (sent, or cut off by the client), by method and status class.",
    );
    for (m, row) in c.requests.iter().enumerate() {
        for (s, n) in row.iter().enumerate().take(STATUS_CLASSES) {
            let method = METHOD_LABELS[m];
            let _ = writeln!(out, "{name}{{method=\"{method}\",code=\"{}xx\"}} {n}", s + 1);
        }
    }
    let simple = |out: &mut String, name: &str, kind: &str, help: &str, value: u64| {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    };
    simple(
        &mut out,
        "ringserve_http_response_body_bytes_total",
        "counter",
        "Body bytes sent (headers excluded; a HEAD or 304 sends none, a cut-off response counts what left).",
        c.body_bytes,
    );
    // Latency histogram, in seconds.
    let name = "ringserve_http_request_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} From the loop turn that answered a request to the one that saw its last byte sent.\n# TYPE {name} histogram"
    );
    let mut cumulative = 0;
    for (i, bound) in LATENCY_BUCKETS_MICROS.iter().enumerate() {
        cumulative += c.latency[i];
        let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", *bound as f64 / 1e6);
    }
    cumulative += c.latency[LATENCY_BUCKETS_MICROS.len()];
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "{name}_sum {}", c.latency_sum_micros as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {cumulative}");
    // Connections.
    let name = "ringserve_connections";
    let _ = writeln!(
        out,
        "# HELP {name} Open connections by state: reading a request (or waiting for its file to be opened), writing a response, idle between requests, closing.\n# TYPE {name} gauge"
    );
    for (state, n) in CONNECTION_STATES.iter().zip(c.connections) {
        let _ = writeln!(out, "{name}{{state=\"{state}\"}} {n}");
    }
    let counters: [(&str, &str, u64); 13] = [
        ("ringserve_connections_accepted_total", "Connections accepted.", c.accepted),
        (
            "ringserve_connections_refused_total",
            "Connections closed at once: the worker was at --max-connections or shutting down.",
            c.refused,
        ),
        (
            "ringserve_accept_errors_total",
            "Failed accepts (EMFILE, ENFILE: out of descriptors), each followed by a one-second back-off.",
            c.accept_errors,
        ),
        (
            "ringserve_connections_overrun_total",
            "Connections closed for sending requests far ahead of reading responses.",
            c.overruns,
        ),
        ("ringserve_cache_hits_total", "Requests answered from the file cache without a system call.", c.cache_hits),
        ("ringserve_cache_misses_total", "Paths opened because the file cache did not hold them.", c.cache_misses),
        (
            "ringserve_cache_revalidations_total",
            "Cached answers checked again (after a change event, or their interval when not watched).",
            c.cache_revalidations,
        ),
        ("ringserve_cache_evictions_total", "Cached answers evicted to stay within the cache's bounds.", c.cache_evictions),
        ("ringserve_cache_entries", "Paths the file cache holds.", c.cache_entries),
        ("ringserve_cache_bytes", "Bytes the file cache holds (bodies in memory and header fields).", c.cache_bytes),
        ("ringserve_access_log_lines_total", "Access-log lines written.", c.log_lines),
        (
            "ringserve_access_log_lines_dropped_total",
            "Access-log lines dropped: the disk was full or failing, or slower than the requests.",
            c.log_dropped,
        ),
        ("ringserve_send_batches_total", "Batches of responses sent (one send for several pipelined responses).", c.sends),
    ];
    for (name, help, value) in counters {
        let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
        simple(&mut out, name, kind, help, value);
    }
    let _ = writeln!(
        out,
        "# HELP ringserve_uptime_seconds Seconds since the server started.\n# TYPE ringserve_uptime_seconds gauge\nringserve_uptime_seconds {uptime_secs:.3}"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counters_are_named() {
        let mut c = Counters::default();
        c.requests[0][1] = 7;
        c.latency[0] = 3;
        c.latency[2] = 4;
        c.latency_sum_micros = 1_000;
        let text = render(&c, 1.5);
        assert!(text.contains("ringserve_http_requests_total{method=\"GET\",code=\"2xx\"} 7\n"));
        assert!(text.contains("ringserve_http_request_duration_seconds_bucket{le=\"0.00005\"} 3\n"));
        assert!(text.contains("ringserve_http_request_duration_seconds_bucket{le=\"0.0001\"} 3\n"));
        assert!(text.contains("ringserve_http_request_duration_seconds_bucket{le=\"0.00025\"} 7\n"));
        assert!(text.contains("ringserve_http_request_duration_seconds_bucket{le=\"+Inf\"} 7\n"));
        assert!(text.contains("ringserve_http_request_duration_seconds_count 7\n"));
        assert!(text.contains("ringserve_http_request_duration_seconds_sum 0.001\n"));
        assert!(text.contains("# TYPE ringserve_cache_entries gauge\n"));
        // Every sample line belongs to a family declared before it.
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|b| declared.contains(*b))
                    .unwrap_or(name);
                assert!(declared.contains(base), "{line}");
            }
        }
    }
}
