//! Adversarial mix: a seeded random mix of hostile and unlucky clients (pipelined bursts,
//! request bodies, half-closes, resets, slow readers, non-readers, idle connections) runs
//! against the real binary, once per engine, beside a normal client and a thread that churns
//! the served files (truncate and grow in place, replace by rename, delete, re-create).
//!
//! Every churned file always holds a prefix of a deterministic byte stream of its current
//! version's seed, and every seed a file ever had is recorded before the file shows it, so any
//! response body can be checked against the versions the file has had. A response is correct
//! iff it is well framed, has an allowed status, and its body is that version's stream at the
//! right offset, except for zeros at or beyond a length the version was truncated to in place
//! (the kernel zeroes the rest of the page cache folio holding a new end, and a body being
//! sent from the mapping or from the page cache (sendfile) carries them: counted as "torn").
//!
//! A connection may end early (FIN or reset, anywhere) only while a GET of a file that was
//! truncated in place while mapped is pending in it: the send of that body fails, and since
//! the kernel copies a send in chunks and drops a chunk that faults whole, the ends of the
//! responses batched before it can be lost with it. Half the bursts and half-closes ask only
//! for files that are always copied, so a lost response there is always a failure.
//!
//! Afterwards the server must be alive and serving, its descriptors and memory back near
//! their start-up values, and it must not burn CPU while only non-readers are connected.
//!
//! Seeds: one base seed per run (`BASE_SEED`, or `RINGSERVE_MIX_SEED` to replay or explore);
//! each client thread and the churn thread derive their own seed from it and their index, so a
//! run is a fixed schedule of choices (the interleaving still depends on timing). Duration:
//! `RINGSERVE_MIX_SECS` (default 8 s) per engine; the two engine runs take turns.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::support::*;

/// Base seed of a run, unless `RINGSERVE_MIX_SEED` says otherwise.
const BASE_SEED: u64 = 0x6d69_785f_5eed_0001;

/// Hostile client threads running at once, each running one behaviour after another.
const BEHAVIOUR_THREADS: usize = 16;

/// Timeouts short enough that connections left stuck are reclaimed within a run.
const SERVER_FLAGS: [&str; 8] =
    ["--threads", "1", "--send-timeout", "3", "--keepalive-timeout", "5", "--header-timeout", "5"];

/// The server copies files up to this size and maps larger ones (and sends bodies of 24 KiB
/// and more from the file with sendfile): only a mapped file truncated in place can cut a
/// response short.
const COPIED_FILE_BYTES_MAX: u64 = 16 * 1024;

/// Descriptors the server may hold beyond its start-up count once every client is gone.
const FDS_MARGIN: usize = 3;

/// A normal client's fetch slower than this counts as starvation.
const FETCH_SECS_MAX: u64 = 5;

/// Failures printed as they happen (all are counted).
const FAILURES_PRINTED: usize = 30;

/// A churned file: name, initial size, and the start of its Content-Type.
struct Churned {
    name: &'static str,
    base: u64,
    content_type: &'static str,
}

/// Web-like sizes on both sides of the copy (16 KiB) and sendfile (24 KiB) thresholds. A file
/// stays within 4 x its initial size, so the two small ones are always copied.
const CHURNED: [Churned; 5] = [
    Churned { name: "tiny.txt", base: 100, content_type: "text/plain" },
    Churned { name: "style.css", base: 2 * 1024, content_type: "text/css" },
    Churned { name: "app.js", base: 20 * 1024, content_type: "text/javascript" },
    Churned { name: "photo.jpg", base: 300 * 1024, content_type: "image/jpeg" },
    Churned { name: "video.mp4", base: 2 * 1024 * 1024, content_type: "video/mp4" },
];

/// Index in `CHURNED` of the 300 KiB and the 2 MiB file.
const PHOTO: usize = 3;
const VIDEO: usize = 4;

/// A fixed 1 MiB file only the end-of-run non-reader probe asks for (and a 20 KiB one).
const PROBE_BYTES: usize = 1 << 20;

fn size_cap(file: usize) -> u64 {
    (CHURNED[file].base * 4).min(4 << 20)
}

// ---- streams and versions ---------------------------------------------------------------

/// Word `index` of the stream of `seed` (splitmix64 of the pair): random access, so any
/// range of any version can be produced or checked without the bytes before it.
fn stream_word(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `stream(seed)[from..from + len]`.
fn stream_bytes(seed: u64, from: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut pos = from;
    while out.len() < len {
        let word = stream_word(seed, pos / 8).to_le_bytes();
        let start = (pos % 8) as usize;
        let take = (8 - start).min(len - out.len());
        out.extend_from_slice(&word[start..start + take]);
        pos += take as u64;
    }
    out
}

/// One inode a churned file had: its stream's seed, and the lengths it was truncated to.
#[derive(Clone)]
struct Version {
    seed: u64,
    truncations: Vec<u64>,
}

impl Version {
    /// Whether a body may carry a zero at `pos`: truncating a file zeroes the rest of the
    /// page cache folio holding the new end (a large folio can span many pages) and the rest
    /// of a mapping's last page, and a body sent from the mapping or with sendfile from the
    /// page cache meanwhile carries those zeros, even once the file has grown back.
    fn zeroable(&self, pos: u64) -> bool {
        self.truncations.iter().any(|&len| len <= pos)
    }

    /// Whether `body` is this version's stream from `off`: `Ok(false)` exactly, `Ok(true)`
    /// with zeros only where a truncation zeroed a page tail (torn), else `Err(index)` of the
    /// first body byte that differs.
    fn compare(&self, off: u64, body: &[u8]) -> Result<bool, usize> {
        let mut torn = false;
        let mut done = 0;
        while done < body.len() {
            let pos = off + done as u64;
            let word = stream_word(self.seed, pos / 8).to_le_bytes();
            let start = (pos % 8) as usize;
            let take = (8 - start).min(body.len() - done);
            let (got, want) = (&body[done..done + take], &word[start..start + take]);
            if got != want {
                for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
                    if g != w {
                        if g != 0 || !self.zeroable(pos + i as u64) {
                            return Err(done + i);
                        }
                        torn = true;
                    }
                }
            }
            done += take;
        }
        Ok(torn)
    }
}

/// What the churn thread did to one file, recorded before it is visible.
#[derive(Default)]
struct FileLog {
    versions: Vec<Version>,
    /// In-place truncations of the file while it was larger than the copy threshold.
    mapped_truncations: u64,
}

// ---- the random generator ----------------------------------------------------------------

/// xorshift64.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(stream_word(seed, 0) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
}

// ---- requests ----------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Method {
    Get,
    Head,
    Post,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    /// `/index.html`: fixed, never churned, must always be served whole.
    Index,
    /// A churned file, by index in `CHURNED`.
    File(usize),
}

