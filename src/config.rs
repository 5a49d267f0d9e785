//! Command-line configuration: parsed and validated once at start-up, then immutable. This is
//! the only module that reads argv.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::limits;
use crate::listen::ListenSpec;
use crate::observe::access_log::LogFormat;

/// A static-file HTTP/1.1 server whose socket I/O all goes through io_uring.
#[derive(Parser, Debug, Clone)]
#[command(name = "ringserve", version, about, long_about = None)]
pub struct Cli {
    /// Directory to serve.
    #[arg(long, default_value = "static", value_name = "DIR")]
    pub root: PathBuf,

    /// Address to listen on; repeat it for several (every worker accepts on all of them).
    /// IPv6 in brackets: `[::]:8000` (IPv6 only; add `0.0.0.0:8000` for IPv4 too), `[::1]:8000`.
    /// Port 0 picks a free port (printed on start). `systemd` takes every socket systemd's
    /// socket activation passed in (LISTEN_FDS), `systemd:N` the N-th counting from 0, and
    /// `systemd:NAME` the one with that FileDescriptorName=.
    #[arg(long, default_value = "127.0.0.1:8000", value_name = "HOST:PORT|systemd[:N]",
          action = clap::ArgAction::Append)]
    pub addr: Vec<ListenSpec>,

    /// Read settings from this TOML file: top-level `key = value` lines named like the long
    /// flags (`access-log` or `access_log`): `root = "/srv/www"`, `addr = ["0.0.0.0:80",
    /// "[::]:80"]` (a list for a repeatable flag), `threads = 4`, `warm = true` (a switch).
    /// Flags given on the command line override the file; a repeatable one replaces its list.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// I/O engine: `auto` (io_uring, or epoll with a warning where a seccomp profile or
    /// sysctl forbids io_uring), `uring` (one io_uring per worker; refuses to start without
    /// it), `epoll` (edge-triggered epoll per worker) or `blocking` (a thread per connection,
    /// for comparison).
    #[arg(long, value_enum, default_value_t = Engine::Auto)]
    pub engine: Engine,

    /// Worker threads, each with its own ring and listener [default: available cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// Seconds to receive a complete request head before answering 408 and closing.
    #[arg(long, default_value_t = limits::HEADER_TIMEOUT_SECS, value_name = "SECS",
          value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub header_timeout: u32,

    /// Seconds an idle keep-alive connection stays open.
    #[arg(long, default_value_t = limits::KEEPALIVE_TIMEOUT_SECS, value_name = "SECS",
          value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub keepalive_timeout: u32,

    /// Seconds a response may make no progress (client not reading) before the connection drops.
    #[arg(long, default_value_t = limits::SEND_TIMEOUT_SECS, value_name = "SECS",
          value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub send_timeout: u32,

    /// Requests served on one keep-alive connection before it is closed.
    #[arg(long, default_value_t = limits::KEEPALIVE_REQUESTS_MAX, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub keepalive_requests: u32,

    /// Open connections per worker; connections beyond it are closed at once.
    #[arg(long, default_value_t = limits::CONNECTIONS_PER_WORKER_MAX, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=limits::CONNECTIONS_PER_WORKER_MAX as i64))]
    pub max_connections: u32,

    /// Largest request head in bytes (request line + headers); larger gets 431.
    #[arg(long, default_value_t = limits::REQUEST_HEAD_BYTES_MAX as u32, value_name = "BYTES",
          value_parser = clap::value_parser!(u32).range(256..=limits::REQUEST_HEAD_BYTES_MAX as i64))]
    pub max_header_bytes: u32,

    /// Most header fields per request; more gets 431.
    #[arg(long, default_value_t = limits::HEADER_COUNT_MAX as u32, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=limits::HEADER_COUNT_MAX as i64))]
    pub max_headers: u32,

    /// Milliseconds a cached file (or a cached "not found") is served before it is checked
    /// again, for paths inotify does not watch (through a symbolic link, past the watch limit,
    /// or with --no-watch), so changes show within this time; watched paths are re-checked when
    /// an event says they changed. 0 never re-checks and does not watch (immutable content).
    #[arg(long, alias = "watch-interval", default_value_t = limits::REVALIDATE_MILLIS,
          value_name = "MILLIS", value_parser = clap::value_parser!(u64).range(0..=86_400_000u64))]
    pub revalidate_interval: u64,

    /// Most paths the file cache holds, for all workers together (files, directories and
    /// paths that do not exist). Files larger than 16 KiB also keep a descriptor and a mapping:
    /// at most half the descriptor limit of them (and 32,768) stay open.
    #[arg(long, default_value_t = limits::CACHE_ENTRIES, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=limits::CACHE_ENTRIES_MAX))]
    pub cache_entries: u64,

    /// Most memory the file cache holds, in MiB, for all workers together: bodies read into
    /// memory, the part of mapped bodies sent from the mapping, and header fields.
    #[arg(long, default_value_t = limits::CACHE_MIB, value_name = "MIB",
          value_parser = clap::value_parser!(u64).range(1..=1u64 << 20))]
    pub cache_mib: u64,

    /// Do not watch directories with inotify; re-check every cached path after
    /// --revalidate-interval instead (for network filesystems, whose remote changes inotify
    /// does not see). Watching is also skipped with --revalidate-interval 0.
    #[arg(long)]
    pub no_watch: bool,

    /// Walk the root at start-up and fill the cache up to its bounds (for benchmarks and small
    /// sites); without it, files are found when first requested.
    #[arg(long)]
    pub warm: bool,

    /// Write an access log to this file (appended; `-` for standard output): one line per
    /// response, in nginx's `combined` format unless --access-log-format says otherwise.
    /// SIGUSR1 reopens the file (for logrotate). Off by default.
    #[arg(long, value_name = "PATH")]
    pub access_log: Option<PathBuf>,

    /// The access log's line format: `combined` (nginx's, byte for byte) or `json` (one object
    /// per line, with the request's duration).
    #[arg(long, value_enum, default_value_t = LogFormat::Combined, value_name = "FORMAT")]
    pub access_log_format: LogFormat,

    /// Answer `GET /health` and `GET /metrics` (Prometheus) on this address of their own.
    /// Off by default, so no path of the served site is taken.
    #[arg(long, value_name = "HOST:PORT")]
    pub admin_addr: Option<SocketAddr>,

    /// Add a header to every response, e.g. 'X-Content-Type-Options: nosniff' (repeatable;
    /// for security headers, CORS and the like).
    #[arg(long = "header", value_name = "'NAME: VALUE'")]
    pub header: Vec<String>,

    /// Cache-Control for files whose name (or, for a glob with a /, path from the root)
    /// matches: 'GLOB[,GLOB...]=VALUE', e.g. '*.css,*.js=public, max-age=31536000, immutable'
    /// (repeatable; the first matching rule wins).
    #[arg(long, value_name = "'GLOBS=VALUE'")]
    pub cache_control: Vec<String>,

    /// Answer a GET or HEAD for a missing path with this file and status 200 (single-page
    /// apps), unless the path's last segment has an extension (assets stay 404).
    #[arg(long, value_name = "/PATH")]
    pub fallback: Option<String>,

    /// Serve a file of the site as the body of an error, with the error's status, e.g.
    /// '404=/404.html' (repeatable, one per status).
    #[arg(long, value_name = "STATUS=/PATH")]
    pub error_page: Vec<String>,

    /// List the files of a directory that has no index.html (HTML, or JSON with
    /// 'Accept: application/json'); names starting with a dot are left out.
    #[arg(long)]
    pub autoindex: bool,

    /// With --autoindex, list names starting with a dot too (implies --autoindex).
    #[arg(long)]
    pub autoindex_hidden: bool,

    /// Seconds that SIGINT/SIGTERM waits for in-flight responses before exiting.
    #[arg(long, default_value_t = 10, value_name = "SECS",
          value_parser = clap::value_parser!(u32).range(0..=3600))]
    pub shutdown_timeout: u32,
}

