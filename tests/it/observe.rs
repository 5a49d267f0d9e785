//! The access log, `/health` and `/metrics`: lines under load parse with GoAccess and count
//! every response, request text is escaped byte for byte as nginx writes it, SIGUSR1 and
//! copytruncate rotations lose no line, a full disk drops lines but not responses, metrics
//! parse with the Prometheus client library and equal loadgen's counts; every engine.
//!
//! GoAccess, nginx and python3-prometheus-client are installed by `scripts/test.sh`, which
//! sets `RINGSERVE_REQUIRE_TOOLS=1`: then a missing tool fails the test instead of skipping
//! its check.

use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

/// Whether a missing external tool is a failure (the README's test command) or a skip.
fn require_tools() -> bool {
    std::env::var_os("RINGSERVE_REQUIRE_TOOLS").is_some()
}

/// Whether `program` runs; panics when it does not and tools are required.
fn have(program: &str, probe: &[&str]) -> bool {
    let ok = Command::new(program).args(probe).output().is_ok_and(|o| o.status.success());
    assert!(ok || !require_tools(), "{program} is missing (scripts/test.sh installs it)");
    if !ok {
        eprintln!("skipping the {program} check: not installed");
    }
    ok
}

/// The admin listener's address, from the banner.
fn admin_addr(server: &Server) -> SocketAddr {
    let url = server
        .banner
        .split("health and metrics at http://")
        .nth(1)
        .unwrap_or_else(|| panic!("no admin address in {:?}", server.banner));
    url.trim().trim_end_matches('/').parse().expect("admin address")
}

/// One `GET path` with `Connection: close`: status and body.
fn fetch(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(IO_TIMEOUT_SECS))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let response = read_response(&mut BufReader::new(stream), false);
    (response.status, String::from_utf8_lossy(&response.body).into_owned())
}

/// The sum of a metric family's samples in Prometheus text.
fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// `requests` requests over `connections` connections with loadgen, round-robin over `paths`.
fn load(server: &Server, paths: &[&str], connections: u32, requests: u64) -> loadgen::Report {
    let url = format!("http://{}{}", server.addr, paths[0]);
    let mut config = loadgen::Config::new(&url, connections).expect("loadgen config");
    config.paths = paths.iter().map(|p| p.to_string()).collect();
    config.requests = Some(requests);
    config.warmup = Duration::ZERO;
    let report = loadgen::run(&config).expect("loadgen run");
    assert_eq!(report.requests.completed, requests, "every request answered: {report:?}");
    report
}

/// Polls `/metrics` until responses counted reach `want` (a response is counted when its
/// send completes, which the worker may see just after the client read it).
fn metrics_when_counted(admin: SocketAddr, want: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, text) = fetch(admin, "/metrics");
        assert_eq!(status, 200);
        let counted = metric_sum(&text, "ringserve_http_requests_total");
        if counted >= want || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect()
}

#[test]
fn a_log_under_load_has_a_line_per_response_and_goaccess_parses_it() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let log_arg = log.to_str().unwrap();
        let flags = with_engine(&["--access-log", log_arg, "--admin-addr", "127.0.0.1:0"], engine);
        let server = Server::start(demo_root, &flags);
        let admin = admin_addr(&server);
        let paths = ["/", "/a.txt", "/missing", "/b.css"];
        let requests = 4_000;
        let report = load(&server, &paths, 16, requests);
        let metrics = metrics_when_counted(admin, requests);
        assert_eq!(metric_sum(&metrics, "ringserve_http_requests_total"), requests, "{engine:?}");
        let not_found = metrics
            .lines()
            .find(|l| l.starts_with("ringserve_http_requests_total{method=\"GET\",code=\"4xx\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
        assert_eq!(not_found, Some(report.status.s4xx), "{engine:?}");
        assert_eq!(
            metric_sum(&metrics, "ringserve_http_response_body_bytes_total"),
            report.body_bytes,
            "{engine:?}: body bytes sent = body bytes loadgen read"
        );
        assert!(server.terminate().success());
        let lines = lines_of(&log);
        assert_eq!(lines.len() as u64, requests, "{engine:?}: one line per response");
        let missing = lines.iter().filter(|l| l.contains("\"GET /missing HTTP/1.1\" 404 ")).count();
        assert_eq!(missing as u64, requests / 4, "{engine:?}");
        if have("goaccess", &["--version"]) {
            let out = Command::new("goaccess")
                .arg(&log)
                .args([
                    "--log-format=COMBINED",
                    "--no-global-config",
                    "--no-progress",
                    "-o",
                    "json",
                ])
                .output()
                .expect("run goaccess");
            let report: serde_json::Value =
                serde_json::from_slice(&out.stdout).expect("goaccess writes JSON");
            let general = &report["general"];
            assert_eq!(general["failed_requests"], 0, "{engine:?}: {general}");
            assert_eq!(general["total_requests"], requests, "{engine:?}: {general}");
        }
    }
}

