//! Where the server listens: the `--addr` values (IPv4 and IPv6 addresses, and sockets passed by
//! systemd socket activation), checking them against each other, binding them, and taking over
//! the sockets systemd passed in (the `LISTEN_FDS` protocol, `sd_listen_fds(3)`).
//!
//! The io_uring engine needs a listener per address per worker: a bound address gets one
//! SO_REUSEPORT socket per worker (each with its own accept queue); an inherited socket cannot
//! join a reuseport group after it was bound, so each worker gets a `dup` of it and they share
//! its one accept queue (`Listener::another`).

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::str::FromStr;

use socket2::{Domain, Protocol, Socket, Type};

use crate::limits::{RECV_WINDOW_BYTES, UNSENT_BYTES_MAX};
use crate::Error;

/// Most listeners (`--addr` values, and sockets systemd passes) one server takes. Every worker
/// of the io_uring engine holds one socket per listener, so this times `--threads` bounds the
/// descriptors listeners take; real deployments use one to four.
pub const LISTENERS_MAX: usize = 64;

/// Pending connections the kernel queues per listener before refusing (nginx uses 511 by
/// default; we run benchmarks with 10,000 connections opening at once).
pub const LISTEN_BACKLOG_COUNT: i32 = 4096;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const SYSTEMD_FIRST_FD: RawFd = 3;

/// The text `--addr` accepts, for messages and `--help`.
pub const ADDR_SYNTAX: &str =
    "HOST:PORT (127.0.0.1:8000, [::]:8000), `systemd`, `systemd:N` or `systemd:NAME`";

/// One `--addr` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenSpec {
    /// An address to bind; port 0 picks a free port.
    Addr(SocketAddr),
    /// Sockets systemd passed in: all of them, or one.
    Systemd(Option<SystemdPick>),
}

/// Which of the sockets systemd passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemdPick {
    /// The N-th, counting from 0 (descriptor 3 + N), in the order of the socket unit.
    Index(usize),
    /// The one named by `FileDescriptorName=` in the socket unit (`LISTEN_FDNAMES`).
    Name(String),
}

impl FromStr for ListenSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<ListenSpec, String> {
        if text == "systemd" {
            return Ok(ListenSpec::Systemd(None));
        }
        if let Some(pick) = text.strip_prefix("systemd:") {
            if pick.is_empty() {
                return Err(format!("expected {ADDR_SYNTAX}"));
            }
            return Ok(ListenSpec::Systemd(Some(match pick.parse::<usize>() {
                Ok(index) => SystemdPick::Index(index),
                Err(_) => SystemdPick::Name(pick.to_string()),
            })));
        }
        text.parse::<SocketAddr>()
            .map(ListenSpec::Addr)
            .map_err(|_| format!("expected {ADDR_SYNTAX}"))
    }
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenSpec::Addr(addr) => write!(f, "{addr}"),
            ListenSpec::Systemd(None) => write!(f, "systemd"),
            ListenSpec::Systemd(Some(SystemdPick::Index(index))) => write!(f, "systemd:{index}"),
            ListenSpec::Systemd(Some(SystemdPick::Name(name))) => write!(f, "systemd:{name}"),
        }
    }
}

/// Checks `--addr` values against each other before anything is bound: at most
/// `LISTENERS_MAX`, none given twice, and no address a wildcard one already covers (binding
/// `127.0.0.1:8000` beside `0.0.0.0:8000` would fail as "in use" with a misleading reason).
pub fn check_specs(specs: &[ListenSpec]) -> Result<(), Error> {
    let listen_err =
        |spec: &ListenSpec, reason: String| Error::Listen { addr: spec.to_string(), reason };
    if specs.len() > LISTENERS_MAX {
        return Err(listen_err(
            &specs[LISTENERS_MAX],
            format!("more than {LISTENERS_MAX} addresses"),
        ));
    }
    for (i, spec) in specs.iter().enumerate() {
        for earlier in &specs[..i] {
            if earlier == spec {
                return Err(listen_err(spec, "given twice".into()));
            }
            if let (ListenSpec::Addr(a), ListenSpec::Addr(b)) = (earlier, spec) {
                if overlaps(*a, *b) {
                    return Err(listen_err(
                        spec,
                        format!(
                            "overlaps --addr {earlier}: a wildcard address already takes every \
                             address of its family on port {}",
                            a.port()
                        ),
                    ));
                }
            }
        }
        let all_earlier = specs[..i].contains(&ListenSpec::Systemd(None));
        let systemd_earlier = specs[..i].iter().any(|s| matches!(s, ListenSpec::Systemd(_)));
        if matches!(spec, ListenSpec::Systemd(_))
            && (all_earlier || (systemd_earlier && *spec == ListenSpec::Systemd(None)))
        {
            return Err(listen_err(
                spec,
                "--addr systemd takes every passed socket; do not also name one".into(),
            ));
        }
    }
    Ok(())
}

