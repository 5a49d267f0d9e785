//! The on-demand file cache over real TCP: a 200,000-file tree served at once, changes of
//! every kind visible within a second, byte-exact bodies while a small cache evicts, and the
//! fault cases (FIFOs, symlink loops, very long and very deep paths, floods of missing paths).

use std::io::{BufReader, Write};
use std::time::{Duration, Instant};

use crate::support::*;

/// Files in the large tree: 400 directories of 500.
const LARGE_DIRS: usize = 400;
const LARGE_FILES_PER_DIR: usize = 500;

/// Deterministic contents of large-tree file `d`/`f`: sizes from 1 byte to about 20 KiB, on
/// both sides of the read/map threshold.
fn large_file(d: usize, f: usize) -> Vec<u8> {
    let len = 1 + (d * 7919 + f * 104_729) % (20 << 10);
    pseudo_random_bytes(len, (d * LARGE_FILES_PER_DIR + f) as u64)
}

fn large_tree(root: &std::path::Path) {
    std::fs::write(root.join("index.html"), INDEX).unwrap();
    for d in 0..LARGE_DIRS {
        let dir = root.join(format!("d{d}"));
        std::fs::create_dir(&dir).unwrap();
        for f in 0..LARGE_FILES_PER_DIR {
            std::fs::write(dir.join(format!("f{f}.html")), large_file(d, f)).unwrap();
        }
    }
}

