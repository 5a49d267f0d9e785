//! Large bodies: byte-exact across many short sends; clients that vanish mid-download.

use std::io::{BufReader, Read, Write};

use crate::support::*;

const BIG_BYTES: usize = 8 * 1024 * 1024 + 12_345;

fn big_root(root: &std::path::Path) {
    demo_root(root);
    std::fs::write(root.join("big.bin"), pseudo_random_bytes(BIG_BYTES, 42)).unwrap();
}

#[test]
fn a_multi_megabyte_file_arrives_byte_exact() {
    let server = Server::start(big_root, &[]);
    let expected = pseudo_random_bytes(BIG_BYTES, 42);
    let mut stream = server.connect();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for _ in 0..2 {
        stream.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let r = read_response(&mut reader, false);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/octet-stream"));
        assert!(r.body == expected, "body differs from the file");
    }
    // The connection is still in step after two large bodies.
    stream.write_all(b"GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut reader, false).body, b"file a\n");
}

#[test]
fn clients_that_reset_mid_download_do_not_disturb_others() {
    // One worker, so the slots and batches a reset connection leaves behind mid-sendfile are
    // the ones the next clients get: nothing of the dead client's body may reach them.
    let mut server = Server::start(big_root, &["--threads", "1"]);
    let expected = pseudo_random_bytes(BIG_BYTES, 42);
    for round in 0..30 {
        let mut stream = server.connect();
        stream.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut some = vec![0u8; 1000 + round * 5000];
        stream.read_exact(&mut some).unwrap();
        // SO_LINGER 0: close sends RST instead of FIN.
        socket2::SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO)).unwrap();
        drop(stream);
        if round % 5 == 4 {
            let r = get(&server, "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
            assert!(r.body == expected, "round {round}: a full download after resets differs");
        }
    }
    assert!(server.is_running());
    let r = get(&server, "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.body.len(), BIG_BYTES);
    assert!(r.body == pseudo_random_bytes(BIG_BYTES, 42));
}

#[test]
fn large_ranges_are_sent_from_the_right_offset() {
    // Large bodies are sent from the file: a range must start at its offset.
    let server = Server::start(big_root, &[]);
    let expected = pseudo_random_bytes(BIG_BYTES, 42);
    let mut stream = server.connect();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for (first, last) in [
        (1_000_001u64, 1_400_000u64),
        (0, 300_000),
        (BIG_BYTES as u64 - 500_000, BIG_BYTES as u64 - 1),
    ] {
        write!(stream, "GET /big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes={first}-{last}\r\n\r\n")
            .unwrap();
        let r = read_response(&mut reader, false);
        assert_eq!(r.status, 206);
        assert!(r.body == expected[first as usize..=last as usize], "range {first}-{last}");
    }
    write!(stream, "HEAD /big.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(
        read_response(&mut reader, true).header("content-length"),
        Some(BIG_BYTES.to_string().as_str())
    );
}

#[test]
fn a_large_body_is_sent_from_its_mapping_when_no_descriptor_is_free() {
    // The io_uring engine's sockets are direct descriptors; sendfile needs a process one, which
    // it installs per connection. With the descriptor limit reached the install fails (EMFILE)
    // and the body must go from the file's mapping instead, byte-exact, ranges included.
    let server = Server::start(big_root, &["--engine", "uring", "--threads", "1"]);
    let expected = pseudo_random_bytes(BIG_BYTES, 42);
    // Cached first, so the file is already open when no descriptor is left.
    assert!(get(&server, "GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n").body == expected);
    let pid = server.pid();
    let saved = exhaust_descriptors(pid);
    let descriptors = || std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let before = descriptors();
    let mut stream = server.connect();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    stream.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert!(read_response(&mut reader, false).body == expected, "whole body from the mapping");
    write!(stream, "GET /big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=3000000-3999999\r\n\r\n")
        .unwrap();
    let r = read_response(&mut reader, false);
    assert_eq!(r.status, 206);
    assert!(r.body == expected[3_000_000..4_000_000], "a range from the mapping");
    assert_eq!(descriptors(), before, "no descriptor could be installed");
    restore_descriptor_limit(pid, saved);
    // With descriptors free again, the same connection sends from the file.
    stream.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert!(read_response(&mut reader, false).body == expected);
    assert_eq!(descriptors(), before + 1, "the connection's installed descriptor");
    drop((stream, reader));
}
