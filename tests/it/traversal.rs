//! Nothing outside the root is ever served.

use std::io::{BufReader, Write};

use crate::support::*;

fn status_of(server: &Server, target: &str) -> (u16, Vec<u8>) {
    let mut stream = server.connect();
    write!(stream, "GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let r = read_response(&mut BufReader::new(stream), false);
    (r.status, r.body)
}

fn root_with_secret_outside() -> (tempfile::TempDir, Server) {
    let outer = tempfile::tempdir().unwrap();
    std::fs::write(outer.path().join("secret.txt"), b"TOP SECRET").unwrap();
    let root = outer.path().join("www");
    std::fs::create_dir(&root).unwrap();
    demo_root(&root);
    std::os::unix::fs::symlink(outer.path().join("secret.txt"), root.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(outer.path(), root.join("updir")).unwrap();
    std::os::unix::fs::symlink(root.join("a.txt"), root.join("alias.txt")).unwrap();
    let server = Server::start_at(&root, &[]);
    (outer, server)
}

#[test]
fn dot_dot_in_any_encoding_never_leaves_the_root() {
    let (_outer, server) = root_with_secret_outside();
    for target in [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/%252e%252e/secret.txt",
        "/..%5csecret.txt",
        "/..\\secret.txt",
        "/sub\\..\\..\\secret.txt",
        "/leak.txt",
        "/updir/secret.txt",
        "/./../secret.txt",
        "/%00../secret.txt",
        "http://t/../secret.txt",
    ] {
        let (status, body) = status_of(&server, target);
        assert!(status == 400 || status == 404, "{target}: {status}");
        assert!(!body.windows(10).any(|w| w == b"TOP SECRET"), "{target} leaked the secret");
    }
}

#[test]
fn dot_segments_inside_the_root_resolve() {
    let (_outer, server) = root_with_secret_outside();
    assert_eq!(status_of(&server, "/sub/../a.txt"), (200, b"file a\n".to_vec()));
    assert_eq!(status_of(&server, "/%61.txt"), (200, b"file a\n".to_vec()));
    assert_eq!(status_of(&server, "/alias.txt"), (200, b"file a\n".to_vec()), "in-root symlink");
}
