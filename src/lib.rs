//! ringserve: a static-file HTTP/1.1 server whose socket I/O all goes through io_uring.
//!
//! # Layout
//! - `config`: the CLI and the validated `Config`.
//! - `config_file`: `--config FILE` (TOML), turned into flags under the command line's.
//! - `limits`: every bound, with units in names and a line on why.
//! - `listen`: `--addr` values, binding them, sockets passed by systemd.
//! - `http`: sans-I/O HTTP/1.1: request parsing, response heads, the cached Date.
//! - `files`: the on-demand file cache: files read or mapped with precomputed header fields, path
//!   resolution (the traversal policy), the MIME table.
//! - `serve`: request bytes in, queued responses out; shared by every engine.
//! - `batch`: responses queued for one `sendmsg` (heads copied, bodies by reference).
//! - `blocking`: the thread-per-connection baseline engine, same `serve` and `files`.
//! - `uring`: the io_uring engine: the worker loop, ring set-up, buffer ring, slots, tokens.
//! - `epoll`: the readiness engine (edge-triggered epoll per worker), same `serve` and `files`;
//!   what `auto` runs where io_uring is forbidden.
//! - `observe`: the access log, counters, `/health` and `/metrics`, errors on stderr.
//! - `server`: binding listeners, starting and stopping workers.
//!
//! See ARCHITECTURE.md for the life of a request through the ring.

pub mod batch;
pub mod blocking;
pub mod config;
pub mod config_file;
pub mod epoll;
pub mod error;
pub mod files;
pub mod http;
pub mod limits;
pub mod listen;
pub mod observe;
pub mod serve;
pub mod server;
pub mod site;
pub mod timers;
pub mod uring;

pub use config::{Cli, Config, Engine};
pub use error::Error;
pub use server::{Server, Stopper};