/// A `Range` header's one byte range.
#[derive(Clone, Copy, Debug)]
enum Span {
    /// `bytes=first-last`.
    FromTo(u64, u64),
    /// `bytes=-n`: the last n bytes, wherever the end of the file the server sees is.
    Suffix(u64),
}

impl Span {
    /// The bytes `first..=last` this asks for of a file of `total` bytes; `None` if none.
    fn resolve(self, total: u64) -> Option<(u64, u64)> {
        match self {
            Span::FromTo(first, last) => (first < total).then(|| (first, last.min(total - 1))),
            Span::Suffix(n) => (n > 0 && total > 0).then(|| (total - n.min(total), total - 1)),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Req {
    method: Method,
    target: Target,
    range: Option<Span>,
    /// `Content-Length` of a body sent after the head.
    body_len: usize,
}

impl Req {
    fn get(target: Target) -> Req {
        Req { method: Method::Get, target, range: None, body_len: 0 }
    }

    fn path(&self) -> &'static str {
        match self.target {
            Target::Index => "/index.html",
            Target::File(f) => match f {
                0 => "/tiny.txt",
                1 => "/style.css",
                2 => "/app.js",
                3 => "/photo.jpg",
                _ => "/video.mp4",
            },
        }
    }

    fn head_text(&self) -> String {
        let method = match self.method {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
        };
        let mut text = format!("{method} {} HTTP/1.1\r\nHost: mix\r\n", self.path());
        match self.range {
            Some(Span::FromTo(first, last)) => {
                text.push_str(&format!("Range: bytes={first}-{last}\r\n"));
            }
            Some(Span::Suffix(n)) => text.push_str(&format!("Range: bytes=-{n}\r\n")),
            None => {}
        }
        if self.body_len > 0 {
            text.push_str(&format!("Content-Length: {}\r\n", self.body_len));
        }
        text.push_str("\r\n");
        text
    }

    /// The request on one line, for messages.
    fn describe(&self) -> String {
        self.head_text().trim_end().replace("\r\nHost: mix", "").replace("\r\n", ", ")
    }
}

/// A target; `small_only` keeps to files always copied (never cut short), so that any early
/// end of the connection is a failure.
fn random_target(rng: &mut Rng, small_only: bool) -> Target {
    if small_only {
        return match rng.below(3) {
            0 => Target::Index,
            n => Target::File(n as usize - 1),
        };
    }
    match rng.below(100) {
        0..=19 => Target::Index,
        20..=39 => Target::File(0),
        40..=59 => Target::File(1),
        60..=79 => Target::File(2),
        80..=91 => Target::File(PHOTO),
        _ => Target::File(VIDEO),
    }
}

/// A range around the file's usual size, sometimes beyond its current end; often short (up
/// to 2 KiB: such bodies are copied behind the head in user space), often a suffix (the end
/// of the file as the server knows it: after a truncation, bytes that are gone).
fn random_range(file: usize, rng: &mut Rng) -> Span {
    let base = CHURNED[file].base;
    let len = if rng.chance(50) { rng.range(1, 2048) } else { 1 + rng.below(base / 2) }
        .clamp(1, 256 * 1024);
    if rng.chance(40) {
        return Span::Suffix(len);
    }
    let first = rng.below(base * 3 / 2 + 1);
    Span::FromTo(first, first + len - 1)
}

/// A GET (sometimes of a range, mostly for the 2 MiB file) or a HEAD.
fn random_request(rng: &mut Rng, small_only: bool) -> Req {
    let target = random_target(rng, small_only);
    let method = if rng.chance(15) { Method::Head } else { Method::Get };
    let range = match target {
        Target::File(f)
            if method == Method::Get && rng.chance(if f == VIDEO { 75 } else { 30 }) =>
        {
            Some(random_range(f, rng))
        }
        _ => None,
    };
    Req { method, target, range, body_len: 0 }
}

// ---- reading responses -------------------------------------------------------------------

/// How reading one response went.
enum Got {
    Whole(Response),
    /// The connection ended inside the body: the head, and the body bytes that came.
    Cut {
        response: Response,
        reset: bool,
    },
    /// The connection ended outside a body: at a response boundary (`head_bytes == 0`) or
    /// inside a head.
    Ended {
        reset: bool,
        head_bytes: usize,
    },
    /// Not HTTP/1.1 framing, or no byte for the read timeout.
    Broken(String),
}

/// Largest response head accepted before calling it garbage.
const RESPONSE_HEAD_BYTES_MAX: usize = 16 * 1024;

fn is_reset(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted)
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn preview(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(120)];
    format!("{:?}{}", String::from_utf8_lossy(shown), if bytes.len() > 120 { "..." } else { "" })
}

/// Reads one response; unlike `support::read_response` it tells an end of the connection
/// (inside a body, a head, or between responses; by FIN or by reset) from garbage.
fn read_one(reader: &mut impl BufRead, head_only: bool) -> Got {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let room = (RESPONSE_HEAD_BYTES_MAX + 1 - head.len()) as u64;
        match (&mut *reader).take(room).read_until(b'\n', &mut head) {
            Ok(0) => return Got::Ended { reset: false, head_bytes: head.len() },
            Ok(_) => {}
            Err(e) if is_reset(&e) => return Got::Ended { reset: true, head_bytes: head.len() },
            Err(e) if is_timeout(&e) => {
                return Got::Broken(format!(
                    "no response byte for {IO_TIMEOUT_SECS} s after {} head bytes {} (stall)",
                    head.len(),
                    preview(&head)
                ))
            }
            Err(e) => return Got::Broken(format!("read error in a head: {e}")),
        }
        if head.len() > RESPONSE_HEAD_BYTES_MAX {
            return Got::Broken(format!("a head over 16 KiB: {}", preview(&head)));
        }
        let line = &head[before..];
        if line.ends_with(b"\n") && !line.ends_with(b"\r\n") {
            return Got::Broken(format!("a head line not ending in CRLF: {}", preview(&head)));
        }
        if line == b"\r\n" {
            break;
        }
    }
    let Ok(text) = String::from_utf8(head) else {
        return Got::Broken("a head that is not UTF-8".into());
    };
    let status = text.strip_prefix("HTTP/1.1 ").and_then(|rest| {
        let code = rest.get(..3).filter(|c| c.bytes().all(|b| b.is_ascii_digit()))?;
        rest[3..].starts_with(' ').then(|| code.parse::<u16>().ok()).flatten()
    });
    let Some(status) = status else {
        return Got::Broken(format!("not an HTTP/1.1 status line: {}", preview(text.as_bytes())));
    };
    let mut response = Response { status, head: text, body: Vec::new() };
    let len = match response.header("content-length").map(str::parse::<u64>) {
        Some(Ok(len)) if len <= 64 << 20 => len,
        _ => {
            return Got::Broken(format!(
                "no valid Content-Length in {}",
                preview(response.head.as_bytes())
            ))
        }
    };
    if head_only {
        return Got::Whole(response);
    }
    let mut body = Vec::with_capacity(len.min(8 << 20) as usize);
    let result = (&mut *reader).take(len).read_to_end(&mut body);
    let got = body.len();
    response.body = body;
    match result {
        Ok(_) if got as u64 == len => Got::Whole(response),
        Ok(_) => Got::Cut { response, reset: false },
        Err(e) if is_reset(&e) => Got::Cut { response, reset: true },
        Err(e) if is_timeout(&e) => Got::Broken(format!(
            "{got} of {len} body bytes (status {status}), then nothing for {IO_TIMEOUT_SECS} s \
             (stall)"
        )),
        Err(e) => Got::Broken(format!("read error after {got} of {len} body bytes: {e}")),
    }
}

