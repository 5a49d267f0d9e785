//! Keep-alive, HEAD, status codes, connection handling and the CLI.

use std::io::{BufReader, Write};
use std::process::Command;

use crate::support::*;

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let server = Server::start(demo_root, &[]);
    let mut stream = server.connect();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for path in ["/", "/a.txt", "/b.css", "/sub/", "/"] {
        write!(stream, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let r = read_response(&mut reader, false);
        assert_eq!(r.status, 200, "{path}: {}", r.head);
        assert_eq!(r.header("connection"), None, "1.1 keep-alive needs no Connection header");
    }
    write!(stream, "GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut reader, false).body, b"file a\n");
}

#[test]
fn headers_of_a_200() {
    let server = Server::start(demo_root, &[]);
    let r = get(&server, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, INDEX);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("content-length"), Some(INDEX.len().to_string().as_str()));
    assert_eq!(r.header("server"), Some("ringserve"));
    let date = r.header("date").expect("Date header");
    assert!(httpdate::parse_http_date(date).is_ok(), "IMF-fixdate: {date}");
    let css = get(&server, "GET /b.css HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
}

#[test]
fn head_sends_the_headers_of_get_without_a_body() {
    let server = Server::start(demo_root, &[]);
    let mut stream = server.connect();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    stream
        .write_all(b"HEAD /a.txt HTTP/1.1\r\nHost: t\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let head = read_response(&mut reader, true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("7"));
    // If HEAD had sent a body, this read would see "file a" instead of a status line.
    let get = read_response(&mut reader, false);
    assert_eq!(get.body, b"file a\n");
}

#[test]
fn missing_files_get_404_and_the_connection_stays_open() {
    let server = Server::start(demo_root, &[]);
    let mut stream = server.connect();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    stream.write_all(b"GET /nope.html HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let r = read_response(&mut reader, false);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    stream.write_all(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut reader, false).status, 200);
}

#[test]
fn other_methods_get_405_with_allow() {
    let server = Server::start(demo_root, &[]);
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "PATCH"] {
        let r =
            get(&server, &format!("{method} / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"));
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }
}

#[test]
fn malformed_requests_get_400_and_a_close() {
    let server = Server::start(demo_root, &[]);
    for bad in
        ["GARBAGE\r\n\r\n", "GET / HTTP/1.1\r\nNo colon here\r\n\r\n", "GET / HTTP/1.1\r\n\r\n"]
    {
        let mut stream = server.connect();
        stream.write_all(bad.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let r = read_response(&mut reader, false);
        assert_eq!(r.status, 400, "{bad:?}");
        assert_eq!(r.header("connection"), Some("close"));
        assert_closed(&mut reader);
    }
}

#[test]
fn connection_close_and_http10_close_after_the_response() {
    let server = Server::start(demo_root, &[]);
    for request in
        ["GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", "GET / HTTP/1.0\r\n\r\n"]
    {
        let mut stream = server.connect();
        stream.write_all(request.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let r = read_response(&mut reader, false);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), Some("close"));
        assert_closed(&mut reader);
    }
}

#[test]
fn http10_keep_alive_when_asked() {
    let server = Server::start(demo_root, &[]);
    let mut stream = server.connect();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for _ in 0..3 {
        stream.write_all(b"GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        let r = read_response(&mut reader, false);
        assert_eq!(r.header("connection"), Some("keep-alive"));
        assert_eq!(r.body, b"file a\n");
    }
}

#[test]
fn banner_names_url_root_engine_threads_and_files() {
    let server = Server::start(demo_root, &[]);
    let b = &server.banner;
    assert!(b.contains("http://127.0.0.1:") && b.contains("io_uring"), "{b}");
    assert!(b.contains("2 worker threads") && b.contains("cached on first request"), "{b}");
    let server = Server::start(demo_root, &["--warm"]);
    assert!(server.banner.contains("4 files cached at start"), "{}", server.banner);
}

#[test]
fn sigterm_exits_zero() {
    let server = Server::start(demo_root, &[]);
    let _ = get(&server, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}

fn run_cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringserve")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn cli_errors_are_one_line_and_exit_2() {
    let (code, err) = run_cli(&["--bogus"]);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--bogus"), "{err}");
    let (code, err) = run_cli(&["--root", "/definitely/not/here"]);
    assert_eq!((code, err.lines().count()), (2, 1), "{err}");
    assert!(err.contains("/definitely/not/here"), "{err}");
    let (code, err) = run_cli(&["--threads", "0"]);
    assert_eq!((code, err.lines().count()), (2, 1), "{err}");
    let (code, err) = run_cli(&["--addr", "nonsense"]);
    assert_eq!((code, err.lines().count()), (2, 1), "{err}");
}

#[test]
fn a_busy_port_is_a_one_line_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let root = static_dir();
    let (code, err) = run_cli(&["--addr", &addr, "--root", root.to_str().unwrap()]);
    assert_eq!((code, err.lines().count()), (2, 1), "{err}");
    assert!(err.contains("already in use"), "{err}");
}

#[test]
fn help_and_version_exit_0() {
    let out = Command::new(env!("CARGO_BIN_EXE_ringserve")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--root", "--addr", "--threads", "--config", "systemd"] {
        assert!(help.contains(flag), "{help}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ringserve")).arg("--version").output().unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ringserve"));
}