/// The I/O engines.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// io_uring where the kernel allows it, else epoll.
    Auto,
    /// Every socket operation through a per-thread io_uring.
    Uring,
    /// Readiness-based: an edge-triggered epoll instance per worker thread.
    Epoll,
    /// One thread per connection with blocking std::net I/O.
    Blocking,
}

impl Engine {
    /// The name used on the command line and in the banner.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Auto => "auto",
            Engine::Uring => "io_uring",
            Engine::Epoll => "epoll",
            Engine::Blocking => "blocking",
        }
    }
}

/// Validated server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Canonical path of the directory served.
    pub root: PathBuf,
    /// Where to listen: addresses every worker binds (with SO_REUSEPORT), or sockets systemd
    /// passed in.
    pub addrs: Vec<ListenSpec>,
    /// The I/O engine.
    pub engine: Engine,
    /// Number of workers, each with its own ring.
    pub threads: usize,
    /// Time allowed to receive a complete request head.
    pub header_timeout: Duration,
    /// Time an idle keep-alive connection is kept.
    pub keepalive_timeout: Duration,
    /// Time a response may make no progress.
    pub send_timeout: Duration,
    /// Requests per keep-alive connection.
    pub keepalive_requests: u32,
    /// Open connections per worker.
    pub max_connections: u32,
    /// Grace period for in-flight responses on shutdown.
    pub shutdown_timeout: Duration,
    /// Request-head limits.
    pub parse_limits: crate::http::ParseLimits,
    /// File cache bounds per worker and freshness.
    pub cache: crate::files::CacheLimits,
    /// Fill the cache at start-up.
    pub warm: bool,
    /// The access log's file (`-`: standard output) and format.
    pub access_log: Option<(PathBuf, LogFormat)>,
    /// Where `/health` and `/metrics` are answered.
    pub admin_addr: Option<SocketAddr>,
    /// Headers, Cache-Control rules, fallback, error pages and listings.
    pub site: std::sync::Arc<crate::site::Site>,
}

