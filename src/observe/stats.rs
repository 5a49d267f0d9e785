//! Counters and gauges: one `WorkerStats` per worker, written only by that worker (relaxed
//! atomics on its own cache lines, so nothing shared is written per request), summed only when
//! `/metrics` is scraped or the server exits.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::files::CacheCounters;
use crate::http::Method;

/// Upper bounds of the latency histogram's buckets, in microseconds (the last bucket, +Inf, is
/// implicit). From 50 us, a loopback hit, to 10 s, a send timeout's order: the span
/// static-web-server's `sws_http_request_duration_seconds` uses.
pub const LATENCY_BUCKETS_MICROS: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];

/// Per bit length of a latency, the first bucket it can fall in (the bounds below the smallest
/// number of that length): a bucket is then found with one or two compares, not a scan.
const FIRST_BUCKET_BY_BITS: [u8; 65] = {
    let mut table = [0u8; 65];
    let mut bits = 1;
    while bits <= 64 {
        let smallest = 1u64 << (bits - 1);
        let mut below = 0;
        while below < LATENCY_BUCKETS_MICROS.len() && LATENCY_BUCKETS_MICROS[below] < smallest {
            below += 1;
        }
        table[bits] = below as u8;
        bits += 1;
    }
    table
};

/// The histogram bucket of a latency: the first whose bound is at least `micros` (the last,
/// +Inf, when none is).
#[inline]
fn latency_bucket(micros: u64) -> usize {
    let bits = (64 - micros.leading_zeros()) as usize;
    let mut bucket = usize::from(FIRST_BUCKET_BY_BITS[bits]);
    while bucket < LATENCY_BUCKETS_MICROS.len() && micros > LATENCY_BUCKETS_MICROS[bucket] {
        bucket += 1;
    }
    bucket
}

/// Method labels: a bounded set, so a client cannot grow the metrics with invented methods.
pub const METHOD_LABELS: [&str; 3] = ["GET", "HEAD", "other"];

/// Status classes, `1xx` to `5xx`.
pub const STATUS_CLASSES: usize = 5;

/// Connection states counted by the gauges, in this order.
pub const CONNECTION_STATES: [&str; 4] = ["reading", "writing", "idle", "closing"];

/// The metric-label index of a method.
pub fn method_index(method: Method) -> u8 {
    match method {
        Method::Get => 0,
        Method::Head => 1,
        Method::NotAllowed | Method::Unknown => 2,
    }
}

/// One worker's counters. Each field is written by one thread only (its worker); readers
/// (scrapes) load them relaxed, so a scrape may see one request in a counter and not yet in
/// another, never a torn value.
#[derive(Default)]
#[repr(align(128))]
pub struct WorkerStats {
    requests: [[AtomicU64; STATUS_CLASSES]; METHOD_LABELS.len()],
    body_bytes: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS_MICROS.len() + 1],
    latency_sum_micros: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    accept_errors: AtomicU64,
    sends: AtomicU64,
    enobufs: AtomicU64,
    overruns: AtomicU64,
    connections: [AtomicU64; CONNECTION_STATES.len()],
    cache: [AtomicU64; 6],
    log_lines: AtomicU64,
    log_dropped: AtomicU64,
}

/// Adds `n` to a counter. A counter only its worker writes (`shared` false: the io_uring
/// engine) takes a plain load and store, not a locked read-modify-write; the blocking engine's
/// connection threads share one `WorkerStats` and add atomically.
#[inline(always)]
fn add(counter: &AtomicU64, n: u64, shared: bool) {
    if shared {
        counter.fetch_add(n, Relaxed);
    } else {
        counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
    }
}

impl WorkerStats {
    /// A response finished: its status, method, body bytes that left, and the microseconds
    /// from the request being answered to its last byte being sent.
    #[inline]
    pub fn response(&self, status: u16, method: u8, body_bytes: u64, micros: u64, shared: bool) {
        let class = usize::from(status / 100).clamp(1, STATUS_CLASSES) - 1;
        let bucket = latency_bucket(micros);
        add(&self.requests[usize::from(method).min(2)][class], 1, shared);
        add(&self.body_bytes, body_bytes, shared);
        add(&self.latency[bucket], 1, shared);
        add(&self.latency_sum_micros, micros, shared);
    }