#[test]
fn metrics_parse_with_the_prometheus_client_and_match_loadgen() {
    let server = Server::start(demo_root, &["--admin-addr", "127.0.0.1:0"]);
    let admin = admin_addr(&server);
    let requests = 3_000;
    let report = load(&server, &["/", "/a.txt"], 8, requests);
    let text = metrics_when_counted(admin, requests);
    let python = "/usr/bin/python3";
    if !have(python, &["-c", "import prometheus_client"]) {
        return;
    }
    // The client library's parser is strict about the exposition format; print what it read.
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
totals = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        totals[sample.name] = totals.get(sample.name, 0) + sample.value
for name in ["ringserve_http_requests_total", "ringserve_http_response_body_bytes_total",
             "ringserve_http_request_duration_seconds_count", "ringserve_connections_accepted_total"]:
    print(name, int(totals[name]))
"#;
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python3");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "parser refused: {}", String::from_utf8_lossy(&out.stderr));
    let parsed = String::from_utf8(out.stdout).unwrap();
    let value = |name: &str| -> u64 {
        parsed.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap()
    };
    assert_eq!(value("ringserve_http_requests_total"), report.requests.completed);
    assert_eq!(value("ringserve_http_request_duration_seconds_count"), report.requests.completed);
    assert_eq!(value("ringserve_http_response_body_bytes_total"), report.body_bytes);
    assert_eq!(value("ringserve_connections_accepted_total"), 8, "{parsed}");
}

/// Requests whose text needs escaping, each on its own connection.
const HOSTILE: [&[u8]; 5] = [
    b"GET /a\"b\\c HTTP/1.1\r\nHost: t\r\nUser-Agent: say \"hi\" \\o/\r\n\r\n",
    b"GET /\xc3\xa9t\xc3\xa9 HTTP/1.1\r\nHost: t\r\nReferer: http://x/\xd0\xb0\r\n\r\n",
    b"GET /ok HTTP/1.1\r\nHost: t\r\nUser-Agent: tab\there \xff\r\nReferer:\r\n\r\n",
    b"GET /%22%5C HTTP/1.1\r\nHost: t\r\nUser-Agent: \x7e~\r\n\r\n",
    b"GET /\x01 HTTP/1.1\r\nHost: t\r\n\r\n",
];

