//! One integration-test crate (one link, not one per file). Every test starts the real
//! `ringserve` binary on an ephemeral port over a temporary root and speaks raw TCP to it.
//!
//! Modules:
//! - `support`: starting the server, a minimal HTTP/1.1 response reader, test data.
//! - `basics`: keep-alive, HEAD, 404/405/400, HTTP/1.0, `Connection: close`, the CLI.
//! - `pipelining`: many requests per write, requests split over many reads, bodies skipped.
//! - `property`: seeded random and mutated requests, in-process and over TCP.
//! - `soak`: concurrent mixed load checked byte-exact; no descriptor or memory left behind.
//! - `adversarial`: a seeded random mix of hostile clients (bursts, bodies, half-closes,
//!   resets, slow and non-readers, idlers) while files churn, per engine; every response
//!   checked against the versions its file had.
//! - `traversal`: every way of asking for a file outside the root.
//! - `lifecycle`: files changing under the server, graceful shutdown.
//! - `config_file`: `--config FILE`: settings from TOML, overridden by flags, errors by line.
//! - `limits`: every timeout and limit, with small flag values.
//! - `listeners`: several addresses (IPv4 and IPv6), unusable ones, systemd socket activation.
//! - `large`: multi-megabyte bodies byte-exact, clients that reset mid-download.
//! - `engines`: one conformance run against each engine (io_uring and blocking).
//! - `hostile`: clients that never read, truncated and growing files, bodies and half-closes
//!   in a burst, descriptors running out, a busy port; every engine.
//! - `browser`: headless Chromium loads the demo page and decodes the image.
//! - `cache`: the on-demand file cache: a 200,000-file tree at once, changes within a second,
//!   eviction with exact bodies, unservable paths and floods of missing ones.
//! - `observe`: the access log (GoAccess, nginx's escaping, rotation, a full disk), `/health`
//!   and `/metrics` (the Prometheus parser, counts equal to loadgen's), every engine.
//! - `site`: `--header`, `--cache-control`, `--fallback` (with Chromium), `--error-page`,
//!   `--autoindex`, and start-up refusals of bad options.
//! - `semantics`: validators, conditional requests, ranges, precompressed variants, MIME,
//!   strict parsing statuses.

mod adversarial;
mod basics;
mod browser;
mod cache;
mod config_file;
mod engines;
mod hostile;
mod large;
mod lifecycle;
mod limits;
mod listeners;
mod observe;
mod pipelining;
mod property;
mod semantics;
mod site;
mod soak;
mod support;
mod traversal;
