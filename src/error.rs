//! Start-up and operating errors: each carries the context a user needs (path, address, errno)
//! and a hint of what to do. Client protocol errors are not here: they are HTTP responses.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why the server could not start or keep running.
#[derive(Debug)]
pub enum Error {
    /// Bad command-line usage.
    Usage(String),
    /// The document root is missing or unreadable.
    Root { path: PathBuf, source: io::Error },
    /// A listening socket could not be set up: `flag` and `addr` are the option and the value
    /// it was given (`--addr`, `[::]:80`).
    Bind { flag: &'static str, addr: String, source: io::Error },
    /// An `--addr` value that cannot be used (given twice, or sockets systemd did not pass).
    Listen { addr: String, reason: String },
    /// io_uring is unavailable or lacks a feature ringserve needs.
    Uring { what: &'static str, source: io::Error },
    /// The access log could not be opened.
    AccessLog { path: PathBuf, source: io::Error },
    /// Another OS-level failure at start-up (threads, signals, eventfd).
    Os { what: &'static str, source: io::Error },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) => write!(f, "{}", msg.lines().next().unwrap_or("bad usage")),
            Error::Root { path, source } => {
                write!(f, "cannot serve root {}: {source}", path.display())
            }
            Error::Bind { flag, addr, source } => {
                write!(f, "{flag} {addr}: cannot listen: {}", bind_message(flag, source))
            }
            Error::Listen { addr, reason } => write!(f, "--addr {addr}: {reason}"),
            Error::Uring { what, source } => write!(f, "{}", uring_message(what, source)),
            Error::AccessLog { path, source } => {
                write!(f, "cannot open access log {}: {source}", path.display())
            }
            Error::Os { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl Error {
    /// The long option (config-file key) a start-up error is about, if it is about one: the
    /// option of a root, address or log error, or the `--flag` a usage message starts with.
    pub fn option(&self) -> Option<&str> {
        match self {
            Error::Root { .. } => Some("root"),
            Error::Bind { flag, .. } => Some(flag.trim_start_matches('-')),
            Error::Listen { .. } => Some("addr"),
            Error::AccessLog { .. } => Some("access-log"),
            Error::Usage(message) => {
                let name = message.strip_prefix("--")?;
                let end = name
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                    .unwrap_or(name.len());
                (end > 0).then(|| &name[..end])
            }
            Error::Uring { .. } | Error::Os { .. } => None,
        }
    }
}

/// Why a bind failed, with what to do about it when the errno says.
fn bind_message(flag: &str, source: &io::Error) -> String {
    let hint = match source.raw_os_error() {
        Some(libc::EADDRINUSE) => {
            format!("another server is running there; pick another with {flag}")
        }
        Some(libc::EADDRNOTAVAIL) => "it is not an address of this machine".to_string(),
        Some(libc::EACCES) => "ports below 1024 need root or CAP_NET_BIND_SERVICE; or let \
                               systemd pass the socket (--addr systemd, see \
                               contrib/ringserve.socket)"
            .to_string(),
        Some(libc::EAFNOSUPPORT) => {
            "this machine has that address family (IPv6?) disabled".to_string()
        }
        _ => return source.to_string(),
    };
    let text = match source.raw_os_error() {
        Some(libc::EADDRINUSE) => "address already in use".to_string(),
        _ => source.to_string(),
    };
    format!("{text} ({hint})")
}

/// Why io_uring is forbidden or missing, and the fix, for the errnos that say so: EPERM and
/// EACCES (a seccomp profile, or the sysctl), ENOSYS (Podman's seccomp profile, or an old
/// kernel). `None` for other errnos.
fn forbidden_hint(source: &io::Error) -> Option<&'static str> {
    match source.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => Some(
            "io_uring is forbidden here: a container seccomp profile (Docker 25+ and \
             containerd 2 block io_uring; run with --security-opt seccomp=unconfined) or the \
             sysctl kernel.io_uring_disabled (set it to 0: sysctl -w kernel.io_uring_disabled=0)",
        ),
        Some(libc::ENOSYS) => Some(
            "io_uring is unavailable: a container seccomp profile (Podman's default answers \
             ENOSYS; run with --security-opt seccomp=unconfined) or a kernel without io_uring \
             (needs Linux 6.0 or later)",
        ),
        _ => None,
    }
}

/// Whether an io_uring set-up failure means io_uring is forbidden or missing here (the
/// default engine then runs epoll), rather than broken.
pub fn uring_forbidden(source: &io::Error) -> bool {
    forbidden_hint(source).is_some()
}

/// The one warning line the default engine prints when it runs epoll because io_uring set-up
/// failed with `source` (an errno `uring_forbidden` accepts).
pub fn fallback_warning(source: &io::Error) -> String {
    let hint = forbidden_hint(source).unwrap_or("io_uring is unavailable");
    format!("warning: io_uring setup failed: {source}; {hint}; running --engine epoll instead")
}

/// The io_uring failure with the reason and the fix, as specific as the errno allows.
fn uring_message(what: &str, source: &io::Error) -> String {
    let hint = match source.raw_os_error() {
        _ if forbidden_hint(source).is_some() => forbidden_hint(source).unwrap_or_default(),
        Some(libc::EINVAL) => {
            "this kernel lacks an io_uring feature ringserve needs (multishot recv, \
             provided buffer rings and SINGLE_ISSUER need Linux 6.0 or later)"
        }
        Some(libc::ENOMEM) => {
            "the kernel refused memory for the ring or its buffers (raise the memlock limit: \
             ulimit -l unlimited)"
        }
        _ => "",
    };
    let fallback = "or run the epoll engine: --engine epoll";
    if hint.is_empty() {
        format!("io_uring {what} failed: {source}; {fallback}")
    } else {
        format!("io_uring {what} failed: {source}; {hint}; {fallback}")
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Root { source, .. }
            | Error::Bind { source, .. }
            | Error::Uring { source, .. }
            | Error::AccessLog { source, .. }
            | Error::Os { source, .. } => Some(source),
            Error::Usage(_) | Error::Listen { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_option_they_are_about() {
        let usage = |m: &str| Error::Usage(m.to_string());
        assert_eq!(usage("--fallback /x.html: not found").option(), Some("fallback"));
        assert_eq!(usage("--error-page=404").option(), Some("error-page"));
        assert_eq!(usage("bad usage").option(), None);
        assert_eq!(usage("--").option(), None);
        let listen = Error::Listen { addr: "systemd".into(), reason: "none".into() };
        assert_eq!(listen.option(), Some("addr"));
        let bind = Error::Bind {
            flag: "--admin-addr",
            addr: "127.0.0.1:1".into(),
            source: io::Error::from_raw_os_error(libc::EADDRINUSE),
        };
        assert_eq!(bind.option(), Some("admin-addr"));
        let eperm = io::Error::from_raw_os_error(libc::EPERM);
        let enosys = io::Error::from_raw_os_error(libc::ENOSYS);
        for source in [&eperm, &enosys] {
            assert!(uring_forbidden(source));
            let line = fallback_warning(source);
            assert!(line.contains("--security-opt seccomp=unconfined") && !line.contains('\n'));
        }
        assert!(!uring_forbidden(&io::Error::from_raw_os_error(libc::EINVAL)));
        assert!(bind.to_string().starts_with(
            "--admin-addr 127.0.0.1:1: cannot listen: address \
                                               already in use (another server"
        ));
    }
}
