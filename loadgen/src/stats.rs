//! Per-thread statistics: counters and HdrHistograms (microseconds), merged at the end, plus
//! the coordinated-omission correction.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency recorded, in microseconds (one hour); longer values are clamped.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds with 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

/// Records `value_us`, clamped into the histogram's range.
pub fn record(h: &mut Histogram<u64>, value_us: u64) {
    let _ = h.record(value_us.clamp(1, LATENCY_MAX_US));
}

/// Records `value_us` and, if it exceeds `interval_us`, the samples a load generator that
/// waited for it would have missed (value - interval, value - 2 interval, ... > interval):
/// HdrHistogram's `recordValueWithExpectedInterval`, wrk2's correction.
pub fn record_corrected(h: &mut Histogram<u64>, value_us: u64, interval_us: u64) {
    let _ = h.record_correct(value_us.clamp(1, LATENCY_MAX_US), interval_us);
}

/// Errors by kind. Every request that did not complete is counted in exactly one of the
/// request-level kinds (all but the connect ones, which count connection attempts).
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Errors {
    /// Connection attempts refused (ECONNREFUSED).
    pub connect_refused: u64,
    /// Connection attempts timed out.
    pub connect_timeout: u64,
    /// Connection attempts that found no free local address/port (EADDRNOTAVAIL).
    pub address_exhausted: u64,
    /// Other connection failures.
    pub connect_other: u64,
    /// Requests lost to a reset connection (ECONNRESET).
    pub reset: u64,
    /// Requests lost to a broken pipe while writing (EPIPE).
    pub broken_pipe: u64,
    /// Requests whose response the server cut off, or never started, before closing.
    pub closed_mid_response: u64,
    /// Requests answered with bytes that are not HTTP/1.1.
    pub parse: u64,
    /// Requests unanswered within `--timeout`.
    pub timeout: u64,
    /// Responses whose status or length differed from the first one for the same URL, or
    /// whose body differed from `--verify-file`.
    pub verification: u64,
    /// Other socket errors.
    pub other: u64,
}

impl Errors {
    /// Requests that failed (connection attempts excluded).
    pub fn request_errors(&self) -> u64 {
        self.reset
            + self.broken_pipe
            + self.closed_mid_response
            + self.parse
            + self.timeout
            + self.other
    }

    /// Connection attempts that failed.
    pub fn connect_errors(&self) -> u64 {
        self.connect_refused + self.connect_timeout + self.address_exhausted + self.connect_other
    }

    /// Adds `other`.
    pub fn add(&mut self, o: &Errors) {
        self.connect_refused += o.connect_refused;
        self.connect_timeout += o.connect_timeout;
        self.address_exhausted += o.address_exhausted;
        self.connect_other += o.connect_other;
        self.reset += o.reset;
        self.broken_pipe += o.broken_pipe;
        self.closed_mid_response += o.closed_mid_response;
        self.parse += o.parse;
        self.timeout += o.timeout;
        self.verification += o.verification;
        self.other += o.other;
    }
}

/// One thread's statistics.
pub struct Stats {
    /// Latency: first byte written to last byte read (closed loop), or intended send time to
    /// last byte read (constant rate).
    pub latency: Histogram<u64>,
    /// Constant rate only: first byte written to last byte read.
    pub service: Histogram<u64>,
    /// Constant rate only: actual minus intended send time.
    pub lag: Histogram<u64>,
    /// Requests written (after warm-up).
    pub sent: u64,
    /// Requests written, warm-up included (what `-n` counts).
    pub sent_total: u64,
    /// Connections established (the first ones and every reconnect).
    pub connections_made: u64,
    /// Responses read completely (after warm-up).
    pub completed: u64,
    /// Responses by status class: index 1 = 1xx ... 5 = 5xx, 0 = other.
    pub status: [u64; 6],
    /// Bytes read from sockets for completed responses.
    pub wire_bytes: u64,
    /// Body bytes of completed responses.
    pub body_bytes: u64,
    /// Errors.
    pub errors: Errors,
    /// New connections made after the first ones.
    pub reconnects: u64,
    /// Idle keep-alive connections the server closed (not an error).
    pub idle_closes: u64,
    /// Completed responses per second of the measured period.
    pub timeline: Vec<u64>,
    /// Measured requests still unanswered when the run ended, counted from the connections'
    /// in-flight queues (not derived from the other counts, so the identity
    /// sent = completed + errors + in flight is a real check).
    pub in_flight_at_end: u64,
}

impl Stats {
    /// Empty statistics with a timeline of `seconds` slots (allocated now, not per request).
    pub fn new(seconds: usize) -> Stats {
        Stats {
            latency: new_histogram(),
            service: new_histogram(),
            lag: new_histogram(),
            sent: 0,
            sent_total: 0,
            connections_made: 0,
            completed: 0,
            status: [0; 6],
            wire_bytes: 0,
            body_bytes: 0,
            errors: Errors::default(),
            reconnects: 0,
            idle_closes: 0,
            timeline: vec![0; seconds.max(1)],
            in_flight_at_end: 0,
        }
    }

    /// Adds another thread's statistics.
    pub fn merge(&mut self, o: &Stats) {
        let _ = self.latency.add(&o.latency);
        let _ = self.service.add(&o.service);
        let _ = self.lag.add(&o.lag);
        self.sent += o.sent;
        self.sent_total += o.sent_total;
        self.connections_made += o.connections_made;
        self.completed += o.completed;
        for (a, b) in self.status.iter_mut().zip(o.status) {
            *a += b;
        }
        self.wire_bytes += o.wire_bytes;
        self.body_bytes += o.body_bytes;
        self.errors.add(&o.errors);
        self.reconnects += o.reconnects;
        self.idle_closes += o.idle_closes;
        self.in_flight_at_end += o.in_flight_at_end;
        if self.timeline.len() < o.timeline.len() {
            self.timeline.resize(o.timeline.len(), 0);
        }
        for (a, b) in self.timeline.iter_mut().zip(&o.timeline) {
            *a += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinated_omission_correction_vector() {
        // 10,000 samples of 1 ms plus one of 100 s, expected interval 10 ms: the 100 s stall
        // hid 9,999 requests whose latencies run from 99.99 s down to 10 ms.
        let mut h = new_histogram();
        for _ in 0..10_000 {
            record_corrected(&mut h, 1_000, 10_000);
        }
        record_corrected(&mut h, 100_000_000, 10_000);
        assert_eq!(h.len(), 20_000);
        let near = |q: f64, expected_us: u64| {
            let v = h.value_at_quantile(q);
            let tolerance = expected_us / 100; // 1%: the histogram keeps 3 significant digits
            assert!(
                v.abs_diff(expected_us) <= tolerance,
                "p{} = {v} us, expected {expected_us}",
                q * 100.0
            );
        };
        near(0.50, 1_000);
        near(0.75, 50_000_000);
        near(0.90, 80_000_000);
        near(0.99, 98_000_000);
    }

    #[test]
    fn merging_adds_everything() {
        let mut a = Stats::new(2);
        let mut b = Stats::new(3);
        a.completed = 2;
        b.completed = 3;
        b.timeline[2] = 7;
        record(&mut b.latency, 500);
        b.errors.reset = 1;
        a.merge(&b);
        assert_eq!((a.completed, a.timeline.len(), a.timeline[2]), (5, 3, 7));
        assert_eq!((a.latency.len(), a.errors.reset), (1, 1));
    }
}
