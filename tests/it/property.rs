//! Property tests, bounded in time and seeded: random bytes and random mutations of valid
//! requests go through the protocol step in-process (hundreds of thousands of cases) and over
//! real TCP to a real server (hundreds of connections). Properties: no panic; every queued
//! response is a well-formed HTTP/1.1 response with an allowed status; a response that ends
//! the connection says `Connection: close`; the server keeps serving.

use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

use ringserve::batch::Batch;
use ringserve::files::{CacheLimits, FileCache};
use ringserve::http::ParseLimits;
use ringserve::serve::{self, KeyBuffer, Session, Shared};

use crate::support::*;

/// Statuses ringserve may send.
const ALLOWED: [u16; 17] =
    [200, 206, 301, 304, 400, 403, 404, 405, 408, 412, 414, 416, 431, 500, 501, 503, 505];

/// How long the in-process property runs.
const IN_PROCESS_MILLIS: u64 = 4000;

/// xorshift64*, fixed seeds.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const CORPUS: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",
    b"HEAD /a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    b"GET /app.js HTTP/1.1\r\nHost: t\r\nAccept-Encoding: br;q=1, gzip;q=0.5\r\nRange: bytes=2-9\r\n\r\n",
    b"GET /digits.txt HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"x\", W/\"y\"\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n",
    b"GET /sub HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET /%2e%2e/etc/passwd HTTP/1.1\r\nHost: t\r\n\r\n",
    b"GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET http://t/sub/ HTTP/1.1\r\nHost: t\r\nIf-Range: \"z\"\r\nRange: bytes=-3\r\n\r\n",
];

const INTERESTING: &[&[u8]] = &[
    b"\r\n",
    b"\r",
    b"\n",
    b"\0",
    b"\x01",
    b"\x7f",
    b" ",
    b"\t",
    b":",
    b"%",
    b"%00",
    b"/../",
    b"HTTP/1.1",
    b"HTTP/9.9",
    b"Host: t\r\n",
    b"Content-Length: 99999999999\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"\r\n\r\n",
    b"Range: bytes=0-0,0-0,0-0\r\n",
];

/// One random case: a mutated corpus entry, a concatenation (pipelining), or random bytes.
fn case(rng: &mut Rng) -> Vec<u8> {
    match rng.below(10) {
        0 => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
        1 => {
            let mut out = Vec::new();
            for _ in 0..1 + rng.below(4) {
                out.extend_from_slice(CORPUS[rng.below(CORPUS.len())]);
            }
            mutate(rng, &mut out, 1);
            out
        }
        _ => {
            let mut out = CORPUS[rng.below(CORPUS.len())].to_vec();
            let rounds = 1 + rng.below(4);
            mutate(rng, &mut out, rounds);
            out
        }
    }
}

fn mutate(rng: &mut Rng, out: &mut Vec<u8>, rounds: usize) {
    for _ in 0..rounds {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << rng.below(8);
            }
            1 => out.insert(at, rng.next() as u8),
            2 if at < out.len() => {
                out.remove(at);
            }
            3 => out.truncate(at),
            4 => {
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                out.splice(at..at, piece.iter().copied());
            }
            5 => {
                let long = vec![b'a'; 1 + rng.below(10_000)];
                out.splice(at..at, long);
            }
            _ => {
                let header = format!("X-{}: {}\r\n", rng.below(100), rng.next());
                let line_start = out.windows(2).position(|w| w == b"\r\n").map_or(0, |p| p + 2);
                out.splice(line_start..line_start, header.bytes());
            }
        }
    }
}

fn property_root(root: &std::path::Path) {
    demo_root(root);
    std::fs::write(root.join("digits.txt"), b"0123456789").unwrap();
    std::fs::write(root.join("app.js"), b"console.log('x');").unwrap();
    std::fs::write(root.join("app.js.br"), b"BR").unwrap();
    std::fs::write(root.join("app.js.gz"), b"GZ").unwrap();
}