/// A reader that takes small pieces with pauses and gives up (reports EOF, and says so) once
/// its time is up.
struct Throttled {
    stream: TcpStream,
    rng: Rng,
    until: Instant,
    reads: u32,
    gave_up: bool,
}

impl Read for Throttled {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.gave_up || Instant::now() >= self.until || self.reads >= 2000 {
            self.gave_up = true;
            return Ok(0);
        }
        self.reads += 1;
        std::thread::sleep(self.rng.millis(1, 20));
        let n = buf.len().min(self.rng.range(256, 4096) as usize);
        self.stream.read(&mut buf[..n])
    }
}

// ---- the shared state of a run -------------------------------------------------------------

const BEHAVIOURS: [&str; 7] =
    ["pipelined burst", "request body", "half-close", "reset", "slow reader", "non-reader", "idle"];

const CHURN_OPS: [&str; 5] = ["truncate", "grow", "replace", "delete", "re-create"];

#[derive(Default)]
struct Stats {
    ops: [AtomicU64; BEHAVIOURS.len()],
    churn: [AtomicU64; CHURN_OPS.len()],
    responses: AtomicU64,
    /// Responses to GETs of files truncated in place that ended (FIN) inside their body.
    cut_off: AtomicU64,
    /// Other early ends (a reset, or a FIN before or inside an earlier response) while such
    /// a response was pending in the same pipeline.
    ended_early: AtomicU64,
    /// Bodies that matched only with zeros where a truncation zeroed a page tail.
    torn: AtomicU64,
    not_found: AtomicU64,
    /// Slow readers that gave up, their bytes so far checked.
    slow_partial: AtomicU64,
    /// Idle connections the server closed before its timeouts.
    idle_closed: AtomicU64,
    /// Bytes of requests non-readers got into the server.
    unread_request_bytes: AtomicU64,
    fetches: AtomicU64,
    worst_fetch_micros: AtomicU64,
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

struct Mix<'a> {
    server: &'a Server,
    log: Mutex<Vec<FileLog>>,
    stats: Stats,
    failures: Mutex<Vec<String>>,
    deadline: Instant,
    /// Set when the server refuses connections: no point going on.
    stop: AtomicBool,
    /// Wrong bodies searched for their origin so far.
    located: AtomicU64,
    start: Instant,
    /// When a failure first found the server dead.
    died_after: Mutex<Option<Duration>>,
}

