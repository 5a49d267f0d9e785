//! Soak: many concurrent keep-alive clients, mixed files, HEADs, ranges and pipelined bursts,
//! every body checked byte-exact against the file; afterwards the server's open descriptors
//! and memory are back near where they started. Bounded by RINGSERVE_SOAK_SECS (default 8 s;
//! set it higher for a longer soak).

use std::io::{BufReader, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;

const FILES: [(&str, usize); 7] = [
    ("empty.bin", 0),
    ("one.bin", 1),
    ("small.txt", 100),
    ("page.html", 3000),
    ("image.bin", 64 * 1024),
    ("large.bin", 1024 * 1024),
    ("huge.bin", 5 * 1024 * 1024),
];

const CLIENTS: usize = 32;

fn contents(index: usize) -> Vec<u8> {
    pseudo_random_bytes(FILES[index].1, 1000 + index as u64)
}

#[test]
fn soak_mixed_load_is_byte_exact_and_leaves_nothing_behind() {
    let secs: u64 =
        std::env::var("RINGSERVE_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    let server = Server::start(
        |root| {
            for (i, (name, _)) in FILES.iter().enumerate() {
                std::fs::write(root.join(name), contents(i)).unwrap();
            }
        },
        // Warm: every file is in the cache (and holds its descriptor) before the baseline.
        &["--keepalive-requests", "100000000", "--warm"],
    );
    std::thread::sleep(Duration::from_millis(300));
    let (fds_before, rss_before) = (open_fds(server.pid()), status_kib(server.pid(), "RssAnon"));
    let files: Arc<Vec<Vec<u8>>> = Arc::new((0..FILES.len()).map(contents).collect());
    let requests = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (files, requests, addr) = (Arc::clone(&files), Arc::clone(&requests), server.addr);
            std::thread::spawn(move || {
                let mut seed = 0x50a4_0000 + client as u64;
                let mut rand = move |n: usize| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed % n.max(1) as u64) as usize
                };
                let mut stream = std::net::TcpStream::connect(addr).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(IO_TIMEOUT_SECS))).unwrap();
                stream.set_nodelay(true).unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                while Instant::now() < deadline {
                    let index = rand(FILES.len());
                    let (name, len) = FILES[index];
                    let body = &files[index];
                    match rand(4) {
                        0 => {
                            write!(stream, "HEAD /{name} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
                            let r = read_response(&mut reader, true);
                            assert_eq!(r.header("content-length"), Some(len.to_string().as_str()));
                        }
                        1 if len > 1 => {
                            let first = rand(len);
                            let last = first + rand(len - first);
                            write!(stream, "GET /{name} HTTP/1.1\r\nHost: t\r\nRange: bytes={first}-{last}\r\n\r\n").unwrap();
                            let r = read_response(&mut reader, false);
                            assert_eq!(r.status, 206, "{name} {first}-{last}");
                            assert!(r.body == body[first..=last], "{name} range {first}-{last} differs");
                        }
                        2 => {
                            let burst = format!("GET /{name} HTTP/1.1\r\nHost: t\r\n\r\n").repeat(4);
                            stream.write_all(burst.as_bytes()).unwrap();
                            for _ in 0..4 {
                                let r = read_response(&mut reader, false);
                                assert!(r.status == 200 && r.body == *body, "{name} in a burst differs");
                            }
                            requests.fetch_add(3, Ordering::Relaxed);
                        }
                        _ => {
                            write!(stream, "GET /{name} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
                            let r = read_response(&mut reader, false);
                            assert!(r.status == 200 && r.body == *body, "{name} differs");
                        }
                    }
                    requests.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut failed = 0;
    for client in clients {
        failed += usize::from(client.join().is_err());
    }
    assert_eq!(failed, 0, "{failed} clients saw a mismatch or an error");
    let total = requests.load(Ordering::Relaxed);
    // Let the server notice the closes and trim its pools (one 1 s tick).
    let settle = Instant::now();
    while open_fds(server.pid()) > fds_before && settle.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(2500));
    let (fds_after, rss_after) = (open_fds(server.pid()), status_kib(server.pid(), "RssAnon"));
    eprintln!(
        "soak: {total} requests by {CLIENTS} clients in {secs} s, 0 mismatches; fds {fds_before} -> {fds_after}; \
         anonymous RSS {rss_before} -> {rss_after} KiB"
    );
    assert!(total > 1000, "only {total} requests");
    assert_eq!(fds_after, fds_before, "descriptors leaked");
    assert!(rss_after < rss_before + 8 * 1024, "RSS grew from {rss_before} to {rss_after} KiB");
}
