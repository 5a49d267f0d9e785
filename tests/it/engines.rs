//! The same conformance run against every engine: they share the HTTP layer and the file
//! snapshot, so they must answer byte-for-byte alike (only Date may differ).

use std::io::{BufReader, Write};
use std::time::Duration;

use crate::support::*;

fn conformance(flags: &[&str]) {
    let server = Server::start(
        |root| {
            demo_root(root);
            std::fs::write(root.join("big.bin"), pseudo_random_bytes(3 << 20, 11)).unwrap();
        },
        flags,
    );
    // Keep-alive with pipelining: 120 requests in one write, answered in order.
    let mut stream = server.connect();
    let mut burst = Vec::new();
    for i in 0..120 {
        let path = if i % 2 == 0 { "/a.txt" } else { "/missing" };
        burst.extend(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    }
    stream.write_all(&burst).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for i in 0..120 {
        let r = read_response(&mut reader, false);
        assert_eq!(r.status, if i % 2 == 0 { 200 } else { 404 }, "{flags:?} response {i}");
    }
    // A large body, byte-exact, then HEAD, then 405, on the same connection.
    stream.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert!(read_response(&mut reader, false).body == pseudo_random_bytes(3 << 20, 11));
    stream.write_all(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(
        read_response(&mut reader, true).header("content-length"),
        Some(INDEX.len().to_string().as_str())
    );
    stream.write_all(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi").unwrap();
    assert_eq!(read_response(&mut reader, false).status, 405);
    // Byte at a time.
    for byte in b"GET /b.css HTTP/1.1\r\nHost: t\r\n\r\n" {
        stream.write_all(&[*byte]).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(read_response(&mut reader, false).body, b"body{}\n");
    // Traversal and a malformed request: 400 and close.
    stream.write_all(b"GET /../etc/passwd HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let r = read_response(&mut reader, false);
    assert_eq!((r.status, r.header("connection")), (400, Some("close")));
    assert_closed(&mut reader);
    let status = server.terminate();
    assert!(status.success(), "{flags:?}: {status:?}");
}

#[test]
fn uring_engine_conformance() {
    conformance(&[]);
}

#[test]
fn blocking_engine_conformance() {
    conformance(&["--engine", "blocking"]);
}

#[test]
fn epoll_engine_conformance() {
    conformance(&["--engine", "epoll"]);
}

#[test]
fn epoll_engine_banner_and_timeouts() {
    let server = Server::start(demo_root, &["--engine", "epoll", "--header-timeout", "1"]);
    assert!(server.banner.contains("engine epoll, 2 worker threads"), "{}", server.banner);
    let mut stream = server.connect();
    stream.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    let mut reader = BufReader::new(stream);
    let r = read_response(&mut reader, false);
    assert_eq!(r.status, 408);
    assert_closed(&mut reader);
}

#[test]
fn blocking_engine_banner_and_timeouts() {
    let server = Server::start(demo_root, &["--engine", "blocking", "--header-timeout", "1"]);
    assert!(server.banner.contains("engine blocking"), "{}", server.banner);
    let mut stream = server.connect();
    stream.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    let mut reader = BufReader::new(stream);
    let r = read_response(&mut reader, false);
    assert_eq!(r.status, 408);
    assert_closed(&mut reader);
}