impl Mix<'_> {
    fn running(&self) -> bool {
        Instant::now() < self.deadline && !self.stop.load(Ordering::Relaxed)
    }

    fn fail(&self, mut message: String) {
        if !process_alive(self.server.pid()) {
            // Everything in flight breaks when the server dies: say so, and stop the run.
            self.stop.store(true, Ordering::Relaxed);
            let mut died = self.died_after.lock().unwrap_or_else(PoisonError::into_inner);
            died.get_or_insert(self.start.elapsed());
            drop(died);
            message.insert_str(0, "[seen after the server died] ");
        }
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() < FAILURES_PRINTED {
            eprintln!("adversarial: FAILURE: {message}");
        }
        failures.push(message);
    }

    fn connect(&self) -> Result<TcpStream, String> {
        self.server.try_connect().map_err(|e| self.refused(e))
    }

    fn connect_slow_reader(&self) -> Result<TcpStream, String> {
        self.server.try_connect_slow_reader().map_err(|e| self.refused(e))
    }

    fn refused(&self, e: std::io::Error) -> String {
        self.stop.store(true, Ordering::Relaxed);
        format!("connect failed ({e}): is the server still running?")
    }

    fn versions(&self, file: usize) -> Vec<Version> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)[file].versions.clone()
    }

    /// Whether the server may legitimately cut the response to `req` short: a GET of a file
    /// that was truncated in place while mapped.
    fn cuttable(&self, req: &Req) -> bool {
        match req.target {
            Target::File(f) if req.method == Method::Get => {
                self.log.lock().unwrap_or_else(PoisonError::into_inner)[f].mapped_truncations > 0
            }
            _ => false,
        }
    }

    /// Checks a response to `req`: a whole one, or (`complete` false) the head and the body
    /// bytes of one cut short.
    fn check(&self, req: &Req, r: &Response, complete: bool) -> Result<(), String> {
        let file = match req.target {
            Target::Index => return check_index(req, r, complete),
            Target::File(f) => f,
        };
        let churned = &CHURNED[file];
        if r.status == 404 {
            count(&self.stats.not_found);
            return Ok(());
        }
        let content_type = r.header("content-type").unwrap_or("");
        let check_type = |status: u16| {
            if content_type.starts_with(churned.content_type) {
                Ok(())
            } else {
                Err(format!(
                    "status {status} with Content-Type {content_type:?}, not {}: a response to \
                     another request?",
                    churned.content_type
                ))
            }
        };
        let content_length: u64 =
            r.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let offset = match (req.method, req.range, r.status) {
            (Method::Head, None, 200) => {
                check_type(200)?;
                if content_length > size_cap(file) {
                    return Err(format!(
                        "HEAD says Content-Length {content_length}, over the file's cap"
                    ));
                }
                return Ok(());
            }
            (Method::Get, None, 200) => {
                check_type(200)?;
                0
            }
            (Method::Get, Some(span), 206) => {
                check_type(206)?;
                let content_range = r.header("content-range").unwrap_or("");
                let parsed = content_range.strip_prefix("bytes ").and_then(|s| {
                    let (span, total) = s.split_once('/')?;
                    let (a, b) = span.split_once('-')?;
                    Some((
                        a.parse::<u64>().ok()?,
                        b.parse::<u64>().ok()?,
                        total.parse::<u64>().ok()?,
                    ))
                });
                let Some((a, b, total)) = parsed else {
                    return Err(format!("206 with Content-Range {content_range:?}"));
                };
                if span.resolve(total) != Some((a, b)) || total > size_cap(file) {
                    return Err(format!("206 with Content-Range {content_range:?} for {span:?}"));
                }
                if content_length != b - a + 1 {
                    return Err(format!(
                        "206 with Content-Range {content_range:?} and Content-Length \
                         {content_length}"
                    ));
                }
                a
            }
            (Method::Get, Some(span), 416) => {
                let content_range = r.header("content-range").unwrap_or("");
                let total =
                    content_range.strip_prefix("bytes */").and_then(|t| t.parse::<u64>().ok());
                return match total {
                    Some(total) if span.resolve(total).is_none() => Ok(()),
                    _ => Err(format!("416 with Content-Range {content_range:?} for {span:?}")),
                };
            }
            (_, _, status) => return Err(format!("unexpected status {status}")),
        };
        let versions = self.versions(file);
        // The exact match, else a torn one, else the version matching the longest prefix.
        let mut best: Result<bool, (usize, usize)> = Err((0, 0));
        for (k, version) in versions.iter().enumerate() {
            match (version.compare(offset, &r.body), best) {
                (Ok(false), _) => return Ok(()),
                (Ok(true), _) => best = Ok(true),
                (Err(at), Err((_, longest))) if at >= longest => best = Err((k, at)),
                (Err(_), _) => {}
            }
        }
        let (k, at) = match best {
            Ok(_) => {
                count(&self.stats.torn);
                return Ok(());
            }
            Err(best) => best,
        };
        let tail = &r.body[at..r.body.len().min(at + 24)];
        Err(format!(
            "{} body bytes{} at offset {offset} match none of the {} versions of {}: the \
             closest, version {k}, matches the first {at} bytes; from there (file offset {}) \
             they are {}{}",
            r.body.len(),
            if complete { String::new() } else { format!(" (of {content_length}, cut short)") },
            versions.len(),
            churned.name,
            offset + at as u64,
            preview(tail),
            self.locate(tail)
        ))
    }

    /// Where `bytes` (from a wrong body) came from: a search of every version of every file,
    /// for the first few mismatches of a run only (it is slow).
    fn locate(&self, bytes: &[u8]) -> String {
        if bytes.len() < 16 || self.located.fetch_add(1, Ordering::Relaxed) >= 4 {
            return String::new();
        }
        let keys: Vec<u64> = (0..8)
            .map(|j| u64::from_le_bytes(bytes[j..j + 8].try_into().expect("8 bytes")))
            .collect();
        let files: Vec<Vec<Version>> = (0..CHURNED.len()).map(|f| self.versions(f)).collect();
        for (f, versions) in files.iter().enumerate() {
            for (k, version) in versions.iter().enumerate() {
                for w in 0..=size_cap(f) / 8 {
                    let word = stream_word(version.seed, w);
                    for (j, &key) in keys.iter().enumerate() {
                        let Some(pos) = (w * 8).checked_sub(j as u64) else { continue };
                        if word == key && version.compare(pos, bytes) == Ok(false) {
                            return format!(
                                " = bytes {pos}.. of version {k} of {}",
                                CHURNED[f].name
                            );
                        }
                    }
                }
            }
        }
        if bytes.iter().all(|&b| b == 0) {
            " (zeros)".into()
        } else {
            " (found in no version of any file)".into()
        }
    }

    /// Judges response `i` of `reqs` as read; `Ok(true)` to read on, `Ok(false)` when the
    /// connection legitimately ended.
    fn judge(&self, reqs: &[Req], i: usize, got: Got) -> Result<bool, String> {
        let req = &reqs[i];
        let label = format!("response {} of {} (`{}`)", i + 1, reqs.len(), req.describe());
        let pending_cuttable = reqs[i..].iter().any(|r| self.cuttable(r));
        match got {
            Got::Whole(response) => {
                self.check(req, &response, true).map_err(|e| format!("{label}: {e}"))?;
                count(&self.stats.responses);
                Ok(true)
            }
            Got::Cut { response, reset } if pending_cuttable => {
                self.check(req, &response, false).map_err(|e| format!("{label}: {e}"))?;
                let own = !reset && self.cuttable(req) && matches!(response.status, 200 | 206);
                count(if own { &self.stats.cut_off } else { &self.stats.ended_early });
                Ok(false)
            }
            Got::Ended { .. } if pending_cuttable => {
                count(&self.stats.ended_early);
                Ok(false)
            }
            Got::Cut { response, reset } => Err(format!(
                "{label}: the connection {} after {} of its {} body bytes (status {}), with no \
                 response to a GET of a file truncated in place while mapped pending",
                if reset { "was reset" } else { "closed" },
                response.body.len(),
                response.header("content-length").unwrap_or("?"),
                response.status
            )),
            Got::Ended { reset, head_bytes } => {
                let how = if reset { "was reset" } else { "closed" };
                Err(if head_bytes == 0 {
                    format!(
                        "the connection {how} after {i} of {} responses: {label} and any after \
                         it were lost",
                        reqs.len()
                    )
                } else {
                    format!(
                        "{label}: the connection {how} inside its head, after {head_bytes} bytes"
                    )
                })
            }
            Got::Broken(message) => Err(format!("{label}: {message}")),
        }
    }

    /// Reads and checks the responses to `reqs` in order; `Ok(false)` if the connection
    /// legitimately ended before the last.
    fn read_all(&self, reader: &mut impl BufRead, reqs: &[Req]) -> Result<bool, String> {
        for (i, req) in reqs.iter().enumerate() {
            let got = read_one(reader, req.method == Method::Head);
            if !self.judge(reqs, i, got)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn check_index(req: &Req, r: &Response, complete: bool) -> Result<(), String> {
    match (req.method, r.status) {
        (Method::Post, 405) => match r.header("allow") {
            Some(allow) if allow.contains("GET") => Ok(()),
            other => Err(format!("405 with Allow {other:?}")),
        },
        (Method::Head, 200) if r.header("content-length") == Some(&INDEX.len().to_string()) => {
            Ok(())
        }
        (Method::Get, 200) if complete && r.body == INDEX => Ok(()),
        (Method::Get, 200) if !complete && INDEX.starts_with(&r.body) => Ok(()),
        (_, status) => Err(format!(
            "status {status} with {} body bytes {}, not index.html",
            r.body.len(),
            preview(&r.body)
        )),
    }
}

/// After the last response: nothing more may come, and the server must close once the
/// client has half-closed.
fn expect_clean_end(reader: &mut BufReader<TcpStream>, half_closed: bool) -> Result<(), String> {
    if !reader.buffer().is_empty() {
        return Err(format!("bytes after the last response: {}", preview(reader.buffer())));
    }
    if !half_closed {
        // A server that already closed may make this fail; the read below tells.
        let _ = reader.get_ref().shutdown(Shutdown::Write);
    }
    let mut rest = Vec::new();
    let result = (&mut *reader).take(64 * 1024).read_to_end(&mut rest);
    if !rest.is_empty() {
        return Err(format!("bytes after the last response: {}", preview(&rest)));
    }
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_reset(&e) => Ok(()),
        Err(e) if is_timeout(&e) => Err(format!(
            "the connection stayed open {IO_TIMEOUT_SECS} s after the client's half-close"
        )),
        Err(e) => Err(format!("read error after the last response: {e}")),
    }
}

/// Writes as much of `bytes` as the server takes before `until`; returns the bytes written.
fn write_until(stream: &TcpStream, bytes: &[u8], until: Instant) -> usize {
    let mut written = 0;
    for _ in 0..10_000 {
        let left = until.saturating_duration_since(Instant::now());
        if written == bytes.len() || left < Duration::from_millis(1) {
            break;
        }
        if stream.set_write_timeout(Some(left)).is_err() {
            break;
        }
        match (&*stream).write(&bytes[written..]) {
            Ok(0) | Err(_) => break, // a full window (timeout), or the server dropped us
            Ok(n) => written += n,
        }
    }
    written
}

// ---- the behaviours ----------------------------------------------------------------------

/// 2-40 requests in one write, the responses read and checked in order, then (mostly) a
/// half-close after which nothing but EOF may come.
fn pipelined_burst(mix: &Mix<'_>, rng: &mut Rng) -> Result<(), String> {
    let small_only = rng.chance(40);
    let reqs: Vec<Req> = (0..rng.range(2, 40)).map(|_| random_request(rng, small_only)).collect();
    let text: String = reqs.iter().map(Req::head_text).collect();
    let mut stream = mix.connect()?;
    stream
        .write_all(text.as_bytes())
        .map_err(|e| format!("writing {} pipelined requests: {e}", reqs.len()))?;
    let mut reader = BufReader::new(stream);
    if mix.read_all(&mut reader, &reqs)? && rng.chance(80) {
        expect_clean_end(&mut reader, false)
            .map_err(|e| format!("after all {} responses: {e}", reqs.len()))?;
    }
    Ok(())
}

/// POST (405) or GET (200) of /index.html with a body, then a plain GET in the same write;
/// the body, sometimes sent in pieces with pauses, looks like requests to catch a server
/// that parses it instead of skipping it.
fn request_body(mix: &Mix<'_>, rng: &mut Rng) -> Result<(), String> {
    let method = if rng.chance(50) { Method::Post } else { Method::Get };
    let first =
        Req { method, target: Target::Index, range: None, body_len: rng.range(1, 60_000) as usize };
    let second = Req::get(Target::Index);
    let decoy = b"GET /tiny.txt HTTP/1.1\r\nHost: mix\r\n\r\n";
    let mut bytes = first.head_text().into_bytes();
    bytes.extend(decoy.iter().cycle().take(first.body_len));
    let second_at = bytes.len();
    bytes.extend_from_slice(second.head_text().as_bytes());
    let mut cuts: Vec<usize> =
        (1..rng.range(1, 5)).map(|_| 1 + rng.below(second_at as u64 - 1) as usize).collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts.push(bytes.len());
    let mut stream = mix.connect()?;
    let mut from = 0;
    for (n, &to) in cuts.iter().enumerate() {
        if n > 0 {
            std::thread::sleep(rng.millis(1, 30));
        }
        stream.write_all(&bytes[from..to]).map_err(|e| {
            format!("writing bytes {from}..{to} of `{}` + body + GET: {e}", first.describe())
        })?;
        from = to;
    }
    let mut reader = BufReader::new(stream);
    let reqs = [first, second];
    if !mix.read_all(&mut reader, &reqs)? {
        return Err("the connection ended early".into()); // judge allows no cut here
    }
    expect_clean_end(&mut reader, false)
        .map_err(|e| format!("after `{}` and its follow-up GET: {e}", first.describe()))
}

/// 1-5 pipelined requests, then shutdown(Write): every response, then EOF.
fn half_close(mix: &Mix<'_>, rng: &mut Rng) -> Result<(), String> {
    let small_only = rng.chance(50);
    let reqs: Vec<Req> = (0..rng.range(1, 5)).map(|_| random_request(rng, small_only)).collect();
    let text: String = reqs.iter().map(Req::head_text).collect();
    let mut stream = mix.connect()?;
    stream.write_all(text.as_bytes()).map_err(|e| format!("writing the requests: {e}"))?;
    stream.shutdown(Shutdown::Write).map_err(|e| format!("shutdown(Write): {e}"))?;
    let mut reader = BufReader::new(stream);
    if mix.read_all(&mut reader, &reqs)? {
        expect_clean_end(&mut reader, true)
            .map_err(|e| format!("after all {} responses: {e}", reqs.len()))?;
    }
    Ok(())
}

/// GET the 2 MiB file (once or a few times), maybe read a little, then reset (SO_LINGER 0).
fn reset(mix: &Mix<'_>, rng: &mut Rng) -> Result<(), String> {
    let mut stream = mix.connect()?;
    let request = Req::get(Target::File(VIDEO)).head_text().repeat(rng.range(1, 3) as usize);
    stream.write_all(request.as_bytes()).map_err(|e| format!("writing the requests: {e}"))?;
    if rng.chance(60) {
        let want = rng.range(1024, 64 * 1024) as usize;
        let mut got = Vec::with_capacity(want);
        let mut buf = [0u8; 16 * 1024];
        for _ in 0..1000 {
            if got.len() >= want {
                break;
            }
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    // Short responses (404 once the file is deleted) end before `want`.
                    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                }
                Err(e) if is_timeout(&e) && !got.is_empty() => break,
                Err(e) if is_timeout(&e) => {
                    return Err(format!(
                        "{} bytes of the response, then nothing for {IO_TIMEOUT_SECS} s (stall)",
                        got.len()
                    ))
                }
                Err(_) => break,
            }
        }
        if got.len() >= 9 && !got.starts_with(b"HTTP/1.1 ") {
            return Err(format!("the response starts {}", preview(&got[..40.min(got.len())])));
        }
    }
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .map_err(|e| format!("SO_LINGER 0: {e}"))?;
    drop(stream); // RST
    Ok(())
}

