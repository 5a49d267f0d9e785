//! `--config FILE`: settings from TOML serve, flags override them, and a bad key, value or
//! syntax is one line naming the file and line, exit 2.

use std::path::Path;
use std::process::Command;

use crate::support::*;

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("ringserve.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// A server started with only `args` (no flags added by the test support).
fn start_bare(root: &Path, args: &[&str]) -> Server {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringserve"));
    command.args(args);
    Server::spawn_command(command, root)
}

fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringserve")).args(args).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_config_file_sets_root_addresses_threads_and_switches() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir(&site).unwrap();
    demo_root(&site);
    let log = dir.path().join("access.log");
    let config = write_config(
        dir.path(),
        &format!(
            "# ringserve settings\nroot = {:?}\naddr = [\"127.0.0.1:0\", \"127.0.0.2:0\"]\n\
             threads = 1\nwarm = true\naccess_log = {:?}\nengine = \"uring\"\n",
            site.to_str().unwrap(),
            log.to_str().unwrap()
        ),
    );
    let server = start_bare(&site, &["--config", &config]);
    let b = &server.banner;
    assert!(b.contains(site.canonicalize().unwrap().to_str().unwrap()), "{b}");
    assert!(b.contains("1 worker thread,") && b.contains("4 files cached at start"), "{b}");
    assert_eq!(server.addrs().len(), 2, "{b}");
    for addr in server.addrs() {
        let r = get_at(addr, "GET /a.txt HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"file a\n"[..]));
    }
    assert!(server.terminate().success());
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 2, "the file's access_log");
}

#[test]
fn flags_override_the_file_and_replace_its_lists() {
    let dir = tempfile::tempdir().unwrap();
    demo_root(dir.path());
    let config = write_config(
        dir.path(),
        "root = \"/definitely/not/here\"\nthreads = 1\naddr = [\"127.0.0.1:0\", \"127.0.0.2:0\"]\n",
    );
    let root = dir.path().to_str().unwrap();
    let server = start_bare(
        dir.path(),
        &["--config", &config, "--threads", "2", "--root", root, "--addr", "127.0.0.3:0"],
    );
    assert!(server.banner.contains("2 worker threads"), "{}", server.banner);
    let addrs = server.addrs();
    assert_eq!(addrs.len(), 1, "the command line's --addr replaces the file's: {}", server.banner);
    assert_eq!(addrs[0].ip().to_string(), "127.0.0.3");
    assert_eq!(get_at(addrs[0], "GET / HTTP/1.1\r\nHost: t\r\n\r\n").status, 200);
}

#[test]
fn bad_keys_values_and_syntax_are_one_line_with_the_line_number() {
    let dir = tempfile::tempdir().unwrap();
    let root = static_dir();
    let root = root.to_str().unwrap();
    let cases = [
        (
            "root = \".\"\n\ntreads = 4\n",
            "line 3: unknown key \"treads\" (did you mean \"threads\"?)",
        ),
        ("\n\n\n\nthreads = \"x\"\n", "line 5: threads: invalid value 'x'"),
        ("max-connections = 0\n", "line 1: max-connections: invalid value '0'"),
        ("addr = [\"127.0.0.1:0\",\n  \"nonsense\"]\n", "line 1: addr: invalid value 'nonsense'"),
        ("threads = 2\nwarm = \n", "line 2: not valid TOML"),
        ("threads = 2\nconfig = \"x.toml\"\n", "line 2: config: a config file cannot name another"),
    ];
    for (text, expected) in cases {
        let config = write_config(dir.path(), text);
        let (code, err) = run(&["--config", &config, "--root", root]);
        assert_eq!((code, err.lines().count()), (Some(2), 1), "{text:?}: {err}");
        assert!(err.contains(&format!("{config} {expected}")), "{text:?}: {err}");
    }
    // A value clap accepts but the server cannot use still names the file's line.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let config = write_config(dir.path(), &format!("threads = 1\n\naddr = \"{busy}\"\n"));
    let (code, err) = run(&["--config", &config, "--root", root]);
    assert_eq!((code, err.lines().count()), (Some(2), 1), "{err}");
    assert!(err.contains(&format!("{config} line 3: --addr {busy}: cannot listen")), "{err}");
    let config = write_config(dir.path(), "threads = 1\nroot = \"/definitely/not/here\"\n");
    let (code, err) = run(&["--config", &config]);
    assert_eq!((code, err.lines().count()), (Some(2), 1), "{err}");
    assert!(err.contains(&format!("{config} line 2: cannot serve root")), "{err}");
    let (code, err) = run(&["--config", "/definitely/not/here.toml"]);
    assert_eq!((code, err.lines().count()), (Some(2), 1), "{err}");
    assert!(err.contains("cannot read config file /definitely/not/here.toml"), "{err}");
}