    /// Counts one event of `kind`.
    pub fn count(&self, kind: Event, shared: bool) {
        let counter = match kind {
            Event::Accepted => &self.accepted,
            Event::Refused => &self.refused,
            Event::AcceptError => &self.accept_errors,
            Event::Sent => &self.sends,
            Event::Enobufs => &self.enobufs,
            Event::Overrun => &self.overruns,
        };
        add(counter, 1, shared);
    }

    /// Publishes the connection counts by state (`CONNECTION_STATES` order).
    pub fn set_connections(&self, counts: [u64; CONNECTION_STATES.len()]) {
        for (gauge, n) in self.connections.iter().zip(counts) {
            gauge.store(n, Relaxed);
        }
    }

    /// Publishes the file cache's counters and size (absolute values, not increments).
    pub fn set_cache(&self, counters: CacheCounters, entries: usize, bytes: usize) {
        let values = [
            counters.hits,
            counters.misses,
            counters.revalidations,
            counters.evictions,
            entries as u64,
            bytes as u64,
        ];
        for (gauge, n) in self.cache.iter().zip(values) {
            gauge.store(n, Relaxed);
        }
    }

    /// Publishes the access log's line counts (absolute values).
    pub fn set_log(&self, written: u64, dropped: u64) {
        self.log_lines.store(written, Relaxed);
        self.log_dropped.store(dropped, Relaxed);
    }

    /// A consistent-enough copy, for summing.
    pub fn snapshot(&self) -> Counters {
        let load = |a: &AtomicU64| a.load(Relaxed);
        let mut c = Counters::default();
        for (m, row) in self.requests.iter().enumerate() {
            for (s, n) in row.iter().enumerate() {
                c.requests[m][s] = load(n);
            }
        }
        c.body_bytes = load(&self.body_bytes);
        for (i, n) in self.latency.iter().enumerate() {
            c.latency[i] = load(n);
        }
        c.latency_sum_micros = load(&self.latency_sum_micros);
        c.accepted = load(&self.accepted);
        c.refused = load(&self.refused);
        c.accept_errors = load(&self.accept_errors);
        c.sends = load(&self.sends);
        c.enobufs = load(&self.enobufs);
        c.overruns = load(&self.overruns);
        for (i, n) in self.connections.iter().enumerate() {
            c.connections[i] = load(n);
        }
        c.cache_hits = load(&self.cache[0]);
        c.cache_misses = load(&self.cache[1]);
        c.cache_revalidations = load(&self.cache[2]);
        c.cache_evictions = load(&self.cache[3]);
        c.cache_entries = load(&self.cache[4]);
        c.cache_bytes = load(&self.cache[5]);
        c.log_lines = load(&self.log_lines);
        c.log_dropped = load(&self.log_dropped);
        c
    }
}

/// Events counted one by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A connection was accepted.
    Accepted,
    /// A connection was closed at once: the worker was full or draining.
    Refused,
    /// accept failed (EMFILE, ENFILE...); the worker backs off for a tick.
    AcceptError,
    /// A batch of responses was sent completely.
    Sent,
    /// A multishot recv ended because the buffer ring was empty, and was re-armed.
    Enobufs,
    /// A connection was closed for holding more receive buffers than its share.
    Overrun,
}

/// Plain counters: one worker's snapshot, or several summed (what tests and exit read).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Responses finished, by method label and status class.
    pub requests: [[u64; STATUS_CLASSES]; METHOD_LABELS.len()],
    /// Body bytes sent.
    pub body_bytes: u64,
    /// Responses per latency bucket (`LATENCY_BUCKETS_MICROS`, then +Inf).
    pub latency: [u64; LATENCY_BUCKETS_MICROS.len() + 1],
    /// Sum of the latencies, in microseconds.
    pub latency_sum_micros: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed at once because the worker was full or draining.
    pub refused: u64,
    /// Accept errors (EMFILE, ENFILE...), each followed by a one-tick back-off.
    pub accept_errors: u64,
    /// Batches sent completely (one or more responses each).
    pub sends: u64,
    /// Multishot recvs ended by an empty buffer ring and re-armed.
    pub enobufs: u64,
    /// Connections closed for holding more receive buffers than their share while not
    /// reading their responses.
    pub overruns: u64,
    /// Open connections by state (`CONNECTION_STATES`).
    pub connections: [u64; CONNECTION_STATES.len()],
    /// File-cache lookups answered without a system call.
    pub cache_hits: u64,
    /// Paths opened because the cache did not know them.
    pub cache_misses: u64,
    /// Cached answers re-checked after a change or their interval.
    pub cache_revalidations: u64,
    /// Cached answers evicted to stay within the bounds.
    pub cache_evictions: u64,
    /// Answers cached now.
    pub cache_entries: u64,
    /// Bytes the cache holds now.
    pub cache_bytes: u64,
    /// Access-log lines written.
    pub log_lines: u64,
    /// Access-log lines dropped (disk full or failing, or the disk slower than the requests).
    pub log_dropped: u64,
}

