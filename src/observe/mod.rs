//! What the server tells its operator: the access log (`access_log` formats lines, `log_sink`
//! buffers and writes them), counters and gauges (`stats`) exposed in Prometheus format
//! (`prometheus`) with a health check on the admin listener (`admin`), and operating errors
//! on standard error (`errlog`).
//!
//! Every engine reports the same way: `serve` notes each response in its batch
//! (`Batch::annotate`), and when the batch is sent, or its connection ends, the engine hands it
//! to its `Recorder`, which counts each response and logs it with the body bytes that actually
//! left.

pub mod access_log;
pub mod admin;
pub mod errlog;
pub mod log_sink;
pub mod prometheus;
pub mod stats;

use std::sync::Arc;

use crate::batch::Batch;
use access_log::{Line, PeerText};
use log_sink::LogSink;
use stats::WorkerStats;

/// One worker's counting and logging of finished responses.
pub struct Recorder {
    /// This worker's counters.
    pub stats: Arc<WorkerStats>,
    /// Whether several threads share `stats` (the blocking engine): counters then use atomic
    /// additions.
    shared: bool,
}

impl Recorder {
    /// A recorder writing `stats`, shared by several threads if `shared`.
    pub fn new(stats: Arc<WorkerStats>, shared: bool) -> Recorder {
        Recorder { stats, shared }
    }

    /// The responses of `batch` are done (sent, or cut off when the connection ended): count
    /// each, log each (if `log`) with the body bytes that left, and forget them. `now_micros`
    /// is the engine's clock, the one `serve` stamped them with.
    pub fn finish(
        &self,
        batch: &mut Batch,
        peer: &PeerText,
        now_micros: u64,
        log: Option<&mut LogSink>,
    ) {
        let (stats, shared) = (&self.stats, self.shared);
        let Some(log) = log else {
            batch.finish_exchanges(|exchange, body_sent, _| {
                let micros = now_micros.saturating_sub(exchange.served_micros);
                stats.response(exchange.status, exchange.method, body_sent, micros, shared);
            });
            return;
        };
        log.set_time(access_log::now_secs());
        batch.finish_exchanges(|exchange, body_sent, text| {
            let micros = now_micros.saturating_sub(exchange.served_micros);
            stats.response(exchange.status, exchange.method, body_sent, micros, shared);
            let text = text.get();
            log.append(&Line {
                addr: peer.as_bytes(),
                request: text.request,
                status: exchange.status,
                body_bytes: body_sent,
                referer: text.referer,
                user_agent: text.user_agent,
                micros,
            });
        });
    }
}