/// Two addresses of one family and port of which one is the wildcard (`0.0.0.0`, `[::]`; IPv6
/// sockets are bound IPV6_V6ONLY, so `[::]` does not cover IPv4). Port 0 never overlaps: each
/// gets a port of its own.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && a.ip() != b.ip()
        && (a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// A listening socket the server accepts on.
pub struct Listener {
    /// The socket (worker 0's, for the io_uring engine).
    pub socket: Socket,
    /// Its local address (the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// The `--addr` value it came from, for messages.
    pub spec: String,
    /// Passed by systemd rather than bound here.
    pub inherited: bool,
}

impl Listener {
    /// Another socket accepting the same connections, for another worker: a new SO_REUSEPORT
    /// socket on the same address, or a duplicate of an inherited socket (sharing its queue).
    pub fn another(&self) -> Result<Socket, Error> {
        if self.inherited {
            return self.socket.try_clone().map_err(|source| self.bind_error(source));
        }
        bind(self.addr).map_err(|source| self.bind_error(source))
    }

    fn bind_error(&self, source: std::io::Error) -> Error {
        Error::Bind { flag: "--addr", addr: self.spec.clone(), source }
    }
}

/// Binds (or takes over) every `--addr` value, in order: one listener per address, and one per
/// socket a `systemd` value selects. Nothing is served yet; a failure closes what was opened.
pub fn open(specs: &[ListenSpec]) -> Result<Vec<Listener>, Error> {
    check_specs(specs)?;
    let mut passed = match specs.iter().find(|s| matches!(s, ListenSpec::Systemd(_))) {
        Some(first) => Some(take_passed_sockets(&first.to_string())?),
        None => None,
    };
    let mut listeners = Vec::with_capacity(specs.len());
    for spec in specs {
        match spec {
            ListenSpec::Addr(addr) => {
                let err = |source| Error::Bind { flag: "--addr", addr: spec.to_string(), source };
                ensure_port_free(*addr).map_err(err)?;
                let socket = bind(*addr).map_err(err)?;
                let local = local_addr(&socket).map_err(err)?;
                listeners.push(Listener {
                    socket,
                    addr: local,
                    spec: spec.to_string(),
                    inherited: false,
                });
            }
            ListenSpec::Systemd(pick) => {
                let passed = passed.as_mut().ok_or_else(|| Error::Listen {
                    addr: spec.to_string(),
                    reason: "no sockets were read".into(),
                })?;
                for index in passed
                    .select(pick.as_ref())
                    .map_err(|reason| Error::Listen { addr: spec.to_string(), reason })?
                {
                    let Some(socket) = passed.sockets[index].take() else {
                        return Err(Error::Listen {
                            addr: spec.to_string(),
                            reason: format!("socket {index} from systemd is selected twice"),
                        });
                    };
                    let err = |source| Error::Bind {
                        flag: "--addr",
                        addr: format!("{spec} (descriptor {})", socket.as_raw_fd()),
                        source,
                    };
                    prepare(&socket).map_err(err)?;
                    let local = local_addr(&socket).map_err(err)?;
                    let spec = format!("{spec} ({local})");
                    listeners.push(Listener { socket, addr: local, spec, inherited: true });
                }
            }
        }
    }
    if listeners.len() > LISTENERS_MAX {
        return Err(Error::Listen {
            addr: specs.iter().map(ToString::to_string).collect::<Vec<_>>().join(" --addr "),
            reason: format!("more than {LISTENERS_MAX} sockets"),
        });
    }
    Ok(listeners)
}

fn local_addr(socket: &Socket) -> std::io::Result<SocketAddr> {
    socket.local_addr()?.as_socket().ok_or_else(|| std::io::Error::other("not an IP socket"))
}

/// Refuses an address another process listens on. Our listeners share their port through
/// SO_REUSEPORT, which would just as gladly let a second ringserve (same user) join the group
/// and take half the connections for its own root; a probe bound without SO_REUSEPORT fails
/// with EADDRINUSE while any socket listens there, as nginx without `reuseport` does. Port 0
/// needs no probe: the kernel picks a free port for the first listener.
fn ensure_port_free(addr: SocketAddr) -> std::io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe =
        Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    // SO_REUSEADDR only lets the probe past connections lingering in TIME_WAIT.
    probe.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // As the listener will be: `[::]:8000` must not collide with our own `0.0.0.0:8000`.
        probe.set_only_v6(true)?;
    }
    probe.bind(&addr.into())
}