/// What nginx writes for each: request line, referer, user agent (escape=default).
const ESCAPED: [(&str, &str, &str); 5] = [
    (r#"GET /a\x22b\x5Cc HTTP/1.1"#, "-", r#"say \x22hi\x22 \x5Co/"#),
    (r#"GET /\xC3\xA9t\xC3\xA9 HTTP/1.1"#, r#"http://x/\xD0\xB0"#, "-"),
    ("GET /ok HTTP/1.1", "", r#"tab\x09here \xFF"#),
    ("GET /%22%5C HTTP/1.1", "-", "~~"),
    (r#"GET /\x01 HTTP/1.1"#, "-", "-"),
];

/// Sends each hostile request on its own connection and reads the answer (or the close).
fn send_hostile(addr: SocketAddr) {
    for request in HOSTILE {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(IO_TIMEOUT_SECS))).unwrap();
        stream.write_all(request).unwrap();
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
    }
}

/// The request, referer and user agent of a combined line (the three quoted fields).
fn quoted_fields(line: &str) -> (String, String, String) {
    let mut parts = line.split(" \"").skip(1).map(|p| p.rsplit_once('"').unwrap().0.to_owned());
    (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap())
}

#[test]
fn hostile_request_text_is_escaped_as_nginx_writes_it() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let flags = with_engine(&["--access-log", log.to_str().unwrap(), "--threads", "1"], engine);
        let server = Server::start(demo_root, &flags);
        send_hostile(server.addr);
        assert!(server.terminate().success());
        let lines = lines_of(&log);
        assert_eq!(lines.len(), HOSTILE.len(), "{engine:?}: {lines:#?}");
        for (line, (request, referer, agent)) in lines.iter().zip(ESCAPED) {
            assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
            assert!(line.is_ascii(), "{line}");
            let fields = quoted_fields(line);
            assert_eq!(fields, (request.into(), referer.into(), agent.into()), "{engine:?}");
        }
    }
    // The same requests through nginx, when it is installed: its fields must be ours.
    if !have("nginx", &["-v"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf = dir.path().join("nginx.conf");
    let log = dir.path().join("nginx-access.log");
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process off; pid {pid}; error_log {err} crit;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log {log} combined; client_body_temp_path {tmp};\n\
             server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n",
            pid = dir.path().join("nginx.pid").display(),
            err = dir.path().join("error.log").display(),
            log = log.display(),
            tmp = dir.path().display(),
            root = dir.path().display(),
        ),
    )
    .unwrap();
    let mut nginx = Command::new("nginx").args(["-c", conf.to_str().unwrap()]).spawn().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    send_hostile(addr);
    let _ = nginx.kill();
    let _ = nginx.wait();
    let lines = lines_of(&log);
    assert!(lines.len() >= 4, "nginx logged {lines:#?}");
    // nginx refuses the control byte before logging a request line for it; compare the rest.
    for (line, (request, referer, agent)) in lines.iter().zip(&ESCAPED[..4]) {
        eprintln!("nginx: {line}");
        let fields = quoted_fields(line);
        assert_eq!(fields, (request.to_string(), referer.to_string(), agent.to_string()));
    }
}

#[test]
fn json_lines_parse_and_carry_the_duration() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.json");
        // One worker: the test reads the lines in request order, and two workers' buffers
        // reach the file in either order.
        let log_arg = log.to_str().unwrap();
        let flags = ["--access-log", log_arg, "--access-log-format", "json", "--threads", "1"];
        let server = Server::start(demo_root, &with_engine(&flags, engine));
        send_hostile(server.addr);
        let r = get(&server, "GET /a.txt HTTP/1.1\r\nHost: t\r\nRange: bytes=0-2\r\n\r\n");
        assert_eq!(r.status, 206);
        assert!(server.terminate().success());
        let lines = lines_of(&log);
        assert_eq!(lines.len(), HOSTILE.len() + 1, "{engine:?}");
        for line in &lines {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON object per line");
            assert_eq!(v["remote_addr"], "127.0.0.1");
            assert!(v["request_time"].as_f64().is_some_and(|t| (0.0..5.0).contains(&t)), "{v}");
            assert!(v["time"].as_str().is_some_and(|t| t.len() == 25), "{v}");
        }
        let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!(first["request"], "GET /a\"b\\c HTTP/1.1");
        assert_eq!(first["http_referer"], serde_json::Value::Null);
        let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
        assert_eq!(
            (last["status"].as_u64(), last["body_bytes_sent"].as_u64()),
            (Some(206), Some(3))
        );
    }
}

