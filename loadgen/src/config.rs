//! The run configuration and the command line that builds it (wrk-like flags).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;

/// Latest allowed coordinated start: a day ahead. Later is most likely a unit mistake
/// (seconds or microseconds given as milliseconds), and would leave loadgen idle for days.
pub const START_AHEAD_MAX_SECS: u64 = 86_400;

/// Default target when no URL is given.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8000/";

/// Command-line flags.
#[derive(Parser, Debug)]
#[command(name = "loadgen", version, about = "HTTP/1.1 keep-alive load generator", long_about = None)]
pub struct Cli {
    /// URLs to request, round-robin (default http://127.0.0.1:8000/); all on one host.
    pub urls: Vec<String>,
    /// Concurrent keep-alive connections.
    #[arg(short = 'c', long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub connections: u32,
    /// Threads, each with its own event loop [default: available cores].
    #[arg(short = 't', long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// Test duration, e.g. 10s, 500ms, 2m (ignored with -n).
    #[arg(short = 'd', long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Total requests to send instead of a duration.
    #[arg(short = 'n', long, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,
    /// Extra request header, "Name: value" (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// A request unanswered for this long counts as a timeout and its connection is replaced.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Requests kept in flight per connection (HTTP/1.1 pipelining).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub pipeline: u32,
    /// Constant request rate (requests/s over all connections); latency is then measured from
    /// each request's intended send time.
    #[arg(short = 'R', long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,
    /// Run this long first and discard its statistics.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// File with one URL path (or full URL) per line, requested round-robin.
    #[arg(long)]
    pub paths_file: Option<PathBuf>,
    /// Print the report as JSON (versioned schema) instead of text.
    #[arg(long)]
    pub json: bool,
    /// With --paths-file, list every URL in the JSON (default: the first few, the file name
    /// and the count).
    #[arg(long)]
    pub json_urls: bool,
    /// Print the full latency percentile spectrum.
    #[arg(long)]
    pub latency: bool,
    /// Write the latency distribution to FILE in HdrHistogram's percentile-distribution text
    /// (.hgrm, milliseconds); with -R also FILE's stem + .service-time/.send-lag beside it.
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
    /// Begin the measured window at this wall-clock instant (Unix time in milliseconds):
    /// connect and warm up before it, so runs on several machines cover the same time.
    #[arg(long, value_name = "UNIX_TIME_MS", conflicts_with = "start_in")]
    pub start_at: Option<f64>,
    /// Begin the measured window this long from now (like --start-at now + DUR).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub start_in: Option<Duration>,
    /// A name for this run, kept in the JSON report (`loadgen plot` uses it as the legend).
    #[arg(long)]
    pub label: Option<String>,
    /// Compare every response body with this file.
    #[arg(long)]
    pub verify_file: Option<PathBuf>,
}

/// A validated run configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Server address.
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// Paths requested round-robin.
    pub paths: Vec<String>,
    /// Connections.
    pub connections: u32,
    /// Threads.
    pub threads: u32,
    /// Measured duration (after warm-up), unless `requests` is set.
    pub duration: Duration,
    /// Total requests, instead of a duration.
    pub requests: Option<u64>,
    /// Extra header lines.
    pub headers: Vec<String>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Requests in flight per connection.
    pub pipeline: u32,
    /// Constant rate, requests/s.
    pub rate: Option<u64>,
    /// Warm-up period.
    pub warmup: Duration,
    /// Expected body for every response.
    pub verify_body: Option<Vec<u8>>,
    /// Show the live progress line (only when stderr is a terminal).
    pub progress: bool,
    /// Where the paths came from, when `--paths-file` was given.
    pub paths_file: Option<PathsFile>,
    /// List every URL in the JSON report even when they came from a paths file.
    pub json_urls: bool,
    /// The run's name, for plots.
    pub label: Option<String>,
    /// Coordinated start: the wall-clock instant the measured window begins.
    pub start_at: Option<SystemTime>,
}

/// The paths file a run read its paths from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PathsFile {
    /// The file as named on the command line.
    pub name: String,
    /// Paths read from it.
    pub paths: u64,
}

impl Config {
    /// A closed-loop configuration for `url` with defaults (used by tests and benches).
    pub fn new(url: &str, connections: u32) -> Result<Config, String> {
        let cli = Cli::try_parse_from(["loadgen", url, "-c", &connections.to_string(), "-t", "1"])
            .map_err(|e| e.to_string())?;
        let mut config = Config::from_cli(&cli)?;
        config.progress = false;
        Ok(config)
    }