/// 200,000 files: the first response comes at once (nothing is scanned), any file is served
/// byte-exact, and idle costs nothing.
#[test]
fn a_large_tree_is_served_at_once() {
    let dir = tempfile::tempdir().unwrap();
    large_tree(dir.path());
    let started = Instant::now();
    let server =
        Server::start_at(dir.path(), &["--threads", "1", "--keepalive-requests", "100000"]);
    let r = get(&server, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let first = started.elapsed();
    assert_eq!(r.body, INDEX);
    // Generous: this detects a scan of the tree (seconds), it is not a benchmark.
    assert!(first < Duration::from_secs(2), "first response after {first:?}");
    let stream = server.connect();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut seed = 0x1a26_e7ee_u64;
    for _ in 0..2000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let (d, f) =
            ((seed % LARGE_DIRS as u64) as usize, (seed >> 20) as usize % LARGE_FILES_PER_DIR);
        write!(writer, "GET /d{d}/f{f}.html HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let r = read_response(&mut reader, false);
        assert!(r.status == 200 && r.body == large_file(d, f), "d{d}/f{f}.html");
    }
    let before = cpu_secs(server.pid());
    std::thread::sleep(Duration::from_secs(2));
    let idle = cpu_secs(server.pid()) - before;
    eprintln!("large tree: first response after {first:?}; idle CPU {idle:.2} s in 2 s");
    assert!(idle <= 0.05, "idle server used {idle:.2} s of CPU in 2 s");
}

/// Created, rewritten in place, replaced by rename, truncated and deleted files all show up
/// within a second, on a connection that keeps asking.
#[test]
fn changes_of_every_kind_show_within_a_second() {
    // Each engine, watching with inotify (the default) and re-checking by interval.
    let modes = ENGINES.iter().flat_map(|engine| [(*engine, false), (*engine, true)]);
    for (engine, no_watch) in modes {
        // One worker: each worker re-checks its own cache, so with two a fresh connection could
        // meet the other worker's copy, still within its interval.
        let base: &[&str] =
            if no_watch { &["--threads", "1", "--no-watch"] } else { &["--threads", "1"] };
        let args = with_engine(base, engine);
        let flags = &args;
        let server = Server::start(demo_root, &args);
        let root = server.root().to_path_buf();
        let mut client = Client::new(&server);
        assert_eq!(client.fetch("/new.txt").0, 404);
        std::fs::write(root.join("new.txt"), b"created").unwrap();
        client.wait_for("/new.txt", (200, b"created".to_vec()), "a created file");
        std::fs::write(root.join("new.txt"), b"rewritten in place").unwrap();
        client.wait_for("/new.txt", (200, b"rewritten in place".to_vec()), "a rewrite");
        let big = pseudo_random_bytes(100 << 10, 4);
        std::fs::write(root.join("staged"), &big).unwrap();
        std::fs::rename(root.join("staged"), root.join("new.txt")).unwrap();
        client.wait_for("/new.txt", (200, big.clone()), "a replacement by rename");
        std::fs::OpenOptions::new()
            .write(true)
            .open(root.join("new.txt"))
            .unwrap()
            .set_len(10)
            .unwrap();
        // Until the re-check, the cached 100 KiB mapping is still chosen and its send is cut
        // short (the connection closes): ask on fresh connections.
        let started = Instant::now();
        while Client::fetch_fresh(&server, "/new.txt") != (200, big[..10].to_vec()) {
            assert!(started.elapsed() < Duration::from_millis(1500), "{flags:?}: a truncation");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut client = Client::new(&server);
        std::fs::remove_file(root.join("new.txt")).unwrap();
        client.wait_for("/new.txt", (404, Status404::body()), "a deletion");
        std::fs::write(root.join("a.txt.gz"), b"GZ").unwrap();
        let started = Instant::now();
        loop {
            let request = "GET /a.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n";
            client.writer.write_all(request.as_bytes()).unwrap();
            let r = read_response(&mut client.reader, false);
            if r.header("content-encoding") == Some("gzip") {
                break;
            }
            assert!(started.elapsed() < Duration::from_millis(1500), "{flags:?}: a new variant");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One keep-alive connection that asks again and again.
struct Client {
    writer: std::net::TcpStream,
    reader: BufReader<std::net::TcpStream>,
}

impl Client {
    fn new(server: &Server) -> Client {
        let stream = server.connect();
        Client { writer: stream.try_clone().unwrap(), reader: BufReader::new(stream) }
    }

    fn fetch(&mut self, path: &str) -> (u16, Vec<u8>) {
        write!(self.writer, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let r = read_response(&mut self.reader, false);
        (r.status, r.body)
    }

    /// As `fetch`, on a fresh connection; a response cut short (a cached mapping truncated
    /// under the send, which closes the connection) reads as status 0.
    fn fetch_fresh(server: &Server, path: &str) -> (u16, Vec<u8>) {
        let mut stream = server.connect();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
        let mut all = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stream, &mut all);
        let Some(split) = all.windows(4).position(|w| w == b"\r\n\r\n") else { return (0, all) };
        let head = String::from_utf8_lossy(&all[..split]).to_ascii_lowercase();
        let body = all[split + 4..].to_vec();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok());
        if len != Some(body.len()) {
            return (0, body);
        }
        (head[9..12].parse().unwrap_or(0), body)
    }

    /// Asks for `path` until it answers `want`; fails after 1.5 s.
    fn wait_for(&mut self, path: &str, want: (u16, Vec<u8>), what: &str) {
        let started = Instant::now();
        while self.fetch(path) != want {
            assert!(started.elapsed() < Duration::from_millis(1500), "{what} not seen in time");
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{what}: seen after {:?}", started.elapsed());
    }
}

/// The body of ringserve's 404 page, as served.
struct Status404;

impl Status404 {
    fn body() -> Vec<u8> {
        b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body><h1>404 Not Found</h1><hr>ringserve</body></html>\n".to_vec()
    }
}

/// A cache far smaller than the working set keeps evicting; every body stays byte-exact,
/// including large ones still being sent when their entry is evicted.
#[test]
fn a_small_cache_evicts_and_every_body_stays_exact() {
    for flags in ENGINES {
        let args =
            with_engine(&["--cache-entries", "8", "--cache-mib", "1", "--threads", "1"], flags);
        let server = Server::start(
            |root| {
                for i in 0..40 {
                    let len = if i % 5 == 0 { 300 << 10 } else { 3000 + i * 700 };
                    std::fs::write(
                        root.join(format!("{i}.bin")),
                        pseudo_random_bytes(len, i as u64),
                    )
                    .unwrap();
                }
            },
            &args,
        );
        let stream = server.connect();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        for round in 0..6 {
            // Pipelined bursts of 10, so entries are evicted while their bodies are queued.
            for start in (0..40).step_by(10) {
                let mut burst = String::new();
                for i in start..start + 10 {
                    burst.push_str(&format!("GET /{i}.bin HTTP/1.1\r\nHost: t\r\n\r\n"));
                }
                writer.write_all(burst.as_bytes()).unwrap();
                for i in start..start + 10 {
                    let len = if i % 5 == 0 { 300 << 10 } else { 3000 + i * 700 };
                    let r = read_response(&mut reader, false);
                    assert!(
                        r.status == 200 && r.body == pseudo_random_bytes(len, i as u64),
                        "{flags:?} round {round}: {i}.bin"
                    );
                }
            }
        }
    }
}

/// Paths that can never be served get a 4xx at once: a FIFO (whose open would block), a
/// symlink loop, a path longer than PATH_MAX, one deeper than any directory; and a flood of
/// distinct missing paths does not grow the server.
#[test]
fn unservable_paths_get_a_4xx_and_floods_stay_bounded() {
    for flags in ENGINES {
        let args = with_engine(
            &["--cache-entries", "500", "--threads", "1", "--keepalive-requests", "100000"],
            flags,
        );
        let server = Server::start(
            |root| {
                demo_root(root);
                let fifo = std::ffi::CString::new(root.join("pipe").as_os_str().as_encoded_bytes());
                // SAFETY: mkfifo reads a NUL-terminated path that lives across the call.
                assert_eq!(unsafe { libc::mkfifo(fifo.unwrap().as_ptr(), 0o644) }, 0);
                std::os::unix::fs::symlink("loop2", root.join("loop1")).unwrap();
                std::os::unix::fs::symlink("loop1", root.join("loop2")).unwrap();
            },
            &args,
        );
        let long = format!("/{}", "a".repeat(5000));
        let deep = "/x".repeat(2000);
        for path in ["/pipe", "/loop1", long.as_str(), deep.as_str(), "/a.txt/x"] {
            let started = Instant::now();
            let r = get(&server, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"));
            assert_eq!(r.status, 404, "{flags:?} {}", &path[..path.len().min(40)]);
            assert!(started.elapsed() < Duration::from_secs(2), "{flags:?}: answered at once");
        }
        let rss = |pid: u32| status_kib(pid, "RssAnon");
        let flood = |n: std::ops::Range<u32>| {
            let stream = server.connect();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            for i in n {
                write!(
                    writer,
                    "GET /missing-{i:08}-{} HTTP/1.1\r\nHost: t\r\n\r\n",
                    "p".repeat(200)
                )
                .unwrap();
                assert_eq!(read_response(&mut reader, false).status, 404);
            }
        };
        flood(0..5000);
        let after_first = rss(server.pid());
        flood(5000..25_000);
        let after_more = rss(server.pid());
        eprintln!("{flags:?}: anonymous RSS after 5,000 missing paths {after_first} KiB, after 25,000 {after_more} KiB");
        assert!(after_more < after_first + 2048, "{after_first} -> {after_more} KiB");
        assert_eq!(get(&server, "GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n").body, b"file a\n");
    }
}

/// Misses wait in their connection while the worker serves others: one worker, four
/// connections pipelining requests for files never seen (two of them for the same files in the
/// same order, so they join the same fills), and one fetching a cached file throughout. Every
/// body arrives whole and in order, with a small cache evicting all along.
#[test]
fn misses_interleave_with_hits_on_other_connections() {
    const FILES: usize = 600;
    let body = |i: usize| pseudo_random_bytes(100 + (i * 977) % (40 << 10), i as u64);
    for flags in ENGINES {
        let args = with_engine(&["--threads", "1", "--cache-entries", "64"], flags);
        let server = Server::start(
            |root| {
                std::fs::write(root.join("hot.txt"), b"hot\n").unwrap();
                for d in 0..6 {
                    std::fs::create_dir(root.join(format!("d{d}"))).unwrap();
                }
                for i in 0..FILES {
                    std::fs::write(root.join(format!("d{}/{i}.bin", i % 6)), body(i)).unwrap();
                }
            },
            &args,
        );
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let hits = {
            let (addr, stop) = (server.addr, stop.clone());
            std::thread::spawn(move || {
                let mut served = 0;
                let (mut writer, mut reader) = (None, None);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if served % 500 == 0 {
                        // A fresh connection well before the keep-alive request limit (1000).
                        let stream = std::net::TcpStream::connect(addr).unwrap();
                        writer = Some(stream.try_clone().unwrap());
                        reader = Some(BufReader::new(stream));
                    }
                    let (writer, reader) = (writer.as_mut().unwrap(), reader.as_mut().unwrap());
                    writer.write_all(b"GET /hot.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
                    let r = read_response(reader, false);
                    assert_eq!((r.status, r.body.as_slice()), (200, &b"hot\n"[..]));
                    served += 1;
                }
                served
            })
        };
        let missers: Vec<_> = [0usize, 0, 1, 2]
            .into_iter()
            .map(|phase| {
                let stream = server.connect();
                std::thread::spawn(move || {
                    let mut writer = stream.try_clone().unwrap();
                    let mut reader = BufReader::new(stream);
                    let order: Vec<usize> =
                        (0..FILES).map(|k| (k * 7 + phase * 200) % FILES).collect();
                    for burst in order.chunks(16) {
                        let mut text = String::new();
                        for i in burst {
                            text.push_str(&format!(
                                "GET /d{}/{i}.bin HTTP/1.1\r\nHost: t\r\n\r\n",
                                i % 6
                            ));
                        }
                        writer.write_all(text.as_bytes()).unwrap();
                        for &i in burst {
                            let r = read_response(&mut reader, false);
                            assert!(r.status == 200 && r.body == body(i), "d{}/{i}.bin", i % 6);
                        }
                    }
                })
            })
            .collect();
        for misser in missers {
            misser.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let served = hits.join().unwrap();
        assert!(served > 0, "{flags:?}: the cached file was served meanwhile");
    }
}
