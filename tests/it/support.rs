//! Test support: a server process on an ephemeral port, and a strict response reader.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Seconds any single read in a test may block before the test fails instead of hanging.
pub const IO_TIMEOUT_SECS: u64 = 10;

/// Every engine a suite runs against, as its extra flags.
pub const ENGINES: [&[&str]; 3] = [&[], &["--engine", "blocking"], &["--engine", "epoll"]];

/// `extra` flags followed by an engine's flags.
pub fn with_engine<'a>(extra: &[&'a str], engine: &[&'a str]) -> Vec<&'a str> {
    extra.iter().chain(engine).copied().collect()
}

/// A `ringserve` process; SIGTERM and reap on drop.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub banner: String,
    root: PathBuf,
    _root: Option<tempfile::TempDir>,
}

impl Server {
    /// Serves `root` with extra flags.
    pub fn start_at(root: &Path, extra: &[&str]) -> Server {
        Server::start_at_env(root, extra, &[])
    }

    /// Serves `root` with extra flags and environment variables.
    pub fn start_at_env(root: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Server {
        Server::spawn(root, extra, envs, Stdio::inherit())
    }

    /// Serves a fresh temporary root filled by `fill`, its standard error going to `stderr`.
    pub fn start_with_stderr(fill: impl FnOnce(&Path), extra: &[&str], stderr: &Path) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        fill(dir.path());
        let file = std::fs::File::create(stderr).expect("create the stderr file");
        let mut server = Server::spawn(dir.path(), extra, &[], Stdio::from(file));
        server._root = Some(dir);
        server
    }

    fn spawn(root: &Path, extra: &[&str], envs: &[(&str, &str)], stderr: Stdio) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringserve"));
        command
            .envs(envs.iter().copied())
            .args(if extra.contains(&"--addr") { &[][..] } else { &["--addr", "127.0.0.1:0"][..] })
            .arg("--root")
            .arg(root)
            .args(if extra.contains(&"--threads") { &[][..] } else { &["--threads", "2"][..] })
            .args(extra)
            .stderr(stderr);
        Server::spawn_command(command, root)
    }

    /// Runs `command` (a ringserve, or a shell that execs one, serving `root`) and reads the
    /// address from its banner.
    pub fn spawn_command(mut command: Command, root: &Path) -> Server {
        let mut child = command.stdout(Stdio::piped()).spawn().expect("spawn ringserve");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut banner = String::new();
        BufReader::new(stdout).read_line(&mut banner).expect("read banner");
        let url = banner
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in banner {banner:?}"));
        let addr = url.trim_start_matches("http://").trim_end_matches('/').parse().expect("addr");
        Server { child, addr, banner, root: root.to_path_buf(), _root: None }
    }

    /// Serves a fresh temporary root filled by `fill`.
    pub fn start(fill: impl FnOnce(&Path), extra: &[&str]) -> Server {
        Server::start_env(fill, extra, &[])
    }

    /// Serves a fresh temporary root filled by `fill`, with environment variables.
    pub fn start_env(fill: impl FnOnce(&Path), extra: &[&str], envs: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        fill(dir.path());
        let mut server = Server::start_at_env(dir.path(), extra, envs);
        server._root = Some(dir);
        server
    }

    /// Every address in the banner, in `--addr` order (the first is `addr`).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.banner
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("http://")?.strip_suffix('/')?.parse().ok())
            .collect()
    }

    /// A connected client with read/write timeouts.
    pub fn connect(&self) -> TcpStream {
        self.try_connect().expect("connect")
    }

    /// `connect`, for callers that report a refused connection (a dead server) themselves.
    pub fn try_connect(&self) -> std::io::Result<TcpStream> {
        let stream = TcpStream::connect(self.addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(IO_TIMEOUT_SECS)))?;
        stream.set_write_timeout(Some(Duration::from_secs(IO_TIMEOUT_SECS)))?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// A client with a 4 KiB receive buffer, so an unread response backs up into the server.
    pub fn connect_slow_reader(&self) -> TcpStream {
        self.try_connect_slow_reader().expect("connect a slow reader")
    }

    /// `connect_slow_reader`, for callers that report a refused connection themselves.
    pub fn try_connect_slow_reader(&self) -> std::io::Result<TcpStream> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        socket.set_recv_buffer_size(4096)?;
        socket.connect(&self.addr.into())?;
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(Duration::from_secs(IO_TIMEOUT_SECS)))?;
        Ok(stream)
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        // SAFETY: kill with a pid of a child we have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().expect("wait")
    }

    /// The directory served.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }

    /// How the process ended, if it has (a crash shows as its signal, e.g. SIGBUS).
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: as in `terminate`; harmless if the child already exited and was reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        // A server that does not drain in time is killed, so a bug cannot hang the suite.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The small demo tree most tests use.
pub fn demo_root(root: &Path) {
    std::fs::write(root.join("index.html"), INDEX).unwrap();
    std::fs::write(root.join("a.txt"), b"file a\n").unwrap();
    std::fs::write(root.join("b.css"), b"body{}\n").unwrap();
    std::fs::create_dir(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/index.html"), b"sub index\n").unwrap();
}

/// Body of the demo index.
pub const INDEX: &[u8] = b"<!DOCTYPE html><title>t</title><p>hello</p>\n";

/// A parsed response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Response {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one response; `head_only` for responses to HEAD (no body despite Content-Length).
pub fn read_response(reader: &mut impl BufRead, head_only: bool) -> Response {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).expect("read head line");
        assert!(n > 0, "connection closed inside a response head: {head:?}");
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
        assert!(line.ends_with("\r\n"), "head lines end in CRLF: {line:?}");
    }
    let status: u16 = head[9..12].parse().expect("status code");
    let mut response = Response { status, head, body: Vec::new() };
    if status == 304 {
        assert!(response.header("content-length").is_none(), "304 carries no Content-Length");
        return response;
    }
    let len: usize = response
        .header("content-length")
        .expect("every response but 304 has Content-Length")
        .parse()
        .expect("numeric Content-Length");
    if !head_only {
        response.body = vec![0; len];
        reader.read_exact(&mut response.body).expect("read body");
    }
    response
}

