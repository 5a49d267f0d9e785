//! Files changing under a running server, and graceful shutdown.

use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

use crate::support::*;

/// The bound on how soon a change must be visible.
const CHANGE_VISIBLE_MILLIS: u128 = 1000;

/// Polls `path` until `accept` holds; returns how long it took.
fn wait_for(server: &Server, path: &str, accept: impl Fn(&Response) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let r = get(server, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"));
        if accept(&r) {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{path}: change never showed: {r:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn changes_under_the_root_show_up_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    demo_root(&root);
    let server = Server::start_at(&root, &[]);
    // Rewrite in place (new length), add, delete, and replace by rename.
    std::fs::write(root.join("a.txt"), b"rewritten a, longer\n").unwrap();
    let took = wait_for(&server, "/a.txt", |r| r.body == b"rewritten a, longer\n");
    assert!(took.as_millis() < CHANGE_VISIBLE_MILLIS, "rewrite took {took:?}");
    std::fs::write(root.join("new.txt"), b"new").unwrap();
    let took = wait_for(&server, "/new.txt", |r| r.status == 200 && r.body == b"new");
    assert!(took.as_millis() < CHANGE_VISIBLE_MILLIS, "add took {took:?}");
    std::fs::remove_file(root.join("b.css")).unwrap();
    let took = wait_for(&server, "/b.css", |r| r.status == 404);
    assert!(took.as_millis() < CHANGE_VISIBLE_MILLIS, "delete took {took:?}");
    std::fs::write(root.join("tmp.html"), b"replaced index").unwrap();
    std::fs::rename(root.join("tmp.html"), root.join("index.html")).unwrap();
    let took = wait_for(&server, "/", |r| r.body == b"replaced index");
    assert!(took.as_millis() < CHANGE_VISIBLE_MILLIS, "replace took {took:?}");
}

#[test]
fn truncating_a_file_mid_download_closes_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    demo_root(&root);
    let big = root.join("big.bin");
    std::fs::write(&big, pseudo_random_bytes(16 << 20, 3)).unwrap();
    let mut server = Server::start_at(&root, &[]);
    let mut stream = server.connect_slow_reader();
    stream.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut first = vec![0u8; 100_000];
    stream.read_exact(&mut first).unwrap();
    std::fs::OpenOptions::new().write(true).open(&big).unwrap().set_len(1 << 20).unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest); // EOF or reset, never a hang
    let received = first.len() + rest.len();
    assert!(received < 16 << 20, "got {received} bytes: the truncation went unnoticed");
    assert!(server.is_running(), "the server survived the truncation");
    // Until the cache re-checks the file, the old (now truncated) mapping may still be chosen:
    // such a response fails the same way. After it, the new length is served.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(get(&server, "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n").body.len(), 1 << 20);
    assert_eq!(get(&server, "GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n").body, b"file a\n");
}

#[test]
fn sigterm_finishes_in_flight_responses_and_closes_idle_ones() {
    let server = Server::start(
        |root| {
            demo_root(root);
            std::fs::write(root.join("big.bin"), pseudo_random_bytes(16 << 20, 9)).unwrap();
        },
        &[],
    );
    let mut idle = server.connect();
    idle.write_all(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut idle_reader = BufReader::new(idle.try_clone().unwrap());
    assert_eq!(read_response(&mut idle_reader, false).status, 200);

    let mut busy = server.connect();
    busy.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut busy_reader = BufReader::new(busy.try_clone().unwrap());
    let mut head = [0u8; 64];
    busy_reader.read_exact(&mut head).unwrap(); // the response has started
    let addr = server.addr;
    let terminator = std::thread::spawn(move || server.terminate());
    std::thread::sleep(Duration::from_millis(300));
    let mut rest = Vec::new();
    busy_reader.read_to_end(&mut rest).unwrap();
    let total = head.len() + rest.len();
    assert!(total > 16 << 20, "the in-flight response was cut short at {total} bytes");
    assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 200"));
    assert_closed(&mut idle_reader);
    let status = terminator.join().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(std::net::TcpStream::connect(addr).is_err(), "still accepting after exit");
}
