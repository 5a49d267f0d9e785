//! loadgen: an HTTP/1.1 keep-alive load generator, as a library (for benches) and a binary.
//!
//! # Layout
//! - `config`: the run configuration and the command line that builds it.
//! - `http`: request bytes built once; an incremental, allocation-free response parser
//!   (Content-Length and chunked bodies).
//! - `stats`: per-thread counters and HdrHistograms, merged at the end; the coordinated-
//!   omission correction.
//! - `worker`: one epoll event loop per thread driving its share of the connections, in
//!   closed-loop (`-c`) or constant-rate (`-R`) mode.
//! - `report`: the merged result, its text and versioned JSON forms, and `merge` of JSON runs.
//! - `hgrm`: HdrHistogram's percentile-distribution text (`--hgrm`).
//! - `output`: result files written atomically (temporary file, then rename).
//! - `plot`: `loadgen plot`, an SVG of runs' percentile spectra and request rates.
//! - `svg`: XML escaping and number formatting for hand-written SVG.
//! - `pool`: a small fixed set of keep-alive connections for criterion benches.

pub mod config;
pub mod hgrm;
pub mod http;
pub mod output;
pub mod plot;
pub mod pool;
pub mod report;
pub mod stats;
pub mod svg;
pub mod worker;

pub use config::Config;
pub use pool::{BatchError, Pool};
pub use report::Report;

/// Runs the load described by `config` and returns the merged report.
pub fn run(config: &Config) -> Result<Report, String> {
    worker::run(config)
}
