//! Pipelined requests answered in order, requests split across reads, bodies skipped.

use std::io::{BufReader, Write};
use std::time::Duration;

use crate::support::*;

#[test]
fn many_requests_in_one_write_are_answered_in_order() {
    let server = Server::start(demo_root, &[]);
    let mut stream = server.connect();
    let paths = ["/a.txt", "/b.css", "/", "/missing", "/sub/"];
    let count = 150;
    let mut burst = Vec::new();
    for i in 0..count {
        let path = paths[i % paths.len()];
        burst.extend(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    }
    stream.write_all(&burst).unwrap();
    let mut reader = BufReader::new(stream);
    for i in 0..count {
        let r = read_response(&mut reader, false);
        let expected: (u16, &[u8]) = match paths[i % paths.len()] {
            "/a.txt" => (200, b"file a\n"),
            "/b.css" => (200, b"body{}\n"),
            "/" => (200, INDEX),
            "/sub/" => (200, b"sub index\n"),
            _ => (404, b""),
        };
        assert_eq!(r.status, expected.0, "response {i}");
        if expected.0 == 200 {
            assert_eq!(r.body, expected.1, "response {i}");
        }
    }
}

#[test]
fn a_large_pipelined_burst_survives_backpressure() {
    // 2,000 requests in one write: more than the input buffer holds while responses are being
    // sent, so the server must pause receiving and resume without losing a request.
    let server = Server::start(demo_root, &["--keepalive-requests", "100000"]);
    let mut stream = server.connect();
    let count = 2000;
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        std::thread::spawn(move || {
            for _ in 0..count {
                stream.write_all(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            }
        })
    };
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for i in 0..count {
        let r = read_response(&mut reader, false);
        assert_eq!((r.status, r.body.as_slice()), (200, &b"file a\n"[..]), "response {i}");
    }
    writer.join().unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut reader, false).body, INDEX);
}

#[test]
fn a_request_sent_one_byte_at_a_time_is_served() {
    let server = Server::start(demo_root, &[]);
    let mut stream = server.connect();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let request = b"GET /a.txt HTTP/1.1\r\nHost: t\r\nUser-Agent: slow\r\n\r\n";
    for round in 0..2 {
        for byte in request {
            stream.write_all(&[*byte]).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        let r = read_response(&mut reader, false);
        assert_eq!((r.status, r.body.as_slice()), (200, &b"file a\n"[..]), "round {round}");
    }
}

#[test]
fn pipelined_requests_split_at_every_offset() {
    let server = Server::start(demo_root, &[]);
    let two = b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\nGET /b.css HTTP/1.1\r\nHost: t\r\n\r\n";
    for split in [1, 5, 20, 31, 32, 33, 40, two.len() - 1] {
        let mut stream = server.connect();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        stream.write_all(&two[..split]).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        stream.write_all(&two[split..]).unwrap();
        assert_eq!(read_response(&mut reader, false).body, b"file a\n", "split {split}");
        assert_eq!(read_response(&mut reader, false).body, b"body{}\n", "split {split}");
    }
}

#[test]
fn a_body_on_get_is_skipped_not_parsed_as_a_request() {
    let server = Server::start(demo_root, &[]);
    let mut stream = server.connect();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let smuggled = "GET /b.css HTTP/1.1\r\nHost: t\r\n\r\n";
    write!(stream, "GET /a.txt HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", smuggled.len())
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    stream.write_all(smuggled.as_bytes()).unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut reader, false).body, b"file a\n");
    assert_eq!(read_response(&mut reader, false).body, INDEX, "the body was not served as /b.css");
}

#[test]
fn the_keepalive_request_limit_closes_cleanly_even_with_requests_pending() {
    // The third response says `Connection: close`; the pipelined fourth request is discarded
    // by a lingering close, so the client reads all three responses and then EOF, not a reset.
    let server = Server::start(demo_root, &["--keepalive-requests", "3"]);
    let mut stream = server.connect();
    stream.write_all(&b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n".repeat(4)).unwrap();
    let mut reader = BufReader::new(stream);
    for i in 0..3 {
        let r = read_response(&mut reader, false);
        assert_eq!(r.status, 200);
        let expected = if i == 2 { Some("close") } else { None };
        assert_eq!(r.header("connection"), expected, "response {i}");
    }
    assert_closed(&mut reader);
}
