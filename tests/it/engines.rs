//! The same conformance run against every engine: they share the HTTP layer and the file
//! snapshot, so they must answer byte-for-byte alike (only Date may differ).

use std::io::{BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

// ---- io_uring forbidden: the default falls back to epoll, `--engine uring` refuses ----------

/// The audit architecture of this build's system calls, as seccomp reports it.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// Seconds a refusing server may take to exit before the test fails instead of hanging.
const REFUSAL_EXIT_SECS: u64 = 10;

/// A classic-BPF seccomp program: io_uring_setup fails with `errno` (as Docker's and
/// Podman's profiles make it), every other call of this architecture is allowed.
fn io_uring_setup_fails_with(errno: i32) -> [libc::sock_filter; 7] {
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jump = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    [
        stmt(load, 4), // seccomp_data.arch
        jump(AUDIT_ARCH, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(load, 0), // seccomp_data.nr
        jump(libc::SYS_io_uring_setup as u32, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | errno as u32),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ]
}

/// `ringserve` with `flags`, with io_uring_setup failing with `errno` in the child.
fn command_without_io_uring(errno: i32, root: &std::path::Path, flags: &[&str]) -> Command {
    let filter = io_uring_setup_fails_with(errno);
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringserve"));
    command.args(["--addr", "127.0.0.1:0", "--threads", "1", "--root"]).arg(root).args(flags);
    // SAFETY: the closure runs in the forked child before exec and makes only two system
    // calls (prctl, seccomp) on a filter copied into it: no allocation, no lock.
    unsafe {
        command.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &prog) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

#[test]
fn default_engine_falls_back_to_epoll_where_io_uring_is_forbidden() {
    for (errno, name) in [(libc::EPERM, "EPERM"), (libc::ENOSYS, "ENOSYS")] {
        let dir = tempfile::tempdir().unwrap();
        demo_root(dir.path());
        let stderr_path = dir.path().join("stderr.txt");
        let mut command = command_without_io_uring(errno, dir.path(), &[]);
        command.stderr(Stdio::from(std::fs::File::create(&stderr_path).unwrap()));
        let server = Server::spawn_command(command, dir.path());
        assert!(server.banner.contains("engine epoll"), "{name}: {}", server.banner);
        let r = get(&server, "GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"file a\n"[..]), "{name}");
        assert!(server.terminate().success(), "{name}");
        let stderr = std::fs::read_to_string(&stderr_path).unwrap();
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{name}: one warning line: {stderr:?}");
        assert!(lines[0].contains("warning"), "{name}: {stderr}");
        assert!(lines[0].contains("seccomp") && lines[0].contains("--security-opt"), "{stderr}");
        assert!(lines[0].contains("--engine epoll"), "{name}: {stderr}");

        // Asked for explicitly, io_uring refuses to start with the hint, as before.
        let mut child = command_without_io_uring(errno, dir.path(), &["--engine", "uring"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(REFUSAL_EXIT_SECS);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{name}: --engine uring kept running without io_uring");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut text = String::new();
        child.stderr.take().unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(status.code(), Some(2), "{name}: {text}");
        assert!(text.contains("--security-opt seccomp=unconfined"), "{name}: {text}");
    }
}