/// A 4 KiB receive buffer and small reads with pauses; gives up after 0.3-2 s and closes,
/// checking that what came so far is a prefix of a version.
fn slow_reader(mix: &Mix<'_>, rng: &mut Rng) -> Result<(), String> {
    let file = if rng.chance(50) { PHOTO } else { VIDEO };
    let range = rng.chance(40).then(|| random_range(file, rng));
    let req = Req { range, ..Req::get(Target::File(file)) };
    let mut stream = mix.connect_slow_reader()?;
    stream
        .write_all(req.head_text().as_bytes())
        .map_err(|e| format!("writing the request: {e}"))?;
    let until = Instant::now() + rng.millis(300, 2000);
    let throttled =
        Throttled { stream, rng: Rng::new(rng.next()), until, reads: 0, gave_up: false };
    let mut reader = BufReader::with_capacity(4096, throttled);
    let got = read_one(&mut reader, false);
    let gave_up = reader.get_ref().gave_up;
    match got {
        Got::Cut { response, .. } if gave_up => {
            mix.check(&req, &response, false).map_err(|e| {
                format!("`{}`, {} bytes read slowly: {e}", req.describe(), response.body.len())
            })?;
            count(&mix.stats.slow_partial);
        }
        Got::Ended { .. } if gave_up => count(&mix.stats.slow_partial),
        got => {
            mix.judge(&[req], 0, got)?;
        }
    }
    Ok(())
}