#[test]
fn rotation_under_load_loses_no_line() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let flags = with_engine(&["--access-log", log.to_str().unwrap()], engine);
        let server = Server::start(demo_root, &flags);
        let requests = 30_000;
        let loader = {
            let addr = server.addr;
            std::thread::spawn(move || {
                let url = format!("http://{addr}/a.txt");
                let mut config = loadgen::Config::new(&url, 8).unwrap();
                config.requests = Some(requests);
                config.warmup = Duration::ZERO;
                loadgen::run(&config).unwrap()
            })
        };
        // logrotate `create` with a SIGUSR1 postrotate, five times, then a `copytruncate`.
        // Each rename waits until the current file has lines, so every rotated file does
        // (the blocking engine writes every 200 ms; a slow debug build may be slower still).
        let has_lines = |path: &Path| std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
        let mut rotated = Vec::new();
        for n in 0..5 {
            std::thread::sleep(Duration::from_millis(40));
            let deadline = Instant::now() + Duration::from_secs(5);
            while !has_lines(&log) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let old = dir.path().join(format!("access.log.{n}"));
            std::fs::rename(&log, &old).unwrap();
            // SAFETY: kill with the pid of our child.
            unsafe { libc::kill(server.pid() as i32, libc::SIGUSR1) };
            rotated.push(old);
        }
        std::thread::sleep(Duration::from_millis(40));
        let copy = dir.path().join("access.log.copy");
        std::fs::copy(&log, &copy).unwrap();
        let copied = lines_of(&copy).len();
        std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
        let report = loader.join().unwrap();
        assert_eq!(report.requests.completed, requests);
        assert!(server.terminate().success());
        let in_rotated: usize = rotated.iter().map(|p| lines_of(p).len()).sum();
        let current = std::fs::read(&log).unwrap();
        assert!(!current.contains(&0), "{engine:?}: O_APPEND leaves no hole after a truncate");
        let after_truncate = current.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count();
        // copytruncate may lose the lines written between its copy and its truncate (as
        // logrotate documents); the SIGUSR1 rotations lose none.
        let total = (in_rotated + copied + after_truncate) as u64;
        assert!(total <= requests && total + 2_000 > requests, "{engine:?}: {total}");
        assert!(
            rotated.iter().all(|p| !lines_of(p).is_empty()),
            "{engine:?}: a reopen switched files"
        );
        let lost_between = requests - total;
        eprintln!("{engine:?}: copytruncate window lost {lost_between} lines");
    }
}

#[test]
fn sigusr1_rotation_at_full_load_loses_no_line() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let flags = with_engine(&["--access-log", log.to_str().unwrap()], engine);
        let server = Server::start(demo_root, &flags);
        let requests = 40_000;
        let loader = {
            let addr = server.addr;
            std::thread::spawn(move || {
                let url = format!("http://{addr}/");
                let mut config = loadgen::Config::new(&url, 32).unwrap();
                config.requests = Some(requests);
                config.warmup = Duration::ZERO;
                loadgen::run(&config).unwrap()
            })
        };
        let mut files = Vec::new();
        for n in 0..8 {
            std::thread::sleep(Duration::from_millis(25));
            let old = dir.path().join(format!("access.log.{n}"));
            std::fs::rename(&log, &old).unwrap();
            // SAFETY: kill with the pid of our child.
            unsafe { libc::kill(server.pid() as i32, libc::SIGUSR1) };
            files.push(old);
        }
        let report = loader.join().unwrap();
        assert!(server.terminate().success());
        files.push(log);
        let total: usize = files.iter().map(|p| lines_of(p).len()).sum();
        assert_eq!(total as u64, report.requests.completed, "{engine:?}");
        assert_eq!(report.requests.completed, requests);
    }
}