/// A listening TCP socket with SO_REUSEPORT, so every worker has its own accept queue.
/// IPv6 sockets are IPV6_V6ONLY, as nginx binds them: `[::]:8000` then takes IPv6 only, and
/// `0.0.0.0:8000` beside it takes IPv4.
fn bind(addr: SocketAddr) -> std::io::Result<Socket> {
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    prepare(&socket)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG_COUNT)?;
    Ok(socket)
}

/// Options accepted sockets inherit from their listener, set on bound and inherited ones alike.
fn prepare(socket: &Socket) -> std::io::Result<()> {
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux: responses leave at once
    // without a setsockopt per connection.
    socket.set_nodelay(true)?;
    // Accepted sockets inherit the receive buffer too: it bounds how far a client can send
    // ahead of the responses it reads (see RECV_WINDOW_BYTES).
    socket.set_recv_buffer_size(RECV_WINDOW_BYTES)?;
    // And the limit on bytes queued but not yet sent (see UNSENT_BYTES_MAX).
    let unsent = UNSENT_BYTES_MAX as libc::c_int;
    // SAFETY: setsockopt reads `unsent`, a live local of the size given, on a socket we own.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&unsent as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The sockets systemd passed, not yet given to a listener, and their names.
struct Passed {
    sockets: Vec<Option<Socket>>,
    names: Vec<String>,
}

impl Passed {
    /// The indexes a `systemd` value selects.
    fn select(&self, pick: Option<&SystemdPick>) -> Result<Vec<usize>, String> {
        let count = self.sockets.len();
        match pick {
            None => Ok((0..count).collect()),
            Some(SystemdPick::Index(index)) if *index < count => Ok(vec![*index]),
            Some(SystemdPick::Index(index)) => Err(format!(
                "systemd passed {count} socket{} (LISTEN_FDS={count}), so there is no socket \
                 {index} (they count from 0)",
                if count == 1 { "" } else { "s" }
            )),
            Some(SystemdPick::Name(name)) => match self.names.iter().position(|n| n == name) {
                Some(index) if index < count => Ok(vec![index]),
                _ => Err(format!(
                    "no socket named {name:?} was passed (LISTEN_FDNAMES={:?}; set the name \
                         with FileDescriptorName= in the socket unit)",
                    self.names.join(":")
                )),
            },
        }
    }
}

/// Reads and unsets `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` (so processes we might
/// start do not take them as theirs) and takes descriptors 3 .. 3 + LISTEN_FDS, each checked
/// to be a listening TCP socket. Must run before another thread reads the environment: the
/// server calls it first thing in `Server::start`.
fn take_passed_sockets(spec: &str) -> Result<Passed, Error> {
    let err = |reason: String| Error::Listen { addr: spec.into(), reason };
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(name);
    }
    let Some(fds) = fds else {
        return Err(err(
            "no sockets were passed (LISTEN_FDS is not set): start ringserve from a systemd socket \
             unit (see contrib/ringserve.socket) or give an address"
                .into(),
        ));
    };
    let ours = std::process::id();
    match pid.as_deref().map(str::parse::<u32>) {
        Some(Ok(pid)) if pid == ours => {}
        Some(Ok(pid)) => {
            return Err(err(format!(
                "LISTEN_PID is {pid}, not this process ({ours}): the sockets were meant for \
                 another process"
            )))
        }
        _ => return Err(err(format!("LISTEN_PID is {pid:?}, not this process ({ours})"))),
    }
    let count = match fds.parse::<usize>() {
        Ok(0) => return Err(err("LISTEN_FDS is 0: systemd passed no sockets".into())),
        Ok(n) if n <= LISTENERS_MAX => n,
        _ => return Err(err(format!("LISTEN_FDS is {fds:?}, not 1 to {LISTENERS_MAX}"))),
    };
    let names: Vec<String> =
        names.map(|n| n.split(':').map(String::from).collect()).unwrap_or_default();
    let mut sockets = Vec::with_capacity(count);
    for offset in 0..count {
        let fd = SYSTEMD_FIRST_FD + offset as RawFd;
        check_listening_tcp(fd)
            .map_err(|reason| err(format!("descriptor {fd} (LISTEN_FDS={count}) {reason}")))?;
        // SAFETY: `fd` is open (checked just above) and was passed to this process by the
        // LISTEN_FDS protocol (LISTEN_PID is ours): nothing else in the process owns it, and
        // it is taken only once (the variables are unset above).
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // Passed without FD_CLOEXEC; a process we start must not inherit it.
        // SAFETY: fcntl on a descriptor we own; no pointer.
        if unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return Err(err(format!("descriptor {fd}: {}", std::io::Error::last_os_error())));
        }
        sockets.push(Some(Socket::from(owned)));
    }
    Ok(Passed { sockets, names })
}