/// Sends one request and reads its response on a fresh connection.
pub fn get(server: &Server, request: &str) -> Response {
    let mut stream = server.connect();
    stream.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    read_response(&mut reader, request.starts_with("HEAD "))
}

/// Sends one request to `addr` and reads its response on a fresh connection.
pub fn get_at(addr: SocketAddr, request: &str) -> Response {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(IO_TIMEOUT_SECS))).unwrap();
    (&stream).write_all(request.as_bytes()).unwrap();
    read_response(&mut BufReader::new(stream), request.starts_with("HEAD "))
}

/// Asserts the server closed the connection: EOF (or reset) with no further bytes.
pub fn assert_closed(reader: &mut impl Read) {
    let mut rest = Vec::new();
    match reader.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "unexpected bytes after the last response: {rest:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

/// Deterministic pseudo-random bytes (xorshift64*, fixed seed).
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// Path of the repository's demo page.
pub fn static_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("static")
}

// ---- a server's footprint, from /proc ------------------------------------------------------

/// Open descriptors of process `pid`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// A `/proc/PID/status` field in KiB: `VmRSS`, or its parts `RssAnon` (heap, buffers, stacks)
/// and `RssFile` (file pages, which the kernel can drop at will).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// User plus system CPU time of the whole process (every thread), in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    // SAFETY: sysconf only reads a configuration value.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 / per_sec as f64
}

/// Leaves process `pid` no free descriptor: its soft RLIMIT_NOFILE is set to the lowest free
/// descriptor number (the kernel hands out the lowest), so every new descriptor fails with
/// EMFILE while those above stay valid. Returns the limit to give back to
/// `restore_descriptor_limit`.
pub fn exhaust_descriptors(pid: u32) -> libc::rlimit {
    let pid = pid as libc::pid_t;
    let lowest_free = (0..)
        .find(|fd| !Path::new(&format!("/proc/{pid}/fd/{fd}")).exists())
        .expect("a free descriptor number") as libc::rlim_t;
    let mut saved = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: prlimit writes `saved`, a live local, and reads nothing.
    let got = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut saved) };
    assert_eq!(got, 0, "prlimit: {}", std::io::Error::last_os_error());
    // Only the soft limit: lowering the hard one could not be undone without privilege.
    let tight = libc::rlimit { rlim_cur: lowest_free, rlim_max: saved.rlim_max };
    restore_descriptor_limit(pid as u32, tight);
    saved
}

/// Sets process `pid`'s RLIMIT_NOFILE to `limit` (what `exhaust_descriptors` returned).
pub fn restore_descriptor_limit(pid: u32, limit: libc::rlimit) {
    // SAFETY: prlimit reads `limit`, a live local.
    let set = unsafe {
        libc::prlimit(pid as libc::pid_t, libc::RLIMIT_NOFILE, &limit, std::ptr::null_mut())
    };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
}