#[test]
fn a_full_disk_drops_lines_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("small");
    std::fs::create_dir(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs", mount.to_str().unwrap()])
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(!require_tools(), "mounting a tmpfs needs root");
        eprintln!("skipping: cannot mount a small tmpfs (not root)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mount);
    let log = mount.join("access.log");
    let stderr = dir.path().join("stderr.txt");
    let flags = ["--access-log", log.to_str().unwrap(), "--admin-addr", "127.0.0.1:0"];
    for engine in ENGINES {
        let _ = std::fs::remove_file(&log);
        let server = Server::start_with_stderr(demo_root, &with_engine(&flags, engine), &stderr);
        let admin = admin_addr(&server);
        let requests = 20_000;
        load(&server, &["/", "/a.txt"], 8, requests);
        let metrics = metrics_when_counted(admin, requests);
        assert_eq!(metric_sum(&metrics, "ringserve_http_requests_total"), requests);
        // The tick writes what is left within a second; by then the disk is full.
        std::thread::sleep(Duration::from_millis(1_500));
        let (_, metrics) = fetch(admin, "/metrics");
        let dropped = metric_sum(&metrics, "ringserve_access_log_lines_dropped_total");
        let written = metric_sum(&metrics, "ringserve_access_log_lines_total");
        assert!(dropped > 0 && written > 0, "{engine:?}: written {written}, dropped {dropped}");
        assert!(written + dropped <= requests, "{engine:?}");
        assert_eq!(fetch(server.addr, "/a.txt").0, 200, "{engine:?}: still serving");
        assert!(server.terminate().success(), "{engine:?}");
        let errors = std::fs::read_to_string(&stderr).unwrap();
        let reports: Vec<&str> = errors.lines().filter(|l| l.contains("access log")).collect();
        assert!(!reports.is_empty(), "{engine:?}: {errors}");
        assert!(reports.len() <= 2, "{engine:?}: rate-limited to one a minute: {reports:#?}");
        assert!(reports[0].contains("No space left on device"), "{}", reports[0]);
        assert!(reports[0].as_bytes()[..4].iter().all(u8::is_ascii_digit), "timestamped");
    }
}

#[test]
fn health_answers_503_while_draining() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.bin"), pseudo_random_bytes(32 << 20, 5)).unwrap();
    for engine in ENGINES {
        let flags = ["--admin-addr", "127.0.0.1:0", "--shutdown-timeout", "10"];
        let mut server = Server::start_at(dir.path(), &with_engine(&flags, engine));
        let admin = admin_addr(&server);
        assert_eq!(fetch(admin, "/health"), (200, "ok\n".to_owned()));
        assert_eq!(fetch(admin, "/nothing").0, 404);
        // A download the client does not read keeps the drain waiting.
        let mut stalled = server.connect_slow_reader();
        stalled.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut first = [0u8; 1000];
        stalled.read_exact(&mut first).unwrap();
        // SAFETY: kill with the pid of our child.
        unsafe { libc::kill(server.pid() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut health = fetch(admin, "/health");
        while health.0 != 503 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            health = fetch(admin, "/health");
        }
        assert_eq!(health, (503, "shutting down\n".to_owned()), "{engine:?}");
        assert!(server.is_running(), "{engine:?}: still draining");
        drop(stalled);
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(server.exit_status().is_some_and(|s| s.success()), "{engine:?}");
    }
}

#[test]
fn a_cut_off_download_logs_the_bytes_that_left() {
    let dir = tempfile::tempdir().unwrap();
    let size = 16u64 << 20;
    std::fs::write(dir.path().join("big.bin"), pseudo_random_bytes(size as usize, 9)).unwrap();
    for engine in ENGINES {
        let logs = tempfile::tempdir().unwrap();
        let log = logs.path().join("access.log");
        let flags = with_engine(&["--access-log", log.to_str().unwrap()], engine);
        let server = Server::start_at(dir.path(), &flags);
        let mut stream = server.connect_slow_reader();
        stream.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut first = vec![0u8; 200_000];
        stream.read_exact(&mut first).unwrap();
        drop(stream);
        let r = get(&server, "HEAD /big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(r.status, 200);
        assert!(server.terminate().success());
        let lines = lines_of(&log);
        assert_eq!(lines.len(), 2, "{engine:?}: {lines:#?}");
        let cut = lines.iter().find(|l| l.contains("\"GET /big.bin")).unwrap();
        let bytes: u64 = cut.split(' ').nth(9).unwrap().parse().unwrap();
        assert!(bytes >= 190_000 && bytes < size, "{engine:?}: {cut}");
        let head = lines.iter().find(|l| l.contains("\"HEAD /big.bin")).unwrap();
        assert!(head.contains("\" 200 0 \""), "{engine:?}: {head}");
    }
}