/// Why `fd` is not a listening TCP stream socket, if it is not.
fn check_listening_tcp(fd: RawFd) -> Result<(), String> {
    let int_opt = |level: i32, name: i32| -> std::io::Result<i32> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the live local `value`.
        let rc = unsafe {
            libc::getsockopt(fd, level, name, (&mut value as *mut libc::c_int).cast(), &mut len)
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(value)
    };
    let describe = |e: std::io::Error| match e.raw_os_error() {
        Some(libc::EBADF) => "is not open".to_string(),
        Some(libc::ENOTSOCK) => "is not a socket".to_string(),
        _ => format!("cannot be read: {e}"),
    };
    let domain = int_opt(libc::SOL_SOCKET, libc::SO_DOMAIN).map_err(describe)?;
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return Err(
            "is not an IPv4 or IPv6 socket (use ListenStream= with a port or address)".into()
        );
    }
    let kind = int_opt(libc::SOL_SOCKET, libc::SO_TYPE).map_err(describe)?;
    let protocol = int_opt(libc::SOL_SOCKET, libc::SO_PROTOCOL).map_err(describe)?;
    if kind != libc::SOCK_STREAM || protocol != libc::IPPROTO_TCP {
        return Err("is not a TCP stream socket (use ListenStream=, not ListenDatagram=)".into());
    }
    if int_opt(libc::SOL_SOCKET, libc::SO_ACCEPTCONN).map_err(describe)? != 1 {
        return Err("is not listening (use Accept=no in the socket unit)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> ListenSpec {
        text.parse().expect("valid --addr")
    }

    #[test]
    fn values_parse_and_print_back() {
        for text in
            ["127.0.0.1:8000", "[::]:8000", "[::1]:0", "systemd", "systemd:2", "systemd:web"]
        {
            assert_eq!(spec(text).to_string(), text);
        }
        assert_eq!(spec("systemd:1"), ListenSpec::Systemd(Some(SystemdPick::Index(1))));
        for bad in ["", "localhost", "::1:80", "systemd:", "8000", "1.2.3.4"] {
            assert!(bad.parse::<ListenSpec>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn duplicates_and_wildcard_overlaps_are_refused() {
        let check =
            |texts: &[&str]| check_specs(&texts.iter().map(|t| spec(t)).collect::<Vec<_>>());
        assert!(check(&["0.0.0.0:8000", "[::]:8000"]).is_ok());
        assert!(
            check(&["127.0.0.1:0", "127.0.0.1:0"]).is_err(),
            "port 0 twice is still a duplicate"
        );
        assert!(check(&["127.0.0.1:0", "0.0.0.0:0"]).is_ok());
        assert!(check(&["127.0.0.1:8000", "127.0.0.2:8000", "[::1]:8000"]).is_ok());
        let e = check(&["0.0.0.0:8000", "127.0.0.1:8000"]).unwrap_err().to_string();
        assert!(e.contains("127.0.0.1:8000") && e.contains("overlaps"), "{e}");
        assert!(check(&["[::1]:8000", "[::]:8000"]).is_err());
        let e = check(&["127.0.0.1:8000", "127.0.0.1:8000"]).unwrap_err().to_string();
        assert!(e.contains("given twice"), "{e}");
        assert!(check(&["systemd", "systemd:0"]).is_err());
        assert!(check(&["systemd:0", "systemd:1", "127.0.0.1:9"]).is_ok());
    }

    #[test]
    fn a_bound_address_reports_its_port_and_another_socket_joins_it() {
        let listeners = open(&[spec("127.0.0.1:0"), spec("127.0.0.2:0")]).expect("bind");
        assert_eq!(listeners.len(), 2);
        assert_ne!(listeners[0].addr.port(), 0);
        assert_ne!(listeners[0].addr.port(), listeners[1].addr.port(), "each gets its own port");
        let second = listeners[0].another().expect("a second reuseport socket");
        assert_eq!(local_addr(&second).expect("local address"), listeners[0].addr);
    }

    #[test]
    fn an_ordinary_descriptor_is_not_taken_for_a_listener() {
        let file = std::fs::File::open("/dev/null").expect("open /dev/null");
        let reason = check_listening_tcp(file.as_raw_fd()).unwrap_err();
        assert!(reason.contains("not a socket"), "{reason}");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        assert!(check_listening_tcp(udp.as_raw_fd()).unwrap_err().contains("TCP stream"));
        let tcp = Socket::new(Domain::IPV4, Type::STREAM, None).expect("tcp");
        assert!(check_listening_tcp(tcp.as_raw_fd()).unwrap_err().contains("not listening"));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        assert_eq!(check_listening_tcp(listener.as_raw_fd()), Ok(()));
    }
}
