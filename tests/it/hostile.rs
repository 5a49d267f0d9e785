//! Hostile and unlucky clients, one test per case, each run against every engine: clients
//! that never read, files truncated or grown while served, bodies and half-closes in a burst,
//! descriptors running out, a second server on a busy port. Each of these stalled, starved,
//! misframed or crashed the server once; the seeded random mix of all of them is in
//! `adversarial`.

use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use crate::support::*;

/// Fetches `/index.html` on a fresh connection; panics if it is not served in full.
fn fetch_index(server: &Server) -> Duration {
    let started = Instant::now();
    let r = get(server, "GET /index.html HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((r.status, r.body.as_slice()), (200, INDEX));
    started.elapsed()
}

fn root_with_big(root: &std::path::Path) {
    demo_root(root);
    std::fs::write(root.join("big.bin"), pseudo_random_bytes(4 << 20, 7)).unwrap();
}

/// Case 1: 300 connections each pipeline 300 KB of requests for a large file and never read.
/// They once took every receive buffer: a new client timed out and the worker spun on ENOBUFS.
fn non_readers_cannot_starve_others(flags: &[&str], envs: &[(&str, &str)]) {
    let args = with_engine(&["--threads", "1"], flags);
    let server = Server::start_env(root_with_big, &args, envs);
    let request = b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n";
    let burst: Vec<u8> = request.iter().copied().cycle().take(300_000).collect();
    let mut attackers = Vec::new();
    for _ in 0..300 {
        let stream = TcpStream::connect(server.addr).expect("connect attacker");
        stream.set_nonblocking(true).unwrap();
        attackers.push((stream, 0usize));
    }
    // Push as much of each burst as the server lets in, for about a second.
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        for (stream, sent) in attackers.iter_mut().filter(|(_, sent)| *sent < burst.len()) {
            match stream.write(&burst[*sent..]) {
                Ok(n) => *sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => *sent = burst.len(), // closed by the server: fine
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let pushed: usize = attackers.iter().map(|(_, sent)| sent).sum();
    // While they sit there, unread, a normal client is served every time.
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        worst = worst.max(fetch_index(&server));
    }
    // And the server is idle, not spinning: less than a fifth of a core over two seconds
    // (a spinning worker burns all of it). A detector for a busy loop, not a benchmark.
    let before = cpu_secs(server.pid());
    std::thread::sleep(Duration::from_secs(2));
    let busy = cpu_secs(server.pid()) - before;
    eprintln!(
        "{flags:?}: attackers pushed {pushed} bytes; worst normal fetch {worst:?}; \
         server CPU {busy:.3} s over 2 s idle"
    );
    assert!(busy < 0.4, "{flags:?}: server used {busy:.3} s of CPU in 2 s with idle attackers");
    drop(attackers);
    fetch_index(&server);
}

#[test]
fn non_readers_cannot_starve_others_uring() {
    non_readers_cannot_starve_others(ENGINES[0], &[]);
}

/// The same on kernels without the multishot byte limit (before 6.17), where the held-buffer
/// caps bound what each connection takes.
#[test]
fn non_readers_cannot_starve_others_uring_without_recv_limit() {
    non_readers_cannot_starve_others(ENGINES[0], &[("RINGSERVE_NO_RECV_LIMIT", "1")]);
}

#[test]
fn non_readers_cannot_starve_others_blocking() {
    non_readers_cannot_starve_others(ENGINES[1], &[]);
}

#[test]
fn non_readers_cannot_starve_others_epoll() {
    non_readers_cannot_starve_others(ENGINES[2], &[]);
}

/// Case 2: a mapped file truncated in place (as `cp new old` does) and asked for before it is
/// re-checked. Tiny slices of it were copied in user space: SIGBUS killed the process.
#[test]
fn truncated_mapped_file_never_crashes() {
    for flags in ENGINES {
        // One worker that never re-checks: the cached mapping outlives the truncation.
        let args = with_engine(&["--revalidate-interval", "0", "--threads", "1"], flags);
        let server = Server::start(
            |root| {
                demo_root(root);
                std::fs::write(root.join("m.bin"), pseudo_random_bytes(64 << 10, 3)).unwrap();
            },
            &args,
        );
        let dir = server.root().to_path_buf();
        let r = get(&server, "GET /m.bin HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(r.body, pseudo_random_bytes(64 << 10, 3), "mapped and cached");
        let file = std::fs::OpenOptions::new().write(true).open(dir.join("m.bin")).unwrap();
        file.set_len(0).unwrap();
        file.write_all_at(b"short", 0).unwrap();
        for range in ["0-0", "0-99", "20000-20001", "60000-65535"] {
            let mut stream = server.connect();
            let request = format!("GET /m.bin HTTP/1.1\r\nHost: t\r\nRange: bytes={range}\r\n\r\n");
            stream.write_all(request.as_bytes()).unwrap();
            // The head may or may not arrive; what follows is a cut body and a close, never
            // a crash and never bytes that are not the file's.
            let mut got = Vec::new();
            let _ = stream.read_to_end(&mut got);
        }
        let mut stream = server.connect();
        stream.write_all(b"GET /m.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got);
        fetch_index(&server);
        let mut server = server;
        assert!(server.is_running(), "{flags:?}: the server died");
    }
}

/// Case 3: a request with a body and a second GET in the same burst. The second response was
/// lost on half the connections: receiving never resumed after a cancel completed late.
#[test]
fn a_body_then_a_request_in_one_burst_gets_both_answers() {
    for flags in ENGINES {
        let server = Server::start(root_with_big, flags);
        for (i, (method, body_len)) in
            [("POST", 40_000usize), ("GET", 1 << 20), ("GET", 40_000), ("POST", 1 << 20)]
                .into_iter()
                .cycle()
                .take(12)
                .enumerate()
        {
            let stream = server.connect();
            let mut burst = format!(
                "{method} /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: {body_len}\r\n\r\n"
            )
            .into_bytes();
            burst.extend(pseudo_random_bytes(body_len, i as u64));
            burst.extend_from_slice(b"GET /b.css HTTP/1.1\r\nHost: t\r\n\r\n");
            let writer = {
                let mut stream = stream.try_clone().unwrap();
                std::thread::spawn(move || stream.write_all(&burst))
            };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let first = read_response(&mut reader, false);
            assert_eq!(first.status, if method == "GET" { 200 } else { 405 }, "{flags:?} {i}");
            let second = read_response(&mut reader, false);
            assert_eq!((second.status, second.body.as_slice()), (200, &b"body{}\n"[..]));
            writer.join().unwrap().expect("the whole burst is received");
            stream.shutdown(Shutdown::Write).unwrap();
            assert_closed(&mut reader);
        }
    }
}

/// Case 4: pipelined requests, then a half-close (`nc -N`, `printf ... | nc -q`). Only the
/// first was answered, and without `Connection: close`.
#[test]
fn half_close_after_pipelined_requests_gets_every_answer() {
    for flags in ENGINES {
        let server = Server::start(root_with_big, flags);
        for first in ["/big.bin", "/a.txt"] {
            let mut stream = server.connect();
            let burst = format!(
                "GET {first} HTTP/1.1\r\nHost: t\r\n\r\nGET /b.css HTTP/1.1\r\nHost: t\r\n\r\n"
            );
            stream.write_all(burst.as_bytes()).unwrap();
            stream.shutdown(Shutdown::Write).unwrap();
            let mut reader = BufReader::new(stream);
            assert_eq!(read_response(&mut reader, false).status, 200, "{flags:?} {first}");
            let last = read_response(&mut reader, false);
            assert_eq!((last.status, last.body.as_slice()), (200, &b"body{}\n"[..]));
            if flags.is_empty() && first == "/big.bin" {
                // The second request waits behind the large body, so io_uring learns of the
                // end of stream before answering it. (Requests answered in the same turn as
                // they arrive cannot know it yet, nor can the blocking engine.)
                assert_eq!(last.header("connection"), Some("close"), "{first}");
            }
            assert_closed(&mut reader);
        }
    }
}

/// Case 5: a file appended to while it is served. Bodies came out longer than their
/// Content-Length (length from one stat, bytes from a later mapping), breaking the framing.
#[test]
fn a_growing_file_never_breaks_framing() {
    for flags in ENGINES {
        let args = with_engine(&["--revalidate-interval", "50"], flags);
        let server = Server::start(
            |root| {
                demo_root(root);
                std::fs::write(root.join("log.txt"), pseudo_random_bytes(20 << 10, 5)).unwrap();
            },
            &args,
        );
        let path = server.root().join("log.txt");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let appender = {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
                let chunk = pseudo_random_bytes(1000, 9);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    file.write_all(&chunk).unwrap();
                    std::thread::sleep(Duration::from_micros(300));
                }
            })
        };
        let started = Instant::now();
        let mut responses = 0;
        let (mut writer, mut reader) = (server.connect(), BufReader::new(server.connect()));
        while started.elapsed() < Duration::from_secs(2) {
            if responses % 400 == 0 {
                // A fresh connection well before the keep-alive request limit (1000).
                let stream = server.connect();
                writer = stream.try_clone().unwrap();
                reader = BufReader::new(stream);
            }
            // Pipelined pairs: a body longer than its Content-Length shows as a garbage head.
            writer.write_all(b"GET /log.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            writer.write_all(b"GET /b.css HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            let r = read_response(&mut reader, false);
            assert_eq!(r.status, 200);
            let next = read_response(&mut reader, false);
            assert_eq!((next.status, next.body.as_slice()), (200, &b"body{}\n"[..]), "{flags:?}");
            responses += 2;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        appender.join().unwrap();
        assert!(responses > 20, "{flags:?}: only {responses} responses");
    }
}

/// Case 6: descriptors run out while files that changed are re-opened. They were dropped (404)
/// until a later rescan; a cached file now keeps its last version until it can be re-opened,
/// and a path never seen before gets 503 with Retry-After, then is served once descriptors
/// are back.
#[test]
fn out_of_descriptors_keeps_cached_files_served_and_answers_503_for_new_ones() {
    const CHANGED: [&str; 3] = ["x.bin", "y.bin", "z.bin"];
    for flags in ENGINES {
        let args = with_engine(&["--revalidate-interval", "100", "--threads", "1"], flags);
        let server = Server::start(
            |root| {
                demo_root(root);
                for name in CHANGED {
                    std::fs::write(root.join(name), pseudo_random_bytes(20 << 10, 1)).unwrap();
                }
                std::fs::write(root.join("unseen.bin"), pseudo_random_bytes(20 << 10, 3)).unwrap();
            },
            &args,
        );
        let stream = server.connect();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        for name in ["a.txt", "x.bin", "y.bin", "z.bin"] {
            writer
                .write_all(format!("GET /{name} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                .unwrap();
            assert_eq!(read_response(&mut reader, false).status, 200);
        }
        // Leave the server no free descriptor: re-opening the changed files fails.
        let saved = exhaust_descriptors(server.pid());
        // New versions land by rename, all at once (re-checked every 100 ms).
        let staging = tempfile::tempdir().unwrap();
        for name in CHANGED {
            std::fs::write(staging.path().join(name), pseudo_random_bytes(21 << 10, 2)).unwrap();
        }
        for name in CHANGED {
            std::fs::copy(staging.path().join(name), server.root().join(format!(".{name}")))
                .unwrap();
        }
        for name in CHANGED {
            let hidden = server.root().join(format!(".{name}"));
            std::fs::rename(hidden, server.root().join(name)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(600));
        for name in CHANGED {
            writer
                .write_all(format!("GET /{name} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                .unwrap();
            let r = read_response(&mut reader, false);
            assert_eq!(r.status, 200, "{flags:?}: {name} must stay served (old or new bytes)");
        }
        // A file never opened before cannot be opened either.
        writer.write_all(b"GET /unseen.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let r = read_response(&mut reader, false);
        assert_eq!((r.status, r.header("retry-after")), (503, Some("1")), "{flags:?}");
        restore_descriptor_limit(server.pid(), saved);
        std::thread::sleep(Duration::from_millis(600));
        for name in CHANGED {
            writer
                .write_all(format!("GET /{name} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                .unwrap();
            let r = read_response(&mut reader, false);
            assert_eq!(r.body, pseudo_random_bytes(21 << 10, 2), "{flags:?}: {name} is new");
        }
        writer.write_all(b"GET /unseen.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let r = read_response(&mut reader, false);
        assert_eq!(r.body, pseudo_random_bytes(20 << 10, 3), "{flags:?}: served once possible");
    }
}

/// Case 7: a second server on a port the first listens on started anyway (SO_REUSEPORT) and
/// took half the connections for its own root.
#[test]
fn a_second_server_on_a_busy_port_refuses_to_start() {
    for flags in ENGINES {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let addr = format!("127.0.0.1:{port}");
        let dir = tempfile::tempdir().unwrap();
        demo_root(dir.path());
        let mut first = vec!["--addr", addr.as_str()];
        first.extend_from_slice(flags);
        let server = Server::start_at(dir.path(), &first);
        assert_eq!(server.addr.port(), port);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringserve"))
            .args(["--addr", &addr, "--root"])
            .arg(static_dir())
            .args(flags)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!((out.status.code(), err.lines().count()), (Some(2), 1), "{flags:?}: {err}");
        assert!(err.contains("already in use"), "{err}");
        fetch_index(&server);
    }
}

/// A request body that trickles in for longer than the keep-alive timeout is not cut off:
/// every byte of it restarts the idle timer (nginx's client_body_timeout counts between reads).
#[test]
fn a_slow_body_extends_the_idle_timer() {
    for flags in ENGINES {
        // Two seconds: with the one-second tick, a deadline is between one and two seconds
        // away, and the body below takes 2.4 s to arrive.
        let args = with_engine(&["--keepalive-timeout", "2"], flags);
        let server = Server::start(demo_root, &args);
        let mut stream = server.connect();
        stream.write_all(b"POST /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 16\r\n\r\n").unwrap();
        for _ in 0..8 {
            std::thread::sleep(Duration::from_millis(300));
            stream.write_all(b"xx").unwrap();
        }
        stream.write_all(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut reader = BufReader::new(stream);
        assert_eq!(read_response(&mut reader, false).status, 405, "{flags:?}");
        assert_eq!(read_response(&mut reader, false).body, b"file a\n", "{flags:?}");
    }
}

/// An early final response to `Expect: 100-continue`: the client may or may not send its body
/// now, so the server must not guess where the next request starts. It closes.
#[test]
fn expect_continue_with_a_body_is_answered_and_closed() {
    for flags in ENGINES {
        let server = Server::start(demo_root, flags);
        let mut stream = server.connect();
        stream
            .write_all(
                b"GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 36\r\n\
                  Expect: 100-continue\r\n\r\n",
            )
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let r = read_response(&mut reader, false);
        assert_eq!((r.status, r.header("connection")), (200, Some("close")), "{flags:?}");
        // The client went on without its body: this must not be skipped as one.
        let _ = stream.write_all(b"GET /b.css HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_closed(&mut reader);
    }
}

/// The 301 that adds a directory's slash keeps the query, as nginx does.
#[test]
fn directory_redirect_keeps_the_query() {
    for flags in ENGINES {
        let server = Server::start(demo_root, flags);
        let r = get(&server, "GET /sub?x=1&y=%20 HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!((r.status, r.header("location")), (301, Some("/sub/?x=1&y=%20")), "{flags:?}");
    }
}

/// `If-Modified-Since` later than the server's clock is invalid and ignored: 200, not 304.
#[test]
fn if_modified_since_in_the_future_is_ignored() {
    for flags in ENGINES {
        if_modified_since_in_the_future_is_ignored_by(flags);
    }
}

fn if_modified_since_in_the_future_is_ignored_by(flags: &[&str]) {
    let server = Server::start(demo_root, flags);
    let r = get(
        &server,
        "GET /a.txt HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let lm = r.header("last-modified").expect("Last-Modified").to_string();
    let r =
        get(&server, &format!("GET /a.txt HTTP/1.1\r\nHost: t\r\nIf-Modified-Since: {lm}\r\n\r\n"));
    assert_eq!(r.status, 304, "a valid past date still gives 304");
}

/// Descriptors go back to their level after a storm of hostile connections.
#[test]
fn descriptors_return_to_baseline_after_hostile_clients() {
    let server = Server::start(root_with_big, &["--threads", "1"]);
    fetch_index(&server);
    let baseline = open_fds(server.pid());
    for i in 0..50 {
        let mut stream = server.connect();
        let _ = stream.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
        if i % 2 == 0 {
            let mut some = [0u8; 1000];
            let _ = stream.read(&mut some);
            let socket = socket2::Socket::from(stream);
            let _ = socket.set_linger(Some(Duration::ZERO)); // reset mid-body
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_fds(server.pid()) > baseline + 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // The descriptors installed for sendfile close with their connections.
    assert!(open_fds(server.pid()) <= baseline + 2, "{} vs {baseline}", open_fds(server.pid()));
}

/// Bytes the server's socket for `client` (a local connection to `server`) has queued and the
/// client has not acknowledged (tx_queue in /proc/net/tcp), if the socket is found.
fn server_send_queue(server: &Server, client: &std::net::TcpStream) -> Option<u64> {
    let (server_port, client_port) = (server.addr.port(), client.local_addr().ok()?.port());
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let ours = fields.get(1)?.ends_with(&format!(":{server_port:04X}"))
            && fields.get(2)?.ends_with(&format!(":{client_port:04X}"));
        let (tx, _rx) = fields.get(4)?.split_once(':')?;
        ours.then(|| u64::from_str_radix(tx, 16).ok()).flatten()
    })
}

/// Case 10: a client that reads nothing of a 4 MiB body. The server's socket once queued all
/// the send buffer allowed (2.9 MB each); 1,000 such clients took 1.3 GB of TCP memory, and
/// allocating it held the CPU for seconds while normal clients timed out. The unsent bytes are
/// now capped (TCP_NOTSENT_LOWAT, 128 KiB) in every engine.
#[test]
fn a_slow_reader_gets_little_queued() {
    for flags in ENGINES {
        let server = Server::start(root_with_big, &with_engine(&["--threads", "1"], flags));
        let mut client = server.connect_slow_reader();
        client.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        // Wait until the queue stops growing.
        let mut queued = None;
        for _ in 0..30 {
            std::thread::sleep(Duration::from_millis(100));
            let now = server_send_queue(&server, &client);
            if now.is_some_and(|n| n > 0) && now == queued {
                break;
            }
            queued = now;
        }
        let queued = queued.expect("the server's socket in /proc/net/tcp");
        assert!(queued > 0, "{flags:?}: the body started");
        assert!(queued <= 256 << 10, "{flags:?}: {queued} bytes queued for a client not reading");
    }
}