/// Pipelines 50-300 KB of GETs of the 2 MiB file and never reads; holds 0.5-2 s, closes.
fn non_reader(mix: &Mix<'_>, rng: &mut Rng) -> Result<(), String> {
    let stream = if rng.chance(30) { mix.connect_slow_reader()? } else { mix.connect()? };
    let until = Instant::now() + rng.millis(500, 2000);
    let request = Req::get(Target::File(VIDEO)).head_text();
    let total = rng.range(50_000, 300_000) as usize;
    let bytes = request.repeat(total / request.len() + 1);
    let written = write_until(&stream, bytes.as_bytes(), until);
    mix.stats.unread_request_bytes.fetch_add(written as u64, Ordering::Relaxed);
    std::thread::sleep(until.saturating_duration_since(Instant::now())); // hold, unread
    Ok(())
}

/// Connects, maybe sends part of a request head, holds 0.5-3 s (nothing may arrive), then
/// closes or finishes the request, which must then be answered.
fn idle(mix: &Mix<'_>, rng: &mut Rng) -> Result<(), String> {
    let req = Req::get(Target::Index);
    let full = req.head_text();
    let sent = match rng.below(3) {
        0 => 0,
        1 => 2,
        _ => full.len() - 2,
    };
    let mut stream = mix.connect()?;
    stream
        .write_all(&full.as_bytes()[..sent])
        .map_err(|e| format!("writing a partial head: {e}"))?;
    let hold = rng.millis(500, 3000);
    stream.set_read_timeout(Some(hold)).map_err(|e| format!("set_read_timeout: {e}"))?;
    let mut buf = [0u8; 512];
    match stream.read(&mut buf) {
        Ok(0) => {
            count(&mix.stats.idle_closed);
            return Ok(());
        }
        Ok(n) => {
            return Err(format!(
                "the server sent {n} bytes within {hold:?} on a connection holding {sent} bytes \
                 of a request head: {}",
                preview(&buf[..n])
            ))
        }
        Err(e) if is_timeout(&e) => {}
        Err(e) if is_reset(&e) => {
            count(&mix.stats.idle_closed);
            return Ok(());
        }
        Err(e) => return Err(format!("read error on an idle connection: {e}")),
    }
    if sent == 0 || rng.chance(40) {
        return Ok(());
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(IO_TIMEOUT_SECS)))
        .map_err(|e| format!("set_read_timeout: {e}"))?;
    stream
        .write_all(&full.as_bytes()[sent..])
        .map_err(|e| format!("finishing a request after {hold:?}: {e}"))?;
    let mut reader = BufReader::new(stream);
    mix.read_all(&mut reader, &[req])
        .map_err(|e| format!("request finished after {hold:?} idle with {sent} bytes sent: {e}"))?;
    expect_clean_end(&mut reader, false)
}