/// Checks every response in `bytes` (the queued output of one serve pass).
fn check_responses(bytes: &[u8], closing: bool, input: &[u8]) {
    let mut pos = 0;
    let mut last_close = false;
    while pos < bytes.len() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let head = match response.parse(&bytes[pos..]) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!(
                "malformed response {other:?} for input {:?}",
                String::from_utf8_lossy(input)
            ),
        };
        let status = response.code.unwrap();
        assert!(
            ALLOWED.contains(&status),
            "status {status} for {:?}",
            String::from_utf8_lossy(input)
        );
        assert_eq!(response.version, Some(1));
        let field = |name: &str| {
            response.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
        };
        assert!(field("date").is_some() && field("server").is_some());
        last_close = field("connection") == Some(b"close");
        let length: usize = match field("content-length") {
            Some(v) => std::str::from_utf8(v).unwrap().parse().unwrap(),
            None => {
                assert_eq!(status, 304, "only 304 omits Content-Length");
                0
            }
        };
        // A HEAD response carries the length but no body: find where the next one starts.
        let rest = &bytes[pos + head..];
        let body = if rest.len() >= length
            && (rest.len() == length || rest[length..].starts_with(b"HTTP/1.1 "))
        {
            length
        } else {
            0
        };
        pos += head + body;
    }
    if closing {
        assert!(last_close, "a closing response must say so: {:?}", String::from_utf8_lossy(input));
    }
}

#[test]
fn random_and_mutated_requests_get_well_formed_answers_in_process() {
    let dir = tempfile::tempdir().unwrap();
    property_root(dir.path());
    // A small cache, so random paths also make it evict.
    let cache_limits = CacheLimits {
        entries: 64,
        bytes: 1 << 20,
        revalidate_ms: None,
        watch: false,
        open_files: 1000,
    };
    let mut cache = FileCache::open(dir.path(), cache_limits).unwrap();
    let limits = ParseLimits::default();
    let mut date = ringserve::http::date::DateCache::new();
    date.refresh(std::time::UNIX_EPOCH + std::time::Duration::from_secs(784_111_777));
    let mut batch = Batch::new();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let started = Instant::now();
    let site = ringserve::site::Site::default();
    let mut cases = 0u64;
    let mut responses = 0u64;
    while started.elapsed() < Duration::from_millis(IN_PROCESS_MILLIS) {
        let input = case(&mut rng);
        let mut session = Session::default();
        let mut used = 0;
        loop {
            let shared = Shared {
                files: &cache,
                now_ms: 0,
                now_micros: 0,
                // Every random request's text goes through the log's escaping too.
                log: Some(ringserve::observe::access_log::LogFormat::Combined),
                date: &date,
                limits: &limits,
                keepalive_requests: 50,
                site: &site,
            };
            let served = session.serve_all(&input[used..], &shared, &mut batch);
            used += served.used;
            let Some(of) = served.miss else { break };
            let mut key: KeyBuffer = [0; std::mem::size_of::<KeyBuffer>()];
            let key = serve::miss_key(&input[used..], &limits, &site, of, &mut key)
                .expect("a miss has a key");
            cache.fill(key, 0);
        }
        assert!(used <= input.len());
        let mut out = Vec::new();
        for iov in batch.pending() {
            // SAFETY: the iovecs point into the batch or an entry it holds, both alive here.
            out.extend_from_slice(unsafe {
                std::slice::from_raw_parts(iov.iov_base as *const u8, iov.iov_len)
            });
        }
        responses += u64::from(!out.is_empty());
        check_responses(&out, session.closing, &input);
        batch.finish_exchanges(|exchange, _, text| {
            let text = text.get();
            assert!(exchange.status >= 200, "every queued response has its status");
            let escaped =
                [text.request, text.referer.unwrap_or(b"-"), text.user_agent.unwrap_or(b"-")];
            assert!(escaped
                .iter()
                .all(|t| t.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'"')));
        });
        batch.clear();
        cases += 1;
    }
    eprintln!("property: {cases} in-process cases, {responses} with responses, 0 failures");
    assert!(cases > 10_000, "only {cases} cases ran");
}

#[test]
fn mutated_requests_over_tcp_get_answers_or_a_close_never_a_hang() {
    let server = Server::start(property_root, &["--header-timeout", "2"]);
    let mut rng = Rng(0x5eed_0000_0000_0042);
    let mut connections = 0;
    for _ in 0..300 {
        let input = case(&mut rng);
        let mut stream = server.connect();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = stream.write_all(&input);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let started = Instant::now();
        match stream.read_to_end(&mut out) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!(
                "no answer and no close within 5 s ({e}) for {:?}",
                String::from_utf8_lossy(&input)
            ),
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        if !out.is_empty() {
            check_responses(&out, false, &input);
        }
        connections += 1;
    }
    eprintln!("property: {connections} mutated requests over TCP, 0 failures");
    let r = get(&server, "GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.body, b"file a\n", "the server still serves");
    drop(BufReader::new(server.connect()));
}