    /// Validates flags into a configuration.
    pub fn from_cli(cli: &Cli) -> Result<Config, String> {
        let mut urls = cli.urls.clone();
        let mut paths_file = None;
        if let Some(file) = &cli.paths_file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read paths file {}: {e}", file.display()))?;
            let base = urls.first().cloned().unwrap_or_else(|| DEFAULT_URL.to_string());
            let (authority, _) = split_url(&base)?;
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                if line.starts_with("http://") || line.starts_with("https://") {
                    urls.push(line.to_string());
                } else {
                    urls.push(format!("http://{authority}/{}", line.trim_start_matches('/')));
                }
            }
            let read = urls.len() - cli.urls.len();
            if read == 0 {
                return Err(format!("paths file {} has no paths", file.display()));
            }
            paths_file = Some(PathsFile { name: file.display().to_string(), paths: read as u64 });
            if urls.len() > 1 && !cli.urls.is_empty() && cli.urls.len() == 1 {
                urls.remove(0); // the positional URL only named the host
            }
        }
        if urls.is_empty() {
            urls.push(DEFAULT_URL.to_string());
        }
        let mut authority = None;
        let mut paths = Vec::new();
        for url in &urls {
            let (a, path) = split_url(url)?;
            if authority.as_ref().is_some_and(|first: &String| first != &a) {
                return Err(format!("all URLs must name the same host: {url}"));
            }
            authority = Some(a);
            paths.push(path);
        }
        let host = authority.unwrap_or_default();
        let addr = resolve(&host)?;
        for header in &cli.headers {
            let valid = header.split_once(':').is_some_and(|(n, _)| {
                !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic() && b != b':')
            });
            if !valid || header.contains('\r') || header.contains('\n') {
                return Err(format!("bad header {header:?}: expected \"Name: value\""));
            }
        }
        let threads = cli.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)
        });
        let threads = threads.min(cli.connections);
        let verify_body = match &cli.verify_file {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| format!("cannot read verify file {}: {e}", path.display()))?,
            ),
            None => None,
        };
        if cli.duration.is_zero() && cli.requests.is_none() {
            return Err("duration must be more than 0".into());
        }
        if cli.timeout.is_zero() {
            return Err("timeout must be more than 0".into());
        }
        Ok(Config {
            addr,
            host,
            paths,
            connections: cli.connections,
            threads,
            duration: cli.duration,
            requests: cli.requests,
            headers: cli.headers.clone(),
            timeout: cli.timeout,
            pipeline: cli.pipeline,
            rate: cli.rate,
            warmup: cli.warmup,
            verify_body,
            progress: true,
            paths_file,
            json_urls: cli.json_urls,
            label: cli.label.clone(),
            start_at: start_at(cli)?,
        })
    }
}

/// The coordinated start instant, checked: not in the past (warm-up included), and at most
/// `START_AHEAD_MAX_SECS` ahead.
fn start_at(cli: &Cli) -> Result<Option<SystemTime>, String> {
    let now = SystemTime::now();
    let (at, flag) = match (cli.start_at, cli.start_in) {
        (Some(ms), _) => {
            if !ms.is_finite() || ms < 0.0 {
                return Err(format!("--start-at {ms}: expected Unix time in milliseconds"));
            }
            (UNIX_EPOCH + Duration::from_secs_f64(ms / 1000.0), format!("--start-at {ms}"))
        }
        (None, Some(d)) => (now + d, format!("--start-in {d:?}")),
        (None, None) => return Ok(None),
    };
    let ahead = match at.duration_since(now) {
        Ok(ahead) => ahead,
        Err(e) => {
            return Err(format!(
                "{flag} is {:.3} s in the past (now is {} ms)",
                e.duration().as_secs_f64(),
                unix_ms(now)
            ))
        }
    };
    if ahead < cli.warmup {
        return Err(format!(
            "{flag} is {:.3} s ahead, less than the --warmup of {:.3} s that must run before it",
            ahead.as_secs_f64(),
            cli.warmup.as_secs_f64()
        ));
    }
    if ahead > Duration::from_secs(START_AHEAD_MAX_SECS) {
        return Err(format!(
            "{flag} is {:.0} s ahead, more than a day (now is {} ms; milliseconds expected)",
            ahead.as_secs_f64(),
            unix_ms(now)
        ));
    }
    Ok(Some(at))
}

/// Unix time in milliseconds, with sub-millisecond precision.
pub fn unix_ms(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// `http://host:port/path` to (`host:port`, `/path`).
fn split_url(url: &str) -> Result<(String, String), String> {
    if url.starts_with("https://") {
        return Err(format!("{url}: https is not supported (plain http:// only)"));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: expected http://HOST[:PORT]/PATH"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(format!("{url}: no host"));
    }
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!("{url}: the path has spaces or control characters"));
    }
    Ok((authority.to_string(), path.to_string()))
}

fn resolve(authority: &str) -> Result<SocketAddr, String> {
    let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {authority}"))
}

/// `10s`, `500ms`, `2m`, `1h`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 =
        number.parse().map_err(|_| format!("bad duration {text:?} (try 10s, 500ms, 2m)"))?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "us" => value / 1_000_000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("bad duration unit in {text:?} (use ms, s, m or h)")),
    };
    if !secs.is_finite() || !(0.0..=1e7).contains(&secs) {
        return Err(format!("bad duration {text:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(split_url("http://h:1/a?b").unwrap(), ("h:1".into(), "/a?b".into()));
        assert_eq!(split_url("http://h").unwrap(), ("h".into(), "/".into()));
        assert!(split_url("https://h/").is_err());
        assert!(split_url("ftp://h/").is_err());
    }
}
