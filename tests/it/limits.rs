//! Limits and timeouts, each exercised with a small flag value so the tests stay fast.

use std::io::{BufReader, Read, Write};
use std::time::{Duration, Instant};

use crate::support::*;

/// Reads until EOF or reset; returns the bytes and how long it took.
fn read_until_closed(stream: &mut std::net::TcpStream) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut all = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read failed: {e}"),
        }
    }
    (all, started.elapsed())
}

#[test]
fn a_slow_head_gets_408_and_a_close() {
    let server = Server::start(demo_root, &["--header-timeout", "2"]);
    let mut stream = server.connect();
    // Slowloris: a byte every 300 ms must not keep extending the deadline.
    let mut writer = stream.try_clone().unwrap();
    std::thread::spawn(move || {
        for byte in b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if writer.write_all(&[*byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let (bytes, took) = read_until_closed(&mut stream);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(text.contains("Connection: close\r\n"));
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn a_silent_connection_is_closed_after_the_header_timeout() {
    let server = Server::start(demo_root, &["--header-timeout", "1"]);
    let mut stream = server.connect();
    let (bytes, took) = read_until_closed(&mut stream);
    assert!(bytes.is_empty(), "nothing was asked, nothing is answered");
    assert!(took < Duration::from_secs(4), "took {took:?}");
}

#[test]
fn idle_keep_alive_connections_are_closed() {
    let server = Server::start(demo_root, &["--keepalive-timeout", "1"]);
    let mut stream = server.connect();
    stream.write_all(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    assert_eq!(read_response(&mut reader, false).status, 200);
    let started = Instant::now();
    assert_closed(&mut reader);
    assert!(started.elapsed() < Duration::from_secs(4), "took {:?}", started.elapsed());
}

#[test]
fn a_reader_that_stops_reading_is_dropped_by_the_send_timeout() {
    let server = Server::start(
        |root| {
            demo_root(root);
            std::fs::write(root.join("big.bin"), pseudo_random_bytes(32 << 20, 7)).unwrap();
        },
        &["--send-timeout", "1"],
    );
    let mut stream = server.connect_slow_reader();
    stream.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_secs(4)); // not reading
    let (bytes, _) = read_until_closed(&mut stream);
    assert!(bytes.len() < 32 << 20, "the whole body arrived: the send timeout did not fire");
    let mut other = server.connect();
    other.write_all(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut BufReader::new(other), false).body, b"file a\n");
}

#[test]
fn connections_over_the_limit_are_closed_at_once() {
    let server = Server::start(demo_root, &["--max-connections", "2", "--threads", "1"]);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = server.connect();
        stream.write_all(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        assert_eq!(read_response(&mut reader, false).status, 200);
        held.push(stream);
    }
    let mut third = server.connect();
    let _ = third.write_all(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    let (bytes, took) = read_until_closed(&mut third);
    assert!(bytes.is_empty() && took < Duration::from_secs(2), "{bytes:?} after {took:?}");
    drop(held.pop());
    std::thread::sleep(Duration::from_millis(200));
    let r = get(&server, "GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200, "a freed slot is reused");
}

#[test]
fn header_size_and_count_limits_are_flags() {
    let server = Server::start(demo_root, &["--max-header-bytes", "512", "--max-headers", "4"]);
    let big = format!("GET / HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n", "a".repeat(600));
    assert_eq!(get(&server, &big).status, 431);
    let many = "GET / HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
    assert_eq!(get(&server, many).status, 431);
    assert_eq!(get(&server, "GET / HTTP/1.1\r\nHost: t\r\nA: 1\r\n\r\n").status, 200);
}

#[test]
fn accept_survives_running_out_of_descriptors() {
    // The server runs with at most 48 descriptors (prlimit caps the hard limit, so raising the
    // soft limit cannot help); its direct-descriptor table, and so its connection limit,
    // shrink to fit. 80 clients connect at once: each is either served or closed at once,
    // none hangs, the server neither dies nor spins, and once the flood is gone it serves.
    let dir = tempfile::tempdir().unwrap();
    demo_root(dir.path());
    let mut child = std::process::Command::new("prlimit")
        .arg("--nofile=48:48")
        .arg(env!("CARGO_BIN_EXE_ringserve"))
        .args(["--addr", "127.0.0.1:0", "--threads", "1", "--root"])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("prlimit (util-linux) runs ringserve");
    let pid = child.id() as i32;
    let kill_on_exit = KillOnDrop(pid);
    let mut banner = String::new();
    std::io::BufRead::read_line(&mut BufReader::new(child.stdout.take().unwrap()), &mut banner)
        .unwrap();
    let addr: std::net::SocketAddr = banner
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .and_then(|w| w.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("banner {banner:?}"));
    let clients: Vec<std::net::TcpStream> = (0..80)
        .map(|_| {
            let s = std::net::TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(IO_TIMEOUT_SECS))).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let before = cpu_secs(child.id());
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_secs(child.id()) - before;
    assert!(spent < 0.3, "{spent:.2} s of CPU in 1 s while out of descriptors: a busy loop");
    let mut served = 0;
    for mut client in clients {
        let _ = client.write_all(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
        let mut first = [0u8; 12];
        match client.read_exact(&mut first) {
            Ok(()) => {
                assert_eq!(&first, b"HTTP/1.1 200");
                served += 1;
            }
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ),
                "a refused client is closed at once, not left hanging: {e}"
            ),
        }
    }
    assert!(served >= 20, "only {served} of 80 clients were served");
    std::thread::sleep(Duration::from_millis(200));
    let mut late = std::net::TcpStream::connect(addr).unwrap();
    late.set_read_timeout(Some(Duration::from_secs(IO_TIMEOUT_SECS))).unwrap();
    late.write_all(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut BufReader::new(late), false).body, b"file a\n");
    drop(kill_on_exit);
    assert!(child.wait().unwrap().success());
}

/// Sends SIGTERM on drop, so a failing test does not leave the server running.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill with the pid of a child the test has not reaped yet.
        unsafe { libc::kill(self.0, libc::SIGTERM) };
    }
}