type Behaviour = fn(&Mix<'_>, &mut Rng) -> Result<(), String>;

/// Behaviours (as in `BEHAVIOURS`) with their weights.
const MENU: [(Behaviour, u64); 7] = [
    (pipelined_burst, 4),
    (request_body, 3),
    (half_close, 3),
    (reset, 2),
    (slow_reader, 2),
    (non_reader, 2),
    (idle, 2),
];

fn behaviour_thread(mix: &Mix<'_>, thread: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let total: u64 = MENU.iter().map(|(_, w)| w).sum();
    for op in 0..100_000u64 {
        if !mix.running() {
            break;
        }
        let mut pick = rng.below(total);
        let which = MENU
            .iter()
            .position(|&(_, w)| {
                let hit = pick < w;
                pick = pick.saturating_sub(w);
                hit
            })
            .unwrap_or(0);
        count(&mix.stats.ops[which]);
        if let Err(message) = MENU[which].0(mix, &mut rng) {
            mix.fail(format!(
                "{} [thread {thread}, seed {seed:#018x}, op {op}]: {message}",
                BEHAVIOURS[which]
            ));
        }
    }
}

// ---- the normal client and the churn -------------------------------------------------------

/// GET /index.html on a fresh connection.
fn fetch_index(server: &Server) -> Result<(), String> {
    let req = Req::get(Target::Index);
    let mut stream = server.try_connect().map_err(|e| format!("connect: {e}"))?;
    stream.write_all(req.head_text().as_bytes()).map_err(|e| format!("write: {e}"))?;
    match read_one(&mut BufReader::new(stream), false) {
        Got::Whole(r) => check_index(&req, &r, true),
        Got::Cut { response, reset } => Err(format!(
            "cut short after {} body bytes ({})",
            response.body.len(),
            if reset { "reset" } else { "closed" }
        )),
        Got::Ended { reset, head_bytes } => Err(format!(
            "the connection {} after {head_bytes} bytes of a head",
            if reset { "was reset" } else { "closed" }
        )),
        Got::Broken(message) => Err(message),
    }
}

/// GET /index.html every 50 ms: each must succeed, within `FETCH_SECS_MAX`.
fn normal_client(mix: &Mix<'_>) {
    for fetch in 0..100_000u64 {
        if !mix.running() {
            break;
        }
        let start = Instant::now();
        let result = fetch_index(mix.server);
        let took = start.elapsed();
        count(&mix.stats.fetches);
        mix.stats.worst_fetch_micros.fetch_max(took.as_micros() as u64, Ordering::Relaxed);
        match result {
            Err(message) => {
                if message.starts_with("connect") {
                    mix.stop.store(true, Ordering::Relaxed);
                }
                mix.fail(format!("normal client, fetch {fetch} (`GET /index.html`): {message}"));
            }
            Ok(()) if took > Duration::from_secs(FETCH_SECS_MAX) => mix.fail(format!(
                "normal client, fetch {fetch} (`GET /index.html`): took {took:?}, over \
                 {FETCH_SECS_MAX} s (starved)"
            )),
            Ok(()) => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A new version's length: around the file's initial size, within its cap.
fn random_len(file: usize, rng: &mut Rng) -> u64 {
    let base = CHURNED[file].base;
    rng.range(base / 4, base * 2).min(size_cap(file))
}

/// Every 10-40 ms, one change to one churned file. Each new seed and each truncation is
/// logged before the change is made, so a reader can never see bytes of an unlogged version.
fn churn(mix: &Mix<'_>, root: &Path, staging: &Path, seed: u64) {
    let mut rng = Rng::new(seed);
    // Current length of each file; `None` while deleted. Its version is the last logged.
    let mut lens: Vec<Option<u64>> = CHURNED.iter().map(|c| Some(c.base)).collect();
    let edit = |file: usize, f: &mut dyn FnMut(&mut FileLog)| {
        f(&mut mix.log.lock().unwrap_or_else(PoisonError::into_inner)[file]);
    };
    for step in 0..100_000u64 {
        if !mix.running() {
            break;
        }
        std::thread::sleep(rng.millis(10, 40));
        let file = rng.below(CHURNED.len() as u64) as usize;
        let path = root.join(CHURNED[file].name);
        let seed_now = || mix.versions(file).last().map(|v| v.seed).expect("a logged version");
        let roll = rng.below(100);
        let op = match lens[file] {
            Some(len) if roll < 30 && len > 0 => 0,
            Some(len) if roll < 55 && len < size_cap(file) => 1,
            Some(_) if roll < 85 => 2,
            Some(_) => 3,
            None if roll < 50 => 4,
            None => 2,
        };
        count(&mix.stats.churn[op]);
        match op {
            0 => {
                let len = lens[file].expect("truncate an existing file");
                let new_len = if rng.chance(50) {
                    rng.below(len)
                } else {
                    len - 1 - rng.below(len.min(4096))
                };
                edit(file, &mut |l| {
                    l.mapped_truncations += u64::from(len > COPIED_FILE_BYTES_MAX);
                    l.versions.last_mut().expect("a version").truncations.push(new_len);
                });
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(new_len))
                    .expect("truncate a churned file in place");
                lens[file] = Some(new_len);
            }
            1 => {
                let len = lens[file].expect("grow an existing file");
                let new_len = (len + 1 + rng.below(CHURNED[file].base / 2)).min(size_cap(file));
                let bytes = stream_bytes(seed_now(), len, (new_len - len) as usize);
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .and_then(|mut f| f.write_all(&bytes))
                    .expect("append to a churned file");
                lens[file] = Some(new_len);
            }
            2 | 4 => {
                let seed = rng.next();
                let new_len = random_len(file, &mut rng);
                edit(file, &mut |l| l.versions.push(Version { seed, truncations: Vec::new() }));
                let bytes = stream_bytes(seed, 0, new_len as usize);
                if op == 2 {
                    // Written outside the root, then renamed over: never seen partly written.
                    let temp = staging.join(format!("{}.{step}", CHURNED[file].name));
                    std::fs::write(&temp, &bytes).expect("write a replacement");
                    std::fs::rename(&temp, &path).expect("rename a replacement over a file");
                } else {
                    // Written in place: readers may see any prefix of it.
                    std::fs::write(&path, &bytes).expect("re-create a deleted file");
                }
                lens[file] = Some(new_len);
            }
            _ => {
                std::fs::remove_file(&path).expect("delete a churned file");
                lens[file] = None;
            }
        }
    }
}

// ---- the server's footprint ----------------------------------------------------------------

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// Mappings of files under `dir` (old versions show as deleted), and how many are deleted.
fn mapped_files(pid: u32, dir: &Path) -> (usize, usize) {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let dir = dir.to_string_lossy();
    let lines: Vec<&str> = maps.lines().filter(|l| l.contains(dir.as_ref())).collect();
    (lines.len(), lines.iter().filter(|l| l.ends_with("(deleted)")).count())
}

/// Whether the process is running (not gone, not a zombie waiting to be reaped).
fn process_alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, Some(s) if s != "Z" && s != "X")
}

/// Non-readers that pipeline GETs (of a large, a mid-size and a small file; with normal and
/// 4 KiB receive buffers) and never read: while they hold their connections the server has
/// nothing to do, and must not use more than half a core.
fn probe_non_readers(server: &Server) -> Result<String, String> {
    let mut held = Vec::new();
    for (path, slow) in
        [("probe.bin", false), ("probe.bin", true), ("probe-mid.bin", true), ("index.html", true)]
    {
        let stream = if slow { server.try_connect_slow_reader() } else { server.try_connect() }
            .map_err(|e| format!("connect: {e}"))?;
        let request = format!("GET /{path} HTTP/1.1\r\nHost: mix\r\n\r\n").repeat(2500);
        write_until(&stream, request.as_bytes(), Instant::now() + Duration::from_millis(250));
        held.push(stream);
    }
    let (cpu_before, start) = (cpu_secs(server.pid()), Instant::now());
    std::thread::sleep(Duration::from_millis(1500));
    let (used, wall) = (cpu_secs(server.pid()) - cpu_before, start.elapsed().as_secs_f64());
    drop(held);
    let summary = format!("{used:.2} s CPU in {wall:.2} s with {} non-readers connected", 4);
    if used > wall / 2.0 {
        return Err(format!(
            "the server used {summary}: a worker spins on clients that do not read"
        ));
    }
    Ok(summary)
}

// ---- the run -------------------------------------------------------------------------------

/// The engine runs take turns: each has the machine to itself as far as the suite allows.
static TURN: Mutex<()> = Mutex::new(());

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn random_mix(flags: &[&str]) {
    let _turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
    let secs = env_u64("RINGSERVE_MIX_SECS").unwrap_or(8);
    let base_seed = env_u64("RINGSERVE_MIX_SEED").unwrap_or(BASE_SEED);
    let engine = if flags.contains(&"blocking") {
        "blocking"
    } else if flags.contains(&"epoll") {
        "epoll"
    } else {
        "io_uring"
    };

    // The root, and beside it (same file system, never served) the staging directory.
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, staging) = (dir.path().join("www"), dir.path().join("staging"));
    std::fs::create_dir(&root).expect("create the root");
    std::fs::create_dir(&staging).expect("create the staging directory");
    std::fs::write(root.join("index.html"), INDEX).expect("write index.html");
    std::fs::write(root.join("probe.bin"), pseudo_random_bytes(PROBE_BYTES, 7))
        .expect("write probe");
    std::fs::write(root.join("probe-mid.bin"), pseudo_random_bytes(20 * 1024, 8))
        .expect("write probe-mid");
    let mut rng = Rng::new(base_seed);
    let mut log = Vec::new();
    for churned in &CHURNED {
        let seed = rng.next();
        log.push(FileLog {
            versions: vec![Version { seed, truncations: Vec::new() }],
            mapped_truncations: 0,
        });
        std::fs::write(root.join(churned.name), stream_bytes(seed, 0, churned.base as usize))
            .expect("write a churned file");
    }

    let args: Vec<&str> = SERVER_FLAGS.iter().chain(flags).copied().collect();
    let mut server = Server::start_at(&root, &args);
    fetch_index(&server).unwrap_or_else(|e| panic!("[{engine}] the first GET /index.html: {e}"));
    let (fds_before, rss_before) = (open_fds(server.pid()), rss_kib(server.pid()));

    let start = Instant::now();
    let mix = Mix {
        server: &server,
        log: Mutex::new(log),
        stats: Stats::default(),
        failures: Mutex::new(Vec::new()),
        deadline: start + Duration::from_secs(secs),
        stop: AtomicBool::new(false),
        located: AtomicU64::new(0),
        start,
        died_after: Mutex::new(None),
    };
    std::thread::scope(|scope| {
        let mix = &mix;
        let builder = |name: &str| std::thread::Builder::new().name(name.to_string());
        let churn_seed = stream_word(base_seed, 1000);
        let (root, staging) = (&root, &staging);
        let mut threads = vec![
            builder("mix-churn").spawn_scoped(scope, move || churn(mix, root, staging, churn_seed)),
            builder("mix-normal").spawn_scoped(scope, || normal_client(mix)),
        ];
        for t in 0..BEHAVIOUR_THREADS {
            let seed = stream_word(base_seed, t as u64);
            let name = format!("mix-{t}");
            threads
                .push(builder(&name).spawn_scoped(scope, move || behaviour_thread(mix, t, seed)));
        }
        let threads: Vec<_> = threads.into_iter().map(|t| t.expect("spawn a mix thread")).collect();
        for handle in threads {
            let name = handle.thread().name().unwrap_or("?").to_string();
            if let Err(panic) = handle.join() {
                let message = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                mix.fail(format!("thread {name} panicked: {message}"));
            }
        }
    });
    let ran = start.elapsed();
    let Mix { stats, failures, died_after, .. } = mix;
    let died_after = died_after.into_inner().unwrap_or_else(PoisonError::into_inner);
    let failures = failures.into_inner().unwrap_or_else(PoisonError::into_inner);

    // End checks: alive, serving, and back near the start-up footprint.
    let mut problems = Vec::new();
    let mut footprint = String::from("not measured");
    let mut probe = String::from("not run");
    if let Some(status) = server.exit_status() {
        let when = match died_after {
            Some(t) => format!(", first noticed {:.1} s into the run", t.as_secs_f64()),
            None => String::new(),
        };
        problems.push(format!("the server died during the mix: {status}{when}"));
    } else {
        if let Err(e) = fetch_index(&server) {
            problems.push(format!("the final GET /index.html failed: {e}"));
        }
        // The thread-per-connection engine keeps its allocator arenas, cached thread stacks
        // and touched file pages after a burst of threads (measured: VmRSS +56 MiB, the same
        // after 8 s and 16 s runs: a plateau, not a leak); io_uring stays within 1 MiB.
        let rss_margin_kib = if engine == "blocking" { 80 * 1024 } else { 32 * 1024 };
        let settle = Instant::now();
        let (mut fds, mut rss) = (0, 0);
        for _ in 0..200 {
            (fds, rss) = (open_fds(server.pid()), rss_kib(server.pid()));
            if (fds <= fds_before + FDS_MARGIN && rss <= rss_before + rss_margin_kib)
                || settle.elapsed() > Duration::from_secs(10)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        footprint = format!(
            "fds {fds_before} -> {fds}, VmRSS {rss_before} -> {rss} KiB (anonymous {} KiB, \
             file {} KiB, {} threads, {} mappings of served files of which {} deleted) after \
             {:.1} s",
            status_kib(server.pid(), "RssAnon"),
            status_kib(server.pid(), "RssFile"),
            status_kib(server.pid(), "Threads"),
            mapped_files(server.pid(), dir.path()).0,
            mapped_files(server.pid(), dir.path()).1,
            settle.elapsed().as_secs_f64()
        );
        if fds > fds_before + FDS_MARGIN {
            problems.push(format!("descriptors not released after 10 s: {footprint}"));
        }
        if rss > rss_before + rss_margin_kib {
            problems.push(format!("memory not released after 10 s: {footprint}"));
        }
        match probe_non_readers(&server) {
            Ok(summary) => probe = summary,
            Err(e) => {
                probe = e.clone();
                problems.push(e);
            }
        }
        if let Some(status) = server.exit_status() {
            problems.push(format!("the server died after the mix: {status}"));
        }
    }

    let ops: Vec<String> =
        BEHAVIOURS.iter().zip(&stats.ops).map(|(name, n)| format!("{name} {}", load(n))).collect();
    let churned: Vec<String> =
        CHURN_OPS.iter().zip(&stats.churn).map(|(name, n)| format!("{name} {}", load(n))).collect();
    eprintln!(
        "adversarial [{engine}] base seed {base_seed:#018x}, {:.1} s, {BEHAVIOUR_THREADS} threads: \
         {}; churn: {}; responses checked {}, cut off {} (+{} other early ends with a cut \
         pending), torn {}, 404 {}, slow readers that gave up {}, idle closed early {}, unread \
         request bytes {}; normal client {} fetches, worst {:.1} ms; {footprint}; probe: {probe}; \
         {} failures, {} end-check problems",
        ran.as_secs_f64(),
        ops.join(", "),
        churned.join(", "),
        load(&stats.responses),
        load(&stats.cut_off),
        load(&stats.ended_early),
        load(&stats.torn),
        load(&stats.not_found),
        load(&stats.slow_partial),
        load(&stats.idle_closed),
        load(&stats.unread_request_bytes),
        load(&stats.fetches),
        load(&stats.worst_fetch_micros) as f64 / 1000.0,
        failures.len(),
        problems.len(),
    );
    if !failures.is_empty() || !problems.is_empty() {
        let shown: Vec<&str> = failures.iter().take(FAILURES_PRINTED).map(String::as_str).collect();
        panic!(
            "adversarial mix [{engine}], base seed {base_seed:#018x} (replay with \
             RINGSERVE_MIX_SEED): {} end-check problems, {} failures\n{}\n{}{}",
            problems.len(),
            failures.len(),
            problems.iter().map(|p| format!("  end check: {p}")).collect::<Vec<_>>().join("\n"),
            shown.iter().map(|f| format!("  {f}")).collect::<Vec<_>>().join("\n"),
            if failures.len() > shown.len() {
                format!("\n  ... and {} more", failures.len() - shown.len())
            } else {
                String::new()
            }
        );
    }
}

#[test]
fn random_mix_uring() {
    random_mix(&[]);
}

#[test]
fn random_mix_blocking() {
    random_mix(&["--engine", "blocking"]);
}

#[test]
fn random_mix_epoll() {
    random_mix(&["--engine", "epoll"]);
}
