//! Several listeners (IPv4 and IPv6, every worker accepting on all of them), addresses that
//! cannot be used, and systemd socket activation (a socket passed in as descriptor 3).

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const GET: &str = "GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n";

/// Whether this machine has IPv6 loopback (containers sometimes disable IPv6).
fn ipv6_loopback() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

fn run(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringserve"))
        .args(args)
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .envs(envs.iter().copied())
        .output()
        .expect("run ringserve");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn every_address_is_served_ipv4_and_ipv6_with_the_client_address_logged() {
    let v6 = ipv6_loopback();
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let log_arg = log.to_str().unwrap();
        let mut flags = vec!["--addr", "127.0.0.1:0", "--addr", "127.0.0.2:0"];
        if v6 {
            flags.extend(["--addr", "[::1]:0"]);
        }
        flags.extend(["--access-log", log_arg]);
        let server = Server::start(demo_root, &with_engine(&flags, engine));
        let addrs = server.addrs();
        assert_eq!(addrs.len(), if v6 { 3 } else { 2 }, "{}", server.banner);
        assert_eq!(addrs[0], server.addr, "the first URL is the first --addr");
        assert_eq!(addrs[0].ip().to_string(), "127.0.0.1");
        assert_eq!(addrs[1].ip().to_string(), "127.0.0.2");
        assert_ne!(addrs[0].port(), addrs[1].port(), "port 0 gives each address its own port");
        // Several connections per address, so with two workers both accept on every listener.
        for addr in &addrs {
            for _ in 0..4 {
                let r = get_at(*addr, GET);
                assert_eq!((r.status, r.body.as_slice()), (200, &b"file a\n"[..]), "{addr}");
            }
        }
        assert!(server.terminate().success());
        let text = std::fs::read_to_string(&log).unwrap();
        let clients: Vec<&str> = text.lines().filter_map(|l| l.split(' ').next()).collect();
        assert_eq!(clients.len(), addrs.len() * 4, "{text}");
        assert_eq!(clients.iter().filter(|c| **c == "127.0.0.1").count(), 8, "{engine:?}: {text}");
        if v6 {
            assert_eq!(clients.iter().filter(|c| **c == "::1").count(), 4, "{engine:?}: {text}");
        }
    }
}

#[test]
fn ipv4_and_ipv6_wildcards_share_a_port() {
    if !ipv6_loopback() {
        eprintln!("skipped: no IPv6 loopback");
        return;
    }
    for engine in ENGINES {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (v4, v6) = (format!("0.0.0.0:{port}"), format!("[::]:{port}"));
        let server =
            Server::start(demo_root, &with_engine(&["--addr", &v4, "--addr", &v6], engine));
        assert_eq!(server.addrs().len(), 2, "{}", server.banner);
        for addr in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(get_at(addr, GET).status, 200, "{engine:?} {addr}");
        }
    }
}

#[test]
fn unusable_addresses_are_one_line_errors_naming_the_value() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let root = static_dir();
    let root = root.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["--addr", "127.0.0.1:0", "--addr", &busy], "already in use"),
        // TEST-NET-1: never an address of this machine.
        (&["--addr", "127.0.0.1:0", "--addr", "192.0.2.1:8000"], "not an address of this machine"),
        (&["--addr", "127.0.0.1:0", "--addr", "127.0.0.1:0"], "given twice"),
        (&["--addr", "0.0.0.0:8000", "--addr", "127.0.0.1:8000"], "overlaps"),
        (&["--addr", "systemd", "--addr", "systemd:1"], "do not also name one"),
    ];
    for engine in ENGINES {
        for (addrs, reason) in cases {
            let mut args = with_engine(addrs, engine);
            args.extend(["--root", root]);
            let (code, err) = run(&args, &[]);
            assert_eq!((code, err.lines().count()), (Some(2), 1), "{args:?}: {err}");
            assert!(err.contains(reason), "{args:?}: {err}");
            let named = addrs[addrs.len() - 1];
            assert!(err.contains(&format!("--addr {named}")), "names the value: {err}");
        }
    }
}

/// A ringserve whose descriptor 3 is `socket` and whose environment says systemd passed it:
/// LISTEN_PID must be the server's own pid, which the shell knows (`$$`) and keeps by `exec`.
fn socket_activated(socket: &TcpListener, root: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(r#"LISTEN_PID=$$ exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_ringserve"))
        .arg("--root")
        .arg(root)
        .args(extra)
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "web");
    let fd = socket.as_raw_fd();
    // SAFETY: between fork and exec the closure calls only dup2 and fcntl, which are
    // async-signal-safe, on descriptors that are open in the child.
    unsafe {
        command.pre_exec(move || {
            if fd != 3 && libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // dup2 clears FD_CLOEXEC on the copy, but not when fd already was 3.
            if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

#[test]
fn socket_activation_serves_through_the_passed_socket_and_leaves_it_listening() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        demo_root(dir.path());
        let socket = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        for (pick, threads) in [("systemd", "2"), ("systemd:web", "1"), ("systemd:0", "2")] {
            let flags = with_engine(&["--addr", pick, "--threads", threads], engine);
            let server =
                Server::spawn_command(socket_activated(&socket, dir.path(), &flags), dir.path());
            assert_eq!(server.addr, addr, "{engine:?} {pick}: {}", server.banner);
            for _ in 0..4 {
                let r = get_at(addr, GET);
                assert_eq!((r.status, r.body.as_slice()), (200, &b"file a\n"[..]), "{pick}");
            }
            assert!(server.terminate().success());
        }
        // The socket is systemd's: after the server exits it must still listen (a restart
        // gets it again), so it was neither shut down nor closed for everyone.
        let client = std::net::TcpStream::connect(addr).expect("the passed socket still listens");
        socket.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(IO_TIMEOUT_SECS);
        loop {
            match socket.accept() {
                Ok(_) => break,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("{engine:?}: the passed socket no longer accepts: {e}"),
            }
        }
        drop(client);
    }
}

#[test]
fn socket_activation_without_a_usable_socket_is_a_one_line_error() {
    let root = static_dir();
    let root = root.to_str().unwrap();
    let (code, err) = run(&["--addr", "systemd", "--root", root], &[]);
    assert_eq!((code, err.lines().count()), (Some(2), 1), "{err}");
    assert!(err.contains("--addr systemd") && err.contains("LISTEN_FDS is not set"), "{err}");
    let (code, err) =
        run(&["--addr", "systemd", "--root", root], &[("LISTEN_FDS", "1"), ("LISTEN_PID", "1")]);
    assert_eq!((code, err.lines().count()), (Some(2), 1), "{err}");
    assert!(err.contains("LISTEN_PID is 1, not this process"), "{err}");
    // Descriptor 3 a UDP socket, then a file: refused by type, not used.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let file = std::fs::File::open(static_dir().join("index.html")).unwrap();
    for (fd, reason) in
        [(udp.as_raw_fd(), "not a TCP stream socket"), (file.as_raw_fd(), "not a socket")]
    {
        let mut command = Command::new("/bin/sh");
        command
            .args(["-c", r#"LISTEN_PID=$$ exec "$0" "$@""#, env!("CARGO_BIN_EXE_ringserve")])
            .args(["--addr", "systemd:0", "--root", root])
            .env("LISTEN_FDS", "1")
            .stdout(Stdio::null());
        // SAFETY: only dup2 and fcntl (async-signal-safe) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if fd != 3 && libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = command.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!((out.status.code(), err.lines().count()), (Some(2), 1), "{err}");
        assert!(err.contains("descriptor 3") && err.contains(reason), "{err}");
    }
}