impl Counters {
    /// Adds another snapshot.
    pub fn add(&mut self, o: &Counters) {
        for (row, orow) in self.requests.iter_mut().zip(&o.requests) {
            for (n, on) in row.iter_mut().zip(orow) {
                *n += on;
            }
        }
        for (n, on) in self.latency.iter_mut().zip(&o.latency) {
            *n += on;
        }
        for (n, on) in self.connections.iter_mut().zip(&o.connections) {
            *n += on;
        }
        self.body_bytes += o.body_bytes;
        self.latency_sum_micros += o.latency_sum_micros;
        self.accepted += o.accepted;
        self.refused += o.refused;
        self.accept_errors += o.accept_errors;
        self.sends += o.sends;
        self.enobufs += o.enobufs;
        self.overruns += o.overruns;
        self.cache_hits += o.cache_hits;
        self.cache_misses += o.cache_misses;
        self.cache_revalidations += o.cache_revalidations;
        self.cache_evictions += o.cache_evictions;
        self.cache_entries += o.cache_entries;
        self.cache_bytes += o.cache_bytes;
        self.log_lines += o.log_lines;
        self.log_dropped += o.log_dropped;
    }

    /// Responses finished, all methods and statuses.
    pub fn responses(&self) -> u64 {
        self.requests.iter().flatten().sum()
    }
}

/// Every worker's stats and whether the server accepts connections: what `/metrics` and
/// `/health` read.
#[derive(Default)]
pub struct Registry {
    workers: Mutex<Vec<Arc<WorkerStats>>>,
    draining: AtomicBool,
}

impl Registry {
    /// Stats for one more worker.
    pub fn worker(&self) -> Arc<WorkerStats> {
        let stats = Arc::new(WorkerStats::default());
        self.workers.lock().unwrap_or_else(|e| e.into_inner()).push(Arc::clone(&stats));
        stats
    }

    /// Every worker's counters, summed.
    pub fn total(&self) -> Counters {
        let mut total = Counters::default();
        for worker in self.workers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            total.add(&worker.snapshot());
        }
        total
    }

    /// Marks the server as shutting down (health answers 503 from now on).
    pub fn set_draining(&self) {
        self.draining.store(true, Relaxed);
    }

    /// Whether a shutdown began.
    pub fn draining(&self) -> bool {
        self.draining.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_land_in_their_class_method_and_bucket() {
        let stats = WorkerStats::default();
        stats.response(200, method_index(Method::Get), 10, 40, false);
        stats.response(404, method_index(Method::Head), 0, 50, false);
        stats.response(304, method_index(Method::Unknown), 0, 51, true);
        stats.response(200, 0, 5, 20_000_000, false);
        let c = stats.snapshot();
        assert_eq!(c.requests[0][1], 2);
        assert_eq!(c.requests[1][3], 1);
        assert_eq!(c.requests[2][2], 1);
        assert_eq!(c.body_bytes, 15);
        assert_eq!(c.latency[0], 2, "40 and 50 us are in the 50 us bucket");
        assert_eq!(c.latency[1], 1, "51 us is in the 100 us bucket");
        assert_eq!(c.latency[LATENCY_BUCKETS_MICROS.len()], 1, "20 s is in +Inf");
        assert_eq!(c.responses(), 4);
    }

    #[test]
    fn buckets_match_a_plain_scan() {
        let scan = |m: u64| LATENCY_BUCKETS_MICROS.iter().filter(|&&b| m > b).count();
        let mut m = 0u64;
        while m < 40_000_000 {
            for v in [m, m + 1, m.saturating_sub(1)] {
                assert_eq!(latency_bucket(v), scan(v), "{v}");
            }
            m = m * 5 / 4 + 1;
        }
        for &b in &LATENCY_BUCKETS_MICROS {
            assert_eq!(latency_bucket(b), scan(b));
            assert_eq!(latency_bucket(b + 1), scan(b + 1));
        }
        assert_eq!(latency_bucket(u64::MAX), LATENCY_BUCKETS_MICROS.len());
    }
}