impl Config {
    /// Validates parsed flags: the root must be a readable directory.
    pub fn from_cli(cli: Cli) -> Result<Config, crate::Error> {
        let root = cli
            .root
            .canonicalize()
            .map_err(|e| crate::Error::Root { path: cli.root.clone(), source: e })?;
        if !root.is_dir() {
            return Err(crate::Error::Root {
                path: cli.root,
                source: std::io::Error::other("not a directory"),
            });
        }
        crate::listen::check_specs(&cli.addr)?;
        let options = crate::site::SiteOptions {
            headers: cli.header.clone(),
            cache_control: cli.cache_control.clone(),
            fallback: cli.fallback.clone(),
            error_pages: cli.error_page.clone(),
            autoindex: cli.autoindex,
            autoindex_hidden: cli.autoindex_hidden,
        };
        let site = crate::site::Site::new(&options, &root).map_err(crate::Error::Usage)?;
        let threads = match cli.threads {
            Some(n) => usize::from(n),
            None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        };
        Ok(Config {
            root,
            addrs: cli.addr,
            engine: cli.engine,
            threads,
            header_timeout: Duration::from_secs(cli.header_timeout.into()),
            keepalive_timeout: Duration::from_secs(cli.keepalive_timeout.into()),
            send_timeout: Duration::from_secs(cli.send_timeout.into()),
            keepalive_requests: cli.keepalive_requests,
            max_connections: cli.max_connections,
            shutdown_timeout: Duration::from_secs(cli.shutdown_timeout.into()),
            // The bounds are for the whole server; each worker owns its share.
            cache: crate::files::CacheLimits {
                entries: (cli.cache_entries as usize / threads).max(1),
                bytes: ((cli.cache_mib as usize) << 20) / threads,
                // Set from the descriptor limit at start-up (`Server::start`).
                open_files: limits::CACHE_OPEN_FILES_MAX as usize / threads,
                revalidate_ms: (cli.revalidate_interval > 0).then_some(cli.revalidate_interval),
                watch: !cli.no_watch,
            },
            warm: cli.warm,
            access_log: cli.access_log.map(|path| (path, cli.access_log_format)),
            admin_addr: cli.admin_addr,
            site: std::sync::Arc::new(site),
            parse_limits: crate::http::ParseLimits {
                head_bytes_max: cli.max_header_bytes as usize,
                header_count_max: cli.max_headers as usize,
            },
        })
    }

    /// Defaults for serving `root` on `addr`, as the CLI would give them (used by tests and
    /// benches that start a server in-process).
    pub fn new(root: impl Into<PathBuf>, addr: SocketAddr) -> Result<Config, crate::Error> {
        let root: PathBuf = root.into();
        let addr_text = addr.to_string();
        let root_text = root.to_string_lossy().into_owned();
        let cli = Cli::try_parse_from(["ringserve", "--root", &root_text, "--addr", &addr_text])
            .map_err(|e| crate::Error::Usage(e.to_string()))?;
        Config::from_cli(cli)
    }
}
